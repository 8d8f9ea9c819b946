//! POST /auth/password/forgot, /auth/password/reset and /auth/password/change, with the emails
//! going through a real SMTP server on loopback.

use std::time::Duration;

use latchkey::tokens::{Purpose, hash_opaque};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    forgot_then_reset_then_login_with_the_new_password,
    a_reset_token_works_once_even_when_two_resets_race,
    a_reset_link_expires_after_thirty_minutes,
    an_older_reset_link_keeps_working_and_using_one_spends_all,
    forgot_for_an_unknown_address_is_the_same_202_and_sends_nothing,
    a_reset_with_an_unacceptable_password_is_422_and_changes_nothing,
    tokens_of_other_kinds_and_unknown_tokens_are_token_invalid,
    change_with_the_wrong_current_password_is_401_and_changes_nothing,
    change_revokes_the_other_sessions_and_keeps_this_one,
    change_validation_errors_are_422_and_change_nothing,
    reset_and_verification_emails_are_throttled_per_address_and_purpose,
);

pub const NEW_PASSWORD: &str = "a brand new passphrase";

pub fn forgot_body() -> Value {
    json!({"message": "If an account exists for this email address, a link to reset its password is on its way."})
}

pub fn token_invalid() -> Value {
    json!({"error": {"code": "token_invalid", "message": "This link is invalid or has expired."}})
}

fn invalid_credentials() -> Value {
    json!({"error": {"code": "invalid_credentials", "message": "Wrong email or password."}})
}

fn stored(purpose: Purpose, token: &str) -> String {
    hash_opaque(purpose, &SecretString::from(token.to_owned()))
}

impl TestApp {
    pub async fn forgot(&self, email: &str) -> reqwest::Response {
        self.post_json("/auth/password/forgot", &json!({ "email": email }))
            .await
    }

    pub async fn reset(&self, token: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/auth/password/reset",
            &json!({ "token": token, "password": password }),
        )
        .await
    }

    pub async fn change_password(
        &self,
        access_token: &str,
        current: &str,
        new: &str,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/auth/password/change"))
            .bearer_auth(access_token)
            .json(&json!({ "current_password": current, "new_password": new }))
            .send()
            .await
            .unwrap()
    }
}

/// Asks for a reset of `email` and returns the token of the `nth` email the sink receives.
pub async fn reset_token(app: &TestApp, sink: &SmtpSink, email: &str, nth: usize) -> String {
    let response = app.forgot(email).await;
    assert_eq!(response.status(), 202);
    let mail = sink.nth(nth).await;
    assert_eq!(mail.to, [email]);
    mail.token("/password/reset")
}

async fn assert_error(response: reqwest::Response, status: u16, body: Value, why: &str) {
    assert_eq!(response.status(), status, "{why}");
    assert!(response.headers().get("set-cookie").is_none(), "{why}");
    assert_eq!(response.json::<Value>().await.unwrap(), body, "{why}");
}

