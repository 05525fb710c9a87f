//! Copying an embedded SQLite store into PostgreSQL (`assent migrate --from … --to …`).
//!
//! The copy goes table by table in key order, in chunks; each chunk is written together with
//! the progress record in one transaction, so an interrupted copy resumes after the last chunk
//! that committed, and rows already copied are never copied twice. Row keys are kept, so users
//! and events keep their identity; PostgreSQL's sequences are moved past them at the end.

use crate::postgres::{PgStore, PostgresConfig, db};
use crate::sqlite::codec::{read_id, seq_time};
use crate::sqlite::{DATABASE_FILE, SqliteConfig, SqliteStore};
use crate::{Store, StoreError};
use rusqlite::{Connection, OpenFlags, params};
use std::collections::HashMap;
use std::path::Path;

/// Rows per chunk.
const CHUNK: i64 = 5_000;

/// Where a copy stands.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// The table being copied.
    pub phase: &'static str,
    /// Rows of it copied so far.
    pub done: u64,
    /// Rows of it in the source.
    pub total: u64,
}

/// What was copied, counted again in PostgreSQL at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Organizations of the source found in the target.
    pub organizations: u64,
    /// API keys of the source found in the target.
    pub api_keys: u64,
    /// Users of the source's organizations in the target.
    pub users: u64,
    /// Events of the source's organizations in the target.
    pub events: u64,
    /// Integrations of the source's organizations in the target.
    pub integrations: u64,
    /// Secrets of the source's organizations in the target.
    pub secrets: u64,
    /// Proof files of the source's organizations in the target.
    pub proofs: u64,
    /// Export configurations of the source's organizations in the target.
    pub exports: u64,
    /// Registered purposes of the source's organizations in the target.
    pub purposes: u64,
    /// Purpose versions (every version of every purpose) in the target.
    pub purpose_versions: u64,
    /// Settings (organization settings, preference center looks) in the target.
    pub settings: u64,
    /// True when the copy continued an interrupted one.
    pub resumed: bool,
}

/// An API key row of the source.
struct KeyRow {
    org_key: i64,
    id: String,
    key: String,
    name: Option<String>,
    enabled: bool,
    secret_hash: String,
    created_at: i64,
    updated_at: i64,
}

/// A user row of the source.
struct UserRow {
    user_key: i64,
    org_key: i64,
    id: String,
    organization_user_id: Option<String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
    state: Vec<u8>,
}

/// An event row of the source.
struct EventRow {
    seq: i64,
    org_key: i64,
    user_key: i64,
    id: String,
    created_at: i64,
    updated_at: i64,
    status: i16,
    regulation: String,
    body: Vec<u8>,
}

fn sqlite(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(format!("reading the SQLite store: {e}"))
}

fn count(conn: &Connection, table: &str) -> Result<u64, StoreError> {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n as u64)
    .map_err(sqlite)
}

/// Copies the SQLite store in `dir` into the PostgreSQL database of `target`, reporting
/// progress as it goes; verifies the counts at the end.
pub async fn sqlite_to_postgres(
    dir: &Path,
    target: &PostgresConfig,
    mut progress: impl FnMut(Progress),
) -> Result<CopyReport, StoreError> {
    if !dir.join(DATABASE_FILE).exists() {
        return Err(StoreError::Unavailable(format!(
            "there is no Assent store in {}",
            dir.display()
        )));
    }
    // Opening the store takes its lock (no server may write meanwhile) and folds any events
    // a crash left unfolded; the copy then reads the file through its own connection.
    let config = SqliteConfig::new(dir);
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(config))
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
    let result = copy(dir, target, &mut progress).await;
    store.shutdown().await;
    result
}

