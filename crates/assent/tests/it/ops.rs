//! Operations routes at the root: health, readiness, metrics, the OpenAPI document, and what
//! unknown routes and methods answer.

use crate::common::Backend;
use crate::common::{TestServer, assert_error};
use reqwest::{Method, StatusCode};
use rstest::rstest;
use serde_json::json;

async fn get_text(server: &TestServer, path: &str) -> (StatusCode, String, String) {
    let res = server
        .http
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .expect("sent");
    let status = res.status();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ct, res.text().await.expect("text"))
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn healthz_and_readyz_answer_200_without_a_token(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    for path in ["/healthz", "/readyz"] {
        let (status, body) = server.raw(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body, json!({"status": "ok"}), "{path}");
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn metrics_count_requests_by_matched_route_and_events_written(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"user": {"id": "u1"}})).await;
    api.event(json!({"user": {"id": "u2"}})).await;
    api.get("/v1/consents/events/some-raw-id-123").await;
    let (status, ct, text) = get_text(&server, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/plain"), "{ct}");
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("assent_http_requests_total{"))
        .collect();
    assert!(
        requests
            .iter()
            .any(|l| l.contains(r#"route="/v1/consents/events""#)
                && l.contains(r#"method="POST""#)
                && l.contains(r#"status="200""#)),
        "{text}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains(r#"route="/v1/consents/events/{id}""#)),
        "routes are labelled by template: {text}"
    );
    assert!(
        !text.contains("some-raw-id-123"),
        "raw paths never become labels"
    );
    let written = text
        .lines()
        .find(|l| l.starts_with("assent_events_written_total"))
        .unwrap_or_else(|| panic!("assent_events_written_total missing: {text}"));
    let n: f64 = written
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .expect("a number");
    assert!(n >= 2.0, "{written}");
    assert!(
        text.contains("assent_http_request_duration_seconds"),
        "{text}"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn openapi_json_is_openapi_3_1_with_every_route_and_method(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let (status, doc) = server.raw(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let expected: &[(&str, &[&str])] = &[
        ("/v1/sessions", &["post"]),
        ("/v1/consents/events", &["get", "post", "delete"]),
        ("/v1/consents/events/{id}", &["get", "patch", "delete"]),
        ("/v1/consents/users", &["get", "post"]),
        ("/v1/consents/users/{id}", &["get", "patch", "delete"]),
        ("/v1/purposes", &["get", "post"]),
        ("/v1/purposes/{id}", &["get", "patch", "delete"]),
        ("/v1/purposes/{id}/versions", &["get"]),
        ("/v1/settings", &["get", "patch"]),
        ("/v1/preference-center", &["get", "put"]),
        ("/v1/stats/consents", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
    ];
    for (path, methods) in expected {
        let item = &doc["paths"][path];
        assert!(item.is_object(), "{path} missing from {}", doc["paths"]);
        for m in *methods {
            assert!(item[m].is_object(), "{m} {path} missing");
        }
    }
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["scheme"], "bearer", "{bearer}");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_unknown_route_is_404_in_the_error_shape(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for path in [
        "/nope",
        "/v1/nope",
        "/v1/consents/eventz",
        "/v2/consents/events",
    ] {
        let (status, body) = server.raw(Method::GET, path, None, None).await;
        assert_error(status, &body, 404, "NotFound");
        let (status, body) = server.raw(Method::GET, path, Some(&api.token), None).await;
        assert_error(status, &body, 404, "NotFound");
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_wrong_method_is_405_in_the_error_shape(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for (method, path) in [
        (Method::PUT, "/v1/consents/events"),
        (Method::POST, "/v1/consents/events/e1"),
        (Method::PUT, "/v1/consents/users/u1"),
        (Method::DELETE, "/v1/consents/users"),
        (Method::GET, "/v1/sessions"),
        (Method::POST, "/healthz"),
    ] {
        let (status, body) = server
            .raw(
                method.clone(),
                &format!("{path}?organization_id=default"),
                Some(&api.token),
                None,
            )
            .await;
        assert_error(status, &body, 405, "MethodNotAllowed");
    }
    server.stop().await;
}
