//! Does the answer time of `POST /auth/password/forgot` tell whether an address has an account?
//!
//! The answer's body and status are the same either way; only the work behind it differs (for an
//! account: a reset token, an outbox row and an audit event). This sends interleaved requests for
//! known and unknown addresses in a random order, one at a time on one kept-alive connection (so
//! queueing does not blur the difference), and compares the two latency samples: medians and a
//! two-sided Mann–Whitney U test. It reports; it never fails the run on the result.
//!
//! Run against a server with rate limits off and the mail throttle at 0, so that every request
//! for a known address does the whole work and none is refused.

use std::time::Instant;

use anyhow::{Context, bail};
use rand::seq::SliceRandom as _;
use reqwest::{Client, StatusCode};

use crate::stats::{self, MannWhitney};

/// Measured requests per group (known, unknown).
pub const PER_GROUP: usize = 200;
/// Unmeasured requests of each kind first: connection, caches and statements warm.
const WARM_UP: usize = 10;

/// The comparison, in milliseconds.
#[derive(Debug, Clone)]
pub struct Timing {
    pub known_requests: usize,
    pub unknown_requests: usize,
    /// Distinct known addresses, cycled through.
    pub known_accounts: usize,
    pub known_median_ms: f64,
    pub unknown_median_ms: f64,
    pub test: MannWhitney,
}

impl Timing {
    /// Known minus unknown median.
    pub fn difference_ms(&self) -> f64 {
        self.known_median_ms - self.unknown_median_ms
    }

    pub fn line(&self) -> String {
        format!(
            "forgot timing: known median {:.3} ms, unknown {:.3} ms, difference {:+.3} ms; \
             Mann–Whitney U {:.0}, z {:.2}, p {:.3e} ({} + {} requests, {} known accounts)",
            self.known_median_ms,
            self.unknown_median_ms,
            self.difference_ms(),
            self.test.u,
            self.test.z,
            self.test.p,
            self.known_requests,
            self.unknown_requests,
            self.known_accounts
        )
    }
}

/// `PER_GROUP` requests for addresses of `known` (cycled) and as many for fresh unknown ones, in
/// a random order, after a warm-up.
pub async fn forgot(client: &Client, base: &str, known: &[String]) -> anyhow::Result<Timing> {
    if known.is_empty() {
        bail!("the timing scenario needs known accounts");
    }
    let run = std::process::id();
    let mut order: Vec<bool> = std::iter::repeat_n(true, PER_GROUP)
        .chain(std::iter::repeat_n(false, PER_GROUP))
        .collect();
    order.shuffle(&mut rand::thread_rng());
    let warm_up = (0..WARM_UP).flat_map(|_| [true, false]);
    let (mut known_ms, mut unknown_ms) = (Vec::new(), Vec::new());
    let (mut k, mut u) = (0usize, 0usize);
    for (i, is_known) in warm_up.chain(order).enumerate() {
        let email = match is_known {
            true => {
                k += 1;
                known[k % known.len()].clone()
            }
            // Same shape and length as the known ones (`setup-RUN-N@bench.example`).
            false => {
                u += 1;
                format!("nobody-{run}-{u}@bench.example")
            }
        };
        let ms = forgot_once(client, base, &email).await?;
        if i < 2 * WARM_UP {
            continue;
        }
        match is_known {
            true => known_ms.push(ms),
            false => unknown_ms.push(ms),
        }
    }
    Ok(Timing {
        known_requests: known_ms.len(),
        unknown_requests: unknown_ms.len(),
        known_accounts: known.len().min(PER_GROUP + WARM_UP),
        known_median_ms: stats::median(&known_ms),
        unknown_median_ms: stats::median(&unknown_ms),
        test: stats::mann_whitney(&known_ms, &unknown_ms),
    })
}

/// One forgot request, timed from sending to the end of the body; anything but 202 is an error.
async fn forgot_once(client: &Client, base: &str, email: &str) -> anyhow::Result<f64> {
    let sent = Instant::now();
    let response = client
        .post(format!("{base}/auth/password/forgot"))
        .json(&serde_json::json!({ "email": email }))
        .send()
        .await
        .context("forgot request failed")?;
    let status = response.status();
    response.bytes().await?;
    let ms = sent.elapsed().as_secs_f64() * 1000.0;
    if status != StatusCode::ACCEPTED {
        bail!("POST /auth/password/forgot answered {status}, not 202 (rate limits on?)");
    }
    Ok(ms)
}
