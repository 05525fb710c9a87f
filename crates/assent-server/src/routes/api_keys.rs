//! `/v1/keys`: the API keys of an organization. A key's secret is shown once, when the key is
//! made, and stored only as an argon2id hash.

use super::{IdPath, OrganizationParam};
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, QueryPairs};
use crate::keys;
use assent_model::json::{Fields, Path};
use assent_model::{FieldErrors, Timestamp, query};
use assent_store::ApiKey;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// An API key as the API shows it (never its secret, except once in the create answer).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// The key's id.
    pub id: String,
    /// The organization it acts for.
    pub organization_id: String,
    /// The public key string, sent with the secret to `POST /v1/sessions`.
    pub key: String,
    /// A name to recognise it by.
    pub name: Option<String>,
    /// A disabled key opens no new session; sessions already open last until they expire.
    pub enabled: bool,
    /// When it was made.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// The secret: in the create answer only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl KeyView {
    fn of(key: &ApiKey, secret: Option<String>) -> KeyView {
        KeyView {
            id: key.id.clone(),
            organization_id: key.organization_id.to_string(),
            key: key.key.clone(),
            name: key.name.clone(),
            enabled: key.enabled,
            created_at: key.created_at.to_string(),
            updated_at: key.updated_at.to_string(),
            secret,
        }
    }
}

/// A page of keys.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    /// Keys, over all pages.
    pub total: usize,
    /// Page size.
    pub limit: usize,
    /// Keys skipped.
    pub skip: usize,
    /// This page, oldest first.
    pub data: Vec<KeyView>,
}

/// A new key, or a change to one.
#[derive(Debug, Deserialize, ToSchema)]
pub struct KeyIn {
    /// A name to recognise the key by.
    pub name: Option<String>,
    /// On change only: enable or disable the key.
    pub enabled: Option<bool>,
}

/// Reads `name` (and, on change, `enabled`) from a key body.
fn parse_key_body(
    body: &Value,
    org: &str,
    allow_enabled: bool,
) -> Result<(Option<Option<String>>, Option<bool>), ApiError> {
    let mut errors = FieldErrors::new();
    let allowed: &[&str] = if allow_enabled {
        &["name", "enabled", "organization_id"]
    } else {
        &["name", "organization_id"]
    };
    let Some(f) = Fields::of(body, Path::Root, allowed, &mut errors) else {
        return Err(assent_model::DomainError::invalid(errors).into());
    };
    if let Some(o) = f.string("organization_id", &mut errors)
        && o != org
    {
        errors.add(
            "organization_id",
            "must equal the organization_id of the query",
        );
    }
    let name = match f.get("name") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(_) => f.string("name", &mut errors).map(|n| {
            if n.is_empty() || n.chars().count() > 255 {
                errors.add("name", "must be 1 to 255 characters");
            }
            Some(n.to_owned())
        }),
    };
    let enabled = match f.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            errors.add("enabled", "must be a boolean");
            None
        }
    };
    f.finish(&mut errors);
    errors.into_result()?;
    Ok((name, enabled))
}

/// Lists the organization's API keys.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    params(OrganizationParam),
    responses((status = 200, description = "A page of keys", body = KeyList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
) -> Result<Json<KeyList>, ApiError> {
    query::only(&q, &["$limit", "$skip"])?;
    let (limit, skip) = query::paging(&q)?;
    let all = state.store.list_api_keys(&tenant.org).await?;
    Ok(Json(KeyList {
        total: all.len(),
        limit,
        skip,
        data: all
            .iter()
            .skip(skip)
            .take(limit)
            .map(|k| KeyView::of(k, None))
            .collect(),
    }))
}

/// Makes a key; its secret is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    params(OrganizationParam),
    request_body = KeyIn,
    responses(
        (status = 200, description = "The new key, with its secret", body = KeyView),
        (status = 400, description = "Invalid body", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<KeyView>, ApiError> {
    query::only(&q, &[])?;
    let (name, _) = parse_key_body(&body, tenant.org.as_str(), false)?;
    let org = tenant.org.clone();
    let issued = tokio::task::spawn_blocking(move || keys::issue(org, name.flatten()))
        .await
        .map_err(ApiError::internal)?;
    let stored = state.store.create_api_key(issued.record).await?;
    Ok(Json(KeyView::of(&stored, Some(issued.secret))))
}

/// One key.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "Key id"), OrganizationParam),
    responses(
        (status = 200, description = "The key", body = KeyView),
        (status = 404, description = "No such key", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<KeyView>, ApiError> {
    query::only(&q, &[])?;
    let key = state.store.get_api_key(&tenant.org, &id).await?;
    Ok(Json(KeyView::of(&key, None)))
}

/// Renames, enables or disables a key. A disabled key opens no new session.
#[utoipa::path(
    patch,
    path = "/v1/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "Key id"), OrganizationParam),
    request_body = KeyIn,
    responses(
        (status = 200, description = "The key", body = KeyView),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<KeyView>, ApiError> {
    query::only(&q, &[])?;
    let (name, enabled) = parse_key_body(&body, tenant.org.as_str(), true)?;
    let mut key = state.store.get_api_key(&tenant.org, &id).await?;
    if let Some(name) = name {
        key.name = name;
    }
    if let Some(enabled) = enabled {
        key.enabled = enabled;
    }
    key.updated_at = Timestamp::now();
    let key = state.store.update_api_key(key).await?;
    state.sessions.forget_key(&key.id);
    Ok(Json(KeyView::of(&key, None)))
}

/// Deletes a key; it opens no new session.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "Key id"), OrganizationParam),
    responses(
        (status = 200, description = "The deleted key", body = KeyView),
        (status = 404, description = "No such key", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<KeyView>, ApiError> {
    query::only(&q, &[])?;
    let key = state.store.delete_api_key(&tenant.org, &id).await?;
    state.sessions.forget_key(&key.id);
    Ok(Json(KeyView::of(&key, None)))
}
