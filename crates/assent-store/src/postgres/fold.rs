//! The folder: folds pending events into their users' rows in bulk. Every node runs one; they
//! take disjoint users (`FOR UPDATE … SKIP LOCKED`), so adding nodes adds folders.

use super::db;
use super::read::USER_COLUMNS;
use crate::StoreError;
use assent_model::{EventBody, OrganizationId, Regulation, Stamp, Timestamp};
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Most users folded in one transaction.
const USERS_PER_FOLD: i64 = 2_000;
/// Pause between folds. Events pile up meanwhile, so that a user is written once for all the
/// events it got; readers fold what is pending themselves, so nobody waits for the folder.
const PAUSE: Duration = Duration::from_millis(100);
/// Pause when the last fold was full: there is more to do.
const BUSY_PAUSE: Duration = Duration::from_millis(10);

/// Folds pending events until `stop` is set.
pub async fn run(pool: Pool, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match fold_some(&pool).await {
            Ok(n) if n as i64 == USERS_PER_FOLD => tokio::time::sleep(BUSY_PAUSE).await,
            Ok(_) => tokio::time::sleep(PAUSE).await,
            Err(e) => {
                tracing::warn!(error = %e, "folding pending events failed; will retry");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Folds the pending events of up to [`USERS_PER_FOLD`] users; returns how many users.
pub async fn fold_some(pool: &Pool) -> Result<usize, StoreError> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("no database connection available: {e}")))?;
    let tx = client.transaction().await.map_err(db)?;
    let stmt = tx
        .prepare_cached(&format!(
            "WITH candidates AS (SELECT DISTINCT org_id, user_key FROM pending_folds LIMIT $1)
             SELECT u.org_id, {} FROM users u
             JOIN candidates c ON c.org_id = u.org_id AND c.user_key = u.user_key
             ORDER BY u.org_id, u.user_key
             FOR NO KEY UPDATE OF u SKIP LOCKED",
            USER_COLUMNS
                .split(", ")
                .map(|c| format!("u.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await
        .map_err(db)?;
    let rows = tx.query(&stmt, &[&USERS_PER_FOLD]).await.map_err(db)?;
    if rows.is_empty() {
        tx.commit().await.map_err(db)?;
        return Ok(0);
    }
    let mut users = Vec::with_capacity(rows.len());
    let mut index: HashMap<(String, i64), usize> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let org_text: String = row.get(0);
        let org = OrganizationId::parse(&org_text).map_err(StoreError::Internal)?;
        // The user columns follow the organization.
        let user = user_from_row_at(row, &org)?;
        index.insert((org_text, user.key), users.len());
        users.push(user);
    }
    let orgs: Vec<String> = users
        .iter()
        .map(|u| u.record.organization_id.to_string())
        .collect();
    let keys: Vec<i64> = users.iter().map(|u| u.key).collect();
    let pending = tx
        .query(
            "SELECT p.org_id, p.user_key, e.seq, e.created_at, e.regulation, e.body, e.updated_at,
                    p.bump
             FROM UNNEST($1::text[], $2::bigint[]) AS t(org_id, user_key)
             JOIN pending_folds p ON p.org_id = t.org_id AND p.user_key = t.user_key
             JOIN events e ON e.org_id = p.org_id AND e.user_key = p.user_key AND e.seq = p.seq",
            &[&orgs, &keys],
        )
        .await
        .map_err(db)?;
    let mut folded: (Vec<&str>, Vec<i64>, Vec<i64>) = Default::default();
    for row in &pending {
        let org_text: &str = row.get(0);
        let key: i64 = row.get(1);
        let seq: i64 = row.get(2);
        let Some(&i) = index.get(&(org_text.to_owned(), key)) else {
            continue;
        };
        let body: &[u8] = row.get(5);
        let body: EventBody = serde_json::from_slice(body)
            .map_err(|e| StoreError::Internal(format!("event body: {e}")))?;
        let regulation: &str = row.get(4);
        let user = &mut users[i];
        user.record.state.apply(
            &Regulation::parse(regulation).unwrap_or_default(),
            &body,
            Stamp {
                at: row.get(3),
                seq,
            },
        );
        user.record.version += i64::from(row.get::<_, i16>(7));
        user.record.updated_at = user
            .record
            .updated_at
            .max(Timestamp::from_millis(row.get(6)));
        folded.0.push(org_text);
        folded.1.push(key);
        folded.2.push(seq);
    }
    let states = users
        .iter()
        .map(|u| serde_json::to_vec(&u.record.state))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    let versions: Vec<i64> = users.iter().map(|u| u.record.version).collect();
    let updated: Vec<i64> = users.iter().map(|u| u.record.updated_at.millis()).collect();
    tx.execute(
        "UPDATE users AS u SET version = t.version, updated_at = t.updated_at, state = t.state
         FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[])
              AS t(org_id, user_key, version, updated_at, state)
         WHERE u.org_id = t.org_id AND u.user_key = t.user_key",
        &[&orgs, &keys, &versions, &updated, &states],
    )
    .await
    .map_err(db)?;
    tx.execute(
        "DELETE FROM pending_folds AS p
         USING UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS t(org_id, user_key, seq)
         WHERE p.org_id = t.org_id AND p.user_key = t.user_key AND p.seq = t.seq",
        &[&folded.0, &folded.1, &folded.2],
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(users.len())
}

/// Decodes a user whose columns start at index 1 (index 0 is the organization).
fn user_from_row_at(
    row: &tokio_postgres::Row,
    org: &OrganizationId,
) -> Result<super::read::PgUser, StoreError> {
    let state: &[u8] = row.get(7);
    Ok(super::read::PgUser {
        key: row.get(1),
        record: assent_model::user::UserRecord {
            id: row.get(2),
            organization_id: org.clone(),
            organization_user_id: row.get(3),
            version: row.get(4),
            created_at: Timestamp::from_millis(row.get(5)),
            updated_at: Timestamp::from_millis(row.get(6)),
            state: serde_json::from_slice(state)
                .map_err(|e| StoreError::Internal(format!("user state: {e}")))?,
        },
    })
}
