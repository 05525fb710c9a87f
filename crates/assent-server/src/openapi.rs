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

/// Documents the errors any operation may answer, besides those its handler lists: malformed
/// requests, limits, authentication (on secured operations), unknown ids (on operations with a
/// path parameter), and server trouble. Each has the error body.
pub fn add_common_errors(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{HttpMethod, RefOr, ResponseBuilder, content::ContentBuilder};

    const ALWAYS: &[(&str, &str)] = &[
        ("400", "Invalid query, parameters or body"),
        ("408", "The request took too long to arrive"),
        ("413", "Body over its limit"),
        ("415", "Body that is not JSON"),
        ("429", "Over the rate limit; see Retry-After"),
        ("500", "Internal error"),
        ("503", "The store is unavailable"),
    ];
    const SECURED: &[(&str, &str)] = &[
        (
            "401",
            "Missing, invalid or expired token, or a disabled key",
        ),
        (
            "403",
            "The token may not act for this organization or on this route",
        ),
    ];
    const WITH_ID: &[(&str, &str)] = &[("404", "No such resource in this organization")];

    let error = || {
        RefOr::T(
            ResponseBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "ErrorBody",
                        ))))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in openapi.paths.paths.iter_mut() {
        for method in [
            HttpMethod::Get,
            HttpMethod::Post,
            HttpMethod::Patch,
            HttpMethod::Put,
            HttpMethod::Delete,
        ] {
            let operation = match method {
                HttpMethod::Get => item.get.as_mut(),
                HttpMethod::Post => item.post.as_mut(),
                HttpMethod::Patch => item.patch.as_mut(),
                HttpMethod::Put => item.put.as_mut(),
                HttpMethod::Delete => item.delete.as_mut(),
                _ => None,
            };
            let Some(operation) = operation else {
                continue;
            };
            let secured = operation
                .security
                .as_ref()
                .is_some_and(|s| s.iter().any(|r| *r != Default::default()));
            let mut codes: Vec<(&str, &str)> = ALWAYS.to_vec();
            if secured {
                codes.extend_from_slice(SECURED);
            }
            if path.contains('{') {
                codes.extend_from_slice(WITH_ID);
            }
            for (code, description) in codes {
                operation
                    .responses
                    .responses
                    .entry(code.to_owned())
                    .or_insert_with(|| match error() {
                        RefOr::T(mut r) => {
                            r.description = description.to_owned();
                            RefOr::T(r)
                        }
                        other => other,
                    });
            }
        }
    }
}
