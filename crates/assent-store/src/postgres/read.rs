//! Queries.

use super::db;
use crate::{ApiKey, StoreError, UsersPage};
use crate::{decode_cursor, encode_cursor};
use assent_model::event::EventStatus;
use assent_model::query::UsersQuery;
use assent_model::user::{UserRecord, UserSelector};
use assent_model::{ConsentEvent, EventBody, EventId, OrganizationId, Regulation, Timestamp};
use deadpool_postgres::GenericClient;
use std::sync::Arc;
use tokio_postgres::Row;

/// A user row.
pub struct PgUser {
    /// Its key.
    pub key: i64,
    /// The user.
    pub record: UserRecord,
}

/// Columns of [`user_from_row`].
pub const USER_COLUMNS: &str =
    "user_key, id, organization_user_id, version, created_at, updated_at, state";

/// Decodes a row of [`USER_COLUMNS`].
pub fn user_from_row(row: &Row, org: &OrganizationId) -> Result<PgUser, StoreError> {
    let state: &[u8] = row.get(6);
    Ok(PgUser {
        key: row.get(0),
        record: UserRecord {
            id: row.get(1),
            organization_id: org.clone(),
            organization_user_id: row.get(2),
            version: row.get(3),
            created_at: Timestamp::from_millis(row.get(4)),
            updated_at: Timestamp::from_millis(row.get(5)),
            state: serde_json::from_slice(state)
                .map_err(|e| StoreError::Internal(format!("user state: {e}")))?,
        },
    })
}

/// One user by id or organization user id. Locked for the transaction with `lock` (the row
/// as written: the caller folds its pending events); otherwise read as it stands, pending
/// events folded in, in one statement (one snapshot).
pub async fn user(
    c: &impl GenericClient,
    org: &OrganizationId,
    user: &UserSelector,
    lock: bool,
) -> Result<Option<PgUser>, StoreError> {
    let (column, value) = match user {
        UserSelector::Id(id) => ("id", id),
        UserSelector::OrganizationUserId(o) => ("organization_user_id", o),
    };
    if lock {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE org_id = $1 AND {column} = $2 FOR UPDATE"
        );
        let stmt = c.prepare_cached(&sql).await.map_err(db)?;
        return c
            .query_opt(&stmt, &[&org.as_str(), value])
            .await
            .map_err(db)?
            .map(|row| user_from_row(&row, org))
            .transpose();
    }
    let sql = format!("{USER_WITH_PENDING} WHERE u.org_id = $1 AND u.{column} = $2 ORDER BY e.seq");
    let stmt = c.prepare_cached(&sql).await.map_err(db)?;
    let rows = c.query(&stmt, &[&org.as_str(), value]).await.map_err(db)?;
    Ok(users_with_pending(&rows, org)?.pop())
}

/// A user row joined with its pending events (one row per pending event, or one row with
/// nulls); the user columns first, as [`USER_COLUMNS`] with the prefix `u.`.
pub const USER_WITH_PENDING: &str = "SELECT u.user_key, u.id, u.organization_user_id, u.version,
        u.created_at, u.updated_at, u.state, e.seq, e.created_at, e.regulation, e.body, e.updated_at,
        p.bump
    FROM users u
    LEFT JOIN pending_folds p ON p.org_id = u.org_id AND p.user_key = u.user_key
    LEFT JOIN events e ON e.org_id = p.org_id AND e.user_key = p.user_key AND e.seq = p.seq";

/// Folds one pending event into `user`, counting its version bump: the row holds, from column
/// `at` on, the event's seq, created_at, regulation, body and updated_at, then the bump.
pub fn apply_pending(user: &mut PgUser, row: &Row, at: usize) -> Result<(), StoreError> {
    let body: EventBody = serde_json::from_slice(row.get::<_, &[u8]>(at + 3))
        .map_err(|e| StoreError::Internal(format!("event body: {e}")))?;
    let regulation: &str = row.get(at + 2);
    user.record.state.apply(
        &Regulation::parse(regulation).unwrap_or_default(),
        &body,
        assent_model::Stamp {
            at: row.get(at + 1),
            seq: row.get(at),
        },
    );
    user.record.version += i64::from(row.get::<_, i16>(at + 5));
    user.record.updated_at = user
        .record
        .updated_at
        .max(Timestamp::from_millis(row.get(at + 4)));
    Ok(())
}

