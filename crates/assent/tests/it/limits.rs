//! Request limits and rate limits (API.md §1): oversized bodies are 413, oversized heads 431,
//! slow heads are cut off, slow requests are 408, and each organization's requests beyond its
//! rate are 429 with `Retry-After` and the draft-7 `RateLimit` headers.

use crate::common::{Backend, TestServer, assert_error, test_limits};
use assent::LimitArgs;
use reqwest::{Method, StatusCode};
use rstest::rstest;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `host:port` of a test server.
fn addr(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Reads what the server sends until it closes the connection or `limit` passes; returns the
/// bytes and whether the connection was closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn every_route_with_a_body_refuses_more_than_one_mebibyte_with_413(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let too_big = vec![b' '; 1024 * 1024 + 1];
    let routes = [
        (Method::POST, "/v1/consents/events"),
        (Method::PATCH, "/v1/consents/events/e1"),
        (Method::POST, "/v1/consents/users"),
        (Method::PATCH, "/v1/consents/users/u1"),
        (Method::POST, "/v1/consents/tokens"),
        (Method::POST, "/v1/keys"),
        (Method::PATCH, "/v1/keys/k1"),
        (Method::POST, "/v1/secrets"),
        (Method::PATCH, "/v1/secrets/s1"),
        (Method::POST, "/v1/marketplace/integrations"),
        (Method::PATCH, "/v1/marketplace/integrations/i1"),
        (Method::POST, "/v1/integrations/i1/inbound"),
    ];
    for (method, path) in routes {
        let (status, body) = api
            .send_bytes(
                method.clone(),
                path,
                Some("application/json"),
                too_big.clone(),
            )
            .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{method} {path}");
        assert_error(status, &body, 413, "PayloadTooLarge");
    }
    // Sessions are opened without a token; their body is capped all the same.
    let res = server
        .http
        .post(format!("{}/v1/sessions", server.base))
        .header("content-type", "application/json")
        .body(too_big.clone())
        .send()
        .await
        .expect("sent");
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_error(status, &body, 413, "PayloadTooLarge");
    // Proofs take up to 20 MiB: 2 MiB is not too large there, 20 MiB and a byte is.
    let (status, body) = api
        .send_bytes(
            Method::POST,
            "/v1/consents/proofs",
            Some("application/json"),
            vec![b' '; 2 * 1024 * 1024],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = api
        .send_bytes(
            Method::POST,
            "/v1/consents/proofs",
            Some("application/json"),
            vec![b' '; 20 * 1024 * 1024 + 1],
        )
        .await;
    assert_error(status, &body, 413, "PayloadTooLarge");
    server.stop().await;
}

#[tokio::test]
async fn more_than_100_headers_is_431() {
    let server = TestServer::start().await;
    let send = |count: usize| {
        let mut req = server.http.get(format!("{}/healthz", server.base));
        for i in 0..count {
            req = req.header(format!("x-filler-{i}"), "1");
        }
        req.send()
    };
    // reqwest adds `host` and `accept`: 95 of ours stay under 100.
    assert_eq!(send(95).await.expect("sent").status(), StatusCode::OK);
    assert_eq!(
        send(101).await.expect("sent").status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    server.stop().await;
}

#[tokio::test]
async fn a_head_over_32_kibibytes_is_431() {
    let server = TestServer::start().await;
    let send = |bytes: usize| {
        server
            .http
            .get(format!("{}/healthz", server.base))
            .header("x-filler", "a".repeat(bytes))
            .send()
    };
    assert_eq!(
        send(30 * 1024).await.expect("sent").status(),
        StatusCode::OK
    );
    assert_eq!(
        send(33 * 1024).await.expect("sent").status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    server.stop().await;
}

/// Limits with a one-second header timeout.
fn short_header_timeout() -> LimitArgs {
    LimitArgs {
        header_timeout: Duration::from_secs(1),
        ..test_limits()
    }
}

#[tokio::test]
async fn headers_dribbled_slower_than_the_header_timeout_are_cut_off() {
    let server = TestServer::start_limited(Backend::Sqlite, short_header_timeout())
        .await
        .expect("SQLite is always available");
    let mut stream = TcpStream::connect(addr(&server)).await.expect("connect");
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: assent\r\n")
        .await
        .expect("request line");
    // One header every 200 ms, for up to 5 s: a slow-loris client never finishes its head.
    let mut closed_after = None;
    for i in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if stream
            .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("the server closes a connection whose head is slow");
    assert!(
        closed_after < Duration::from_secs(3),
        "closed only after {closed_after:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_head_sent_in_pieces_within_the_header_timeout_is_answered() {
    let server = TestServer::start_limited(Backend::Sqlite, short_header_timeout())
        .await
        .expect("SQLite is always available");
    let mut stream = TcpStream::connect(addr(&server)).await.expect("connect");
    for piece in [
        "GET /healthz HTTP/1.1\r\n",
        "Host: assent\r\n",
        "Connection: close\r\n\r\n",
    ] {
        stream.write_all(piece.as_bytes()).await.expect("written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_header_timeout() {
    let server = TestServer::start_limited(Backend::Sqlite, short_header_timeout())
        .await
        .expect("SQLite is always available");
    let mut stream = TcpStream::connect(addr(&server)).await.expect("connect");
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "an idle connection is closed");
    assert!(started.elapsed() < Duration::from_secs(3));
    server.stop().await;
}

#[tokio::test]
async fn a_body_slower_than_the_request_timeout_is_408() {
    let server = TestServer::start_limited(
        Backend::Sqlite,
        LimitArgs {
            request_timeout: Duration::from_secs(1),
            ..test_limits()
        },
    )
    .await
    .expect("SQLite is always available");
    let api = server.client().await;
    let mut stream = TcpStream::connect(addr(&server)).await.expect("connect");
    let head = format!(
        "POST /v1/consents/events?organization_id={} HTTP/1.1\r\nHost: assent\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\nConnection: close\r\n\r\n{{\"user\":",
        api.org, api.token
    );
    stream.write_all(head.as_bytes()).await.expect("written");
    let started = Instant::now();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
    let json_start = text.find("\r\n\r\n").map_or(0, |i| i + 4);
    let body: Value = serde_json::from_str(text[json_start..].trim())
        .unwrap_or_else(|e| panic!("the 408 carries a JSON error ({e}): {text}"));
    assert_error(StatusCode::REQUEST_TIMEOUT, &body, 408, "Timeout");
    server.stop().await;
}

/// Limits with a small rate on every route but `/v1/consents/*`.
fn small_rate(rate: &str, consents: &str) -> LimitArgs {
    LimitArgs {
        rate_limit: rate.parse().expect("a rate"),
        consents_rate_limit: consents.parse().expect("a rate"),
        ..test_limits()
    }
}

/// A header of a response, as text.
fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn requests_beyond_the_rate_are_429_per_organization_with_headers(#[case] backend: Backend) {
    let Some(server) = TestServer::start_limited(backend, small_rate("5/60s", "off")).await else {
        return;
    };
    let api = server.client().await;
    let other = server.new_org("acme").await;
    let get = |api: &crate::common::Api, path: &str| {
        api.http.get(api.url(path)).bearer_auth(&api.token).send()
    };
    for remaining in (0..5).rev() {
        let res = get(&api, "/v1/keys").await.expect("sent");
        assert_eq!(res.status(), StatusCode::OK);
        let ratelimit = header(&res, "ratelimit").expect("RateLimit on an allowed answer");
        assert!(
            ratelimit.starts_with(&format!("limit=5, remaining={remaining}, reset=")),
            "{ratelimit}"
        );
        assert_eq!(header(&res, "ratelimit-policy"), Some("5;w=60"));
        assert!(header(&res, "retry-after").is_none());
    }
    let res = get(&api, "/v1/secrets").await.expect("sent");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header(&res, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let ratelimit = header(&res, "ratelimit")
        .expect("RateLimit on a 429")
        .to_owned();
    assert_eq!(
        ratelimit,
        format!("limit=5, remaining=0, reset={retry_after}")
    );
    assert_eq!(header(&res, "ratelimit-policy"), Some("5;w=60"));
    let status = res.status();
    let body: Value = res.json().await.expect("JSON");
    assert_error(status, &body, 429, "TooManyRequests");
    // Another organization has its own count; consents routes are not counted by default.
    let res = get(&other, "/v1/keys").await.expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, "ratelimit"),
        Some("limit=5, remaining=4, reset=60")
    );
    api.event(json!({"user": {"id": "u1"}})).await;
    let res = get(&api, "/v1/consents/users/u1").await.expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        header(&res, "ratelimit").is_none(),
        "consents are not throttled"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_consents_routes_have_their_own_rate_when_configured() {
    let server = TestServer::start_limited(Backend::Sqlite, small_rate("off", "3/60s"))
        .await
        .expect("SQLite is always available");
    let api = server.client().await;
    for i in 0..3 {
        let (status, body) = api
            .post(
                "/v1/consents/events",
                json!({"user": {"id": format!("u{i}")}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = api.get("/v1/consents/users/u1").await;
    assert_error(status, &body, 429, "TooManyRequests");
    // The other routes are off: never counted, never refused.
    for _ in 0..120 {
        let res = api
            .http
            .get(api.url("/v1/keys"))
            .bearer_auth(&api.token)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::OK);
        assert!(header(&res, "ratelimit").is_none());
    }
    server.stop().await;
}

#[tokio::test]
async fn a_rate_limit_flag_that_is_not_a_rate_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_assent"))
        .args(["serve", "--listen", "127.0.0.1:0", "--rate-limit", "fast"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("assent runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("child state") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("assent started although --rate-limit is not a rate");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr is text");
    assert!(stderr.contains("--rate-limit"), "{stderr}");
    assert!(stderr.contains("N/DURATION"), "{stderr}");
}
