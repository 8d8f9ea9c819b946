//! The operator's commands: `latchkey users …`, `latchkey sessions revoke`, `latchkey keys list`
//! (`config check` is `crate::config_check`, `mail …` is `crate::mail::admin`, `webhooks …` is
//! `crate::webhooks::admin`). Each prints readable lines, or JSON with `--json`.
//! `latchkey users email-collisions` lists, with their addresses, the accounts the email re-key
//! left alone (the start-up log names them by id only; see `store::email_keys`).
//!
//! Commands that change accounts follow the flows' pattern: one transaction with its audit event.
//! Disabling revokes every session at once, so a disabled user's access tokens stop working on
//! latchkey's own endpoints immediately; deleting removes the user, profile, sessions and tokens
//! in one transaction.

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::clock::{Clock, rfc3339};
use crate::store::admin::{KeyRow, UserRow};
use crate::store::email_keys::StoredAddress;
use crate::store::{self, Store};

/// How a command's result is printed.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    Text,
    Json,
}

impl Output {
    pub fn print(self, text: &str, json: Value) {
        match self {
            Output::Text => println!("{text}"),
            Output::Json => println!("{json}"),
        }
    }
}

fn user_json(u: &UserRow) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "email_verified": u.email_verified_at.is_some(),
        "created_at": rfc3339(u.created_at),
        "disabled": u.disabled_at.is_some(),
        "display_name": u.display_name,
        "last_login_at": u.last_login_at.map(rfc3339),
        "live_sessions": u.live_sessions,
    })
}

fn user_line(u: &UserRow) -> String {
    format!(
        "{}  {}  verified={}  disabled={}  sessions={}  created={}",
        u.id,
        u.email,
        u.email_verified_at.is_some(),
        u.disabled_at.is_some(),
        u.live_sessions,
        rfc3339(u.created_at)
    )
}

pub async fn list_users(
    store: &Store,
    clock: &Clock,
    limit: i64,
    out: Output,
) -> anyhow::Result<()> {
    let users = store::admin::list_users(store.reader(), clock.now(), limit).await?;
    let text = if users.is_empty() {
        "no users".to_owned()
    } else {
        users.iter().map(user_line).collect::<Vec<_>>().join("\n")
    };
    out.print(
        &text,
        json!({ "users": users.iter().map(user_json).collect::<Vec<_>>() }),
    );
    Ok(())
}

async fn find(store: &Store, clock: &Clock, user: &str) -> anyhow::Result<(UserRow, Uuid)> {
    let row = store::admin::find_user(store.reader(), clock.now(), user)
        .await?
        .ok_or_else(|| anyhow!("no user with id or email {user:?}"))?;
    let id = store::parse_id(&row.id)?;
    Ok((row, id))
}

pub async fn show_user(
    store: &Store,
    clock: &Clock,
    user: &str,
    out: Output,
) -> anyhow::Result<()> {
    let (row, id) = find(store, clock, user).await?;
    let sessions = store::sessions::live_sessions(store.reader(), id, clock.now()).await?;
    let session_json: Vec<Value> = sessions
        .iter()
        .map(|s| {
            json!({"id": s.id, "created_at": rfc3339(s.created_at), "last_used_at": rfc3339(s.last_used_at),
                   "user_agent": s.user_agent, "ip": s.ip})
        })
        .collect();
    let mut text = user_line(&row);
    for s in &sessions {
        text.push_str(&format!(
            "\n  session {}  last used {}  ip={}  {}",
            s.id,
            rfc3339(s.last_used_at),
            s.ip.as_deref().unwrap_or("-"),
            s.user_agent.as_deref().unwrap_or("-")
        ));
    }
    let mut json = user_json(&row);
    json["sessions"] = Value::Array(session_json);
    out.print(&text, json);
    Ok(())
}

/// Disables (or enables) an account; disabling revokes every session, in the same transaction.
pub async fn set_disabled(
    store: &Store,
    clock: &Clock,
    user: &str,
    disable: bool,
    out: Output,
) -> anyhow::Result<()> {
    let (row, id) = find(store, clock, user).await?;
    let now = clock.now();
    // One store call: the flag, the revocations and the audit event.
    let revoked = store
        .set_disabled(id, disable, now)
        .await?
        .with_context(|| format!("no user {user}"))?;
    let verb = if disable { "disabled" } else { "enabled" };
    out.print(
        &format!(
            "{verb} {} ({}); {revoked} sessions revoked",
            row.email, row.id
        ),
        json!({"id": row.id, "email": row.email, "disabled": disable, "sessions_revoked": revoked}),
    );
    Ok(())
}

