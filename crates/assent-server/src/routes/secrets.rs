//! `/v1/secrets`: secrets an organization hands to clients that run where an API key cannot
//! (browsers, email links). A value is made with the operating system's CSPRNG, shown once when
//! the secret is made, and stored only as its SHA-256; at most 300 per organization.

use super::{IdPath, OrganizationParam};
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, QueryPairs};
use assent_model::json::{Fields, Path};
use assent_model::{FieldErrors, Timestamp, query};
use assent_store::SecretRecord;
use axum::Json;
use axum::extract::State;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// A secret as the API shows it; `secret` only in the create answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecretView {
    /// The secret's id.
    pub id: String,
    /// A name to recognise it by.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// The value: in the create answer only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The organization that owns it.
    pub organization_id: String,
    /// When it was made.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Revision number, one more at each change.
    pub version: i64,
}

impl SecretView {
    fn of(s: &SecretRecord, value: Option<String>) -> SecretView {
        SecretView {
            id: s.id.clone(),
            name: s.name.clone(),
            description: s.description.clone(),
            secret: value,
            organization_id: s.organization_id.to_string(),
            created_at: s.created_at.to_string(),
            updated_at: s.updated_at.to_string(),
            version: s.version,
        }
    }
}

/// A page of secrets.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    /// Secrets, over all pages.
    pub total: usize,
    /// Page size.
    pub limit: usize,
    /// Secrets skipped.
    pub skip: usize,
    /// This page, oldest first.
    pub data: Vec<SecretView>,
}

/// A new secret, or a change to one.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SecretIn {
    /// A name (required on create).
    pub name: Option<String>,
    /// What it is for.
    pub description: Option<String>,
    /// On change: the version last read; a mismatch is a 409.
    pub version: Option<i64>,
}

/// What a secret body says: name, description (`Some(None)` clears it), version.
type SecretFields = (Option<String>, Option<Option<String>>, Option<i64>);

fn parse_secret_body(body: &Value, org: &str, creating: bool) -> Result<SecretFields, ApiError> {
    let mut errors = FieldErrors::new();
    let allowed: &[&str] = if creating {
        &["name", "description", "organization_id"]
    } else {
        &["name", "description", "organization_id", "version"]
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
    let name = f.string("name", &mut errors).map(str::to_owned);
    if let Some(n) = &name
        && (n.is_empty() || n.chars().count() > 255)
    {
        errors.add("name", "must be 1 to 255 characters");
    }
    if creating && f.get("name").is_none_or(Value::is_null) {
        errors.add("name", "is required");
    }
    let description = match f.get("description") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(_) => f.string("description", &mut errors).map(|d| {
            if d.chars().count() > 1024 {
                errors.add("description", "must be at most 1024 characters");
            }
            Some(d.to_owned())
        }),
    };
    let version = match f.get("version") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if n >= 1 => Some(n),
            _ => {
                errors.add("version", "must be a positive whole number");
                None
            }
        },
    };
    f.finish(&mut errors);
    errors.into_result()?;
    Ok((name, description, version))
}

/// A new secret value: 32 bytes from the operating system's CSPRNG, base64url.
fn new_value() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Lists the organization's secrets (without their values).
#[utoipa::path(
    get,
    path = "/v1/secrets",
    tag = "secrets",
    params(OrganizationParam),
    responses((status = 200, description = "A page of secrets", body = SecretList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
) -> Result<Json<SecretList>, ApiError> {
    query::only(&q, &["$limit", "$skip"])?;
    let (limit, skip) = query::paging(&q)?;
    let all = state.store.list_secrets(&tenant.org).await?;
    Ok(Json(SecretList {
        total: all.len(),
        limit,
        skip,
        data: all
            .iter()
            .skip(skip)
            .take(limit)
            .map(|s| SecretView::of(s, None))
            .collect(),
    }))
}

/// Makes a secret; its value is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/secrets",
    tag = "secrets",
    params(OrganizationParam),
    request_body = SecretIn,
    responses(
        (status = 200, description = "The new secret, with its value", body = SecretView),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 409, description = "The organization already holds 300 secrets", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<SecretView>, ApiError> {
    query::only(&q, &[])?;
    let (name, description, _) = parse_secret_body(&body, tenant.org.as_str(), true)?;
    let value = new_value();
    let now = Timestamp::now();
    let secret = SecretRecord {
        id: uuid::Uuid::now_v7().to_string(),
        organization_id: tenant.org.clone(),
        name: name.unwrap_or_default(),
        description: description.flatten(),
        secret_hash: hash(&value),
        version: 1,
        created_at: now,
        updated_at: now,
    };
    let stored = state.store.create_secret(secret).await?;
    Ok(Json(SecretView::of(&stored, Some(value))))
}

/// One secret (without its value).
#[utoipa::path(
    get,
    path = "/v1/secrets/{id}",
    tag = "secrets",
    params(("id" = String, Path, description = "Secret id"), OrganizationParam),
    responses(
        (status = 200, description = "The secret", body = SecretView),
        (status = 404, description = "No such secret", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<SecretView>, ApiError> {
    query::only(&q, &[])?;
    let secret = state.store.get_secret(&tenant.org, &id).await?;
    Ok(Json(SecretView::of(&secret, None)))
}

/// Renames or redescribes a secret; `version`, when sent, must be the stored one.
#[utoipa::path(
    patch,
    path = "/v1/secrets/{id}",
    tag = "secrets",
    params(("id" = String, Path, description = "Secret id"), OrganizationParam),
    request_body = SecretIn,
    responses(
        (status = 200, description = "The secret", body = SecretView),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 404, description = "No such secret", body = ErrorBody),
        (status = 409, description = "The version moved", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<SecretView>, ApiError> {
    query::only(&q, &[])?;
    let (name, description, version) = parse_secret_body(&body, tenant.org.as_str(), false)?;
    let mut secret = state.store.get_secret(&tenant.org, &id).await?;
    if let Some(v) = version
        && v != secret.version
    {
        return Err(assent_model::DomainError::Conflict(format!(
            "secret '{id}' is at version {}, not {v}",
            secret.version
        ))
        .into());
    }
    if let Some(name) = name {
        secret.name = name;
    }
    if let Some(description) = description {
        secret.description = description;
    }
    secret.version += 1;
    secret.updated_at = Timestamp::now();
    let secret = state.store.update_secret(secret).await?;
    Ok(Json(SecretView::of(&secret, None)))
}

/// Deletes a secret.
#[utoipa::path(
    delete,
    path = "/v1/secrets/{id}",
    tag = "secrets",
    params(("id" = String, Path, description = "Secret id"), OrganizationParam),
    responses(
        (status = 200, description = "The deleted secret", body = SecretView),
        (status = 404, description = "No such secret", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<SecretView>, ApiError> {
    query::only(&q, &[])?;
    let secret = state.store.delete_secret(&tenant.org, &id).await?;
    Ok(Json(SecretView::of(&secret, None)))
}
