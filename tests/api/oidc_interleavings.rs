//! Sign-in with an OpenID provider under failures and interleavings (`--features failpoints`),
//! against the real provider of `helpers::oidc`: a failure in the callback's transaction before
//! its commit (`return`, `panic`), for a first sign-in that creates the account and for a later
//! one; a browser that goes away while the callback is held before its commit; and an unlink, a
//! disable or a signup of the address committing between the callback's checks and its
//! transaction; a link and an unlink failing before their commits (`return`, `panic`) or whose
//! browser goes away there; a logout arriving while a link holds its session locked; two unlinks
//! of an account's last two ways in at once. Each case runs the real binary (the `fail` crate's configuration is global to a
//! process) on a fresh database.

use sqlx::AnyPool;

use crate::db_tests;
use crate::helpers::oidc::{self, Browser, ConfigFile, Provider, written};
use crate::helpers::*;
use crate::interleavings::{abandon_and_roll_back, held_server, sent_and_held};

db_tests!(
    a_callback_failing_before_its_commit_writes_nothing_and_the_next_sign_in_works,
    a_callback_abandoned_before_its_commit_writes_nothing,
    an_unlink_or_a_disable_committing_while_a_callback_is_held_opens_no_session,
    a_signup_of_the_address_committing_while_a_first_sign_in_is_held_wins,
    a_link_or_an_unlink_failing_before_its_commit_changes_nothing_and_works_after,
    a_link_or_an_unlink_abandoned_before_its_commit_changes_nothing,
    a_logout_while_a_link_is_held_before_its_commit_waits_for_it_and_then_ends_the_session,
    two_unlinks_of_an_accounts_last_two_identities_at_once_leave_one,
);

const REDIRECT_URI: &str = "http://localhost:8080/auth/oidc/testop/callback";

/// No session cookie on the answer.
fn no_session(response: &reqwest::Response, why: &str) {
    let cookies = set_cookies(response.headers());
    assert!(
        !cookies.contains_key("__Host-lk_access") && !cookies.contains_key("__Secure-lk_refresh"),
        "{why}: {cookies:?}"
    );
}

fn signed_in(response: &reqwest::Response, why: &str) -> String {
    assert_eq!(response.status(), 303, "{why}");
    set_cookies(response.headers())["__Host-lk_access"]
        .value
        .clone()
}

/// The provider, its configuration file, and the binary with `env` configured for it.
async fn server(
    test_db: &TestDb,
    provider: &Provider,
    held: &[&str],
    env: &[(&str, &str)],
) -> (ServerProcess, ConfigFile, String) {
    let config = provider.config_file();
    let kek = latchkey::keys::Kek::generate_encoded();
    let with_config = [("LATCHKEY_CONFIG", config.path())];
    let env = [env, &with_config[..]].concat();
    let server = match held {
        [] => ServerProcess::serve(test_db, &kek, &env).await,
        points => held_server(test_db, &kek, points, &env).await,
    };
    (server, config, kek)
}

async fn a_callback_failing_before_its_commit_writes_nothing_and_the_next_sign_in_works(db: Db) {
    if !oidc::available() {
        return;
    }
    for action in ["return", "panic"] {
        let context = format!("oidc.callback.before_commit={action} ({db:?})");
        let test_db = TestDb::new(db).await;
        let provider = Provider::start(REDIRECT_URI);
        // The first creation fails, the second works; the first login after it fails.
        let failpoints = format!("oidc.callback.before_commit=1*{action}->1*off->1*{action}");
        let env = [("FAILPOINTS", failpoints.as_str())];
        let (server, _config, _kek) = server(&test_db, &provider, &[], &env).await;
        let pool = test_db.pool().await;
        provider
            .will_sign_in("sub-ann", "ann@example.com", true)
            .await;

        let failed = Browser::default().sign_in(&server).await;
        assert_eq!(failed.status(), 500, "{context}: creation");
        no_session(&failed, &context);
        assert_eq!(written(&pool).await, [0; 5], "{context}: nothing written");
        server.assert_serving(&context).await;

        // A new sign-in (the failed one's code is spent at the provider) creates the account.
        let created = Browser::default().sign_in(&server).await;
        signed_in(&created, &format!("{context}: created after"));
        assert_eq!(written(&pool).await, [1, 1, 1, 1, 1], "{context}");

        let failed = Browser::default().sign_in(&server).await;
        assert_eq!(failed.status(), 500, "{context}: login");
        no_session(&failed, &context);
        assert_eq!(
            written(&pool).await,
            [1, 1, 1, 1, 1],
            "{context}: no session, no event"
        );
        let used = "SELECT COUNT(*) FROM identities WHERE last_login_at IS NOT NULL";
        assert_eq!(
            count(&pool, used).await,
            0,
            "{context}: the login not recorded"
        );

        let logged_in = Browser::default().sign_in(&server).await;
        signed_in(&logged_in, &format!("{context}: login after"));
        assert_eq!(written(&pool).await, [1, 1, 1, 2, 2], "{context}");
        assert_eq!(count(&pool, ORPHANS).await, 0, "{context}");
        pool.close().await;
    }
}

