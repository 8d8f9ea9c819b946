//! Logging on stderr, filtered by `RUST_LOG` (default `info`): human-readable lines, or one JSON
//! object per line with `LATCHKEY_LOG_FORMAT=json` (read here, before the settings, so that even a
//! settings error is logged in the chosen format).
//!
//! Every request runs in a span carrying its request id, client IP, method, path and, once known,
//! the user id; every line written while serving it carries them, and the response line adds
//! status and latency. No field ever holds a password, token, cookie
//! or secret: handlers are instrumented with `skip_all`, and secrets live in `SecretString`,
//! whose `Debug` prints a placeholder.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init`: a second initialisation (tests) is not an error worth dying for.
    let _ = if std::env::var("LATCHKEY_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        // `span`: the innermost span (for the response line, the request's own); `spans`: all
        // of them, outermost first, so that a line a handler writes inside its own span (rate
        // limited, refresh reuse, database unavailable) still carries the request's id and
        // client IP, as the text format's span prefix does.
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

tokio::task_local! {
    /// The span of the request being served (set by `middleware::request_context`), so that a
    /// handler's own span is not the only one that learns the user id.
    static REQUEST_SPAN: tracing::Span;
}

/// Runs a request's future with `span` as its request span.
pub async fn with_request_span<F: std::future::Future>(span: tracing::Span, fut: F) -> F::Output {
    REQUEST_SPAN.scope(span, fut).await
}

/// Records the user id, once known, on the request's span (whose response line then carries it)
/// and on the current span (the handler's, which declares the field too).
pub fn record_user(user_id: uuid::Uuid) {
    let current = tracing::Span::current();
    current.record("user_id", tracing::field::display(user_id));
    let _ = REQUEST_SPAN.try_with(|span| {
        if span.id() != current.id() {
            span.record("user_id", tracing::field::display(user_id));
        }
    });
}
