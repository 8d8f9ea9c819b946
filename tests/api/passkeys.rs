//! Passkeys: registration, listing and removal, the passwordless login with a discoverable
//! credential, and a passkey as the answer to a login challenge. The authenticator is the tests'
//! own (`helpers::authenticator`, written from the WebAuthn specification), so every answer the
//! service accepts or refuses is built independently of its verifier.

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::authenticator::{Authenticator, b64};
use crate::helpers::*;

db_tests!(
    a_passkey_registers_and_signs_in_without_a_password,
    a_ceremony_works_once_for_its_own_kind_and_user_and_expires,
    assertions_that_do_not_verify_open_no_session,
    registration_refuses_bad_answers_duplicates_and_strangers,
    a_passkey_answers_the_login_challenge_as_the_second_factor,
    a_removed_passkey_signs_in_no_more,
    support_removes_passkeys_with_the_other_factors,
    changes_that_could_take_the_account_over_need_a_session_with_its_factor,
);

const ALICE: &str = "alice@example.com";
const SESSIONS: &str = "SELECT COUNT(*) FROM sessions";

async fn post(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
    let request = app.client.post(app.url(path)).json(&body);
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.unwrap()
}

/// A refusal's status and the `error` member of its body.
async fn refusal(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"].clone())
}

/// A registration's start: the ceremony and the creation options.
async fn register_start(app: &TestApp, token: &str) -> (String, Value) {
    let started = app
        .client
        .post(app.url("/auth/passkeys/register/start"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    let body: Value = started.json().await.unwrap();
    (
        body["ceremony"].as_str().unwrap().to_owned(),
        body["publicKey"].clone(),
    )
}

/// Registers a new credential of `authenticator` to the session's account: the 201 body.
pub async fn register(
    app: &TestApp,
    session: &Session,
    authenticator: &mut Authenticator,
    name: &str,
) -> Value {
    let (ceremony, options) = register_start(app, &session.access_token).await;
    let credential = authenticator.create(&options);
    let finished = post(
        app,
        "/auth/passkeys/register/finish",
        Some(&session.access_token),
        json!({"ceremony": ceremony, "credential": credential, "name": name}),
    )
    .await;
    assert_eq!(finished.status(), 201);
    finished.json().await.unwrap()
}

/// A passwordless login's start (a bare `POST`, no body): the ceremony and the request options.
async fn login_start(app: &TestApp) -> (String, Value) {
    let started = app
        .client
        .post(app.url("/auth/passkeys/login/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    let body: Value = started.json().await.unwrap();
    (
        body["ceremony"].as_str().unwrap().to_owned(),
        body["publicKey"].clone(),
    )
}

async fn login_finish(app: &TestApp, ceremony: &str, credential: &Value) -> reqwest::Response {
    let body = json!({"ceremony": ceremony, "credential": credential});
    post(app, "/auth/passkeys/login/finish", None, body).await
}

async fn a_passkey_registers_and_signs_in_without_a_password(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up(ALICE).await;
    let mut phone = Authenticator::new(PUBLIC_URL);

    // The creation options: this relying party, the user id as the user handle, a discoverable
    // credential with user verification.
    let (_, options) = register_start(&app, &alice.access_token).await;
    assert_eq!(options["rp"]["id"], "localhost");
    let user_id = uuid::Uuid::parse_str(alice.user_id()).unwrap();
    assert_eq!(options["user"]["id"], b64(user_id.as_bytes()));
    assert_eq!(options["user"]["name"], ALICE);
    let selection = &options["authenticatorSelection"];
    assert_eq!(selection["residentKey"], "required", "{options}");
    assert_eq!(selection["userVerification"], "required", "{options}");
    assert_eq!(options["excludeCredentials"], json!([]));

    let added = register(&app, &alice, &mut phone, "  Phone ").await;
    assert_eq!(added["name"], "Phone");
    assert_eq!(added["last_used_at"], Value::Null);
    let id = added["id"].as_str().unwrap().to_owned();
    let listed = app
        .client
        .get(app.url("/auth/passkeys"))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["passkeys"], json!([added]));
    let stored = format!(
        "SELECT credential_id FROM passkeys WHERE id = '{id}' AND user_id = '{}'",
        alice.user_id()
    );
    assert_eq!(
        app.text(&stored).await.as_deref(),
        Some(phone.credentials[0].id_b64().as_str())
    );
    let audited = "SELECT COUNT(*) FROM audit_events WHERE kind = 'passkey_added'";
    assert_eq!(app.count(audited).await, 1);
    // The registration's ceremony is spent; the first start's, never answered, waits to expire.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM passkey_ceremonies").await,
        1
    );

    // A second registration excludes the first credential.
    let (_, options) = register_start(&app, &alice.access_token).await;
    let excluded = &options["excludeCredentials"];
    assert_eq!(
        excluded[0]["id"],
        phone.credentials[0].id_b64(),
        "{options}"
    );

    // The login: no address, no allowed credentials; the credential names its user.
    let (ceremony, options) = login_start(&app).await;
    assert_eq!(options["rpId"], "localhost");
    assert_eq!(options["userVerification"], "required");
    assert!(
        options["allowCredentials"]
            .as_array()
            .is_none_or(|a| a.is_empty())
    );
    let before = app.count(SESSIONS).await;
    let answer = phone.get(&options);
    let response = login_finish(&app, &ceremony, &answer).await;
    assert_eq!(response.status(), 200);
    let session = Session::from_response(response).await;
    assert_session_cookies_set(&session, 7 * 24 * 3600);
    assert_eq!(session.user_id(), alice.user_id());
    let claims = TestApp::claims(&session.access_token);
    assert_eq!(claims["amr"], json!(["hwk"]));
    assert_eq!(claims["aal"], 2);
    assert_eq!(app.me(&session.access_token).await.status(), 200);
    assert_eq!(app.count(SESSIONS).await, before + 1);
    let amr = "SELECT COUNT(*) FROM sessions WHERE amr = 'hwk'";
    assert_eq!(app.count(amr).await, 1);
    let used =
        format!("SELECT COUNT(*) FROM passkeys WHERE id = '{id}' AND last_used_at IS NOT NULL");
    assert_eq!(app.count(&used).await, 1);
    let logins = "SELECT COUNT(*) FROM audit_events WHERE kind = 'login'";
    assert_eq!(
        app.count(logins).await,
        1,
        "the passkey login (signup is its own kind)"
    );
    // The ceremony was spent.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM passkey_ceremonies WHERE kind = 'login'")
            .await,
        0
    );
    let current = app.current_session(&session.access_token).await;
    assert_eq!(current["amr"], json!(["hwk"]));

    // Refresh keeps how the session signed in.
    let refreshed = app.refresh(&session.refresh_token).await;
    assert_eq!(refreshed.status(), 200);
    let refreshed = Session::from_response(refreshed).await;
    assert_eq!(
        TestApp::claims(&refreshed.access_token)["amr"],
        json!(["hwk"])
    );
}

async fn a_ceremony_works_once_for_its_own_kind_and_user_and_expires(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up(ALICE).await;
    let bob = app.signed_up("bob@example.com").await;
    let mut phone = Authenticator::new(PUBLIC_URL);
    register(&app, &alice, &mut phone, "Phone").await;

    // Replayed: the second use of one answer finds its ceremony spent.
    let (ceremony, options) = login_start(&app).await;
    let answer = phone.get(&options);
    assert_eq!(login_finish(&app, &ceremony, &answer).await.status(), 200);
    let sessions = app.count(SESSIONS).await;
    let (status, error) = refusal(login_finish(&app, &ceremony, &answer).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("token_invalid"))
    );
    assert_eq!(app.count(SESSIONS).await, sessions);

    // A registration's ceremony does not finish a login, nor a login's a registration.
    let (registration, creation) = register_start(&app, &alice.access_token).await;
    let (login, request) = login_start(&app).await;
    let answer = phone.get(&request);
    let (status, error) = refusal(login_finish(&app, &registration, &answer).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("token_invalid"))
    );
    let mut tablet = Authenticator::new(PUBLIC_URL);
    let created = tablet.create(&creation);
    let body = json!({"ceremony": login, "credential": created});
    let wrong_kind = post(
        &app,
        "/auth/passkeys/register/finish",
        Some(&alice.access_token),
        body,
    );
    let (status, error) = refusal(wrong_kind.await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("token_invalid"))
    );

    // Alice's registration ceremony is not Bob's.
    let body = json!({"ceremony": registration, "credential": created});
    let stranger = post(
        &app,
        "/auth/passkeys/register/finish",
        Some(&bob.access_token),
        body,
    );
    let (status, error) = refusal(stranger.await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("token_invalid"))
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM passkeys").await, 1);

    // Both are still Alice's to finish; after five minutes they are gone.
    app.clock.advance(std::time::Duration::from_secs(301));
    let body = json!({"ceremony": registration, "credential": created});
    let late = post(
        &app,
        "/auth/passkeys/register/finish",
        Some(&alice.access_token),
        body,
    );
    let (status, error) = refusal(late.await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("token_invalid"))
    );
    let (status, error) = refusal(login_finish(&app, &login, &answer).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("token_invalid"))
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM passkeys").await, 1);
    assert_eq!(app.count(SESSIONS).await, sessions);

    // Bad input: 422 on the field, nothing spent.
    let (ceremony, options) = login_start(&app).await;
    let good = phone.get(&options);
    for (body, field) in [
        (json!({"credential": good}), "ceremony"),
        (json!({"ceremony": ceremony}), "credential"),
        (
            json!({"ceremony": ceremony, "credential": {"id": 1}}),
            "credential",
        ),
        (json!({"ceremony": "", "credential": good}), "ceremony"),
    ] {
        let (status, error) =
            refusal(post(&app, "/auth/passkeys/login/finish", None, body.clone()).await).await;
        assert_eq!(status, 422, "{body}");
        assert!(error["fields"][field].is_string(), "{body}: {error}");
    }
    let unknown = json!({"ceremony": ceremony, "credential": good, "remember": true});
    let (status, _) = refusal(post(&app, "/auth/passkeys/login/finish", None, unknown).await).await;
    assert_eq!(status, 422);
    assert_eq!(
        login_finish(&app, &ceremony, &good).await.status(),
        200,
        "still unspent"
    );
}

