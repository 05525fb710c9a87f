//! Queries shared by the writer and the readers.

use super::codec::{StoredId, json_error, read_id, seq_time, status_of};
use super::shared::{Fresh, Shared, UserEntry};
use crate::{ApiKey, StoreError};
use assent_model::user::{Found, UserRecord, UserSelector};
use assent_model::{
    ConsentEvent, EventBody, EventId, OrganizationId, Regulation, Timestamp, UserState,
};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Turns an SQLite failure into a store failure; busy and locked databases are "unavailable".
pub fn db(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// The key of an organization, from the cache or the database.
pub fn org_key(
    conn: &Connection,
    shared: &Shared,
    org: &OrganizationId,
) -> Result<Option<i64>, StoreError> {
    if let Some(key) = shared.orgs.get(org) {
        return Ok(Some(key));
    }
    let key: Option<i64> = conn
        .prepare_cached("SELECT org_key FROM organizations WHERE id = ?1")
        .and_then(|mut s| s.query_row([org.as_str()], |r| r.get(0)).optional())
        .map_err(db)?;
    if let Some(key) = key {
        shared.orgs.insert(org, key);
    }
    Ok(key)
}

/// Finds a user's key, id and organization user id.
pub fn find_user(
    conn: &Connection,
    org_key: i64,
    user: &UserSelector,
) -> Result<Option<Found<i64>>, StoreError> {
    let (sql, value) = match user {
        UserSelector::Id(id) => (
            "SELECT user_key, id, organization_user_id FROM users WHERE org_key = ?1 AND id = ?2",
            id,
        ),
        UserSelector::OrganizationUserId(o) => (
            "SELECT user_key, id, organization_user_id FROM users
             WHERE org_key = ?1 AND organization_user_id = ?2",
            o,
        ),
    };
    conn.prepare_cached(sql)
        .and_then(|mut s| {
            s.query_row(params![org_key, value], |r| {
                Ok(Found {
                    key: r.get(0)?,
                    id: r.get(1)?,
                    organization_user_id: r.get(2)?,
                })
            })
            .optional()
        })
        .map_err(db)
}

const USER_COLUMNS: &str =
    "user_key, org_key, id, organization_user_id, version, created_at, updated_at, state";

fn user_from_row(row: &Row<'_>, org: &OrganizationId) -> rusqlite::Result<UserEntry> {
    let state: UserState =
        serde_json::from_slice(row.get_ref(7)?.as_blob()?).map_err(|e| json_error(7, e))?;
    Ok(UserEntry {
        key: row.get(0)?,
        org_key: row.get(1)?,
        record: UserRecord {
            id: row.get(2)?,
            organization_id: org.clone(),
            organization_user_id: row.get(3)?,
            version: row.get(4)?,
            created_at: Timestamp::from_millis(row.get(5)?),
            updated_at: Timestamp::from_millis(row.get(6)?),
            state,
        },
        pending: Vec::new(),
    })
}

/// The user row of `key`, as last flushed.
pub fn user_row(
    conn: &Connection,
    org: &OrganizationId,
    key: i64,
) -> Result<Option<UserEntry>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE user_key = ?1"
    ))
    .and_then(|mut s| s.query_row([key], |r| user_from_row(r, org)).optional())
    .map_err(db)
}

/// The current user of `key` in organization `org_key`: its row, brought up to date with the
/// overlay.
pub fn current_user(
    conn: &Connection,
    shared: &Shared,
    org: &OrganizationId,
    org_key: i64,
    key: i64,
) -> Result<Option<UserEntry>, StoreError> {
    // The overlay first: a flush in between makes the row newer, never older.
    let fresh = shared.overlay.get(key);
    let mut entry = user_row(conn, org, key)?.filter(|e| e.org_key == org_key);
    if let (Some(entry), Some(fresh)) = (&mut entry, fresh) {
        freshen(conn, entry, &fresh)?;
    }
    Ok(entry)
}

/// Brings a user read from its row up to date with what the overlay knows: folds in the events
/// appended since the row was written. Folding an event the row already holds changes nothing,
/// so a row written in between is safe too; an event deleted in between is simply gone.
pub fn freshen(conn: &Connection, entry: &mut UserEntry, fresh: &Fresh) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT created_at, status, regulation, body FROM events WHERE seq = ?1 AND user_key = ?2",
        )
        .map_err(db)?;
    for seq in &fresh.pending {
        let row = stmt
            .query_row(params![seq, entry.key], |r| {
                let body: EventBody = serde_json::from_slice(r.get_ref(3)?.as_blob()?)
                    .map_err(|e| json_error(3, e))?;
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    body,
                ))
            })
            .optional()
            .map_err(db)?;
        if let Some((at, status, regulation, body)) = row
            && status_of(status) == assent_model::EventStatus::Confirmed
        {
            let regulation = Regulation::parse(&regulation).unwrap_or_default();
            entry
                .record
                .state
                .apply(&regulation, &body, assent_model::Stamp { at, seq: *seq });
        }
    }
    entry.record.version = entry.record.version.max(fresh.version);
    entry.record.updated_at = entry.record.updated_at.max(fresh.updated_at);
    entry.pending = fresh.pending.clone();
    Ok(())
}

