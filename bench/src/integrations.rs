//! Integrations (webhooks): creating them, and the delivery scenario.

use crate::http::{Conn, login};
use crate::receiver::Receiver;
use crate::workload::body_with_changes;
use crate::{DeliveriesArgs, Tally, run_clients};
use bytes::Bytes;
use hyper::Method;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Creates a `webhook-http` integration of `org` delivering every kind of change to `url`;
/// returns its id.
pub async fn create_webhook(base: &str, org: &str, token: &str, url: &str) -> String {
    let mut conn = Conn::open(base).await;
    let body = serde_json::json!({
        "type_id": "webhook-http",
        "name": "bench",
        "properties": {"url": url},
    });
    let (status, bytes) = conn
        .send(
            Method::POST,
            &format!("/v1/marketplace/integrations?organization_id={org}"),
            Some(token),
            Bytes::from(body.to_string()),
        )
        .await;
    assert!(
        status.is_success(),
        "creating an integration failed: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("integration JSON");
    assert!(
        v["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "the answer has no signing secret: {v}"
    );
    v["id"].as_str().expect("integration id").to_owned()
}

/// The integration's deliveries in `status`, as the API counts them (-1 if it failed).
async fn deliveries_total(conn: &mut Conn, org: &str, token: &str, id: &str, status: &str) -> i64 {
    let path = format!(
        "/v1/marketplace/integrations/{id}/deliveries?organization_id={org}&status={status}&$limit=1"
    );
    let (code, bytes) = conn
        .send(Method::GET, &path, Some(token), Bytes::new())
        .await;
    if !code.is_success() {
        eprintln!(
            "GET {path}: {code} {}",
            String::from_utf8_lossy(&bytes)
                .chars()
                .take(300)
                .collect::<String>()
        );
        return -1;
    }
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["total"].as_i64())
        .unwrap_or(-1)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// One integration pointing at our receiver; batches of events over `--users` users until
/// `--changes` changes are expected; then how fast they arrive.
pub async fn deliveries(args: DeliveriesArgs) {
    let t = &args.target;
    let base = t.url_for(0);
    let token = Arc::new(login(&base, &t.key, &t.secret).await);
    let receiver = Receiver::start(true).await;
    let id = create_webhook(&base, &t.org, &token, &format!("{}/hook", receiver.base)).await;

    let mut rng = SmallRng::seed_from_u64(13);
    let bodies: Arc<Vec<(Vec<u8>, u64)>> = Arc::new(
        (0..512)
            .map(|_| body_with_changes(&mut rng, t.users, args.batch, false))
            .collect(),
    );
    // Changes of the requests sent, and of those answered 2xx.
    let planned = Arc::new(AtomicU64::new(0));
    let expected = Arc::new(AtomicU64::new(0));
    let target = args.changes;
    let start = Instant::now();
    let far = start + Duration::from_secs(24 * 3600);
    let (tallies, _) = run_clients(args.clients, far, |i, _| {
        let (token, bodies, planned, expected) = (
            token.clone(),
            bodies.clone(),
            planned.clone(),
            expected.clone(),
        );
        let (url, path, batch) = (
            t.url_for(i),
            format!("/v1/consents/events?organization_id={}", t.org),
            args.batch as u64,
        );
        async move {
            let mut conn = Conn::open(&url).await;
            let mut tally = Tally::new();
            let mut k = i;
            loop {
                let (b, changes) = &bodies[k % bodies.len()];
                k += 7;
                if planned.fetch_add(*changes, Ordering::Relaxed) >= target {
                    break;
                }
                let t0 = Instant::now();
                let (status, _) = conn
                    .send(Method::POST, &path, Some(&token), Bytes::from(b.clone()))
                    .await;
                tally
                    .latency
                    .record(t0.elapsed().as_micros().max(1) as u64)
                    .ok();
                if status.is_success() {
                    tally.ok += 1;
                    tally.events += batch;
                    expected.fetch_add(*changes, Ordering::Relaxed);
                } else {
                    tally.errors += 1;
                }
            }
            tally
        }
    })
    .await;
    let ingest_end = Instant::now();
    let during_ingest = receiver.stats.count();
    let expected = expected.load(Ordering::Relaxed);
    let (mut ok, mut errors, mut events) = (0, 0, 0);
    for tally in &tallies {
        ok += tally.ok;
        errors += tally.errors;
        events += tally.events;
    }

    // Wait for every delivery, until none came for `--stall` seconds, or `--max-wait`.
    eprintln!(
        "deliveries: {events} events written in {:.2} s, {expected} deliveries expected, {during_ingest} received",
        (ingest_end - start).as_secs_f64()
    );
    let stall = Duration::from_secs(args.stall);
    let give_up = ingest_end + Duration::from_secs(args.max_wait);
    let (mut last_count, mut last_progress) = (during_ingest, Instant::now());
    let mut next_note = Instant::now() + Duration::from_secs(5);
    let complete = loop {
        let c = receiver.stats.count();
        if c >= expected {
            break true;
        }
        let now = Instant::now();
        if c != last_count {
            (last_count, last_progress) = (c, now);
        } else if now - last_progress >= stall {
            eprintln!("deliveries: none for {} s, giving up", args.stall);
            break false;
        }
        if now >= give_up {
            eprintln!(
                "deliveries: still incomplete after {} s, giving up",
                args.max_wait
            );
            break false;
        }
        if now >= next_note {
            next_note += Duration::from_secs(5);
            eprintln!(
                "deliveries: {c}/{expected} received, {:.0} s after the end of ingest",
                (now - ingest_end).as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (received, first, last) = {
        let seen = receiver.stats.seen.lock().expect("not poisoned");
        (receiver.stats.count(), seen.first, seen.last)
    };
    // Anything sent again after that (duplicates) comes in the next seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // What the server's delivery log says.
    let mut conn = Conn::open(&base).await;
    let mut api = [0i64; 4];
    let statuses = ["delivered", "queued", "retrying", "parked"];
    let wait_until = Instant::now() + Duration::from_secs(15);
    loop {
        for (n, status) in api.iter_mut().zip(statuses) {
            *n = deliveries_total(&mut conn, &t.org, &token, &id, status).await;
        }
        if api[0] >= expected as i64 || Instant::now() >= wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    if received == 0 && api[2] > 0 {
        eprintln!(
            "deliveries: none arrived and {} are retrying; does the server allow loopback \
             (ASSENT_DELIVERY_ALLOW_NETWORKS=127.0.0.0/8)?",
            api[2]
        );
    }
    let seen = receiver.stats.seen.lock().expect("not poisoned");
    let total = receiver.stats.count();
    let (first_after_start, first_to_last, drain) = match (first, last) {
        (Some(f), Some(l)) => (
            secs(f - start),
            secs(l - f),
            secs(l.saturating_duration_since(ingest_end)),
        ),
        _ => (-1.0, -1.0, -1.0),
    };
    let ingest_s = (ingest_end - start).as_secs_f64();
    let out = serde_json::json!({
        "scenario": "deliveries",
        "users": t.users,
        "clients": args.clients,
        "batch": args.batch,
        "requests": ok,
        "errors": errors,
        "events": events,
        "ingest_s": secs(ingest_end - start),
        "events_per_s": (events as f64 / ingest_s).round(),
        "deliveries_expected": expected,
        "received": received,
        "deliveries_per_s": if first_to_last > 0.0 { (received as f64 / first_to_last).round() } else { 0.0 },
        "first_delivery_after_start_s": first_after_start,
        "first_to_last_s": first_to_last,
        "drain_after_ingest_s": drain,
        "received_during_ingest": during_ingest,
        "complete": complete,
        "received_later": total - received,
        "unique_ids": seen.ids.len(),
        "duplicates": seen.duplicates,
        "missing": expected.saturating_sub(seen.ids.len() as u64),
        "unsigned": seen.unsigned,
        "connections": receiver.stats.connections.load(Ordering::Relaxed),
        "types": seen.types,
        "api_delivered": api[0],
        "api_queued": api[1],
        "api_retrying": api[2],
        "api_parked": api[3],
    });
    println!("{out}");
}
