//! The test harness: a real server on a random port and an HTTP client for it.

#![allow(dead_code)]

use assent::serve::{RunningServer, ServeArgs, start};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use tempfile::TempDir;

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
    /// A plain HTTP client.
    pub http: reqwest::Client,
    server: Option<RunningServer>,
}

impl TestServer {
    /// Starts a server on a fresh data directory.
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = start(ServeArgs {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
        })
        .await
        .expect("server starts");
        let key = server.bootstrap_key.clone().expect("a fresh store makes a key");
        TestServer {
            base: format!("http://{}", server.addr),
            org: key.record.organization_id.to_string(),
            key: key.record.key.clone(),
            secret: key.secret.clone(),
            dir,
            http: reqwest::Client::new(),
            server: Some(server),
        }
    }

    /// Stops the server, waiting for its writes to finish.
    pub async fn stop(mut self) -> TempDir {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("server stops cleanly");
        }
        self.dir
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
        let (key, secret) = create_key(self.dir.path(), org);
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
        let mut req = self.http.request(method, format!("{}{path_and_query}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let bytes = res.bytes().await.expect("body read");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// Creates a key for `org` in the store at `dir`; returns (key, secret).
pub fn create_key(dir: &Path, org: &str) -> (String, String) {
    let line = assent::cli::create_key(&assent::cli::KeysCreateArgs {
        organization: org.to_owned(),
        name: None,
        data_dir: dir.to_path_buf(),
    })
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
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let bytes = res.bytes().await.expect("body read");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
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
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
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
