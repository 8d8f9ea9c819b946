//! The account lifecycle: email change with double opt-in (and its race with a signup),
//! deletion by the user (no table left naming the account), export, and disabled accounts that
//! get no reset or verification email.

use serde_json::{Value, json};

use crate::admin_api::{admin_key, json_of};
use crate::db_tests;
use crate::helpers::*;

db_tests!(
    an_email_change_is_confirmed_from_the_new_mailbox_and_keeps_the_sessions,
    email_change_requests_check_password_address_and_token,
    an_email_change_racing_a_signup_for_the_address_has_one_winner,
    deleting_the_account_leaves_no_row_that_names_it,
    a_wrong_password_deletes_nothing,
    the_export_holds_everything_stored_about_the_caller,
    disabled_accounts_get_no_reset_or_verification_email,
    email_change_and_deletion_send_their_webhook_events,
    a_password_change_or_reset_voids_a_pending_email_change,
    with_concealment_a_taken_address_answers_like_a_free_one,
    an_account_disabled_behind_the_services_back_authenticates_nothing,
);

pub fn invalid_credentials() -> Value {
    json!({"error": {"code": "invalid_credentials", "message": "Wrong email or password."}})
}

fn token_invalid() -> Value {
    json!({"error": {"code": "token_invalid", "message": "This link is invalid or has expired."}})
}

fn email_taken() -> Value {
    json!({"error": {"code": "email_taken", "message": "An account with this email already exists."}})
}

async fn change_email(
    app: &TestApp,
    access_token: &str,
    new_email: &str,
    password: &str,
) -> reqwest::Response {
    app.client
        .post(app.url("/auth/email/change"))
        .bearer_auth(access_token)
        .json(&json!({"new_email": new_email, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn confirm(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_json("/auth/email/change/confirm", &json!({ "token": token }))
        .await
}

async fn an_email_change_is_confirmed_from_the_new_mailbox_and_keeps_the_sessions(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let alice = app.signed_up("alice@example.com").await;
    sink.nth(1).await; // the signup's verification email
    let other = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;

    let response = change_email(&app, &alice.access_token, "Alice@New.example", PASSWORD).await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "A confirmation link is on its way to the new address."})
    );
    let mails = sink.wait_for(3).await;
    let link = mails
        .iter()
        .find(|m| m.to == ["Alice@New.example"])
        .expect("the link");
    let notice = mails
        .iter()
        .find(|m| {
            m.to == ["alice@example.com"]
                && m.header("Subject").unwrap().contains("about to change")
        })
        .expect("the notice");
    assert!(notice.body("text/plain").contains("Alice@New.example"));
    assert_eq!(
        link.header("Subject").unwrap(),
        "Confirm your new email address"
    );
    let token = link.token("/email/change");
    assert_eq!(
        link.link("/email/change"),
        format!("http://localhost:8080/email/change?token={token}")
    );
    // Nothing changed yet.
    let me: Value = app.me(&alice.access_token).await.json().await.unwrap();
    assert_eq!(me["user"]["email"], "alice@example.com");
    // The link is worth nothing as a verification or reset token.
    let response = app
        .post_json("/auth/email/verify", &json!({"token": token}))
        .await;
    assert_eq!(response.status(), 400);
    let response = app
        .post_json(
            "/auth/password/reset",
            &json!({"token": token, "password": "a brand new battery staple"}),
        )
        .await;
    assert_eq!(response.status(), 400);

    let response = confirm(&app, &token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["id"], alice.user_id());
    assert_eq!(body["user"]["email"], "Alice@New.example");
    assert_eq!(body["user"]["email_verified"], true);
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    // Once only.
    assert_eq!(
        json_of(confirm(&app, &token).await).await,
        (400, token_invalid())
    );

    // Both sessions stay; the new address logs in, the old one no longer does.
    for s in [&alice, &other] {
        let me: Value = app.me(&s.access_token).await.json().await.unwrap();
        assert_eq!(me["user"]["email"], "Alice@New.example");
    }
    assert_eq!(app.login("alice@new.example", PASSWORD).await.status(), 200);
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 401);
    // The old address is free.
    assert_eq!(
        app.signup("alice@example.com", PASSWORD).await.status(),
        201
    );
    // Links sent to the old address are retired.
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM one_time_tokens WHERE user_id = '{}' \
             AND used_at IS NULL AND revoked_at IS NULL",
            alice.user_id()
        ))
        .await,
        0
    );
    for kind in ["email_change_requested", "email_changed"] {
        let sql = format!(
            "SELECT COUNT(*) FROM audit_events WHERE kind = '{kind}' AND user_id = '{}'",
            alice.user_id()
        );
        assert_eq!(app.count(&sql).await, 1, "{kind}");
    }
}

