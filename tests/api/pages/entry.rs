//! The signup, login and logout pages over HTTP.

use super::{Page, Visitor, assert_page_headers, input};
use crate::db_tests;
use crate::helpers::*;

db_tests!(
    every_page_is_html_with_the_security_headers,
    the_signup_page_creates_the_account_like_the_json_api_and_303s_with_its_cookies,
    a_failed_signup_shows_the_form_again_with_the_json_status_and_the_fields_kept,
    a_taken_address_is_409_next_to_the_email_field,
    return_to_is_followed_only_to_allowed_origins,
    the_login_page_logs_in_with_the_device_cookie_and_refuses_a_wrong_password_with_401,
    a_signed_in_browser_skips_the_login_and_signup_forms,
    logout_asks_first_and_its_post_revokes_the_session_and_clears_the_cookies,
    a_foreign_origin_is_refused_and_changes_nothing,
    bodies_that_are_no_form_get_an_error_page,
);

const SIGNUP: &str = "SELECT COUNT(*) FROM users";

async fn every_page_is_html_with_the_security_headers(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut visitor = Visitor::new(&app);
    for (path, status) in [
        ("/signup", 200),
        ("/login", 200),
        ("/password/forgot", 200),
        ("/password/reset?token=nope", 400),
        ("/email/verify?token=nope", 400),
    ] {
        let page = visitor.get(path).await;
        assert_eq!(page.status, status, "{path}");
        assert_page_headers(&page, path);
        assert!(page.body.starts_with("<!DOCTYPE html>"), "{path}");
        assert!(page.body.contains("<html lang=\"en\">"), "{path}");
        assert!(
            page.body.contains("name=\"viewport\""),
            "{path}: readable on a phone"
        );
        // No inline script: the pages' one script is their own file (the passkey buttons).
        let script = "<script src=\"/pages/passkeys.js\" defer></script>";
        let scripts = page.body.matches("<script").count();
        assert_eq!(
            scripts,
            page.body.matches(script).count(),
            "{path}: only the pages' script"
        );
    }
    // Pages that need a session send the browser through the session resume first.
    for (path, to) in [
        ("/account", "/auth/resume?return_to=%2Faccount"),
        ("/logout", "/auth/resume?return_to=%2Flogout"),
    ] {
        let page = visitor.get(path).await;
        page.see_other(to);
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(page.header("cache-control"), Some("no-store"));
    }
    let css = visitor.get("/pages/style.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("x-content-type-options"), Some("nosniff"));
    assert!(css.body.contains(".field"));
    // The JSON API keeps its JSON answers.
    let missing = visitor.get("/no/such/page").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), Some("application/json"));
}

async fn the_signup_page_creates_the_account_like_the_json_api_and_303s_with_its_cookies(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let mut visitor = Visitor::new(&app);
    let form = visitor.get("/signup").await;
    for (id, autocomplete) in [
        ("email", "email"),
        ("password", "new-password"),
        ("display_name", "nickname"),
    ] {
        let field = input(&form.body, id);
        assert!(
            field.contains(&format!("autocomplete=\"{autocomplete}\"")),
            "{field}"
        );
        assert!(
            form.body.contains(&format!("<label for=\"{id}\">")),
            "label of {id}"
        );
    }
    assert!(form.body.contains("action=\"/signup\""));

    let page = visitor
        .post(
            "/signup",
            &[
                ("email", "Ada@Example.com"),
                ("password", PASSWORD),
                ("display_name", "Ada"),
            ],
        )
        .await;
    page.see_other("/account");
    // The JSON API's cookies, by the same code.
    let cookies = page.set_cookies();
    assert_eq!(
        cookies["__Host-lk_access"].attributes,
        attrs(&[
            "httponly",
            "secure",
            "samesite=Lax",
            "path=/",
            "max-age=900"
        ])
    );
    assert_eq!(
        cookies["__Secure-lk_refresh"].attributes,
        attrs(&[
            "httponly",
            "secure",
            "samesite=Strict",
            "path=/auth",
            "max-age=604800"
        ])
    );
    assert_eq!(cookies.len(), 2);
    // The same rows as a JSON signup: user, profile, session, audit event, verification email.
    assert_eq!(app.count(SIGNUP).await, 1);
    assert_eq!(app.count(ORPHANS).await, 0);
    assert_eq!(
        app.text("SELECT display_name FROM profiles")
            .await
            .as_deref(),
        Some("Ada")
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'signup'")
            .await,
        1
    );
    let mail = sink.nth(1).await;
    assert_eq!(mail.to, ["Ada@Example.com"]);

    let account = visitor.get("/account").await;
    assert_eq!(account.status, 200, "{}", account.body);
    assert_page_headers(&account, "/account");
    assert!(account.body.contains("<strong>Ada@Example.com</strong>"));
    assert!(input(&account.body, "display_name").contains("value=\"Ada\""));
}

