//! Sessions: API keys are exchanged for short-lived signed tokens (JWT, HS256), and every
//! `/v1` route checks the token and confines the call to its organization.

use crate::AppState;
use crate::error::ApiError;
use assent_model::DomainError;
use assent_model::OrganizationId;
use assent_model::token::ConsentGrant;
use assent_store::{ApiKey, Store, StoreError};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session token lives, in seconds.
pub const SESSION_LIFETIME_SECS: u64 = 3600;

/// How long a node trusts what it last read of a key's state before reading it again: the
/// longest a disabled or deleted key's tokens keep working on another node.
const KEY_STATE_TTL: Duration = Duration::from_secs(1);

/// Keys whose state a node remembers at most; beyond it the memory is cleared.
const MAX_REMEMBERED_KEYS: usize = 10_000;

/// The claims of a session token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The API key the session was opened with.
    pub sub: String,
    /// The organization the session acts for.
    pub org: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
    /// Set on consent tokens: the one end user the token acts for, and what it applies to
    /// the events it creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<ConsentGrant>,
    /// Set on consent tokens: the API key whose session issued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

impl Claims {
    /// The API key behind the token: its subject for a session, its issuer for a consent
    /// token.
    pub fn key_id(&self) -> &str {
        self.kid.as_deref().unwrap_or(&self.sub)
    }
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// It was valid once and has expired.
    Expired,
    /// It is malformed, or not signed by this server.
    Invalid,
}

/// Issues and checks session tokens with the store's signing key.
pub struct Sessions {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Whether each recently seen key is enabled, and when that was read.
    key_states: Mutex<HashMap<String, (Instant, bool)>>,
}

impl Sessions {
    /// Sessions signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Sessions {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            key_states: Mutex::new(HashMap::new()),
        }
    }

    /// A token for `key`, valid for [`SESSION_LIFETIME_SECS`].
    pub fn issue(&self, key: &ApiKey) -> Result<String, ApiError> {
        let now = now_secs();
        let claims = Claims {
            sub: key.id.clone(),
            org: key.organization_id.to_string(),
            iat: now,
            exp: now + SESSION_LIFETIME_SECS,
            grant: None,
            kid: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    /// A consent token for one end user of `org`, issued by the session of key `key_id` and
    /// valid for the grant's lifetime (and while that key stays enabled).
    pub fn issue_consent(
        &self,
        org: &OrganizationId,
        key_id: &str,
        grant: &ConsentGrant,
    ) -> Result<String, ApiError> {
        let now = now_secs();
        let claims = Claims {
            sub: grant.organization_user_id.clone(),
            org: org.to_string(),
            iat: now,
            exp: now + grant.lifetime,
            grant: Some(grant.clone()),
            kid: Some(key_id.to_owned()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        self.claims(token).map_err(|problem| match problem {
            TokenProblem::Expired => {
                ApiError::not_authenticated("the session token has expired; open a new session")
            }
            TokenProblem::Invalid => ApiError::not_authenticated("the session token is not valid"),
        })
    }

    /// The claims of a valid, unexpired token, or why it is refused.
    pub fn claims(&self, token: &str) -> Result<Claims, TokenProblem> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenProblem::Expired,
                _ => TokenProblem::Invalid,
            })
    }
}

impl Sessions {
    /// Whether the key `key_id` of `org` still exists and is enabled; tokens of a disabled or
    /// deleted key stop working within [`KEY_STATE_TTL`] on every node.
    pub async fn key_is_live(
        &self,
        store: &dyn Store,
        org: &OrganizationId,
        key_id: &str,
    ) -> Result<bool, ApiError> {
        if let Some(&(read_at, live)) = self.states().get(key_id)
            && read_at.elapsed() < KEY_STATE_TTL
        {
            return Ok(live);
        }
        let live = match store.get_api_key(org, key_id).await {
            Ok(key) => key.enabled,
            Err(StoreError::Domain(DomainError::NotFound(_))) => false,
            Err(e) => return Err(e.into()),
        };
        let mut states = self.states();
        if states.len() >= MAX_REMEMBERED_KEYS {
            states.clear();
        }
        states.insert(key_id.to_owned(), (Instant::now(), live));
        Ok(live)
    }

    /// Forgets what this node read of a key, after it changed here.
    pub fn forget_key(&self, key_id: &str) {
        self.states().remove(key_id);
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, bool)>> {
        self.key_states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The caller of a `/v1` route: a valid session for the organization the query names.
/// Consent tokens are refused (403): they reach only the routes that take a [`Caller`].
#[derive(Debug, Clone)]
pub struct Tenant {
    /// The organization the call is confined to.
    pub org: OrganizationId,
    /// The API key behind the session.
    pub key_id: String,
}

/// The caller of a route that end users may call too: an organization's session, or a consent
/// token confined to one end user.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The organization the call is confined to.
    pub org: OrganizationId,
    /// Set when the caller is an end user holding a consent token.
    pub end_user: Option<ConsentGrant>,
    /// The token's subject: the API key's id, or the end user's organization user id.
    pub subject: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::not_authenticated("missing Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::not_authenticated("the Authorization header must be 'Bearer <token>'")
            })?;
        let claims = state.sessions.verify(token)?;
        let asked = form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "organization_id")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| ApiError::bad_field("organization_id", "is required"))?;
        if asked != claims.org {
            return Err(ApiError::forbidden(format!(
                "this token is not allowed to act for organization '{}'",
                assent_model::ids::check_identifier(&asked)
                    .map(|()| asked.as_str())
                    .unwrap_or("?")
            )));
        }
        let org = OrganizationId::parse(&claims.org)
            .map_err(|_| ApiError::not_authenticated("the session token is not valid"))?;
        if !state
            .sessions
            .key_is_live(state.store.as_ref(), &org, claims.key_id())
            .await?
        {
            return Err(ApiError::not_authenticated(
                "the API key behind this token is disabled or deleted",
            ));
        }
        Ok(Caller {
            org,
            end_user: claims.grant,
            subject: claims.sub,
        })
    }
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.end_user.is_some() {
            return Err(ApiError::forbidden(
                "a consent token may only read its own user and events, create events for \
                 that user, and read its organization's purposes and preference center",
            ));
        }
        Ok(Tenant {
            org: caller.org,
            key_id: caller.subject,
        })
    }
}
