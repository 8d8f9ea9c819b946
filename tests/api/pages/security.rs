//! The security page: two-step verification turned on with its QR code and a first code (the
//! recovery codes shown once), turned off with the password; passkeys listed and removed; the
//! login page's passkey button.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{Visitor, assert_page_headers, input};
use crate::db_tests;
use crate::helpers::authenticator::Authenticator;
use crate::helpers::*;
use crate::mfa::{base32, code_at_step, freeze, step_now};

db_tests!(
    the_security_page_turns_two_step_verification_on_and_off,
    the_security_page_lists_and_removes_passkeys,
    the_login_page_offers_a_passkey_and_its_script,
);

/// The text between `start` and the next `end` after it.
fn between<'b>(body: &'b str, start: &str, end: &str) -> &'b str {
    let from = body
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} in {body}"))
        + start.len();
    body[from..].split(end).next().unwrap()
}

async fn the_security_page_turns_two_step_verification_on_and_off(db: Db) {
    let app = TestApp::spawn(db).await;
    freeze(&app);
    let session = app.signed_up("ada@example.com").await;
    let mut visitor = Visitor::with_session(&app, &session);
    let page = visitor.get("/account/security").await;
    assert_eq!(page.status, 200);
    assert_page_headers(&page, "the security page");
    assert!(
        page.body.contains("Two-step verification is off."),
        "{}",
        page.body
    );
    assert!(
        visitor
            .get("/account")
            .await
            .body
            .contains("href=\"/account/security\"")
    );

    // A wrong password: the page again, the message at the password, nothing stored.
    let wrong = visitor
        .post(
            "/account/security/totp",
            &[("password", "not the password")],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.body.contains("The password is wrong."),
        "{}",
        wrong.body
    );
    assert!(input(&wrong.body, "password").contains("aria-invalid=\"true\""));
    assert_eq!(app.count("SELECT COUNT(*) FROM mfa_totp").await, 0);

    let started = visitor
        .post("/account/security/totp", &[("password", PASSWORD)])
        .await;
    started.see_other("/account/security");
    // The page shows the pending enrollment (again on every load): the QR code and the key.
    let pending = visitor.get("/account/security").await;
    let qr = between(&pending.body, "src=\"data:image/svg+xml;base64,", "\"");
    let svg = String::from_utf8(STANDARD.decode(qr).unwrap()).unwrap();
    assert!(svg.contains("<svg"), "{svg}");
    let key = between(&pending.body, "<code id=\"totp-secret\">", "</code>").to_owned();
    assert_eq!(
        visitor
            .get("/account/security")
            .await
            .body
            .matches(&key)
            .count(),
        2
    );
    let secret = base32(&key);
    assert!(input(&pending.body, "code").contains("autocomplete=\"one-time-code\""));

    let wrong = visitor
        .post("/account/security/totp/confirm", &[("code", "000000")])
        .await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.body.contains("That code is not right"),
        "{}",
        wrong.body
    );
    let unconfirmed = "SELECT COUNT(*) FROM mfa_totp WHERE confirmed_at IS NULL";
    assert_eq!(app.count(unconfirmed).await, 1);

    let code = code_at_step(&secret, step_now(&app));
    let confirmed = visitor
        .post("/account/security/totp/confirm", &[("code", &code)])
        .await;
    assert_eq!(confirmed.status, 200);
    assert_page_headers(&confirmed, "the recovery codes");
    assert_eq!(
        confirmed.body.matches("<li><code>").count(),
        10,
        "{}",
        confirmed.body
    );
    assert!(
        confirmed
            .body
            .contains("Two-step verification with an authenticator app is on.")
    );
    let confirmed_rows = "SELECT COUNT(*) FROM mfa_totp WHERE confirmed_at IS NOT NULL";
    assert_eq!(app.count(confirmed_rows).await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM mfa_recovery_codes").await,
        10
    );
    // Shown once: the page after it has none.
    let after = visitor.get("/account/security").await;
    assert_eq!(after.body.matches("<li><code>").count(), 0);

    // Off, with the password (this session proved the code, so it may).
    let wrong = visitor
        .post("/account/security/totp/remove", &[("password", "nope")])
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(app.count("SELECT COUNT(*) FROM mfa_totp").await, 1);
    let removed = visitor
        .post("/account/security/totp/remove", &[("password", PASSWORD)])
        .await;
    removed.see_other("/account/security?notice=totp_removed");
    assert_eq!(app.count("SELECT COUNT(*) FROM mfa_totp").await, 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM mfa_recovery_codes").await,
        0
    );

    // Without a session, the page detours through the resume.
    let mut stranger = Visitor::new(&app);
    let page = stranger.get("/account/security").await;
    assert_eq!(page.status, 303);
    assert!(
        page.location().starts_with("/auth/resume"),
        "{}",
        page.location()
    );
}

async fn the_security_page_lists_and_removes_passkeys(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("ada@example.com").await;
    let mut phone = Authenticator::new(PUBLIC_URL);
    let added = crate::passkeys::register(&app, &session, &mut phone, "Ada's phone").await;
    let id = added["id"].as_str().unwrap();
    let mut visitor = Visitor::with_session(&app, &session);
    let page = visitor.get("/account/security").await;
    assert!(page.body.contains("Ada&#39;s phone"), "{}", page.body);
    assert!(page.body.contains(&format!("value=\"{id}\"")));
    assert!(page.body.contains("id=\"passkey-add\""));
    assert!(
        page.body
            .contains("<script src=\"/pages/passkeys.js\" defer></script>")
    );
    let script = app
        .client
        .get(app.url("/pages/passkeys.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(
        script
            .text()
            .await
            .unwrap()
            .contains("/auth/passkeys/register/start")
    );

    let bogus = visitor
        .post(
            "/account/security/passkeys/remove",
            &[("passkey_id", "nope")],
        )
        .await;
    assert_eq!(bogus.status, 404);
    assert_eq!(app.count("SELECT COUNT(*) FROM passkeys").await, 1);
    let removed = visitor
        .post("/account/security/passkeys/remove", &[("passkey_id", id)])
        .await;
    removed.see_other("/account/security?notice=passkey_removed");
    assert_eq!(app.count("SELECT COUNT(*) FROM passkeys").await, 0);
    let page = visitor
        .get("/account/security?notice=passkey_removed")
        .await;
    assert!(page.body.contains("That passkey is removed."));
    assert!(page.body.contains("No passkey yet."));
}

async fn the_login_page_offers_a_passkey_and_its_script(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut visitor = Visitor::new(&app);
    let page = visitor.get("/login?return_to=%2Faccount%2Fsecurity").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("data-passkey-login"), "{}", page.body);
    assert!(
        page.body
            .contains("data-next=\"http://localhost:8080/account/security\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("Sign in with a passkey"));
    // On an IP address there are no passkeys, and no button for them.
    let on_ip =
        TestApp::spawn_with(db, |o| o.public_url = Some("http://127.0.0.1:8080".into())).await;
    let mut visitor = Visitor::new(&on_ip);
    let page = visitor.get("/login").await;
    assert!(!page.body.contains("data-passkey-login"), "{}", page.body);
    let start = on_ip
        .post_json("/auth/passkeys/login/start", &serde_json::json!({}))
        .await;
    assert_eq!(start.status(), 404);
}
