//! Hostile email addresses: display-name forms, control, bidi and invisible characters are
//! refused with their reason; Unicode spellings of one address are one account; and the re-key
//! of stored keys rewrites what it can and reports, without merging, what it cannot.

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    hostile_addresses_are_refused_with_their_reason_and_nothing_is_written,
    spellings_of_one_address_are_one_account_for_signup_and_login,
    the_rekey_rewrites_old_keys_and_reports_what_it_leaves_alone,
);

const BARE: &str =
    "must be a bare address like name@example.com, without a display name or angle brackets";

fn invalid_email(message: &str) -> Value {
    json!({"error": {"code": "validation_failed", "message": "Some fields are invalid.",
                     "fields": {"email": message}}})
}

async fn hostile_addresses_are_refused_with_their_reason_and_nothing_is_written(db: Db) {
    let app = TestApp::spawn(db).await;
    // (reason, address, the `fields.email` message)
    let cases = [
        (
            "display-name form",
            "Support Team <victim@example.com>",
            BARE,
        ),
        ("angle brackets", "<victim@example.com>", BARE),
        (
            "quoted display name",
            "\"Support\"victim@example.com",
            "must not contain quotes",
        ),
        (
            "comment",
            "victim@example.com(Support)",
            "must not contain comments or parentheses",
        ),
        (
            "space inside",
            "vic tim@example.com",
            "must not contain spaces",
        ),
        (
            "BEL",
            "victim\u{0007}@example.com",
            "must not contain control characters",
        ),
        (
            "CR LF, a header injection",
            "victim@example.com\r\nBcc: all@example.com",
            "must not contain control characters",
        ),
        (
            "right-to-left override",
            "victim\u{202e}moc.elpmaxe@example.com",
            "must not contain text-direction control characters",
        ),
        (
            "first-strong isolate",
            "\u{2068}victim@example.com",
            "must not contain text-direction control characters",
        ),
        (
            "zero-width space",
            "vic\u{200b}tim@example.com",
            "must not contain invisible characters",
        ),
        (
            "zero-width joiner",
            "vic\u{200d}tim@example.com",
            "must not contain invisible characters",
        ),
        (
            "domain IDNA refuses",
            "victim@exa_mple.com",
            "is not a valid email address",
        ),
    ];
    for (reason, email, message) in cases {
        let response = app.signup(email, PASSWORD).await;
        assert_eq!(response.status(), 422, "{reason}");
        assert!(response.headers().get("set-cookie").is_none(), "{reason}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, invalid_email(message), "{reason}");
        // Login and the reset request answer with the same reason: they parse the same way.
        let login = app.login(email, PASSWORD).await;
        assert_eq!(login.status(), 422, "{reason}: login");
        let body: Value = login.json().await.unwrap();
        assert_eq!(body, invalid_email(message), "{reason}: login");
    }
    for table in [
        "users",
        "profiles",
        "sessions",
        "audit_events",
        "outbox",
        "mail_throttle",
    ] {
        let rows = app.count(&format!("SELECT COUNT(*) FROM {table}")).await;
        assert_eq!(rows, 0, "{table}");
    }
}

async fn spellings_of_one_address_are_one_account_for_signup_and_login(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up("alice@example.com").await;
    // Decomposed é (e + U+0301): stored composed, keyed composed.
    let jose = app.signed_up("jose\u{301}@example.com").await;
    let carol = app.signed_up("carol@bücher.example").await;
    assert_eq!(jose.body["user"]["email"], "jos\u{e9}@example.com");

    // (reason, spelling, the account it is)
    let cases = [
        ("upper case", "ALICE@EXAMPLE.COM", &alice),
        ("fullwidth letters", "ａｌｉｃｅ@ｅｘａｍｐｌｅ.com", &alice),
        ("fullwidth upper case", "ＡＬＩＣＥ@example.com", &alice),
        (
            "composed é against decomposed",
            "jos\u{e9}@example.com",
            &jose,
        ),
        ("upper decomposed É", "JOSE\u{301}@EXAMPLE.COM", &jose),
        (
            "punycode of the Unicode domain",
            "carol@xn--bcher-kva.example",
            &carol,
        ),
        ("upper-case Unicode domain", "carol@BÜCHER.example", &carol),
    ];
    for (reason, email, account) in cases {
        let response = app.signup(email, "another good passphrase").await;
        assert_eq!(response.status(), 409, "{reason}");
        assert!(response.headers().get("set-cookie").is_none(), "{reason}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": "email_taken", "message": "An account with this email already exists."}}),
            "{reason}"
        );
        let login = app.login(email, PASSWORD).await;
        assert_eq!(login.status(), 200, "{reason}: login");
        let login = Session::from_response(login).await;
        assert_eq!(login.user_id(), account.user_id(), "{reason}: same account");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 3);
    assert_eq!(
        app.text("SELECT email_normalized FROM users WHERE email LIKE 'carol%'")
            .await
            .unwrap(),
        "carol@xn--bcher-kva.example"
    );
}

/// A user row as an older version wrote it: the address as given, the key lowercased.
async fn insert_old_user(app: &TestApp, id: &str, email: &str, created_at: i64) {
    sqlx::query(
        "INSERT INTO users (id, email, email_normalized, password_hash, created_at, updated_at) \
         VALUES ($1, $2, $3, 'x', $4, $4)",
    )
    .bind(id)
    .bind(email)
    .bind(email.trim().to_lowercase())
    .bind(created_at)
    .execute(app.pool())
    .await
    .unwrap();
    sqlx::query("INSERT INTO profiles (user_id, created_at, updated_at) VALUES ($1, $2, $2)")
        .bind(id)
        .bind(created_at)
        .execute(app.pool())
        .await
        .unwrap();
}

