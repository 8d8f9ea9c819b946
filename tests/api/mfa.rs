//! The second factor: TOTP enrollment, the login challenge and its `mfa_token`, recovery codes,
//! replays and clock skew, removal. The codes are computed here, independently of the service
//! (RFC 6238 with HMAC-SHA-1), from the secret the enrollment returned.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    enrollment_then_a_login_needs_the_second_factor,
    a_code_is_accepted_once_and_within_one_step,
    recovery_codes_work_once_each,
    the_mfa_token_is_useless_anywhere_else_and_dies,
    wrong_codes_count_as_failed_logins,
    a_password_change_before_the_verification_ends_the_challenge_and_keeps_the_factor,
    removing_the_factor_needs_the_password,
    bad_input_changes_nothing,
    support_removes_a_users_factor_with_an_admin_key,
);

/// RFC 4648 base32, no padding.
pub fn base32(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u32, Vec::new());
    for c in text.bytes() {
        let index = ALPHABET.iter().position(|&a| a == c).expect("base32") as u32;
        value = (value << 5) | index;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
        }
    }
    out
}

/// The 6-digit TOTP code of `secret` for the 30-second step `step` (RFC 6238, HOTP of RFC 4226).
pub fn code_at_step(secret: &[u8], step: u64) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).unwrap();
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = u32::from_be_bytes(digest[offset..offset + 4].try_into().unwrap()) & 0x7fff_ffff;
    format!("{:06}", binary % 1_000_000)
}

