//! Re-keying `users.email_normalized` when the rules of `Email::normalized` change.
//!
//! SQL cannot compute NFKC or IDNA, so the re-key is Rust: read every user, parse its stored
//! address under today's rules, and write the keys that differ, in one transaction. It runs right
//! after the migrations (`rekey_at_start`), until `email_key_version` says the stored keys are of
//! the current `Email::KEY_VERSION`.
//!
//! Two accounts whose addresses are one address under the new rules (`Alice@example.com` and
//! `ａｌｉｃｅ@example.com`), or a stored address the new rules refuse (`Support Team <a@b.c>`),
//! cannot be decided by a program: merging would hand one person's account to another, failing
//! would stop the service. Those rows keep their old key and are reported: by user id in the log
//! at every start (addresses are personal data), and with their addresses by
//! `latchkey users email-collisions`, for the operator to resolve (delete, disable, or ask the
//! owner). The version row only moves to the current version once nothing is left to report.
//!
//! Left as they are: `mail_throttle` rows and `rate_limits` counters under an old key. Both
//! expire within minutes, so at worst one throttle window starts afresh.

use std::collections::{BTreeMap, HashMap};

use sqlx::{Any, Executor, FromRow};

use super::tx::{Conn, Done};
use super::{Constraint, Store};
use crate::clock::Millis;
use crate::domain::Email;

/// A user's address and key as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct StoredAddress {
    pub id: String,
    pub email: String,
    pub email_normalized: String,
}

/// Accounts that are one address under the current rules; all keep their stored keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    /// The key they would share.
    pub key: String,
    pub users: Vec<StoredAddress>,
}

/// A stored address the current rules refuse, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unparsable {
    pub user: StoredAddress,
    pub problem: &'static str,
}

/// What a re-key did (or, from `check`, would do) and what it left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Ids of the users whose key was (or would be) rewritten.
    pub rekeyed: Vec<String>,
    pub collisions: Vec<Collision>,
    pub unparsable: Vec<Unparsable>,
}

impl Report {
    /// Whether every stored key is (or can be made) the current one.
    pub fn is_clean(&self) -> bool {
        self.collisions.is_empty() && self.unparsable.is_empty()
    }
}

/// How many times a re-key is tried when a concurrent signup took a key it was about to write
/// (PostgreSQL only: on SQLite the transaction holds the write lock from its start). The next
/// attempt sees that account and reports the pair as a collision.
const ATTEMPTS: u32 = 3;

/// Re-keys if the stored keys are of an older version, and logs what was left alone (user ids
/// only). Called once at start, after the migrations.
pub async fn rekey_at_start(store: &Store, now: Millis) -> anyhow::Result<()> {
    let report = rekey(store, now).await?;
    if !report.rekeyed.is_empty() {
        tracing::info!(
            users = report.rekeyed.len(),
            "email uniqueness keys rewritten"
        );
    }
    if !report.is_clean() {
        let collisions: Vec<Vec<&str>> = report
            .collisions
            .iter()
            .map(|c| c.users.iter().map(|u| u.id.as_str()).collect())
            .collect();
        let unparsable: Vec<&str> = report
            .unparsable
            .iter()
            .map(|u| u.user.id.as_str())
            .collect();
        tracing::warn!(
            ?collisions,
            ?unparsable,
            "accounts left on their old email key; `latchkey users email-collisions` lists them"
        );
    }
    Ok(())
}

/// Brings every stored key to the current version that can be brought there, in one
/// transaction, and reports the rest (see the module documentation).
pub async fn rekey(store: &Store, now: Millis) -> anyhow::Result<Report> {
    let version: i64 = sqlx::query_scalar("SELECT version FROM email_key_version WHERE id = 1")
        .fetch_one(store.reader())
        .await?;
    if version >= Email::KEY_VERSION {
        return Ok(Report::default());
    }
    let mut attempt = 1;
    loop {
        match try_rekey(store, now).await {
            Err(err) if Constraint::UserEmail.violated_by(&err) && attempt < ATTEMPTS => {
                attempt += 1
            }
            done => return Ok(done?),
        }
    }
}

