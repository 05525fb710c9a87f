//! Consistency of the embedded store where in-memory state meets the rows on disk: identities
//! changed within a batch, keys freed and reused within a group, versions across a crash, and
//! reads racing a flush.

use crate::common::{Api, TestServer, purpose, purpose_enabled};
use crate::process::{Process, serve};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// within one batch, a user whose identity the writer remembers (with no
/// organization user id) keeps that stale identity after the first event attaches `o1`; the
/// second event naming `o2` is then resolved against the stale identity, so instead of a 409
/// it overwrites `o1`, and the writer keeps remembering `o1 -> u`.
#[tokio::test]
async fn batch_cannot_give_a_user_two_organization_user_ids() {
    let server = TestServer::start().await;
    let api = server.client().await;
    // u exists (and the writer remembers it, without an organization user id).
    api.event(json!({"user": {"id": "u"}})).await;
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!([
                {"user": {"id": "u", "organization_user_id": "o1"}},
                {"user": {"id": "u", "organization_user_id": "o2"}},
            ]),
        )
        .await;
    let user = api.user("u").await;
    // Whatever the answer, the writer's memory must agree with the database: an event naming
    // only o1 must go to the user that has o1 (or make a new one), never to a user with o2.
    let ev = api
        .event(json!({"user": {"organization_user_id": "o1"},
                      "consents": {"purposes": [{"id": "p", "enabled": true}]}}))
        .await;
    let owner = api.user(ev["user"]["id"].as_str().unwrap()).await;
    let (by_o1, _) = api
        .get("/v1/consents/users/o1?$by_organization_user_id=true")
        .await;
    eprintln!(
        "batch answered {status}; u now has {}; an event naming only o1 went to user {} \
         (organization_user_id {}); GET by o1: {by_o1}",
        user["organization_user_id"], owner["id"], owner["organization_user_id"]
    );
    assert!(
        status == StatusCode::CONFLICT && owner["organization_user_id"] == "o1",
        "expected 409 for the batch (API.md §3.4) and the o1 event on a user with o1; got \
         {status} ({body}), u has {}, and the o1 event went to user {} whose \
         organization_user_id is {}",
        user["organization_user_id"],
        owner["id"],
        owner["organization_user_id"]
    );
    server.stop().await;
}

async fn session(http: &reqwest::Client, base: &str, key: &str, secret: &str) -> String {
    let res: Value = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"type": "api-key", "key": key, "secret": secret}))
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("session JSON");
    res["access_token"].as_str().expect("token").to_owned()
}

