//! Integrations end to end: configuration routes, signed webhooks to real local receivers,
//! retries, parking, `410 Gone`, timeouts, ordering per user, and the delivery log.

use crate::common::{
    Api, Backend, TestServer, assert_bad_field, assert_error, session, test_delivery,
};
use crate::process::serve_with;
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rstest::rstest;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a receiver answers.
#[derive(Debug, Clone)]
pub enum Mode {
    /// 200 at once.
    Ok,
    /// Always this status.
    Status(u16),
    /// A random half of the requests fail with 500.
    Flaky,
    /// 503 with `Retry-After: 2` for the first request, 200 after.
    RetryAfterOnce,
    /// Never answers (until the client gives up).
    Hang,
    /// 200 after this many milliseconds.
    Slow(u64),
}

/// A request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// `webhook-id`.
    pub id: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub raw: Bytes,
    /// The body as JSON.
    pub body: Value,
    /// What the receiver answered.
    pub answered: u16,
    /// When it arrived.
    pub at: Instant,
}

/// A local HTTP receiver playing a webhook endpoint.
#[derive(Clone)]
pub struct Receiver {
    /// Its address.
    pub addr: SocketAddr,
    /// Every request, in arrival order.
    pub log: Arc<Mutex<Vec<Received>>>,
    /// How it answers now.
    pub mode: Arc<Mutex<Mode>>,
}

