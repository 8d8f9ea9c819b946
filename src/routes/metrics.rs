//! GET /metrics: Prometheus text. Gauges that describe the database (pool usage, outbox backlog,
//! accounts without a profile) are read at scrape time, so they are as fresh as the scrape.
//! Expose this endpoint to the monitoring network only (see docs/deployment.md).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::app::AppState;
use crate::error::ApiError;
use crate::metrics::label;
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// Prometheus metrics: requests, flows, hashing, database pool, outbox, invariants.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The Prometheus text exposition format, version 0.0.4.",
            body = String, content_type = "text/plain"),
    ),
)]
pub(super) async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let m = &state.metrics;
    let now = state.clock.now();
    for (pool, in_use, idle) in state.store.pool_usage() {
        m.db_connections
            .get_or_create(&[label("pool", pool), label("state", "in_use")])
            .set(i64::from(in_use));
        m.db_connections
            .get_or_create(&[label("pool", pool), label("state", "idle")])
            .set(i64::try_from(idle).unwrap_or(i64::MAX));
    }
    let (backlog, oldest) = store::outbox::backlog(state.store.reader()).await?;
    m.outbox_backlog.set(backlog);
    m.outbox_oldest_seconds
        .set(oldest.map_or(0, |created| (now - created).max(0) / 1000));
    let (backlog, oldest) = store::webhooks::backlog(state.store.reader()).await?;
    m.webhook_backlog.set(backlog);
    m.webhook_oldest_seconds
        .set(oldest.map_or(0, |created| (now - created).max(0) / 1000));
    m.accounts_without_profile
        .set(store::users::count_without_profile(state.store.reader()).await?);
    m.hash_queue
        .set(i64::try_from(state.hasher.jobs_in_flight()).unwrap_or(i64::MAX));
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    Ok(([(header::CONTENT_TYPE, content_type)], m.render()))
}
