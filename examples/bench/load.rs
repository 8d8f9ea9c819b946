//! The load generator: closed-loop workers on one reqwest client, per-request latencies.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use reqwest::{Client, StatusCode};

/// A password that passes the service's checks (length, not a common password, not the email).
const PASSWORD: &str = "bench: a long and unguessable passphrase 7f3a";

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

/// One account and its current session, as a client holds it.
#[derive(Debug, Clone)]
pub struct Session {
    email: String,
    access_token: String,
    /// `name=value` of the refresh cookie, as the next refresh sends it.
    refresh_cookie: String,
}

/// What one scenario measured.
#[derive(Debug, Default)]
pub struct Sample {
    pub ok: u64,
    pub errors: u64,
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
pub async fn sessions(client: &Client, base: &str, n: usize) -> anyhow::Result<Vec<Session>> {
    let mut sessions = Vec::with_capacity(n);
    let run = std::process::id();
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let made = futures_util::future::join_all(chunk.iter().map(|i| {
            let email = format!("setup-{run}-{i}@bench.example");
            signup(client, base, email)
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
/// `sessions` has fewer than `concurrency`.
pub async fn run(
    client: &Client,
    base: &str,
    op: Op,
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
                let mut errors = 0u64;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let result = once(&client, &base, op, &mut session, || {
                        n += 1;
                        format!("{}-{tag}-{w}-{n}@bench.example", op.key())
                    })
                    .await;
                    match result {
                        Ok(()) => latencies
                            .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX)),
                        Err(_) => errors += 1,
                    }
                }
                (w, session, latencies, errors)
            })
        })
        .collect();
    let done = futures_util::future::join_all(workers).await;
    let mut sample = Sample {
        elapsed: started.elapsed(),
        ..Sample::default()
    };
    for (w, session, latencies, errors) in done.into_iter().flatten() {
        sample.ok += latencies.len() as u64;
        sample.errors += errors;
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
    fresh_email: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match op {
        Op::Healthz => get(client, &format!("{base}/healthz"), None).await,
        Op::Jwks => get(client, &format!("{base}/.well-known/jwks.json"), None).await,
        Op::Me => {
            let s = session.as_ref().context("no session")?;
            get(client, &format!("{base}/auth/me"), Some(&s.access_token)).await
        }
        Op::Signup => {
            let opened = signup(client, base, fresh_email()).await?;
            session.get_or_insert(opened);
            Ok(())
        }
        Op::Login => {
            let s = session.as_mut().context("no session")?;
            let body = serde_json::json!({ "email": s.email, "password": PASSWORD });
            let response = client
                .post(format!("{base}/auth/login"))
                .json(&body)
                .send()
                .await?;
            *s = read_session(response, StatusCode::OK, s.email.clone()).await?;
            Ok(())
        }
        Op::Refresh => {
            let s = session.as_mut().context("no session")?;
            let response = client
                .post(format!("{base}/auth/refresh"))
                .header(COOKIE, &s.refresh_cookie)
                .send()
                .await?;
            *s = read_session(response, StatusCode::OK, s.email.clone()).await?;
            Ok(())
        }
    }
}

async fn get(client: &Client, url: &str, bearer: Option<&str>) -> anyhow::Result<()> {
    let mut request = client.get(url);
    if let Some(token) = bearer {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request.send().await?;
    let status = response.status();
    // Read the body to the end, so the connection goes back to the pool.
    response.bytes().await?;
    if status != StatusCode::OK {
        bail!("{url}: {status}");
    }
    Ok(())
}

async fn signup(client: &Client, base: &str, email: String) -> anyhow::Result<Session> {
    let body = serde_json::json!({ "email": email, "password": PASSWORD });
    let response = client
        .post(format!("{base}/auth/signup"))
        .json(&body)
        .send()
        .await?;
    read_session(response, StatusCode::CREATED, email).await
}

/// The session of a signup, login or refresh response: the access token from its body, the
/// refresh token from its cookie.
async fn read_session(
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

fn rand_u64() -> u64 {
    use rand::RngCore as _;
    rand::rngs::OsRng.next_u64()
}