/// Deletes an account and everything hanging off it, in one transaction.
/// `users delete` asks first: on a terminal, the operator types the account back; elsewhere
/// (a script, a pipe) nothing is deleted without `--yes`.
pub fn confirm_delete(user: &str, yes: bool) -> anyhow::Result<()> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "users delete {user}: not deleted; pass --yes to delete without a terminal to confirm on"
        );
    }
    eprint!(
        "Delete {user} with its profile, sessions and tokens? Type the account again to confirm: "
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != user {
        bail!("users delete {user}: not confirmed, nothing deleted");
    }
    Ok(())
}

/// Marks the account's address verified (the operator vouches for it), with its audit event.
pub async fn verify_user(
    store: &Store,
    clock: &Clock,
    user: &str,
    out: Output,
) -> anyhow::Result<()> {
    let (row, id) = find(store, clock, user).await?;
    let changed = store.verify_email_by_admin(id, clock.now()).await?;
    let text = match changed {
        true => format!("verified {} ({})", row.email, row.id),
        false => format!("{} ({}) was already verified", row.email, row.id),
    };
    out.print(
        &text,
        json!({"id": row.id, "email": row.email, "email_verified": true, "changed": changed}),
    );
    Ok(())
}

/// Every stored session of the account, live or how it ended.
pub async fn user_sessions(
    store: &Store,
    clock: &Clock,
    user: &str,
    out: Output,
) -> anyhow::Result<()> {
    let (row, id) = find(store, clock, user).await?;
    let now = clock.now();
    let sessions = store::sessions::all_sessions(store.reader(), id).await?;
    let status = |s: &store::sessions::SessionRecord| match (&s.revoked_at, &s.revoked_reason) {
        (Some(_), Some(reason)) => format!("revoked ({reason})"),
        (Some(_), None) => "revoked".to_owned(),
        _ if s.idle_expires_at <= now || s.absolute_expires_at <= now => "expired".to_owned(),
        _ => "live".to_owned(),
    };
    let mut text = vec![format!("sessions of {} ({})", row.email, row.id)];
    if sessions.is_empty() {
        text.push("  none".to_owned());
    }
    let mut list = Vec::new();
    for s in &sessions {
        text.push(format!(
            "  {}  {}  created {}  last used {}  ip={}  {}",
            s.id,
            status(s),
            rfc3339(s.created_at),
            rfc3339(s.last_used_at),
            s.ip.as_deref().unwrap_or("-"),
            s.user_agent.as_deref().unwrap_or("-")
        ));
        list.push(json!({
            "id": s.id,
            "status": status(s),
            "created_at": rfc3339(s.created_at),
            "last_used_at": rfc3339(s.last_used_at),
            "revoked_at": s.revoked_at.map(rfc3339),
            "revoked_reason": s.revoked_reason,
            "ip": s.ip,
            "user_agent": s.user_agent,
        }));
    }
    out.print(&text.join("\n"), json!({"id": row.id, "sessions": list}));
    Ok(())
}

/// The account's audit events, newest first.
pub async fn user_audit(
    store: &Store,
    clock: &Clock,
    user: &str,
    limit: i64,
    out: Output,
) -> anyhow::Result<()> {
    let (row, id) = find(store, clock, user).await?;
    let events = store::audit::for_user(store.reader(), id, limit).await?;
    let mut text = vec![format!("audit events of {} ({})", row.email, row.id)];
    if events.is_empty() {
        text.push("  none".to_owned());
    }
    let mut list = Vec::new();
    for e in &events {
        text.push(format!(
            "  {}  {}  session={}  ip={}  {}",
            rfc3339(e.created_at),
            e.kind,
            e.session_id.as_deref().unwrap_or("-"),
            e.ip.as_deref().unwrap_or("-"),
            e.user_agent.as_deref().unwrap_or("-")
        ));
        list.push(json!({
            "id": e.id,
            "kind": e.kind,
            "created_at": rfc3339(e.created_at),
            "session_id": e.session_id,
            "ip": e.ip,
            "user_agent": e.user_agent,
        }));
    }
    out.print(&text.join("\n"), json!({"id": row.id, "events": list}));
    Ok(())
}

