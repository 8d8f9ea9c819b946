//! A person in a real browser (headless Chromium through chromedriver, driven over WebDriver by
//! fantoccini): signs up, opens the verification link from the test SMTP server, logs out, asks
//! for a reset, opens the reset link, sets a new password, logs in, signs out another session on
//! /account and logs out everywhere. Each page is photographed at a phone and a desktop width into
//! `target/tmp/pages-screenshots/<database>/` (the path is printed), so anyone can look.
//!
//! Without `/usr/bin/chromium` and `/usr/bin/chromedriver` these tests are skipped, loudly,
//! unless `LATCHKEY_TEST_REQUIRE_BROWSER=1` or `CI` is set: then they fail (`.ci/run` installs
//! both).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    a_person_does_every_flow_in_a_real_browser,
    a_person_adds_a_passkey_and_signs_in_with_it_in_a_real_browser,
);

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser tests run; panics when they are required and Chromium is missing.
fn browser_available() -> bool {
    let available = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    let required = crate::helpers::required("LATCHKEY_TEST_REQUIRE_BROWSER");
    if !available {
        assert!(
            !required,
            "the browser tests are required but {CHROMIUM} or {CHROMEDRIVER} is missing \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "note: {CHROMIUM} or {CHROMEDRIVER} missing: the browser tests are SKIPPED \
             (set LATCHKEY_TEST_REQUIRE_BROWSER=1 to make that a failure)"
        );
    }
    available
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            port,
            profile: std::env::temp_dir()
                .join(format!("latchkey-chromium-{}", uuid::Uuid::new_v4())),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chromedriver did not listen on {port}");
    }

    /// A headless Chromium session. The flags keep Chromium off the network it cannot reach.
    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", self.profile.display()),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One person's browser, and where its photographs go.
struct Person {
    browser: Client,
    app_url: String,
    shots: PathBuf,
}

impl Person {
    async fn open(&self, path_or_url: &str) {
        let url = match path_or_url.starts_with("http") {
            true => path_or_url.to_owned(),
            false => format!("{}{path_or_url}", self.app_url),
        };
        self.browser.goto(&url).await.unwrap();
    }

