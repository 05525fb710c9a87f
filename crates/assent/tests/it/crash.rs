//! Crash safety: a child server ingesting batches is killed with SIGKILL at random moments;
//! after each restart every acknowledged event is there, no batch is half-applied, and every
//! user's status equals the fold of its events.

use crate::common::{all_events, fold, session};
use crate::process::{Process, serve};
use assent_model::status::ConsentsView;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const USERS: usize = 40;
const ROUNDS: usize = 12;
const BATCH: usize = 20;

/// A batch of events with client ids, some back-dated, for random users.
fn batch(rng: &mut StdRng, round: usize, writer: usize, n: usize) -> Vec<Value> {
    (0..BATCH)
        .map(|i| {
            let mut purposes = Vec::new();
            for p in ["news", "ads", "stats"] {
                if rng.random_bool(0.6) {
                    purposes.push(json!({"id": p, "enabled": rng.random_bool(0.5)}));
                }
            }
            let vendor = if rng.random_bool(0.5) {
                "enabled"
            } else {
                "disabled"
            };
            json!({
                "id": format!("r{round}-w{writer}-b{n}-e{i}"),
                "created_at": format!("2024-01-{:02}T00:00:00Z", rng.random_range(1..28)),
                "user": {"organization_user_id": format!("u{}", rng.random_range(0..USERS))},
                "consents": {"purposes": purposes, "vendors": {vendor: ["v1"]}},
            })
        })
        .collect()
}

/// Ids of the batches the server acknowledged, and of every batch sent.
#[derive(Default)]
struct Ledger {
    acknowledged: Vec<Vec<String>>,
    sent: Vec<Vec<String>>,
}

async fn ingest_until_killed(
    base: String,
    token: String,
    round: usize,
    ledger: Arc<Mutex<Ledger>>,
) {
    let http = reqwest::Client::new();
    let mut handles = Vec::new();
    for writer in 0..4 {
        let (http, base, token, ledger) =
            (http.clone(), base.clone(), token.clone(), ledger.clone());
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64((round * 10 + writer) as u64);
            for n in 0.. {
                let events = batch(&mut rng, round, writer, n);
                let ids: Vec<String> = events
                    .iter()
                    .map(|e| e["id"].as_str().unwrap().to_owned())
                    .collect();
                ledger.lock().unwrap().sent.push(ids.clone());
                let res = http
                    .post(format!("{base}/v1/consents/events?organization_id=default"))
                    .bearer_auth(&token)
                    .json(&events)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_success() => {
                        // Acknowledged only once the whole answer arrived.
                        if r.bytes().await.is_ok() {
                            ledger.lock().unwrap().acknowledged.push(ids);
                        }
                    }
                    Ok(r) => panic!("batch refused: {}", r.status()),
                    Err(_) => return, // the server died
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_event_and_leaves_no_half_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = serve(dir.path());
    let key = first.bootstrap.clone().expect("bootstrap key printed");
    let (key, secret) = (
        key["key"].as_str().unwrap().to_owned(),
        key["secret"].as_str().unwrap().to_owned(),
    );
    drop(first);
    let http = reqwest::Client::new();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = StdRng::seed_from_u64(42);
    for round in 0..ROUNDS {
        let server = serve(dir.path());
        let token = session(&http, &server.base, &key, &secret).await;
        let ingest = tokio::spawn(ingest_until_killed(
            server.base.clone(),
            token,
            round,
            ledger.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
        Process::kill(server);
        let _ = ingest.await;
    }

    let server = serve(dir.path());
    let token = session(&http, &server.base, &key, &secret).await;
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(
        ledger.acknowledged.len() > ROUNDS,
        "too few batches acknowledged to test anything"
    );

    // Every event of every batch sent, and whether it is stored.
    let mut stored: BTreeSet<String> = BTreeSet::new();
    let mut statuses_checked = 0;
    for u in 0..USERS {
        let ouid = format!("u{u}");
        let Some(events) = all_events(&http, &server.base, &token, &ouid).await else {
            continue;
        };
        stored.extend(events.iter().map(|e| e.id.clone()));
        let user: Value = http
            .get(format!(
                "{}/v1/consents/users/{ouid}?organization_id=default&$by_organization_user_id=true",
                server.base
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("user")
            .json()
            .await
            .expect("user JSON");
        let status: ConsentsView =
            serde_json::from_value(user["consents"].clone()).expect("status");
        assert_eq!(
            status,
            fold(&events),
            "user {ouid}: status differs from the fold of its events"
        );
        statuses_checked += 1;
    }
    assert!(statuses_checked > 0);
    for ids in &ledger.acknowledged {
        for id in ids {
            assert!(stored.contains(id), "acknowledged event {id} was lost");
        }
    }
    for ids in &ledger.sent {
        let present = ids.iter().filter(|id| stored.contains(*id)).count();
        assert!(
            present == 0 || present == ids.len(),
            "a batch was half-applied: {present} of {} events stored ({})",
            ids.len(),
            ids[0]
        );
    }
    eprintln!(
        "crash test: {} batches acknowledged, {} sent, {} events stored",
        ledger.acknowledged.len(),
        ledger.sent.len(),
        stored.len()
    );
}
