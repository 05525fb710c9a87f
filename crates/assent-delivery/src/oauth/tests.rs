use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::*;
use crate::http::HttpConfig;

/// A token endpoint that counts the tokens it issued. `/token` issues tokens valid for an
/// hour, `/short` tokens valid for 10 s, `/untyped` tokens without `expires_in` or
/// `token_type`, `/mac` tokens of another type.
async fn token_endpoint() -> (String, Arc<AtomicUsize>) {
    let issued = Arc::new(AtomicUsize::new(0));
    let handler = |expires_in: Option<serde_json::Value>, token_type: Option<&'static str>| {
        move |State(issued): State<Arc<AtomicUsize>>, headers: HeaderMap, body: String| async move {
            assert_eq!(
                headers.get("content-type").unwrap(),
                "application/x-www-form-urlencoded"
            );
            let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect();
            assert_eq!(form["grant_type"], "client_credentials");
            if form["client_id"] != "assent" || form["client_secret"] != "s3cr3t & more" {
                return (StatusCode::UNAUTHORIZED, "{\"error\":\"invalid_client\"}")
                    .into_response();
            }
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            let scope = form.get("scope").cloned().unwrap_or_default();
            let mut answer = serde_json::json!({ "access_token": format!("token-{n}{scope}") });
            if let Some(expires_in) = &expires_in {
                answer["expires_in"] = expires_in.clone();
            }
            if let Some(token_type) = token_type {
                answer["token_type"] = token_type.into();
            }
            Response::builder()
                .header("content-type", "application/json")
                .body(axum::body::Body::from(answer.to_string()))
                .unwrap()
        }
    };
    let router = Router::new()
        .route("/token", post(handler(Some(3600.into()), Some("Bearer"))))
        .route("/short", post(handler(Some("10".into()), Some("bearer"))))
        .route("/untyped", post(handler(None, None)))
        .route("/mac", post(handler(Some(3600.into()), Some("mac"))))
        .with_state(Arc::clone(&issued));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}"), issued)
}

fn client() -> OutboundClient {
    OutboundClient::new(HttpConfig {
        allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        ..HttpConfig::default()
    })
    .unwrap()
}

fn creds(url: String) -> ClientCredentials {
    ClientCredentials {
        url,
        client_id: "assent".to_owned(),
        client_secret: "s3cr3t & more".to_owned(),
        scope: None,
    }
}

#[tokio::test]
async fn token_is_cached_until_forgotten() {
    let (base, issued) = token_endpoint().await;
    let client = client();
    let cache = TokenCache::default();
    let creds = creds(format!("{base}/token"));

    assert_eq!(cache.bearer(&client, &creds).await.unwrap(), "token-1");
    assert_eq!(
        cache.clone().bearer(&client, &creds).await.unwrap(),
        "token-1"
    );
    assert_eq!(issued.load(Ordering::SeqCst), 1);

    cache.forget(&creds);
    assert_eq!(cache.bearer(&client, &creds).await.unwrap(), "token-2");
    assert_eq!(cache.bearer(&client, &creds).await.unwrap(), "token-2");
    assert_eq!(issued.load(Ordering::SeqCst), 2);

    // Another scope is another token.
    let scoped = ClientCredentials {
        scope: Some("consents:read".to_owned()),
        ..creds.clone()
    };
    assert_eq!(
        cache.bearer(&client, &scoped).await.unwrap(),
        "token-3consents:read"
    );
    assert_eq!(cache.bearer(&client, &creds).await.unwrap(), "token-2");
}

#[tokio::test]
async fn token_close_to_expiry_is_renewed() {
    let (base, issued) = token_endpoint().await;
    let client = client();
    let cache = TokenCache::default();
    let creds = creds(format!("{base}/short"));
    assert_eq!(cache.bearer(&client, &creds).await.unwrap(), "token-1");
    assert_eq!(cache.bearer(&client, &creds).await.unwrap(), "token-2");
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn token_without_expiry_or_type_is_accepted_and_cached() {
    let (base, issued) = token_endpoint().await;
    let client = client();
    let cache = TokenCache::default();
    let creds = creds(format!("{base}/untyped"));
    assert_eq!(cache.bearer(&client, &creds).await.unwrap(), "token-1");
    assert_eq!(cache.bearer(&client, &creds).await.unwrap(), "token-1");
    assert_eq!(issued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn token_endpoint_failures_are_reported() {
    let (base, _) = token_endpoint().await;
    let client = client();
    let cache = TokenCache::default();

    let wrong = ClientCredentials {
        client_secret: "wrong".to_owned(),
        ..creds(format!("{base}/token"))
    };
    assert_eq!(
        cache.bearer(&client, &wrong).await.unwrap_err(),
        SendError::Other("token endpoint answered 401".to_owned())
    );

    let mac = creds(format!("{base}/mac"));
    let error = cache.bearer(&client, &mac).await.unwrap_err();
    assert!(error.to_string().contains("not a bearer token"), "{error}");

    let missing = creds(format!("{base}/missing"));
    assert_eq!(
        cache.bearer(&client, &missing).await.unwrap_err(),
        SendError::Other("token endpoint answered 404".to_owned())
    );
}

#[tokio::test]
async fn token_endpoint_is_subject_to_the_ssrf_rules() {
    let (base, issued) = token_endpoint().await;
    let refusing = OutboundClient::new(HttpConfig::default()).unwrap();
    let error = TokenCache::default()
        .bearer(&refusing, &creds(format!("{base}/token")))
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Refused(_)), "{error:?}");
    assert_eq!(issued.load(Ordering::SeqCst), 0);
}

#[test]
fn debug_does_not_show_the_client_secret() {
    let debug = format!("{:?}", creds("https://auth.example.com/token".to_owned()));
    assert!(!debug.contains("s3cr3t"), "{debug}");
    assert!(debug.contains("assent"), "{debug}");
}
