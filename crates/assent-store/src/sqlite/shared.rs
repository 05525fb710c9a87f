//! State shared by the writer thread and the readers: organization keys, and the overlay that
//! tells readers what the rows on disk do not say yet.

use assent_model::user::UserRecord;
use assent_model::{OrganizationId, Timestamp};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A user as the store holds it in memory.
#[derive(Debug, Clone)]
pub struct UserEntry {
    /// The row key of the user.
    pub key: i64,
    /// The row key of its organization.
    pub org_key: i64,
    /// The user and everything derived about it.
    pub record: UserRecord,
    /// Arrival numbers of the events appended since the user's row was last written: in the
    /// log on disk, not yet folded into the row nor listed in `user_events`.
    pub pending: Vec<i64>,
}

/// What readers must add to a user's row: the events appended since the row was written (they
/// read them from the log and fold them in), and the user's current version.
#[derive(Debug)]
pub struct Fresh {
    /// The user's version.
    pub version: i64,
    /// When the user last changed.
    pub updated_at: Timestamp,
    /// Arrival numbers of the events appended since the row was written.
    pub pending: Vec<i64>,
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
