//! The single writer thread.
//!
//! Write requests wait in a queue; the writer takes every request waiting (up to a bound) and
//! runs them in one transaction, each inside its own savepoint so that a request that fails
//! leaves no trace while the others commit (group commit: one fsync for the whole group).
//! Replies are sent only after the commit, so an acknowledged write is on disk.
//!
//! Appending an event writes the event row only. The event's user is updated in memory,
//! published to the [`Overlay`](super::shared::Overlay) for readers, and written to its row,
//! with the user's index entries, by the next flush, which handles many groups at once. A crash
//! before the flush loses nothing: on open, [`Writer::replay`] folds the events after
//! `meta.flushed_seq` again (merging is idempotent). Changes that cannot be replayed from the
//! log (a deletion, a patch, a direct user edit) write their user's row at once.

use super::cache::{Identity, UserCache};
use super::codec::{StoredId, next_seq, seq_time, status_code};
use super::read::{self, db};
use super::shared::{Shared, UserEntry};
use crate::{ApiKey, StoreError};
use assent_model::event::EventPatch;
use assent_model::query::EventsQuery;
use assent_model::user::{NewUser, Resolution, UserPatch, UserRecord, UserSelector, resolve};
use assent_model::{
    ConsentEvent, EventId, EventInput, EventStatus, OrganizationId, Regulation, Stamp, Timestamp,
    UserState,
};
use rusqlite::{Connection, params};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

/// A write request.
#[derive(Debug)]
pub enum Command {
    /// Append events (one request: all or nothing).
    Append {
        /// Organization.
        org: OrganizationId,
        /// The events, validated.
        events: Vec<EventInput>,
    },
    /// Change an event.
    PatchEvent {
        /// Organization.
        org: OrganizationId,
        /// The event.
        id: EventId,
        /// The change.
        patch: EventPatch,
    },
    /// Delete an event.
    DeleteEvent {
        /// Organization.
        org: OrganizationId,
        /// The event.
        id: EventId,
    },
    /// Delete the events of a user that match a query.
    DeleteEvents {
        /// Organization.
        org: OrganizationId,
        /// The user and the filter.
        query: EventsQuery,
    },
    /// Create a user.
    CreateUser {
        /// Organization.
        org: OrganizationId,
        /// The user.
        user: NewUser,
    },
    /// Change a user's profile.
    PatchUser {
        /// Organization.
        org: OrganizationId,
        /// The user.
        user: UserSelector,
        /// The change.
        patch: UserPatch,
    },
    /// Erase a user and its events.
    DeleteUser {
        /// Organization.
        org: OrganizationId,
        /// The user.
        user: UserSelector,
    },
    /// Store an API key.
    CreateApiKey(ApiKey),
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
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_group_events: 10_000,
            flush_events: 50_000,
            flush_users: 20_000,
            idle_flush: Duration::from_millis(20),
        }
    }
}

/// Changes made by earlier commands of the group being committed.
#[derive(Default)]
struct Group {
    users: HashMap<i64, UserEntry>,
    deleted: Vec<i64>,
    appended: usize,
}

/// Changes made by the command being run; dropped if it fails.
#[derive(Default)]
struct Cmd {
    users: HashMap<i64, UserEntry>,
    changed: HashSet<i64>,
    write_through: HashSet<i64>,
    deleted: Vec<i64>,
    appended: usize,
    /// Identities learned or changed, remembered once the command succeeds.
    learned: Vec<(i64, Identity)>,
    /// Identities that stop being true once the command succeeds.
    forgotten: Vec<(i64, String, Option<String>)>,
}

impl Cmd {
    fn entry(&mut self, key: i64) -> &mut UserEntry {
        self.users.get_mut(&key).expect("user loaded before use")
    }
}

