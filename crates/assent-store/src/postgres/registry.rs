//! SQL of the purpose registry, organization settings and consent statistics. Every statement
//! is scoped by organization.

use super::db;
use crate::{Stamped, StoreError};
use assent_model::purpose::{MAX_PURPOSES_PER_ORGANIZATION, Purpose, PurposeContent};
use assent_model::stats::{ConsentCounts, DAY_MS};
use assent_model::{OrganizationId, Regulation, Timestamp};
use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

/// Purposes (one row each, with their creation order and current version), every version of
/// each, settings by name, and the index that lets statistics read one organization's events
/// of one regulation by date.
pub const V5: &str = r#"
CREATE TABLE purposes (
    org_id     text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    position   bigint NOT NULL,
    version    bigint NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (org_id, id)
);

CREATE TABLE purpose_versions (
    org_id     text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    version    bigint NOT NULL,
    content    text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (org_id, id, version)
);

CREATE TABLE settings (
    org_id     text COLLATE "C" NOT NULL,
    name       text COLLATE "C" NOT NULL,
    value      text NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (org_id, name)
);

CREATE INDEX events_by_day ON events (org_id, regulation, created_at, status);
"#;

/// Key of the advisory lock that serializes the purpose creations of one organization, so
/// that the limit holds and creation order is unique.
const PURPOSES_LOCK: i32 = 0x9B05;

