//! `/v1/consents/events`: record consent choices, list and change them.

use super::{
    IdPath, OrganizationParam, TcfFlag, WriteFlags, generating_write_options, write_options,
};
use crate::AppState;
use crate::auth::{Caller, Tenant};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, JsonBytes, QueryPairs, json_value};
use assent_model::consents::Consents;
use assent_model::event::{
    Delegate, EventJson, EventPatch, EventStatus, EventView, ParseContext, UserRef, parse_batch,
    plain,
};
use assent_model::notice::{NoticeEventView, NoticeItem, NoticeRegulation, NoticeSource, UserType};
use assent_model::query::{self, EventFormat, EventsQuery};
use assent_model::user::UserSelector;
use assent_model::{DomainError, EventId, Timestamp};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A consent event as a client sends it. Every field is optional; unknown fields are refused.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::event"
)]
pub struct EventIn {
    /// Idempotency key; a UUIDv7 is made when absent.
    id: Option<String>,
    /// Must equal the query's organization_id when present.
    organization_id: Option<String>,
    /// When the choice was made (RFC 3339); may be in the past; defaults to now.
    created_at: Option<String>,
    /// `confirmed` (default) or `pending_approval`.
    status: Option<EventStatus>,
    /// Regulation, `[a-z0-9_-]{1,32}`; default `gdpr`.
    regulation: Option<String>,
    /// Free-form metadata of the event (at most 16 KiB).
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// The user: `id`, `organization_user_id` or neither (a user is then created).
    user: Option<UserRef>,
    /// The choices.
    consents: Option<Consents>,
    /// Ids of stored proofs.
    proofs_id: Option<Vec<String>>,
    /// Who acts on the user's behalf.
    delegate: Option<Delegate>,
    /// Parameters of the TCF string that `$generate_tcfcs=true` builds; ignored without it.
    iab: Option<IabIn>,
}

/// The `iab` object of a write.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::tcf"
)]
pub struct IabIn {
    /// The TC string's parameters.
    tcf: Option<TcfParamsIn>,
}

/// The CMP-side fields of a generated TC string (API.md §6); unknown fields are refused.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::tcf"
)]
pub struct TcfParamsIn {
    /// The CMP's IAB id, 2 to 4095; required with `$generate_tcfcs=true`.
    cmp_id: u16,
    /// 0 to 4095; default 1.
    cmp_version: Option<u16>,
    /// 0 to 63; default 1.
    consent_screen: Option<u8>,
    /// Two letters; default `EN`.
    consent_language: Option<String>,
    /// The Global Vendor List version, 0 to 4095; default 0.
    vendor_list_version: Option<u16>,
    /// 0 to 63; default 5.
    tcf_policy_version: Option<u8>,
    /// Default false.
    use_non_standard_texts: Option<bool>,
    /// Default false.
    purpose_one_treatment: Option<bool>,
    /// The publisher's country, two letters; default `AA` (unknown).
    publisher_cc: Option<String>,
    /// `[{purpose_id, restriction_type, vendors}]` with `restriction_type` one of
    /// `not_allowed`, `require_consent`, `require_li`; default none.
    #[schema(value_type = Option<Vec<Object>>)]
    publisher_restrictions: Option<Vec<serde_json::Value>>,
}

/// A consent event as a CMP notice or SDK sends it, recognised by its `events` array. It is
/// stored as one consent event of the Consents API shape (docs/API-DECISIONS.md, "Notice
/// events"); unknown fields are refused.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::notice"
)]
pub struct NoticeEventIn {
    /// Idempotency key; a UUIDv7 is made when absent.
    id: Option<String>,
    /// Required; must equal the query's organization_id.
    organization_id: String,
    /// The notice that was shown.
    notice_id: Option<String>,
    /// The user.
    user: NoticeUserIn,
    /// Regulation of the event and of the status it changes; default `gdpr`. `none` is
    /// stored but changes no status; under `tcf` the consent string's choices apply too.
    regulation: Option<NoticeRegulation>,
    /// An IAB TCF v2 consent string, decoded and checked; stored as `consents.tcfcs`.
    consent_string: Option<String>,
    /// What the user did: at least one action.
    events: Vec<NoticeItem>,
    /// Where the event came from; `url` must be an absolute URL.
    source: Option<NoticeSource>,
    /// When the choice was made (RFC 3339); defaults to now.
    created_at: Option<String>,
    /// When the CMP last changed the choice (RFC 3339); kept as sent.
    updated_at: Option<String>,
}

