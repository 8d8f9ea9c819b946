//! Logging on stderr, filtered by `RUST_LOG` (default `info`): human-readable lines, or one JSON
//! object per line with `LATCHKEY_LOG_FORMAT=json` (read here, before the settings, so that even a
//! settings error is logged in the chosen format).
//!
//! Every request runs in a span carrying its request id, method, path and, once known, the user
//! id; the response line adds status and latency. No field ever holds a password, token, cookie
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
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