fn purpose_of(r: &Row) -> Result<Purpose, StoreError> {
    let content: PurposeContent = serde_json::from_str(r.get::<_, &str>(2))
        .map_err(|e| StoreError::Internal(format!("a stored purpose is unreadable: {e}")))?;
    Ok(Purpose {
        id: r.get(0),
        version: u32::try_from(r.get::<_, i64>(1))
            .map_err(|e| StoreError::Internal(format!("a stored purpose version: {e}")))?,
        content,
        created_at: Timestamp::from_millis(r.get(3)),
        updated_at: Timestamp::from_millis(r.get(4)),
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

fn not_found(id: &str) -> StoreError {
    StoreError::not_found(format!("purpose '{id}' not found"))
}

async fn insert_version(
    c: &impl GenericClient,
    org: &OrganizationId,
    p: &Purpose,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO purpose_versions (org_id, id, version, content, created_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &org.as_str(),
            &p.id,
            &i64::from(p.version),
            &to_json(&p.content)?,
            &p.updated_at.millis(),
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// Registers a purpose at its first version.
pub async fn create(c: &mut Object, org: &OrganizationId, p: &Purpose) -> Result<(), StoreError> {
    let tx = c.transaction().await.map_err(db)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&PURPOSES_LOCK, &org.as_str()],
    )
    .await
    .map_err(db)?;
    let row = tx
        .query_one(
            "SELECT count(*), coalesce(max(position), 0) FROM purposes WHERE org_id = $1",
            &[&org.as_str()],
        )
        .await
        .map_err(db)?;
    let (count, last): (i64, i64) = (row.get(0), row.get(1));
    if count as usize >= MAX_PURPOSES_PER_ORGANIZATION {
        return Err(StoreError::conflict(format!(
            "the organization already has {MAX_PURPOSES_PER_ORGANIZATION} purposes, the most \
             allowed; delete one first"
        )));
    }
    let n = tx
        .execute(
            "INSERT INTO purposes (org_id, id, position, version, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                &org.as_str(),
                &p.id,
                &(last + 1),
                &i64::from(p.version),
                &p.created_at.millis(),
            ],
        )
        .await
        .map_err(db)?;
    if n == 0 {
        return Err(StoreError::conflict(format!(
            "a purpose with id '{}' already exists",
            p.id
        )));
    }
    insert_version(&tx, org, p).await?;
    tx.commit().await.map_err(db)
}

const CURRENT: &str = "SELECT p.id, v.version, v.content, p.created_at, v.created_at
     FROM purposes p JOIN purpose_versions v
       ON v.org_id = p.org_id AND v.id = p.id AND v.version = p.version";

const ANY_VERSION: &str = "SELECT p.id, v.version, v.content, p.created_at, v.created_at
     FROM purposes p JOIN purpose_versions v ON v.org_id = p.org_id AND v.id = p.id";

/// The current version of every purpose, in creation order.
pub async fn list(c: &Object, org: &OrganizationId) -> Result<Vec<Purpose>, StoreError> {
    let rows = c
        .query(
            &format!("{CURRENT} WHERE p.org_id = $1 ORDER BY p.position, p.id"),
            &[&org.as_str()],
        )
        .await
        .map_err(db)?;
    rows.iter().map(purpose_of).collect()
}

/// One purpose at its current version or at `version`.
pub async fn get(
    c: &Object,
    org: &OrganizationId,
    id: &str,
    version: Option<u32>,
) -> Result<Purpose, StoreError> {
    let row = match version {
        None => c
            .query_opt(
                &format!("{CURRENT} WHERE p.org_id = $1 AND p.id = $2"),
                &[&org.as_str(), &id],
            )
            .await
            .map_err(db)?
            .ok_or_else(|| not_found(id))?,
        Some(v) => c
            .query_opt(
                &format!("{ANY_VERSION} WHERE p.org_id = $1 AND p.id = $2 AND v.version = $3"),
                &[&org.as_str(), &id, &i64::from(v)],
            )
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::not_found(format!("purpose '{id}' has no version {v}")))?,
    };
    purpose_of(&row)
}

/// Every version of a purpose, newest first.
pub async fn versions(
    c: &Object,
    org: &OrganizationId,
    id: &str,
) -> Result<Vec<Purpose>, StoreError> {
    let rows = c
        .query(
            &format!("{ANY_VERSION} WHERE p.org_id = $1 AND p.id = $2 ORDER BY v.version DESC"),
            &[&org.as_str(), &id],
        )
        .await
        .map_err(db)?;
    if rows.is_empty() {
        return Err(not_found(id));
    }
    rows.iter().map(purpose_of).collect()
}

/// Stores the next version of a purpose, if the current one is the version before it. The
/// update locks the purpose's row, so two changes made against one version cannot both pass.
pub async fn add_version(
    c: &mut Object,
    org: &OrganizationId,
    p: &Purpose,
) -> Result<(), StoreError> {
    let tx = c.transaction().await.map_err(db)?;
    let version = i64::from(p.version);
    let n = tx
        .execute(
            "UPDATE purposes SET version = $3::bigint
             WHERE org_id = $1 AND id = $2 AND version = $3::bigint - 1",
            &[&org.as_str(), &p.id, &version],
        )
        .await
        .map_err(db)?;
    if n == 0 {
        let current = tx
            .query_opt(
                "SELECT version FROM purposes WHERE org_id = $1 AND id = $2",
                &[&org.as_str(), &p.id],
            )
            .await
            .map_err(db)?;
        return Err(match current {
            None => not_found(&p.id),
            Some(row) => StoreError::conflict(format!(
                "purpose '{}' is at version {}; the change was made against version {}",
                p.id,
                row.get::<_, i64>(0),
                version - 1
            )),
        });
    }
    insert_version(&tx, org, p).await?;
    tx.commit().await.map_err(db)
}

/// Deletes a purpose and its versions.
pub async fn delete(c: &mut Object, org: &OrganizationId, id: &str) -> Result<(), StoreError> {
    let tx = c.transaction().await.map_err(db)?;
    let n = tx
        .execute(
            "DELETE FROM purposes WHERE org_id = $1 AND id = $2",
            &[&org.as_str(), &id],
        )
        .await
        .map_err(db)?;
    if n == 0 {
        return Err(not_found(id));
    }
    tx.execute(
        "DELETE FROM purpose_versions WHERE org_id = $1 AND id = $2",
        &[&org.as_str(), &id],
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)
}

/// A setting of the organization, by name.
pub async fn get_setting<T: serde::de::DeserializeOwned>(
    c: &Object,
    org: &OrganizationId,
    name: &str,
) -> Result<Option<Stamped<T>>, StoreError> {
    let row = c
        .query_opt(
            "SELECT value, updated_at FROM settings WHERE org_id = $1 AND name = $2",
            &[&org.as_str(), &name],
        )
        .await
        .map_err(db)?;
    row.map(|r| {
        Ok(Stamped {
            value: serde_json::from_str(r.get::<_, &str>(0)).map_err(|e| {
                StoreError::Internal(format!("the stored setting '{name}' is unreadable: {e}"))
            })?,
            updated_at: Timestamp::from_millis(r.get(1)),
        })
    })
    .transpose()
}

/// Sets a setting of the organization.
pub async fn put_setting<T: serde::Serialize>(
    c: &Object,
    org: &OrganizationId,
    name: &str,
    setting: &Stamped<T>,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO settings (org_id, name, value, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (org_id, name) DO UPDATE SET value = excluded.value,
             updated_at = excluded.updated_at",
        &[
            &org.as_str(),
            &name,
            &to_json(&setting.value)?,
            &setting.updated_at.millis(),
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// Counts confirmed events of `regulation` per day from `start` until `end`, and per purpose
/// how many set `enabled` to true and to false (each body is parsed once, as jsonb), in one
/// repeatable-read transaction so that both counts see the same events.
pub async fn consent_counts(
    c: &mut Object,
    org: &OrganizationId,
    regulation: &Regulation,
    start: Timestamp,
    end: Timestamp,
) -> Result<ConsentCounts, StoreError> {
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db)?;
    let (start, end) = (start.millis(), end.millis());
    let args: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&org.as_str(), &regulation.as_str(), &start, &end, &DAY_MS];
    let events = tx
        .query(
            "SELECT ((created_at - $3) / $5)::int4, count(*) FROM events
             WHERE org_id = $1 AND regulation = $2 AND created_at >= $3 AND created_at < $4
               AND status = 0
             GROUP BY 1",
            &args,
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, i64>(1) as u64))
        .collect();
    let purposes = tx
        .query(
            "SELECT ((e.created_at - $3) / $5)::int4, p ->> 'id',
                    count(*) FILTER (WHERE p -> 'enabled' = 'true'::jsonb),
                    count(*) FILTER (WHERE p -> 'enabled' = 'false'::jsonb)
             FROM events e
             CROSS JOIN LATERAL jsonb_array_elements(
                 convert_from(e.body, 'UTF8')::jsonb -> 'consents' -> 'purposes') p
             WHERE e.org_id = $1 AND e.regulation = $2 AND e.created_at >= $3
               AND e.created_at < $4 AND e.status = 0
             GROUP BY 1, 2",
            &args,
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| {
            (
                r.get::<_, i32>(0) as u32,
                r.get::<_, String>(1),
                r.get::<_, i64>(2) as u64,
                r.get::<_, i64>(3) as u64,
            )
        })
        .collect();
    tx.commit().await.map_err(db)?;
    Ok(ConsentCounts { events, purposes })
}
