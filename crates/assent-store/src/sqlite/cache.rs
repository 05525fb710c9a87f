//! The writer's memory of users: the latest committed state of recently used users (so that a
//! write need not read and decode a user's row each time), which of them are newer than their
//! row on disk ("dirty"), and which user an id or organization user id names.

use super::shared::UserEntry;
use assent_model::user::{Found, UserSelector};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Most clean users kept after a flush.
const MAX_CLEAN_USERS: usize = 20_000;
/// Most remembered identities (id or organization user id to user).
const MAX_IDENTITIES: usize = 200_000;

/// Who a user is, as the writer resolves event references.
pub type Identity = Found<i64>;

/// Users known to the writer.
#[derive(Default)]
pub struct UserCache {
    entries: HashMap<i64, Arc<UserEntry>>,
    dirty: HashSet<i64>,
    by_id: HashMap<(i64, String), Identity>,
    by_organization_user_id: HashMap<(i64, String), Identity>,
}

impl UserCache {
    /// The committed state of user `key`, if remembered.
    pub fn get(&self, key: i64) -> Option<&Arc<UserEntry>> {
        self.entries.get(&key)
    }

    /// The user a selector names in organization `org_key`, if remembered.
    pub fn find(&self, org_key: i64, user: &UserSelector) -> Option<Identity> {
        match user {
            UserSelector::Id(id) => self.by_id.get(&(org_key, id.clone())),
            UserSelector::OrganizationUserId(o) => {
                self.by_organization_user_id.get(&(org_key, o.clone()))
            }
        }
        .cloned()
    }

    /// Remembers who a committed user is.
    pub fn remember(&mut self, org_key: i64, who: Identity) {
        if self.by_id.len() >= MAX_IDENTITIES {
            self.by_id.clear();
            self.by_organization_user_id.clear();
        }
        if let Some(o) = &who.organization_user_id {
            self.by_organization_user_id
                .insert((org_key, o.clone()), who.clone());
        }
        self.by_id.insert((org_key, who.id.clone()), who);
    }

    /// Forgets the identities of a user (deleted, or about to change).
    pub fn forget(&mut self, org_key: i64, id: &str, organization_user_id: Option<&str>) {
        self.by_id.remove(&(org_key, id.to_owned()));
        if let Some(o) = organization_user_id {
            self.by_organization_user_id
                .remove(&(org_key, o.to_owned()));
        }
    }

    /// Stores the committed state of a user; dirty when its row on disk is older.
    pub fn store(&mut self, entry: Arc<UserEntry>) {
        if entry.pending_seqs.is_empty() {
            self.dirty.remove(&entry.key);
        } else {
            self.dirty.insert(entry.key);
        }
        self.entries.insert(entry.key, entry);
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
    pub fn dirty(&self) -> impl Iterator<Item = &Arc<UserEntry>> {
        self.dirty.iter().filter_map(|k| self.entries.get(k))
    }

    /// Marks every user as written to disk (after a flush), forgetting users beyond the bound.
    pub fn all_flushed(&mut self) {
        for key in self.dirty.drain() {
            if let Some(entry) = self.entries.get_mut(&key) {
                Arc::make_mut(entry).pending_seqs.clear();
            }
        }
        if self.entries.len() > MAX_CLEAN_USERS {
            self.entries.clear();
        }
    }

    /// Forgets everything (after a failed commit).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.dirty.clear();
        self.by_id.clear();
        self.by_organization_user_id.clear();
    }
}
