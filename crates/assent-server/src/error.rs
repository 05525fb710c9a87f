//! The error of the HTTP layer: every failure becomes the JSON shape of API.md §1.

use assent_model::{DomainError, FieldErrors};
use assent_store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    errors: BTreeMap<String, String>,
}

/// The body of an error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The HTTP status code.
    pub code: u16,
    /// The error name: BadRequest, NotAuthenticated, Forbidden, NotFound, Conflict, ...
    pub name: String,
    /// What went wrong, in a sentence.
    pub message: String,
    /// The fields at fault, by JSON path.
    pub errors: BTreeMap<String, String>,
}

impl ApiError {
    /// An error with a status and a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            errors: BTreeMap::new(),
        }
    }

    /// 400 with one field at fault.
    pub fn bad_field(path: impl Into<String>, message: impl Into<String>) -> Self {
        let path = path.into();
        let message = message.into();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("{path}: {message}"),
            errors: BTreeMap::from([(path, message)]),
        }
    }

    /// 401: no valid credentials.
    pub fn not_authenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403: valid credentials, wrong organization or route.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 500: a fault of ours; the cause goes to the log, not to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the server log has the details",
        )
    }

    /// The status code of the error.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// The error name of a status, as Didomi's API spells it.
fn name_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequest",
        401 => "NotAuthenticated",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        408 => "Timeout",
        409 => "Conflict",
        413 => "PayloadTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Unprocessable",
        429 => "TooManyRequests",
        503 => "Unavailable",
        _ => "GeneralError",
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid { message, errors } => ApiError {
                status: StatusCode::BAD_REQUEST,
                message,
                errors: field_map(errors),
            },
            DomainError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, m),
            DomainError::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
        }
    }
}

fn field_map(errors: FieldErrors) -> BTreeMap<String, String> {
    errors.as_map().clone()
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Domain(d) => d.into(),
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unavailable; retry later",
                )
            }
            StoreError::Internal(m) => Self::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.status.as_u16(),
            name: name_of(self.status).to_owned(),
            message: self.message,
            errors: self.errors,
        };
        (self.status, Json(body)).into_response()
    }
}
