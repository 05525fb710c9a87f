//! The OpenAPI document's frame: title, security scheme, tags. Paths come from the handlers.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, Type};

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
        (name = "exports", description = "Daily exports of users and events to a folder or a bucket"),
        (name = "purposes", description = "The purpose registry: labels, preferences and channels of each purpose, versioned"),
        (name = "settings", description = "Organization settings (strict mode) and the preference center's look"),
        (name = "stats", description = "Consent statistics per day"),
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

/// The name of the shared 429 response in the document's components.
const TOO_MANY_REQUESTS: &str = "TooManyRequests";

/// Adds the shared 429 answer (API.md §1) to every `/v1` operation that does not describe its
/// own: `/v1/consents/*` is not throttled by default, but may be configured to be.
pub fn add_rate_limit_responses(openapi: &mut utoipa::openapi::OpenApi) {
    let integer = || {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(Type::Integer)
            .build()
    };
    let text = || {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(Type::String)
            .build()
    };
    let response = ResponseBuilder::new()
        .description(
            "Too many requests for this organization (or, for sessions, this API key) in the \
             current window; retry after `Retry-After` seconds",
        )
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(integer())
                .description(Some("Seconds until the window resets"))
                .build(),
        )
        .header(
            "RateLimit",
            HeaderBuilder::new()
                .schema(text())
                .description(Some(
                    "IETF draft 7: `limit=L, remaining=R, reset=S`; also on allowed answers",
                ))
                .build(),
        )
        .header(
            "RateLimit-Policy",
            HeaderBuilder::new()
                .schema(text())
                .description(Some("IETF draft 7: `L;w=W`; also on allowed answers"))
                .build(),
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    openapi
        .components
        .get_or_insert_with(Default::default)
        .responses
        .insert(TOO_MANY_REQUESTS.to_owned(), RefOr::T(response));
    for (path, item) in openapi.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry("429".to_owned())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(TOO_MANY_REQUESTS)));
        }
    }
}

/// Documents the errors any operation may answer, besides those its handler lists: malformed
/// requests, limits (429 comes from [`add_rate_limit_responses`]), authentication (on secured operations), unknown ids (on operations with a
/// path parameter), and server trouble. Each has the error body.
pub fn add_common_errors(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{HttpMethod, RefOr, ResponseBuilder, content::ContentBuilder};

    const ALWAYS: &[(&str, &str)] = &[
        ("400", "Invalid query, parameters or body"),
        ("408", "The request took too long to arrive"),
        ("413", "Body over its limit"),
        ("415", "Body that is not JSON"),
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_v1_operation_documents_429_and_operations_routes_do_not() {
        let doc = serde_json::to_value(crate::openapi_document()).expect("JSON");
        let paths = doc["paths"].as_object().expect("paths");
        let mut v1 = 0;
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("path item") {
                let has = operation["responses"].get("429").is_some();
                if path.starts_with("/v1/") {
                    v1 += 1;
                    assert!(has, "{method} {path} lacks 429");
                } else {
                    assert!(!has, "{method} {path} is never throttled");
                }
            }
        }
        assert!(v1 > 20, "{v1} operations");
        let shared = &doc["components"]["responses"]["TooManyRequests"];
        for header in ["Retry-After", "RateLimit", "RateLimit-Policy"] {
            assert!(
                shared["headers"].get(header).is_some(),
                "{header}: {shared}"
            );
        }
    }
}
