//! The use cases of the store: one public method per critical flow, each one transaction that
//! begins, writes with its preconditions, commits or rolls back, and returns a typed outcome.
//!
//! Their inputs are prepared by the caller before the call: ids, the hashes of opaque tokens,
//! Argon2 hashes, rendered emails, the audit actor. Nothing inside a transaction hashes, renders a
//! template or reads the application's state, so a write lock is held only for the statements.
//!
//! Lock order, where flows touch the same rows: one-time token → user → sessions. Reads that a
//! flow decided on outside its transaction (a verified password hash, a live session) are
//! re-checked inside it by a statement that locks the row it checks (`UPDATE … WHERE …` with a
//! row count), so a flow racing it either waits for it or sees its result.

pub mod accounts;
pub mod admin_users;
mod app_hooks;
pub mod email;
pub mod email_change;
mod events;
pub mod import;
pub mod login;
pub mod mfa;
pub mod oidc;
pub mod passkeys;
pub mod password;
pub mod passwordless;
pub mod profile;
pub mod refresh;
pub mod revoke;
pub mod signup;

use uuid::Uuid;

use super::audit::{self, Actor};
use super::tx::Conn;
use super::users::{self, Account};
use super::webhooks::Routes;
use super::{mail_throttle, one_time_tokens, outbox, sessions};
use crate::clock::Millis;
use crate::tokens::{Purpose, SignIn};
use crate::webhooks::event::EventType;

/// A session to open: its id and its first refresh token's hash, chosen by the caller.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub refresh_token_hash: String,
    pub idle_expires_at: Millis,
    pub absolute_expires_at: Millis,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// How it signed in (`sessions.amr`).
    pub sign_in: SignIn,
}

/// An email rendered before the transaction, written to the outbox inside it.
#[derive(Debug, Clone)]
pub struct NewMail {
    /// `mail::Kind::as_str`.
    pub kind: &'static str,
    pub recipient: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A one-time link (reset, verification) and the email that carries it.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub purpose: Purpose,
    pub token_hash: String,
    /// The address the link is sent to, in its normalized form: the link proves this one.
    pub email_normalized: String,
    pub expires_at: Millis,
    pub mail: NewMail,
}

/// A slot of the per-address mail throttle: at most one email of a kind per address per window.
#[derive(Debug, Clone)]
pub struct Throttle {
    /// `purpose:address`, so that one kind of email never holds back another.
    pub slot: String,
    /// Milliseconds; 0 turns the throttle off.
    pub window: Millis,
}

impl Throttle {
    pub fn new(purpose: &str, email_normalized: &str, window: Millis) -> Throttle {
        Throttle {
            slot: format!("{purpose}:{email_normalized}"),
            window,
        }
    }
}

/// The session a request was authenticated with: the flows it starts re-check, inside their
/// transaction, that it is still live.
#[derive(Debug, Clone, Copy)]
pub struct SessionRef {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

/// Inserts a session and its first refresh token.
async fn open_session(
    c: &mut Conn,
    user_id: Uuid,
    s: &NewSession,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sessions::insert_session(&mut *c, user_id, s, now).await?;
    sessions::insert_refresh_token(&mut *c, &s.refresh_token_hash, s.id, now).await
}

/// What a sign-in opens: a session of an account, or the first session of the account it has
/// just created (a passwordless code or an OpenID provider for a new address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    Login,
    Signup,
}

/// What every sign-in writes once its factors are proved: the session, the last login, the
/// audit event and the webhook event (`login` and `user.login`; for a new account `signup` and
/// `user.created`). The account as the event shows it.
async fn open_login(
    c: &mut Conn,
    (hooks, opening): (&Routes, Opening),
    user_id: Uuid,
    session: &NewSession,
    actor: &Actor,
    now: Millis,
) -> Result<Account, sqlx::Error> {
    let (kind, event) = match opening {
        Opening::Login => (audit::Kind::Login, EventType::UserLogin),
        Opening::Signup => (audit::Kind::Signup, EventType::UserCreated),
    };
    open_session(c, user_id, session, now).await?;
    users::record_login(&mut *c, user_id, now).await?;
    audit::record(&mut *c, kind, actor, now).await?;
    let account = events::find(c, user_id).await?;
    let session = session.id.to_string();
    events::about(c, hooks, event, &account, Some(&session), None, now).await?;
    Ok(account)
}

/// The second factor's challenge of a sign-in, prepared for every sign-in (its `mfa_token`'s
/// hash and expiry) and written only for an account with a factor.
#[derive(Debug, Clone)]
pub struct NewChallenge {
    pub token_hash: String,
    pub expires_at: Millis,
}

/// Writes the challenge instead of a session when the account has a second factor (decided in
/// the transaction that holds the account's row: an enrollment confirmed or removed meanwhile is
/// seen or not, never half); whether it did. The challenge is bound to `password_hash`, the
/// account's password hash as it is now (through `mfa::challenge::credential`); `first` is the
/// factor it follows.
async fn challenge_instead(
    c: &mut Conn,
    user_id: Uuid,
    challenge: &NewChallenge,
    (password_hash, first): (&str, SignIn),
    actor: &Actor,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    if !super::mfa::has_factor(&mut *c, user_id).await? {
        return Ok(false);
    }
    let credential = crate::mfa::challenge::credential(password_hash);
    let (hash, after) = (&challenge.token_hash, (challenge.expires_at, first));
    super::mfa::insert_challenge(&mut *c, hash, user_id, &credential, after, now).await?;
    // No session was opened: the event names none.
    let actor = Actor {
        session_id: None,
        ..actor.clone()
    };
    audit::record(&mut *c, audit::Kind::MfaChallenged, &actor, now).await?;
    Ok(true)
}

/// Takes the throttle slot; `Err(last_sent_at)` when it is taken.
async fn claim(c: &mut Conn, t: &Throttle, now: Millis) -> Result<Result<(), Millis>, sqlx::Error> {
    if t.window <= 0 || mail_throttle::claim(&mut *c, &t.slot, now, now - t.window).await? {
        return Ok(Ok(()));
    }
    let last = mail_throttle::last_sent_at(&mut *c, &t.slot).await?;
    Ok(Err(last.unwrap_or(now)))
}

/// Writes a link's token and its email.
async fn issue_link(
    c: &mut Conn,
    user_id: Uuid,
    link: &NewLink,
    now: Millis,
) -> Result<(), sqlx::Error> {
    one_time_tokens::insert(
        &mut *c,
        &one_time_tokens::NewToken {
            token_hash: &link.token_hash,
            purpose: link.purpose,
            user_id,
            email: &link.email_normalized,
            now,
            expires_at: link.expires_at,
        },
    )
    .await?;
    enqueue(c, &link.mail, now).await
}

/// Writes an email to the outbox.
async fn enqueue(c: &mut Conn, m: &NewMail, now: Millis) -> Result<(), sqlx::Error> {
    outbox::enqueue(
        &mut *c,
        &outbox::NewMessage {
            id: Uuid::now_v7(),
            kind: m.kind,
            recipient: &m.recipient,
            subject: &m.subject,
            body_text: &m.text,
            body_html: &m.html,
            now,
        },
    )
    .await
}

/// Whether the session is live, locking its row until the commit (see `sessions::lock_live`).
async fn lock_live_session(c: &mut Conn, s: SessionRef, now: Millis) -> Result<bool, sqlx::Error> {
    sessions::lock_live(&mut *c, s.session_id, s.user_id, now).await
}
