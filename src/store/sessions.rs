//! Sessions and their refresh tokens.
//!
//! A session is one login (or signup). Its refresh tokens form a chain: the unspent one is current;
//! spending it (one conditional UPDATE) and inserting the successor happen in one transaction, so
//! two requests racing with the same token cannot both spend it.

use sqlx::{Any, AnyConnection, Executor, FromRow};

pub use super::flows::NewSession;
use uuid::Uuid;

use super::liveness;
use crate::clock::Millis;

/// The condition, in a statement on `sessions`, that the session's account is not disabled.
/// Every way to disable an account revokes its sessions in the same transaction; this holds the
/// line when `disabled_at` was set some other way (SQL by hand, a restore), so that such an
/// account's sessions authenticate, refresh and lock nothing wherever the database is read.
macro_rules! account_not_disabled {
    () => {
        "EXISTS (SELECT 1 FROM users u WHERE u.id = sessions.user_id AND u.disabled_at IS NULL)"
    };
}

/// Why a session ended: stored in `sessions.revoked_reason` and used as the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Logout,
    LogoutAll,
    RevokedByUser,
    RefreshTokenReuse,
    PasswordReset,
    PasswordChange,
    UserDisabled,
    RevokedByAdmin,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Logout => "logout",
            Reason::LogoutAll => "logout_all",
            Reason::RevokedByUser => "revoked_by_user",
            Reason::RefreshTokenReuse => "refresh_token_reuse",
            Reason::PasswordReset => "password_reset",
            Reason::PasswordChange => "password_change",
            Reason::UserDisabled => "user_disabled",
            Reason::RevokedByAdmin => "revoked_by_admin",
        }
    }
}

pub(in crate::store) async fn insert_session<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    s: &NewSession,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, created_at, last_used_at, idle_expires_at, \
                               absolute_expires_at, user_agent, ip, amr) \
         VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8)",
    )
    .bind(s.id.to_string())
    .bind(user_id.to_string())
    .bind(now)
    .bind(s.idle_expires_at)
    .bind(s.absolute_expires_at)
    .bind(s.user_agent.as_deref())
    .bind(s.ip.as_deref())
    .bind(s.sign_in.as_str())
    .execute(db)
    .await?;
    Ok(())
}

pub(in crate::store) async fn insert_refresh_token<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    session_id: Uuid,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
    )
    .bind(token_hash)
    .bind(session_id.to_string())
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// A live session, as refresh needs it.
/// Spends the token if it is unspent and its session live; the session's id if it did.
pub(in crate::store) async fn spend_refresh_token<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    now: Millis,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        // EXISTS, correlated, and not `session_id IN (SELECT id FROM sessions WHERE …)`: SQLite
        // evaluates that uncorrelated list by scanning every session, on every refresh (it made
        // refresh cost a millisecond of CPU with a few thousand sessions; see the README's
        // "Performance"). This form looks the one session up by its primary key.
        "UPDATE refresh_tokens SET spent_at = $1 \
         WHERE token_hash = $2 AND spent_at IS NULL AND EXISTS ( \
             SELECT 1 FROM sessions s WHERE s.id = refresh_tokens.session_id \
             AND s.revoked_at IS NULL AND s.idle_expires_at > $1 AND s.absolute_expires_at > $1) \
         RETURNING session_id",
    )
    .bind(now)
    .bind(token_hash)
    .fetch_optional(db)
    .await
}

#[derive(Debug, FromRow)]
pub struct Extended {
    pub user_id: String,
    pub idle_expires_at: i64,
    /// How the session signed in (`SignIn::as_str`).
    pub amr: String,
}

/// Extends a session that is still live to `idle_until` (capped at its absolute expiry), locking
/// its row; `None` when it is revoked or over.
pub(in crate::store) async fn extend_live<'e>(
    db: impl Executor<'e, Database = Any>,
    session_id: &str,
    now: Millis,
    idle_until: Millis,
) -> Result<Option<Extended>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE sessions SET last_used_at = $1, \
                 idle_expires_at = CASE WHEN absolute_expires_at < $2 THEN absolute_expires_at \
                                        ELSE $2 END \
             WHERE id = $3 AND revoked_at IS NULL AND idle_expires_at > $1 \
             AND absolute_expires_at > $1 AND ",
        account_not_disabled!(),
        " RETURNING user_id, idle_expires_at, amr"
    ))
    .bind(now)
    .bind(idle_until)
    .bind(session_id)
    .fetch_optional(db)
    .await
}

