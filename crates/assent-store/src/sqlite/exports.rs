//! SQL of export configurations and the hold a run takes on one. Every statement but the
//! scheduler's look for due exports is scoped by organization.

use super::read::db;
use crate::{ExportRecord, StoreError};
use assent_model::{OrganizationId, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// Export configurations: settings and run state as JSON, the next run time, and the hold of
/// the run under way (`lease_until`).
pub const V4: &str = "
CREATE TABLE exports (
    org_key     INTEGER NOT NULL,
    id          TEXT NOT NULL,
    config      TEXT NOT NULL,
    state       TEXT NOT NULL,
    next_run_at INTEGER,
    lease_until INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (org_key, id)
) STRICT, WITHOUT ROWID;
CREATE INDEX exports_due ON exports (next_run_at) WHERE next_run_at IS NOT NULL;
";

const COLUMNS: &str = "id, config, state, next_run_at, lease_until, created_at, updated_at";

fn export_of(org: &OrganizationId, r: &Row<'_>) -> rusqlite::Result<ExportRecord> {
    let json = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    let bad = |i: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    Ok(ExportRecord {
        id: r.get(0)?,
        organization_id: org.clone(),
        config: serde_json::from_str(&json(1)?).map_err(|e| bad(1, e))?,
        state: serde_json::from_str(&json(2)?).map_err(|e| bad(2, e))?,
        next_run_at: r.get::<_, Option<i64>>(3)?.map(Timestamp::from_millis),
        lease_until: r.get::<_, Option<i64>>(4)?.map(Timestamp::from_millis),
        created_at: Timestamp::from_millis(r.get(5)?),
        updated_at: Timestamp::from_millis(r.get(6)?),
    })
}

pub(crate) fn not_found(id: &str) -> StoreError {
    StoreError::not_found(format!("export '{id}' not found"))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Stores a new export configuration.
pub fn create(conn: &Connection, org_key: i64, e: &ExportRecord) -> Result<(), StoreError> {
    let n = conn
        .execute(
            "INSERT INTO exports (org_key, id, config, state, next_run_at, lease_until, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7) ON CONFLICT DO NOTHING",
            params![
                org_key,
                e.id,
                to_json(&e.config)?,
                to_json(&e.state)?,
                e.next_run_at.map(Timestamp::millis),
                e.created_at.millis(),
                e.updated_at.millis()
            ],
        )
        .map_err(db)?;
    if n == 0 {
        return Err(StoreError::conflict(format!(
            "an export with id '{}' already exists",
            e.id
        )));
    }
    Ok(())
}

/// The export configurations of an organization, oldest first.
pub fn list(
    conn: &Connection,
    org: &OrganizationId,
    org_key: i64,
) -> Result<Vec<ExportRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM exports WHERE org_key = ?1 ORDER BY created_at, id"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map([org_key], |r| export_of(org, r))
        .map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

/// One export configuration, if it exists.
pub fn get(
    conn: &Connection,
    org: &OrganizationId,
    org_key: i64,
    id: &str,
) -> Result<Option<ExportRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM exports WHERE org_key = ?1 AND id = ?2"
    ))
    .map_err(db)?
    .query_row(params![org_key, id], |r| export_of(org, r))
    .optional()
    .map_err(db)
}

/// Replaces the settings and next run time of an export.
pub fn update(conn: &Connection, org_key: i64, e: &ExportRecord) -> Result<(), StoreError> {
    let n = conn
        .execute(
            "UPDATE exports SET config = ?3, next_run_at = ?4, updated_at = ?5
             WHERE org_key = ?1 AND id = ?2",
            params![
                org_key,
                e.id,
                to_json(&e.config)?,
                e.next_run_at.map(Timestamp::millis),
                e.updated_at.millis()
            ],
        )
        .map_err(db)?;
    if n == 0 {
        return Err(not_found(&e.id));
    }
    Ok(())
}

/// Deletes an export configuration.
pub fn delete(conn: &Connection, org_key: i64, id: &str) -> Result<(), StoreError> {
    let n = conn
        .execute(
            "DELETE FROM exports WHERE org_key = ?1 AND id = ?2",
            params![org_key, id],
        )
        .map_err(db)?;
    if n == 0 {
        return Err(not_found(id));
    }
    Ok(())
}

/// Exports due at `now` that no run holds, soonest first.
pub fn due(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<(OrganizationId, String)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT o.id, e.id FROM exports e JOIN organizations o ON o.org_key = e.org_key
             WHERE e.next_run_at IS NOT NULL AND e.next_run_at <= ?1
               AND (e.lease_until IS NULL OR e.lease_until < ?1)
             ORDER BY e.next_run_at LIMIT ?2",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![now.millis(), limit as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (org, id) = row.map_err(db)?;
        if let Ok(org) = OrganizationId::parse(&org) {
            out.push((org, id));
        }
    }
    Ok(out)
}

/// Takes the hold of a run on an export, if free (and due, with `only_due`).
pub fn claim(
    conn: &Connection,
    org: &OrganizationId,
    org_key: i64,
    id: &str,
    now: Timestamp,
    lease_until: Timestamp,
    only_due: bool,
) -> Result<Option<ExportRecord>, StoreError> {
    let n = conn
        .execute(
            "UPDATE exports SET lease_until = ?4
             WHERE org_key = ?1 AND id = ?2 AND (lease_until IS NULL OR lease_until < ?3)
               AND (?5 = 0 OR (next_run_at IS NOT NULL AND next_run_at <= ?3))",
            params![org_key, id, now.millis(), lease_until.millis(), only_due],
        )
        .map_err(db)?;
    if n == 0 {
        return Ok(None);
    }
    get(conn, org, org_key, id)
}

/// Records a run's state, and perhaps the next run time and the end of its hold.
pub fn save_run(
    conn: &Connection,
    org_key: i64,
    id: &str,
    state: &assent_model::export::ExportState,
    next_run_at: Option<Timestamp>,
    release: bool,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE exports SET state = ?3,
             next_run_at = CASE WHEN ?4 IS NULL THEN next_run_at ELSE ?4 END,
             lease_until = CASE WHEN ?5 THEN NULL ELSE lease_until END
         WHERE org_key = ?1 AND id = ?2",
        params![
            org_key,
            id,
            to_json(state)?,
            next_run_at.map(Timestamp::millis),
            release
        ],
    )
    .map_err(db)?;
    Ok(())
}
