//! `/v1/consents/users`: users and their consent status.

use super::events::IabIn;
use super::{
    IdPath, OrganizationParam, TcfFlag, WriteFlags, generating_write_options, write_options,
};
use crate::AppState;
use crate::auth::{Caller, Tenant};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, QueryPairs};
use assent_model::query::{self, UsersQuery};
use assent_model::user::{GenerateTcfcs, NewUser, UserPatch, UserSelector, UserView};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A page of users.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    /// This page, in creation order.
    pub data: Vec<UserView>,
    /// Page size.
    pub limit: usize,
    /// Pass as `$cursor` for the next page; `null` at the end.
    pub cursor: Option<String>,
}

/// A user created directly.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::user"
)]
pub struct UserIn {
    /// User id; made when absent. A duplicate is a 409.
    id: Option<String>,
    /// Must equal the query's organization_id when present.
    organization_id: Option<String>,
    /// The organization's own id for the user. A duplicate is a 409.
    organization_user_id: Option<String>,
    /// Metadata.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// ISO 3166-1 alpha-2 country.
    country: Option<String>,
    /// ISO 3166-1 alpha-2 country last seen.
    last_seen_country: Option<String>,
    /// Parameters of the TCF string that `$generate_tcfcs=true` builds; ignored without it.
    iab: Option<IabIn>,
}

/// A change to a user.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::user"
)]
pub struct UserPatchIn {
    /// New organization user id.
    organization_user_id: Option<String>,
    /// Merged by key; a null value removes the key.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// New country.
    country: Option<String>,
    /// New last seen country.
    last_seen_country: Option<String>,
    /// The version last read; a mismatch is a 409.
    version: Option<i64>,
    /// Parameters of the TCF string that `$generate_tcfcs=true` builds; ignored without it.
    iab: Option<IabIn>,
}

/// Query of `GET /consents/users`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents query parameters; handlers read them as pairs"
)]
pub struct UsersParams {
    /// Filter on the organization user id (also `[$in]`, `[$ne]`, ...).
    organization_user_id: Option<String>,
    /// The regulation whose status is shown (default `gdpr`).
    regulation: Option<String>,
    /// Page size (default 100, at most 1000).
    #[param(rename = "$limit")]
    limit: Option<usize>,
    /// The cursor of the previous page.
    #[param(rename = "$cursor")]
    cursor: Option<String>,
}

/// Query of single-user routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents query parameters; handlers read them as pairs"
)]
pub struct UserParams {
    /// `true`: the `{id}` of the path is an organization user id.
    #[param(rename = "$by_organization_user_id")]
    by_organization_user_id: Option<bool>,
    /// The regulation whose status is shown (default `gdpr`).
    regulation: Option<String>,
}

/// Query of `GET /consents/users/{id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents query parameters; handlers read them as pairs"
)]
pub struct AtParam {
    /// RFC 3339 instant: answer the status as it stood then.
    at: Option<String>,
}

fn selector(id: &str, q: &[(String, String)]) -> Result<UserSelector, ApiError> {
    let by_ouid = query::flag(q, "$by_organization_user_id")?;
    Ok(UserSelector::parse(id, by_ouid)?)
}

/// Lists users, a cursor page at a time.
#[utoipa::path(
    get,
    path = "/v1/consents/users",
    tag = "consents/users",
    params(OrganizationParam, UsersParams),
    responses(
        (status = 200, description = "A page of users", body = UserList),
        (status = 400, description = "Bad filter or cursor", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
) -> Result<Json<UserList>, ApiError> {
    let query = UsersQuery::parse(&q)?;
    let page = state.store.list_users(&tenant.org, &query).await?;
    Ok(Json(UserList {
        data: page
            .data
            .iter()
            .map(|u| u.view(&query.regulation))
            .collect(),
        limit: query.limit,
        cursor: page.cursor,
    }))
}

/// Creates a user; with `$generate_tcfcs=true`, also the TCF string of its (empty) status.
#[utoipa::path(
    post,
    path = "/v1/consents/users",
    tag = "consents/users",
    params(OrganizationParam, WriteFlags, TcfFlag),
    request_body = UserIn,
    responses(
        (status = 200, description = "The new user", body = UserView),
        (status = 400, description = "Invalid user", body = ErrorBody),
        (status = 409, description = "Duplicate id or organization user id", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<UserView>, ApiError> {
    query::only(&q, &["regulation"])?;
    let (options, map) = generating_write_options(&state, &q)?;
    let regulation = query::regulation(&q)?;
    let generate = map.as_ref().map(|map| GenerateTcfcs {
        map,
        regulation: &regulation,
    });
    let user = NewUser::parse(&body, &tenant.org, generate)?;
    let user = state.store.create_user(&tenant.org, user, options).await?;
    Ok(Json(user.view(&regulation)))
}

/// One user with its status; with `at`, the status as it stood then.
#[utoipa::path(
    get,
    path = "/v1/consents/users/{id}",
    tag = "consents/users",
    params(("id" = String, Path, description = "User id, or organization user id"), OrganizationParam, UserParams, AtParam),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<UserView>, ApiError> {
    query::only(&q, &["$by_organization_user_id", "regulation", "at"])?;
    let user = selector(&id, &q)?;
    if let Some(grant) = &caller.end_user {
        super::tokens::confine_read(&state, &caller.org, grant, &user).await?;
    }
    let tenant = caller;
    let regulation = query::regulation(&q)?;
    Ok(Json(match query::at(&q)? {
        Some(at) => {
            let (record, status) = state
                .store
                .get_user_at(&tenant.org, &user, &regulation, at)
                .await?;
            record.view_with(status)
        }
        None => state
            .store
            .get_user(&tenant.org, &user)
            .await?
            .view(&regulation),
    }))
}

/// Changes a user's profile; with `$generate_tcfcs=true`, also builds the TCF string of its
/// status under `regulation`.
#[utoipa::path(
    patch,
    path = "/v1/consents/users/{id}",
    tag = "consents/users",
    params(("id" = String, Path, description = "User id, or organization user id"), OrganizationParam, UserParams, WriteFlags, TcfFlag),
    request_body = UserPatchIn,
    responses(
        (status = 200, description = "The changed user", body = UserView),
        (status = 400, description = "Invalid change", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "Version mismatch or duplicate organization user id", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<UserView>, ApiError> {
    query::only(&q, &["$by_organization_user_id", "regulation"])?;
    let (options, map) = generating_write_options(&state, &q)?;
    let user = selector(&id, &q)?;
    let regulation = query::regulation(&q)?;
    let generate = map.as_ref().map(|map| GenerateTcfcs {
        map,
        regulation: &regulation,
    });
    let patch = UserPatch::parse(&body, generate)?;
    let user = state
        .store
        .patch_user(&tenant.org, &user, patch, options)
        .await?;
    Ok(Json(user.view(&regulation)))
}

/// Erases a user, all its events and their proofs (right to erasure).
#[utoipa::path(
    delete,
    path = "/v1/consents/users/{id}",
    tag = "consents/users",
    params(("id" = String, Path, description = "User id, or organization user id"), OrganizationParam, UserParams, WriteFlags),
    responses(
        (status = 200, description = "The erased user as it was", body = UserView),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<UserView>, ApiError> {
    query::only(&q, &["$by_organization_user_id", "regulation"])?;
    let options = write_options(&q)?;
    let user = selector(&id, &q)?;
    let regulation = query::regulation(&q)?;
    let user = state.store.delete_user(&tenant.org, &user, options).await?;
    Ok(Json(user.view(&regulation)))
}
