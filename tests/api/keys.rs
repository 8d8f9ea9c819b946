//! Signing keys: `latchkey keys rotate`, automatic rotation, and what the JWKS lists.

use std::time::Duration;

use latchkey::jobs;
use serde_json::Value;

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    rotation_signs_with_the_new_key_and_still_verifies_the_old_one,
    automatic_rotation_rotates_once_across_instances,
);

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let jwks: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn rotation_signs_with_the_new_key_and_still_verifies_the_old_one(db: Db) {
    let app = TestApp::spawn(db).await;
    let before = app.signed_up("alice@example.com").await;
    let old_kid = kid_of(&before.access_token);
    assert_eq!(jwks_kids(&app).await, [old_kid.as_str()]);

    let output = run(
        &[
            "keys",
            "rotate",
            "--database-url",
            &app.db.url,
            "--key-encryption-key",
            &app.kek,
        ],
        &std::env::temp_dir(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let new_kid = stdout
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(';')
        .to_owned();
    assert!(
        stdout.starts_with(&format!("new signing key {new_kid};")),
        "{stdout}"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM signing_keys").await, 2);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM signing_keys WHERE retired_at IS NULL")
            .await,
        1
    );
    assert_eq!(
        app.text("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
            .await
            .unwrap(),
        new_kid
    );

    // Running instances pick the new key up when they reload (every minute; here, now).
    jobs::rotate_and_reload(&app.state).await.unwrap();
    let after = app.login("alice@example.com", PASSWORD).await;
    let after = Session::from_response(after).await;
    assert_eq!(kid_of(&after.access_token), new_kid);
    assert_eq!(app.me(&after.access_token).await.status(), 200);
    assert_eq!(
        app.me(&before.access_token).await.status(),
        200,
        "tokens of the retired key still verify"
    );
    let mut kids = jwks_kids(&app).await;
    kids.sort();
    let mut both = vec![old_kid.clone(), new_kid.clone()];
    both.sort();
    assert_eq!(kids, both);

    // Once every token the old key signed has expired (lifetime + leeway + reload interval), the
    // old key leaves the JWKS.
    app.clock.advance(Duration::from_secs(900 + 60 + 60 + 1));
    jobs::rotate_and_reload(&app.state).await.unwrap();
    assert_eq!(jwks_kids(&app).await, [new_kid]);
    assert_eq!(app.me(&before.access_token).await.status(), 401);
}

async fn automatic_rotation_rotates_once_across_instances(db: Db) {
    let a = TestApp::spawn_with(db, |o| o.key_rotation_interval = Some(3600)).await;
    let b = a
        .another_instance(|o| o.key_rotation_interval = Some(3600))
        .await;
    let session = a.signed_up("alice@example.com").await;

    // Young key: nothing to do.
    jobs::rotate_and_reload(&a.state).await.unwrap();
    assert_eq!(a.count("SELECT COUNT(*) FROM signing_keys").await, 1);

    a.clock.advance(Duration::from_secs(3601));
    b.clock.advance(Duration::from_secs(3601));
    let (ra, rb) = tokio::join!(
        jobs::rotate_and_reload(&a.state),
        jobs::rotate_and_reload(&b.state)
    );
    ra.unwrap();
    rb.unwrap();
    assert_eq!(
        a.count("SELECT COUNT(*) FROM signing_keys").await,
        2,
        "one rotation, not two"
    );
    assert_eq!(
        a.count("SELECT COUNT(*) FROM signing_keys WHERE retired_at IS NULL")
            .await,
        1
    );
    jobs::rotate_and_reload(&b.state).await.unwrap();
    assert_eq!(a.count("SELECT COUNT(*) FROM signing_keys").await, 2);

    // Both instances sign with the new key and verify each other's tokens.
    let new_kid = a
        .text("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
        .await
        .unwrap();
    let on_b = Session::from_response(b.login("alice@example.com", PASSWORD).await).await;
    assert_eq!(kid_of(&on_b.access_token), new_kid);
    assert_eq!(a.me(&on_b.access_token).await.status(), 200);
    assert_ne!(kid_of(&session.access_token), new_kid);
}