async fn try_rekey(store: &Store, now: Millis) -> Result<Report, sqlx::Error> {
    // One transaction: every key of this version, their tokens and the version row. Nothing is
    // ever half re-keyed.
    store
        .record((), move |c, ()| Box::pin(rekey_flow(c, now)))
        .await
}

async fn rekey_flow(c: &mut Conn, now: Millis) -> Result<Done<Report>, sqlx::Error> {
    // Claiming the row first serializes two instances starting together on PostgreSQL: the
    // second waits here and then finds the work done.
    let version: i64 = sqlx::query_scalar(
        "UPDATE email_key_version SET checked_at = $1 WHERE id = 1 RETURNING version",
    )
    .bind(now)
    .fetch_one(&mut *c)
    .await?;
    if version >= Email::KEY_VERSION {
        return Ok(Done::Commit(Report::default()));
    }
    let (moves, report) = plan(load(&mut *c).await?);
    // Two passes: a row may move to the key another row is leaving (its old spelling). Parking
    // every moving row on a key no address can have (no `@`) first keeps the constraint
    // satisfied after each statement.
    for m in &moves {
        set_key(&mut *c, &m.id, &format!("rekey:{}", m.id)).await?;
    }
    for m in &moves {
        set_key(&mut *c, &m.id, &m.to).await?;
        // A verification link verifies the key it was sent to: keep the unspent ones working.
        sqlx::query("UPDATE one_time_tokens SET email = $1 WHERE user_id = $2 AND email = $3")
            .bind(&m.to)
            .bind(&m.id)
            .bind(&m.from)
            .execute(&mut *c)
            .await?;
    }
    if report.is_clean() {
        sqlx::query("UPDATE email_key_version SET version = $1 WHERE id = 1")
            .bind(Email::KEY_VERSION)
            .execute(&mut *c)
            .await?;
    }
    Ok(Done::Commit(report))
}

/// What a re-key would do now, without writing: for the operator's listing.
pub async fn check(store: &Store) -> Result<Report, sqlx::Error> {
    Ok(plan(load(store.reader()).await?).1)
}

async fn load<'e>(
    db: impl Executor<'e, Database = Any>,
) -> Result<Vec<StoredAddress>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, email_normalized FROM users ORDER BY created_at, id")
        .fetch_all(db)
        .await
}

async fn set_key<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET email_normalized = $1 WHERE id = $2")
        .bind(key)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// One key to rewrite.
#[derive(Debug, PartialEq, Eq)]
struct Move {
    id: String,
    from: String,
    to: String,
}

/// Decides every row's key: the new one, unless the address no longer parses, or another row
/// ends on the same key. A row that stays on its old key may in turn block a row whose new key
/// that is, so this repeats until no two rows end on one key; each round pins at least one more
/// row, so it ends.
fn plan(rows: Vec<StoredAddress>) -> (Vec<Move>, Report) {
    let mut report = Report::default();
    // For each row: its new key, or None if it stays on its stored key.
    let mut target: Vec<Option<String>> = rows
        .iter()
        .map(|row| match Email::parse(&row.email) {
            Ok(email) => Some(email.normalized().to_owned()),
            Err(problem) => {
                report.unparsable.push(Unparsable {
                    user: row.clone(),
                    problem,
                });
                None
            }
        })
        .collect();
    let mut collisions: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    loop {
        let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            let key = target[i].as_deref().unwrap_or(&row.email_normalized);
            by_key.entry(key).or_default().push(i);
        }
        let clashes: Vec<(String, Vec<usize>)> = by_key
            .into_iter()
            .filter(|(_, members)| members.len() > 1)
            .map(|(key, members)| (key.to_owned(), members))
            .collect();
        if clashes.is_empty() {
            break;
        }
        for (key, members) in clashes {
            for &i in &members {
                // Only a row that was going to move can be pinned; the one already holding the
                // key (the account the constraint knows) keeps it.
                if target[i].as_deref() != Some(rows[i].email_normalized.as_str()) {
                    target[i] = None;
                }
            }
            let group = collisions.entry(key).or_default();
            group.extend(members);
            group.sort_unstable();
            group.dedup();
        }
    }
    report.collisions = collisions
        .into_iter()
        .map(|(key, members)| Collision {
            key,
            users: members.into_iter().map(|i| rows[i].clone()).collect(),
        })
        .collect();
    let moves: Vec<Move> = rows
        .into_iter()
        .zip(target)
        .filter_map(|(row, to)| {
            let to = to.filter(|to| *to != row.email_normalized)?;
            Some(Move {
                id: row.id,
                from: row.email_normalized,
                to,
            })
        })
        .collect();
    report.rekeyed = moves.iter().map(|m| m.id.clone()).collect();
    (moves, report)
}

