//! The pages of the emailed links: forgot password, reset, verify. GET never spends a token.

use super::{Visitor, assert_page_headers, input};
use crate::db_tests;
use crate::helpers::*;

db_tests!(
    forgot_answers_the_same_check_your_email_page_for_every_address,
    the_reset_link_page_spends_nothing_and_its_form_resets_once,
    a_rejected_new_password_keeps_the_reset_form_and_its_token,
    the_verification_link_page_spends_nothing_and_its_button_verifies,
);

const UNUSED: &str = "SELECT COUNT(*) FROM one_time_tokens WHERE used_at IS NULL";

async fn forgot_answers_the_same_check_your_email_page_for_every_address(db: Db) {
    let app = TestApp::spawn(db).await;
    app.signed_up("ada@example.com").await;
    let mut visitor = Visitor::new(&app);
    let form = visitor.get("/password/forgot").await;
    assert!(input(&form.body, "email").contains("autocomplete=\"email\""));
    let mut sent_pages = Vec::new();
    for email in ["ada@example.com", "nobody@example.com"] {
        let page = visitor.post("/password/forgot", &[("email", email)]).await;
        page.see_other("/password/forgot?notice=reset_sent");
        assert!(page.set_cookies().is_empty());
        let sent = visitor.follow(page).await;
        assert_eq!(sent.status, 200);
        assert_page_headers(&sent, email);
        assert!(sent.body.contains("<h1>Check your email</h1>"));
        sent_pages.push(sent.body);
    }
    assert_eq!(sent_pages[0], sent_pages[1], "nothing tells the two apart");
    // One throttle slot per address, written by the request whether or not it has an account.
    let requested = "SELECT COUNT(*) FROM mail_throttle WHERE email LIKE 'password_reset:%'";
    assert_eq!(app.count(requested).await, 2);
    let bad = visitor
        .post("/password/forgot", &[("email", "not an address")])
        .await;
    assert_eq!(bad.status, 422);
    assert!(input(&bad.body, "email").contains("aria-invalid=\"true\""));
    assert_eq!(app.count(requested).await, 2);
}

async fn the_reset_link_page_spends_nothing_and_its_form_resets_once(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let session = app.signed_up("ada@example.com").await;
    let _verification = sink.nth(1).await;
    let mut visitor = Visitor::new(&app);
    visitor
        .post("/password/forgot", &[("email", "ada@example.com")])
        .await;
    let mail = sink.nth(2).await;
    let link = mail.link("/password/reset");
    let token = mail.token("/password/reset");

    // A mail scanner and then the person open the link: nothing is spent.
    for _ in 0..2 {
        let page = visitor.get(&link).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_page_headers(&page, "reset page");
        assert!(page.body.contains(&format!(
            "<input type=\"hidden\" name=\"token\" value=\"{token}\">"
        )));
        assert!(input(&page.body, "password").contains("autocomplete=\"new-password\""));
        assert!(
            page.body
                .contains("autocomplete=\"username\" value=\"ada@example.com\"")
        );
    }
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'password_reset' AND used_at IS NULL"
        )
        .await,
        1
    );

    let new_password = "a brand new passphrase";
    let page = visitor
        .post(
            "/password/reset",
            &[("token", &token), ("password", new_password)],
        )
        .await;
    page.see_other("/login?notice=password_reset");
    assert!(
        page.set_cookies()["__Host-lk_access"]
            .attributes
            .contains(&"max-age=0".to_owned())
    );
    assert_eq!(
        app.me(&session.access_token).await.status(),
        401,
        "every session revoked"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'password_reset'")
            .await,
        1
    );
    assert_eq!(
        app.login("ada@example.com", new_password).await.status(),
        200
    );

    // Used: the link's page and its form say so, with 400 like the JSON API.
    let again = visitor.get(&link).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("This link no longer works"));
    assert!(
        !again.body.contains(&token),
        "no token in the page of a dead link"
    );
    let replay = visitor
        .post(
            "/password/reset",
            &[("token", &token), ("password", "yet another passphrase")],
        )
        .await;
    assert_eq!(replay.status, 400);
    assert!(replay.body.contains("href=\"/password/forgot\""));
    assert_eq!(
        app.login("ada@example.com", new_password).await.status(),
        200
    );
}

async fn a_rejected_new_password_keeps_the_reset_form_and_its_token(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    app.signed_up("ada@example.com").await;
    let _verification = sink.nth(1).await;
    let mut visitor = Visitor::new(&app);
    visitor
        .post("/password/forgot", &[("email", "ada@example.com")])
        .await;
    let token = sink.nth(2).await.token("/password/reset");
    let page = visitor
        .post(
            "/password/reset",
            &[("token", &token), ("password", "ada@example.com!")],
        )
        .await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(
        page.body
            .contains("Password is too easy to guess: it contains your email address.")
    );
    assert!(
        page.body
            .contains(&format!("name=\"token\" value=\"{token}\""))
    );
    assert!(!page.body.contains("value=\"ada@example.com!\""));
    assert_eq!(
        app.count(UNUSED).await,
        2,
        "the reset link and the verification link"
    );
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 200);
}

async fn the_verification_link_page_spends_nothing_and_its_button_verifies(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let session = app.signed_up("ada@example.com").await;
    let mail = sink.nth(1).await;
    let link = mail.link("/email/verify");
    let token = mail.token("/email/verify");
    let mut visitor = Visitor::new(&app);
    for _ in 0..2 {
        let page = visitor.get(&link).await;
        assert_eq!(page.status, 200);
        assert_page_headers(&page, "verify page");
        assert!(page.body.contains("action=\"/email/verify\""));
        assert!(
            page.body
                .contains(&format!("name=\"token\" value=\"{token}\""))
        );
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email_verified_at IS NOT NULL")
            .await,
        0,
        "opening the link verifies nothing"
    );
    let page = visitor.post("/email/verify", &[("token", &token)]).await;
    page.see_other("/email/verify?notice=email_verified");
    let done = visitor.follow(page).await;
    assert_eq!(done.status, 200);
    assert!(done.body.contains("<h1>Email verified</h1>"));
    let me: serde_json::Value = app.me(&session.access_token).await.json().await.unwrap();
    assert_eq!(me["user"]["email_verified"], true);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'email_verified'")
            .await,
        1
    );
    let again = visitor.post("/email/verify", &[("token", &token)]).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("This link no longer works"));
    assert_eq!(visitor.get(&link).await.status, 400);
}