    async fn path(&self) -> String {
        let url = self.browser.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn text(&self) -> String {
        match self.browser.find(Locator::Css("main")).await {
            Ok(main) => main.text().await.unwrap(),
            Err(err) => panic!(
                "no <main> at {:?} ({err}); the page:\n{}",
                self.browser.current_url().await,
                self.browser.source().await.unwrap_or_default()
            ),
        }
    }

    async fn fill(&self, id: &str, value: &str) {
        let field = self.browser.find(Locator::Id(id)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Clicks the submit button of the form whose action is `action`, and waits for the page it
    /// leads to.
    async fn submit(&self, action: &str) {
        let css = format!("form[action=\"{action}\"] button[type=submit]");
        let button = self
            .browser
            .find(Locator::Css(&css))
            .await
            .unwrap_or_else(|e| panic!("no form {action}: {e}"));
        self.click_to_navigate(button).await;
    }

    /// Clicks the link with this text and waits for the page it leads to.
    async fn follow_link(&self, text: &str) {
        let link = self.browser.find(Locator::LinkText(text)).await.unwrap();
        self.click_to_navigate(link).await;
    }

    /// Clicks `element` and waits until the page it was on is gone and the next one has loaded:
    /// a click returns before the navigation it starts is over.
    async fn click_to_navigate(&self, element: fantoccini::elements::Element) {
        let old = self.browser.find(Locator::Css("html")).await.unwrap();
        element.click().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while old.tag_name().await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the click led nowhere"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.browser
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css("main"))
            .await
            .unwrap();
    }

    /// The id of the element that has the focus.
    async fn focused(&self) -> String {
        let id = self
            .browser
            .execute("return document.activeElement.id", vec![])
            .await
            .unwrap();
        id.as_str().unwrap_or_default().to_owned()
    }

    /// Photographs the page at a phone's and a desktop's width, and checks that the phone
    /// needs no sideways scrolling.
    async fn photograph(&self, name: &str) {
        for (width, height, label) in [(390, 844, "phone"), (1280, 900, "desktop")] {
            self.browser.set_window_size(width, height).await.unwrap();
            let png = self.browser.screenshot().await.unwrap();
            std::fs::write(self.shots.join(format!("{name}-{label}.png")), png).unwrap();
            if label == "phone" {
                let overflow = self
                    .browser
                    .execute(
                        "return document.documentElement.scrollWidth > window.innerWidth",
                        vec![],
                    )
                    .await
                    .unwrap();
                assert_eq!(overflow, json!(false), "{name}: wider than a phone");
            }
        }
    }
}

async fn a_person_does_every_flow_in_a_real_browser(db: Db) {
    if !browser_available() {
        return;
    }
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = TestApp::spawn_at_own_url(db, move |o| {
        o.smtp_url = Some(url);
        o.mail_throttle = Some(0);
    })
    .await;
    let driver = Driver::start().await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("pages-screenshots")
        .join(format!("{db:?}").to_lowercase());
    std::fs::create_dir_all(&shots).unwrap();
    eprintln!("screenshots of the pages: {}", shots.display());
    let person = Person {
        browser: driver.browser().await,
        app_url: app.address.clone(),
        shots,
    };

    // Sign up; a mistake first, which the page shows next to its field, with the focus on it.
    person.open("/signup").await;
    person.photograph("signup").await;
    person.fill("email", "ada@example").await;
    person.fill("password", PASSWORD).await;
    person.fill("display_name", "Ada").await;
    person.submit("/signup").await;
    assert_eq!(person.path().await, "/signup");
    assert!(
        person
            .text()
            .await
            .contains("Email is not a valid email address.")
    );
    assert_eq!(person.focused().await, "email");
    person.photograph("signup-error").await;
    person.fill("email", "ada@example.com").await;
    // The password is never sent back: it has to be typed again.
    person.fill("password", PASSWORD).await;
    person.submit("/signup").await;
    assert_eq!(person.path().await, "/account");
    let account = person.text().await;
    assert!(account.contains("ada@example.com"), "{account}");
    assert!(account.contains("Not verified yet"), "{account}");
    person.photograph("account").await;

    // The verification link from the email: a confirm button, then "verified".
    let link = sink.nth(1).await.link("/email/verify");
    person.open(&link).await;
    person.photograph("verify").await;
    person.submit("/email/verify").await;
    assert!(person.text().await.contains("Email verified"));
    person.photograph("verified").await;

    // Log out, from the account page.
    person.open("/account").await;
    assert!(person.text().await.contains("Verified"));
    person.follow_link("Log out").await;
    assert_eq!(person.path().await, "/logout");
    person.photograph("logout").await;
    person.submit("/logout").await;
    assert_eq!(person.path().await, "/login?notice=signed_out");
    assert!(person.text().await.contains("You are logged out."));
    person.photograph("login").await;

    // Forgot the password: the reset link from the email, a new password.
    person.follow_link("Forgot your password?").await;
    person.photograph("forgot").await;
    person.fill("email", "ada@example.com").await;
    person.submit("/password/forgot").await;
    assert!(person.text().await.contains("Check your email"));
    person.photograph("forgot-sent").await;
    let link = sink.nth(2).await.link("/password/reset");
    person.open(&link).await;
    person.photograph("reset").await;
    let new_password = "a brand new passphrase";
    person.fill("password", new_password).await;
    person.submit("/password/reset").await;
    assert_eq!(person.path().await, "/login?notice=password_reset");

    // A wrong password, then the new one.
    person.fill("email", "ada@example.com").await;
    person.fill("password", PASSWORD).await;
    person.submit("/login").await;
    assert!(person.text().await.contains("Wrong email or password."));
    assert_eq!(person.focused().await, "email");
    person.photograph("login-error").await;
    person.fill("password", new_password).await;
    person.submit("/login").await;
    assert_eq!(person.path().await, "/account");

    // Another device signs in; this browser signs it out from the session list.
    let other = Session::from_response(app.login("ada@example.com", new_password).await).await;
    person.open("/account").await;
    person.photograph("account-sessions").await;
    let revoke = person
        .browser
        .find(Locator::Css(
            "form[action=\"/account/sessions/revoke\"] button",
        ))
        .await
        .unwrap();
    person.click_to_navigate(revoke).await;
    assert_eq!(person.path().await, "/account?notice=session_revoked");
    assert_eq!(app.me(&other.access_token).await.status(), 401);
    assert!(person.text().await.contains("This device"));

    // Log out everywhere: no live session is left.
    person.submit("/account/logout-all").await;
    assert_eq!(person.path().await, "/login?notice=logged_out_everywhere");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        0
    );
    person.open("/account").await;
    assert_eq!(
        person.path().await,
        format!(
            "/login?return_to={}",
            url::form_urlencoded::byte_serialize(format!("{}/account", app.address).as_bytes())
                .collect::<String>()
        )
    );
    person.browser.close().await.unwrap();
}

/// WebDriver's "Add Virtual Authenticator" (W3C WebAuthn §11.3): a platform authenticator that
/// keeps discoverable credentials and verifies its user, as a phone's or a laptop's does.
#[derive(Debug)]
struct AddVirtualAuthenticator;

impl fantoccini::wd::WebDriverCompatibleCommand for AddVirtualAuthenticator {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.expect("a WebDriver session");
        base_url.join(&format!("session/{session}/webauthn/authenticator"))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        let body = json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserVerified": true,
            "isUserConsenting": true,
        });
        (axum::http::Method::POST, Some(body.to_string()))
    }
}

