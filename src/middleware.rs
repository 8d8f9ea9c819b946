//! Middleware around every route.
//!
//! - `request_context`: gives every request an id (the client's `X-Request-Id` when it is sane,
//!   else a new UUID), opens the request's span with it and the client IP, logs one line per response, echoes the id
//!   in the response, marks responses `Cache-Control: no-store` unless a handler chose otherwise,
//!   and `X-Content-Type-Options: nosniff` always.
//! - `timeout`: a request that is not answered within the request timeout gets 503.
//! - `csrf`: rejects unsafe methods sent by a browser from a foreign origin.
//! - `panic_response`: a panic in a handler becomes the contract's 500 `internal` error.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::client_ip;
use crate::metrics::label;
use crate::telemetry;

const REQUEST_ID: &str = "x-request-id";

/// The prefix of the admin API's routes.
pub const ADMIN_API: &str = "/admin/v1/";

pub async fn request_context(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sane(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    // The route template, not the path: bounded label values, and no ids in metric names.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = req.method().to_string();
    // The client as `ClientInfo` sees it (trusted proxies' X-Forwarded-For believed), so that a
    // line about a rate limit or a reused token names whom it is about.
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| client_ip(c.0.ip(), req.headers(), &state.settings.trusted_proxies));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        client_ip = client_ip.map(tracing::field::display),
        method = %method,
        route = %route,
        path = %req.uri().path(),
        user_id = tracing::field::Empty,
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, value);
    }
    let started = Instant::now();
    let mut response =
        telemetry::with_request_span(span.clone(), next.run(req).instrument(span.clone())).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "response"
        );
    });
    let metrics = &state.metrics;
    metrics
        .requests
        .get_or_create(&[
            label("route", &*route),
            label("method", &*method),
            label("status", status.to_string()),
        ])
        .inc();
    metrics
        .request_seconds
        .get_or_create(&[label("route", route), label("method", method)])
        .observe(elapsed.as_secs_f64());
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    // No browser may guess another type than the one given (a JSON error rendered as HTML).
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// 1 to 128 characters from a conservative set, so an id can go into logs and headers verbatim.
pub(crate) fn is_sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Unsafe methods from a browser on a foreign origin get 403 `csrf_rejected`, before any handler
/// runs (so a cross-site request spends no token and no rate-limit count). Browsers send `Origin`
/// on every unsafe request and `Sec-Fetch-Site` on every request; clients that send neither (curl,
/// servers) are not browsers and carry no ambient cookies to abuse.
///
/// `Origin`, when present, decides: a page cannot forge it, and it names the origin exactly, so
/// a configured origin on another site (whose requests browsers mark `Sec-Fetch-Site:
/// cross-site`) is accepted. Without `Origin`, `Sec-Fetch-Site: cross-site` still rejects.
///
/// `Origin: null` is what a browser sends for a form POST from a page with `Referrer-Policy:
/// no-referrer` (the hosted pages have it), and also what a sandboxed frame or a `data:` page of
/// anyone sends: it names no origin, so it passes only with `Sec-Fetch-Site: same-origin`, which
/// the browser sets and no page can.
pub async fn csrf(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let unsafe_method = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    // The admin API is authorized by its bearer key alone, never by a cookie (`admin_keys`):
    // a foreign page has no ambient credential to ride on, and an admin console on another
    // origin must be able to call it.
    let admin_api = req.uri().path().starts_with(ADMIN_API);
    if unsafe_method && !admin_api {
        let headers = req.headers();
        let fetch_site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
        let rejected = match headers
            .get(header::ORIGIN)
            .map(|o| o.to_str().unwrap_or("null"))
        {
            Some("null") => !fetch_site.is_some_and(|v| v.eq_ignore_ascii_case(b"same-origin")),
            Some(origin) => !state
                .settings
                .allowed_origins
                .iter()
                .any(|allowed| allowed == origin),
            None => fetch_site.is_some_and(|v| v.eq_ignore_ascii_case(b"cross-site")),
        };
        if rejected {
            return ApiError::CsrfRejected.into_response();
        }
    }
    next.run(req).await
}

/// Requests not answered within `request_timeout` get the contract's 503 `unavailable` (see
/// `ApiError::TimedOut` for why 503 and not 408). The handler's future is dropped; a store flow it
/// started ends on its own and, finding its caller gone, rolls back (`store/tx.rs`), so the
/// all-or-nothing promise holds; a slow client sending
/// its body byte by byte is cut off the same way, since the body is read inside the handler.
/// A hash already running finishes on its thread and keeps its place in the queue until then.
pub async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(state.settings.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::TimedOut.into_response(),
    }
}

pub fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response()
}