async fn a_callback_abandoned_before_its_commit_writes_nothing(db: Db) {
    if !oidc::available() {
        return;
    }
    let test_db = TestDb::new(db).await;
    let provider = Provider::start(REDIRECT_URI);
    let point = "oidc.callback.before_commit";
    let (server, _config, _kek) = server(&test_db, &provider, &[point], &[]).await;
    let pool = test_db.pool().await;
    provider
        .will_sign_in("sub-bo", "bo@example.com", true)
        .await;

    let mut browser = Browser::default();
    let at = browser.start(&server, "").await;
    let cookie = oidc_cookie(&browser);
    let request = server
        .client
        .get(server.url(&at.path_and_query))
        .header("cookie", cookie);
    abandon_and_roll_back(&server, request, point).await;
    assert_eq!(written(&pool).await, [0; 5], "nothing written");
    let response = Browser::default().sign_in(&server).await;
    signed_in(&response, "a new sign-in after");
    assert_eq!(written(&pool).await, [1, 1, 1, 1, 1]);
    pool.close().await;
}

fn oidc_cookie(browser: &Browser) -> String {
    format!("__Host-lk_oidc={}", browser.cookies["__Host-lk_oidc"])
}

/// Starts a callback and waits until it is held between its checks and its transaction.
async fn held_callback(server: &ServerProcess) -> tokio::task::JoinHandle<reqwest::Response> {
    let point = "oidc.callback.after_check";
    let mut browser = Browser::default();
    let at = browser.start(server, "").await;
    let request = server
        .client
        .get(server.url(&at.path_and_query))
        .header("cookie", oidc_cookie(&browser));
    sent_and_held(server, request, point).await
}

async fn an_unlink_or_a_disable_committing_while_a_callback_is_held_opens_no_session(db: Db) {
    if !oidc::available() {
        return;
    }
    for race in ["unlink", "disable"] {
        let test_db = TestDb::new(db).await;
        let provider = Provider::start(REDIRECT_URI);
        // The first callback (the account's creation) goes through; the second is held.
        let env = [
            (
                "FAILPOINTS",
                "oidc.callback.after_check=1*off->1*return(sleep:1200)",
            ),
            ("LATCHKEY_DATABASE_TIMEOUT", "10s"),
        ];
        let (server, _config, kek) = server(&test_db, &provider, &[], &env).await;
        let pool = test_db.pool().await;
        provider
            .will_sign_in("sub-cy", "cy@example.com", true)
            .await;
        // The account, with a password so that its identity may go.
        let first = Browser::default().sign_in(&server).await;
        let access = signed_in(&first, race);
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    K1nNcIa7FS1Mfp2zUjpTMM3wSgb9jgyOIjg2sbtfpyQ";
        sqlx::query("UPDATE users SET password_hash = $1")
            .bind(hash)
            .execute(&pool)
            .await
            .unwrap();
        let before = written(&pool).await;

        let held = held_callback(&server).await;
        match race {
            "unlink" => {
                let id = count_text(&pool, "SELECT id FROM identities").await;
                let unlinked = server
                    .client
                    .delete(server.url(&format!("/auth/identities/{id}")))
                    .bearer_auth(&access)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(unlinked.status(), 204, "the unlink commits while held");
            }
            _ => {
                let user_id = count_text(&pool, "SELECT id FROM users").await;
                disable_with_cli(&test_db, &kek, &user_id).await;
            }
        }
        let response = held.await.unwrap();
        assert_eq!(response.status(), 400, "{race}");
        no_session(&response, race);
        let after = written(&pool).await;
        assert_eq!(after[3], before[3], "{race}: no session opened");
        let used = "SELECT COUNT(*) FROM identities WHERE last_login_at IS NOT NULL";
        assert_eq!(count(&pool, used).await, 0, "{race}: no login recorded");
        pool.close().await;
    }
}

