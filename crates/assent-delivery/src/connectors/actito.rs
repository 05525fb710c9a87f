//! `actito`: a user's subscriptions and metadata written to an Actito profile table.
//!
//! Actito's public API (the "Integration Framework", <https://developers.actito.com>) is
//! reached with an API key exchanged for a short-lived access token:
//!
//! 1. `GET {base_url}/auth/token` with the key as the whole `Authorization` header answers
//!    `{"accessToken": "…", "tokenType": "bearer", "expiresIn": "900s", …}`; the token is
//!    cached until 30 s before it expires and dropped when Actito answers 401.
//! 2. The profile is written with the Data API's single-profile routes (v4, the ones Actito's
//!    own "Feeding your profile tables" guide uses), with `Authorization: Bearer <token>`:
//!    - `upsert_mode: true`: `POST {base_url}/v4/entity/{entity_id}/table/{table_name}/profile?allowUpdate=true`
//!      creates the profile or updates the one with the same unique key;
//!    - `upsert_mode: false`: `PUT {base_url}/v4/entity/{entity_id}/table/{table_name}/profile/{user_unique_key}={organization_user_id}`
//!      updates the profile that has that key, and answers 404 when there is none: the update
//!      is then dropped (logged, and recorded as delivered with the 404).
//!
//! Both carry the same body:
//!
//! ```json
//! {"attributes": [{"name": "<user_unique_key>", "value": "<organization_user_id>"},
//!                 {"name": "<metadata key>", "value": <metadata value>}, …],
//!  "subscriptions": [{"name": "<mapping id>", "subscribe": true|false}, …]}
//! ```
//!
//! Every `user.metadata` key becomes an attribute (the unique key attribute wins over a
//! metadata key of the same name); each mapping whose path key has a choice in the user's
//! status becomes a subscription, and a mapping without one is left out, so Actito keeps
//! what it had.

use super::{ConnectorState, Sent, change_to_send};
use crate::http::{OutboundClient, OutboundRequest};
use crate::webhook::Failure;
use assent_model::integration::Integration;
use assent_store::integrations::DueDelivery;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where Actito's API is unless `properties.base_url` says otherwise (licences hosted on
/// another Actito environment use `https://api1.actito.com`, `https://api3.actito.com`, …).
pub const DEFAULT_BASE_URL: &str = "https://api.actito.com";

/// A token is used until this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Lifetime of a token whose answer does not say (Actito's tokens live 15 minutes).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(900);

/// Cached tokens: (base URL, API key) → (access token, when to stop using it).
type TokenMap = HashMap<(String, String), (String, Instant)>;

/// Actito access tokens, cached per base URL and API key. Cloning it is cheap and shares the
/// cache.
#[derive(Clone, Default)]
pub struct Tokens {
    tokens: Arc<Mutex<TokenMap>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("cached", &self.lock().len())
            .finish()
    }
}

/// The answer of `GET /auth/token`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<Value>,
}

/// `expiresIn`: `"900s"`, `"900"` or `900`.
fn lifetime(expires_in: Option<&Value>) -> Duration {
    let seconds = match expires_in {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().trim_end_matches('s').trim().parse().ok(),
        _ => None,
    };
    seconds
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(DEFAULT_LIFETIME)
}

impl Tokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, TokenMap> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An access token for `api_key` at `base`: the cached one while it has more than 30 s
    /// left, else a new one.
    async fn get(
        &self,
        client: &OutboundClient,
        base: &str,
        api_key: &str,
    ) -> Result<String, Failure> {
        let key = (base.to_owned(), api_key.to_owned());
        if let Some((token, refresh_at)) = self.lock().get(&key)
            && Instant::now() < *refresh_at
        {
            return Ok(token.clone());
        }
        let requested_at = Instant::now();
        let response = client
            .send(OutboundRequest {
                method: Method::GET,
                url: endpoint(base, &["auth", "token"])?,
                headers: vec![
                    ("authorization".to_owned(), api_key.to_owned()),
                    ("accept".to_owned(), "application/json".to_owned()),
                ],
                body: Vec::new(),
            })
            .await
            .map_err(|e| Failure {
                error: format!("getting an Actito access token: {e}"),
                ..Failure::of(e)
            })?;
        if !response.is_success() {
            let failure = Failure::answered(&response);
            return Err(Failure {
                error: format!("getting an Actito access token: {}", failure.error),
                ..failure
            });
        }
        let answer: TokenAnswer = serde_json::from_slice(&response.body)
            .ok()
            .filter(|a: &TokenAnswer| !a.access_token.is_empty())
            .ok_or_else(|| {
                Failure::other("Actito's token endpoint answered without an accessToken")
            })?;
        let refresh_at =
            requested_at + lifetime(answer.expires_in.as_ref()).saturating_sub(EXPIRY_MARGIN);
        self.lock()
            .insert(key, (answer.access_token.clone(), refresh_at));
        Ok(answer.access_token)
    }

    /// Drops the token of `api_key` at `base` (Actito refused it).
    fn forget(&self, base: &str, api_key: &str) {
        self.lock().remove(&(base.to_owned(), api_key.to_owned()));
    }
}

/// `base` with `segments` appended (each percent-encoded as a path segment).
fn endpoint(base: &str, segments: &[&str]) -> Result<String, Failure> {
    url_with(base, segments, None)
}

