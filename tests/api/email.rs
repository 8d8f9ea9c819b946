//! Email verification, and the outbox that delivers every email: a real SMTP server on loopback,
//! outages, refusals, several workers, the log without SMTP, templates, and rollbacks.

use std::time::Duration;

use latchkey::mail::worker::{Pass, backoff};
use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::*;
use crate::password::token_invalid;

db_tests!(
    signup_sends_a_verification_link_that_verifies_the_address_once,
    resend_sends_a_new_link_and_nothing_once_verified,
    a_verification_link_expires_after_a_day,
    verify_without_a_token_is_422,
    smtp_down_then_up_delivers_the_message_exactly_once,
    a_message_that_keeps_failing_goes_dead_and_later_ones_still_go_out,
    a_permanent_refusal_is_given_up_at_once,
    workers_of_several_instances_deliver_each_message_once,
    operator_templates_replace_the_built_in_ones_and_values_are_escaped_in_html,
    pruning_removes_only_what_nothing_can_use_any_more,
    the_operator_lists_dead_emails_and_sends_one_again_while_its_link_lives,
);

fn resend_request(app: &TestApp, access_token: &str) -> reqwest::RequestBuilder {
    app.client
        .post(app.url("/auth/email/verify/resend"))
        .bearer_auth(access_token)
}

async fn verify(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_json("/auth/email/verify", &json!({ "token": token }))
        .await
}

async fn email_verified(app: &TestApp, access_token: &str) -> Value {
    let me: Value = app.me(access_token).await.json().await.unwrap();
    me["user"]["email_verified"].clone()
}

async fn signup_sends_a_verification_link_that_verifies_the_address_once(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let session = app.signed_up("Alice@Example.com").await;
    assert_eq!(session.body["user"]["email_verified"], false);

    let mail = sink.nth(1).await;
    assert_eq!(mail.to, ["Alice@Example.com"]);
    assert_eq!(mail.from, "latchkey@localhost");
    assert_eq!(
        mail.header("Subject").unwrap(),
        "Confirm your email address"
    );
    let token = mail.token("/email/verify");
    assert_eq!(
        mail.link("/email/verify"),
        format!("http://localhost:8080/email/verify?token={token}")
    );
    assert!(mail.body("text/plain").contains("within 24 hours"));
    assert!(mail.body("text/html").contains(&format!(
        "<a href=\"http://localhost:8080/email/verify?token={token}\">"
    )));
    // The outbox row was written with the account and is now sent, its bodies erased.
    app.wait_for_count(
        "SELECT COUNT(*) FROM outbox WHERE kind = 'email_verification' AND sent_at IS NOT NULL \
         AND body_text = '' AND recipient = 'Alice@Example.com'",
        1,
    )
    .await;
    let message_id = mail.header("Message-ID").unwrap();
    let outbox_id = app.text("SELECT id FROM outbox").await.unwrap();
    assert_eq!(message_id, format!("<{outbox_id}@localhost>"));
    assert_eq!(email_verified(&app, &session.access_token).await, false);

    let response = verify(&app, &token).await;

    assert_eq!(response.status(), 204);
    assert_eq!(response.text().await.unwrap(), "");
    assert_eq!(email_verified(&app, &session.access_token).await, true);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'email_verified' AND user_id = '{}'",
            session.user_id()
        ))
        .await,
        1
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'email_verification' \
             AND used_at IS NOT NULL AND email = 'alice@example.com'"
        )
        .await,
        1
    );
    // Single use.
    let again = verify(&app, &token).await;
    assert_eq!(again.status(), 400);
    assert_eq!(again.json::<Value>().await.unwrap(), token_invalid());
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'email_verified'")
            .await,
        1
    );
}

