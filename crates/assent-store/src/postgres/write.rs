//! Writes: each is one transaction, retried from the start when it loses a race with another
//! node (a user or an event id created concurrently, a deadlock, a serialization failure).

use super::admin;
use super::db;
use super::known::{KnownUsers, Lookup};
use super::outbox::{USER_CHANGES, announce};
use super::read::{self, PgUser};
use super::recent::RecentEvents;
use crate::{ApiKey, StoreError};
use assent_model::event::EventPatch;
use assent_model::integration::Change;
use assent_model::query::EventsQuery;
use assent_model::tcf::generate_for_events;
use assent_model::user::{
    Found, NewUser, Resolution, UserPatch, UserRecord, UserSelector, resolve,
};
use assent_model::{
    ConsentEvent, EventId, EventInput, EventStatus, OrganizationId, Stamp, Timestamp, UserState,
};
use deadpool_postgres::{GenericClient, Object, Transaction};
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;
use tokio_postgres::error::SqlState;

/// Attempts of a write before it gives up on contention.
const MAX_ATTEMPTS: u32 = 10;
/// Key of the advisory lock that makes the first-key bootstrap happen once.
const BOOTSTRAP_LOCK: i64 = 0x6173_7365_6e75;

/// Why a transaction stopped.
enum TxError {
    /// It lost a race: roll back and run it again.
    Retry,
    /// It failed for good.
    Fail(StoreError),
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Fail(e)
    }
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::UNIQUE_VIOLATION =>
            {
                TxError::Retry
            }
            _ => TxError::Fail(db(e)),
        }
    }
}

fn retry<T>(r: Result<T, StoreError>) -> Result<T, TxError> {
    r.map_err(TxError::Fail)
}

/// Runs `body` in a transaction until it commits, fails for good, or keeps losing races.
macro_rules! transaction {
    ($client:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0;
        loop {
            attempt += 1;
            let $tx = $client.transaction().await.map_err(db)?;
            let outcome: Result<_, TxError> = $body;
            let outcome = match outcome {
                Ok(value) => $tx.commit().await.map(|()| value).map_err(TxError::from),
                Err(e) => {
                    let _ = $tx.rollback().await;
                    Err(e)
                }
            };
            match outcome {
                Ok(value) => break Ok(value),
                Err(TxError::Fail(e)) => break Err(e),
                Err(TxError::Retry) if attempt < MAX_ATTEMPTS => {
                    let pause = rand::random_range(1..=(2u64 << attempt.min(6)));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(TxError::Retry) => {
                    break Err(StoreError::Unavailable(
                        "the write kept conflicting with concurrent writes; retry".into(),
                    ));
                }
            }
        }
    }};
}

/// Stores an API key (and its organization). With `first_only`, does so only when no
/// organization exists yet, once even if many nodes start together; returns whether it did.
pub async fn create_api_key(
    client: &mut Object,
    key: &ApiKey,
    first_only: bool,
) -> Result<bool, StoreError> {
    transaction!(client, |tx| {
        async {
            if first_only {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BOOTSTRAP_LOCK])
                    .await?;
                let count: i64 = tx
                    .query_one("SELECT count(*) FROM organizations", &[])
                    .await?
                    .get(0);
                if count > 0 {
                    return Ok(false);
                }
            }
            tx.execute(
                "INSERT INTO organizations (org_id, created_at) VALUES ($1, $2)
                 ON CONFLICT (org_id) DO NOTHING",
                &[&key.organization_id.as_str(), &key.created_at.millis()],
            )
            .await?;
            tx.execute(
                "INSERT INTO api_keys (org_id, id, key, name, enabled, secret_hash, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &key.organization_id.as_str(),
                    &key.id,
                    &key.key,
                    &key.name,
                    &key.enabled,
                    &key.secret_hash,
                    &key.created_at.millis(),
                    &key.updated_at.millis(),
                ],
            )
            .await?;
            Ok(true)
        }
        .await
    })
}

fn state_bytes(state: &UserState) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(state).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Writes users back (one statement for all), each in its own organization.
async fn write_users(tx: &Transaction<'_>, users: &[&PgUser]) -> Result<(), TxError> {
    if users.is_empty() {
        return Ok(());
    }
    let orgs: Vec<&str> = users
        .iter()
        .map(|u| u.record.organization_id.as_str())
        .collect();
    let keys: Vec<i64> = users.iter().map(|u| u.key).collect();
    let ouids: Vec<Option<&str>> = users
        .iter()
        .map(|u| u.record.organization_user_id.as_deref())
        .collect();
    let versions: Vec<i64> = users.iter().map(|u| u.record.version).collect();
    let updated: Vec<i64> = users.iter().map(|u| u.record.updated_at.millis()).collect();
    let states = users
        .iter()
        .map(|u| state_bytes(&u.record.state))
        .collect::<Result<Vec<_>, _>>()?;
    let stmt = tx
        .prepare_cached(
            "UPDATE users AS u
             SET organization_user_id = t.ouid, version = t.version, updated_at = t.updated_at,
                 state = t.state
             FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
                         $6::bytea[]) AS t(org_id, user_key, ouid, version, updated_at, state)
             WHERE u.org_id = t.org_id AND u.user_key = t.user_key",
        )
        .await?;
    tx.execute(&stmt, &[&orgs, &keys, &ouids, &versions, &updated, &states])
        .await?;
    Ok(())
}

