//! The writer's memory of users: the working state of recently used users (so that a write
//! need not read and decode a user's row each time), which of them are newer than their row
//! on disk ("dirty"), and which user an id or organization user id names.

use super::shared::UserEntry;
use assent_model::user::{Found, UserSelector};
use std::collections::{HashMap, HashSet};

/// Most users held in memory beyond the dirty ones (about 2 KiB each).
const MAX_CLEAN_USERS: usize = 5_000;
/// Most remembered identities (id or organization user id to user; about 250 bytes each).
const MAX_IDENTITIES: usize = 20_000;

/// Who a user is, as the writer resolves event references.
pub type Identity = Found<i64>;

/// The identities of one organization's users.
#[derive(Default)]
struct Identities {
    by_id: HashMap<String, Identity>,
    by_organization_user_id: HashMap<String, Identity>,
}

/// Users known to the writer.
#[derive(Default)]
pub struct UserCache {
    entries: HashMap<i64, UserEntry>,
    dirty: HashSet<i64>,
    identities: HashMap<i64, Identities>,
    identity_count: usize,
}

impl UserCache {
    /// The working state of user `key`, if held.
    pub fn get_mut(&mut self, key: i64) -> Option<&mut UserEntry> {
        self.entries.get_mut(&key)
    }

    /// The working state of user `key`, if held.
    pub fn get(&self, key: i64) -> Option<&UserEntry> {
        self.entries.get(&key)
    }

    /// Holds the working state of a user.
    pub fn insert(&mut self, entry: UserEntry) {
        self.entries.insert(entry.key, entry);
    }

    /// Marks a user as newer than its row.
    pub fn mark_dirty(&mut self, key: i64) {
        self.dirty.insert(key);
    }

    /// True when a user is newer than its row.
    pub fn is_dirty(&self, key: i64) -> bool {
        self.dirty.contains(&key)
    }

    /// The dirty users, by key.
    pub fn dirty_keys(&self) -> Vec<i64> {
        let mut keys: Vec<i64> = self.dirty.iter().copied().collect();
        keys.sort_unstable();
        keys
    }

    /// Marks a user as written to its row.
    pub fn mark_clean(&mut self, key: i64) {
        self.dirty.remove(&key);
    }

    /// The user a selector names in organization `org_key`, if remembered.
    pub fn find(&self, org_key: i64, user: &UserSelector) -> Option<Identity> {
        let ids = self.identities.get(&org_key)?;
        match user {
            UserSelector::Id(id) => ids.by_id.get(id.as_str()),
            UserSelector::OrganizationUserId(o) => ids.by_organization_user_id.get(o.as_str()),
        }
        .cloned()
    }

    /// Remembers who a committed user is.
    pub fn remember(&mut self, org_key: i64, who: Identity) {
        if self.identity_count >= MAX_IDENTITIES {
            self.identities.clear();
            self.identity_count = 0;
        }
        let ids = self.identities.entry(org_key).or_default();
        if let Some(o) = &who.organization_user_id {
            ids.by_organization_user_id.insert(o.clone(), who.clone());
        }
        if ids.by_id.insert(who.id.clone(), who).is_none() {
            self.identity_count += 1;
        }
    }

    /// Forgets the identities of a user (deleted, or about to change).
    pub fn forget(&mut self, org_key: i64, id: &str, organization_user_id: Option<&str>) {
        if let Some(ids) = self.identities.get_mut(&org_key) {
            if ids.by_id.remove(id).is_some() {
                self.identity_count -= 1;
            }
            if let Some(o) = organization_user_id {
                ids.by_organization_user_id.remove(o);
            }
        }
    }

    /// Forgets a deleted user.
    pub fn remove(&mut self, key: i64) {
        self.entries.remove(&key);
        self.dirty.remove(&key);
    }

    /// How many users are newer than their rows.
    pub fn dirty_count(&self) -> usize {
        self.dirty.len()
    }

    /// The users newer than their rows.
    pub fn dirty(&self) -> impl Iterator<Item = &UserEntry> {
        self.dirty.iter().filter_map(|k| self.entries.get(k))
    }

    /// Marks every user as written to disk (after a flush), forgetting users beyond the bound.
    pub fn all_flushed(&mut self) {
        for key in self.dirty.drain() {
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.pending.clear();
            }
        }
        self.bound();
    }

    /// Forgets clean users once there are too many: they are read again from their rows.
    pub fn bound(&mut self) {
        if self.entries.len() > self.dirty.len() + MAX_CLEAN_USERS {
            let dirty = &self.dirty;
            self.entries.retain(|key, _| dirty.contains(key));
        }
    }

    /// Forgets everything (after a failed commit; the writer then replays from disk).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.dirty.clear();
        self.identities.clear();
        self.identity_count = 0;
    }
}
