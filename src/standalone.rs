//! The standalone server (`latchkey serve`), assembled from the public API like any application
//! would: `Latchkey::builder(config).build()`, its router, its background work.
//!
//! Three things only a process of its own needs:
//! - **It listens at once.** The port answers from the moment it is bound: `/healthz` is 200,
//!   `/readyz` and everything else 503 `unavailable` (with `Retry-After`) until the database is
//!   reachable and migrated and the keys are loaded; an unreachable database is waited for,
//!   tried again every second, so a service manager that starts latchkey before its database
//!   gets a server that becomes ready on its own. A bad setting still stops the start.
//! - **It drains on SIGTERM**: `/readyz` answers 503 for `drain_period` while every request is
//!   still served, so a balancer that health-checks it stops sending new ones before the port
//!   closes; then it stops accepting and finishes what is in flight.
//! - **Ctrl-C** stops it without the drain (a person at a terminal wants it gone now).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse as _, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::clock::Clock;
use crate::config::Settings;
use crate::embed::{Config, Latchkey};
use crate::error::ApiError;
use crate::server;

/// How the process was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Ctrl-C: stop now.
    Interrupt,
    /// SIGTERM: a service manager or a rolling restart; drain first.
    Terminate,
}

/// How long to wait before trying an unreachable database again.
const RETRY_CONNECT: Duration = Duration::from_secs(1);

/// Serves on `listener` (and `/metrics` on `metrics`, with `metrics_listen`) until `stop`
/// resolves (see the module docs).
pub async fn run(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    settings: Settings,
    clock: Clock,
    stop: impl Future<Output = Stop> + Send + 'static,
) -> anyhow::Result<()> {
    let limits = crate::app::connection_limits(&settings);
    let drain = settings.drain_period;
    let ready: Arc<OnceLock<Latchkey>> = Arc::default();
    let routers: Arc<OnceLock<Router>> = Arc::default();
    // `closing` tells the server to stop accepting (after the drain, if any); `stopped` tells
    // the start-up loop that nobody wants it any more.
    let (close, closing) = watch::channel(false);
    let (stopped_tx, mut stopped) = watch::channel(None::<Stop>);
    {
        let ready = ready.clone();
        tokio::spawn(async move {
            let how = stop.await;
            let _ = stopped_tx.send(Some(how));
            if how == Stop::Terminate
                && !drain.is_zero()
                && let Some(latchkey) = ready.get()
            {
                latchkey.state().draining.store(true, Ordering::Relaxed);
                tracing::info!(
                    drain_secs = drain.as_secs(),
                    "draining: /readyz answers 503 while requests are still served"
                );
                tokio::time::sleep(drain).await;
            }
            tracing::info!("shutting down: finishing requests in flight");
            let _ = close.send(true);
        });
    }
    let mut closing_server = closing;
    let server = tokio::spawn(server::run(
        listener,
        switch(routers.clone()),
        limits,
        async move {
            let _ = closing_server.wait_for(|closed| *closed).await;
        },
    ));

    let config = Config::from_settings(settings);
    let latchkey = loop {
        let built = Latchkey::builder(config.clone())
            .clock(clock.clone())
            .build();
        let outcome = tokio::select! {
            built = built => built,
            _ = stopped.wait_for(Option::is_some) => break None,
        };
        match outcome {
            Ok(latchkey) => break Some(latchkey),
            Err(err) if err.is_database_unreachable() => {
                tracing::warn!(error = %err, "database unreachable; trying again in 1 s");
                tokio::select! {
                    () = tokio::time::sleep(RETRY_CONNECT) => {}
                    _ = stopped.wait_for(Option::is_some) => break None,
                }
            }
            // A configuration problem: waiting would not mend it. Returning ends the process,
            // and the port with it.
            Err(err) => return Err(anyhow::anyhow!("{err}")),
        }
    };
    let background = latchkey.map(|latchkey| {
        if let Some(listener) = metrics {
            serve_metrics(listener, latchkey.state().clone());
        }
        let background = latchkey.background();
        let _ = routers.set(latchkey.router());
        let _ = ready.set(latchkey);
        tracing::info!("latchkey ready: database migrated, keys loaded");
        background
    });
    let served = server.await;
    if let Some(background) = background {
        background.stop().await;
    }
    served??;
    Ok(())
}

/// `/metrics` on its own address, from when the state is built.
fn serve_metrics(listener: TcpListener, state: crate::app::AppState) {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "metrics listening on http://{address}/metrics");
    }
    tokio::spawn(async move {
        if let Err(err) = crate::app::serve_metrics(listener, state).await {
            tracing::error!(error = %err, "the metrics listener failed");
        }
    });
}

/// The router of the moment: latchkey's once it is built, the start-up answers until then.
fn switch(routers: Arc<OnceLock<Router>>) -> Router {
    Router::new().fallback_service(tower::service_fn(move |request: Request| {
        let router = routers.get().cloned();
        async move {
            Ok::<Response, std::convert::Infallible>(match router {
                Some(router) => router.oneshot(request).await.into_response(),
                None => starting(&request),
            })
        }
    }))
}

/// The answer of a server that is not ready yet: alive on `/healthz`, 503 everywhere else.
fn starting(request: &Request) -> Response {
    let mut response = match request.uri().path() {
        "/healthz" => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        _ => ApiError::Starting.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let id = request
        .headers()
        .get("x-request-id")
        .filter(|v| v.to_str().is_ok_and(crate::middleware::is_sane))
        .cloned()
        .or_else(|| HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).ok());
    if let Some(id) = id {
        headers.insert("x-request-id", id);
    }
    response
}
