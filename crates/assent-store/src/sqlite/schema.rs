//! The SQLite schema and its migrations.
//!
//! Events are an append-only log ordered by arrival (`seq`), so that a write appends to the end
//! of the file instead of touching one page per user. The per-user index of events
//! (`user_events`) and the derived user rows are written in bulk by the writer's flush; between
//! flushes the writer keeps them in memory and, after a crash, rebuilds them from the log tail
//! (`meta.flushed_seq` marks how far the flush got).

use rusqlite::Connection;

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = 7;

const V1: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value ANY
) STRICT, WITHOUT ROWID;

CREATE TABLE organizations (
    org_key    INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    org_key     INTEGER NOT NULL REFERENCES organizations (org_key),
    id          TEXT NOT NULL,
    key         TEXT NOT NULL UNIQUE,
    name        TEXT,
    enabled     INTEGER NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (org_key, id)
) STRICT, WITHOUT ROWID;

-- One row per user. `state` holds the profile and the status per regulation, with the stamp
-- of every leaf (see assent_model::status); it is current up to meta.flushed_seq. Keys are
-- never reused (AUTOINCREMENT): a key held in memory can never name a later user.
CREATE TABLE users (
    user_key             INTEGER PRIMARY KEY AUTOINCREMENT,
    org_key              INTEGER NOT NULL,
    id                   TEXT NOT NULL,
    organization_user_id TEXT,
    version              INTEGER NOT NULL,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    state                BLOB NOT NULL
) STRICT;
CREATE UNIQUE INDEX users_by_id ON users (org_key, id);
CREATE UNIQUE INDEX users_by_organization_user_id ON users (org_key, organization_user_id)
    WHERE organization_user_id IS NOT NULL;
CREATE INDEX users_by_org ON users (org_key);

-- The event log. `seq` is the arrival order (its top bits are the arrival time in ms);
-- `id` is a 16-byte blob for canonical UUIDs and text otherwise; `updated_at` is NULL until
-- the event is patched; `status` is 0 (confirmed) or 1 (pending approval).
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY,
    org_key    INTEGER NOT NULL,
    user_key   INTEGER NOT NULL,
    id         ANY NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER,
    status     INTEGER NOT NULL,
    regulation TEXT NOT NULL,
    body       BLOB NOT NULL
) STRICT;
CREATE UNIQUE INDEX events_by_id ON events (org_key, id);

-- The events of each user, complete up to meta.flushed_seq.
CREATE TABLE user_events (
    org_key  INTEGER NOT NULL,
    user_key INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (org_key, user_key, seq)
) STRICT, WITHOUT ROWID;

INSERT INTO meta (key, value) VALUES ('flushed_seq', 0);
";

/// Integrations and their outbox. `outbox` holds each change once, as destinations receive it
/// (LZ4-compressed, with its size first)
/// (written in the transaction of the change, and only while the organization has an enabled
/// integration that wants its kind); each integration moves the changes after its `cursor`
/// into `deliveries` as it is ready to send them (status 0 queued, 1 retrying, 2 delivered,
/// 3 parked).
const V2: &str = "
CREATE TABLE integrations (
    integration_key INTEGER PRIMARY KEY AUTOINCREMENT,
    org_key         INTEGER NOT NULL,
    id              TEXT NOT NULL,
    type_id         TEXT NOT NULL,
    enabled         INTEGER NOT NULL,
    config          BLOB NOT NULL,
    cursor          INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX integrations_by_id ON integrations (org_key, id);

CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    org_key    INTEGER NOT NULL,
    user_key   INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    body       BLOB NOT NULL,
    origin     TEXT
) STRICT;
CREATE INDEX outbox_by_org ON outbox (org_key, seq);

CREATE TABLE deliveries (
    integration_key INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    id              TEXT NOT NULL,
    user_key        INTEGER NOT NULL,
    kind            INTEGER NOT NULL,
    status          INTEGER NOT NULL,
    next_at         INTEGER NOT NULL,
    attempts        BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (integration_key, seq)
) STRICT, WITHOUT ROWID;
CREATE UNIQUE INDEX deliveries_by_id ON deliveries (integration_key, id);
CREATE INDEX deliveries_open ON deliveries (integration_key, seq) WHERE status < 2;
CREATE INDEX deliveries_open_by_user ON deliveries (integration_key, user_key, seq)
    WHERE status < 2;
