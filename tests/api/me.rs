//! GET /auth/me and PATCH /auth/me/profile, and with them what an access token must be to be
//! accepted: signed by the server's own key with EdDSA, of the access kind, for this issuer and
//! audience, unexpired (60 s leeway), for a live session of its subject.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use latchkey::clock::rfc3339;
use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    me_returns_the_user_and_profile_with_a_bearer_token,
    me_accepts_the_access_cookie,
    me_accepts_the_bearer_scheme_in_any_case,
    me_rejects_missing_and_malformed_tokens,
    me_rejects_forged_tokens,
    me_rejects_tokens_with_the_wrong_kind_or_claims,
    me_rejects_an_expired_token_after_the_leeway,
    profile_update_sets_the_display_name,
    profile_update_with_null_or_blank_clears_the_display_name,
    profile_update_without_fields_changes_nothing,
    invalid_profile_updates_are_rejected_and_change_nothing,
    profile_update_requires_authentication,
);

/// One decoded segment (0: header, 1: claims) of a JWT.
fn segment(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn encoded(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn access_header(kid: &str, alg: Algorithm) -> Header {
    let mut header = Header::new(alg);
    header.typ = Some("at+jwt".to_owned());
    header.kid = Some(kid.to_owned());
    header
}

/// A token with these claims, signed by the server's own signing key.
fn server_signed(app: &TestApp, claims: &Value) -> String {
    let (kid, key) = app.state.keys.signing_key();
    jsonwebtoken::encode(&access_header(&kid, Algorithm::EdDSA), claims, &key).unwrap()
}

/// The claims of `token` with `changes` applied (`null` removes a claim).
fn with(token: &str, changes: &Value) -> Value {
    let mut claims = segment(token, 1);
    for (name, value) in changes.as_object().unwrap() {
        match value {
            Value::Null => claims.as_object_mut().unwrap().remove(name),
            _ => claims
                .as_object_mut()
                .unwrap()
                .insert(name.clone(), value.clone()),
        };
    }
    claims
}

async fn get_me(
    app: &TestApp,
    authorization: Option<&str>,
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut request = app.client.get(app.url("/auth/me"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    if let Some(value) = cookie {
        request = request.header("cookie", value);
    }
    request.send().await.unwrap()
}

async fn assert_unauthenticated(response: reqwest::Response, why: &str) {
    assert_eq!(response.status(), 401, "{why}");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        unauthenticated(),
        "{why}"
    );
}

async fn me_returns_the_user_and_profile_with_a_bearer_token(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app
        .post_json(
            "/auth/signup",
            &json!({"email": "Alice@Example.com", "password": PASSWORD, "display_name": "Alice"}),
        )
        .await;
    let signup = Session::from_response(signup).await;

    let response = app.me(&signup.access_token).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers().get("set-cookie").is_none());
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"user": signup.body["user"], "profile": signup.body["profile"]})
    );
}

async fn me_accepts_the_access_cookie(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;

    let cookie = format!("__Host-lk_access={}", signup.access_token);
    let response = get_me(&app, None, Some(&cookie)).await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"user": signup.body["user"], "profile": signup.body["profile"]})
    );
    // Secure cookies only count under their prefixed name.
    let unprefixed = format!("lk_access={}", signup.access_token);
    assert_unauthenticated(get_me(&app, None, Some(&unprefixed)).await, "lk_access").await;
}

async fn me_accepts_the_bearer_scheme_in_any_case(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;
    // The scheme is case-insensitive (RFC 9110 §11.1).
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let authorization = format!("{scheme} {}", signup.access_token);
        let response = get_me(&app, Some(&authorization), None).await;
        assert_eq!(response.status(), 200, "{scheme}");
    }
}

