//! The operator's commands, run as the real binary against a test database.

use serde_json::Value;

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    users_list_show_disable_enable_and_delete,
    sessions_revoke_kills_every_session_of_a_user,
    keys_list_and_config_check,
    users_verify_sessions_and_audit,
    delete_without_a_terminal_needs_yes,
    audit_events_past_the_retention_are_pruned,
);

/// Runs `latchkey ARGS --database-url … --key-encryption-key … --json`.
fn admin_output(app: &TestApp, args: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend([
        "--database-url",
        &app.db.url,
        "--key-encryption-key",
        &app.kek,
        "--json",
    ]);
    run(&all, &std::env::temp_dir())
}

/// Runs `latchkey ARGS --database-url … --key-encryption-key … --json` and parses its output.
fn admin(app: &TestApp, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend([
        "--database-url",
        &app.db.url,
        "--key-encryption-key",
        &app.kek,
        "--json",
    ]);
    let output = run(&all, &std::env::temp_dir());
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

async fn users_list_show_disable_enable_and_delete(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up("alice@example.com").await;
    app.signed_up("bob@example.com").await;

    let list = admin(&app, &["users", "list"]);
    let emails: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["bob@example.com", "alice@example.com"]);

    let shown = admin(&app, &["users", "show", "ALICE@example.com"]);
    assert_eq!(shown["id"], alice.user_id());
    assert_eq!(shown["disabled"], false);
    assert_eq!(shown["live_sessions"], 1);
    assert_eq!(shown["sessions"].as_array().unwrap().len(), 1);

    // Disabled: the sessions die at once and login fails like a wrong password.
    let disabled = admin(&app, &["users", "disable", alice.user_id()]);
    assert_eq!(disabled["sessions_revoked"], 1);
    assert_eq!(app.me(&alice.access_token).await.status(), 401);
    assert_eq!(app.refresh(&alice.refresh_token).await.status(), 401);
    let refused = app.login("alice@example.com", PASSWORD).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_credentials"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'user_disabled'")
            .await,
        1
    );

    admin(&app, &["users", "enable", "alice@example.com"]);
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);

    // Deleted: user, profile, sessions and tokens go in one transaction; the audit trail stays.
    let deleted = admin(&app, &["users", "delete", "alice@example.com", "--yes"]);
    assert_eq!(deleted["deleted"], true);
    let id = alice.user_id();
    for (table, column) in [
        ("users", "id"),
        ("profiles", "user_id"),
        ("sessions", "user_id"),
        ("one_time_tokens", "user_id"),
    ] {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = '{id}'");
        assert_eq!(app.count(&sql).await, 0, "{table}");
    }
    let sql =
        "SELECT COUNT(*) FROM refresh_tokens WHERE session_id NOT IN (SELECT id FROM sessions)";
    assert_eq!(app.count(sql).await, 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'user_deleted'")
            .await,
        1
    );
    assert_eq!(app.count(ORPHANS).await, 0);
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 401);
    assert_eq!(
        app.login("bob@example.com", PASSWORD).await.status(),
        200,
        "others untouched"
    );

    // An unknown user is an error with a reason.
    let output = run(
        &[
            "users",
            "show",
            "nobody@example.com",
            "--database-url",
            &app.db.url,
            "--key-encryption-key",
            &app.kek,
        ],
        &std::env::temp_dir(),
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no user with id or email"));
}

async fn sessions_revoke_kills_every_session_of_a_user(db: Db) {
    let app = TestApp::spawn(db).await;
    let first = app.signed_up("alice@example.com").await;
    let second = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;
    let bob = app.signed_up("bob@example.com").await;

    let revoked = admin(&app, &["sessions", "revoke", "--user", "alice@example.com"]);
    assert_eq!(revoked["sessions_revoked"], 2);
    assert_eq!(app.me(&first.access_token).await.status(), 401);
    assert_eq!(app.me(&second.access_token).await.status(), 401);
    assert_eq!(app.me(&bob.access_token).await.status(), 200);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_reason = 'revoked_by_admin'")
            .await,
        2
    );
}

async fn keys_list_and_config_check(db: Db) {
    let app = TestApp::spawn(db).await;
    let keys = admin(&app, &["keys", "list"]);
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["status"], "active");
    assert!(keys[0].get("sealed_private_key").is_none() && keys[0].get("public_key").is_none());

    let config = admin(&app, &["config", "check"]);
    assert_eq!(config["key_encryption_key"], "<redacted>");
    assert_eq!(config["access_token_ttl"], 900);
    assert_eq!(config["cookie_secure"], true);
    assert!(
        !config.to_string().contains(&app.kek),
        "the KEK is never printed"
    );
}

