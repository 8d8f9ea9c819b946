//! The admin API (`/admin/v1`): keys, what does not authorize it, users (list, search, pages
//! under concurrent inserts, create with an invitation, get, patch, delete), sessions, reset
//! links and the audit query. Every write's audit event names the key.

use std::collections::HashSet;

use reqwest::Method;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    missing_wrong_revoked_keys_cookies_and_access_tokens_are_401,
    users_are_listed_searched_and_paged,
    pages_never_repeat_a_user_while_others_are_inserted,
    create_get_patch_and_delete_a_user,
    a_user_created_with_an_invite_sets_the_password_by_its_link,
    sessions_are_listed_and_revoked_and_reset_links_sent,
    the_audit_trail_is_queried_by_user_type_and_page,
    an_account_whose_address_the_rules_refuse_is_deleted_without_a_notice,
);

/// A live admin key, stored as the CLI stores one; its id and the key.
pub async fn admin_key(app: &TestApp) -> (String, String) {
    let new = latchkey::admin_keys::generate();
    app.state
        .store
        .create_admin_key(new.id, "tests".to_owned(), new.hash, app.clock.now())
        .await
        .unwrap();
    (new.id.to_string(), new.key.expose_secret().to_owned())
}

/// An admin API request with `key`.
pub fn admin(app: &TestApp, key: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.client.request(method, app.url(path)).bearer_auth(key)
}

pub async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = match text.is_empty() {
        true => Value::Null,
        false => serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    };
    (status, body)
}

fn not_found() -> Value {
    json!({"error": {"code": "not_found", "message": "Not found."}})
}

fn email_taken() -> Value {
    json!({"error": {"code": "email_taken", "message": "An account with this email already exists."}})
}

async fn missing_wrong_revoked_keys_cookies_and_access_tokens_are_401(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up("alice@example.com").await;
    let (id, key) = admin_key(&app).await;
    let path = "/admin/v1/users";

    let (status, body) = json_of(app.client.get(app.url(path)).send().await.unwrap()).await;
    assert_eq!((status, body), (401, unauthenticated()), "no key");
    let mut wrong = key.clone();
    wrong.pop();
    wrong.push(if key.ends_with('A') { 'B' } else { 'A' });
    for (bearer, why) in [
        (wrong.as_str(), "same id, another secret"),
        (alice.access_token.as_str(), "a user's access token"),
        ("lk_admin_", "a prefix"),
        (
            "lk_admin_0190000000007000800000000000000_x",
            "an unknown id",
        ),
    ] {
        let (status, body) =
            json_of(admin(&app, bearer, Method::GET, path).send().await.unwrap()).await;
        assert_eq!((status, body), (401, unauthenticated()), "{why}");
    }
    // The session cookies of a signed-in user never authorize it.
    let cookie = format!(
        "__Host-lk_access={}; __Secure-lk_refresh={}",
        alice.access_token, alice.refresh_token
    );
    let response = app
        .client
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await, (401, unauthenticated()), "cookies");

    // The right key works, also from a browser on another origin (no CSRF check: nothing
    // ambient authorizes the admin API).
    let response = admin(&app, &key, Method::POST, path)
        .header("origin", "https://admin.example.net")
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"email": "bob@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (status, _) = json_of(admin(&app, &key, Method::GET, path).send().await.unwrap()).await;
    assert_eq!(status, 200);

    // Revoked: 401 at once.
    assert!(
        app.state
            .store
            .revoke_admin_key(id.parse().unwrap(), app.clock.now())
            .await
            .unwrap()
    );
    let (status, body) = json_of(admin(&app, &key, Method::GET, path).send().await.unwrap()).await;
    assert_eq!((status, body), (401, unauthenticated()), "revoked");
    // Refused calls wrote nothing: one account was created, by the live key.
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 2);
    let kinds = app
        .count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE admin_key_id = '{id}' \
             AND kind IN ('admin_key_created', 'user_created', 'admin_key_revoked')"
        ))
        .await;
    assert_eq!(kinds, 3);
}

/// The emails of a page of users.
fn emails(page: &Value) -> Vec<String> {
    page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect()
}

