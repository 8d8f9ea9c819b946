//! Sign-in with an OpenID provider, against a real one (`oidc-provider` from npm, see
//! `helpers::oidc`), the whole code flow driven over HTTP: a first sign-in creates the account, a
//! later one logs in; an address that an account has is never linked by the provider's word; a
//! tampered `state`, a replayed code, another browser, and ID tokens that do not verify
//! (audience, authorized party, expiry, nonce, issuer, an unknown key) are refused with nothing
//! written; a rotated key is fetched; a second factor is still asked for; identities are listed,
//! linked and unlinked (never the last way in), and a link whose session ended before the
//! provider sent the browser back links nothing.

use serde_json::{Value, json};

use crate::admin_api::admin_key;
use crate::db_tests;
use crate::helpers::oidc::{self, Browser, PROVIDER, Provider};
use crate::helpers::*;

db_tests!(
    a_first_sign_in_creates_the_account_and_the_next_logs_in,
    an_address_the_provider_does_not_vouch_for_creates_no_account,
    an_address_only_at_the_userinfo_endpoint_is_read_there,
    an_existing_address_is_never_taken_over_and_its_owner_links_the_provider,
    a_tampered_state_a_replayed_code_and_another_browser_are_refused,
    id_tokens_that_do_not_verify_are_refused_and_a_rotated_key_is_fetched,
    the_providers_refusal_an_unknown_provider_and_a_disabled_account_are_refused,
    an_account_with_a_second_factor_still_needs_it,
    identities_are_listed_and_unlinked_but_never_the_last_way_in,
    a_link_whose_session_ended_before_its_callback_links_nothing,
    the_pages_show_the_providers_and_the_linked_accounts,
);

const REDIRECT_URI: &str = "http://localhost:8080/auth/oidc/testop/callback";

/// The provider and an app configured for it; `None` when the provider tests are skipped.
async fn setup(db: Db) -> Option<(Provider, TestApp)> {
    if !oidc::available() {
        return None;
    }
    let provider = Provider::start(REDIRECT_URI);
    let app = TestApp::spawn_with(db, |o| provider.configure(o)).await;
    Some((provider, app))
}

async fn written(app: &TestApp) -> [i64; 5] {
    oidc::written(app.pool()).await
}

/// A refused callback: the login page with `code`'s message at `status`, the OIDC cookie
/// cleared and no session cookie.
async fn assert_refused(response: reqwest::Response, status: u16, message: &str, why: &str) {
    assert_eq!(response.status(), status, "{why}");
    let cookies = set_cookies(response.headers());
    assert_eq!(
        cookies.keys().collect::<Vec<_>>(),
        ["__Host-lk_oidc"],
        "{why}: only the OIDC cookie, cleared"
    );
    assert_eq!(cookies["__Host-lk_oidc"].value, "", "{why}");
    let page = response.text().await.unwrap();
    assert!(page.contains(message), "{why}: {page}");
}

const FAILED: &str = "Signing in with that provider did not work. Please try again.";

/// The session cookies of a signed-in callback (303 to `to`), and its access token.
fn signed_in(response: &reqwest::Response, to: &str, why: &str) -> String {
    assert_eq!(response.status(), 303, "{why}");
    assert_eq!(response.headers()["location"], to, "{why}");
    let cookies = set_cookies(response.headers());
    assert_eq!(
        cookies["__Host-lk_oidc"].value, "",
        "{why}: the OIDC cookie cleared"
    );
    assert_eq!(
        cookies["__Host-lk_access"].attributes,
        attrs(&[
            "httponly",
            "max-age=900",
            "path=/",
            "samesite=Lax",
            "secure"
        ]),
        "{why}"
    );
    assert!(cookies.contains_key("__Secure-lk_refresh"), "{why}");
    cookies["__Host-lk_access"].value.clone()
}