async fn resend_sends_a_new_link_and_nothing_once_verified(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let session = app.signed_up("alice@example.com").await;
    let first = sink.nth(1).await.token("/email/verify");

    let anonymous = app
        .client
        .post(app.url("/auth/email/verify/resend"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.json::<Value>().await.unwrap(), unauthenticated());

    let response = resend_request(&app, &session.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "A new verification link is on its way to your email address."})
    );
    let second = sink.nth(2).await.token("/email/verify");
    assert_ne!(first, second);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'email_verification_requested'")
            .await,
        1
    );

    // Either link verifies; once one has, the others are retired.
    assert_eq!(verify(&app, &second).await.status(), 204);
    assert_eq!(verify(&app, &first).await.status(), 400);
    assert_eq!(email_verified(&app, &session.access_token).await, true);

    let response = resend_request(&app, &session.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "Your email address is already verified."})
    );
    app.wait_for_count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL", 0)
        .await;
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 2);
    assert_eq!(sink.messages().len(), 2);
}

async fn a_verification_link_expires_after_a_day(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let session = app.signed_up("alice@example.com").await;
    let token = sink.nth(1).await.token("/email/verify");

    app.clock.advance(Duration::from_secs(24 * 3600 + 1));

    let response = verify(&app, &token).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap(), token_invalid());
    // A fresh access token (the first one expired with the day) still shows it unverified.
    let refreshed = Session::from_response(app.refresh(&session.refresh_token).await).await;
    assert_eq!(email_verified(&app, &refreshed.access_token).await, false);
}

async fn verify_without_a_token_is_422(db: Db) {
    let app = TestApp::spawn(db).await;
    for (why, body, fields) in [
        ("no token", json!({}), json!({"token": "is required"})),
        (
            "empty token",
            json!({"token": ""}),
            json!({"token": "is required"}),
        ),
        (
            "token of the wrong type",
            json!({"token": ["a"]}),
            json!({"token": "has the wrong type"}),
        ),
        (
            "unknown field",
            json!({"token": "x", "user_id": "y"}),
            json!({"user_id": "is not a known field"}),
        ),
    ] {
        let response = app.post_json("/auth/email/verify", &body).await;
        assert_eq!(response.status(), 422, "{why}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"error": {"code": "validation_failed", "message": "Some fields are invalid.", "fields": fields}}),
            "{why}"
        );
    }
}

async fn smtp_down_then_up_delivers_the_message_exactly_once(db: Db) {
    let sink = SmtpSink::start().await;
    sink.stop();
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;

    let session = app.signed_up("alice@example.com").await;

    // The worker tried, failed, and put the message off: the signup itself went through.
    app.wait_for_count(
        "SELECT COUNT(*) FROM outbox WHERE attempts = 1 AND claim_id IS NULL \
         AND last_error IS NOT NULL AND sent_at IS NULL AND dead_at IS NULL",
        1,
    )
    .await;
    let (created, next) = (
        app.count("SELECT created_at FROM outbox").await,
        app.count("SELECT next_attempt_at FROM outbox").await,
    );
    assert!(
        next >= created + 30_000,
        "first retry after 30 s: {created} → {next}"
    );
    assert_eq!(app.me(&session.access_token).await.status(), 200);
    assert_eq!(app.deliver().await, Pass::default(), "not due yet");

    sink.restart().await;
    app.clock.advance(backoff(1));
    app.state.mailer.wake();

    let mails = sink.wait_for(1).await;
    assert_eq!(mails[0].to, ["alice@example.com"]);
    app.wait_for_count(
        "SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL AND attempts = 2",
        1,
    )
    .await;
    // And never again, however long the worker keeps going (within the link's day).
    app.clock.advance(Duration::from_secs(12 * 3600));
    assert_eq!(app.deliver().await, Pass::default());
    assert_eq!(sink.messages().len(), 1);
    // The link in it works.
    assert_eq!(
        verify(&app, &mails[0].token("/email/verify"))
            .await
            .status(),
        204
    );
}

