//! The single writer thread.
//!
//! Write requests wait in a queue; the writer takes every request waiting (up to a bound) and
//! runs them in one transaction, each inside its own savepoint, then commits once (group
//! commit: one fsync for the whole group). Replies leave only after the commit, so an
//! acknowledged write is on disk.
//!
//! Each request runs in two phases. The first does everything that can refuse it (lookups,
//! conflicts, new user rows): a refusal rolls back its savepoint and leaves no trace, in the
//! database or in memory. The second applies its effects, in the database and in the writer's
//! memory; a failure there (a disk error) fails the whole group, which is rolled back and the
//! memory rebuilt from disk.
//!
//! Appending an event writes the event row only. Its user is changed in memory and readers
//! learn of the event through the [`Overlay`](super::shared::Overlay); the next flush, which
//! handles many groups at once, writes the user's row and index entries. A crash before the
//! flush loses nothing: on open, [`Writer::replay`] folds the events after `meta.flushed_seq`
//! again (folding is idempotent). Changes that the log cannot replay (a deletion, a patch, a
//! direct user edit) write their user's row at once ("write-through").

use super::admin;
use super::cache::{Identity, UserCache};
use super::codec::{StoredId, next_seq, seq_time, status_code};
use super::outbox;
use super::read::{self, db};
use super::render::{Reference, States};
use super::shared::{Fresh, Shared, UserEntry};
use crate::integrations::{AttemptResult, DueDelivery};
use crate::{ApiKey, StoreError};
use assent_model::event::EventPatch;
use assent_model::integration::{
    Change, ChangeKind, Delivery, DeliveryStatus, Integration, IntegrationPatch, event_json,
    user_json,
};
use assent_model::query::EventsQuery;
use assent_model::tcf::generate_for_events;
use assent_model::user::{NewUser, Resolution, UserPatch, UserRecord, UserSelector, resolve};
use assent_model::{
    ConsentEvent, EventBody, EventId, EventInput, EventStatus, OrganizationId, Regulation, Stamp,
    Timestamp, UserState,
};
use rusqlite::{Connection, params};
use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

/// The kinds of change that say a user changed (not erased).
const USER_CHANGES: u8 = 0b11 << 3;

/// A write request.
#[derive(Debug)]
pub enum Command {
    /// Append events (one request: all or nothing).
    Append {
        /// Organization.
        org: OrganizationId,
        /// The events, validated.
        events: Vec<EventInput>,
        /// Whether integrations hear of the change.
        announce: bool,
        /// The integration the change came from, which does not hear of it.
        origin: Option<String>,
    },
    /// Change an event.
    PatchEvent {
        /// Organization.
        org: OrganizationId,
        /// The event.
        id: EventId,
        /// The change.
        patch: EventPatch,
        /// Whether integrations hear of the change.
        announce: bool,
    },
    /// Delete an event.
    DeleteEvent {
        /// Organization.
        org: OrganizationId,
        /// The event.
        id: EventId,
        /// Whether integrations hear of the change.
        announce: bool,
    },
    /// Delete the events of a user that match a query.
    DeleteEvents {
        /// Organization.
        org: OrganizationId,
        /// The user and the filter.
        query: EventsQuery,
        /// Whether integrations hear of the change.
        announce: bool,
    },
    /// Create a user.
    CreateUser {
        /// Organization.
        org: OrganizationId,
        /// The user.
        user: NewUser,
        /// Whether integrations hear of the change.
        announce: bool,
    },
    /// Change a user's profile.
    PatchUser {
        /// Organization.
        org: OrganizationId,
        /// The user.
        user: UserSelector,
        /// The change.
        patch: UserPatch,
        /// Whether integrations hear of the change.
        announce: bool,
    },
    /// Erase a user and its events.
    DeleteUser {
        /// Organization.
        org: OrganizationId,
        /// The user.
        user: UserSelector,
        /// Whether integrations hear of the change.
        announce: bool,
    },
    /// Store an API key.
    CreateApiKey(ApiKey),
    /// Change what an organization administers (keys, secrets, proofs).
    Admin {
        /// Organization (created if it does not exist yet).
        org: OrganizationId,
        /// The change.
        op: AdminOp,
    },
    /// Store a new integration.
    CreateIntegration(Box<Integration>),
    /// Change an integration.
    PatchIntegration {
        /// Organization.
        org: OrganizationId,
        /// The integration.
        id: String,
        /// The change.
        patch: Box<IntegrationPatch>,
    },
    /// Delete an integration.
    DeleteIntegration {
        /// Organization.
        org: OrganizationId,
        /// The integration.
        id: String,
    },
    /// Make a delivery due now.
    RetryDelivery {
        /// Organization.
        org: OrganizationId,
        /// The integration.
        integration_id: String,
        /// The delivery.
        delivery_id: String,
    },
    /// Take due deliveries for the worker.
    ClaimDeliveries {
        /// The integration.
        integration: Box<Integration>,
        /// Most deliveries to take.
        limit: usize,
        /// How long the taken deliveries stay the worker's.
        lease: Duration,
    },
    /// Record the worker's attempts.
    RecordAttempts {
        /// The integration.
        integration: Box<Integration>,
        /// The attempts.
        results: Vec<AttemptResult>,
    },
    /// Forget old delivered deliveries and unneeded changes.
    PruneDeliveries {
        /// Older than this.
        before: Timestamp,
    },
}

impl Command {
    /// How much work the command is, to bound the size of a group.
    fn weight(&self) -> usize {
        match self {
            Command::Append { events, .. } => events.len(),
            _ => 1,
        }
    }
}

/// What a command answers.
#[derive(Debug)]
pub enum Reply {
    /// Stored events.
    Events(Vec<ConsentEvent>),
    /// One event.
    Event(Box<ConsentEvent>),
    /// How many things were deleted.
    Deleted(u64),
    /// A user.
    User(Box<UserRecord>),
    /// An API key.
    ApiKey(ApiKey),
    /// An integration.
    Integration(Box<Integration>),
    /// A delivery.
    Delivery(Box<Delivery>),
    /// Deliveries to attempt.
    Due(Vec<DueDelivery>),
    /// The answer of an [`AdminOp`].
    Admin(Box<dyn Any + Send>),
    /// Done, nothing to say.
    Done,
}

/// A change to an organization's keys, secrets or proofs: SQL run on the writer's connection,
/// inside its transaction, given the organization's key. Its answer comes back as
/// [`Reply::Admin`].
pub struct AdminOp(pub Box<AdminFn>);

/// The SQL of an [`AdminOp`]: given the writer's connection and the organization's key, it
/// returns a type-erased answer.
pub type AdminFn = dyn FnOnce(&Connection, i64) -> Result<Box<dyn Any + Send>, StoreError> + Send;

impl std::fmt::Debug for AdminOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminOp")
    }
}

/// A command with the channel for its answer.
pub struct Job {
    /// The command.
    pub command: Command,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Reply, StoreError>>,
    /// Held while the job is queued, to bound the queue.
    pub _permit: OwnedSemaphorePermit,
}

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most events committed in one group.
    pub max_group_events: usize,
    /// Flush once this many events are unflushed.
    pub flush_events: usize,
    /// Flush once this many users are unflushed.
    pub flush_users: usize,
    /// Flush when no request came for this long.
    pub idle_flush: Duration,
    /// Users written per group while a flush cycle runs.
    pub flush_chunk_users: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_group_events: 10_000,
            flush_events: 100_000,
            flush_users: 15_000,
            idle_flush: Duration::from_millis(20),
            flush_chunk_users: 500,
        }
    }
}

/// How a command failed.
enum Fail {
    /// Refused: its savepoint is rolled back; the rest of the group goes on.
    Refuse(StoreError),
    /// Failed while applying its effects: the whole group is rolled back.
    Poison(StoreError),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Refuse(e)
    }
}

/// Marks an error of the effects phase as fatal to the group.
fn fatal<T>(r: Result<T, StoreError>) -> Result<T, Fail> {
    r.map_err(Fail::Poison)
}