/// Decodes rows of [`USER_WITH_PENDING`] (sorted by user) into users with their pending events
/// folded in, and their versions counted as they will be once the folder writes them.
pub fn users_with_pending(rows: &[Row], org: &OrganizationId) -> Result<Vec<PgUser>, StoreError> {
    let mut out: Vec<PgUser> = Vec::new();
    for row in rows {
        let key: i64 = row.get(0);
        if out.last().is_none_or(|u| u.key != key) {
            out.push(user_from_row(row, org)?);
        }
        let user = out.last_mut().expect("pushed above");
        if row.get::<_, Option<i64>>(7).is_some() {
            apply_pending(user, row, 7)?;
        }
    }
    Ok(out)
}

/// Users by key, locked for the transaction (`FOR NO KEY UPDATE`: against the folder and other
/// refolds, not against appends) in key order, so that concurrent transactions lock in the
/// same order and do not deadlock.
pub async fn lock_users(
    c: &impl GenericClient,
    org: &OrganizationId,
    keys: &[i64],
) -> Result<Vec<PgUser>, StoreError> {
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    keys.dedup();
    // One index probe per key, in key order, whatever the planner thinks of the table's size.
    let stmt = c
        .prepare_cached(&format!(
            "SELECT u.* FROM UNNEST($2::bigint[]) AS t(user_key)
             CROSS JOIN LATERAL (SELECT {USER_COLUMNS} FROM users
                 WHERE org_id = $1 AND user_key = t.user_key LIMIT 1 FOR NO KEY UPDATE) u"
        ))
        .await
        .map_err(db)?;
    c.query(&stmt, &[&org.as_str(), &keys])
        .await
        .map_err(db)?
        .iter()
        .map(|row| user_from_row(row, org))
        .collect()
}

/// Columns of [`event_from_row`] (prefix `e.`).
pub const EVENT_COLUMNS: &str =
    "e.seq, e.id, e.created_at, e.updated_at, e.status, e.regulation, e.body, e.user_key";

/// Decodes a row of [`EVENT_COLUMNS`] for a user whose id is known.
pub fn event_from_row(
    row: &Row,
    org: &OrganizationId,
    user_id: &str,
) -> Result<ConsentEvent, StoreError> {
    let body: &[u8] = row.get(6);
    let body: EventBody = serde_json::from_slice(body)
        .map_err(|e| StoreError::Internal(format!("event body: {e}")))?;
    let status: i16 = row.get(4);
    let regulation: &str = row.get(5);
    let id: &str = row.get(1);
    Ok(ConsentEvent {
        id: EventId::parse(id).map_err(StoreError::Internal)?,
        organization_id: org.clone(),
        user_id: user_id.to_owned(),
        created_at: Timestamp::from_millis(row.get(2)),
        updated_at: Timestamp::from_millis(row.get(3)),
        status: if status == 0 {
            EventStatus::Confirmed
        } else {
            EventStatus::PendingApproval
        },
        regulation: Regulation::parse(regulation).unwrap_or_default(),
        seq: row.get(0),
        body: Arc::new(body),
    })
}

/// Every event of a user, in arrival order.
pub async fn user_events(
    c: &impl GenericClient,
    org: &OrganizationId,
    user_key: i64,
    user_id: &str,
) -> Result<Vec<ConsentEvent>, StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.org_id = $1 AND e.user_key = $2
             ORDER BY e.seq"
        ))
        .await
        .map_err(db)?;
    c.query(&stmt, &[&org.as_str(), &user_key])
        .await
        .map_err(db)?
        .iter()
        .map(|row| event_from_row(row, org, user_id))
        .collect()
}