#[test]
fn the_tests_own_codes_are_the_rfc_6238_test_vectors() {
    let secret = b"12345678901234567890";
    for (time, code) in [
        (59, "287082"),
        (1_111_111_109, "081804"),
        (2_000_000_000, "279037"),
    ] {
        assert_eq!(code_at_step(secret, time / 30), code, "{time}");
    }
    assert_eq!(base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"), secret);
}

/// A signed-up account with TOTP on: the secret, the step its confirmation used, the recovery
/// codes, and the session it signed up with.
pub struct Enrolled {
    pub session: Session,
    pub secret: Vec<u8>,
    pub step: u64,
    pub recovery_codes: Vec<String>,
}

pub fn step_now(app: &TestApp) -> u64 {
    u64::try_from(app.clock.now()).unwrap() / 1000 / 30
}

async fn post(app: &TestApp, path: &str, token: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn error(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"].clone())
}

/// Freezes the app's clock at the start of a step, so that codes are exact.
pub fn freeze(app: &TestApp) {
    let step = step_now(app) + 1;
    app.clock
        .freeze_at(i64::try_from(step * 30_000).unwrap() + 1000);
}

pub async fn enroll(app: &TestApp, email: &str) -> Enrolled {
    let session = app.signed_up(email).await;
    let started = post(
        app,
        "/auth/mfa/totp/enroll",
        &session.access_token,
        &json!({"password": PASSWORD}),
    )
    .await;
    assert_eq!(started.status(), 200);
    let started: Value = started.json().await.unwrap();
    let secret = base32(started["secret"].as_str().unwrap());
    let step = step_now(app);
    let code = code_at_step(&secret, step);
    let confirmed = post(
        app,
        "/auth/mfa/totp/confirm",
        &session.access_token,
        &json!({"code": code}),
    )
    .await;
    assert_eq!(confirmed.status(), 200);
    let confirmed: Value = confirmed.json().await.unwrap();
    let recovery_codes = confirmed["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    Enrolled {
        session,
        secret,
        step,
        recovery_codes,
    }
}

/// A login of an enrolled account: its `mfa_token`.
async fn challenged(app: &TestApp, email: &str) -> String {
    let response = app.login(email, PASSWORD).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("set-cookie").is_none(),
        "no cookie before the second factor"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["mfa_required"], true, "{body}");
    body["mfa_token"].as_str().unwrap().to_owned()
}

async fn verify(app: &TestApp, body: &Value) -> reqwest::Response {
    app.post_json("/auth/mfa/verify", body).await
}

async fn enrollment_then_a_login_needs_the_second_factor(db: Db) {
    let app = TestApp::spawn(db).await;
    freeze(&app);
    let session = app.signed_up("ada@example.com").await;
    let token = &session.access_token;
    assert_eq!(TestApp::claims(token)["amr"], json!(["pwd"]));
    assert_eq!(TestApp::claims(token)["aal"], 1);

    let wrong = post(
        &app,
        "/auth/mfa/totp/enroll",
        token,
        &json!({"password": "not it at all"}),
    )
    .await;
    assert_eq!(
        error(wrong).await,
        (
            401,
            json!({"code": "invalid_credentials", "message": "Wrong email or password."})
        )
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM mfa_totp").await, 0);

    let started = post(
        &app,
        "/auth/mfa/totp/enroll",
        token,
        &json!({"password": PASSWORD}),
    )
    .await;
    assert_eq!(started.status(), 200);
    assert_eq!(started.headers()["cache-control"], "no-store");
    let started: Value = started.json().await.unwrap();
    let secret_text = started["secret"].as_str().unwrap();
    let secret = base32(secret_text);
    assert_eq!(secret.len(), 20, "160 bits");
    let uri = started["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/localhost:ada%40example.com?"),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={secret_text}")), "{uri}");
    assert!(uri.contains("issuer=localhost"), "{uri}");
    assert!(started["qr_svg"].as_str().unwrap().contains("<svg"));
    // At rest the secret is sealed, and not in force before its confirmation.
    let sealed = app
        .text("SELECT sealed_secret FROM mfa_totp")
        .await
        .unwrap();
    assert!(!sealed.contains(secret_text));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM mfa_totp WHERE confirmed_at IS NULL")
            .await,
        1
    );
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 200);
    let sessions = app.count("SELECT COUNT(*) FROM sessions").await;

    let step = step_now(&app);
    let not_it = code_at_step(&secret, step + 5);
    let refused = post(
        &app,
        "/auth/mfa/totp/confirm",
        token,
        &json!({"code": not_it}),
    )
    .await;
    assert_eq!(error(refused).await.0, 401);
    let confirmed = post(
        &app,
        "/auth/mfa/totp/confirm",
        token,
        &json!({"code": code_at_step(&secret, step)}),
    )
    .await;
    assert_eq!(confirmed.status(), 200);
    let codes: Vec<String> =
        serde_json::from_value(confirmed.json::<Value>().await.unwrap()["recovery_codes"].clone())
            .unwrap();
    assert_eq!(codes.len(), 10);
    assert_eq!(
        codes
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        10
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM mfa_recovery_codes WHERE used_at IS NULL")
            .await,
        10
    );
    for code in &codes {
        let sql =
            format!("SELECT COUNT(*) FROM mfa_recovery_codes WHERE code_hash LIKE '%{code}%'");
        assert_eq!(app.count(&sql).await, 0, "stored hashed");
    }
    let again = post(
        &app,
        "/auth/mfa/totp/enroll",
        token,
        &json!({"password": PASSWORD}),
    )
    .await;
    assert_eq!(error(again).await.1["code"], "conflict", "already on");

    // The login: a challenge, no session, no cookie.
    let mfa_token = challenged(&app, "ada@example.com").await;
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, sessions);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM mfa_challenges WHERE used_at IS NULL")
            .await,
        1
    );
    // The code that confirmed the enrollment was used: refused.
    let replay = verify(
        &app,
        &json!({"mfa_token": mfa_token, "code": code_at_step(&secret, step)}),
    )
    .await;
    assert_eq!(error(replay).await.1["code"], "invalid_credentials");
    app.clock.advance(std::time::Duration::from_secs(30));
    let code = code_at_step(&secret, step + 1);
    let verified = verify(&app, &json!({"mfa_token": mfa_token, "code": code})).await;
    assert_eq!(verified.status(), 200);
    let session = Session::from_response(verified).await;
    assert!(session.cookies.contains_key("__Host-lk_access"));
    assert!(session.cookies.contains_key("__Secure-lk_refresh"));
    assert_eq!(
        TestApp::claims(&session.access_token)["amr"],
        json!(["pwd", "otp"])
    );
    assert_eq!(TestApp::claims(&session.access_token)["aal"], 2);
    assert_eq!(app.me(&session.access_token).await.status(), 200);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions").await,
        sessions + 1
    );
    // The login's, and the signup's session that confirmed the enrollment with a first code.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE amr = 'pwd otp'")
            .await,
        2
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'mfa_challenged'")
            .await,
        1
    );
    let current = app.current_session(&session.access_token).await;
    assert_eq!(current["amr"], json!(["pwd", "otp"]));
    // The refreshed session keeps how it signed in.
    let refreshed = Session::from_response(app.refresh(&session.refresh_token).await).await;
    assert_eq!(TestApp::claims(&refreshed.access_token)["aal"], 2);
}

