//! SQL of the purpose registry, organization settings and consent statistics. Every statement
//! is scoped by organization.

use super::read::db;
use crate::{Stamped, StoreError};
use assent_model::purpose::{MAX_PURPOSES_PER_ORGANIZATION, Purpose, PurposeContent};
use assent_model::stats::{ConsentCounts, DAY_MS};
use assent_model::{Regulation, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// Purposes (one row each, with their creation order and current version), every version of
/// each, settings by name, and the index that lets statistics read one organization's events
/// of one regulation by date.
pub const V5: &str = "
CREATE TABLE purposes (
    org_key    INTEGER NOT NULL,
    id         TEXT NOT NULL,
    position   INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org_key, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE purpose_versions (
    org_key    INTEGER NOT NULL,
    id         TEXT NOT NULL,
    version    INTEGER NOT NULL,
    content    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org_key, id, version)
) STRICT, WITHOUT ROWID;

CREATE TABLE settings (
    org_key    INTEGER NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (org_key, name)
) STRICT, WITHOUT ROWID;

CREATE INDEX events_by_day ON events (org_key, regulation, created_at, status);
";

fn conversion(i: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
}

/// Reads `id, version, content, created_at (of the purpose), updated_at (of the version)`.
fn purpose_of(r: &Row<'_>) -> rusqlite::Result<Purpose> {
    let content: PurposeContent =
        serde_json::from_str(r.get_ref(2)?.as_str()?).map_err(|e| conversion(2, e))?;
    Ok(Purpose {
        id: r.get(0)?,
        version: r.get(1)?,
        content,
        created_at: Timestamp::from_millis(r.get(3)?),
        updated_at: Timestamp::from_millis(r.get(4)?),
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

/// The answer when a purpose does not exist.
pub(crate) fn not_found(id: &str) -> StoreError {
    StoreError::not_found(format!("purpose '{id}' not found"))
}

fn insert_version(conn: &Connection, org_key: i64, p: &Purpose) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO purpose_versions (org_key, id, version, content, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(db)?
    .execute(params![
        org_key,
        p.id,
        p.version,
        to_json(&p.content)?,
        p.updated_at.millis()
    ])
    .map_err(db)?;
    Ok(())
}

/// Registers a purpose at its first version.
pub fn create(conn: &Connection, org_key: i64, p: &Purpose) -> Result<(), StoreError> {
    let (count, last): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(max(position), 0) FROM purposes WHERE org_key = ?1",
        )
        .map_err(db)?
        .query_row([org_key], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db)?;
    if count as usize >= MAX_PURPOSES_PER_ORGANIZATION {
        return Err(StoreError::conflict(format!(
            "the organization already has {MAX_PURPOSES_PER_ORGANIZATION} purposes, the most \
             allowed; delete one first"
        )));
    }
    let n = conn
        .prepare_cached(
            "INSERT INTO purposes (org_key, id, position, version, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        )
        .map_err(db)?
        .execute(params![
            org_key,
            p.id,
            last + 1,
            p.version,
            p.created_at.millis()
        ])
        .map_err(db)?;
    if n == 0 {
        return Err(StoreError::conflict(format!(
            "a purpose with id '{}' already exists",
            p.id
        )));
    }
    insert_version(conn, org_key, p)
}

const CURRENT: &str = "SELECT p.id, v.version, v.content, p.created_at, v.created_at
     FROM purposes p JOIN purpose_versions v
       ON v.org_key = p.org_key AND v.id = p.id AND v.version = p.version";

/// The current version of every purpose, in creation order.
pub fn list(conn: &Connection, org_key: i64) -> Result<Vec<Purpose>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "{CURRENT} WHERE p.org_key = ?1 ORDER BY p.position, p.id"
        ))
        .map_err(db)?;
    let rows = stmt.query_map([org_key], purpose_of).map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

/// One purpose at its current version or at `version`, if it exists.
pub fn get(
    conn: &Connection,
    org_key: i64,
    id: &str,
    version: Option<u32>,
) -> Result<Option<Purpose>, StoreError> {
    let (sql, version) = match version {
        None => (
            format!("{CURRENT} WHERE p.org_key = ?1 AND p.id = ?2 AND ?3 IS NULL"),
            None,
        ),
        Some(v) => (
            "SELECT p.id, v.version, v.content, p.created_at, v.created_at
             FROM purposes p JOIN purpose_versions v ON v.org_key = p.org_key AND v.id = p.id
             WHERE p.org_key = ?1 AND p.id = ?2 AND v.version = ?3"
                .to_owned(),
            Some(v),
        ),
    };
    conn.prepare_cached(&sql)
        .map_err(db)?
        .query_row(params![org_key, id, version], purpose_of)
        .optional()
        .map_err(db)
}

/// Every version of a purpose, newest first (empty when it does not exist).
pub fn versions(conn: &Connection, org_key: i64, id: &str) -> Result<Vec<Purpose>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT p.id, v.version, v.content, p.created_at, v.created_at
             FROM purposes p JOIN purpose_versions v ON v.org_key = p.org_key AND v.id = p.id
             WHERE p.org_key = ?1 AND p.id = ?2 ORDER BY v.version DESC",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![org_key, id], purpose_of)
        .map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

/// Stores the next version of a purpose, if the current one is the version before it.
pub fn add_version(conn: &Connection, org_key: i64, p: &Purpose) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE purposes SET version = ?3 WHERE org_key = ?1 AND id = ?2 AND version = ?3 - 1",
        )
        .map_err(db)?
        .execute(params![org_key, p.id, p.version])
        .map_err(db)?;
    if n == 0 {
        let current: Option<u32> = conn
            .prepare_cached("SELECT version FROM purposes WHERE org_key = ?1 AND id = ?2")
            .map_err(db)?
            .query_row(params![org_key, p.id], |r| r.get(0))
            .optional()
            .map_err(db)?;
        return Err(match current {
            None => not_found(&p.id),
            Some(v) => StoreError::conflict(format!(
                "purpose '{}' is at version {v}; the change was made against version {}",
                p.id,
                p.version - 1
            )),
        });
    }
    insert_version(conn, org_key, p)
}