async fn a_first_sign_in_creates_the_account_and_the_next_logs_in(db: Db) {
    if !oidc::available() {
        return;
    }
    let provider = Provider::start(REDIRECT_URI);
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(db, |o| {
        provider.configure(o);
        with_receiver(o, &receiver.url());
    })
    .await;
    provider
        .will_sign_in("sub-ann", "Ann@Example.com", true)
        .await;
    let mut browser = Browser::default();
    let started = browser
        .get(
            &app,
            &format!("/auth/oidc/{PROVIDER}/start?return_to=%2Fwelcome"),
        )
        .await;
    assert_eq!(started.status(), 303);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let authorize = url::Url::parse(&location).unwrap();
    assert_eq!(
        authorize.origin().ascii_serialization(),
        provider.issuer,
        "to the provider's authorization endpoint"
    );
    let params: std::collections::HashMap<String, String> =
        authorize.query_pairs().into_owned().collect();
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], oidc::CLIENT_ID);
    assert_eq!(params["redirect_uri"], REDIRECT_URI);
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["scope"], "openid email profile");
    for p in ["state", "nonce", "code_challenge"] {
        assert!(params[p].len() >= 22, "{p} is random");
    }
    let cookie = &set_cookies(started.headers())["__Host-lk_oidc"];
    assert_eq!(
        cookie.attributes,
        attrs(&[
            "httponly",
            "max-age=600",
            "path=/",
            "samesite=Lax",
            "secure"
        ])
    );
    assert!(
        !cookie.value.contains(&params["state"]),
        "the state is sealed"
    );
    assert_eq!(
        written(&app).await,
        [0, 0, 0, 0, 0],
        "a start writes nothing"
    );

    let at = browser.through_provider(&app, location).await;
    assert_eq!(at.query()["iss"], provider.issuer);
    let response = browser.callback(&app, &at).await;
    let access = signed_in(&response, "http://localhost:8080/welcome", "first sign-in");
    let claims = TestApp::claims(&access);
    assert_eq!(claims["amr"], json!(["oidc"]));
    assert_eq!(claims["aal"], 1);
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["user"]["email"], "Ann@Example.com");
    assert_eq!(
        me["user"]["email_verified"], true,
        "the provider vouched for it"
    );
    assert_eq!(me["profile"]["display_name"], "Ann Example");
    assert_eq!(written(&app).await, [1, 1, 1, 1, 1]);
    let user_id = me["user"]["id"].as_str().unwrap().to_owned();
    let row = app
        .text("SELECT provider || ' ' || subject || ' ' || email || ' ' || user_id FROM identities")
        .await;
    assert_eq!(
        row.unwrap(),
        format!("testop sub-ann Ann@Example.com {user_id}")
    );
    assert_eq!(
        app.text("SELECT password_hash FROM users").await.unwrap(),
        "!no-password",
        "no password: the provider signs in"
    );
    assert_eq!(
        app.text("SELECT kind FROM audit_events").await.unwrap(),
        "signup"
    );
    assert_eq!(app.text("SELECT amr FROM sessions").await.unwrap(), "oidc");
    // The account's event was written with it, and delivered after the commit.
    let created = receiver.wait_delivered(1).await;
    assert_eq!(created[0].event_type(), "user.created");
    assert_eq!(created[0].json()["data"]["user"]["id"], user_id.as_str());
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox").await,
        0,
        "a vouched-for address gets no verification email"
    );

    // Another browser, later: the same provider account logs in to the same user.
    let response = Browser::default().sign_in(&app).await;
    let access = signed_in(&response, "/account", "second sign-in");
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["user"]["id"], user_id.as_str());
    assert_eq!(written(&app).await, [1, 1, 1, 2, 2]);
    let kinds = "SELECT COUNT(*) FROM audit_events WHERE kind = 'login'";
    assert_eq!(app.count(kinds).await, 1);
    let used = "SELECT COUNT(*) FROM identities WHERE last_login_at IS NOT NULL";
    assert_eq!(app.count(used).await, 1);
    let events = receiver.wait_delivered(2).await;
    assert_eq!(events[1].event_type(), "user.login");
}

