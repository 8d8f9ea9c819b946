//! The HTTP use cases, one module each, each exposing its own `router()`.
//!
//! Each use case is one function, `*_flow`, that takes parsed request fields and returns a typed
//! outcome; the JSON handler beside it only turns JSON into those fields and the outcome into
//! the contract's response. The hosted pages (`crate::pages`) call the very same `*_flow`
//! functions with the fields of their forms, so there is one signup, one login, one reset.
//!
//! The account flows (signup, login, refresh, logout) follow one pattern: parse the input, do the
//! slow work (password hashing) before any transaction, make ONE store call (which begins and
//! commits its transaction), and only then mint tokens and set cookies (`session::issue`).
//! Flows that send email write it to the outbox in that same transaction (`links`) and wake the
//! mail worker after the commit.

pub(crate) mod account;
pub(crate) mod admin;
pub(crate) mod body;
pub(crate) mod email;
pub(crate) mod email_change;
mod health;
mod jwks;
pub(crate) mod login;
pub(crate) mod logout;
pub(crate) mod me;
mod metrics;
pub(crate) mod mfa;
pub(crate) mod oidc;
pub(crate) mod openapi;
pub(crate) mod passkeys;
pub(crate) mod password;
pub(crate) mod passwordless;
pub(crate) mod refresh;
pub(crate) mod session;
pub(crate) mod sessions;
pub(crate) mod signup;

use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

/// GET /metrics alone, for `metrics_listen`.
pub fn metrics_router() -> Router<AppState> {
    metrics::router()
}

/// Every route; `/metrics` only when it has no address of its own (`metrics_listen`).
pub fn router(with_metrics: bool) -> Router<AppState> {
    let routes = Router::new()
        .merge(signup::router())
        .merge(login::router())
        .merge(refresh::router())
        .merge(logout::router())
        .merge(password::router())
        .merge(passwordless::router())
        .merge(email::router())
        .merge(email_change::router())
        .merge(account::router())
        .merge(admin::router())
        .merge(sessions::router())
        .merge(me::router())
        .merge(mfa::router())
        .merge(passkeys::router())
        .merge(oidc::router())
        .merge(jwks::router())
        .merge(health::router())
        .merge(openapi::router());
    let routes = match with_metrics {
        true => routes.merge(metrics::router()),
        false => routes,
    };
    routes
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}
