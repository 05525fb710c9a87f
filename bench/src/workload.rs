//! The scenarios.

use crate::http::{Conn, login};
use crate::integrations::create_webhook;
use crate::receiver::Receiver;
use crate::{IngestArgs, RawArgs, ReadArgs, Tally, Target, report, run_clients};
use assent_model::event::{ParseContext, parse_batch, plain};
use assent_model::{OrganizationId, Timestamp};
use assent_store::postgres::{PgStore, PostgresConfig};
use assent_store::sqlite::{SqliteConfig, SqliteStore};
use assent_store::{Store, WriteOptions};
use bytes::Bytes;
use hyper::Method;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PURPOSES: [&str; 4] = ["newsletter", "analytics", "ads", "personalization"];
/// Where an id goes in a generated event, to be overwritten per request.
const ID_PLACEHOLDER: &str = "00000000-0000-0000-0000-000000000000";

/// The organization user id of user `n`.
fn user_id(n: usize) -> String {
    format!("user-{n:07}")
}

/// One event for user `n`, with random choices; with a placeholder id if `with_id`.
fn event_json(rng: &mut SmallRng, n: usize, with_id: bool) -> String {
    let mut purposes = Vec::new();
    for p in PURPOSES {
        if rng.random_bool(0.5) {
            purposes.push(format!(
                r#"{{"id":"{p}","enabled":{}}}"#,
                rng.random_bool(0.5)
            ));
        }
    }
    let id = if with_id {
        format!(r#""id":"{ID_PLACEHOLDER}","#)
    } else {
        String::new()
    };
    format!(
        r#"{{{id}"user":{{"organization_user_id":"{}"}},"consents":{{"purposes":[{}],"vendors":{{"{}":["google"]}}}},"metadata":{{"source":"bench"}}}}"#,
        user_id(n),
        purposes.join(","),
        if rng.random_bool(0.5) {
            "enabled"
        } else {
            "disabled"
        }
    )
}

/// A request body of `batch` events for random users (an object when `batch` is 1).
fn body(rng: &mut SmallRng, users: usize, batch: usize, with_id: bool) -> Vec<u8> {
    body_with_changes(rng, users, batch, with_id).0
}

/// [`body`], and the changes its request makes for each integration: one `event.created` per
/// event and one `user.created` or `user.updated` per distinct user.
pub fn body_with_changes(
    rng: &mut SmallRng,
    users: usize,
    batch: usize,
    with_id: bool,
) -> (Vec<u8>, u64) {
    if batch == 1 {
        let n = rng.random_range(0..users);
        return (event_json(rng, n, with_id).into_bytes(), 2);
    }
    let mut distinct = std::collections::HashSet::new();
    let events: Vec<String> = (0..batch)
        .map(|_| {
            let n = rng.random_range(0..users);
            distinct.insert(n);
            event_json(rng, n, with_id)
        })
        .collect();
    let changes = (batch + distinct.len()) as u64;
    (format!("[{}]", events.join(",")).into_bytes(), changes)
}

/// Writes fresh ids over the placeholders of `body`.
fn stamp_ids(body: &mut [u8], v4: bool) {
    let pat = ID_PLACEHOLDER.as_bytes();
    let mut i = 0;
    while i + pat.len() <= body.len() {
        if &body[i..i + pat.len()] == pat {
            let id = if v4 {
                uuid::Uuid::new_v4()
            } else {
                uuid::Uuid::now_v7()
            };
            id.hyphenated().encode_lower(&mut body[i..i + pat.len()]);
            i += pat.len();
        } else {
            i += 1;
        }
    }
}

fn events_path(org: &str) -> String {
    format!("/v1/consents/events?organization_id={org}")
}

/// Batches (or single events) from concurrent clients, for a time or up to a total.
pub async fn ingest(scenario: &'static str, args: IngestArgs) {
    let t = &args.target;
    let token = Arc::new(login(&t.url_for(0), &t.key, &t.secret).await);
    // Webhook integrations, all pointing at one receiver that answers 200 at once.
    let receiver = if args.integrations > 0 {
        let receiver = Receiver::start(false).await;
        for i in 0..args.integrations {
            let url = format!("{}/hook/{i}", receiver.base);
            create_webhook(&t.url_for(0), &t.org, &token, &url).await;
        }
        Some(receiver)
    } else {
        None
    };
    register_purposes(&t.url_for(0), &t.org, &token, args.purposes).await;
    let with_id = args.ids != "none";
    let v4 = args.ids == "v4";
    let mut rng = SmallRng::seed_from_u64(7);
    let bodies: Arc<Vec<(Vec<u8>, u64)>> = Arc::new(
        (0..512)
            .map(|_| body_with_changes(&mut rng, t.users, args.batch, with_id))
            .collect(),
    );
    let sent = Arc::new(AtomicU64::new(0));
    // Changes made by the answered requests, per integration.
    let changes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let (tallies, elapsed) = run_clients(args.clients, deadline, |i, deadline| {
        let (token, bodies, sent, changes) =
            (token.clone(), bodies.clone(), sent.clone(), changes.clone());
        let (url, path, batch, total) = (
            t.url_for(i),
            events_path(&t.org),
            args.batch as u64,
            args.total,
        );
        async move {
            let mut conn = Conn::open(&url).await;
            let mut tally = Tally::new();
            let mut k = i;
            loop {
                match total {
                    Some(total) if sent.fetch_add(batch, Ordering::Relaxed) >= total => break,
                    None if Instant::now() >= deadline => break,
                    _ => {}
                }
                let (b, body_changes) = &bodies[k % bodies.len()];
                let mut b = b.clone();
                k += 7;
                if with_id {
                    stamp_ids(&mut b, v4);
                }
                let start = Instant::now();
                let (status, _) = conn
                    .send(Method::POST, &path, Some(&token), Bytes::from(b))
                    .await;
                let us = start.elapsed().as_micros() as u64;
                tally.latency.record(us.max(1)).ok();
                if status.is_success() {
                    tally.ok += 1;
                    tally.events += batch;
                    changes.fetch_add(*body_changes, Ordering::Relaxed);
                } else {
                    tally.errors += 1;
                }
            }
            tally
        }
    })
    .await;
    let mut extra = serde_json::json!({"clients": args.clients, "batch": args.batch, "users": t.users, "ids": args.ids, "purposes": args.purposes});
    if let Some(receiver) = receiver {
        let changes = changes.load(Ordering::Relaxed);
        extra["integrations"] = args.integrations.into();
        extra["deliveries_expected"] = (changes * args.integrations as u64).into();
        extra["deliveries_during_load"] = receiver.stats.count().into();
    }
    report(scenario, tallies, elapsed, extra);
}

/// Registers `n` purposes of `org`: the workload's purposes first, then `purpose-5`, ….
async fn register_purposes(base: &str, org: &str, token: &str, n: usize) {
    let mut conn = Conn::open(base).await;
    for i in 0..n {
        let id = PURPOSES
            .get(i)
            .map_or_else(|| format!("purpose-{}", i + 1), |p| (*p).to_owned());
        let body = serde_json::json!({
            "id": id,
            "labels": {"en": format!("Purpose {i}"), "fr": format!("Finalité {i}")},
            "descriptions": {"en": "What we do with it"},
            "preferences": [{"id": "topics", "labels": {"en": "Topics"}, "values": [
                {"id": "tech", "labels": {"en": "Tech"}},
                {"id": "sport", "labels": {"en": "Sport"}},
                {"id": "travel", "labels": {"en": "Travel"}}]}],
            "channels": [{"id": "email", "labels": {"en": "Email"}}, {"id": "sms", "labels": {"en": "SMS"}}],
        });
        let (status, bytes) = conn
            .send(
                Method::POST,
                &format!("/v1/purposes?organization_id={org}"),
                Some(token),
                Bytes::from(body.to_string()),
            )
            .await;
        assert!(
            status.is_success(),
            "registering purpose {id} failed: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

/// Creates users `0..users`, one event each, in batches of 100 from 8 clients.
pub async fn seed(t: Target) {
    let token = Arc::new(login(&t.url_for(0), &t.key, &t.secret).await);
    let next = Arc::new(AtomicU64::new(0));
    let users = t.users as u64;
    let deadline = Instant::now() + Duration::from_secs(3600);
    let (tallies, elapsed) = run_clients(8, deadline, |i, _| {
        let (token, next, url, path) = (
            token.clone(),
            next.clone(),
            t.url_for(i),
            events_path(&t.org),
        );
        async move {
            let mut conn = Conn::open(&url).await;
            let mut rng = SmallRng::seed_from_u64(11);
            let mut tally = Tally::new();
            loop {
                let from = next.fetch_add(100, Ordering::Relaxed);
                if from >= users {
                    break;
                }
                let events: Vec<String> = (from..(from + 100).min(users))
                    .map(|n| event_json(&mut rng, n as usize, false))
                    .collect();
                let n = events.len() as u64;
                let body = format!("[{}]", events.join(","));
                let start = Instant::now();
                let (status, _) = conn
                    .send(Method::POST, &path, Some(&token), Bytes::from(body))
                    .await;
                tally
                    .latency
                    .record(start.elapsed().as_micros().max(1) as u64)
                    .ok();
                if status.is_success() {
                    tally.ok += 1;
                    tally.events += n;
                } else {
                    tally.errors += 1;
                }
            }
            tally
        }
    })
    .await;
    report(
        "seed",
        tallies,
        elapsed,
        serde_json::json!({"users": t.users}),
    );
}

/// Reads random users by organization user id.
pub async fn reads(args: ReadArgs) {
    let t = &args.target;
    let token = Arc::new(login(&t.url_for(0), &t.key, &t.secret).await);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let (tallies, elapsed) = run_clients(args.clients, deadline, |i, deadline| {
        let (token, url, org, users) = (token.clone(), t.url_for(i), t.org.clone(), t.users);
        async move {
            let mut conn = Conn::open(&url).await;
            let mut rng = SmallRng::seed_from_u64(i as u64);
            let mut tally = Tally::new();
            while Instant::now() < deadline {
                let path = format!(
                    "/v1/consents/users/{}?organization_id={org}&$by_organization_user_id=true",
                    user_id(rng.random_range(0..users))
                );
                let start = Instant::now();
                let (status, _) = conn
                    .send(Method::GET, &path, Some(&token), Bytes::new())
                    .await;
                tally
                    .latency
                    .record(start.elapsed().as_micros().max(1) as u64)
                    .ok();
                if status.is_success() {
                    tally.ok += 1;
                } else {
                    tally.errors += 1;
                }
            }
            tally
        }
    })
    .await;
    report(
        "reads",
        tallies,
        elapsed,
        serde_json::json!({"clients": args.clients, "users": t.users}),
    );
}

/// The store alone: validated batches appended by concurrent writers, no HTTP.
pub async fn raw(args: RawArgs) {
    let store: Arc<dyn Store> = match (&args.database_url, &args.dir) {
        (Some(url), _) => Arc::new(
            PgStore::connect(&PostgresConfig {
                url: url.clone(),
                pool_size: 16,
            })
            .await
            .expect("database opens"),
        ),
        (None, Some(dir)) => {
            Arc::new(SqliteStore::open(SqliteConfig::new(dir)).expect("store opens"))
        }
        (None, None) => unreachable!("clap requires one of them"),
    };
    let org = OrganizationId::parse("bench").expect("valid");
    let ctx = ParseContext {
        organization_id: org.clone(),
        now: Timestamp::now(),
        generate_tcfcs: None,
        purpose_map: Default::default(),
    };
    let mut rng = SmallRng::seed_from_u64(3);
    let batches: Arc<Vec<_>> = Arc::new(
        (0..256)
            .map(|_| {
                let b = body(&mut rng, args.users, args.batch.max(2), false);
                let v: serde_json::Value = serde_json::from_slice(&b).expect("JSON");
                parse_batch(&v, &ctx).expect("valid batch").events
            })
            .collect(),
    );
    let per_request = batches[0].len() as u64;
    let remaining = Arc::new(AtomicU64::new(args.events as u64));
    let start = Instant::now();
    let handles: Vec<_> = (0..args.writers)
        .map(|i| {
            let (store, batches, remaining, org) = (
                store.clone(),
                batches.clone(),
                remaining.clone(),
                org.clone(),
            );
            tokio::spawn(async move {
                let mut tally = Tally::new();
                let mut k = i;
                while remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                        r.checked_sub(per_request)
                    })
                    .is_ok()
                {
                    let events = batches[k % batches.len()].clone();
                    k += 3;
                    let t0 = Instant::now();
                    store
                        .append_events(&org, events, WriteOptions::default())
                        .await
                        .expect("append");
                    tally
                        .latency
                        .record(t0.elapsed().as_micros().max(1) as u64)
                        .ok();
                    tally.ok += 1;
                    tally.events += per_request;
                }
                tally
            })
        })
        .collect();
    let mut tallies = Vec::new();
    for h in handles {
        tallies.push(h.await.expect("writer"));
    }
    let elapsed = start.elapsed();
    store.shutdown().await;
    let bytes_per_event = args.dir.as_ref().map(|dir| {
        let bytes: u64 = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        bytes / args.events.max(1) as u64
    });
    let backend = if args.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    report(
        "raw",
        tallies,
        elapsed,
        serde_json::json!({"backend": backend, "writers": args.writers, "users": args.users, "bytes_per_event": bytes_per_event}),
    );
}

/// Parses and validates batches of 100 events on one thread, from bytes to validated events:
/// as the server does (plain events read into types), and through the JSON tree that any
/// other body takes.
pub fn parse() {
    let org = OrganizationId::parse("bench").expect("valid");
    let ctx = ParseContext {
        organization_id: org,
        now: Timestamp::now(),
        generate_tcfcs: None,
        purpose_map: Default::default(),
    };
    let mut rng = SmallRng::seed_from_u64(5);
    let bodies: Vec<Vec<u8>> = (0..64)
        .map(|_| {
            let mut b = body(&mut rng, 10_000, 100, true);
            stamp_ids(&mut b, false);
            b
        })
        .collect();
    let mut line = serde_json::json!({"scenario": "parse"});
    for (path, tree) in [("plain", false), ("tree", true)] {
        let start = Instant::now();
        let mut events = 0u64;
        while start.elapsed() < Duration::from_secs(5) {
            for b in &bodies {
                let batch = if tree {
                    parse_batch(&serde_json::from_slice(b).expect("JSON"), &ctx).expect("valid")
                } else {
                    plain::parse(b, &ctx).expect("bench events are plain")
                };
                events += batch.events.len() as u64;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        line[format!("{path}_events_per_s")] = (events as f64 / secs).round().into();
        line[format!("{path}_us_per_event")] =
            ((secs * 1e6 / events as f64 * 100.0).round() / 100.0).into();
    }
    line["events_per_s"] = line["plain_events_per_s"].clone();
    println!("{line}");
}