async fn email_change_requests_check_password_address_and_token(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let alice = app.signed_up("alice@example.com").await;
    app.signed_up("bob@example.com").await;
    let tokens = "SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'email_change'";

    let response = change_email(
        &app,
        &alice.access_token,
        "new@example.com",
        "wrong password",
    )
    .await;
    assert_eq!(json_of(response).await, (401, invalid_credentials()));
    let response = change_email(&app, &alice.access_token, "BOB@example.com", PASSWORD).await;
    assert_eq!(json_of(response).await, (409, email_taken()));
    for (body, field) in [
        (
            json!({"new_email": "Alice@Example.com", "password": PASSWORD}),
            "new_email",
        ),
        (
            json!({"new_email": "not an address", "password": PASSWORD}),
            "new_email",
        ),
        (json!({"new_email": "new@example.com"}), "password"),
        (json!({"password": PASSWORD}), "new_email"),
        (
            json!({"new_email": "new@example.com", "password": PASSWORD, "email": "x"}),
            "email",
        ),
    ] {
        let response = app
            .client
            .post(app.url("/auth/email/change"))
            .bearer_auth(&alice.access_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"]["fields"][field].is_string(),
            "{field}: {body}"
        );
    }
    let response = app
        .client
        .post(app.url("/auth/email/change"))
        .json(&json!({"new_email": "new@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await, (401, unauthenticated()));
    assert_eq!(app.count(tokens).await, 0, "nothing was sent");

    // A second request retires the first link.
    assert_eq!(
        change_email(&app, &alice.access_token, "one@example.com", PASSWORD)
            .await
            .status(),
        202
    );
    assert_eq!(
        change_email(&app, &alice.access_token, "two@example.com", PASSWORD)
            .await
            .status(),
        202
    );
    let mails = sink.wait_for(6).await;
    let first = mails
        .iter()
        .find(|m| m.to == ["one@example.com"])
        .unwrap()
        .token("/email/change");
    let second = mails
        .iter()
        .find(|m| m.to == ["two@example.com"])
        .unwrap()
        .token("/email/change");
    assert_eq!(
        json_of(confirm(&app, &first).await).await,
        (400, token_invalid())
    );
    for token in ["", "x"] {
        let (status, _) = json_of(confirm(&app, token).await).await;
        assert!(status == 400 || status == 422, "{token:?}");
    }
    assert_eq!(confirm(&app, &second).await.status(), 200);

    // The address was taken after the link was sent: 409, and nothing of the swap is kept.
    let bob = Session::from_response(app.login("bob@example.com", PASSWORD).await).await;
    assert_eq!(
        change_email(&app, &bob.access_token, "three@example.com", PASSWORD)
            .await
            .status(),
        202
    );
    let mails = sink.wait_for(8).await;
    let third = mails
        .iter()
        .find(|m| m.to == ["three@example.com"])
        .unwrap()
        .token("/email/change");
    assert_eq!(
        app.signup("Three@example.com", PASSWORD).await.status(),
        201
    );
    assert_eq!(
        json_of(confirm(&app, &third).await).await,
        (409, email_taken())
    );
    let me: Value = app.me(&bob.access_token).await.json().await.unwrap();
    assert_eq!(me["user"]["email"], "bob@example.com");
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'email_change' \
             AND user_id = '{}' AND used_at IS NULL",
            bob.body["user"]["id"].as_str().unwrap()
        ))
        .await,
        1,
        "the token was not spent by the failed swap"
    );
}

