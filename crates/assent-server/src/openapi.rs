//! The OpenAPI document's frame: title, security scheme, tags. Paths come from the handlers.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The document's frame.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Assent API",
        description = "Consent and preference management, compatible with the Didomi Consents API. \
                       Errors have the shape {code, name, message, errors}.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "sessions", description = "Exchange an API key for a session token"),
        (name = "consents/events", description = "Consent events: the record of truth"),
        (name = "consents/users", description = "Users and their consent status"),
        (name = "marketplace/integrations", description = "Webhooks and connectors that receive every change, and their deliveries"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// Adds the bearer-token security scheme.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
