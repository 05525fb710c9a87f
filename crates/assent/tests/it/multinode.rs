//! Several `assent serve` processes on one PostgreSQL database, written to at once.

use crate::common::{Api, Backend, all_events, fold, fresh_store, purpose_enabled, session};
use crate::process::{Process, serve_with};
use assent_model::event::EventView;
use assent_model::status::ConsentsView;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

const NODES: usize = 3;
const USERS: usize = 12;
const WRITERS_PER_NODE: usize = 3;
const BATCHES_PER_WRITER: usize = 15;

/// What the clients know the store must hold.
#[derive(Default)]
struct Expected {
    /// Events acknowledged, by id, with their user.
    stored: BTreeMap<String, String>,
    /// Events deleted after they were acknowledged.
    deleted: BTreeSet<String>,
}

fn event(rng: &mut StdRng, id: String) -> (Value, String) {
    let user = format!("u{}", rng.random_range(0..USERS));
    // Shared purposes, which later events override, and one of the event's own, which only a
    // lost or unfolded event can miss.
    let mut purposes = vec![json!({"id": format!("p-{id}"), "enabled": true})];
    for p in ["news", "ads", "stats"] {
        if rng.random_bool(0.6) {
            purposes.push(json!({"id": p, "enabled": rng.random_bool(0.5)}));
        }
    }
    // Back-dated events land anywhere in the past, so late arrivals often lose to newer ones.
    let day = rng.random_range(1..28);
    let body = json!({
        "id": id,
        "created_at": format!("2024-03-{day:02}T{:02}:00:00Z", rng.random_range(0..24)),
        "user": {"organization_user_id": user},
        "consents": {"purposes": purposes, "vendors": {if rng.random_bool(0.5) {"enabled"} else {"disabled"}: ["v1"]}},
    });
    (body, user)
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    body: &Value,
) -> reqwest::StatusCode {
    http.post(format!("{base}/v1/consents/events?organization_id=default"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_on_one_database_lose_and_duplicate_nothing() {
    let Some((_dir, store)) = fresh_store(Backend::Postgres).await else {
        return;
    };
    let url = store.database_url.clone().expect("a PostgreSQL store");
    // Start the nodes together: exactly one of them creates the first key.
    let starts: Vec<_> = (0..NODES)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                serve_with(&[
                    "--database-url".as_ref(),
                    url.as_ref(),
                    "--database-pool-size".as_ref(),
                    "4".as_ref(),
                ])
            })
        })
        .collect();
    let nodes: Vec<Process> = starts.into_iter().map(|h| h.join().unwrap()).collect();
    let keys: Vec<&Value> = nodes.iter().filter_map(|n| n.bootstrap.as_ref()).collect();
    assert_eq!(keys.len(), 1, "exactly one node creates the first key");
    let (key, secret) = (
        keys[0]["key"].as_str().unwrap().to_owned(),
        keys[0]["secret"].as_str().unwrap().to_owned(),
    );
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for node in &nodes {
        tokens.push(session(&http, &node.base, &key, &secret).await);
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let expected = Arc::new(Mutex::new(Expected::default()));

    // Writers on every node, interleaving events for the same users; now and then a writer
    // deletes one of its acknowledged events through another node.
    let mut handles = Vec::new();
    for n in 0..NODES {
        for w in 0..WRITERS_PER_NODE {
            let (http, bases, tokens, expected) = (
                http.clone(),
                bases.clone(),
                tokens.clone(),
                expected.clone(),
            );
            handles.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64((n * 100 + w) as u64);
                let mut mine: Vec<String> = Vec::new();
                for b in 0..BATCHES_PER_WRITER {
                    let made: Vec<(Value, String)> = (0..8)
                        .map(|i| event(&mut rng, format!("n{n}-w{w}-b{b}-e{i}")))
                        .collect();
                    let batch = Value::Array(made.iter().map(|(e, _)| e.clone()).collect());
                    let status = post(&http, &bases[n], &tokens[n], &batch).await;
                    assert!(status.is_success(), "batch refused: {status}");
                    {
                        let mut exp = expected.lock().unwrap();
                        for (e, user) in &made {
                            let id = e["id"].as_str().unwrap().to_owned();
                            exp.stored.insert(id.clone(), user.clone());
                            mine.push(id);
                        }
                    }
                    if b % 4 == 3 {
                        let victim = mine.remove(rng.random_range(0..mine.len()));
                        let other = (n + 1) % NODES;
                        let res = http
                            .delete(format!(
                                "{}/v1/consents/events/{victim}?organization_id=default",
                                bases[other]
                            ))
                            .bearer_auth(&tokens[other])
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(res.status(), reqwest::StatusCode::NO_CONTENT);
                        expected.lock().unwrap().deleted.insert(victim);
                    }
                }
            }));
        }
    }
    // Meanwhile, the same batches replayed on all nodes at the same moment.
    for r in 0..10 {
        let mut rng = StdRng::seed_from_u64(1000 + r);
        let made: Vec<(Value, String)> = (0..5)
            .map(|i| event(&mut rng, format!("replay-{r}-{i}")))
            .collect();
        let batch = Value::Array(made.iter().map(|(e, _)| e.clone()).collect());
        let sends: Vec<_> = (0..NODES)
            .map(|n| {
                let (http, base, token, batch) = (
                    http.clone(),
                    bases[n].clone(),
                    tokens[n].clone(),
                    batch.clone(),
                );
                tokio::spawn(async move { post(&http, &base, &token, &batch).await })
            })
            .collect();
        for s in sends {
            assert!(
                s.await.unwrap().is_success(),
                "every replay is answered with the events"
            );
        }
        let mut exp = expected.lock().unwrap();
        for (e, user) in made {
            exp.stored
                .insert(e["id"].as_str().unwrap().to_owned(), user);
        }
    }
    for h in handles {
        h.await.unwrap();
    }
    verify(&http, &bases, &tokens, &expected).await;
    // Once the folders have written the users' rows, the same again.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    verify(&http, &bases, &tokens, &expected).await;
}

