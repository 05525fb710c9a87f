//! Every error answer has the shape `{code, name, message, errors}` with the name of its status
//! (API.md §1), whichever layer produced it.

use crate::common::Backend;
use crate::common::{TestServer, assert_error};
use reqwest::{Method, StatusCode};
use rstest::rstest;
use serde_json::{Value, json};

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn every_kind_of_error_has_the_error_shape_and_the_name_of_its_status(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let acme = server.new_org("acme").await;
    api.event(json!({"id": "e1", "user": {"id": "u1", "organization_user_id": "a@example.com"}}))
        .await;
    api.post("/v1/consents/users", json!({"id": "u2"})).await;

    let mut answers: Vec<(&str, u16, &str, StatusCode, Value)> = Vec::new();
    let mut push = |what, code, name, (status, body): (StatusCode, Value)| {
        answers.push((what, code, name, status, body));
    };
    push(
        "bad event field",
        400,
        "BadRequest",
        api.post("/v1/consents/events", json!({"user": 1})).await,
    );
    push(
        "bad query",
        400,
        "BadRequest",
        api.get("/v1/consents/events?user_id=u1&$limit=5000").await,
    );
    push(
        "no organization_id",
        400,
        "BadRequest",
        server
            .raw(Method::GET, "/v1/consents/users", Some(&api.token), None)
            .await,
    );
    push(
        "bad session",
        400,
        "BadRequest",
        server
            .raw(Method::POST, "/v1/sessions", None, Some(json!({})))
            .await,
    );
    push(
        "no token",
        401,
        "NotAuthenticated",
        server
            .raw(
                Method::GET,
                "/v1/consents/users?organization_id=default",
                None,
                None,
            )
            .await,
    );
    push(
        "wrong secret",
        401,
        "NotAuthenticated",
        server
            .raw(
                Method::POST,
                "/v1/sessions",
                None,
                Some(json!({"type": "api-key", "key": server.key, "secret": "x"})),
            )
            .await,
    );
    push(
        "other organization",
        403,
        "Forbidden",
        server
            .raw(
                Method::GET,
                "/v1/consents/users?organization_id=default",
                Some(&acme.token),
                None,
            )
            .await,
    );
    push(
        "unknown event",
        404,
        "NotFound",
        api.get("/v1/consents/events/zzz").await,
    );
    push(
        "unknown user",
        404,
        "NotFound",
        api.get("/v1/consents/users/zzz").await,
    );
    push(
        "unknown route",
        404,
        "NotFound",
        server.raw(Method::GET, "/v1/zzz", None, None).await,
    );
    push(
        "wrong method",
        405,
        "MethodNotAllowed",
        server.raw(Method::PUT, "/healthz", None, None).await,
    );
    push(
        "event conflict",
        409,
        "Conflict",
        api.post(
            "/v1/consents/events",
            json!({"id": "e1", "user": {"id": "u2"}}),
        )
        .await,
    );
    push(
        "user conflict",
        409,
        "Conflict",
        api.post("/v1/consents/users", json!({"id": "u2"})).await,
    );
    push(
        "version conflict",
        409,
        "Conflict",
        api.patch("/v1/consents/users/u2", json!({"version": 99}))
            .await,
    );
    push(
        "too large",
        413,
        "PayloadTooLarge",
        api.send_bytes(
            Method::POST,
            "/v1/consents/users",
            Some("application/json"),
            vec![b' '; 1024 * 1024 + 1],
        )
        .await,
    );
    push(
        "not JSON",
        415,
        "UnsupportedMediaType",
        api.send_bytes(
            Method::PATCH,
            "/v1/consents/users/u2",
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await,
    );
    for (what, code, name, status, body) in &answers {
        eprintln!("{what}: {status} {body}");
        assert_error(*status, body, *code, name);
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_field_error_message_names_the_field_and_the_errors_map_explains_it(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!({"consents": {"purposes": [{"id": "newsletter", "enabled": "yes"}]}}),
        )
        .await;
    assert_error(status, &body, 400, "BadRequest");
    let path = "consents.purposes[0].enabled";
    assert!(
        body["message"].as_str().unwrap().contains(path),
        "{}",
        body["message"]
    );
    assert!(
        body["errors"][path].as_str().unwrap().contains("boolean"),
        "{body}"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn not_found_errors_carry_an_empty_errors_map(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, body) = api
        .get("/v1/consents/events/9556b7f5-ae22-4616-97f9-3f61e22f0ec7")
        .await;
    assert_error(status, &body, 404, "NotFound");
    assert_eq!(body["errors"], json!({}));
    server.stop().await;
}
