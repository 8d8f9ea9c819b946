//! Hang-ups: clients that abandon write requests mid-flight (wrk at the end of a run, a closed
//! browser tab, a load balancer's timeout), then a check that every write flow still works.
//!
//! The regression harness of a bug where one hang-up inside a SQLite write transaction made
//! every later write answer 500 until a restart. Each abandoned request is written whole on a
//! fresh raw TCP connection, then the client waits a random delay for the answer and, if none
//! has come, drops the connection (half of the time with a reset, `SO_LINGER` 0, as a load
//! balancer does; otherwise with a FIN). Delays are log-uniform, from 10 µs to about the
//! request's latency under this load (500 ms for the flows that hash a password, 50 ms for the
//! others), so hang-ups land at every stage: parsing, queueing for a hashing thread, inside the
//! write transaction, and while the answer is written. Answers that beat the delay are counted,
//! with their 5xx.
//!
//! Afterwards, with ordinary requests on accounts set aside beforehand, every write flow must
//! answer as it should (signup 201, login 200, refresh 200, change 204, forgot 202, reset 204,
//! logout 204 and logout-all 204, plus reads that show the writes committed). A failed check makes
//! the whole benchmark exit non-zero once its results are written.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng as _;
use rand::seq::SliceRandom as _;
use reqwest::header::{AUTHORIZATION, COOKIE};
use reqwest::{Client, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::load::{self, Clients, PASSWORD, Session};

/// Abandoned requests per flow; [`Flow::ALL`] has 8 flows, so 512 in all (in the runs before
/// the fix, one in five passes of 320 still left the writes working).
pub const PER_FLOW: usize = 64;
/// Connections open at once while hanging up.
pub const CONCURRENCY: usize = 32;
/// Accounts per flow that abandons requests on existing accounts (reset has one per request).
const POOL: usize = 8;
/// The password that change and reset set.
const NEW_PASSWORD: &str = "bench: a different long passphrase 91c2";
/// Longest wait for an answer before hanging up, by kind of flow.
const HASHING_MAX_DELAY: Duration = Duration::from_millis(500);
const OTHER_MAX_DELAY: Duration = Duration::from_millis(50);
const MIN_DELAY: Duration = Duration::from_micros(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Signup,
    Login,
    Refresh,
    Logout,
    LogoutAll,
    Change,
    Forgot,
    Reset,
}

impl Flow {
    const ALL: [Flow; 8] = [
        Flow::Signup,
        Flow::Login,
        Flow::Refresh,
        Flow::Logout,
        Flow::LogoutAll,
        Flow::Change,
        Flow::Forgot,
        Flow::Reset,
    ];

    fn label(self) -> &'static str {
        match self {
            Flow::Signup => "POST /auth/signup",
            Flow::Login => "POST /auth/login",
            Flow::Refresh => "POST /auth/refresh",
            Flow::Logout => "POST /auth/logout",
            Flow::LogoutAll => "POST /auth/logout-all",
            Flow::Change => "POST /auth/password/change",
            Flow::Forgot => "POST /auth/password/forgot",
            Flow::Reset => "POST /auth/password/reset",
        }
    }

    fn max_delay(self) -> Duration {
        match self {
            Flow::Signup | Flow::Login | Flow::Change | Flow::Reset => HASHING_MAX_DELAY,
            Flow::Refresh | Flow::Logout | Flow::LogoutAll | Flow::Forgot => OTHER_MAX_DELAY,
        }
    }
}

/// What became of the abandoned requests of one flow.
#[derive(Debug, Clone, Default)]
pub struct FlowTally {
    pub flow: &'static str,
    pub sent: u64,
    /// Dropped before any answer came.
    pub abandoned: u64,
    /// Answered before the delay ran out.
    pub answered: u64,
    pub answered_5xx: u64,
    /// Could not connect or send, or the server closed without an answer.
    pub failed: u64,
}

/// One follow-up request and what it got.
#[derive(Debug, Clone)]
pub struct Check {
    pub what: &'static str,
    pub expected: u16,
    /// The status, or why there was none.
    pub got: Result<u16, String>,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.got.as_ref().is_ok_and(|s| *s == self.expected)
    }
}

/// The scenario's outcome.
#[derive(Debug, Clone)]
pub struct Hangup {
    pub concurrency: usize,
    pub tallies: Vec<FlowTally>,
    pub elapsed: Duration,
    pub checks: Vec<Check>,
}