async fn verify(
    http: &reqwest::Client,
    bases: &[String],
    tokens: &[String],
    expected: &Arc<Mutex<Expected>>,
) {
    // Every node sees the same: each live event once, each deleted one gone, and each user's
    // status the fold of its events.
    let expected = {
        let e = expected.lock().unwrap();
        Expected {
            stored: e.stored.clone(),
            deleted: e.deleted.clone(),
        }
    };
    let mut by_user: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (id, user) in &expected.stored {
        if !expected.deleted.contains(id) {
            by_user
                .entry(user.as_str())
                .or_default()
                .insert(id.as_str());
        }
    }
    for (n, base) in bases.iter().enumerate() {
        for (user, ids) in &by_user {
            let events: Vec<EventView> = all_events(http, base, &tokens[n], user)
                .await
                .expect("the user exists");
            let listed: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            let unique: BTreeSet<&str> = listed.iter().copied().collect();
            assert_eq!(
                unique.len(),
                listed.len(),
                "node {n}, {user}: an event is listed twice"
            );
            assert_eq!(&unique, ids, "node {n}, {user}: events lost or left over");
            let view: Value = http
                .get(format!(
                    "{base}/v1/consents/users/{user}?organization_id=default&$by_organization_user_id=true"
                ))
                .bearer_auth(&tokens[n])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let status: ConsentsView = serde_json::from_value(view["consents"].clone()).unwrap();
            assert_eq!(
                status,
                fold(&events),
                "node {n}, {user}: status is not the fold of its events"
            );
        }
    }
}

/// Nodes remember the users they met so as not to look them up again; an erasure or a change
/// of organization user id through another node must make them forget, and an organization
/// user id attached through another node must not let them attach a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_forgets_users_erased_or_renamed_through_another() {
    let Some((_dir, store)) = fresh_store(Backend::Postgres).await else {
        return;
    };
    let url = store.database_url.clone().expect("a PostgreSQL store");
    let args = ["--database-url".as_ref(), url.as_ref()];
    let first = serve_with(&args);
    let second = serve_with(&args);
    let bootstrap = first
        .bootstrap
        .as_ref()
        .expect("the first node creates the key");
    let (key, secret) = (
        bootstrap["key"].as_str().unwrap(),
        bootstrap["secret"].as_str().unwrap(),
    );
    let http = reqwest::Client::new();
    let mut apis = Vec::new();
    for node in [&first, &second] {
        apis.push(Api {
            base: node.base.clone(),
            org: "default".into(),
            token: session(&http, &node.base, key, secret).await,
            http: http.clone(),
        });
    }
    let (a, b) = (&apis[0], &apis[1]);
    let choice = |ouid: &str, purpose: &str| {
        json!({"user": {"organization_user_id": ouid},
               "consents": {"purposes": [{"id": purpose, "enabled": true}]}})
    };

    // Erased through b: a's next event for the same organization user id makes a new user.
    a.event(choice("erased", "p")).await;
    let erased = a.user_by_ouid("erased").await["id"].clone();
    let (status, out) = b
        .delete(&format!("/v1/consents/users/{}", erased.as_str().unwrap()))
        .await;
    assert!(status.is_success(), "{status}: {out}");
    a.event(choice("erased", "q")).await;
    let again = b.user_by_ouid("erased").await;
    assert_ne!(
        again["id"], erased,
        "the event went to the erased user: {again}"
    );
    assert_eq!(purpose_enabled(&again, "p"), None, "{again}");
    assert_eq!(purpose_enabled(&again, "q"), Some(true), "{again}");

    // Renamed through b: "before" is now "after"; a's event for "before" is a new user's.
    a.event(choice("before", "p")).await;
    let renamed = a.user_by_ouid("before").await["id"].clone();
    let (status, out) = b
        .patch(
            &format!("/v1/consents/users/{}", renamed.as_str().unwrap()),
            json!({"organization_user_id": "after"}),
        )
        .await;
    assert!(status.is_success(), "{status}: {out}");
    a.event(choice("before", "q")).await;
    let after = b.user_by_ouid("after").await;
    assert_eq!(after["id"], renamed, "{after}");
    assert_eq!(purpose_enabled(&after, "q"), None, "{after}");
    let before = b.user_by_ouid("before").await;
    assert_ne!(before["id"], renamed, "{before}");
    assert_eq!(purpose_enabled(&before, "q"), Some(true), "{before}");

    // Attached through b: a knew the user without organization user id, and cannot give it
    // another one now.
    a.event(json!({"user": {"id": "plain"}})).await;
    b.event(json!({"user": {"id": "plain", "organization_user_id": "one"}}))
        .await;
    let (status, out) = a
        .post(
            "/v1/consents/events",
            json!({"user": {"id": "plain", "organization_user_id": "two"}}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{out}");
    assert_eq!(b.user_by_ouid("one").await["id"], "plain");
    // And a, told again, files events under the id it now knows.
    a.event(choice("one", "r")).await;
    let plain = b.user_by_ouid("one").await;
    assert_eq!(plain["id"], "plain", "{plain}");
    assert_eq!(purpose_enabled(&plain, "r"), Some(true), "{plain}");
}