CREATE INDEX deliveries_unfinished_by_seq ON deliveries (seq) WHERE status <> 2;
CREATE INDEX deliveries_by_update ON deliveries (integration_key, updated_at);
";

/// Brings the schema of `conn` to [`SCHEMA_VERSION`], or explains why it cannot.
pub fn migrate(conn: &mut Connection) -> Result<(), String> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| format!("cannot read the schema version: {e}"))?;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "the database was written by a newer version of Assent (schema {version}; \
             this binary knows up to {SCHEMA_VERSION}); upgrade Assent"
        ));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| format!("cannot start the migration: {e}"))?;
    // Another process may have migrated while this one waited for the lock.
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if version == 0 {
        tx.execute_batch(V1)
            .map_err(|e| format!("cannot create the schema: {e}"))?;
    }
    if version < 2 {
        tx.execute_batch(V2)
            .map_err(|e| format!("cannot add the integration tables: {e}"))?;
    }
    if version < 3 {
        tx.execute_batch(super::admin::V3)
            .map_err(|e| format!("cannot add the secrets and proofs tables: {e}"))?;
    }
    if version < 4 {
        tx.execute_batch(super::exports::V4)
            .map_err(|e| format!("cannot add the exports table: {e}"))?;
    }
    if version < 5 {
        tx.execute_batch(super::registry::V5)
            .map_err(|e| format!("cannot add the purpose registry and settings tables: {e}"))?;
    }
    if version < 6 {
        batch_outbox(&tx).map_err(|e| format!("cannot batch the outbox: {e}"))?;
    }
    if version < 7 {
        tx.execute_batch(V7)
            .map_err(|e| format!("cannot link events to the outbox: {e}"))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(|e| e.to_string())?;
    tx.commit()
        .map_err(|e| format!("cannot commit the migration: {e}"))
}

/// Version 7: `events.outbox_row` is the outbox row of the changes an event made, when they
/// were kept as references to the log (see `render`): before a user's history is rewritten,
/// the writer finds them there and writes their bodies out.
const V7: &str = "ALTER TABLE events ADD COLUMN outbox_row INTEGER;";