/// Folds the pending events of a locked user into it and forgets them as pending.
async fn absorb_pending(tx: &Transaction<'_>, user: &mut PgUser) -> Result<Absorbed, TxError> {
    let org = user.record.organization_id.clone();
    let stmt = tx
        .prepare_cached(
            "SELECT e.seq, e.created_at, e.regulation, e.body, e.updated_at, p.bump
             FROM pending_folds p
             JOIN events e ON e.org_id = p.org_id AND e.user_key = p.user_key AND e.seq = p.seq
             WHERE p.org_id = $1 AND p.user_key = $2",
        )
        .await?;
    let rows = tx.query(&stmt, &[&org.as_str(), &user.key]).await?;
    let mut seqs = Vec::with_capacity(rows.len());
    let mut absorbed = Absorbed::default();
    for row in &rows {
        let seq: i64 = row.get(0);
        let body: &[u8] = row.get(3);
        let body: assent_model::EventBody = serde_json::from_slice(body)
            .map_err(|e| StoreError::Internal(format!("event body: {e}")))?;
        let regulation: &str = row.get(2);
        user.record.state.apply(
            &assent_model::Regulation::parse(regulation).unwrap_or_default(),
            &body,
            Stamp {
                at: row.get(1),
                seq,
            },
        );
        let bump = i64::from(row.get::<_, i16>(5));
        let at = Timestamp::from_millis(row.get(4));
        user.record.version += bump;
        user.record.updated_at = user.record.updated_at.max(at);
        absorbed.bumps += bump;
        absorbed.updated_at = absorbed.updated_at.max(Some(at));
        seqs.push(seq);
    }
    forget_pending(tx, &org, user.key, &seqs).await?;
    Ok(absorbed)
}

/// What folding a user's pending events in did to its version and `updated_at`.
#[derive(Default)]
struct Absorbed {
    /// Versions added.
    bumps: i64,
    /// The latest `updated_at` of the events folded in.
    updated_at: Option<Timestamp>,
}

async fn forget_pending(
    tx: &Transaction<'_>,
    org: &OrganizationId,
    user_key: i64,
    seqs: &[i64],
) -> Result<(), TxError> {
    if seqs.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "DELETE FROM pending_folds WHERE org_id = $1 AND user_key = $2 AND seq = ANY($3)",
        )
        .await?;
    tx.execute(&stmt, &[&org.as_str(), &user_key, &seqs])
        .await?;
    Ok(())
}

/// New arrival numbers, ascending.
async fn next_seqs(tx: &Transaction<'_>, n: usize) -> Result<Vec<i64>, TxError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let stmt = tx
        .prepare_cached("SELECT nextval('assent_event_seq') FROM generate_series(1, $1::bigint)")
        .await?;
    let mut seqs: Vec<i64> = tx
        .query(&stmt, &[&(n as i64)])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Appends a request's events: all of them or none.
pub async fn append(
    client: &mut Object,
    org: &OrganizationId,
    events: Vec<EventInput>,
    mask: u8,
    origin: Option<&str>,
    recent: &RecentEvents,
    known: &KnownUsers,
) -> Result<Vec<ConsentEvent>, StoreError> {
    let now = Timestamp::now();
    // The first attempt trusts the users this node knows; a retry looks every user up.
    let mut users = Users {
        known: Some(known),
        learned: None,
    };
    let (stored, written, pending) = transaction!(client, |tx| append_tx(
        &tx, org, &events, now, mask, origin, &mut users
    )
    .await)?;
    // Committed: this node's folder may fold them from memory, and its users are known.
    recent.remember(org.as_str(), &pending, &stored);
    if let Some((epoch, learned)) = &users.learned {
        known.learn(org.as_str(), *epoch, learned);
    }
    metrics::counter!("assent_events_written_total").increment(written);
    Ok(stored)
}

/// The users of an append: those this node knows, for an attempt that trusts them, and
/// those the attempt met, with the users epoch it read.
struct Users<'k> {
    known: Option<&'k KnownUsers>,
    learned: Option<(i64, Vec<Found<i64>>)>,
}

