//! Middleware around every route.
//!
//! - `request_context`: gives every request an id (the client's `X-Request-Id` when it is sane,
//!   else a new UUID), opens the request's span with it, logs one line per response, echoes the id
//!   in the response and marks responses `Cache-Control: no-store` unless a handler chose otherwise.
//! - `csrf`: rejects unsafe methods sent by a browser from a foreign origin.
//! - `panic_response`: a panic in a handler becomes the contract's 500 `internal` error.

use std::any::Any;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::app::AppState;
use crate::error::ApiError;

const REQUEST_ID: &str = "x-request-id";

pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sane(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        user_id = tracing::field::Empty,
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, value);
    }
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "response"
        );
    });
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// 1 to 128 characters from a conservative set, so an id can go into logs and headers verbatim.
fn is_sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Unsafe methods from a browser on a foreign origin get 403 `csrf_rejected`. Browsers send
/// `Origin` on every cross-origin request and `Sec-Fetch-Site` on every request; clients that send
/// neither (curl, servers) are not browsers and carry no ambient cookies to abuse.
pub async fn csrf(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let unsafe_method = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if unsafe_method {
        let headers = req.headers();
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        let foreign_origin = headers.get(header::ORIGIN).is_some_and(|origin| {
            let origin = origin.to_str().unwrap_or("null");
            !state
                .settings
                .allowed_origins
                .iter()
                .any(|allowed| allowed == origin)
        });
        if cross_site || foreign_origin {
            return ApiError::CsrfRejected.into_response();
        }
    }
    next.run(req).await
}

pub fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response()
}
