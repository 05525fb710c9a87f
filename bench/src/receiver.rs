//! A webhook receiver for the delivery scenarios: a minimal HTTP/1.1 server (keep-alive) that
//! answers every request `200` at once and counts what it got.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the receiver saw.
#[derive(Default)]
pub struct Seen {
    /// When the first request arrived.
    pub first: Option<Instant>,
    /// When the latest request arrived.
    pub last: Option<Instant>,
    /// Distinct `webhook-id`s (kept only when the receiver tracks ids).
    pub ids: HashSet<String>,
    /// Requests whose `webhook-id` had been seen before.
    pub duplicates: u64,
    /// Requests without a `webhook-id` or a `webhook-signature` header.
    pub unsigned: u64,
    /// Requests by the `type` of their body (`event.created`, `user.updated`, …).
    pub types: BTreeMap<String, u64>,
}

/// Counters shared by the receiver's connections.
#[derive(Default)]
pub struct Stats {
    /// Requests received (each answered 200).
    pub requests: AtomicU64,
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// Whether to remember every `webhook-id` (to count duplicates).
    track_ids: bool,
    /// The rest, under a lock.
    pub seen: Mutex<Seen>,
}

impl Stats {
    fn record(&self, headers: &hyper::HeaderMap, body: &[u8]) {
        let now = Instant::now();
        let id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
        let signed = id.is_some() && headers.contains_key("webhook-signature");
        let kind = change_type(body).unwrap_or("?");
        let mut seen = self.seen.lock().expect("not poisoned");
        seen.first.get_or_insert(now);
        seen.last = Some(now);
        if !signed {
            seen.unsigned += 1;
        }
        if self.track_ids
            && let Some(id) = id
            && !seen.ids.insert(id.to_owned())
        {
            seen.duplicates += 1;
        }
        match seen.types.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                seen.types.insert(kind.to_owned(), 1);
            }
        }
        // Counted under the lock, so that a snapshot of `seen` and the count agree.
        self.requests.fetch_add(1, Ordering::Release);
        drop(seen);
    }

    /// Requests received so far.
    pub fn count(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }
}

/// The `type` of a change's body, found without parsing the whole JSON.
fn change_type(body: &[u8]) -> Option<&str> {
    const KEY: &[u8] = br#""type":""#;
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = body[at..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&body[at..at + len]).ok()
}

/// A running receiver.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// What it counted.
    pub stats: Arc<Stats>,
}

impl Receiver {
    /// Listens on a free loopback port; remembers every `webhook-id` if `track_ids`.
    pub async fn start(track_ids: bool) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("receiver binds");
        let addr = listener.local_addr().expect("local address");
        let stats = Arc::new(Stats {
            track_ids,
            ..Stats::default()
        });
        let shared = stats.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                stream.set_nodelay(true).ok();
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let stats = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let stats = stats.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            stats.record(&parts.headers, &body);
                            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            base: format!("http://{addr}"),
            stats,
        }
    }
}
