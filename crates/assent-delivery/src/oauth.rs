//! OAuth 2.0 client-credentials bearer tokens, for destinations that require one.
//!
//! A token is obtained from the destination's token endpoint (RFC 6749 §4.4, client
//! credentials sent in the form body) through the [`OutboundClient`], so the token endpoint
//! is subject to the same SSRF rules as any destination. Tokens are cached until shortly
//! before they expire; after a destination answers 401, [`TokenCache::forget`] drops the
//! token so the next delivery fetches a fresh one.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;

use crate::http::{OutboundClient, OutboundRequest, SendError};

/// A token is used until this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Lifetime assumed for a token whose endpoint does not say (`expires_in` absent).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// Where and as whom to obtain a client-credentials token.
///
/// Its `Debug` output never shows the client secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// The token endpoint URL.
    pub url: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: String,
    /// The scope to ask for, if the endpoint wants one (space-separated scopes).
    pub scope: Option<String>,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scope", &self.scope)
            .finish()
    }
}

/// Identifies one cached token: token endpoint, client id and scope.
type CacheKey = (String, String, Option<String>);

impl ClientCredentials {
    fn cache_key(&self) -> CacheKey {
        (self.url.clone(), self.client_id.clone(), self.scope.clone())
    }

    /// The `application/x-www-form-urlencoded` body of the token request.
    fn form(&self) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", &self.client_secret);
        if let Some(scope) = &self.scope {
            form.append_pair("scope", scope);
        }
        form.finish()
    }
}

/// A token and the instant it stops being used.
struct CachedToken {
    access_token: String,
    refresh_at: Instant,
}

/// The successful answer of a token endpoint (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<Seconds>,
    #[serde(default)]
    token_type: Option<String>,
}

/// `expires_in` as a number, or as a string holding one (some providers send that).
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(f64),
    Text(String),
}

impl Seconds {
    fn duration(&self) -> Option<Duration> {
        let seconds = match self {
            Seconds::Number(n) => *n,
            Seconds::Text(text) => text.trim().parse().ok()?,
        };
        Duration::try_from_secs_f64(seconds).ok()
    }
}

/// Client-credentials tokens, cached per token endpoint, client id and scope. Cloning it is
/// cheap and shares the cache.
#[derive(Clone, Default)]
pub struct TokenCache {
    tokens: Arc<Mutex<HashMap<CacheKey, CachedToken>>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.lock().len();
        f.debug_struct("TokenCache")
            .field("cached_tokens", &count)
            .finish()
    }
}

impl TokenCache {
    /// A bearer token for `creds`: the cached one while it has more than 30 s left, else a
    /// new one from the token endpoint, requested through `client`.
    ///
    /// A token endpoint that answers other than 2xx gives
    /// `SendError::Other("token endpoint answered <status>")`.
    pub async fn bearer(
        &self,
        client: &OutboundClient,
        creds: &ClientCredentials,
    ) -> Result<String, SendError> {
        let key = creds.cache_key();
        if let Some(cached) = self.lock().get(&key)
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.access_token.clone());
        }

        let requested_at = Instant::now();
        let response = client
            .send(OutboundRequest {
                method: Method::POST,
                url: creds.url.clone(),
                headers: vec![
                    (
                        "content-type".to_owned(),
                        "application/x-www-form-urlencoded".to_owned(),
                    ),
                    ("accept".to_owned(), "application/json".to_owned()),
                ],
                body: creds.form().into_bytes(),
            })
            .await?;
        if !response.is_success() {
            return Err(SendError::Other(format!(
                "token endpoint answered {}",
                response.status
            )));
        }
        let answer: TokenAnswer = serde_json::from_slice(&response.body).map_err(|_| {
            SendError::Other("token endpoint answered without a readable access_token".to_owned())
        })?;
        if let Some(kind) = &answer.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(SendError::Other(format!(
                "token endpoint issued a {kind:?} token, not a bearer token"
            )));
        }
        if answer.access_token.is_empty() {
            return Err(SendError::Other(
                "token endpoint answered an empty access_token".to_owned(),
            ));
        }

        let lifetime = answer
            .expires_in
            .as_ref()
            .and_then(Seconds::duration)
            .unwrap_or(DEFAULT_LIFETIME);
        // Counted from the request, not the answer, so that a slow endpoint cannot make a
        // token outlive its real expiry.
        let refresh_at = requested_at + lifetime.saturating_sub(EXPIRY_MARGIN);
        self.lock().insert(
            key,
            CachedToken {
                access_token: answer.access_token.clone(),
                refresh_at,
            },
        );
        Ok(answer.access_token)
    }

    /// Drops the cached token for `creds`, so the next [`TokenCache::bearer`] asks the token
    /// endpoint again; to call when the destination rejected the token (401).
    pub fn forget(&self, creds: &ClientCredentials) {
        self.lock().remove(&creds.cache_key());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, CachedToken>> {
        // The map stays consistent even if a holder panicked: every change is one call.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