/// The `user` of a notice event.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::notice"
)]
pub struct NoticeUserIn {
    /// The user's id; required with `type: external`. A user is created if it is unknown.
    id: Option<String>,
    /// `didomi` (default): `id` is the user id; `external`: the organization user id.
    #[serde(rename = "type")]
    kind: Option<UserType>,
    /// ISO 3166-1 alpha-2 country of the user.
    country: Option<String>,
    /// The user's region (1 to 255 characters).
    region: Option<String>,
}

/// One event in either shape.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum AnyEventIn {
    /// The Consents API shape.
    Consents(Box<EventIn>),
    /// The notice shape of CMP SDKs.
    Notice(Box<NoticeEventIn>),
}

/// One event, or a batch of 1 to 100 (all or nothing) that may mix both shapes.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum EventsIn {
    /// One event.
    One(Box<AnyEventIn>),
    /// A batch.
    Batch(Vec<AnyEventIn>),
}

/// One event, or the events of a batch in input order.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum EventsOut {
    /// The event.
    One(Box<EventView>),
    /// The events.
    Batch(Vec<EventView>),
}

/// A page of events.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    /// Events matching, over all pages.
    pub total: usize,
    /// Page size.
    pub limit: usize,
    /// Events skipped.
    pub skip: usize,
    /// This page, in the shape `$format` asks for.
    pub data: Vec<ListedEvent>,
}

/// A listed event: in the Consents API shape, or with `$format=notice` in the notice shape.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ListedEvent {
    /// The Consents API shape (the default).
    Consents(Box<EventView>),
    /// The notice shape (`$format=notice`).
    Notice(Box<NoticeEventView>),
}

/// The change a `PATCH` makes to an event.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::event"
)]
pub struct EventPatchIn {
    /// New status, usually `confirmed`.
    status: Option<EventStatus>,
    /// New choices, replacing the event's.
    consents: Option<Consents>,
    /// New proof ids.
    proofs_id: Option<Vec<String>>,
    /// New delegate.
    delegate: Option<Delegate>,
}

/// Query of list and delete: the user, filters and paging.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents query parameters; handlers read them as pairs"
)]
pub struct EventsParams {
    /// The user's id (this or organization_user_id is required).
    user_id: Option<String>,
    /// The user's organization user id.
    organization_user_id: Option<String>,
    /// `confirmed` by default; accepts `status[$in]=...`.
    status: Option<String>,
    /// `gdpr` by default; accepts `regulation[$in]=...`.
    regulation: Option<String>,
    /// Page size (default 100, at most 1000).
    #[param(rename = "$limit")]
    limit: Option<usize>,
    /// Events to skip.
    #[param(rename = "$skip")]
    skip: Option<usize>,
    /// `1` oldest first (default), `-1` newest first.
    #[param(rename = "$sort[created_at]")]
    sort: Option<i32>,
}

/// The shape a list answers in.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents query parameters; handlers read them as pairs"
)]
pub struct FormatParams {
    /// `notice`: the events in the notice shape of CMP SDKs; left out, the Consents API shape.
    #[param(rename = "$format", inline)]
    format: Option<FormatParam>,
}

/// The values of `$format` (documentation only: the query is read by assent_model::query).
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FormatParam {
    /// The notice shape of CMP SDKs.
    Notice,
}

fn event_id(raw: &str) -> Result<EventId, ApiError> {
    EventId::parse(raw).map_err(|m| ApiError::bad_field("id", m))
}