async fn a_failed_signup_shows_the_form_again_with_the_json_status_and_the_fields_kept(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut visitor = Visitor::new(&app);
    // (fields, the field with the problem, its message)
    for (email, password, name, field, message) in [
        ("", PASSWORD, "Ada", "email", "Email is required."),
        (
            "Ada <ada@example.com>",
            PASSWORD,
            "Ada",
            "email",
            "Email must be a bare address like name@example.com, without a display name or angle brackets.",
        ),
        (
            "ada@example.com",
            "short",
            "Ada",
            "password",
            "Password must be at least 8 characters.",
        ),
        (
            "ada@example.com",
            "password123",
            "<b>Ada</b>",
            "password",
            "Password is too common: it appears in lists of breached passwords.",
        ),
    ] {
        let page = visitor
            .post(
                "/signup",
                &[
                    ("email", email),
                    ("password", password),
                    ("display_name", name),
                ],
            )
            .await;
        let why = format!("{email:?} / {password:?}");
        assert_eq!(page.status, 422, "{why}: {}", page.body);
        assert_page_headers(&page, &why);
        assert!(page.set_cookies().is_empty(), "{why}: no cookies");
        // The message next to its field, tied to it, announced in the summary, focused.
        let tag = input(&page.body, field);
        assert!(tag.contains("aria-invalid=\"true\""), "{why}: {tag}");
        assert!(
            tag.contains(&format!("aria-describedby=\"{field}-error")),
            "{why}: {tag}"
        );
        assert!(tag.contains(" autofocus"), "{why}: {tag}");
        assert!(
            page.body.contains(&format!(
                "<p class=\"error\" id=\"{field}-error\">{message}</p>"
            )),
            "{why}: {}",
            page.body
        );
        assert!(page.body.contains("role=\"alert\""), "{why}");
        assert!(
            page.body
                .contains(&format!("<a href=\"#{field}\">{message}</a>")),
            "{why}"
        );
        // The other fields kept (escaped), never the password.
        if !email.is_empty() {
            let kept = email.replace('<', "&lt;").replace('>', "&gt;");
            assert!(
                input(&page.body, "email").contains(&format!("value=\"{kept}\"")),
                "{why}"
            );
        }
        let kept = name.replace('<', "&lt;").replace('>', "&gt;");
        assert!(
            input(&page.body, "display_name").contains(&format!("value=\"{kept}\"")),
            "{why}: {}",
            input(&page.body, "display_name")
        );
        assert!(!input(&page.body, "password").contains("value="), "{why}");
        assert!(
            !page.body.contains(password) || password.is_empty(),
            "{why}: the password"
        );
    }
    assert_eq!(app.count(SIGNUP).await, 0, "nothing written");
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 0);
}

async fn a_taken_address_is_409_next_to_the_email_field(db: Db) {
    let app = TestApp::spawn(db).await;
    app.signed_up("ada@example.com").await;
    let mut visitor = Visitor::new(&app);
    let page = visitor
        .post(
            "/signup",
            &[("email", "ADA@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, 409);
    assert!(page.set_cookies().is_empty());
    assert!(page.body.contains(
        "<p class=\"error\" id=\"email-error\">An account with this email already exists.</p>"
    ));
    assert!(input(&page.body, "email").contains("value=\"ADA@example.com\""));
    assert_eq!(app.count(SIGNUP).await, 1);
}

async fn return_to_is_followed_only_to_allowed_origins(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        o.allowed_origins = Some(vec!["https://app.example.com".into()]);
    })
    .await;
    app.signed_up("ada@example.com").await;
    for (return_to, to) in [
        (
            "/account?tab=sessions",
            "http://localhost:8080/account?tab=sessions",
        ),
        (
            "https://app.example.com/welcome",
            "https://app.example.com/welcome",
        ),
        ("https://evil.example/", "/account"),
        ("//evil.example/", "/account"),
        ("/\\evil.example/", "/account"),
        ("javascript:alert(1)", "/account"),
    ] {
        let mut visitor = Visitor::new(&app);
        // Carried from the query into a hidden field, and followed after the POST.
        let form = visitor
            .get(&format!(
                "/login?return_to={}",
                url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
            ))
            .await;
        let allowed = to != "/account";
        assert_eq!(
            form.body.contains("name=\"return_to\""),
            allowed,
            "{return_to}: the hidden field"
        );
        let page = visitor
            .post(
                "/login",
                &[
                    ("email", "ada@example.com"),
                    ("password", PASSWORD),
                    ("return_to", return_to),
                ],
            )
            .await;
        page.see_other(to);
    }
}

async fn the_login_page_logs_in_with_the_device_cookie_and_refuses_a_wrong_password_with_401(
    db: Db,
) {
    let app = TestApp::spawn(db).await;
    app.signed_up("ada@example.com").await;
    let mut visitor = Visitor::new(&app);
    let form = visitor.get("/login").await;
    assert!(input(&form.body, "password").contains("autocomplete=\"current-password\""));
    assert!(form.body.contains("href=\"/password/forgot\""));

    let wrong = visitor
        .post(
            "/login",
            &[
                ("email", "ada@example.com"),
                ("password", "not the password"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.set_cookies().is_empty());
    assert!(
        wrong.body.contains("<p>Wrong email or password.</p>"),
        "{}",
        wrong.body
    );
    assert!(input(&wrong.body, "email").contains("value=\"ada@example.com\""));
    assert!(input(&wrong.body, "email").contains(" autofocus"));
    assert!(!wrong.body.contains("not the password"));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'login_failed'")
            .await,
        1
    );

    let page = visitor
        .post(
            "/login",
            &[("email", "ada@example.com"), ("password", PASSWORD)],
        )
        .await;
    page.see_other("/account");
    let cookies = page.set_cookies();
    let mut names: Vec<&str> = cookies.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "__Host-lk_access",
            "__Host-lk_device",
            "__Secure-lk_refresh"
        ]
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 2);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'login'")
            .await,
        1
    );
    assert_eq!(visitor.get("/account").await.status, 200);
}

