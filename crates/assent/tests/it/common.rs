//! The test harness: a real server on a random port and an HTTP client for it.

#![allow(dead_code)]

use assent::serve::{
    DeliveryArgs, DeliveryPriority, ExportArgs, LimitArgs, RunningServer, ServeArgs, StoreArgs,
    TcfArgs, start,
};
use assent_model::consents::{Consents, Vendors};
use assent_model::event::{EventBody, EventView};
use assent_model::status::ConsentsView;
use assent_model::{Regulation, Stamp, UserState};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::Once;
use std::time::Duration;
use tempfile::TempDir;

/// The store a conformance test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store in a temporary directory.
    Sqlite,
    /// A fresh schema of the database named by `ASSENT_TEST_DATABASE_URL`.
    Postgres,
}

/// Variable naming the PostgreSQL database of the conformance run.
const DATABASE_VARIABLE: &str = "ASSENT_TEST_DATABASE_URL";

/// A fresh place for a test server's data: a temporary directory, and for PostgreSQL a schema
/// of its own (the URL then selects it with `search_path`). `None` when PostgreSQL is asked
/// for and not configured: the test is then skipped, and the run says so once.
pub async fn fresh_store(backend: Backend) -> Option<(TempDir, StoreArgs)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = StoreArgs::sqlite(dir.path());
    if backend == Backend::Postgres {
        let Ok(url) = std::env::var(DATABASE_VARIABLE) else {
            static SKIPPED: Once = Once::new();
            SKIPPED.call_once(|| {
                // Straight to the terminal: test output capture would hide it.
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL conformance run skipped: set {DATABASE_VARIABLE} to run it"
                );
            });
            return None;
        };
        args.database_url = Some(fresh_schema(&url).await);
        args.database_pool_size = 4;
    }
    Some((dir, args))
}

/// Makes a new schema in the database at `url` and returns a URL that uses it. Schemas left
/// by runs more than an hour old are dropped first.
pub async fn fresh_schema(url: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the test database is reachable");
    tokio::spawn(connection);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    static CLEANED: Once = Once::new();
    let mut clean = false;
    CLEANED.call_once(|| clean = true);
    if clean {
        let rows = client
            .query(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'assent_t_%'",
                &[],
            )
            .await
            .unwrap();
        for row in rows {
            let name: String = row.get(0);
            let born: u64 = name
                .split('_')
                .nth(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if born + 3600 < now {
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await;
            }
        }
    }
    let name = format!("assent_t_{now}_{}", rand::random::<u32>());
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .expect("schema created");
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{name}")
}

/// A running server with a fresh data directory and its bootstrap key.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The bootstrap organization (`default`).
    pub org: String,
    /// The bootstrap key.
    pub key: String,
    /// The bootstrap secret.
    pub secret: String,
    /// The data directory (removed when the server is dropped).
    pub dir: TempDir,
    /// Where the data lives (the directory, or a PostgreSQL schema).
    pub store: StoreArgs,
    /// A plain HTTP client.
    pub http: reqwest::Client,
    /// The rate limits and request limits it runs with.
    pub limits: LimitArgs,
    /// The TCF settings it runs with.
    pub tcf: TcfArgs,
    server: Option<RunningServer>,
}

/// Delivery settings for tests: local receivers allowed, retries within seconds, and
/// deliveries at the priority of requests: the suite keeps every core busy with other tests,
/// which would starve low-priority deliveries past the tests' waits (the priority itself is
/// tested on a real `assent serve`, `delivery_threads_run_below_the_requests_…`).
pub fn test_delivery() -> DeliveryArgs {
    DeliveryArgs {
        delivery_retry_schedule: "200ms,400ms,800ms".parse().expect("schedule"),
        delivery_timeout: std::time::Duration::from_secs(2),
        delivery_allow_networks: vec!["127.0.0.0/8".parse().expect("network")],
        delivery_priority: DeliveryPriority::Normal,
        ..DeliveryArgs::default()
    }
}

/// Limits for tests: those of `assent serve`.
/// Exports of a test server: under its data directory, looked for every 100 ms, retried
/// after 1 s.
pub fn test_exports(dir: &TempDir) -> ExportArgs {
    ExportArgs {
        export_root: dir.path().join("exports"),
        export_tick: Duration::from_millis(100),
        export_retry_delay: Duration::from_secs(1),
        export_lease: Duration::from_secs(3600),
    }
}

/// Rate limits of a test server.
pub fn test_limits() -> LimitArgs {
    LimitArgs::default()
}