/// Events of an organization by id, with their user's key.
pub async fn events_by_ids(
    c: &impl GenericClient,
    org: &OrganizationId,
    ids: &[&str],
) -> Result<Vec<(ConsentEvent, i64)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS}, u.id FROM UNNEST($2::text[]) AS t(id)
             CROSS JOIN LATERAL (SELECT * FROM events
                 WHERE org_id = $1 AND id = t.id LIMIT 1) e
             CROSS JOIN LATERAL (SELECT id FROM users
                 WHERE org_id = $1 AND user_key = e.user_key LIMIT 1) u"
        ))
        .await
        .map_err(db)?;
    c.query(&stmt, &[&org.as_str(), &ids])
        .await
        .map_err(db)?
        .iter()
        .map(|row| {
            let user_id: &str = row.get(8);
            Ok((event_from_row(row, org, user_id)?, row.get(7)))
        })
        .collect()
}

/// One event by id, with its user's key.
pub async fn event_by_id(
    c: &impl GenericClient,
    org: &OrganizationId,
    id: &EventId,
) -> Result<Option<(ConsentEvent, i64)>, StoreError> {
    Ok(events_by_ids(c, org, &[id.as_str()]).await?.pop())
}

/// An API key by its public key string.
pub async fn api_key(c: &impl GenericClient, key: &str) -> Result<Option<ApiKey>, StoreError> {
    let stmt = c
        .prepare_cached(
            "SELECT id, org_id, key, name, enabled, secret_hash, created_at, updated_at
             FROM api_keys WHERE key = $1",
        )
        .await
        .map_err(db)?;
    c.query_opt(&stmt, &[&key])
        .await
        .map_err(db)?
        .map(|r| {
            let org: &str = r.get(1);
            Ok(ApiKey {
                id: r.get(0),
                organization_id: OrganizationId::parse(org).map_err(StoreError::Internal)?,
                key: r.get(2),
                name: r.get(3),
                enabled: r.get(4),
                secret_hash: r.get(5),
                created_at: Timestamp::from_millis(r.get(6)),
                updated_at: Timestamp::from_millis(r.get(7)),
            })
        })
        .transpose()
}

/// A page of users matching the query, in key (creation) order.
pub async fn list_users(
    c: &impl GenericClient,
    org: &OrganizationId,
    query: &UsersQuery,
) -> Result<UsersPage, StoreError> {
    const BATCH: i64 = 500;
    let mut after = match &query.cursor {
        Some(cursor) => decode_cursor(cursor)?,
        None => 0,
    };
    let stmt = c
        .prepare_cached(&format!(
            "WITH page AS (SELECT user_key FROM users WHERE org_id = $1 AND user_key > $2
                           ORDER BY user_key LIMIT $3)
             {USER_WITH_PENDING} JOIN page ON page.user_key = u.user_key
             WHERE u.org_id = $1 ORDER BY u.user_key, e.seq"
        ))
        .await
        .map_err(db)?;
    let mut data = Vec::new();
    loop {
        let rows = c
            .query(&stmt, &[&org.as_str(), &after, &BATCH])
            .await
            .map_err(db)?;
        let users = users_with_pending(&rows, org)?;
        let exhausted = (users.len() as i64) < BATCH;
        for user in users {
            after = user.key;
            let doc = serde_json::to_value(user.record.view(&query.regulation))
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            if query.filter.matches(&doc) {
                data.push(user.record);
                if data.len() == query.limit {
                    let more = !c
                        .query(&stmt, &[&org.as_str(), &after, &1i64])
                        .await
                        .map_err(db)?
                        .is_empty();
                    return Ok(UsersPage {
                        data,
                        cursor: more.then(|| encode_cursor(after)),
                    });
                }
            }
        }
        if exhausted {
            return Ok(UsersPage { data, cursor: None });
        }
    }
}
