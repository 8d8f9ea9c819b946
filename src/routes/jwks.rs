//! GET /.well-known/jwks.json: every public key that can still verify a live access token.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::app::AppState;
use crate::keys::Jwks;

pub fn router() -> Router<AppState> {
    Router::new().route("/.well-known/jwks.json", get(jwks))
}

/// The public keys that verify access tokens (EdDSA, Ed25519), for other services.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "operations",
    responses(
        (status = 200, description = "Every key that can still verify a live access token. May be \
            cached for a minute; refetch on an unknown `kid`.", body = Jwks,
            headers(("Cache-Control" = String, description = "`public, max-age=60`"))),
    ),
)]
pub(super) async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    // Verifiers may cache the set briefly; they refetch on an unknown `kid` anyway.
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        )],
        Json(state.keys.jwks()),
    )
}
