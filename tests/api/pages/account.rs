//! The account page and its forms, and the session resume that brings an expired page back.

use std::time::Duration;

use super::{Visitor, assert_page_headers, input};
use crate::db_tests;
use crate::helpers::*;

db_tests!(
    an_expired_page_resumes_its_session_through_the_refresh_cookie,
    without_a_session_the_account_page_goes_to_login_and_back,
    the_profile_form_saves_and_refuses_a_bad_name_with_422,
    resend_sends_a_new_verification_link_from_the_account_page,
    sessions_are_listed_and_another_one_is_signed_out,
    signing_out_this_session_from_the_list_is_a_logout,
    change_password_refuses_a_wrong_current_one_next_to_its_field,
    change_password_keeps_this_session_and_ends_the_others,
    log_out_everywhere_ends_every_session,
);

const LIVE: &str = "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL";

async fn an_expired_page_resumes_its_session_through_the_refresh_cookie(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("ada@example.com").await;
    let mut visitor = Visitor::with_session(&app, &session);
    app.clock.advance(Duration::from_secs(16 * 60));
    // The access token expired; the refresh cookie is not sent to /account.
    let page = visitor.get("/account").await;
    page.see_other("/auth/resume?return_to=%2Faccount");
    let resumed = visitor.get(page.location()).await;
    resumed.see_other("http://localhost:8080/account");
    let cookies = resumed.set_cookies();
    assert_ne!(
        cookies["__Secure-lk_refresh"].value, session.refresh_token,
        "rotated"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'refresh'")
            .await,
        1
    );
    let account = visitor.get(resumed.location()).await;
    assert_eq!(account.status, 200, "{}", account.body);
    // The old refresh token is spent: replaying it outside the grace period ends the session.
    app.clock.advance(Duration::from_secs(60));
    assert_eq!(app.refresh(&session.refresh_token).await.status(), 401);
}

async fn without_a_session_the_account_page_goes_to_login_and_back(db: Db) {
    let app = TestApp::spawn(db).await;
    app.signed_up("ada@example.com").await;
    let mut visitor = Visitor::new(&app);
    let page = visitor.get("/account").await;
    let resume = visitor.get(page.location()).await;
    resume.see_other("/login?return_to=http%3A%2F%2Flocalhost%3A8080%2Faccount");
    let form = visitor.get(resume.location()).await;
    assert!(
        form.body.contains(
            "<input type=\"hidden\" name=\"return_to\" value=\"http://localhost:8080/account\">"
        ),
        "{}",
        form.body
    );
    let login = visitor
        .post(
            "/login",
            &[
                ("email", "ada@example.com"),
                ("password", PASSWORD),
                ("return_to", "http://localhost:8080/account"),
            ],
        )
        .await;
    login.see_other("http://localhost:8080/account");
    assert_eq!(visitor.follow(login).await.status, 200);
}

async fn the_profile_form_saves_and_refuses_a_bad_name_with_422(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("ada@example.com").await;
    let mut visitor = Visitor::with_session(&app, &session);
    let page = visitor
        .post("/account/profile", &[("display_name", "Ada Lovelace")])
        .await;
    page.see_other("/account?notice=profile_saved");
    let account = visitor.follow(page).await;
    assert!(account.body.contains("Your profile is saved."));
    assert!(input(&account.body, "display_name").contains("value=\"Ada Lovelace\""));
    assert_eq!(
        app.text("SELECT display_name FROM profiles")
            .await
            .as_deref(),
        Some("Ada Lovelace")
    );

    let long = "x".repeat(101);
    let bad = visitor
        .post("/account/profile", &[("display_name", &long)])
        .await;
    assert_eq!(bad.status, 422);
    assert_page_headers(&bad, "profile 422");
    assert!(
        bad.body
            .contains("Display name must be at most 100 characters.")
    );
    assert!(input(&bad.body, "display_name").contains(&format!("value=\"{long}\"")));
    assert_eq!(
        app.text("SELECT display_name FROM profiles")
            .await
            .as_deref(),
        Some("Ada Lovelace")
    );
    // An empty name removes it, as `null` does in the JSON API.
    visitor
        .post("/account/profile", &[("display_name", "")])
        .await
        .see_other("/account?notice=profile_saved");
    assert_eq!(app.text("SELECT display_name FROM profiles").await, None);
}

async fn resend_sends_a_new_verification_link_from_the_account_page(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let session = app.signed_up("ada@example.com").await;
    let first = sink.nth(1).await.token("/email/verify");
    let mut visitor = Visitor::with_session(&app, &session);
    let account = visitor.get("/account").await;
    assert!(account.body.contains("Not verified yet"));
    assert!(account.body.contains("action=\"/account/email/resend\""));
    visitor
        .post("/account/email/resend", &[])
        .await
        .see_other("/account?notice=verification_sent");
    let second = sink.nth(2).await.token("/email/verify");
    assert_ne!(first, second);
    visitor.post("/email/verify", &[("token", &second)]).await;
    let account = visitor.get("/account").await;
    assert!(account.body.contains(">Verified</span>"));
    assert!(!account.body.contains("action=\"/account/email/resend\""));
    visitor
        .post("/account/email/resend", &[])
        .await
        .see_other("/account?notice=already_verified");
}