async fn forgot_then_reset_then_login_with_the_new_password(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let first = app.signed_up("alice@example.com").await;
    let second = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;
    sink.wait_for(1).await; // the verification email of the signup

    // A Host header of the attacker's choosing changes nothing in the link.
    let response = app
        .client
        .post(app.url("/auth/password/forgot"))
        .header("host", "evil.example")
        .json(&json!({"email": " ALICE@example.com "}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
    assert!(response.headers().get("set-cookie").is_none());
    assert_eq!(response.json::<Value>().await.unwrap(), forgot_body());
    let mail = sink.nth(2).await;
    assert_eq!(mail.from, "latchkey@localhost");
    assert_eq!(mail.to, ["alice@example.com"]);
    assert_eq!(mail.header("Subject").unwrap(), "Reset your password");
    assert_eq!(mail.header("To").unwrap(), "alice@example.com");
    let link = mail.link("/password/reset");
    let token = mail.token("/password/reset");
    assert_eq!(
        link,
        format!("http://localhost:8080/password/reset?token={token}")
    );
    assert_eq!(token.len(), 43, "256 bits, base64url");
    assert!(mail.body("text/plain").contains("within 30 minutes"));
    assert!(
        mail.body("text/html")
            .contains(&format!("<a href=\"{link}\">")),
        "{}",
        mail.body("text/html")
    );

    // Rows: the token only as its hash, the email sent and its bodies erased, the audit event.
    let token_row = format!(
        "SELECT COUNT(*) FROM one_time_tokens WHERE token_hash = '{}' AND purpose = 'password_reset' \
         AND user_id = '{}' AND email = 'alice@example.com' AND expires_at = created_at + 1800000 \
         AND used_at IS NULL AND revoked_at IS NULL",
        stored(Purpose::PasswordReset, &token),
        first.user_id()
    );
    assert_eq!(app.count(&token_row).await, 1);
    app.wait_for_count(
        "SELECT COUNT(*) FROM outbox WHERE kind = 'password_reset' AND sent_at IS NOT NULL \
         AND attempts = 1 AND body_text = '' AND body_html = '' AND recipient = 'alice@example.com'",
        1,
    )
    .await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'password_reset_requested'")
            .await,
        1
    );

    let response = app.reset(&token, NEW_PASSWORD).await;

    assert_eq!(response.status(), 204);
    assert_session_cookies_cleared(response.headers());
    assert_eq!(response.text().await.unwrap(), "");
    // The new password works, the old one does not.
    let login = app.login("alice@example.com", NEW_PASSWORD).await;
    assert_eq!(login.status(), 200);
    let fresh = Session::from_response(login).await;
    assert_error(
        app.login("alice@example.com", PASSWORD).await,
        401,
        invalid_credentials(),
        "old password",
    )
    .await;
    // Every session from before the reset is over, at once.
    for (name, old) in [("first", &first), ("second", &second)] {
        let refresh = app.refresh(&old.refresh_token).await;
        assert_eq!(refresh.status(), 401, "{name} refresh");
        assert_eq!(refresh.json::<Value>().await.unwrap(), session_revoked());
        let me = app.me(&old.access_token).await;
        assert_eq!(me.status(), 401, "{name} me");
        assert_eq!(me.json::<Value>().await.unwrap(), unauthenticated());
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_reason = 'password_reset'")
            .await,
        2
    );
    // Opening the link proved the address.
    let me: Value = app.me(&fresh.access_token).await.json().await.unwrap();
    assert_eq!(me["user"]["email_verified"], true);
    assert_eq!(app.count(&token_row).await, 0, "the token is used");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'password_reset'")
            .await,
        1
    );
    // The owner hears of the change.
    let notice = sink.nth(3).await;
    assert_eq!(notice.to, ["alice@example.com"]);
    assert_eq!(
        notice.header("Subject").unwrap(),
        "Your password was changed"
    );
    assert!(
        notice
            .body("text/plain")
            .contains("The password of the account alice@example.com was just changed")
    );

    // The link works once.
    assert_error(
        app.reset(&token, "yet another passphrase").await,
        400,
        token_invalid(),
        "reuse",
    )
    .await;
    assert_eq!(
        app.login("alice@example.com", NEW_PASSWORD).await.status(),
        200
    );
    assert_eq!(app.deliver().await.sent, 0);
    assert_eq!(sink.messages().len(), 3);
}

async fn a_reset_token_works_once_even_when_two_resets_race(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    app.signed_up("alice@example.com").await;
    sink.wait_for(1).await;
    let token = reset_token(&app, &sink, "alice@example.com", 2).await;

    let passwords = ["first racing passphrase", "second racing passphrase"];
    let responses = join_all(passwords.iter().map(|p| app.reset(&token, p))).await;

    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        1,
        "{statuses:?}"
    );
    let winner = statuses.iter().position(|s| *s == 204).unwrap();
    for response in responses {
        if response.status() == 400 {
            assert_eq!(response.json::<Value>().await.unwrap(), token_invalid());
        }
    }
    assert_eq!(
        app.login("alice@example.com", passwords[winner])
            .await
            .status(),
        200
    );
    assert_eq!(
        app.login("alice@example.com", passwords[1 - winner])
            .await
            .status(),
        401
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'password_reset'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'password_changed'")
            .await,
        1
    );
}