/// Appends in one transaction; returns the answer, how many events were new, and the user
/// key and arrival number of each event left for the folder.
async fn append_tx(
    tx: &Transaction<'_>,
    org: &OrganizationId,
    events: &[EventInput],
    now: Timestamp,
    mask: u8,
    origin: Option<&str>,
    users: &mut Users<'_>,
) -> Result<(Vec<ConsentEvent>, u64, Vec<(i64, i64)>), TxError> {
    // Before anything is read: an erasure that committed before this point is seen by every
    // read below, and one that has not started waits until this request commits.
    erasure_guard(tx, org, false).await?;
    // A later statement than the lock's, so that it sees an erasure that held the lock.
    let epoch = users_epoch(tx, org).await?;
    let known = users.known.take();
    users.learned = None;
    // Replays: ids already stored answer with the stored event, or a conflict.
    let client_ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e.id.as_ref().map(EventId::as_str))
        .collect();
    let stored: HashMap<String, ConsentEvent> =
        retry(read::events_by_ids(tx, org, &client_ids).await)?
            .into_iter()
            .map(|(e, _)| (e.id.to_string(), e))
            .collect();
    // Borrowed, unless a TCF string is generated into them: a retry starts from the inputs.
    let mut fresh: Vec<Cow<'_, EventInput>> = Vec::with_capacity(events.len());
    for input in events {
        if let Some(id) = &input.id
            && let Some(existing) = stored.get(id.as_str())
        {
            if !input.same_content(existing) {
                return Err(TxError::Fail(StoreError::conflict(format!(
                    "event '{id}' already exists with different content"
                ))));
            }
            continue;
        }
        fresh.push(Cow::Borrowed(input));
    }

    // Users the events name, each name once.
    let mut ids: Vec<&str> = fresh
        .iter()
        .filter_map(|e| e.body.user.id.as_deref())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut ouids: Vec<&str> = fresh
        .iter()
        .filter_map(|e| e.body.user.organization_user_id.as_deref())
        .collect();
    ouids.sort_unstable();
    ouids.dedup();
    let mut by_id: HashMap<String, Found<i64>> = HashMap::new();
    let mut by_ouid: HashMap<String, Found<i64>> = HashMap::new();
    let lookup = match known {
        Some(known) => known.find(org.as_str(), epoch, &ids, &ouids),
        None => Lookup {
            unknown_ids: ids,
            unknown_organization_user_ids: ouids,
            ..Lookup::default()
        },
    };
    for found in lookup
        .by_id
        .into_iter()
        .chain(lookup.by_organization_user_id)
    {
        if let Some(o) = &found.organization_user_id {
            by_ouid.insert(o.clone(), found.clone());
        }
        by_id.insert(found.id.clone(), found);
    }
    let (ids, ouids) = (lookup.unknown_ids, lookup.unknown_organization_user_ids);
    if !ids.is_empty() || !ouids.is_empty() {
        let stmt = tx
            // One index probe per name (`LATERAL … LIMIT 1`), whatever the planner believes
            // of the table's size: with stale statistics a join scans all the users. A user
            // found both ways comes twice (`UNION ALL`), which the maps below absorb, instead
            // of every row being hashed to remove duplicates.
            .prepare_cached(
                "SELECT u.* FROM UNNEST($2::text[]) AS t(id)
                 CROSS JOIN LATERAL (SELECT user_key, id, organization_user_id FROM users
                     WHERE org_id = $1 AND id = t.id LIMIT 1) u
                 UNION ALL
                 SELECT u.* FROM UNNEST($3::text[]) AS t(o)
                 CROSS JOIN LATERAL (SELECT user_key, id, organization_user_id FROM users
                     WHERE org_id = $1 AND organization_user_id = t.o LIMIT 1) u",
            )
            .await?;
        for row in tx.query(&stmt, &[&org.as_str(), &ids, &ouids]).await? {
            let found = Found {
                key: row.get(0),
                id: row.get(1),
                organization_user_id: row.get(2),
            };
            if let Some(o) = &found.organization_user_id {
                by_ouid.insert(o.clone(), found.clone());
            }
            by_id.insert(found.id.clone(), found);
        }
    }

    // Resolve each event's user; users created by the batch get placeholder keys (negative)
    // until their rows exist, so later events of the batch find them too.
    let mut keys = Vec::with_capacity(fresh.len());
    let mut created: Vec<CreatedUser> = Vec::new();
    let mut attached: HashMap<i64, String> = HashMap::new();
    for input in &fresh {
        let user = &input.body.user;
        let found_id = user.id.as_ref().and_then(|i| by_id.get(i)).cloned();
        let found_ouid = user
            .organization_user_id
            .as_ref()
            .and_then(|o| by_ouid.get(o))
            .cloned();
        let key = match resolve(user, found_id, found_ouid).map_err(StoreError::from)? {
            Resolution::Existing {
                key,
                attach_organization_user_id,
            } => {
                if let Some(o) = attach_organization_user_id {
                    let entry = by_id
                        .values_mut()
                        .find(|f| f.key == key)
                        .expect("an existing user was found by id");
                    entry.organization_user_id = Some(o.clone());
                    by_ouid.insert(o.clone(), entry.clone());
                    attached.insert(key, o);
                }
                key
            }
            Resolution::Create {
                id,
                organization_user_id,
            } => {
                let key = -(created.len() as i64) - 1;
                let found = Found {
                    key,
                    id: id.clone(),
                    organization_user_id: organization_user_id.clone(),
                };
                if let Some(o) = &organization_user_id {
                    by_ouid.insert(o.clone(), found.clone());
                }
                by_id.insert(id.clone(), found);
                created.push(CreatedUser {
                    placeholder: key,
                    id,
                    organization_user_id,
                    id_given: user.id.is_some(),
                });
                key
            }
        };
        keys.push(key);
    }

    // New users' rows, sorted so that two requests creating the same users wait for each other
    // in the same order instead of deadlocking.
    let mut real: HashMap<i64, i64> = HashMap::new();
    // Users another request created meanwhile, whose ids differ from the ones made here.
    let mut adopted: HashMap<i64, String> = HashMap::new();
    created.sort_by(|a, b| (&a.organization_user_id, &a.id).cmp(&(&b.organization_user_id, &b.id)));
    if !created.is_empty() {
        let new_ids: Vec<&str> = created.iter().map(|u| u.id.as_str()).collect();
        let new_ouids: Vec<Option<&str>> = created
            .iter()
            .map(|u| u.organization_user_id.as_deref())
            .collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO users (org_id, user_key, id, organization_user_id, version, created_at, updated_at, state)
                 SELECT $1, nextval('assent_user_keys'), t.id, t.ouid, 1, $4, $4, '\\x7b7d'::bytea
                 FROM UNNEST($2::text[], $3::text[]) AS t(id, ouid)
                 ON CONFLICT DO NOTHING
                 RETURNING user_key, id",
            )
            .await?;
        let rows = tx
            .query(&stmt, &[&org.as_str(), &new_ids, &new_ouids, &now.millis()])
            .await?;
        let by_new_id: HashMap<String, i64> = rows.iter().map(|r| (r.get(1), r.get(0))).collect();
        for new in &created {
            if let Some(key) = by_new_id.get(&new.id) {
                real.insert(new.placeholder, *key);
                continue;
            }
            // A concurrent request created the user and committed while this insert waited
            // for it; this statement sees it. Take it when it is the user the event names.
            let existing = adopt(tx, org, new).await?;
            adopted.insert(existing.key, existing.id);
            real.insert(new.placeholder, existing.key);
        }
    }
    let keys: Vec<i64> = keys
        .into_iter()
        .map(|k| if k < 0 { real[&k] } else { k })
        .collect();
    // The users met, to know once this commits; not those adopted from a concurrent request
    // (the id made here may not be theirs).
    users.learned = Some((
        epoch,
        by_id
            .values()
            .filter_map(|f| {
                let key = if f.key < 0 { real[&f.key] } else { f.key };
                (!adopted.contains_key(&key)).then(|| Found { key, ..f.clone() })
            })
            .collect(),
    ));

    // Organization user ids attached to existing users: only if none was attached meanwhile.
    // Their version and `updated_at` before, for the change that shows them as they were.
    let mut attached_before: HashMap<i64, (i64, Timestamp)> = HashMap::new();
    if !attached.is_empty() {
        let mut keys: Vec<i64> = attached.keys().copied().collect();
        keys.sort_unstable();
        let ouids: Vec<&str> = keys.iter().map(|k| attached[k].as_str()).collect();
        if mask & USER_CHANGES != 0 {
            let stmt = tx
                .prepare_cached(
                    "SELECT u.user_key, u.version, u.updated_at FROM UNNEST($2::bigint[]) AS t(user_key)
                     CROSS JOIN LATERAL (SELECT user_key, version, updated_at FROM users
                         WHERE org_id = $1 AND user_key = t.user_key FOR NO KEY UPDATE) u",
                )
                .await?;
            for row in tx.query(&stmt, &[&org.as_str(), &keys]).await? {
                attached_before
                    .insert(row.get(0), (row.get(1), Timestamp::from_millis(row.get(2))));
            }
        }
        let stmt = tx
            .prepare_cached(
                "UPDATE users AS u SET organization_user_id = t.ouid, version = u.version + 1,
                        updated_at = greatest(u.updated_at, $4)
                 FROM UNNEST($2::bigint[], $3::text[]) AS t(user_key, ouid)
                 WHERE u.org_id = $1 AND u.user_key = t.user_key AND u.organization_user_id IS NULL",
            )
            .await?;
        let updated = tx
            .execute(&stmt, &[&org.as_str(), &keys, &ouids, &now.millis()])
            .await?;
        if updated as usize != attached.len() {
            return Err(TxError::Retry);
        }
    }

    // The events, and for the confirmed ones a note that their users have them to fold. The
    // users' rows are not locked: two requests for one user do not wait for each other.
    let seqs = next_seqs(tx, fresh.len()).await?;
    let ids: Vec<EventId> = fresh
        .iter()
        .map(|e| e.id.clone().unwrap_or_else(EventId::generate))
        .collect();
    let created_at: Vec<i64> = fresh
        .iter()
        .map(|e| e.created_at.unwrap_or(now).millis())
        .collect();

    // Users are folded now, under their locks, when their changes are announced (the statuses
    // before and after are needed) or when TCF strings are built from their statuses; otherwise
    // the folder does it later.
    let generating = fresh.iter().any(|e| e.tcf.is_some());
    let mut locked = None;
    if !fresh.is_empty() && (generating || mask & USER_CHANGES != 0) {
        let created: std::collections::HashSet<i64> = real
            .values()
            .copied()
            .filter(|k| !adopted.contains_key(k))
            .collect();
        locked = Some(lock_for_fold(tx, org, &keys, &created, &attached_before).await?);
    }
    if generating && let Some(locked) = &locked {
        let index: HashMap<i64, &PgUser> = locked.users.iter().map(|u| (u.key, u)).collect();
        generate_for_events(
            fresh.iter_mut().enumerate().map(|(i, e)| {
                let stamp = Stamp {
                    at: created_at[i],
                    seq: seqs[i],
                };
                (keys[i], stamp, e.to_mut())
            }),
            now,
            |key, regulation| -> Result<_, StoreError> {
                let user = index.get(&key).ok_or_else(|| {
                    StoreError::Internal(format!("user {key} of the request is not locked"))
                })?;
                Ok(user.record.state.stamped_status(regulation).cloned())
            },
        )?;
    }
    let mut user_ids: HashMap<i64, String> = by_id
        .values()
        .map(|f| (real.get(&f.key).copied().unwrap_or(f.key), f.id.clone()))
        .collect();
    user_ids.extend(adopted.clone());
    let made: Vec<ConsentEvent> = fresh
        .iter()
        .enumerate()
        .map(|(i, input)| ConsentEvent {
            id: ids[i].clone(),
            organization_id: org.clone(),
            user_id: user_ids[&keys[i]].clone(),
            created_at: Timestamp::from_millis(created_at[i]),
            updated_at: now,
            status: input.status,
            regulation: input.regulation.clone(),
            seq: seqs[i],
            body: input.body.clone(),
        })
        .collect();
    if !fresh.is_empty() {
        let id_text: Vec<&str> = ids.iter().map(EventId::as_str).collect();
        let statuses: Vec<i16> = fresh
            .iter()
            .map(|e| i16::from(e.status != EventStatus::Confirmed))
            .collect();
        let regulations: Vec<&str> = fresh.iter().map(|e| e.regulation.as_str()).collect();
        let bodies: Vec<&[u8]> = fresh.iter().map(|e| e.body_json.as_slice()).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO events (org_id, user_key, seq, id, created_at, updated_at, status, regulation, body)
                 SELECT $1, t.k, t.s, t.i, t.c, $2, t.st, t.r, t.b
                 FROM UNNEST($3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::smallint[],
                             $8::text[], $9::bytea[]) AS t(k, s, i, c, st, r, b)",
            )
            .await?;
        // An id another node stored meanwhile fails this INSERT with a unique violation,
        // which runs the request again (`TxError::Retry`): it then answers with that event.
        tx.execute(
            &stmt,
            &[
                &org.as_str(),
                &now.millis(),
                &keys,
                &seqs,
                &id_text,
                &created_at,
                &statuses,
                &regulations,
                &bodies,
            ],
        )
        .await?;
        let (ref_keys, ref_ids): (Vec<i64>, Vec<&str>) = fresh
            .iter()
            .zip(&keys)
            .flat_map(|(e, k)| e.body.proofs_id.iter().map(move |p| (*k, p.as_str())))
            .unzip();
        admin::reference_proofs(tx, org, &ref_keys, &ref_ids).await?;
        // A request moves a user's version by one: users it created or re-identified already
        // moved; the others move with their first confirmed event of the request.
        let mut moved: std::collections::HashSet<i64> = real
            .values()
            .copied()
            .chain(attached.keys().copied())
            .collect();
        if let Some(locked) = locked {
            let announce_users = mask & USER_CHANGES != 0;
            let folded = fold_locked(tx, locked, &made, &keys, &moved, announce_users, now).await?;
            if mask != 0 {
                let mut changes: Vec<(i64, Change)> = made
                    .iter()
                    .zip(&keys)
                    .map(|(e, k)| (*k, Change::event_created(e)))
                    .collect();
                changes.extend(folded);
                announce(tx, org, mask, &changes, now, origin).await?;
            }
            return Ok((
                answer_of(events, &stored, made),
                fresh.len() as u64,
                Vec::new(),
            ));
        }
        if mask != 0 {
            let changes: Vec<(i64, Change)> = made
                .iter()
                .zip(&keys)
                .map(|(e, k)| (*k, Change::event_created(e)))
                .collect();
            announce(tx, org, mask, &changes, now, origin).await?;
        }
        let mut fold_keys = Vec::new();
        let mut fold_seqs = Vec::new();
        let mut fold_bumps: Vec<i16> = Vec::new();
        for (input, (key, seq)) in fresh.iter().zip(keys.iter().zip(&seqs)) {
            if input.status == EventStatus::Confirmed {
                fold_keys.push(*key);
                fold_seqs.push(*seq);
                fold_bumps.push(i16::from(moved.insert(*key)));
            }
        }
        if !fold_keys.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO pending_folds (org_id, user_key, seq, bump)
                     SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::smallint[])",
                )
                .await?;
            tx.execute(&stmt, &[&org.as_str(), &fold_keys, &fold_seqs, &fold_bumps])
                .await?;
        }
        let pending = fold_keys.into_iter().zip(fold_seqs).collect();
        return Ok((
            answer_of(events, &stored, made),
            fresh.len() as u64,
            pending,
        ));
    }

    Ok((
        answer_of(events, &stored, made),
        fresh.len() as u64,
        Vec::new(),
    ))
}

