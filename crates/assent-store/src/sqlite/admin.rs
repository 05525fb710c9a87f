//! SQL for what an organization administers beside its consents: API keys, secrets and proof
//! files. Writes run on the writer's connection inside its transaction; reads on a reader's.

use super::read::db;
use crate::{ApiKey, MAX_SECRETS_PER_ORGANIZATION, SecretRecord, StoreError};
use assent_model::proof::{ProofFile, ProofKind};
use assent_model::{OrganizationId, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// Proof files, the secrets of each organization, and which user's events reference which
/// proof (so that erasing a user removes the proofs only it referenced).
pub const V3: &str = "
CREATE TABLE secrets (
    org_key     INTEGER NOT NULL,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT,
    secret_hash TEXT NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (org_key, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE proofs (
    proof_key  INTEGER PRIMARY KEY,
    org_key    INTEGER NOT NULL,
    id         TEXT NOT NULL,
    size       INTEGER NOT NULL,
    body       BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX proofs_by_id ON proofs (org_key, id);

CREATE TABLE proof_refs (
    org_key  INTEGER NOT NULL,
    user_key INTEGER NOT NULL,
    proof_id TEXT NOT NULL,
    PRIMARY KEY (org_key, user_key, proof_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX proof_refs_by_proof ON proof_refs (org_key, proof_id);
";

const KEY_COLUMNS: &str = "id, key, name, enabled, secret_hash, created_at, updated_at";

fn key_of(org: &OrganizationId, r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        organization_id: org.clone(),
        key: r.get(1)?,
        name: r.get(2)?,
        enabled: r.get(3)?,
        secret_hash: r.get(4)?,
        created_at: Timestamp::from_millis(r.get(5)?),
        updated_at: Timestamp::from_millis(r.get(6)?),
    })
}

/// The keys of an organization, oldest first.
pub fn list_keys(
    conn: &Connection,
    org: &OrganizationId,
    org_key: i64,
) -> Result<Vec<ApiKey>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE org_key = ?1 ORDER BY created_at, id"
        ))
        .map_err(db)?;
    let rows = stmt.query_map([org_key], |r| key_of(org, r)).map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

/// One key of an organization.
pub fn find_key(
    conn: &Connection,
    org: &OrganizationId,
    org_key: i64,
    id: &str,
) -> Result<Option<ApiKey>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE org_key = ?1 AND id = ?2"
    ))
    .map_err(db)?
    .query_row(params![org_key, id], |r| key_of(org, r))
    .optional()
    .map_err(db)
}

fn key_not_found(id: &str) -> StoreError {
    StoreError::not_found(format!("API key '{id}' not found"))
}

/// Saves a key's name, enabled flag and update time.
pub fn update_key(conn: &Connection, org_key: i64, key: &ApiKey) -> Result<(), StoreError> {
    let n = conn
        .execute(
            "UPDATE api_keys SET name = ?3, enabled = ?4, updated_at = ?5
             WHERE org_key = ?1 AND id = ?2",
            params![
                org_key,
                key.id,
                key.name,
                key.enabled,
                key.updated_at.millis()
            ],
        )
        .map_err(db)?;
    if n == 0 {
        return Err(key_not_found(&key.id));
    }
    Ok(())
}

/// Deletes a key; returns it as it was.
pub fn delete_key(
    conn: &Connection,
    org: &OrganizationId,
    org_key: i64,
    id: &str,
) -> Result<ApiKey, StoreError> {
    let key = find_key(conn, org, org_key, id)?.ok_or_else(|| key_not_found(id))?;
    conn.execute(
        "DELETE FROM api_keys WHERE org_key = ?1 AND id = ?2",
        params![org_key, id],
    )
    .map_err(db)?;
    Ok(key)
}

const SECRET_COLUMNS: &str = "id, name, description, secret_hash, version, created_at, updated_at";

fn secret_of(org: &OrganizationId, r: &Row<'_>) -> rusqlite::Result<SecretRecord> {
    Ok(SecretRecord {
        id: r.get(0)?,
        organization_id: org.clone(),
        name: r.get(1)?,
        description: r.get(2)?,
        secret_hash: r.get(3)?,
        version: r.get(4)?,
        created_at: Timestamp::from_millis(r.get(5)?),
        updated_at: Timestamp::from_millis(r.get(6)?),
    })
}

fn secret_not_found(id: &str) -> StoreError {
    StoreError::not_found(format!("secret '{id}' not found"))
}

