//! Cross-instance propagation of a revocation: two server processes on one database; a session
//! is warm in B's liveness cache, A logs it out, and B is polled until it refuses the token. The
//! time from A's answer to B's first 401 is what the README's liveness guarantee bounds (50 ms
//! on PostgreSQL through NOTIFY, SQLite's poll bound on SQLite).

use std::time::{Duration, Instant};

use anyhow::bail;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::load;

/// How many revocations are timed.
const ROUNDS: usize = 40;
/// A revocation not seen by then is a failure of the guarantee, not a slow one.
const GIVE_UP: Duration = Duration::from_secs(2);

pub struct Propagation {
    /// Milliseconds from A's 204 to B's first 401, sorted.
    pub delays_ms: Vec<f64>,
}

impl Propagation {
    fn percentile(&self, p: f64) -> f64 {
        let n = self.delays_ms.len();
        if n == 0 {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (n as f64 - 1.0)).round() as usize;
        self.delays_ms[i.min(n - 1)]
    }

    pub fn p50_ms(&self) -> f64 {
        self.percentile(50.0)
    }

    pub fn max_ms(&self) -> f64 {
        self.delays_ms.last().copied().unwrap_or(f64::NAN)
    }

    pub fn json(&self) -> Value {
        json!({
            "rounds": self.delays_ms.len(),
            "p50_ms": self.p50_ms(),
            "p99_ms": self.percentile(99.0),
            "max_ms": self.max_ms(),
        })
    }

    pub fn line(&self) -> String {
        format!(
            "a logout on instance A refused on instance B after: p50 {:.2} ms, p99 {:.2} ms, max \
             {:.2} ms ({} rounds, B's cache warm each time)",
            self.p50_ms(),
            self.percentile(99.0),
            self.max_ms(),
            self.delays_ms.len()
        )
    }
}

/// `ROUNDS` revocations on `a`, each timed until `b` refuses the session.
pub async fn run(client: &Client, a: &str, b: &str) -> anyhow::Result<Propagation> {
    let mut delays = Vec::with_capacity(ROUNDS);
    let tag = load::rand_u64();
    for round in 0..ROUNDS {
        let email = format!("propagation-{tag:x}-{round}@bench.example");
        let session = load::signup(client, a, email, None).await?;
        let token = session.access_token;
        for _ in 0..3 {
            let status = me(client, b, &token).await?;
            if status != StatusCode::OK {
                bail!("B does not accept a fresh session: {status}");
            }
        }
        let response = client
            .post(format!("{a}/auth/logout"))
            .bearer_auth(&token)
            .send()
            .await?;
        if response.status() != StatusCode::NO_CONTENT {
            bail!("logout on A: {}", response.status());
        }
        let revoked = Instant::now();
        loop {
            if me(client, b, &token).await? == StatusCode::UNAUTHORIZED {
                break;
            }
            if revoked.elapsed() > GIVE_UP {
                bail!("B still accepts a session A revoked {GIVE_UP:?} ago");
            }
        }
        delays.push(revoked.elapsed().as_secs_f64() * 1e3);
    }
    delays.sort_by(f64::total_cmp);
    Ok(Propagation { delays_ms: delays })
}

async fn me(client: &Client, base: &str, token: &str) -> anyhow::Result<StatusCode> {
    let response = client
        .get(format!("{base}/auth/me"))
        .bearer_auth(token)
        .send()
        .await?;
    Ok(response.status())
}
