//! Integrations, the outbox and deliveries on PostgreSQL. Any number of nodes run the delivery
//! worker: an integration's fan-in is done under its row lock (`FOR UPDATE SKIP LOCKED`, one
//! node at a time) and deliveries are taken for a lease, so no two nodes send one at once.

use super::db;
use crate::StoreError;
use crate::integrations::{
    AttemptResult, DeliveriesQuery, DueDelivery, Outcome, attempts_bytes, attempts_from,
    integration_from_row, integration_row, push_attempt,
};
use assent_model::integration::{
    Change, ChangeKind, Delivery, DeliveryStatus, Integration, kinds_mask,
};
use assent_model::query::Page;
use assent_model::{OrganizationId, Timestamp};
use deadpool_postgres::{GenericClient, Transaction};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_postgres::Row;

/// The kinds of change that say a user changed (not erased).
pub const USER_CHANGES: u8 = (1 << 3) | (1 << 4);

/// How long a node trusts what it read of an organization's integrations: an integration
/// created on another node receives the changes made from at most this long after.
const SUBSCRIPTIONS_TTL: Duration = Duration::from_secs(1);

/// The kinds each organization's enabled integrations want, as this node last read them.
#[derive(Default)]
pub struct Subscriptions {
    known: Mutex<HashMap<String, (u8, Instant)>>,
}

impl Subscriptions {
    /// The kinds to announce for `org`.
    pub async fn mask(
        &self,
        c: &impl GenericClient,
        org: &OrganizationId,
    ) -> Result<u8, StoreError> {
        if let Some((mask, at)) = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(org.as_str())
            && at.elapsed() < SUBSCRIPTIONS_TTL
        {
            return Ok(*mask);
        }
        let stmt = c
            .prepare_cached(
                "SELECT coalesce(bit_or(kinds), 0)::smallint FROM integrations
                 WHERE org_id = $1 AND enabled",
            )
            .await
            .map_err(db)?;
        let mask: i16 = c
            .query_one(&stmt, &[&org.as_str()])
            .await
            .map_err(db)?
            .get(0);
        let mask = mask as u8;
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(org.to_string(), (mask, Instant::now()));
        Ok(mask)
    }

    /// Forgets what this node read of `org` (after changing its integrations).
    pub fn forget(&self, org: &OrganizationId) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(org.as_str());
    }
}

/// Puts the changes whose kinds are in `mask` in the outbox, in order.
pub async fn announce(
    tx: &Transaction<'_>,
    org: &OrganizationId,
    mask: u8,
    changes: &[(i64, Change)],
    now: Timestamp,
    origin: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let wanted: Vec<&(i64, Change)> = changes
        .iter()
        .filter(|(_, c)| mask & c.kind.bit() != 0)
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let keys: Vec<i64> = wanted.iter().map(|(k, _)| *k).collect();
    let kinds: Vec<i16> = wanted.iter().map(|(_, c)| c.kind.code() as i16).collect();
    let bodies: Vec<&[u8]> = wanted.iter().map(|(_, c)| c.body.as_slice()).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO outbox (org_id, seq, user_key, kind, created_at, body, origin)
             SELECT $1, nextval('assent_change_seq'), t.k, t.kind, $2, t.b, $6
             FROM UNNEST($3::bigint[], $4::smallint[], $5::bytea[]) WITH ORDINALITY
                  AS t(k, kind, b, n)
             ORDER BY t.n",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &org.as_str(),
            &now.millis(),
            &keys,
            &kinds,
            &bodies,
            &origin,
        ],
    )
    .await?;
    Ok(())
}

const COLUMNS: &str = "id, type_id, enabled, config, created_at, updated_at";

fn integration(row: &Row, org: &OrganizationId) -> Result<Integration, StoreError> {
    let config: &[u8] = row.get(3);
    integration_from_row(
        org,
        row.get(0),
        row.get(1),
        row.get(2),
        config,
        row.get(4),
        row.get(5),
    )
}