impl Person {
    /// Clicks the button with this id, whose script navigates when it is done.
    async fn press(&self, id: &str) {
        let button = self.browser.find(Locator::Id(id)).await.unwrap();
        self.click_to_navigate(button).await;
    }
}

/// A person adds a passkey on the security page (Chromium's virtual authenticator answers the
/// browser's WebAuthn calls, made by the page's script), logs out, and signs in with the passkey
/// alone from the login page: no address, no password.
async fn a_person_adds_a_passkey_and_signs_in_with_it_in_a_real_browser(db: Db) {
    if !browser_available() {
        return;
    }
    // WebAuthn takes a domain name as relying party: the public URL is on `localhost`.
    let app = TestApp::spawn_at_own_host(db, "localhost", |_| {}).await;
    let app_url = app.address.replace("127.0.0.1", "localhost");
    let driver = Driver::start().await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("pages-screenshots")
        .join(format!("{db:?}").to_lowercase());
    std::fs::create_dir_all(&shots).unwrap();
    let person = Person {
        browser: driver.browser().await,
        app_url,
        shots,
    };
    person
        .browser
        .issue_cmd(AddVirtualAuthenticator)
        .await
        .expect("a virtual authenticator");

    person.open("/signup").await;
    person.fill("email", "grace@example.com").await;
    person.fill("password", PASSWORD).await;
    person.submit("/signup").await;
    assert_eq!(person.path().await, "/account");
    person
        .follow_link("Sign-in and security: two-step verification and passkeys")
        .await;
    assert_eq!(person.path().await, "/account/security");
    assert!(person.text().await.contains("No passkey yet."));
    person.fill("passkey_name", "Laptop").await;
    person.press("passkey-add").await;
    assert_eq!(
        person.path().await,
        "/account/security?notice=passkey_added"
    );
    let page = person.text().await;
    assert!(page.contains("Your passkey is added."), "{page}");
    assert!(page.contains("Laptop"), "{page}");
    person.photograph("security-passkey").await;
    assert_eq!(app.count("SELECT COUNT(*) FROM passkeys").await, 1);

    // Log out; sign in with the passkey alone.
    person.open("/logout").await;
    person.submit("/logout").await;
    assert_eq!(person.path().await, "/login?notice=signed_out");
    person.photograph("login-passkey").await;
    let button = person
        .browser
        .find(Locator::Css("#passkey-login button"))
        .await
        .unwrap();
    person.click_to_navigate(button).await;
    assert_eq!(person.path().await, "/account");
    assert!(person.text().await.contains("grace@example.com"));
    let signed_in = "SELECT COUNT(*) FROM sessions WHERE amr = 'hwk' AND revoked_at IS NULL";
    assert_eq!(app.count(signed_in).await, 1);
    let used = "SELECT COUNT(*) FROM passkeys WHERE last_used_at IS NOT NULL";
    assert_eq!(app.count(used).await, 1);
    person.browser.close().await.unwrap();
}
