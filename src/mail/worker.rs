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
use crate::app::AppState;
use crate::clock::millis;
use crate::store::{self, outbox::Claimed};

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
    // Transaction boundary: the claim alone, committed before any SMTP traffic, so no lock or
    // connection is held while the relay answers.
    let mut tx = state.store.begin().await?;
    let mut claimed = store::outbox::claim_due(
        &mut tx,
        state.store.backend(),
        claim_id,
        now,
        now + millis(LEASE),
        1,
    )
    .await?;
    tx.commit().await?;
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
    // Transaction boundary: the outcome of one attempt.
    let mut tx = state.store.begin().await?;
    match outcome {
        Ok(()) => {
            if store::outbox::mark_sent(&mut *tx, &m.id, now).await? {
                pass.sent += 1;
                tracing::info!(id = %m.id, kind = %m.kind, attempts, "email delivered");
            }
        }
        Err(SendError::Transient(error)) if attempts < state.settings.mail_max_attempts => {
            let next = now + millis(backoff(attempts));
            store::outbox::mark_retry(&mut *tx, &m.id, message.claim_id, &error, next).await?;
            pass.retried += 1;
            tracing::warn!(id = %m.id, kind = %m.kind, attempts, error = %error,
                "email delivery failed; it will be retried");
        }
        Err(SendError::Transient(error) | SendError::Permanent(error)) => {
            store::outbox::mark_dead(&mut *tx, &m.id, message.claim_id, &error, now).await?;
            pass.dead += 1;
            tracing::error!(id = %m.id, kind = %m.kind, attempts, error = %error,
                "email given up: marked dead");
        }
    }
    tx.commit().await?;
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
