//! `/v1/marketplace/integrations`: where changes are delivered, and the log of deliveries.

use super::{IdPath, OrganizationParam};
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, QueryPairs};
use assent_delivery::signature::WebhookSecret;
use assent_model::Timestamp;
use assent_model::integration::{
    DeliveryStatus, DeliveryView, Integration, IntegrationPatch, IntegrationType, IntegrationView,
};
use assent_model::query;
use assent_store::integrations::DeliveriesQuery;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A page of integrations.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IntegrationList {
    /// Integrations, over all pages.
    pub total: usize,
    /// Page size.
    pub limit: usize,
    /// Integrations skipped.
    pub skip: usize,
    /// This page, oldest first.
    pub data: Vec<IntegrationView>,
}

/// A page of deliveries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    /// Deliveries matching, over all pages.
    pub total: usize,
    /// Page size.
    pub limit: usize,
    /// Deliveries skipped.
    pub skip: usize,
    /// This page, newest first.
    pub data: Vec<DeliveryView>,
}

/// An integration to create.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::integration"
)]
pub struct IntegrationIn {
    /// A UUID; made when absent.
    id: Option<String>,
    /// `webhook-http`, `actito` or `mparticle`.
    type_id: String,
    /// A name to recognise it by.
    name: Option<String>,
    /// Default true.
    enabled: Option<bool>,
    /// Webhooks: optional OAuth client credentials `{url, client_id, client_secret, scope}`;
    /// Actito: `{private_api_key}`; mParticle: `{api_key, api_secret}`.
    #[schema(value_type = Option<Object>)]
    authentication: Option<serde_json::Value>,
    /// Webhooks: `{url}`; Actito: `{entity_id, table_name, user_unique_key, base_url?}`;
    /// mParticle: `{base_url?, environment?}`.
    #[schema(value_type = Option<Object>)]
    properties: Option<serde_json::Value>,
    /// Connector mappings `[{id, value}]` (required for connectors): `value` is a path key of
    /// the status, `id` the destination's field.
    #[schema(value_type = Option<Vec<Object>>)]
    mappings: Option<serde_json::Value>,
    /// Connectors: create contacts the destination does not know.
    upsert_mode: Option<bool>,
    /// The changes it receives (default: all of `event.created|updated|deleted`,
    /// `user.created|updated|deleted`).
    event_types: Option<Vec<String>>,
}

/// Query of the deliveries list.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents query parameters; handlers read them as pairs"
)]
pub struct DeliveriesParams {
    /// Only deliveries in this state: `queued`, `retrying`, `delivered` or `parked`.
    status: Option<String>,
    /// Page size (default 100, at most 1000).
    #[param(rename = "$limit")]
    limit: Option<usize>,
    /// Deliveries to skip.
    #[param(rename = "$skip")]
    skip: Option<usize>,
}

/// The types whose delivery this version performs.
fn deliverable(t: IntegrationType) -> bool {
    matches!(
        t,
        IntegrationType::WebhookHttp | IntegrationType::Actito | IntegrationType::Mparticle
    )
}