async fn a_code_is_accepted_once_and_within_one_step(db: Db) {
    let app = TestApp::spawn(db).await;
    freeze(&app);
    let e = enroll(&app, "ada@example.com").await;
    app.clock.advance(std::time::Duration::from_secs(5 * 30));
    let now = step_now(&app);
    for (step, accepted) in [
        (now - 2, false),
        (now + 2, false),
        (now - 1, true),
        (now, true),
        (now + 1, true),
    ] {
        let token = challenged(&app, "ada@example.com").await;
        let response = verify(
            &app,
            &json!({"mfa_token": token, "code": code_at_step(&e.secret, step)}),
        )
        .await;
        assert_eq!(
            response.status() == 200,
            accepted,
            "step {step} against {now}"
        );
    }
    // Each accepted step moved the mark: an earlier step, or the same one, is a replay.
    for step in [now - 1, now, now + 1] {
        let token = challenged(&app, "ada@example.com").await;
        let replay = verify(
            &app,
            &json!({"mfa_token": token, "code": code_at_step(&e.secret, step)}),
        )
        .await;
        assert_eq!(
            error(replay).await.1["code"],
            "invalid_credentials",
            "step {step}"
        );
    }
    assert!(e.step < now);
    // Two verifications racing with one code: one session.
    app.clock.advance(std::time::Duration::from_secs(3 * 30));
    let code = code_at_step(&e.secret, step_now(&app));
    let (a, b) = (
        challenged(&app, "ada@example.com").await,
        challenged(&app, "ada@example.com").await,
    );
    let before = app.count("SELECT COUNT(*) FROM sessions").await;
    let (body_a, body_b) = (
        json!({"mfa_token": a, "code": code}),
        json!({"mfa_token": b, "code": code}),
    );
    let (first, second) = tokio::join!(verify(&app, &body_a), verify(&app, &body_b));
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401]);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, before + 1);
}

async fn recovery_codes_work_once_each(db: Db) {
    let app = TestApp::spawn(db).await;
    freeze(&app);
    let e = enroll(&app, "ada@example.com").await;
    for (i, code) in e.recovery_codes.iter().enumerate() {
        let token = challenged(&app, "ada@example.com").await;
        // Typed loosely: upper case, a space for the dash.
        let typed = code.to_uppercase().replace('-', " ");
        let response = verify(&app, &json!({"mfa_token": token, "recovery_code": typed})).await;
        assert_eq!(response.status(), 200, "code {i}");
        let session = Session::from_response(response).await;
        assert_eq!(
            TestApp::claims(&session.access_token)["amr"],
            json!(["pwd", "otp"])
        );
        let token = challenged(&app, "ada@example.com").await;
        let again = verify(&app, &json!({"mfa_token": token, "recovery_code": code})).await;
        assert_eq!(
            error(again).await.1["code"],
            "invalid_credentials",
            "code {i} twice"
        );
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM mfa_recovery_codes WHERE used_at IS NULL")
            .await,
        0
    );
    let _ = e.session;
}

