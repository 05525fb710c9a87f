use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap as AxumHeaders, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};

use super::*;

/// Serves `router` on a free port of 127.0.0.1 for the rest of the test.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn test_router() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/user-agent",
            get(|headers: AxumHeaders| async move {
                headers
                    .get("user-agent")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            }),
        )
        .route(
            "/echo",
            post(|headers: AxumHeaders, body: String| async move {
                let test = headers
                    .get_all("x-test")
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect::<Vec<_>>()
                    .join("+");
                format!("{test}|{body}")
            }),
        )
        .route("/big", get(|| async { vec![b'x'; 1 << 20] }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/busy",
            get(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "30")],
                    "busy",
                )
            }),
        )
        .route(
            "/to-private",
            get(|| async { Redirect::temporary("http://10.0.0.1/") }),
        )
        .route(
            "/to-metadata",
            get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
        )
        .route(
            "/to-ftp",
            get(|| async { Redirect::temporary("ftp://example.com/file") }),
        )
        .route("/to-hello", get(|| async { Redirect::to("/hello") }))
        .route(
            "/chain/{n}",
            get(|Path(n): Path<u32>| async move {
                if n == 0 {
                    "end".into_response()
                } else {
                    Redirect::temporary(&format!("/chain/{}", n - 1)).into_response()
                }
            }),
        )
}

fn loopback_allowed() -> HttpConfig {
    HttpConfig {
        allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        ..HttpConfig::default()
    }
}

fn get_request(url: String) -> OutboundRequest {
    OutboundRequest {
        method: Method::GET,
        url,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

#[test]
fn refused_addresses() {
    let refused = [
        "127.0.0.1",
        "127.255.255.254",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.255",
        "0.0.0.0",
        "0.1.2.3",
        "255.255.255.255",
        "224.0.0.1",
        "240.0.0.1",
        "192.0.2.10",
        "198.51.100.7",
        "203.0.113.99",
        "198.18.0.1",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::1",
    ];
    for ip in refused {
        assert!(is_refused(ip.parse().unwrap(), &[]), "{ip} must be refused");
    }
    let public = [
        "1.1.1.1",
        "8.8.8.8",
        "93.184.216.34",
        "100.63.255.255",
        "100.128.0.1",
        "172.15.255.255",
        "172.32.0.1",
        "169.253.0.1",
        "192.169.0.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ];
    for ip in public {
        assert!(
            !is_refused(ip.parse().unwrap(), &[]),
            "{ip} must be allowed"
        );
    }
}

#[test]
fn allowed_networks_make_exceptions() {
    let allowed: Vec<IpNet> = vec!["10.20.0.0/16".parse().unwrap(), "fd00::/8".parse().unwrap()];
    assert!(!is_refused("10.20.3.4".parse().unwrap(), &allowed));
    assert!(!is_refused("::ffff:10.20.3.4".parse().unwrap(), &allowed));
    assert!(!is_refused("fd00::5".parse().unwrap(), &allowed));
    assert!(is_refused("10.21.3.4".parse().unwrap(), &allowed));
    assert!(is_refused("127.0.0.1".parse().unwrap(), &allowed));
}

#[test]
fn check_url_rules() {
    let client = OutboundClient::new(HttpConfig::default()).unwrap();
    assert!(client.check_url("https://example.com/hook?x=1").is_ok());
    assert!(client.check_url("http://93.184.216.34:8080/").is_ok());
    assert!(client.check_url("http://[2606:4700:4700::1111]/").is_ok());
    for refused in [
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://10.0.0.1:9200/",
    ] {
        let error = client.check_url(refused).unwrap_err();
        assert!(
            error.contains("private, loopback or reserved"),
            "{refused}: {error}"
        );
    }
    assert!(
        client
            .check_url("ftp://example.com/")
            .unwrap_err()
            .contains("\"ftp\"")
    );
    assert!(client.check_url("file:///etc/passwd").is_err());
    assert!(
        client
            .check_url("not a url")
            .unwrap_err()
            .starts_with("invalid URL")
    );
}

#[tokio::test]
async fn loopback_is_refused_by_default_and_allowed_on_request() {
    let addr = serve(test_router()).await;
    let refusing = OutboundClient::new(HttpConfig::default()).unwrap();
    let error = refusing
        .send(get_request(format!("http://{addr}/hello")))
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Refused(_)), "{error:?}");

    // A host name is checked where it resolves.
    let error = refusing
        .send(get_request(format!(
            "http://localhost:{}/hello",
            addr.port()
        )))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        SendError::Refused("localhost resolves only to refused addresses".to_owned())
    );

    let allowing = OutboundClient::new(loopback_allowed()).unwrap();
    let response = allowing
        .send(get_request(format!("http://{addr}/hello")))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert!(response.is_success());
    assert_eq!(response.body, b"hello");
    assert!(!response.truncated);
    assert_eq!(response.retry_after, None);

    let response = allowing
        .send(get_request(format!(
            "http://localhost:{}/hello",
            addr.port()
        )))
        .await
        .unwrap();
    assert_eq!(response.body, b"hello");
}