async fn a_message_that_keeps_failing_goes_dead_and_later_ones_still_go_out(db: Db) {
    let sink = SmtpSink::start().await;
    sink.refuse("doomed@example.com", "450 4.2.1 Mailbox busy, try later");
    let app = TestApp::spawn_with_sink(db, &sink, |o| o.mail_max_attempts = Some(3)).await;
    let doomed = "SELECT COUNT(*) FROM outbox WHERE recipient = 'doomed@example.com' AND claim_id IS NULL AND attempts = ";

    app.signed_up("doomed@example.com").await;
    app.wait_for_count(&format!("{doomed}1 AND next_attempt_at > created_at"), 1)
        .await;
    // A later message is not held up by it.
    app.signed_up("alice@example.com").await;
    assert_eq!(sink.nth(1).await.to, ["alice@example.com"]);

    for attempts in 2..=3 {
        app.clock.advance(Duration::from_secs(3600));
        app.state.mailer.wake();
        app.wait_for_count(&format!("{doomed}{attempts}"), 1).await;
    }
    app.wait_for_count(
        "SELECT COUNT(*) FROM outbox WHERE recipient = 'doomed@example.com' AND dead_at IS NOT NULL \
         AND sent_at IS NULL AND attempts = 3 AND body_text <> '' AND body_html <> ''",
        1,
    )
    .await;
    let error = app
        .text("SELECT last_error FROM outbox WHERE recipient = 'doomed@example.com'")
        .await
        .unwrap();
    assert!(error.contains("450"), "{error}");
    // Dead is dead: no further attempt, ever.
    app.clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(app.deliver().await, Pass::default());
    assert_eq!(
        app.count("SELECT attempts FROM outbox WHERE recipient = 'doomed@example.com'")
            .await,
        3
    );
    // And the mail keeps flowing.
    app.signed_up("bob@example.com").await;
    let mails = sink.wait_for(2).await;
    assert_eq!(mails[1].to, ["bob@example.com"]);
    assert!(mails.iter().all(|m| m.to != ["doomed@example.com"]));
}

async fn a_permanent_refusal_is_given_up_at_once(db: Db) {
    let sink = SmtpSink::start().await;
    sink.refuse("gone@example.com", "550 5.1.1 No such user");
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;

    app.signed_up("gone@example.com").await;

    app.wait_for_count(
        "SELECT COUNT(*) FROM outbox WHERE dead_at IS NOT NULL AND attempts = 1",
        1,
    )
    .await;
    assert!(
        app.text("SELECT last_error FROM outbox")
            .await
            .unwrap()
            .contains("550")
    );
    app.signed_up("alice@example.com").await;
    assert_eq!(sink.nth(1).await.to, ["alice@example.com"]);
    assert_eq!(sink.messages().len(), 1);
}

