//! Change bodies kept as references to the event log, and their rendering.
//!
//! Rendering the bodies of changes (the event, the user before and after) is most of what
//! integrations cost a write. So the writer puts in the outbox, for the changes made by appended
//! events, a few numbers instead of each body ([`Reference`]), and the bodies are rendered
//! from the log when they are delivered, on the delivery threads, at their priority:
//!
//! - `event.created`: the event, read by its arrival number;
//! - `user.created|updated`: the user's state before and after the request, rebuilt from its
//!   confirmed events (those that arrived before the request's first event for the user, then
//!   those of the request) and the direct edits kept in its row; its version and `updated_at`
//!   at each point are in the reference.
//!
//! This holds as long as the log still says what it said when the change was made. Every
//! operation that rewrites a user's history or edits it outside events (deleting or patching
//! an event, editing or deleting the user, attaching an organization user id) first has the
//! writer render that user's waiting references and put the bodies in their place
//! ([`super::outbox::write_out`]). Events record the outbox row of the references they made
//! (`events.outbox_row`), which is how the writer finds them.

use super::outbox::{Head, decode_heads, place_of, row_of, split_bodies};
use super::read::{self, EventRow, UserKeys};
use super::shared::Shared;
use crate::StoreError;
use crate::integrations::DueDelivery;
use assent_model::event::{ConsentEvent, EventStatus};
use assent_model::integration::{Change, ChangeKind, event_json, user_json};
use assent_model::status::UserState;
use assent_model::user::UserRecord;
use assent_model::{OrganizationId, Timestamp};
use rusqlite::Connection;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What the outbox keeps instead of a change's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// `event.created` of the event that arrived as `seq`.
    Event {
        /// The event's arrival number.
        seq: i64,
    },
    /// A user's change by the events of one request.
    User {
        /// The user's version and `updated_at` (ms) before the request; `None`: the request
        /// created the user.
        old: Option<(i64, i64)>,
        /// The user's version and `updated_at` (ms) after it.
        new: (i64, i64),
        /// Arrival number of the request's first event for the user.
        first: i64,
        /// Arrival number of its last event for the user (the change's `source`).
        last: i64,
    },
}

impl Reference {
    /// The bytes kept in the outbox.
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            Reference::Event { seq } => seq.to_le_bytes().to_vec(),
            Reference::User {
                old,
                new,
                first,
                last,
            } => {
                let (old_version, old_at) = old.unwrap_or((-1, 0));
                [old_version, old_at, new.0, new.1, first, last]
                    .iter()
                    .flat_map(|n| n.to_le_bytes())
                    .collect()
            }
        }
    }

    /// Reads back the reference of a change of `kind`.
    pub fn decode(kind: ChangeKind, bytes: &[u8]) -> Result<Reference, StoreError> {
        let bad = || StoreError::Internal(format!("a {kind:?} reference is malformed"));
        let numbers: Vec<i64> = bytes
            .chunks(8)
            .map(|c| c.try_into().map(i64::from_le_bytes))
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        match (kind, numbers.as_slice()) {
            (ChangeKind::EventCreated, [seq]) => Ok(Reference::Event { seq: *seq }),
            (
                ChangeKind::UserCreated | ChangeKind::UserUpdated,
                [old_version, old_at, new_version, new_at, first, last],
            ) => Ok(Reference::User {
                old: (*old_version >= 0).then_some((*old_version, *old_at)),
                new: (*new_version, *new_at),
                first: *first,
                last: *last,
            }),
            _ => Err(bad()),
        }
    }

    fn seqs(&self) -> (i64, i64) {
        match *self {
            Reference::Event { seq } => (seq, seq),
            Reference::User { first, last, .. } => (first, last),
        }
    }
}

/// Most user states kept between renders.
const STATES: usize = 100_000;

/// Users' states by (user key, version), kept between renders: the state a user's change
/// ends at is the one its next change starts from. A state at a version never changes (any
/// change to a user makes a new version), so what is kept stays right.
#[derive(Default)]
pub struct States(HashMap<(i64, i64), UserState>);

impl States {
    fn get(&self, key: i64, version: i64) -> Option<&UserState> {
        self.0.get(&(key, version))
    }

    fn insert(&mut self, key: i64, version: i64, state: UserState) {
        if self.0.len() >= STATES {
            self.0.clear();
        }
        self.0.insert((key, version), state);
    }
}

/// One change to render: its user, kind and reference.
pub struct ToRender<'a> {
    /// The user's key.
    pub user_key: i64,
    /// What happened.
    pub kind: ChangeKind,
    /// The reference, as kept in the outbox.
    pub reference: &'a [u8],
}