async fn users_verify_sessions_and_audit(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up("alice@example.com").await;
    let second = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;
    assert_eq!(
        app.post_with_cookie(
            "/auth/logout",
            &format!("__Secure-lk_refresh={}", second.refresh_token)
        )
        .await
        .status(),
        204
    );
    let id = alice.user_id();

    // Verified on the operator's word: the flag, the audit event, and the link retired.
    let unverified =
        format!("SELECT COUNT(*) FROM users WHERE id = '{id}' AND email_verified_at IS NULL");
    assert_eq!(app.count(&unverified).await, 1);
    let verified = admin(&app, &["users", "verify", "alice@example.com"]);
    assert_eq!(verified["changed"], true);
    assert_eq!(app.count(&unverified).await, 0);
    let live_links = format!(
        "SELECT COUNT(*) FROM one_time_tokens WHERE user_id = '{id}' AND used_at IS NULL \
         AND revoked_at IS NULL AND purpose = 'email_verification'"
    );
    assert_eq!(
        app.count(&live_links).await,
        0,
        "the emailed link is retired"
    );
    let again = admin(&app, &["users", "verify", id]);
    assert_eq!(again["changed"], false, "already verified: nothing changes");
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE user_id = '{id}' AND kind = 'email_verified'"
        ))
        .await,
        1
    );

    // Both sessions, the live one and the one that logged out.
    let sessions = admin(&app, &["users", "sessions", "alice@example.com"]);
    let sessions = sessions["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let status_of = |sid: &str| {
        sessions
            .iter()
            .find(|s| s["id"] == sid)
            .map(|s| s["status"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let sid = |s: &Session| {
        TestApp::claims(&s.access_token)["sid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status_of(&sid(&alice)), "live");
    assert_eq!(status_of(&sid(&second)), "revoked (logout)");

    // The audit trail, newest first.
    let audit = admin(&app, &["users", "audit", "alice@example.com"]);
    let kinds: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["email_verified", "logout", "login", "signup"]);
    let limited = admin(
        &app,
        &["users", "audit", "alice@example.com", "--limit", "1"],
    );
    assert_eq!(limited["events"].as_array().unwrap().len(), 1);

    let unknown = admin_output(&app, &["users", "audit", "nobody@example.com"]);
    assert!(!unknown.status.success());
}

/// Without a terminal to confirm on (a script, a pipe), `users delete` deletes nothing unless
/// told `--yes`.
async fn delete_without_a_terminal_needs_yes(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up("alice@example.com").await;
    let refused = admin_output(&app, &["users", "delete", "alice@example.com"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("pass --yes"), "{stderr}");
    let sql = format!(
        "SELECT COUNT(*) FROM users WHERE id = '{}'",
        alice.user_id()
    );
    assert_eq!(app.count(&sql).await, 1, "nothing deleted");
    assert_eq!(app.me(&alice.access_token).await.status(), 200);
    let deleted = admin(&app, &["users", "delete", "alice@example.com", "--yes"]);
    assert_eq!(deleted["deleted"], true);
    assert_eq!(app.count(&sql).await, 0);
}

/// The pruning job deletes audit events older than `audit_retention`, and keeps every event
/// when it is 0.
async fn audit_events_past_the_retention_are_pruned(db: Db) {
    let app = TestApp::spawn_with(db, |o| o.audit_retention = Some("2h".parse().unwrap())).await;
    app.signed_up("alice@example.com").await;
    let old = app.count("SELECT COUNT(*) FROM audit_events").await;
    assert!(old >= 1);
    app.clock.advance(std::time::Duration::from_secs(3 * 3600));
    app.signed_up("bob@example.com").await;
    let total = app.count("SELECT COUNT(*) FROM audit_events").await;
    assert_eq!(
        latchkey::jobs::prune_audit(&app.state).await.unwrap(),
        old as u64
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events").await,
        total - old
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_events a JOIN users u ON u.id = a.user_id \
             WHERE u.email = 'bob@example.com'"
        )
        .await,
        total - old,
        "only alice's old events went"
    );

    let forever = app
        .another_instance(|o| o.audit_retention = Some("0".parse().unwrap()))
        .await;
    app.clock
        .advance(std::time::Duration::from_secs(365 * 86_400));
    forever
        .clock
        .advance(std::time::Duration::from_secs(400 * 86_400));
    assert_eq!(
        latchkey::jobs::prune_audit(&forever.state).await.unwrap(),
        0
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events").await,
        total - old
    );
}