async fn a_signed_in_browser_skips_the_login_and_signup_forms(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("ada@example.com").await;
    let mut visitor = Visitor::with_session(&app, &session);
    visitor.get("/login").await.see_other("/account");
    visitor
        .get("/signup?return_to=%2Faccount%3Fx%3D1")
        .await
        .see_other("http://localhost:8080/account?x=1");
}

async fn logout_asks_first_and_its_post_revokes_the_session_and_clears_the_cookies(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("ada@example.com").await;
    let mut visitor = Visitor::with_session(&app, &session);
    let ask = visitor.get("/logout").await;
    assert_eq!(ask.status, 200);
    assert!(ask.body.contains("action=\"/logout\""));
    // A GET (a link, a prefetch) logs nobody out.
    assert_eq!(app.me(&session.access_token).await.status(), 200);

    let page = visitor.post("/logout", &[]).await;
    page.see_other("/login?notice=signed_out");
    let cleared = page.set_cookies();
    assert!(
        cleared["__Host-lk_access"]
            .attributes
            .contains(&"max-age=0".to_owned())
    );
    assert!(
        cleared["__Secure-lk_refresh"]
            .attributes
            .contains(&"path=/auth".to_owned())
    );
    assert!(
        cleared["__Secure-lk_refresh"]
            .attributes
            .contains(&"max-age=0".to_owned())
    );
    assert_eq!(app.me(&session.access_token).await.status(), 401);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        1
    );
    let login = visitor.get("/login?notice=signed_out").await;
    assert!(
        login
            .body
            .contains("<p class=\"notice\" role=\"status\">You are logged out.</p>")
    );
    // A notice is only ever a fixed message of the catalogue.
    let crafted = visitor.get("/login?notice=%3Cb%3Ehi").await;
    assert!(!crafted.body.contains("class=\"notice\""));
}

async fn a_foreign_origin_is_refused_and_changes_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("ada@example.com").await;
    let visitor = Visitor::with_session(&app, &session);
    for path in [
        "/signup",
        "/login",
        "/logout",
        "/account/logout-all",
        "/password/forgot",
    ] {
        let response = app
            .client
            .post(app.url(path))
            .header("origin", "https://evil.example")
            .header(
                "cookie",
                format!("__Host-lk_access={}", session.access_token),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body("email=eve%40example.com&password=correct+horse+battery+staple")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
        assert!(response.headers().get("set-cookie").is_none(), "{path}");
    }
    drop(visitor);
    assert_eq!(app.count(SIGNUP).await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM password_reset_requests")
            .await,
        0
    );
}

async fn bodies_that_are_no_form_get_an_error_page(db: Db) {
    let app = TestApp::spawn(db).await;
    let json = app
        .client
        .post(app.url("/login"))
        .json(&serde_json::json!({"email": "a@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 415);
    assert_eq!(
        json.headers()["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    let big = "a".repeat(20 * 1024);
    let mut visitor = Visitor::new(&app);
    let page: Page = visitor.post("/signup", &[("email", &big)]).await;
    assert_eq!(page.status, 413);
    assert!(page.body.contains("The form is too large."));
    assert_eq!(app.count(SIGNUP).await, 0);
}
