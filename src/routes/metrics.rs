//! GET /metrics: Prometheus text, rendered from memory without a query (the gauges read from the
//! database are refreshed in the background, see `crate::metrics`), so it answers while the
//! database is down. Expose it to the monitoring network only: `metrics_listen` serves it on an
//! address of its own, and then the main address answers 404 (see docs/deployment.md).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// Prometheus metrics: requests, flows, hashing, database pool, outbox, invariants.
///
/// Answers from memory, also while the database is down. With `metrics_listen` set it is served
/// on that address only, and this one answers 404.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The Prometheus text exposition format, version 0.0.4.",
            body = String, content_type = "text/plain"),
    ),
)]
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::metrics::refresh_in_memory(&state);
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    (
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.render(),
    )
}
