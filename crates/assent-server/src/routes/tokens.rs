//! `POST /v1/consents/tokens`: consent tokens, which let a browser or an app act for one end
//! user only; and the checks that keep such a token to that user.

use super::OrganizationParam;
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, QueryPairs};
use assent_model::consents::Metadata;
use assent_model::event::Delegate;
use assent_model::query;
use assent_model::token::ConsentGrant;
use assent_model::user::{UserRecord, UserSelector};
use assent_model::{EventInput, OrganizationId};
use assent_store::StoreError;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a token applies to the events it creates.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct TokenEvent {
    /// Merged into each event's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    /// Merged into each event's user metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<TokenEventUser>,
}

/// The user part of [`TokenEvent`].
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct TokenEventUser {
    /// Merged into each event's user metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
}

/// A consent token request (and, with `id_token`, its answer).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenOut {
    /// The organization.
    pub organization_id: String,
    /// The one end user the token acts for.
    pub organization_user_id: String,
    /// Seconds the token lives (default 900, at most 2,592,000).
    pub lifetime: u64,
    /// Applied to every event the token creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<TokenEvent>,
    /// Set as the delegate of every event the token creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// Free-form, kept in the token only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    /// The token: `Authorization: Bearer <id_token>` (answer only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// Issues a consent token for one end user.
#[utoipa::path(
    post,
    path = "/v1/consents/tokens",
    tag = "consents/tokens",
    params(OrganizationParam),
    request_body = TokenOut,
    responses(
        (status = 200, description = "The token", body = TokenOut),
        (status = 400, description = "Invalid request", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<TokenOut>, ApiError> {
    query::only(&q, &[])?;
    let grant = ConsentGrant::parse(&body, tenant.org.as_str())?;
    let token = state
        .sessions
        .issue_consent(&tenant.org, &tenant.key_id, &grant)?;
    let event =
        (grant.event_metadata.is_some() || grant.user_metadata.is_some()).then(|| TokenEvent {
            metadata: grant.event_metadata.clone(),
            user: grant
                .user_metadata
                .clone()
                .map(|m| TokenEventUser { metadata: Some(m) }),
        });
    Ok(Json(TokenOut {
        organization_id: tenant.org.to_string(),
        organization_user_id: grant.organization_user_id,
        lifetime: grant.lifetime,
        event,
        delegate: grant.delegate,
        metadata: grant.metadata,
        id_token: Some(token),
    }))
}

fn not_yours() -> ApiError {
    ApiError::forbidden("this consent token acts for another user")
}

/// The token's own user, if it exists yet.
async fn own_user(
    state: &AppState,
    org: &OrganizationId,
    grant: &ConsentGrant,
) -> Result<Option<UserRecord>, ApiError> {
    let selector = UserSelector::OrganizationUserId(grant.organization_user_id.clone());
    match state.store.get_user(org, &selector).await {
        Ok(user) => Ok(Some(user)),
        Err(StoreError::Domain(assent_model::DomainError::NotFound(_))) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Keeps the events a consent token creates to its user, and applies what the token grants.
/// An event naming another organization user id, or a user id that is not the token's user,
/// is refused (403).
pub async fn confine_events(
    state: &AppState,
    org: &OrganizationId,
    grant: &ConsentGrant,
    events: &mut [EventInput],
) -> Result<(), ApiError> {
    let mut own: Option<Option<UserRecord>> = None;
    for event in events.iter_mut() {
        let user = &event.body.user;
        if user
            .organization_user_id
            .as_ref()
            .is_some_and(|o| *o != grant.organization_user_id)
        {
            return Err(not_yours());
        }
        if let Some(id) = &user.id {
            if own.is_none() {
                own = Some(own_user(state, org, grant).await?);
            }
            if own
                .as_ref()
                .and_then(Option::as_ref)
                .is_none_or(|u| u.id != *id)
            {
                return Err(not_yours());
            }
        }
        event.apply_grant(grant);
    }
    Ok(())
}

/// Checks that a consent token may read `user` (the user a route names), answering 403 for any
/// other user, existing or not.
pub async fn confine_read(
    state: &AppState,
    org: &OrganizationId,
    grant: &ConsentGrant,
    user: &UserSelector,
) -> Result<(), ApiError> {
    match user {
        UserSelector::OrganizationUserId(o) if *o == grant.organization_user_id => Ok(()),
        UserSelector::OrganizationUserId(_) => Err(not_yours()),
        UserSelector::Id(id) => match own_user(state, org, grant).await? {
            Some(own) if own.id == *id => Ok(()),
            _ => Err(not_yours()),
        },
    }
}
