//! The operator's email commands: `latchkey mail dead` and `mail retry ID`.
//!
//! A dead email keeps its body (its link) until the longest link lifetime has passed, so that an
//! email given up during an SMTP outage can be sent again once the relay is back; after that the
//! pruning job erases the body, as it is erased at once when an email is sent, and a retry is
//! refused (the link in it has expired anyway: the user asks for a new one).

use anyhow::bail;
use serde_json::json;

use crate::admin::Output;
use crate::clock::{Clock, rfc3339};
use crate::store::{self, Store};

/// Emails given up, newest first: to whom, what, why (never a body: it may hold a live link).
pub async fn dead(store: &Store, limit: i64, out: Output) -> anyhow::Result<()> {
    let rows = store::outbox::list_dead(store.reader(), limit).await?;
    let mut text = Vec::new();
    if rows.is_empty() {
        text.push("no dead emails".to_owned());
    }
    let mut list = Vec::new();
    for m in &rows {
        let retryable = m.retryable == 1;
        text.push(format!(
            "{}  {}  to={}  attempts={}  dead {}  {}  {}",
            m.id,
            m.kind,
            m.recipient,
            m.attempts,
            rfc3339(m.dead_at),
            if retryable { "retryable" } else { "erased" },
            m.last_error.as_deref().unwrap_or("-")
        ));
        list.push(json!({
            "id": m.id,
            "kind": m.kind,
            "recipient": m.recipient,
            "subject": m.subject,
            "attempts": m.attempts,
            "created_at": rfc3339(m.created_at),
            "dead_at": rfc3339(m.dead_at),
            "last_error": m.last_error,
            "retryable": retryable,
        }));
    }
    out.print(&text.join("\n"), json!({"emails": list}));
    Ok(())
}

/// Makes a dead email due again; running instances send it at their next look at the outbox.
pub async fn retry(store: &Store, clock: &Clock, id: &str, out: Output) -> anyhow::Result<()> {
    match store.retry_mail(id.to_owned(), clock.now()).await? {
        store::outbox::MailRetry::Due => {
            out.print(
                &format!("email {id} is due again"),
                json!({"id": id, "due": true}),
            );
            Ok(())
        }
        store::outbox::MailRetry::NotDead => bail!("no dead email {id:?}"),
        store::outbox::MailRetry::Erased => bail!(
            "email {id} died too long ago: its body, with a link that has expired, is erased; \
             the user asks for a new one"
        ),
    }
}
