//! The HTTP API of Assent.
//!
//! [`router`] builds the axum application over any [`Store`]; handlers are thin: they parse the
//! request with the model crate, call the store, and shape the answer.

pub mod auth;
pub mod error;
pub mod extract;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod registry;
pub mod routes;
pub mod web;

use assent_model::tcf::PurposeMap;
use assent_store::Store;
use auth::Sessions;
use axum::Router;
use axum::extract::Request;
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use error::ApiError;
use ratelimit::{RateLimitConfig, RateLimits};
use routes::{
    api_keys, events, exports, integrations, ops, proofs, purposes, secrets, sessions, settings,
    stats, tokens, users,
};
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Issues and checks session tokens.
    pub sessions: Arc<Sessions>,
    /// The OpenAPI document, rendered once.
    pub openapi: Arc<String>,
    /// The rate limits and their counts.
    pub limits: Arc<RateLimits>,
    /// Which purposes are which IAB TCF purposes, for `$generate_tcfcs=true`.
    pub tcf_purpose_map: Arc<PurposeMap>,
    /// How configured exports run.
    pub exports: Arc<assent_export::ExportSettings>,
    /// The organizations' purpose registries as event writes need them, read recently.
    pub registries: Arc<registry::RegistryCache>,
}

/// How the HTTP layer behaves: rate limits, the longest time a request may take, and the
/// purpose map of generated TCF strings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Rate limits per organization and route class.
    pub rate_limits: RateLimitConfig,
    /// Longest time from the end of a request's headers to its answer, body read included
    /// (`None`: no limit). Beyond it the answer is 408 `Timeout`.
    pub request_timeout: Option<Duration>,
    /// Which purposes are which IAB TCF purposes and special features when a write asks for
    /// `$generate_tcfcs=true` (Didomi's ids by default).
    pub tcf_purpose_map: Arc<PurposeMap>,
    /// How configured exports run (`POST /v1/exports/{id}/execute`) and where `file://`
    /// destinations may lie.
    pub exports: assent_export::ExportSettings,
}

impl Default for ServerConfig {
    /// The contract's rate limits, a 30 s request timeout and Didomi's purpose ids.
    fn default() -> Self {
        ServerConfig {
            rate_limits: RateLimitConfig::default(),
            request_timeout: Some(Duration::from_secs(30)),
            tcf_purpose_map: Arc::new(PurposeMap::default()),
            exports: assent_export::ExportSettings {
                tick: Duration::from_secs(30),
                retry_delay: Duration::from_secs(300),
                lease: Duration::from_secs(3600),
                file_root: std::path::PathBuf::from("assent-exports"),
            },
        }
    }
}

/// The OpenAPI document and the routes it describes, from the handlers' annotations.
fn documented_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let documented = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(sessions::create))
        .routes(routes!(
            events::create,
            events::list,
            events::delete_matching
        ))
        .routes(routes!(events::get, events::patch, events::delete))
        .routes(routes!(api_keys::list, api_keys::create))
        .routes(routes!(api_keys::get, api_keys::patch, api_keys::delete))
        .routes(routes!(secrets::list, secrets::create))
        .routes(routes!(secrets::get, secrets::patch, secrets::delete))
        .routes(routes!(exports::list, exports::create))
        .routes(routes!(exports::get, exports::patch, exports::delete))
        .routes(routes!(exports::execute))
        .routes(routes!(proofs::create))
        .routes(routes!(proofs::get))
        .routes(routes!(tokens::create))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::patch, users::delete))
        .routes(routes!(integrations::list, integrations::create))
        .routes(routes!(
            integrations::get,
            integrations::patch,
            integrations::delete
        ))
        .routes(routes!(integrations::deliveries))
        .routes(routes!(integrations::retry))
        .routes(routes!(integrations::inbound))
        .routes(routes!(purposes::list, purposes::create))
        .routes(routes!(purposes::get, purposes::patch, purposes::delete))
        .routes(routes!(purposes::versions))
        .routes(routes!(settings::get, settings::patch))
        .routes(routes!(settings::get_look, settings::put_look))
        .routes(routes!(stats::consents))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .split_for_parts();
    let (routes, mut api) = documented;
    openapi::add_rate_limit_responses(&mut api);
    openapi::add_common_errors(&mut api);
    (routes, api)
}

/// The OpenAPI document of the API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    documented_routes().1
}

/// Builds the application over `store`, signing sessions with `signing_key`, with the rate
/// limits, request timeout and TCF purpose map of `config`.
pub fn router(store: Arc<dyn Store>, signing_key: &[u8], config: &ServerConfig) -> Router {
    metrics::install();
    let (routes, api) = documented_routes();
    let state = AppState {
        store,
        sessions: Arc::new(Sessions::new(signing_key)),
        openapi: Arc::new(api.to_json().expect("the OpenAPI document serializes")),
        limits: Arc::new(RateLimits::new(&config.rate_limits)),
        tcf_purpose_map: config.tcf_purpose_map.clone(),
        exports: Arc::new(config.exports.clone()),
        registries: Arc::new(registry::RegistryCache::default()),
    };
    let app = routes
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::throttle,
        ))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .merge(web::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .with_state(state);
    match config.request_timeout {
        Some(limit) => app.layer(axum::middleware::from_fn(move |req, next| {
            time_limit(limit, req, next)
        })),
        None => app,
    }
}

/// Answers 408 when a request takes longer than `limit` (a client that sends its body too
/// slowly, or a request stuck behind the store).
async fn time_limit(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {} seconds",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a handler panicked").into_response()
}
