//! The admin API's and the export's reads: accounts by page, audit events by page, and
//! everything stored about one user.
//!
//! Pages are keyset pages on the primary key (UUIDv7 ids: time-ordered), never `OFFSET`: a page
//! starts strictly after (accounts) or before (audit events) the last id of the previous one, so
//! rows inserted meanwhile can never push a row into a second page, and no row is shown twice.

use sqlx::{Any, Executor, FromRow};
use uuid::Uuid;

use super::users::Account;

const ACCOUNT_COLUMNS: &str = "SELECT u.id, u.email, u.email_verified_at, u.created_at, \
     p.display_name, p.created_at AS profile_created_at, p.updated_at AS profile_updated_at, \
     p.last_login_at, p.metadata, u.app_metadata, u.disabled_at \
     FROM users u JOIN profiles p ON p.user_id = u.id";

/// An account as the admin API shows it: the API's account, and whether it is disabled.
#[derive(Debug, Clone, FromRow)]
pub struct AdminRow {
    #[sqlx(flatten)]
    pub account: Account,
    pub disabled_at: Option<i64>,
}

/// One account, for the admin API.
pub async fn admin_account<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<Option<AdminRow>, sqlx::Error> {
    sqlx::query_as(&format!("{ACCOUNT_COLUMNS} WHERE u.id = $1"))
        .bind(user_id.to_string())
        .fetch_optional(db)
        .await
}

/// `LIKE` pattern for "contains `needle`", with `\` escaping `%`, `_` and itself.
fn contains_pattern(needle: &str) -> String {
    let mut pattern = String::from("%");
    for ch in needle.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('%');
    pattern
}

/// Up to `limit` accounts after `after` (an id), oldest first, whose address contains `query`
/// (case-insensitively: the normalized address, or the address as given, lowercased).
pub async fn users_page<'e>(
    db: impl Executor<'e, Database = Any>,
    query: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AdminRow>, sqlx::Error> {
    let mut sql = format!("{ACCOUNT_COLUMNS} WHERE u.id > $1");
    if query.is_some() {
        sql.push_str(
            " AND (u.email_normalized LIKE $3 ESCAPE '\\' OR lower(u.email) LIKE $3 ESCAPE '\\')",
        );
    }
    sql.push_str(" ORDER BY u.id LIMIT $2");
    let after = after.map(|id| id.to_string()).unwrap_or_default();
    let mut q = sqlx::query_as(&sql).bind(after).bind(limit);
    if let Some(query) = query {
        q = q.bind(contains_pattern(&query.to_lowercase()));
    }
    q.fetch_all(db).await
}

/// An audit event as the admin API and the export show it.
#[derive(Debug, Clone, FromRow)]
pub struct AuditRow {
    pub id: String,
    pub kind: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: i64,
    pub admin_key_id: Option<String>,
}

/// Up to `limit` audit events before `before` (an id), newest first, of `user_id` and `kind`
/// when given.
pub async fn audit_page<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Option<Uuid>,
    kind: Option<&str>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    let mut sql = String::from(
        "SELECT id, kind, user_id, session_id, ip, user_agent, created_at, admin_key_id \
         FROM audit_events WHERE 1 = 1",
    );
    let mut n = 1;
    let mut next = |sql: &mut String, condition: &str| {
        n += 1;
        sql.push_str(&condition.replace('?', &format!("${n}")));
    };
    if user_id.is_some() {
        next(&mut sql, " AND user_id = ?");
    }
    if kind.is_some() {
        next(&mut sql, " AND kind = ?");
    }
    if before.is_some() {
        next(&mut sql, " AND id < ?");
    }
    sql.push_str(" ORDER BY id DESC LIMIT $1");
    let mut q = sqlx::query_as(&sql).bind(limit);
    if let Some(user_id) = user_id {
        q = q.bind(user_id.to_string());
    }
    if let Some(kind) = kind {
        q = q.bind(kind.to_owned());
    }
    if let Some(before) = before {
        q = q.bind(before.to_string());
    }
    q.fetch_all(db).await
}

/// A session row, whatever its state (the export, the admin API).
#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub id: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub idle_expires_at: i64,
    pub absolute_expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// Every session row of a user, newest first; with `live_at`, only those live then.
pub async fn sessions_of<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    live_at: Option<i64>,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    let mut sql = String::from(
        "SELECT id, created_at, last_used_at, idle_expires_at, absolute_expires_at, revoked_at, \
         revoked_reason, user_agent, ip FROM sessions WHERE user_id = $1",
    );
    if live_at.is_some() {
        sql.push_str(
            " AND revoked_at IS NULL AND idle_expires_at > $2 AND absolute_expires_at > $2",
        );
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC");
    let mut q = sqlx::query_as(&sql).bind(user_id.to_string());
    if let Some(now) = live_at {
        q = q.bind(now);
    }
    q.fetch_all(db).await
}

/// Every audit event about a user, oldest first (the export).
pub async fn audit_of<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, user_id, session_id, ip, user_agent, created_at, admin_key_id \
         FROM audit_events WHERE user_id = $1 ORDER BY id",
    )
    .bind(user_id.to_string())
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(super::contains_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }
}
