//! The HTTP use cases, one module each, each exposing its own `router()`.
//!
//! The account flows (signup, login, refresh, logout) follow one pattern: parse the input, do the
//! slow work (password hashing) before any transaction, begin a write transaction, call `store`
//! functions with it, commit, and only then mint tokens and set cookies (`session::respond`).
//! Flows that send email write it to the outbox in that same transaction (`links`) and wake the
//! mail worker after the commit.

mod body;
mod email;
mod health;
mod jwks;
mod login;
mod logout;
mod me;
mod metrics;
mod openapi;
mod password;
mod refresh;
mod session;
mod sessions;
mod signup;

use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(signup::router())
        .merge(login::router())
        .merge(refresh::router())
        .merge(logout::router())
        .merge(password::router())
        .merge(email::router())
        .merge(sessions::router())
        .merge(me::router())
        .merge(jwks::router())
        .merge(health::router())
        .merge(metrics::router())
        .merge(openapi::router())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}
