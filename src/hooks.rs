//! The application's hooks into latchkey's transactions (library mode).
//!
//! An app that embeds latchkey (see the crate docs) implements [`Hooks`] to keep its own rows in
//! step with the accounts:
//!
//! - [`Hooks::before_signup`] runs before anything is hashed or written, with the parsed request:
//!   it may refuse the signup (a field error, a conflict) or let it go on.
//! - [`Hooks::account_created`] runs INSIDE the transaction that creates an account, after the
//!   user and profile rows and before the commit, for every path that creates one (the JSON
//!   signup, the signup page, a first passwordless sign-in with `passwordless_signup`, the admin
//!   API's create and its import, where each line has a savepoint of its own and a refused line
//!   is reported). The app writes its rows there with
//!   its own SQL on the transaction's connection. An error rolls everything back, the account
//!   included, and no cookie is set.
//! - [`Hooks::account_deleting`] runs inside the account-deletion transaction, before the user row
//!   is deleted (`DELETE /auth/me`, the admin API's `DELETE`): the app removes (or anonymises)
//!   its rows in the same commit. The CLI runs in a process of its own, without the hooks.
//!
//! # What a hook must not do
//!
//! The transaction is open while a hook runs, and on SQLite it holds the database's one write
//! lock: every other write of every request waits for the hook. So a hook runs statements on the
//! connection it is given and returns:
//!
//! - no calls to other services over the network, no sleeps, no password hashing or other long
//!   work (do that before, in `before_signup`, or after the commit, from a webhook);
//! - no `BEGIN`, `COMMIT` or `ROLLBACK`: the connection is inside latchkey's transaction
//!   (`sqlx::Connection::begin` on it is fine: that is a savepoint);
//! - no writes through another connection of the pool (on SQLite that would wait for this very
//!   transaction).
//!
//! A hook that runs longer than 2 s is stopped and its transaction rolled back, answered as a
//! 500; on PostgreSQL the whole transaction, hook included, is also bounded by
//! `database_timeout` (1 s by default), past which it is rolled back with a 503.
//!
//! Under SERIALIZABLE isolation the database may abort a transaction for a retry; latchkey then
//! runs the whole transaction again, hook included. Everything a hook did in the aborted attempt
//! was rolled back with it, so a hook that only writes through its connection is correct as is.
//!
//! # Errors
//!
//! A hook's [`HookError`] becomes the contract's error shape: [`HookError::field`] a 422
//! `validation_failed` with the field and the app's message in `fields`, [`HookError::conflict`]
//! a 409 `conflict`, anything else ([`HookError::other`], or a `sqlx::Error` through `?`) a 500
//! `internal`, whose detail goes to the log only.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::error::ApiError;

/// How long an in-transaction hook may run before its transaction is rolled back.
pub(crate) const IN_TRANSACTION_LIMIT: Duration = Duration::from_secs(2);

/// Where an account comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// `POST /auth/signup` or the hosted signup page.
    Signup,
    /// The admin API's `POST /admin/v1/users`, or `latchkey users create`.
    Admin,
    /// An import (the admin API's, or `latchkey users import`).
    Import,
    /// A passwordless sign-in of an address without an account, with `passwordless_signup` on.
    Passwordless,
    /// A first sign-in with an OpenID Connect provider's account that no user has.
    Oidc,
}

/// A signup about to happen: the request, parsed and checked, before its password is hashed.
#[derive(Debug)]
#[non_exhaustive]
pub struct SignupAttempt<'a> {
    /// The address as the user typed it (trimmed), already a valid address.
    pub email: &'a str,
    /// The display name, if any.
    pub display_name: Option<&'a str>,
    /// `profile.metadata`, valid against the operator's schema (`{}` when absent).
    pub metadata: &'a serde_json::Value,
    /// Which path creates the account.
    pub source: Source,
}

/// An account whose user and profile rows are written, inside the transaction that creates it.
#[derive(Debug)]
#[non_exhaustive]
pub struct NewAccount<'a> {
    /// The new user's id (`user.id`, the access token's `sub`).
    pub user_id: Uuid,
    /// The address as stored.
    pub email: &'a str,
    /// The display name, if any.
    pub display_name: Option<&'a str>,
    /// `profile.metadata` as stored.
    pub metadata: &'a serde_json::Value,
    /// Which path creates the account.
    pub source: Source,
}

/// An account about to be deleted, inside the deletion's transaction.
#[derive(Debug)]
#[non_exhaustive]
pub struct DeletedAccount {
    /// The id of the user being deleted.
    pub user_id: Uuid,
}

/// Why a hook refused, mapped to the contract's error shape (see the module docs).
#[derive(Debug)]
pub struct HookError(Refusal);

#[derive(Debug)]
enum Refusal {
    Fields(BTreeMap<String, String>),
    Conflict,
    /// A statement of the hook failed: handed back to the transaction runner, which retries a
    /// serialization failure and closes the connection after anything else.
    Database(sqlx::Error),
    Other(anyhow::Error),
}

impl HookError {
    /// A problem with one field of the request: 422 `validation_failed`, the message under
    /// `fields[name]`. The message is shown to the user: no internals in it.
    pub fn field(name: impl Into<String>, message: impl Into<String>) -> HookError {
        HookError(Refusal::Fields(BTreeMap::from([(
            name.into(),
            message.into(),
        )])))
    }