fn url_with(base: &str, segments: &[&str], query: Option<(&str, &str)>) -> Result<String, Failure> {
    let mut url = url::Url::parse(base)
        .map_err(|e| Failure::other(format!("properties.base_url is not a URL: {e}")))?;
    url.path_segments_mut()
        .map_err(|()| Failure::other("properties.base_url cannot take a path"))?
        .pop_if_empty()
        .extend(segments);
    if let Some((k, v)) = query {
        url.query_pairs_mut().append_pair(k, v);
    }
    Ok(url.into())
}

/// One attribute of a profile.
#[derive(Serialize)]
struct Attribute<'a> {
    name: &'a str,
    value: &'a Value,
}

/// One subscription of a profile.
#[derive(Serialize)]
struct Subscription<'a> {
    name: &'a str,
    subscribe: bool,
}

/// The profile body of both routes.
#[derive(Serialize)]
struct ProfileBody<'a> {
    attributes: Vec<Attribute<'a>>,
    subscriptions: Vec<Subscription<'a>>,
}

/// A required string of the integration.
fn required<'a>(value: Option<&'a str>, name: &str) -> Result<&'a str, Failure> {
    value.ok_or_else(|| Failure::other(format!("the integration has no {name}")))
}

/// Sends one delivery to Actito; see the module documentation.
pub async fn send(
    client: &OutboundClient,
    state: &ConnectorState,
    integration: &Integration,
    due: &DueDelivery,
) -> Result<Sent, Failure> {
    let Some(change) = change_to_send(integration, due, "Actito")? else {
        return Ok(Sent::Nothing);
    };
    let api_key = required(
        integration.credential("private_api_key"),
        "authentication.private_api_key",
    )?;
    let entity = required(integration.property("entity_id"), "properties.entity_id")?;
    let table = required(integration.property("table_name"), "properties.table_name")?;
    let unique_key = required(
        integration.property("user_unique_key"),
        "properties.user_unique_key",
    )?;
    let base = integration.property("base_url").unwrap_or(DEFAULT_BASE_URL);
    let ouid = Value::String(change.organization_user_id.clone());

    let mut attributes = vec![Attribute {
        name: unique_key,
        value: &ouid,
    }];
    attributes.extend(
        change
            .user
            .metadata
            .iter()
            .filter(|(k, _)| k.as_str() != unique_key)
            .map(|(k, v)| Attribute { name: k, value: v }),
    );
    let subscriptions = integration
        .mappings
        .iter()
        .filter_map(|m| {
            change.keys.get(&m.value).map(|subscribe| Subscription {
                name: &m.id,
                subscribe,
            })
        })
        .collect();
    let body = serde_json::to_vec(&ProfileBody {
        attributes,
        subscriptions,
    })
    .map_err(|e| Failure::other(format!("the profile could not be written: {e}")))?;

    let profile_path = ["v4", "entity", entity, "table", table, "profile"];
    let (method, url) = if integration.upsert_mode {
        (
            Method::POST,
            url_with(base, &profile_path, Some(("allowUpdate", "true")))?,
        )
    } else {
        let by_key = format!("{unique_key}={}", change.organization_user_id);
        let mut path = profile_path.to_vec();
        path.push(&by_key);
        (Method::PUT, endpoint(base, &path)?)
    };

    let token = state.actito.get(client, base, api_key).await?;
    let response = client
        .send(OutboundRequest {
            method,
            url,
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("accept".to_owned(), "application/json".to_owned()),
                ("authorization".to_owned(), format!("Bearer {token}")),
            ],
            body,
        })
        .await
        .map_err(Failure::of)?;
    if response.is_success() {
        return Ok(Sent::Answered(response.status));
    }
    if response.status == 404 && !integration.upsert_mode {
        tracing::info!(
            integration = %integration.id,
            delivery = %due.delivery.id,
            "Actito has no profile for this user and upsert_mode is off: the update is dropped"
        );
        tracing::debug!(
            integration = %integration.id,
            organization_user_id = %change.organization_user_id,
            "dropped Actito update"
        );
        return Ok(Sent::Answered(response.status));
    }
    if response.status == 401 {
        state.actito.forget(base, api_key);
    }
    Err(Failure::answered(&response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_lifetimes_are_read_in_every_form() {
        assert_eq!(lifetime(Some(&json!("900s"))), Duration::from_secs(900));
        assert_eq!(lifetime(Some(&json!("60"))), Duration::from_secs(60));
        assert_eq!(lifetime(Some(&json!(120))), Duration::from_secs(120));
        assert_eq!(lifetime(Some(&json!("soon"))), DEFAULT_LIFETIME);
        assert_eq!(lifetime(None), DEFAULT_LIFETIME);
    }

    #[test]
    fn paths_are_appended_and_encoded() {
        assert_eq!(
            endpoint("https://api3.actito.com", &["auth", "token"]).unwrap(),
            "https://api3.actito.com/auth/token"
        );
        assert_eq!(
            endpoint(
                "http://127.0.0.1:9/actito/",
                &[
                    "v4",
                    "entity",
                    "e",
                    "table",
                    "t",
                    "profile",
                    "customerId=a b/c@d.e"
                ]
            )
            .unwrap(),
            "http://127.0.0.1:9/actito/v4/entity/e/table/t/profile/customerId=a%20b%2Fc@d.e"
        );
        assert_eq!(
            url_with(
                "https://api.actito.com",
                &["p"],
                Some(("allowUpdate", "true"))
            )
            .unwrap(),
            "https://api.actito.com/p?allowUpdate=true"
        );
    }
}
