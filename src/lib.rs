//! latchkey: an account and session service whose flows are all or nothing.
//!
//! A first reading: `app` (state and router), `routes` (one module per use case), `store` (every
//! SQL statement), then the pieces they use: `domain`, `password`, `tokens`, `keys`, `cookies`.

// Outside tests, failures are values: no unwrap, expect or panic on a request path.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

/// The operator's commands of the account lifecycle: admin keys, `users create`, `users import`.
pub mod accounts_cli;
/// The operator's commands (users, sessions, keys, configuration).
pub mod admin;
/// Admin API keys (`lk_admin_…`): generation, stored hash, the request extractor.
pub mod admin_keys;
/// Application state, router assembly and `serve(listener, state, shutdown)`.
pub mod app;
/// Wall-clock time in one place, so tests can move it.
pub mod clock;
/// Command line, environment and TOML settings, resolved once at start.
pub mod config;
/// The session cookies: one builder, one matching removal.
pub mod cookies;
/// Device cookies: a browser that signed in to an account before is not held back by its lockout.
pub mod device;
/// Validated values (email, password, display name) parsed once at the edge.
pub mod domain;
/// The one error type of the API and its JSON shape.
pub mod error;
/// Request extractors: strict JSON bodies, client information, the authenticated session.
pub mod extract;
/// Deliberate failures for tests of the all-or-nothing promise (cargo feature `failpoints`).
pub mod failpoint;
/// Importing users with their password hashes (NDJSON), in batches.
pub mod import;
/// Background jobs: key reloads and rotation, pruning of ended sessions.
pub mod jobs;
/// Signing keys: generation, encryption at rest, rotation and the JWKS.
pub mod keys;
/// Rate limits per client IP and per account, counted in the database for every instance.
pub mod limits;
/// Emails: templates, the outbox worker and SMTP delivery.
pub mod mail;
/// Prometheus metrics in an explicit registry.
pub mod metrics;
/// Middleware shared by every route: request ids, cache headers, timeouts, CSRF checks.
pub mod middleware;
/// The hosted pages: HTML forms for every flow, built on the same use cases as the JSON API.
pub mod pages;
/// Argon2id hashing and verification on a bounded blocking pool behind a bounded queue.
pub mod password;
/// The HTTP use cases, one module each.
pub mod routes;
/// The HTTP/1 server: connection cap, header limits and timeouts, graceful shutdown.
pub mod server;
/// Every SQL statement of the project.
pub mod store;
/// Logging set-up: spans per request, never a secret in a field.
pub mod telemetry;
/// The one template engine (minijinja) of the pages and the emails: built in, replaceable.
pub mod templates;
/// Access tokens (JWT) and opaque refresh tokens.
pub mod tokens;
/// Webhooks: event types, endpoints, Standard Webhooks signatures, the delivery worker.
pub mod webhooks;
