//! Integrations, the outbox and deliveries on SQLite: the SQL, for the writer and the readers.

use super::read::db;
use super::render::{States, ToRender, render};
use crate::StoreError;
use crate::integrations::{
    AttemptResult, DeliveriesQuery, DueDelivery, Outcome, attempts_bytes, attempts_from,
    integration_from_row, integration_row, push_attempt,
};
use assent_model::integration::{
    Change, ChangeKind, Delivery, DeliveryStatus, Integration, kinds_mask,
};
use assent_model::query::Page;
use assent_model::{OrganizationId, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::{BTreeMap, HashMap};

const COLUMNS: &str =
    "integration_key, id, type_id, enabled, config, cursor, created_at, updated_at";

/// An integration with the keys of its row.
pub struct IntegrationRecord {
    /// Row key.
    pub key: i64,
    /// The last outbox change it has taken.
    pub cursor: i64,
    /// The integration.
    pub integration: Integration,
}

fn record(row: &Row<'_>, org: &OrganizationId) -> Result<IntegrationRecord, StoreError> {
    let get = |e: rusqlite::Error| db(e);
    let config: Vec<u8> = row.get(4).map_err(get)?;
    let integration = integration_from_row(
        org,
        row.get(1).map_err(get)?,
        &row.get::<_, String>(2).map_err(get)?,
        row.get::<_, i64>(3).map_err(get)? != 0,
        &config,
        row.get(6).map_err(get)?,
        row.get(7).map_err(get)?,
    )?;
    Ok(IntegrationRecord {
        key: row.get(0).map_err(get)?,
        cursor: row.get(5).map_err(get)?,
        integration,
    })
}

/// The kinds each organization's enabled integrations want, by organization key.
pub fn subscriptions(conn: &Connection) -> Result<HashMap<i64, u8>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT i.org_key, o.id, i.id, i.type_id, i.enabled, i.config, i.created_at, i.updated_at
             FROM integrations i JOIN organizations o ON o.org_key = i.org_key
             WHERE i.enabled = 1",
        )
        .map_err(db)?;
    let mut rows = stmt.query([]).map_err(db)?;
    let mut out: HashMap<i64, u8> = HashMap::new();
    while let Some(row) = rows.next().map_err(db)? {
        let org = OrganizationId::parse(&row.get::<_, String>(1).map_err(db)?)
            .map_err(StoreError::Internal)?;
        let config: Vec<u8> = row.get(5).map_err(db)?;
        let i = integration_from_row(
            &org,
            row.get(2).map_err(db)?,
            &row.get::<_, String>(3).map_err(db)?,
            true,
            &config,
            row.get(6).map_err(db)?,
            row.get(7).map_err(db)?,
        )?;
        *out.entry(row.get(0).map_err(db)?).or_default() |= kinds_mask(&i.event_types);
    }
    Ok(out)
}

/// Bits of a change number that give the change's place in its outbox row: change number =
/// row number << `PLACE_BITS` | place. Numbers keep the order in which changes were made.
pub const PLACE_BITS: u32 = 10;
/// Most changes in one outbox row.
pub const CHANGES_PER_ROW: usize = 1 << PLACE_BITS;

/// The number of change `place` of outbox row `row`.
pub fn change_number(row: i64, place: usize) -> i64 {
    (row << PLACE_BITS) | place as i64
}

/// The outbox row of a change number.
pub fn row_of(change: i64) -> i64 {
    change >> PLACE_BITS
}

/// The place of a change number in its outbox row.
pub fn place_of(change: i64) -> usize {
    (change & (CHANGES_PER_ROW as i64 - 1)) as usize
}

/// A change as put in the outbox by one command, waiting for the command to succeed.
#[derive(Debug)]
pub struct NewChange {
    /// Organization.
    pub org_key: i64,
    /// The user the change is about.
    pub user_key: i64,
    /// The change.
    pub change: Change,
    /// The integration the change came from (inbound), which must not get it back.
    pub origin: Option<String>,
    /// Whether `change.body` is a reference to the log ([`super::render`]) rather than the
    /// body itself.
    pub reference: bool,
}