async fn an_email_change_racing_a_signup_for_the_address_has_one_winner(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    for round in 0..4 {
        let owner = app.signed_up(&format!("owner{round}@example.com")).await;
        let target = format!("target{round}@example.com");
        assert_eq!(
            change_email(&app, &owner.access_token, &target, PASSWORD)
                .await
                .status(),
            202
        );
        let token = loop {
            let found = sink
                .messages()
                .into_iter()
                .find(|m| m.to == [target.clone()]);
            match found {
                Some(mail) => break mail.token("/email/change"),
                None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        // The swap and a signup for the same address at once.
        let (swap, signup) = tokio::join!(confirm(&app, &token), app.signup(&target, PASSWORD));
        let statuses = (swap.status().as_u16(), signup.status().as_u16());
        assert!(
            statuses == (200, 409) || statuses == (409, 201),
            "round {round}: exactly one wins, the other is 409: {statuses:?}"
        );
        let loser = if statuses.0 == 409 { swap } else { signup };
        assert_eq!(json_of(loser).await, (409, email_taken()), "round {round}");
        let sql = format!("SELECT COUNT(*) FROM users WHERE email_normalized = '{target}'");
        assert_eq!(app.count(&sql).await, 1, "round {round}");
        let me: Value = app.me(&owner.access_token).await.json().await.unwrap();
        let expected = if statuses.0 == 200 {
            target.clone()
        } else {
            format!("owner{round}@example.com")
        };
        assert_eq!(
            me["user"]["email"],
            expected.as_str(),
            "round {round}: no half state"
        );
    }
    assert_eq!(app.count(ORPHANS).await, 0);
}

/// Every column of every table of this schema with `type`, as (table, column).
async fn columns(app: &TestApp, sql_type: &str) -> Vec<(String, String)> {
    let sql = match app.db.kind {
        Db::Sqlite => format!(
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name != '_sqlx_migrations' \
             AND upper(p.type) = '{}' ORDER BY 1, 2",
            sql_type.to_uppercase()
        ),
        Db::Postgres => format!(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name != '_sqlx_migrations' \
             AND data_type = '{sql_type}' ORDER BY 1, 2"
        ),
    };
    sqlx::query_as(&sql).fetch_all(app.pool()).await.unwrap()
}

/// After a deletion: no table holds a row with the user's id in a `user_id` column (audit
/// events excepted: kept, naming the id only), nor one with a session id of the user, nor the
/// address in any text column, but for the deletion notice in the outbox and the webhook
/// events about the deletion. The tables are read from the schema, so a future table is covered.
pub async fn assert_nothing_names(app: &TestApp, user_id: &str, email: &str) {
    let text = columns(app, "text").await;
    assert!(text.len() > 20, "the schema was read: {text:?}");
    let user_id_tables: Vec<&String> = text
        .iter()
        .filter(|(_, c)| c == "user_id")
        .map(|(t, _)| t)
        .collect();
    for expected in ["audit_events", "one_time_tokens", "profiles", "sessions"] {
        assert!(
            user_id_tables.iter().any(|t| *t == expected),
            "{expected} in {user_id_tables:?}"
        );
    }
    for table in user_id_tables {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE user_id = '{user_id}'");
        let count = app.count(&sql).await;
        if table == "audit_events" {
            assert!(count > 0, "audit events are kept");
            continue;
        }
        assert_eq!(count, 0, "{table} still names the user");
    }
    let sessions = app
        .count(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id NOT IN (SELECT id FROM sessions)",
        )
        .await;
    assert_eq!(sessions, 0, "refresh tokens of deleted sessions");
    let lower = email.to_lowercase();
    for (table, column) in &text {
        let sql = format!(
            "SELECT COUNT(*) FROM {table} WHERE lower({column}) LIKE '%{lower}%' \
             {}",
            match table.as_str() {
                "outbox" => "AND kind != 'account_deleted'",
                "webhook_outbox" => "AND event_type != 'user.deleted'",
                _ => "",
            }
        );
        assert_eq!(
            app.count(&sql).await,
            0,
            "{table}.{column} holds the address"
        );
    }
    assert_eq!(app.count(ORPHANS).await, 0);
}

async fn deleting_the_account_leaves_no_row_that_names_it(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |o| o.mail_throttle = Some(60)).await;
    let alice = app.signed_up("Alice@Example.com").await;
    let other = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;
    let bob = app.signed_up("bob@example.com").await;
    let id = alice.user_id().to_owned();
    // Rows of every kind that names the account: a second session, rotated refresh tokens,
    // a pending email change (link, notice, throttle slot), a reset request and its link, a
    // passwordless code.
    assert_eq!(app.refresh(&other.refresh_token).await.status(), 200);
    assert_eq!(
        change_email(&app, &alice.access_token, "alice@new.example", PASSWORD)
            .await
            .status(),
        202
    );
    let forgot = app
        .post_json(
            "/auth/password/forgot",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(forgot.status(), 202);
    app.wait_for_count(
        &format!("SELECT COUNT(*) FROM one_time_tokens WHERE user_id = '{id}' AND purpose = 'password_reset'"),
        1,
    )
    .await;
    // And a passwordless code.
    let started = app
        .post_json(
            "/auth/passwordless/start",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(started.status(), 202);
    app.wait_for_count(
        &format!("SELECT COUNT(*) FROM passwordless_codes WHERE user_id = '{id}'"),
        1,
    )
    .await;
    // Some of its emails are sent by now, some may still wait in the outbox: both go.
    let response = app
        .client
        .delete(app.url("/auth/me"))
        .bearer_auth(&alice.access_token)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_session_cookies_cleared(response.headers());
    assert_eq!(response.text().await.unwrap(), "");

    assert_eq!(app.me(&alice.access_token).await.status(), 401);
    assert_eq!(app.me(&other.access_token).await.status(), 401);
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 401);
    // Bob is untouched.
    assert_eq!(app.me(&bob.access_token).await.status(), 200);
    let notice = loop {
        let found = sink
            .messages()
            .into_iter()
            .find(|m| m.header("Subject").as_deref() == Some("Your account has been deleted"));
        match found {
            Some(mail) => break mail,
            None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    assert_eq!(notice.to, ["Alice@Example.com"]);
    assert_nothing_names(&app, &id, "alice@example.com").await;
    assert_nothing_names(&app, &id, "alice@new.example").await;
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'user_deleted' AND user_id = '{id}'"
        ))
        .await,
        1
    );
    // The address can have a new account (no throttle slot holds its verification email back).
    let again = app.signup("alice@example.com", PASSWORD).await;
    assert_eq!(again.status(), 201);
}

async fn a_wrong_password_deletes_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up("alice@example.com").await;
    let delete = |body: Value| {
        app.client
            .delete(app.url("/auth/me"))
            .bearer_auth(&alice.access_token)
            .json(&body)
            .send()
    };
    let response = delete(json!({"password": "wrong password"})).await.unwrap();
    assert!(response.headers().get("set-cookie").is_none());
    assert_eq!(json_of(response).await, (401, invalid_credentials()));
    let (status, body) = json_of(delete(json!({})).await.unwrap()).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["fields"]["password"], "is required");
    let (status, _) = json_of(
        delete(json!({"password": PASSWORD, "user_id": "x"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    let response = app
        .client
        .delete(app.url("/auth/me"))
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await, (401, unauthenticated()));
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        1
    );
    let failed = "SELECT COUNT(*) FROM audit_events WHERE kind = 'password_check_failed'";
    assert_eq!(
        app.count(failed).await,
        1,
        "the wrong password is on record"
    );
    assert_eq!(app.me(&alice.access_token).await.status(), 200);
}

async fn the_export_holds_everything_stored_about_the_caller(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up("alice@example.com").await;
    let second = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;
    let logout = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&second.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    app.signed_up("bob@example.com").await;

    let response = app
        .client
        .get(app.url("/auth/me/export"))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let export: Value = response.json().await.unwrap();
    let keys: Vec<&String> = export.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["audit_events", "identities", "profile", "sessions", "user"]
    );
    assert_eq!(export["identities"], json!([]), "none linked");
    let me: Value = app.me(&alice.access_token).await.json().await.unwrap();
    assert_eq!(export["user"], me["user"]);
    assert_eq!(export["profile"]["created_at"], me["profile"]["created_at"]);
    let sessions = export["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "the ended one too");
    assert_eq!(sessions[0]["revoked_reason"], "logout");
    assert_eq!(sessions[1]["revoked_at"], Value::Null);
    let kinds: Vec<&str> = export["audit_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["signup", "login", "logout"]);
    let text = export.to_string();
    assert!(
        !text.contains("bob@example.com") && !text.contains("$argon2"),
        "{text}"
    );
    assert!(!text.contains(&alice.refresh_token));
    let response = app
        .client
        .get(app.url("/auth/me/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await, (401, unauthenticated()));
}

async fn disabled_accounts_get_no_reset_or_verification_email(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let alice = app.signed_up("alice@example.com").await;
    sink.nth(1).await;
    let (_, key) = admin_key(&app).await;
    let response = app
        .client
        .patch(app.url(&format!("/admin/v1/users/{}", alice.user_id())))
        .bearer_auth(&key)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The same 202 as for any address, and nothing is sent.
    let forgot = app
        .post_json(
            "/auth/password/forgot",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(forgot.status(), 202);
    app.wait_for_count("SELECT COUNT(*) FROM password_reset_requests", 0)
        .await;
    let resend = app
        .client
        .post(app.url("/auth/email/verify/resend"))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resend.status(), 401, "the disable revoked the session");
    app.deliver().await;
    assert_eq!(
        sink.messages().len(),
        1,
        "only the signup's email: {:?}",
        sink.messages()
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'password_reset'")
            .await,
        0
    );
}

async fn email_change_and_deletion_send_their_webhook_events(db: Db) {
    let receiver = Receiver::start().await;
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = TestApp::spawn_with_receiver(db, &receiver, move |o| {
        o.smtp_url = Some(url);
        o.mail_throttle = Some(0);
    })
    .await;
    let alice = app.signed_up("alice@example.com").await;
    receiver.wait_delivered(1).await;
    assert_eq!(
        change_email(&app, &alice.access_token, "ada@example.com", PASSWORD)
            .await
            .status(),
        202
    );
    let mails = sink.wait_for(3).await;
    let token = mails
        .iter()
        .find(|m| m.to == ["ada@example.com"])
        .unwrap()
        .token("/email/change");
    assert_eq!(confirm(&app, &token).await.status(), 200);
    let delivered = receiver.wait_delivered(2).await;
    assert_eq!(delivered[1].event_type(), "user.email_changed");
    assert_eq!(
        delivered[1].json()["data"]["user"]["email"],
        "ada@example.com"
    );
    assert_eq!(delivered[1].json()["data"]["user"]["email_verified"], true);
    let response = app
        .client
        .delete(app.url("/auth/me"))
        .bearer_auth(&alice.access_token)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let delivered = receiver.wait_delivered(3).await;
    assert_eq!(delivered[2].event_type(), "user.deleted");
    assert_eq!(delivered[2].json()["data"]["user"]["id"], alice.user_id());
}

async fn a_password_change_or_reset_voids_a_pending_email_change(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let alice = app.signed_up("alice@example.com").await;
    // Someone who knows the password asks for a change to their own address ...
    let to = "attacker@example.net";
    assert_eq!(
        change_email(&app, &alice.access_token, to, PASSWORD)
            .await
            .status(),
        202
    );
    let mails = sink.wait_for(3).await;
    let first = mails
        .iter()
        .find(|m| m.to == [to])
        .unwrap()
        .token("/email/change");
    // ... and the owner changes the password: the link is void.
    let new_password = "a brand new battery staple";
    let response = app
        .client
        .post(app.url("/auth/password/change"))
        .bearer_auth(&alice.access_token)
        .json(&json!({"current_password": PASSWORD, "new_password": new_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        json_of(confirm(&app, &first).await).await,
        (400, token_invalid())
    );

    // The same with a reset.
    assert_eq!(
        change_email(&app, &alice.access_token, to, new_password)
            .await
            .status(),
        202
    );
    let mails = sink.wait_for(6).await;
    let second = mails
        .iter()
        .filter(|m| m.to == [to])
        .nth(1)
        .unwrap()
        .token("/email/change");
    let forgot = app
        .post_json(
            "/auth/password/forgot",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(forgot.status(), 202);
    let mails = sink.wait_for(7).await;
    let reset = mails
        .iter()
        .find(|m| m.header("Subject").as_deref() == Some("Reset your password"))
        .unwrap();
    let response = app
        .post_json(
            "/auth/password/reset",
            &json!({"token": reset.token("/password/reset"), "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        json_of(confirm(&app, &second).await).await,
        (400, token_invalid())
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = 'alice@example.com'")
            .await,
        1
    );
}

async fn with_concealment_a_taken_address_answers_like_a_free_one(db: Db) {
    let app = TestApp::spawn_with(db, |o| o.conceal_existing_accounts = Some(true)).await;
    assert_eq!(
        app.signup("alice@example.com", PASSWORD).await.status(),
        202
    );
    assert_eq!(app.signup("bob@example.com", PASSWORD).await.status(), 202);
    let alice = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;
    let response = change_email(&app, &alice.access_token, "BOB@example.com", PASSWORD).await;
    assert_eq!(response.status(), 202);
    let response = change_email(&app, &alice.access_token, "carol@example.com", PASSWORD).await;
    assert_eq!(response.status(), 202);
    let links = "SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'email_change'";
    assert_eq!(
        app.count(links).await,
        1,
        "a link for the free address only"
    );
}

/// `disabled_at` set by hand (SQL, a restore), its sessions left live: every way to disable an
/// account revokes them, this one did not. Where the database is read, they authenticate nothing
/// and refresh nothing, and nothing is written; another account is untouched.
async fn an_account_disabled_behind_the_services_back_authenticates_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up("alice@example.com").await;
    let bob = app.signed_up("bob@example.com").await;
    let disable = format!(
        "UPDATE users SET disabled_at = 1 WHERE id = '{}'",
        alice.user_id()
    );
    sqlx::query(&disable).execute(app.pool()).await.unwrap();
    let live = format!(
        "SELECT COUNT(*) FROM sessions WHERE user_id = '{}' AND revoked_at IS NULL",
        alice.user_id()
    );
    assert_eq!(app.count(&live).await, 1, "the session is left live");

    let me = app.me(&alice.access_token).await;
    assert_eq!(json_of(me).await, (401, unauthenticated()));
    let sessions = app
        .client
        .get(app.url("/auth/sessions"))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(sessions).await, (401, unauthenticated()));
    let refresh = app.refresh(&alice.refresh_token).await;
    assert_eq!(json_of(refresh).await, (401, session_revoked()));
    // The refused rotation rolled back: the token is unspent, no successor exists.
    let tokens = format!(
        "SELECT COUNT(*) FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id \
         WHERE s.user_id = '{}' AND rt.spent_at IS NULL",
        alice.user_id()
    );
    assert_eq!(app.count(&tokens).await, 1);
    assert_eq!(
        app.count(&tokens.replace("spent_at IS NULL", "spent_at IS NOT NULL"))
            .await,
        0
    );
    assert_eq!(app.count(&live).await, 1);

    assert_eq!(app.me(&bob.access_token).await.status(), 200);
    assert_eq!(app.refresh(&bob.refresh_token).await.status(), 200);
}