/// A page of user rows of an organization after `after_key`, in key order.
pub fn user_rows_after(
    conn: &Connection,
    org: &OrganizationId,
    org_key: i64,
    after_key: i64,
    limit: usize,
) -> Result<Vec<UserEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE org_key = ?1 AND user_key > ?2
             ORDER BY user_key LIMIT ?3"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map(params![org_key, after_key, limit as i64], |r| {
            user_from_row(r, org)
        })
        .map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

const EVENT_COLUMNS: &str =
    "e.seq, e.user_key, e.id, e.created_at, e.updated_at, e.status, e.regulation, e.body";

/// An event row and the key of its user.
pub struct EventRow {
    /// The event.
    pub event: ConsentEvent,
    /// Its user's key.
    pub user_key: i64,
}

fn event_from_row(
    row: &Row<'_>,
    org: &OrganizationId,
    user_id: Option<&str>,
) -> rusqlite::Result<EventRow> {
    let seq: i64 = row.get(0)?;
    let updated_at: Option<i64> = row.get(4)?;
    let regulation: String = row.get(6)?;
    let body: EventBody =
        serde_json::from_slice(row.get_ref(7)?.as_blob()?).map_err(|e| json_error(7, e))?;
    let user_id = match user_id {
        Some(id) => id.to_owned(),
        None => row.get(8)?,
    };
    Ok(EventRow {
        user_key: row.get(1)?,
        event: ConsentEvent {
            id: read_id(row, 2)?,
            organization_id: org.clone(),
            user_id,
            created_at: Timestamp::from_millis(row.get(3)?),
            updated_at: updated_at.map_or_else(|| seq_time(seq), Timestamp::from_millis),
            status: status_of(row.get(5)?),
            regulation: Regulation::parse(&regulation).unwrap_or_default(),
            seq,
            body: Arc::new(body),
        },
    })
}

/// One event of an organization by id.
pub fn event_by_id(
    conn: &Connection,
    org: &OrganizationId,
    org_key: i64,
    id: &EventId,
) -> Result<Option<EventRow>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS}, u.id FROM events e JOIN users u ON u.user_key = e.user_key
         WHERE e.org_key = ?1 AND e.id = ?2"
    ))
    .and_then(|mut s| {
        s.query_row(params![org_key, StoredId::of(id)], |r| {
            event_from_row(r, org, None)
        })
        .optional()
    })
    .map_err(db)
}

/// The events of an organization whose arrival numbers are in `first..=last`, in arrival
/// order.
pub fn events_between(
    conn: &Connection,
    org: &OrganizationId,
    first: i64,
    last: i64,
) -> Result<Vec<EventRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS}, u.id FROM events e JOIN users u ON u.user_key = e.user_key
             WHERE e.seq BETWEEN ?1 AND ?2 ORDER BY e.seq"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map(params![first, last], |r| event_from_row(r, org, None))
        .map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

/// Which user, for reading its events.
#[derive(Debug, Clone, Copy)]
pub struct UserKeys<'a> {
    /// The organization's row key.
    pub org_key: i64,
    /// The user's row key.
    pub key: i64,
    /// The user id, shown on each event.
    pub id: &'a str,
}

impl UserEntry {
    /// The keys to read this user's events by.
    pub fn keys(&self) -> UserKeys<'_> {
        UserKeys {
            org_key: self.org_key,
            key: self.key,
            id: &self.record.id,
        }
    }
}

/// Every event of a user: those indexed by the last flush plus `pending` ones, in arrival order.
pub fn user_events(
    conn: &Connection,
    org: &OrganizationId,
    user: UserKeys<'_>,
    pending: &[i64],
) -> Result<Vec<EventRow>, StoreError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM user_events ue JOIN events e ON e.seq = ue.seq
             WHERE ue.org_key = ?1 AND ue.user_key = ?2"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map(params![user.org_key, user.key], |r| {
            event_from_row(r, org, Some(user.id))
        })
        .map_err(db)?;
    for row in rows {
        let row = row.map_err(db)?;
        seen.insert(row.event.seq);
        out.push(row);
    }
    let mut one = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq = ?1 AND e.user_key = ?2"
        ))
        .map_err(db)?;
    for seq in pending {
        if seen.contains(seq) {
            continue;
        }
        if let Some(row) = one
            .query_row(params![seq, user.key], |r| {
                event_from_row(r, org, Some(user.id))
            })
            .optional()
            .map_err(db)?
        {
            out.push(row);
        }
    }
    out.sort_by_key(|r| r.event.seq);
    Ok(out)
}

/// An API key by its public key string.
pub fn api_key(conn: &Connection, key: &str) -> Result<Option<ApiKey>, StoreError> {
    conn.prepare_cached(
        "SELECT k.id, o.id, k.key, k.name, k.enabled, k.secret_hash, k.created_at, k.updated_at
         FROM api_keys k JOIN organizations o ON o.org_key = k.org_key WHERE k.key = ?1",
    )
    .and_then(|mut s| {
        s.query_row([key], |r| {
            let org: String = r.get(1)?;
            Ok(ApiKey {
                id: r.get(0)?,
                organization_id: OrganizationId::parse(&org).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        1,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })?,
                key: r.get(2)?,
                name: r.get(3)?,
                enabled: r.get(4)?,
                secret_hash: r.get(5)?,
                created_at: Timestamp::from_millis(r.get(6)?),
                updated_at: Timestamp::from_millis(r.get(7)?),
            })
        })
        .optional()
    })
    .map_err(db)
}
