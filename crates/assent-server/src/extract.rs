//! Extractors that turn malformed requests into the API's error shape.

use crate::error::ApiError;
use assent_model::limits::MAX_BODY_BYTES;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;

/// Most query parameters accepted in one request.
const MAX_QUERY_PAIRS: usize = 256;

/// The query string as decoded pairs, in order.
#[derive(Debug, Clone)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let mut pairs = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if pairs.len() == MAX_QUERY_PAIRS {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("the query has more than {MAX_QUERY_PAIRS} parameters"),
                ));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(QueryPairs(pairs))
    }
}

/// A JSON request body of at most `MAX` bytes (1 MiB unless said), parsed into a value.
#[derive(Debug, Clone)]
pub struct JsonBody<const MAX: usize = MAX_BODY_BYTES>(pub Value);

/// A request body declared as JSON, of at most `MAX` bytes and not blank, not yet parsed: for
/// handlers that read it into types first (see [`json_value`] for the JSON tree).
#[derive(Debug, Clone)]
pub struct JsonBytes<const MAX: usize = MAX_BODY_BYTES>(pub Bytes);

/// Parses a body into a JSON tree, or the API's error for a body that is not JSON.
pub fn json_value(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_field("body", format!("is not valid JSON: {e}")))
}

/// Most bytes of a `POST /consents/proofs` body (API.md §1: 20 MiB).
pub const MAX_PROOF_BODY_BYTES: usize = 20 * 1024 * 1024;

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {max} bytes"),
    )
}

impl<S: Send + Sync, const MAX: usize> FromRequest<S> for JsonBody<MAX> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::<MAX>::from_request(req, state).await?;
        json_value(&bytes).map(JsonBody)
    }
}

impl<S: Send + Sync, const MAX: usize> FromRequest<S> for JsonBytes<MAX> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
            if !ct.starts_with("application/json") && !ct.contains("+json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "the request body must be JSON (Content-Type: application/json)",
                ));
            }
        }
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX) {
            return Err(too_large(MAX));
        }
        let bytes = Limited::new(req.into_body(), MAX)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    too_large(MAX)
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "the request body could not be read",
                    )
                }
            })?
            .to_bytes();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_field(
                "body",
                "is empty; send a JSON document",
            ));
        }
        Ok(JsonBytes(bytes))
    }
}