async fn assertions_that_do_not_verify_open_no_session(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up(ALICE).await;
    let mut phone = Authenticator::new(PUBLIC_URL);
    register(&app, &alice, &mut phone, "Phone").await;
    let sessions = app.count(SESSIONS).await;
    let failures = "SELECT COUNT(*) FROM audit_events WHERE kind = 'login_failed'";

    // Another origin (a phishing page relaying the ceremony).
    let (ceremony, options) = login_start(&app).await;
    phone.origin = "http://localhost:9999".to_owned();
    refused(&app, &ceremony, phone.get(&options), "another origin").await;
    phone.origin = PUBLIC_URL.to_owned();

    // No user verification: presence alone is not a passkey login.
    let (ceremony, options) = login_start(&app).await;
    phone.verifies_user = false;
    refused(&app, &ceremony, phone.get(&options), "no user verification").await;
    phone.verifies_user = true;

    // A signature over something else.
    let (ceremony, options) = login_start(&app).await;
    let mut answer = phone.get(&options);
    let mut data = crate::helpers::authenticator::unb64(
        answer["response"]["authenticatorData"].as_str().unwrap(),
    );
    data[36] ^= 1; // the counter's last byte
    answer["response"]["authenticatorData"] = json!(b64(&data));
    refused(&app, &ceremony, answer, "tampered").await;

    // A credential the service never registered, naming Alice as its user.
    let mut stranger = Authenticator::new(PUBLIC_URL);
    let (_, creation) = register_start(&app, &alice.access_token).await;
    stranger.create(&creation);
    let (ceremony, options) = login_start(&app).await;
    refused(&app, &ceremony, stranger.get(&options), "unregistered").await;

    // A cloned authenticator: its counter is behind the one the service saw last.
    let clone = phone.credentials[0].clone();
    let (ceremony, options) = login_start(&app).await;
    assert_eq!(
        login_finish(&app, &ceremony, &phone.get(&options))
            .await
            .status(),
        200
    );
    let mut copy = Authenticator::new(PUBLIC_URL);
    copy.credentials.push(clone);
    let (ceremony, options) = login_start(&app).await;
    refused(&app, &ceremony, copy.get(&options), "cloned").await;

    // A disabled account.
    let disabled = format!(
        "UPDATE users SET disabled_at = 1 WHERE id = '{}'",
        alice.user_id()
    );
    sqlx::query(&disabled).execute(app.pool()).await.unwrap();
    let (ceremony, options) = login_start(&app).await;
    refused(&app, &ceremony, phone.get(&options), "disabled").await;

    assert_eq!(
        app.count(SESSIONS).await,
        sessions + 1,
        "only the real login"
    );
    assert_eq!(app.count(failures).await, 6);
}