/// Version 6: an outbox row holds the changes of one command (up to 1,024), with their users
/// and kinds in `heads` and their bodies compressed together in `body`; a change's number is
/// its row's number shifted left by 10 bits, plus its place in the row. Rows of earlier
/// versions become rows of one change; deliveries and cursors are renumbered to match.
fn batch_outbox(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    use super::outbox::{CHANGES_PER_ROW, Head, PLACE_BITS, encode_heads};
    tx.execute_batch(
        "CREATE TABLE outbox_batched (
             seq        INTEGER PRIMARY KEY AUTOINCREMENT,
             org_key    INTEGER NOT NULL,
             created_at INTEGER NOT NULL,
             origin     TEXT,
             heads      BLOB NOT NULL,
             body       BLOB NOT NULL
         ) STRICT;",
    )?;
    {
        let mut select = tx
            .prepare("SELECT seq, org_key, user_key, kind, created_at, body, origin FROM outbox")?;
        let mut insert = tx.prepare(
            "INSERT INTO outbox_batched (seq, org_key, created_at, origin, heads, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let body: Vec<u8> = row.get(5)?;
            // The body was one LZ4 block with its uncompressed size first, as now.
            let len = body
                .get(..4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .unwrap_or(0);
            let heads = encode_heads(&[Head {
                user_key: row.get(2)?,
                kind: row.get(3)?,
                reference: false,
                len,
            }]);
            insert.execute(rusqlite::params![
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(4)?,
                row.get::<_, Option<String>>(6)?,
                heads,
                body
            ])?;
        }
    }
    // Row numbers go on from where the old table's went, so no change number comes twice.
    let last: i64 = tx.query_row(
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)",
        [],
        |r| r.get(0),
    )?;
    tx.execute_batch("DROP TABLE outbox; ALTER TABLE outbox_batched RENAME TO outbox;")?;
    tx.execute("DELETE FROM sqlite_sequence WHERE name = 'outbox'", [])?;
    tx.execute(
        "INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?1)",
        [last],
    )?;
    tx.execute_batch("CREATE INDEX outbox_by_org ON outbox (org_key, seq);")?;
    // Negated first, so that no renumbered key meets one not yet renumbered.
    tx.execute("UPDATE deliveries SET seq = -seq", [])?;
    tx.execute("UPDATE deliveries SET seq = ((-seq) << ?1)", [PLACE_BITS])?;
    tx.execute(
        "UPDATE integrations SET cursor = (cursor << ?1) | ?2",
        [i64::from(PLACE_BITS), CHANGES_PER_ROW as i64 - 1],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::outbox::{decode_heads, split_bodies};

    /// An outbox row: number, origin, heads, bodies.
    type OutboxRow = (i64, Option<String>, Vec<u8>, Vec<u8>);

    /// A store left by a version-5 binary: two single-change outbox rows (the first already
    /// pruned away), one delivery delivered and one waiting, and an integration whose cursor
    /// passed the first row.
    fn version_5(path: &std::path::Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute_batch(V2).unwrap();
        conn.execute_batch(super::super::admin::V3).unwrap();
        conn.execute_batch(super::super::exports::V4).unwrap();
        conn.execute_batch(super::super::registry::V5).unwrap();
        conn.pragma_update(None, "user_version", 5).unwrap();
        let body = |json: &str| lz4_flex::compress_prepend_size(json.as_bytes());
        conn.execute_batch(
            "INSERT INTO integrations (org_key, id, type_id, enabled, config, cursor, created_at, updated_at)
             VALUES (1, 'hook', 'webhook-http', 1, X'7B7D', 8, 0, 0);",
        )
        .unwrap();
        for (seq, user, kind, json, origin) in [
            (7, 40, 1, r#"{"type":"event.created"}"#, None),
            (8, 40, 4, r#"{"type":"user.updated"}"#, None),
            (9, 41, 3, r#"{"type":"user.created"}"#, Some("crm")),
        ] {
            conn.execute(
                "INSERT INTO outbox (seq, org_key, user_key, kind, created_at, body, origin)
                 VALUES (?1, 1, ?2, ?3, 5, ?4, ?5)",
                rusqlite::params![seq, user, kind, body(json), origin],
            )
            .unwrap();
        }
        // Row 7 was pruned; the sequence remembers rows up to 12 (10 to 12 pruned too).
        conn.execute_batch(
            "DELETE FROM outbox WHERE seq = 7;
             UPDATE sqlite_sequence SET seq = 12 WHERE name = 'outbox';
             INSERT INTO deliveries (integration_key, seq, id, user_key, kind, status, next_at,
                                     attempts, created_at, updated_at)
             VALUES (1, 7, 'd7', 40, 1, 2, 0, X'5B5D', 5, 5),
                    (1, 8, 'd8', 40, 4, 0, 0, X'5B5D', 5, 5);",
        )
        .unwrap();
        conn
    }

    #[test]
    fn a_version_5_outbox_becomes_rows_of_one_change_with_the_same_numbers_shifted() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = version_5(&dir.path().join("assent.db"));
        migrate(&mut conn).unwrap();

        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let rows: Vec<OutboxRow> = conn
            .prepare("SELECT seq, origin, heads, body FROM outbox ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 2);
        let (seq, origin, heads, body) = &rows[1];
        assert_eq!((*seq, origin.as_deref()), (9, Some("crm")));
        let heads = decode_heads(heads).unwrap();
        assert_eq!((heads.len(), heads[0].user_key, heads[0].kind), (1, 41, 3));
        let bodies = split_bodies(&heads, body).unwrap();
        assert_eq!(bodies, vec![br#"{"type":"user.created"}"#.to_vec()]);

        // Deliveries and the cursor name the same changes in the new numbering.
        let seqs: Vec<i64> = conn
            .prepare("SELECT seq FROM deliveries ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(seqs, vec![7 << 10, 8 << 10]);
        let cursor: i64 = conn
            .query_row("SELECT cursor FROM integrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(cursor, (8 << 10) | 1023);
        // New rows are numbered after every row ever made, pruned ones included.
        conn.execute(
            "INSERT INTO outbox (org_key, created_at, heads, body) VALUES (1, 6, X'', X'')",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 13);
    }
}
