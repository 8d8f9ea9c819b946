//! Importing users with their password hashes: every supported kind verifies at login (known
//! answers made by other implementations) and is replaced by Argon2id there; per-line errors,
//! duplicates reported and not merged; the CLI's `users import`, `users create` and
//! `admin-keys`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_api::{admin, admin_key, json_of};
use crate::db_tests;
use crate::helpers::*;

db_tests!(
    every_hash_kind_logs_in_and_is_upgraded_to_argon2id,
    bad_lines_and_duplicates_are_reported_and_the_rest_imported,
    the_cli_imports_creates_users_and_manages_admin_keys,
);

/// Hashes of `PASSWORD` made by other implementations: pyca `bcrypt`, CPython's `hashlib`
/// (scrypt, PBKDF2; PHC strings put together by hand) and `argon2-cffi` (the C reference), with
/// parameters other than the service's.
const HASHES: &[(&str, &str)] = &[
    (
        "bcrypt",
        "$2b$04$vVvqniooFWD0shPonWKeUOyDOP5XSCL5Q3/VjXP/pZplguJx3FNwy",
    ),
    (
        "scrypt",
        "$scrypt$ln=10,r=8,p=1$bGF0Y2hrZXktc2FsdC0xNg$uRfvi2X+Q87Ld6sDtk5EHVSNe+JeyFSNo7ZtMzr0ztc",
    ),
    (
        "pbkdf2",
        "$pbkdf2-sha256$i=10000,l=32$bGF0Y2hrZXktc2FsdC0xNg$Fqm37+YcfXg+mAOyT9zr4ajLIk2tDQomEHQz4ZC6A68",
    ),
    (
        "argon2i",
        "$argon2i$v=19$m=256,t=2,p=4$gemjZWzJ49Ggsv2qUK29sw$dycm+0/zCrC3XXsiYTm27N0nJaUzNA6+T3l4R23lgYs",
    ),
    (
        "argon2d",
        "$argon2d$v=19$m=64,t=1,p=2$6t9uZ2v+4X0yPh91Wt6JuA$bg+IIF22+FUmmwHWZbe88LUOp57eQ5QDXgpDw7sLp+s",
    ),
];

async fn import(app: &TestApp, key: &str, ndjson: String) -> (u16, Value) {
    let response = admin(app, key, Method::POST, "/admin/v1/users/import")
        .header("content-type", "application/x-ndjson")
        .body(ndjson)
        .send()
        .await
        .unwrap();
    json_of(response).await
}

async fn hash_of(app: &TestApp, email: &str) -> String {
    app.text(&format!(
        "SELECT password_hash FROM users WHERE email = '{email}'"
    ))
    .await
    .unwrap()
}

async fn every_hash_kind_logs_in_and_is_upgraded_to_argon2id(db: Db) {
    let app = TestApp::spawn(db).await;
    let (key_id, key) = admin_key(&app).await;
    let ndjson: String = HASHES
        .iter()
        .map(|(kind, hash)| {
            json!({"email": format!("{kind}@example.com"), "password_hash": hash,
                   "email_verified": true, "display_name": kind, "app_metadata": {"from": "old"}})
            .to_string()
                + "\n"
        })
        .collect();
    let (status, report) = import(&app, &key, ndjson).await;
    assert_eq!(
        (status, report),
        (200, json!({"imported": 5, "errors": []}))
    );
    for (kind, hash) in HASHES {
        let email = format!("{kind}@example.com");
        assert_eq!(&hash_of(&app, &email).await, hash, "stored as it is");
        // A wrong password is refused and changes nothing.
        assert_eq!(
            app.login(&email, "wrong horse battery").await.status(),
            401,
            "{kind}"
        );
        assert_eq!(&hash_of(&app, &email).await, hash);
        let session = Session::from_response(app.login(&email, PASSWORD).await).await;
        assert_eq!(session.body["user"]["email_verified"], true, "{kind}");
        assert_eq!(session.body["user"]["app_metadata"], json!({"from": "old"}));
        assert_eq!(session.body["profile"]["display_name"], *kind);
        let upgraded = hash_of(&app, &email).await;
        assert!(
            upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{kind}: {upgraded}"
        );
        // And the upgraded hash logs in too.
        assert_eq!(app.login(&email, PASSWORD).await.status(), 200, "{kind}");
    }
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'user_imported' AND admin_key_id = '{key_id}'"
        ))
        .await,
        5
    );
    assert_eq!(app.count(ORPHANS).await, 0);
}