async fn users_are_listed_searched_and_paged(db: Db) {
    let app = TestApp::spawn(db).await;
    let (_, key) = admin_key(&app).await;
    for email in [
        "ann@example.com",
        "Bob@Example.com",
        "carol@other.org",
        "dan_x@example.com",
    ] {
        app.signed_up(email).await;
    }
    let get = |path: String| {
        let request = admin(&app, &key, Method::GET, &path);
        async move { json_of(request.send().await.unwrap()).await }
    };

    let (status, all) = get("/admin/v1/users".into()).await;
    assert_eq!(status, 200);
    // Empty parameters are absent ones, as in the contract's `?query=&limit=&cursor=`.
    let (status, same) = get("/admin/v1/users?query=&limit=&cursor=".into()).await;
    assert_eq!((status, &same), (200, &all));
    assert_eq!(
        emails(&all),
        [
            "ann@example.com",
            "Bob@Example.com",
            "carol@other.org",
            "dan_x@example.com"
        ]
    );
    assert_eq!(all["next_cursor"], Value::Null);
    let first = &all["users"][0];
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "app_metadata",
            "created_at",
            "disabled",
            "email",
            "email_verified",
            "id"
        ]
    );
    assert_eq!(first["disabled"], false);

    // Pages of two: the cursor goes on where the last page ended.
    let (_, one) = get("/admin/v1/users?limit=2".into()).await;
    assert_eq!(emails(&one), ["ann@example.com", "Bob@Example.com"]);
    let cursor = one["next_cursor"].as_str().unwrap().to_owned();
    let (_, two) = get(format!("/admin/v1/users?limit=2&cursor={cursor}")).await;
    assert_eq!(emails(&two), ["carol@other.org", "dan_x@example.com"]);
    assert_eq!(two["next_cursor"], Value::Null, "no third page");

    // Substring search, case-insensitive; `_` and `%` are no wildcards.
    let (_, found) = get("/admin/v1/users?query=EXAMPLE.COM".into()).await;
    assert_eq!(
        emails(&found),
        ["ann@example.com", "Bob@Example.com", "dan_x@example.com"]
    );
    let (_, found) = get("/admin/v1/users?query=bob".into()).await;
    assert_eq!(emails(&found), ["Bob@Example.com"]);
    let (_, found) = get("/admin/v1/users?query=n_x".into()).await;
    assert_eq!(emails(&found), ["dan_x@example.com"]);
    let (_, found) = get("/admin/v1/users?query=a%25".into()).await;
    assert_eq!(emails(&found), Vec::<String>::new());

    // Bad parameters: 422 naming the parameter.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("cursor=notacursor", "cursor"),
        ("cursor=YWJj", "cursor"),
        ("page=2", "page"),
    ] {
        let (status, body) = get(format!("/admin/v1/users?{query}")).await;
        assert_eq!(status, 422, "{query}");
        assert_eq!(body["error"]["code"], "validation_failed", "{query}");
        assert!(
            body["error"]["fields"][field].is_string(),
            "{query}: {body}"
        );
    }
}