/// What an outbox row says of each of its changes, without its bodies: user, kind (with
/// whether the body is a reference) and body length, 13 bytes each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Head {
    /// The user the change is about.
    pub user_key: i64,
    /// What happened.
    pub kind: i64,
    /// Whether the body is a reference to the log, to be rendered ([`super::render`]).
    pub reference: bool,
    /// Length of its body in the row's uncompressed bodies.
    pub len: u32,
}

const HEAD_BYTES: usize = 13;

/// The bit of a head's kind byte that marks a reference.
const REFERENCE_BIT: u8 = 0x80;

/// Encodes heads.
pub fn encode_heads(heads: &[Head]) -> Vec<u8> {
    let mut out = Vec::with_capacity(heads.len() * HEAD_BYTES);
    for h in heads {
        out.extend_from_slice(&h.user_key.to_le_bytes());
        out.push(h.kind as u8 | if h.reference { REFERENCE_BIT } else { 0 });
        out.extend_from_slice(&h.len.to_le_bytes());
    }
    out
}

/// Decodes heads.
pub fn decode_heads(bytes: &[u8]) -> Result<Vec<Head>, StoreError> {
    if !bytes.len().is_multiple_of(HEAD_BYTES) {
        return Err(StoreError::Internal("outbox heads are cut short".into()));
    }
    Ok(bytes
        .chunks_exact(HEAD_BYTES)
        .map(|c| Head {
            user_key: i64::from_le_bytes(c[0..8].try_into().expect("8 bytes")),
            kind: i64::from(c[8] & !REFERENCE_BIT),
            reference: c[8] & REFERENCE_BIT != 0,
            len: u32::from_le_bytes(c[9..13].try_into().expect("4 bytes")),
        })
        .collect())
}

/// The bodies of an outbox row, uncompressed, split by its heads.
pub fn split_bodies(heads: &[Head], compressed: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
    let all = lz4_flex::decompress_size_prepended(compressed)
        .map_err(|e| StoreError::Internal(format!("outbox bodies: {e}")))?;
    let mut out = Vec::with_capacity(heads.len());
    let mut at = 0usize;
    for h in heads {
        let end = at + h.len as usize;
        let body = all
            .get(at..end)
            .ok_or_else(|| StoreError::Internal("outbox bodies are cut short".into()))?;
        out.push(body.to_vec());
        at = end;
    }
    Ok(out)
}

/// The number of the last change ever put in the outbox (the last place of the last row).
pub fn last_change(conn: &Connection) -> Result<i64, StoreError> {
    let row: i64 = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?
        .unwrap_or(0);
    Ok(change_number(row, CHANGES_PER_ROW - 1))
}

/// Puts the changes of one command in the outbox, in order: one row per organization and
/// origin for up to [`CHANGES_PER_ROW`] changes, their bodies compressed together (a user's
/// change before and after, and the event it names, repeat one another).
pub fn insert_changes(
    conn: &Connection,
    changes: &[NewChange],
    now: Timestamp,
) -> Result<Vec<i64>, StoreError> {
    let mut rows = Vec::new();
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO outbox (org_key, created_at, origin, heads, body)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(db)?;
    let mut rest = changes;
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take(CHANGES_PER_ROW)
            .take_while(|c| c.org_key == first.org_key && c.origin == first.origin)
            .count();
        let (row, after) = rest.split_at(n);
        rest = after;
        let mut heads = Vec::with_capacity(row.len());
        let mut bodies = Vec::with_capacity(row.iter().map(|c| c.change.body.len()).sum());
        for c in row {
            heads.push(Head {
                user_key: c.user_key,
                kind: c.change.kind.code(),
                reference: c.reference,
                len: c.change.body.len() as u32,
            });
            bodies.extend_from_slice(&c.change.body);
        }
        insert
            .execute(params![
                first.org_key,
                now.millis(),
                first.origin,
                encode_heads(&heads),
                lz4_flex::compress_prepend_size(&bodies)
            ])
            .map_err(db)?;
        rows.push(conn.last_insert_rowid());
    }
    Ok(rows)
}

