//! GET /openapi.json: the document covers every route the code declares, every documented
//! operation is served, and the document says what the contract says (OpenAPI 3.1, the security
//! schemes, the error codes, the responses every JSON body can get).
//!
//! Whether each response really matches the document is checked by schemathesis in `.ci/run`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    every_route_in_the_code_is_in_the_document,
    every_operation_in_the_document_is_served,
    the_document_is_openapi_3_1_with_the_contracts_security_schemes,
    the_error_codes_of_the_document_are_those_of_the_code,
    every_operation_documents_the_errors_it_can_get,
);

const METHODS: [&str; 8] = [
    "get", "post", "put", "patch", "delete", "head", "options", "trace",
];

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

/// (method, path) of every operation of the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|key| METHODS.contains(&key.as_str()))
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect()
}

/// (method, path) of every `.route("PATH", METHOD(handler)...)` in src/routes/*.rs, read from the
/// source so that a new route cannot be forgotten.
fn routes_in_the_code() -> BTreeSet<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
    let mut routes = BTreeSet::new();
    // src/routes/*.rs and the modules of its folders (src/routes/admin/).
    let mut files = Vec::new();
    let mut dirs = vec![dir];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => dirs.push(path),
                false => files.push(path),
            }
        }
    }
    for file in files {
        let source = std::fs::read_to_string(file).unwrap();
        let mut rest = source.as_str();
        while let Some(start) = rest.find(".route(") {
            rest = &rest[start + ".route(".len()..];
            // rustfmt may put the path on a line of its own.
            let Some(quoted) = rest.trim_start().strip_prefix('"') else {
                continue;
            };
            rest = quoted;
            let (path, after) = rest.split_once('"').unwrap();
            // The method router: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let end = after
                .char_indices()
                .find_map(|(i, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    (depth == 0).then_some(i)
                })
                .unwrap();
            let method_router = &after[..end];
            let methods: Vec<&str> = METHODS
                .iter()
                .copied()
                .filter(|m| {
                    method_router.match_indices(&format!("{m}(")).any(|(i, _)| {
                        i == 0 || !method_router.as_bytes()[i - 1].is_ascii_alphanumeric()
                    })
                })
                .collect();
            assert!(!methods.is_empty(), "no method for {path}: {method_router}");
            for method in methods {
                routes.insert((method.to_owned(), path.to_owned()));
            }
            rest = &after[end..];
        }
    }
    routes
}

async fn every_route_in_the_code_is_in_the_document(db: Db) {
    let app = TestApp::spawn(db).await;
    let documented = operations(&document(&app).await);
    let routes = routes_in_the_code();
    // The reading of the source found the routes (a sample of them), or this test proves nothing.
    for route in [
        ("post", "/auth/signup"),
        ("delete", "/auth/sessions/{id}"),
        ("patch", "/admin/v1/users/{id}"),
    ] {
        let route = (route.0.to_owned(), route.1.to_owned());
        assert!(routes.contains(&route), "{route:?} not found in src/routes");
    }
    let missing: Vec<_> = routes.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&routes).collect();
    assert!(
        stale.is_empty(),
        "documented operations with no route: {stale:?}"
    );
}

async fn every_operation_in_the_document_is_served(db: Db) {
    // A provider, so that its paths exist (its issuer answers nothing: the start is refused).
    let app = TestApp::spawn_with(db, |o| {
        o.oidc_providers = Some(vec![latchkey::oidc::ProviderSetting {
            id: "example".into(),
            name: "Example".into(),
            issuer: "http://127.0.0.1:9".into(),
            client_id: "client".into(),
            client_secret: "secret".to_owned().into(),
            scopes: None,
        }]);
    })
    .await;
    let doc = document(&app).await;
    for (method, path) in operations(&doc) {
        let served = path.replace("{provider}", "example");
        let url = app.url(&served.replace("{id}", &uuid::Uuid::new_v4().to_string()));
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut request = app.client.request(method.clone(), url);
        if doc["paths"][&path][method.as_str().to_lowercase()]["requestBody"].is_object() {
            request = request.json(&json!({}));
        }
        let status = request.send().await.unwrap().status().as_u16();
        assert!(
            ![404, 405].contains(&status),
            "{method} {path} answered {status}"
        );
    }
}

