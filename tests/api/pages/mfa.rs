//! The login page with a second factor: the right password answers the challenge page (no
//! cookie yet), whose forms finish the login with a code or a recovery code.

use std::time::Duration;

use super::{Visitor, assert_page_headers, input};
use crate::db_tests;
use crate::helpers::*;
use crate::mfa::{code_at_step, enroll, freeze, step_now};

db_tests!(the_login_page_asks_for_the_second_factor_and_then_signs_in);

/// The `mfa_token` of the challenge page's hidden field.
fn hidden_token(body: &str) -> String {
    let marker = "name=\"mfa_token\" value=\"";
    let start = body.find(marker).expect("the mfa_token field") + marker.len();
    body[start..].split('"').next().unwrap().to_owned()
}

async fn the_login_page_asks_for_the_second_factor_and_then_signs_in(db: Db) {
    let app = TestApp::spawn(db).await;
    freeze(&app);
    let e = enroll(&app, "ada@example.com").await;
    app.clock.advance(Duration::from_secs(60));
    let mut visitor = Visitor::new(&app);
    let credentials = [("email", "ada@example.com"), ("password", PASSWORD)];
    let challenge = visitor.post("/login", &credentials).await;
    assert_eq!(challenge.status, 200);
    assert_page_headers(&challenge, "the challenge page");
    assert!(
        challenge.set_cookies().is_empty(),
        "no cookie before the second factor"
    );
    assert!(
        challenge.body.contains("Two-step verification"),
        "{}",
        challenge.body
    );
    let code_input = input(&challenge.body, "code");
    assert!(
        code_input.contains("autocomplete=\"one-time-code\""),
        "{code_input}"
    );
    assert!(code_input.contains("inputmode=\"numeric\""), "{code_input}");
    assert!(input(&challenge.body, "recovery_code").contains("type=\"text\""));
    let token = hidden_token(&challenge.body);
    let sessions = app.count("SELECT COUNT(*) FROM sessions").await;

    // A wrong code: the page again with 401, the message at the field, the token kept.
    let wrong = visitor
        .post(
            "/login/mfa",
            &[
                ("mfa_token", &token),
                ("code", "000000"),
                ("recovery_code", ""),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.set_cookies().is_empty());
    assert!(
        wrong
            .body
            .contains("That code is not right, or was used already."),
        "{}",
        wrong.body
    );
    assert!(input(&wrong.body, "code").contains("aria-invalid=\"true\""));
    assert_eq!(hidden_token(&wrong.body), token);

    let code = code_at_step(&e.secret, step_now(&app));
    let fields = [("mfa_token", token.as_str()), ("code", code.as_str())];
    let signed_in = visitor.post("/login/mfa", &fields).await;
    signed_in.see_other("/account");
    assert!(signed_in.set_cookies().contains_key("__Host-lk_access"));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions").await,
        sessions + 1
    );
    assert_eq!(visitor.get("/account").await.status, 200);

    // The token is spent: the login starts over, with a notice.
    let again = visitor.post("/login/mfa", &fields).await;
    again.see_other("/login?notice=mfa_expired");

    // A recovery code through its own form.
    let mut other = Visitor::new(&app);
    let challenge = other.post("/login", &credentials).await;
    let token = hidden_token(&challenge.body);
    let recovery = [
        ("mfa_token", token.as_str()),
        ("code", ""),
        ("recovery_code", e.recovery_codes[0].as_str()),
    ];
    other
        .post("/login/mfa", &recovery)
        .await
        .see_other("/account");
}
