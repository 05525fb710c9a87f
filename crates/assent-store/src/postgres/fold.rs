//! The folder: folds pending events into their users' rows in bulk. Every node runs one; they
//! take disjoint users (`FOR NO KEY UPDATE … SKIP LOCKED`), so adding nodes adds folders.

use super::read::{self, USER_COLUMNS};
use super::recent::RecentEvents;
use super::{checkout, db};
use crate::StoreError;
use assent_model::OrganizationId;
use deadpool_postgres::Pool;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Most users folded in one transaction. Larger folds cost no less per event once events are
/// paced by age, and 5,000 raised the append p99 under ingest from 35 to 55 ms.
const USERS_PER_FOLD: i64 = 2_000;
/// How long an event waits before the folder takes its user. The folder then folds all of the
/// user's pending events, so a user is written once for every event it got meanwhile: each
/// fold of a user costs a lock, a read, a decode, an encode and a write of its whole state,
/// whatever the number of events. Readers fold what is pending themselves, so nobody waits for
/// the folder.
///
/// Pacing by the age of events, not by a pause between folds: under steady ingest the folds
/// are always full, and a folder that only paused after a fold that was not full went round
/// its users with no pause at all. In the ingest benchmark (10,000 users) it wrote a user for
/// every 2.7 events; paced by age, for every 8.1.
const RIPE_AFTER: Duration = Duration::from_secs(1);
/// Pause after a fold that was not full.
const TICK: Duration = Duration::from_millis(200);
/// Pause when the last look found nothing and nothing has ripened since: only events committed
/// late (numbered before they were visible) or users locked by someone else can be waiting.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Pause when the last fold was full: there is more to do.
const BUSY_PAUSE: Duration = Duration::from_millis(10);
/// Pending rows this folder deletes before it vacuums `pending_folds` itself.
const VACUUM_AFTER_ROWS: usize = 50_000;
/// Least time between two vacuums by this folder.
const VACUUM_EVERY: Duration = Duration::from_secs(1);