/// Whoever claims an address at some provider does not get an account with it: the owner of
/// the address could sign up later, reset "their" password, and share the account unknowingly.
async fn an_address_the_provider_does_not_vouch_for_creates_no_account(db: Db) {
    let Some((provider, app)) = setup(db).await else {
        return;
    };
    provider
        .will_sign_in("sub-bob", "bob@example.com", false)
        .await;
    let response = Browser::default().sign_in(&app).await;
    assert_refused(response, 400, FAILED, "unverified address").await;
    assert_eq!(written(&app).await, [0, 0, 0, 0, 0]);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 0);
    // The ID token without the address, and the userinfo endpoint saying it is not verified:
    // the same.
    provider.tamper(json!({"email": null}), "k1").await;
    let response = Browser::default().sign_in(&app).await;
    assert_refused(response, 400, FAILED, "unverified at userinfo").await;
    // No address at all, in the ID token or at the userinfo endpoint: the same.
    provider.will_sign_in_without_address("sub-bob").await;
    let response = Browser::default().sign_in(&app).await;
    assert_refused(response, 400, FAILED, "no address").await;
    assert_eq!(written(&app).await, [0, 0, 0, 0, 0]);
    // Once the provider vouches for it, the account is made.
    provider
        .will_sign_in("sub-bob", "bob@example.com", true)
        .await;
    let response = Browser::default().sign_in(&app).await;
    signed_in(&response, "/account", "verified");
    assert_eq!(written(&app).await, [1, 1, 1, 1, 1]);
}

/// A provider that gives the scopes' claims at its userinfo endpoint only (OpenID Connect Core
/// 5.4), or leaves `email_verified` out of the ID token: the address and its verification are
/// read there, for the same `sub`, and the account is made with them.
async fn an_address_only_at_the_userinfo_endpoint_is_read_there(db: Db) {
    let Some((provider, app)) = setup(db).await else {
        return;
    };
    for (sub, removed) in [
        (
            "sub-eve",
            json!({"email": null, "email_verified": null, "name": null}),
        ),
        ("sub-fay", json!({"email_verified": null})),
    ] {
        let email = format!("{}@example.com", &sub[4..]);
        provider.will_sign_in(sub, &email, true).await;
        provider.tamper(removed, "k1").await;
        let response = Browser::default().sign_in(&app).await;
        let access = signed_in(&response, "/account", sub);
        let me: Value = app.me(&access).await.json().await.unwrap();
        assert_eq!(me["user"]["email"], email.as_str(), "{sub}");
        assert_eq!(
            me["user"]["email_verified"], true,
            "{sub}: verified at userinfo"
        );
        assert_eq!(me["profile"]["display_name"], "Ann Example", "{sub}");
        let identity = format!("SELECT COUNT(*) FROM identities WHERE subject = '{sub}'");
        assert_eq!(app.count(&identity).await, 1, "{sub}");
    }
    assert_eq!(written(&app).await, [2, 2, 2, 2, 2]);
}

async fn an_existing_address_is_never_taken_over_and_its_owner_links_the_provider(db: Db) {
    let Some((provider, app)) = setup(db).await else {
        return;
    };
    let owner = app.signed_up("carol@example.com").await;
    let before = written(&app).await;
    // The provider's word on the address, verified or not, is not the owner's: no sign-in, no
    // link, nothing written.
    for verified in [false, true] {
        provider
            .will_sign_in("sub-mallory", "Carol@example.com", verified)
            .await;
        let response = Browser::default().sign_in(&app).await;
        let why = format!("email_verified {verified}");
        let message = "An account with this address exists already. Log in to it, then link";
        assert_refused(response, 409, message, &why).await;
        assert_eq!(written(&app).await, before, "{why}: nothing written");
    }

    // The owner, signed in, links the provider's account that signs in there.
    provider
        .will_sign_in("sub-carol", "carol@work.example", true)
        .await;
    let linked = Browser::default().link(&app, &owner.access_token).await;
    assert_eq!(linked.status(), 303);
    assert_eq!(
        linked.headers()["location"],
        "/account/security?notice=identity_linked"
    );
    let cookies = set_cookies(linked.headers());
    assert_eq!(
        cookies.keys().collect::<Vec<_>>(),
        ["__Host-lk_oidc"],
        "no new session"
    );
    let owned = format!(
        "SELECT COUNT(*) FROM identities WHERE subject = 'sub-carol' AND user_id = '{}'",
        owner.user_id()
    );
    assert_eq!(app.count(&owned).await, 1);
    let audit = "SELECT COUNT(*) FROM audit_events WHERE kind = 'identity_linked'";
    assert_eq!(app.count(audit).await, 1);

    // From now on that provider account signs in to the owner's account.
    let response = Browser::default().sign_in(&app).await;
    let access = signed_in(&response, "/account", "linked sign-in");
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["user"]["id"], owner.user_id());
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);

    // Linking it to another account is a conflict, and changes nothing.
    let other = app.signed_up("dave@example.com").await;
    let refused = Browser::default().link(&app, &other.access_token).await;
    assert_refused(
        refused,
        409,
        "This conflicts with something",
        "another user's",
    )
    .await;
    assert_eq!(app.count("SELECT COUNT(*) FROM identities").await, 1);

    // Without a session there is no link to start.
    let anonymous = app
        .client
        .post(app.url(&format!("/auth/oidc/{PROVIDER}/link")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().get("set-cookie").is_none());
}

