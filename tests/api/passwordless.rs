//! Passwordless sign-in: POST /auth/passwordless/start and /auth/passwordless/verify, with the
//! emails going through a real SMTP server on loopback.

use std::time::Duration;

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    start_answers_the_same_for_every_address_and_only_an_enabled_account_gets_mail,
    a_code_signs_in_once_and_the_session_says_otp,
    the_link_signs_in_once,
    five_codes_tried_kill_the_code_and_the_link_even_in_parallel,
    codes_and_links_expire_after_ten_minutes,
    tokens_of_other_purposes_are_worthless_here_and_these_elsewhere,
    a_newer_request_replaces_the_older_code,
    no_account_is_created_unless_the_setting_is_on,
    with_the_setting_on_a_first_sign_in_is_a_signup,
    a_code_for_a_new_address_dies_when_an_account_takes_the_address,
    an_account_with_a_second_factor_gets_the_challenge_not_a_session,
    a_disable_or_a_reset_after_the_email_leaves_the_code_worthless,
    bad_input_is_422_and_changes_nothing,
    start_is_throttled_per_address_and_purpose,
    two_verifications_racing_with_one_code_open_one_session,
);

pub fn start_body() -> Value {
    json!({"message": "If this address can sign in, an email with a sign-in code and link is on its way."})
}

pub fn token_invalid() -> Value {
    json!({"error": {"code": "token_invalid", "message": "This link is invalid or has expired."}})
}

/// The 6-digit code in a passwordless email.
pub fn code_of(mail: &Mail) -> String {
    let text = mail.body("text/plain");
    text.split_whitespace()
        .find(|w| w.len() == 6 && w.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no code in:\n{text}"))
        .to_owned()
}

impl TestApp {
    pub async fn passwordless_start(&self, email: &str) -> reqwest::Response {
        self.post_json("/auth/passwordless/start", &json!({ "email": email }))
            .await
    }

    pub async fn passwordless_code(&self, email: &str, code: &str) -> reqwest::Response {
        self.post_json(
            "/auth/passwordless/verify",
            &json!({ "email": email, "code": code }),
        )
        .await
    }

    pub async fn passwordless_link(&self, token: &str) -> reqwest::Response {
        self.post_json("/auth/passwordless/verify", &json!({ "token": token }))
            .await
    }
}

/// Asks for a code for `email`: the `nth` email the sink receives, its code and link token.
pub async fn emailed(app: &TestApp, sink: &SmtpSink, email: &str, nth: usize) -> (String, String) {
    let response = app.passwordless_start(email).await;
    assert_eq!(response.status(), 202);
    let mail = sink.nth(nth).await;
    assert_eq!(mail.to, [email]);
    (code_of(&mail), mail.token("/passwordless"))
}

async fn assert_refused(response: reqwest::Response, why: &str) {
    assert_eq!(response.status(), 400, "{why}");
    assert!(response.headers().get("set-cookie").is_none(), "{why}");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        token_invalid(),
        "{why}"
    );
}

const SESSIONS: &str = "SELECT COUNT(*) FROM sessions";
const UNUSED: &str = "SELECT COUNT(*) FROM passwordless_codes WHERE used_at IS NULL";