async fn me_rejects_missing_and_malformed_tokens(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;
    let bearer = |t: &str| format!("Bearer {t}");
    let access_cookie = |t: &str| format!("__Host-lk_access={t}");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("alice@example.com:{PASSWORD}"))
    );
    // (reason, Authorization, Cookie)
    let cases: Vec<(&str, Option<String>, Option<String>)> = vec![
        ("no token at all", None, None),
        ("empty bearer", Some("Bearer ".into()), None),
        ("garbage bearer", Some(bearer("garbage")), None),
        ("three garbage segments", Some(bearer("a.b.c")), None),
        ("basic credentials", Some(basic), None),
        (
            "the refresh token as bearer",
            Some(bearer(&signup.refresh_token)),
            None,
        ),
        ("empty access cookie", None, Some(access_cookie(""))),
        (
            "garbage access cookie",
            None,
            Some(access_cookie("garbage")),
        ),
        (
            "the refresh token in the access cookie",
            None,
            Some(access_cookie(&signup.refresh_token)),
        ),
        (
            "the access token in the refresh cookie",
            None,
            Some(format!("__Secure-lk_refresh={}", signup.access_token)),
        ),
    ];
    for (why, authorization, cookie) in cases {
        let response = get_me(&app, authorization.as_deref(), cookie.as_deref()).await;
        assert_unauthenticated(response, why).await;
    }
}