/// The writer: owns the write connection and the unflushed users.
pub struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    config: WriterConfig,
    last_seq: i64,
    cache: UserCache,
    pending_events: usize,
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
        let flushed: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'flushed_seq'",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        Ok(Writer {
            conn,
            shared,
            config,
            last_seq: max_seq.unwrap_or(0).max(flushed),
            cache: UserCache::default(),
            pending_events: 0,
        })
    }

    /// Folds the events appended after the last flush into their users again and flushes;
    /// returns how many events were replayed.
    pub fn replay(&mut self) -> Result<usize, StoreError> {
        let flushed: i64 = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'flushed_seq'",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        let mut users: HashMap<i64, UserEntry> = HashMap::new();
        let mut count = 0;
        {
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
                let entry = match users.entry(user_key) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(read::user_row(&self.conn, &org, user_key)?.ok_or_else(|| {
                            StoreError::Internal(format!(
                                "event {seq} names missing user {user_key}"
                            ))
                        })?)
                    }
                };
                entry.pending_seqs.push(seq);
                if row.get::<_, i64>(3).map_err(db)? == 0 {
                    let regulation = Regulation::parse(&row.get::<_, String>(4).map_err(db)?)
                        .unwrap_or_default();
                    let body = serde_json::from_slice(
                        row.get_ref(5).map_err(db)?.as_blob().map_err(db_from)?,
                    )
                    .map_err(|e| StoreError::Internal(format!("event {seq}: {e}")))?;
                    let stamp = Stamp {
                        at: row.get(2).map_err(db)?,
                        seq,
                    };
                    entry.record.state.apply(&regulation, &body, stamp);
                    // Versions only need to grow: count one per replayed event.
                    entry.record.version += 1;
                    entry.record.updated_at = seq_time(seq);
                }
                count += 1;
            }
        }
        self.pending_events = count;
        for entry in users.into_values() {
            self.cache.store(Arc::new(entry));
        }
        self.flush()?;
        Ok(count)
    }

    /// Serves the queue until every sender is gone, then flushes.
    pub fn run(mut self, jobs: Receiver<Job>) {
        loop {
            let first = if self.pending_events > 0 || self.cache.dirty_count() > 0 {
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
            if self.pending_events >= self.config.flush_events
                || self.cache.dirty_count() >= self.config.flush_users
            {
                self.flush_logged();
            }
        }
        self.flush_logged();
    }

    fn flush_logged(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "flushing users failed; will retry");
        }
    }

    /// Writes every unflushed user and index entry in one transaction.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.cache.dirty_count() == 0 && self.pending_events == 0 {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let mut index: Vec<(i64, i64, i64)> = Vec::with_capacity(self.pending_events);
        for entry in self.cache.dirty() {
            write_user_row(&tx, entry)?;
            index.extend(
                entry
                    .pending_seqs
                    .iter()
                    .map(|s| (entry.org_key, entry.key, *s)),
            );
        }
        index.sort_unstable();
        write_index(&tx, &index)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'flushed_seq'",
            [self.last_seq],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        // Readers fall back to the rows, now current; then the cache drops its copies of the
        // pending lists without cloning, since the overlay no longer shares them.
        self.shared.overlay.clear();
        self.cache.all_flushed();
        self.pending_events = 0;
        Ok(())
    }

    fn run_group(&mut self, jobs: Vec<Job>) {
        let now = Timestamp::now();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let e = db(e);
            for job in jobs {
                let _ = job.reply.send(Err(copy_error(&e)));
            }
            return;
        }
        let mut group = Group::default();
        let mut results = Vec::with_capacity(jobs.len());
        for job in &jobs {
            results.push(self.run_command(&mut group, &job.command, now));
        }
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => {
                let mut published = Vec::with_capacity(group.users.len());
                for entry in group.users.into_values() {
                    let entry = Arc::new(entry);
                    self.cache.store(entry.clone());
                    published.push(entry);
                }
                for key in &group.deleted {
                    self.cache.remove(*key);
                }
                self.pending_events += group.appended;
                self.shared.overlay.publish(published, &group.deleted);
                metrics::counter!("assent_events_written_total").increment(group.appended as u64);
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                let e = db(e);
                tracing::error!(error = %e, "commit failed; the whole group is refused");
                let _ = self.conn.execute_batch("ROLLBACK");
                self.shared.orgs.clear();
                self.cache.clear();
                for job in jobs {
                    let _ = job.reply.send(Err(copy_error(&e)));
                }
            }
        }
    }

    fn run_command(
        &mut self,
        group: &mut Group,
        command: &Command,
        now: Timestamp,
    ) -> Result<Reply, StoreError> {
        self.conn.execute_batch("SAVEPOINT command").map_err(db)?;
        let mut cmd = Cmd::default();
        let result = self
            .execute(group, &mut cmd, command, now)
            .and_then(|reply| self.finish(group, cmd, now).map(|()| reply));
        let end = if result.is_ok() {
            "RELEASE command"
        } else {
            "ROLLBACK TO command; RELEASE command"
        };
        self.conn.execute_batch(end).map_err(db)?;
        result
    }

    /// Makes a successful command's changes part of the group.
    fn finish(
        &mut self,
        group: &mut Group,
        mut cmd: Cmd,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        for key in &cmd.changed {
            if let Some(entry) = cmd.users.get_mut(key) {
                entry.record.version += 1;
                entry.record.updated_at = now;
            }
        }
        for key in &cmd.write_through {
            if let Some(entry) = cmd.users.get_mut(key) {
                write_user_row(&self.conn, entry)?;
                let index: Vec<(i64, i64, i64)> = entry
                    .pending_seqs
                    .iter()
                    .map(|s| (entry.org_key, entry.key, *s))
                    .collect();
                write_index(&self.conn, &index)?;
                self.pending_events = self.pending_events.saturating_sub(index.len());
                entry.pending_seqs.clear();
            }
        }
        for key in cmd.deleted {
            cmd.users.remove(&key);
            group.users.remove(&key);
            group.deleted.push(key);
        }
        for (org_key, id, ouid) in cmd.forgotten {
            self.cache.forget(org_key, &id, ouid.as_deref());
        }
        for (org_key, who) in cmd.learned {
            self.cache.remember(org_key, who);
        }
        group.users.extend(cmd.users);
        group.appended += cmd.appended;
        Ok(())
    }

    /// Finds a user by id or organization user id, from memory or from its row.
    fn find(
        &mut self,
        cmd: &Cmd,
        org_key: i64,
        user: &UserSelector,
    ) -> Result<Option<Identity>, StoreError> {
        if let Some(who) = self.cache.find(org_key, user) {
            return Ok(Some(who));
        }
        let found = read::find_user(&self.conn, org_key, user)?;
        // A user this command touched may not be committed yet: remember it only at the end.
        if let Some(who) = &found
            && !cmd.users.contains_key(&who.key)
        {
            self.cache.remember(org_key, who.clone());
        }
        Ok(found)
    }

    fn execute(
        &mut self,
        group: &Group,
        cmd: &mut Cmd,
        command: &Command,
        now: Timestamp,
    ) -> Result<Reply, StoreError> {
        match command {
            Command::Append { org, events } => {
                self.append(group, cmd, org, events, now).map(Reply::Events)
            }
            Command::PatchEvent { org, id, patch } => self
                .patch_event(group, cmd, org, id, patch, now)
                .map(|e| Reply::Event(Box::new(e))),
            Command::DeleteEvent { org, id } => {
                let org_key = self.org_key(org)?;
                let row = read::event_by_id(&self.conn, org, org_key, id)?
                    .ok_or_else(|| StoreError::not_found(format!("event '{id}' not found")))?;
                self.load(group, cmd, org, row.user_key)?;
                self.delete_event_rows(cmd, org_key, row.user_key, &[row.event.seq])?;
                self.recompute(cmd, org, row.user_key)?;
                Ok(Reply::Deleted(1))
            }
            Command::DeleteEvents { org, query } => {
                let org_key = self.org_key(org)?;
                // A user that does not exist has no events to delete.
                let Some(found) = self.find(cmd, org_key, &query.user)? else {
                    return Ok(Reply::Deleted(0));
                };
                self.load(group, cmd, org, found.key)?;
                let entry = cmd.entry(found.key).clone();
                let doomed: Vec<i64> =
                    read::user_events(&self.conn, org, &entry, &entry.pending_seqs)?
                        .into_iter()
                        .filter(|r| query.selects(&r.event))
                        .map(|r| r.event.seq)
                        .collect();
                self.delete_event_rows(cmd, org_key, found.key, &doomed)?;
                if !doomed.is_empty() {
                    self.recompute(cmd, org, found.key)?;
                }
                Ok(Reply::Deleted(doomed.len() as u64))
            }
            Command::CreateUser { org, user } => self
                .create_user(cmd, org, user, now)
                .map(|u| Reply::User(Box::new(u))),
            Command::PatchUser { org, user, patch } => self
                .patch_user(group, cmd, org, user, patch, now)
                .map(|u| Reply::User(Box::new(u))),
            Command::DeleteUser { org, user } => {
                let org_key = self.org_key(org)?;
                let found = self
                    .find(cmd, org_key, user)?
                    .ok_or_else(|| user.not_found())?;
                self.load(group, cmd, org, found.key)?;
                let entry = cmd.entry(found.key).clone();
                cmd.forgotten.push((
                    org_key,
                    entry.record.id.clone(),
                    entry.record.organization_user_id.clone(),
                ));
                let events = read::user_events(&self.conn, org, &entry, &entry.pending_seqs)?;
                let seqs: Vec<i64> = events.iter().map(|r| r.event.seq).collect();
                self.delete_event_rows(cmd, org_key, found.key, &seqs)?;
                self.conn
                    .execute("DELETE FROM users WHERE user_key = ?1", [found.key])
                    .map_err(db)?;
                cmd.deleted.push(found.key);
                Ok(Reply::User(Box::new(entry.record)))
            }
            Command::CreateApiKey(key) => {
                let org_key = self.org_key(&key.organization_id)?;
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
                Ok(Reply::ApiKey(key.clone()))
            }
        }
    }

    /// The key of `org`, creating the organization if it does not exist yet.
    fn org_key(&self, org: &OrganizationId) -> Result<i64, StoreError> {
        if let Some(key) = read::org_key(&self.conn, &self.shared, org)? {
            return Ok(key);
        }
        self.conn
            .execute(
                "INSERT INTO organizations (id, created_at) VALUES (?1, ?2)",
                params![org.as_str(), Timestamp::now().millis()],
            )
            .map_err(db)?;
        let key = self.conn.last_insert_rowid();
        self.shared.orgs.insert(org, key);
        Ok(key)
    }

    fn next_seq(&mut self, now: Timestamp) -> i64 {
        self.last_seq = next_seq(self.last_seq, now);
        self.last_seq
    }

    /// Makes sure the command holds its own copy of user `key`.
    fn load(
        &self,
        group: &Group,
        cmd: &mut Cmd,
        org: &OrganizationId,
        key: i64,
    ) -> Result<(), StoreError> {
        if cmd.users.contains_key(&key) {
            return Ok(());
        }
        let entry = match group.users.get(&key) {
            Some(entry) => entry.clone(),
            None => match self.cache.get(key) {
                Some(entry) => (**entry).clone(),
                None => read::user_row(&self.conn, org, key)?
                    .ok_or_else(|| StoreError::Internal(format!("user row {key} is missing")))?,
            },
        };
        cmd.users.insert(key, entry);
        Ok(())
    }

    fn append(
        &mut self,
        group: &Group,
        cmd: &mut Cmd,
        org: &OrganizationId,
        events: &[EventInput],
        now: Timestamp,
    ) -> Result<Vec<ConsentEvent>, StoreError> {
        let org_key = self.org_key(org)?;
        let mut out = Vec::with_capacity(events.len());
        for input in events {
            if let Some(id) = &input.id
                && let Some(stored) = read::event_by_id(&self.conn, org, org_key, id)?
            {
                if input.same_content(&stored.event) {
                    out.push(stored.event);
                    continue;
                }
                return Err(StoreError::conflict(format!(
                    "event '{id}' already exists with different content"
                )));
            }
            let key = self.resolve_user(group, cmd, org, org_key, input, now)?;
            let seq = self.next_seq(now);
            let id = input.id.clone().unwrap_or_else(EventId::generate);
            let created_at = input.created_at.unwrap_or(now);
            let body =
                serde_json::to_vec(&input.body).map_err(|e| StoreError::Internal(e.to_string()))?;
            self.conn
                .prepare_cached(
                    "INSERT INTO events (seq, org_key, user_key, id, created_at, updated_at, status, regulation, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        seq,
                        org_key,
                        key,
                        StoredId::of(&id),
                        created_at.millis(),
                        status_code(input.status),
                        input.regulation.as_str(),
                        body
                    ])
                })
                .map_err(db)?;
            cmd.appended += 1;
            let entry = cmd.entry(key);
            entry.pending_seqs.push(seq);
            if input.status == EventStatus::Confirmed {
                let stamp = Stamp {
                    at: created_at.millis(),
                    seq,
                };
                entry
                    .record
                    .state
                    .apply(&input.regulation, &input.body, stamp);
                cmd.changed.insert(key);
            }
            out.push(ConsentEvent {
                id,
                organization_id: org.clone(),
                user_id: cmd.entry(key).record.id.clone(),
                created_at,
                updated_at: seq_time(seq),
                status: input.status,
                regulation: input.regulation.clone(),
                seq,
                body: input.body.clone(),
            });
        }
        Ok(out)
    }

    /// Finds or creates the user of an event and loads it into the command.
    fn resolve_user(
        &mut self,
        group: &Group,
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
                self.load(group, cmd, org, key)?;
                if let Some(o) = attach_organization_user_id {
                    self.conn
                        .execute(
                            "UPDATE users SET organization_user_id = ?1 WHERE user_key = ?2",
                            params![o, key],
                        )
                        .map_err(db)?;
                    let record = &mut cmd.entry(key).record;
                    record.organization_user_id = Some(o.clone());
                    let who = Identity {
                        key,
                        id: record.id.clone(),
                        organization_user_id: Some(o),
                    };
                    cmd.learned.push((org_key, who));
                    cmd.changed.insert(key);
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
                cmd.users.insert(
                    key,
                    UserEntry {
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
                        pending_seqs: Vec::new(),
                    },
                );
                cmd.changed.insert(key);
                Ok(key)
            }
        }
    }

    fn patch_event(
        &mut self,
        group: &Group,
        cmd: &mut Cmd,
        org: &OrganizationId,
        id: &EventId,
        patch: &EventPatch,
        now: Timestamp,
    ) -> Result<ConsentEvent, StoreError> {
        let org_key = self.org_key(org)?;
        let row = read::event_by_id(&self.conn, org, org_key, id)?
            .ok_or_else(|| StoreError::not_found(format!("event '{id}' not found")))?;
        let mut event = row.event;
        patch.apply_to(&mut event, now);
        let body =
            serde_json::to_vec(&event.body).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.conn
            .execute(
                "UPDATE events SET status = ?1, updated_at = ?2, body = ?3 WHERE seq = ?4",
                params![status_code(event.status), now.millis(), body, event.seq],
            )
            .map_err(db)?;
        self.load(group, cmd, org, row.user_key)?;
        self.recompute(cmd, org, row.user_key)?;
        Ok(event)
    }

    /// Deletes event rows of one user and forgets them as pending.
    fn delete_event_rows(
        &self,
        cmd: &mut Cmd,
        org_key: i64,
        user_key: i64,
        seqs: &[i64],
    ) -> Result<(), StoreError> {
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
        cmd.entry(user_key)
            .pending_seqs
            .retain(|s| !seqs.contains(s));
        Ok(())
    }

    /// Refolds a loaded user from the events that remain, and writes its row at once (a
    /// recompute cannot be replayed from the log).
    fn recompute(&self, cmd: &mut Cmd, org: &OrganizationId, key: i64) -> Result<(), StoreError> {
        let entry = cmd.entry(key).clone();
        let events = read::user_events(&self.conn, org, &entry, &entry.pending_seqs)?;
        let confirmed = events
            .iter()
            .filter(|r| r.event.status == EventStatus::Confirmed)
            .map(|r| (&r.event.regulation, &r.event.body, r.event.stamp()));
        let state = entry.record.state.refold(confirmed);
        cmd.entry(key).record.state = state;
        cmd.changed.insert(key);
        cmd.write_through.insert(key);
        Ok(())
    }

    fn create_user(
        &mut self,
        cmd: &mut Cmd,
        org: &OrganizationId,
        user: &NewUser,
        now: Timestamp,
    ) -> Result<UserRecord, StoreError> {
        let org_key = self.org_key(org)?;
        let id = user
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        if self
            .find(cmd, org_key, &UserSelector::Id(id.clone()))?
            .is_some()
        {
            return Err(StoreError::conflict(format!("user '{id}' already exists")));
        }
        if let Some(o) = &user.organization_user_id
            && let Some(other) =
                self.find(cmd, org_key, &UserSelector::OrganizationUserId(o.clone()))?
        {
            return Err(StoreError::conflict(format!(
                "organization_user_id '{o}' already belongs to user '{}'",
                other.id
            )));
        }
        let key = insert_user(
            &self.conn,
            org_key,
            &id,
            user.organization_user_id.as_deref(),
            now,
        )?;
        let mut state = UserState::default();
        let stamp = Stamp {
            at: now.millis(),
            seq: self.next_seq(now),
        };
        state.edit_profile(
            user.metadata.as_ref(),
            user.country.as_deref(),
            user.last_seen_country.as_deref(),
            stamp,
        );
        cmd.users.insert(
            key,
            UserEntry {
                key,
                org_key,
                record: UserRecord {
                    id,
                    organization_id: org.clone(),
                    organization_user_id: user.organization_user_id.clone(),
                    version: 0,
                    created_at: now,
                    updated_at: now,
                    state,
                },
                pending_seqs: Vec::new(),
            },
        );
        cmd.changed.insert(key);
        cmd.write_through.insert(key);
        let mut record = cmd.entry(key).record.clone();
        record.version += 1;
        Ok(record)
    }

    fn patch_user(
        &mut self,
        group: &Group,
        cmd: &mut Cmd,
        org: &OrganizationId,
        user: &UserSelector,
        patch: &UserPatch,
        now: Timestamp,
    ) -> Result<UserRecord, StoreError> {
        let org_key = self.org_key(org)?;
        let found = self
            .find(cmd, org_key, user)?
            .ok_or_else(|| user.not_found())?;
        self.load(group, cmd, org, found.key)?;
        let current = cmd.entry(found.key).record.version;
        if let Some(v) = patch.version
            && v != current
        {
            return Err(StoreError::conflict(format!(
                "user '{}' is at version {current}, not {v}; read it again and retry",
                found.id
            )));
        }
        if let Some(o) = &patch.organization_user_id
            && found.organization_user_id.as_deref() != Some(o)
        {
            if let Some(other) =
                self.find(cmd, org_key, &UserSelector::OrganizationUserId(o.clone()))?
            {
                return Err(StoreError::conflict(format!(
                    "organization_user_id '{o}' already belongs to user '{}'",
                    other.id
                )));
            }
            self.conn
                .execute(
                    "UPDATE users SET organization_user_id = ?1 WHERE user_key = ?2",
                    params![o, found.key],
                )
                .map_err(db)?;
            cmd.entry(found.key).record.organization_user_id = Some(o.clone());
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
        cmd.entry(found.key).record.state.edit_profile(
            patch.metadata.as_ref(),
            patch.country.as_deref(),
            patch.last_seen_country.as_deref(),
            stamp,
        );
        cmd.changed.insert(found.key);
        cmd.write_through.insert(found.key);
        let mut record = cmd.entry(found.key).record.clone();
        record.version += 1;
        record.updated_at = now;
        Ok(record)
    }
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

fn db_from(e: rusqlite::types::FromSqlError) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Internal(other.to_string()),
    }
}