    /// The request conflicts with what exists (the app's own uniqueness, say): 409 `conflict`.
    pub fn conflict() -> HookError {
        HookError(Refusal::Conflict)
    }

    /// Anything else: 500 `internal`; `err` goes to the log, not to the client.
    pub fn other(err: impl Into<anyhow::Error>) -> HookError {
        HookError(Refusal::Other(err.into()))
    }
}

/// A failed statement of the hook: a 500 (or, when the database asks for it, a retry of the
/// whole transaction, hook included).
impl From<sqlx::Error> for HookError {
    fn from(err: sqlx::Error) -> HookError {
        HookError(Refusal::Database(err))
    }
}

impl HookError {
    /// The database error of a failed statement, for the transaction runner; the refusal
    /// otherwise.
    pub(crate) fn into_database_error(self) -> Result<HookError, sqlx::Error> {
        match self.0 {
            Refusal::Database(err) => Err(err),
            other => Ok(HookError(other)),
        }
    }
}

impl HookError {
    /// What an import's report says of a refused line: the code, and the fields of a 422 (the
    /// detail of anything else goes to the log).
    pub(crate) fn summary(&self) -> String {
        match &self.0 {
            Refusal::Fields(fields) => {
                let problems: Vec<String> =
                    fields.iter().map(|(f, p)| format!("{f}: {p}")).collect();
                format!("validation_failed ({})", problems.join("; "))
            }
            Refusal::Conflict => "conflict".to_owned(),
            Refusal::Database(err) => {
                tracing::error!(error = %err, "an application hook failed");
                "internal".to_owned()
            }
            Refusal::Other(err) => {
                tracing::error!(error = ?err, "an application hook failed");
                "internal".to_owned()
            }
        }
    }
}

impl From<HookError> for ApiError {
    fn from(err: HookError) -> ApiError {
        match err.0 {
            Refusal::Fields(fields) => ApiError::Validation(fields),
            Refusal::Conflict => ApiError::Conflict,
            Refusal::Database(err) => {
                ApiError::Internal(anyhow::Error::new(err).context("an application hook failed"))
            }
            Refusal::Other(err) => ApiError::Internal(err.context("an application hook failed")),
        }
    }
}

/// The application's hooks; every method has a default that does nothing, so an app implements
/// only the ones it needs. Implement them with `async fn`. See the module docs for what a hook in
/// a transaction must not do.
pub trait Hooks: Send + Sync + 'static {
    /// Before a signup: after its input is parsed and its rate limit counted, before the
    /// password is hashed or anything is written. Refuse with an error, or return `Ok(())`.
    fn before_signup(
        &self,
        attempt: &SignupAttempt<'_>,
    ) -> impl Future<Output = Result<(), HookError>> + Send {
        let _ = attempt;
        async { Ok(()) }
    }

    /// Inside the transaction that creates an account, after its user and profile rows: write
    /// the app's rows on `tx`. An error rolls the whole account back.
    fn account_created(
        &self,
        tx: &mut AnyConnection,
        account: &NewAccount<'_>,
    ) -> impl Future<Output = Result<(), HookError>> + Send {
        let _ = (tx, account);
        async { Ok(()) }
    }

    /// Inside the transaction that deletes an account, before its user row is deleted: remove
    /// the app's rows on `tx`. An error keeps the account.
    fn account_deleting(
        &self,
        tx: &mut AnyConnection,
        account: &DeletedAccount,
    ) -> impl Future<Output = Result<(), HookError>> + Send {
        let _ = (tx, account);
        async { Ok(()) }
    }
}

/// No hooks: the standalone server.
pub(crate) struct NoHooks;

impl Hooks for NoHooks {}

/// [`Hooks`] behind a pointer: the futures boxed, so the state holds any app's hooks.
pub(crate) trait DynHooks: Send + Sync + 'static {
    fn before_signup<'a>(
        &'a self,
        attempt: &'a SignupAttempt<'a>,
    ) -> BoxFuture<'a, Result<(), HookError>>;
    fn account_created<'a>(
        &'a self,
        tx: &'a mut AnyConnection,
        account: &'a NewAccount<'a>,
    ) -> BoxFuture<'a, Result<(), HookError>>;
    fn account_deleting<'a>(
        &'a self,
        tx: &'a mut AnyConnection,
        account: &'a DeletedAccount,
    ) -> BoxFuture<'a, Result<(), HookError>>;
}

impl<H: Hooks> DynHooks for H {
    fn before_signup<'a>(
        &'a self,
        attempt: &'a SignupAttempt<'a>,
    ) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(Hooks::before_signup(self, attempt))
    }

    fn account_created<'a>(
        &'a self,
        tx: &'a mut AnyConnection,
        account: &'a NewAccount<'a>,
    ) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(Hooks::account_created(self, tx, account))
    }

    fn account_deleting<'a>(
        &'a self,
        tx: &'a mut AnyConnection,
        account: &'a DeletedAccount,
    ) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(Hooks::account_deleting(self, tx, account))
    }
}