pub async fn delete_user(
    store: &Store,
    clock: &Clock,
    user: &str,
    out: Output,
) -> anyhow::Result<()> {
    let (row, id) = find(store, clock, user).await?;
    let now = clock.now();
    // One store call: the deletion (cascading to profile, sessions and tokens) and its audit
    // event, which outlives the account.
    if !store.delete_user(id, now).await? {
        bail!("no user {user}");
    }
    out.print(
        &format!("deleted {} ({})", row.email, row.id),
        json!({"id": row.id, "email": row.email, "deleted": true}),
    );
    Ok(())
}

/// Replaces a user's `app_metadata` with a JSON object (the admin API writes it later; this is
/// the operator's way until then).
pub async fn set_app_metadata(
    store: &Store,
    clock: &Clock,
    user: &str,
    raw: &str,
    out: Output,
) -> anyhow::Result<()> {
    let value: Value = serde_json::from_str(raw).context("app_metadata is not JSON")?;
    if !value.is_object() {
        bail!("app_metadata must be a JSON object");
    }
    let (row, id) = find(store, clock, user).await?;
    if !store
        .set_app_metadata(id, value.to_string(), clock.now())
        .await?
    {
        bail!("no user {user}");
    }
    out.print(
        &format!("app_metadata of {} ({}) set", row.email, row.id),
        json!({"id": row.id, "app_metadata": value}),
    );
    Ok(())
}

/// Revokes every session of a user.
pub async fn revoke_sessions(
    store: &Store,
    clock: &Clock,
    user: &str,
    out: Output,
) -> anyhow::Result<()> {
    let (row, id) = find(store, clock, user).await?;
    let now = clock.now();
    // One store call: the revocations and their audit event.
    let revoked = store.revoke_sessions_by_admin(id, now).await?;
    out.print(
        &format!("revoked {revoked} sessions of {} ({})", row.email, row.id),
        json!({"id": row.id, "email": row.email, "sessions_revoked": revoked}),
    );
    Ok(())
}

/// The accounts left on their old email key, for the operator to resolve one by one: merging
/// or deleting is a decision about people, not something to automate.
pub async fn email_collisions(store: &Store, out: Output) -> anyhow::Result<()> {
    let report = store::email_keys::check(store).await?;
    let address = |u: &StoredAddress| json!({"id": u.id, "email": u.email, "email_normalized": u.email_normalized});
    let mut text = Vec::new();
    for c in &report.collisions {
        text.push(format!("one address under the current rules: {}", c.key));
        text.extend(c.users.iter().map(|u| format!("  {}  {}", u.id, u.email)));
    }
    for u in &report.unparsable {
        text.push(format!(
            "refused by the current rules ({}): {}  {}",
            u.problem, u.user.id, u.user.email
        ));
    }
    if text.is_empty() {
        text.push("no email collisions".to_owned());
    }
    let json = json!({
        "collisions": report.collisions.iter().map(|c| json!({
            "key": c.key, "users": c.users.iter().map(address).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "unparsable": report.unparsable.iter().map(|u| {
            let mut v = address(&u.user);
            v["problem"] = json!(u.problem);
            v
        }).collect::<Vec<_>>(),
    });
    out.print(&text.join("\n"), json);
    Ok(())
}

pub async fn list_keys(store: &Store, out: Output) -> anyhow::Result<()> {
    let keys = store::admin::list_keys(store.reader()).await?;
    let status = |k: &KeyRow| {
        if k.retired_at.is_none() {
            "active"
        } else {
            "retired"
        }
    };
    let text = keys
        .iter()
        .map(|k| {
            format!(
                "{}  {}  created={}",
                k.kid,
                status(k),
                rfc3339(k.created_at)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let json = json!({"keys": keys.iter().map(|k| json!({
        "kid": k.kid, "status": status(k), "created_at": rfc3339(k.created_at),
        "retired_at": k.retired_at.map(rfc3339),
    })).collect::<Vec<_>>()});
    out.print(&text, json);
    Ok(())
}
