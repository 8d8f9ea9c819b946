//! The load generator: closed-loop workers on one reqwest client, per-request latencies.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use reqwest::{Client, StatusCode};

/// A password that passes the service's checks (length, not a common password, not the email).
pub const PASSWORD: &str = "bench: a long and unguessable passphrase 7f3a";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Healthz,
    Jwks,
    Signup,
    Login,
    Refresh,
    Me,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Healthz => "GET /healthz",
            Op::Jwks => "GET /.well-known/jwks.json",
            Op::Signup => "POST /auth/signup",
            Op::Login => "POST /auth/login",
            Op::Refresh => "POST /auth/refresh",
            Op::Me => "GET /auth/me",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Op::Healthz => "healthz",
            Op::Jwks => "jwks",
            Op::Signup => "signup",
            Op::Login => "login",
            Op::Refresh => "refresh",
            Op::Me => "me",
        }
    }
}

/// Where the load comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clients {
    /// Every request from the harness's own address (rate limits off).
    Loopback,
    /// Many clients behind a trusted proxy: each worker names a fresh client address in
    /// `X-Forwarded-For` every [`REQUESTS_PER_CLIENT`] requests (rate limits on).
    Forwarded,
}

/// Requests one forwarded client address sends: under the smallest default per-IP limit of a
/// benchmarked endpoint (signup, 20 a minute), so every request reads and writes its counters
/// without being refused.
pub const REQUESTS_PER_CLIENT: u64 = 10;

/// Client addresses handed out so far; each is used by one worker only, once in the process.
static NEXT_CLIENT: AtomicU32 = AtomicU32::new(1);

/// A client address never handed out before in this process, in 10.0.0.0/8.
pub fn fresh_client_ip() -> String {
    let n = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
    std::net::Ipv4Addr::from(0x0a00_0000 | n).to_string()
}

/// Adds `X-Forwarded-For` when the request stands for a forwarded client.
pub fn from_client(request: reqwest::RequestBuilder, ip: Option<&str>) -> reqwest::RequestBuilder {
    match ip {
        Some(ip) => request.header("x-forwarded-for", ip),
        None => request,
    }
}

/// The error of a request answered 429: counted apart from errors.
#[derive(Debug)]
pub struct RateLimited;

impl std::fmt::Display for RateLimited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("429 rate_limited")
    }
}

impl std::error::Error for RateLimited {}

/// One account and its current session, as a client holds it.
#[derive(Debug, Clone)]
pub struct Session {
    pub email: String,
    pub access_token: String,
    /// `name=value` of the refresh cookie, as the next refresh sends it.
    pub refresh_cookie: String,
}

/// What one scenario measured.
#[derive(Debug, Default)]
pub struct Sample {
    pub ok: u64,
    pub errors: u64,
    /// Answered 429 (rate limits on): neither a success nor an error.
    pub limited: u64,
    pub elapsed: Duration,
    /// Microseconds, successful requests only, sorted.
    latencies_us: Vec<u32>,
}

impl Sample {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = (p / 100.0 * self.latencies_us.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.latencies_us.len()) - 1;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

pub fn client() -> anyhow::Result<Client> {
    Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the HTTP client")
}

/// Signs up `n` accounts (8 at a time) and returns their sessions, one per future worker.
/// With `Clients::Forwarded`, each account is signed up from a fresh client address.
pub async fn sessions(
    client: &Client,
    base: &str,
    n: usize,
    clients: Clients,
) -> anyhow::Result<Vec<Session>> {
    let mut sessions = Vec::with_capacity(n);
    let run = std::process::id();
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let made = futures_util::future::join_all(chunk.iter().map(|i| {
            let email = format!("setup-{run}-{i}@bench.example");
            let ip = (clients == Clients::Forwarded).then(fresh_client_ip);
            async move { signup(client, base, email, ip.as_deref()).await }
        }))
        .await;
        for session in made {
            sessions.push(session?);
        }
    }
    Ok(sessions)
}

