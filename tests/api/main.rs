//! The integration tests: one binary, a real server per test on port 0, a fresh database per
//! test, every storage test on SQLite and on PostgreSQL.

mod helpers;

mod cli;
mod errors;
#[cfg(feature = "failpoints")]
mod failpoints;
mod keys;
mod login;
mod logout;
mod me;
mod refresh;
mod signup;
