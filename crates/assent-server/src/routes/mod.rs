//! One module per resource; each handler carries its OpenAPI description.

pub mod api_keys;
pub mod events;
pub mod integrations;
pub mod ops;
pub mod proofs;
pub mod secrets;
pub mod sessions;
pub mod tokens;
pub mod users;

use crate::error::ApiError;
use assent_model::query;
use assent_store::WriteOptions;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

/// The `{id}` segment of a path, percent-decoded.
pub struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| IdPath(id))
            .map_err(|e| ApiError::bad_field("id", e.body_text()))
    }
}

/// Query parameter documentation shared by the routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents query parameters; handlers read them as pairs"
)]
pub struct OrganizationParam {
    /// The organization the call acts for; must be the session's organization.
    organization_id: String,
}

/// Flags of write routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents query parameters; handlers read them as pairs"
)]
pub struct WriteFlags {
    /// Announce this write to no integration.
    #[param(rename = "$disable_integrations")]
    disable_integrations: Option<bool>,
}

/// The options of a write route, from its query flags.
pub fn write_options(q: &[(String, String)]) -> Result<WriteOptions, ApiError> {
    if query::flag(q, "$generate_tcfcs")? {
        return Err(ApiError::bad_field(
            "$generate_tcfcs",
            "generating TCF strings is not available in this version of Assent",
        ));
    }
    Ok(WriteOptions {
        disable_integrations: query::flag(q, "$disable_integrations")?,
        origin: None,
    })
}