/// Stores a new integration; it hears of the changes made from now on.
pub async fn insert(c: &impl GenericClient, i: &Integration) -> Result<(), StoreError> {
    let row = integration_row(i)?;
    c.execute(
        "INSERT INTO organizations (org_id, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&i.organization_id.as_str(), &i.created_at.millis()],
    )
    .await
    .map_err(db)?;
    let inserted = c
        .execute(
            "INSERT INTO integrations (org_id, id, type_id, enabled, kinds, config, cursor_xid,
                                       cursor_seq, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, pg_snapshot_xmin(pg_current_snapshot()), 0, $7, $8)
             ON CONFLICT DO NOTHING",
            &[
                &i.organization_id.as_str(),
                &i.id,
                &row.type_id,
                &row.enabled,
                &i16::from(kinds_mask(&i.event_types)),
                &row.config,
                &i.created_at.millis(),
                &i.updated_at.millis(),
            ],
        )
        .await
        .map_err(db)?;
    if inserted == 0 {
        return Err(StoreError::conflict(format!(
            "integration '{}' already exists",
            i.id
        )));
    }
    Ok(())
}

/// One integration, locked for the transaction when `lock` is set.
pub async fn find(
    c: &impl GenericClient,
    org: &OrganizationId,
    id: &str,
    lock: bool,
) -> Result<Option<Integration>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM integrations WHERE org_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    match c.query_opt(&sql, &[&org.as_str(), &id]).await.map_err(db)? {
        Some(row) => Ok(Some(integration(&row, org)?)),
        None => Ok(None),
    }
}

/// The integrations of an organization, oldest first.
pub async fn list(
    c: &impl GenericClient,
    org: &OrganizationId,
) -> Result<Vec<Integration>, StoreError> {
    c.query(
        &format!("SELECT {COLUMNS} FROM integrations WHERE org_id = $1 ORDER BY created_at, id"),
        &[&org.as_str()],
    )
    .await
    .map_err(db)?
    .iter()
    .map(|row| integration(row, org))
    .collect()
}

/// Every enabled integration.
pub async fn active(c: &impl GenericClient) -> Result<Vec<Integration>, StoreError> {
    let mut out = Vec::new();
    for row in c
        .query(
            &format!(
                "SELECT {COLUMNS}, org_id FROM integrations WHERE enabled ORDER BY org_id, id"
            ),
            &[],
        )
        .await
        .map_err(db)?
    {
        let org = OrganizationId::parse(row.get(6)).map_err(StoreError::Internal)?;
        out.push(integration(&row, &org)?);
    }
    Ok(out)
}