impl Receiver {
    /// Starts a receiver on a free port.
    pub async fn start(mode: Mode) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, mode)
    }

    /// Starts a receiver on `addr` (a port that was closed until now).
    pub async fn start_at(addr: SocketAddr, mode: Mode) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        Self::serve(listener, mode)
    }

    fn serve(listener: tokio::net::TcpListener, mode: Mode) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver {
            addr,
            log: Arc::default(),
            mode: Arc::new(Mutex::new(mode)),
        };
        let r = receiver.clone();
        let app = Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let r = r.clone();
            async move { r.answer(headers, body).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    async fn answer(&self, headers: HeaderMap, raw: Bytes) -> Response {
        let mode = self.mode.lock().unwrap().clone();
        let first = self.log.lock().unwrap().is_empty();
        let (status, retry_after) = match mode {
            Mode::Ok => (200, None),
            Mode::Status(s) => (s, None),
            Mode::Flaky => (if rand::random_bool(0.5) { 500 } else { 200 }, None),
            Mode::RetryAfterOnce if first => (503, Some("2")),
            Mode::RetryAfterOnce => (200, None),
            Mode::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                (200, None)
            }
            Mode::Hang => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                (200, None)
            }
        };
        self.log.lock().unwrap().push(Received {
            id: headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
            headers,
            raw,
            answered: status,
            at: Instant::now(),
        });
        let mut response = StatusCode::from_u16(status).unwrap().into_response();
        if let Some(s) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", s.parse().unwrap());
        }
        response
    }

    /// The URL of its hook.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Requests it acknowledged with a 2xx.
    pub fn acknowledged(&self) -> Vec<Received> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| (200..300).contains(&r.answered))
            .cloned()
            .collect()
    }

    /// Waits until `done` holds for the acknowledged requests, or fails after `limit`.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.acknowledged();
            if done(&got) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "receiver did not get what was expected in {limit:?}; it got {} acknowledged of {} requests: {:?}",
                got.len(),
                self.log.lock().unwrap().len(),
                got.iter()
                    .map(|r| r.body["type"].clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Creates a webhook integration; returns its id and signing secret.
async fn webhook(api: &Api, url: &str, extra: Value) -> (String, String) {
    let mut body = json!({"type_id": "webhook-http", "properties": {"url": url}});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, created) = api.post("/v1/marketplace/integrations", body).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

/// Creates a webhook integration for `receiver` that takes `event.created` only; returns its id.
pub async fn event_hook(api: &Api, receiver: &Receiver) -> String {
    webhook(
        api,
        &receiver.url(),
        json!({"event_types": ["event.created"]}),
    )
    .await
    .0
}

fn event_for(user: &str, purpose: &str, enabled: bool) -> Value {
    json!({
        "user": {"organization_user_id": user},
        "consents": {"purposes": [{"id": purpose, "enabled": enabled}]},
    })
}

/// The deliveries of an integration as listed by the API.
async fn deliveries(api: &Api, id: &str, query: &str) -> Value {
    let (status, page) = api
        .get(&format!(
            "/v1/marketplace/integrations/{id}/deliveries?$limit=1000{query}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page
}

/// Waits until the integration has `n` deliveries in `status`.
pub async fn wait_deliveries(
    api: &Api,
    id: &str,
    status: &str,
    n: usize,
    limit: Duration,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let page = deliveries(api, id, &format!("&status={status}")).await;
        if page["total"].as_u64().unwrap() as usize >= n {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "no {n} {status} deliveries in {limit:?}: {}",
            deliveries(api, id, "").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn webhooks_carry_didomi_bodies_signed_per_standard_webhooks(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let receiver = Receiver::start(Mode::Ok).await;
    let (id, secret) = webhook(&api, &receiver.url(), json!({})).await;
    assert!(secret.starts_with("whsec_"), "{secret}");

    let event = api.event(event_for("alice", "news", true)).await;
    receiver
        .wait_for(Duration::from_secs(10), |got| got.len() >= 2)
        .await;
    let got = receiver.acknowledged();
    let kinds: Vec<&str> = got
        .iter()
        .map(|r| r.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["event.created", "user.created"]);
    assert_eq!(got[0].body["parameters"]["entity"]["id"], event["id"]);
    let user = &got[1].body["parameters"];
    assert_eq!(user["new_entity"]["organization_user_id"], "alice");
    assert_eq!(
        user["new_entity"]["consents"]["purposes"][0]["enabled"],
        true
    );
    assert_eq!(user["source"]["id"], event["id"]);
    assert!(user.get("old_entity").is_none(), "{user}");

    // Verified by an implementation we did not write.
    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    for r in &got {
        verifier
            .verify(&r.raw, &r.headers)
            .unwrap_or_else(|e| panic!("signature of {} does not verify: {e:?}", r.id));
        assert_eq!(r.headers["content-type"], "application/json");
    }
    let other = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(other.verify(&got[0].raw, &got[0].headers).is_err());

    // A second event for the same user: user.updated with the status before and after.
    api.event(event_for("alice", "news", false)).await;
    receiver
        .wait_for(Duration::from_secs(10), |got| got.len() >= 4)
        .await;
    let got = receiver.acknowledged();
    assert_eq!(got[3].body["type"], "user.updated");
    let p = &got[3].body["parameters"];
    assert_eq!(p["old_entity"]["consents"]["purposes"][0]["enabled"], true);
    assert_eq!(p["new_entity"]["consents"]["purposes"][0]["enabled"], false);

    // The log shows each delivery with its attempt; the secret is never shown again.
    let page = wait_deliveries(&api, &id, "delivered", 4, Duration::from_secs(5)).await;
    let first = &page["data"][0];
    assert_eq!(first["attempts"][0]["response_code"], 200);
    assert!(first["attempts"][0]["duration_ms"].is_u64());
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    for r in &got {
        assert!(
            ids.contains(&r.id.as_str()),
            "webhook-id {} is a delivery id",
            r.id
        );
    }
    let (_, shown) = api.get(&format!("/v1/marketplace/integrations/{id}")).await;
    assert!(shown.get("secret").is_none(), "{shown}");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn every_kind_of_change_is_announced(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let receiver = Receiver::start(Mode::Ok).await;
    webhook(&api, &receiver.url(), json!({})).await;

    let (status, user) = api
        .post(
            "/v1/consents/users",
            json!({"organization_user_id": "bob", "metadata": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    let event = api.event(event_for("bob", "news", true)).await;
    let eid = event["id"].as_str().unwrap();
    let (status, _) = api
        .patch(
            &format!("/v1/consents/events/{eid}"),
            json!({"status": "pending_approval"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.delete(&format!("/v1/consents/events/{eid}")).await;
    assert!(status.is_success(), "{status}");
    let (status, _) = api
        .delete("/v1/consents/users/bob?$by_organization_user_id=true")
        .await;
    assert_eq!(status, StatusCode::OK);

    let expected = [
        "user.created",
        "event.created",
        "user.updated",
        "event.updated",
        "user.updated",
        "event.deleted",
        "user.updated",
        "user.deleted",
    ];
    receiver
        .wait_for(Duration::from_secs(10), |got| got.len() >= expected.len())
        .await;
    let got = receiver.acknowledged();
    let kinds: Vec<&str> = got
        .iter()
        .map(|r| r.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, expected, "one user's changes arrive in order");
    let updated = &got[3].body["parameters"];
    assert_eq!(updated["old_entity"]["status"], "confirmed");
    assert_eq!(updated["new_entity"]["status"], "pending_approval");
    assert_eq!(got[5].body["parameters"]["entity"]["id"], eid);
    assert_eq!(
        got[7].body["parameters"]["old_entity"]["organization_user_id"],
        "bob"
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn event_types_filter_and_disable_integrations_silences_a_write(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let receiver = Receiver::start(Mode::Ok).await;
    webhook(
        &api,
        &receiver.url(),
        json!({"event_types": ["user.created", "user.updated"]}),
    )
    .await;
    let (status, _) = api
        .post(
            "/v1/consents/events?$disable_integrations=true",
            event_for("quiet", "news", true),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    api.event(event_for("loud", "news", true)).await;
    receiver
        .wait_for(Duration::from_secs(10), |got| !got.is_empty())
        .await;
    // Give a wrongly announced change time to arrive.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let got = receiver.acknowledged();
    assert_eq!(
        got.len(),
        1,
        "{:?}",
        got.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert_eq!(got[0].body["type"], "user.created");
    assert_eq!(
        got[0].body["parameters"]["new_entity"]["organization_user_id"],
        "loud"
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_flaky_receiver_gets_every_change_once_in_order_per_user(#[case] backend: Backend) {
    let mut delivery = test_delivery();
    // Enough attempts that a receiver failing half the time does not park one (2^-30).
    delivery.delivery_retry_schedule = ["50ms"; 30].join(",").parse().unwrap();
    let Some(server) = TestServer::start_with(backend, delivery).await else {
        return;
    };
    let api = server.client().await;
    let receiver = Receiver::start(Mode::Flaky).await;
    event_hook(&api, &receiver).await;
    let mut sent: Vec<(String, String)> = Vec::new();
    for i in 0..30 {
        let user = format!("u{}", i % 3);
        let event = api.event(event_for(&user, "news", i % 2 == 0)).await;
        sent.push((user, event["id"].as_str().unwrap().to_owned()));
    }
    receiver
        .wait_for(Duration::from_secs(30), |got| got.len() >= sent.len())
        .await;
    let got = receiver.acknowledged();
    assert_eq!(got.len(), sent.len(), "each change acknowledged once");
    assert!(
        receiver.log.lock().unwrap().len() > sent.len(),
        "the receiver failed some requests, so some were retried"
    );
    for user in ["u0", "u1", "u2"] {
        let expected: Vec<&str> = sent
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, id)| id.as_str())
            .collect();
        let arrived: Vec<&str> = got
            .iter()
            .filter(|r| r.body["parameters"]["entity"]["user"]["organization_user_id"] == user)
            .map(|r| r.body["parameters"]["entity"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            arrived, expected,
            "{user}'s events arrive in the order they were made"
        );
    }
}

/// The SQLite store keeps the changes of appended events as references to its log and renders
/// them when they are delivered; a change delivered after its user's history was rewritten
/// (an event deleted, another confirmed, the profile edited, an organization user id attached)
/// still shows the user and the events as they were when it was made.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn changes_delivered_after_the_history_changed_show_it_as_it_was(#[case] backend: Backend) {
    let mut delivery = test_delivery();
    delivery.delivery_retry_schedule = ["200ms"; 150].join(",").parse().unwrap();
    let Some(server) = TestServer::start_with(backend, delivery).await else {
        return;
    };
    let api = server.client().await;
    // Down while the history is written and rewritten: only each user's first change is
    // attempted (and fails); the others wait behind it.
    let receiver = Receiver::start(Mode::Status(503)).await;
    webhook(&api, &receiver.url(), json!({})).await;

    let mut e1 = event_for("alice", "news", true);
    e1["user"]["metadata"] = json!({"plan": "free"});
    let e1 = api.event(e1).await;
    let view1 = api.user_by_ouid("alice").await;
    let e2 = api.event(event_for("alice", "news", false)).await;
    let view2 = api.user_by_ouid("alice").await;
    let mut e3 = event_for("alice", "ads", true);
    e3["status"] = json!("pending_approval");
    let e3 = api.event(e3).await;
    let bob1 = api
        .event(json!({"user": {"id": "bob-1"}, "consents": {"purposes": [{"id": "news", "enabled": true}]}}))
        .await;
    api.event(json!({"user": {"id": "bob-1", "organization_user_id": "bob"}}))
        .await;
    let carol = api.event(event_for("carol", "news", true)).await;
    let (status, _) = api
        .patch(
            "/v1/consents/users/carol?$by_organization_user_id=true",
            json!({"organization_user_id": "carol-2"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = api
        .patch(
            "/v1/consents/users/alice?$by_organization_user_id=true",
            json!({"metadata": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .delete(&format!(
            "/v1/consents/events/{}",
            e1["id"].as_str().unwrap()
        ))
        .await;
    assert!(status.is_success(), "{status}");
    let (status, _) = api
        .patch(
            &format!("/v1/consents/events/{}", e3["id"].as_str().unwrap()),
            json!({"status": "confirmed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    *receiver.mode.lock().unwrap() = Mode::Ok;
    let alice_changes = 10;
    let bob_changes = 4;
    let carol_changes = 3;
    receiver
        .wait_for(Duration::from_secs(20), |got| {
            got.len() >= alice_changes + bob_changes + carol_changes
        })
        .await;
    let got = receiver.acknowledged();
    let of = |user_id: &Value| -> Vec<Value> {
        got.iter()
            .map(|r| r.body.clone())
            .filter(|b| {
                let p = &b["parameters"];
                [&p["entity"], &p["new_entity"], &p["old_entity"]]
                    .iter()
                    .any(|e| e["user"]["id"] == *user_id || e["id"] == *user_id)
            })
            .collect()
    };
    let alice = of(&view1["id"]);
    let kinds: Vec<&str> = alice.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "event.created",
            "user.created",
            "event.created",
            "user.updated",
            "event.created",
            "user.updated",
            "event.deleted",
            "user.updated",
            "event.updated",
            "user.updated"
        ],
        "alice's changes, in order"
    );
    // The first event as it was, though deleted since.
    assert_eq!(alice[0]["parameters"]["entity"]["id"], e1["id"]);
    assert_eq!(
        alice[0]["parameters"]["entity"]["consents"]["purposes"][0]["enabled"],
        true
    );
    // The user as the API showed it after each event, though its history changed since.
    assert_eq!(alice[1]["parameters"]["new_entity"], view1);
    assert_eq!(alice[1]["parameters"]["source"]["id"], e1["id"]);
    assert_eq!(alice[3]["parameters"]["old_entity"], view1);
    assert_eq!(alice[3]["parameters"]["new_entity"], view2);
    assert_eq!(alice[3]["parameters"]["source"]["id"], e2["id"]);
    // The pending event as it was made, though confirmed since.
    assert_eq!(
        alice[4]["parameters"]["entity"]["status"],
        "pending_approval"
    );
    // The profile edit starts from the user after its events, and shows the new plan.
    assert_eq!(alice[5]["parameters"]["old_entity"], view2);
    assert_eq!(
        alice[5]["parameters"]["new_entity"]["metadata"]["plan"],
        "pro"
    );
    // The last change: e1 gone, e3 confirmed.
    let last = &alice[9]["parameters"]["new_entity"]["consents"]["purposes"];
    assert_eq!(
        last,
        &json!([{"id": "ads", "enabled": true, "enabled_li": null},
                            {"id": "news", "enabled": false, "enabled_li": null}])
    );

    // Bob was made without an organization user id; the second event attached one.
    let bob = of(&bob1["user"]["id"]);
    let kinds: Vec<&str> = bob.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "event.created",
            "user.created",
            "event.created",
            "user.updated"
        ]
    );
    assert!(
        bob[1]["parameters"]["new_entity"]
            .get("organization_user_id")
            .is_none(),
        "{}",
        bob[1]
    );
    assert!(
        bob[3]["parameters"]["old_entity"]
            .get("organization_user_id")
            .is_none(),
        "{}",
        bob[3]
    );
    assert_eq!(
        bob[3]["parameters"]["new_entity"]["organization_user_id"],
        "bob"
    );

    // Carol's organization user id was changed by a profile edit after her first event.
    let carol = of(&carol["user"]["id"]);
    let kinds: Vec<&str> = carol.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["event.created", "user.created", "user.updated"]);
    assert_eq!(
        carol[1]["parameters"]["new_entity"]["organization_user_id"],
        "carol"
    );
    assert_eq!(
        carol[2]["parameters"]["old_entity"]["organization_user_id"],
        "carol"
    );
    assert_eq!(
        carol[2]["parameters"]["new_entity"]["organization_user_id"],
        "carol-2"
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_receiver_that_is_down_for_a_while_gets_the_change_when_it_comes_back(
    #[case] backend: Backend,
) {
    let mut delivery = test_delivery();
    delivery.delivery_retry_schedule = "300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms"
        .parse()
        .unwrap();
    let Some(server) = TestServer::start_with(backend, delivery).await else {
        return;
    };
    let api = server.client().await;
    // A port that nothing listens on, for now.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (id, _) = webhook(
        &api,
        &format!("http://{addr}/hook"),
        json!({"event_types": ["event.created"]}),
    )
    .await;
    let event = api.event(event_for("carol", "news", true)).await;
    let page = wait_deliveries(&api, &id, "retrying", 1, Duration::from_secs(10)).await;
    let d = &page["data"][0];
    assert!(d["next_attempt_at"].is_string(), "{d}");
    let error = d["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("connect"), "{error}");
    assert!(d["attempts"][0].get("response_code").is_none(), "{d}");

    let receiver = Receiver::start_at(addr, Mode::Ok).await;
    receiver
        .wait_for(Duration::from_secs(10), |got| !got.is_empty())
        .await;
    assert_eq!(
        receiver.acknowledged()[0].body["parameters"]["entity"]["id"],
        event["id"]
    );
    let page = wait_deliveries(&api, &id, "delivered", 1, Duration::from_secs(5)).await;
    assert!(page["data"][0]["attempts"].as_array().unwrap().len() >= 2);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn exhausted_deliveries_are_parked_and_retried_on_request(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let receiver = Receiver::start(Mode::Status(500)).await;
    let id = event_hook(&api, &receiver).await;
    api.event(event_for("dave", "news", true)).await;
    // The test schedule retries three times, then parks.
    let page = wait_deliveries(&api, &id, "parked", 1, Duration::from_secs(15)).await;
    let parked = &page["data"][0];
    let attempts = parked["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4, "{parked}");
    assert!(attempts.iter().all(|a| a["response_code"] == 500));
    assert!(parked.get("next_attempt_at").is_none(), "{parked}");
    assert_eq!(receiver.log.lock().unwrap().len(), 4);

    *receiver.mode.lock().unwrap() = Mode::Ok;
    let did = parked["id"].as_str().unwrap();
    let (status, retried) = api
        .post(
            &format!("/v1/marketplace/integrations/{id}/deliveries/{did}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["status"], "retrying");
    receiver
        .wait_for(Duration::from_secs(10), |got| got.len() == 1)
        .await;
    let page = wait_deliveries(&api, &id, "delivered", 1, Duration::from_secs(5)).await;
    assert_eq!(page["data"][0]["id"], did);
    // Delivered: nothing left to retry.
    let (status, body) = api
        .post(
            &format!("/v1/marketplace/integrations/{id}/deliveries/{did}/retry"),
            json!({}),
        )
        .await;
    assert_error(status, &body, 409, "Conflict");
    let (status, body) = api
        .post(
            &format!("/v1/marketplace/integrations/{id}/deliveries/nope/retry"),
            json!({}),
        )
        .await;
    assert_error(status, &body, 404, "NotFound");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn gone_disables_the_integration(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let receiver = Receiver::start(Mode::Status(410)).await;
    let id = event_hook(&api, &receiver).await;
    api.event(event_for("erin", "news", true)).await;
    wait_deliveries(&api, &id, "parked", 1, Duration::from_secs(10)).await;
    let (_, integration) = api.get(&format!("/v1/marketplace/integrations/{id}")).await;
    assert_eq!(integration["enabled"], false, "{integration}");
    assert!(
        integration["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("410")
    );
    // Disabled: later changes are not delivered.
    api.event(event_for("erin", "news", false)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.log.lock().unwrap().len(), 1);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn retry_after_is_honoured(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let receiver = Receiver::start(Mode::RetryAfterOnce).await;
    event_hook(&api, &receiver).await;
    api.event(event_for("fay", "news", true)).await;
    receiver
        .wait_for(Duration::from_secs(10), |got| got.len() == 1)
        .await;
    let log = receiver.log.lock().unwrap().clone();
    assert_eq!(log.len(), 2);
    let waited = log[1].at - log[0].at;
    // The schedule says 200 ms; Retry-After says 2 s.
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    assert_eq!(log[0].id, log[1].id, "webhook-id is stable across retries");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_hanging_receiver_times_out_and_is_retried(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let receiver = Receiver::start(Mode::Hang).await;
    let id = event_hook(&api, &receiver).await;
    api.event(event_for("gus", "news", true)).await;
    let page = wait_deliveries(&api, &id, "retrying", 1, Duration::from_secs(10)).await;
    let attempt = &page["data"][0]["attempts"][0];
    assert!(
        attempt["error"].as_str().unwrap().contains("timed out"),
        "{attempt}"
    );
    let took = attempt["duration_ms"].as_u64().unwrap();
    assert!(
        (1_900..5_000).contains(&took),
        "the 2 s timeout cut it: {took} ms"
    );
    // Once it answers again, the change goes through.
    *receiver.mode.lock().unwrap() = Mode::Ok;
    receiver
        .wait_for(Duration::from_secs(15), |got| !got.is_empty())
        .await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn private_addresses_are_refused_unless_allowed(#[case] backend: Backend) {
    let mut delivery = test_delivery();
    delivery.delivery_allow_networks.clear();
    let Some(server) = TestServer::start_with(backend, delivery).await else {
        return;
    };
    let api = server.client().await;
    let receiver = Receiver::start(Mode::Ok).await;
    let id = event_hook(&api, &receiver).await;
    api.event(event_for("hal", "news", true)).await;
    let page = wait_deliveries(&api, &id, "retrying", 1, Duration::from_secs(10)).await;
    let error = page["data"][0]["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("refused"), "{error}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.log.lock().unwrap().is_empty());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn oauth_client_credentials_add_a_bearer_token(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let receiver = Receiver::start(Mode::Ok).await;
    let tokens = Arc::new(Mutex::new(Vec::<String>::new()));
    let t = tokens.clone();
    let app = Router::new().route(
        "/token",
        axum::routing::post(move |body: String| {
            let t = t.clone();
            async move {
                t.lock().unwrap().push(body);
                axum::Json(
                    json!({"access_token": "tok-123", "token_type": "Bearer", "expires_in": 3600}),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (id, _) = webhook(
        &api,
        &receiver.url(),
        json!({"event_types": ["event.created"],
               "authentication": {"url": token_url, "client_id": "assent", "client_secret": "s3cr3t"}}),
    )
    .await;
    api.event(event_for("ivy", "news", true)).await;
    api.event(event_for("ivy", "news", false)).await;
    receiver
        .wait_for(Duration::from_secs(10), |got| got.len() == 2)
        .await;
    for r in receiver.acknowledged() {
        assert_eq!(r.headers["authorization"], "Bearer tok-123");
    }
    let asked = tokens.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "the token is cached");
    assert!(
        asked[0].contains("grant_type=client_credentials"),
        "{}",
        asked[0]
    );
    assert!(asked[0].contains("client_secret=s3cr3t"));
    let (_, shown) = api.get(&format!("/v1/marketplace/integrations/{id}")).await;
    assert_eq!(shown["authentication"]["client_id"], "assent");
    assert!(!shown.to_string().contains("s3cr3t"), "{shown}");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn integrations_are_configured_with_clear_errors(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, body) = api
        .post("/v1/marketplace/integrations", json!({"type_id": "fax"}))
        .await;
    assert_bad_field(status, &body, "type_id");
    let (status, body) = api
        .post(
            "/v1/marketplace/integrations",
            json!({"type_id": "webhook-http"}),
        )
        .await;
    assert_bad_field(status, &body, "properties.url");
    let (status, body) = api
        .post(
            "/v1/marketplace/integrations",
            json!({"type_id": "webhook-http", "properties": {"url": "ftp://x"}}),
        )
        .await;
    assert_bad_field(status, &body, "properties.url");
    let (status, body) = api
        .post(
            "/v1/marketplace/integrations",
            json!({"type_id": "webhook-http", "properties": {"url": "https://example.com"},
                   "event_types": ["event.created", "event.exploded"]}),
        )
        .await;
    assert_bad_field(status, &body, "event_types[1]");
    let (status, body) = api
        .post(
            "/v1/marketplace/integrations",
            json!({"type_id": "webhook-http", "properties": {"url": "https://example.com"},
                   "authentication": {"client_id": "only"}}),
        )
        .await;
    assert_bad_field(status, &body, "authentication.client_secret");

    let (id, _) = webhook(&api, "https://example.com/a", json!({"name": "crm"})).await;
    let (status, list) = api.get("/v1/marketplace/integrations").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 1);
    assert_eq!(list["data"][0]["name"], "crm");
    assert_eq!(list["data"][0]["event_types"].as_array().unwrap().len(), 6);
    let (status, patched) = api
        .patch(
            &format!("/v1/marketplace/integrations/{id}"),
            json!({"enabled": false, "event_types": ["user.deleted"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["event_types"], json!(["user.deleted"]));
    let (status, body) = api
        .patch(
            &format!("/v1/marketplace/integrations/{id}"),
            json!({"properties": {}}),
        )
        .await;
    assert_bad_field(status, &body, "properties.url");
    let (status, _) = api
        .delete(&format!("/v1/marketplace/integrations/{id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api.get(&format!("/v1/marketplace/integrations/{id}")).await;
    assert_error(status, &body, 404, "NotFound");
    let (status, body) = api
        .get(&format!("/v1/marketplace/integrations/{id}/deliveries"))
        .await;
    assert_error(status, &body, 404, "NotFound");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn another_organization_sees_no_integration_and_no_delivery(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let other = server.new_org("globex").await;
    let receiver = Receiver::start(Mode::Ok).await;
    let (id, _) = webhook(&api, &receiver.url(), json!({})).await;
    // The other organization's writes reach none of our integrations.
    other.event(event_for("zed", "news", true)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(receiver.log.lock().unwrap().is_empty());
    for path in [
        format!("/v1/marketplace/integrations/{id}"),
        format!("/v1/marketplace/integrations/{id}/deliveries"),
    ] {
        let (status, body) = other.get(&path).await;
        assert_error(status, &body, 404, "NotFound");
    }
    let (status, body) = other
        .patch(
            &format!("/v1/marketplace/integrations/{id}"),
            json!({"enabled": false}),
        )
        .await;
    assert_error(status, &body, 404, "NotFound");
    let (status, body) = other
        .delete(&format!("/v1/marketplace/integrations/{id}"))
        .await;
    assert_error(status, &body, 404, "NotFound");
    let (_, list) = other.get("/v1/marketplace/integrations").await;
    assert_eq!(list["total"], 0);
    // Our integration still works.
    api.event(event_for("amy", "news", true)).await;
    receiver
        .wait_for(Duration::from_secs(10), |got| got.len() >= 2)
        .await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn deliveries_survive_a_restart(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let receiver = Receiver::start(Mode::Status(503)).await;
    let id = event_hook(&api, &receiver).await;
    let event = api.event(event_for("kim", "news", true)).await;
    wait_deliveries(&api, &id, "retrying", 1, Duration::from_secs(10)).await;
    let server = server.restart().await;
    *receiver.mode.lock().unwrap() = Mode::Ok;
    receiver
        .wait_for(Duration::from_secs(15), |got| !got.is_empty())
        .await;
    assert_eq!(
        receiver.acknowledged()[0].body["parameters"]["entity"]["id"],
        event["id"]
    );
    drop(server);
}

/// Starts the real binary on `dir`, delivering to local receivers with quick retries.
fn serve_delivering(dir: &std::path::Path) -> crate::process::Process {
    serve_with(&[
        "--data-dir".as_ref(),
        dir.as_os_str(),
        "--delivery-allow-networks".as_ref(),
        "127.0.0.0/8".as_ref(),
        "--delivery-retry-schedule".as_ref(),
        "100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms".as_ref(),
        // The suite keeps every core busy: low-priority deliveries would starve.
        "--delivery-priority".as_ref(),
        "normal".as_ref(),
    ])
}

#[tokio::test]
async fn sigkill_during_deliveries_loses_nothing_and_repeats_at_most_once() {
    let dir = tempfile::tempdir().unwrap();
    let process = serve_delivering(dir.path());
    let boot = process.bootstrap.clone().expect("bootstrap key");
    let (key, secret) = (
        boot["key"].as_str().unwrap().to_owned(),
        boot["secret"].as_str().unwrap().to_owned(),
    );
    let http = reqwest::Client::new();
    let token = session(&http, &process.base, &key, &secret).await;
    let api = Api {
        base: process.base.clone(),
        org: "default".into(),
        token: token.clone(),
        http: http.clone(),
    };
    let receiver = Receiver::start(Mode::Slow(20)).await;
    event_hook(&api, &receiver).await;

    let mut sent = BTreeSet::new();
    let mut process = Some(process);
    for round in 0..2 {
        let p = process.take().unwrap();
        let api = Api {
            base: p.base.clone(),
            org: "default".into(),
            token: token.clone(),
            http: http.clone(),
        };
        for b in 0..10 {
            let batch: Vec<Value> = (0..10)
                .map(|i| {
                    let id = format!("r{round}-b{b}-e{i}");
                    sent.insert(id.clone());
                    json!({"id": id, "user": {"organization_user_id": format!("u{}", i % 5)},
                           "consents": {"purposes": [{"id": "news", "enabled": i % 2 == 0}]}})
                })
                .collect();
            let (status, body) = api.post("/v1/consents/events", json!(batch)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        // Kill it while deliveries are under way.
        let before = receiver.acknowledged().len();
        receiver
            .wait_for(Duration::from_secs(20), |got| got.len() >= before + 20)
            .await;
        p.kill();
        process = Some(serve_delivering(dir.path()));
    }
    let wanted = sent.clone();
    receiver
        .wait_for(Duration::from_secs(60), |got| {
            let ids: BTreeSet<String> = got
                .iter()
                .map(|r| {
                    r.body["parameters"]["entity"]["id"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            ids == wanted
        })
        .await;
    let mut times: HashMap<String, usize> = HashMap::new();
    for r in receiver.acknowledged() {
        *times.entry(r.id.clone()).or_default() += 1;
    }
    assert_eq!(times.len(), sent.len(), "one webhook-id per change");
    let most = times.values().max().copied().unwrap_or(0);
    assert!(
        most <= 2,
        "a change acknowledged before a kill is sent at most once more, not {most} times"
    );
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_deliver_each_change_once_in_order_per_user() {
    let Some((_dir, store)) = crate::common::fresh_store(Backend::Postgres).await else {
        return;
    };
    let url = store.database_url.clone().expect("a PostgreSQL store");
    let schedule = ["50ms"; 30].join(",");
    let nodes: Vec<crate::process::Process> = (0..3)
        .map(|_| {
            serve_with(&[
                "--database-url".as_ref(),
                url.as_ref(),
                "--database-pool-size".as_ref(),
                "4".as_ref(),
                "--delivery-allow-networks".as_ref(),
                "127.0.0.0/8".as_ref(),
                // Enough attempts that a receiver failing half the time does not park one
                // (with 10, one of 60 deliveries was parked in about one run in twenty).
                "--delivery-retry-schedule".as_ref(),
                schedule.as_ref(),
                // The suite keeps every core busy: low-priority deliveries would starve.
                "--delivery-priority".as_ref(),
                "normal".as_ref(),
            ])
        })
        .collect();
    let boot = nodes
        .iter()
        .find_map(|n| n.bootstrap.clone())
        .expect("one node made the first key");
    let http = reqwest::Client::new();
    let token = session(
        &http,
        &nodes[0].base,
        boot["key"].as_str().unwrap(),
        boot["secret"].as_str().unwrap(),
    )
    .await;
    let apis: Vec<Api> = nodes
        .iter()
        .map(|n| Api {
            base: n.base.clone(),
            org: "default".into(),
            token: token.clone(),
            http: http.clone(),
        })
        .collect();
    let receiver = Receiver::start(Mode::Flaky).await;
    webhook(
        &apis[0],
        &receiver.url(),
        json!({"event_types": ["event.created"]}),
    )
    .await;
    // Every node must know the integration before the writes (each trusts what it read of an
    // organization's integrations for one second).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut sent: Vec<(String, String)> = Vec::new();
    for i in 0..60 {
        let user = format!("u{}", i % 4);
        let event = apis[i % 3]
            .event(event_for(&user, "news", i % 2 == 0))
            .await;
        sent.push((user, event["id"].as_str().unwrap().to_owned()));
    }
    receiver
        .wait_for(Duration::from_secs(60), |got| got.len() >= sent.len())
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.acknowledged();
    let mut ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), sent.len(), "one delivery per change");
    assert_eq!(got.len(), sent.len(), "no change acknowledged twice");
    for user in ["u0", "u1", "u2", "u3"] {
        let expected: Vec<&str> = sent
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, id)| id.as_str())
            .collect();
        let arrived: Vec<&str> = got
            .iter()
            .filter(|r| r.body["parameters"]["entity"]["user"]["organization_user_id"] == user)
            .map(|r| r.body["parameters"]["entity"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(arrived, expected, "{user}'s events arrive in order");
    }
    drop(nodes);
}

/// The niceness and scheduling policy of each thread of process `pid` whose name starts with
/// `prefix`.
#[cfg(target_os = "linux")]
fn scheduling(pid: u32, prefix: &str) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let task = task.expect("task").path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("stat")).expect("stat");
        // After the name in parentheses come fields 3 onwards: niceness is field 19, the
        // scheduling policy field 41.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("name") + 2..]
            .split(' ')
            .collect();
        out.push((fields[16].parse().unwrap(), fields[38].parse().unwrap()));
    }
    out
}

/// Linux's `SCHED_IDLE` policy, as `/proc` shows it.
#[cfg(target_os = "linux")]
const SCHED_IDLE: i64 = 5;

#[cfg(target_os = "linux")]
#[test]
fn delivery_threads_run_below_the_requests_unless_told_otherwise() {
    for priority in ["low", "normal", "idle"] {
        let dir = tempfile::tempdir().unwrap();
        let server = serve_with(&[
            "--data-dir".as_ref(),
            dir.path().as_os_str(),
            "--delivery-priority".as_ref(),
            priority.as_ref(),
        ]);
        let pid = server.child.id();
        // The delivery thread, then its runtime's two threads, which may still be starting.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut deliveries = scheduling(pid, "assent-deliver");
        while deliveries.len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            deliveries = scheduling(pid, "assent-deliver");
        }
        assert_eq!(deliveries.len(), 3, "the delivery threads: {deliveries:?}");
        let expected = |(nice, policy): &(i64, i64)| match priority {
            "low" => *nice > 0 && *policy == 0,
            "normal" => *nice == 0 && *policy == 0,
            _ => *policy == SCHED_IDLE,
        };
        assert!(
            deliveries.iter().all(expected),
            "--delivery-priority {priority}: (niceness, policy) {deliveries:?}"
        );
        assert_eq!(scheduling(pid, "assent-writer"), vec![(0, 0)], "the writer");
        server.kill();
    }
}
