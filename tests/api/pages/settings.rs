//! The settings of the pages: off, the app's own link pages, replaced templates and strings.

use latchkey::app::AppState;
use latchkey::clock::Clock;
use latchkey::config::{Overrides, Settings, Toggle};

use super::{Visitor, input};
use crate::db_tests;
use crate::helpers::*;

db_tests!(
    with_pages_off_the_paths_are_the_json_404,
    emails_link_to_the_apps_own_pages_when_configured,
    templates_and_strings_are_replaced_from_the_directory,
    a_broken_override_stops_the_start_with_its_name,
);

async fn with_pages_off_the_paths_are_the_json_404(db: Db) {
    let app = TestApp::spawn_with(db, |o| o.pages = Some(Toggle::Off)).await;
    let mut visitor = Visitor::new(&app);
    for path in [
        "/signup",
        "/login",
        "/account",
        "/password/reset?token=x",
        "/auth/resume",
    ] {
        let page = visitor.get(path).await;
        assert_eq!(page.status, 404, "{path}");
        assert_eq!(
            page.header("content-type"),
            Some("application/json"),
            "{path}"
        );
    }
    // The JSON API is all there.
    assert_eq!(app.signup("ada@example.com", PASSWORD).await.status(), 201);
}

async fn emails_link_to_the_apps_own_pages_when_configured(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |o| {
        o.reset_link_url = Some("https://app.example.com/reset#t={token}".into());
        o.verify_link_url = Some("https://app.example.com/verify?code={token}&x=1".into());
    })
    .await;
    app.signed_up("ada@example.com").await;
    let verify = sink.nth(1).await.body("text/plain");
    let link = verify
        .split_whitespace()
        .find(|w| w.starts_with("https://app.example.com/verify?code="))
        .unwrap_or_else(|| panic!("{verify}"));
    let token = link
        .strip_prefix("https://app.example.com/verify?code=")
        .unwrap()
        .strip_suffix("&x=1")
        .unwrap();
    // The token works with the JSON API, which the app's page calls.
    let verified = app
        .post_json("/auth/email/verify", &serde_json::json!({"token": token}))
        .await;
    assert_eq!(verified.status(), 204);
    app.post_json(
        "/auth/password/forgot",
        &serde_json::json!({"email": "ada@example.com"}),
    )
    .await;
    let reset = sink.nth(2).await.body("text/plain");
    assert!(
        reset.contains("https://app.example.com/reset#t="),
        "{reset}"
    );
    assert!(!reset.contains("/password/reset?token="), "{reset}");

    for (url, problem) in [
        (
            "https://app.example.com/reset",
            "reset_link_url must contain {token}",
        ),
        (
            "ftp://x/{token}",
            "reset_link_url must be an http:// or https:// URL with a host",
        ),
    ] {
        let err = Settings::resolve(Overrides {
            reset_link_url: Some(url.into()),
            ..Overrides::default()
        })
        .err()
        .unwrap();
        assert_eq!(err.to_string(), problem);
    }
}

fn template_dir(files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("latchkey-pages-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

async fn templates_and_strings_are_replaced_from_the_directory(db: Db) {
    let dir = template_dir(&[
        (
            "strings.toml",
            "[site]\nlang = \"de\"\n[login]\ntitle = \"Anmelden\"\n[fields]\nemail = \"E-Mail\"\n\
             [problems]\n\"is required\" = \"fehlt\"\n[form]\nfield_error = \"{label}: {problem}\"\n",
        ),
        ("style.css", "body { color: rebeccapurple; }"),
        (
            "forgot.html",
            "{% extends \"base.html\" %}{% block content %}<p id=\"own\">{{ t.forgot.title }}</p>{% endblock %}",
        ),
    ]);
    let path = dir.clone();
    let app = TestApp::spawn_with(db, move |o| o.pages_templates = Some(path)).await;
    let mut visitor = Visitor::new(&app);
    let login = visitor.get("/login").await;
    assert!(login.body.contains("<html lang=\"de\">"));
    assert!(login.body.contains("<h1>Anmelden</h1>"));
    assert!(login.body.contains("<label for=\"email\">E-Mail</label>"));
    // What the translation leaves out keeps the built-in string.
    assert!(
        login
            .body
            .contains("<label for=\"password\">Password</label>")
    );
    let failed = visitor
        .post("/login", &[("email", ""), ("password", "x")])
        .await;
    assert_eq!(failed.status, 422);
    assert!(failed.body.contains("E-Mail: fehlt"), "{}", failed.body);
    assert!(input(&failed.body, "email").contains("aria-invalid"));
    let forgot = visitor.get("/password/forgot").await;
    assert!(
        forgot
            .body
            .contains("<p id=\"own\">Reset your password</p>")
    );
    assert_eq!(
        visitor.get("/pages/style.css").await.body,
        "body { color: rebeccapurple; }"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

async fn a_broken_override_stops_the_start_with_its_name(db: Db) {
    let db = TestDb::new(db).await;
    for (files, message) in [
        (
            vec![(
                "login.html",
                "{% extends \"base.html\" %}{% block content %}{{ nope.x }}{% endblock %}",
            )],
            "page template login.html: ",
        ),
        (
            vec![("account.html", "{% if %}")],
            "page template account.html: ",
        ),
        (
            vec![("strings.toml", "[login]\ntitel = \"typo\"\n")],
            "page strings.toml: unknown key or not a string: login.titel",
        ),
    ] {
        let dir = template_dir(&files);
        let mut overrides = test_overrides(&db, &latchkey::keys::Kek::generate_encoded());
        overrides.pages_templates = Some(dir.clone());
        let settings = Settings::resolve(overrides).unwrap();
        let err = AppState::build(settings, Clock::default())
            .await
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").starts_with(message),
            "{files:?}: {err:#}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
