//! The integration tests: one binary, a real server per test on port 0, a fresh database per
//! test, every storage test on SQLite and on PostgreSQL.

mod helpers;

mod addresses;
mod admin;
mod admin_api;
mod cli;
mod deploy;
mod email;
mod errors;
#[cfg(feature = "failpoints")]
mod failpoints;
#[cfg(feature = "failpoints")]
mod failpoints_more;
mod import;
mod integrity;
#[cfg(feature = "failpoints")]
mod interleavings;
mod keys;
mod lifecycle;
mod limits;
mod liveness;
mod login;
mod logout;
mod me;
mod metadata;
mod metrics;
mod mfa;
mod oidc;
#[cfg(feature = "failpoints")]
mod oidc_interleavings;
mod openapi;
mod operations;
mod outage;
mod pages;
mod passkeys;
mod password;
mod passwordless;
#[cfg(feature = "failpoints")]
mod passwordless_interleavings;
mod refresh;
mod sessions;
mod signup;
mod startup;
mod webhooks;
