//! The PostgreSQL schema and its migrations.
//!
//! Every primary key, and every unique index of the write path, starts with the organization,
//! so that the tables can be distributed by `org_id` on a PostgreSQL-compatible distributed
//! database. The one exception, `api_keys_by_key`, serves session creation (which does not
//! know the organization yet); on a distributed database `api_keys` is a small reference table.
//!
//! Text columns use the "C" collation: keys compare bytewise (as in SQLite), which is several
//! times cheaper in every index than a locale's collation.

use crate::StoreError;
use tokio_postgres::Client;

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i32 = 6;

/// Key of the advisory lock that serializes migrations between nodes starting together.
const MIGRATION_LOCK: i64 = 0x6173_7365_6e74;

const V1: &str = r#"
CREATE TABLE assent_meta (
    key   text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);

CREATE TABLE organizations (
    org_id     text COLLATE "C" PRIMARY KEY,
    created_at bigint NOT NULL
);

CREATE TABLE api_keys (
    org_id      text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    name        text COLLATE "C",
    enabled     boolean NOT NULL,
    secret_hash text COLLATE "C" NOT NULL,
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE UNIQUE INDEX api_keys_by_key ON api_keys (key);

CREATE SEQUENCE assent_user_keys;
CREATE SEQUENCE assent_event_seq;

-- One row per user; `state` is the profile and the status per regulation with the stamp of
-- every leaf (JSON, see assent_model::status). Updated in place under a row lock; the fill
-- factor leaves room for heap-only updates, since no indexed column changes.
CREATE TABLE users (
    org_id               text COLLATE "C" NOT NULL,
    user_key             bigint NOT NULL,
    id                   text COLLATE "C" NOT NULL,
    organization_user_id text COLLATE "C",
    version              bigint NOT NULL,
    created_at           bigint NOT NULL,
    updated_at           bigint NOT NULL,
    state                bytea NOT NULL,
    PRIMARY KEY (org_id, user_key)
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);
CREATE UNIQUE INDEX users_by_id ON users (org_id, id);
CREATE UNIQUE INDEX users_by_organization_user_id ON users (org_id, organization_user_id)
    WHERE organization_user_id IS NOT NULL;

-- The events, clustered in the primary key by user; `seq` is the arrival order across all
-- nodes (a shared sequence). No foreign key to `users`: a per-row check costs a query and a
-- row lock per event. Appends and erasures of an organization are kept apart by an advisory
-- lock instead (shared by appends, exclusive for an erasure; see write.rs).
CREATE TABLE events (
    org_id     text COLLATE "C" NOT NULL,
    user_key   bigint NOT NULL,
    seq        bigint NOT NULL,
    id         text COLLATE "C" NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    status     smallint NOT NULL,
    regulation text COLLATE "C" NOT NULL,
    body       bytea NOT NULL,
    PRIMARY KEY (org_id, user_key, seq)
);
CREATE UNIQUE INDEX events_by_id ON events (org_id, id);

-- Confirmed events not yet folded into their user's row. Appends insert here instead of
-- locking and rewriting the user (two requests for one user never wait for each other); the
-- folders of all nodes fold them in bulk, and readers fold what is left on the fly. A user
-- row is current up to its pending folds: `version` and `updated_at` as read add them too;
-- `bump` is 1 on the first event of a request for a user that existed before it (a request
-- moves a user's version by one, whatever the number of its events).
CREATE TABLE pending_folds (
    org_id   text COLLATE "C" NOT NULL,
    user_key bigint NOT NULL,
    seq      bigint NOT NULL,
    bump     smallint NOT NULL,
    PRIMARY KEY (org_id, user_key, seq)
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000);
-- Every row is inserted then deleted: vacuum it often so that it stays small.

-- Progress of `assent migrate --from sqlite:… --to postgres://…`, so that an interrupted copy
-- resumes where it stopped.
CREATE TABLE assent_copy (
    source   text COLLATE "C" NOT NULL,
    phase    text COLLATE "C" NOT NULL,
    last_key bigint NOT NULL,
    done     bigint NOT NULL,
    PRIMARY KEY (source, phase)
);
"#;

/// Integrations and their outbox. `outbox` holds each change once, keyed by the transaction that
/// wrote it (`txid`) and an arrival number: a reader that stops below the oldest transaction
/// still running (`pg_snapshot_xmin`) has seen every change that will ever sort before that
/// point, so an integration's cursor `(cursor_xid, cursor_seq)` never skips a change committed
/// late. Each integration moves the changes after its cursor into `deliveries` (numbered by
/// `ord` in that order; status 0 queued, 1 retrying, 2 delivered, 3 parked), under its row lock
/// so that one node at a time does it; deliveries are taken for a lease (`lease_until`).
const V2: &str = r#"
CREATE TABLE integrations (
    org_id     text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    type_id    text COLLATE "C" NOT NULL,
    enabled    boolean NOT NULL,
    kinds      smallint NOT NULL,
    config     bytea NOT NULL,
    cursor_xid xid8 NOT NULL,
    cursor_seq bigint NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (org_id, id)
);

CREATE SEQUENCE assent_change_seq;
CREATE TABLE outbox (
    org_id     text COLLATE "C" NOT NULL,
    txid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    seq        bigint NOT NULL DEFAULT nextval('assent_change_seq'),
    user_key   bigint NOT NULL,
    kind       smallint NOT NULL,
    created_at bigint NOT NULL,
    body       bytea NOT NULL,
    origin     text COLLATE "C",
    PRIMARY KEY (org_id, txid, seq)
);

CREATE SEQUENCE assent_delivery_ord;
CREATE TABLE deliveries (
    org_id         text COLLATE "C" NOT NULL,
    integration_id text COLLATE "C" NOT NULL,
    ord            bigint NOT NULL,
    id             text COLLATE "C" NOT NULL,
    change_txid    xid8 NOT NULL,
    change_seq     bigint NOT NULL,
    user_key       bigint NOT NULL,
    kind           smallint NOT NULL,
    status         smallint NOT NULL,
    next_at        bigint NOT NULL,
    lease_until    bigint NOT NULL DEFAULT 0,
    attempts       bytea NOT NULL,
    created_at     bigint NOT NULL,
    updated_at     bigint NOT NULL,
    PRIMARY KEY (org_id, integration_id, ord)
);
CREATE UNIQUE INDEX deliveries_by_id ON deliveries (org_id, integration_id, id);
CREATE INDEX deliveries_open ON deliveries (org_id, integration_id, ord) WHERE status < 2;
CREATE INDEX deliveries_open_by_user ON deliveries (org_id, integration_id, user_key, ord)
    WHERE status < 2;
CREATE INDEX deliveries_unfinished_by_change ON deliveries (org_id, change_txid, change_seq)
    WHERE status <> 2;
"#;

/// Each organization's users epoch: moved by every erasure and every change of a user's
/// organization user id, so that nodes know when the users they met may have changed (see
/// `known.rs`). Triggers move it, so that no writer can forget to, whatever its version.
const V6: &str = r#"
CREATE TABLE user_epochs (
    org_id text COLLATE "C" PRIMARY KEY,
    epoch  bigint NOT NULL
);

CREATE FUNCTION assent_move_users_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO user_epochs (org_id, epoch) VALUES (OLD.org_id, 1)
    ON CONFLICT (org_id) DO UPDATE SET epoch = user_epochs.epoch + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER users_erased AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION assent_move_users_epoch();

-- An organization user id attached to a user that had none moves nothing (see known.rs).
CREATE TRIGGER users_renamed AFTER UPDATE OF id, organization_user_id ON users
    FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id
          OR (OLD.organization_user_id IS NOT NULL
              AND OLD.organization_user_id IS DISTINCT FROM NEW.organization_user_id))
    EXECUTE FUNCTION assent_move_users_epoch();
"#;

const MIGRATIONS: &[(i32, &str)] = &[
    (1, V1),
    (2, V2),
    (3, super::admin::V3),
    (4, super::exports::V4),
    (5, super::registry::V5),
    (6, V6),
];

/// Brings the schema to [`SCHEMA_VERSION`] under an advisory lock (many nodes may start at
/// once), or explains why it cannot.
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(super::db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(super::db)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS assent_schema (version integer NOT NULL)")
        .await
        .map_err(super::db)?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM assent_schema", &[])
        .await
        .map_err(super::db)?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::Unavailable(format!(
            "the database was migrated by a newer version of Assent (schema {current}; \
             this binary knows up to {SCHEMA_VERSION}); upgrade Assent"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await.map_err(super::db)?;
        tx.execute(
            "INSERT INTO assent_schema (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(super::db)?;
    }
    tx.commit().await.map_err(super::db)
}

/// The schema version of the database (0 when it was never migrated).
pub async fn version(client: &Client) -> Result<i32, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('assent_schema') IS NOT NULL", &[])
        .await
        .map_err(super::db)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT coalesce(max(version), 0) FROM assent_schema", &[])
        .await
        .map_err(super::db)?
        .get(0))
}