/// The number the next outbox row will take.
pub fn next_row(conn: &Connection) -> Result<i64, StoreError> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(db)?;
    Ok(last.unwrap_or(0) + 1)
}

/// Whether the outbox holds any change.
pub fn any(conn: &Connection) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox)")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db)
}

/// The outbox rows where the events of user `user_key` (those indexed, and `pending` ones)
/// made changes kept as references, with those events, oldest first.
pub fn reference_rows(
    conn: &Connection,
    org_key: i64,
    user_key: i64,
    pending: &[i64],
) -> Result<BTreeMap<i64, Vec<i64>>, StoreError> {
    let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut indexed = conn
        .prepare_cached(
            "SELECT e.outbox_row, e.seq FROM user_events ue JOIN events e ON e.seq = ue.seq
             WHERE ue.org_key = ?1 AND ue.user_key = ?2 AND e.outbox_row IS NOT NULL",
        )
        .map_err(db)?;
    let rows = indexed
        .query_map(params![org_key, user_key], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(db)?;
    for row in rows {
        let (row, seq) = row.map_err(db)?;
        out.entry(row).or_default().push(seq);
    }
    let mut one = conn
        .prepare_cached(
            "SELECT outbox_row FROM events WHERE seq = ?1 AND user_key = ?2
               AND outbox_row IS NOT NULL",
        )
        .map_err(db)?;
    for seq in pending {
        if let Some(row) = one
            .query_row(params![seq, user_key], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(db)?
        {
            out.entry(row).or_default().push(*seq);
        }
    }
    Ok(out)
}

/// Forgets that events `seqs` made changes kept as references (they are written out).
pub fn forget_references(conn: &Connection, seqs: &[i64]) -> Result<(), StoreError> {
    let mut update = conn
        .prepare_cached("UPDATE events SET outbox_row = NULL WHERE seq = ?1")
        .map_err(db)?;
    for seq in seqs {
        update.execute([seq]).map_err(db)?;
    }
    Ok(())
}

/// Renders the changes of user `user_key` kept as references in outbox row `row` and puts
/// their bodies in their place, before the log they refer to changes (see [`super::render`]).
/// `pending` gives the user's events the per-user index does not list yet; `states` carries
/// the user's states from one row to the next (rows are best written out oldest first).
pub fn write_out(
    conn: &Connection,
    org: &OrganizationId,
    row: i64,
    user_key: i64,
    pending: &dyn Fn(i64) -> Vec<i64>,
    states: &mut States,
) -> Result<(), StoreError> {
    let Some((heads, compressed)) = conn
        .prepare_cached("SELECT heads, body FROM outbox WHERE seq = ?1")
        .and_then(|mut s| {
            s.query_row([row], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()
        })
        .map_err(db)?
    else {
        // Gone already: nobody needed it any more.
        return Ok(());
    };
    let mut heads = decode_heads(&heads)?;
    let mut bodies = split_bodies(&heads, &compressed)?;
    let places: Vec<usize> = (0..heads.len())
        .filter(|&i| heads[i].reference && heads[i].user_key == user_key)
        .collect();
    if places.is_empty() {
        return Ok(());
    }
    let rendered = {
        let changes = places
            .iter()
            .map(|&i| {
                Ok(ToRender {
                    user_key,
                    kind: ChangeKind::from_code(heads[i].kind).ok_or_else(|| {
                        StoreError::Internal(format!("outbox row {row}: unknown kind"))
                    })?,
                    reference: &bodies[i],
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        render(conn, org, &changes, pending, states)?
    };
    for (&i, body) in places.iter().zip(rendered) {
        heads[i].reference = false;
        heads[i].len = body.len() as u32;
        bodies[i] = body;
    }
    conn.prepare_cached("UPDATE outbox SET heads = ?1, body = ?2 WHERE seq = ?3")
        .and_then(|mut s| {
            s.execute(params![
                encode_heads(&heads),
                lz4_flex::compress_prepend_size(&bodies.concat()),
                row
            ])
        })
        .map_err(db)?;
    Ok(())
}

/// One integration of an organization.
pub fn find(
    conn: &Connection,
    org: &OrganizationId,
    org_key: i64,
    id: &str,
) -> Result<Option<IntegrationRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM integrations WHERE org_key = ?1 AND id = ?2"
        ))
        .map_err(db)?;
    let mut rows = stmt.query(params![org_key, id]).map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => Ok(Some(record(row, org)?)),
        None => Ok(None),
    }
}

/// The integrations of an organization, oldest first.
pub fn list(
    conn: &Connection,
    org: &OrganizationId,
    org_key: i64,
) -> Result<Vec<Integration>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM integrations WHERE org_key = ?1 ORDER BY integration_key"
        ))
        .map_err(db)?;
    let mut rows = stmt.query([org_key]).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(record(row, org)?.integration);
    }
    Ok(out)
}