/// What a group changed, to tell readers after the commit.
#[derive(Default)]
struct Group {
    touched: HashSet<i64>,
    deleted: Vec<i64>,
    appended: usize,
    new_orgs: Vec<(OrganizationId, i64)>,
    poisoned: bool,
    /// An integration was created, changed or deleted: reload the subscriptions.
    integrations_changed: bool,
}

/// What the command being run learned in its first phase.
#[derive(Default)]
struct Cmd {
    /// Users created by the command (their rows are inserted; their memory is not yet).
    created: Vec<UserEntry>,
    /// Organization user ids attached to existing users.
    attached: Vec<(i64, String)>,
    /// Keys of users the command created or re-identified: their rows are not committed.
    unsettled: HashSet<i64>,
    /// Identities to remember once the command succeeds.
    learned: Vec<(i64, Identity)>,
    /// Identities to forget once the command succeeds.
    forgotten: Vec<(i64, String, Option<String>)>,
    /// Organization keys to share with readers once the group commits.
    new_orgs: Vec<(OrganizationId, i64)>,
    /// Whether integrations hear of the command's changes.
    announce: bool,
}

impl Cmd {
    /// Sets whether the command's changes are announced; returns the command for chaining.
    fn announcing(&mut self, announce: bool) -> &mut Cmd {
        self.announce = announce;
        self
    }
}

/// A flush spread over groups: the users still to write, and the last event it covers.
struct FlushCycle {
    upto: i64,
    /// How many users the cycle started with.
    size: usize,
    /// Keys still to write, the next ones at the end.
    keys: Vec<i64>,
}

/// The writer: owns the write connection and the working state of users.
pub struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    config: WriterConfig,
    last_seq: i64,
    /// Every event up to this arrival number is in its user's row and index.
    flushed_seq: i64,
    /// The flush cycle under way, if any.
    cycle: Option<FlushCycle>,
    /// When the writer last finished a checkpoint itself.
    last_checkpoint: std::time::Instant,
    /// The checkpointer pass the writer last saw.
    seen_checkpoints: u64,
    /// True while the writer's memory could not be rebuilt from disk: writes are refused
    /// (and nothing is flushed) until a replay succeeds.
    broken: bool,
    cache: UserCache,
    pending_events: usize,
    /// The kinds of change each organization's enabled integrations want, by organization key.
    subscriptions: HashMap<i64, u8>,
    /// Deliveries taken by the worker: (integration key, change number) → until when.
    in_flight: HashMap<(i64, i64), Instant>,
    /// The integration the command being executed came from (its changes skip it).
    origin: Option<String>,
    /// Changes the running command announced; they go to the outbox, in one row, once it
    /// succeeds.
    outbox_changes: RefCell<Vec<outbox::NewChange>>,
}

/// A user as it was before an append, for the change the append makes to it.
struct Before {
    version: i64,
    updated_at: Timestamp,
    /// How the change shows it, for a user whose change is rendered at once rather than
    /// kept as a reference (one whose organization user id the append attaches).
    shown: Option<Vec<u8>>,
}

impl Writer {
    /// A writer on `conn`, continuing the arrival sequence of the store.
    pub fn new(
        conn: Connection,
        shared: Arc<Shared>,
        config: WriterConfig,
    ) -> Result<Writer, StoreError> {
        let max_seq: Option<i64> = conn
            .query_row("SELECT max(seq) FROM events", [], |r| r.get(0))
            .map_err(db)?;
        let flushed = flushed_seq(&conn)?;
        let subscriptions = outbox::subscriptions(&conn)?;
        Ok(Writer {
            conn,
            shared,
            config,
            last_seq: max_seq.unwrap_or(0).max(flushed),
            flushed_seq: flushed,
            cycle: None,
            last_checkpoint: std::time::Instant::now(),
            seen_checkpoints: 0,
            broken: false,
            cache: UserCache::default(),
            pending_events: 0,
            subscriptions,
            in_flight: HashMap::new(),
            origin: None,
            outbox_changes: RefCell::new(Vec::new()),
        })
    }

