//! The webhook worker: delivers committed events, retries with exponential backoff and jitter,
//! and gives up on a delivery after `webhook_max_attempts` without holding up the others.
//!
//! Like the mail worker (and with the same lease, `store::lease`): claim a few due rows in a
//! short transaction, deliver them concurrently with no transaction open, record each outcome in
//! its own. Several instances each run one; `FOR UPDATE SKIP LOCKED` (PostgreSQL) or the single
//! writer (SQLite) gives each row to one of them.

use std::time::Duration;

use rand::Rng as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::deliver::{SendError, origin};
use crate::app::AppState;
use crate::clock::millis;
use crate::metrics::label;
use crate::store;
use crate::store::outbox::Outcome;
use crate::store::webhooks::Claimed;

/// How long a claim keeps other workers off a row; far longer than `webhook_timeout` may be.
pub const LEASE: Duration = Duration::from_secs(5 * 60);
/// Retries wait at most this long.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);
/// Deliveries claimed (and sent concurrently) at once by one worker.
const BATCH: i64 = 16;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub delivered: usize,
    pub retried: usize,
    pub dead: usize,
}

/// Starts the worker of this instance: a pass whenever a flow wakes it, when the earliest retry
/// comes due, and every `mail_poll_interval` (the outbox's poll: rows of other instances). Ends
/// between two batches once `stop` is true.
pub fn spawn(state: &AppState, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        while !*stop.borrow() {
            if let Err(err) = deliver(&state, &stop).await {
                tracing::warn!(error = ?err, "webhook delivery pass failed");
            }
            let wait = until_next(&state).await;
            tokio::select! {
                () = state.webhooks.woken() => {}
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    })
}

/// How long to sleep: until the earliest waiting retry, at most the poll interval.
async fn until_next(state: &AppState) -> Duration {
    let poll = state.settings.mail_poll_interval;
    match store::webhooks::next_due(state.store.reader()).await {
        Ok(Some(due)) => {
            let ms = u64::try_from(due - state.clock.now()).unwrap_or(0);
            Duration::from_millis(ms).min(poll)
        }
        Ok(None) => poll,
        Err(err) => {
            tracing::warn!(error = %err, "reading the webhook queue failed");
            poll
        }
    }
}

/// Delivers everything due now, batch by batch. Safe from several workers at once.
pub async fn deliver_due(state: &AppState) -> anyhow::Result<Pass> {
    let (_keep, never) = watch::channel(false);
    deliver(state, &never).await
}

async fn deliver(state: &AppState, stop: &watch::Receiver<bool>) -> anyhow::Result<Pass> {
    let mut pass = Pass::default();
    while !*stop.borrow() {
        let now = state.clock.now();
        let claim_id = Uuid::new_v4();
        let lease_until = now + millis(LEASE);
        let batch = state
            .store
            .claim_webhooks(claim_id, now, lease_until, BATCH)
            .await?;
        if batch.is_empty() {
            break;
        }
        let sends = batch.iter().map(|c| state.webhooks.deliver(c, now));
        let outcomes = futures_util::future::join_all(sends).await;
        for (claimed, outcome) in batch.into_iter().zip(outcomes) {
            record(state, claim_id, claimed, outcome, &mut pass).await?;
        }
    }
    Ok(pass)
}

async fn record(
    state: &AppState,
    claim_id: Uuid,
    claimed: Claimed,
    outcome: Result<(), SendError>,
    pass: &mut Pass,
) -> anyhow::Result<()> {
    let now = state.clock.now();
    let attempts = u32::try_from(claimed.attempts).unwrap_or(u32::MAX);
    let to = origin(&claimed.endpoint);
    let (id, event) = (&claimed.event_id, &claimed.event_type);
    let (outcome, label_value, counter) = match outcome {
        Ok(()) => (Outcome::Sent, "delivered", &mut pass.delivered),
        Err(SendError::Retry(error)) if attempts < state.settings.webhook_max_attempts => {
            tracing::warn!(%id, %event, %to, attempts, %error,
                "webhook delivery failed; it will be retried");
            let wait = backoff(attempts, state.settings.webhook_retry_base);
            let next_attempt_at = now + millis(wait);
            let retry = Outcome::Retry {
                error,
                next_attempt_at,
            };
            (retry, "retried", &mut pass.retried)
        }
        Err(SendError::Retry(error) | SendError::Gone(error)) => {
            tracing::error!(%id, %event, %to, attempts, %error, "webhook given up: marked dead");
            (Outcome::Dead { error }, "dead", &mut pass.dead)
        }
    };
    let changed = state
        .store
        .record_webhook(claimed.id.clone(), claim_id, outcome, now)
        .await?;
    if changed {
        *counter += 1;
        state
            .metrics
            .webhook_deliveries
            .get_or_create(&[
                label("type", claimed.event_type.clone()),
                label("outcome", label_value),
            ])
            .inc();
        if label_value == "delivered" {
            tracing::info!(%id, %event, %to, attempts, "webhook delivered");
        }
    }
    Ok(())
}

/// The wait after the `attempts`-th failed attempt: `base` doubled each time, at most
/// `RETRY_MAX`, then between half and all of that at random, so that the deliveries a receiver's
/// outage failed together do not all come back at the same instant.
pub fn backoff(attempts: u32, base: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(24);
    let full = base.saturating_mul(1 << doublings).min(RETRY_MAX.max(base));
    let half = full / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let base = Duration::from_secs(30);
        for attempts in 1..=10 {
            let full = base.saturating_mul(1 << (attempts - 1)).min(RETRY_MAX);
            let wait = backoff(attempts, base);
            assert!(wait >= full / 2 && wait <= full, "{attempts}: {wait:?}");
        }
        assert!(backoff(u32::MAX, base) <= RETRY_MAX);
    }
}
