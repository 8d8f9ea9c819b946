//! The outbox worker: delivers committed emails, retries with exponential backoff, and gives up
//! on a message after a bounded number of attempts without holding up the others.
//!
//! One delivery is three steps, none of which holds a transaction while SMTP talks:
//! 1. claim: a short write transaction leases one due row to this worker (and counts the
//!    attempt), so no other worker, of this instance or another, sends it meanwhile;
//! 2. send, with `SEND_TIMEOUT`, shorter than the lease;
//! 3. record: sent (once: the UPDATE is conditional on the row not being sent yet), or due again
//!    after a backoff, or dead (permanent failure or attempts used up), in its own transaction.
//!
//! A crash between 2 and 3 leaves a leased row that becomes due again when the lease ends: the
//! email may then be sent twice, which is the one duplicate an SMTP client cannot rule out (the
//! Message-ID stays the same). Nothing is ever lost.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::SendError;
use super::links::{self, LinkKind};
use crate::app::AppState;
use crate::clock::millis;
use crate::domain::Email;
use crate::store;
use crate::store::audit::Actor;
use crate::store::outbox::{Claimed, Outcome};
use crate::store::reset_requests::RequestKind;

/// How long a claim keeps other workers off a row; longer than any delivery may take.
pub const LEASE: Duration = Duration::from_secs(5 * 60);
/// The first retry waits this long, each next one twice as long as the one before …
pub const RETRY_BASE: Duration = Duration::from_secs(30);
/// … up to this.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);

/// What one pass over the outbox did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub sent: usize,
    pub retried: usize,
    pub dead: usize,
}