async fn the_mfa_token_is_useless_anywhere_else_and_dies(db: Db) {
    let app = TestApp::spawn(db).await;
    freeze(&app);
    let e = enroll(&app, "ada@example.com").await;
    let bob = enroll(&app, "bob@example.com").await;
    app.clock.advance(std::time::Duration::from_secs(60));
    let token = challenged(&app, "ada@example.com").await;
    // As an access token, as a refresh token.
    let me = app.me(&token).await;
    assert_eq!(error(me).await.1["code"], "unauthenticated");
    let refresh = app.refresh(&token).await;
    assert_eq!(error(refresh).await.1["code"], "session_revoked");
    // With another account's code.
    let bobs = code_at_step(&bob.secret, step_now(&app));
    let other = verify(&app, &json!({"mfa_token": token, "code": bobs})).await;
    assert_eq!(error(other).await.1["code"], "invalid_credentials");
    // Used once, then never again.
    let code = code_at_step(&e.secret, step_now(&app));
    assert_eq!(
        verify(&app, &json!({"mfa_token": token, "code": code}))
            .await
            .status(),
        200
    );
    app.clock.advance(std::time::Duration::from_secs(30));
    let code = code_at_step(&e.secret, step_now(&app));
    let twice = verify(&app, &json!({"mfa_token": token, "code": code})).await;
    assert_eq!(
        error(twice).await,
        (
            400,
            json!({"code": "token_invalid", "message": "This link is invalid or has expired."})
        )
    );
    // Expired after five minutes.
    let token = challenged(&app, "ada@example.com").await;
    app.clock.advance(std::time::Duration::from_secs(301));
    let code = code_at_step(&e.secret, step_now(&app));
    let expired = verify(&app, &json!({"mfa_token": token, "code": code})).await;
    assert_eq!(error(expired).await.1["code"], "token_invalid");
    // Out of attempts after five wrong codes, the right one included after.
    let token = challenged(&app, "ada@example.com").await;
    for _ in 0..5 {
        let wrong = verify(&app, &json!({"mfa_token": token, "code": "000000"})).await;
        assert_eq!(error(wrong).await.1["code"], "invalid_credentials");
    }
    let code = code_at_step(&e.secret, step_now(&app));
    let dead = verify(&app, &json!({"mfa_token": token, "code": code})).await;
    assert_eq!(error(dead).await.1["code"], "token_invalid");
    // A made-up token.
    let made_up = verify(&app, &json!({"mfa_token": "x".repeat(43), "code": code})).await;
    assert_eq!(error(made_up).await.1["code"], "token_invalid");
}

async fn wrong_codes_count_as_failed_logins(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        o.rate_limits = Some(latchkey::config::Toggle::On);
        o.login_failure_account_limit = Some(latchkey::config::Rate::new(
            3,
            std::time::Duration::from_secs(300),
        ));
    })
    .await;
    freeze(&app);
    let e = enroll(&app, "ada@example.com").await;
    app.clock.advance(std::time::Duration::from_secs(60));
    let token = challenged(&app, "ada@example.com").await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let wrong = verify(&app, &json!({"mfa_token": token, "code": "000000"})).await;
        statuses.push(wrong.status().as_u16());
    }
    assert!(
        statuses.contains(&429),
        "the account's failure limit applies: {statuses:?}"
    );
    let _ = e;
}

async fn a_password_change_before_the_verification_ends_the_challenge_and_keeps_the_factor(db: Db) {
    let app = TestApp::spawn(db).await;
    freeze(&app);
    let e = enroll(&app, "ada@example.com").await;
    app.clock.advance(std::time::Duration::from_secs(60));
    let token = challenged(&app, "ada@example.com").await;
    let new_password = "another long passphrase";
    let changed = post(
        &app,
        "/auth/password/change",
        &e.session.access_token,
        &json!({"current_password": PASSWORD, "new_password": new_password}),
    )
    .await;
    assert_eq!(changed.status(), 204);
    let code = code_at_step(&e.secret, step_now(&app));
    let stale = verify(&app, &json!({"mfa_token": token, "code": code})).await;
    assert_eq!(error(stale).await.1["code"], "token_invalid");
    // The factor stays: the next login with the new password is challenged too.
    let response = app.login("ada@example.com", new_password).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["mfa_required"], true);
    let verified = verify(&app, &json!({"mfa_token": body["mfa_token"], "code": code})).await;
    assert_eq!(verified.status(), 200);
}