async fn me_rejects_forged_tokens(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up("alice@example.com").await;
    let bob = app.signed_up("bob@example.com").await;
    let token = &alice.access_token;
    let header = segment(token, 0);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let claims = segment(token, 1);
    let signature = token.split('.').nth(2).unwrap();

    // The control: the same claims signed again with the server's key are accepted, so each
    // refusal below is due to what the case changes.
    assert_eq!(app.me(&server_signed(&app, &claims)).await.status(), 200);

    let tampered = |changes: Value| {
        format!(
            "{}.{}.{signature}",
            encoded(&header),
            encoded(&with(token, &changes))
        )
    };
    let other_key = {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        EncodingKey::from_ed_der(key.to_pkcs8_der().unwrap().as_bytes())
    };
    let public_x = app
        .text("SELECT public_key FROM signing_keys")
        .await
        .unwrap();
    let public_raw = URL_SAFE_NO_PAD.decode(&public_x).unwrap();
    let hs256 = |secret: &[u8]| {
        jsonwebtoken::encode(
            &access_header(&kid, Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let none_header = json!({"alg": "none", "typ": "at+jwt", "kid": kid});
    let cases: Vec<(&str, String)> = vec![
        (
            "payload changed to another user's ids",
            tampered(json!({"sub": bob.user_id(), "sid": segment(&bob.access_token, 1)["sid"]})),
        ),
        (
            "payload with a later exp",
            tampered(json!({"exp": claims["exp"].as_i64().unwrap() + 3600})),
        ),
        (
            "header changed (kid)",
            format!(
                "{}.{}.{signature}",
                encoded(&json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "other"})),
                encoded(&claims)
            ),
        ),
        (
            "signature removed",
            format!("{}.{}.", encoded(&header), encoded(&claims)),
        ),
        (
            "signed by another Ed25519 key with the same kid",
            jsonwebtoken::encode(&access_header(&kid, Algorithm::EdDSA), &claims, &other_key)
                .unwrap(),
        ),
        (
            "signed by another Ed25519 key with an unknown kid",
            jsonwebtoken::encode(
                &access_header("unknown", Algorithm::EdDSA),
                &claims,
                &other_key,
            )
            .unwrap(),
        ),
        (
            "alg none, no signature",
            format!("{}.{}.", encoded(&none_header), encoded(&claims)),
        ),
        (
            "alg none, the original signature",
            format!("{}.{}.{signature}", encoded(&none_header), encoded(&claims)),
        ),
        ("HS256 keyed with the raw public key", hs256(&public_raw)),
        (
            "HS256 keyed with the JWKS x value",
            hs256(public_x.as_bytes()),
        ),
    ];
    for (why, forged) in cases {
        assert_unauthenticated(app.me(&forged).await, why).await;
    }
    // The genuine token still works.
    assert_eq!(app.me(token).await.status(), 200);
}

async fn me_rejects_tokens_with_the_wrong_kind_or_claims(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up("alice@example.com").await;
    let bob = app.signed_up("bob@example.com").await;
    let token = &alice.access_token;
    let exp = segment(token, 1)["exp"].as_i64().unwrap();
    let now = app.state.clock.now() / 1000;
    let bob_sid = segment(&bob.access_token, 1)["sid"].clone();
    let (kid, key) = app.state.keys.signing_key();
    let typed = |typ: Option<&str>| {
        let mut header = access_header(&kid, Algorithm::EdDSA);
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, &segment(token, 1), &key).unwrap()
    };
    // (reason, token, expected status); every token is signed with the server's key.
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "unchanged (control)",
            server_signed(&app, &with(token, &json!({}))),
            200,
        ),
        (
            "expired but within the 60 s leeway",
            server_signed(&app, &with(token, &json!({"exp": now - 30}))),
            200,
        ),
        (
            "expired beyond the leeway",
            server_signed(&app, &with(token, &json!({"exp": now - 61}))),
            401,
        ),
        (
            "another issuer",
            server_signed(
                &app,
                &with(token, &json!({"iss": "https://evil.example.com"})),
            ),
            401,
        ),
        (
            "another audience",
            server_signed(
                &app,
                &with(token, &json!({"aud": "https://api.example.com"})),
            ),
            401,
        ),
        (
            "issuer with a trailing slash",
            server_signed(
                &app,
                &with(token, &json!({"iss": format!("{PUBLIC_URL}/")})),
            ),
            401,
        ),
        (
            "exp as a string",
            server_signed(&app, &with(token, &json!({"exp": exp.to_string()}))),
            401,
        ),
        (
            "exp as a float",
            server_signed(&app, &with(token, &json!({"exp": exp as f64 + 0.5}))),
            401,
        ),
        (
            "no exp",
            server_signed(&app, &with(token, &json!({"exp": null}))),
            401,
        ),
        (
            "no sub",
            server_signed(&app, &with(token, &json!({"sub": null}))),
            401,
        ),
        (
            "sub not a uuid",
            server_signed(&app, &with(token, &json!({"sub": "alice"}))),
            401,
        ),
        (
            "another user's session",
            server_signed(&app, &with(token, &json!({"sid": bob_sid}))),
            401,
        ),
        (
            "another user as subject",
            server_signed(&app, &with(token, &json!({"sub": bob.user_id()}))),
            401,
        ),
        (
            "an unknown session",
            server_signed(&app, &with(token, &json!({"sid": uuid::Uuid::now_v7()}))),
            401,
        ),
        ("typ JWT: not an access token", typed(Some("JWT")), 401),
        ("no typ", typed(None), 401),
    ];
    for (why, forged, status) in cases {
        let response = app.me(&forged).await;
        if status == 200 {
            assert_eq!(response.status(), 200, "{why}");
        } else {
            assert_unauthenticated(response, why).await;
        }
    }
}

async fn me_rejects_an_expired_token_after_the_leeway(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;

    // 15 minutes and 30 s: expired, but within the 60 s leeway.
    app.clock.advance(Duration::from_secs(900 + 30));
    assert_eq!(app.me(&signup.access_token).await.status(), 200);
    // 15 minutes and 61 s: beyond it.
    app.clock.advance(Duration::from_secs(31));
    assert_unauthenticated(app.me(&signup.access_token).await, "expired").await;

    // The session itself lives on: a refresh gives a working token.
    let refreshed = app.refresh(&signup.refresh_token).await;
    assert_eq!(refreshed.status(), 200);
    let refreshed = Session::from_response(refreshed).await;
    assert_eq!(app.me(&refreshed.access_token).await.status(), 200);
}

