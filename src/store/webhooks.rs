//! The webhook queue: one row per event and endpoint, written inside the transaction of the flow
//! that caused the event (`enqueue`, called from `flows::events`), claimed and finished by the
//! webhook worker with the outbox's lease (`lease`), listed and retried by the operator.

use std::sync::Arc;

use sqlx::{Any, Executor, FromRow};
use tokio::sync::Notify;
use uuid::Uuid;

use super::Store;
use super::lease::{self, Outcome, Queue};
use super::tx::Done;
use crate::clock::Millis;
use crate::webhooks::endpoint::Endpoint;
use crate::webhooks::event::EventType;

/// Where events go: each endpoint's URL and filter (no secrets: the store never sees them).
/// Decided inside the flow's transaction, so an event is queued for exactly the endpoints
/// configured when it happened. `wake` is the webhook worker's: the store methods that queue
/// events ring it once they have returned, that is after the commit (a worker woken before
/// would not see the rows yet).
#[derive(Debug, Clone, Default)]
pub struct Routes {
    targets: Arc<[(String, Option<Vec<EventType>>)]>,
    wake: Arc<Notify>,
}

impl Routes {
    pub fn new(endpoints: &[Endpoint], wake: Arc<Notify>) -> Routes {
        Routes {
            targets: endpoints
                .iter()
                .map(|e| (e.url.as_str().to_owned(), e.events.clone()))
                .collect(),
            wake,
        }
    }

    /// Wakes the webhook worker, when there is any endpoint to deliver to.
    pub(in crate::store) fn committed(&self) {
        if !self.targets.is_empty() {
            self.wake.notify_one();
        }
    }

    /// The endpoints that want `event`.
    pub fn targets(&self, event: EventType) -> impl Iterator<Item = &str> {
        self.targets
            .iter()
            .filter(move |(_, events)| events.as_ref().is_none_or(|list| list.contains(&event)))
            .map(|(url, _)| url.as_str())
    }

    pub fn wants(&self, event: EventType) -> bool {
        self.targets(event).next().is_some()
    }
}

/// Queues `body` (event `event_id`) for every endpoint that wants its type. Called inside the
/// flow's transaction: the rows exist exactly when the flow committed.
pub(in crate::store) async fn enqueue(
    c: &mut super::tx::Conn,
    routes: &Routes,
    event: EventType,
    event_id: &str,
    body: &str,
    now: Millis,
) -> Result<(), sqlx::Error> {
    for endpoint in routes.targets(event) {
        sqlx::query(
            "INSERT INTO webhook_outbox (id, event_id, event_type, endpoint, payload, created_at, \
                                         next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(event_id)
        .bind(event.as_str())
        .bind(endpoint)
        .bind(body)
        .bind(now)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub id: String,
    /// The `webhook-id` header: the same on every attempt and for every endpoint.
    pub event_id: String,
    pub event_type: String,
    pub endpoint: String,
    pub payload: String,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// A delivery as the operator sees it.
#[derive(Debug, FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint: String,
    pub created_at: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub sent_at: Option<i64>,
    pub dead_at: Option<i64>,
    pub last_error: Option<String>,
}

const DELIVERY_COLUMNS: &str = "SELECT id, event_id, event_type, endpoint, created_at, attempts, \
     next_attempt_at, sent_at, dead_at, last_error FROM webhook_outbox";

/// Deliveries, newest first: the dead ones only, or every one not delivered yet.
pub async fn list<'e>(
    db: impl Executor<'e, Database = Any>,
    dead: bool,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let filter = if dead {
        "dead_at IS NOT NULL"
    } else {
        "sent_at IS NULL AND dead_at IS NULL"
    };
    sqlx::query_as(&format!(
        "{DELIVERY_COLUMNS} WHERE {filter} ORDER BY created_at DESC, id DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Deliveries waiting, and when the oldest was written.
pub async fn backlog<'e>(
    db: impl Executor<'e, Database = Any>,
) -> Result<(i64, Option<i64>), sqlx::Error> {
    lease::backlog(db, Queue::Webhooks).await
}

/// Deliveries given up (dead) and not retried.
pub async fn dead<'e>(db: impl Executor<'e, Database = Any>) -> Result<i64, sqlx::Error> {
    lease::dead(db, Queue::Webhooks).await
}

/// When the next delivery waiting for a retry is due, if any: the worker sleeps until then.
pub async fn next_due<'e>(
    db: impl Executor<'e, Database = Any>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT MIN(next_attempt_at) FROM webhook_outbox WHERE sent_at IS NULL AND dead_at IS NULL",
    )
    .fetch_one(db)
    .await
}

impl Store {
    /// Where this store's flows send their events.
    pub fn with_webhook_routes(mut self, routes: Routes) -> Store {
        self.webhooks = routes;
        self
    }

    /// Claims up to `limit` due deliveries (see `lease`).
    pub async fn claim_webhooks(
        &self,
        claim_id: Uuid,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> Result<Vec<Claimed>, sqlx::Error> {
        self.claim(Queue::Webhooks, claim_id, now, lease_until, limit)
            .await
    }

    /// Records the outcome of an attempt of this claim; whether the row changed.
    pub async fn record_webhook(
        &self,
        id: String,
        claim_id: Uuid,
        outcome: Outcome,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.finish_claim(Queue::Webhooks, id, claim_id, outcome, now)
            .await
    }

    /// Makes a dead delivery due again with a fresh count of attempts (the operator, once the
    /// receiver is fixed); whether there was such a dead delivery. Its `webhook-id` stays.
    pub async fn retry_webhook(&self, id: String, now: Millis) -> Result<bool, sqlx::Error> {
        self.record(id, move |c, id| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE webhook_outbox SET dead_at = NULL, attempts = 0, next_attempt_at = $1, \
                                               claim_id = NULL, claimed_until = NULL \
                     WHERE id = $2 AND dead_at IS NOT NULL",
                )
                .bind(now)
                .bind(id.as_str())
                .execute(&mut *c)
                .await?;
                Ok(Done::Commit(done.rows_affected() == 1))
            })
        })
        .await
    }
}
