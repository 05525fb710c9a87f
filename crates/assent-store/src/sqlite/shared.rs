//! State shared by the writer thread and the readers: organization keys, and the overlay that
//! tells readers what the rows on disk do not say yet.

use assent_model::user::UserRecord;
use assent_model::{EventBody, OrganizationId, Regulation, Stamp, Timestamp};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// An event appended since the last flush: in the log on disk, not yet folded into its user's
/// row nor listed in `user_events`.
#[derive(Debug)]
pub struct PendingEvent {
    /// Arrival number (the event's key in the log).
    pub seq: i64,
    /// Confirmed events change the status; pending-approval ones are only listed.
    pub confirmed: bool,
    /// The regulation of the event.
    pub regulation: Regulation,
    /// The event's place in the fold order.
    pub stamp: Stamp,
    /// The content.
    pub body: Arc<EventBody>,
}

/// A user as the store holds it in memory.
#[derive(Debug, Clone)]
pub struct UserEntry {
    /// The row key of the user.
    pub key: i64,
    /// The row key of its organization.
    pub org_key: i64,
    /// The user and everything derived about it.
    pub record: UserRecord,
    /// Events appended since the last flush.
    pub pending: Vec<Arc<PendingEvent>>,
}

impl UserEntry {
    /// Arrival numbers of the events appended since the last flush.
    pub fn pending_seqs(&self) -> Vec<i64> {
        self.pending.iter().map(|p| p.seq).collect()
    }

    /// Brings a user read from its row up to date with what the overlay knows. Folding an event
    /// the row already contains changes nothing, so a row newer than the overlay is safe too.
    pub fn freshen(&mut self, fresh: &Fresh) {
        for p in fresh.pending.iter().filter(|p| p.confirmed) {
            self.record.state.apply(&p.regulation, &p.body, p.stamp);
        }
        self.record.version = self.record.version.max(fresh.version);
        self.record.updated_at = self.record.updated_at.max(fresh.updated_at);
        self.pending = fresh.pending.clone();
    }
}

/// What readers must add to a user's row: the events appended since the last flush, and the
/// user's current version.
#[derive(Debug)]
pub struct Fresh {
    /// The user's version.
    pub version: i64,
    /// When the user last changed.
    pub updated_at: Timestamp,
    /// Events appended since the last flush, in arrival order.
    pub pending: Vec<Arc<PendingEvent>>,
}

/// Users whose row on disk is older than the event log. The writer updates it after each
/// commit and empties it after each flush; readers look here before reading a row.
#[derive(Debug, Default)]
pub struct Overlay {
    users: RwLock<HashMap<i64, Arc<Fresh>>>,
}

impl Overlay {
    /// What the row of user `key` does not say yet, if anything.
    pub fn get(&self, key: i64) -> Option<Arc<Fresh>> {
        self.users
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
    }

    /// Records, for each user, what its row does not say (`None`: its row is current).
    pub fn update(&self, changes: Vec<(i64, Option<Arc<Fresh>>)>) {
        if changes.is_empty() {
            return;
        }
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        for (key, fresh) in changes {
            match fresh {
                Some(fresh) => users.insert(key, fresh),
                None => users.remove(&key),
            };
        }
    }

    /// Forgets everything, once a flush has written it to disk.
    pub fn clear(&self) {
        self.users
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Organization ids and their row keys. Organizations are never deleted, so a cached key
/// stays right.
#[derive(Debug, Default)]
pub struct OrgKeys {
    keys: RwLock<HashMap<OrganizationId, i64>>,
}

impl OrgKeys {
    /// The cached key of `org`.
    pub fn get(&self, org: &OrganizationId) -> Option<i64> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(org)
            .copied()
    }

    /// Remembers the key of `org`.
    pub fn insert(&self, org: &OrganizationId, key: i64) {
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(org.clone(), key);
    }
}

/// Everything the writer and the readers share.
#[derive(Debug, Default)]
pub struct Shared {
    /// What the user rows do not say yet.
    pub overlay: Overlay,
    /// Organization keys.
    pub orgs: OrgKeys,
    /// Counts the checkpointer's passes, so the writer can finish a checkpoint right after one.
    pub checkpoints: std::sync::atomic::AtomicU64,
}