#[cfg(test)]
mod tests {
    use super::{Move, StoredAddress, plan};

    fn row(id: &str, email: &str, key: &str) -> StoredAddress {
        StoredAddress {
            id: id.to_owned(),
            email: email.to_owned(),
            email_normalized: key.to_owned(),
        }
    }

    fn moved(id: &str, from: &str, to: &str) -> Move {
        Move {
            id: id.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
        }
    }

    #[test]
    fn current_keys_are_left_alone() {
        let (moves, report) = plan(vec![row("a", "Alice@Example.com", "alice@example.com")]);
        assert!(moves.is_empty());
        assert!(report.is_clean() && report.rekeyed.is_empty());
    }

    #[test]
    fn old_keys_move_to_the_new_one() {
        let (moves, report) = plan(vec![
            row("a", "ＢＯＢ@example.com", "ｂｏｂ@example.com"),
            row("b", "carol@Bücher.example", "carol@bücher.example"),
        ]);
        assert_eq!(
            moves,
            [
                moved("a", "ｂｏｂ@example.com", "bob@example.com"),
                moved("b", "carol@bücher.example", "carol@xn--bcher-kva.example"),
            ]
        );
        assert!(report.is_clean());
        assert_eq!(report.rekeyed, ["a", "b"]);
    }

    #[test]
    fn two_spellings_of_one_address_both_stay_and_are_reported() {
        let (moves, report) = plan(vec![
            row("real", "alice@example.com", "alice@example.com"),
            row(
                "look-alike",
                "ａｌｉｃｅ@example.com",
                "ａｌｉｃｅ@example.com",
            ),
            row("other", "BOB@x.example", "bob@x.example"),
        ]);
        assert!(moves.is_empty(), "{moves:?}");
        assert_eq!(report.collisions.len(), 1);
        assert_eq!(report.collisions[0].key, "alice@example.com");
        let ids: Vec<&str> = report.collisions[0]
            .users
            .iter()
            .map(|u| u.id.as_str())
            .collect();
        assert_eq!(ids, ["real", "look-alike"]);
    }

    #[test]
    fn two_old_keys_that_meet_on_a_new_one_both_stay() {
        let (moves, report) = plan(vec![
            row("nfd", "jose\u{301}@example.com", "jose\u{301}@example.com"),
            row("wide", "ｊｏｓé@example.com", "ｊｏｓé@example.com"),
        ]);
        assert!(moves.is_empty(), "{moves:?}");
        assert_eq!(report.collisions[0].users.len(), 2);
    }

    #[test]
    fn a_row_left_behind_can_block_another_and_that_is_reported_too() {
        // "x" stays (unparsable) on "b@example.com" — the key "y" would move to.
        let (moves, report) = plan(vec![
            row("x", "Name <b@example.com>", "b@example.com"),
            row("y", "Ｂ@example.com", "ｂ@example.com"),
        ]);
        assert!(moves.is_empty(), "{moves:?}");
        assert_eq!(report.unparsable.len(), 1);
        assert_eq!(report.unparsable[0].user.id, "x");
        assert_eq!(report.collisions.len(), 1);
        assert_eq!(report.collisions[0].key, "b@example.com");
    }

    #[test]
    fn a_row_may_move_onto_the_key_another_leaves() {
        // "b" moves onto the key "a" leaves: legal, thanks to the two-pass update.
        let (moves, report) = plan(vec![
            row("a", "C@example.com", "old-a@example.com"),
            row("b", "old-a@example.com", "something-else@example.com"),
        ]);
        assert!(report.is_clean());
        assert_eq!(
            moves,
            [
                moved("a", "old-a@example.com", "c@example.com"),
                moved("b", "something-else@example.com", "old-a@example.com"),
            ]
        );
    }
}
