//! SQL for what an organization administers beside its consents: API keys, secrets and proof
//! files. Every statement is scoped by organization.

use super::db;
use crate::{ApiKey, MAX_SECRETS_PER_ORGANIZATION, SecretRecord, StoreError};
use assent_model::proof::{ProofFile, ProofKind};
use assent_model::{OrganizationId, Timestamp};
use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

/// Secrets, proof files, and which user's events reference which proof (so that erasing a
/// user removes the proofs only it referenced).
pub const V3: &str = r#"
CREATE TABLE secrets (
    org_id      text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    name        text NOT NULL,
    description text,
    secret_hash text COLLATE "C" NOT NULL,
    version     bigint NOT NULL,
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL,
    PRIMARY KEY (org_id, id)
);

CREATE TABLE proofs (
    org_id     text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    size       bigint NOT NULL,
    body       bytea NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (org_id, id)
);

CREATE TABLE proof_refs (
    org_id   text COLLATE "C" NOT NULL,
    user_key bigint NOT NULL,
    proof_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (org_id, user_key, proof_id)
);
CREATE INDEX proof_refs_by_proof ON proof_refs (org_id, proof_id);
"#;

/// Serializes the creation of secrets within one organization (with its id's hash), so that
/// the allowance holds under concurrent creates.
const SECRETS_LOCK: i32 = 0x5EC2;

const KEY_COLUMNS: &str = "id, key, name, enabled, secret_hash, created_at, updated_at";

fn key_of(org: &OrganizationId, r: &Row) -> ApiKey {
    ApiKey {
        id: r.get(0),
        organization_id: org.clone(),
        key: r.get(1),
        name: r.get(2),
        enabled: r.get(3),
        secret_hash: r.get(4),
        created_at: Timestamp::from_millis(r.get(5)),
        updated_at: Timestamp::from_millis(r.get(6)),
    }
}

fn key_not_found(id: &str) -> StoreError {
    StoreError::not_found(format!("API key '{id}' not found"))
}

/// The keys of an organization, oldest first.
pub async fn list_keys(c: &Object, org: &OrganizationId) -> Result<Vec<ApiKey>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 ORDER BY created_at, id"
            ),
            &[&org.as_str()],
        )
        .await
        .map_err(db)?;
    Ok(rows.iter().map(|r| key_of(org, r)).collect())
}

/// One key of an organization.
pub async fn get_key(
    c: &impl GenericClient,
    org: &OrganizationId,
    id: &str,
) -> Result<ApiKey, StoreError> {
    c.query_opt(
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 AND id = $2"),
        &[&org.as_str(), &id],
    )
    .await
    .map_err(db)?
    .map(|r| key_of(org, &r))
    .ok_or_else(|| key_not_found(id))
}

/// Saves a key's name, enabled flag and update time.
pub async fn update_key(c: &Object, key: &ApiKey) -> Result<(), StoreError> {
    let n = c
        .execute(
            "UPDATE api_keys SET name = $3, enabled = $4, updated_at = $5
             WHERE org_id = $1 AND id = $2",
            &[
                &key.organization_id.as_str(),
                &key.id,
                &key.name,
                &key.enabled,
                &key.updated_at.millis(),
            ],
        )
        .await
        .map_err(db)?;
    if n == 0 {
        return Err(key_not_found(&key.id));
    }
    Ok(())
}

/// Deletes a key; returns it as it was.
pub async fn delete_key(c: &Object, org: &OrganizationId, id: &str) -> Result<ApiKey, StoreError> {
    c.query_opt(
        &format!("DELETE FROM api_keys WHERE org_id = $1 AND id = $2 RETURNING {KEY_COLUMNS}"),
        &[&org.as_str(), &id],
    )
    .await
    .map_err(db)?
    .map(|r| key_of(org, &r))
    .ok_or_else(|| key_not_found(id))
}

const SECRET_COLUMNS: &str = "id, name, description, secret_hash, version, created_at, updated_at";

fn secret_of(org: &OrganizationId, r: &Row) -> SecretRecord {
    SecretRecord {
        id: r.get(0),
        organization_id: org.clone(),
        name: r.get(1),
        description: r.get(2),
        secret_hash: r.get(3),
        version: r.get(4),
        created_at: Timestamp::from_millis(r.get(5)),
        updated_at: Timestamp::from_millis(r.get(6)),
    }
}

fn secret_not_found(id: &str) -> StoreError {
    StoreError::not_found(format!("secret '{id}' not found"))
}

/// Stores a new secret within the organization's allowance.
pub async fn create_secret(c: &mut Object, secret: &SecretRecord) -> Result<(), StoreError> {
    let org = secret.organization_id.as_str();
    let tx = c.transaction().await.map_err(db)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&SECRETS_LOCK, &org],
    )
    .await
    .map_err(db)?;
    let count: i64 = tx
        .query_one("SELECT count(*) FROM secrets WHERE org_id = $1", &[&org])
        .await
        .map_err(db)?
        .get(0);
    if count as u64 >= MAX_SECRETS_PER_ORGANIZATION {
        return Err(StoreError::conflict(format!(
            "the organization already holds {MAX_SECRETS_PER_ORGANIZATION} secrets, the most \
             allowed; delete one first"
        )));
    }
    tx.execute(
        "INSERT INTO secrets (org_id, id, name, description, secret_hash, version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &org,
            &secret.id,
            &secret.name,
            &secret.description,
            &secret.secret_hash,
            &secret.version,
            &secret.created_at.millis(),
            &secret.updated_at.millis(),
        ],
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)
}