impl Hangup {
    /// Every follow-up answered as it should.
    pub fn writes_ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(Check::ok)
    }

    pub fn follow_up_5xx(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.got.as_ref().is_ok_and(|s| *s >= 500))
            .count()
    }

    pub fn total(&self, field: fn(&FlowTally) -> u64) -> u64 {
        self.tallies.iter().map(field).sum()
    }

    /// The failed checks, for the error that ends the run.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.ok())
            .map(|c| match &c.got {
                Ok(status) => format!("{}: {status}, expected {}", c.what, c.expected),
                Err(e) => format!("{}: {e}", c.what),
            })
            .collect()
    }

    pub fn line(&self) -> String {
        format!(
            "hang-ups: {} requests at c={} in {:.1} s: {} abandoned, {} answered first ({} of them 5xx), {} failed; \
             follow-up writes {}/{} as expected ({} 5xx): {}",
            self.total(|t| t.sent),
            self.concurrency,
            self.elapsed.as_secs_f64(),
            self.total(|t| t.abandoned),
            self.total(|t| t.answered),
            self.total(|t| t.answered_5xx),
            self.total(|t| t.failed),
            self.checks.iter().filter(|c| c.ok()).count(),
            self.checks.len(),
            self.follow_up_5xx(),
            if self.writes_ok() {
                "writes work".to_owned()
            } else {
                format!("WRITES BROKEN ({})", self.failures().join("; "))
            }
        )
    }
}

/// One abandoned request, ready to send.
struct Job {
    flow: Flow,
    request: Vec<u8>,
    delay: Duration,
    /// Hang up with a reset (`SO_LINGER` 0) rather than a FIN.
    reset: bool,
}

enum Outcome {
    Abandoned,
    Answered(u16),
    Failed,
}

/// Accounts set aside for the follow-up checks, made before any hang-up.
struct Reserved {
    /// Login, refresh, me.
    a: Session,
    /// Password change, then login with the new password.
    change: Session,
    /// Forgot, reset, then login with the new password.
    reset: Session,
    /// Logout, then me (401).
    logout: Session,
    /// Logout-all, then me (401).
    logout_all: Session,
}

