//! `signup.in_hook`: a failure after the app's rows are written, before the commit, takes them
//! back with the account. Runs the app's binary: failpoints are process-wide.

use crate::db_tests;
use crate::harness::{App, Db, error_code};

db_tests!(a_failure_in_the_hook_leaves_no_user_no_profile_no_workspace_no_cookie);

async fn a_failure_in_the_hook_leaves_no_user_no_profile_no_workspace_no_cookie(db: Db) {
    for action in ["return", "panic"] {
        let app = App::start_process(db, &format!("signup.in_hook={action}")).await;
        let response = app.signup("ada@example.com", None).await;
        assert!(response.headers().get("set-cookie").is_none(), "{action}");
        let (status, error) = error_code(response).await;
        assert_eq!(status, 500, "{action}");
        assert_eq!(error["code"], "internal", "{action}");
        assert_eq!(error["message"], "Something went wrong on our side.");
        assert_eq!(app.db.counts().await, [0, 0, 0, 0], "{action}");
        assert_eq!(
            app.db.count("outbox").await,
            0,
            "no verification email: {action}"
        );
    }
}