/// The answer of an append, in input order: stored events for replays, new ones otherwise.
fn answer_of(
    events: &[EventInput],
    stored: &HashMap<String, ConsentEvent>,
    made: Vec<ConsentEvent>,
) -> Vec<ConsentEvent> {
    let mut made = made.into_iter();
    events
        .iter()
        .map(
            |input| match input.id.as_ref().and_then(|id| stored.get(id.as_str())) {
                Some(existing) => existing.clone(),
                None => made.next().expect("one new event per fresh input"),
            },
        )
        .collect()
}

/// The users of an append, locked, with their pending folds folded in (and forgotten as
/// pending: they must be written back), and each as it was before the append.
struct LockedUsers {
    users: Vec<PgUser>,
    /// `None` for the users the append created.
    before: Vec<Option<UserRecord>>,
}

/// Locks the users of an append (`keys`; `created`: those it created) and folds their pending
/// events in. `attached`: the users it attached an organization user id to, with their
/// version and `updated_at` before.
async fn lock_for_fold(
    tx: &Transaction<'_>,
    org: &OrganizationId,
    keys: &[i64],
    created: &std::collections::HashSet<i64>,
    attached: &HashMap<i64, (i64, Timestamp)>,
) -> Result<LockedUsers, TxError> {
    let mut users = retry(read::lock_users(tx, org, keys).await)?;
    let mut before = Vec::with_capacity(users.len());
    for user in &mut users {
        let absorbed = absorb_pending(tx, user).await?;
        before.push((!created.contains(&user.key)).then(|| {
            let mut old = user.record.clone();
            // Attached earlier in this request: as it was before, with its pending events.
            if let Some((version, updated_at)) = attached.get(&user.key) {
                old.organization_user_id = None;
                old.version = version + absorbed.bumps;
                old.updated_at = (*updated_at).max(absorbed.updated_at.unwrap_or(*updated_at));
            }
            old
        }));
    }
    Ok(LockedUsers { users, before })
}