/// Every enabled integration.
pub fn active(conn: &Connection) -> Result<Vec<Integration>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT i.integration_key, i.id, i.type_id, i.enabled, i.config, i.cursor,
                    i.created_at, i.updated_at, o.id
             FROM integrations i JOIN organizations o ON o.org_key = i.org_key
             WHERE i.enabled = 1 ORDER BY i.integration_key",
        )
        .map_err(db)?;
    let mut rows = stmt.query([]).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        let org = OrganizationId::parse(&row.get::<_, String>(8).map_err(db)?)
            .map_err(StoreError::Internal)?;
        out.push(record(row, &org)?.integration);
    }
    Ok(out)
}

/// Stores a new integration whose cursor is `cursor`.
pub fn insert(
    conn: &Connection,
    org_key: i64,
    i: &Integration,
    cursor: i64,
) -> Result<(), StoreError> {
    let row = integration_row(i)?;
    conn.execute(
        "INSERT INTO integrations (org_key, id, type_id, enabled, config, cursor, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            org_key,
            i.id,
            row.type_id,
            row.enabled,
            row.config,
            cursor,
            i.created_at.millis(),
            i.updated_at.millis()
        ],
    )
    .map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => {
            StoreError::conflict(format!("integration '{}' already exists", i.id))
        }
        _ => db(e),
    })?;
    Ok(())
}

/// Rewrites an integration's row; moves its cursor when `cursor` is given.
pub fn update(
    conn: &Connection,
    key: i64,
    i: &Integration,
    cursor: Option<i64>,
) -> Result<(), StoreError> {
    let row = integration_row(i)?;
    conn.execute(
        "UPDATE integrations SET enabled = ?1, config = ?2, updated_at = ?3,
                cursor = coalesce(?4, cursor)
         WHERE integration_key = ?5",
        params![row.enabled, row.config, i.updated_at.millis(), cursor, key],
    )
    .map_err(db)?;
    Ok(())
}

/// Deletes an integration and its deliveries.
pub fn delete(conn: &Connection, key: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM deliveries WHERE integration_key = ?1", [key])
        .map_err(db)?;
    conn.execute("DELETE FROM integrations WHERE integration_key = ?1", [key])
        .map_err(db)?;
    Ok(())
}

/// How many deliveries of an integration wait (queued or retrying).
fn waiting(conn: &Connection, key: i64) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "SELECT count(*) FROM deliveries INDEXED BY deliveries_open
         WHERE integration_key = ?1 AND status < 2",
    )
    .and_then(|mut s| s.query_row([key], |r| r.get(0)))
    .map_err(db)
}