async fn workers_of_several_instances_deliver_each_message_once(db: Db) {
    let sink = SmtpSink::start().await;
    let first = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let url = sink.url();
    let second = first
        .another_instance(|o| {
            o.smtp_url = Some(url);
            o.mail_throttle = Some(0);
        })
        .await;
    // Thirty messages appear at once, as if written by flows of other instances.
    for i in 0..30 {
        sqlx::query(
            "INSERT INTO outbox (id, kind, recipient, subject, body_text, body_html, created_at, \
                                 next_attempt_at) \
             VALUES ($1, 'email_verification', $2, 'Hello', 'text', '<p>html</p>', 0, 0)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(format!("user{i}@example.com"))
        .execute(first.pool())
        .await
        .unwrap();
    }

    // Four workers at once, two per instance, besides the instances' own.
    let passes = join_all([
        first.deliver(),
        second.deliver(),
        first.deliver(),
        second.deliver(),
    ])
    .await;

    let mails = sink.wait_for(30).await;
    first
        .wait_for_count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL", 30)
        .await;
    assert!(
        passes.iter().map(|p| p.sent).sum::<usize>() <= 30,
        "{passes:?}"
    );
    let mut recipients: Vec<String> = mails.iter().map(|m| m.to[0].clone()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 30, "each message exactly once");
    assert_eq!(sink.messages().len(), 30);
    assert_eq!(
        first
            .count("SELECT COUNT(*) FROM outbox WHERE attempts = 1")
            .await,
        30
    );
}

async fn operator_templates_replace_the_built_in_ones_and_values_are_escaped_in_html(db: Db) {
    let dir = std::env::temp_dir().join(format!("latchkey-templates-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("email_verification.txt"),
        "Subject: Welcome aboard, {{email}}\n\nClick {{link}} (valid {{expires_in}})\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("email_verification.html"),
        "<p>Hi {{email}}</p><a href=\"{{link}}\">go</a>\n",
    )
    .unwrap();
    let sink = SmtpSink::start().await;
    let template_dir = dir.clone();
    let app = TestApp::spawn_with_sink(db, &sink, |o| {
        o.mail_templates = Some(template_dir);
        o.email_verification_ttl = Some(3600);
    })
    .await;

    app.signed_up("o'brien@example.com").await;

    let mail = sink.nth(1).await;
    let token = mail.token("/email/verify");
    let link = format!("http://localhost:8080/email/verify?token={token}");
    assert_eq!(
        mail.header("Subject").unwrap(),
        "Welcome aboard, o'brien@example.com"
    );
    assert_eq!(
        mail.body("text/plain"),
        format!("Click {link} (valid 1 hour)\n")
    );
    assert_eq!(
        mail.body("text/html"),
        format!("<p>Hi o&#39;brien@example.com</p><a href=\"{link}\">go</a>\n")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn pruning_removes_only_what_nothing_can_use_any_more(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |o| o.mail_throttle = None).await;
    app.signed_up("old@example.com").await;
    sink.wait_for(1).await;
    app.wait_for_count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL", 1)
        .await;
    // A passkey login started and never finished: its ceremony expires with the old link.
    let started = app
        .client
        .post(app.url("/auth/passkeys/login/start"))
        .send();
    assert_eq!(started.await.unwrap().status(), 200);
    // Eight days later, a new account: its link, email and throttle slot are fresh, and so is
    // a new ceremony.
    app.clock.advance(Duration::from_secs(8 * 24 * 3600));
    app.signed_up("new@example.com").await;
    sink.wait_for(2).await;
    let started = app
        .client
        .post(app.url("/auth/passkeys/login/start"))
        .send();
    assert_eq!(started.await.unwrap().status(), 200);
    let fresh: String = sqlx::query_scalar(
        "SELECT token_hash FROM passkey_ceremonies ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();

    latchkey::jobs::prune_mail(&app.state).await.unwrap();

    for (table, column, left_over) in [
        ("one_time_tokens", "email", "new@example.com"),
        ("outbox", "recipient", "new@example.com"),
        // Slots are per purpose and address.
        (
            "mail_throttle",
            "email",
            "email_verification:new@example.com",
        ),
    ] {
        let sql = format!("SELECT {column} FROM {table}");
        let left: Vec<String> = sqlx::query_scalar(&sql)
            .fetch_all(app.pool())
            .await
            .unwrap();
        assert_eq!(left, [left_over], "{table}");
    }
    let left: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM passkey_ceremonies")
        .fetch_all(app.pool())
        .await
        .unwrap();
    assert_eq!(left, [fresh], "passkey_ceremonies");
}

/// Without `smtp_url` the email, link included, is written to the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_the_email_and_its_link_are_logged() {
    let db = TestDb::new(Db::Sqlite).await;
    let kek = latchkey::keys::Kek::generate_encoded();
    let server = ServerProcess::serve(&db, &kek, &[]).await;

    assert_eq!(server.signup("alice@example.com").await.status(), 201);

    let link = "http://localhost:8080/email/verify?token=";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let log = server.log();
        if let Some(line) = log.iter().find(|l| l.contains(link)) {
            let token = &line[line.find(link).unwrap() + link.len()..];
            assert_eq!(token.trim().len(), 43, "{line}");
            assert!(
                log.iter()
                    .any(|l| l
                        .contains("email to alice@example.com not sent (no smtp_url configured)")),
                "{log:#?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no link in the log:\n{}",
            log.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The all-or-nothing promise for emails: whatever rolls a flow back leaves no email in the
/// outbox and none delivered, and the retried flow sends exactly one.
#[cfg(feature = "failpoints")]
mod rollback {
    use serde_json::json;

    use crate::db_tests;
    use crate::helpers::*;

    db_tests!(
        signup_rolled_back_sends_no_verification_email,
        reset_rolled_back_keeps_the_password_and_sends_no_notice,
        verification_rolled_back_leaves_the_address_unverified,
    );

    const ACTIONS: [&str; 2] = ["return", "panic"];

    /// The server, its emails going to `sink` and its webhooks to a receiver that answers 2xx;
    /// the receiver comes back too, to be kept for the test.
    async fn server(db: &TestDb, sink: &SmtpSink, failpoints: &str) -> (ServerProcess, Receiver) {
        let kek = latchkey::keys::Kek::generate_encoded();
        let url = sink.url();
        let receiver = Receiver::start().await;
        let hooks = receiver.url();
        let env = [
            ("FAILPOINTS", failpoints),
            ("LATCHKEY_SMTP_URL", url.as_str()),
            ("LATCHKEY_MAIL_THROTTLE", "0"),
            ("LATCHKEY_WEBHOOK_URL", hooks.as_str()),
            ("LATCHKEY_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("LATCHKEY_WEBHOOK_RETRY_BASE_MS", "20"),
        ];
        (ServerProcess::serve(db, &kek, &env).await, receiver)
    }

    /// The webhook events queued, of one type.
    async fn events(pool: &sqlx::AnyPool, event_type: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM webhook_outbox WHERE event_type = '{event_type}'");
        count(pool, &sql).await
    }

    async fn post(
        server: &ServerProcess,
        path: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        server
            .client
            .post(server.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn signup_rolled_back_sends_no_verification_email(db: Db) {
        for action in ACTIONS {
            let context = format!("signup.before_commit=1*{action} ({db:?})");
            let test_db = TestDb::new(db).await;
            let sink = SmtpSink::start().await;
            let (server, _hooks) =
                server(&test_db, &sink, &format!("signup.before_commit=1*{action}")).await;
            let pool = test_db.pool().await;

            assert_internal_without_cookies(server.signup("alice@example.com").await, &context)
                .await;
            for table in [
                "outbox",
                "one_time_tokens",
                "mail_throttle",
                "users",
                "webhook_outbox",
            ] {
                let sql = format!("SELECT COUNT(*) FROM {table}");
                assert_eq!(count(&pool, &sql).await, 0, "{context}: {table}");
            }

            assert_eq!(
                server.signup("alice@example.com").await.status(),
                201,
                "{context}"
            );
            // Exactly one email arrives: the retry's, whose link works.
            let mail = sink.nth(1).await;
            let token = mail.token("/email/verify");
            let verified = post(&server, "/auth/email/verify", json!({ "token": token })).await;
            assert_eq!(verified.status(), 204, "{context}");
            assert_eq!(
                count(&pool, "SELECT COUNT(*) FROM outbox").await,
                1,
                "{context}"
            );
            assert_eq!(sink.messages().len(), 1, "{context}");
            pool.close().await;
        }
    }

    async fn reset_rolled_back_keeps_the_password_and_sends_no_notice(db: Db) {
        for action in ACTIONS {
            let context = format!("password_reset.before_commit=1*{action} ({db:?})");
            let test_db = TestDb::new(db).await;
            let sink = SmtpSink::start().await;
            let failpoints = format!("password_reset.before_commit=1*{action}");
            let (server, hooks) = server(&test_db, &sink, &failpoints).await;
            let pool = test_db.pool().await;
            let signup = server.signup("alice@example.com").await;
            let session = Session::from_response(signup).await;
            sink.wait_for(1).await;
            let forgot = post(
                &server,
                "/auth/password/forgot",
                json!({"email": "alice@example.com"}),
            )
            .await;
            assert_eq!(forgot.status(), 202, "{context}");
            let token = sink.nth(2).await.token("/password/reset");
            let reset = json!({"token": token, "password": "a brand new passphrase"});

            assert_internal_without_cookies(
                post(&server, "/auth/password/reset", reset.clone()).await,
                &context,
            )
            .await;

            // Nothing of the reset happened: password, sessions, token, notice, audit event.
            assert_eq!(
                server.login("alice@example.com").await.status(),
                200,
                "{context}"
            );
            assert_eq!(
                server.me(&session.access_token).await.status(),
                200,
                "{context}"
            );
            for (sql, expected) in [
                (
                    "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL",
                    0,
                ),
                (
                    "SELECT COUNT(*) FROM one_time_tokens WHERE used_at IS NOT NULL",
                    0,
                ),
                (
                    "SELECT COUNT(*) FROM outbox WHERE kind = 'password_changed'",
                    0,
                ),
                (
                    "SELECT COUNT(*) FROM audit_events WHERE kind = 'password_reset'",
                    0,
                ),
                (
                    "SELECT COUNT(*) FROM users WHERE email_verified_at IS NOT NULL",
                    0,
                ),
            ] {
                assert_eq!(count(&pool, sql).await, expected, "{context}: {sql}");
            }
            assert_eq!(events(&pool, "user.password_reset").await, 0, "{context}");
            assert_eq!(events(&pool, "session.revoked").await, 0, "{context}");
            server.assert_serving(&context).await;

            // The same link, once more, goes through, and exactly one notice follows.
            let retried = post(&server, "/auth/password/reset", reset).await;
            assert_eq!(retried.status(), 204, "{context}");
            let notice = sink.nth(3).await;
            assert_eq!(
                notice.header("Subject").unwrap(),
                "Your password was changed"
            );
            assert_eq!(
                server.me(&session.access_token).await.status(),
                401,
                "{context}"
            );
            assert_eq!(
                count(
                    &pool,
                    "SELECT COUNT(*) FROM outbox WHERE kind = 'password_changed'"
                )
                .await,
                1,
                "{context}"
            );
            assert_eq!(sink.messages().len(), 3, "{context}");
            // And its events: the reset, and the end of both sessions (signup's and login's).
            assert_eq!(events(&pool, "user.password_reset").await, 1, "{context}");
            assert_eq!(events(&pool, "session.revoked").await, 2, "{context}");
            let delivered = hooks.wait_delivered(5).await;
            let types: Vec<String> = delivered.iter().map(Delivery::event_type).collect();
            assert_eq!(
                types.iter().filter(|t| *t == "user.password_reset").count(),
                1
            );
            pool.close().await;
        }
    }

    async fn verification_rolled_back_leaves_the_address_unverified(db: Db) {
        for action in ACTIONS {
            let context = format!("email_verify.before_commit=1*{action} ({db:?})");
            let test_db = TestDb::new(db).await;
            let sink = SmtpSink::start().await;
            let failpoints = format!("email_verify.before_commit=1*{action}");
            let (server, _hooks) = server(&test_db, &sink, &failpoints).await;
            let pool = test_db.pool().await;
            assert_eq!(server.signup("alice@example.com").await.status(), 201);
            let token = sink.nth(1).await.token("/email/verify");

            let failed = post(&server, "/auth/email/verify", json!({ "token": token })).await;

            assert_internal_without_cookies(failed, &context).await;
            for (sql, expected) in [
                (
                    "SELECT COUNT(*) FROM users WHERE email_verified_at IS NOT NULL",
                    0,
                ),
                (
                    "SELECT COUNT(*) FROM one_time_tokens WHERE used_at IS NOT NULL",
                    0,
                ),
                (
                    "SELECT COUNT(*) FROM audit_events WHERE kind = 'email_verified'",
                    0,
                ),
            ] {
                assert_eq!(count(&pool, sql).await, expected, "{context}: {sql}");
            }
            assert_eq!(events(&pool, "user.email_verified").await, 0, "{context}");
            server.assert_serving(&context).await;
            let retried = post(&server, "/auth/email/verify", json!({ "token": token })).await;
            assert_eq!(retried.status(), 204, "{context}");
            assert_eq!(
                count(
                    &pool,
                    "SELECT COUNT(*) FROM users WHERE email_verified_at IS NOT NULL"
                )
                .await,
                1,
                "{context}"
            );
            assert_eq!(events(&pool, "user.email_verified").await, 1, "{context}");
            pool.close().await;
        }
    }
}

/// `latchkey mail dead` lists what was given up (never a body), and `mail retry ID` sends it
/// again once the relay is back, while its body and link are kept; once the link's lifetime has
/// passed, the prune job erases the body and a retry is refused.
async fn the_operator_lists_dead_emails_and_sends_one_again_while_its_link_lives(db: Db) {
    let sink = SmtpSink::start().await;
    sink.stop();
    let app = TestApp::spawn_with_sink(db, &sink, |o| o.mail_max_attempts = Some(1)).await;
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend([
            "--database-url",
            &app.db.url,
            "--key-encryption-key",
            &app.kek,
            "--json",
        ]);
        run(&all, &std::env::temp_dir())
    };
    let session = app.signed_up("alice@example.com").await;
    app.wait_for_count("SELECT COUNT(*) FROM outbox WHERE dead_at IS NOT NULL", 1)
        .await;

    let listed = cli(&["mail", "dead"]);
    assert!(listed.status.success(), "{listed:?}");
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let emails = listed["emails"].as_array().unwrap();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0]["recipient"], "alice@example.com");
    assert_eq!(emails[0]["retryable"], true);
    assert!(emails[0].get("body_text").is_none() && !listed.to_string().contains("token="));
    let id = emails[0]["id"].as_str().unwrap().to_owned();

    sink.restart().await;
    let retried = cli(&["mail", "retry", &id]);
    assert!(retried.status.success(), "{retried:?}");
    app.state.mailer.wake();
    let mail = sink.nth(1).await;
    assert_eq!(mail.to, ["alice@example.com"]);
    assert_eq!(
        verify(&app, &mail.token("/email/verify")).await.status(),
        204
    );
    assert_eq!(email_verified(&app, &session.access_token).await, true);
    let again = cli(&["mail", "retry", &id]);
    assert!(!again.status.success(), "a sent email is not dead");
    assert!(!cli(&["mail", "retry", "no-such-id"]).status.success());

    // Dead longer than any link lives: the body goes, and so does the chance of a retry.
    sink.stop();
    app.signed_up("bob@example.com").await;
    app.wait_for_count(
        "SELECT COUNT(*) FROM outbox WHERE dead_at IS NOT NULL AND recipient = 'bob@example.com'",
        1,
    )
    .await;
    app.clock
        .advance(std::time::Duration::from_secs(24 * 3600 + 60));
    latchkey::jobs::prune_mail(&app.state).await.unwrap();
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM outbox WHERE recipient = 'bob@example.com' AND body_text = '' \
             AND body_html = ''"
        )
        .await,
        1
    );
    let bob_id = app
        .text("SELECT id FROM outbox WHERE recipient = 'bob@example.com'")
        .await
        .unwrap();
    let refused = cli(&["mail", "retry", &bob_id]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("erased"));
}