async fn a_tampered_state_a_replayed_code_and_another_browser_are_refused(db: Db) {
    let Some((provider, app)) = setup(db).await else {
        return;
    };
    provider
        .will_sign_in("sub-erin", "erin@example.com", true)
        .await;

    // A state other than the browser's: refused before the code is even exchanged, so the
    // right state with the same code still works after.
    let mut browser = Browser::default();
    let at = browser.start(&app, "").await;
    let cookie = browser.cookies.clone();
    let response = browser.callback(&app, &at.with("state", "forged")).await;
    assert_refused(response, 400, FAILED, "tampered state").await;
    assert_eq!(written(&app).await, [0, 0, 0, 0, 0]);

    // Another browser (no cookie) with the genuine answer: refused.
    let response = Browser::default().callback(&app, &at).await;
    assert_refused(response, 400, FAILED, "another browser").await;
    assert_eq!(written(&app).await, [0, 0, 0, 0, 0]);

    // The genuine browser and answer: signed in.
    browser.cookies = cookie.clone();
    let response = browser.callback(&app, &at).await;
    signed_in(&response, "/account", "the genuine answer");
    assert_eq!(written(&app).await, [1, 1, 1, 1, 1]);

    // The same answer replayed with the same cookie: the provider refuses the used code.
    browser.cookies = cookie;
    let response = browser.callback(&app, &at).await;
    assert_refused(response, 400, FAILED, "replayed code").await;
    assert_eq!(written(&app).await, [1, 1, 1, 1, 1], "nothing more");

    // A cookie for this browser but another start: the answer's state is not its state.
    let mut browser = Browser::default();
    let first = browser.start(&app, "").await;
    let _second = browser.start(&app, "").await;
    let response = browser.callback(&app, &first).await;
    assert_refused(response, 400, FAILED, "an older start's answer").await;
    // An answer from another issuer (RFC 9207 mix-up).
    let mut browser = Browser::default();
    let at = browser.start(&app, "").await;
    let response = browser
        .callback(&app, &at.with("iss", "https://evil.example"))
        .await;
    assert_refused(response, 400, FAILED, "another iss").await;
    // A cookie that was changed.
    let mut browser = Browser::default();
    let at = browser.start(&app, "").await;
    let sealed = browser.cookies["__Host-lk_oidc"].clone();
    let flipped = match sealed.as_bytes()[20] {
        b'A' => "B",
        _ => "A",
    };
    let tampered = format!("{}{flipped}{}", &sealed[..20], &sealed[21..]);
    browser.cookies.insert("__Host-lk_oidc".into(), tampered);
    let response = browser.callback(&app, &at).await;
    assert_refused(response, 400, FAILED, "a changed cookie").await;
    // And one that expired (ten minutes).
    let mut browser = Browser::default();
    let at = browser.start(&app, "").await;
    app.clock.advance(std::time::Duration::from_secs(601));
    let response = browser.callback(&app, &at).await;
    assert_refused(response, 400, FAILED, "an expired sign-in").await;
    assert_eq!(written(&app).await, [1, 1, 1, 1, 1], "nothing more");
}