/// The secrets of an organization, oldest first.
pub async fn list_secrets(
    c: &Object,
    org: &OrganizationId,
) -> Result<Vec<SecretRecord>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT {SECRET_COLUMNS} FROM secrets WHERE org_id = $1 ORDER BY created_at, id"
            ),
            &[&org.as_str()],
        )
        .await
        .map_err(db)?;
    Ok(rows.iter().map(|r| secret_of(org, r)).collect())
}

/// One secret, or "not found".
pub async fn get_secret(
    c: &Object,
    org: &OrganizationId,
    id: &str,
) -> Result<SecretRecord, StoreError> {
    c.query_opt(
        &format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE org_id = $1 AND id = $2"),
        &[&org.as_str(), &id],
    )
    .await
    .map_err(db)?
    .map(|r| secret_of(org, &r))
    .ok_or_else(|| secret_not_found(id))
}

/// Saves a changed secret if the stored one is the version before it.
pub async fn update_secret(c: &Object, secret: &SecretRecord) -> Result<(), StoreError> {
    let org = secret.organization_id.as_str();
    let n = c
        .execute(
            "UPDATE secrets SET name = $3, description = $4, version = $5, updated_at = $6
             WHERE org_id = $1 AND id = $2 AND version + 1 = $5",
            &[
                &org,
                &secret.id,
                &secret.name,
                &secret.description,
                &secret.version,
                &secret.updated_at.millis(),
            ],
        )
        .await
        .map_err(db)?;
    if n == 0 {
        let exists: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM secrets WHERE org_id = $1 AND id = $2)",
                &[&org, &secret.id],
            )
            .await
            .map_err(db)?
            .get(0);
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
pub async fn delete_secret(
    c: &Object,
    org: &OrganizationId,
    id: &str,
) -> Result<SecretRecord, StoreError> {
    c.query_opt(
        &format!("DELETE FROM secrets WHERE org_id = $1 AND id = $2 RETURNING {SECRET_COLUMNS}"),
        &[&org.as_str(), &id],
    )
    .await
    .map_err(db)?
    .map(|r| secret_of(org, &r))
    .ok_or_else(|| secret_not_found(id))
}

/// Stores proof files that are not stored yet.
pub async fn put_proofs(
    c: &Object,
    org: &OrganizationId,
    proofs: &[ProofFile],
) -> Result<(), StoreError> {
    let now = Timestamp::now().millis();
    for proof in proofs {
        c.execute(
            "INSERT INTO proofs (org_id, id, size, body, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (org_id, id) DO NOTHING",
            &[
                &org.as_str(),
                &proof.id,
                &(proof.bytes.len() as i64),
                &proof.bytes,
                &now,
            ],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// One proof file.
pub async fn get_proof(
    c: &Object,
    org: &OrganizationId,
    id: &str,
) -> Result<ProofFile, StoreError> {
    let not_found = || StoreError::not_found(format!("proof '{id}' not found"));
    let kind = id
        .rsplit_once('.')
        .and_then(|(_, ext)| ProofKind::of_extension(ext))
        .ok_or_else(not_found)?;
    let row = c
        .query_opt(
            "SELECT body FROM proofs WHERE org_id = $1 AND id = $2",
            &[&org.as_str(), &id],
        )
        .await
        .map_err(db)?
        .ok_or_else(not_found)?;
    Ok(ProofFile {
        id: id.to_owned(),
        kind,
        bytes: row.get(0),
    })
}

/// Records that events of the users `user_keys` reference the proofs `proof_ids` (pairwise).
pub async fn reference_proofs(
    c: &impl GenericClient,
    org: &OrganizationId,
    user_keys: &[i64],
    proof_ids: &[&str],
) -> Result<(), tokio_postgres::Error> {
    if user_keys.is_empty() {
        return Ok(());
    }
    c.execute(
        "INSERT INTO proof_refs (org_id, user_key, proof_id)
         SELECT $1, t.k, t.p FROM UNNEST($2::bigint[], $3::text[]) AS t(k, p)
         ON CONFLICT DO NOTHING",
        &[&org.as_str(), &user_keys, &proof_ids],
    )
    .await
    .map(drop)
}

/// Forgets a user's references to proofs, and removes the proofs no other user references.
pub async fn erase_proofs_of(
    c: &impl GenericClient,
    org: &OrganizationId,
    user_key: i64,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "DELETE FROM proofs WHERE org_id = $1 AND id IN (
             SELECT r.proof_id FROM proof_refs r
             WHERE r.org_id = $1 AND r.user_key = $2
               AND NOT EXISTS (SELECT 1 FROM proof_refs o
                               WHERE o.org_id = $1 AND o.proof_id = r.proof_id
                                 AND o.user_key <> $2))",
        &[&org.as_str(), &user_key],
    )
    .await?;
    c.execute(
        "DELETE FROM proof_refs WHERE org_id = $1 AND user_key = $2",
        &[&org.as_str(), &user_key],
    )
    .await
    .map(drop)
}