/// Rewrites an integration; with `restart`, its cursor moves to now (it was enabled again).
pub async fn update(
    c: &impl GenericClient,
    i: &Integration,
    restart: bool,
) -> Result<(), StoreError> {
    let row = integration_row(i)?;
    c.execute(
        "UPDATE integrations SET enabled = $3, kinds = $4, config = $5, updated_at = $6,
                cursor_xid = CASE WHEN $7 THEN pg_snapshot_xmin(pg_current_snapshot())
                                  ELSE cursor_xid END,
                cursor_seq = CASE WHEN $7 THEN 0 ELSE cursor_seq END
         WHERE org_id = $1 AND id = $2",
        &[
            &i.organization_id.as_str(),
            &i.id,
            &row.enabled,
            &i16::from(kinds_mask(&i.event_types)),
            &row.config,
            &i.updated_at.millis(),
            &restart,
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// Deletes an integration and its deliveries.
pub async fn delete(
    c: &impl GenericClient,
    org: &OrganizationId,
    id: &str,
) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM deliveries WHERE org_id = $1 AND integration_id = $2",
        &[&org.as_str(), &id],
    )
    .await
    .map_err(db)?;
    c.execute(
        "DELETE FROM integrations WHERE org_id = $1 AND id = $2",
        &[&org.as_str(), &id],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// Moves up to `limit` changes after the integration's cursor into its deliveries, when fewer
/// than `limit` wait and no other node is doing it.
pub async fn fan_in(tx: &Transaction<'_>, i: &Integration, limit: usize) -> Result<(), StoreError> {
    let org = i.organization_id.as_str();
    let Some(cursor) = tx
        .query_opt(
            "SELECT cursor_xid::text, cursor_seq FROM integrations
             WHERE org_id = $1 AND id = $2 AND enabled FOR UPDATE SKIP LOCKED",
            &[&org, &i.id],
        )
        .await
        .map_err(db)?
    else {
        return Ok(());
    };
    let waiting: i64 = tx
        .query_one(
            "SELECT count(*) FROM deliveries WHERE org_id = $1 AND integration_id = $2 AND status < 2",
            &[&org, &i.id],
        )
        .await
        .map_err(db)?
        .get(0);
    if waiting >= limit as i64 {
        return Ok(());
    }
    let (xid, seq): (String, i64) = (cursor.get(0), cursor.get(1));
    let rows = tx
        .query(
            "SELECT txid::text, seq, user_key, kind, created_at, origin FROM outbox
             WHERE org_id = $1 AND (txid, seq) > ($2::text::xid8, $3)
               AND txid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY txid, seq LIMIT $4",
            &[&org, &xid, &seq, &(limit as i64)],
        )
        .await
        .map_err(db)?;
    let Some(last) = rows.last() else {
        return Ok(());
    };
    let (last_xid, last_seq): (String, i64) = (last.get(0), last.get(1));
    let mut txids = Vec::new();
    let mut seqs = Vec::new();
    let mut users = Vec::new();
    let mut kinds = Vec::new();
    let mut created = Vec::new();
    let mut ids = Vec::new();
    for row in &rows {
        let kind: i16 = row.get(3);
        if !ChangeKind::from_code(i64::from(kind)).is_some_and(|k| i.wants(k)) {
            continue;
        }
        // No echo: a change that came from this integration does not go back to it.
        if row.get::<_, Option<&str>>(5) == Some(i.id.as_str()) {
            continue;
        }
        txids.push(row.get::<_, String>(0));
        seqs.push(row.get::<_, i64>(1));
        users.push(row.get::<_, i64>(2));
        kinds.push(kind);
        created.push(row.get::<_, i64>(4));
        ids.push(uuid::Uuid::now_v7().to_string());
    }
    if !seqs.is_empty() {
        tx.execute(
            "INSERT INTO deliveries (org_id, integration_id, ord, id, change_txid, change_seq,
                                     user_key, kind, status, next_at, attempts, created_at,
                                     updated_at)
             SELECT $1, $2, nextval('assent_delivery_ord'), t.id, t.x::xid8, t.s, t.u, t.k, 0, 0,
                    '\\x5b5d'::bytea, t.c, t.c
             FROM UNNEST($3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::smallint[],
                         $8::bigint[]) WITH ORDINALITY AS t(id, x, s, u, k, c, n)
             ORDER BY t.n",
            &[&org, &i.id, &ids, &txids, &seqs, &users, &kinds, &created],
        )
        .await
        .map_err(db)?;
    }
    tx.execute(
        "UPDATE integrations SET cursor_xid = $3::text::xid8, cursor_seq = $4
         WHERE org_id = $1 AND id = $2",
        &[&org, &i.id, &last_xid, &last_seq],
    )
    .await
    .map_err(db)?;
    Ok(())
}

const DELIVERY_COLUMNS: &str =
    "d.id, d.kind, d.status, d.next_at, d.attempts, d.created_at, d.updated_at";

fn delivery(row: &Row, integration_id: &str) -> Result<Delivery, StoreError> {
    let status = DeliveryStatus::from_code(i64::from(row.get::<_, i16>(2)))
        .ok_or_else(|| StoreError::Internal("delivery status".into()))?;
    let attempts: &[u8] = row.get(4);
    Ok(Delivery {
        id: row.get(0),
        integration_id: integration_id.to_owned(),
        kind: ChangeKind::from_code(i64::from(row.get::<_, i16>(1)))
            .ok_or_else(|| StoreError::Internal("delivery kind".into()))?,
        status,
        attempts: attempts_from(attempts)?,
        next_attempt_at: matches!(status, DeliveryStatus::Queued | DeliveryStatus::Retrying)
            .then(|| Timestamp::from_millis(row.get(3))),
        created_at: Timestamp::from_millis(row.get(5)),
        updated_at: Timestamp::from_millis(row.get(6)),
    })
}

/// Takes due deliveries, the oldest unfinished one of each user, for `lease`.
pub async fn claim(
    tx: &Transaction<'_>,
    i: &Integration,
    now: Timestamp,
    limit: usize,
    lease: Duration,
) -> Result<Vec<DueDelivery>, StoreError> {
    let org = i.organization_id.as_str();
    let rows = tx
        .query(
            &format!(
                "WITH due AS (
                     SELECT d.ord FROM deliveries d
                     WHERE d.org_id = $1 AND d.integration_id = $2 AND d.status < 2
                       AND d.next_at <= $3 AND d.lease_until <= $3
                       -- The oldest unfinished delivery of its user: a scalar subquery, so
                       -- each probe binds the user whatever the planner thinks of the table.
                       AND d.ord = (SELECT min(e.ord) FROM deliveries e
                           WHERE e.org_id = $1 AND e.integration_id = $2
                             AND e.user_key = d.user_key AND e.status < 2)
                     ORDER BY d.ord LIMIT $4 FOR UPDATE SKIP LOCKED)
                 UPDATE deliveries d SET lease_until = $5
                 FROM due WHERE d.org_id = $1 AND d.integration_id = $2 AND d.ord = due.ord
                 RETURNING {DELIVERY_COLUMNS}, d.ord,
                     (SELECT body FROM outbox o WHERE o.org_id = d.org_id
                        AND o.txid = d.change_txid AND o.seq = d.change_seq)"
            ),
            &[
                &org,
                &i.id,
                &now.millis(),
                &(limit as i64),
                &(now.millis() + lease.as_millis() as i64),
            ],
        )
        .await
        .map_err(db)?;
    let mut out: Vec<(i64, DueDelivery)> = Vec::with_capacity(rows.len());
    for row in &rows {
        let body: Option<Vec<u8>> = row.get(8);
        out.push((
            row.get(7),
            DueDelivery {
                delivery: delivery(row, &i.id)?,
                organization_id: i.organization_id.clone(),
                body: body.unwrap_or_default(),
                unrendered: None,
            },
        ));
    }
    out.sort_by_key(|(ord, _)| *ord);
    Ok(out.into_iter().map(|(_, d)| d).collect())
}

/// Records attempts and releases their deliveries; returns whether the destination is gone.
pub async fn record(
    tx: &Transaction<'_>,
    i: &Integration,
    results: &[AttemptResult],
    now: Timestamp,
) -> Result<bool, StoreError> {
    let org = i.organization_id.as_str();
    let mut gone = false;
    for r in results {
        let Some(row) = tx
            .query_opt(
                "SELECT attempts FROM deliveries
                 WHERE org_id = $1 AND integration_id = $2 AND id = $3 FOR UPDATE",
                &[&org, &i.id, &r.delivery_id],
            )
            .await
            .map_err(db)?
        else {
            continue;
        };
        let mut attempts = attempts_from(row.get::<_, &[u8]>(0))?;
        push_attempt(&mut attempts, r.attempt.clone());
        let (status, next_at) = match &r.outcome {
            Outcome::Delivered => (DeliveryStatus::Delivered, 0),
            Outcome::RetryAt(t) => (DeliveryStatus::Retrying, t.millis()),
            Outcome::Park => (DeliveryStatus::Parked, 0),
            Outcome::Gone => {
                gone = true;
                (DeliveryStatus::Parked, 0)
            }
        };
        tx.execute(
            "UPDATE deliveries SET status = $4, next_at = $5, attempts = $6, updated_at = $7,
                    lease_until = 0
             WHERE org_id = $1 AND integration_id = $2 AND id = $3",
            &[
                &org,
                &i.id,
                &r.delivery_id,
                &(status.code() as i16),
                &next_at,
                &attempts_bytes(&attempts)?,
                &now.millis(),
            ],
        )
        .await
        .map_err(db)?;
    }
    Ok(gone)
}

/// A page of an integration's deliveries, newest first.
pub async fn list_deliveries(
    c: &impl GenericClient,
    i: &Integration,
    q: &DeliveriesQuery,
) -> Result<Page<Delivery>, StoreError> {
    let org = i.organization_id.as_str();
    let status: i16 = q.status.map(|s| s.code() as i16).unwrap_or(-1);
    let total: i64 = c
        .query_one(
            "SELECT count(*) FROM deliveries d
             WHERE d.org_id = $1 AND d.integration_id = $2 AND ($3::smallint < 0 OR d.status = $3::smallint)",
            &[&org, &i.id, &status],
        )
        .await
        .map_err(db)?
        .get(0);
    let rows = c
        .query(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d
                 WHERE d.org_id = $1 AND d.integration_id = $2 AND ($3::smallint < 0 OR d.status = $3::smallint)
                 ORDER BY d.ord DESC LIMIT $4 OFFSET $5"
            ),
            &[&org, &i.id, &status, &(q.limit as i64), &(q.skip as i64)],
        )
        .await
        .map_err(db)?;
    Ok(Page {
        total: total as usize,
        limit: q.limit,
        skip: q.skip,
        data: rows
            .iter()
            .map(|r| delivery(r, &i.id))
            .collect::<Result<_, _>>()?,
    })
}

