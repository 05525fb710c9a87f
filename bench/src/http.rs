//! A lean HTTP/1.1 client: one kept-alive connection per load client, so that the load
//! generator spends as little CPU as possible on the machine it shares with the server.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// One connection to the server.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl Conn {
    /// Connects to `base` (`http://host:port`).
    pub async fn open(base: &str) -> Conn {
        let authority = base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .expect("server reachable");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Conn { sender, authority }
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Bytes,
    ) -> (StatusCode, Bytes) {
        self.sender.ready().await.expect("connection ready");
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority)
            .header("content-type", "application/json");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let res = self
            .sender
            .send_request(req.body(Full::new(body)).expect("request"))
            .await
            .expect("response");
        let status = res.status();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }
}

/// Opens a session and returns its token.
pub async fn login(base: &str, key: &str, secret: &str) -> String {
    let mut conn = Conn::open(base).await;
    let body = serde_json::json!({"type": "api-key", "key": key, "secret": secret}).to_string();
    let (status, bytes) = conn
        .send(Method::POST, "/v1/sessions", None, Bytes::from(body))
        .await;
    assert!(status.is_success(), "login failed: {status}");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("session JSON");
    v["access_token"].as_str().expect("token").to_owned()
}