/// A code sent to a passwordless-capable app: a different code than `code` (for wrong guesses).
fn another(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

async fn start_answers_the_same_for_every_address_and_only_an_enabled_account_gets_mail(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    app.signed_up("alice@example.com").await;
    let bob = app.signed_up("bob@example.com").await;
    sink.wait_for(2).await;
    let bob_id = bob.user_id().parse().unwrap();
    let now = app.clock.now();
    app.state
        .store
        .set_disabled(bob_id, true, now)
        .await
        .unwrap();

    let known = app.passwordless_start(" ALICE@example.com ").await;
    let unknown = app.passwordless_start("nobody@example.com").await;
    let disabled = app.passwordless_start("bob@example.com").await;
    let mut bodies = Vec::new();
    for response in [known, unknown, disabled] {
        assert_eq!(response.status(), 202);
        assert!(response.headers().get("set-cookie").is_none());
        assert_eq!(response.headers()["content-type"], "application/json");
        bodies.push(response.bytes().await.unwrap());
    }
    assert_eq!(bodies[0], bodies[1], "byte for byte the same answer");
    assert_eq!(bodies[0], bodies[2], "byte for byte the same answer");
    assert_eq!(
        serde_json::from_slice::<Value>(&bodies[0]).unwrap(),
        start_body()
    );

    let mail = sink.nth(3).await;
    app.wait_for_count("SELECT COUNT(*) FROM password_reset_requests", 0)
        .await;
    assert_eq!(app.deliver().await, Default::default());
    assert_eq!(
        sink.messages().len(),
        3,
        "only the enabled account got an email"
    );
    // To the address on file, not the one typed.
    assert_eq!(mail.to, ["alice@example.com"]);
    assert_eq!(mail.header("Subject").unwrap(), "Your sign-in code");
    let token = mail.token("/passwordless");
    assert_eq!(
        mail.link("/passwordless"),
        format!("http://localhost:8080/passwordless?token={token}")
    );
    assert_eq!(token.len(), 43, "256 bits, base64url");
    let code = code_of(&mail);
    assert!(mail.body("text/html").contains(&code));
    // One row, for Alice, holding neither the code nor the token in the clear.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM passwordless_codes").await,
        1
    );
    let stored = "SELECT token_hash || ' ' || code_hash FROM passwordless_codes";
    let stored = app.text(stored).await.unwrap();
    assert!(!stored.contains(&token) && !stored.contains(&code));
    let owner = app
        .text("SELECT user_id FROM passwordless_codes")
        .await
        .unwrap();
    let alice = "SELECT id FROM users WHERE email = 'alice@example.com'";
    assert_eq!(Some(owner), app.text(alice).await);
    let requested = "SELECT COUNT(*) FROM audit_events WHERE kind = 'passwordless_requested'";
    assert_eq!(app.count(requested).await, 1);
}

async fn a_code_signs_in_once_and_the_session_says_otp(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    app.signed_up("alice@example.com").await;
    sink.wait_for(1).await;
    let (code, token) = emailed(&app, &sink, "alice@example.com", 2).await;
    let spaced = format!("{} {}", &code[..3], &code[3..]);

    let response = app.passwordless_code(" Alice@Example.com ", &spaced).await;
    assert_eq!(response.status(), 200);
    let session = Session::from_response(response).await;
    assert_session_cookies_set(&session, 604_800);
    assert!(!session.cookies.contains_key("__Host-lk_device"));
    assert_eq!(session.body["user"]["email"], "alice@example.com");
    assert_eq!(
        session.body["user"]["email_verified"], true,
        "the code proves the address"
    );
    assert_eq!(session.body["token_type"], "Bearer");
    let claims = TestApp::claims(&session.access_token);
    assert_eq!(claims["amr"], json!(["otp"]));
    assert_eq!(claims["aal"], 1);
    assert_eq!(app.me(&session.access_token).await.status(), 200);
    let refreshed = app.refresh(&session.refresh_token).await;
    assert_eq!(refreshed.status(), 200);
    let refreshed = Session::from_response(refreshed).await;
    assert_eq!(
        TestApp::claims(&refreshed.access_token)["amr"],
        json!(["otp"])
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE amr = 'otp'")
            .await,
        1
    );
    let logged_in = "SELECT COUNT(*) FROM profiles WHERE last_login_at IS NOT NULL";
    assert_eq!(app.count(logged_in).await, 1);
    let login = "SELECT COUNT(*) FROM audit_events WHERE kind = 'login'";
    assert_eq!(app.count(login).await, 1);
    assert_eq!(app.count(UNUSED).await, 0);

    // Once: neither the code nor the link works again.
    assert_refused(
        app.passwordless_code("alice@example.com", &code).await,
        "again",
    )
    .await;
    assert_refused(
        app.passwordless_link(&token).await,
        "the link of a used code",
    )
    .await;
    assert_eq!(app.count(SESSIONS).await, 2, "the signup's and the code's");
}