/// Renders the bodies of `changes`, all made by one request of `org`, from the log as `conn`
/// sees it. `pending` gives, for a user, the arrival numbers of its events that the per-user
/// index does not list yet.
pub fn render(
    conn: &Connection,
    org: &OrganizationId,
    changes: &[ToRender<'_>],
    pending: &dyn Fn(i64) -> Vec<i64>,
    states: &mut States,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let references = changes
        .iter()
        .map(|c| Reference::decode(c.kind, c.reference))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = references.iter().map(|r| r.seqs().0).min() else {
        return Ok(Vec::new());
    };
    let last = references.iter().map(|r| r.seqs().1).max().unwrap_or(first);
    let events: BTreeMap<i64, EventRow> = read::events_between(conn, org, first, last)?
        .into_iter()
        .map(|r| (r.event.seq, r))
        .collect();
    let event = |seq: i64| {
        events.get(&seq).ok_or_else(|| {
            StoreError::Internal(format!(
                "event {seq} of a change waiting for delivery is gone from the log"
            ))
        })
    };
    let mut out = Vec::with_capacity(changes.len());
    for (change, reference) in changes.iter().zip(&references) {
        let body = match *reference {
            Reference::Event { seq } => Change::event_created(&event(seq)?.event).body,
            Reference::User {
                old,
                new,
                first,
                last,
            } => {
                let key = change.user_key;
                let row = read::user_row(conn, org, key)?.ok_or_else(|| {
                    StoreError::Internal(format!(
                        "the user of a change waiting for delivery is gone (key {key})"
                    ))
                })?;
                let before = match old {
                    None => row.record.state.refold(std::iter::empty()),
                    Some((version, _)) => match states.get(key, version) {
                        Some(state) => state.clone(),
                        None => {
                            let keys = UserKeys {
                                org_key: row.org_key,
                                key,
                                id: &row.record.id,
                            };
                            let mut earlier: Vec<ConsentEvent> =
                                read::user_events(conn, org, keys, &pending(key))?
                                    .into_iter()
                                    .map(|r| r.event)
                                    .filter(|e| e.seq < first && e.status == EventStatus::Confirmed)
                                    .collect();
                            earlier.sort_by_key(|e| e.seq);
                            row.record.state.refold(
                                earlier.iter().map(|e| (&e.regulation, &*e.body, e.stamp())),
                            )
                        }
                    },
                };
                let mut after = before.clone();
                for r in events.range(first..=last).map(|(_, r)| r) {
                    if r.user_key == key && r.event.status == EventStatus::Confirmed {
                        let e = &r.event;
                        after.apply(&e.regulation, &e.body, e.stamp());
                    }
                }
                let source = &event(last)?.event;
                let shown = |(version, at): (i64, i64), state: UserState| {
                    let user = UserRecord {
                        version,
                        updated_at: Timestamp::from_millis(at),
                        state,
                        ..row.record.clone()
                    };
                    user_json(&user, &source.regulation)
                };
                let old_json = old.map(|o| shown(o, before));
                states.insert(key, new.0, after.clone());
                let new_json = shown(new, after);
                Change::user_changed_from_json(
                    old_json.as_deref(),
                    &new_json,
                    Some(&event_json(source)),
                )
                .body
            }
        };
        out.push(body);
    }
    Ok(out)
}

/// Most bytes of rendered bodies kept for the other integrations that deliver the same
/// changes.
const BODY_BYTES: usize = 32 << 20;

/// Renders claimed deliveries whose changes are kept as references, on the calling thread,
/// with a read connection of its own. Keeps users' states between renders, and the bodies it
/// rendered for the other integrations that deliver the same changes.
pub struct Renderer {
    open: Box<dyn Fn() -> Result<Connection, StoreError> + Send>,
    conn: Option<Connection>,
    shared: Arc<Shared>,
    states: States,
    bodies: HashMap<i64, Vec<u8>>,
    body_bytes: usize,
}

impl Renderer {
    /// A renderer whose connection `open` makes (when first needed).
    pub fn new(
        shared: Arc<Shared>,
        open: impl Fn() -> Result<Connection, StoreError> + Send + 'static,
    ) -> Renderer {
        Renderer {
            open: Box::new(open),
            conn: None,
            shared,
            states: States::default(),
            bodies: HashMap::new(),
            body_bytes: 0,
        }
    }

    /// Puts in place the body of each delivery of `due` kept as a reference. A delivery whose
    /// body cannot be rendered (never expected) is logged and keeps its `unrendered`: its
    /// attempt then fails and follows the retry schedule, and the others go out.
    pub fn render_due(&mut self, mut due: Vec<DueDelivery>) -> Vec<DueDelivery> {
        let mut wanted: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, d) in due.iter_mut().enumerate() {
            let Some(number) = d.unrendered else {
                continue;
            };
            match self.bodies.get(&number) {
                Some(body) => {
                    d.body = body.clone();
                    d.unrendered = None;
                }
                None => wanted.entry(row_of(number)).or_default().push(i),
            }
        }
        for (row, deliveries) in wanted {
            let org = due[deliveries[0]].organization_id.clone();
            let places: Vec<usize> = deliveries
                .iter()
                .map(|&i| place_of(due[i].unrendered.expect("unrendered")))
                .collect();
            let bodies = match self.render_row(&org, row, &places) {
                Ok(bodies) => bodies,
                Err(e) => {
                    tracing::error!(row, error = %e, "cannot render the changes of an outbox row");
                    continue;
                }
            };
            for (&i, body) in deliveries.iter().zip(bodies) {
                let number = due[i].unrendered.take().expect("unrendered");
                if self.body_bytes + body.len() > BODY_BYTES {
                    self.bodies.clear();
                    self.body_bytes = 0;
                }
                self.body_bytes += body.len();
                self.bodies.insert(number, body.clone());
                due[i].body = body;
            }
        }
        due
    }

    /// The bodies of the changes at `places` of outbox row `row`.
    fn render_row(
        &mut self,
        org: &OrganizationId,
        row: i64,
        places: &[usize],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        if self.conn.is_none() {
            self.conn = Some((self.open)()?);
        }
        let conn = self.conn.as_ref().expect("opened above");
        // The users' events not yet in the per-user index are read from the overlay before
        // the snapshot is taken: a flush in between puts them in the index the snapshot sees.
        let heads = read_heads(conn, row)?;
        let mut pending: HashMap<i64, Vec<i64>> = HashMap::new();
        for &place in places {
            if let Some(head) = heads.get(place) {
                let fresh = self.shared.overlay.get(head.user_key);
                pending.insert(
                    head.user_key,
                    fresh.map(|f| f.pending.clone()).unwrap_or_default(),
                );
            }
        }
        conn.execute_batch("BEGIN").map_err(read::db)?;
        let rendered = render_in_snapshot(conn, org, row, places, &pending, &mut self.states);
        let end = conn.execute_batch(if rendered.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        });
        let rendered = rendered?;
        end.map_err(read::db)?;
        Ok(rendered)
    }
}

