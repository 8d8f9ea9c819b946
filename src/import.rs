//! Importing users from NDJSON (admin API `POST /admin/v1/users/import`, `latchkey users import
//! FILE`): one JSON object a line, `{email, password_hash?, email_verified?, display_name?,
//! app_metadata?}`.
//!
//! Every line is parsed first; a line with a problem is reported (`{"line", "error"}`) and
//! skipped. The good lines are written `BATCH_SIZE` at a time, one transaction per batch
//! (`Store::import_batch`): an address that has an account already, or that an earlier line took,
//! is reported as `email_taken` and never merged. Should a batch fail (the database goes away),
//! nothing of it is written, the batches before it stay, and its lines and every later one are
//! reported as not imported: the report says exactly which lines are in the database.
//!
//! Hashes are stored as they are (PHC or MCF: argon2, bcrypt, scrypt, pbkdf2-sha256, see
//! `password::imported`), verified at the next login and replaced there by Argon2id. A line
//! without `password_hash` gives an account without a password, whose owner sets one by reset.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::clock::Millis;
use crate::domain::{DisplayName, Email, Metadata};
use crate::password::imported::{self, UNUSABLE};
use crate::store::Store;
use crate::store::audit::Actor;
use crate::store::flows::accounts::{Created, NewAccountRows};
use crate::store::flows::import::ImportLine;

/// Lines per transaction: large enough that an import of a million users is ten thousand
/// commits, small enough that a batch holds SQLite's write lock for milliseconds only.
pub const BATCH_SIZE: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    email: Option<String>,
    password_hash: Option<String>,
    email_verified: Option<bool>,
    display_name: Option<String>,
    app_metadata: Option<Value>,
}

/// What an import did.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[schema(as = ImportReport)]
pub struct Report {
    /// Accounts created (committed).
    pub imported: u64,
    /// The lines not imported, in order.
    pub errors: Vec<LineError>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    /// `email_taken`, or what is wrong with the line.
    pub error: String,
}

fn parse_line(raw: &str) -> Result<NewAccountRows, String> {
    let line: Line = serde_json::from_str(raw).map_err(|e| format!("not a valid line: {e}"))?;
    let email = line.email.as_deref().ok_or("email: is required")?;
    let email = Email::parse(email).map_err(|p| format!("email: {p}"))?;
    let password_hash = match line.password_hash {
        Some(hash) => {
            imported::check(&hash).map_err(|p| format!("password_hash: {p}"))?;
            hash
        }
        None => UNUSABLE.to_owned(),
    };
    let display_name = match line.display_name.as_deref().map(DisplayName::parse) {
        Some(Ok(name)) => name,
        Some(Err(problem)) => return Err(format!("display_name: {problem}")),
        None => None,
    };
    let app_metadata = match line.app_metadata {
        Some(value @ Value::Object(_)) => Some(value.to_string()),
        Some(_) => return Err("app_metadata: must be a JSON object".to_owned()),
        None => None,
    };
    Ok(NewAccountRows {
        user_id: Uuid::now_v7(),
        email,
        password_hash,
        display_name,
        metadata: Metadata::empty(),
        app_metadata,
        email_verified: line.email_verified.unwrap_or(false),
    })
}

/// Imports `ndjson` (blank lines are skipped); `actor` names who (an admin key, or nobody for
/// the CLI) in every audit event.
pub async fn run(store: &Store, ndjson: &str, actor: &Actor, now: Millis) -> Report {
    let mut report = Report::default();
    let mut good = Vec::new();
    for (index, raw) in ndjson.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        match parse_line(raw) {
            Ok(rows) => good.push(ImportLine {
                line: index + 1,
                rows,
            }),
            Err(error) => report.errors.push(LineError {
                line: index + 1,
                error,
            }),
        }
    }
    let mut failed: Option<String> = None;
    let mut batches = Vec::new();
    while !good.is_empty() {
        let rest = good.split_off(good.len().min(BATCH_SIZE));
        batches.push(std::mem::replace(&mut good, rest));
    }
    for batch in batches {
        if let Some(why) = &failed {
            for line in batch {
                report.errors.push(LineError {
                    line: line.line,
                    error: format!("not imported: an earlier batch failed ({why})"),
                });
            }
            continue;
        }
        let lines: Vec<usize> = batch.iter().map(|l| l.line).collect();
        match store.import_batch(batch, actor.clone(), now).await {
            Ok(outcomes) => {
                for (line, created) in outcomes {
                    match created {
                        Created::Created => report.imported += 1,
                        Created::EmailTaken => report.errors.push(LineError {
                            line,
                            error: "email_taken".to_owned(),
                        }),
                        Created::Refused(refused) => report.errors.push(LineError {
                            line,
                            error: refused.summary(),
                        }),
                    }
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "an import batch failed: nothing of it was written");
                let why = "the database refused the batch".to_owned();
                for line in lines {
                    report.errors.push(LineError {
                        line,
                        error: format!("not imported: {why}"),
                    });
                }
                failed = Some(why);
            }
        }
    }
    report.errors.sort_by_key(|e| e.line);
    report
}