async fn patch_profile(app: &TestApp, access_token: &str, body: &Value) -> reqwest::Response {
    app.client
        .patch(app.url("/auth/me/profile"))
        .bearer_auth(access_token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The profile row: display name and updated_at.
async fn profile_row(app: &TestApp) -> (Option<String>, i64) {
    (
        app.text("SELECT display_name FROM profiles").await,
        app.count("SELECT updated_at FROM profiles").await,
    )
}

async fn profile_updates(app: &TestApp) -> i64 {
    app.count(
        "SELECT COUNT(*) FROM audit_events WHERE kind = 'profile_updated' \
         AND user_id = (SELECT user_id FROM profiles) AND session_id = (SELECT id FROM sessions)",
    )
    .await
}

async fn profile_update_sets_the_display_name(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;
    app.clock.advance(Duration::from_secs(5));

    let response = patch_profile(
        &app,
        &signup.access_token,
        &json!({"display_name": "  Ada Lovelace  "}),
    )
    .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let created_at = app.count("SELECT created_at FROM profiles").await;
    let (name, updated_at) = profile_row(&app).await;
    assert_eq!(name.as_deref(), Some("Ada Lovelace"));
    assert!(
        updated_at >= created_at + 5000,
        "{created_at} → {updated_at}"
    );
    assert_eq!(
        body,
        json!({"profile": {
            "display_name": "Ada Lovelace",
            "created_at": signup.body["profile"]["created_at"],
            "updated_at": rfc3339(updated_at),
            "last_login_at": null,
            "metadata": {},
        }})
    );
    assert_eq!(profile_updates(&app).await, 1);
    let me: Value = app.me(&signup.access_token).await.json().await.unwrap();
    assert_eq!(me["profile"], body["profile"]);
    assert_eq!(me["user"], signup.body["user"]);

    // 100 characters is the limit, counted in characters, not bytes.
    let longest = "é".repeat(100);
    let response = patch_profile(
        &app,
        &signup.access_token,
        &json!({"display_name": longest}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["profile"]["display_name"],
        longest.as_str()
    );
    assert_eq!(profile_row(&app).await.0, Some(longest));
    assert_eq!(profile_updates(&app).await, 2);
}

async fn profile_update_with_null_or_blank_clears_the_display_name(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app
        .post_json(
            "/auth/signup",
            &json!({"email": "alice@example.com", "password": PASSWORD, "display_name": "Ada"}),
        )
        .await;
    let signup = Session::from_response(signup).await;

    let response = patch_profile(&app, &signup.access_token, &json!({"display_name": null})).await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["profile"]["display_name"], Value::Null);
    assert_eq!(profile_row(&app).await.0, None);
    assert_eq!(profile_updates(&app).await, 1);

    let set = patch_profile(&app, &signup.access_token, &json!({"display_name": "Ada"})).await;
    assert_eq!(set.status(), 200);
    let blank = patch_profile(&app, &signup.access_token, &json!({"display_name": "   "})).await;
    assert_eq!(blank.status(), 200);
    assert_eq!(
        blank.json::<Value>().await.unwrap()["profile"]["display_name"],
        Value::Null
    );
    assert_eq!(profile_row(&app).await.0, None);
    assert_eq!(profile_updates(&app).await, 3);
}

async fn profile_update_without_fields_changes_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app
        .post_json(
            "/auth/signup",
            &json!({"email": "alice@example.com", "password": PASSWORD, "display_name": "Ada"}),
        )
        .await;
    let signup = Session::from_response(signup).await;
    let before = profile_row(&app).await;
    app.clock.advance(Duration::from_secs(5));

    let response = patch_profile(&app, &signup.access_token, &json!({})).await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"profile": signup.body["profile"]})
    );
    assert_eq!(profile_row(&app).await, before);
    assert_eq!(profile_updates(&app).await, 0);
}