async fn the_link_signs_in_once(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    app.signed_up("alice@example.com").await;
    sink.wait_for(1).await;
    let (code, token) = emailed(&app, &sink, "alice@example.com", 2).await;

    let response = app.passwordless_link(&token).await;
    assert_eq!(response.status(), 200);
    let session = Session::from_response(response).await;
    assert_session_cookies_set(&session, 604_800);
    assert_eq!(
        TestApp::claims(&session.access_token)["amr"],
        json!(["otp"])
    );
    assert_refused(app.passwordless_link(&token).await, "again").await;
    assert_refused(
        app.passwordless_code("alice@example.com", &code).await,
        "the code of a used link",
    )
    .await;
    // A token longer than any issued, and an unknown one.
    assert_refused(app.passwordless_link(&"a".repeat(129)).await, "too long").await;
    assert_refused(app.passwordless_link(&"a".repeat(43)).await, "unknown").await;
    assert_eq!(app.count(SESSIONS).await, 2);
}

async fn five_codes_tried_kill_the_code_and_the_link_even_in_parallel(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    app.signed_up("alice@example.com").await;
    app.signed_up("bob@example.com").await;
    sink.wait_for(2).await;
    let (code, token) = emailed(&app, &sink, "alice@example.com", 3).await;

    let wrong = another(&code);
    for n in 1..=4 {
        let why = format!("wrong code {n}");
        assert_refused(
            app.passwordless_code("alice@example.com", &wrong).await,
            &why,
        )
        .await;
    }
    let attempts = "SELECT attempts FROM passwordless_codes";
    assert_eq!(app.count(attempts).await, 4);
    // The fifth try may be the right one …
    let last = app.passwordless_code("alice@example.com", &code).await;
    assert_eq!(last.status(), 200, "the fifth try, right");

    // … but after five wrong ones, even the right code and the link are dead. Ten wrong guesses
    // sent at once count five at most: each is counted before it is compared.
    let (code, token_b) = emailed(&app, &sink, "bob@example.com", 4).await;
    let wrong = another(&code);
    let guesses = (0..10).map(|_| app.passwordless_code("bob@example.com", &wrong));
    for response in join_all(guesses).await {
        assert_refused(response, "a wrong guess").await;
    }
    let bob = "SELECT attempts FROM passwordless_codes WHERE email_normalized = 'bob@example.com'";
    assert_eq!(app.count(bob).await, 5);
    assert_refused(
        app.passwordless_code("bob@example.com", &code).await,
        "dead",
    )
    .await;
    assert_refused(
        app.passwordless_link(&token_b).await,
        "the link of a dead code",
    )
    .await;
    let _ = token;
    // Every refusal is recorded (14 wrong codes, the right one too late), and no account of an
    // address without a code is told apart: the same 400.
    assert_refused(
        app.passwordless_code("nobody@example.com", &code).await,
        "no code",
    )
    .await;
    let failed = "SELECT COUNT(*) FROM audit_events WHERE kind = 'passwordless_failed'";
    assert_eq!(app.count(failed).await, 4 + 10 + 1 + 1);
    assert_eq!(
        app.count(SESSIONS).await,
        3,
        "two signups and Alice's fifth try"
    );
}

async fn codes_and_links_expire_after_ten_minutes(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    for email in ["alice@example.com", "bob@example.com", "carol@example.com"] {
        app.signed_up(email).await;
    }
    sink.wait_for(3).await;
    let (alice, _) = emailed(&app, &sink, "alice@example.com", 4).await;
    let (bob, _) = emailed(&app, &sink, "bob@example.com", 5).await;
    let (_, carol) = emailed(&app, &sink, "carol@example.com", 6).await;

    app.clock.advance(Duration::from_secs(9 * 60 + 59));
    let in_time = app.passwordless_code("alice@example.com", &alice).await;
    assert_eq!(in_time.status(), 200, "just in time");
    app.clock.advance(Duration::from_secs(2));
    assert_refused(
        app.passwordless_code("bob@example.com", &bob).await,
        "code expired",
    )
    .await;
    assert_refused(app.passwordless_link(&carol).await, "link expired").await;
    assert_eq!(app.count(SESSIONS).await, 4);
}