/// Moves up to `limit` changes after the integration's cursor into its deliveries (those of
/// the kinds it wants), and its cursor past them. Does nothing while `limit` deliveries or
/// more already wait, so that a backlog stays in the compact outbox.
pub fn fan_in(
    conn: &Connection,
    rec: &IntegrationRecord,
    org_key: i64,
    limit: usize,
) -> Result<i64, StoreError> {
    if waiting(conn, rec.key)? >= limit as i64 {
        return Ok(rec.cursor);
    }
    let mut select = conn
        .prepare_cached(
            "SELECT seq, created_at, origin, heads FROM outbox
             WHERE org_key = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )
        .map_err(db)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO deliveries (integration_key, seq, id, user_key, kind, status, next_at,
                                     attempts, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, X'5B5D', ?6, ?6)",
        )
        .map_err(db)?;
    let mut rows = select
        .query(params![org_key, row_of(rec.cursor + 1), limit as i64])
        .map_err(db)?;
    let mut cursor = rec.cursor;
    let mut taken = 0;
    'rows: while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(0).map_err(db)?;
        let created_at: i64 = row.get(1).map_err(db)?;
        // No echo: a change that came from this integration does not go back to it.
        let origin: Option<String> = row.get(2).map_err(db)?;
        let echo = origin.as_deref() == Some(rec.integration.id.as_str());
        let heads = decode_heads(
            row.get_ref(3)
                .map_err(db)?
                .as_blob()
                .map_err(|e| StoreError::Internal(format!("outbox row {seq}: {e}")))?,
        )?;
        for (place, head) in heads.iter().enumerate() {
            let number = change_number(seq, place);
            if number <= cursor {
                continue;
            }
            if taken == limit {
                break 'rows;
            }
            cursor = number;
            let kind = ChangeKind::from_code(head.kind);
            if echo || !kind.is_some_and(|k| rec.integration.wants(k)) {
                continue;
            }
            insert
                .execute(params![
                    rec.key,
                    number,
                    uuid::Uuid::now_v7().to_string(),
                    head.user_key,
                    head.kind,
                    created_at
                ])
                .map_err(db)?;
            taken += 1;
        }
        // The row is done: later rows start after its last place.
        cursor = change_number(seq, CHANGES_PER_ROW - 1);
    }
    if cursor != rec.cursor {
        conn.prepare_cached("UPDATE integrations SET cursor = ?1 WHERE integration_key = ?2")
            .and_then(|mut s| s.execute(params![cursor, rec.key]))
            .map_err(db)?;
    }
    Ok(cursor)
}