/// Folds an append into its locked users and writes them; with `announce_users`, returns the
/// users' changes: created, or updated with the status before and after.
async fn fold_locked(
    tx: &Transaction<'_>,
    locked: LockedUsers,
    made: &[ConsentEvent],
    keys: &[i64],
    moved: &std::collections::HashSet<i64>,
    announce_users: bool,
    now: Timestamp,
) -> Result<Vec<(i64, Change)>, TxError> {
    let LockedUsers { mut users, before } = locked;
    let index: HashMap<i64, usize> = users.iter().enumerate().map(|(i, u)| (u.key, i)).collect();
    let mut confirmed_for: std::collections::HashSet<i64> = std::collections::HashSet::new();
    for (event, key) in made.iter().zip(keys) {
        if event.status != EventStatus::Confirmed {
            continue;
        }
        let user = &mut users[*index.get(key).ok_or(TxError::Retry)?];
        user.record
            .state
            .apply(&event.regulation, &event.body, event.stamp());
        confirmed_for.insert(*key);
    }
    for user in &mut users {
        if confirmed_for.contains(&user.key) && !moved.contains(&user.key) {
            user.record.version += 1;
        }
        if confirmed_for.contains(&user.key) {
            user.record.updated_at = now;
        }
    }
    let refs: Vec<&PgUser> = users.iter().collect();
    write_users(tx, &refs).await?;
    let mut changes = Vec::new();
    if !announce_users {
        return Ok(changes);
    }
    for (user, old) in users.iter().zip(before) {
        if old.is_some() && !confirmed_for.contains(&user.key) && !moved.contains(&user.key) {
            continue;
        }
        let source = made
            .iter()
            .zip(keys)
            .rev()
            .find(|(_, k)| **k == user.key)
            .map(|(e, _)| e);
        changes.push((
            user.key,
            Change::user_changed(old.as_ref(), &user.record, source),
        ));
    }
    Ok(changes)
}