/// Lists the organization's integrations.
#[utoipa::path(
    get,
    path = "/v1/marketplace/integrations",
    tag = "marketplace/integrations",
    params(OrganizationParam),
    responses((status = 200, description = "The integrations", body = IntegrationList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
) -> Result<Json<IntegrationList>, ApiError> {
    query::only(&q, &["$limit", "$skip"])?;
    let (limit, skip) = query::paging(&q)?;
    let all = state.store.list_integrations(&tenant.org).await?;
    Ok(Json(IntegrationList {
        total: all.len(),
        limit,
        skip,
        data: all
            .iter()
            .skip(skip)
            .take(limit)
            .map(Integration::view)
            .collect(),
    }))
}

/// Creates an integration. A webhook's signing secret (`whsec_…`) is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/marketplace/integrations",
    tag = "marketplace/integrations",
    params(OrganizationParam),
    request_body = IntegrationIn,
    responses(
        (status = 200, description = "The integration, with its signing secret", body = IntegrationView),
        (status = 400, description = "Invalid configuration", body = ErrorBody),
        (status = 409, description = "The id is taken", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<IntegrationView>, ApiError> {
    query::only(&q, &[])?;
    let mut integration = Integration::parse_new(&body, &tenant.org, Timestamp::now())?;
    if !deliverable(integration.type_id) {
        return Err(ApiError::bad_field(
            "type_id",
            format!(
                "'{}' integrations are not available in this version of Assent yet; use webhook-http",
                integration.type_id.as_str()
            ),
        ));
    }
    let secret =
        (integration.type_id == IntegrationType::WebhookHttp).then(|| WebhookSecret::generate().1);
    integration.signing_secret = secret.clone();
    let inbound_token = (integration.type_id == IntegrationType::Actito).then(new_inbound_token);
    integration.inbound_token_hash = inbound_token.as_deref().map(token_hash);
    let stored = state.store.create_integration(integration).await?;
    let mut view = stored.view();
    view.secret = secret;
    view.inbound_token = inbound_token;
    Ok(Json(view))
}

/// One integration.
#[utoipa::path(
    get,
    path = "/v1/marketplace/integrations/{id}",
    tag = "marketplace/integrations",
    params(("id" = String, Path, description = "Integration id"), OrganizationParam),
    responses(
        (status = 200, description = "The integration", body = IntegrationView),
        (status = 404, description = "No such integration", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<IntegrationView>, ApiError> {
    query::only(&q, &[])?;
    Ok(Json(
        state.store.get_integration(&tenant.org, &id).await?.view(),
    ))
}

/// Changes an integration. Re-enabling it delivers the changes made from then on.
#[utoipa::path(
    patch,
    path = "/v1/marketplace/integrations/{id}",
    tag = "marketplace/integrations",
    params(("id" = String, Path, description = "Integration id"), OrganizationParam),
    request_body = IntegrationIn,
    responses(
        (status = 200, description = "The changed integration", body = IntegrationView),
        (status = 400, description = "Invalid change", body = ErrorBody),
        (status = 404, description = "No such integration", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<IntegrationView>, ApiError> {
    query::only(&q, &[])?;
    let patch = IntegrationPatch::parse(&body)?;
    Ok(Json(
        state
            .store
            .patch_integration(&tenant.org, &id, patch)
            .await?
            .view(),
    ))
}

/// Deletes an integration and its deliveries.
#[utoipa::path(
    delete,
    path = "/v1/marketplace/integrations/{id}",
    tag = "marketplace/integrations",
    params(("id" = String, Path, description = "Integration id"), OrganizationParam),
    responses(
        (status = 200, description = "The deleted integration as it was", body = IntegrationView),
        (status = 404, description = "No such integration", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<IntegrationView>, ApiError> {
    query::only(&q, &[])?;
    let integration = state.store.get_integration(&tenant.org, &id).await?;
    state.store.delete_integration(&tenant.org, &id).await?;
    Ok(Json(integration.view()))
}

/// The deliveries of an integration, newest first, each with its attempts.
#[utoipa::path(
    get,
    path = "/v1/marketplace/integrations/{id}/deliveries",
    tag = "marketplace/integrations",
    params(("id" = String, Path, description = "Integration id"), OrganizationParam, DeliveriesParams),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryList),
        (status = 404, description = "No such integration", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn deliveries(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<DeliveryList>, ApiError> {
    query::only(&q, &["$limit", "$skip", "status"])?;
    let (limit, skip) = query::paging(&q)?;
    let status = match query::param(&q, "status") {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::bad_field(
                "status",
                "must be one of: queued, retrying, delivered, parked",
            )
        })?),
    };
    let page = state
        .store
        .list_deliveries(
            &tenant.org,
            &id,
            &DeliveriesQuery {
                status,
                limit,
                skip,
            },
        )
        .await?;
    Ok(Json(DeliveryList {
        total: page.total,
        limit: page.limit,
        skip: page.skip,
        data: page.data.iter().map(|d| d.view()).collect(),
    }))
}

/// Schedules a parked (or retrying) delivery for an attempt now.
#[utoipa::path(
    post,
    path = "/v1/marketplace/integrations/{id}/deliveries/{delivery_id}/retry",
    tag = "marketplace/integrations",
    params(
        ("id" = String, Path, description = "Integration id"),
        ("delivery_id" = String, Path, description = "Delivery id"),
        OrganizationParam
    ),
    responses(
        (status = 200, description = "The delivery, due now", body = DeliveryView),
        (status = 404, description = "No such integration or delivery", body = ErrorBody),
        (status = 409, description = "Already delivered", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn retry(
    State(state): State<AppState>,
    tenant: Tenant,
    Path((id, delivery_id)): Path<(String, String)>,
    QueryPairs(q): QueryPairs,
) -> Result<Json<DeliveryView>, ApiError> {
    query::only(&q, &[])?;
    let delivery = state
        .store
        .retry_delivery(&tenant.org, &id, &delivery_id)
        .await?;
    Ok(Json(delivery.view()))
}

/// A new inbound token: 32 random bytes (the thread's CSPRNG), base64url without padding.
fn new_inbound_token() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The SHA-256 of a token, in lowercase hex: what is stored of an inbound token.
fn token_hash(token: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The inbound token of a request: `Authorization: Bearer <token>`, else `?token=`.
fn inbound_token(headers: &HeaderMap, q: &[(String, String)]) -> Option<String> {
    let from_header = headers
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    from_header
        .map(str::to_owned)
        .or_else(|| {
            q.iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.trim().to_owned())
        })
        .filter(|t| !t.is_empty())
}

/// The answer of an inbound webhook.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InboundOut {
    /// True when no subscription of the payload is mapped: nothing was written.
    pub ignored: bool,
    /// The ids of the consent events written, in payload order.
    pub events: Vec<String>,
}

/// Actito's profile webhook (Assent): the subscriptions a profile changed in Actito become a
/// consent event for the user whose `organization_user_id` is the profile's
/// `user_unique_key` attribute, delivered to every other integration but not back to this one.
/// Authenticated by the integration's inbound token (returned once when it was created), not by
/// a session.
#[utoipa::path(
    post,
    path = "/v1/integrations/{id}/inbound",
    tag = "marketplace/integrations",
    params(
        ("id" = String, Path, description = "Integration id (an `actito` integration)"),
        ("organization_id" = String, Query, description = "The integration's organization"),
        ("token" = Option<String>, Query, description = "The inbound token, when it cannot be sent as `Authorization: Bearer <token>`"),
    ),
    request_body(content = Object, description = "Actito's webhook body: `{id, data: {…} | [{…}], _links}`"),
    responses(
        (status = 200, description = "Written, or ignored (nothing mapped)", body = InboundOut),
        (status = 400, description = "A payload that cannot be read", body = ErrorBody),
        (status = 401, description = "Missing or wrong inbound token", body = ErrorBody),
        (status = 404, description = "No such Actito integration in this organization", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
    ),
    security(())
)]
pub async fn inbound(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    headers: HeaderMap,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<InboundOut>, ApiError> {
    query::only(&q, &["token"])?;
    let Some(token) = inbound_token(&headers, &q) else {
        return Err(ApiError::not_authenticated(
            "missing inbound token (Authorization: Bearer <token> or ?token=)",
        ));
    };
    let org = q
        .iter()
        .find(|(k, _)| k == "organization_id")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| ApiError::bad_field("organization_id", "is required"))?;
    let org = assent_model::OrganizationId::parse(org)
        .map_err(|e| ApiError::bad_field("organization_id", e))?;
    let not_found = || {
        ApiError::from(assent_store::StoreError::not_found(format!(
            "no actito integration '{id}'"
        )))
    };
    let integration = match state.store.get_integration(&org, &id).await {
        Ok(i) if i.type_id == IntegrationType::Actito => i,
        Ok(_) => return Err(not_found()),
        Err(assent_store::StoreError::Domain(assent_model::DomainError::NotFound(_))) => {
            return Err(not_found());
        }
        Err(e) => return Err(e.into()),
    };
    let expected = integration
        .inbound_token_hash
        .as_deref()
        .unwrap_or_default();
    let given = token_hash(&token);
    let same: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.as_bytes()).into();
    if !same || expected.is_empty() {
        return Err(ApiError::not_authenticated(
            "the inbound token is not this integration's",
        ));
    }
    let events = assent_model::inbound::actito_events(&integration, &body)?;
    if events.is_empty() {
        return Ok(Json(InboundOut {
            ignored: true,
            events: Vec::new(),
        }));
    }
    let ctx = assent_model::event::ParseContext {
        organization_id: org.clone(),
        now: Timestamp::now(),
        generate_tcfcs: None,
        purpose_map: state.tcf_purpose_map.clone(),
    };
    let mut batch = assent_model::event::parse_batch(&serde_json::Value::Array(events), &ctx)?;
    // A change made in the destination is recorded whatever strict mode says: the
    // organization cannot correct it there.
    state
        .registries
        .get(state.store.as_ref(), &org)
        .await?
        .stamp_events(&mut batch.events);
    let options = assent_store::WriteOptions {
        disable_integrations: false,
        origin: Some(integration.id.clone()),
    };
    let stored = state
        .store
        .append_events(&org, batch.events, options)
        .await?;
    Ok(Json(InboundOut {
        ignored: false,
        events: stored.iter().map(|e| e.id.to_string()).collect(),
    }))
}