    /// Folds the events appended after the last flush into their users again and flushes;
    /// returns how many events were replayed.
    pub fn replay(&mut self) -> Result<usize, StoreError> {
        let flushed = flushed_seq(&self.conn)?;
        let mut count = 0;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT e.seq, e.user_key, e.created_at, e.status, e.regulation, e.body, o.id
                 FROM events e JOIN organizations o ON o.org_key = e.org_key
                 WHERE e.seq > ?1 ORDER BY e.seq",
            )
            .map_err(db)?;
        let mut rows = stmt.query([flushed]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            let seq: i64 = row.get(0).map_err(db)?;
            let user_key: i64 = row.get(1).map_err(db)?;
            let org = OrganizationId::parse(&row.get::<_, String>(6).map_err(db)?)
                .map_err(StoreError::Internal)?;
            let regulation =
                Regulation::parse(&row.get::<_, String>(4).map_err(db)?).unwrap_or_default();
            let body: EventBody = serde_json::from_slice(
                row.get_ref(5)
                    .map_err(db)?
                    .as_blob()
                    .map_err(|e| StoreError::Internal(e.to_string()))?,
            )
            .map_err(|e| StoreError::Internal(format!("event {seq}: {e}")))?;
            let confirmed = row.get::<_, i64>(3).map_err(db)? == 0;
            let stamp = Stamp {
                at: row.get(2).map_err(db)?,
                seq,
            };
            if self.cache.get(user_key).is_none() {
                let entry = read::user_row(&self.conn, &org, user_key)?.ok_or_else(|| {
                    StoreError::Internal(format!("event {seq} names missing user {user_key}"))
                })?;
                self.cache.insert(entry);
            }
            let entry = self.cache.get_mut(user_key).expect("inserted above");
            if confirmed {
                entry.record.state.apply(&regulation, &body, stamp);
            }
            // Versions only need to grow. Every change held only in memory came with an
            // appended event (even a pending one, which may have created the user or attached
            // an organization user id), so one bump per replayed event is never fewer.
            entry.record.version += 1;
            entry.record.updated_at = entry.record.updated_at.max(seq_time(seq));
            entry.pending.push(seq);
            self.cache.mark_dirty(user_key);
            count += 1;
        }
        drop(rows);
        drop(stmt);
        self.pending_events = count;
        self.flush()?;
        Ok(count)
    }

    /// Serves the queue until every sender is gone, then flushes.
    pub fn run(mut self, jobs: Receiver<Job>) {
        loop {
            let first = if self.cache.dirty_count() > 0 || self.flushed_seq != self.last_seq {
                match jobs.recv_timeout(self.config.idle_flush) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        self.flush_logged();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            let mut weight = first.command.weight();
            let mut group = vec![first];
            while weight < self.config.max_group_events {
                match jobs.try_recv() {
                    Ok(job) => {
                        weight += job.command.weight();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.run_group(group);
        }
        self.flush_logged();
    }

    fn flush_logged(&mut self) {
        if self.broken {
            self.recover();
            return;
        }
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "flushing users failed; will retry");
        }
    }

    /// Writes every dirty user's row and index entries in one transaction.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.cache.dirty_count() == 0 && self.flushed_seq == self.last_seq {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let mut index: Vec<(i64, i64, i64)> = Vec::with_capacity(self.pending_events);
        for entry in self.cache.dirty() {
            write_user_row(&tx, entry)?;
            index.extend(entry.pending.iter().map(|s| (entry.org_key, entry.key, *s)));
        }
        index.sort_unstable();
        write_index(&tx, &index)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'flushed_seq'",
            [self.last_seq],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        self.flushed_seq = self.last_seq;
        self.cycle = None;
        self.shared.overlay.clear();
        self.cache.all_flushed();
        self.pending_events = 0;
        Ok(())
    }

    fn run_group(&mut self, jobs: Vec<Job>) {
        if self.broken {
            self.recover();
        }
        if self.broken {
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Unavailable(
                    "the store is recovering from a disk error; retry later".into(),
                )));
            }
            return;
        }
        let now = Timestamp::now();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let e = db(e);
            for job in jobs {
                let _ = job.reply.send(Err(copy_error(&e)));
            }
            return;
        }
        let mut group = Group::default();
        let mut replies = Vec::with_capacity(jobs.len());
        let mut results = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push(job.reply);
            let result = if group.poisoned {
                Err(StoreError::Unavailable("the group failed; retry".into()))
            } else {
                self.run_command(&mut group, job.command, now)
            };
            results.push(result);
        }
        let committed = if group.poisoned {
            Err(StoreError::Internal(
                "a write failed while applying its effects".into(),
            ))
        } else {
            self.flush_chunk(&mut group)
                .and_then(|()| self.conn.execute_batch("COMMIT").map_err(db))
        };
        match committed {
            Ok(()) => {
                for (org, key) in &group.new_orgs {
                    self.shared.orgs.insert(org, *key);
                }
                self.pending_events += group.appended;
                if group.integrations_changed {
                    self.reload_subscriptions();
                }
                metrics::counter!("assent_events_written_total").increment(group.appended as u64);
                self.publish(&group);
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
                self.finish_checkpoint();
            }
            Err(e) => {
                tracing::error!(error = %e, "a group of writes failed and was rolled back");
                let _ = self.conn.execute_batch("ROLLBACK");
                for reply in replies {
                    let _ = reply.send(Err(copy_error(&e)));
                }
                self.recover();
            }
        }
    }

    /// Writes a chunk of the current flush cycle in the group's own transaction. A cycle starts
    /// when enough events or users wait; it takes the users dirty at that moment, by key, a
    /// chunk per group, so that the flush work is spread over groups instead of stopping them,
    /// while each user is still written once for all the events it got in between. When the
    /// last chunk is written, every event up to the cycle's start is in its user's row.
    fn flush_chunk(&mut self, group: &mut Group) -> Result<(), StoreError> {
        if self.cycle.is_none()
            && (self.pending_events >= self.config.flush_events
                || self.cache.dirty_count() >= self.config.flush_users)
        {
            let mut keys = self.cache.dirty_keys();
            keys.reverse();
            self.cycle = Some(FlushCycle {
                upto: self.last_seq,
                size: keys.len(),
                keys,
            });
        }
        let Some(cycle) = &mut self.cycle else {
            return Ok(());
        };
        // Big cycles take big chunks, so that a cycle ends within a few groups and the dirty
        // users of a workload with many users cannot pile up faster than they are written.
        let chunk = self.config.flush_chunk_users.max(cycle.size / 8);
        let take = cycle.keys.len().min(chunk);
        let chunk = cycle.keys.split_off(cycle.keys.len() - take);
        let done = cycle.keys.is_empty().then_some(cycle.upto);
        let mut index = Vec::new();
        for key in chunk.into_iter().rev() {
            if !self.cache.is_dirty(key) {
                continue;
            }
            if let Some(entry) = self.cache.get_mut(key) {
                write_user_row(&self.conn, entry)?;
                index.extend(entry.pending.iter().map(|s| (entry.org_key, key, *s)));
                entry.pending.clear();
            }
            self.cache.mark_clean(key);
            group.touched.insert(key);
        }
        index.sort_unstable();
        write_index(&self.conn, &index)?;
        self.pending_events = self.pending_events.saturating_sub(index.len());
        self.cache.bound();
        if let Some(upto) = done {
            self.conn
                .prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'flushed_seq'")
                .and_then(|mut s| s.execute([upto]))
                .map_err(db)?;
            self.flushed_seq = self.flushed_seq.max(upto);
            self.cycle = None;
        }
        Ok(())
    }

    /// About once a second, completes a checkpoint between two transactions. The checkpointer
    /// thread copies the log while the writer works, but under constant writes its passes never
    /// end with the log fully copied, and only a complete checkpoint lets the log start over
    /// instead of growing. Done right after one of its passes, this one has little left to copy.
    fn finish_checkpoint(&mut self) {
        let passes = self
            .shared
            .checkpoints
            .load(std::sync::atomic::Ordering::Acquire);
        if passes == self.seen_checkpoints {
            return;
        }
        self.seen_checkpoints = passes;
        if self.last_checkpoint.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_checkpoint = std::time::Instant::now();
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "checkpoint failed; will retry");
        }
    }

    /// Tells readers what the group changed.
    fn publish(&self, group: &Group) {
        // Deletions first: a key freed in this group never comes back (the users table counts
        // keys up), but keep the order safe anyway.
        let mut changes: Vec<(i64, Option<Arc<Fresh>>)> =
            group.deleted.iter().map(|k| (*k, None)).collect();
        changes.extend(group.touched.iter().map(|key| {
            // A user no longer held (evicted after being written) has a current row.
            let fresh = self.cache.get(*key).and_then(|entry| {
                (!entry.pending.is_empty()).then(|| {
                    Arc::new(Fresh {
                        version: entry.record.version,
                        updated_at: entry.record.updated_at,
                        pending: entry.pending.clone(),
                    })
                })
            });
            (*key, fresh)
        }));
        self.shared.overlay.update(changes);
    }

    /// Rebuilds the writer's memory from disk after a failed group. Until it succeeds, writes
    /// are refused: memory that misses events must neither serve nor flush.
    fn recover(&mut self) {
        self.cache.clear();
        self.cycle = None;
        self.reload_subscriptions();
        match self.replay() {
            Ok(_) => self.broken = false,
            Err(e) => {
                self.broken = true;
                tracing::error!(error = %e, "rebuilding users from the event log failed; writes are refused until it succeeds");
            }
        }
    }

    fn reload_subscriptions(&mut self) {
        match outbox::subscriptions(&self.conn) {
            Ok(s) => self.subscriptions = s,
            Err(e) => tracing::error!(error = %e, "reading the integrations failed"),
        }
    }

    /// An integration of `org`, or "not found".
    fn integration(
        &self,
        cmd: &mut Cmd,
        org: &OrganizationId,
        id: &str,
    ) -> Result<(i64, outbox::IntegrationRecord), StoreError> {
        let not_found = || StoreError::not_found(format!("integration '{id}' not found"));
        let org_key = self.org_key(cmd, org)?;
        let rec = outbox::find(&self.conn, org, org_key, id)?.ok_or_else(not_found)?;
        Ok((org_key, rec))
    }

    /// The kinds of change to announce for `org_key` (none when the request says not to).
    fn announced(&self, org_key: i64, announce: bool) -> u8 {
        if announce {
            self.subscriptions.get(&org_key).copied().unwrap_or(0)
        } else {
            0
        }
    }

    /// Puts a change in the outbox if its kind is in `mask` (phase 2).
    fn announce(
        &self,
        mask: u8,
        org_key: i64,
        user_key: i64,
        change: impl FnOnce() -> Change,
        kind: ChangeKind,
    ) -> Result<(), StoreError> {
        if mask & kind.bit() == 0 {
            return Ok(());
        }
        self.outbox_changes.borrow_mut().push(outbox::NewChange {
            org_key,
            user_key,
            change: change(),
            origin: self.origin.clone(),
            reference: false,
        });
        Ok(())
    }

    fn run_command(
        &mut self,
        group: &mut Group,
        command: Command,
        now: Timestamp,
    ) -> Result<Reply, StoreError> {
        // A savepoint that cannot be taken, released or rolled back leaves the transaction in
        // a state memory does not know: the whole group fails.
        if let Err(e) = self.step("SAVEPOINT command") {
            group.poisoned = true;
            return Err(e);
        }
        let mut cmd = Cmd::default();
        let executed = self.execute(group, &mut cmd, command, now);
        let announced = std::mem::take(&mut *self.outbox_changes.borrow_mut());
        let executed = match executed {
            Ok(reply) if !announced.is_empty() => self
                .insert_announced(&announced, now)
                .map(|()| reply)
                .map_err(Fail::Poison),
            other => other,
        };
        match executed {
            Ok(reply) => {
                if let Err(e) = self.step("RELEASE command") {
                    group.poisoned = true;
                    return Err(e);
                }
                for (org_key, id, ouid) in cmd.forgotten {
                    self.cache.forget(org_key, &id, ouid.as_deref());
                }
                for (org_key, who) in cmd.learned {
                    self.cache.remember(org_key, who);
                }
                group.new_orgs.append(&mut cmd.new_orgs);
                Ok(reply)
            }
            Err(Fail::Refuse(e)) => {
                if let Err(rollback) = self
                    .step("ROLLBACK TO command")
                    .and_then(|()| self.step("RELEASE command"))
                {
                    group.poisoned = true;
                    return Err(rollback);
                }
                Err(e)
            }
            Err(Fail::Poison(e)) => {
                group.poisoned = true;
                Err(e)
            }
        }
    }

    /// Puts a command's announced changes in the outbox. Its events recorded the next row as
    /// the row of its references (see `append`): the references must all go there.
    fn insert_announced(
        &self,
        announced: &[outbox::NewChange],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let expected = outbox::next_row(&self.conn)?;
        let rows = outbox::insert_changes(&self.conn, announced, now)?;
        if announced.iter().any(|c| c.reference) && rows != [expected] {
            return Err(StoreError::Internal(format!(
                "changes kept as references went to outbox rows {rows:?}, not {expected}"
            )));
        }
        Ok(())
    }

    fn step(&self, sql: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(db)
    }

    fn execute(
        &mut self,
        group: &mut Group,
        cmd: &mut Cmd,
        command: Command,
        now: Timestamp,
    ) -> Result<Reply, Fail> {
        match command {
            Command::Append {
                org,
                events,
                announce,
                origin,
            } => {
                self.origin = origin;
                let appended = self.append(group, cmd.announcing(announce), &org, events, now);
                self.origin = None;
                appended.map(Reply::Events)
            }
            Command::PatchEvent {
                org,
                id,
                patch,
                announce,
            } => self
                .patch_event(group, cmd.announcing(announce), &org, &id, &patch, now)
                .map(|e| Reply::Event(Box::new(e))),
            Command::DeleteEvent { org, id, announce } => {
                let org_key = self.org_key(cmd, &org)?;
                let row = read::event_by_id(&self.conn, &org, org_key, &id)?
                    .ok_or_else(|| StoreError::not_found(format!("event '{id}' not found")))?;
                let mask = self.announced(org_key, announce);
                fatal(self.delete_events_of(group, &org, row.user_key, &[row.event], now, mask))?;
                Ok(Reply::Deleted(1))
            }
            Command::DeleteEvents {
                org,
                query,
                announce,
            } => {
                let org_key = self.org_key(cmd, &org)?;
                // A user that does not exist has no events to delete.
                let Some(found) = self.find(cmd, org_key, &query.user)? else {
                    return Ok(Reply::Deleted(0));
                };
                let entry = self.entry(&org, found.key)?.clone();
                let doomed: Vec<ConsentEvent> =
                    read::user_events(&self.conn, &org, entry.keys(), &entry.pending)?
                        .into_iter()
                        .filter(|r| query.selects(&r.event))
                        .map(|r| r.event)
                        .collect();
                if !doomed.is_empty() {
                    let mask = self.announced(org_key, announce);
                    fatal(self.delete_events_of(group, &org, found.key, &doomed, now, mask))?;
                }
                Ok(Reply::Deleted(doomed.len() as u64))
            }
            Command::CreateUser {
                org,
                user,
                announce,
            } => self
                .create_user(group, cmd.announcing(announce), &org, user, now)
                .map(|u| Reply::User(Box::new(u))),
            Command::PatchUser {
                org,
                user,
                patch,
                announce,
            } => self
                .patch_user(group, cmd.announcing(announce), &org, &user, patch, now)
                .map(|u| Reply::User(Box::new(u))),
            Command::DeleteUser {
                org,
                user,
                announce,
            } => self
                .delete_user(group, cmd.announcing(announce), &org, &user)
                .map(|u| Reply::User(Box::new(u))),
            Command::CreateIntegration(integration) => {
                let org_key = self.org_key(cmd, &integration.organization_id)?;
                let cursor = fatal(outbox::last_change(&self.conn))?;
                outbox::insert(&self.conn, org_key, &integration, cursor)?;
                group.integrations_changed = true;
                Ok(Reply::Integration(integration))
            }
            Command::PatchIntegration { org, id, patch } => {
                let (_, rec) = self.integration(cmd, &org, &id)?;
                let was_enabled = rec.integration.enabled;
                let mut integration = rec.integration;
                integration.apply(*patch, now).map_err(StoreError::from)?;
                // Enabled again: it hears of the changes made from now on.
                let cursor = if integration.enabled && !was_enabled {
                    Some(fatal(outbox::last_change(&self.conn))?)
                } else {
                    None
                };
                fatal(outbox::update(&self.conn, rec.key, &integration, cursor))?;
                group.integrations_changed = true;
                Ok(Reply::Integration(Box::new(integration)))
            }
            Command::DeleteIntegration { org, id } => {
                let (_, rec) = self.integration(cmd, &org, &id)?;
                fatal(outbox::delete(&self.conn, rec.key))?;
                group.integrations_changed = true;
                Ok(Reply::Done)
            }
            Command::RetryDelivery {
                org,
                integration_id,
                delivery_id,
            } => {
                let (_, rec) = self.integration(cmd, &org, &integration_id)?;
                let (seq, mut delivery) = outbox::find_delivery(&self.conn, &rec, &delivery_id)?
                    .ok_or_else(|| {
                        StoreError::not_found(format!("delivery '{delivery_id}' not found"))
                    })?;
                if delivery.status == DeliveryStatus::Delivered {
                    return Err(StoreError::conflict(format!(
                        "delivery '{delivery_id}' was delivered already"
                    ))
                    .into());
                }
                fatal(outbox::reschedule(&self.conn, &rec, seq, now))?;
                delivery.status = DeliveryStatus::Retrying;
                delivery.next_attempt_at = Some(now);
                delivery.updated_at = now;
                Ok(Reply::Delivery(Box::new(delivery)))
            }
            Command::ClaimDeliveries {
                integration,
                limit,
                lease,
            } => {
                let org = integration.organization_id.clone();
                let Ok((org_key, mut rec)) = self.integration(cmd, &org, &integration.id) else {
                    return Ok(Reply::Due(Vec::new()));
                };
                if !rec.integration.enabled {
                    return Ok(Reply::Due(Vec::new()));
                }
                rec.cursor = fatal(outbox::fan_in(&self.conn, &rec, org_key, limit.max(256)))?;
                let clock = Instant::now();
                self.in_flight.retain(|_, until| *until > clock);
                let key = rec.key;
                let in_flight = &self.in_flight;
                let due = outbox::due(&self.conn, &rec, now, limit, |seq| {
                    in_flight.contains_key(&(key, seq))
                })?;
                let until = clock + lease;
                Ok(Reply::Due(
                    due.into_iter()
                        .map(|(seq, d)| {
                            self.in_flight.insert((key, seq), until);
                            d
                        })
                        .collect(),
                ))
            }
            Command::RecordAttempts {
                integration,
                results,
            } => {
                let org = integration.organization_id.clone();
                let Ok((_, rec)) = self.integration(cmd, &org, &integration.id) else {
                    return Ok(Reply::Done);
                };
                let (gone, recorded) =
                    fatal(outbox::record_attempts(&self.conn, &rec, &results, now))?;
                if gone && rec.integration.enabled {
                    let mut disabled = rec.integration.clone();
                    disabled.enabled = false;
                    disabled.disabled_reason = Some("the destination answered 410 Gone".to_owned());
                    disabled.updated_at = now;
                    fatal(outbox::update(&self.conn, rec.key, &disabled, None))?;
                    group.integrations_changed = true;
                }
                // Released once recorded (the rows say what comes next).
                for seq in recorded {
                    self.in_flight.remove(&(rec.key, seq));
                }
                Ok(Reply::Done)
            }
            Command::PruneDeliveries { before } => {
                let n = fatal(outbox::prune(&self.conn, before))?;
                Ok(Reply::Deleted(n))
            }
            Command::Admin { org, op } => {
                let org_key = self.org_key(cmd, &org)?;
                Ok(Reply::Admin((op.0)(&self.conn, org_key)?))
            }
            Command::CreateApiKey(key) => {
                let org_key = self.org_key(cmd, &key.organization_id)?;
                self.conn
                    .execute(
                        "INSERT INTO api_keys (org_key, id, key, name, enabled, secret_hash, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![
                            org_key,
                            key.id,
                            key.key,
                            key.name,
                            key.enabled,
                            key.secret_hash,
                            key.created_at.millis(),
                            key.updated_at.millis()
                        ],
                    )
                    .map_err(db)?;
                Ok(Reply::ApiKey(key))
            }
        }
    }

    /// The key of `org`, creating the organization if it does not exist yet. Only keys of
    /// committed rows are shared with readers (after the group commits).
    fn org_key(&self, cmd: &mut Cmd, org: &OrganizationId) -> Result<i64, StoreError> {
        if let Some(key) = self.shared.orgs.get(org) {
            return Ok(key);
        }
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT org_key FROM organizations WHERE id = ?1")
            .and_then(|mut s| {
                rusqlite::OptionalExtension::optional(s.query_row([org.as_str()], |r| r.get(0)))
            })
            .map_err(db)?;
        let key = match found {
            Some(key) => key,
            None => {
                self.conn
                    .execute(
                        "INSERT INTO organizations (id, created_at) VALUES (?1, ?2)",
                        params![org.as_str(), Timestamp::now().millis()],
                    )
                    .map_err(db)?;
                self.conn.last_insert_rowid()
            }
        };
        cmd.new_orgs.push((org.clone(), key));
        Ok(key)
    }

    fn next_seq(&mut self, now: Timestamp) -> i64 {
        self.last_seq = next_seq(self.last_seq, now);
        self.last_seq
    }

    /// Finds a user by id or organization user id, from memory or from its row.
    fn find(
        &mut self,
        cmd: &Cmd,
        org_key: i64,
        user: &UserSelector,
    ) -> Result<Option<Identity>, StoreError> {
        // A user this command created or re-identified is read from its row: the remembered
        // identity predates the change.
        if let Some(who) = self.cache.find(org_key, user)
            && !cmd.unsettled.contains(&who.key)
        {
            return Ok(Some(who));
        }
        let found = read::find_user(&self.conn, org_key, user)?;
        // Only committed identities are remembered; the command's own wait for its success.
        if let Some(who) = &found
            && !cmd.unsettled.contains(&who.key)
        {
            self.cache.remember(org_key, who.clone());
        }
        Ok(found)
    }

    /// The working state of user `key`, read from its row if the writer does not hold it.
    fn entry(&mut self, org: &OrganizationId, key: i64) -> Result<&mut UserEntry, StoreError> {
        if self.cache.get(key).is_none() {
            let entry = read::user_row(&self.conn, org, key)?
                .ok_or_else(|| StoreError::Internal(format!("user row {key} is missing")))?;
            self.cache.insert(entry);
        }
        Ok(self.cache.get_mut(key).expect("inserted above"))
    }

    /// Records that a command changed user `key`: one more version.
    fn changed(&mut self, group: &mut Group, key: i64, now: Timestamp, bumped: &mut HashSet<i64>) {
        if bumped.insert(key)
            && let Some(entry) = self.cache.get_mut(key)
        {
            entry.record.version += 1;
            entry.record.updated_at = now;
        }
        group.touched.insert(key);
    }

    /// Writes a user's row and index entries now; its memory then matches its row.
    fn write_through(&mut self, group: &mut Group, key: i64) -> Result<(), StoreError> {
        let Some(entry) = self.cache.get_mut(key) else {
            return Ok(());
        };
        write_user_row(&self.conn, entry)?;
        let index: Vec<(i64, i64, i64)> = entry
            .pending
            .iter()
            .map(|s| (entry.org_key, entry.key, *s))
            .collect();
        write_index(&self.conn, &index)?;
        entry.pending.clear();
        self.pending_events = self.pending_events.saturating_sub(index.len());
        self.cache.mark_clean(key);
        group.touched.insert(key);
        Ok(())
    }

    /// Makes the users a command created, and the ids it attached, part of the writer's memory.
    fn adopt(&mut self, org: &OrganizationId, cmd: &mut Cmd) -> Result<(), StoreError> {
        for entry in cmd.created.drain(..) {
            self.cache.insert(entry);
        }
        for (key, ouid) in cmd.attached.drain(..) {
            self.entry(org, key)?.record.organization_user_id = Some(ouid);
        }
        Ok(())
    }

    fn append(
        &mut self,
        group: &mut Group,
        cmd: &mut Cmd,
        org: &OrganizationId,
        events: Vec<EventInput>,
        now: Timestamp,
    ) -> Result<Vec<ConsentEvent>, Fail> {
        enum Plan {
            Stored(ConsentEvent),
            New {
                key: i64,
                seq: i64,
                input: Box<EventInput>,
            },
        }
        // Phase 1: everything that can refuse the request.
        let org_key = self.org_key(cmd, org)?;
        let mut plans = Vec::with_capacity(events.len());
        for input in events {
            if let Some(id) = &input.id
                && let Some(stored) = read::event_by_id(&self.conn, org, org_key, id)?
            {
                if input.same_content(&stored.event) {
                    plans.push(Plan::Stored(stored.event));
                    continue;
                }
                return Err(Fail::Refuse(StoreError::conflict(format!(
                    "event '{id}' already exists with different content"
                ))));
            }
            let key = self.resolve_user(cmd, org, org_key, &input, now)?;
            let seq = self.next_seq(now);
            plans.push(Plan::New {
                key,
                seq,
                input: Box::new(input),
            });
        }
        // Still phase 1: the TCF strings asked for (`$generate_tcfcs=true`), each from the
        // status its user has once its event is folded. Users' states are read, not changed.
        let created: HashSet<i64> = cmd.created.iter().map(|e| e.key).collect();
        let (conn, cache) = (&self.conn, &self.cache);
        generate_for_events(
            plans.iter_mut().filter_map(|plan| match plan {
                Plan::New { key, seq, input } => {
                    let stamp = Stamp {
                        at: input.created_at.unwrap_or(now).millis(),
                        seq: *seq,
                    };
                    Some((*key, stamp, &mut **input))
                }
                Plan::Stored(_) => None,
            }),
            now,
            |key, regulation| -> Result<_, StoreError> {
                if created.contains(&key) {
                    return Ok(None);
                }
                let status = |state: &UserState| state.stamped_status(regulation).cloned();
                Ok(match cache.get(key) {
                    Some(entry) => status(&entry.record.state),
                    None => read::user_row(conn, org, key)?.and_then(|e| status(&e.record.state)),
                })
            },
        )?;

        // Phase 2: effects.
        let mask = self.announced(org_key, cmd.announce);
        // Changes are kept as references to the log, in the outbox row this command's
        // changes will take (see `render`); its events record it.
        let outbox_row = if mask != 0 {
            Some(fatal(outbox::next_row(&self.conn))?)
        } else {
            None
        };
        // Users as they were, for the announcements (None: created by this request).
        let mut before: Vec<(i64, Option<Before>)> = Vec::new();
        if mask & USER_CHANGES != 0 {
            let created: HashSet<i64> = cmd.created.iter().map(|e| e.key).collect();
            let attached: HashSet<i64> = cmd.attached.iter().map(|(k, _)| *k).collect();
            let mut shown_under: HashMap<i64, &Regulation> = HashMap::new();
            for plan in &plans {
                if let Plan::New { key, input, .. } = plan {
                    shown_under.insert(*key, &input.regulation);
                }
            }
            for plan in &plans {
                if let Plan::New { key, .. } = plan
                    && !before.iter().any(|(k, _)| k == key)
                {
                    let old = if created.contains(key) {
                        None
                    } else {
                        fatal(self.entry(org, *key))?;
                        let record = &self.cache.get(*key).expect("loaded above").record;
                        Some(Before {
                            version: record.version,
                            updated_at: record.updated_at,
                            shown: attached
                                .contains(key)
                                .then(|| user_json(record, shown_under[key])),
                        })
                    };
                    before.push((*key, old));
                }
            }
        }
        let mut bumped = HashSet::new();
        for key in cmd
            .created
            .iter()
            .map(|e| e.key)
            .chain(cmd.attached.iter().map(|(k, _)| *k))
            .collect::<Vec<_>>()
        {
            group.touched.insert(key);
            bumped.insert(key);
        }
        fatal(self.adopt(org, cmd))?;
        for key in &bumped {
            if let Some(entry) = self.cache.get_mut(*key) {
                entry.record.version += 1;
                entry.record.updated_at = now;
            }
        }
        let mut out = Vec::with_capacity(plans.len());
        let mut insert = fatal(
            self.conn
                .prepare_cached(
                    "INSERT INTO events (seq, org_key, user_key, id, created_at, updated_at, status, regulation, body, outbox_row)
                     VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8, ?9)",
                )
                .map_err(db),
        )?;
        let mut new_events = Vec::with_capacity(plans.len());
        for plan in plans {
            match plan {
                Plan::Stored(event) => out.push(Ok(event)),
                Plan::New { key, seq, input } => {
                    let id = input.id.clone().unwrap_or_else(EventId::generate);
                    let created_at = input.created_at.unwrap_or(now);
                    fatal(
                        insert
                            .execute(params![
                                seq,
                                org_key,
                                key,
                                StoredId::of(&id),
                                created_at.millis(),
                                status_code(input.status),
                                input.regulation.as_str(),
                                input.body_json,
                                outbox_row
                            ])
                            .map_err(db),
                    )?;
                    fatal(admin::reference_proofs(
                        &self.conn,
                        org_key,
                        key,
                        &input.body.proofs_id,
                    ))?;
                    out.push(Err(new_events.len()));
                    new_events.push((key, seq, id, created_at, input));
                }
            }
        }
        drop(insert);
        let mut made = Vec::with_capacity(new_events.len());
        let mut made_keys = Vec::with_capacity(new_events.len());
        for (key, seq, id, created_at, input) in new_events {
            let input = *input;
            let confirmed = input.status == EventStatus::Confirmed;
            let stamp = Stamp {
                at: created_at.millis(),
                seq,
            };
            let body = input.body;
            let entry = fatal(self.entry(org, key))?;
            if confirmed {
                entry.record.state.apply(&input.regulation, &body, stamp);
            }
            let user_id = entry.record.id.clone();
            entry.pending.push(seq);
            self.cache.mark_dirty(key);
            group.appended += 1;
            if confirmed {
                self.changed(group, key, now, &mut bumped);
            }
            group.touched.insert(key);
            made_keys.push(key);
            made.push(ConsentEvent {
                id,
                organization_id: org.clone(),
                user_id,
                created_at,
                updated_at: seq_time(seq),
                status: input.status,
                regulation: input.regulation,
                seq,
                body,
            });
        }
        if mask != 0 {
            fatal(self.announce_appended(mask, org_key, &made, &made_keys, before))?;
        }
        let mut made = made.into_iter().map(Some).collect::<Vec<_>>();
        Ok(out
            .into_iter()
            .map(|o| match o {
                Ok(stored) => stored,
                Err(i) => made[i].take().expect("each new event is answered once"),
            })
            .collect())
    }

    /// Announces appended events, and the change of each user they touched (phase 2): as
    /// references to the log, except the changes of users shown at once (`Before::shown`).
    fn announce_appended(
        &self,
        mask: u8,
        org_key: i64,
        made: &[ConsentEvent],
        keys: &[i64],
        before: Vec<(i64, Option<Before>)>,
    ) -> Result<(), StoreError> {
        for (event, key) in made.iter().zip(keys) {
            self.announce_reference(
                mask,
                org_key,
                *key,
                ChangeKind::EventCreated,
                Reference::Event { seq: event.seq },
            );
        }
        for (key, old) in before {
            let Some(entry) = self.cache.get(key) else {
                continue;
            };
            if old
                .as_ref()
                .is_some_and(|b| b.version == entry.record.version)
            {
                continue;
            }
            let mine = || (0..made.len()).filter(|&i| keys[i] == key);
            let (Some(first), Some(last)) = (mine().next(), mine().next_back()) else {
                continue;
            };
            let kind = if old.is_some() {
                ChangeKind::UserUpdated
            } else {
                ChangeKind::UserCreated
            };
            match old {
                Some(Before {
                    shown: Some(old_json),
                    ..
                }) => self.announce(
                    mask,
                    org_key,
                    key,
                    || {
                        let source = &made[last];
                        let new = user_json(&entry.record, &source.regulation);
                        Change::user_changed_from_json(
                            Some(&old_json),
                            &new,
                            Some(&event_json(source)),
                        )
                    },
                    kind,
                )?,
                old => self.announce_reference(
                    mask,
                    org_key,
                    key,
                    kind,
                    Reference::User {
                        old: old.map(|b| (b.version, b.updated_at.millis())),
                        new: (entry.record.version, entry.record.updated_at.millis()),
                        first: made[first].seq,
                        last: made[last].seq,
                    },
                ),
            }
        }
        Ok(())
    }

    /// Puts a change in the outbox as a reference to the log, if its kind is in `mask`
    /// (phase 2).
    fn announce_reference(
        &self,
        mask: u8,
        org_key: i64,
        user_key: i64,
        kind: ChangeKind,
        reference: Reference,
    ) {
        if mask & kind.bit() == 0 {
            return;
        }
        self.outbox_changes.borrow_mut().push(outbox::NewChange {
            org_key,
            user_key,
            change: Change {
                kind,
                body: reference.encode(),
            },
            origin: self.origin.clone(),
            reference: true,
        });
    }

    /// Writes out the bodies of user `key`'s changes still kept as references to its log,
    /// before its history is rewritten or it is edited outside events (see `render`). A row
    /// that cannot be written out (never expected) is logged and left: its deliveries then
    /// fail to render and end parked, and the operation goes on.
    fn write_out_references(&mut self, org: &OrganizationId, key: i64) -> Result<(), StoreError> {
        if !outbox::any(&self.conn)? {
            return Ok(());
        }
        let entry = self.entry(org, key)?;
        let (org_key, pending) = (entry.org_key, entry.pending.clone());
        let mut states = States::default();
        for (row, seqs) in outbox::reference_rows(&self.conn, org_key, key, &pending)? {
            match outbox::write_out(&self.conn, org, row, key, &|_| pending.clone(), &mut states) {
                Ok(()) => outbox::forget_references(&self.conn, &seqs)?,
                Err(e) => {
                    tracing::error!(row, user = key, error = %e, "cannot write out the changes of an outbox row");
                }
            }
        }
        Ok(())
    }

    /// Announces that user `key` changed from `old` because of `source` (phase 2).
    fn announce_user(
        &self,
        mask: u8,
        org_key: i64,
        key: i64,
        old: Option<UserRecord>,
        source: Option<&ConsentEvent>,
    ) -> Result<(), StoreError> {
        let (Some(old), Some(entry)) = (old, self.cache.get(key)) else {
            return Ok(());
        };
        self.announce(
            mask,
            org_key,
            key,
            || Change::user_changed(Some(&old), &entry.record, source),
            ChangeKind::UserUpdated,
        )
    }

    /// The user as it is, when its changes are announced.
    fn old_user(
        &mut self,
        mask: u8,
        org: &OrganizationId,
        key: i64,
    ) -> Result<Option<UserRecord>, StoreError> {
        if mask & USER_CHANGES == 0 {
            return Ok(None);
        }
        Ok(Some(self.entry(org, key)?.record.clone()))
    }

    /// Finds or creates the user of an event (phase 1: may refuse).
    fn resolve_user(
        &mut self,
        cmd: &mut Cmd,
        org: &OrganizationId,
        org_key: i64,
        input: &EventInput,
        now: Timestamp,
    ) -> Result<i64, StoreError> {
        let user = &input.body.user;
        let by_id = match &user.id {
            Some(id) => self.find(cmd, org_key, &UserSelector::Id(id.clone()))?,
            None => None,
        };
        let by_ouid = match &user.organization_user_id {
            Some(o) => self.find(cmd, org_key, &UserSelector::OrganizationUserId(o.clone()))?,
            None => None,
        };
        match resolve(user, by_id, by_ouid)? {
            Resolution::Existing {
                key,
                attach_organization_user_id,
            } => {
                if let Some(o) = attach_organization_user_id {
                    // This edits the user outside its events: its changes still kept as
                    // references to its log are written out first.
                    self.write_out_references(org, key)?;
                    self.conn
                        .execute(
                            "UPDATE users SET organization_user_id = ?1 WHERE user_key = ?2",
                            params![o, key],
                        )
                        .map_err(db)?;
                    let id: String = self
                        .conn
                        .query_row("SELECT id FROM users WHERE user_key = ?1", [key], |r| {
                            r.get(0)
                        })
                        .map_err(db)?;
                    cmd.unsettled.insert(key);
                    cmd.learned.push((
                        org_key,
                        Identity {
                            key,
                            id,
                            organization_user_id: Some(o.clone()),
                        },
                    ));
                    cmd.attached.push((key, o));
                }
                Ok(key)
            }
            Resolution::Create {
                id,
                organization_user_id,
            } => {
                let key = insert_user(
                    &self.conn,
                    org_key,
                    &id,
                    organization_user_id.as_deref(),
                    now,
                )?;
                cmd.unsettled.insert(key);
                cmd.learned.push((
                    org_key,
                    Identity {
                        key,
                        id: id.clone(),
                        organization_user_id: organization_user_id.clone(),
                    },
                ));
                cmd.created.push(UserEntry {
                    key,
                    org_key,
                    record: UserRecord {
                        id,
                        organization_id: org.clone(),
                        organization_user_id,
                        version: 0,
                        created_at: now,
                        updated_at: now,
                        state: UserState::default(),
                    },
                    pending: Vec::new(),
                });
                Ok(key)
            }
        }
    }

    fn patch_event(
        &mut self,
        group: &mut Group,
        cmd: &mut Cmd,
        org: &OrganizationId,
        id: &EventId,
        patch: &EventPatch,
        now: Timestamp,
    ) -> Result<ConsentEvent, Fail> {
        let org_key = self.org_key(cmd, org)?;
        let row = read::event_by_id(&self.conn, org, org_key, id)?
            .ok_or_else(|| StoreError::not_found(format!("event '{id}' not found")))?;
        let mask = self.announced(org_key, cmd.announce);
        fatal(self.write_out_references(org, row.user_key))?;
        let old_user = fatal(self.old_user(mask, org, row.user_key))?;
        let mut event = row.event.clone();
        patch.apply_to(&mut event, now);
        fatal(self.patch_event_row(&event, now))?;
        fatal(admin::reference_proofs(
            &self.conn,
            org_key,
            row.user_key,
            &event.body.proofs_id,
        ))?;
        fatal(self.recompute(group, org, row.user_key, now))?;
        fatal(self.announce(
            mask,
            org_key,
            row.user_key,
            || Change::event_updated(&row.event, &event),
            ChangeKind::EventUpdated,
        ))?;
        fatal(self.announce_user(mask, org_key, row.user_key, old_user, Some(&event)))?;
        Ok(event)
    }

    fn patch_event_row(&self, event: &ConsentEvent, now: Timestamp) -> Result<(), StoreError> {
        let body =
            serde_json::to_vec(&*event.body).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.conn
            .execute(
                "UPDATE events SET status = ?1, updated_at = ?2, body = ?3 WHERE seq = ?4",
                params![status_code(event.status), now.millis(), body, event.seq],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Deletes some events of one user, then refolds the user (phase 2).
    fn delete_events_of(
        &mut self,
        group: &mut Group,
        org: &OrganizationId,
        user_key: i64,
        doomed: &[ConsentEvent],
        now: Timestamp,
        mask: u8,
    ) -> Result<(), StoreError> {
        let seqs: Vec<i64> = doomed.iter().map(|e| e.seq).collect();
        let seqs = &seqs[..];
        self.write_out_references(org, user_key)?;
        let old_user = self.old_user(mask, org, user_key)?;
        let org_key = self.entry(org, user_key)?.org_key;
        {
            let mut event = self
                .conn
                .prepare_cached("DELETE FROM events WHERE seq = ?1")
                .map_err(db)?;
            let mut index = self
                .conn
                .prepare_cached(
                    "DELETE FROM user_events WHERE org_key = ?1 AND user_key = ?2 AND seq = ?3",
                )
                .map_err(db)?;
            for seq in seqs {
                event.execute([seq]).map_err(db)?;
                index.execute(params![org_key, user_key, seq]).map_err(db)?;
            }
        }
        let entry = self.entry(org, user_key)?;
        let before = entry.pending.len();
        entry.pending.retain(|s| !seqs.contains(s));
        let removed = before - entry.pending.len();
        self.pending_events = self.pending_events.saturating_sub(removed);
        self.recompute(group, org, user_key, now)?;
        for event in doomed {
            self.announce(
                mask,
                org_key,
                user_key,
                || Change::event_deleted(event),
                ChangeKind::EventDeleted,
            )?;
        }
        self.announce_user(mask, org_key, user_key, old_user, doomed.last())
    }

    /// Refolds a user from the events that remain and writes it through (phase 2).
    fn recompute(
        &mut self,
        group: &mut Group,
        org: &OrganizationId,
        key: i64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let entry = self.entry(org, key)?;
        let (id, org_key, pending) = (
            entry.record.id.clone(),
            entry.org_key,
            entry.pending.clone(),
        );
        let keys = read::UserKeys {
            org_key,
            key,
            id: &id,
        };
        let events = read::user_events(&self.conn, org, keys, &pending)?;
        let confirmed = events
            .iter()
            .filter(|r| r.event.status == EventStatus::Confirmed)
            .map(|r| (&r.event.regulation, &*r.event.body, r.event.stamp()));
        let entry = self.entry(org, key)?;
        entry.record.state = entry.record.state.refold(confirmed);
        self.changed(group, key, now, &mut HashSet::new());
        self.write_through(group, key)
    }

    fn create_user(
        &mut self,
        group: &mut Group,
        cmd: &mut Cmd,
        org: &OrganizationId,
        user: NewUser,
        now: Timestamp,
    ) -> Result<UserRecord, Fail> {
        let org_key = self.org_key(cmd, org)?;
        let id = user
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        if self
            .find(cmd, org_key, &UserSelector::Id(id.clone()))?
            .is_some()
        {
            return Err(StoreError::conflict(format!("user '{id}' already exists")).into());
        }
        if let Some(o) = &user.organization_user_id
            && let Some(other) =
                self.find(cmd, org_key, &UserSelector::OrganizationUserId(o.clone()))?
        {
            return Err(StoreError::conflict(format!(
                "organization_user_id '{o}' already belongs to user '{}'",
                other.id
            ))
            .into());
        }
        let key = insert_user(
            &self.conn,
            org_key,
            &id,
            user.organization_user_id.as_deref(),
            now,
        )?;
        cmd.learned.push((
            org_key,
            Identity {
                key,
                id: id.clone(),
                organization_user_id: user.organization_user_id.clone(),
            },
        ));
        let stamp = Stamp {
            at: now.millis(),
            seq: self.next_seq(now),
        };
        let mut state = UserState::default();
        let tcfcs = match &user.tcf {
            Some(tcf) => Some((tcf, tcf.generate(&state, now).map_err(StoreError::from)?)),
            None => None,
        };

        // Phase 2.
        state.edit_profile(
            user.metadata.as_ref(),
            user.country.as_deref(),
            user.last_seen_country.as_deref(),
            stamp,
        );
        if let Some((tcf, tcfcs)) = tcfcs {
            state.edit_tcfcs(&tcf.regulation, tcfcs, stamp);
        }
        self.cache.insert(UserEntry {
            key,
            org_key,
            record: UserRecord {
                id,
                organization_id: org.clone(),
                organization_user_id: user.organization_user_id,
                version: 0,
                created_at: now,
                updated_at: now,
                state,
            },
            pending: Vec::new(),
        });
        self.changed(group, key, now, &mut HashSet::new());
        fatal(self.write_through(group, key))?;
        let record = self.cache.get(key).expect("inserted above").record.clone();
        fatal(self.announce(
            self.announced(org_key, cmd.announce),
            org_key,
            key,
            || Change::user_changed(None, &record, None),
            ChangeKind::UserCreated,
        ))?;
        Ok(record)
    }

    fn patch_user(
        &mut self,
        group: &mut Group,
        cmd: &mut Cmd,
        org: &OrganizationId,
        user: &UserSelector,
        patch: UserPatch,
        now: Timestamp,
    ) -> Result<UserRecord, Fail> {
        let org_key = self.org_key(cmd, org)?;
        let found = self
            .find(cmd, org_key, user)?
            .ok_or_else(|| user.not_found())
            .map_err(StoreError::from)?;
        let current = self.entry(org, found.key)?.record.version;
        if let Some(v) = patch.version
            && v != current
        {
            return Err(StoreError::conflict(format!(
                "user '{}' is at version {current}, not {v}; read it again and retry",
                found.id
            ))
            .into());
        }
        let new_ouid = patch
            .organization_user_id
            .clone()
            .filter(|o| found.organization_user_id.as_ref() != Some(o));
        // The edit (and the new id, whose row is updated below) changes the user outside its
        // events: its changes still kept as references are written out first.
        self.write_out_references(org, found.key)?;
        if let Some(o) = &new_ouid {
            if let Some(other) =
                self.find(cmd, org_key, &UserSelector::OrganizationUserId(o.clone()))?
            {
                return Err(StoreError::conflict(format!(
                    "organization_user_id '{o}' already belongs to user '{}'",
                    other.id
                ))
                .into());
            }
            self.conn
                .execute(
                    "UPDATE users SET organization_user_id = ?1 WHERE user_key = ?2",
                    params![o, found.key],
                )
                .map_err(db)?;
            cmd.forgotten.push((
                org_key,
                found.id.clone(),
                found.organization_user_id.clone(),
            ));
            cmd.learned.push((
                org_key,
                Identity {
                    key: found.key,
                    id: found.id.clone(),
                    organization_user_id: Some(o.clone()),
                },
            ));
        }
        let stamp = Stamp {
            at: now.millis(),
            seq: self.next_seq(now),
        };
        // A profile edit leaves the status as it is: the string encodes the current one.
        let tcfcs = match &patch.tcf {
            Some(tcf) => {
                let state = &self.entry(org, found.key)?.record.state;
                Some((tcf, tcf.generate(state, now).map_err(StoreError::from)?))
            }
            None => None,
        };

        // Phase 2.
        let mask = self.announced(org_key, cmd.announce);
        let old_user = fatal(self.old_user(mask, org, found.key))?;
        let entry = fatal(self.entry(org, found.key))?;
        if let Some(o) = new_ouid {
            entry.record.organization_user_id = Some(o);
        }
        entry.record.state.edit_profile(
            patch.metadata.as_ref(),
            patch.country.as_deref(),
            patch.last_seen_country.as_deref(),
            stamp,
        );
        if let Some((tcf, tcfcs)) = tcfcs {
            entry.record.state.edit_tcfcs(&tcf.regulation, tcfcs, stamp);
        }
        self.changed(group, found.key, now, &mut HashSet::new());
        fatal(self.write_through(group, found.key))?;
        fatal(self.announce_user(mask, org_key, found.key, old_user, None))?;
        Ok(self.cache.get(found.key).expect("held").record.clone())
    }

    fn delete_user(
        &mut self,
        group: &mut Group,
        cmd: &mut Cmd,
        org: &OrganizationId,
        user: &UserSelector,
    ) -> Result<UserRecord, Fail> {
        let org_key = self.org_key(cmd, org)?;
        let found = self
            .find(cmd, org_key, user)?
            .ok_or_else(|| user.not_found())
            .map_err(StoreError::from)?;
        let entry = self.entry(org, found.key)?.clone();
        let record = entry.record.clone();
        let seqs: Vec<i64> = read::user_events(&self.conn, org, entry.keys(), &entry.pending)?
            .iter()
            .map(|r| r.event.seq)
            .collect();
        cmd.forgotten.push((
            org_key,
            record.id.clone(),
            record.organization_user_id.clone(),
        ));

        // Phase 2.
        fatal(self.write_out_references(org, found.key))?;
        fatal(admin::erase_proofs_of(&self.conn, org_key, found.key))?;
        fatal(self.erase_rows(found.key, &seqs))?;
        if let Some(entry) = self.cache.get(found.key) {
            self.pending_events = self.pending_events.saturating_sub(entry.pending.len());
        }
        self.cache.remove(found.key);
        group.touched.remove(&found.key);
        group.deleted.push(found.key);
        fatal(self.announce(
            self.announced(org_key, cmd.announce),
            org_key,
            found.key,
            || Change::user_deleted(&record),
            ChangeKind::UserDeleted,
        ))?;
        Ok(record)
    }

    fn erase_rows(&self, user_key: i64, seqs: &[i64]) -> Result<(), StoreError> {
        let mut event = self
            .conn
            .prepare_cached("DELETE FROM events WHERE seq = ?1")
            .map_err(db)?;
        for seq in seqs {
            event.execute([seq]).map_err(db)?;
        }
        self.conn
            .execute("DELETE FROM user_events WHERE user_key = ?1", [user_key])
            .map_err(db)?;
        self.conn
            .execute("DELETE FROM users WHERE user_key = ?1", [user_key])
            .map_err(db)?;
        Ok(())
    }
}

fn flushed_seq(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'flushed_seq'",
        [],
        |r| r.get(0),
    )
    .map_err(db)
}