/// A user an append creates, under a placeholder key until its row exists.
struct CreatedUser {
    placeholder: i64,
    id: String,
    organization_user_id: Option<String>,
    /// Whether the event named the id (otherwise it was made here).
    id_given: bool,
}

/// The user a concurrent request created in place of `new`, when it is the one the event
/// names: the same organization user id (and the same id, if the event gave one), or the same
/// id without organization user id. Anything else is resolved again from the start.
async fn adopt(
    tx: &Transaction<'_>,
    org: &OrganizationId,
    new: &CreatedUser,
) -> Result<Found<i64>, TxError> {
    let selector = match &new.organization_user_id {
        Some(o) => UserSelector::OrganizationUserId(o.clone()),
        None => UserSelector::Id(new.id.clone()),
    };
    let Some(existing) = find(tx, org, &selector).await? else {
        return Err(TxError::Retry);
    };
    let same = existing.organization_user_id == new.organization_user_id
        && (!new.id_given || existing.id == new.id);
    if same {
        Ok(existing)
    } else {
        Err(TxError::Retry)
    }
}

/// Refolds a locked user from all its events and writes it back. Its pending folds are read
/// first and forgotten after: an event appended in between is folded again later, which
/// changes nothing, whereas the other order could forget an event never folded.
async fn refold(tx: &Transaction<'_>, user: &mut PgUser, now: Timestamp) -> Result<(), TxError> {
    let org = user.record.organization_id.clone();
    let rows = tx
        .query(
            "SELECT seq, bump FROM pending_folds WHERE org_id = $1 AND user_key = $2",
            &[&org.as_str(), &user.key],
        )
        .await?;
    let pending: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let bumps: i64 = rows.iter().map(|r| i64::from(r.get::<_, i16>(1))).sum();
    let events = retry(read::user_events(tx, &org, user.key, &user.record.id).await)?;
    let confirmed = events
        .iter()
        .filter(|e| e.status == EventStatus::Confirmed)
        .map(|e| (&e.regulation, &*e.body, e.stamp()));
    user.record.state = user.record.state.refold(confirmed);
    user.record.version += 1 + bumps;
    user.record.updated_at = now;
    forget_pending(tx, &org, user.key, &pending).await?;
    write_users(tx, &[user]).await
}

/// The user as it is before a change, when user changes are announced: its pending folds are
/// folded in first, so that "before" is the status readers see.
async fn user_before(
    tx: &Transaction<'_>,
    user: &mut PgUser,
    mask: u8,
) -> Result<Option<UserRecord>, TxError> {
    if mask & USER_CHANGES == 0 {
        return Ok(None);
    }
    absorb_pending(tx, user).await?;
    Ok(Some(user.record.clone()))
}

async fn lock_user_by_key(
    tx: &Transaction<'_>,
    org: &OrganizationId,
    key: i64,
) -> Result<Option<PgUser>, TxError> {
    Ok(retry(read::lock_users(tx, org, &[key]).await)?.pop())
}

/// Changes an event and refolds its user.
pub async fn patch_event(
    client: &mut Object,
    org: &OrganizationId,
    id: &EventId,
    patch: &EventPatch,
    mask: u8,
) -> Result<ConsentEvent, StoreError> {
    let now = Timestamp::now();
    transaction!(client, |tx| {
        async {
            let not_found =
                || TxError::Fail(StoreError::not_found(format!("event '{id}' not found")));
            let (_, user_key) =
                retry(read::event_by_id(&tx, org, id).await)?.ok_or_else(not_found)?;
            let mut user = lock_user_by_key(&tx, org, user_key)
                .await?
                .ok_or(TxError::Retry)?;
            // Read again under the user's lock: the event may have changed meanwhile.
            let (mut event, _) =
                retry(read::event_by_id(&tx, org, id).await)?.ok_or_else(not_found)?;
            let old_event = event.clone();
            let old_user = user_before(&tx, &mut user, mask).await?;
            patch.apply_to(&mut event, now);
            let body = serde_json::to_vec(&*event.body)
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let status = i16::from(event.status != EventStatus::Confirmed);
            tx.execute(
                "UPDATE events SET status = $3, updated_at = $4, body = $5
                 WHERE org_id = $1 AND id = $2",
                &[&org.as_str(), &id.as_str(), &status, &now.millis(), &body],
            )
            .await?;
            let proof_ids: Vec<&str> = event.body.proofs_id.iter().map(String::as_str).collect();
            let owners = vec![user.key; proof_ids.len()];
            admin::reference_proofs(&tx, org, &owners, &proof_ids).await?;
            refold(&tx, &mut user, now).await?;
            let mut changes = vec![(user.key, Change::event_updated(&old_event, &event))];
            if let Some(old) = old_user {
                changes.push((
                    user.key,
                    Change::user_changed(Some(&old), &user.record, Some(&event)),
                ));
            }
            announce(&tx, org, mask, &changes, now, None).await?;
            Ok(event)
        }
        .await
    })
}

