//! latchkey: an account and session service whose flows are all or nothing — and a library
//! that puts it inside an axum application, on the application's own database, with the
//! application's rows written in latchkey's transactions.
//!
//! # Library mode
//!
//! The standalone server (`cargo run --release`) is one way to run latchkey; the other is to
//! embed it. The application builds a [`Latchkey`] from a [`Config`] and its own pool, merges
//! [`Latchkey::router`] into its router, starts [`Latchkey::background`], and takes an
//! [`AuthUser`] in the handlers that need a signed-in user. Its [`Hooks`] run inside the
//! transactions that create and delete accounts, so that signup creates the user, the profile,
//! the first session AND the application's rows in ONE transaction, with the tokens minted and
//! the cookies set only after its commit; an error of the hook rolls it all back.
//!
//! ```no_run
//! use axum::extract::{FromRef, State};
//! use axum::routing::get;
//! use axum::{Json, Router};
//! use latchkey::sqlx::{self, AnyConnection, AnyPool};
//! use latchkey::{AuthUser, Config, HookError, Hooks, Latchkey, NewAccount};
//!
//! /// The application's hooks: a workspace row for every new account.
//! struct Workspaces;
//!
//! impl Hooks for Workspaces {
//!     async fn account_created(
//!         &self,
//!         tx: &mut AnyConnection,
//!         account: &NewAccount<'_>,
//!     ) -> Result<(), HookError> {
//!         sqlx::query("INSERT INTO workspaces (owner_id, name) VALUES ($1, $2)")
//!             .bind(account.user_id.to_string())
//!             .bind(account.display_name.unwrap_or("My workspace"))
//!             .execute(tx)
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! #[derive(Clone)]
//! struct AppState {
//!     latchkey: Latchkey,
//!     pool: AnyPool,
//! }
//!
//! impl FromRef<AppState> for Latchkey {
//!     fn from_ref(state: &AppState) -> Latchkey {
//!         state.latchkey.clone()
//!     }
//! }
//!
//! impl FromRef<AppState> for AnyPool {
//!     fn from_ref(state: &AppState) -> AnyPool {
//!         state.pool.clone()
//!     }
//! }
//!
//! async fn my_workspace(user: AuthUser, State(pool): State<AnyPool>) -> Json<String> {
//!     let (name,): (String,) = sqlx::query_as("SELECT name FROM workspaces WHERE owner_id = $1")
//!         .bind(user.user_id.to_string())
//!         .fetch_one(&pool)
//!         .await
//!         .unwrap_or_default();
//!     Json(name)
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! sqlx::any::install_default_drivers();
//! let pool = AnyPool::connect("sqlite://app.db?mode=rwc").await?;
//! let config = Config::from_toml(r#"public_url = "http://localhost:3000""#)?;
//! let latchkey = Latchkey::builder(config).pool(pool.clone()).hooks(Workspaces).build().await?;
//! let app = Router::new()
//!     .route("/workspace", get(my_workspace))
//!     .with_state(AppState { latchkey: latchkey.clone(), pool })
//!     .merge(latchkey.router());
//! let background = latchkey.background();
//! // With the peer's address, for the rate limits and the sessions' `ip`.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
//!     .await?;
//! background.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/notes-app` is a whole application built this way, with its tests.
//!
//! # The public API
//!
//! It is exactly what this page lists: [`Latchkey`], [`Builder`], [`Config`], [`Background`],
//! [`AuthUser`], [`Error`], the [`hooks`] module (re-exported here: [`Hooks`], [`HookError`],
//! [`NewAccount`], [`SignupAttempt`], [`DeletedAccount`], [`Source`]), and the [`sqlx`] it is
//! built on (the hooks get an `AnyConnection` of sqlx 0.8). It follows semantic versioning.
//! The HTTP surface is the contract of the README and `/openapi.json`.
//!
//! The crate's other modules are public only for latchkey's own binary and tests; they are
//! hidden from these docs, not covered by semantic versioning, and may change in any release.
//!
//! A first reading of the code: `app` (state and router), `routes` (one module per use case),
//! `store` (every SQL statement), then the pieces they use: `domain`, `password`, `tokens`,
//! `keys`, `cookies`.

#![warn(missing_docs)]
// Outside tests, failures are values: no unwrap, expect or panic on a request path.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

