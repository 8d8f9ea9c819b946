//! The notes app's tests: latchkey as a library, on SQLite and on PostgreSQL, each test on a
//! fresh database. Most run the app in this process; the failpoint tests run the app's binary
//! with `FAILPOINTS` set (failpoints are process-wide).

mod harness;

#[cfg(feature = "failpoints")]
mod failpoints;
mod hooks;
mod notes;