async fn count_text(pool: &AnyPool, sql: &str) -> String {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn a_signup_of_the_address_committing_while_a_first_sign_in_is_held_wins(db: Db) {
    if !oidc::available() {
        return;
    }
    let test_db = TestDb::new(db).await;
    let provider = Provider::start(REDIRECT_URI);
    let point = "oidc.callback.after_check";
    let (server, _config, _kek) = server(&test_db, &provider, &[point], &[]).await;
    let pool = test_db.pool().await;
    provider
        .will_sign_in("sub-di", "di@example.com", true)
        .await;

    let held = held_callback(&server).await;
    assert_eq!(server.signup("di@example.com").await.status(), 201);
    let response = held.await.unwrap();
    assert_eq!(response.status(), 409, "the signup won the address");
    no_session(&response, "raced");
    assert_eq!(
        written(&pool).await[..4],
        [1, 1, 0, 1],
        "the signup's rows only"
    );
    let html: String = response.text().await.unwrap();
    assert!(html.contains("An account with this address exists already."));
    pool.close().await;
}

/// The identities, and the audit events of links and unlinks: `[identities, linked, unlinked]`.
async fn links(pool: &AnyPool) -> [i64; 3] {
    let audited = |kind: &str| format!("SELECT COUNT(*) FROM audit_events WHERE kind = '{kind}'");
    [
        count(pool, "SELECT COUNT(*) FROM identities").await,
        count(pool, &audited("identity_linked")).await,
        count(pool, &audited("identity_unlinked")).await,
    ]
}

/// Ann's account, with a password, and her session's access token; her provider account is
/// `sub-ann`.
async fn ann(server: &ServerProcess, provider: &Provider) -> String {
    let signed_up = server.signup("ann@example.com").await;
    assert_eq!(signed_up.status(), 201);
    provider
        .will_sign_in("sub-ann", "ann@work.example", true)
        .await;
    Session::from_response(signed_up).await.access_token
}

fn unlink(server: &ServerProcess, access: &str, id: &str) -> reqwest::RequestBuilder {
    server
        .client
        .delete(server.url(&format!("/auth/identities/{id}")))
        .bearer_auth(access)
}

async fn a_link_or_an_unlink_failing_before_its_commit_changes_nothing_and_works_after(db: Db) {
    if !oidc::available() {
        return;
    }
    for action in ["return", "panic"] {
        let context = format!("{action} ({db:?})");
        let test_db = TestDb::new(db).await;
        let provider = Provider::start(REDIRECT_URI);
        let failpoints =
            format!("oidc.link.before_commit=1*{action};oidc.unlink.before_commit=1*{action}");
        let env = [("FAILPOINTS", failpoints.as_str())];
        let (server, _config, _kek) = server(&test_db, &provider, &[], &env).await;
        let pool = test_db.pool().await;
        let access = ann(&server, &provider).await;

        let failed = Browser::default().link(&server, &access).await;
        assert_eq!(failed.status(), 500, "{context}: the link");
        no_session(&failed, &context);
        assert_eq!(links(&pool).await, [0, 0, 0], "{context}: nothing linked");
        server.assert_serving(&context).await;
        let linked = Browser::default().link(&server, &access).await;
        assert_eq!(linked.status(), 303, "{context}: linked after");
        assert_eq!(links(&pool).await, [1, 1, 0], "{context}");

        let id = count_text(&pool, "SELECT id FROM identities").await;
        let failed = unlink(&server, &access, &id).send().await.unwrap();
        assert_eq!(failed.status(), 500, "{context}: the unlink");
        assert_eq!(links(&pool).await, [1, 1, 0], "{context}: still linked");
        let unlinked = unlink(&server, &access, &id).send().await.unwrap();
        assert_eq!(unlinked.status(), 204, "{context}: unlinked after");
        assert_eq!(links(&pool).await, [0, 1, 1], "{context}");
        pool.close().await;
    }
}

async fn a_link_or_an_unlink_abandoned_before_its_commit_changes_nothing(db: Db) {
    if !oidc::available() {
        return;
    }
    let test_db = TestDb::new(db).await;
    let provider = Provider::start(REDIRECT_URI);
    let (link, unlink_point) = ("oidc.link.before_commit", "oidc.unlink.before_commit");
    let (server, _config, _kek) = server(&test_db, &provider, &[link, unlink_point], &[]).await;
    let pool = test_db.pool().await;
    let access = ann(&server, &provider).await;

    let mut browser = Browser::default();
    let at = browser.start_link(&server, &access).await;
    let request = server
        .client
        .get(server.url(&at.path_and_query))
        .header("cookie", oidc_cookie(&browser));
    abandon_and_roll_back(&server, request, link).await;
    assert_eq!(links(&pool).await, [0, 0, 0], "nothing linked");
    let linked = Browser::default().link(&server, &access).await;
    assert_eq!(linked.status(), 303, "linked after");
    assert_eq!(links(&pool).await, [1, 1, 0]);

    let id = count_text(&pool, "SELECT id FROM identities").await;
    abandon_and_roll_back(&server, unlink(&server, &access, &id), unlink_point).await;
    assert_eq!(links(&pool).await, [1, 1, 0], "still linked");
    let unlinked = unlink(&server, &access, &id).send().await.unwrap();
    assert_eq!(unlinked.status(), 204, "unlinked after");
    assert_eq!(links(&pool).await, [0, 1, 1]);
    pool.close().await;
}

/// The link's transaction holds Ann's session locked (re-checked live) while a logout of that
/// session arrives: the logout waits for the link's commit, then ends the session. Both answer,
/// the link is kept (it was made while the session was live), and the session is over after.
/// The other order, a session ended before the link's transaction, is `oidc.rs`'s
/// `a_link_whose_session_ended_before_its_callback_links_nothing`.
async fn a_logout_while_a_link_is_held_before_its_commit_waits_for_it_and_then_ends_the_session(
    db: Db,
) {
    if !oidc::available() {
        return;
    }
    let test_db = TestDb::new(db).await;
    let provider = Provider::start(REDIRECT_URI);
    let point = "oidc.link.before_commit";
    let env = [
        ("FAILPOINTS", "oidc.link.before_commit=1*return(sleep:1500)"),
        ("LATCHKEY_DATABASE_TIMEOUT", "10s"),
    ];
    let (server, _config, _kek) = server(&test_db, &provider, &[], &env).await;
    let pool = test_db.pool().await;
    let access = ann(&server, &provider).await;

    let mut browser = Browser::default();
    let at = browser.start_link(&server, &access).await;
    let request = server
        .client
        .get(server.url(&at.path_and_query))
        .header("cookie", oidc_cookie(&browser));
    let link = sent_and_held(&server, request, point).await;
    let logout = server
        .client
        .post(server.url("/auth/logout"))
        .bearer_auth(&access)
        .send();
    let (link, logout) = tokio::join!(link, logout);
    let (link, logout) = (link.unwrap(), logout.unwrap());
    assert_eq!(link.status(), 303, "the link commits");
    no_session(&link, "the link");
    assert_eq!(logout.status(), 204, "the logout after it");
    assert_eq!(links(&pool).await, [1, 1, 0]);
    let revoked = "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL";
    assert_eq!(count(&pool, revoked).await, 1, "the session is over");
    // The logout came second: its audit event follows the link's.
    let order = "SELECT kind FROM audit_events WHERE kind IN ('identity_linked', 'logout') \
                 ORDER BY created_at DESC, id DESC LIMIT 1";
    assert_eq!(count_text(&pool, order).await, "logout");
    assert_eq!(
        server.me(&access).await.status(),
        401,
        "the session is over"
    );
    pool.close().await;
}

/// An account made by the provider (no password, no passkey) with two of its identities: one
/// unlink is held before its commit while the other arrives. The user's row, locked first by
/// both, orders them: the first commits (204), the second then finds its identity the last way in
/// and keeps it (409 `conflict`). One identity is left, with one `identity_unlinked` event.
async fn two_unlinks_of_an_accounts_last_two_identities_at_once_leave_one(db: Db) {
    if !oidc::available() {
        return;
    }
    let test_db = TestDb::new(db).await;
    let provider = Provider::start(REDIRECT_URI);
    let point = "oidc.unlink.before_commit";
    let env = [
        (
            "FAILPOINTS",
            "oidc.unlink.before_commit=1*return(sleep:1500)",
        ),
        ("LATCHKEY_DATABASE_TIMEOUT", "10s"),
    ];
    let (server, _config, _kek) = server(&test_db, &provider, &[], &env).await;
    let pool = test_db.pool().await;
    provider
        .will_sign_in("sub-dee", "dee@example.com", true)
        .await;
    let created = Browser::default().sign_in(&server).await;
    let access = signed_in(&created, "the account");
    provider
        .will_sign_in("sub-dee-2", "dee@other.example", true)
        .await;
    let linked = Browser::default().link(&server, &access).await;
    assert_eq!(linked.status(), 303, "the second identity");
    assert_eq!(links(&pool).await, [2, 1, 0]);
    let id_of = |subject: &str| format!("SELECT id FROM identities WHERE subject = '{subject}'");
    let first = count_text(&pool, &id_of("sub-dee")).await;
    let second = count_text(&pool, &id_of("sub-dee-2")).await;

    let held = sent_and_held(&server, unlink(&server, &access, &first), point).await;
    let (held, other) = tokio::join!(held, unlink(&server, &access, &second).send());
    let (held, other) = (held.unwrap(), other.unwrap());
    assert_eq!(held.status(), 204, "the first unlink");
    assert_eq!(other.status(), 409, "the second: the last way in");
    let error: serde_json::Value = other.json().await.unwrap();
    assert_eq!(error["error"]["code"], "conflict");
    assert_eq!(links(&pool).await, [1, 1, 1]);
    assert_eq!(count_text(&pool, "SELECT id FROM identities").await, second);
    pool.close().await;
}
