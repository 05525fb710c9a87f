//! One module per resource; each handler carries its OpenAPI description.

pub mod api_keys;
pub mod events;
pub mod exports;
pub mod integrations;
pub mod ops;
pub mod proofs;
pub mod purposes;
pub mod secrets;
pub mod sessions;
pub mod settings;
pub mod stats;
pub mod tokens;
pub mod users;

use crate::AppState;
use crate::error::ApiError;
use assent_model::query;
use assent_model::tcf::PurposeMap;
use assent_store::WriteOptions;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use std::sync::Arc;

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

/// The flag of the writes that can build a TCF string.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents query parameters; handlers read them as pairs"
)]
pub struct TcfFlag {
    /// Build a TCF v2.2 consent string from the user's status once this write is applied,
    /// store it as `consents.tcfcs` and return it. The body's `iab.tcf` gives the string's
    /// parameters; `iab.tcf.cmp_id` is then required. The status is the event's regulation
    /// on events, the `regulation` parameter on users.
    #[param(rename = "$generate_tcfcs")]
    generate_tcfcs: Option<bool>,
}

/// The options of a write route that cannot build TCF strings, from its query flags.
pub fn write_options(q: &[(String, String)]) -> Result<WriteOptions, ApiError> {
    if query::flag(q, "$generate_tcfcs")? {
        return Err(ApiError::bad_field(
            "$generate_tcfcs",
            "is only available on POST /consents/events, POST /consents/users and \
             PATCH /consents/users/{id}",
        ));
    }
    flag_options(q)
}

/// The options of a write route that can build TCF strings, and the purpose map to build them
/// with when the query asks for `$generate_tcfcs=true`.
pub fn generating_write_options(
    state: &AppState,
    q: &[(String, String)],
) -> Result<(WriteOptions, Option<Arc<PurposeMap>>), ApiError> {
    let generate = query::flag(q, "$generate_tcfcs")?.then(|| state.tcf_purpose_map.clone());
    Ok((flag_options(q)?, generate))
}

fn flag_options(q: &[(String, String)]) -> Result<WriteOptions, ApiError> {
    Ok(WriteOptions {
        disable_integrations: query::flag(q, "$disable_integrations")?,
        origin: None,
    })
}