/// The whole scenario against `base`: accounts and reset tokens first, the hang-ups, then the
/// follow-up checks. `log` is the server's log, where reset links land (no SMTP configured).
pub async fn run(
    client: &Client,
    base: &str,
    log: &Path,
    clients: Clients,
) -> anyhow::Result<Hangup> {
    let address: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .context("the server's address is not IP:PORT")?;
    let ip = || (clients == Clients::Forwarded).then(load::fresh_client_ip);
    let tag = format!("{:x}", load::rand_u64());

    // Accounts: a pool per flow on existing accounts, one per reset, and the reserved ones.
    let wanted = 6 * POOL + PER_FLOW + 5;
    let mut accounts = Vec::with_capacity(wanted);
    for chunk in (0..wanted).collect::<Vec<_>>().chunks(8) {
        let made = futures_util::future::join_all(chunk.iter().map(|i| {
            let email = format!("hangup-{tag}-{i}@bench.example");
            let ip = ip();
            async move { load::signup(client, base, email, ip.as_deref()).await }
        }))
        .await;
        for session in made {
            accounts.push(session.context("signing up the hang-up scenario's accounts")?);
        }
    }
    let reserved = Reserved {
        a: accounts.pop().context("no account")?,
        change: accounts.pop().context("no account")?,
        reset: accounts.pop().context("no account")?,
        logout: accounts.pop().context("no account")?,
        logout_all: accounts.pop().context("no account")?,
    };
    let reset_accounts = accounts.split_off(6 * POOL);
    let pools: Vec<&[Session]> = accounts.chunks(POOL).collect();
    let reset_tokens = reset_tokens(client, base, log, &reset_accounts, clients).await?;

    // The jobs, shuffled so that the flows interleave.
    let host = address.to_string();
    let mut rng = rand::thread_rng();
    let mut jobs = Vec::with_capacity(Flow::ALL.len() * PER_FLOW);
    for flow in Flow::ALL {
        for i in 0..PER_FLOW {
            let pool_session = |k: usize| &pools[k][i % POOL];
            let (path, headers, body): (&str, Vec<(&str, String)>, serde_json::Value) = match flow {
                Flow::Signup => (
                    "/auth/signup",
                    vec![],
                    serde_json::json!({
                        "email": format!("abandoned-{tag}-{i}@bench.example"),
                        "password": PASSWORD,
                    }),
                ),
                Flow::Login => (
                    "/auth/login",
                    vec![],
                    serde_json::json!({ "email": pool_session(0).email, "password": PASSWORD }),
                ),
                Flow::Refresh => (
                    "/auth/refresh",
                    vec![("Cookie", pool_session(1).refresh_cookie.clone())],
                    serde_json::Value::Null,
                ),
                Flow::Logout => (
                    "/auth/logout",
                    vec![bearer(pool_session(2))],
                    serde_json::Value::Null,
                ),
                Flow::LogoutAll => (
                    "/auth/logout-all",
                    vec![bearer(pool_session(3))],
                    serde_json::Value::Null,
                ),
                Flow::Change => (
                    "/auth/password/change",
                    vec![bearer(pool_session(4))],
                    serde_json::json!({
                        "current_password": PASSWORD,
                        "new_password": NEW_PASSWORD,
                    }),
                ),
                Flow::Forgot => (
                    "/auth/password/forgot",
                    vec![],
                    serde_json::json!({ "email": pool_session(5).email }),
                ),
                Flow::Reset => (
                    "/auth/password/reset",
                    vec![],
                    serde_json::json!({ "token": reset_tokens[i], "password": NEW_PASSWORD }),
                ),
            };
            let mut headers = headers;
            if let Some(ip) = ip() {
                headers.push(("X-Forwarded-For", ip));
            }
            let (min, max) = (MIN_DELAY.as_secs_f64(), flow.max_delay().as_secs_f64());
            let delay = rng.gen_range(min.ln()..max.ln()).exp();
            jobs.push(Job {
                flow,
                request: http_request(&host, path, &headers, &body),
                delay: Duration::from_secs_f64(delay),
                reset: rng.gen_bool(0.5),
            });
        }
    }
    jobs.shuffle(&mut rng);

    let started = Instant::now();
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (jobs, next) = (jobs.clone(), next.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    outcomes.push((job.flow, send_and_hang_up(address, job).await));
                }
                outcomes
            })
        })
        .collect();
    let mut tallies: Vec<FlowTally> = Flow::ALL
        .iter()
        .map(|f| FlowTally {
            flow: f.label(),
            ..FlowTally::default()
        })
        .collect();
    for outcomes in futures_util::future::join_all(workers).await {
        for (flow, outcome) in outcomes.context("a hang-up worker panicked")? {
            let Some(t) = tallies.iter_mut().find(|t| t.flow == flow.label()) else {
                continue;
            };
            t.sent += 1;
            match outcome {
                Outcome::Abandoned => t.abandoned += 1,
                Outcome::Answered(status) => {
                    t.answered += 1;
                    if status >= 500 {
                        t.answered_5xx += 1;
                    }
                }
                Outcome::Failed => t.failed += 1,
            }
        }
    }
    let elapsed = started.elapsed();
    // The server finishes or drops what was abandoned (hashes already queued still run).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let checks = follow_up(client, base, log, clients, reserved).await;
    Ok(Hangup {
        concurrency: CONCURRENCY,
        tallies,
        elapsed,
        checks,
    })
}

fn bearer(s: &Session) -> (&'static str, String) {
    ("Authorization", format!("Bearer {}", s.access_token))
}

/// An HTTP/1.1 POST, with a JSON body unless `body` is null.
fn http_request(
    host: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &serde_json::Value,
) -> Vec<u8> {
    let body = match body {
        serde_json::Value::Null => String::new(),
        body => body.to_string(),
    };
    let mut head =
        format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: latchkey-bench\r\n");
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// Sends the whole request, waits up to its delay for the first bytes of the answer, and hangs
/// up if none came. Every step is bounded in time.
async fn send_and_hang_up(address: SocketAddr, job: &Job) -> Outcome {
    let connect = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address));
    let Ok(Ok(mut stream)) = connect.await else {
        return Outcome::Failed;
    };
    let _ = stream.set_nodelay(true);
    let written = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&job.request));
    if !matches!(written.await, Ok(Ok(()))) {
        return Outcome::Failed;
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(job.delay, stream.read(&mut buf)).await {
        Err(_) => {
            if job.reset {
                let _ = stream.set_zero_linger();
            }
            drop(stream);
            Outcome::Abandoned
        }
        Ok(Ok(n)) => std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|head| head.get(9..12))
            .and_then(|code| code.parse().ok())
            .map_or(Outcome::Failed, Outcome::Answered),
        Ok(Err(_)) => Outcome::Failed,
    }
}