/// Deliveries of an integration due at `now`, each the oldest unfinished one of its user,
/// skipping those `taken` says are in flight; at most `limit`.
pub fn due(
    conn: &Connection,
    rec: &IntegrationRecord,
    now: Timestamp,
    limit: usize,
    taken_now: impl Fn(i64) -> bool,
) -> Result<Vec<(i64, DueDelivery)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT d.seq, d.id, d.kind, d.status, d.next_at, d.attempts, d.created_at,
                    d.updated_at
             FROM deliveries d INDEXED BY deliveries_open
             WHERE d.integration_key = ?1 AND d.status < 2 AND d.next_at <= ?2
               AND NOT EXISTS (SELECT 1 FROM deliveries e INDEXED BY deliveries_open_by_user
                   WHERE e.integration_key = d.integration_key AND e.user_key = d.user_key
                     AND e.status < 2 AND e.seq < d.seq)
             ORDER BY d.seq LIMIT ?3",
        )
        .map_err(db)?;
    let mut rows = stmt
        .query(params![rec.key, now.millis(), (limit * 2 + 64) as i64])
        .map_err(db)?;
    let mut out = Vec::new();
    let mut taken = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(0).map_err(db)?;
        if taken_now(seq) {
            continue;
        }
        taken.push((seq, delivery_from(row, &rec.integration.id)?));
        if taken.len() == limit {
            break;
        }
    }
    drop(rows);
    // Each row's bodies are uncompressed once for all its deliveries taken here.
    let mut body = conn
        .prepare_cached("SELECT heads, body FROM outbox WHERE seq = ?1")
        .map_err(db)?;
    let mut rows: HashMap<i64, (Vec<Head>, Vec<Vec<u8>>)> = HashMap::new();
    for (seq, delivery) in taken {
        let row = row_of(seq);
        if let std::collections::hash_map::Entry::Vacant(slot) = rows.entry(row) {
            let Some((heads, compressed)) = body
                .query_row([row], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .optional()
                .map_err(db)?
            else {
                // Never expected (a row goes only when no delivery needs it); the others of
                // this round still go out.
                tracing::error!(
                    change = seq,
                    "a delivery's change is missing from the outbox"
                );
                continue;
            };
            let heads = decode_heads(&heads)?;
            let bodies = split_bodies(&heads, &compressed)?;
            slot.insert((heads, bodies));
        }
        let place = (seq & (CHANGES_PER_ROW as i64 - 1)) as usize;
        let (heads, bodies) = rows.get_mut(&row).expect("inserted above");
        // Each change is claimed once per round: its body is taken, not copied.
        let change = bodies
            .get_mut(place)
            .map(std::mem::take)
            .ok_or_else(|| StoreError::Internal(format!("change {seq} is not in the outbox")))?;
        out.push((
            seq,
            DueDelivery {
                delivery,
                organization_id: rec.integration.organization_id.clone(),
                body: change,
                unrendered: heads[place].reference.then_some(seq),
            },
        ));
    }
    Ok(out)
}

/// Reads a delivery from columns seq, id, kind, status, next_at, attempts, created_at,
/// updated_at.
fn delivery_from(row: &Row<'_>, integration_id: &str) -> Result<Delivery, StoreError> {
    let status = DeliveryStatus::from_code(row.get(3).map_err(db)?)
        .ok_or_else(|| StoreError::Internal("delivery status".into()))?;
    let next_at: i64 = row.get(4).map_err(db)?;
    let attempts: Vec<u8> = row.get(5).map_err(db)?;
    Ok(Delivery {
        id: row.get(1).map_err(db)?,
        integration_id: integration_id.to_owned(),
        kind: ChangeKind::from_code(row.get(2).map_err(db)?)
            .ok_or_else(|| StoreError::Internal("delivery kind".into()))?,
        status,
        attempts: attempts_from(&attempts)?,
        next_attempt_at: matches!(status, DeliveryStatus::Queued | DeliveryStatus::Retrying)
            .then(|| Timestamp::from_millis(next_at)),
        created_at: Timestamp::from_millis(row.get(6).map_err(db)?),
        updated_at: Timestamp::from_millis(row.get(7).map_err(db)?),
    })
}