/// Whether the session is live, locking its row until the commit: a revocation racing the flow
/// either committed before (and this sees it) or waits for the flow to end.
pub(in crate::store) async fn lock_live<'e>(
    db: impl Executor<'e, Database = Any>,
    session_id: Uuid,
    user_id: Uuid,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(concat!(
        "UPDATE sessions SET last_used_at = last_used_at \
             WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL \
             AND idle_expires_at > $3 AND absolute_expires_at > $3 AND ",
        account_not_disabled!()
    ))
    .bind(session_id.to_string())
    .bind(user_id.to_string())
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(Debug, FromRow)]
pub struct TokenState {
    pub session_id: String,
    pub user_id: String,
    pub spent_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub idle_expires_at: i64,
    pub absolute_expires_at: i64,
    /// How the session signed in (`SignIn::as_str`).
    pub amr: String,
}

impl TokenState {
    pub fn session_live(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && self.idle_expires_at > now && self.absolute_expires_at > now
    }
}

pub async fn find_refresh_token<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
) -> Result<Option<TokenState>, sqlx::Error> {
    sqlx::query_as(
        "SELECT rt.session_id, s.user_id, rt.spent_at, s.revoked_at, s.idle_expires_at, \
                s.absolute_expires_at, s.amr \
         FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id WHERE rt.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await
}

/// Whether this is the current (unspent) refresh token of that session.
pub async fn is_current_token<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    session_id: &str,
) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM refresh_tokens WHERE token_hash = $1 AND session_id = $2 AND spent_at IS NULL",
    )
    .bind(token_hash)
    .bind(session_id)
    .fetch_optional(db)
    .await?;
    Ok(found.is_some())
}

/// Revokes a session; returns whether it was live until now.
pub(in crate::store) async fn revoke_session(
    c: &mut AnyConnection,
    session_id: Uuid,
    reason: Reason,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let owner: Option<String> = sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL \
         RETURNING user_id",
    )
    .bind(now)
    .bind(reason.as_str())
    .bind(session_id.to_string())
    .fetch_optional(&mut *c)
    .await?;
    match owner.as_deref().map(Uuid::parse_str) {
        Some(Ok(user_id)) => liveness::changed(c, user_id).await?,
        Some(Err(_)) => return Err(sqlx::Error::Decode("a session's user_id is no UUID".into())),
        None => return Ok(false),
    }
    Ok(true)
}

/// Raises a session that signed in with the password alone to `sign_in` (a factor it proved
/// since: the first code of a TOTP enrollment, a passkey it registered).
pub(in crate::store) async fn step_up<'e>(
    db: impl Executor<'e, Database = Any>,
    session_id: Uuid,
    sign_in: crate::tokens::SignIn,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET amr = $1 WHERE id = $2 AND amr = 'pwd'")
        .bind(sign_in.as_str())
        .bind(session_id.to_string())
        .execute(db)
        .await?;
    Ok(())
}

/// How a session signed in (`SignIn::as_str`); `None` for no such session.
pub async fn sign_in_of<'e>(
    db: impl Executor<'e, Database = Any>,
    session_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT amr FROM sessions WHERE id = $1")
        .bind(session_id.to_string())
        .fetch_optional(db)
        .await
}

/// Until when the session is live, if it exists, belongs to the user and has neither been
/// revoked nor expired: the earlier of its idle and absolute expiry.
pub async fn live_until<'e>(
    db: impl Executor<'e, Database = Any>,
    session_id: Uuid,
    user_id: Uuid,
    now: Millis,
) -> Result<Option<Millis>, sqlx::Error> {
    let found: Option<(i64, i64)> = sqlx::query_as(concat!(
        "SELECT idle_expires_at, absolute_expires_at FROM sessions WHERE id = $1 \
             AND user_id = $2 AND revoked_at IS NULL AND idle_expires_at > $3 \
             AND absolute_expires_at > $3 AND ",
        account_not_disabled!()
    ))
    .bind(session_id.to_string())
    .bind(user_id.to_string())
    .bind(now)
    .fetch_optional(db)
    .await?;
    Ok(found.map(|(idle, absolute)| idle.min(absolute)))
}