/// Runs `concurrency` workers sending `op` for `duration`. Worker `w` uses `sessions[w]` (login,
/// refresh, me) and keeps it up to date; signup workers append the first session they open when
/// `sessions` has fewer than `concurrency`. `clients` says which client each request stands for.
pub async fn run(
    client: &Client,
    base: &str,
    (op, clients): (Op, Clients),
    concurrency: usize,
    duration: Duration,
    sessions: &mut Vec<Session>,
) -> Sample {
    let started = Instant::now();
    let deadline = started + duration;
    let tag = format!("{:x}", rand_u64());
    // One task per worker, so that the workers use every thread of the runtime.
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let mut session = sessions.get(w).cloned();
            let (client, base, tag) = (client.clone(), base.to_owned(), tag.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut errors, mut limited) = (0u64, 0u64);
                let mut n = 0u64;
                let mut ip = None;
                while Instant::now() < deadline {
                    if clients == Clients::Forwarded && n.is_multiple_of(REQUESTS_PER_CLIENT) {
                        ip = Some(fresh_client_ip());
                    }
                    let sent = Instant::now();
                    let result = once(&client, &base, op, &mut session, ip.as_deref(), || {
                        format!("{}-{tag}-{w}-{n}@bench.example", op.key())
                    })
                    .await;
                    n += 1;
                    match result {
                        Ok(()) => latencies
                            .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX)),
                        Err(e) if e.is::<RateLimited>() => limited += 1,
                        Err(_) => errors += 1,
                    }
                }
                (w, session, latencies, errors, limited)
            })
        })
        .collect();
    let done = futures_util::future::join_all(workers).await;
    let mut sample = Sample {
        elapsed: started.elapsed(),
        ..Sample::default()
    };
    for (w, session, latencies, errors, limited) in done.into_iter().flatten() {
        sample.ok += latencies.len() as u64;
        sample.errors += errors;
        sample.limited += limited;
        sample.latencies_us.extend(latencies);
        match (session, w < sessions.len()) {
            (Some(s), true) => sessions[w] = s,
            (Some(s), false) => sessions.push(s),
            (None, _) => {}
        }
    }
    sample.latencies_us.sort_unstable();
    sample
}

/// One request of `op`; `Err` for anything but the expected answer.
async fn once(
    client: &Client,
    base: &str,
    op: Op,
    session: &mut Option<Session>,
    ip: Option<&str>,
    fresh_email: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match op {
        Op::Healthz => get(client, &format!("{base}/healthz"), None, ip).await,
        Op::Jwks => get(client, &format!("{base}/.well-known/jwks.json"), None, ip).await,
        Op::Me => {
            let s = session.as_ref().context("no session")?;
            get(
                client,
                &format!("{base}/auth/me"),
                Some(&s.access_token),
                ip,
            )
            .await
        }
        Op::Signup => {
            let opened = signup(client, base, fresh_email(), ip).await?;
            session.get_or_insert(opened);
            Ok(())
        }
        Op::Login => {
            let s = session.as_mut().context("no session")?;
            let body = serde_json::json!({ "email": s.email, "password": PASSWORD });
            let response = from_client(client.post(format!("{base}/auth/login")), ip)
                .json(&body)
                .send()
                .await?;
            *s = read_session(response, StatusCode::OK, s.email.clone()).await?;
            Ok(())
        }
        Op::Refresh => {
            let s = session.as_mut().context("no session")?;
            let response = from_client(client.post(format!("{base}/auth/refresh")), ip)
                .header(COOKIE, &s.refresh_cookie)
                .send()
                .await?;
            *s = read_session(response, StatusCode::OK, s.email.clone()).await?;
            Ok(())
        }
    }
}

async fn get(
    client: &Client,
    url: &str,
    bearer: Option<&str>,
    ip: Option<&str>,
) -> anyhow::Result<()> {
    let mut request = from_client(client.get(url), ip);
    if let Some(token) = bearer {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request.send().await?;
    let status = response.status();
    // Read the body to the end, so the connection goes back to the pool.
    response.bytes().await?;
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(RateLimited.into());
    }
    if status != StatusCode::OK {
        bail!("{url}: {status}");
    }
    Ok(())
}

/// Signs up `email` with [`PASSWORD`], from client `ip` when given.
pub async fn signup(
    client: &Client,
    base: &str,
    email: String,
    ip: Option<&str>,
) -> anyhow::Result<Session> {
    let body = serde_json::json!({ "email": email, "password": PASSWORD });
    let response = from_client(client.post(format!("{base}/auth/signup")), ip)
        .json(&body)
        .send()
        .await?;
    read_session(response, StatusCode::CREATED, email).await
}

/// The session of a signup, login or refresh response: the access token from its body, the
/// refresh token from its cookie.
pub async fn read_session(
    response: reqwest::Response,
    expected: StatusCode,
    email: String,
) -> anyhow::Result<Session> {
    let status = response.status();
    let refresh_cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| {
            pair.split_once('=')
                .is_some_and(|(name, value)| name.ends_with("lk_refresh") && !value.is_empty())
        })
        .map(str::to_owned);
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(RateLimited.into());
    }
    if status != expected {
        bail!("{status}: {body}");
    }
    let access_token = body["access_token"]
        .as_str()
        .context("no access_token in the body")?
        .to_owned();
    Ok(Session {
        email,
        access_token,
        refresh_cookie: refresh_cookie.context("no refresh cookie")?,
    })
}

pub fn rand_u64() -> u64 {
    use rand::RngCore as _;
    rand::rngs::OsRng.next_u64()
}