/// A passwordless login's finish that must fail: 401 `invalid_credentials` and no cookie.
async fn refused(app: &TestApp, ceremony: &str, answer: Value, context: &str) {
    let response = login_finish(app, ceremony, &answer).await;
    assert!(response.headers().get("set-cookie").is_none(), "{context}");
    let (status, error) = refusal(response).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (401, Some("invalid_credentials")),
        "{context}: {error}"
    );
}

async fn registration_refuses_bad_answers_duplicates_and_strangers(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up(ALICE).await;
    let bob = app.signed_up("bob@example.com").await;
    let token = alice.access_token.as_str();
    let finish = |ceremony: &str, credential: &Value, name: Option<&str>| {
        let mut body = json!({"ceremony": ceremony, "credential": credential});
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        post(&app, "/auth/passkeys/register/finish", Some(token), body)
    };

    // An answer from another origin, or without user verification, answers nothing.
    let mut phone = Authenticator::new("http://evil.example");
    let (ceremony, options) = register_start(&app, token).await;
    let created = phone.create(&options);
    let (status, error) = refusal(finish(&ceremony, &created, None).await).await;
    assert_eq!(status, 422);
    assert!(error["fields"]["credential"].is_string(), "{error}");
    let mut key = Authenticator::new(PUBLIC_URL);
    key.verifies_user = false;
    let (ceremony, options) = register_start(&app, token).await;
    let (status, _) = refusal(finish(&ceremony, &key.create(&options), None).await).await;
    assert_eq!(status, 422);

    // Names: bounded and printable.
    let mut phone = Authenticator::new(PUBLIC_URL);
    let (ceremony, options) = register_start(&app, token).await;
    let created = phone.create(&options);
    for name in ["", "   ", &"x".repeat(65), "a\u{7}b"] {
        let (status, error) = refusal(finish(&ceremony, &created, Some(name)).await).await;
        assert_eq!(status, 422, "{name:?}");
        assert!(error["fields"]["name"].is_string(), "{name:?}: {error}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM passkeys").await, 0);
    assert_eq!(finish(&ceremony, &created, None).await.status(), 201);
    let named = "SELECT name FROM passkeys";
    assert_eq!(app.text(named).await.as_deref(), Some("Passkey"));

    // The same credential again, to Alice or to Bob: 409, once registered is registered.
    let (ceremony, options) = register_start(&app, token).await;
    let again = phone.attest(0, &options);
    let (status, error) = refusal(finish(&ceremony, &again, None).await).await;
    assert_eq!((status, error["code"].as_str()), (409, Some("conflict")));
    let (ceremony, options) = register_start(&app, &bob.access_token).await;
    let body = json!({"ceremony": ceremony, "credential": phone.attest(0, &options)});
    let to_bob = post(
        &app,
        "/auth/passkeys/register/finish",
        Some(&bob.access_token),
        body,
    );
    assert_eq!(refusal(to_bob.await).await.0, 409);
    assert_eq!(app.count("SELECT COUNT(*) FROM passkeys").await, 1);

    // Ten at most.
    for _ in 1..10 {
        register(&app, &alice, &mut Authenticator::new(PUBLIC_URL), "More").await;
    }
    let started = app
        .client
        .post(app.url("/auth/passkeys/register/start"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(refusal(started).await, (409, error_of("conflict")));

    // Strangers.
    for path in [
        "/auth/passkeys/register/start",
        "/auth/passkeys/register/finish",
    ] {
        let response = app.client.post(app.url(path)).json(&json!({})).send().await;
        let (status, error) = refusal(response.unwrap()).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (401, Some("unauthenticated"))
        );
    }
    let listed = app
        .client
        .get(app.url("/auth/passkeys"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 401);
    assert_eq!(app.count("SELECT COUNT(*) FROM passkeys").await, 10);
}

/// The `error` member of the contract's error body with this code, as `refusal()` reads it.
fn error_of(code: &str) -> Value {
    let message = match code {
        "conflict" => "This conflicts with existing data.",
        _ => unreachable!(),
    };
    json!({"code": code, "message": message})
}

/// A password login of Alice, who has TOTP and a passkey: its `mfa_token`.
async fn challenge(app: &TestApp) -> String {
    let response = app.login(ALICE, PASSWORD).await;
    assert!(response.headers().get("set-cookie").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["methods"], json!(["totp", "recovery_code", "passkey"]));
    body["mfa_token"].as_str().unwrap().to_owned()
}

/// A passkey ceremony for a login challenge.
async fn second_factor_start(app: &TestApp, token: &str) -> (String, Value) {
    let body = json!({"mfa_token": token});
    let started = post(app, "/auth/passkeys/login/start", None, body).await;
    assert_eq!(started.status(), 200);
    let body: Value = started.json().await.unwrap();
    (
        body["ceremony"].as_str().unwrap().to_owned(),
        body["publicKey"].clone(),
    )
}

async fn a_passkey_answers_the_login_challenge_as_the_second_factor(db: Db) {
    let app = TestApp::spawn(db).await;
    let enrolled = crate::mfa::enroll(&app, ALICE).await;
    let mut phone = Authenticator::new(PUBLIC_URL);
    let added = register(&app, &enrolled.session, &mut phone, "Phone").await;

    let verify = |token: &str, ceremony: &str, credential: &Value| {
        let body = json!({"mfa_token": token, "ceremony": ceremony, "credential": credential});
        post(&app, "/auth/mfa/verify", None, body)
    };

    let token = challenge(&app).await;
    let (ceremony, options) = second_factor_start(&app, &token).await;
    let allowed = options["allowCredentials"].as_array().unwrap();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["id"], phone.credentials[0].id_b64());
    let answer = phone.get(&options);

    // The ceremony of this challenge does not finish a passwordless login.
    let (status, error) = refusal(login_finish(&app, &ceremony, &answer).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("token_invalid"))
    );
    // Nor does a passwordless ceremony answer the challenge.
    let (passwordless, request) = login_start(&app).await;
    let other = phone.get(&request);
    let (status, error) = refusal(verify(&token, &passwordless, &other).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("token_invalid"))
    );

    // Without user verification: a wrong answer, counted like a wrong code.
    let (weak, request) = second_factor_start(&app, &token).await;
    phone.verifies_user = false;
    let unverified = phone.get(&request);
    phone.verifies_user = true;
    let (status, error) = refusal(verify(&token, &weak, &unverified).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
    let failures = "SELECT failures FROM mfa_challenges";
    assert_eq!(app.count(failures).await, 1);

    let before = app.count(SESSIONS).await;
    let response = verify(&token, &ceremony, &answer).await;
    assert_eq!(response.status(), 200);
    let session = Session::from_response(response).await;
    assert_session_cookies_set(&session, 7 * 24 * 3600);
    let claims = TestApp::claims(&session.access_token);
    assert_eq!(claims["amr"], json!(["pwd", "hwk"]));
    assert_eq!(claims["aal"], 2);
    assert_eq!(app.count(SESSIONS).await, before + 1);
    let used = format!(
        "SELECT COUNT(*) FROM passkeys WHERE id = '{}' AND last_used_at IS NOT NULL",
        added["id"].as_str().unwrap()
    );
    assert_eq!(app.count(&used).await, 1);

    // The challenge is spent: the same answer, or a new ceremony for it, gets nothing.
    let (status, error) = refusal(verify(&token, &ceremony, &answer).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("token_invalid"))
    );
    let again = post(
        &app,
        "/auth/passkeys/login/start",
        None,
        json!({"mfa_token": token}),
    );
    assert_eq!(refusal(again.await).await.0, 400);

    // Another account's challenge cannot be answered with Alice's ceremony.
    let bob = crate::mfa::enroll(&app, "bob@example.com").await;
    let bob_login = app.login("bob@example.com", PASSWORD).await;
    let bob_token: Value = bob_login.json().await.unwrap();
    let bob_token = bob_token["mfa_token"].as_str().unwrap().to_owned();
    let alice_token = challenge(&app).await;
    let (ceremony, options) = second_factor_start(&app, &alice_token).await;
    let answer = phone.get(&options);
    let (status, error) = refusal(verify(&bob_token, &ceremony, &answer).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("token_invalid"))
    );
    // Bob has no passkey: his challenge has no passkey ceremony.
    drop(bob);
    let bob_start = post(
        &app,
        "/auth/passkeys/login/start",
        None,
        json!({"mfa_token": bob_token}),
    );
    assert_eq!(refusal(bob_start.await).await.0, 404);
    assert_eq!(
        app.count(SESSIONS).await,
        before + 2,
        "Alice's and Bob's signups, one login"
    );
}