/// What a deletion of events selects.
pub enum Doomed {
    /// One event by id.
    One(EventId),
    /// The events of one user that match a query.
    Matching(EventsQuery),
}

/// Deletes events and refolds their user; returns how many were deleted.
pub async fn delete_events(
    client: &mut Object,
    org: &OrganizationId,
    doomed: Doomed,
    mask: u8,
) -> Result<u64, StoreError> {
    let now = Timestamp::now();
    transaction!(client, |tx| {
        async {
            let mut user = match &doomed {
                Doomed::One(id) => {
                    let (_, key) =
                        retry(read::event_by_id(&tx, org, id).await)?.ok_or_else(|| {
                            TxError::Fail(StoreError::not_found(format!("event '{id}' not found")))
                        })?;
                    lock_user_by_key(&tx, org, key)
                        .await?
                        .ok_or(TxError::Retry)?
                }
                Doomed::Matching(query) => {
                    match retry(read::user(&tx, org, &query.user, true).await)? {
                        Some(user) => user,
                        None => return Ok(0),
                    }
                }
            };
            let events = retry(read::user_events(&tx, org, user.key, &user.record.id).await)?;
            let deleted: Vec<&ConsentEvent> = events
                .iter()
                .filter(|e| match &doomed {
                    Doomed::One(id) => e.id == *id,
                    Doomed::Matching(query) => query.selects(e),
                })
                .collect();
            let seqs: Vec<i64> = deleted.iter().map(|e| e.seq).collect();
            if seqs.is_empty() {
                return match &doomed {
                    Doomed::One(id) => Err(TxError::Fail(StoreError::not_found(format!(
                        "event '{id}' not found"
                    )))),
                    Doomed::Matching(_) => Ok(0),
                };
            }
            let old_user = user_before(&tx, &mut user, mask).await?;
            tx.execute(
                "DELETE FROM events WHERE org_id = $1 AND user_key = $2 AND seq = ANY($3)",
                &[&org.as_str(), &user.key, &seqs],
            )
            .await?;
            refold(&tx, &mut user, now).await?;
            let mut changes: Vec<(i64, Change)> = deleted
                .iter()
                .map(|e| (user.key, Change::event_deleted(e)))
                .collect();
            if let Some(old) = old_user {
                changes.push((
                    user.key,
                    Change::user_changed(Some(&old), &user.record, deleted.last().copied()),
                ));
            }
            announce(&tx, org, mask, &changes, now, None).await?;
            Ok(seqs.len() as u64)
        }
        .await
    })
}

fn conflict_of(
    found: Option<Found<i64>>,
    what: impl FnOnce(Found<i64>) -> String,
) -> Result<(), TxError> {
    match found {
        Some(f) => Err(TxError::Fail(StoreError::conflict(what(f)))),
        None => Ok(()),
    }
}

async fn find(
    tx: &Transaction<'_>,
    org: &OrganizationId,
    user: &UserSelector,
) -> Result<Option<Found<i64>>, TxError> {
    Ok(
        retry(read::user(tx, org, user, false).await)?.map(|u| Found {
            key: u.key,
            id: u.record.id,
            organization_user_id: u.record.organization_user_id,
        }),
    )
}

/// Creates a user.
pub async fn create_user(
    client: &mut Object,
    org: &OrganizationId,
    user: NewUser,
    mask: u8,
) -> Result<UserRecord, StoreError> {
    let now = Timestamp::now();
    let id = user
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    transaction!(client, |tx| {
        async {
            conflict_of(find(&tx, org, &UserSelector::Id(id.clone())).await?, |_| {
                format!("user '{id}' already exists")
            })?;
            if let Some(o) = &user.organization_user_id {
                conflict_of(
                    find(&tx, org, &UserSelector::OrganizationUserId(o.clone())).await?,
                    |other| format!("organization_user_id '{o}' already belongs to user '{}'", other.id),
                )?;
            }
            let seq = next_seqs(&tx, 1).await?[0];
            let stamp = Stamp {
                at: now.millis(),
                seq,
            };
            let mut state = UserState::default();
            if let Some(tcf) = &user.tcf {
                let tcfcs = tcf.generate(&state, now).map_err(StoreError::from)?;
                state.edit_tcfcs(&tcf.regulation, tcfcs, stamp);
            }
            state.edit_profile(
                user.metadata.as_ref(),
                user.country.as_deref(),
                user.last_seen_country.as_deref(),
                stamp,
            );
            let state_json = state_bytes(&state)?;
            let key: i64 = tx
                .query_one(
                    "INSERT INTO users (org_id, user_key, id, organization_user_id, version, created_at, updated_at, state)
                     VALUES ($1, nextval('assent_user_keys'), $2, $3, 1, $4, $4, $5)
                     RETURNING user_key",
                    &[&org.as_str(), &id, &user.organization_user_id, &now.millis(), &state_json],
                )
                .await?
                .get(0);
            let record = UserRecord {
                id: id.clone(),
                organization_id: org.clone(),
                organization_user_id: user.organization_user_id.clone(),
                version: 1,
                created_at: now,
                updated_at: now,
                state,
            };
            announce(
                &tx,
                org,
                mask,
                &[(key, Change::user_changed(None, &record, None))],
                now,
                None,
            )
            .await?;
            Ok(record)
        }
        .await
    })
}

