//! Background work of every instance: reload the signing keys, rotate them when automatic
//! rotation is configured, and prune sessions that ended long ago.
//!
//! Every job is safe with several instances on one database: key reloads only read; rotation is a
//! conditional update that only one instance can win for a given key; pruning deletes rows that
//! no request can use any more, and deleting a row twice deletes it once.

use std::time::Duration;

use crate::app::AppState;
use crate::clock::millis;
use crate::keys::{self, RELOAD_INTERVAL};
use crate::store;

/// Ended sessions stay this long (for the owner's and the operator's eyes) before they go.
pub const PRUNE_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How often ended sessions are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Starts the jobs; they run until the process ends.
pub fn spawn(state: &AppState) {
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
                }
            }
        }
    });
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

/// Deletes sessions that ended more than `PRUNE_AFTER` ago; returns how many.
pub async fn prune_sessions(state: &AppState) -> anyhow::Result<u64> {
    let cutoff = state.clock.now() - millis(PRUNE_AFTER);
    let mut tx = state.store.begin().await?;
    let pruned = store::sessions::prune(&mut *tx, cutoff).await?;
    tx.commit().await?;
    Ok(pruned)
}
