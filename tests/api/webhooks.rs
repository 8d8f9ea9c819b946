//! Webhooks against a real receiver on loopback: signed per Standard Webhooks (checked with the
//! receiver's own implementation of the specification), exactly the event of each flow, retried
//! with the same `webhook-id`, dead after the configured attempts, filtered per endpoint,
//! independent of email delivery, and sent once by several instances.

use std::collections::{BTreeMap, HashSet};

use latchkey::webhooks::endpoint::EndpointSetting;
use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    events_are_signed_and_say_exactly_what_happened,
    every_flow_sends_its_event,
    retries_after_500s_keep_the_webhook_id_and_dead_ones_can_be_retried,
    a_receiver_that_is_down_gets_its_events_when_back_and_holds_up_no_email,
    each_endpoint_has_its_own_filter_and_secrets,
    two_instances_never_send_an_event_twice,
);

const NEW_PASSWORD: &str = "another horse battery staple";

/// The session id of an access token.
fn sid(access_token: &str) -> String {
    TestApp::claims(access_token)["sid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Asserts no secret of the test is in any delivery.
fn assert_no_secrets(deliveries: &[Delivery], secrets: &[&str]) {
    for d in deliveries {
        for secret in
            secrets
                .iter()
                .chain(&[PASSWORD, NEW_PASSWORD, "$argon2", "MfKQ9r8GKYqrTwjUPD8"])
        {
            assert!(!d.body.contains(secret), "{secret} in {}", d.body);
        }
        let data = d.json()["data"].clone();
        let mut keys: Vec<&String> = data.as_object().unwrap().keys().collect();
        keys.sort();
        let allowed = ["profile", "reason", "session_id", "user"];
        assert!(
            keys.iter().all(|k| allowed.contains(&k.as_str())),
            "{keys:?}"
        );
        let user = data["user"].as_object().unwrap();
        let mut user_keys: Vec<&String> = user.keys().collect();
        user_keys.sort();
        assert_eq!(
            user_keys,
            [
                "app_metadata",
                "created_at",
                "email",
                "email_verified",
                "id"
            ]
        );
    }
}

async fn events_are_signed_and_say_exactly_what_happened(db: Db) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with_receiver(db, &receiver, |_| {}).await;

    let signup = app
        .post_json(
            "/auth/signup",
            &json!({"email": "alice@example.com", "password": PASSWORD,
                    "display_name": "Alice", "metadata": {"plan": "free"}}),
        )
        .await;
    assert_eq!(signup.status(), 201);
    let alice = Session::from_response(signup).await;

    let created = &receiver.wait_delivered(1).await[0];
    assert_eq!(verify_signature(created, WEBHOOK_SECRET), 1);
    assert_eq!(created.headers["content-type"], "application/json");
    assert!(created.id().starts_with("evt_"), "{}", created.id());
    assert_eq!(
        created.json(),
        json!({
            "type": "user.created",
            "timestamp": alice.body["user"]["created_at"],
            "data": {
                "user": alice.body["user"],
                "profile": alice.body["profile"],
                "session_id": sid(&alice.access_token),
            },
        })
    );
    assert_eq!(
        created.json()["data"]["profile"]["metadata"],
        json!({"plan": "free"})
    );

    let login = app.login("alice@example.com", PASSWORD).await;
    assert_eq!(login.status(), 200);
    let second = Session::from_response(login).await;
    let logged_in = &receiver.wait_delivered(2).await[1];
    assert_eq!(verify_signature(logged_in, WEBHOOK_SECRET), 1);
    assert_eq!(
        logged_in.json(),
        json!({
            "type": "user.login",
            "timestamp": second.body["profile"]["last_login_at"],
            "data": {
                "user": second.body["user"],
                "profile": second.body["profile"],
                "session_id": sid(&second.access_token),
            },
        })
    );

    let logout = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&second.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let revoked = &receiver.wait_delivered(3).await[2];
    assert_eq!(verify_signature(revoked, WEBHOOK_SECRET), 1);
    let body = revoked.json();
    assert_eq!(body["type"], "session.revoked");
    assert_eq!(
        body["data"],
        json!({
            "user": second.body["user"],
            "profile": second.body["profile"],
            "session_id": sid(&second.access_token),
            "reason": "logout",
        })
    );

    let all = receiver.all();
    assert_eq!(all.len(), 3, "one request per event");
    let ids: HashSet<&str> = all.iter().map(Delivery::id).collect();
    assert_eq!(ids.len(), 3, "one id per event");
    assert_no_secrets(
        &all,
        &[
            &alice.access_token,
            &alice.refresh_token,
            &second.access_token,
            &second.refresh_token,
        ],
    );
    app.wait_for_count(
        "SELECT COUNT(*) FROM webhook_outbox WHERE sent_at IS NOT NULL AND attempts = 1",
        3,
    )
    .await;
}

/// The types of the deliveries after the first `from`, sorted (one flow's events may come in any
/// order), with the reason of each `session.revoked`.
fn kinds(deliveries: &[Delivery], from: usize) -> Vec<String> {
    let mut kinds: Vec<String> = deliveries[from..]
        .iter()
        .map(|d| {
            let body = d.json();
            match body["data"]["reason"].as_str() {
                Some(reason) => format!("{} {reason}", body["type"].as_str().unwrap()),
                None => body["type"].as_str().unwrap().to_owned(),
            }
        })
        .collect();
    kinds.sort();
    kinds
}

async fn every_flow_sends_its_event(db: Db) {
    let receiver = Receiver::start().await;
    let sink = SmtpSink::start().await;
    let url = receiver.url();
    let app = TestApp::spawn_with_sink(db, &sink, |o| with_receiver(o, &url)).await;
    let mut seen = 0;

    let s1 = app.signed_up("alice@example.com").await;
    expect(&receiver, &mut seen, 1, &["user.created"]).await;

    let token = sink.nth(1).await.token("/email/verify");
    let verify = app
        .post_json("/auth/email/verify", &json!({"token": token}))
        .await;
    assert_eq!(verify.status(), 204);
    expect(&receiver, &mut seen, 1, &["user.email_verified"]).await;

    let patch = app
        .client
        .patch(app.url("/auth/me/profile"))
        .bearer_auth(&s1.access_token)
        .json(&json!({"metadata": {"theme": "dark"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 200);
    expect(&receiver, &mut seen, 1, &["user.profile_updated"]).await;
    let updated = receiver.delivered()[seen - 1].json();
    assert_eq!(
        updated["data"]["profile"]["metadata"],
        json!({"theme": "dark"})
    );
    assert_eq!(updated["data"]["session_id"], sid(&s1.access_token));

    let s2 = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;
    expect(&receiver, &mut seen, 1, &["user.login"]).await;
    let revoke = app
        .client
        .delete(app.url(&format!("/auth/sessions/{}", sid(&s2.access_token))))
        .bearer_auth(&s1.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    expect(
        &receiver,
        &mut seen,
        1,
        &["session.revoked revoked_by_user"],
    )
    .await;

    let s3 = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;
    expect(&receiver, &mut seen, 1, &["user.login"]).await;
    let change = app
        .client
        .post(app.url("/auth/password/change"))
        .bearer_auth(&s1.access_token)
        .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), 204);
    expect(
        &receiver,
        &mut seen,
        2,
        &["session.revoked password_change", "user.password_changed"],
    )
    .await;
    let revoked = receiver.delivered()[seen - 2..]
        .iter()
        .map(Delivery::json)
        .find(|b| b["type"] == "session.revoked")
        .unwrap();
    assert_eq!(revoked["data"]["session_id"], sid(&s3.access_token));

    let forgot = app
        .post_json(
            "/auth/password/forgot",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(forgot.status(), 202);
    let reset_token = sink.nth(3).await.token("/password/reset");
    let reset = app
        .post_json(
            "/auth/password/reset",
            &json!({"token": reset_token, "password": PASSWORD}),
        )
        .await;
    assert_eq!(reset.status(), 204);
    expect(
        &receiver,
        &mut seen,
        2,
        &["session.revoked password_reset", "user.password_reset"],
    )
    .await;

    let s4 = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;
    expect(&receiver, &mut seen, 1, &["user.login"]).await;
    let all = app
        .client
        .post(app.url("/auth/logout-all"))
        .bearer_auth(&s4.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), 204);
    expect(&receiver, &mut seen, 1, &["session.revoked logout_all"]).await;

    let s5 = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;
    expect(&receiver, &mut seen, 1, &["user.login"]).await;
    let user_id = uuid::Uuid::parse_str(s5.user_id()).unwrap();
    let now = app.clock.now();
    assert_eq!(
        app.state
            .store
            .set_disabled(user_id, true, now)
            .await
            .unwrap(),
        Some(1)
    );
    expect(
        &receiver,
        &mut seen,
        2,
        &["session.revoked user_disabled", "user.disabled"],
    )
    .await;
    assert_eq!(
        app.state
            .store
            .revoke_sessions_by_admin(user_id, now)
            .await
            .unwrap(),
        0
    );
    assert!(app.state.store.delete_user(user_id, now).await.unwrap());
    expect(&receiver, &mut seen, 1, &["user.deleted"]).await;
    let deleted = receiver.delivered()[seen - 1].json();
    assert_eq!(deleted["data"]["user"]["id"], s5.user_id());
    assert_eq!(deleted["data"]["user"]["email_verified"], true);

    assert_no_secrets(
        &receiver.all(),
        &[
            &s1.access_token,
            &s1.refresh_token,
            &s5.access_token,
            &reset_token,
            &token,
        ],
    );
    for d in receiver.all() {
        assert_eq!(verify_signature(&d, WEBHOOK_SECRET), 1);
    }
}

/// Waits for `n` more deliveries than `seen`, of exactly the types `want` (sorted).
async fn expect(receiver: &Receiver, seen: &mut usize, n: usize, want: &[&str]) {
    let got = receiver.wait_delivered(*seen + n).await;
    assert_eq!(got.len(), *seen + n, "exactly {want:?}");
    assert_eq!(kinds(&got, *seen), want, "after {seen}");
    *seen += n;
}

async fn retries_after_500s_keep_the_webhook_id_and_dead_ones_can_be_retried(db: Db) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with_receiver(db, &receiver, |o| {
        o.webhook_max_attempts = Some(3);
        o.metrics_refresh = Some("50ms".parse().unwrap());
    })
    .await;

    receiver.fail_next(2);
    let alice = app.signed_up("alice@example.com").await;
    let requests = receiver.wait_delivered(1).await;
    let all = receiver.all();
    assert_eq!(
        all.iter().map(|d| d.status).collect::<Vec<_>>(),
        [500, 500, 204]
    );
    let id = all[0].id().to_owned();
    for attempt in &all {
        assert_eq!(attempt.id(), id, "the same webhook-id on every attempt");
        assert_eq!(attempt.body, all[0].body, "the same body on every attempt");
        assert_eq!(verify_signature(attempt, WEBHOOK_SECRET), 1);
    }
    assert_eq!(requests[0].event_type(), "user.created");
    app.wait_for_count(
        &format!(
            "SELECT COUNT(*) FROM webhook_outbox WHERE event_id = '{id}' AND attempts = 3 \
                  AND sent_at IS NOT NULL AND last_error = 'the receiver answered 500'"
        ),
        1,
    )
    .await;

    // Three failures: dead, and tried no more.
    receiver.fail_next(3);
    let login = app.login("alice@example.com", PASSWORD).await;
    assert_eq!(login.status(), 200);
    app.wait_for_count(
        "SELECT COUNT(*) FROM webhook_outbox WHERE dead_at IS NOT NULL",
        1,
    )
    .await;
    let all = receiver.all();
    assert_eq!(all.len(), 6);
    let dead_id = all[3].id().to_owned();
    assert!(
        all[3..]
            .iter()
            .all(|d| d.id() == dead_id && d.status == 500)
    );
    assert_eq!(all[3].event_type(), "user.login");

    // The queue's gauges are read in the background: wait for a read that sees the dead one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let metrics = loop {
        let metrics = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics
            .lines()
            .any(|l| l == "latchkey_webhook_outbox_dead 1")
        {
            break metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead webhook in\n{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    for line in [
        r#"latchkey_webhook_deliveries_total{type="user.created",outcome="retried"} 2"#,
        r#"latchkey_webhook_deliveries_total{type="user.created",outcome="delivered"} 1"#,
        r#"latchkey_webhook_deliveries_total{type="user.login",outcome="retried"} 2"#,
        r#"latchkey_webhook_deliveries_total{type="user.login",outcome="dead"} 1"#,
        "latchkey_webhook_outbox_backlog 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    // The operator lists it and retries it: delivered with the same id.
    let dir = std::env::temp_dir();
    let listed = run(
        &[
            "webhooks",
            "list",
            "--dead",
            "--json",
            "--database-url",
            &app.db.url,
        ],
        &dir,
    );
    assert!(listed.status.success(), "{listed:?}");
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let rows = listed["webhooks"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["event_id"], dead_id.as_str());
    assert_eq!(rows[0]["type"], "user.login");
    assert_eq!(rows[0]["attempts"], 3);
    assert_eq!(rows[0]["last_error"], "the receiver answered 500");
    let row_id = rows[0]["id"].as_str().unwrap();
    let retried = run(
        &["webhooks", "retry", row_id, "--database-url", &app.db.url],
        &dir,
    );
    assert!(retried.status.success(), "{retried:?}");
    let again = run(
        &["webhooks", "retry", row_id, "--database-url", &app.db.url],
        &dir,
    );
    assert!(
        !again.status.success(),
        "only a dead delivery can be retried"
    );

    let delivered = receiver.wait_delivered(2).await;
    assert_eq!(delivered[1].id(), dead_id);
    assert_eq!(receiver.all().len(), 7);
    assert_eq!(alice.body["user"]["email"], "alice@example.com");
}

async fn a_receiver_that_is_down_gets_its_events_when_back_and_holds_up_no_email(db: Db) {
    let receiver = Receiver::start().await;
    let sink = SmtpSink::start().await;
    let url = receiver.url();
    let app = TestApp::spawn_with_sink(db, &sink, |o| with_receiver(o, &url)).await;

    receiver.stop();
    app.signed_up("alice@example.com").await;
    // The verification email goes out while the receiver refuses connections …
    sink.wait_for(1).await;
    app.wait_for_count(
        "SELECT COUNT(*) FROM webhook_outbox WHERE attempts >= 2 AND sent_at IS NULL",
        1,
    )
    .await;
    let error = app
        .text("SELECT last_error FROM webhook_outbox")
        .await
        .unwrap();
    assert!(
        !error.contains("127.0.0.1"),
        "no URL in the stored error: {error}"
    );
    // … and the event arrives once it is back, with the id it was written with.
    receiver.restart().await;
    let delivered = receiver.wait_delivered(1).await;
    let id = app
        .text("SELECT event_id FROM webhook_outbox")
        .await
        .unwrap();
    assert_eq!(delivered[0].id(), id);
    assert_eq!(delivered[0].event_type(), "user.created");

    // The reverse: the relay down, webhooks still go out.
    sink.stop();
    let login = app.login("alice@example.com", PASSWORD).await;
    assert_eq!(login.status(), 200);
    let forgot = app
        .post_json(
            "/auth/password/forgot",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(forgot.status(), 202);
    let delivered = receiver.wait_delivered(2).await;
    assert_eq!(delivered[1].event_type(), "user.login");
    app.wait_for_count(
        "SELECT COUNT(*) FROM outbox WHERE kind = 'password_reset' AND sent_at IS NULL AND attempts >= 1",
        1,
    )
    .await;
}

async fn each_endpoint_has_its_own_filter_and_secrets(db: Db) {
    let logins = Receiver::start().await;
    let everything = Receiver::start().await;
    let (a, b) = (logins.url(), everything.url());
    let app = TestApp::spawn_with(db, move |o| {
        o.webhook_retry_base_ms = Some(20);
        o.webhooks = Some(vec![
            EndpointSetting {
                url: a,
                // Rotation: both secrets sign.
                secret: format!("{WEBHOOK_SECRET} {WEBHOOK_SECRET_2}"),
                events: Some(vec!["user.login".into()]),
            },
            EndpointSetting {
                url: b,
                secret: WEBHOOK_SECRET_2.into(),
                events: None,
            },
        ]);
    })
    .await;

    app.signed_up("alice@example.com").await;
    let login = app.login("alice@example.com", PASSWORD).await;
    assert_eq!(login.status(), 200);

    let all = everything.wait_delivered(2).await;
    assert_eq!(kinds(&all, 0), ["user.created", "user.login"]);
    let only = logins.wait_delivered(1).await;
    assert_eq!(only[0].event_type(), "user.login");
    assert_eq!(verify_signature(&only[0], WEBHOOK_SECRET), 1);
    assert_eq!(verify_signature(&only[0], WEBHOOK_SECRET_2), 1);
    assert_eq!(only[0].headers["webhook-signature"].split(' ').count(), 2);
    for d in &all {
        assert_eq!(verify_signature(d, WEBHOOK_SECRET_2), 1);
        assert_eq!(verify_signature(d, WEBHOOK_SECRET), 0);
    }
    let login_event = all.iter().find(|d| d.event_type() == "user.login").unwrap();
    assert_eq!(
        only[0].id(),
        login_event.id(),
        "one event, one id, for every endpoint"
    );
    assert_eq!(only[0].body, login_event.body);
    // Nothing else came: the filtered receiver never saw the signup.
    app.wait_for_count(
        "SELECT COUNT(*) FROM webhook_outbox WHERE sent_at IS NOT NULL",
        3,
    )
    .await;
    assert_eq!(logins.all().len(), 1);
    assert_eq!(everything.all().len(), 2);
}

async fn two_instances_never_send_an_event_twice(db: Db) {
    let receiver = Receiver::start().await;
    let url = receiver.url();
    // Room for every login's hash at once: this test is about delivery, not load shedding.
    let first = TestApp::spawn_with_receiver(db, &receiver, |o| o.hash_queue = Some(64)).await;
    let second = first
        .another_instance(|o| {
            with_receiver(o, &url);
            o.hash_queue = Some(64);
        })
        .await;
    first.signed_up("alice@example.com").await;

    const LOGINS: usize = 24;
    let logins = (0..LOGINS).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.login("alice@example.com", PASSWORD)
    });
    for response in join_all(logins).await {
        assert_eq!(response.status(), 200);
    }
    receiver.wait_delivered(LOGINS + 1).await;
    first
        .wait_for_count(
            "SELECT COUNT(*) FROM webhook_outbox WHERE sent_at IS NOT NULL",
            i64::try_from(LOGINS + 1).unwrap(),
        )
        .await;
    let all = receiver.all();
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &all {
        *per_id.entry(d.id()).or_default() += 1;
    }
    assert_eq!(per_id.len(), LOGINS + 1);
    assert!(per_id.values().all(|&n| n == 1), "{per_id:?}");
    assert_eq!(all.len(), LOGINS + 1);
}

/// `latchkey webhooks test URL` sends one signed `webhook.test` now; `config check` shows the
/// endpoints with their secrets redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_command_sends_a_signed_event_and_config_check_hides_secrets() {
    let receiver = Receiver::start().await;
    let url = receiver.url();
    let dir = std::env::temp_dir();
    let flags = [
        "--webhook-url",
        url.as_str(),
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--webhook-events",
        "user.created,session.revoked",
        "--json",
    ];
    let mut args = vec!["webhooks", "test", url.as_str()];
    args.extend_from_slice(&flags);
    let sent = run(&args, &dir);
    assert!(sent.status.success(), "{sent:?}");
    let printed: Value = serde_json::from_slice(&sent.stdout).unwrap();
    assert_eq!(printed["status"], 204);
    let got = receiver.wait_delivered(1).await;
    assert_eq!(got[0].event_type(), "webhook.test");
    assert_eq!(got[0].id(), printed["id"].as_str().unwrap());
    assert_eq!(verify_signature(&got[0], WEBHOOK_SECRET), 1);

    let unknown = run(&["webhooks", "test", "http://127.0.0.1:9/elsewhere"], &dir);
    assert!(!unknown.status.success(), "only a configured endpoint");

    let mut args = vec!["config", "check"];
    args.extend_from_slice(&flags);
    let check = run(&args, &dir);
    assert!(check.status.success(), "{check:?}");
    let stdout = String::from_utf8(check.stdout).unwrap();
    assert!(!stdout.contains("MfKQ9r8GKYqrTwjUPD8"), "{stdout}");
    let settings: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        settings["webhooks"],
        json!([{"url": url, "secrets": ["<redacted>"],
                "events": ["user.created", "session.revoked"]}])
    );

    let reserved = run(&["config", "check", "--token-claims", "plan,sub"], &dir);
    assert!(
        !reserved.status.success(),
        "a reserved claim is refused at start"
    );
    let error = String::from_utf8(reserved.stderr).unwrap();
    assert!(
        error.contains("token_claims may not include \"sub\""),
        "{error}"
    );
}