/// The heads of outbox row `row`.
fn read_heads(conn: &Connection, row: i64) -> Result<Vec<Head>, StoreError> {
    let heads: Vec<u8> = conn
        .prepare_cached("SELECT heads FROM outbox WHERE seq = ?1")
        .and_then(|mut s| s.query_row([row], |r| r.get(0)))
        .map_err(read::db)?;
    decode_heads(&heads)
}

/// The bodies of the changes at `places` of outbox row `row`, read in one snapshot: those
/// written out already as they are, the others rendered.
fn render_in_snapshot(
    conn: &Connection,
    org: &OrganizationId,
    row: i64,
    places: &[usize],
    pending: &HashMap<i64, Vec<i64>>,
    states: &mut States,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let (heads, compressed): (Vec<u8>, Vec<u8>) = conn
        .prepare_cached("SELECT heads, body FROM outbox WHERE seq = ?1")
        .and_then(|mut s| s.query_row([row], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(read::db)?;
    let heads = decode_heads(&heads)?;
    let mut bodies = split_bodies(&heads, &compressed)?;
    let missing = || StoreError::Internal(format!("a change of outbox row {row} is missing"));
    let mut to_render = Vec::new();
    for &place in places {
        let head = heads.get(place).ok_or_else(missing)?;
        if head.reference {
            to_render.push(place);
        }
    }
    let rendered = {
        let changes = to_render
            .iter()
            .map(|&place| {
                Ok(ToRender {
                    user_key: heads[place].user_key,
                    kind: ChangeKind::from_code(heads[place].kind).ok_or_else(missing)?,
                    reference: &bodies[place],
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        render(
            conn,
            org,
            &changes,
            &|user| pending.get(&user).cloned().unwrap_or_default(),
            states,
        )?
    };
    for (place, body) in to_render.into_iter().zip(rendered) {
        bodies[place] = body;
    }
    Ok(places.iter().map(|&place| bodies[place].clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_read_back_as_written() {
        let cases = [
            (ChangeKind::EventCreated, Reference::Event { seq: 42 << 20 }),
            (
                ChangeKind::UserCreated,
                Reference::User {
                    old: None,
                    new: (1, 1_700_000_000_000),
                    first: 7,
                    last: 9,
                },
            ),
            (
                ChangeKind::UserUpdated,
                Reference::User {
                    old: Some((0, 1_600_000_000_000)),
                    new: (3, 1_700_000_000_000),
                    first: 10,
                    last: 10,
                },
            ),
        ];
        for (kind, reference) in cases {
            assert_eq!(
                Reference::decode(kind, &reference.encode()).unwrap(),
                reference
            );
        }
        assert!(Reference::decode(ChangeKind::EventCreated, &[1, 2, 3]).is_err());
        assert!(
            Reference::decode(
                ChangeKind::UserUpdated,
                &Reference::Event { seq: 1 }.encode()
            )
            .is_err()
        );
    }
}