impl TestServer {
    /// Starts a server on a fresh embedded store.
    pub async fn start() -> TestServer {
        Self::start_on(Backend::Sqlite)
            .await
            .expect("SQLite is always available")
    }

    /// Starts a server on a fresh store of `backend`; `None` when that backend is not
    /// configured (the test is then skipped).
    pub async fn start_on(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, test_delivery()).await
    }

    /// Starts a server on a fresh store of `backend` with these delivery settings.
    pub async fn start_with(backend: Backend, delivery: DeliveryArgs) -> Option<TestServer> {
        Self::start_full(backend, delivery, test_limits()).await
    }

    /// Starts a server on a fresh store of `backend` with these limits.
    pub async fn start_limited(backend: Backend, limits: LimitArgs) -> Option<TestServer> {
        Self::start_full(backend, test_delivery(), limits).await
    }

    /// Starts a server on a fresh store of `backend` with these delivery settings and limits.
    pub async fn start_full(
        backend: Backend,
        delivery: DeliveryArgs,
        limits: LimitArgs,
    ) -> Option<TestServer> {
        Self::start_custom(backend, delivery, limits, TcfArgs::default()).await
    }

    /// Starts a server on a fresh store of `backend` with these TCF settings.
    pub async fn start_tcf(backend: Backend, tcf: TcfArgs) -> Option<TestServer> {
        Self::start_custom(backend, test_delivery(), test_limits(), tcf).await
    }

    /// Starts a server on a fresh store of `backend` with every setting given.
    pub async fn start_custom(
        backend: Backend,
        delivery: DeliveryArgs,
        limits: LimitArgs,
        tcf: TcfArgs,
    ) -> Option<TestServer> {
        let (dir, store) = fresh_store(backend).await?;
        let server = start(ServeArgs {
            listen: "127.0.0.1:0".into(),
            store: store.clone(),
            delivery,
            limits: limits.clone(),
            tcf: tcf.clone(),
            exports: test_exports(&dir),
        })
        .await
        .expect("server starts");
        let key = server
            .bootstrap_key
            .clone()
            .expect("a fresh store makes a key");
        Some(TestServer {
            base: format!("http://{}", server.addr),
            org: key.record.organization_id.to_string(),
            key: key.record.key.clone(),
            secret: key.secret.clone(),
            dir,
            store,
            http: reqwest::Client::new(),
            limits,
            tcf,
            server: Some(server),
        })
    }

    /// The key that signs session tokens, wherever the store keeps it.
    pub async fn signing_key(&self) -> Vec<u8> {
        match &self.store.database_url {
            None => std::fs::read(self.dir.path().join("signing.key")).expect("signing key file"),
            Some(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("database reachable");
                tokio::spawn(connection);
                client
                    .query_one(
                        "SELECT value FROM assent_meta WHERE key = 'signing_key'",
                        &[],
                    )
                    .await
                    .expect("signing key row")
                    .get(0)
            }
        }
    }

    /// Stops the server, waiting for its writes to finish.
    pub async fn stop(mut self) -> (TempDir, StoreArgs) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("server stops cleanly");
        }
        (self.dir, self.store)
    }

    /// Opens a session with a key and secret; returns the token.
    pub async fn session(&self, key: &str, secret: &str) -> String {
        let (status, body) = self
            .raw(
                Method::POST,
                "/v1/sessions",
                None,
                Some(json!({"type": "api-key", "key": key, "secret": secret})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "session: {body}");
        body["access_token"].as_str().expect("token").to_owned()
    }

    /// A client of the bootstrap organization.
    pub async fn client(&self) -> Api {
        let token = self.session(&self.key, &self.secret).await;
        Api {
            base: self.base.clone(),
            org: self.org.clone(),
            token,
            http: self.http.clone(),
        }
    }

    /// Creates another organization with a key (as `assent keys create` does, while the server
    /// runs) and returns a client of it.
    pub async fn new_org(&self, org: &str) -> Api {
        let (key, secret) = create_key(&self.store, org).await;
        let token = self.session(&key, &secret).await;
        Api {
            base: self.base.clone(),
            org: org.to_owned(),
            token,
            http: self.http.clone(),
        }
    }

    /// Sends a request with an optional bearer token and JSON body; returns status and JSON
    /// body (`Value::Null` when the body is empty or not JSON).
    pub async fn raw(
        &self,
        method: Method,
        path_and_query: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path_and_query}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let bytes = res.bytes().await.expect("body read");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// Creates a key for `org` in `store`, as `assent keys create` does; returns (key, secret).
pub async fn create_key(store: &StoreArgs, org: &str) -> (String, String) {
    let line = assent::cli::create_key(&assent::cli::KeysCreateArgs {
        organization: org.to_owned(),
        name: None,
        store: store.clone(),
    })
    .await
    .expect("key created");
    let v: Value = serde_json::from_str(&line).expect("key JSON");
    (
        v["key"].as_str().unwrap().to_owned(),
        v["secret"].as_str().unwrap().to_owned(),
    )
}

/// An authenticated client of one organization. Paths are given without `organization_id`;
/// the client adds it.
#[derive(Clone)]
pub struct Api {
    /// Server base URL.
    pub base: String,
    /// The organization.
    pub org: String,
    /// The session token.
    pub token: String,
    /// HTTP client.
    pub http: reqwest::Client,
}

impl Api {
    /// `path` with `organization_id` of this client appended to its query.
    pub fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}organization_id={}", self.base, self.org)
    }

    /// Sends a request; returns status and JSON body (`Null` if empty).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let bytes = res.bytes().await.expect("body read");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// GET.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    /// PATCH with a JSON body.
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::PATCH, path, Some(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, None).await
    }

    /// Posts one event and asserts it was stored; returns the stored event.
    pub async fn event(&self, body: Value) -> Value {
        let (status, out) = self.post("/v1/consents/events", body).await;
        assert_eq!(status, StatusCode::OK, "event refused: {out}");
        out
    }

    /// The user with organization user id `ouid` under `regulation` (`None`: gdpr).
    pub async fn user_by_ouid(&self, ouid: &str) -> Value {
        let (status, user) = self
            .get(&format!(
                "/v1/consents/users/{}?$by_organization_user_id=true",
                urlencode(ouid)
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "user {ouid}: {user}");
        user
    }
}