async fn removing_the_factor_needs_the_password(db: Db) {
    let app = TestApp::spawn(db).await;
    freeze(&app);
    let e = enroll(&app, "ada@example.com").await;
    let token = &e.session.access_token;
    let remove = |password: &'static str| {
        app.client
            .delete(app.url("/auth/mfa/totp"))
            .bearer_auth(token)
            .json(&json!({"password": password}))
            .send()
    };
    assert_eq!(
        error(remove("not the password").await.unwrap()).await.1["code"],
        "invalid_credentials"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM mfa_totp").await, 1);
    let pending = challenged(&app, "ada@example.com").await;
    assert_eq!(remove(PASSWORD).await.unwrap().status(), 204);
    for table in ["mfa_totp", "mfa_recovery_codes", "mfa_challenges"] {
        assert_eq!(
            app.count(&format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'mfa_disabled'")
            .await,
        1
    );
    // The challenge went with it; the next login opens a session at once.
    app.clock.advance(std::time::Duration::from_secs(60));
    let code = code_at_step(&e.secret, step_now(&app));
    let gone = verify(&app, &json!({"mfa_token": pending, "code": code})).await;
    assert_eq!(error(gone).await.1["code"], "token_invalid");
    let login = app.login("ada@example.com", PASSWORD).await;
    assert!(login.headers().get("set-cookie").is_some());
    assert_eq!(
        error(remove(PASSWORD).await.unwrap()).await.1["code"],
        "not_found"
    );
}

async fn bad_input_changes_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    freeze(&app);
    let e = enroll(&app, "ada@example.com").await;
    app.clock.advance(std::time::Duration::from_secs(60));
    let token = challenged(&app, "ada@example.com").await;
    let code = code_at_step(&e.secret, step_now(&app));
    for (body, field) in [
        (json!({"code": code}), "mfa_token"),
        (json!({"mfa_token": token}), "code"),
        (
            json!({"mfa_token": token, "code": code, "recovery_code": e.recovery_codes[0]}),
            "code",
        ),
        (json!({"mfa_token": "", "code": code}), "mfa_token"),
    ] {
        let (status, error) = error(verify(&app, &body).await).await;
        assert_eq!(status, 422, "{body}");
        assert!(error["fields"].get(field).is_some(), "{body}: {error}");
    }
    let unknown = verify(
        &app,
        &json!({"mfa_token": token, "code": code, "remember": true}),
    )
    .await;
    assert_eq!(unknown.status(), 422);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM mfa_challenges WHERE failures > 0 OR used_at IS NOT NULL")
            .await,
        0
    );
    // Enrollment and confirmation refuse a missing password or code, and strangers.
    let no_password = post(
        &app,
        "/auth/mfa/totp/enroll",
        &e.session.access_token,
        &json!({}),
    )
    .await;
    assert_eq!(error(no_password).await.0, 422);
    let stranger = app
        .post_json("/auth/mfa/totp/enroll", &json!({"password": PASSWORD}))
        .await;
    assert_eq!(error(stranger).await.1["code"], "unauthenticated");
    // The challenge is still good after all that.
    assert_eq!(
        verify(&app, &json!({"mfa_token": token, "code": code}))
            .await
            .status(),
        200
    );
}

async fn support_removes_a_users_factor_with_an_admin_key(db: Db) {
    use crate::admin_api::{admin, admin_key};
    use reqwest::Method;
    let app = TestApp::spawn(db).await;
    freeze(&app);
    let e = enroll(&app, "ada@example.com").await;
    let user_id = e.session.user_id();
    let path = format!("/admin/v1/users/{user_id}/mfa");
    // Not with the user's own token, nor without a key.
    let own = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&e.session.access_token)
        .send();
    assert_eq!(error(own.await.unwrap()).await.0, 401);
    let (key_id, key) = admin_key(&app).await;
    let removed = admin(&app, &key, Method::DELETE, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    assert_eq!(app.count("SELECT COUNT(*) FROM mfa_totp").await, 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM mfa_recovery_codes").await,
        0
    );
    let audited = format!(
        "SELECT COUNT(*) FROM audit_events WHERE kind = 'mfa_disabled' AND admin_key_id = '{key_id}' \
         AND user_id = '{user_id}'"
    );
    assert_eq!(app.count(&audited).await, 1, "audited with the key");
    // The sessions stay; the next login needs the password alone.
    assert_eq!(app.me(&e.session.access_token).await.status(), 200);
    let login = app.login("ada@example.com", PASSWORD).await;
    assert!(login.headers().get("set-cookie").is_some());
    let again = admin(&app, &key, Method::DELETE, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(error(again).await.1["code"], "not_found");
    let nobody = format!("/admin/v1/users/{}/mfa", uuid::Uuid::now_v7());
    let missing = admin(&app, &key, Method::DELETE, &nobody)
        .send()
        .await
        .unwrap();
    assert_eq!(error(missing).await.1["code"], "not_found");
}