async fn tokens_of_other_purposes_are_worthless_here_and_these_elsewhere(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let session = app.signed_up("alice@example.com").await;
    let verification = sink.nth(1).await.token("/email/verify");
    let forgot = app
        .post_json(
            "/auth/password/forgot",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(forgot.status(), 202);
    let reset = sink.nth(2).await.token("/password/reset");
    let (_, token) = emailed(&app, &sink, "alice@example.com", 3).await;

    // A reset, verification or refresh token is no passwordless link …
    for other in [&reset, &verification, &session.refresh_token] {
        assert_refused(app.passwordless_link(other).await, "another purpose").await;
    }
    // … and a passwordless link is no reset, verification, email change or refresh token.
    let reset_with = app
        .post_json(
            "/auth/password/reset",
            &json!({"token": token, "password": "a brand new passphrase"}),
        )
        .await;
    assert_refused(reset_with, "as a reset token").await;
    let verify_with = app
        .post_json("/auth/email/verify", &json!({"token": token}))
        .await;
    assert_refused(verify_with, "as a verification token").await;
    let change_with = app
        .post_json("/auth/email/change/confirm", &json!({"token": token}))
        .await;
    assert_refused(change_with, "as an email change token").await;
    assert_eq!(
        app.refresh(&token).await.status(),
        401,
        "as a refresh token"
    );

    // Nothing was spent or changed: each still works for its own purpose.
    assert_eq!(app.count(UNUSED).await, 1);
    assert_eq!(app.passwordless_link(&token).await.status(), 200);
    let reset_own = app
        .post_json(
            "/auth/password/reset",
            &json!({"token": reset, "password": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(reset_own.status(), 204);
}

async fn a_newer_request_replaces_the_older_code(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    app.signed_up("alice@example.com").await;
    sink.wait_for(1).await;
    let (first_code, first_link) = emailed(&app, &sink, "alice@example.com", 2).await;
    let (second_code, _) = emailed(&app, &sink, "alice@example.com", 3).await;

    assert_eq!(
        app.count("SELECT COUNT(*) FROM passwordless_codes").await,
        1
    );
    if first_code != second_code {
        let old = app
            .passwordless_code("alice@example.com", &first_code)
            .await;
        assert_refused(old, "the older code").await;
    }
    assert_refused(app.passwordless_link(&first_link).await, "the older link").await;
    let new = app
        .passwordless_code("alice@example.com", &second_code)
        .await;
    assert_eq!(new.status(), 200, "the newer code");
}

async fn no_account_is_created_unless_the_setting_is_on(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let response = app.passwordless_start("new@example.com").await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap(), start_body());
    app.wait_for_count("SELECT COUNT(*) FROM password_reset_requests", 0)
        .await;
    assert_eq!(app.deliver().await, Default::default());
    assert!(sink.messages().is_empty(), "no email to an unknown address");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM passwordless_codes").await,
        0
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);
    assert_refused(
        app.passwordless_code("new@example.com", "123456").await,
        "no code",
    )
    .await;
}

async fn with_the_setting_on_a_first_sign_in_is_a_signup(db: Db) {
    let sink = SmtpSink::start().await;
    let receiver = Receiver::start().await;
    let url = receiver.url();
    let app = TestApp::spawn_with_sink(db, &sink, |o| {
        o.passwordless_signup = Some(true);
        with_receiver(o, &url);
    })
    .await;
    let (code, _) = emailed(&app, &sink, "New@Example.com", 1).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users").await,
        0,
        "not before the code"
    );

    let response = app.passwordless_code("new@example.com", &code).await;
    assert_eq!(response.status(), 200);
    let session = Session::from_response(response).await;
    assert_session_cookies_set(&session, 604_800);
    // The address as typed when the code was asked for, verified by the code.
    assert_eq!(session.body["user"]["email"], "New@Example.com");
    assert_eq!(session.body["user"]["email_verified"], true);
    assert_eq!(session.body["profile"]["metadata"], json!({}));
    assert_eq!(
        TestApp::claims(&session.access_token)["amr"],
        json!(["otp"])
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(app.count(ORPHANS).await, 0);
    let no_password = "SELECT COUNT(*) FROM users WHERE password_hash = '!no-password'";
    assert_eq!(
        app.count(no_password).await,
        1,
        "no password: a reset sets one"
    );
    let signup = "SELECT COUNT(*) FROM audit_events WHERE kind = 'signup'";
    assert_eq!(app.count(signup).await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE amr = 'otp'")
            .await,
        1
    );
    let created = receiver.wait_delivered(1).await;
    assert_eq!(created[0].event_type(), "user.created");
    assert_eq!(created[0].json()["data"]["user"]["id"], session.user_id());
    // No password matches the account's; the next sign-in logs in.
    assert_eq!(app.login("new@example.com", PASSWORD).await.status(), 401);
    assert_eq!(
        app.passwordless_start("new@example.com").await.status(),
        202
    );
    let mail = sink.nth(2).await;
    assert_eq!(mail.to, ["New@Example.com"], "the address on file");
    let again = app
        .passwordless_code("new@example.com", &code_of(&mail))
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
}

async fn a_code_for_a_new_address_dies_when_an_account_takes_the_address(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |o| o.passwordless_signup = Some(true)).await;
    let (code, _) = emailed(&app, &sink, "new@example.com", 1).await;
    app.signed_up("new@example.com").await;

    let response = app.passwordless_code("new@example.com", &code).await;
    assert_refused(response, "an account has the address now").await;
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(app.count(SESSIONS).await, 1, "the signup's only");
    assert_eq!(app.count(UNUSED).await, 1, "nothing spent");
}

async fn an_account_with_a_second_factor_gets_the_challenge_not_a_session(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    crate::mfa::freeze(&app);
    let enrolled = crate::mfa::enroll(&app, "alice@example.com").await;
    sink.wait_for(1).await;
    let (code, _) = emailed(&app, &sink, "alice@example.com", 2).await;

    let response = app.passwordless_code("alice@example.com", &code).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("set-cookie").is_none(),
        "no cookie before the factor"
    );
    let challenge: Value = response.json().await.unwrap();
    assert_eq!(challenge["mfa_required"], true);
    assert_eq!(challenge["methods"], json!(["totp", "recovery_code"]));
    assert_eq!(challenge["expires_in"], 300);
    assert_eq!(app.count(SESSIONS).await, 1, "the signup's only");
    assert_eq!(app.count(UNUSED).await, 0, "the code is spent");
    let challenged = "SELECT COUNT(*) FROM audit_events WHERE kind = 'mfa_challenged'";
    assert_eq!(app.count(challenged).await, 1);

    app.clock.advance(Duration::from_secs(30));
    let step = crate::mfa::step_now(&app);
    let totp = crate::mfa::code_at_step(&enrolled.secret, step);
    let body = json!({"mfa_token": challenge["mfa_token"], "code": totp});
    let verified = app.post_json("/auth/mfa/verify", &body).await;
    assert_eq!(verified.status(), 200);
    let session = Session::from_response(verified).await;
    let claims = TestApp::claims(&session.access_token);
    assert_eq!(claims["amr"], json!(["otp", "mfa"]), "no password was used");
    assert_eq!(claims["aal"], 2);
    assert_eq!(app.count(SESSIONS).await, 2);
    let stored = "SELECT COUNT(*) FROM sessions WHERE amr = 'otp mfa'";
    assert_eq!(app.count(stored).await, 1);
    // The session keeps it through a refresh, and lists it.
    let refreshed = Session::from_response(app.refresh(&session.refresh_token).await).await;
    let claims = TestApp::claims(&refreshed.access_token);
    assert_eq!(claims["amr"], json!(["otp", "mfa"]));
    assert_eq!(claims["aal"], 2);
    let current = app.current_session(&refreshed.access_token).await;
    assert_eq!(current["amr"], json!(["otp", "mfa"]));
}

