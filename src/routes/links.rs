//! What signup, forgot-password and resend share: issuing a one-time link and writing its email to
//! the outbox, inside the caller's transaction; and the notice after a password change.
//!
//! The token and its email are written in the same transaction, so either both exist or neither
//! does. The caller wakes the mail worker after its commit.

use uuid::Uuid;

use crate::app::AppState;
use crate::clock::{Millis, millis};
use crate::domain::Email;
use crate::error::ApiError;
use crate::mail::{self, Kind};
use crate::store::{self, Tx};
use crate::tokens::{self, Purpose};

/// Whether a link was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    Sent,
    /// The address had a reset or verification email less than `mail_throttle` ago: nothing was
    /// written. `retry_after_secs` says when the next one may go.
    Throttled {
        retry_after_secs: u64,
    },
}

/// Issues a reset or verification link to `email` of `user_id` and writes its email to the
/// outbox, after taking the address's throttle slot. A reset link revokes the older reset links
/// of the user: only the newest one works.
pub async fn send_link(
    tx: &mut Tx,
    state: &AppState,
    user_id: Uuid,
    email: &Email,
    purpose: Purpose,
    now: Millis,
) -> Result<Issued, ApiError> {
    let settings = &state.settings;
    if let Some(retry_after_secs) = throttled(tx, state, email, now).await? {
        return Ok(Issued::Throttled { retry_after_secs });
    }
    let (kind, path, ttl) = match purpose {
        Purpose::PasswordReset => (
            Kind::PasswordReset,
            "password/reset",
            settings.password_reset_ttl,
        ),
        Purpose::EmailVerification => (
            Kind::EmailVerification,
            "email/verify",
            settings.email_verification_ttl,
        ),
        Purpose::Refresh => {
            return Err(anyhow::anyhow!("refresh tokens are not sent by email").into());
        }
    };
    if purpose == Purpose::PasswordReset {
        store::one_time_tokens::revoke_all(&mut **tx, user_id, purpose, now).await?;
    }
    let token = tokens::new_opaque();
    let hash = tokens::hash_opaque(purpose, &token);
    store::one_time_tokens::insert(
        &mut **tx,
        &store::one_time_tokens::NewToken {
            token_hash: &hash,
            purpose,
            user_id,
            email: email.normalized(),
            now,
            expires_at: now + millis(ttl),
        },
    )
    .await?;
    // The link comes from the configured public URL, never from the request's Host header.
    let link = {
        use secrecy::ExposeSecret as _;
        format!("{}/{path}?token={}", state.issuer, token.expose_secret())
    };
    let expires_in = mail::human_duration(ttl);
    enqueue(
        tx,
        state,
        kind,
        email,
        &[
            ("link", &link),
            ("email", email.as_str()),
            ("expires_in", &expires_in),
            ("public_url", &state.issuer),
        ],
        now,
    )
    .await?;
    Ok(Issued::Sent)
}

/// Writes the notice that the password of `email` changed. Not throttled: it follows a change
/// that succeeded, and its owner must hear of every one.
pub async fn notify_password_changed(
    tx: &mut Tx,
    state: &AppState,
    email: &Email,
    now: Millis,
) -> Result<(), ApiError> {
    let values = [("email", email.as_str()), ("public_url", &*state.issuer)];
    enqueue(tx, state, Kind::PasswordChanged, email, &values, now).await
}

/// Writes the notice that someone tried to sign up with `email`, which has an account (signup
/// with `conceal_existing_accounts`). At most one per address per `mail_throttle`, silently:
/// repeated signups with a victim's address must not flood their inbox, and the requester must
/// learn nothing either way. The notice has a throttle slot of its own, so that such signups can
/// never hold back the owner's reset link.
pub async fn notify_account_exists(
    tx: &mut Tx,
    state: &AppState,
    email: &Email,
    now: Millis,
) -> Result<(), ApiError> {
    let window = millis(state.settings.mail_throttle);
    let slot = format!("account_exists:{}", email.normalized());
    if window > 0 && !store::mail_throttle::claim(&mut **tx, &slot, now, now - window).await? {
        return Ok(());
    }
    let values = [("email", email.as_str()), ("public_url", &*state.issuer)];
    enqueue(tx, state, Kind::AccountExists, email, &values, now).await
}

/// `Some(seconds to wait)` when the address's slot is taken; otherwise takes it.
async fn throttled(
    tx: &mut Tx,
    state: &AppState,
    email: &Email,
    now: Millis,
) -> Result<Option<u64>, ApiError> {
    let window = millis(state.settings.mail_throttle);
    if window == 0 {
        return Ok(None);
    }
    let address = email.normalized();
    if store::mail_throttle::claim(&mut **tx, address, now, now - window).await? {
        return Ok(None);
    }
    let last = store::mail_throttle::last_sent_at(&mut **tx, address)
        .await?
        .unwrap_or(now);
    let wait_ms = u64::try_from(last + window - now).unwrap_or(0);
    Ok(Some(wait_ms.div_ceil(1000).max(1)))
}

async fn enqueue(
    tx: &mut Tx,
    state: &AppState,
    kind: Kind,
    to: &Email,
    values: &[(&str, &str)],
    now: Millis,
) -> Result<(), ApiError> {
    let rendered = state.mailer.render(kind, values)?;
    store::outbox::enqueue(
        &mut **tx,
        &store::outbox::NewMessage {
            id: Uuid::now_v7(),
            kind: kind.as_str(),
            recipient: to.as_str(),
            subject: &rendered.subject,
            body_text: &rendered.text,
            body_html: &rendered.html,
            now,
        },
    )
    .await?;
    Ok(())
}
