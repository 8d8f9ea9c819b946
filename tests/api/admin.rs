//! The operator's commands, run as the real binary against a test database.

use serde_json::Value;

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    users_list_show_disable_enable_and_delete,
    sessions_revoke_kills_every_session_of_a_user,
    keys_list_and_config_check,
);

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
    let deleted = admin(&app, &["users", "delete", "alice@example.com"]);
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