async fn a_removed_passkey_signs_in_no_more(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up(ALICE).await;
    let bob = app.signed_up("bob@example.com").await;
    let mut phone = Authenticator::new(PUBLIC_URL);
    let added = register(&app, &alice, &mut phone, "Phone").await;
    let id = added["id"].as_str().unwrap();
    let delete = |token: &str, id: &str| {
        app.client
            .delete(app.url(&format!("/auth/passkeys/{id}")))
            .bearer_auth(token)
            .send()
    };

    // Bob cannot, and a bad id is no passkey.
    assert_eq!(
        refusal(delete(&bob.access_token, id).await.unwrap())
            .await
            .0,
        404
    );
    assert_eq!(
        refusal(delete(&alice.access_token, "nope").await.unwrap())
            .await
            .0,
        404
    );
    let other = uuid::Uuid::now_v7().to_string();
    assert_eq!(
        refusal(delete(&alice.access_token, &other).await.unwrap())
            .await
            .0,
        404
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM passkeys").await, 1);

    // A ceremony started before the removal finishes with nothing.
    let (ceremony, options) = login_start(&app).await;
    let answer = phone.get(&options);
    let removed = delete(&alice.access_token, id).await.unwrap();
    assert_eq!(removed.status(), 204);
    assert_eq!(app.count("SELECT COUNT(*) FROM passkeys").await, 0);
    let audited = "SELECT COUNT(*) FROM audit_events WHERE kind = 'passkey_removed'";
    assert_eq!(app.count(audited).await, 1);
    let sessions = app.count(SESSIONS).await;
    let (status, _) = refusal(login_finish(&app, &ceremony, &answer).await).await;
    assert_eq!(status, 401);
    assert_eq!(app.count(SESSIONS).await, sessions);
    assert_eq!(
        refusal(delete(&alice.access_token, id).await.unwrap())
            .await
            .0,
        404
    );
}

async fn support_removes_passkeys_with_the_other_factors(db: Db) {
    use crate::admin_api::{admin, admin_key};
    use reqwest::Method;
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up(ALICE).await;
    register(&app, &alice, &mut Authenticator::new(PUBLIC_URL), "Phone").await;
    let (_, key) = admin_key(&app).await;
    let path = format!("/admin/v1/users/{}/mfa", alice.user_id());
    let removed = admin(&app, &key, Method::DELETE, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    assert_eq!(app.count("SELECT COUNT(*) FROM passkeys").await, 0);
    let removals = "SELECT COUNT(*) FROM audit_events WHERE kind = 'mfa_disabled'";
    assert_eq!(app.count(removals).await, 1);
    let again = admin(&app, &key, Method::DELETE, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
}

/// An account with a second factor or a passkey allows the changes that could take it over (its
/// address, its deletion, its factors) only to a session that signed in with one. The session
/// that confirmed TOTP, or registered a passkey, proved it; an older password-only session did
/// not, and gets 403 `mfa_required` with nothing changed.
async fn changes_that_could_take_the_account_over_need_a_session_with_its_factor(db: Db) {
    let app = TestApp::spawn(db).await;
    let older = app.signed_up(ALICE).await;
    let enrolled = crate::mfa::enroll(&app, "bob@example.com").await;
    // Alice: a password-only session, then a passkey registered from another session.
    let login = app.login(ALICE, PASSWORD).await;
    let newer = Session::from_response(login).await;
    let mut phone = Authenticator::new(PUBLIC_URL);
    register(&app, &newer, &mut phone, "Phone").await;
    let amr = |id: &str| format!("SELECT amr FROM sessions WHERE id = '{id}'");
    let newer_id = TestApp::claims(&newer.access_token)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.text(&amr(&newer_id)).await.as_deref(), Some("pwd hwk"));

    let attempts = [
        (
            reqwest::Method::POST,
            "/auth/email/change".to_owned(),
            json!({"new_email": "eve@example.com", "password": PASSWORD}),
        ),
        (
            reqwest::Method::DELETE,
            "/auth/me".to_owned(),
            json!({"password": PASSWORD}),
        ),
        (
            reqwest::Method::POST,
            "/auth/mfa/totp/enroll".to_owned(),
            json!({"password": PASSWORD}),
        ),
        (
            reqwest::Method::POST,
            "/auth/passkeys/register/start".to_owned(),
            json!({}),
        ),
    ];
    for (method, path, body) in &attempts {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(&older.access_token)
            .json(body)
            .send()
            .await
            .unwrap();
        let (status, error) = refusal(response).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (403, Some("mfa_required")),
            "{path}"
        );
    }
    let listed: Value = app
        .client
        .get(app.url("/auth/passkeys"))
        .bearer_auth(&older.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = listed["passkeys"][0]["id"].as_str().unwrap().to_owned();
    let remove = app
        .client
        .delete(app.url(&format!("/auth/passkeys/{id}")))
        .bearer_auth(&older.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(refusal(remove).await.0, 403);
    assert_eq!(app.count("SELECT COUNT(*) FROM passkeys").await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM mfa_totp").await,
        1,
        "Bob's only"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 2);
    let changes = "SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'email_change'";
    assert_eq!(app.count(changes).await, 0);

    // The session that signed in with the passkey does them.
    let (ceremony, options) = login_start(&app).await;
    let with_passkey = login_finish(&app, &ceremony, &phone.get(&options)).await;
    let with_passkey = Session::from_response(with_passkey).await;
    let change = app
        .client
        .post(app.url("/auth/email/change"))
        .bearer_auth(&with_passkey.access_token)
        .json(&json!({"new_email": "eve@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), 202);
    // Bob's session confirmed his TOTP: it removes it (the password re-entered).
    let disable = app
        .client
        .delete(app.url("/auth/mfa/totp"))
        .bearer_auth(&enrolled.session.access_token)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(disable.status(), 204);
    // Without a factor left, any session may again.
    let remove = app
        .client
        .delete(app.url(&format!("/auth/passkeys/{id}")))
        .bearer_auth(&with_passkey.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(remove.status(), 204);
    let delete = app
        .client
        .delete(app.url("/auth/me"))
        .bearer_auth(&older.access_token)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
}