async fn a_reset_link_expires_after_thirty_minutes(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    app.signed_up("alice@example.com").await;
    app.signed_up("bob@example.com").await;
    sink.wait_for(2).await;
    let alice = reset_token(&app, &sink, "alice@example.com", 3).await;
    let bob = reset_token(&app, &sink, "bob@example.com", 4).await;

    app.clock.advance(Duration::from_secs(29 * 60 + 59));
    assert_eq!(
        app.reset(&bob, NEW_PASSWORD).await.status(),
        204,
        "just in time"
    );
    app.clock.advance(Duration::from_secs(2));
    assert_error(
        app.reset(&alice, NEW_PASSWORD).await,
        400,
        token_invalid(),
        "expired",
    )
    .await;
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
}

/// An attacker asking for reset links cannot kill the one the owner is about to open: a newer
/// request leaves the older unexpired links working, and using any one of them spends them all.
async fn an_older_reset_link_keeps_working_and_using_one_spends_all(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |o| o.mail_throttle = Some(0)).await;
    app.signed_up("alice@example.com").await;
    sink.wait_for(1).await;
    let older = reset_token(&app, &sink, "alice@example.com", 2).await;
    let newer = reset_token(&app, &sink, "alice@example.com", 3).await;
    assert_ne!(older, newer);
    let live = "SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'password_reset' \
                AND used_at IS NULL AND revoked_at IS NULL";
    assert_eq!(app.count(live).await, 2, "both links are live");

    assert_eq!(app.reset(&older, NEW_PASSWORD).await.status(), 204);
    assert_eq!(app.count(live).await, 0, "using one spent both");
    assert_error(
        app.reset(&newer, PASSWORD).await,
        400,
        token_invalid(),
        "spent by the other link's use",
    )
    .await;
    assert_eq!(
        app.login("alice@example.com", NEW_PASSWORD).await.status(),
        200
    );
}

async fn forgot_for_an_unknown_address_is_the_same_202_and_sends_nothing(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    app.signed_up("alice@example.com").await;
    sink.wait_for(1).await;
    app.wait_for_count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL", 1)
        .await;

    let known = app.forgot("alice@example.com").await;
    let unknown = app.forgot("nobody@example.com").await;

    for response in [&known, &unknown] {
        assert_eq!(response.status(), 202);
        assert!(response.headers().get("set-cookie").is_none());
        assert_eq!(response.headers()["content-type"], "application/json");
    }
    let known = known.bytes().await.unwrap();
    let unknown = unknown.bytes().await.unwrap();
    assert_eq!(known, unknown, "byte for byte the same answer");
    assert_eq!(
        serde_json::from_slice::<Value>(&unknown).unwrap(),
        forgot_body()
    );
    // Only the known address got a link and an email.
    sink.wait_for(2).await;
    app.wait_for_count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL", 2)
        .await;
    assert_eq!(app.deliver().await, Default::default());
    let mails = sink.messages();
    assert_eq!(mails.len(), 2);
    assert!(mails.iter().all(|m| m.to == ["alice@example.com"]));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'password_reset'")
            .await,
        1
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 2);
    // The worker took both request rows: one turned into the link, the other dropped.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM password_reset_requests")
            .await,
        0
    );
}

async fn a_reset_with_an_unacceptable_password_is_422_and_changes_nothing(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let session = app.signed_up("alice@example.com").await;
    sink.wait_for(1).await;
    let token = reset_token(&app, &sink, "alice@example.com", 2).await;
    let too_long = "Zx9".repeat(43);
    // (why, body, fields)
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "no password",
            json!({"token": token}),
            json!({"password": "is required"}),
        ),
        (
            "empty password",
            json!({"token": token, "password": ""}),
            json!({"password": "is required"}),
        ),
        (
            "no token",
            json!({"password": NEW_PASSWORD}),
            json!({"token": "is required"}),
        ),
        (
            "nothing",
            json!({}),
            json!({"token": "is required", "password": "is required"}),
        ),
        (
            "7 characters",
            json!({"token": token, "password": "Zx9!Qw7"}),
            json!({"password": "must be at least 8 characters"}),
        ),
        (
            "129 characters",
            json!({"token": token, "password": too_long}),
            json!({"password": "must be at most 128 characters"}),
        ),
        (
            "common",
            json!({"token": token, "password": "password123"}),
            json!({"password": "is too common: it appears in lists of breached passwords"}),
        ),
        (
            "contains the email",
            json!({"token": token, "password": "alice-rules-2024"}),
            json!({"password": "is too easy to guess: it contains your email address"}),
        ),
        (
            "unknown field",
            json!({"token": token, "password": NEW_PASSWORD, "email": "alice@example.com"}),
            json!({"email": "is not a known field"}),
        ),
        (
            "token of the wrong type",
            json!({"token": 42, "password": NEW_PASSWORD}),
            json!({"token": "has the wrong type"}),
        ),
    ];
    for (why, body, fields) in cases {
        let response = app.post_json("/auth/password/reset", &body).await;
        let expected = json!({"error": {"code": "validation_failed", "message": "Some fields are invalid.", "fields": fields}});
        assert_error(response, 422, expected, why).await;
    }

    // Nothing changed: the old password, the session and the link all still work.
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
    assert_eq!(app.me(&session.access_token).await.status(), 200);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'password_reset'")
            .await,
        0
    );
    assert_eq!(app.reset(&token, NEW_PASSWORD).await.status(), 204);
}