/// Changes a user's profile.
pub async fn patch_user(
    client: &mut Object,
    org: &OrganizationId,
    selector: &UserSelector,
    patch: &UserPatch,
    mask: u8,
) -> Result<UserRecord, StoreError> {
    let now = Timestamp::now();
    transaction!(client, |tx| {
        async {
            let mut user = retry(read::user(&tx, org, selector, true).await)?
                .ok_or_else(|| TxError::Fail(StoreError::Domain(selector.not_found())))?;
            absorb_pending(&tx, &mut user).await?;
            let old = user.record.clone();
            if let Some(v) = patch.version
                && v != user.record.version
            {
                return Err(TxError::Fail(StoreError::conflict(format!(
                    "user '{}' is at version {}, not {v}; read it again and retry",
                    user.record.id, user.record.version
                ))));
            }
            if let Some(o) = &patch.organization_user_id
                && user.record.organization_user_id.as_ref() != Some(o)
            {
                conflict_of(
                    find(&tx, org, &UserSelector::OrganizationUserId(o.clone())).await?,
                    |other| {
                        format!(
                            "organization_user_id '{o}' already belongs to user '{}'",
                            other.id
                        )
                    },
                )?;
                user.record.organization_user_id = Some(o.clone());
            }
            let seq = next_seqs(&tx, 1).await?[0];
            let stamp = Stamp {
                at: now.millis(),
                seq,
            };
            // A profile edit leaves the status as it is: the string encodes the current one,
            // pending folds included.
            if let Some(tcf) = &patch.tcf {
                let tcfcs = tcf
                    .generate(&user.record.state, now)
                    .map_err(StoreError::from)?;
                user.record.state.edit_tcfcs(&tcf.regulation, tcfcs, stamp);
            }
            user.record.state.edit_profile(
                patch.metadata.as_ref(),
                patch.country.as_deref(),
                patch.last_seen_country.as_deref(),
                stamp,
            );
            user.record.version += 1;
            user.record.updated_at = now;
            write_users(&tx, &[&user]).await?;
            let change = Change::user_changed(Some(&old), &user.record, None);
            announce(&tx, org, mask, &[(user.key, change)], now, None).await?;
            Ok(user.record)
        }
        .await
    })
}

/// First key of the advisory locks that keep appends and erasures of an organization apart.
const ERASURE_LOCK: i32 = 0x4153_5345;

/// The organization's users epoch (see [`KnownUsers`]), which triggers on `users` move.
async fn users_epoch(tx: &Transaction<'_>, org: &OrganizationId) -> Result<i64, TxError> {
    let stmt = tx
        .prepare_cached(
            "SELECT coalesce((SELECT epoch FROM user_epochs WHERE org_id = $1), 0)::bigint",
        )
        .await?;
    Ok(tx.query_one(&stmt, &[&org.as_str()]).await?.get(0))
}

/// Takes the organization's erasure lock for the transaction: shared by appends, exclusive
/// for an erasure. An append resolves its users and inserts their events without locking
/// their rows (a row lock per user costs a write each); this lock is what keeps an erasure
/// from missing the events of an append that saw the user before it was erased. Erasures are
/// rare and short, so appends of the organization wait for one only briefly.
async fn erasure_guard(
    tx: &Transaction<'_>,
    org: &OrganizationId,
    exclusive: bool,
) -> Result<(), TxError> {
    let sql = if exclusive {
        "SELECT pg_advisory_xact_lock($1, hashtext($2))"
    } else {
        "SELECT pg_advisory_xact_lock_shared($1, hashtext($2))"
    };
    let stmt = tx.prepare_cached(sql).await?;
    tx.execute(&stmt, &[&ERASURE_LOCK, &org.as_str()]).await?;
    Ok(())
}

/// Erases a user and its events; returns the user as it was.
pub async fn delete_user(
    client: &mut Object,
    org: &OrganizationId,
    selector: &UserSelector,
    mask: u8,
) -> Result<UserRecord, StoreError> {
    let now = Timestamp::now();
    transaction!(client, |tx| {
        async {
            // Appends under way finish first; the reads below see their events.
            erasure_guard(&tx, org, true).await?;
            let mut user = retry(read::user(&tx, org, selector, true).await)?
                .ok_or_else(|| TxError::Fail(StoreError::Domain(selector.not_found())))?;
            absorb_pending(&tx, &mut user).await?;
            admin::erase_proofs_of(&tx, org, user.key).await?;
            tx.execute(
                "DELETE FROM events WHERE org_id = $1 AND user_key = $2",
                &[&org.as_str(), &user.key],
            )
            .await?;
            tx.execute(
                "DELETE FROM users WHERE org_id = $1 AND user_key = $2",
                &[&org.as_str(), &user.key],
            )
            .await?;
            let change = Change::user_deleted(&user.record);
            announce(&tx, org, mask, &[(user.key, change)], now, None).await?;
            Ok(user.record)
        }
        .await
    })
}