/// Records attempts; returns whether the integration must be disabled (`410 Gone`), and the
/// change numbers of the deliveries recorded.
pub fn record_attempts(
    conn: &Connection,
    rec: &IntegrationRecord,
    results: &[AttemptResult],
    now: Timestamp,
) -> Result<(bool, Vec<i64>), StoreError> {
    let mut gone = false;
    let mut recorded = Vec::with_capacity(results.len());
    let mut select = conn
        .prepare_cached(
            "SELECT seq, attempts FROM deliveries WHERE integration_key = ?1 AND id = ?2",
        )
        .map_err(db)?;
    let mut update = conn
        .prepare_cached(
            "UPDATE deliveries SET status = ?1, next_at = ?2, attempts = ?3, updated_at = ?4
             WHERE integration_key = ?5 AND seq = ?6",
        )
        .map_err(db)?;
    for r in results {
        let Some((seq, attempts)) = select
            .query_row(params![rec.key, r.delivery_id], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .optional()
            .map_err(db)?
        else {
            // Deleted meanwhile (with its integration).
            continue;
        };
        let mut attempts = attempts_from(&attempts)?;
        push_attempt(&mut attempts, r.attempt.clone());
        let (status, next_at) = match &r.outcome {
            Outcome::Delivered => (DeliveryStatus::Delivered, 0),
            Outcome::RetryAt(t) => (DeliveryStatus::Retrying, t.millis()),
            Outcome::Park => (DeliveryStatus::Parked, 0),
            Outcome::Gone => {
                gone = true;
                (DeliveryStatus::Parked, 0)
            }
        };
        update
            .execute(params![
                status.code(),
                next_at,
                attempts_bytes(&attempts)?,
                now.millis(),
                rec.key,
                seq
            ])
            .map_err(db)?;
        recorded.push(seq);
    }
    Ok((gone, recorded))
}

/// A page of an integration's deliveries, newest first.
pub fn list_deliveries(
    conn: &Connection,
    rec: &IntegrationRecord,
    q: &DeliveriesQuery,
) -> Result<Page<Delivery>, StoreError> {
    let status = q.status.map(DeliveryStatus::code).unwrap_or(-1);
    let total: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM deliveries WHERE integration_key = ?1
               AND (?2 < 0 OR status = ?2)",
        )
        .and_then(|mut s| s.query_row(params![rec.key, status], |r| r.get(0)))
        .map_err(db)?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, id, kind, status, next_at, attempts, created_at, updated_at
             FROM deliveries WHERE integration_key = ?1 AND (?2 < 0 OR status = ?2)
             ORDER BY seq DESC LIMIT ?3 OFFSET ?4",
        )
        .map_err(db)?;
    let mut rows = stmt
        .query(params![rec.key, status, q.limit as i64, q.skip as i64])
        .map_err(db)?;
    let mut data = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        data.push(delivery_from(row, &rec.integration.id)?);
    }
    Ok(Page {
        total: total as usize,
        limit: q.limit,
        skip: q.skip,
        data,
    })
}

/// One delivery of an integration.
pub fn find_delivery(
    conn: &Connection,
    rec: &IntegrationRecord,
    id: &str,
) -> Result<Option<(i64, Delivery)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, id, kind, status, next_at, attempts, created_at, updated_at
             FROM deliveries WHERE integration_key = ?1 AND id = ?2",
        )
        .map_err(db)?;
    let mut rows = stmt.query(params![rec.key, id]).map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => Ok(Some((
            row.get(0).map_err(db)?,
            delivery_from(row, &rec.integration.id)?,
        ))),
        None => Ok(None),
    }
}

/// Makes a delivery due now (a retry asked for by a person).
pub fn reschedule(
    conn: &Connection,
    rec: &IntegrationRecord,
    seq: i64,
    now: Timestamp,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE deliveries SET status = 1, next_at = ?1, updated_at = ?1
         WHERE integration_key = ?2 AND seq = ?3",
        params![now.millis(), rec.key, seq],
    )
    .map_err(db)?;
    Ok(())
}