async fn id_tokens_that_do_not_verify_are_refused_and_a_rotated_key_is_fetched(db: Db) {
    let Some((provider, app)) = setup(db).await else {
        return;
    };
    provider
        .will_sign_in("sub-finn", "finn@example.com", true)
        .await;
    let past = (app.clock.now() / 1000) - 60;
    let cases = [
        (json!({"aud": "someone-else"}), "k1", "another audience"),
        (
            json!({"aud": [oidc::CLIENT_ID, "other"]}),
            "k1",
            "an audience besides us",
        ),
        (
            json!({"aud": [oidc::CLIENT_ID, "other"], "azp": oidc::CLIENT_ID}),
            "k1",
            "an audience besides us, though we are the authorized party",
        ),
        (json!({"azp": "other"}), "k1", "another authorized party"),
        (json!({"exp": past}), "k1", "expired"),
        (json!({"nonce": "not-the-nonce"}), "k1", "wrong nonce"),
        (json!({"nonce": null}), "k1", "no nonce"),
        (
            json!({"iss": "https://evil.example"}),
            "k1",
            "another issuer",
        ),
        (json!({}), "stranger", "a key the provider never published"),
        (json!({}), "k2", "a key not published yet"),
    ];
    for (claims, key, why) in cases {
        provider.tamper(claims, key).await;
        let response = Browser::default().sign_in(&app).await;
        assert_refused(response, 400, FAILED, why).await;
        assert_eq!(
            written(&app).await,
            [0, 0, 0, 0, 0],
            "{why}: nothing written"
        );
    }
    // We as the authorized party of our own token are fine.
    provider.tamper(json!({"azp": oidc::CLIENT_ID}), "k1").await;
    let response = Browser::default().sign_in(&app).await;
    signed_in(&response, "/account", "azp is us");

    // The provider rotates to k2: the unknown kid refetches the JWKS, which now has it.
    provider.publish("k2").await;
    provider.tamper(json!({}), "k2").await;
    let response = Browser::default().sign_in(&app).await;
    signed_in(&response, "/account", "a rotated key");
    assert_eq!(written(&app).await[..4], [1, 1, 1, 2]);
}

async fn the_providers_refusal_an_unknown_provider_and_a_disabled_account_are_refused(db: Db) {
    let Some((provider, app)) = setup(db).await else {
        return;
    };
    provider
        .will_sign_in("sub-gil", "gil@example.com", true)
        .await;
    // The user said no at the provider: it answers error=access_denied with the state.
    let mut browser = Browser::default();
    let at = browser.start(&app, "").await;
    let state = at.query()["state"].clone();
    let denied = format!("/auth/oidc/{PROVIDER}/callback?error=access_denied&state={state}");
    let response = browser.get(&app, &denied).await;
    assert_refused(response, 400, FAILED, "access_denied").await;

    for path in [
        "/auth/oidc/nope/start",
        "/auth/oidc/nope/callback?code=x&state=y",
    ] {
        let response = Browser::default().get(&app, path).await;
        assert_eq!(response.status(), 404, "{path}");
    }
    // No code at all.
    let mut browser = Browser::default();
    let at = browser.start(&app, "").await;
    let state = at.query()["state"].clone();
    let response = browser
        .get(
            &app,
            &format!("/auth/oidc/{PROVIDER}/callback?state={state}"),
        )
        .await;
    assert_refused(response, 400, FAILED, "no code").await;
    assert_eq!(written(&app).await, [0, 0, 0, 0, 0]);

    // A disabled account does not sign in with its provider either.
    let response = Browser::default().sign_in(&app).await;
    signed_in(&response, "/account", "the first sign-in");
    let user_id = app.text("SELECT id FROM users").await.unwrap();
    let now = app.clock.now();
    sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&user_id)
        .execute(app.pool())
        .await
        .unwrap();
    let before = written(&app).await;
    let response = Browser::default().sign_in(&app).await;
    assert_refused(response, 400, FAILED, "disabled").await;
    assert_eq!(written(&app).await, before);
}

