//! The operator's webhook commands: `latchkey webhooks list [--dead]`, `webhooks retry ID`,
//! `webhooks test URL`.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::Webhooks;
use super::event;
use crate::admin::Output;
use crate::clock::{Clock, rfc3339};
use crate::store::webhooks::DeliveryRow;
use crate::store::{self, Store};

fn row_json(r: &DeliveryRow) -> Value {
    json!({
        "id": r.id,
        "event_id": r.event_id,
        "type": r.event_type,
        "endpoint": r.endpoint,
        "created_at": rfc3339(r.created_at),
        "attempts": r.attempts,
        "next_attempt_at": rfc3339(r.next_attempt_at),
        "dead_at": r.dead_at.map(rfc3339),
        "last_error": r.last_error,
    })
}

/// Deliveries waiting, or (`dead`) those given up, newest first.
pub async fn list(store: &Store, dead: bool, limit: i64, out: Output) -> anyhow::Result<()> {
    let rows = store::webhooks::list(store.reader(), dead, limit).await?;
    let text = if rows.is_empty() {
        if dead {
            "no dead webhooks"
        } else {
            "no webhooks waiting"
        }
        .to_owned()
    } else {
        rows.iter()
            .map(|r| {
                format!(
                    "{}  {}  {}  {}  attempts={}  {}",
                    r.id,
                    r.event_type,
                    r.event_id,
                    r.endpoint,
                    r.attempts,
                    r.last_error.as_deref().unwrap_or("-")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let json = json!({"webhooks": rows.iter().map(row_json).collect::<Vec<_>>()});
    out.print(&text, json);
    Ok(())
}

/// Makes a dead delivery due again; running instances send it at their next look at the queue.
pub async fn retry(store: &Store, clock: &Clock, id: &str, out: Output) -> anyhow::Result<()> {
    if !store
        .retry_webhook(id.trim().to_owned(), clock.now())
        .await?
    {
        bail!("no dead webhook delivery {id:?}");
    }
    out.print(
        &format!("webhook delivery {id} is due again"),
        json!({"id": id, "retried": true}),
    );
    Ok(())
}

/// Sends one signed `webhook.test` event to a configured endpoint, now, outside the queue, and
/// prints the receiver's answer: a way to check a receiver's URL and secret before real events.
pub async fn test(
    webhooks: &Webhooks,
    clock: &Clock,
    url: &str,
    out: Output,
) -> anyhow::Result<()> {
    let endpoint = webhooks
        .endpoints()
        .iter()
        .find(|e| e.url.as_str() == url || e.url.as_str().trim_end_matches('/') == url)
        .with_context(|| format!("{url} is not a configured webhook endpoint"))?;
    let now = clock.now();
    let id = event::new_id();
    let body = json!({
        "type": "webhook.test",
        "timestamp": rfc3339(now),
        "data": {},
    })
    .to_string();
    let status = webhooks
        .send(endpoint, &id, &body, now)
        .await
        .map_err(anyhow::Error::msg)
        .context("the receiver did not answer")?;
    let ok = (200..300).contains(&status);
    out.print(
        &format!("sent webhook.test {id}: the receiver answered {status}"),
        json!({"id": id, "status": status, "delivered": ok}),
    );
    if !ok {
        bail!("the receiver answered {status}, not 2xx");
    }
    Ok(())
}