/// Folds pending events until `stop` is set.
///
/// Arrival numbers come from one shared sequence, so the folder tells the age of a pending
/// event by its number: it notes the sequence's last value as it goes, and folds the users
/// that have an event numbered at most the last value it noted [`RIPE_AFTER`] ago.
///
/// Every pending row is inserted once and deleted once, so under steady writes the table is
/// mostly dead rows until a vacuum reclaims them, and each fold and each read walks past them.
/// Autovacuum visits a database at most once a minute (`autovacuum_naptime`): at 50,000 events
/// per second that is millions of dead rows, which made the folder's reads several times
/// slower. So the folder vacuums the table itself once it has deleted enough rows
/// (`SKIP_LOCKED`: if another node's folder is already vacuuming it, this one goes on).
pub async fn run(pool: Pool, recent: RecentEvents, stop: Arc<AtomicBool>) {
    let mut deleted = 0;
    let mut vacuumed = Instant::now();
    let mut ripe = Ripeness::default();
    // The ripe number of the last look that found nothing.
    let mut found_nothing_at = None;
    while !stop.load(Ordering::Relaxed) {
        let through = match last_seq(&pool).await {
            Ok(last) => ripe.note(Instant::now(), last),
            Err(e) => {
                // Folding must not stop for want of pacing: take every pending event.
                tracing::warn!(error = %e, "reading the arrival sequence failed; folding without waiting");
                Some(i64::MAX)
            }
        };
        let folded = match through {
            Some(through) => fold_some(&pool, &recent, through).await,
            None => Ok((0, 0)),
        };
        if let Ok((_, rows)) = folded {
            deleted += rows;
        }
        if deleted >= VACUUM_AFTER_ROWS && vacuumed.elapsed() >= VACUUM_EVERY {
            deleted = 0;
            vacuumed = Instant::now();
            if let Err(e) = vacuum(&pool).await {
                tracing::warn!(error = %e, "vacuuming pending folds failed");
            }
        }
        let idle = matches!(folded, Ok((0, _))) && through == found_nothing_at;
        found_nothing_at = match folded {
            Ok((0, _)) => through,
            _ => None,
        };
        match folded {
            // Full: as many users as a fold takes, or as many pending rows as its scan takes
            // (a few users with many rows each). `rows` counts the young rows of the users
            // taken too, so a fold of a few busy users may pass for full: the next look then
            // finds nothing ripe and waits.
            Ok((users, rows))
                if users as i64 == USERS_PER_FOLD || rows as i64 >= USERS_PER_FOLD * 4 =>
            {
                tokio::time::sleep(BUSY_PAUSE).await
            }
            Ok(_) if idle => tokio::time::sleep(IDLE_TICK).await,
            Ok(_) => tokio::time::sleep(TICK).await,
            Err(e) => {
                tracing::warn!(error = %e, "folding pending events failed; will retry");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The arrival numbers the folder noted, to tell which pending events are ripe.
#[derive(Default)]
struct Ripeness {
    /// Notes younger than [`RIPE_AFTER`], oldest first.
    notes: VecDeque<(Instant, i64)>,
    /// The newest note at least [`RIPE_AFTER`] old, or a higher one noted before: it never
    /// goes down, so that rows numbered above a sequence that went back (a restore, a reset)
    /// are not left waiting for it to climb again.
    ripe: Option<i64>,
}

impl Ripeness {
    /// Notes the sequence's last value at `now`; returns the highest arrival number whose
    /// events are ripe, if any.
    fn note(&mut self, now: Instant, last: i64) -> Option<i64> {
        if self.notes.back().is_none_or(|&(_, seq)| seq != last) {
            self.notes.push_back((now, last));
        }
        while let Some(&(at, seq)) = self.notes.front() {
            if now.duration_since(at) < RIPE_AFTER {
                break;
            }
            self.ripe = self.ripe.max(Some(seq));
            self.notes.pop_front();
        }
        self.ripe
    }
}

/// The last arrival number handed out, by any node (0 before the first). Through the function
/// rather than `SELECT last_value`, which needs the SELECT privilege on the sequence: a role
/// that may append has USAGE, which the function accepts too.
async fn last_seq(pool: &Pool) -> Result<i64, StoreError> {
    let client = checkout(pool).await?;
    let stmt = client
        .prepare_cached("SELECT coalesce(pg_sequence_last_value('assent_event_seq'), 0)")
        .await
        .map_err(db)?;
    Ok(client.query_one(&stmt, &[]).await.map_err(db)?.get(0))
}

/// Reclaims the dead rows of `pending_folds` (outside any transaction, as VACUUM must be).
async fn vacuum(pool: &Pool) -> Result<(), StoreError> {
    checkout(pool)
        .await?
        .batch_execute("VACUUM (SKIP_LOCKED) pending_folds")
        .await
        .map_err(db)
}

/// Folds the pending events of up to [`USERS_PER_FOLD`] users that have one numbered at most
/// `through` (and all their other pending events with them); returns how many users, and how
/// many pending rows it folded and deleted.
pub async fn fold_some(
    pool: &Pool,
    recent: &RecentEvents,
    through: i64,
) -> Result<(usize, usize), StoreError> {
    let mut client = checkout(pool).await?;
    let tx = client.transaction().await.map_err(db)?;
    // Every lookup is a `LATERAL … LIMIT 1` index probe, whatever the planner believes of the
    // tables' sizes (statistics lag behind a queue that fills and empties all the time).
    let stmt = tx
        .prepare_cached(&format!(
            "WITH candidates AS (
                 SELECT DISTINCT org_id, user_key
                 FROM (SELECT org_id, user_key FROM pending_folds WHERE seq <= $2
                       LIMIT $1::bigint * 4) AS p
                 LIMIT $1::bigint)
             SELECT u.*, c.org_id FROM candidates c
             CROSS JOIN LATERAL (SELECT {USER_COLUMNS} FROM users
                 WHERE org_id = c.org_id AND user_key = c.user_key
                 LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED) u
             ORDER BY c.org_id, u.user_key"
        ))
        .await
        .map_err(db)?;
    let rows = tx
        .query(&stmt, &[&USERS_PER_FOLD, &through])
        .await
        .map_err(db)?;
    if rows.is_empty() {
        tx.commit().await.map_err(db)?;
        return Ok((0, 0));
    }
    let mut users = Vec::with_capacity(rows.len());
    let mut index: HashMap<(String, i64), usize> = HashMap::with_capacity(rows.len());
    for row in &rows {
        // The organization follows the user's columns.
        let org_text: String = row.get(7);
        let org = OrganizationId::parse(&org_text).map_err(StoreError::Internal)?;
        let user = read::user_from_row(row, &org)?;
        index.insert((org_text, user.key), users.len());
        users.push(user);
    }
    let orgs: Vec<String> = users
        .iter()
        .map(|u| u.record.organization_id.to_string())
        .collect();
    let keys: Vec<i64> = users.iter().map(|u| u.key).collect();
    // The pending rows of those users; the events this node appended come from memory, the
    // others are read back from `events`.
    let stmt = tx
        .prepare_cached(
            "SELECT p.org_id, p.user_key, p.seq, p.bump, p.ctid::text
             FROM UNNEST($1::text[], $2::bigint[]) AS t(org_id, user_key)
             CROSS JOIN LATERAL (SELECT org_id, user_key, seq, bump, ctid FROM pending_folds
                 WHERE org_id = t.org_id AND user_key = t.user_key OFFSET 0) p",
        )
        .await
        .map_err(db)?;
    let pending = tx.query(&stmt, &[&orgs, &keys]).await.map_err(db)?;
    let mut folded: Vec<&str> = Vec::with_capacity(pending.len());
    let mut from_memory: Vec<i64> = Vec::with_capacity(pending.len());
    let mut unread: (Vec<&str>, Vec<i64>, Vec<i64>, Vec<i16>) = Default::default();
    for row in &pending {
        let org_text: &str = row.get(0);
        let key: i64 = row.get(1);
        let seq: i64 = row.get(2);
        let bump: i16 = row.get(3);
        let Some(&i) = index.get(&(org_text.to_owned(), key)) else {
            continue;
        };
        match recent.get(org_text, key, seq) {
            Some(event) => {
                let user = &mut users[i].record;
                user.state
                    .apply(event.regulation(), event.body(), event.stamp());
                user.version += i64::from(bump);
                user.updated_at = user.updated_at.max(event.updated_at());
                from_memory.push(seq);
            }
            None => {
                unread.0.push(org_text);
                unread.1.push(key);
                unread.2.push(seq);
                unread.3.push(bump);
            }
        }
        folded.push(row.get(4));
    }
    if !unread.0.is_empty() {
        let stmt = tx
            .prepare_cached(
                "SELECT t.org_id, t.user_key, t.seq, e.created_at, e.regulation, e.body,
                        e.updated_at, t.bump
                 FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::smallint[])
                     AS t(org_id, user_key, seq, bump)
                 CROSS JOIN LATERAL (SELECT created_at, regulation, body, updated_at FROM events
                     WHERE org_id = t.org_id AND user_key = t.user_key AND seq = t.seq
                     LIMIT 1) e",
            )
            .await
            .map_err(db)?;
        let rows = tx
            .query(&stmt, &[&unread.0, &unread.1, &unread.2, &unread.3])
            .await
            .map_err(db)?;
        for row in &rows {
            let org_text: &str = row.get(0);
            let key: i64 = row.get(1);
            if let Some(&i) = index.get(&(org_text.to_owned(), key)) {
                read::apply_pending(&mut users[i], row, 2)?;
            }
        }
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
    // By row address: the users are locked, so nobody else removes their pending rows, and
    // a TID scan touches only those rows.
    tx.execute(
        "DELETE FROM pending_folds WHERE ctid = ANY($1::text[]::tid[])",
        &[&folded],
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    recent.forget(&from_memory);
    Ok((users.len(), folded.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_ripen_once_their_number_was_noted_long_enough_ago() {
        let start = Instant::now();
        let mut ripe = Ripeness::default();
        assert_eq!(ripe.note(start, 10), None, "nothing is old enough yet");
        let half = start + RIPE_AFTER / 2;
        assert_eq!(ripe.note(half, 20), None);
        // At RIPE_AFTER, what was handed out by the first note is ripe, not what came later.
        assert_eq!(ripe.note(start + RIPE_AFTER, 30), Some(10));
        assert_eq!(ripe.note(half + RIPE_AFTER, 30), Some(20));
        // With no new arrival, the last value ripens too, a second after it was first noted.
        assert_eq!(ripe.note(start + RIPE_AFTER * 2, 30), Some(30));
        assert_eq!(ripe.note(start + RIPE_AFTER * 3, 30), Some(30));
    }

    #[test]
    fn after_a_slow_fold_the_newest_of_the_notes_that_ripened_meanwhile_counts() {
        let start = Instant::now();
        let mut ripe = Ripeness::default();
        let step = RIPE_AFTER / 4;
        for (i, seq) in [10, 20, 30].into_iter().enumerate() {
            assert_eq!(ripe.note(start + step * i as u32, seq), None);
        }
        // One look long after all three: 30 is ripe, not the first or the oldest.
        assert_eq!(ripe.note(start + RIPE_AFTER * 2, 40), Some(30));
        assert_eq!(
            ripe.notes.len(),
            1,
            "ripe notes are dropped, the young one is kept"
        );
    }

    #[test]
    fn the_same_value_is_noted_once_with_the_time_it_was_first_seen() {
        let start = Instant::now();
        let mut ripe = Ripeness::default();
        ripe.note(start, 10);
        ripe.note(start + RIPE_AFTER / 2, 10);
        assert_eq!(ripe.notes.len(), 1);
        assert_eq!(ripe.note(start + RIPE_AFTER, 10), Some(10));
    }

    #[test]
    fn the_ripe_number_never_goes_down_when_the_sequence_does() {
        let start = Instant::now();
        let mut ripe = Ripeness::default();
        ripe.note(start, 500);
        assert_eq!(ripe.note(start + RIPE_AFTER, 5), Some(500));
        // The lower value ripens in turn without taking the ripe number down.
        assert_eq!(ripe.note(start + RIPE_AFTER * 2, 6), Some(500));
    }
}