/// Percent-encodes a path segment or query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `enabled` of purpose `id` in a user's consents (`None` if absent or null).
pub fn purpose_enabled(user: &Value, id: &str) -> Option<bool> {
    user["consents"]["purposes"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == id)?
        .get("enabled")?
        .as_bool()
}

impl TestServer {
    /// Stops the server and starts it again on the same data directory, keeping the bootstrap
    /// key (a restart creates no new key).
    pub async fn restart(self) -> TestServer {
        let (key, secret, org) = (self.key.clone(), self.secret.clone(), self.org.clone());
        let limits = self.limits.clone();
        let tcf = self.tcf.clone();
        let (dir, store) = self.stop().await;
        let server = start(ServeArgs {
            listen: "127.0.0.1:0".into(),
            store: store.clone(),
            delivery: test_delivery(),
            limits: limits.clone(),
            tcf: tcf.clone(),
            exports: test_exports(&dir),
        })
        .await
        .expect("server restarts");
        assert!(
            server.bootstrap_key.is_none(),
            "a store that has an organization must not make a new bootstrap key"
        );
        TestServer {
            base: format!("http://{}", server.addr),
            org,
            key,
            secret,
            dir,
            store,
            http: reqwest::Client::new(),
            limits,
            tcf,
            server: Some(server),
        }
    }
}

impl Api {
    /// The id of the organization's API key whose public part is `key`.
    pub async fn key_id_of(&self, key: &str) -> String {
        let (status, keys) = self.get("/v1/keys").await;
        assert_eq!(status, StatusCode::OK, "{keys}");
        keys["data"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["key"] == key)
            .and_then(|k| k["id"].as_str())
            .expect("the key is listed")
            .to_owned()
    }

    /// Sends raw bytes with an optional `Content-Type`; returns status and JSON body.
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        bytes: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .body(bytes);
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let bytes = res.bytes().await.expect("body read");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `GET /v1/consents/events?{query}`, asserted 200; returns the envelope.
    pub async fn events(&self, query: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/consents/events?{query}")).await;
        assert_eq!(status, StatusCode::OK, "list events {query}: {body}");
        body
    }

    /// The ids of the events listed by `GET /v1/consents/events?{query}`, in answer order.
    pub async fn event_ids(&self, query: &str) -> Vec<String> {
        ids_of(&self.events(query).await["data"])
    }

    /// `GET /v1/consents/users/{id}` (by user id), asserted 200.
    pub async fn user(&self, id: &str) -> Value {
        let (status, user) = self
            .get(&format!("/v1/consents/users/{}", urlencode(id)))
            .await;
        assert_eq!(status, StatusCode::OK, "user {id}: {user}");
        user
    }