/// Revokes one session if it belongs to `user_id`; returns whether it was live until now.
pub(in crate::store) async fn revoke_own_session(
    c: &mut AnyConnection,
    session_id: Uuid,
    user_id: Uuid,
    reason: Reason,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE id = $3 AND user_id = $4 AND revoked_at IS NULL \
         AND idle_expires_at > $1 AND absolute_expires_at > $1",
    )
    .bind(now)
    .bind(reason.as_str())
    .bind(session_id.to_string())
    .bind(user_id.to_string())
    .execute(&mut *c)
    .await?;
    if done.rows_affected() == 1 {
        liveness::changed(c, user_id).await?;
    }
    Ok(done.rows_affected() == 1)
}

/// Revokes every live session of a user; returns their ids (for the `session.revoked` events).
pub(in crate::store) async fn revoke_all_sessions(
    c: &mut AnyConnection,
    user_id: Uuid,
    reason: Reason,
    now: Millis,
) -> Result<Vec<String>, sqlx::Error> {
    let revoked = sqlx::query_scalar(
        // Every session not revoked yet, expired ones included: a refresh that read the clock a
        // moment earlier (or on an instance whose clock is behind) may still find one live and
        // extend it, so "expired" is no reason to leave a session unrevoked.
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND revoked_at IS NULL RETURNING id",
    )
    .bind(now)
    .bind(reason.as_str())
    .bind(user_id.to_string())
    .fetch_all(&mut *c)
    .await?;
    liveness::changed(c, user_id).await?;
    Ok(revoked)
}

/// Revokes every live session of a user except `keep` (the one changing the password); returns
/// their ids.
pub(in crate::store) async fn revoke_other_sessions(
    c: &mut AnyConnection,
    user_id: Uuid,
    keep: Uuid,
    reason: Reason,
    now: Millis,
) -> Result<Vec<String>, sqlx::Error> {
    let revoked = sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND id <> $4 AND revoked_at IS NULL RETURNING id",
    )
    .bind(now)
    .bind(reason.as_str())
    .bind(user_id.to_string())
    .bind(keep.to_string())
    .fetch_all(&mut *c)
    .await?;
    liveness::changed(c, user_id).await?;
    Ok(revoked)
}

/// The user a session belongs to.
pub(in crate::store) async fn owner<'e>(
    db: impl Executor<'e, Database = Any>,
    session_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM sessions WHERE id = $1")
        .bind(session_id.to_string())
        .fetch_optional(db)
        .await
}

/// A session as its owner sees it.
#[derive(Debug, FromRow)]
pub struct SessionSummary {
    pub id: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub amr: String,
}

pub async fn live_sessions<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    now: Millis,
) -> Result<Vec<SessionSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, created_at, last_used_at, user_agent, ip, amr FROM sessions \
         WHERE user_id = $1 AND revoked_at IS NULL AND idle_expires_at > $2 AND absolute_expires_at > $2 \
         ORDER BY last_used_at DESC, id DESC",
    )
    .bind(user_id.to_string())
    .bind(now)
    .fetch_all(db)
    .await
}

/// A session as the operator sees it: live or ended (until pruned).
#[derive(Debug, FromRow)]
pub struct SessionRecord {
    pub id: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub idle_expires_at: i64,
    pub absolute_expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// Every session of a user still stored, newest first (ended ones stay a day before pruning).
pub async fn all_sessions<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<Vec<SessionRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, created_at, last_used_at, idle_expires_at, absolute_expires_at, revoked_at, \
                revoked_reason, user_agent, ip FROM sessions \
         WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
    )
    .bind(user_id.to_string())
    .fetch_all(db)
    .await
}

/// Deletes sessions (and, by cascade, their refresh tokens) that ended before `ended_before`.
/// Safe to run from several instances at once: each row is deleted once, by whoever gets there.
pub(in crate::store) async fn prune<'e>(
    db: impl Executor<'e, Database = Any>,
    ended_before: Millis,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM sessions WHERE revoked_at < $1 OR idle_expires_at < $1 OR absolute_expires_at < $1",
    )
    .bind(ended_before)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