async fn an_account_with_a_second_factor_still_needs_it(db: Db) {
    let Some((provider, app)) = setup(db).await else {
        return;
    };
    crate::mfa::freeze(&app);
    let enrolled = crate::mfa::enroll(&app, "hana@example.com").await;
    // The session that confirmed TOTP is aal 2: it may link a new way in.
    provider
        .will_sign_in("sub-hana", "hana@example.com", true)
        .await;
    let linked = Browser::default()
        .link(&app, &enrolled.session.access_token)
        .await;
    assert_eq!(linked.status(), 303);

    // A sign-in with the provider gets the challenge page, no session.
    let sessions = app.count("SELECT COUNT(*) FROM sessions").await;
    let response = Browser::default().sign_in(&app).await;
    assert_eq!(response.status(), 200);
    let cookies = set_cookies(response.headers());
    assert_eq!(cookies.keys().collect::<Vec<_>>(), ["__Host-lk_oidc"]);
    let page = response.text().await.unwrap();
    let marker = "name=\"mfa_token\" value=\"";
    let start = page.find(marker).expect("the challenge page") + marker.len();
    let mfa_token = &page[start..start + page[start..].find('"').unwrap()];
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, sessions);

    let code = crate::mfa::code_at_step(&enrolled.secret, enrolled.step + 1);
    app.clock.advance(std::time::Duration::from_secs(30));
    let verified = app
        .post_json(
            "/auth/mfa/verify",
            &json!({"mfa_token": mfa_token, "code": code}),
        )
        .await;
    assert_eq!(verified.status(), 200);
    let session = Session::from_response(verified).await;
    let claims = TestApp::claims(&session.access_token);
    assert_eq!(claims["amr"], json!(["oidc", "mfa"]));
    assert_eq!(claims["aal"], 2);
    assert_eq!(session.user_id(), enrolled.session.user_id());

    // A session that signed in with the password alone may not link another (step-up).
    let password_only = app.login("hana@example.com", PASSWORD).await;
    let body: Value = password_only.json().await.unwrap();
    assert_eq!(body["mfa_required"], true);
}