async fn tokens_of_other_kinds_and_unknown_tokens_are_token_invalid(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let session = app.signed_up("alice@example.com").await;
    let verification = sink.nth(1).await.token("/email/verify");
    let reset = reset_token(&app, &sink, "alice@example.com", 2).await;

    for (why, token) in [
        ("a refresh token", session.refresh_token.as_str()),
        ("a verification token", verification.as_str()),
        (
            "an unknown token",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        ("an access token", session.access_token.as_str()),
    ] {
        assert_error(
            app.reset(token, NEW_PASSWORD).await,
            400,
            token_invalid(),
            &format!("{why} as a reset token"),
        )
        .await;
    }
    for (why, token) in [
        ("a refresh token", session.refresh_token.as_str()),
        ("a reset token", reset.as_str()),
    ] {
        let response = app
            .post_json("/auth/email/verify", &json!({ "token": token }))
            .await;
        assert_error(
            response,
            400,
            token_invalid(),
            &format!("{why} as a verification token"),
        )
        .await;
    }
    // All of them are still good for what they are.
    assert_eq!(app.refresh(&session.refresh_token).await.status(), 200);
    let verify = app
        .post_json("/auth/email/verify", &json!({ "token": verification }))
        .await;
    assert_eq!(verify.status(), 204);
    assert_eq!(app.reset(&reset, NEW_PASSWORD).await.status(), 204);
}

async fn change_with_the_wrong_current_password_is_401_and_changes_nothing(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let session = app.signed_up("alice@example.com").await;
    let other = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;

    let response = app
        .change_password(&session.access_token, "not my password", NEW_PASSWORD)
        .await;

    assert_error(
        response,
        401,
        invalid_credentials(),
        "wrong current password",
    )
    .await;
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
    assert_eq!(app.me(&other.access_token).await.status(), 200);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        0
    );
    // The failed attempt is on record, in a transaction of its own.
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'password_change_failed' \
             AND user_id = '{}'",
            session.user_id()
        ))
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'password_changed'")
            .await,
        0
    );
    // Without a valid access token there is nothing to change.
    let anonymous = app
        .post_json(
            "/auth/password/change",
            &json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        )
        .await;
    assert_error(anonymous, 401, unauthenticated(), "no access token").await;
}

async fn change_revokes_the_other_sessions_and_keeps_this_one(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let this = app.signed_up("alice@example.com").await;
    let other = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;
    sink.wait_for(1).await;
    let pending_reset = reset_token(&app, &sink, "alice@example.com", 2).await;

    let response = app
        .change_password(&this.access_token, PASSWORD, NEW_PASSWORD)
        .await;

    assert_eq!(response.status(), 204);
    assert!(response.headers().get("set-cookie").is_none());
    assert_eq!(response.text().await.unwrap(), "");
    // This session goes on.
    assert_eq!(app.me(&this.access_token).await.status(), 200);
    assert_eq!(app.refresh(&this.refresh_token).await.status(), 200);
    // The other one is over.
    let refresh = app.refresh(&other.refresh_token).await;
    assert_eq!(refresh.status(), 401);
    assert_eq!(refresh.json::<Value>().await.unwrap(), session_revoked());
    assert_eq!(app.me(&other.access_token).await.status(), 401);
    assert_eq!(
        app.text("SELECT revoked_reason FROM sessions WHERE revoked_at IS NOT NULL")
            .await
            .unwrap(),
        "password_change"
    );
    // The password is the new one, and the pending reset link is worthless.
    assert_eq!(
        app.login("alice@example.com", NEW_PASSWORD).await.status(),
        200
    );
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 401);
    assert_error(
        app.reset(&pending_reset, "yet another passphrase").await,
        400,
        token_invalid(),
        "reset link from before the change",
    )
    .await;
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'password_changed' \
             AND user_id = '{}' AND session_id = (SELECT id FROM sessions WHERE revoked_at IS NULL \
             ORDER BY created_at LIMIT 1)",
            this.user_id()
        ))
        .await,
        1
    );
    let notice = sink.nth(3).await;
    assert_eq!(
        notice.header("Subject").unwrap(),
        "Your password was changed"
    );
}