/// Forgets delivered deliveries older than `before`, then the changes no integration still
/// needs; returns how many rows went.
pub fn prune(conn: &Connection, before: Timestamp) -> Result<u64, StoreError> {
    let deliveries = conn
        .execute(
            "DELETE FROM deliveries WHERE status = 2 AND updated_at < ?1",
            [before.millis()],
        )
        .map_err(db)?;
    let changes = conn
        .execute(
            "DELETE FROM outbox WHERE created_at < ?1
               AND ((seq << ?2) | ?3) <= coalesce((SELECT min(cursor) FROM integrations i
                                    WHERE i.org_key = outbox.org_key AND i.enabled = 1),
                                   9223372036854775807)
               AND NOT EXISTS (SELECT 1 FROM deliveries d
                   WHERE d.seq BETWEEN (outbox.seq << ?2) AND ((outbox.seq << ?2) | ?3)
                     AND d.status <> 2)",
            params![before.millis(), PLACE_BITS, CHANGES_PER_ROW as i64 - 1],
        )
        .map_err(db)?;
    Ok((deliveries + changes) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(kind: ChangeKind, n: usize) -> Change {
        Change {
            kind,
            body: format!(r#"{{"n":{n}}}"#).into_bytes(),
        }
    }

    /// A store with one webhook of organization 1 that wants event.created only.
    fn store() -> (tempfile::TempDir, Connection, IntegrationRecord) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("assent.db")).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let org = OrganizationId::parse("org").unwrap();
        let integration = Integration::parse_new(
            &json!({"type_id": "webhook-http", "event_types": ["event.created"],
                    "properties": {"url": "https://example.com/h"}}),
            &org,
            Timestamp::from_millis(0),
        )
        .unwrap();
        insert(&conn, 1, &integration, last_change(&conn).unwrap()).unwrap();
        let rec = find(&conn, &org, 1, &integration.id).unwrap().unwrap();
        (dir, conn, rec)
    }

    #[test]
    fn a_command_over_a_row_s_size_takes_several_rows_in_order() {
        let (_dir, conn, _) = store();
        let changes: Vec<NewChange> = (0..CHANGES_PER_ROW + 3)
            .map(|n| NewChange {
                org_key: 1,
                user_key: n as i64,
                change: change(ChangeKind::EventCreated, n),
                origin: None,
                reference: n % 3 == 0,
            })
            .collect();
        insert_changes(&conn, &changes, Timestamp::from_millis(1)).unwrap();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = conn
            .prepare("SELECT heads, body FROM outbox ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 2);
        let mut n = 0;
        for (heads, body) in rows {
            let heads = decode_heads(&heads).unwrap();
            for (head, body) in heads.iter().zip(split_bodies(&heads, &body).unwrap()) {
                assert_eq!(head.user_key, n as i64);
                assert_eq!(head.kind, ChangeKind::EventCreated.code());
                assert_eq!(head.reference, n % 3 == 0);
                assert_eq!(body, change(ChangeKind::EventCreated, n).body);
                n += 1;
            }
        }
        assert_eq!(n, CHANGES_PER_ROW + 3);
    }

    #[test]
    fn fan_in_stops_inside_a_row_and_goes_on_from_there_skipping_unwanted_kinds() {
        let (_dir, conn, mut rec) = store();
        // Row 1: created, updated, created; row 2 (another origin): created.
        let kinds = [
            (ChangeKind::EventCreated, None),
            (ChangeKind::UserUpdated, None),
            (ChangeKind::EventCreated, None),
            (ChangeKind::EventCreated, Some("crm".to_owned())),
        ];
        let changes: Vec<NewChange> = kinds
            .iter()
            .enumerate()
            .map(|(n, (kind, origin))| NewChange {
                org_key: 1,
                user_key: 9,
                change: change(*kind, n),
                origin: origin.clone(),
                reference: false,
            })
            .collect();
        insert_changes(&conn, &changes, Timestamp::from_millis(1)).unwrap();
        let numbers = |conn: &Connection| -> Vec<i64> {
            conn.prepare("SELECT seq FROM deliveries ORDER BY seq")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        rec.cursor = fan_in(&conn, &rec, 1, 1).unwrap();
        assert_eq!(numbers(&conn), vec![change_number(1, 0)]);
        assert_eq!(rec.cursor, change_number(1, 0));
        rec.cursor = fan_in(&conn, &rec, 1, 5).unwrap();
        assert_eq!(
            numbers(&conn),
            vec![
                change_number(1, 0),
                change_number(1, 2),
                change_number(2, 0)
            ]
        );
        assert_eq!(rec.cursor, change_number(2, CHANGES_PER_ROW - 1));
        // The bodies come back by change number.
        let due = due(&conn, &rec, Timestamp::from_millis(1), 10, |_| false).unwrap();
        let bodies: Vec<Vec<u8>> = due.into_iter().map(|(_, d)| d.body).collect();
        assert_eq!(bodies, vec![change(ChangeKind::EventCreated, 0).body]);
    }
}