/// Starts the worker of this instance: a pass whenever a flow wakes it after a commit, and every
/// `mail_poll_interval` whatever happens (rows of other instances, retries that came due).
/// When `stop` turns true the worker finishes the message in hand and ends; await the handle to
/// let it (graceful shutdown).
pub fn spawn(state: &AppState, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        while !*stop.borrow() {
            if let Err(err) = deliver(&state, &stop).await {
                tracing::warn!(error = ?err, "outbox delivery pass failed");
            }
            tokio::select! {
                () = state.mailer.woken() => {}
                () = tokio::time::sleep(state.settings.mail_poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    })
}

/// Delivers every message due now, one claim at a time, until none is left. Safe to run from
/// several workers at once (tests call it to deliver at a moment of their choosing).
pub async fn deliver_due(state: &AppState) -> anyhow::Result<Pass> {
    let (_keep, never) = watch::channel(false);
    deliver(state, &never).await
}

/// `deliver_due`, stopping between two messages once `stop` is true.
async fn deliver(state: &AppState, stop: &watch::Receiver<bool>) -> anyhow::Result<Pass> {
    // Whatever happens to the requests, the outbox is delivered.
    if let Err(err) = expand_reset_requests(state).await {
        tracing::warn!(error = ?err, "expanding reset requests failed; delivering the outbox");
    }
    let mut pass = Pass::default();
    while !*stop.borrow()
        && let Some(message) = claim_one(state).await?
    {
        let outcome = state.mailer.deliver(&message.claimed).await;
        record(state, &message, outcome, &mut pass).await?;
    }
    Ok(pass)
}

struct ClaimedMessage {
    claim_id: Uuid,
    claimed: Claimed,
}

async fn claim_one(state: &AppState) -> anyhow::Result<Option<ClaimedMessage>> {
    let now = state.clock.now();
    let claim_id = Uuid::new_v4();
    let lease_until = now + millis(LEASE);
    let mut claimed = state
        .store
        .claim_mail(claim_id, now, lease_until, 1)
        .await?;
    Ok(claimed
        .pop()
        .map(|claimed| ClaimedMessage { claim_id, claimed }))
}

async fn record(
    state: &AppState,
    message: &ClaimedMessage,
    outcome: Result<(), SendError>,
    pass: &mut Pass,
) -> anyhow::Result<()> {
    let m = &message.claimed;
    let now = state.clock.now();
    let attempts = u32::try_from(m.attempts).unwrap_or(u32::MAX);
    let (outcome, counter) = match outcome {
        Ok(()) => (Outcome::Sent, &mut pass.sent),
        Err(SendError::Transient(error)) if attempts < state.settings.mail_max_attempts => {
            tracing::warn!(id = %m.id, kind = %m.kind, attempts, error = %error,
                "email delivery failed; it will be retried");
            let next_attempt_at = now + millis(backoff(attempts));
            let retry = Outcome::Retry {
                error,
                next_attempt_at,
            };
            (retry, &mut pass.retried)
        }
        Err(SendError::Transient(error) | SendError::Permanent(error)) => {
            tracing::error!(id = %m.id, kind = %m.kind, attempts, error = %error,
                "email given up: marked dead");
            (Outcome::Dead { error }, &mut pass.dead)
        }
    };
    let sent = matches!(outcome, Outcome::Sent);
    let outcome_label = match &outcome {
        Outcome::Sent => "delivered",
        Outcome::Retry { .. } => "retried",
        Outcome::Dead { .. } => "dead",
    };
    let changed = state
        .store
        .record_mail(m.id.clone(), message.claim_id, outcome, now)
        .await?;
    if changed {
        *counter += 1;
        crate::metrics::Metrics::outcome(&state.metrics.mail_deliveries, outcome_label);
        if sent {
            tracing::info!(id = %m.id, kind = %m.kind, attempts, "email delivered");
        }
    }
    Ok(())
}

/// Turns pending password reset requests into links and emails (see `store::flows::password`):
/// an address with an account gets its link, one without is dropped; and passwordless requests
/// into codes (`store::flows::passwordless`). Each request in a
/// transaction of its own; a request another instance took first is skipped. A request that
/// cannot be turned into a link (a stored address no longer valid, a template failing) is logged
/// and dropped, so that it never holds up the other requests or the outbox.
async fn expand_reset_requests(state: &AppState) -> anyhow::Result<()> {
    let pending = store::reset_requests::pending(state.store.reader(), 50).await?;
    for request in pending {
        expand(state, request).await?;
    }
    Ok(())
}

async fn expand(state: &AppState, request: store::reset_requests::Pending) -> anyhow::Result<()> {
    let typed = Email::parse(&request.email).ok();
    let contact = match &typed {
        Some(typed) => store::users::find_contact_by_email(state.store.reader(), typed).await?,
        None => None,
    };
    if request.kind == RequestKind::Passwordless.as_str() {
        return expand_passwordless(state, request, typed, contact).await;
    }
    // No account, or a disabled one: no link, and the requester saw the same 202 either way.
    let Some(contact) = contact.filter(|c| c.disabled_at.is_none()) else {
        state.store.discard_reset_request(request.id).await?;
        return Ok(());
    };
    let user_id = store::parse_id(&contact.id)?;
    let now = state.clock.now();
    // The address on file, not the one typed: they are equal only after normalization.
    let prepared = Email::parse(&contact.email)
        .map_err(|problem| format!("the stored address is not valid: {problem}"))
        .and_then(|to| {
            links::prepare(state, LinkKind::PasswordReset, &to, now)
                .map_err(|err| format!("the link cannot be prepared: {err:?}"))
        });
    let link = match prepared {
        Ok(link) => link,
        Err(why) => {
            // Permanent: trying again would fail again and hold up the requests behind it.
            tracing::error!(user_id = %user_id, why, "reset request dropped: no link issued");
            state.store.discard_reset_request(request.id).await?;
            return Ok(());
        }
    };
    let actor = Actor {
        user_id: Some(user_id),
        session_id: None,
        ip: request.ip,
        user_agent: request.user_agent,
        admin_key_id: None,
    };
    state
        .store
        .issue_reset_link(request.id, user_id, link, actor, now)
        .await?;
    Ok(())
}

/// A passwordless request: the code and its email for an enabled account (to the address on
/// file), or for an address without one when `passwordless_signup` is on; nothing otherwise.
async fn expand_passwordless(
    state: &AppState,
    request: store::reset_requests::Pending,
    typed: Option<Email>,
    contact: Option<store::users::Contact>,
) -> anyhow::Result<()> {
    let (to, user_id) = match (contact, typed) {
        (Some(c), _) if c.disabled_at.is_none() => (Email::parse(&c.email).ok(), Some(c.id)),
        (None, Some(typed)) if state.settings.passwordless_signup => (Some(typed), None),
        // A disabled account, or no account and no signup: the requester saw the same 202.
        _ => {
            state.store.discard_reset_request(request.id).await?;
            return Ok(());
        }
    };
    let user_id = user_id.map(|id| store::parse_id(&id)).transpose()?;
    let now = state.clock.now();
    let prepared = to
        .ok_or_else(|| "the stored address is not valid".to_owned())
        .and_then(|to| {
            links::passwordless(state, &to, user_id, now)
                .map_err(|err| format!("the code cannot be prepared: {err:?}"))
        });
    let (code, mail) = match prepared {
        Ok(prepared) => prepared,
        Err(why) => {
            tracing::error!(user_id = ?user_id, why, "passwordless request dropped: no code issued");
            state.store.discard_reset_request(request.id).await?;
            return Ok(());
        }
    };
    let actor = Actor {
        user_id,
        session_id: None,
        ip: request.ip,
        user_agent: request.user_agent,
        admin_key_id: None,
    };
    state
        .store
        .issue_passwordless(request.id, code, mail, actor, now)
        .await?;
    Ok(())
}

/// The wait after the `attempts`-th failed attempt: `RETRY_BASE` doubled each time, at most
/// `RETRY_MAX`.
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    RETRY_BASE.saturating_mul(1 << doublings).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let secs: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(u32::MAX), RETRY_MAX);
    }
}