async fn pages_never_repeat_a_user_while_others_are_inserted(db: Db) {
    let app = TestApp::spawn(db).await;
    let (_, key) = admin_key(&app).await;
    let mut existing = HashSet::new();
    for n in 0..12 {
        let response = admin(&app, &key, Method::POST, "/admin/v1/users")
            .json(&json!({"email": format!("user{n:02}@example.com")}))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, 201);
        existing.insert(body["user"]["id"].as_str().unwrap().to_owned());
    }
    // Pages of three, while other requests insert accounts between (and during) the pages.
    let inserter = {
        let (client, url, key) = (app.client.clone(), app.url("/admin/v1/users"), key.clone());
        tokio::spawn(async move {
            for n in 0..12 {
                let response = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"email": format!("new{n:02}@example.com")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/v1/users?limit=3&cursor={c}"),
            None => "/admin/v1/users?limit=3".to_owned(),
        };
        let (status, page) =
            json_of(admin(&app, &key, Method::GET, &path).send().await.unwrap()).await;
        assert_eq!(status, 200);
        for user in page["users"].as_array().unwrap() {
            seen.push(user["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    inserter.await.unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a user appeared twice: {seen:?}");
    assert!(
        existing.iter().all(|id| unique.contains(id)),
        "every account that existed before the paging is on a page"
    );
}

async fn create_get_patch_and_delete_a_user(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let (key_id, key) = admin_key(&app).await;

    // Created with a password, verified, with app metadata: it can log in at once.
    let response = admin(&app, &key, Method::POST, "/admin/v1/users")
        .json(
            &json!({"email": "Ada@Example.com", "password": PASSWORD, "email_verified": true,
                      "app_metadata": {"plan": "pro"}}),
        )
        .send()
        .await
        .unwrap();
    let (status, created) = json_of(response).await;
    assert_eq!(status, 201, "{created}");
    let user = &created["user"];
    let id = user["id"].as_str().unwrap().to_owned();
    assert_eq!(user["email"], "Ada@Example.com");
    assert_eq!(user["email_verified"], true);
    assert_eq!(user["app_metadata"], json!({"plan": "pro"}));
    assert_eq!(user["disabled"], false);
    let session = Session::from_response(app.login("ada@example.com", PASSWORD).await).await;
    assert_eq!(session.body["user"]["id"], id.as_str());

    // The same address again, in another spelling: 409, nothing written.
    for body in [
        json!({"email": "ADA@example.com"}),
        json!({"email": "ada@example.com", "password": PASSWORD}),
    ] {
        let response = admin(&app, &key, Method::POST, "/admin/v1/users")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(json_of(response).await, (409, email_taken()));
    }
    // Bad input: 422, nothing written.
    for (body, field) in [
        (json!({"email": "not an address"}), "email"),
        (
            json!({"email": "eve@example.com", "password": "password"}),
            "password",
        ),
        (
            json!({"email": "eve@example.com", "app_metadata": [1]}),
            "app_metadata",
        ),
        (json!({"email": "eve@example.com", "id": id}), "id"),
        (json!({}), "email"),
    ] {
        let response = admin(&app, &key, Method::POST, "/admin/v1/users")
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"]["fields"][field].is_string(),
            "{field}: {body}"
        );
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);

    let user_path = format!("/admin/v1/users/{id}");
    let (status, got) = json_of(
        admin(&app, &key, Method::GET, &user_path)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(got["user"], created["user"]);
    assert_eq!(got["profile"]["display_name"], Value::Null);
    assert!(
        got["profile"]["last_login_at"].is_string(),
        "logged in once"
    );

    // Patch: only what is given changes.
    let response = admin(&app, &key, Method::PATCH, &user_path)
        .json(&json!({"email_verified": false, "app_metadata": {"plan": "free", "seats": 2}}))
        .send()
        .await
        .unwrap();
    let (status, patched) = json_of(response).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["user"]["email_verified"], false);
    assert_eq!(
        patched["user"]["app_metadata"],
        json!({"plan": "free", "seats": 2})
    );
    assert_eq!(patched["user"]["disabled"], false);
    // Disabled: the session dies at once, login is refused like a wrong password.
    let response = admin(&app, &key, Method::PATCH, &user_path)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    let (status, patched) = json_of(response).await;
    assert_eq!(status, 200);
    assert_eq!(patched["user"]["disabled"], true);
    assert_eq!(
        patched["user"]["app_metadata"],
        json!({"plan": "free", "seats": 2})
    );
    assert_eq!(app.me(&session.access_token).await.status(), 401);
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 401);
    let response = admin(&app, &key, Method::PATCH, &user_path)
        .json(&json!({"disabled": false, "email_verified": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 200);
    for (body, field) in [
        (json!({"app_metadata": "x"}), "app_metadata"),
        (json!({"email": "x@example.com"}), "email"),
        (json!({"disabled": "yes"}), "disabled"),
    ] {
        let response = admin(&app, &key, Method::PATCH, &user_path)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["error"]["fields"][field].is_string(), "{body}");
    }

    // Every write above is an audit event naming the key.
    let named = app
        .count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE admin_key_id = '{key_id}' AND user_id = '{id}'"
        ))
        .await;
    // created; verification and metadata; disabled; enabled and verification.
    assert_eq!(named, 6);

    // Unknown and malformed ids are 404, for every method.
    for path in [
        "/admin/v1/users/0190c8a4-0000-7000-8000-000000000000".to_owned(),
        "/admin/v1/users/not-a-uuid".to_owned(),
    ] {
        for method in [Method::GET, Method::PATCH, Method::DELETE] {
            let mut request = admin(&app, &key, method.clone(), &path);
            if method == Method::PATCH {
                request = request.json(&json!({"disabled": true}));
            }
            let (status, body) = json_of(request.send().await.unwrap()).await;
            assert_eq!((status, body), (404, not_found()), "{method} {path}");
        }
    }

    // Delete: 204, then 404; a notice to the address; the audit events stay.
    let response = admin(&app, &key, Method::DELETE, &user_path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.text().await.unwrap(), "");
    let (status, _) = json_of(
        admin(&app, &key, Method::GET, &user_path)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let response = admin(&app, &key, Method::DELETE, &user_path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let notice = sink.nth(1).await;
    assert_eq!(notice.to, ["Ada@Example.com"]);
    assert_eq!(
        notice.header("Subject").unwrap(),
        "Your account has been deleted"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'user_deleted' \
             AND user_id = '{id}' AND admin_key_id = '{key_id}'"
        ))
        .await,
        1
    );
    crate::lifecycle::assert_nothing_names(&app, &id, "Ada@Example.com").await;
}

async fn a_user_created_with_an_invite_sets_the_password_by_its_link(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let (_, key) = admin_key(&app).await;
    let response = admin(&app, &key, Method::POST, "/admin/v1/users")
        .json(&json!({"email": "invited@example.com", "send_invite": true}))
        .send()
        .await
        .unwrap();
    let (status, created) = json_of(response).await;
    assert_eq!(status, 201);
    assert_eq!(created["user"]["email_verified"], false);
    // No password yet: every login fails as for an unknown account.
    for password in ["", "!no-password", PASSWORD] {
        let status = app.login("invited@example.com", password).await.status();
        assert!(status == 401 || status == 422, "{password:?}: {status}");
    }
    let invite = sink.nth(1).await;
    assert_eq!(invite.to, ["invited@example.com"]);
    assert_eq!(invite.header("Subject").unwrap(), "You have been invited");
    assert!(invite.body("text/plain").contains("within 24 hours"));
    let token = invite.token("/password/reset");
    let response = app
        .post_json(
            "/auth/password/reset",
            &json!({"token": token, "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), 204);
    let session = Session::from_response(app.login("invited@example.com", PASSWORD).await).await;
    assert_eq!(
        session.body["user"]["email_verified"], true,
        "the link proved the address"
    );
}

async fn sessions_are_listed_and_revoked_and_reset_links_sent(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |_| {}).await;
    let (key_id, key) = admin_key(&app).await;
    let alice = app.signed_up("alice@example.com").await;
    let second = Session::from_response(app.login("alice@example.com", PASSWORD).await).await;
    let id = alice.user_id().to_owned();
    let path = format!("/admin/v1/users/{id}/sessions");

    let (status, list) = json_of(admin(&app, &key, Method::GET, &path).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let sid = TestApp::claims(&second.access_token)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sessions[0]["id"], sid.as_str(), "newest first");
    let keys: Vec<&String> = sessions[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "created_at",
            "expires_at",
            "id",
            "ip",
            "last_used_at",
            "revoked_at",
            "revoked_reason",
            "user_agent"
        ]
    );

    let response = admin(&app, &key, Method::DELETE, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(app.me(&alice.access_token).await.status(), 401);
    assert_eq!(app.me(&second.access_token).await.status(), 401);
    assert_eq!(app.refresh(&second.refresh_token).await.status(), 401);
    let (_, list) = json_of(admin(&app, &key, Method::GET, &path).send().await.unwrap()).await;
    assert_eq!(list["sessions"], json!([]));
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'sessions_revoked_by_admin' \
             AND admin_key_id = '{key_id}' AND user_id = '{id}'"
        ))
        .await,
        1
    );
    let nobody = "/admin/v1/users/0190c8a4-0000-7000-8000-000000000000/sessions";
    for method in [Method::GET, Method::DELETE] {
        let response = admin(&app, &key, method, nobody).send().await.unwrap();
        assert_eq!(json_of(response).await, (404, not_found()));
    }

    // A reset link at the operator's request: 202, the email, and it works.
    sink.nth(1).await; // the signup's verification email
    let reset = format!("/admin/v1/users/{id}/password-reset");
    let (status, body) = json_of(
        admin(&app, &key, Method::POST, &reset)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body),
        (202, json!({"message": "A reset link is on its way."}))
    );
    let mail = sink.nth(2).await;
    assert_eq!(mail.header("Subject").unwrap(), "Reset your password");
    let token = mail.token("/password/reset");
    let response = app
        .post_json(
            "/auth/password/reset",
            &json!({"token": token, "password": "a brand new battery staple"}),
        )
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'password_reset_sent' \
             AND admin_key_id = '{key_id}'"
        ))
        .await,
        1
    );
    // A disabled account gets none; an unknown one is 404.
    let response = admin(&app, &key, Method::PATCH, &format!("/admin/v1/users/{id}"))
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = json_of(
        admin(&app, &key, Method::POST, &reset)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202);
    let nobody = "/admin/v1/users/0190c8a4-0000-7000-8000-000000000000/password-reset";
    let response = admin(&app, &key, Method::POST, nobody)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await, (404, not_found()));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'password_reset'")
            .await,
        1,
        "no link for the disabled account"
    );
}

