//! Connectors end to end: local servers play Actito and mParticle at 127.0.0.1 (the
//! integrations' `base_url` points at them), and the tests check what the real APIs would
//! receive: method, path, authentication and body.

use crate::common::{Api, Backend, TestServer, assert_bad_field};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rstest::rstest;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request a fake API got.
#[derive(Debug, Clone)]
struct Request {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Value,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// How a fake answers a request: status and JSON body.
type Answer = dyn Fn(&Request) -> (u16, Value) + Send + Sync;

/// A local HTTP server playing a vendor's API.
#[derive(Clone)]
struct Fake {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
}

impl Fake {
    async fn start(answer: impl Fn(&Request) -> (u16, Value) + Send + Sync + 'static) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Fake {
            addr: listener.local_addr().unwrap(),
            log: Arc::default(),
        };
        let answer: Arc<Answer> = Arc::new(answer);
        let log = fake.log.clone();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, raw: Bytes| {
                let (answer, log) = (answer.clone(), log.clone());
                async move {
                    let request = Request {
                        method,
                        path: uri.path().to_owned(),
                        query: uri.query().map(str::to_owned),
                        headers,
                        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
                    };
                    let (status, body) = answer(&request);
                    log.lock().unwrap().push(request);
                    let mut response: Response =
                        (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
                    if status == 503 {
                        response
                            .headers_mut()
                            .insert("retry-after", "1".parse().unwrap());
                    }
                    response
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    fn url(&self, prefix: &str) -> String {
        format!("http://{}/{prefix}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the requests so far, or fails after 10 s.
    async fn wait_for(&self, done: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.requests();
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the fake did not get what was expected; it got {:#?}",
                got.iter()
                    .map(|r| (r.method.clone(), r.path.clone(), r.body.clone()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Creates an integration; returns it as answered.
async fn integration(api: &Api, body: Value) -> Value {
    let (status, created) = api.post("/v1/marketplace/integrations", body).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    created
}

/// The deliveries of an integration, newest first.
async fn deliveries(api: &Api, id: &str) -> Vec<Value> {
    let (status, page) = api
        .get(&format!(
            "/v1/marketplace/integrations/{id}/deliveries?$limit=1000"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["data"].as_array().unwrap().clone()
}

/// Waits until every one of at least `n` deliveries of the integration is delivered.
async fn wait_delivered(api: &Api, id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = deliveries(api, id).await;
        if all.len() >= n && all.iter().all(|d| d["status"] == "delivered") {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "not {n} delivered deliveries: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The deliveries of kind `kind`, oldest first.
fn delivery_of<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().rev().filter(|d| d["type"] == kind).collect()
}

fn millis(rfc3339: &str) -> i64 {
    assent_model::Timestamp::parse(rfc3339).unwrap().millis()
}

/// A fake Actito: API key `the-key`, token `tok-1`, entity `acme`, table `Customers` keyed by
/// `customerId`; `profiles` holds what was written, by key.
fn fake_actito(
    profiles: Arc<Mutex<HashMap<String, Value>>>,
) -> impl Fn(&Request) -> (u16, Value) + Send + Sync + 'static {
    move |r: &Request| {
        let table = "/actito/v4/entity/acme/table/Customers/profile";
        if r.path == "/actito/auth/token" {
            return if r.method == Method::GET && r.header("authorization") == "the-key" {
                (
                    200,
                    json!({"accessToken": "tok-1", "tokenType": "bearer", "expiresIn": "900s",
                           "scope": "read write", "jti": "ce6c1d3c"}),
                )
            } else {
                (401, json!({"message": "Unauthorized"}))
            };
        }
        if r.header("authorization") != "Bearer tok-1" {
            return (401, json!({"message": "Unauthorized"}));
        }
        let key_of = |body: &Value| {
            body["attributes"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["name"] == "customerId"))
                .and_then(|a| a["value"].as_str())
                .map(str::to_owned)
        };
        let mut profiles = profiles.lock().unwrap();
        if r.method == Method::POST && r.path == table {
            if r.query.as_deref() != Some("allowUpdate=true") {
                return (400, json!({"message": "expected allowUpdate=true"}));
            }
            let Some(key) = key_of(&r.body) else {
                return (400, json!({"message": "customerId is mandatory"}));
            };
            profiles.insert(key, r.body.clone());
            return (200, json!({"profileId": profiles.len()}));
        }
        if r.method == Method::PUT
            && let Some(key) = r.path.strip_prefix(&format!("{table}/customerId="))
        {
            let key = key.replace("%40", "@");
            return match profiles.get_mut(&key) {
                Some(profile) => {
                    *profile = r.body.clone();
                    (200, json!({"profileId": 1}))
                }
                None => (
                    404,
                    json!({"status": 404, "message": format!("No profile found for customerId={key}")}),
                ),
            };
        }
        (404, json!({"message": "no such route"}))
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn actito_gets_subscriptions_and_metadata_of_each_user_change(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let profiles = Arc::new(Mutex::new(HashMap::new()));
    let actito = Fake::start(fake_actito(profiles.clone())).await;
    let created = integration(
        &api,
        json!({
            "type_id": "actito",
            "event_types": ["event.created", "user.created", "user.updated"],
            "authentication": {"private_api_key": "the-key"},
            "properties": {"entity_id": "acme", "table_name": "Customers",
                           "user_unique_key": "customerId", "base_url": actito.url("actito")},
            "mappings": [
                {"id": "NEWSLETTER", "value": "consents_channels_email_enabled"},
                {"id": "PROMOTIONS", "value": "consents_purposes_marketing_enabled"},
                {"id": "UNSET", "value": "consents_purposes_surveys_enabled"}
            ],
            "upsert_mode": true
        }),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    assert!(created.get("secret").is_none(), "{created}");
    assert!(!created.to_string().contains("the-key"), "{created}");

    api.event(json!({
        "user": {"organization_user_id": "alice@example.com",
                 "metadata": {"firstName": "Alice", "plan": "pro"}},
        "consents": {"purposes": [{"id": "marketing", "enabled": true}],
                     "channels": [{"id": "email", "enabled": false}]}
    }))
    .await;
    let got = actito
        .wait_for(|got| got.iter().any(|r| r.method == Method::POST))
        .await;
    assert_eq!(got[0].method, Method::GET);
    assert_eq!(got[0].path, "/actito/auth/token");
    assert_eq!(got[0].header("authorization"), "the-key");
    let write = got.iter().find(|r| r.method == Method::POST).unwrap();
    assert_eq!(write.path, "/actito/v4/entity/acme/table/Customers/profile");
    assert_eq!(write.query.as_deref(), Some("allowUpdate=true"));
    assert_eq!(write.header("authorization"), "Bearer tok-1");
    assert_eq!(write.header("content-type"), "application/json");
    assert_eq!(
        write.body,
        json!({
            "attributes": [
                {"name": "customerId", "value": "alice@example.com"},
                {"name": "firstName", "value": "Alice"},
                {"name": "plan", "value": "pro"}
            ],
            "subscriptions": [
                {"name": "NEWSLETTER", "subscribe": false},
                {"name": "PROMOTIONS", "subscribe": true}
            ]
        }),
        "a mapping without a choice (UNSET) is left out"
    );

    // The next change of the user: the token is reused.
    api.event(json!({
        "user": {"organization_user_id": "alice@example.com"},
        "consents": {"channels": [{"id": "email", "enabled": true}]}
    }))
    .await;
    let got = actito
        .wait_for(|got| got.iter().filter(|r| r.method == Method::POST).count() >= 2)
        .await;
    assert_eq!(
        got.iter()
            .filter(|r| r.path.ends_with("/auth/token"))
            .count(),
        1,
        "the access token is cached"
    );
    assert_eq!(
        profiles.lock().unwrap()["alice@example.com"]["subscriptions"],
        json!([{"name": "NEWSLETTER", "subscribe": true},
               {"name": "PROMOTIONS", "subscribe": true}])
    );

    // Event changes send nothing and are delivered at once; user changes log Actito's answer.
    let all = wait_delivered(&api, id, 4).await;
    for d in delivery_of(&all, "event.created") {
        assert_eq!(d["attempts"].as_array().unwrap().len(), 1, "{d}");
        assert!(d["attempts"][0].get("response_code").is_none(), "{d}");
        assert!(d["attempts"][0].get("error").is_none(), "{d}");
    }
    let users = [
        delivery_of(&all, "user.created"),
        delivery_of(&all, "user.updated"),
    ]
    .concat();
    assert_eq!(users.len(), 2, "{all:#?}");
    for d in users {
        assert_eq!(d["attempts"][0]["response_code"], 200, "{d}");
    }
    assert_eq!(
        actito
            .requests()
            .iter()
            .filter(|r| r.method != Method::GET)
            .count(),
        2,
        "one profile write per user change, none for event changes"
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn actito_without_upsert_mode_drops_updates_of_unknown_profiles(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let profiles = Arc::new(Mutex::new(HashMap::from([(
        "known@example.com".to_owned(),
        json!({"attributes": [{"name": "customerId", "value": "known@example.com"}]}),
    )])));
    let actito = Fake::start(fake_actito(profiles.clone())).await;
    let created = integration(
        &api,
        json!({
            "type_id": "actito",
            "authentication": {"private_api_key": "the-key"},
            "properties": {"entity_id": "acme", "table_name": "Customers",
                           "user_unique_key": "customerId", "base_url": actito.url("actito")},
            "mappings": [{"id": "NEWSLETTER", "value": "consents_purposes_news_channels_email_enabled"}],
            "event_types": ["user.created", "user.updated"]
        }),
    )
    .await;
    assert_eq!(created["upsert_mode"], false);
    let id = created["id"].as_str().unwrap();

    api.event(json!({
        "user": {"organization_user_id": "stranger@example.com"},
        "consents": {"purposes": [{"id": "news", "enabled": true,
                                   "channels": [{"id": "email", "enabled": true}]}]}
    }))
    .await;
    api.event(json!({
        "user": {"organization_user_id": "known@example.com"},
        "consents": {"purposes": [{"id": "news", "enabled": true,
                                   "channels": [{"id": "email", "enabled": false}]}]}
    }))
    .await;
    let all = wait_delivered(&api, id, 2).await;
    let got = actito.requests();
    let writes: Vec<&Request> = got.iter().filter(|r| r.method == Method::PUT).collect();
    assert_eq!(writes.len(), 2, "{got:#?}");
    let stranger = writes
        .iter()
        .find(|r| r.path.contains("stranger"))
        .expect("the unknown profile was asked for");
    assert_eq!(
        stranger.path,
        "/actito/v4/entity/acme/table/Customers/profile/customerId=stranger@example.com"
    );
    assert_eq!(stranger.query, None);
    assert_eq!(stranger.header("authorization"), "Bearer tok-1");

    // Nothing was written for the stranger; the known profile got its subscription.
    let profiles = profiles.lock().unwrap();
    assert_eq!(profiles.len(), 1, "{profiles:?}");
    assert_eq!(
        profiles["known@example.com"]["subscriptions"],
        json!([{"name": "NEWSLETTER", "subscribe": false}])
    );

    // Both deliveries are delivered, each in one attempt; the dropped one logs Actito's 404.
    let codes: Vec<&Value> = all
        .iter()
        .map(|d| {
            assert_eq!(d["attempts"].as_array().unwrap().len(), 1, "{d}");
            assert!(d["attempts"][0].get("error").is_none(), "{d}");
            &d["attempts"][0]["response_code"]
        })
        .collect();
    assert_eq!(codes, [&json!(200), &json!(404)], "newest first: {all:#?}");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn mparticle_gets_gdpr_consent_state_with_basic_auth(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let mparticle = Fake::start(|r: &Request| {
        if r.method == Method::POST && r.path == "/mparticle/v2/events" {
            if r.header("authorization") == "Basic bXAta2V5Om1wLXNlY3JldA==" {
                (202, Value::Null)
            } else {
                (
                    401,
                    json!({"errors": [{"code": "UNAUTHORIZED", "message": "bad key"}]}),
                )
            }
        } else {
            (404, Value::Null)
        }
    })
    .await;
    let created = integration(
        &api,
        json!({
            "type_id": "mparticle",
            "event_types": ["event.created", "user.created", "user.updated"],
            "authentication": {"api_key": "mp-key", "api_secret": "mp-secret"},
            "properties": {"base_url": mparticle.url("mparticle"), "environment": "development"},
            "mappings": [
                {"id": "newsletter", "value": "consents_purposes_news_enabled"},
                {"id": "email_marketing", "value": "consents_purposes_news_channels_email_enabled"},
                {"id": "google", "value": "consents_vendors_google_enabled"}
            ]
        }),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["authentication"], json!({"api_key": "mp-key"}));

    let event = api
        .event(json!({
            "user": {"organization_user_id": "carol"},
            "consents": {"purposes": [{"id": "news", "enabled": true,
                                       "channels": [{"id": "email", "enabled": false}]}],
                         "vendors": {"enabled": [], "disabled": ["google"]}}
        }))
        .await;
    // A user without an organization user id cannot be matched: nothing is sent for it.
    api.event(json!({
        "user": {"id": "anonymous-1"},
        "consents": {"purposes": [{"id": "news", "enabled": false}]}
    }))
    .await;

    let all = wait_delivered(&api, id, 4).await;
    let got = mparticle.requests();
    assert_eq!(got.len(), 1, "one batch, for carol only: {got:#?}");
    let batch = &got[0];
    assert_eq!(batch.method, Method::POST);
    assert_eq!(batch.path, "/mparticle/v2/events");
    assert_eq!(batch.header("content-type"), "application/json");
    let at = millis(event["created_at"].as_str().unwrap());
    let user_created = delivery_of(&all, "user.created")
        .into_iter()
        .find(|d| d["attempts"][0].get("response_code").is_some())
        .expect("carol's user.created was sent");
    assert_eq!(user_created["attempts"][0]["response_code"], 202);
    assert_eq!(
        batch.body,
        json!({
            "source_request_id": user_created["id"],
            "environment": "development",
            "user_identities": {"customer_id": "carol"},
            "consent_state": {"gdpr": {
                "email_marketing": {"consented": false, "timestamp_unixtime_ms": at},
                "google": {"consented": false, "timestamp_unixtime_ms": at},
                "newsletter": {"consented": true, "timestamp_unixtime_ms": at}
            }},
            "events": []
        })
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_refused_mparticle_key_is_retried_with_the_answer_in_the_log(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let mparticle = Fake::start(|_: &Request| {
        (
            401,
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "bad key"}]}),
        )
    })
    .await;
    let created = integration(
        &api,
        json!({
            "type_id": "mparticle",
            "authentication": {"api_key": "wrong", "api_secret": "wrong"},
            "properties": {"base_url": mparticle.url("")},
            "mappings": [{"id": "newsletter", "value": "consents_purposes_news_enabled"}],
            "event_types": ["user.created"]
        }),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    api.event(json!({
        "user": {"organization_user_id": "dave"},
        "consents": {"purposes": [{"id": "news", "enabled": true}]}
    }))
    .await;
    let got = mparticle.wait_for(|got| got.len() >= 2).await;
    assert_eq!(got[0].path, "/v2/events");
    assert_eq!(got[0].body["environment"], "production", "the default");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = deliveries(&api, id).await;
        let attempts = all[0]["attempts"].as_array().unwrap();
        if attempts.len() >= 2 {
            assert_ne!(all[0]["status"], "delivered");
            assert_eq!(attempts[0]["response_code"], 401);
            let error = attempts[0]["error"].as_str().unwrap();
            assert!(
                error.contains("401") && error.contains("bad key"),
                "{error}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{all:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn connectors_are_validated_per_type(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let actito = json!({
        "type_id": "actito",
        "authentication": {"private_api_key": "k"},
        "properties": {"entity_id": "e", "table_name": "t", "user_unique_key": "customerId"}
    });
    let (status, body) = api
        .post("/v1/marketplace/integrations", actito.clone())
        .await;
    assert_bad_field(status, &body, "mappings");

    let mut empty = actito.clone();
    empty["mappings"] = json!([]);
    let (status, body) = api.post("/v1/marketplace/integrations", empty).await;
    assert_bad_field(status, &body, "mappings");

    let (status, body) = api
        .post(
            "/v1/marketplace/integrations",
            json!({"type_id": "mparticle",
                   "authentication": {"api_key": "k", "api_secret": "s"},
                   "properties": {"environment": "staging"},
                   "mappings": [{"id": "p", "value": "consents_purposes_p_enabled"}]}),
        )
        .await;
    assert_bad_field(status, &body, "properties.environment");

    let (status, body) = api
        .post(
            "/v1/marketplace/integrations",
            json!({"type_id": "mparticle",
                   "mappings": [{"id": "p", "value": "consents_purposes_p_enabled"}]}),
        )
        .await;
    assert_bad_field(status, &body, "authentication.api_secret");

    let mut ok = actito;
    ok["mappings"] = json!([{"id": "NEWS", "value": "consents_channels_email_enabled"}]);
    let created = integration(&api, ok).await;
    assert_eq!(created["type_id"], "actito");
    assert_eq!(created["authentication"], json!({}));
    assert!(created.get("secret").is_none(), "{created}");
}

/// Actito's one-by-one webhook body for a profile whose subscriptions changed.
fn actito_push(customer: &str, subscriptions: Value) -> Value {
    json!({
        "id": "95f1cebc-4dd7-4246-83a1-164d8da8c583",
        "data": {
            "customerId": customer,
            "timestamp": "2026-03-04T05:06:07Z",
            "subscriptions": subscriptions
        },
        "_links": {"webhook": {"href": "/webhooks/v4/entity/acme/webhookSubscription/42"}}
    })
}

fn actito_config(actito: &Fake) -> Value {
    json!({
        "type_id": "actito",
        "authentication": {"private_api_key": "the-key"},
        "properties": {"entity_id": "acme", "table_name": "Customers",
                       "user_unique_key": "customerId", "base_url": actito.url("actito")},
        "mappings": [
            {"id": "NEWSLETTER", "value": "consents_channels_email_enabled"},
            {"id": "PROMOTIONS", "value": "consents_purposes_marketing_enabled"}
        ],
        "upsert_mode": true
    })
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn actito_inbound_changes_become_events_that_are_not_echoed_back(#[case] backend: Backend) {
    use crate::integrations::{Mode, Receiver};
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let profiles = Arc::new(Mutex::new(HashMap::new()));
    let actito = Fake::start(fake_actito(profiles.clone())).await;
    let created = integration(&api, actito_config(&actito)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["inbound_token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 43, "32 bytes in base64url: {token}");
    let (_, shown) = api.get(&format!("/v1/marketplace/integrations/{id}")).await;
    assert!(shown.get("inbound_token").is_none(), "shown once: {shown}");
    assert!(!shown.to_string().contains(&token), "{shown}");
    let receiver = Receiver::start(Mode::Ok).await;
    integration(
        &api,
        json!({"type_id": "webhook-http", "properties": {"url": receiver.url()}}),
    )
    .await;

    let inbound = format!("/v1/integrations/{id}/inbound?organization_id={}", api.org);
    let (status, out) = server
        .raw(
            Method::POST,
            &inbound,
            Some(&token),
            Some(actito_push(
                "alice@example.com",
                json!([{"name": "NEWSLETTER", "subscribe": true},
                       {"name": "PROMOTIONS", "subscribe": false},
                       {"name": "NOT_MAPPED", "subscribe": true}]),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["ignored"], false, "{out}");
    let event_id = out["events"][0].as_str().unwrap().to_owned();

    // History and status, as for any event.
    let user = api.user_by_ouid("alice@example.com").await;
    assert_eq!(
        crate::common::channel(&user["consents"]["channels"], "email").unwrap()["enabled"],
        true,
        "{user}"
    );
    assert_eq!(
        crate::common::purpose(&user, "marketing").unwrap()["enabled"],
        false,
        "{user}"
    );
    let user_id = user["id"].as_str().unwrap();
    let events = api.events(&format!("user_id={user_id}")).await;
    assert_eq!(events["total"], 1, "{events}");
    let event = &events["data"][0];
    assert_eq!(event["id"], event_id.as_str());
    assert_eq!(event["created_at"], "2026-03-04T05:06:07.000Z");
    assert_eq!(
        event["metadata"],
        json!({"source": "actito", "integration_id": id})
    );

    // Other integrations hear of it.
    receiver
        .wait_for(Duration::from_secs(10), |got| {
            let kinds: Vec<&Value> = got.iter().map(|r| &r.body["type"]).collect();
            kinds.contains(&&json!("event.created")) && kinds.contains(&&json!("user.created"))
        })
        .await;
    let got = receiver.acknowledged();
    let created_event = got
        .iter()
        .find(|r| r.body["type"] == "event.created")
        .unwrap();
    assert_eq!(
        created_event.body["parameters"]["entity"]["id"],
        event_id.as_str()
    );

    // Actito does not get its own change back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        actito.requests().iter().all(|r| r.method == Method::GET),
        "no profile write for a change that came from Actito: {:?}",
        actito.requests()
    );
    assert!(deliveries(&api, &id).await.is_empty());

    // A change made in Assent afterwards still reaches Actito.
    api.event(json!({
        "user": {"organization_user_id": "alice@example.com"},
        "consents": {"purposes": [{"id": "marketing", "enabled": true}]}
    }))
    .await;
    actito
        .wait_for(|got| got.iter().any(|r| r.method == Method::POST))
        .await;
    assert_eq!(
        profiles.lock().unwrap()["alice@example.com"]["subscriptions"],
        json!([{"name": "NEWSLETTER", "subscribe": true},
               {"name": "PROMOTIONS", "subscribe": true}])
    );
    let all = wait_delivered(&api, &id, 1).await;
    assert_eq!(all.len(), 1, "only the change made in Assent: {all:#?}");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn actito_inbound_needs_the_integrations_own_token(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let actito = Fake::start(fake_actito(Arc::default())).await;
    let first = integration(&api, actito_config(&actito)).await;
    let second = integration(&api, actito_config(&actito)).await;
    let id = first["id"].as_str().unwrap();
    let token = first["inbound_token"].as_str().unwrap();
    let other_token = second["inbound_token"].as_str().unwrap();
    assert_ne!(token, other_token);
    let body = actito_push(
        "alice@example.com",
        json!([{"name": "NEWSLETTER", "subscribe": true}]),
    );
    let inbound = format!("/v1/integrations/{id}/inbound?organization_id={}", api.org);

    // Missing, wrong, another integration's, a session's, wrong in the query: 401.
    for (path, bearer) in [
        (inbound.clone(), None),
        (inbound.clone(), Some("not-the-token")),
        (inbound.clone(), Some(other_token)),
        (inbound.clone(), Some(api.token.as_str())),
        (format!("{inbound}&token=nope"), None),
    ] {
        let (status, out) = server
            .raw(Method::POST, &path, bearer, Some(body.clone()))
            .await;
        crate::common::assert_error(status, &out, 401, "NotAuthenticated");
    }

    // Another organization, an unknown id, or an integration that is not Actito's: 404.
    let other = server.new_org("other-org").await;
    let (status, out) = server
        .raw(
            Method::POST,
            &format!(
                "/v1/integrations/{id}/inbound?organization_id={}",
                other.org
            ),
            Some(token),
            Some(body.clone()),
        )
        .await;
    crate::common::assert_error(status, &out, 404, "NotFound");
    let hook = integration(
        &api,
        json!({"type_id": "webhook-http", "properties": {"url": "http://127.0.0.1:9/h"}}),
    )
    .await;
    for missing in [
        "0190b7d2-6c5e-7cc3-8c1e-000000000000",
        hook["id"].as_str().unwrap(),
    ] {
        let (status, out) = server
            .raw(
                Method::POST,
                &format!(
                    "/v1/integrations/{missing}/inbound?organization_id={}",
                    api.org
                ),
                Some(token),
                Some(body.clone()),
            )
            .await;
        crate::common::assert_error(status, &out, 404, "NotFound");
    }
    assert!(
        api.events("organization_user_id=alice@example.com").await["data"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was written"
    );

    // Only unmapped subscriptions: accepted (token in the query), nothing written.
    let (status, out) = server
        .raw(
            Method::POST,
            &format!("{inbound}&token={token}"),
            None,
            Some(actito_push(
                "bob@example.com",
                json!([{"name": "SOMETHING_ELSE", "subscribe": true}]),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out, json!({"ignored": true, "events": []}));
    let (status, _) = api
        .get("/v1/consents/users/bob@example.com?$by_organization_user_id=true")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no user was created");
}
