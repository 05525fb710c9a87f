//! The SQLite schema and its migrations.
//!
//! Events are an append-only log ordered by arrival (`seq`), so that a write appends to the end
//! of the file instead of touching one page per user. The per-user index of events
//! (`user_events`) and the derived user rows are written in bulk by the writer's flush; between
//! flushes the writer keeps them in memory and, after a crash, rebuilds them from the log tail
//! (`meta.flushed_seq` marks how far the flush got).

use rusqlite::Connection;

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = 5;

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
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(|e| e.to_string())?;
    tx.commit()
        .map_err(|e| format!("cannot commit the migration: {e}"))
}
