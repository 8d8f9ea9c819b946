//! Importing accounts: one transaction per batch of parsed lines. Each line becomes an account
//! through `create_account`, with its audit event and `user.created`; a line whose address is
//! taken (by an existing account or an earlier line) is reported and skipped, never merged, and
//! the batch goes on. A batch that fails (the database, a crash) leaves nothing of itself, and the
//! batches before it stay committed: the caller reports which lines those were.

use super::accounts::{Created, NewAccountRows, create_account};
use super::events;
use crate::clock::Millis;
use crate::failpoint::failpoint;
use crate::hooks::Source;
use crate::store::Store;
use crate::store::audit::{self, Actor};
use crate::store::tx::Done;
use crate::webhooks::event::EventType;

/// One parsed line of an import.
#[derive(Debug)]
pub struct ImportLine {
    /// 1-based, for the report.
    pub line: usize,
    pub rows: NewAccountRows,
}

impl Store {
    /// Imports one batch in one transaction; what became of each line, in order.
    pub async fn import_batch(
        &self,
        lines: Vec<ImportLine>,
        actor: Actor,
        now: Millis,
    ) -> Result<Vec<(usize, Created)>, sqlx::Error> {
        let input = (lines, actor, self.hooks().clone());
        self.write_evented(input, move |c, ((lines, actor, app), hooks)| {
            Box::pin(async move {
                let mut outcomes = Vec::with_capacity(lines.len());
                for line in lines {
                    // A savepoint per line: a line the application's hook refuses (whose
                    // statements may have failed, which on PostgreSQL aborts the transaction)
                    // is taken back alone, and the batch goes on.
                    let mut savepoint = sqlx::Connection::begin(&mut *c).await?;
                    let source = (app.as_ref(), Source::Import);
                    let created = create_account(&mut savepoint, &line.rows, source, now).await?;
                    match &created {
                        Created::Created => savepoint.commit().await?,
                        Created::EmailTaken | Created::Refused(_) => savepoint.rollback().await?,
                    }
                    if matches!(created, Created::Created) {
                        let user_id = line.rows.user_id;
                        let kind = audit::Kind::UserImported;
                        audit::record(&mut *c, kind, &actor.about(user_id), now).await?;
                        let event = EventType::UserCreated;
                        events::user(c, hooks, event, user_id, None, now).await?;
                    }
                    outcomes.push((line.line, created));
                }
                failpoint!("import.before_commit");
                Ok(Done::Commit(outcomes))
            })
        })
        .await
    }
}