/// Stores a new secret within the organization's allowance.
pub fn create_secret(
    conn: &Connection,
    org_key: i64,
    secret: &SecretRecord,
) -> Result<(), StoreError> {
    let count: u64 = conn
        .query_row(
            "SELECT count(*) FROM secrets WHERE org_key = ?1",
            [org_key],
            |r| r.get(0),
        )
        .map_err(db)?;
    if count >= MAX_SECRETS_PER_ORGANIZATION {
        return Err(StoreError::conflict(format!(
            "the organization already holds {MAX_SECRETS_PER_ORGANIZATION} secrets, the most \
             allowed; delete one first"
        )));
    }
    conn.execute(
        "INSERT INTO secrets (org_key, id, name, description, secret_hash, version, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            org_key,
            secret.id,
            secret.name,
            secret.description,
            secret.secret_hash,
            secret.version,
            secret.created_at.millis(),
            secret.updated_at.millis()
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// The secrets of an organization, oldest first.
pub fn list_secrets(
    conn: &Connection,
    org: &OrganizationId,
    org_key: i64,
) -> Result<Vec<SecretRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE org_key = ?1 ORDER BY created_at, id"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map([org_key], |r| secret_of(org, r))
        .map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

/// One secret, or "not found".
pub fn get_secret(
    conn: &Connection,
    org: &OrganizationId,
    org_key: i64,
    id: &str,
) -> Result<SecretRecord, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {SECRET_COLUMNS} FROM secrets WHERE org_key = ?1 AND id = ?2"
    ))
    .map_err(db)?
    .query_row(params![org_key, id], |r| secret_of(org, r))
    .optional()
    .map_err(db)?
    .ok_or_else(|| secret_not_found(id))
}

/// Saves a changed secret if the stored one is the version before it.
pub fn update_secret(
    conn: &Connection,
    org_key: i64,
    secret: &SecretRecord,
) -> Result<(), StoreError> {
    let n = conn
        .execute(
            "UPDATE secrets SET name = ?3, description = ?4, version = ?5, updated_at = ?6
             WHERE org_key = ?1 AND id = ?2 AND version = ?5 - 1",
            params![
                org_key,
                secret.id,
                secret.name,
                secret.description,
                secret.version,
                secret.updated_at.millis()
            ],
        )
        .map_err(db)?;
    if n == 0 {
        let exists: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM secrets WHERE org_key = ?1 AND id = ?2)",
                params![org_key, secret.id],
                |r| r.get(0),
            )
            .map_err(db)?;
        return Err(if exists {
            StoreError::conflict(format!(
                "secret '{}' changed meanwhile; read it again",
                secret.id
            ))
        } else {
            secret_not_found(&secret.id)
        });
    }
    Ok(())
}

/// Deletes a secret; returns it as it was.
pub fn delete_secret(
    conn: &Connection,
    org: &OrganizationId,
    org_key: i64,
    id: &str,
) -> Result<SecretRecord, StoreError> {
    let secret = get_secret(conn, org, org_key, id)?;
    conn.execute(
        "DELETE FROM secrets WHERE org_key = ?1 AND id = ?2",
        params![org_key, id],
    )
    .map_err(db)?;
    Ok(secret)
}

/// Stores proof files that are not stored yet.
pub fn put_proofs(
    conn: &Connection,
    org_key: i64,
    proofs: &[ProofFile],
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO proofs (org_key, id, size, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (org_key, id) DO NOTHING",
        )
        .map_err(db)?;
    for proof in proofs {
        stmt.execute(params![
            org_key,
            proof.id,
            proof.bytes.len() as i64,
            proof.bytes,
            now.millis()
        ])
        .map_err(db)?;
    }
    Ok(())
}

/// One proof file.
pub fn get_proof(conn: &Connection, org_key: i64, id: &str) -> Result<ProofFile, StoreError> {
    let not_found = || StoreError::not_found(format!("proof '{id}' not found"));
    let kind = id
        .rsplit_once('.')
        .and_then(|(_, ext)| ProofKind::of_extension(ext))
        .ok_or_else(not_found)?;
    let bytes: Vec<u8> = conn
        .prepare_cached("SELECT body FROM proofs WHERE org_key = ?1 AND id = ?2")
        .map_err(db)?
        .query_row(params![org_key, id], |r| r.get(0))
        .optional()
        .map_err(db)?
        .ok_or_else(not_found)?;
    Ok(ProofFile {
        id: id.to_owned(),
        kind,
        bytes,
    })
}

/// Records that events of user `user_key` reference the proofs `ids`.
pub fn reference_proofs(
    conn: &Connection,
    org_key: i64,
    user_key: i64,
    ids: &[String],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO proof_refs (org_key, user_key, proof_id) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )
        .map_err(db)?;
    for id in ids {
        stmt.execute(params![org_key, user_key, id]).map_err(db)?;
    }
    Ok(())
}

/// Forgets a user's references to proofs, and removes the proofs no other user references.
pub fn erase_proofs_of(conn: &Connection, org_key: i64, user_key: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM proofs WHERE org_key = ?1 AND id IN (
             SELECT r.proof_id FROM proof_refs r
             WHERE r.org_key = ?1 AND r.user_key = ?2
               AND NOT EXISTS (SELECT 1 FROM proof_refs o
                               WHERE o.org_key = ?1 AND o.proof_id = r.proof_id
                                 AND o.user_key <> ?2))",
        params![org_key, user_key],
    )
    .map_err(db)?;
    conn.execute(
        "DELETE FROM proof_refs WHERE org_key = ?1 AND user_key = ?2",
        params![org_key, user_key],
    )
    .map_err(db)?;
    Ok(())
}
