//! The users this node has met, by id and by organization user id, so that an append need
//! not look them up again.
//!
//! Looking up the users an append names was a ninth of the database's time under steady
//! ingest, one index probe per event, for users that mostly already exist. A user's key, id
//! and organization user id stay as they are until the user is erased or its organization
//! user id changes; both move the organization's *users epoch* (the table `user_epochs`),
//! by triggers on `users`, in their transaction. An append reads the epoch in its own
//! statement after it took the erasure lock, so an erasure either committed before (and the
//! epoch it reads is newer) or starts after the append. A change of organization user id
//! takes no such lock: an append that read the epoch just before one committed still uses the
//! old name, as an append that looked the user up at that moment would. What is known here
//! is trusted only under the epoch it was learned at; a newer epoch forgets the
//! organization's users.
//!
//! The one change that does not move the epoch is an organization user id attached to a user
//! that had none. A user known here without one may have gained one elsewhere; the append
//! then tries to attach its own, finds the user taken (`... IS NULL` updates no row) and runs
//! again, and every second attempt of an append looks its users up in the database.

use assent_model::user::Found;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most users known, all organizations together; past it all are forgotten (about 100 bytes
/// each, twice when they have an organization user id).
const CAPACITY: usize = 500_000;

/// The users of one organization known at one epoch.
#[derive(Default)]
struct Known {
    epoch: i64,
    by_id: HashMap<String, Found<i64>>,
    by_organization_user_id: HashMap<String, Found<i64>>,
}

/// The users known, per organization, and how many in all.
#[derive(Default)]
struct All {
    orgs: HashMap<String, Known>,
    users: usize,
}

/// Users known by this node, per organization (cheap to clone: one shared map).
#[derive(Clone, Default)]
pub struct KnownUsers(Arc<Mutex<All>>);

/// What [`KnownUsers::find`] knew, and the names it did not.
#[derive(Default)]
pub struct Lookup<'a> {
    /// Known users by id.
    pub by_id: Vec<Found<i64>>,
    /// Known users by organization user id.
    pub by_organization_user_id: Vec<Found<i64>>,
    /// Ids to look up.
    pub unknown_ids: Vec<&'a str>,
    /// Organization user ids to look up.
    pub unknown_organization_user_ids: Vec<&'a str>,
}

impl KnownUsers {
    /// The users named by `ids` and `ouids` known at `epoch` in `org`.
    pub fn find<'a>(
        &self,
        org: &str,
        epoch: i64,
        ids: &[&'a str],
        ouids: &[&'a str],
    ) -> Lookup<'a> {
        let mut lookup = Lookup::default();
        let all = self.0.lock().expect("known users lock");
        let known = all.orgs.get(org).filter(|k| k.epoch == epoch);
        for &id in ids {
            match known.and_then(|k| k.by_id.get(id)) {
                Some(found) => lookup.by_id.push(found.clone()),
                None => lookup.unknown_ids.push(id),
            }
        }
        for &o in ouids {
            match known.and_then(|k| k.by_organization_user_id.get(o)) {
                Some(found) => lookup.by_organization_user_id.push(found.clone()),
                None => lookup.unknown_organization_user_ids.push(o),
            }
        }
        lookup
    }

    /// Learns users that exist in `org` at `epoch` (call once their transaction committed).
    pub fn learn<'f>(
        &self,
        org: &str,
        epoch: i64,
        users: impl IntoIterator<Item = &'f Found<i64>>,
    ) {
        let mut guard = self.0.lock().expect("known users lock");
        let all = &mut *guard;
        if all.users >= CAPACITY {
            *all = All::default();
        }
        let known = all.orgs.entry(org.to_owned()).or_default();
        if known.epoch > epoch {
            return;
        }
        if known.epoch < epoch {
            all.users -= known.by_id.len();
            *known = Known {
                epoch,
                ..Known::default()
            };
        }
        for found in users {
            if known
                .by_id
                .insert(found.id.clone(), found.clone())
                .is_none()
            {
                all.users += 1;
            }
            if let Some(o) = &found.organization_user_id {
                known
                    .by_organization_user_id
                    .insert(o.clone(), found.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(key: i64, id: &str, ouid: Option<&str>) -> Found<i64> {
        Found {
            key,
            id: id.into(),
            organization_user_id: ouid.map(Into::into),
        }
    }

    #[test]
    fn users_are_known_only_in_their_organization_and_at_their_epoch() {
        let known = KnownUsers::default();
        known.learn("org", 3, &[user(1, "a", Some("x")), user(2, "b", None)]);
        let found = known.find("org", 3, &["a", "c"], &["x", "y"]);
        assert_eq!(found.by_id, vec![user(1, "a", Some("x"))]);
        assert_eq!(found.unknown_ids, vec!["c"]);
        assert_eq!(found.by_organization_user_id, vec![user(1, "a", Some("x"))]);
        assert_eq!(found.unknown_organization_user_ids, vec!["y"]);
        assert!(known.find("other", 3, &["a"], &[]).by_id.is_empty());
        // An erasure or an edit moved the epoch: nothing known before counts.
        assert_eq!(known.find("org", 4, &["a"], &[]).unknown_ids, vec!["a"]);
        // What an append that read an older epoch learns is not kept.
        known.learn("org", 4, &[user(3, "d", None)]);
        known.learn("org", 3, &[user(1, "a", Some("x"))]);
        assert_eq!(
            known.find("org", 4, &["a", "d"], &[]).unknown_ids,
            vec!["a"]
        );
    }

    #[test]
    fn past_the_capacity_everything_is_forgotten() {
        let known = KnownUsers::default();
        let many: Vec<Found<i64>> = (0..CAPACITY as i64)
            .map(|k| user(k, &format!("u{k}"), None))
            .collect();
        known.learn("org", 1, &many);
        assert!(known.find("org", 1, &["u0"], &[]).unknown_ids.is_empty());
        known.learn("other", 1, &[user(-1, "x", None)]);
        assert_eq!(known.find("org", 1, &["u0"], &[]).unknown_ids, vec!["u0"]);
        assert!(known.find("other", 1, &["x"], &[]).unknown_ids.is_empty());
    }
}
