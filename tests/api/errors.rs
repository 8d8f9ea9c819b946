//! What every endpoint shares: the error shape for the framework's own rejections, request ids,
//! CSRF checks, health, readiness and the JWKS.

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    every_response_says_nosniff,
    unknown_routes_and_methods_get_the_json_error_shape,
    request_ids_are_echoed_when_sane_and_made_otherwise,
    unsafe_requests_from_foreign_origins_are_rejected,
    csrf_checks_cover_every_unsafe_method_and_spend_nothing,
    health_and_readiness_answer,
    jwks_lists_the_signing_key_that_verifies_access_tokens,
);

async fn unknown_routes_and_methods_get_the_json_error_shape(db: Db) {
    let app = TestApp::spawn(db).await;
    let response = app
        .client
        .get(app.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": {"code": "not_found", "message": "Not found."}})
    );

    let response = app
        .client
        .get(app.url("/auth/signup"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": {"code": "method_not_allowed", "message": "Method not allowed."}})
    );
}

async fn request_ids_are_echoed_when_sane_and_made_otherwise(db: Db) {
    let app = TestApp::spawn(db).await;
    let sane = "req-123_abc.def:9";
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", sane)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], sane);

    for insane in ["has space", &"x".repeat(129), "semi;colon", "<script>"] {
        let response = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", insane)
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(id, insane);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }
}

async fn every_response_says_nosniff(db: Db) {
    let app = TestApp::spawn(db).await;
    for (method, path, status) in [
        ("GET", "/healthz", 200),
        ("GET", "/metrics", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/.well-known/jwks.json", 200),
        ("GET", "/auth/me", 401),
        ("GET", "/no/such/path", 404),
        ("POST", "/auth/login", 415),
        ("GET", "/login", 200),
    ] {
        let request = match method {
            "GET" => app.client.get(app.url(path)),
            _ => app.client.post(app.url(path)),
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{method} {path}"
        );
    }
}

async fn unsafe_requests_from_foreign_origins_are_rejected(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        o.allowed_origins = Some(vec!["https://app.example.com".into()])
    })
    .await;
    let body = json!({"email": "alice@example.com", "password": PASSWORD});
    let csrf = json!({"error": {"code": "csrf_rejected", "message": "Cross-site requests are not allowed."}});
    for (header, value, why) in [
        ("origin", "https://evil.example", "foreign origin"),
        ("origin", "null", "opaque origin"),
        ("origin", "http://localhost:8081", "other port"),
        ("sec-fetch-site", "cross-site", "cross-site fetch"),
    ] {
        let response = app
            .client
            .post(app.url("/auth/signup"))
            .header(header, value)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{why}");
        assert_eq!(response.json::<Value>().await.unwrap(), csrf, "{why}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);

    // `Origin: null` (a page with `Referrer-Policy: no-referrer`, a sandboxed frame, a `data:`
    // page) names no origin: only the browser's own `Sec-Fetch-Site: same-origin` lets it pass.
    for (fetch_site, status) in [
        (None, 403),
        (Some("cross-site"), 403),
        (Some("same-site"), 403),
        (Some("none"), 403),
        (Some("same-origin"), 201),
    ] {
        let mut request = app
            .client
            .post(app.url("/auth/signup"))
            .header("origin", "null")
            .json(&json!({"email": "null@example.com", "password": PASSWORD}));
        if let Some(value) = fetch_site {
            request = request.header("sec-fetch-site", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "Origin: null, {fetch_site:?}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);

    // The public URL's origin, a configured origin, same-site fetches and non-browser clients pass.
    let allowed = [
        ("origin", PUBLIC_URL, "a@example.com"),
        ("origin", "https://app.example.com", "b@example.com"),
        ("sec-fetch-site", "same-origin", "c@example.com"),
        ("user-agent", "curl/8", "d@example.com"),
    ];
    for (header, value, email) in allowed {
        let response = app
            .client
            .post(app.url("/auth/signup"))
            .header(header, value)
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{header}: {value}");
    }
    // Safe methods are never rejected.
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn csrf_checks_cover_every_unsafe_method_and_spend_nothing(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        o.allowed_origins = Some(vec!["https://app.other-site.example".into()])
    })
    .await;
    let session = app.signed_up("alice@example.com").await;
    let csrf = json!({"error": {"code": "csrf_rejected", "message": "Cross-site requests are not allowed."}});
    let cookies = format!(
        "__Host-lk_access={}; __Secure-lk_refresh={}",
        session.access_token, session.refresh_token
    );
    let session_id = app.text("SELECT id FROM sessions").await.unwrap();
    let sessions_path = format!("/auth/sessions/{session_id}");
    let requests = [
        (
            reqwest::Method::POST,
            "/auth/login",
            Some(json!({"email": "alice@example.com", "password": PASSWORD})),
        ),
        (reqwest::Method::POST, "/auth/refresh", None),
        (reqwest::Method::POST, "/auth/logout", None),
        (reqwest::Method::POST, "/auth/logout-all", None),
        (
            reqwest::Method::PATCH,
            "/auth/me/profile",
            Some(json!({"display_name": "Mallory"})),
        ),
        (
            reqwest::Method::PUT,
            "/auth/me/profile",
            Some(json!({"display_name": "Mallory"})),
        ),
        (reqwest::Method::DELETE, sessions_path.as_str(), None),
    ];
    // A page on another site, riding on the victim's cookies: every unsafe method is refused
    // before its handler runs, whether `Origin` or only `Sec-Fetch-Site` gives it away (in any
    // case).
    for (header, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "Cross-Site"),
    ] {
        for (method, path, body) in &requests {
            let mut request = app
                .client
                .request(method.clone(), app.url(path))
                .header("cookie", &cookies)
                .header(header, value);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 403, "{method} {path} with {header}");
            assert!(response.headers().get("set-cookie").is_none());
            assert_eq!(
                response.json::<Value>().await.unwrap(),
                csrf,
                "{method} {path}"
            );
        }
    }
    // Nothing was spent or changed: the session lives, its refresh token still rotates, the
    // profile is untouched and no login happened.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        1
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, 1);
    assert_eq!(app.me(&session.access_token).await.status(), 200);
    assert_eq!(app.refresh(&session.refresh_token).await.status(), 200);

    // A configured origin on another site is accepted although browsers mark its requests
    // cross-site: `Origin` is exact and cannot be forged by a page, so it decides.
    let response = app
        .client
        .post(app.url("/auth/login"))
        .header("origin", "https://app.other-site.example")
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"email": "alice@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A navigation the user typed (`Sec-Fetch-Site: none`) is no cross-site request.
    let response = app
        .client
        .post(app.url("/auth/login"))
        .header("sec-fetch-site", "none")
        .json(&json!({"email": "alice@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn health_and_readiness_answer(db: Db) {
    let app = TestApp::spawn(db).await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );

    // With the database gone, readiness says so in the contract's shape.
    app.state.store.close().await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.headers()["retry-after"], "1");
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"error": {"code": "unavailable", "message": "The service is temporarily unavailable."}})
    );
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

async fn jwks_lists_the_signing_key_that_verifies_access_tokens(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("alice@example.com").await;
    let response = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "public, max-age=60");
    let jwks: Value = response.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(
        key.as_object().unwrap().len(),
        6,
        "no private material: {key}"
    );

    // Verify the access token the way another service would: with the JWKS alone.
    let header = jsonwebtoken::decode_header(&session.access_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid.as_deref(), key["kid"].as_str());
    let decoding =
        jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&[PUBLIC_URL]);
    validation.set_audience(&[PUBLIC_URL]);
    let claims = jsonwebtoken::decode::<Value>(&session.access_token, &decoding, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], session.user_id());
    assert_eq!(
        claims["sid"].as_str().unwrap(),
        app.text("SELECT id FROM sessions").await.unwrap()
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    assert!(claims["jti"].is_string());
    let mut names: Vec<&String> = claims.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "aal", "amr", "aud", "exp", "iat", "iss", "jti", "sid", "sub"
        ]
    );
    assert_eq!(
        (&claims["amr"], &claims["aal"]),
        (&json!(["pwd"]), &json!(1))
    );
}
