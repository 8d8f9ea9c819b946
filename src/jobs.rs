//! Background work of every instance: reload the signing keys, rotate them when automatic
//! rotation is configured, prune sessions, one-time tokens, outbox rows, throttle slots and
//! rate-limit counters that ended and audit events past `audit_retention`, and refresh the
//! database-derived metrics. (The mail worker is `mail::worker`.)
//!
//! Every job is safe with several instances on one database: key reloads only read; rotation is a
//! conditional update that only one instance can win for a given key; pruning deletes rows that
//! no request can use any more, and deleting a row twice deletes it once.

use std::time::Duration;

use crate::app::AppState;
use crate::clock::millis;
use crate::keys::{self, RELOAD_INTERVAL};

/// Ended sessions stay this long (for the owner's and the operator's eyes) before they go.
pub const PRUNE_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How often ended sessions are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Sent and dead emails stay in the outbox this long (their bodies are erased at once).
pub const OUTBOX_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Starts the jobs; they run until their tasks are aborted (`Background::stop`): a flow the jobs
/// started runs in a task of its own (`store::tx`) and ends cleanly even then.
pub fn spawn(state: &AppState) -> [tokio::task::JoinHandle<()>; 2] {
    [spawn_maintenance(state), spawn_metrics_refresh(state)]
}

/// Key reloads and rotation, pruning.
fn spawn_maintenance(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let mut reload = tokio::time::interval(RELOAD_INTERVAL);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = reload.tick() => {
                    if let Err(err) = rotate_and_reload(&state).await {
                        tracing::warn!(error = ?err, "signing key maintenance failed");
                    }
                }
                _ = prune.tick() => {
                    match prune_sessions(&state).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(sessions = n, "pruned ended sessions"),
                        Err(err) => tracing::warn!(error = ?err, "pruning sessions failed"),
                    }
                    match prune_audit(&state).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(events = n, "pruned audit events past audit_retention"),
                        Err(err) => tracing::warn!(error = ?err, "pruning audit events failed"),
                    }
                    if let Err(err) = prune_mail(&state).await {
                        tracing::warn!(error = ?err, "pruning mail records failed");
                    }
                    if let Err(err) = state.limits.prune().await {
                        tracing::warn!(error = ?err, "pruning rate-limit counters failed");
                    }
                }
            }
        }
    })
}

/// Refreshes the database-derived gauges every `metrics_refresh`, starting at once (see
/// `crate::metrics`). A failed read is logged once per outage, not once per tick.
fn spawn_metrics_refresh(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.settings.metrics_refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match crate::metrics::refresh_from_database(&state).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("database gauges read again");
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "cannot read the database gauges; /metrics shows \
                        the last values read");
                }
                Err(_) => {}
            }
        }
    })
}

/// Rotates the signing key when it is older than the configured interval, then reloads the keys.
pub async fn rotate_and_reload(state: &AppState) -> anyhow::Result<()> {
    if let Some(interval) = state.settings.key_rotation_interval {
        let now = state.clock.now();
        if let Some(kid) =
            keys::rotate_if_older(&state.store, state.keys.kek(), now, now - millis(interval))
                .await?
        {
            tracing::info!(kid = %kid, "rotated the signing key");
        }
    }
    state.keys.reload().await
}

/// Deletes one-time tokens (passwordless codes and passkey ceremonies too) that expired more than
/// `PRUNE_AFTER` ago, emails sent or given up more than `OUTBOX_KEEP` ago, and throttle slots
/// that have ended.
pub async fn prune_mail(state: &AppState) -> anyhow::Result<()> {
    let now = state.clock.now();
    let slots_before = now - millis(state.settings.mail_throttle);
    state
        .store
        .prune_mail(
            now - millis(PRUNE_AFTER),
            now - millis(OUTBOX_KEEP),
            slots_before,
            now - millis(longest_link(state)),
        )
        .await?;
    Ok(())
}

/// How long the link in an email stays usable: a dead email's body is kept that long after it
/// died (for `latchkey mail retry`), after which its link has expired and the body goes.
fn longest_link(state: &AppState) -> Duration {
    let s = &state.settings;
    s.password_reset_ttl.max(s.email_verification_ttl)
}

/// Deletes audit events older than `audit_retention` (none when it is off); returns how many.
pub async fn prune_audit(state: &AppState) -> anyhow::Result<u64> {
    match state.settings.audit_retention {
        Some(keep) => Ok(state
            .store
            .prune_audit(state.clock.now() - millis(keep))
            .await?),
        None => Ok(0),
    }
}

/// Deletes sessions that ended more than `PRUNE_AFTER` ago; returns how many.
pub async fn prune_sessions(state: &AppState) -> anyhow::Result<u64> {
    let cutoff = state.clock.now() - millis(PRUNE_AFTER);
    Ok(state.store.prune_sessions(cutoff).await?)
}
