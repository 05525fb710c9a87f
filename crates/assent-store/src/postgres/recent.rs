//! The events this node appended and has not folded yet, kept in memory so that its folder
//! folds them without reading them back from the database.
//!
//! Reading each pending event back (an index probe, its body fetched and parsed again) was a
//! fifth of the database's time under steady ingest. The database stays the truth: the folder
//! folds exactly the pending rows it finds, takes from here only the events it finds here
//! (same organization and user, since arrival numbers are shared by all nodes), and reads the
//! others (appended by another node, or before a restart, or pushed out of here) as before.

use assent_model::{ConsentEvent, EventBody, Regulation, Stamp, Timestamp};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Most events kept; the oldest go first (the folder then reads them from the database).
/// The folder takes events about a second after they arrive (`fold::RIPE_AFTER`), so this
/// holds them up to about 80,000 events/s per node.
const CAPACITY: usize = 100_000;

/// What folding one event into its user needs: what the folder would read from `events`.
#[derive(Debug, Clone)]
pub struct FoldInput {
    org_id: String,
    user_key: i64,
    regulation: Regulation,
    body: Arc<EventBody>,
    stamp: Stamp,
    updated_at: Timestamp,
}

impl FoldInput {
    /// The regulation the event applies under.
    pub fn regulation(&self) -> &Regulation {
        &self.regulation
    }

    /// The event's content.
    pub fn body(&self) -> &EventBody {
        &self.body
    }

    /// The event's stamp (its time and arrival number).
    pub fn stamp(&self) -> Stamp {
        self.stamp
    }

    /// When the event was last written (the `updated_at` column).
    pub fn updated_at(&self) -> Timestamp {
        self.updated_at
    }
}

#[derive(Default)]
struct Inner {
    by_seq: HashMap<i64, FoldInput>,
    /// Arrival numbers in the order they came, some already forgotten.
    order: VecDeque<i64>,
}

/// This node's unfolded events by arrival number (cheap to clone: one shared map).
#[derive(Clone, Default)]
pub struct RecentEvents(Arc<Mutex<Inner>>);

impl RecentEvents {
    /// Remembers events whose pending folds were just committed: `pending` names each by user
    /// key and arrival number, `made` holds the events themselves.
    pub fn remember(&self, org_id: &str, pending: &[(i64, i64)], made: &[ConsentEvent]) {
        if pending.is_empty() {
            return;
        }
        let by_seq: HashMap<i64, &ConsentEvent> = made.iter().map(|e| (e.seq, e)).collect();
        let mut inner = self.0.lock().expect("recent events lock");
        for &(user_key, seq) in pending {
            let Some(event) = by_seq.get(&seq) else {
                continue;
            };
            inner.by_seq.insert(
                seq,
                FoldInput {
                    org_id: org_id.to_owned(),
                    user_key,
                    regulation: event.regulation.clone(),
                    body: event.body.clone(),
                    stamp: Stamp {
                        at: event.created_at.millis(),
                        seq,
                    },
                    updated_at: event.updated_at,
                },
            );
            inner.order.push_back(seq);
        }
        // Held events count, not arrivals: the order queue also holds numbers already
        // forgotten, so it is bounded apart (at twice the capacity).
        while inner.by_seq.len() > CAPACITY || inner.order.len() > 2 * CAPACITY {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            inner.by_seq.remove(&old);
        }
    }

    /// The event of a pending row, if this node still holds it.
    pub fn get(&self, org_id: &str, user_key: i64, seq: i64) -> Option<FoldInput> {
        let inner = self.0.lock().expect("recent events lock");
        inner
            .by_seq
            .get(&seq)
            .filter(|e| e.user_key == user_key && e.org_id == org_id)
            .cloned()
    }

    /// Forgets folded events.
    pub fn forget(&self, seqs: &[i64]) {
        let mut inner = self.0.lock().expect("recent events lock");
        for seq in seqs {
            inner.by_seq.remove(seq);
        }
        // Forgotten numbers leave the order queue as it turns over; drop them at once when
        // nothing is left, so an idle node holds nothing.
        if inner.by_seq.is_empty() {
            inner.order.clear();
        }
    }

    /// How many events are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().expect("recent events lock").by_seq.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use assent_model::{EventId, EventStatus, OrganizationId};

    fn event(seq: i64) -> ConsentEvent {
        ConsentEvent {
            id: EventId::generate(),
            organization_id: OrganizationId::parse("org").unwrap(),
            user_id: "u".into(),
            created_at: Timestamp::from_millis(1_000),
            updated_at: Timestamp::from_millis(2_000),
            status: EventStatus::Confirmed,
            regulation: Regulation::default(),
            seq,
            body: Arc::new(EventBody::default()),
        }
    }

    #[test]
    fn an_event_is_found_only_under_its_own_organization_and_user() {
        let recent = RecentEvents::default();
        recent.remember("org", &[(7, 1)], &[event(1)]);
        let found = recent.get("org", 7, 1).expect("held");
        assert_eq!(found.stamp(), Stamp { at: 1_000, seq: 1 });
        assert_eq!(found.updated_at(), Timestamp::from_millis(2_000));
        assert!(recent.get("other", 7, 1).is_none());
        assert!(recent.get("org", 8, 1).is_none());
        recent.forget(&[1]);
        assert!(recent.get("org", 7, 1).is_none());
    }

    #[test]
    fn the_oldest_events_go_first_once_full() {
        let recent = RecentEvents::default();
        let made: Vec<ConsentEvent> = (0..CAPACITY as i64 + 10).map(event).collect();
        let pending: Vec<(i64, i64)> = made.iter().map(|e| (1, e.seq)).collect();
        recent.remember("org", &pending, &made);
        assert_eq!(recent.len(), CAPACITY);
        assert!(recent.get("org", 1, 9).is_none());
        assert!(recent.get("org", 1, 10).is_some());
    }

    #[test]
    fn events_already_folded_do_not_push_out_those_still_waiting() {
        let recent = RecentEvents::default();
        recent.remember("org", &[(1, 0)], &[event(0)]);
        let later: Vec<i64> = (1..CAPACITY as i64 + 10).collect();
        for chunk in later.chunks(1_000) {
            let made: Vec<ConsentEvent> = chunk.iter().copied().map(event).collect();
            let pending: Vec<(i64, i64)> = chunk.iter().map(|&seq| (1, seq)).collect();
            recent.remember("org", &pending, &made);
            recent.forget(chunk);
        }
        assert!(
            recent.get("org", 1, 0).is_some(),
            "the waiting event was pushed out"
        );
    }
}