async fn change_validation_errors_are_422_and_change_nothing(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let session = app.signed_up("alice@example.com").await;
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "nothing",
            json!({}),
            json!({"current_password": "is required", "new_password": "is required"}),
        ),
        (
            "no current password",
            json!({"new_password": NEW_PASSWORD}),
            json!({"current_password": "is required"}),
        ),
        (
            "short new password",
            json!({"current_password": PASSWORD, "new_password": "Zx9!Qw7"}),
            json!({"new_password": "must be at least 8 characters"}),
        ),
        (
            "common new password",
            json!({"current_password": PASSWORD, "new_password": "iloveyou1"}),
            json!({"new_password": "is too common: it appears in lists of breached passwords"}),
        ),
        (
            "new password contains the email",
            json!({"current_password": PASSWORD, "new_password": "alice-rules-2024"}),
            json!({"new_password": "is too easy to guess: it contains your email address"}),
        ),
        (
            "unknown field",
            json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "email": "x@example.com"}),
            json!({"email": "is not a known field"}),
        ),
    ];
    for (why, body, fields) in cases {
        let response = app
            .client
            .post(app.url("/auth/password/change"))
            .bearer_auth(&session.access_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let expected = json!({"error": {"code": "validation_failed", "message": "Some fields are invalid.", "fields": fields}});
        assert_error(response, 422, expected, why).await;
    }
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind LIKE 'password_change%'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        0
    );
}

/// One email per address and purpose per minute: the signup's verification email does not hold
/// back the reset link asked for right after it, and a second reset request at once sends nothing.
async fn reset_and_verification_emails_are_throttled_per_address_and_purpose(db: Db) {
    let sink = SmtpSink::start().await;
    // The default throttle: one email a minute per address and purpose.
    let app = TestApp::spawn_with_sink(db, &sink, |o| o.mail_throttle = None).await;
    let session = app.signed_up("alice@example.com").await;
    sink.wait_for(1).await;
    let count_resets = "SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'password_reset'";

    // Right after the signup's verification email, a reset link goes out all the same.
    let first = reset_token(&app, &sink, "alice@example.com", 2).await;
    // At once again, on this instance or another: the same 202, and nothing is written.
    let response = app.forgot("alice@example.com").await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap(), forgot_body());
    let other = app.another_instance(|_| {}).await;
    assert_eq!(other.forgot("ALICE@example.com").await.status(), 202);
    latchkey::mail::worker::deliver_due(&app.state)
        .await
        .unwrap();
    assert_eq!(app.count(count_resets).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 2);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM password_reset_requests")
            .await,
        0
    );
    // The owner asking for a verification email is told when to ask again: the signup's took
    // this minute's slot of that purpose.
    let resend = app
        .client
        .post(app.url("/auth/email/verify/resend"))
        .bearer_auth(&session.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resend.status(), 429);
    let retry_after: u64 = resend.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        resend.json::<Value>().await.unwrap(),
        json!({"error": {"code": "rate_limited", "message": "Too many requests. Please try again later."}})
    );
    // Other addresses are not affected.
    app.signed_up("bob@example.com").await;
    assert_eq!(sink.wait_for(3).await[2].to, ["bob@example.com"]);

    app.clock.advance(Duration::from_secs(61));
    let second = reset_token(&app, &sink, "alice@example.com", 4).await;
    assert_ne!(first, second);
    assert_eq!(app.reset(&second, NEW_PASSWORD).await.status(), 204);
    assert_error(
        app.reset(&first, NEW_PASSWORD).await,
        400,
        token_invalid(),
        "spent with the other link",
    )
    .await;
}