/// Asks for a reset link for each account and reads the tokens from the server's log, in order.
async fn reset_tokens(
    client: &Client,
    base: &str,
    log: &Path,
    accounts: &[Session],
    clients: Clients,
) -> anyhow::Result<Vec<String>> {
    let from = std::fs::metadata(log).map_or(0, |m| m.len());
    for s in accounts {
        let status = forgot(client, base, &s.email, clients).await?;
        if status != StatusCode::ACCEPTED {
            bail!("POST /auth/password/forgot answered {status} while preparing the hang-ups");
        }
    }
    let emails: Vec<&str> = accounts.iter().map(|s| s.email.as_str()).collect();
    emailed_reset_tokens(log, from, &emails).await
}

/// The newest reset token emailed to each of `emails` since byte `from` of the log, waiting up to
/// 60 s for the mail worker to write them (behind the verification emails of every signup of the
/// pass: on PostgreSQL, on a busy machine, 10 s was not enough).
async fn emailed_reset_tokens(
    log: &Path,
    from: u64,
    emails: &[&str],
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = read_from(log, from)?;
        let found: Vec<Option<String>> =
            emails.iter().map(|e| reset_link_token(&text, e)).collect();
        if found.iter().all(Option::is_some) {
            return Ok(found.into_iter().flatten().collect());
        }
        if Instant::now() > deadline {
            let missing = found.iter().filter(|f| f.is_none()).count();
            bail!("{missing} reset emails did not reach the server's log within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read_from(path: &Path, from: u64) -> anyhow::Result<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the server log {}", path.display()))?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The token of the last password reset link in `log` emailed to `email`. Without SMTP the server
/// logs each email as `email to ADDRESS not sent …; it reads:` followed by its text.
fn reset_link_token(log: &str, email: &str) -> Option<String> {
    let marker = format!("email to {email} not sent");
    log.match_indices(&marker)
        .filter_map(|(at, _)| {
            let rest = &log[at + marker.len()..];
            // This email's text ends where the next one's starts.
            let text = &rest[..rest.find("email to ").unwrap_or(rest.len())];
            let link = text.find("/password/reset?token=")?;
            let token: String = text[link + "/password/reset?token=".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            (!token.is_empty()).then_some(token)
        })
        .last()
}

async fn forgot(
    client: &Client,
    base: &str,
    email: &str,
    clients: Clients,
) -> anyhow::Result<StatusCode> {
    let ip = (clients == Clients::Forwarded).then(load::fresh_client_ip);
    let response = load::from_client(
        client.post(format!("{base}/auth/password/forgot")),
        ip.as_deref(),
    )
    .json(&serde_json::json!({ "email": email }))
    .send()
    .await?;
    let status = response.status();
    response.bytes().await?;
    Ok(status)
}

/// Ordinary requests, one per write flow on the reserved accounts, each from a fresh client
/// address when forwarded; then reads that show the writes took effect.
async fn follow_up(
    client: &Client,
    base: &str,
    log: &Path,
    clients: Clients,
    r: Reserved,
) -> Vec<Check> {
    let ip = || (clients == Clients::Forwarded).then(load::fresh_client_ip);
    let post =
        |path: &str| load::from_client(client.post(format!("{base}{path}")), ip().as_deref());
    let status = async |request: reqwest::RequestBuilder| -> Result<u16, String> {
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let _ = response.bytes().await;
        Ok(status)
    };
    let mut checks = Vec::new();
    let mut check = |what, expected, got| {
        checks.push(Check {
            what,
            expected,
            got,
        })
    };
    let email = format!("after-hangups-{:x}@bench.example", load::rand_u64());
    let signup = load::signup(client, base, email, ip().as_deref()).await;
    check(
        "signup",
        201,
        signup.map(|_| 201).map_err(|e| format!("{e:#}")),
    );
    let login = |email: &str, password: &str| {
        post("/auth/login").json(&serde_json::json!({ "email": email, "password": password }))
    };
    check("login", 200, status(login(&r.a.email, PASSWORD)).await);
    check(
        "refresh",
        200,
        status(post("/auth/refresh").header(COOKIE, &r.a.refresh_cookie)).await,
    );
    let me = |s: &Session| {
        load::from_client(client.get(format!("{base}/auth/me")), ip().as_deref())
            .header(AUTHORIZATION, format!("Bearer {}", s.access_token))
    };
    check("GET /auth/me", 200, status(me(&r.a)).await);
    check(
        "password change",
        204,
        status(
            post("/auth/password/change")
                .header(AUTHORIZATION, format!("Bearer {}", r.change.access_token))
                .json(&serde_json::json!({
                    "current_password": PASSWORD,
                    "new_password": NEW_PASSWORD,
                })),
        )
        .await,
    );
    check(
        "login with the changed password",
        200,
        status(login(&r.change.email, NEW_PASSWORD)).await,
    );
    let from = std::fs::metadata(log).map_or(0, |m| m.len());
    let forgot = forgot(client, base, &r.reset.email, clients).await;
    check(
        "password forgot",
        202,
        forgot.map(|s| s.as_u16()).map_err(|e| format!("{e:#}")),
    );
    match emailed_reset_tokens(log, from, &[r.reset.email.as_str()]).await {
        Ok(tokens) => {
            let body = serde_json::json!({ "token": tokens[0], "password": NEW_PASSWORD });
            check(
                "password reset",
                204,
                status(post("/auth/password/reset").json(&body)).await,
            );
            check(
                "login with the reset password",
                200,
                status(login(&r.reset.email, NEW_PASSWORD)).await,
            );
        }
        Err(e) => check("password reset", 204, Err(format!("no reset link: {e:#}"))),
    }
    let logout =
        post("/auth/logout").header(AUTHORIZATION, format!("Bearer {}", r.logout.access_token));
    check("logout", 204, status(logout).await);
    check(
        "GET /auth/me after logout",
        401,
        status(me(&r.logout)).await,
    );
    let all = post("/auth/logout-all").header(
        AUTHORIZATION,
        format!("Bearer {}", r.logout_all.access_token),
    );
    check("logout-all", 204, status(all).await);
    check(
        "GET /auth/me after logout-all",
        401,
        status(me(&r.logout_all)).await,
    );
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reset_token_of_the_right_email() {
        let log = "INFO email to a@x.example not sent (no smtp_url configured), subject \"Verify\"; it reads:\n\
                   http://localhost:8080/email/verify?token=VERIFY_a kind=email_verification\n\
                   INFO email to b@x.example not sent (no smtp_url configured), subject \"Reset\"; it reads:\n\
                   open\n\nhttp://localhost:8080/password/reset?token=Tok-b_1\n\nThe link works once. kind=password_reset\n\
                   INFO email to a@x.example not sent (no smtp_url configured), subject \"Reset\"; it reads:\n\
                   http://localhost:8080/password/reset?token=first-a\n\
                   INFO email to a@x.example not sent (no smtp_url configured), subject \"Reset\"; it reads:\n\
                   http://localhost:8080/password/reset?token=second-a kind=password_reset\n";
        assert_eq!(
            reset_link_token(log, "b@x.example").as_deref(),
            Some("Tok-b_1")
        );
        assert_eq!(
            reset_link_token(log, "a@x.example").as_deref(),
            Some("second-a")
        );
        assert_eq!(reset_link_token(log, "c@x.example"), None);
        // A verification email alone has no reset link.
        let only_verify = &log[..log.find("INFO email to b").unwrap()];
        assert_eq!(reset_link_token(only_verify, "a@x.example"), None);
    }

    #[test]
    fn requests_are_well_formed() {
        let body = serde_json::json!({ "email": "a@x.example" });
        let bytes = http_request(
            "127.0.0.1:1",
            "/auth/login",
            &[("X-Forwarded-For", "10.0.0.1".into())],
            &body,
        );
        let text = String::from_utf8(bytes).unwrap();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", rest.len())));
        assert!(head.contains("X-Forwarded-For: 10.0.0.1"));
        let empty = http_request("h", "/auth/refresh", &[], &serde_json::Value::Null);
        assert!(
            String::from_utf8(empty)
                .unwrap()
                .ends_with("Content-Length: 0\r\n\r\n")
        );
    }
}
