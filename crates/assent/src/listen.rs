//! Serving HTTP/1.1 connections with limits on how a request's head may arrive.
//!
//! `axum::serve` offers no header read timeout, so the server drives hyper's connection builder
//! itself: a client that dribbles its headers is cut off after the header timeout (slow loris),
//! and a head with too many headers or too many bytes is answered 431 and the connection
//! closed. A graceful shutdown stops accepting, lets requests under way finish and closes idle
//! connections, as `axum::serve` does.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// Most headers in one request (beyond: 431).
pub const MAX_HEADERS: usize = 100;

/// Most bytes of a request's head, request line included (beyond: 431).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Limits on how a request's head arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest time to receive a whole request head, counted from the moment the server starts
    /// waiting for it (on a kept-alive connection: from the end of the previous answer). Beyond
    /// it the connection is closed. `None`: no limit.
    pub header_timeout: Option<Duration>,
    /// Most headers in one request.
    pub max_headers: usize,
    /// Most bytes of one request head.
    pub max_header_bytes: usize,
}

impl Default for HeadLimits {
    /// A 10 s header timeout, [`MAX_HEADERS`] headers and [`MAX_HEADER_BYTES`] bytes.
    fn default() -> Self {
        HeadLimits {
            header_timeout: Some(Duration::from_secs(10)),
            max_headers: MAX_HEADERS,
            max_header_bytes: MAX_HEADER_BYTES,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for the connections under
/// way to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HeadLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts, oversized heads, clients that went away: nothing of the request.
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A failed accept: a client that left before it was accepted is nothing; anything else (most
/// often too many open files) is logged, and accepting pauses a second to let connections close.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