#[tokio::test]
async fn sends_method_headers_body_and_user_agent() {
    let addr = serve(test_router()).await;
    let client = OutboundClient::new(loopback_allowed()).unwrap();
    let response = client
        .send(OutboundRequest {
            method: Method::POST,
            url: format!("http://{addr}/echo"),
            headers: vec![
                ("X-Test".to_owned(), "one".to_owned()),
                ("x-test".to_owned(), "two".to_owned()),
                ("content-type".to_owned(), "text/plain".to_owned()),
            ],
            body: b"payload".to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(String::from_utf8(response.body).unwrap(), "one+two|payload");

    let response = client
        .send(get_request(format!("http://{addr}/user-agent")))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(response.body).unwrap(),
        format!("Assent-Webhooks/{}", env!("CARGO_PKG_VERSION"))
    );

    let error = client
        .send(OutboundRequest {
            headers: vec![("authorization".to_owned(), "Bearer s3cr3t\n".to_owned())],
            ..get_request(format!("http://{addr}/hello"))
        })
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Other(_)), "{error:?}");
    assert!(!error.to_string().contains("s3cr3t"), "{error}");
}

#[tokio::test]
async fn response_body_is_capped() {
    let addr = serve(test_router()).await;
    let client = OutboundClient::new(HttpConfig {
        max_response_bytes: 1000,
        ..loopback_allowed()
    })
    .unwrap();
    let response = client
        .send(get_request(format!("http://{addr}/big")))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), 1000);
    assert!(response.truncated);

    let response = client
        .send(get_request(format!("http://{addr}/hello")))
        .await
        .unwrap();
    assert_eq!(response.body, b"hello");
    assert!(!response.truncated);
}

#[tokio::test]
async fn slow_destination_times_out() {
    let addr = serve(test_router()).await;
    let client = OutboundClient::new(HttpConfig {
        timeout: Duration::from_millis(300),
        ..loopback_allowed()
    })
    .unwrap();
    let started = Instant::now();
    let error = client
        .send(get_request(format!("http://{addr}/slow")))
        .await
        .unwrap_err();
    assert_eq!(error, SendError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn closed_port_is_a_connect_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = OutboundClient::new(loopback_allowed()).unwrap();
    let error = client
        .send(get_request(format!("http://{addr}/hello?token=abc")))
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Connect(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.starts_with("could not connect: "), "{message}");
    assert!(
        !message.contains("/hello") && !message.contains("abc"),
        "{message}"
    );
}

#[tokio::test]
async fn retry_after_is_read() {
    let addr = serve(test_router()).await;
    let client = OutboundClient::new(loopback_allowed()).unwrap();
    let response = client
        .send(get_request(format!("http://{addr}/busy")))
        .await
        .unwrap();
    assert_eq!(response.status, 429);
    assert!(!response.is_success());
    assert_eq!(response.retry_after, Some(Duration::from_secs(30)));
    assert_eq!(response.headers.get("retry-after").unwrap(), "30");
}

#[tokio::test]
async fn redirects_to_refused_targets_are_not_followed() {
    let addr = serve(test_router()).await;
    let client = OutboundClient::new(loopback_allowed()).unwrap();
    for path in ["to-private", "to-metadata", "to-ftp"] {
        let error = client
            .send(get_request(format!("http://{addr}/{path}")))
            .await
            .unwrap_err();
        match &error {
            SendError::Refused(reason) => assert!(reason.starts_with("redirect to "), "{reason}"),
            other => panic!("{path}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn redirects_to_allowed_targets_are_followed_a_limited_number_of_times() {
    let addr = serve(test_router()).await;
    let client = OutboundClient::new(HttpConfig {
        max_redirects: 2,
        ..loopback_allowed()
    })
    .unwrap();
    let response = client
        .send(get_request(format!("http://{addr}/to-hello")))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello");

    let response = client
        .send(get_request(format!("http://{addr}/chain/2")))
        .await
        .unwrap();
    assert_eq!(response.body, b"end");

    let error = client
        .send(get_request(format!("http://{addr}/chain/3")))
        .await
        .unwrap_err();
    match &error {
        SendError::Other(reason) => assert!(
            reason.contains("too many redirects (more than 2)"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
}
