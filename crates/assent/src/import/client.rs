//! The HTTP side of an import: a session, and batches of events posted to
//! `POST /v1/consents/events`, with the server's answer sorted into what the import does next.

use base64::Engine;
use reqwest::StatusCode;
use reqwest::header::{DATE, RETRY_AFTER};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

/// How long one request may take before it is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A logged-in client of one organization.
pub struct Client {
    http: reqwest::Client,
    events_url: String,
    events_query: Vec<(&'static str, String)>,
    sessions_url: String,
    key: String,
    secret: String,
    token: RwLock<String>,
    /// The organization the events go to.
    pub organization: String,
    /// The server's clock when the import started (from its `Date` header), if it said.
    pub started: Option<SystemTime>,
}

/// What the server made of a batch.
#[derive(Debug)]
pub enum Answer {
    /// Stored: the events as the server holds them, in input order.
    Stored(Vec<Value>),
    /// Refused as invalid: the message for each event at fault (by index in the batch), or for
    /// the whole batch when no index is given.
    Invalid(BTreeMap<usize, String>, String),
    /// An id already stored with other content.
    Conflict(String),
    /// The body is over the server's limit.
    TooLarge,
    /// The session expired or was refused.
    Unauthorized(String),
    /// Worth trying again, after the delay the server asked for if it did.
    Retry(Option<Duration>, String),
}

impl Client {
    /// Opens a session on `server` with the key; the organization is `organization`, or the
    /// one the session token names.
    pub async fn connect(
        server: &str,
        key: &str,
        secret: &str,
        organization: Option<String>,
        disable_integrations: bool,
    ) -> Result<Client, String> {
        let base = server.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "--server must be an http:// or https:// URL, not '{server}'"
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut client = Client {
            http,
            events_url: format!("{base}/v1/consents/events"),
            events_query: Vec::new(),
            sessions_url: format!("{base}/v1/sessions"),
            key: key.to_owned(),
            secret: secret.to_owned(),
            token: RwLock::new(String::new()),
            organization: String::new(),
            started: None,
        };
        let (token, started) = client.open_session().await?;
        let organization = match organization {
            Some(org) => org,
            None => organization_of(&token)
                .ok_or("the session token does not name an organization; pass --organization")?,
        };
        client
            .events_query
            .push(("organization_id", organization.clone()));
        if disable_integrations {
            client
                .events_query
                .push(("$disable_integrations", "true".to_owned()));
        }
        client.organization = organization;
        client.started = started;
        *client.token.write().unwrap_or_else(|e| e.into_inner()) = token;
        Ok(client)
    }

    async fn open_session(&self) -> Result<(String, Option<SystemTime>), String> {
        let res = self
            .http
            .post(&self.sessions_url)
            .json(&json!({"type": "api-key", "key": self.key, "secret": self.secret}))
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.sessions_url))?;
        let status = res.status();
        let date = res
            .headers()
            .get(DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok());
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!(
                "the server refused the key ({status}): {}",
                body["message"].as_str().unwrap_or("no message")
            ));
        }
        let token = body["access_token"]
            .as_str()
            .ok_or("the session answer has no access_token")?;
        Ok((token.to_owned(), date))
    }

    /// Opens a new session, after the last one expired.
    pub async fn refresh(&self) -> Result<(), String> {
        let (token, _) = self.open_session().await?;
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = token;
        Ok(())
    }

    /// Posts `events` as one batch.
    pub async fn post(&self, events: &[&Value]) -> Answer {
        let token = self.token.read().unwrap_or_else(|e| e.into_inner()).clone();
        let res = match self
            .http
            .post(&self.events_url)
            .query(&self.events_query)
            .bearer_auth(token)
            .json(&events)
            .send()
            .await
        {
            Ok(res) => res,
            Err(e) => return Answer::Retry(None, format!("request failed: {e}")),
        };
        let status = res.status();
        let retry_after = res
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body: Value = match res.json().await {
            Ok(body) => body,
            Err(e) if status.is_success() => {
                return Answer::Retry(None, format!("unreadable answer: {e}"));
            }
            Err(_) => Value::Null,
        };
        let message = || {
            body["message"]
                .as_str()
                .map_or_else(|| status.to_string(), str::to_owned)
        };
        match status {
            s if s.is_success() => match body {
                Value::Array(events) => Answer::Stored(events),
                other => Answer::Retry(None, format!("unexpected answer: {other}")),
            },
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                Answer::Invalid(errors_by_index(&body), message())
            }
            StatusCode::CONFLICT => Answer::Conflict(message()),
            StatusCode::PAYLOAD_TOO_LARGE => Answer::TooLarge,
            StatusCode::UNAUTHORIZED => Answer::Unauthorized(message()),
            s if s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::REQUEST_TIMEOUT
                || s.is_server_error() =>
            {
                Answer::Retry(retry_after, format!("{s}: {}", message()))
            }
            _ => Answer::Invalid(BTreeMap::new(), format!("{status}: {}", message())),
        }
    }
}

/// The `errors` of a 400 answer grouped by the batch index their path starts with (`[3].user`).
fn errors_by_index(body: &Value) -> BTreeMap<usize, String> {
    let mut out: BTreeMap<usize, String> = BTreeMap::new();
    let Some(errors) = body["errors"].as_object() else {
        return out;
    };
    for (path, message) in errors {
        let Some(index) = path
            .strip_prefix('[')
            .and_then(|p| p.split_once(']'))
            .and_then(|(i, _)| i.parse::<usize>().ok())
        else {
            continue;
        };
        let rest = path.split_once(']').map_or("", |(_, r)| r);
        let rest = rest.trim_start_matches('.');
        let line = match (rest.is_empty(), message.as_str()) {
            (true, Some(m)) => m.to_owned(),
            (false, Some(m)) => format!("{rest}: {m}"),
            (_, None) => format!("{rest}: {message}"),
        };
        out.entry(index)
            .and_modify(|all| {
                all.push_str("; ");
                all.push_str(&line);
            })
            .or_insert(line);
    }
    out
}

/// The `org` claim of a session token (Assent's), without checking its signature: only to
/// default `--organization`.
fn organization_of(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["org"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_grouped_by_batch_index() {
        let body = json!({"errors": {"[3].user": "is required", "[3].consents.purposes[0].enabled": "must be a boolean", "[10]": "must be an object", "body": "x"}});
        let by = errors_by_index(&body);
        assert_eq!(by.len(), 2);
        assert!(by[&3].contains("user: is required"));
        assert!(by[&3].contains("consents.purposes[0].enabled: must be a boolean"));
        assert_eq!(by[&10], "must be an object");
    }
}
