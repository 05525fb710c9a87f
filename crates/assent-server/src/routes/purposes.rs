//! `/v1/purposes` (Assent): the purpose registry. Every change makes a new version; earlier
//! versions stay readable. End users' consent tokens may read the purposes of their
//! organization (the preference center shows them); only sessions may change them.

use super::{IdPath, OrganizationParam};
use crate::AppState;
use crate::auth::{Caller, Tenant};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, QueryPairs};
use assent_model::purpose::{
    ChannelDefinition, NewPurpose, PreferenceDefinition, Purpose, PurposePatch, PurposeView,
    check_purpose_id,
};
use assent_model::{DomainError, Timestamp, query};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A page of purposes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PurposeList {
    /// Purposes (or versions), over all pages.
    pub total: usize,
    /// Page size.
    pub limit: usize,
    /// Items skipped.
    pub skip: usize,
    /// This page.
    pub data: Vec<PurposeView>,
}

/// A new purpose. Unknown fields are refused.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::purpose"
)]
pub struct PurposeIn {
    /// The id events name it by (1–255 characters, no control characters).
    id: String,
    /// Must equal the query's organization_id when present.
    organization_id: Option<String>,
    /// Label per language tag (`en`, `fr`, `pt-BR`), at least one; each 1–200 characters.
    labels: BTreeMap<String, String>,
    /// Description per language tag, each at most 2000 characters.
    descriptions: Option<BTreeMap<String, String>>,
    /// At most 50 preferences, each with at most 100 values; `multiple` defaults to true.
    preferences: Option<Vec<PreferenceDefinition>>,
    /// At most 20 channels.
    channels: Option<Vec<ChannelDefinition>>,
}

/// A change to a purpose: each field given replaces the whole field; the answer is a new
/// version. Unknown fields are refused.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::purpose"
)]
pub struct PurposePatchIn {
    /// New labels (at least one language).
    labels: Option<BTreeMap<String, String>>,
    /// New descriptions.
    descriptions: Option<BTreeMap<String, String>>,
    /// New preferences.
    preferences: Option<Vec<PreferenceDefinition>>,
    /// New channels.
    channels: Option<Vec<ChannelDefinition>>,
    /// The version the change was made against; 409 when it is no longer the current one.
    #[schema(minimum = 1)]
    version: Option<u32>,
}

/// Query of `GET /v1/purposes/{id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents the query; the handler reads it as pairs"
)]
pub struct VersionParam {
    /// An earlier version to read instead of the current one.
    #[param(minimum = 1)]
    version: Option<u32>,
}

/// Query of the list routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents the query; the handler reads it as pairs"
)]
pub struct PageParams {
    /// Page size (default 100, at most 1000).
    #[param(rename = "$limit")]
    limit: Option<usize>,
    /// Items to skip.
    #[param(rename = "$skip")]
    skip: Option<usize>,
}

fn page(
    q: &[(String, String)],
    org: &str,
    purposes: Vec<Purpose>,
) -> Result<PurposeList, ApiError> {
    let (limit, skip) = query::paging(q)?;
    Ok(PurposeList {
        total: purposes.len(),
        limit,
        skip,
        data: purposes
            .iter()
            .skip(skip)
            .take(limit)
            .map(|p| p.view(org))
            .collect(),
    })
}

fn purpose_id(id: &str) -> Result<(), ApiError> {
    check_purpose_id(id).map_err(ApiError::from)
}