/// latchkey inside an application: the builder, the router, the background work, the extractor.
mod embed;
/// The application's hooks into the account flows, and what they may not do.
pub mod hooks;

pub use embed::{AuthUser, Background, Builder, Config, Error, Latchkey};
pub use hooks::{DeletedAccount, HookError, Hooks, NewAccount, SignupAttempt, Source};
/// The sqlx of the hooks' connections (0.8, with the `any`, `sqlite` and `postgres` drivers).
pub use sqlx;

/// The operator's commands of the account lifecycle: admin keys, `users create`, `users import`.
#[doc(hidden)]
pub mod accounts_cli;
/// The operator's commands (users, sessions, keys, configuration).
#[doc(hidden)]
pub mod admin;
/// Admin API keys (`lk_admin_…`): generation, stored hash, the request extractor.
#[doc(hidden)]
pub mod admin_keys;
/// Application state, router assembly and `serve(listener, state, shutdown)`.
#[doc(hidden)]
pub mod app;
/// Wall-clock time in one place, so tests can move it.
#[doc(hidden)]
pub mod clock;
/// Command line, environment and TOML settings, resolved once at start.
#[doc(hidden)]
pub mod config;
/// `latchkey config check`: every problem of a configuration, one line each.
#[doc(hidden)]
pub mod config_check;
/// The session cookies: one builder, one matching removal.
#[doc(hidden)]
pub mod cookies;
/// Device cookies: a browser that signed in to an account before is not held back by its lockout.
#[doc(hidden)]
pub mod device;
/// Validated values (email, password, display name) parsed once at the edge.
#[doc(hidden)]
pub mod domain;
/// The one error type of the API and its JSON shape.
#[doc(hidden)]
pub mod error;
/// Request extractors: strict JSON bodies, client information, the authenticated session.
#[doc(hidden)]
pub mod extract;
/// Deliberate failures for tests of the all-or-nothing promise (cargo feature `failpoints`).
#[doc(hidden)]
pub mod failpoint;
/// Importing users with their password hashes (NDJSON), in batches.
#[doc(hidden)]
pub mod import;
/// Background jobs: key reloads and rotation, pruning of ended sessions.
#[doc(hidden)]
pub mod jobs;
/// Signing keys: generation, encryption at rest, rotation and the JWKS.
#[doc(hidden)]
pub mod keys;
/// Rate limits per client IP and per account, counted in the database for every instance.
#[doc(hidden)]
pub mod limits;
/// Emails: templates, the outbox worker and SMTP delivery.
#[doc(hidden)]
pub mod mail;
/// Prometheus metrics in an explicit registry.
#[doc(hidden)]
pub mod metrics;
/// The second factor: TOTP, recovery codes and the login challenge.
#[doc(hidden)]
pub mod mfa;
/// Middleware shared by every route: request ids, cache headers, timeouts, CSRF checks.
#[doc(hidden)]
pub mod middleware;
/// Sign-in with OpenID Connect providers: discovery, the code flow with PKCE, ID tokens.
#[doc(hidden)]
pub mod oidc;
/// The hosted pages: HTML forms for every flow, built on the same use cases as the JSON API.
#[doc(hidden)]
pub mod pages;
/// Argon2id hashing and verification on threads of its own behind a bounded queue.
#[doc(hidden)]
pub mod password;
/// Passwordless sign-in: the emailed link's token and 6-digit code.
#[doc(hidden)]
pub mod passwordless;
/// The HTTP use cases, one module each.
#[doc(hidden)]
pub mod routes;
/// The HTTP/1 server: connection cap, header limits and timeouts, graceful shutdown.
#[doc(hidden)]
pub mod server;
/// The standalone server: listens at once, waits for its database, drains on SIGTERM.
#[doc(hidden)]
pub mod standalone;
/// Every SQL statement of the project.
#[doc(hidden)]
pub mod store;
/// Logging set-up: spans per request, never a secret in a field.
#[doc(hidden)]
pub mod telemetry;
/// The one template engine (minijinja) of the pages and the emails: built in, replaceable.
#[doc(hidden)]
pub mod templates;
/// Access tokens (JWT) and opaque refresh tokens.
#[doc(hidden)]
pub mod tokens;
/// Webhooks: event types, endpoints, Standard Webhooks signatures, the delivery worker.
#[doc(hidden)]
pub mod webhooks;