async fn copy(
    dir: &Path,
    target: &PostgresConfig,
    progress: &mut impl FnMut(Progress),
) -> Result<CopyReport, StoreError> {
    let source_name = std::fs::canonicalize(dir)
        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?
        .display()
        .to_string();
    let src = Connection::open_with_flags(
        dir.join(DATABASE_FILE),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite)?;
    let pg = PgStore::connect(target).await?;
    let mut client = pg.client().await?;

    let phases: Vec<(String, i64, i64)> = client
        .query(
            "SELECT phase, last_key, done FROM assent_copy WHERE source = $1",
            &[&source_name],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let resumed = !phases.is_empty();
    if !resumed {
        let existing: i64 = client
            .query_one(
                "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM events)",
                &[],
            )
            .await
            .map_err(db)?
            .get(0);
        if existing > 0 {
            return Err(StoreError::Unavailable(
                "the target database already holds users or events; copy into an empty database"
                    .into(),
            ));
        }
    }
    let position = |phase: &str| {
        phases
            .iter()
            .find(|(p, _, _)| p == phase)
            .map(|(_, k, d)| (*k, *d as u64))
            .unwrap_or((0, 0))
    };

    // Organizations and keys are few: copied whole, idempotently.
    let orgs: HashMap<i64, String> = {
        let mut stmt = src
            .prepare("SELECT org_key, id, created_at FROM organizations")
            .map_err(sqlite)?;
        let rows: Vec<(i64, String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        let tx = client.transaction().await.map_err(db)?;
        for (_, id, created_at) in &rows {
            tx.execute(
                "INSERT INTO organizations (org_id, created_at) VALUES ($1, $2)
                 ON CONFLICT (org_id) DO NOTHING",
                &[id, created_at],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        rows.into_iter().map(|(k, id, _)| (k, id)).collect()
    };
    let total_orgs = orgs.len() as u64;
    progress(Progress {
        phase: "organizations",
        done: total_orgs,
        total: total_orgs,
    });
    {
        let mut stmt = src
            .prepare(
                "SELECT org_key, id, key, name, enabled, secret_hash, created_at, updated_at FROM api_keys",
            )
            .map_err(sqlite)?;
        let keys: Vec<KeyRow> = stmt
            .query_map([], |r| {
                Ok(KeyRow {
                    org_key: r.get(0)?,
                    id: r.get(1)?,
                    key: r.get(2)?,
                    name: r.get(3)?,
                    enabled: r.get(4)?,
                    secret_hash: r.get(5)?,
                    created_at: r.get(6)?,
                    updated_at: r.get(7)?,
                })
            })
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        let tx = client.transaction().await.map_err(db)?;
        for k in &keys {
            tx.execute(
                "INSERT INTO api_keys (org_id, id, key, name, enabled, secret_hash, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[
                    &orgs[&k.org_key],
                    &k.id,
                    &k.key,
                    &k.name,
                    &k.enabled,
                    &k.secret_hash,
                    &k.created_at,
                    &k.updated_at,
                ],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        progress(Progress {
            phase: "api_keys",
            done: keys.len() as u64,
            total: keys.len() as u64,
        });
    }

    // Integrations are few: copied whole, idempotently. They receive the changes made in the
    // target from now on; deliveries still waiting in the source are not carried over.
    {
        let mut stmt = src
            .prepare(
                "SELECT org_key, id, type_id, enabled, config, created_at, updated_at
                 FROM integrations",
            )
            .map_err(sqlite)?;
        type Row = (i64, String, String, bool, Vec<u8>, i64, i64);
        let rows: Vec<Row> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        let tx = client.transaction().await.map_err(db)?;
        for (org_key, id, type_id, enabled, config, created_at, updated_at) in &rows {
            let org = assent_model::OrganizationId::parse(&orgs[org_key])
                .map_err(StoreError::Internal)?;
            let integration = crate::integrations::integration_from_row(
                &org,
                id.clone(),
                type_id,
                *enabled,
                config,
                *created_at,
                *updated_at,
            )?;
            match crate::postgres::insert_integration(&tx, &integration).await {
                Ok(()) | Err(StoreError::Domain(_)) => {}
                Err(e) => return Err(e),
            }
        }
        tx.commit().await.map_err(db)?;
        progress(Progress {
            phase: "integrations",
            done: rows.len() as u64,
            total: rows.len() as u64,
        });
    }

    // Export configurations, with their run state but without the hold of a run under way.
    {
        let mut stmt = src
            .prepare(
                "SELECT org_key, id, config, state, next_run_at, created_at, updated_at FROM exports",
            )
            .map_err(sqlite)?;
        type Row = (i64, String, String, String, Option<i64>, i64, i64);
        let rows: Vec<Row> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        for (org_key, id, config, state, next_run_at, created_at, updated_at) in &rows {
            client
                .execute(
                    "INSERT INTO exports (org_id, id, config, state, next_run_at, lease_until, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, NULL, $6, $7) ON CONFLICT DO NOTHING",
                    &[
                        &orgs[org_key],
                        id,
                        config,
                        state,
                        next_run_at,
                        created_at,
                        updated_at,
                    ],
                )
                .await
                .map_err(db)?;
        }
    }

    // The purpose registry with every version, and settings: few rows, copied whole,
    // idempotently.
    {
        let mut stmt = src
            .prepare("SELECT org_key, id, position, version, created_at FROM purposes")
            .map_err(sqlite)?;
        let rows: Vec<(i64, String, i64, i64, i64)> = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        let tx = client.transaction().await.map_err(db)?;
        for (org_key, id, position, version, created_at) in &rows {
            tx.execute(
                "INSERT INTO purposes (org_id, id, position, version, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&orgs[org_key], id, position, version, created_at],
            )
            .await
            .map_err(db)?;
        }
        let mut stmt = src
            .prepare("SELECT org_key, id, version, content, created_at FROM purpose_versions")
            .map_err(sqlite)?;
        let rows: Vec<(i64, String, i64, String, i64)> = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        for (org_key, id, version, content, created_at) in &rows {
            tx.execute(
                "INSERT INTO purpose_versions (org_id, id, version, content, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&orgs[org_key], id, version, content, created_at],
            )
            .await
            .map_err(db)?;
        }
        let mut stmt = src
            .prepare("SELECT org_key, name, value, updated_at FROM settings")
            .map_err(sqlite)?;
        let rows: Vec<(i64, String, String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        for (org_key, name, value, updated_at) in &rows {
            tx.execute(
                "INSERT INTO settings (org_id, name, value, updated_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&orgs[org_key], name, value, updated_at],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
    }

    // Secrets, proofs and their references: copied whole, idempotently, one row at a time (a
    // proof may be large).
    {
        let mut stmt = src
            .prepare(
                "SELECT org_key, id, name, description, secret_hash, version, created_at, updated_at
                 FROM secrets",
            )
            .map_err(sqlite)?;
        type Row = (i64, String, String, Option<String>, String, i64, i64, i64);
        let rows: Vec<Row> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        for (org_key, id, name, description, hash, version, created_at, updated_at) in &rows {
            client
                .execute(
                    "INSERT INTO secrets (org_id, id, name, description, secret_hash, version, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    &[
                        &orgs[org_key],
                        id,
                        name,
                        description,
                        hash,
                        version,
                        created_at,
                        updated_at,
                    ],
                )
                .await
                .map_err(db)?;
        }
        let total = count(&src, "proofs")?;
        let mut stmt = src
            .prepare("SELECT org_key, id, size, body, created_at FROM proofs ORDER BY proof_key")
            .map_err(sqlite)?;
        let mut proofs = stmt.query([]).map_err(sqlite)?;
        let mut done = 0;
        while let Some(r) = proofs.next().map_err(sqlite)? {
            let (org_key, id, size, body, created_at): (i64, String, i64, Vec<u8>, i64) = (
                r.get(0).map_err(sqlite)?,
                r.get(1).map_err(sqlite)?,
                r.get(2).map_err(sqlite)?,
                r.get(3).map_err(sqlite)?,
                r.get(4).map_err(sqlite)?,
            );
            client
                .execute(
                    "INSERT INTO proofs (org_id, id, size, body, created_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[&orgs[&org_key], &id, &size, &body, &created_at],
                )
                .await
                .map_err(db)?;
            done += 1;
            progress(Progress {
                phase: "proofs",
                done,
                total,
            });
        }
        let mut stmt = src
            .prepare("SELECT org_key, user_key, proof_id FROM proof_refs")
            .map_err(sqlite)?;
        let refs: Vec<(i64, i64, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        for (org_key, user_key, proof_id) in &refs {
            client
                .execute(
                    "INSERT INTO proof_refs (org_id, user_key, proof_id) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[&orgs[org_key], user_key, proof_id],
                )
                .await
                .map_err(db)?;
        }
    }

    // Users, by key.
    let total_users = count(&src, "users")?;
    let (mut after, mut done) = position("users");
    loop {
        let mut stmt = src
            .prepare_cached(
                "SELECT user_key, org_key, id, organization_user_id, version, created_at, updated_at, state
                 FROM users WHERE user_key > ?1 ORDER BY user_key LIMIT ?2",
            )
            .map_err(sqlite)?;
        let rows: Vec<UserRow> = stmt
            .query_map(params![after, CHUNK], |r| {
                Ok(UserRow {
                    user_key: r.get(0)?,
                    org_key: r.get(1)?,
                    id: r.get(2)?,
                    organization_user_id: r.get(3)?,
                    version: r.get(4)?,
                    created_at: r.get(5)?,
                    updated_at: r.get(6)?,
                    state: r.get(7)?,
                })
            })
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        let Some(last) = rows.last().map(|r| r.user_key) else {
            break;
        };
        let keys: Vec<i64> = rows.iter().map(|r| r.user_key).collect();
        let org_ids: Vec<&str> = rows.iter().map(|r| orgs[&r.org_key].as_str()).collect();
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let ouids: Vec<Option<&str>> = rows
            .iter()
            .map(|r| r.organization_user_id.as_deref())
            .collect();
        let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
        let created: Vec<i64> = rows.iter().map(|r| r.created_at).collect();
        let updated: Vec<i64> = rows.iter().map(|r| r.updated_at).collect();
        let states: Vec<&[u8]> = rows.iter().map(|r| r.state.as_slice()).collect();
        done += rows.len() as u64;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO users (org_id, user_key, id, organization_user_id, version, created_at, updated_at, state)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                                  $6::bigint[], $7::bigint[], $8::bytea[])
             ON CONFLICT DO NOTHING",
            &[&org_ids, &keys, &ids, &ouids, &versions, &created, &updated, &states],
        )
        .await
        .map_err(db)?;
        record(&tx, &source_name, "users", last, done).await?;
        tx.commit().await.map_err(db)?;
        after = last;
        progress(Progress {
            phase: "users",
            done,
            total: total_users,
        });
    }

    // Events, by arrival.
    let total_events = count(&src, "events")?;
    let (mut after, mut done) = position("events");
    loop {
        let mut stmt = src
            .prepare_cached(
                "SELECT seq, org_key, user_key, id, created_at, updated_at, status, regulation, body
                 FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(sqlite)?;
        let rows: Vec<EventRow> = stmt
            .query_map(params![after, CHUNK], |r| {
                let seq: i64 = r.get(0)?;
                let updated: Option<i64> = r.get(5)?;
                Ok(EventRow {
                    seq,
                    org_key: r.get(1)?,
                    user_key: r.get(2)?,
                    id: read_id(r, 3)?.to_string(),
                    created_at: r.get(4)?,
                    updated_at: updated.unwrap_or_else(|| seq_time(seq).millis()),
                    status: r.get(6)?,
                    regulation: r.get(7)?,
                    body: r.get(8)?,
                })
            })
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        let Some(last) = rows.last().map(|r| r.seq) else {
            break;
        };
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let org_ids: Vec<&str> = rows.iter().map(|r| orgs[&r.org_key].as_str()).collect();
        let users: Vec<i64> = rows.iter().map(|r| r.user_key).collect();
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let created: Vec<i64> = rows.iter().map(|r| r.created_at).collect();
        let updated: Vec<i64> = rows.iter().map(|r| r.updated_at).collect();
        let statuses: Vec<i16> = rows.iter().map(|r| r.status).collect();
        let regulations: Vec<&str> = rows.iter().map(|r| r.regulation.as_str()).collect();
        let bodies: Vec<&[u8]> = rows.iter().map(|r| r.body.as_slice()).collect();
        done += rows.len() as u64;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO events (org_id, user_key, seq, id, created_at, updated_at, status, regulation, body)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[],
                                  $6::bigint[], $7::smallint[], $8::text[], $9::bytea[])
             ON CONFLICT DO NOTHING",
            &[&org_ids, &users, &seqs, &ids, &created, &updated, &statuses, &regulations, &bodies],
        )
        .await
        .map_err(db)?;
        record(&tx, &source_name, "events", last, done).await?;
        tx.commit().await.map_err(db)?;
        after = last;
        progress(Progress {
            phase: "events",
            done,
            total: total_events,
        });
    }

    // New users and events made on PostgreSQL come after the copied ones.
    client
        .batch_execute(
            "SELECT setval('assent_user_keys', greatest((SELECT max(user_key) FROM users), 1));
             SELECT setval('assent_event_seq', greatest((SELECT max(seq) FROM events), 1));",
        )
        .await
        .map_err(db)?;

    // Verify: everything of the source is in the target.
    let org_ids: Vec<&str> = orgs.values().map(String::as_str).collect();
    let counted = |sql: &'static str| {
        let client = &client;
        let org_ids = &org_ids;
        async move {
            client
                .query_one(sql, &[org_ids])
                .await
                .map(|r| r.get::<_, i64>(0) as u64)
                .map_err(db)
        }
    };
    let report = CopyReport {
        organizations: counted("SELECT count(*) FROM organizations WHERE org_id = ANY($1)").await?,
        api_keys: counted("SELECT count(*) FROM api_keys WHERE org_id = ANY($1)").await?,
        users: counted("SELECT count(*) FROM users WHERE org_id = ANY($1)").await?,
        events: counted("SELECT count(*) FROM events WHERE org_id = ANY($1)").await?,
        integrations: counted("SELECT count(*) FROM integrations WHERE org_id = ANY($1)").await?,
        secrets: counted("SELECT count(*) FROM secrets WHERE org_id = ANY($1)").await?,
        proofs: counted("SELECT count(*) FROM proofs WHERE org_id = ANY($1)").await?,
        exports: counted("SELECT count(*) FROM exports WHERE org_id = ANY($1)").await?,
        purposes: counted("SELECT count(*) FROM purposes WHERE org_id = ANY($1)").await?,
        purpose_versions: counted("SELECT count(*) FROM purpose_versions WHERE org_id = ANY($1)")
            .await?,
        settings: counted("SELECT count(*) FROM settings WHERE org_id = ANY($1)").await?,
        resumed,
    };
    let expected = CopyReport {
        organizations: total_orgs,
        api_keys: count(&src, "api_keys")?,
        users: total_users,
        events: total_events,
        integrations: count(&src, "integrations")?,
        secrets: count(&src, "secrets")?,
        proofs: count(&src, "proofs")?,
        exports: count(&src, "exports")?,
        purposes: count(&src, "purposes")?,
        purpose_versions: count(&src, "purpose_versions")?,
        settings: count(&src, "settings")?,
        resumed,
    };
    if report != expected {
        return Err(StoreError::Internal(format!(
            "the copy does not match its source: copied {report:?}, expected {expected:?}"
        )));
    }
    Ok(report)
}

async fn record(
    tx: &deadpool_postgres::Transaction<'_>,
    source: &str,
    phase: &str,
    last_key: i64,
    done: u64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO assent_copy (source, phase, last_key, done) VALUES ($1, $2, $3, $4)
         ON CONFLICT (source, phase) DO UPDATE SET last_key = $3, done = $4",
        &[&source, &phase, &last_key, &(done as i64)],
    )
    .await
    .map_err(db)?;
    Ok(())
}
