//! State shared by the writer thread and the readers: organization keys and the overlay of
//! users changed since the last flush.

use assent_model::OrganizationId;
use assent_model::user::UserRecord;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A user as the store holds it in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct UserEntry {
    /// The row key of the user.
    pub key: i64,
    /// The row key of its organization.
    pub org_key: i64,
    /// The user and everything derived about it.
    pub record: UserRecord,
    /// Events appended since the last flush, not yet in `user_events`.
    pub pending_seqs: Vec<i64>,
}

/// Users whose row on disk is older than what has been committed to the event log. Readers
/// look here first; the writer publishes after each commit and empties it after each flush.
#[derive(Debug, Default)]
pub struct Overlay {
    users: RwLock<HashMap<i64, Arc<UserEntry>>>,
}

impl Overlay {
    /// The in-memory user for `key`, if its row on disk is stale.
    pub fn get(&self, key: i64) -> Option<Arc<UserEntry>> {
        self.users
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
    }

    /// Publishes users changed by a commit, and forgets deleted ones.
    pub fn publish(&self, changed: impl IntoIterator<Item = Arc<UserEntry>>, deleted: &[i64]) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        for entry in changed {
            users.insert(entry.key, entry);
        }
        for key in deleted {
            users.remove(key);
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

    /// Forgets every key (after a failed commit that may have created organizations).
    pub fn clear(&self) {
        self.keys.write().unwrap_or_else(|e| e.into_inner()).clear();
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
    /// Users changed since the last flush.
    pub overlay: Overlay,
    /// Organization keys.
    pub orgs: OrgKeys,
}