/// Makes a delivery due now; returns it, or why not.
pub async fn reschedule(
    tx: &Transaction<'_>,
    i: &Integration,
    delivery_id: &str,
    now: Timestamp,
) -> Result<Delivery, StoreError> {
    let org = i.organization_id.as_str();
    let row = tx
        .query_opt(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d
                 WHERE d.org_id = $1 AND d.integration_id = $2 AND d.id = $3 FOR UPDATE"
            ),
            &[&org, &i.id, &delivery_id],
        )
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found(format!("delivery '{delivery_id}' not found")))?;
    let mut d = delivery(&row, &i.id)?;
    if d.status == DeliveryStatus::Delivered {
        return Err(StoreError::conflict(format!(
            "delivery '{delivery_id}' was delivered already"
        )));
    }
    tx.execute(
        "UPDATE deliveries SET status = 1, next_at = $4, updated_at = $4
         WHERE org_id = $1 AND integration_id = $2 AND id = $3",
        &[&org, &i.id, &delivery_id, &now.millis()],
    )
    .await
    .map_err(db)?;
    d.status = DeliveryStatus::Retrying;
    d.next_attempt_at = Some(now);
    d.updated_at = now;
    Ok(d)
}

/// Forgets delivered deliveries older than `before`, then the changes no integration needs.
pub async fn prune(c: &impl GenericClient, before: Timestamp) -> Result<u64, StoreError> {
    let deliveries = c
        .execute(
            "DELETE FROM deliveries WHERE status = 2 AND updated_at < $1",
            &[&before.millis()],
        )
        .await
        .map_err(db)?;
    let changes = c
        .execute(
            "DELETE FROM outbox o WHERE o.created_at < $1
               AND NOT EXISTS (SELECT 1 FROM integrations i WHERE i.org_id = o.org_id
                   AND i.enabled AND (i.cursor_xid, i.cursor_seq) < (o.txid, o.seq))
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.org_id = o.org_id
                   AND d.change_txid = o.txid AND d.change_seq = o.seq AND d.status <> 2)",
            &[&before.millis()],
        )
        .await
        .map_err(db)?;
    Ok(deliveries + changes)
}