/// Records one event or a batch; with `$generate_tcfcs=true`, builds each event's TCF string
/// from the status its user has once the event is folded. Each event records the version in
/// force of the registered purposes it names (`purpose_versions`); with strict mode on, an
/// event naming a purpose, preference, value or purpose channel that is not in the registry
/// is refused (400 at its path) and nothing is written.
#[utoipa::path(
    post,
    path = "/v1/consents/events",
    tag = "consents/events",
    params(OrganizationParam, WriteFlags, TcfFlag),
    request_body = EventsIn,
    responses(
        (status = 200, description = "The stored event, or the batch in input order", body = EventsOut),
        (status = 400, description = "Invalid event, or (strict mode) a purpose, preference, value or channel not in the registry; nothing was written", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "Another organization", body = ErrorBody),
        (status = 409, description = "An id already stored with different content", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    QueryPairs(q): QueryPairs,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let query = query::only(&q, &[])
        .map_err(ApiError::from)
        .and_then(|()| generating_write_options(&state, &q));
    let (options, generate_tcfcs) = match query {
        Ok(query) => query,
        Err(e) => {
            // A body that is not JSON is reported first, as by the other routes.
            json_value(&body)?;
            return Err(e);
        }
    };
    let ctx = ParseContext {
        organization_id: caller.org.clone(),
        now: Timestamp::now(),
        generate_tcfcs,
        purpose_map: state.tcf_purpose_map.clone(),
    };
    let mut batch = match plain::parse(&body, &ctx) {
        Some(batch) => batch,
        // Anything else, or anything refused: the JSON tree names every problem.
        None => parse_batch(&json_value(&body)?, &ctx)?,
    };
    state
        .registries
        .get(state.store.as_ref(), &caller.org)
        .await?
        .apply_to_events(&mut batch.events, batch.is_array)?;
    if let Some(grant) = &caller.end_user {
        super::tokens::confine_events(&state, &caller.org, grant, &mut batch.events).await?;
    }
    store_proofs(&state, &caller.org, &batch.events).await?;
    let stored = state
        .store
        .append_events(&caller.org, batch.events, options)
        .await?;
    Ok(if batch.is_array {
        Json(stored.iter().map(EventJson).collect::<Vec<_>>()).into_response()
    } else {
        let event = stored
            .first()
            .ok_or_else(|| ApiError::internal("no event stored"))?;
        Json(EventJson(event)).into_response()
    })
}

/// Lists the events of one user, in the Consents API shape or, with `$format=notice`, in
/// the notice shape of CMP SDKs.
#[utoipa::path(
    get,
    path = "/v1/consents/events",
    tag = "consents/events",
    params(OrganizationParam, EventsParams, FormatParams),
    responses(
        (status = 200, description = "A page of events (empty for an unknown user)", body = EventList),
        (status = 400, description = "No user, a bad filter or a bad $format", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryPairs(mut q): QueryPairs,
) -> Result<Json<EventList>, ApiError> {
    if let Some(grant) = &caller.end_user {
        // A consent token lists its own user's events, named or not.
        let named = [
            query::param(&q, "user_id").map(|id| UserSelector::Id(id.to_owned())),
            query::param(&q, "organization_user_id")
                .map(|o| UserSelector::OrganizationUserId(o.to_owned())),
        ];
        if named.iter().all(Option::is_none) {
            q.push((
                "organization_user_id".to_owned(),
                grant.organization_user_id.clone(),
            ));
        }
        for user in named.iter().flatten() {
            super::tokens::confine_read(&state, &caller.org, grant, user).await?;
        }
    }
    let format = EventFormat::parse(&q)?;
    let query = EventsQuery::for_list(&q)?;
    let page = state.store.list_events(&caller.org, &query).await?;
    let show = |e: &assent_model::ConsentEvent| match format {
        EventFormat::Consents => ListedEvent::Consents(Box::new(e.view())),
        EventFormat::Notice => ListedEvent::Notice(Box::new(e.notice_view())),
    };
    Ok(Json(EventList {
        total: page.total,
        limit: page.limit,
        skip: page.skip,
        data: page.data.iter().map(show).collect(),
    }))
}

/// Deletes the events of one user that match the filters, and recomputes the user.
#[utoipa::path(
    delete,
    path = "/v1/consents/events",
    tag = "consents/events",
    params(OrganizationParam, EventsParams, WriteFlags),
    responses(
        (status = 204, description = "Deleted (or nothing matched); the user is recomputed"),
        (status = 400, description = "No user, no filter, or a bad filter", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_matching(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
) -> Result<StatusCode, ApiError> {
    let options = write_options(&q)?;
    let query = EventsQuery::for_delete(&q)?;
    state
        .store
        .delete_events(&tenant.org, query, options)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stores the proof files sent inside events (their ids are already in the events'
/// `proofs_id`). Ids of proofs not stored here are accepted: imports carry ids of proofs kept
/// elsewhere.
async fn store_proofs(
    state: &AppState,
    org: &assent_model::OrganizationId,
    events: &[assent_model::EventInput],
) -> Result<(), ApiError> {
    let files: Vec<_> = events
        .iter()
        .flat_map(|event| event.proofs.iter().cloned())
        .collect();
    state.store.put_proofs(org, files).await?;
    Ok(())
}

/// The event `id`, checked against the optional `user_id` / `organization_user_id` of the
/// query: an event of another user is "not found".
async fn owned_event(
    state: &AppState,
    tenant: &Tenant,
    id: &EventId,
    q: &[(String, String)],
) -> Result<assent_model::ConsentEvent, ApiError> {
    let event = state.store.get_event(&tenant.org, id).await?;
    let mut owned = true;
    for (k, v) in q {
        match k.as_str() {
            "user_id" => owned &= *v == event.user_id,
            "organization_user_id" => {
                let user = state
                    .store
                    .get_user(&tenant.org, &UserSelector::Id(event.user_id.clone()))
                    .await?;
                owned &= user.organization_user_id.as_deref() == Some(v.as_str());
            }
            _ => {}
        }
    }
    if owned {
        Ok(event)
    } else {
        Err(DomainError::NotFound(format!("event '{id}' not found")).into())
    }
}

fn names_user(q: &[(String, String)]) -> bool {
    q.iter()
        .any(|(k, _)| k == "user_id" || k == "organization_user_id")
}

/// One event.
#[utoipa::path(
    get,
    path = "/v1/consents/events/{id}",
    tag = "consents/events",
    params(("id" = String, Path, description = "Event id"), OrganizationParam),
    responses(
        (status = 200, description = "The event", body = EventView),
        (status = 404, description = "No such event in the organization", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<EventView>, ApiError> {
    query::only(&q, &["user_id", "organization_user_id"])?;
    let id = event_id(&id)?;
    Ok(Json(owned_event(&state, &tenant, &id, &q).await?.view()))
}

/// Changes an event (mostly `pending_approval` → `confirmed`); the user is recomputed. New
/// `consents` are checked in strict mode and stamp the event with the purpose versions in
/// force now.
#[utoipa::path(
    patch,
    path = "/v1/consents/events/{id}",
    tag = "consents/events",
    params(("id" = String, Path, description = "Event id"), OrganizationParam, WriteFlags),
    request_body = EventPatchIn,
    responses(
        (status = 200, description = "The changed event", body = EventView),
        (status = 400, description = "Invalid change", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<EventView>, ApiError> {
    query::only(&q, &["user_id", "organization_user_id"])?;
    let options = write_options(&q)?;
    let id = event_id(&id)?;
    let mut patch = EventPatch::parse(&body)?;
    if patch.consents.is_some() {
        state
            .registries
            .get(state.store.as_ref(), &tenant.org)
            .await?
            .apply_to_patch(&mut patch)?;
    }
    if names_user(&q) {
        owned_event(&state, &tenant, &id, &q).await?;
    }
    state
        .store
        .put_proofs(&tenant.org, patch.proofs.clone())
        .await?;
    let event = state
        .store
        .patch_event(&tenant.org, &id, patch, options)
        .await?;
    Ok(Json(event.view()))
}

/// Deletes one event; the user is recomputed.
#[utoipa::path(
    delete,
    path = "/v1/consents/events/{id}",
    tag = "consents/events",
    params(("id" = String, Path, description = "Event id"), OrganizationParam, WriteFlags),
    responses(
        (status = 204, description = "Deleted; the user is recomputed"),
        (status = 404, description = "No such event", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<StatusCode, ApiError> {
    query::only(&q, &["user_id", "organization_user_id"])?;
    let options = write_options(&q)?;
    let id = event_id(&id)?;
    if names_user(&q) {
        owned_event(&state, &tenant, &id, &q).await?;
    }
    state.store.delete_event(&tenant.org, &id, options).await?;
    Ok(StatusCode::NO_CONTENT)
}