fn insert_user(
    conn: &Connection,
    org_key: i64,
    id: &str,
    organization_user_id: Option<&str>,
    now: Timestamp,
) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO users (org_key, id, organization_user_id, version, created_at, updated_at, state)
         VALUES (?1, ?2, ?3, 0, ?4, ?4, X'7B7D')",
    )
    .and_then(|mut s| s.execute(params![org_key, id, organization_user_id, now.millis()]))
    .map_err(db)?;
    Ok(conn.last_insert_rowid())
}

/// Inserts index entries `(org_key, user_key, seq)`, sorted for locality.
fn write_index(conn: &Connection, entries: &[(i64, i64, i64)]) -> Result<(), StoreError> {
    let mut insert = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO user_events (org_key, user_key, seq) VALUES (?1, ?2, ?3)",
        )
        .map_err(db)?;
    for (org_key, user_key, seq) in entries {
        insert
            .execute(params![org_key, user_key, seq])
            .map_err(db)?;
    }
    Ok(())
}

fn write_user_row(conn: &Connection, entry: &UserEntry) -> Result<(), StoreError> {
    let state =
        serde_json::to_vec(&entry.record.state).map_err(|e| StoreError::Internal(e.to_string()))?;
    let r = &entry.record;
    conn.prepare_cached(
        "UPDATE users SET organization_user_id = ?1, version = ?2, updated_at = ?3, state = ?4
         WHERE user_key = ?5",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.organization_user_id,
            r.version,
            r.updated_at.millis(),
            state,
            entry.key
        ])
    })
    .map_err(db)?;
    Ok(())
}

fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Internal(other.to_string()),
    }
}
