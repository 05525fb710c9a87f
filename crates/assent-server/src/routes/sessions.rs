//! `POST /v1/sessions`: exchange an API key and its secret for a session token.

use crate::AppState;
use crate::auth::SESSION_LIFETIME_SECS;
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::keys;
use assent_model::FieldErrors;
use assent_model::json::{Fields, Path};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Credentials of an API key.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SessionIn {
    /// Always `api-key`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The API key.
    pub key: String,
    /// The key's secret.
    pub secret: String,
}

/// An open session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionOut {
    /// Always `api-key`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The API key the session was opened with.
    pub key: String,
    /// The bearer token for every other call.
    pub access_token: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// Opens a session.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "sessions",
    request_body = SessionIn,
    responses(
        (status = 200, description = "A session token", body = SessionOut),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Wrong key, wrong secret or disabled key", body = ErrorBody),
    ),
    security(())
)]
pub async fn create(State(state): State<AppState>, JsonBody(body): JsonBody) -> Response {
    match read_credentials(&body) {
        Err(e) => e.into_response(),
        Ok(credentials) => {
            // Counted by key before the secret is checked: a guessed secret costs a slow hash.
            let decision = state.limits.session(&credentials.key);
            if let Some(d) = decision.filter(|d| !d.allowed()) {
                return d.refusal();
            }
            let mut response = verify(&state, credentials).await.into_response();
            if let Some(d) = decision {
                d.apply(response.headers_mut());
            }
            response
        }
    }
}

/// The credentials of a well-formed session request.
struct Credentials {
    kind: String,
    key: String,
    secret: String,
}

/// Reads the credentials of a session request, or says what is wrong with it.
fn read_credentials(body: &serde_json::Value) -> Result<Credentials, ApiError> {
    let mut errors = FieldErrors::new();
    let (kind, key, secret) =
        match Fields::of(body, Path::Root, &["type", "key", "secret"], &mut errors) {
            Some(f) => {
                let read = |name: &str, errors: &mut FieldErrors| {
                    let v = f.string(name, errors).map(str::to_owned);
                    if v.is_none() && f.get(name).is_none_or(serde_json::Value::is_null) {
                        errors.add(name, "is required");
                    }
                    v.unwrap_or_default()
                };
                let out = (
                    read("type", &mut errors),
                    read("key", &mut errors),
                    read("secret", &mut errors),
                );
                f.finish(&mut errors);
                out
            }
            None => Default::default(),
        };
    if errors.is_empty() && kind != "api-key" {
        errors.add("type", "must be 'api-key'");
    }
    errors.into_result()?;
    Ok(Credentials { kind, key, secret })
}

/// Checks the credentials and issues a session token.
async fn verify(state: &AppState, credentials: Credentials) -> Result<Json<SessionOut>, ApiError> {
    let Credentials { kind, key, secret } = credentials;
    let refused = || ApiError::not_authenticated("invalid key or secret");
    let stored = state.store.find_api_key(&key).await?;
    let hash = stored
        .as_ref()
        .map_or_else(|| keys::decoy_hash().to_owned(), |k| k.secret_hash.clone());
    let matches = tokio::task::spawn_blocking(move || keys::verify_secret(&secret, &hash))
        .await
        .map_err(ApiError::internal)?;
    let stored = stored
        .filter(|k| matches && k.enabled)
        .ok_or_else(refused)?;
    let access_token = state.sessions.issue(&stored)?;
    Ok(Json(SessionOut {
        kind,
        key,
        access_token,
        expires_in: SESSION_LIFETIME_SECS,
    }))
}