async fn a_disable_or_a_reset_after_the_email_leaves_the_code_worthless(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let alice = app.signed_up("alice@example.com").await;
    app.signed_up("bob@example.com").await;
    sink.wait_for(2).await;
    let (alice_code, alice_link) = emailed(&app, &sink, "alice@example.com", 3).await;
    let (bob_code, _) = emailed(&app, &sink, "bob@example.com", 4).await;

    let alice_id = alice.user_id().parse().unwrap();
    let now = app.clock.now();
    app.state
        .store
        .set_disabled(alice_id, true, now)
        .await
        .unwrap();
    let code = app
        .passwordless_code("alice@example.com", &alice_code)
        .await;
    assert_refused(code, "disabled: the code").await;
    assert_refused(
        app.passwordless_link(&alice_link).await,
        "disabled: the link",
    )
    .await;

    let forgot = app
        .post_json(
            "/auth/password/forgot",
            &json!({"email": "bob@example.com"}),
        )
        .await;
    assert_eq!(forgot.status(), 202);
    let reset = sink.nth(5).await.token("/password/reset");
    let body = json!({"token": reset, "password": "a brand new passphrase"});
    assert_eq!(
        app.post_json("/auth/password/reset", &body).await.status(),
        204
    );
    let code = app.passwordless_code("bob@example.com", &bob_code).await;
    assert_refused(code, "after a reset").await;
    let live = "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL";
    assert_eq!(app.count(live).await, 0, "every session ended, none opened");
}