async fn invalid_profile_updates_are_rejected_and_change_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app
        .post_json(
            "/auth/signup",
            &json!({"email": "alice@example.com", "password": PASSWORD, "display_name": "Ada"}),
        )
        .await;
    let signup = Session::from_response(signup).await;
    let before = profile_row(&app).await;
    app.clock.advance(Duration::from_secs(5));
    let invalid = |fields: Value| json!({"error": {"code": "validation_failed", "message": "Some fields are invalid.", "fields": fields}});
    let json_body = |v: Value| v.to_string();
    // (reason, content type, body, status, response body)
    let cases: Vec<(&str, &str, String, u16, Value)> = vec![
        (
            "101 characters",
            "application/json",
            json_body(json!({"display_name": "x".repeat(101)})),
            422,
            invalid(json!({"display_name": "must be at most 100 characters"})),
        ),
        (
            "a control character",
            "application/json",
            json_body(json!({"display_name": "Ada\u{7}Lovelace"})),
            422,
            invalid(json!({"display_name": "must not contain control characters"})),
        ),
        (
            "a newline inside",
            "application/json",
            json_body(json!({"display_name": "Ada\nLovelace"})),
            422,
            invalid(json!({"display_name": "must not contain control characters"})),
        ),
        (
            "a NUL character",
            "application/json",
            json_body(json!({"display_name": "Ada\u{0}"})),
            422,
            invalid(json!({"display_name": "must not contain control characters"})),
        ),
        (
            "a number",
            "application/json",
            json_body(json!({"display_name": 42})),
            422,
            invalid(json!({"display_name": "has the wrong type"})),
        ),
        (
            "an array",
            "application/json",
            json_body(json!({"display_name": ["Ada"]})),
            422,
            invalid(json!({"display_name": "has the wrong type"})),
        ),
        (
            "an unknown field",
            "application/json",
            json_body(json!({"nickname": "Ada"})),
            422,
            invalid(json!({"nickname": "is not a known field"})),
        ),
        (
            "a field the server owns, next to a valid one",
            "application/json",
            json_body(json!({"display_name": "Eve", "updated_at": "2000-01-01T00:00:00Z"})),
            422,
            invalid(json!({"updated_at": "is not a known field"})),
        ),
        (
            "not an object",
            "application/json",
            "[]".into(),
            422,
            invalid(json!({"body": "must be a JSON object"})),
        ),
        (
            "malformed JSON",
            "application/json",
            "{\"display_name\": ".into(),
            400,
            json!({"error": {"code": "invalid_json", "message": "The request body is not valid JSON."}}),
        ),
        (
            "no JSON content type",
            "text/plain",
            json_body(json!({"display_name": "Eve"})),
            415,
            json!({"error": {"code": "unsupported_media_type", "message": "The request body must be application/json."}}),
        ),
    ];
    for (why, content_type, body, status, expected) in cases {
        let response = app
            .client
            .patch(app.url("/auth/me/profile"))
            .bearer_auth(&signup.access_token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{why}");
        assert_eq!(response.json::<Value>().await.unwrap(), expected, "{why}");
    }
    assert_eq!(profile_row(&app).await, before);
    assert_eq!(profile_updates(&app).await, 0);
}

async fn profile_update_requires_authentication(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;
    let before = profile_row(&app).await;
    let body = json!({"display_name": "Mallory"});

    let anonymous = app
        .client
        .patch(app.url("/auth/me/profile"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_unauthenticated(anonymous, "no token").await;
    assert_unauthenticated(patch_profile(&app, "garbage", &body).await, "garbage").await;
    // Authentication comes first: an anonymous caller learns nothing about the body.
    let invalid = app
        .client
        .patch(app.url("/auth/me/profile"))
        .json(&json!({"display_name": "x".repeat(101), "id": "x"}))
        .send()
        .await
        .unwrap();
    assert_unauthenticated(invalid, "no token, invalid body").await;
    // A logged-out session's token no longer works, although it has not expired.
    let logout = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&signup.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let after_logout = patch_profile(&app, &signup.access_token, &body).await;
    assert_unauthenticated(after_logout, "logged out").await;

    assert_eq!(profile_row(&app).await, before);
    assert_eq!(profile_updates(&app).await, 0);
}
