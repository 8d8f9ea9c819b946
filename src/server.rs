//! The HTTP server: hyper's HTTP/1 serving the router, with the limits that keep slow or numerous
//! clients from tying the process up.
//!
//! - At most `max_connections` connections are served at once. At the cap the server stops
//!   accepting: further clients wait in the kernel's listen backlog, costing this process nothing,
//!   until a connection closes.
//! - A client must send a request's head within `header_read_timeout`, or its connection is
//!   closed (slowloris); hyper applies the same limit to a keep-alive connection waiting for its
//!   next request, so idle connections give their place back too.
//! - A request head over `max_header_bytes`, or with more than `MAX_HEADERS` headers, is answered
//!   431 by hyper, without a body: such a request never reaches the router, so it cannot get the
//!   JSON error shape.
//! - Bodies are capped at 16 KiB (`extract::MAX_BODY_BYTES`) and a slow body is cut off by the
//!   request timeout (`middleware::timeout`).
//!
//! `axum::serve` would do the rest but exposes none of hyper's settings, hence this loop. Shutdown
//! is graceful as with axum: stop accepting, let every connection finish its request in flight,
//! close idle ones, then return.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tower::ServiceExt as _;

/// Headers per request; more gets 431. Browsers send about twenty.
pub const MAX_HEADERS: usize = 100;

/// What one connection may take.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes the requests in flight.
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(MAX_HEADERS);
    let places = Arc::new(Semaphore::new(limits.max_connections));
    // Dropping `stop` tells every connection to finish; every connection holds a `done` sender,
    // so `finished` yields `None` once the last one has closed.
    let (stop, stopping) = watch::channel(());
    let (done, mut finished) = mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let place = tokio::select! {
            place = Arc::clone(&places).acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    pause_after(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small JSON responses: send them now rather than wait to fill a segment.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let mut stopping = stopping.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let _place = place;
            let _done = done;
            let mut connection = std::pin::pin!(connection);
            let outcome = tokio::select! {
                outcome = connection.as_mut() => outcome,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            };
            if let Err(err) = outcome {
                tracing::debug!(error = %err, %peer, "connection closed with an error");
            }
        });
    }

    drop(listener);
    drop(stop);
    drop(done);
    let _ = finished.recv().await;
    Ok(())
}

/// After a failed accept: a client that went away before it was accepted is its own business;
/// anything else (out of file descriptors) calls for a pause, or the loop would spin.
async fn pause_after(err: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
