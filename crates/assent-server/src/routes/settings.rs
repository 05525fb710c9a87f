//! `/v1/settings` and `/v1/preference-center` (Assent): an organization's settings (strict
//! mode) and the look of its preference center. End users' consent tokens may read the look
//! (the preference center shows it); only sessions may change either.

use super::OrganizationParam;
use crate::AppState;
use crate::auth::{Caller, Tenant};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, QueryPairs};
use assent_model::look::{Colors, PreferenceCenterLook};
use assent_model::settings::OrganizationSettings;
use assent_model::{Timestamp, query};
use assent_store::Stamped;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An organization's settings.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SettingsView {
    /// The organization.
    pub organization_id: String,
    /// Whether events naming a purpose, preference, value or purpose channel that is not in
    /// the purpose registry are refused (400).
    pub strict_mode: bool,
    /// When the settings last changed; null while they were never set.
    pub updated_at: Option<String>,
}

/// A change to the settings; fields left out keep their value. Unknown fields are refused.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::settings"
)]
pub struct SettingsPatchIn {
    /// Turns strict mode on or off.
    strict_mode: Option<bool>,
    /// Accepted when equal to the query's, so that a `GET` answer can be sent back.
    organization_id: Option<String>,
    /// Accepted and ignored, so that a `GET` answer can be sent back.
    updated_at: Option<String>,
}

/// How the preference center looks.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LookView {
    /// The organization.
    pub organization_id: String,
    /// The page's title (default "Your privacy choices").
    pub title: String,
    /// A paragraph under the title.
    pub intro: Option<String>,
    /// The logo's URL.
    pub logo_url: Option<String>,
    /// Colours as `#rrggbb`: buttons (white text on `primary`), `background`, `text`.
    pub colors: Colors,
    /// The language shown when neither `?lang=` nor `Accept-Language` picks one.
    pub default_language: String,
    /// When the look last changed; null while it was never set.
    pub updated_at: Option<String>,
}

/// The new look: every field is optional and takes its default when left out. Colours must
/// pass WCAG 2.1 AA (4.5:1 for `text` on `background` and for white on `primary`).
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::look"
)]
pub struct LookIn {
    /// 1–120 characters.
    title: Option<String>,
    /// 1–1000 characters.
    intro: Option<String>,
    /// An absolute `https://` or `http://` URL, at most 2048 characters.
    logo_url: Option<String>,
    /// Any of `primary`, `background`, `text`, each `#rrggbb`.
    colors: Option<ColorsIn>,
    /// A language tag such as `en` or `pt-BR`; default `en`.
    default_language: Option<String>,
    /// Accepted when equal to the query's, so that a `GET` answer can be sent back.
    organization_id: Option<String>,
    /// Accepted and ignored, so that a `GET` answer can be sent back.
    updated_at: Option<String>,
}

/// Colours of a new look; each left out takes its default.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body; it is parsed by assent_model::look"
)]
pub struct ColorsIn {
    /// Buttons and toggles (white text on it); default `#1a56db`.
    #[schema(pattern = "^#[0-9A-Fa-f]{6}$")]
    primary: Option<String>,
    /// Default `#ffffff`.
    #[schema(pattern = "^#[0-9A-Fa-f]{6}$")]
    background: Option<String>,
    /// Default `#111827`.
    #[schema(pattern = "^#[0-9A-Fa-f]{6}$")]
    text: Option<String>,
}

impl SettingsView {
    /// The settings of `org` as stored (the defaults when never set).
    pub fn of(org: &str, stored: Option<Stamped<OrganizationSettings>>) -> SettingsView {
        let (settings, updated_at) = match stored {
            Some(s) => (s.value, Some(s.updated_at.to_rfc3339())),
            None => (OrganizationSettings::default(), None),
        };
        SettingsView {
            organization_id: org.to_owned(),
            strict_mode: settings.strict_mode,
            updated_at,
        }
    }
}

impl LookView {
    /// The look of `org`'s preference center as stored (the defaults when never set), as the
    /// API shows it; the preference center page embeds the same.
    pub fn of(org: &str, stored: Option<Stamped<PreferenceCenterLook>>) -> LookView {
        let (look, updated_at) = match stored {
            Some(s) => (s.value, Some(s.updated_at.to_rfc3339())),
            None => (PreferenceCenterLook::default(), None),
        };
        LookView {
            organization_id: org.to_owned(),
            title: look.title,
            intro: look.intro,
            logo_url: look.logo_url,
            colors: look.colors,
            default_language: look.default_language,
            updated_at,
        }
    }
}

/// The organization's settings (defaults when never set).
#[utoipa::path(
    get,
    path = "/v1/settings",
    tag = "settings",
    params(OrganizationParam),
    responses((status = 200, description = "The settings", body = SettingsView)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
) -> Result<Json<SettingsView>, ApiError> {
    query::only(&q, &[])?;
    let stored = state.store.get_settings(&tenant.org).await?;
    Ok(Json(SettingsView::of(tenant.org.as_str(), stored)))
}

/// Changes the organization's settings. Strict mode applies to the events written after the
/// answer on this node, and within one second on other nodes.
#[utoipa::path(
    patch,
    path = "/v1/settings",
    tag = "settings",
    params(OrganizationParam),
    request_body = SettingsPatchIn,
    responses(
        (status = 200, description = "The settings", body = SettingsView),
        (status = 400, description = "Invalid change", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<SettingsView>, ApiError> {
    query::only(&q, &[])?;
    let current = state
        .store
        .get_settings(&tenant.org)
        .await?
        .map(|s| s.value)
        .unwrap_or_default();
    let settings = Stamped {
        value: current.patched(&body, tenant.org.as_str())?,
        updated_at: Timestamp::now(),
    };
    state
        .store
        .put_settings(&tenant.org, settings.clone())
        .await?;
    state.registries.forget(&tenant.org);
    Ok(Json(SettingsView::of(tenant.org.as_str(), Some(settings))))
}

/// How the organization's preference center looks (defaults when never set).
#[utoipa::path(
    get,
    path = "/v1/preference-center",
    tag = "settings",
    params(OrganizationParam),
    responses((status = 200, description = "The look", body = LookView)),
    security(("bearer" = []))
)]
pub async fn get_look(
    State(state): State<AppState>,
    caller: Caller,
    QueryPairs(q): QueryPairs,
) -> Result<Json<LookView>, ApiError> {
    query::only(&q, &[])?;
    let stored = state.store.get_preference_center(&caller.org).await?;
    Ok(Json(LookView::of(caller.org.as_str(), stored)))
}

/// Replaces the look of the preference center; fields left out take their defaults.
#[utoipa::path(
    put,
    path = "/v1/preference-center",
    tag = "settings",
    params(OrganizationParam),
    request_body = LookIn,
    responses(
        (status = 200, description = "The look", body = LookView),
        (status = 400, description = "Invalid look, or colours below WCAG 2.1 AA contrast", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_look(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<LookView>, ApiError> {
    query::only(&q, &[])?;
    let look = Stamped {
        value: PreferenceCenterLook::parse(&body, tenant.org.as_str())?,
        updated_at: Timestamp::now(),
    };
    state
        .store
        .put_preference_center(&tenant.org, look.clone())
        .await?;
    Ok(Json(LookView::of(tenant.org.as_str(), Some(look))))
}