async fn the_document_is_openapi_3_1_with_the_contracts_security_schemes(db: Db) {
    let app = TestApp::spawn(db).await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["bearer"]["bearerFormat"], "JWT");
    for (name, cookie) in [
        ("access_cookie", "__Host-lk_access"),
        ("refresh_cookie", "__Secure-lk_refresh"),
    ] {
        assert_eq!(schemes[name]["type"], "apiKey", "{name}");
        assert_eq!(schemes[name]["in"], "cookie", "{name}");
        assert_eq!(schemes[name]["name"], cookie, "{name}");
    }
    // Authenticated operations name the bearer token and the access cookie; refresh its cookie.
    let security = |method: &str, path: &str| doc["paths"][path][method]["security"].clone();
    let authenticated = json!([{"bearer": []}, {"access_cookie": []}]);
    for (method, path) in [
        ("get", "/auth/me"),
        ("patch", "/auth/me/profile"),
        ("get", "/auth/sessions"),
        ("delete", "/auth/sessions/{id}"),
        ("post", "/auth/logout-all"),
        ("post", "/auth/password/change"),
        ("post", "/auth/email/verify/resend"),
    ] {
        assert_eq!(security(method, path), authenticated, "{method} {path}");
    }
    assert_eq!(
        security("post", "/auth/refresh"),
        json!([{"refresh_cookie": []}])
    );
}

/// "invalid_json" for `InvalidJson`.
fn snake_case(variant: &str) -> String {
    let mut out = String::new();
    for (i, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

async fn the_error_codes_of_the_document_are_those_of_the_code(db: Db) {
    let app = TestApp::spawn(db).await;
    let doc = document(&app).await;
    // Every `ErrorCode::X` that src/error.rs answers with.
    let source = include_str!("../../src/error.rs");
    let in_the_code: BTreeSet<String> = source
        .match_indices("ErrorCode::")
        .map(|(i, prefix)| {
            let rest = &source[i + prefix.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            snake_case(&rest[..end])
        })
        .filter(|code| !code.is_empty())
        .collect();
    let schemas = &doc["components"]["schemas"];
    let error = &schemas["ErrorDetail"];
    assert_eq!(
        error["required"],
        json!(["code", "message"]),
        "`fields` appears only on 422"
    );
    assert_eq!(
        error["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
    let documented: BTreeSet<String> = schemas["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(documented, in_the_code);
    assert_eq!(
        documented.len(),
        19,
        "the contract's table has 16 codes; `conflict` is an application hook's (library mode), \
         `mfa_required` the step-up's of an account with a second factor, `oidc_failed` a refused \
         sign-in with an OpenID provider"
    );
    assert!(documented.contains("conflict"));
    assert!(documented.contains("mfa_required"));
}

async fn every_operation_documents_the_errors_it_can_get(db: Db) {
    let app = TestApp::spawn(db).await;
    let doc = document(&app).await;
    let response = |r: &Value| -> Value {
        match r["$ref"].as_str() {
            Some(name) => {
                let name = name.strip_prefix("#/components/responses/").unwrap();
                doc["components"]["responses"][name].clone()
            }
            None => r.clone(),
        }
    };
    let error_body = json!({"$ref": "#/components/schemas/Error"});
    for (method, path) in operations(&doc) {
        let operation = &doc["paths"][&path][&method];
        let responses = operation["responses"].as_object().unwrap();
        let has = |status: &str| responses.contains_key(status);
        let why = format!("{method} {path}");
        assert!(has("500") && has("503"), "{why}: 500 and 503");
        // The admin API is authorized by its bearer key alone: no CSRF check there.
        if method != "get" && !path.starts_with("/admin/v1/") {
            assert!(has("403"), "{why}: 403 csrf_rejected");
        }
        if let Some(body) = operation.get("requestBody") {
            for status in ["400", "413", "415", "422"] {
                assert!(has(status), "{why}: {status}");
            }
            // JSON bodies reject unknown fields (the NDJSON of the import is checked line by line).
            if let Some(schema) = body["content"]["application/json"]["schema"]["$ref"].as_str() {
                let schema = schema.strip_prefix("#/components/schemas/").unwrap();
                assert_eq!(
                    doc["components"]["schemas"][schema]["additionalProperties"], false,
                    "{why}: unknown fields are rejected"
                );
            } else {
                assert!(
                    body["content"].get("application/x-ndjson").is_some(),
                    "{why}"
                );
            }
        }
        if operation.get("security").is_some() && path != "/auth/logout" {
            assert!(has("401"), "{why}: 401");
        }
        for (status, r) in responses {
            let r = response(r);
            assert!(
                r["headers"].get("X-Request-Id").is_some(),
                "{why} {status}: X-Request-Id"
            );
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    r["content"]["application/json"]["schema"], error_body,
                    "{why} {status}: the error shape"
                );
            }
            if ["429", "503"].contains(&status.as_str()) {
                assert!(
                    r["headers"].get("Retry-After").is_some(),
                    "{why} {status}: Retry-After"
                );
            }
            if status == "204" {
                assert!(r.get("content").is_none(), "{why}: 204 has no body");
            }
        }
    }
    // GET /metrics is Prometheus text, not JSON.
    let metrics = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
    assert!(metrics.get("text/plain").is_some(), "{metrics}");
}
