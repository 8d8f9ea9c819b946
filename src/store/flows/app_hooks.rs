//! The application's hooks inside the flows' transactions (library mode, `crate::hooks`).
//!
//! A hook runs on the flow's connection, in its transaction, under a time limit: on SQLite it
//! holds the one write lock, so a hook that hangs would stall every write of the service. One
//! that overruns is stopped and its statement abandoned mid-flight, so the flow ends with an
//! error (not a rollback on a connection in an unknown state): the runner then closes the
//! connection, and the database rolls the transaction back.
//!
//! A refusal (`HookError::field`, `conflict`, `other`) comes back as `Ok(Err(refusal))` for the
//! flow to roll back with; a failed statement of the hook comes back as the `sqlx::Error` it
//! is, so that a serialization failure is retried like any other statement's.

use crate::failpoint::failpoint;
use crate::hooks::{DeletedAccount, DynHooks, HookError, IN_TRANSACTION_LIMIT, NewAccount};
use crate::store::tx::Conn;

/// The app's `account_created` hook, in the transaction that creates `account`.
pub(super) async fn account_created(
    c: &mut Conn,
    app: &dyn DynHooks,
    account: &NewAccount<'_>,
) -> Result<Result<(), HookError>, sqlx::Error> {
    let ran = tokio::time::timeout(IN_TRANSACTION_LIMIT, app.account_created(c, account)).await;
    if let Some(refused) = outcome(ran, "account_created")? {
        return Ok(Err(refused));
    }
    // After the app's rows are written, before the commit: a failure here must take them back.
    failpoint!("signup.in_hook");
    Ok(Ok(()))
}

/// The app's `account_deleting` hook, in the transaction that deletes `account`.
pub(super) async fn account_deleting(
    c: &mut Conn,
    app: &dyn DynHooks,
    account: &DeletedAccount,
) -> Result<Result<(), HookError>, sqlx::Error> {
    let ran = tokio::time::timeout(IN_TRANSACTION_LIMIT, app.account_deleting(c, account)).await;
    Ok(outcome(ran, "account_deleting")?.map_or(Ok(()), Err))
}

/// What a hook's run means for its flow: go on (`None`), roll back with the refusal, or fail.
fn outcome(
    ran: Result<Result<(), HookError>, tokio::time::error::Elapsed>,
    hook: &str,
) -> Result<Option<HookError>, sqlx::Error> {
    match ran {
        Ok(Ok(())) => Ok(None),
        Ok(Err(refused)) => refused.into_database_error().map(Some),
        Err(_) => Err(sqlx::Error::Protocol(format!(
            "the application's {hook} hook ran longer than {} s and was stopped",
            IN_TRANSACTION_LIMIT.as_secs()
        ))),
    }
}