async fn the_audit_trail_is_queried_by_user_type_and_page(db: Db) {
    let app = TestApp::spawn(db).await;
    let (key_id, key) = admin_key(&app).await;
    let alice = app.signed_up("alice@example.com").await;
    let bob = app.signed_up("bob@example.com").await;
    for _ in 0..3 {
        assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
    }
    assert_eq!(
        app.login("alice@example.com", "wrong password")
            .await
            .status(),
        401
    );
    let get = |path: String| {
        let request = admin(&app, &key, Method::GET, &path);
        async move { json_of(request.send().await.unwrap()).await }
    };
    let kinds = |page: &Value| -> Vec<String> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, all) = get("/admin/v1/audit".into()).await;
    assert_eq!(status, 200);
    assert_eq!(
        kinds(&all),
        [
            "login_failed",
            "login",
            "login",
            "login",
            "signup",
            "signup",
            "admin_key_created"
        ],
        "newest first"
    );
    assert_eq!(all["events"][6]["admin_key_id"], key_id.as_str());

    let alice_id = alice.user_id();
    let (_, mine) = get(format!("/admin/v1/audit?user_id={alice_id}")).await;
    assert_eq!(
        kinds(&mine),
        ["login_failed", "login", "login", "login", "signup"]
    );
    let (_, logins) = get(format!(
        "/admin/v1/audit?user_id={alice_id}&type=login&limit=2"
    ))
    .await;
    assert_eq!(kinds(&logins), ["login", "login"]);
    let cursor = logins["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = get(format!(
        "/admin/v1/audit?user_id={alice_id}&type=login&limit=2&cursor={cursor}"
    ))
    .await;
    assert_eq!(kinds(&rest), ["login"]);
    assert_eq!(rest["next_cursor"], Value::Null);
    let (_, signups) = get("/admin/v1/audit?type=signup".into()).await;
    let ids: Vec<&str> = signups["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [bob.user_id(), alice.user_id()]);
    let event = &signups["events"][0];
    let keys: Vec<&String> = event.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "admin_key_id",
            "created_at",
            "id",
            "ip",
            "session_id",
            "type",
            "user_agent",
            "user_id"
        ]
    );

    for (query, field) in [
        ("user_id=nope", "user_id"),
        ("limit=-1", "limit"),
        ("cursor=%21", "cursor"),
    ] {
        let (status, body) = get(format!("/admin/v1/audit?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(
            body["error"]["fields"][field].is_string(),
            "{query}: {body}"
        );
    }
}

async fn an_account_whose_address_the_rules_refuse_is_deleted_without_a_notice(db: Db) {
    let app = TestApp::spawn(db).await;
    let (_, key) = admin_key(&app).await;
    let old = app.signed_up("old@example.com").await;
    // Stored under older rules: a display-name form the current rules refuse.
    sqlx::query("UPDATE users SET email = 'Old <old@example.com>'")
        .execute(app.pool())
        .await
        .unwrap();
    let path = format!("/admin/v1/users/{}", old.user_id());
    let response = admin(&app, &key, Method::DELETE, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'account_deleted'")
            .await,
        0
    );
}