async fn sessions_are_listed_and_another_one_is_signed_out(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("ada@example.com").await;
    let other = Session::from_response(app.login("ada@example.com", PASSWORD).await).await;
    let other_id = app
        .text(&format!(
            "SELECT session_id FROM audit_events WHERE kind = 'login' AND user_id = '{}'",
            session.user_id()
        ))
        .await
        .unwrap();
    let mut visitor = Visitor::with_session(&app, &session);
    let account = visitor.get("/account").await;
    assert_eq!(account.body.matches("<li>").count(), 2, "two sessions");
    assert_eq!(account.body.matches("This device").count(), 1);
    assert!(
        account
            .body
            .contains(&format!("name=\"session_id\" value=\"{other_id}\""))
    );

    let page = visitor
        .post("/account/sessions/revoke", &[("session_id", &other_id)])
        .await;
    page.see_other("/account?notice=session_revoked");
    assert!(
        page.set_cookies().is_empty(),
        "this browser keeps its session"
    );
    assert_eq!(app.me(&other.access_token).await.status(), 401);
    assert_eq!(app.me(&session.access_token).await.status(), 200);

    // Another user's session, or nonsense: 404, and nothing changes.
    let stranger = app.signed_up("eve@example.com").await;
    let stranger_id = app
        .text(&format!(
            "SELECT id FROM sessions WHERE user_id = '{}'",
            stranger.user_id()
        ))
        .await
        .unwrap();
    for id in [stranger_id.as_str(), "not-a-uuid", ""] {
        let page = visitor
            .post("/account/sessions/revoke", &[("session_id", id)])
            .await;
        assert_eq!(page.status, 404, "{id:?}");
        assert!(page.body.contains("This page does not exist."), "{id:?}");
    }
    assert_eq!(app.me(&stranger.access_token).await.status(), 200);
}

async fn signing_out_this_session_from_the_list_is_a_logout(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("ada@example.com").await;
    let id = app.text("SELECT id FROM sessions").await.unwrap();
    let mut visitor = Visitor::with_session(&app, &session);
    let page = visitor
        .post("/account/sessions/revoke", &[("session_id", &id)])
        .await;
    page.see_other("/login?notice=signed_out");
    assert!(
        page.set_cookies()["__Host-lk_access"]
            .attributes
            .contains(&"max-age=0".to_owned())
    );
    assert_eq!(app.count(LIVE).await, 0);
}

async fn change_password_refuses_a_wrong_current_one_next_to_its_field(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("ada@example.com").await;
    let mut visitor = Visitor::with_session(&app, &session);
    let page = visitor
        .post(
            "/account/password",
            &[
                ("current_password", "not it at all"),
                ("new_password", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(page.status, 401);
    let field = input(&page.body, "current_password");
    assert!(field.contains("aria-invalid=\"true\""), "{field}");
    assert!(field.contains(" autofocus"));
    assert!(page.body.contains(
        "<p class=\"error\" id=\"current_password-error\">The current password is wrong.</p>"
    ));
    assert!(!page.body.contains("not it at all"));
    assert!(!page.body.contains("a brand new passphrase"));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'password_change_failed'")
            .await,
        1
    );
    let weak = visitor
        .post(
            "/account/password",
            &[("current_password", PASSWORD), ("new_password", "short")],
        )
        .await;
    assert_eq!(weak.status, 422);
    assert!(
        weak.body
            .contains("New password must be at least 8 characters.")
    );
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 200);
}

async fn change_password_keeps_this_session_and_ends_the_others(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("ada@example.com").await;
    let other = Session::from_response(app.login("ada@example.com", PASSWORD).await).await;
    let mut visitor = Visitor::with_session(&app, &session);
    let page = visitor
        .post(
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "a brand new passphrase"),
            ],
        )
        .await;
    page.see_other("/account?notice=password_changed");
    assert_eq!(app.me(&session.access_token).await.status(), 200);
    assert_eq!(app.me(&other.access_token).await.status(), 401);
    assert_eq!(
        app.login("ada@example.com", "a brand new passphrase")
            .await
            .status(),
        200
    );
}

async fn log_out_everywhere_ends_every_session(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("ada@example.com").await;
    app.login("ada@example.com", PASSWORD).await;
    let mut visitor = Visitor::with_session(&app, &session);
    let page = visitor.post("/account/logout-all", &[]).await;
    page.see_other("/login?notice=logged_out_everywhere");
    assert!(
        page.set_cookies()["__Secure-lk_refresh"]
            .attributes
            .contains(&"max-age=0".to_owned())
    );
    assert_eq!(app.count(LIVE).await, 0);
    assert!(!visitor.has("__Host-lk_access"));
    // Without a session, the form does nothing but send the browser to log in.
    let again = visitor.post("/account/logout-all", &[]).await;
    again.see_other("/auth/resume?return_to=%2Faccount");
}