    /// The HTTP status of `GET /v1/consents/users/{id}` (by user id).
    pub async fn user_status_code(&self, id: &str) -> StatusCode {
        self.get(&format!("/v1/consents/users/{}", urlencode(id)))
            .await
            .0
    }

    /// The HTTP status of `GET /v1/consents/events/{id}`.
    pub async fn event_status_code(&self, id: &str) -> StatusCode {
        self.get(&format!("/v1/consents/events/{}", urlencode(id)))
            .await
            .0
    }

    /// Every user of the organization, following cursors.
    pub async fn all_users(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/consents/users?$limit=1000&$cursor={}", urlencode(c)),
                None => "/v1/consents/users?$limit=1000".to_owned(),
            };
            let (status, page) = self.get(&path).await;
            assert_eq!(status, StatusCode::OK, "list users: {page}");
            out.extend(page["data"].as_array().expect("data").iter().cloned());
            match page["cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }
}

/// The `id` of each element of a JSON array.
pub fn ids_of(items: &Value) -> Vec<String> {
    items
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| e["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// Asserts that a response is the API's error shape `{code, name, message, errors}` with the
/// given status and name.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &Value, code: u16, name: &str) {
    assert_eq!(status.as_u16(), code, "status; body: {body}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not a JSON object: {body}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["code", "errors", "message", "name"],
        "shape of {body}"
    );
    assert_eq!(body["code"], code, "code of {body}");
    assert_eq!(body["name"], name, "name of {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message of {body}"
    );
    assert!(body["errors"].is_object(), "errors of {body}");
}

/// Asserts a 400 `BadRequest` whose `errors` names `path`.
#[track_caller]
pub fn assert_bad_field(status: StatusCode, body: &Value, path: &str) {
    assert_error(status, body, 400, "BadRequest");
    assert!(
        body["errors"].get(path).and_then(Value::as_str).is_some(),
        "errors should name '{path}': {body}"
    );
}

/// A purpose of a user's (or an event's) consents, if present.
pub fn purpose<'a>(user: &'a Value, id: &str) -> Option<&'a Value> {
    user["consents"]["purposes"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == id)
}

/// A channel of a list of channels, if present.
pub fn channel<'a>(channels: &'a Value, id: &str) -> Option<&'a Value> {
    channels.as_array()?.iter().find(|c| c["id"] == id)
}

/// Opens a session on the server at `base`; returns the token.
pub async fn session(http: &reqwest::Client, base: &str, key: &str, secret: &str) -> String {
    let res: Value = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"type": "api-key", "key": key, "secret": secret}))
        .send()
        .await
        .expect("session request")
        .json()
        .await
        .expect("session JSON");
    res["access_token"].as_str().expect("token").to_owned()
}

/// Folds events as the model does, in the order the API lists them.
pub fn fold(events: &[EventView]) -> ConsentsView {
    let regulation = Regulation::default();
    let bodies: Vec<EventBody> = events
        .iter()
        .map(|e| EventBody {
            consents: Consents {
                purposes: e.consents.purposes.clone(),
                channels: e.consents.channels.clone(),
                vendors: Vendors {
                    enabled: e.consents.vendors.enabled.clone(),
                    disabled: e.consents.vendors.disabled.clone(),
                    enabled_li: e.consents.vendors.enabled_li.clone(),
                    disabled_li: e.consents.vendors.disabled_li.clone(),
                },
                tcfcs: e.consents.tcfcs.clone(),
            },
            ..EventBody::default()
        })
        .collect();
    let mut state = UserState::default();
    for (i, body) in bodies.iter().enumerate() {
        state.apply(
            &regulation,
            body,
            Stamp {
                at: 0,
                seq: i as i64,
            },
        );
    }
    state.status(&regulation)
}

/// Every confirmed gdpr event of a user, in the order the API lists them (`None` if the user
/// does not exist).
pub async fn all_events(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    ouid: &str,
) -> Option<Vec<EventView>> {
    let mut events = Vec::new();
    loop {
        let res = http
            .get(format!(
                "{base}/v1/consents/events?organization_id=default&organization_user_id={ouid}&$limit=1000&$skip={}",
                events.len()
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("list");
        if res.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        let page: Value = res.json().await.expect("page");
        let data: Vec<EventView> = serde_json::from_value(page["data"].clone()).expect("events");
        let total = page["total"].as_u64().expect("total") as usize;
        events.extend(data);
        if events.len() >= total {
            return Some(events);
        }
    }
}
