//! Passwordless sign-in on the pages: the login page's "email me a code" form, the code form
//! that follows it, and the emailed link's page (its GET spends nothing).

use super::{Visitor, assert_page_headers, input};
use crate::db_tests;
use crate::helpers::*;
use crate::passwordless::code_of;

db_tests!(
    the_login_page_emails_a_code_and_the_code_form_signs_in,
    the_link_page_spends_nothing_and_its_button_signs_in_once,
    an_account_with_a_second_factor_gets_the_challenge_page,
);

/// The value of the hidden field `name`.
fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker).expect("the hidden field") + marker.len();
    body[start..].split('"').next().unwrap().to_owned()
}

async fn the_login_page_emails_a_code_and_the_code_form_signs_in(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    app.signed_up("ada@example.com").await;
    sink.wait_for(1).await;
    let mut visitor = Visitor::new(&app);
    let login = visitor.get("/login?return_to=%2Faccount%3Ftab%3D1").await;
    assert_eq!(login.status, 200);
    assert!(
        login.body.contains("action=\"/login/code\""),
        "{}",
        login.body
    );
    let email = input(&login.body, "passwordless-email");
    assert!(email.contains("autocomplete=\"email\""), "{email}");

    // The same "check your email" page for an account and for an unknown address.
    let mut sent = Vec::new();
    for address in ["ada@example.com", "nobody@example.com"] {
        let fields = [("email", address), ("return_to", "/account?tab=1")];
        let page = visitor.post("/login/code", &fields).await;
        assert_eq!(page.status, 200, "{address}");
        assert_page_headers(&page, address);
        assert!(page.set_cookies().is_empty());
        assert!(
            page.body.contains("<h1>Check your email</h1>"),
            "{}",
            page.body
        );
        assert!(page.body.contains("action=\"/login/code/verify\""));
        let code = input(&page.body, "code");
        assert!(code.contains("autocomplete=\"one-time-code\""), "{code}");
        assert!(page.body.contains("Code from the email"));
        let kept = hidden(&page.body, "return_to");
        assert_eq!(kept, "http://localhost:8080/account?tab=1");
        sent.push(page.body.replace(address, "ADDRESS"));
    }
    assert_eq!(sent[0], sent[1], "nothing tells the two apart");
    let mail = sink.nth(2).await;
    assert_eq!(mail.to, ["ada@example.com"]);
    let code = code_of(&mail);

    // A wrong code: the form again, 400, the message at the field, the address kept.
    let wrong_code = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let fields = [("email", "ada@example.com"), ("code", wrong_code.as_str())];
    let wrong = visitor.post("/login/code/verify", &fields).await;
    assert_eq!(wrong.status, 400);
    assert!(wrong.set_cookies().is_empty());
    assert!(
        wrong.body.contains("That code is not right"),
        "{}",
        wrong.body
    );
    assert!(input(&wrong.body, "code").contains("aria-invalid=\"true\""));
    assert_eq!(hidden(&wrong.body, "email"), "ada@example.com");

    let fields = [
        ("email", "ada@example.com"),
        ("code", code.as_str()),
        ("return_to", "/account?tab=1"),
    ];
    let signed_in = visitor.post("/login/code/verify", &fields).await;
    signed_in.see_other("http://localhost:8080/account?tab=1");
    assert!(signed_in.set_cookies().contains_key("__Host-lk_access"));
    assert!(signed_in.set_cookies().contains_key("__Secure-lk_refresh"));
    let account = visitor.follow(signed_in).await;
    assert_eq!(account.status, 200);
    assert!(account.body.contains("ada@example.com"));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE amr = 'otp'")
            .await,
        1
    );

    let bad = visitor
        .post("/login/code", &[("email", "not-an-address")])
        .await;
    assert_eq!(bad.status, 422);
    assert!(input(&bad.body, "email").contains("aria-invalid=\"true\""));
    assert!(bad.body.contains("action=\"/login/code\""));
}

async fn the_link_page_spends_nothing_and_its_button_signs_in_once(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    app.signed_up("ada@example.com").await;
    sink.wait_for(1).await;
    let started = app
        .post_json(
            "/auth/passwordless/start",
            &serde_json::json!({"email": "ada@example.com"}),
        )
        .await;
    assert_eq!(started.status(), 202);
    let mail = sink.nth(2).await;
    let link = mail.link("/passwordless");
    let token = mail.token("/passwordless");
    let mut visitor = Visitor::new(&app);
    for _ in 0..2 {
        let page = visitor.get(&link).await;
        assert_eq!(page.status, 200);
        assert_page_headers(&page, "link page");
        assert!(page.body.contains("action=\"/passwordless\""));
        assert_eq!(hidden(&page.body, "token"), token);
    }
    let unused = "SELECT COUNT(*) FROM passwordless_codes WHERE used_at IS NULL";
    assert_eq!(
        app.count(unused).await,
        1,
        "opening the link spends nothing"
    );

    let signed_in = visitor.post("/passwordless", &[("token", &token)]).await;
    signed_in.see_other("/account");
    assert!(signed_in.set_cookies().contains_key("__Host-lk_access"));
    assert_eq!(app.count(unused).await, 0);
    let again = visitor.post("/passwordless", &[("token", &token)]).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("This link no longer works"));
    assert!(!again.body.contains("name=\"token\""));
    assert_eq!(visitor.get(&link).await.status, 400);
    assert_eq!(visitor.get("/passwordless").await.status, 400);
}

async fn an_account_with_a_second_factor_gets_the_challenge_page(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    crate::mfa::freeze(&app);
    crate::mfa::enroll(&app, "ada@example.com").await;
    sink.wait_for(1).await;
    let mut visitor = Visitor::new(&app);
    let page = visitor
        .post("/login/code", &[("email", "ada@example.com")])
        .await;
    assert_eq!(page.status, 200);
    let code = code_of(&sink.nth(2).await);
    let fields = [("email", "ada@example.com"), ("code", code.as_str())];
    let challenge = visitor.post("/login/code/verify", &fields).await;
    assert_eq!(challenge.status, 200);
    assert!(
        challenge.set_cookies().is_empty(),
        "no cookie before the factor"
    );
    assert!(challenge.body.contains("Two-step verification"));
    assert!(challenge.body.contains("action=\"/login/mfa\""));
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1);
}