async fn keys(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("SELECT id, email_normalized FROM users ORDER BY created_at")
        .fetch_all(app.pool())
        .await
        .unwrap()
}

/// `latchkey users email-collisions` against the test database: (stdout, stderr).
fn email_collisions(app: &TestApp, json: bool) -> (String, String) {
    let mut args = vec![
        "users",
        "email-collisions",
        "--database-url",
        &app.db.url,
        "--key-encryption-key",
        &app.kek,
    ];
    if json {
        args.push("--json");
    }
    let output = run(&args, &std::env::temp_dir());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

async fn the_rekey_rewrites_old_keys_and_reports_what_it_leaves_alone(db: Db) {
    use latchkey::store::email_keys;
    let app = TestApp::spawn(db).await;
    let ids: Vec<String> = (0..5).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let [wide, idn, real, look_alike, display] = [0, 1, 2, 3, 4].map(|i| ids[i].as_str());
    insert_old_user(&app, wide, "Ｗｉｄｅ@Example.com", 1).await;
    insert_old_user(&app, idn, "dave@Bücher.example", 2).await;
    insert_old_user(&app, real, "alice@example.com", 3).await;
    insert_old_user(&app, look_alike, "ａｌｉｃｅ@example.com", 4).await;
    insert_old_user(&app, display, "Support Team <victim@example.com>", 5).await;
    // An unspent verification link of `wide`, keyed the old way.
    sqlx::query(
        "INSERT INTO one_time_tokens (token_hash, purpose, user_id, email, created_at, expires_at) \
         VALUES ('h', 'email_verification', $1, 'ｗｉｄｅ@example.com', 1, 9999999999999)",
    )
    .bind(wide)
    .execute(app.pool())
    .await
    .unwrap();
    // As a database of the previous version: the start-up re-key has run on no users yet.
    sqlx::query("UPDATE email_key_version SET version = 1")
        .execute(app.pool())
        .await
        .unwrap();

    let report = email_keys::rekey(&app.state.store, app.clock.now())
        .await
        .unwrap();
    assert_eq!(report.rekeyed, [wide, idn]);
    assert_eq!(report.collisions.len(), 1);
    assert_eq!(report.collisions[0].key, "alice@example.com");
    let colliding: Vec<&str> = report.collisions[0]
        .users
        .iter()
        .map(|u| u.id.as_str())
        .collect();
    assert_eq!(colliding, [real, look_alike]);
    assert_eq!(report.unparsable.len(), 1);
    assert_eq!(report.unparsable[0].user.id, display);
    assert_eq!(report.unparsable[0].problem, BARE);

    let expected = [
        (wide, "wide@example.com"),
        (idn, "dave@xn--bcher-kva.example"),
        (real, "alice@example.com"),
        (look_alike, "ａｌｉｃｅ@example.com"),
        (display, "support team <victim@example.com>"),
    ]
    .map(|(id, key)| (id.to_owned(), key.to_owned()));
    assert_eq!(
        keys(&app).await,
        expected,
        "moved, or left exactly as they were"
    );
    assert_eq!(
        app.text("SELECT email FROM one_time_tokens").await.unwrap(),
        "wide@example.com"
    );
    assert_eq!(
        app.count("SELECT version FROM email_key_version").await,
        1,
        "not clean yet"
    );
    assert_eq!(app.count(ORPHANS).await, 0);

    // The operator's listing, with addresses; the start-up warning of the same run, ids only.
    let (stdout, stderr) = email_collisions(&app, true);
    let listing: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        listing,
        json!({
            "collisions": [{"key": "alice@example.com", "users": [
                {"id": real, "email": "alice@example.com", "email_normalized": "alice@example.com"},
                {"id": look_alike, "email": "ａｌｉｃｅ@example.com", "email_normalized": "ａｌｉｃｅ@example.com"},
            ]}],
            "unparsable": [{"id": display, "email": "Support Team <victim@example.com>",
                            "email_normalized": "support team <victim@example.com>", "problem": BARE}],
        })
    );
    for id in [real, look_alike, display] {
        assert!(stderr.contains(id), "the warning names {id}: {stderr}");
    }
    assert!(stderr.contains("email-collisions"), "{stderr}");
    assert!(
        !stderr.contains("example.com"),
        "no address in the log: {stderr}"
    );
    let (text, _) = email_collisions(&app, false);
    assert_eq!(
        text,
        format!(
            "one address under the current rules: alice@example.com\n  {real}  alice@example.com\n  \
             {look_alike}  ａｌｉｃｅ@example.com\nrefused by the current rules ({BARE}): {display}  \
             Support Team <victim@example.com>\n"
        )
    );
    assert_eq!(
        keys(&app).await,
        expected,
        "the CLI's re-key changed nothing more"
    );

    // Once the operator has resolved them, the next re-key is clean and marks the version.
    sqlx::query(&format!(
        "DELETE FROM users WHERE id IN ('{look_alike}', '{display}')"
    ))
    .execute(app.pool())
    .await
    .unwrap();
    let report = email_keys::rekey(&app.state.store, app.clock.now())
        .await
        .unwrap();
    assert!(report.is_clean() && report.rekeyed.is_empty(), "{report:?}");
    assert_eq!(app.count("SELECT version FROM email_key_version").await, 2);
    assert_eq!(email_collisions(&app, false).0, "no email collisions\n");
}