async fn bad_lines_and_duplicates_are_reported_and_the_rest_imported(db: Db) {
    let app = TestApp::spawn(db).await;
    let (_, key) = admin_key(&app).await;
    app.signed_up("taken@example.com").await;
    let bcrypt = HASHES[0].1;
    let lines = [
        json!({"email": "one@example.com", "password_hash": bcrypt}).to_string(),
        "not json".to_owned(),
        json!({"email": "TAKEN@example.com", "password_hash": bcrypt}).to_string(),
        String::new(),
        json!({"email": "no-hash@example.com"}).to_string(),
        json!({"email": "One@Example.com"}).to_string(),
        json!({"email": "md5@example.com", "password_hash": "$1$salt$hash"}).to_string(),
        json!({"email": "costly@example.com", "password_hash": "$2b$17$C6UzMDM.H6dfI/f/IKxGhuHWnH4A5CQPpz/2dFDY1gTWk8pJcKlcW"}).to_string(),
        json!({"email": "bad address"}).to_string(),
        json!({"email": "extra@example.com", "password": PASSWORD}).to_string(),
        json!({"email": "meta@example.com", "app_metadata": [1]}).to_string(),
    ];
    let (status, report) = import(&app, &key, lines.join("\n")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["imported"], 2, "{report}");
    let errors: Vec<(u64, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let lines: Vec<u64> = errors.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [2, 3, 6, 7, 8, 9, 10, 11], "{report}");
    assert_eq!(errors[1].1, "email_taken");
    assert_eq!(
        errors[2].1, "email_taken",
        "a duplicate in the file is not merged"
    );
    assert!(errors[3].1.starts_with("password_hash:"), "{}", errors[3].1);
    assert!(errors[4].1.contains("cost"), "{}", errors[4].1);
    assert!(errors[5].1.starts_with("email:"), "{}", errors[5].1);
    assert!(errors[7].1.starts_with("app_metadata:"), "{}", errors[7].1);
    // The taken account is unchanged; the one without a hash cannot log in until a reset.
    assert_eq!(app.login("taken@example.com", PASSWORD).await.status(), 200);
    assert_eq!(app.login("one@example.com", PASSWORD).await.status(), 200);
    assert_eq!(
        app.login("no-hash@example.com", PASSWORD).await.status(),
        401
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 3);

    // Not NDJSON, or no key: refused, nothing written.
    let response = admin(&app, &key, Method::POST, "/admin/v1/users/import")
        .json(&json!({"email": "json@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let response = app
        .client
        .post(app.url("/admin/v1/users/import"))
        .header("content-type", "application/x-ndjson")
        .body(json!({"email": "nokey@example.com"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await, (401, unauthenticated()));
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 3);

    // More than one batch: every line is accounted for.
    let many: Vec<String> = (0..250)
        .map(|n| json!({"email": format!("bulk{n}@example.com")}).to_string())
        .collect();
    let (status, report) = import(&app, &key, many.join("\n")).await;
    assert_eq!(
        (status, report),
        (200, json!({"imported": 250, "errors": []}))
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 253);
}

/// Runs the binary against the test database with `--json` and parses its output.
fn cli(app: &TestApp, args: &[&str]) -> Value {
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

async fn the_cli_imports_creates_users_and_manages_admin_keys(db: Db) {
    let app = TestApp::spawn(db).await;
    let created = cli(&app, &["admin-keys", "create", "--name", "support desk"]);
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("lk_admin_"));
    assert_eq!(created["name"], "support desk");
    let stored = app.text("SELECT key_hash FROM admin_keys").await.unwrap();
    assert_eq!(stored.len(), 64);
    assert!(
        !stored.contains(&key) && !key.contains(&stored),
        "only a hash is stored"
    );
    let (status, _) = json_of(
        admin(&app, &key, Method::GET, "/admin/v1/users")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);

    let listed = cli(&app, &["admin-keys", "list"]);
    assert_eq!(listed["keys"][0]["id"], id.as_str());
    assert_eq!(listed["keys"][0]["status"], "active");
    assert!(!listed.to_string().contains(&key));

    let file = std::env::temp_dir().join(format!(
        "latchkey-import-{}.ndjson",
        uuid::Uuid::new_v4().simple()
    ));
    let ndjson = format!(
        "{}\n{}\n",
        json!({"email": "cli@example.com", "password_hash": HASHES[2].1}),
        json!({"email": "cli@example.com"})
    );
    std::fs::write(&file, ndjson).unwrap();
    let report = cli(&app, &["users", "import", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        report,
        json!({"imported": 1, "errors": [{"line": 2, "error": "email_taken"}]})
    );
    assert_eq!(app.login("cli@example.com", PASSWORD).await.status(), 200);

    let user = cli(&app, &["users", "create", "made@example.com", "--verified"]);
    assert_eq!(user["email"], "made@example.com");
    assert_eq!(user["email_verified"], true);
    assert_eq!(user["disabled"], false);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = 'made@example.com'")
            .await,
        1
    );

    let revoked = cli(&app, &["admin-keys", "revoke", &id]);
    assert_eq!(revoked["revoked"], true);
    let (status, _) = json_of(
        admin(&app, &key, Method::GET, "/admin/v1/users")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    let listed = cli(&app, &["admin-keys", "list"]);
    assert_eq!(listed["keys"][0]["status"], "revoked");
}

/// A batch that fails in the middle of an import (the real binary, `--features failpoints`).
#[cfg(feature = "failpoints")]
mod failing {
    use serde_json::{Value, json};

    use crate::db_tests;
    use crate::helpers::*;

    db_tests!(a_failed_batch_is_reported_line_by_line_and_the_batches_before_it_stay);

    async fn a_failed_batch_is_reported_line_by_line_and_the_batches_before_it_stay(db: Db) {
        let test_db = TestDb::new(db).await;
        let kek = latchkey::keys::Kek::generate_encoded();
        let args = [
            "admin-keys",
            "create",
            "--name",
            "t",
            "--json",
            "--database-url",
            &test_db.url,
            "--key-encryption-key",
            &kek,
        ];
        let output = run(&args, &std::env::temp_dir());
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let created: Value = serde_json::from_slice(&output.stdout).unwrap();
        let key = created["key"].as_str().unwrap();
        // The first batch commits, the second fails before its commit.
        let env = [("FAILPOINTS", "import.before_commit=1*off->1*return")];
        let server = ServerProcess::serve(&test_db, &kek, &env).await;
        let ndjson: Vec<String> = (1..=250)
            .map(|n| json!({"email": format!("bulk{n}@example.com")}).to_string())
            .collect();
        let response = server
            .client
            .post(server.url("/admin/v1/users/import"))
            .bearer_auth(key)
            .header("content-type", "application/x-ndjson")
            .body(ndjson.join("\n"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let report: Value = response.json().await.unwrap();
        assert_eq!(report["imported"], 100);
        let errors = report["errors"].as_array().unwrap();
        let lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
        assert_eq!(
            lines,
            (101..=250).collect::<Vec<u64>>(),
            "every line not written"
        );
        assert_eq!(
            errors[0]["error"],
            "not imported: the database refused the batch"
        );
        assert_eq!(
            errors[100]["error"],
            "not imported: an earlier batch failed (the database refused the batch)"
        );
        let pool = test_db.pool().await;
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM users").await, 100);
        let last = "SELECT COUNT(*) FROM users WHERE email = 'bulk100@example.com'";
        assert_eq!(
            count(&pool, last).await,
            1,
            "the first batch is lines 1 to 100"
        );
        assert_eq!(count(&pool, ORPHANS).await, 0);
        pool.close().await;
    }
}
