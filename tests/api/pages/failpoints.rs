//! The pages fail as the JSON API does (`--features failpoints`): a failure before the commit of
//! the flow a page calls leaves the database as it was, sets no cookie, and answers a 500 page
//! whose text says nothing of the cause.

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    a_signup_page_failing_before_commit_leaves_nothing_and_sets_no_cookie,
    a_reset_page_failing_before_commit_leaves_the_token_and_the_password,
);

const ACTIONS: [&str; 2] = ["return", "panic"];

async fn post_form(
    server: &ServerProcess,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    server
        .client
        .post(server.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn assert_internal_page(response: reqwest::Response, context: &str) {
    assert_eq!(response.status(), 500, "{context}");
    assert!(
        response.headers().get("set-cookie").is_none(),
        "{context}: no cookie"
    );
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8",
        "{context}"
    );
    let body = response.text().await.unwrap();
    assert!(
        body.contains("Something went wrong on our side. Please try again."),
        "{context}: {body}"
    );
    assert!(!body.contains("failpoint"), "{context}: no internals");
}

async fn a_signup_page_failing_before_commit_leaves_nothing_and_sets_no_cookie(db: Db) {
    for action in ACTIONS {
        let context = format!("signup.before_commit=1*{action}");
        let test_db = TestDb::new(db).await;
        let kek = latchkey::keys::Kek::generate_encoded();
        let server = ServerProcess::serve(
            &test_db,
            &kek,
            &[("FAILPOINTS", &format!("signup.before_commit=1*{action}"))],
        )
        .await;
        let pool = test_db.pool().await;
        let fields = [("email", "ada@example.com"), ("password", PASSWORD)];
        assert_internal_page(post_form(&server, "/signup", &fields).await, &context).await;
        for table in ["users", "profiles", "sessions", "audit_events", "outbox"] {
            let rows = count(&pool, &format!("SELECT COUNT(*) FROM {table}")).await;
            assert_eq!(rows, 0, "{context}: {table}");
        }
        let retried = post_form(&server, "/signup", &fields).await;
        assert_eq!(retried.status(), 303, "{context}: the same signup again");
        assert_eq!(count(&pool, ORPHANS).await, 0);
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM users").await, 1);
        pool.close().await;
    }
}

async fn a_reset_page_failing_before_commit_leaves_the_token_and_the_password(db: Db) {
    for action in ACTIONS {
        let context = format!("password_reset.before_commit=1*{action}");
        let test_db = TestDb::new(db).await;
        let kek = latchkey::keys::Kek::generate_encoded();
        let server = ServerProcess::serve(
            &test_db,
            &kek,
            &[(
                "FAILPOINTS",
                &format!("password_reset.before_commit=1*{action}"),
            )],
        )
        .await;
        let pool = test_db.pool().await;
        assert_eq!(server.signup("ada@example.com").await.status(), 201);
        assert_eq!(server.forgot("ada@example.com").await.status(), 202);
        let token = server.link_token("password/reset", 0).await;
        let fields = [
            ("token", token.as_str()),
            ("password", "a brand new passphrase"),
        ];
        assert_internal_page(
            post_form(&server, "/password/reset", &fields).await,
            &context,
        )
        .await;
        let unspent = "SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'password_reset' \
                       AND used_at IS NULL";
        assert_eq!(
            count(&pool, unspent).await,
            1,
            "{context}: the token is not spent"
        );
        assert_eq!(
            server.login("ada@example.com").await.status(),
            200,
            "{context}"
        );
        let retried = post_form(&server, "/password/reset", &fields).await;
        assert_eq!(retried.status(), 303, "{context}: the same reset again");
        assert_eq!(count(&pool, unspent).await, 0);
        pool.close().await;
    }
}