async fn get_user(http: &reqwest::Client, base: &str, token: &str, id: &str) -> Value {
    http.get(format!(
        "{base}/v1/consents/users/{id}?organization_id=default"
    ))
    .bearer_auth(token)
    .send()
    .await
    .expect("get user")
    .json()
    .await
    .expect("user JSON")
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let res = http
        .post(format!("{base}{path}?organization_id=default"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// a version bump that no confirmed event explains (a user created, or given an
/// organization user id, by a `pending_approval` event) lives only in the writer's memory
/// until a flush; replay after a crash bumps only per confirmed event, so the version goes
/// back. A client that read the old version can then pass the optimistic lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_do_not_go_back_after_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = serve(dir.path());
    let key = first.bootstrap.clone().expect("bootstrap key printed");
    let (key, secret) = (
        key["key"].as_str().unwrap().to_owned(),
        key["secret"].as_str().unwrap().to_owned(),
    );
    let http = reqwest::Client::new();
    let token = session(&http, &first.base, &key, &secret).await;
    // u exists, flushed, with version 1 and no organization user id.
    post(
        &http,
        &first.base,
        &token,
        "/v1/consents/events",
        json!({"user": {"id": "u"}, "consents": {"purposes": [{"id": "p", "enabled": true}]}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // idle flush
    let before = get_user(&http, &first.base, &token, "u").await;
    let v0 = before["version"].as_i64().unwrap();

    // Keep the writer busy so that it never idles long enough to flush.
    let stop = Arc::new(AtomicBool::new(false));
    let noise = {
        let (http, base, token, stop) = (
            http.clone(),
            first.base.clone(),
            token.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(format!("{base}/v1/consents/events?organization_id=default"))
                    .bearer_auth(&token)
                    .json(&json!({"user": {"id": "noise"}, "status": "pending_approval"}))
                    .send()
                    .await;
                if r.is_err() {
                    return;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A pending_approval event attaches o to u: u changed, its version grows.
    let (status, body) = post(
        &http,
        &first.base,
        &token,
        "/v1/consents/events",
        json!({"status": "pending_approval", "user": {"id": "u", "organization_user_id": "o"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // And a user made by a pending_approval event.
    post(
        &http,
        &first.base,
        &token,
        "/v1/consents/events",
        json!({"status": "pending_approval", "user": {"id": "w"}}),
    )
    .await;
    let after = get_user(&http, &first.base, &token, "u").await;
    let w_before = get_user(&http, &first.base, &token, "w").await;
    let v1 = after["version"].as_i64().unwrap();
    assert_eq!(after["organization_user_id"], "o");
    assert!(v1 > v0, "attaching o is a change: {v0} -> {v1}");
    Process::kill(first);
    stop.store(true, Ordering::Relaxed);
    let _ = noise.await;

    let second = serve(dir.path());
    let token = session(&http, &second.base, &key, &secret).await;
    let restarted = get_user(&http, &second.base, &token, "u").await;
    let w_after = get_user(&http, &second.base, &token, "w").await;
    eprintln!(
        "u: version {v0} before, {v1} after attaching o, {} after the crash ({}); w: {} -> {}",
        restarted["version"],
        restarted["organization_user_id"],
        w_before["version"],
        w_after["version"]
    );
    assert_eq!(restarted["organization_user_id"], "o");
    assert!(
        restarted["version"].as_i64().unwrap() >= v1,
        "u's version went back from {v1} to {} after a crash: a client holding version {v0} \
         (no organization user id) would now pass the optimistic lock",
        restarted["version"]
    );
    assert!(
        w_after["version"].as_i64().unwrap() >= w_before["version"].as_i64().unwrap(),
        "w's version went back from {} to {}",
        w_before["version"],
        w_after["version"]
    );
    // The optimistic lock with the stale version must fail.
    let res = http
        .patch(format!(
            "{}/v1/consents/users/u?organization_id=default",
            second.base
        ))
        .bearer_auth(&token)
        .json(&json!({"version": v0, "country": "FR"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(
        res.status(),
        StatusCode::CONFLICT,
        "a PATCH with version {v0}, read before o was attached, was accepted"
    );
    drop(second);
}

/// `publish` sends a group's touched users before its deleted ones. When a group
/// deletes the user with the highest `user_key` and a later command of the same group creates
/// a user (SQLite reuses the freed rowid), the new user's overlay entry is inserted and then
/// removed: its acknowledged, still unflushed events are invisible to readers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_created_in_the_group_that_deletes_another_is_readable() {
    let server = TestServer::start().await;
    let api = server.client().await;
    api.event(json!({"user": {"id": "noise"}})).await;
    // Keep the writer busy (no idle flush; requests pile up into shared groups).
    let stop = Arc::new(AtomicBool::new(false));
    let mut noise = Vec::new();
    for _ in 0..3 {
        let (api, stop) = (api.clone(), stop.clone());
        noise.push(tokio::spawn(async move {
            let batch: Vec<Value> = (0..100)
                .map(|_| json!({"user": {"id": "noise"}, "status": "pending_approval"}))
                .collect();
            while !stop.load(Ordering::Relaxed) {
                api.post("/v1/consents/events", json!(batch)).await;
            }
        }));
    }
    let mut failures = Vec::new();
    for attempt in 0..60 {
        let a = format!("a{attempt}");
        let b = format!("b{attempt}");
        // a is the newest user: it holds the highest user_key.
        api.event(json!({"user": {"id": a}})).await;
        let del = {
            let (api, a) = (api.clone(), a.clone());
            tokio::spawn(async move { api.delete(&format!("/v1/consents/users/{a}")).await })
        };
        tokio::time::sleep(Duration::from_micros(300)).await;
        let ev = api
            .event(json!({"user": {"id": b},
                          "consents": {"purposes": [{"id": "x", "enabled": true}]}}))
            .await;
        let (st, _) = del.await.unwrap();
        assert_eq!(st, StatusCode::OK);
        let user = api.user(&b).await;
        let events = api.event_ids(&format!("user_id={b}")).await;
        if purpose_enabled(&user, "x") != Some(true) || events.is_empty() {
            failures.push(format!(
                "attempt {attempt}: event {} acknowledged, but user {b} reads {} with {} events",
                ev["id"],
                user["consents"],
                events.len()
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in noise {
        let _ = h.await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    server.stop().await;
}

/// Loads `users` users (created in key order) each with `per_user` unflushed events.
async fn load_pending(api: &Api, prefix: &str, users: usize, per_user: usize) {
    let purposes: Vec<Value> = (0..20)
        .map(|i| {
            json!({"id": format!("purpose-{i}"), "enabled": i % 2 == 0,
                        "metadata": {"k": "some metadata value to parse"}})
        })
        .collect();
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    for round in 0..per_user {
        for u in 0..users {
            batch.push(json!({"user": {"id": format!("{prefix}{u:04}")},
                              "consents": {"purposes": purposes, "vendors": {"enabled": [format!("v{round}")]}}}));
            if batch.len() == 100 {
                batches.push(std::mem::take(&mut batch));
            }
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    // Four at a time, so that the writer never idles long enough to flush.
    let batches = Arc::new(std::sync::Mutex::new(batches.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (api, batches) = (api.clone(), batches.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = batches.lock().unwrap().next();
                let Some(b) = next else { return };
                let (st, body) = api.post("/v1/consents/events", json!(b)).await;
                assert_eq!(st, StatusCode::OK, "{body}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// `list_users` reads a page of rows first and the overlay afterwards, row by row.
/// If a flush commits and clears the overlay in between, a row read before the flush is shown
/// without the events the overlay described: the list misses an acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_users_does_not_miss_an_acknowledged_event() {
    let mut failures = Vec::new();
    for attempt in 0..2 {
        // A fresh store each time, so that the page of rows is laid out the same way.
        let server = TestServer::start().await;
        let api = server.client().await;
        // Users before x in key order, with many unflushed events (slow to freshen).
        load_pending(&api, "s", 450, 30).await;
        // x is created last: its row comes after theirs in the same page of rows.
        api.event(json!({"user": {"id": "x"},
                         "consents": {"purposes": [{"id": "x", "enabled": true}]}}))
            .await;
        let start = std::time::Instant::now();
        let users = api.all_users().await;
        let took = start.elapsed();
        let listed = users.iter().find(|u| u["id"] == "x").expect("x listed");
        let direct = api.user("x").await;
        eprintln!(
            "attempt {attempt}: list took {took:?}; x listed with x={:?}, read directly x={:?}",
            purpose_enabled(listed, "x"),
            purpose_enabled(&direct, "x")
        );
        if purpose(listed, "x").is_none() {
            failures.push(format!(
                "attempt {attempt}: the list showed x without its acknowledged event: {}",
                listed["consents"]
            ));
        }
        server.stop().await;
        if !failures.is_empty() {
            break;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