async fn identities_are_listed_and_unlinked_but_never_the_last_way_in(db: Db) {
    let Some((provider, app)) = setup(db).await else {
        return;
    };
    provider
        .will_sign_in("sub-ivy", "ivy@example.com", true)
        .await;
    let response = Browser::default().sign_in(&app).await;
    let access = signed_in(&response, "/account", "sign-in");
    let listed = app
        .client
        .get(app.url("/auth/identities"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let body: Value = listed.json().await.unwrap();
    let identities = body["identities"].as_array().unwrap();
    assert_eq!(identities.len(), 1);
    let identity = &identities[0];
    let id = identity["id"].as_str().unwrap().to_owned();
    assert_eq!(identity["provider"], PROVIDER);
    assert_eq!(identity["provider_name"], "Test Provider");
    assert_eq!(identity["email"], "ivy@example.com");
    assert!(
        identity["last_login_at"].is_null(),
        "recorded at later sign-ins"
    );
    assert_eq!(
        identity.as_object().unwrap().keys().collect::<Vec<_>>(),
        [
            "created_at",
            "email",
            "id",
            "last_login_at",
            "provider",
            "provider_name"
        ]
    );

    // The export holds it too.
    let export = app
        .client
        .get(app.url("/auth/me/export"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    let export: Value = export.json().await.unwrap();
    assert_eq!(export["identities"], json!([identity]));

    let unlink = |id: String| {
        app.client
            .delete(app.url(&format!("/auth/identities/{id}")))
            .bearer_auth(&access)
            .send()
    };
    // The account's only way in (no password, no passkey): kept.
    let refused = unlink(id.clone()).await.unwrap();
    assert_eq!(refused.status(), 409);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "conflict");
    assert_eq!(app.count("SELECT COUNT(*) FROM identities").await, 1);
    for bad in ["not-a-uuid", &uuid::Uuid::new_v4().to_string()] {
        assert_eq!(unlink(bad.to_owned()).await.unwrap().status(), 404, "{bad}");
    }
    // Another user's identity is not found either.
    provider
        .will_sign_in("sub-jo", "jo@example.com", true)
        .await;
    signed_in(&Browser::default().sign_in(&app).await, "/account", "jo");
    let jos = app
        .text("SELECT id FROM identities WHERE subject = 'sub-jo'")
        .await
        .unwrap();
    assert_eq!(unlink(jos).await.unwrap().status(), 404);

    // With a password set, the identity may go; it signs in no more (a new account would need
    // a new address: the address is the existing account's).
    let hash = app
        .state
        .hasher
        .hash(PASSWORD.to_owned().into())
        .await
        .unwrap();
    sqlx::query("UPDATE users SET password_hash = $1 WHERE email = 'ivy@example.com'")
        .bind(hash)
        .execute(app.pool())
        .await
        .unwrap();
    assert_eq!(unlink(id.clone()).await.unwrap().status(), 204);
    assert_eq!(unlink(id).await.unwrap().status(), 404, "once");
    let left = "SELECT COUNT(*) FROM identities WHERE subject = 'sub-ivy'";
    assert_eq!(app.count(left).await, 0);
    let audit = "SELECT COUNT(*) FROM audit_events WHERE kind = 'identity_unlinked'";
    assert_eq!(app.count(audit).await, 1);
    provider
        .will_sign_in("sub-ivy", "ivy@example.com", true)
        .await;
    let response = Browser::default().sign_in(&app).await;
    let message = "An account with this address exists already.";
    assert_refused(response, 409, message, "unlinked").await;

    let anonymous = app
        .client
        .get(app.url("/auth/identities"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// The window between a link's start and its callback is the time the person spends at the
/// provider: a logout, a logout everywhere from another session, or the account being disabled
/// in it ends the link's session, and the callback then links nothing.
async fn a_link_whose_session_ended_before_its_callback_links_nothing(db: Db) {
    let Some((provider, app)) = setup(db).await else {
        return;
    };
    for ending in ["logout", "logout-all", "disable"] {
        let user = app.signed_up(&format!("{ending}@example.com")).await;
        let subject = format!("sub-{ending}");
        provider
            .will_sign_in(&subject, &format!("{ending}@work.example"), true)
            .await;
        let mut browser = Browser::default();
        let at = browser.start_link(&app, &user.access_token).await;
        match ending {
            "logout" => {
                let out = app
                    .client
                    .post(app.url("/auth/logout"))
                    .bearer_auth(&user.access_token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(out.status(), 204);
            }
            "logout-all" => {
                let login = app.login(&format!("{ending}@example.com"), PASSWORD).await;
                let other = Session::from_response(login).await;
                let out = app
                    .client
                    .post(app.url("/auth/logout-all"))
                    .bearer_auth(&other.access_token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(out.status(), 204);
            }
            _ => {
                let (_, key) = admin_key(&app).await;
                let disabled = app
                    .client
                    .patch(app.url(&format!("/admin/v1/users/{}", user.user_id())))
                    .bearer_auth(&key)
                    .json(&json!({"disabled": true}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(disabled.status(), 200);
            }
        }
        let before = written(&app).await;
        let response = browser.callback(&app, &at).await;
        assert_refused(response, 401, "Please log in to continue.", ending).await;
        assert_eq!(written(&app).await, before, "{ending}: nothing written");
        let linked = format!("SELECT COUNT(*) FROM identities WHERE subject = '{subject}'");
        assert_eq!(app.count(&linked).await, 0, "{ending}");
    }
}

async fn the_pages_show_the_providers_and_the_linked_accounts(db: Db) {
    let Some((provider, app)) = setup(db).await else {
        return;
    };
    for (page, href) in [
        (
            "/login?return_to=%2Fnext",
            "/auth/oidc/testop/start?return_to=http%3A%2F%2Flocalhost%3A8080%2Fnext",
        ),
        ("/signup", "/auth/oidc/testop/start"),
    ] {
        let html = app
            .client
            .get(app.url(page))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let button = format!(
            "<a class=\"button secondary\" href=\"{href}\">Continue with Test Provider</a>"
        );
        assert!(html.contains(&button), "{page}: {html}");
    }
    let csp = app.client.get(app.url("/login")).send().await.unwrap();
    let csp = csp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains(&format!(
            "form-action 'self' http://localhost:8080 {}",
            provider.issuer
        )),
        "{csp}"
    );

    provider
        .will_sign_in("sub-kim", "kim@example.com", true)
        .await;
    let mut browser = Browser::default();
    let response = browser.sign_in(&app).await;
    signed_in(&response, "/account", "sign-in");
    let page = browser.get(&app, "/account/security").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Test Provider · kim@example.com"), "{html}");
    assert!(
        html.contains("<button type=\"submit\" class=\"secondary\">Link Test Provider</button>")
    );
    // The only way in: the page says so instead of unlinking it.
    let id = app.text("SELECT id FROM identities").await.unwrap();
    let refused = app
        .client
        .post(app.url("/account/security/identities/remove"))
        .header(
            "cookie",
            format!("__Host-lk_access={}", browser.cookies["__Host-lk_access"]),
        )
        .header("origin", "http://localhost:8080")
        .form(&[("identity_id", id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let html = refused.text().await.unwrap();
    assert!(html.contains("This is your only way to sign in"), "{html}");
    assert_eq!(app.count("SELECT COUNT(*) FROM identities").await, 1);
}
