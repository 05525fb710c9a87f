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
pub mod routes;

use assent_store::Store;
use auth::Sessions;
use axum::Router;
use axum::http::{Method, Uri};
use error::ApiError;
use routes::{api_keys, events, integrations, ops, proofs, secrets, sessions, tokens, users};
use std::sync::Arc;
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
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .split_for_parts();
    let (routes, mut api) = documented;
    openapi::add_common_errors(&mut api);
    (routes, api)
}

/// The OpenAPI document of the API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    documented_routes().1
}

/// Builds the application over `store`, signing sessions with `signing_key`.
pub fn router(store: Arc<dyn Store>, signing_key: &[u8]) -> Router {
    metrics::install();
    let (routes, api) = documented_routes();
    let state = AppState {
        store,
        sessions: Arc::new(Sessions::new(signing_key)),
        openapi: Arc::new(api.to_json().expect("the OpenAPI document serializes")),
    };
    routes
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ApiError::internal("a handler panicked").into_response()
}
