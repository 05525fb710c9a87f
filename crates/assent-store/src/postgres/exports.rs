//! SQL of export configurations and the hold a run takes on one. Every statement but the
//! scheduler's look for due exports is scoped by organization.

use super::db;
use crate::{ExportRecord, StoreError};
use assent_model::{OrganizationId, Timestamp};
use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

/// Export configurations: settings and run state as JSON, the next run time, and the hold of
/// the run under way (`lease_until`).
pub const V4: &str = r#"
CREATE TABLE exports (
    org_id      text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    config      text NOT NULL,
    state       text NOT NULL,
    next_run_at bigint,
    lease_until bigint,
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE INDEX exports_due ON exports (next_run_at) WHERE next_run_at IS NOT NULL;
"#;

const COLUMNS: &str = "id, config, state, next_run_at, lease_until, created_at, updated_at";

fn export_of(org: &OrganizationId, r: &Row) -> Result<ExportRecord, StoreError> {
    let bad =
        |e: serde_json::Error| StoreError::Internal(format!("a stored export is unreadable: {e}"));
    Ok(ExportRecord {
        id: r.get(0),
        organization_id: org.clone(),
        config: serde_json::from_str(r.get::<_, &str>(1)).map_err(bad)?,
        state: serde_json::from_str(r.get::<_, &str>(2)).map_err(bad)?,
        next_run_at: r.get::<_, Option<i64>>(3).map(Timestamp::from_millis),
        lease_until: r.get::<_, Option<i64>>(4).map(Timestamp::from_millis),
        created_at: Timestamp::from_millis(r.get(5)),
        updated_at: Timestamp::from_millis(r.get(6)),
    })
}

pub(crate) fn not_found(id: &str) -> StoreError {
    StoreError::not_found(format!("export '{id}' not found"))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Stores a new export configuration.
pub async fn create(c: &Object, e: &ExportRecord) -> Result<(), StoreError> {
    let n = c
        .execute(
            "INSERT INTO exports (org_id, id, config, state, next_run_at, lease_until, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, NULL, $6, $7) ON CONFLICT DO NOTHING",
            &[
                &e.organization_id.as_str(),
                &e.id,
                &to_json(&e.config)?,
                &to_json(&e.state)?,
                &e.next_run_at.map(Timestamp::millis),
                &e.created_at.millis(),
                &e.updated_at.millis(),
            ],
        )
        .await
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
pub async fn list(c: &Object, org: &OrganizationId) -> Result<Vec<ExportRecord>, StoreError> {
    let rows = c
        .query(
            &format!("SELECT {COLUMNS} FROM exports WHERE org_id = $1 ORDER BY created_at, id"),
            &[&org.as_str()],
        )
        .await
        .map_err(db)?;
    rows.iter().map(|r| export_of(org, r)).collect()
}

/// One export configuration.
pub async fn get(c: &Object, org: &OrganizationId, id: &str) -> Result<ExportRecord, StoreError> {
    let row = c
        .query_opt(
            &format!("SELECT {COLUMNS} FROM exports WHERE org_id = $1 AND id = $2"),
            &[&org.as_str(), &id],
        )
        .await
        .map_err(db)?
        .ok_or_else(|| not_found(id))?;
    export_of(org, &row)
}

/// Replaces the settings and next run time of an export.
pub async fn update(c: &Object, e: &ExportRecord) -> Result<(), StoreError> {
    let n = c
        .execute(
            "UPDATE exports SET config = $3, next_run_at = $4, updated_at = $5
             WHERE org_id = $1 AND id = $2",
            &[
                &e.organization_id.as_str(),
                &e.id,
                &to_json(&e.config)?,
                &e.next_run_at.map(Timestamp::millis),
                &e.updated_at.millis(),
            ],
        )
        .await
        .map_err(db)?;
    if n == 0 {
        return Err(not_found(&e.id));
    }
    Ok(())
}

/// Deletes an export configuration.
pub async fn delete(c: &Object, org: &OrganizationId, id: &str) -> Result<(), StoreError> {
    let n = c
        .execute(
            "DELETE FROM exports WHERE org_id = $1 AND id = $2",
            &[&org.as_str(), &id],
        )
        .await
        .map_err(db)?;
    if n == 0 {
        return Err(not_found(id));
    }
    Ok(())
}

/// Exports due at `now` that no run holds, soonest first.
pub async fn due(
    c: &Object,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<(OrganizationId, String)>, StoreError> {
    let rows = c
        .query(
            "SELECT org_id, id FROM exports
             WHERE next_run_at IS NOT NULL AND next_run_at <= $1
               AND (lease_until IS NULL OR lease_until < $1)
             ORDER BY next_run_at LIMIT $2",
            &[&now.millis(), &(limit as i64)],
        )
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let org = OrganizationId::parse(r.get::<_, &str>(0)).ok()?;
            Some((org, r.get::<_, String>(1)))
        })
        .collect())
}

/// Takes the hold of a run on an export, if free (and due, with `only_due`). The row's lock
/// makes one of many nodes asking at once get it.
pub async fn claim(
    c: &Object,
    org: &OrganizationId,
    id: &str,
    now: Timestamp,
    lease_until: Timestamp,
    only_due: bool,
) -> Result<Option<ExportRecord>, StoreError> {
    let row = c
        .query_opt(
            &format!(
                "UPDATE exports SET lease_until = $4
                 WHERE org_id = $1 AND id = $2 AND (lease_until IS NULL OR lease_until < $3)
                   AND (NOT $5 OR (next_run_at IS NOT NULL AND next_run_at <= $3))
                 RETURNING {COLUMNS}"
            ),
            &[
                &org.as_str(),
                &id,
                &now.millis(),
                &lease_until.millis(),
                &only_due,
            ],
        )
        .await
        .map_err(db)?;
    row.map(|r| export_of(org, &r)).transpose()
}

/// Records a run's state, and perhaps the next run time and the end of its hold.
pub async fn save_run(
    c: &Object,
    org: &OrganizationId,
    id: &str,
    state: &assent_model::export::ExportState,
    next_run_at: Option<Timestamp>,
    release: bool,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE exports SET state = $3,
             next_run_at = COALESCE($4, next_run_at),
             lease_until = CASE WHEN $5 THEN NULL ELSE lease_until END
         WHERE org_id = $1 AND id = $2",
        &[
            &org.as_str(),
            &id,
            &to_json(state)?,
            &next_run_at.map(Timestamp::millis),
            &release,
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}
