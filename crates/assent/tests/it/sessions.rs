//! `POST /v1/sessions`: an API key and its secret are exchanged for a one-hour token.

use crate::common::Backend;
use crate::common::{TestServer, assert_bad_field, assert_error};
use reqwest::{Method, StatusCode};
use rstest::rstest;
use serde_json::{Value, json};

async fn open(server: &TestServer, body: Value) -> (StatusCode, Value) {
    server
        .raw(Method::POST, "/v1/sessions", None, Some(body))
        .await
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn valid_key_and_secret_open_a_one_hour_session(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let (status, body) = open(
        &server,
        json!({"type": "api-key", "key": server.key, "secret": server.secret}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["type"], "api-key");
    assert_eq!(body["key"], server.key.as_str());
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().expect("access_token");
    assert_eq!(
        token.split('.').count(),
        3,
        "a JWT has three parts: {token}"
    );
    let (status, page) = server
        .raw(
            Method::GET,
            &format!("/v1/consents/users?organization_id={}", server.org),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the token opens the API: {page}");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn wrong_key_and_wrong_secret_are_401_with_the_same_message(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let (s1, wrong_key) = open(
        &server,
        json!({"type": "api-key", "key": "no-such-key", "secret": server.secret}),
    )
    .await;
    let (s2, wrong_secret) = open(
        &server,
        json!({"type": "api-key", "key": server.key, "secret": "not-the-secret"}),
    )
    .await;
    assert_error(s1, &wrong_key, 401, "NotAuthenticated");
    assert_error(s2, &wrong_secret, 401, "NotAuthenticated");
    assert_eq!(
        wrong_key["message"], wrong_secret["message"],
        "a caller must not learn whether the key exists"
    );
    assert!(wrong_key.get("access_token").is_none());
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_session_type_other_than_api_key_is_400(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let (status, body) = open(
        &server,
        json!({"type": "password", "key": server.key, "secret": server.secret}),
    )
    .await;
    assert_bad_field(status, &body, "type");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn missing_session_fields_are_400_naming_each_field(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let (status, body) = open(&server, json!({})).await;
    assert_bad_field(status, &body, "type");
    assert_bad_field(status, &body, "key");
    assert_bad_field(status, &body, "secret");

    let (status, body) = open(&server, json!({"type": "api-key", "key": server.key})).await;
    assert_bad_field(status, &body, "secret");
    assert!(body["errors"].get("key").is_none(), "{body}");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn session_fields_of_the_wrong_type_are_400_naming_the_field(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let (status, body) = open(
        &server,
        json!({"type": "api-key", "key": 42, "secret": server.secret}),
    )
    .await;
    assert_bad_field(status, &body, "key");
    let (status, body) = open(&server, json!(["api-key"])).await;
    assert_error(status, &body, 400, "BadRequest");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_unknown_session_field_is_400(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let (status, body) = open(
        &server,
        json!({"type": "api-key", "key": server.key, "secret": server.secret, "scope": "all"}),
    )
    .await;
    assert_bad_field(status, &body, "scope");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_session_body_that_is_not_json_is_400(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let res = server
        .http
        .post(format!("{}/v1/sessions", server.base))
        .header("content-type", "application/json")
        .body("{\"type\": \"api-key\",")
        .send()
        .await
        .expect("sent");
    let status = res.status();
    let body: Value = res.json().await.expect("JSON error body");
    assert_bad_field(status, &body, "body");
    server.stop().await;
}