/// Lists the current version of every purpose, in creation order.
#[utoipa::path(
    get,
    path = "/v1/purposes",
    tag = "purposes",
    params(OrganizationParam, PageParams),
    responses((status = 200, description = "A page of purposes", body = PurposeList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryPairs(q): QueryPairs,
) -> Result<Json<PurposeList>, ApiError> {
    query::only(&q, &["$limit", "$skip"])?;
    let purposes = state.store.list_purposes(&caller.org).await?;
    Ok(Json(page(&q, caller.org.as_str(), purposes)?))
}

/// Registers a purpose at version 1.
#[utoipa::path(
    post,
    path = "/v1/purposes",
    tag = "purposes",
    params(OrganizationParam),
    request_body = PurposeIn,
    responses(
        (status = 200, description = "The new purpose", body = PurposeView),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 409, description = "A purpose with that id exists, or the organization has 500", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<PurposeView>, ApiError> {
    query::only(&q, &[])?;
    let new = NewPurpose::parse(&body, tenant.org.as_str())?;
    let now = Timestamp::now();
    let purpose = Purpose {
        id: new.id,
        version: 1,
        content: new.content,
        created_at: now,
        updated_at: now,
    };
    let stored = state.store.create_purpose(&tenant.org, purpose).await?;
    state.registries.forget(&tenant.org);
    Ok(Json(stored.view(tenant.org.as_str())))
}

/// One purpose: its current version, or an earlier one with `version`.
#[utoipa::path(
    get,
    path = "/v1/purposes/{id}",
    tag = "purposes",
    params(("id" = String, Path, description = "Purpose id"), OrganizationParam, VersionParam),
    responses(
        (status = 200, description = "The purpose", body = PurposeView),
        (status = 404, description = "No such purpose, or no such version", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<PurposeView>, ApiError> {
    query::only(&q, &["version"])?;
    purpose_id(&id)?;
    let version = match query::param(&q, "version") {
        None => None,
        Some(v) => Some(
            v.parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::bad_field("version", "must be a whole number from 1"))?,
        ),
    };
    let purpose = state.store.get_purpose(&caller.org, &id, version).await?;
    Ok(Json(purpose.view(caller.org.as_str())))
}

/// Every version of a purpose, newest first.
#[utoipa::path(
    get,
    path = "/v1/purposes/{id}/versions",
    tag = "purposes",
    params(("id" = String, Path, description = "Purpose id"), OrganizationParam, PageParams),
    responses(
        (status = 200, description = "A page of versions, newest first", body = PurposeList),
        (status = 404, description = "No such purpose", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn versions(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<PurposeList>, ApiError> {
    query::only(&q, &["$limit", "$skip"])?;
    purpose_id(&id)?;
    let versions = state.store.list_purpose_versions(&tenant.org, &id).await?;
    Ok(Json(page(&q, tenant.org.as_str(), versions)?))
}

/// Changes a purpose: makes a new version (one more than the current), keeping the earlier
/// ones. Events written from then on record the new version.
#[utoipa::path(
    patch,
    path = "/v1/purposes/{id}",
    tag = "purposes",
    params(("id" = String, Path, description = "Purpose id"), OrganizationParam),
    request_body = PurposePatchIn,
    responses(
        (status = 200, description = "The new version", body = PurposeView),
        (status = 400, description = "Invalid change", body = ErrorBody),
        (status = 404, description = "No such purpose", body = ErrorBody),
        (status = 409, description = "`version` is not the current version", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<PurposeView>, ApiError> {
    query::only(&q, &[])?;
    purpose_id(&id)?;
    let patch = PurposePatch::parse(&body)?;
    let current = state.store.get_purpose(&tenant.org, &id, None).await?;
    if let Some(v) = patch.version
        && v != current.version
    {
        return Err(DomainError::Conflict(format!(
            "purpose '{id}' is at version {}; the change was made against version {v}",
            current.version
        ))
        .into());
    }
    let next = Purpose {
        id: current.id.clone(),
        version: current.version + 1,
        content: patch.apply(&current.content),
        created_at: current.created_at,
        updated_at: Timestamp::now(),
    };
    let stored = state.store.add_purpose_version(&tenant.org, next).await?;
    state.registries.forget(&tenant.org);
    Ok(Json(stored.view(tenant.org.as_str())))
}

/// Deletes a purpose with all its versions. Events that recorded one of its versions keep
/// the number.
#[utoipa::path(
    delete,
    path = "/v1/purposes/{id}",
    tag = "purposes",
    params(("id" = String, Path, description = "Purpose id"), OrganizationParam),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such purpose", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<StatusCode, ApiError> {
    query::only(&q, &[])?;
    purpose_id(&id)?;
    state.store.delete_purpose(&tenant.org, &id).await?;
    state.registries.forget(&tenant.org);
    Ok(StatusCode::NO_CONTENT)
}
