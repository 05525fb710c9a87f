//! Rate limits (API.md §1): `/consents/*` is not throttled by default; every other `/v1` route
//! allows 100 requests per 15 s per organization, answers 429 with `Retry-After` beyond that,
//! and sends `RateLimit` / `RateLimit-Policy` headers on allowed responses too.

use crate::common::Backend;
use crate::common::{TestServer, assert_error};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn consents_routes_are_not_throttled_by_default(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"user": {"id": "u1"}})).await;
    for i in 0..150 {
        let (status, body) = api.get("/v1/consents/users/u1").await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn session_answers_carry_rate_limit_headers(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let res = server
        .http
        .post(format!("{}/v1/sessions", server.base))
        .json(&json!({"type": "api-key", "key": server.key, "secret": server.secret}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    for header in ["ratelimit", "ratelimit-policy"] {
        assert!(
            res.headers().contains_key(header),
            "{header} missing: {:?}",
            res.headers()
        );
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn sessions_beyond_100_in_15_seconds_are_429_with_retry_after(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let body = json!({"type": "api-key", "key": server.key, "secret": server.secret});
    let mut limited = None;
    for i in 0..101 {
        let res = server
            .http
            .post(format!("{}/v1/sessions", server.base))
            .json(&body)
            .send()
            .await
            .expect("sent");
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = res.headers().get("retry-after").cloned();
            let out: Value = res.json().await.unwrap_or(Value::Null);
            limited = Some((i, retry_after, out));
            break;
        }
        assert_eq!(res.status(), StatusCode::OK, "request {i}");
    }
    let (i, retry_after, out) = limited.expect("the 101st session request is throttled");
    assert_eq!(i, 100, "the first 100 are allowed");
    assert!(retry_after.is_some(), "Retry-After is sent");
    assert_error(StatusCode::TOO_MANY_REQUESTS, &out, 429, "TooManyRequests");
    server.stop().await;
}