/// Deletes a purpose and its versions.
pub fn delete(conn: &Connection, org_key: i64, id: &str) -> Result<(), StoreError> {
    let n = conn
        .execute(
            "DELETE FROM purposes WHERE org_key = ?1 AND id = ?2",
            params![org_key, id],
        )
        .map_err(db)?;
    if n == 0 {
        return Err(not_found(id));
    }
    conn.execute(
        "DELETE FROM purpose_versions WHERE org_key = ?1 AND id = ?2",
        params![org_key, id],
    )
    .map_err(db)?;
    Ok(())
}

/// A setting of the organization, by name.
pub fn get_setting<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    org_key: i64,
    name: &str,
) -> Result<Option<Stamped<T>>, StoreError> {
    let row: Option<(String, i64)> = conn
        .prepare_cached("SELECT value, updated_at FROM settings WHERE org_key = ?1 AND name = ?2")
        .map_err(db)?
        .query_row(params![org_key, name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db)?;
    row.map(|(value, at)| {
        Ok(Stamped {
            value: serde_json::from_str(&value).map_err(|e| {
                StoreError::Internal(format!("the stored setting '{name}' is unreadable: {e}"))
            })?,
            updated_at: Timestamp::from_millis(at),
        })
    })
    .transpose()
}

/// Sets a setting of the organization.
pub fn put_setting<T: serde::Serialize>(
    conn: &Connection,
    org_key: i64,
    name: &str,
    setting: &Stamped<T>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO settings (org_key, name, value, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (org_key, name) DO UPDATE SET value = excluded.value,
             updated_at = excluded.updated_at",
    )
    .map_err(db)?
    .execute(params![
        org_key,
        name,
        to_json(&setting.value)?,
        setting.updated_at.millis()
    ])
    .map_err(db)?;
    Ok(())
}

/// Counts confirmed events of `regulation` per day from `start` until `end`, and per purpose
/// how many set `enabled` to true and to false (reading each body once, in SQLite's JSON
/// functions), in one read transaction so that both counts see the same events.
pub fn consent_counts(
    conn: &Connection,
    org_key: i64,
    regulation: &Regulation,
    start: Timestamp,
    end: Timestamp,
) -> Result<ConsentCounts, StoreError> {
    let tx = conn.unchecked_transaction().map_err(db)?;
    let args = params![
        org_key,
        regulation.as_str(),
        start.millis(),
        end.millis(),
        DAY_MS
    ];
    let events = tx
        .prepare_cached(
            "SELECT (created_at - ?3) / ?5, count(*) FROM events
             WHERE org_key = ?1 AND regulation = ?2 AND created_at >= ?3 AND created_at < ?4
               AND status = 0
             GROUP BY 1",
        )
        .map_err(db)?
        .query_map(args, |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    let purposes = tx
        .prepare_cached(
            "SELECT (e.created_at - ?3) / ?5, json_extract(p.value, '$.id'),
                    sum(json_extract(p.value, '$.enabled') IS 1),
                    sum(json_extract(p.value, '$.enabled') IS 0)
             FROM events e, json_each(CAST(e.body AS TEXT), '$.consents.purposes') p
             WHERE e.org_key = ?1 AND e.regulation = ?2 AND e.created_at >= ?3
               AND e.created_at < ?4 AND e.status = 0
             GROUP BY 1, 2",
        )
        .map_err(db)?
        .query_map(args, |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
            ))
        })
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    tx.commit().map_err(db)?;
    Ok(ConsentCounts { events, purposes })
}
