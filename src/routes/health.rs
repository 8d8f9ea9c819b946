//! GET /healthz (the process answers) and GET /readyz (the database answers too).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

#[derive(Serialize, ToSchema)]
#[schema(as = Health)]
pub struct HealthBody {
    /// `ok` from /healthz, `ready` from /readyz.
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = HealthBody)),
)]
pub(super) async fn healthz() -> Json<HealthBody> {
    Json(HealthBody { status: "ok" })
}

/// Readiness: the process and its database answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`", body = HealthBody),
        (status = 503, description = "`unavailable`: the database does not answer, or the \
            instance is draining before it stops (SIGTERM).",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ),
)]
pub(super) async fn readyz(State(state): State<AppState>) -> Result<Json<HealthBody>, ApiError> {
    // Draining: still serving, but the balancer should send new requests elsewhere.
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError::Draining);
    }
    state.store.ping().await.map_err(ApiError::Unavailable)?;
    Ok(Json(HealthBody { status: "ready" }))
}
