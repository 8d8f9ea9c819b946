//! The email change on the hosted pages: the form on /account (problems next to their fields),
//! and the confirmation page of the link, whose GET spends nothing.

use crate::db_tests;
use crate::helpers::*;

use super::{Visitor, assert_page_headers, input};

db_tests!(
    the_account_form_sends_the_link_and_the_link_page_changes_the_address,
    the_account_form_shows_each_problem_next_to_its_field,
);

async fn the_account_form_sends_the_link_and_the_link_page_changes_the_address(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let session = app.signed_up("ada@example.com").await;
    sink.nth(1).await;
    let mut visitor = Visitor::with_session(&app, &session);
    let account = visitor.get("/account").await;
    assert_eq!(account.status, 200);
    assert!(account.body.contains("action=\"/account/email/change\""));
    assert!(input(&account.body, "new_email").contains("type=\"email\""));
    assert!(input(&account.body, "password").contains("autocomplete=\"current-password\""));

    let page = visitor
        .post(
            "/account/email/change",
            &[("new_email", "Ada@New.example"), ("password", PASSWORD)],
        )
        .await;
    page.see_other("/account?notice=email_change_sent");
    let shown = visitor.follow(page).await;
    assert!(
        shown
            .body
            .contains("A confirmation link is on its way to the new address.")
    );
    let mails = sink.wait_for(3).await;
    let mail = mails.iter().find(|m| m.to == ["Ada@New.example"]).unwrap();
    let link = mail.link("/email/change");
    let token = mail.token("/email/change");

    // A mail scanner opening the link twice changes nothing.
    let mut scanner = Visitor::new(&app);
    for _ in 0..2 {
        let page = scanner.get(&link).await;
        assert_eq!(page.status, 200);
        assert_page_headers(&page, "email change page");
        assert!(page.body.contains("action=\"/email/change\""));
        assert!(
            page.body
                .contains(&format!("name=\"token\" value=\"{token}\""))
        );
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = 'ada@example.com'")
            .await,
        1
    );

    let page = scanner.post("/email/change", &[("token", &token)]).await;
    page.see_other("/email/change?notice=email_changed");
    let done = scanner.follow(page).await;
    assert_eq!(done.status, 200);
    assert!(done.body.contains("<h1>Email address changed</h1>"));
    let me: serde_json::Value = app.me(&session.access_token).await.json().await.unwrap();
    assert_eq!(me["user"]["email"], "Ada@New.example");
    assert_eq!(me["user"]["email_verified"], true);
    let again = scanner.post("/email/change", &[("token", &token)]).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("This link no longer works"));
    assert_eq!(scanner.get(&link).await.status, 400);
    // A verification link's token is no email change token.
    let page = scanner.get("/email/change?token=x").await;
    assert_eq!(page.status, 400);
}

async fn the_account_form_shows_each_problem_next_to_its_field(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("ada@example.com").await;
    app.signed_up("bob@example.com").await;
    let mut visitor = Visitor::with_session(&app, &session);
    for (fields, status, field, message) in [
        (
            [("new_email", "bob@example.com"), ("password", PASSWORD)],
            409,
            "new_email",
            "An account with this email already exists.",
        ),
        (
            [
                ("new_email", "new@example.com"),
                ("password", "wrong password"),
            ],
            401,
            "password",
            "The password is wrong.",
        ),
        (
            [("new_email", "not an address"), ("password", PASSWORD)],
            422,
            "new_email",
            "New email address must not contain spaces.",
        ),
    ] {
        let page = visitor.post("/account/email/change", &fields).await;
        assert_eq!(page.status, status, "{fields:?}: {}", page.body);
        assert!(
            page.body.contains(&format!(
                "<p class=\"error\" id=\"{field}-error\">{message}</p>"
            )),
            "{fields:?}: {}",
            page.body
        );
        // What was typed is kept, never the password.
        assert!(input(&page.body, "new_email").contains(&format!("value=\"{}\"", fields[0].1)));
        assert!(!input(&page.body, "password").contains("value="));
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'email_change'")
            .await,
        0
    );
}