async fn bad_input_is_422_and_changes_nothing(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    app.signed_up("alice@example.com").await;
    sink.wait_for(1).await;
    let (code, token) = emailed(&app, &sink, "alice@example.com", 2).await;

    let cases = [
        (
            "/auth/passwordless/start",
            json!({}),
            json!({"email": "is required"}),
        ),
        (
            "/auth/passwordless/start",
            json!({"email": "not-an-address"}),
            json!({"email": "is not a valid email address"}),
        ),
        (
            "/auth/passwordless/verify",
            json!({}),
            json!({"email": "is required", "code": "is required (or token)"}),
        ),
        (
            "/auth/passwordless/verify",
            json!({"email": "alice@example.com", "code": "12a456"}),
            json!({"code": "must be the 6 digits of the email"}),
        ),
        (
            "/auth/passwordless/verify",
            json!({"email": "alice@example.com", "code": "1234567"}),
            json!({"code": "must be the 6 digits of the email"}),
        ),
        (
            "/auth/passwordless/verify",
            json!({"email": "alice@example.com", "code": code, "token": token}),
            json!({"token": "send token alone, or email and code"}),
        ),
    ];
    for (path, body, fields) in cases {
        let response = app.post_json(path, &body).await;
        assert_eq!(response.status(), 422, "{body}");
        assert!(response.headers().get("set-cookie").is_none());
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "validation_failed", "{body}");
        assert_eq!(error["error"]["fields"], fields, "{body}");
    }
    let unknown = json!({"email": "alice@example.com", "code": code, "remember": true});
    let response = app.post_json("/auth/passwordless/verify", &unknown).await;
    assert_eq!(response.status(), 422, "an unknown field");
    // Nothing counted, nothing spent: the code still works.
    assert_eq!(
        app.count("SELECT attempts FROM passwordless_codes").await,
        0
    );
    assert_eq!(app.count(UNUSED).await, 1);
    let response = app.passwordless_code("alice@example.com", &code).await;
    assert_eq!(response.status(), 200);
}

async fn start_is_throttled_per_address_and_purpose(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |o| o.mail_throttle = Some(60)).await;
    app.signed_up("alice@example.com").await;
    sink.wait_for(1).await;
    let (code, _) = emailed(&app, &sink, "alice@example.com", 2).await;
    let again = app.passwordless_start("alice@example.com").await;
    assert_eq!(again.status(), 202, "the same answer");
    assert_eq!(again.json::<Value>().await.unwrap(), start_body());
    // A reset asked for right after is another purpose: not held back.
    let forgot = app
        .post_json(
            "/auth/password/forgot",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(forgot.status(), 202);
    let reset = sink.nth(3).await;
    assert_eq!(reset.header("Subject").unwrap(), "Reset your password");
    app.wait_for_count("SELECT COUNT(*) FROM password_reset_requests", 0)
        .await;
    assert_eq!(app.deliver().await, Default::default());
    assert_eq!(
        sink.messages().len(),
        3,
        "no second sign-in email within the minute"
    );
    let response = app.passwordless_code("alice@example.com", &code).await;
    assert_eq!(response.status(), 200, "the first code is untouched");

    app.clock.advance(Duration::from_secs(61));
    emailed(&app, &sink, "alice@example.com", 4).await;
}

async fn two_verifications_racing_with_one_code_open_one_session(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    app.signed_up("alice@example.com").await;
    sink.wait_for(1).await;
    let (code, token) = emailed(&app, &sink, "alice@example.com", 2).await;

    let by_code = (0..3).map(|_| app.passwordless_code("alice@example.com", &code));
    let mut statuses: Vec<u16> = Vec::new();
    let (codes, link) = tokio::join!(join_all(by_code), app.passwordless_link(&token));
    for response in codes.into_iter().chain([link]) {
        statuses.push(response.status().as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400, 400, 400], "exactly one sign-in");
    assert_eq!(app.count(SESSIONS).await, 2, "the signup's and one more");
}
