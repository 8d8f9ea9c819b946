//! Rate limits per client IP and per account, counted in the database so that they hold across
//! every instance on it: an attacker who spreads requests over the instances behind a load
//! balancer meets the same counters on each.
//!
//! Handlers call `Limiter::check` with a `Limit` and its subject (a client IP from
//! `ClientInfo::rate_key`, an address from `Email::normalized`, a user id). Login has its own
//! step, `Limiter::login_attempt`, because it counts failures; the success takes its count back
//! inside the login's own transaction (`LoginAttempt::refund`).
//! A refused request is 429 `rate_limited` with `Retry-After`, whatever the limit, so the answer
//! never tells which limit was hit (in particular not that an account is being delayed).
//!
//! How each counter works:
//! - Fixed windows: the first hit opens a window of the limit's period; every request in it counts
//!   (refused ones too, which changes nothing since the window's end is fixed); over the maximum,
//!   the answer is 429 until the window ends. Bursts at a window's edge can reach twice the
//!   maximum in a short time; on average the rate holds.
//! - Failed logins per account (keyed by the normalized email, whether or not it has an account,
//!   so an unknown address behaves exactly like a known one): after `max` failures within the
//!   period, the next attempt must wait one period; each further failure doubles the wait, up to
//!   `MAX_ACCOUNT_DELAY`. A delay, not a lockout: it ends by itself, the counter is forgotten one
//!   quiet period after the last failure or wait, a successful login clears it, and nothing here
//!   stops the owner from resetting the password (whose transaction clears it). A browser that
//!   signed in to the account before (a valid device cookie, `crate::device`) has a counter of its
//!   own instead, so failures from elsewhere never hold back the owner's own device.
//!
//! Login counts an attempt as a failure *before* it checks the password and takes it back when
//! the password matches. So concurrent attempts cannot slip past a limit while their hashes run,
//! and the counter of a failed attempt is already committed whatever happens to the request.
//! Every counting is a transaction of its own for the same reason: the count must survive the
//! failure of the request it belongs to; takings-back happen inside the flow they belong to.
//!
//! The in-memory fast path remembers, per instance, "this key is refused until T" for the fixed
//! windows that only ever grow (every limit of `Limit` and login's attempts per IP): within a
//! window such a count never goes down, so until T the database would say the same, and a flood
//! from one address stops costing a database write per request. Counters that can go down (login
//! failures, which a success takes back or clears) are always asked of the database.
//!
//! Keys: the limit's name and a keyed hash (HMAC-SHA256, secret derived from the key-encryption
//! key, so all instances agree) of the subject, so the table never holds addresses or IPs in the
//! clear. `rate_limits off` turns every check into a no-op that writes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::clock::{Clock, Millis, millis};
use crate::config::{Rate, Settings};
use crate::domain::Email;
use crate::error::ApiError;
use crate::extract::ClientInfo;
use crate::metrics::{Label, label};
use crate::store::Store;
use crate::store::rate_limits::{Attempt, Counter, NewAttempt, Refund, Which};
use crate::tokens::hmac_sha256;
use prometheus_client::metrics::family::Family;

/// The longest wait a run of failed logins can impose on an account.
pub const MAX_ACCOUNT_DELAY: Duration = Duration::from_secs(3600);
/// Keys remembered as refused, per instance; beyond, refusals are simply not remembered.
const MAX_REMEMBERED: usize = 10_000;

/// Counter names of login, which [`Limiter::login_attempt`] applies (public for tests).
pub const LOGIN_IP: &str = "login_ip";
pub const LOGIN_FAILURE_IP: &str = "login_failure_ip";
pub const LOGIN_FAILURE_ACCOUNT: &str = "login_failure_account";
pub const LOGIN_FAILURE_DEVICE: &str = "login_failure_device";

/// The limits handlers apply with [`Limiter::check`]. Each says what its subject is; defaults are
/// in `config.rs` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// POST /auth/signup, per client IP (`ClientInfo::rate_key`). Default 20 per minute.
    Signup,
    /// POST /auth/refresh, per client IP. Default 150 per 5 minutes.
    Refresh,
    /// POST /auth/password/forgot, per address (`Email::normalized`). Default 5 per minute.
    Forgot,
    /// POST /auth/password/forgot, per client IP. Default 20 per minute.
    ForgotIp,
    /// POST /auth/password/reset, per client IP. Default 10 per minute.
    Reset,
    /// POST /auth/email/verify, per client IP. Default 10 per minute.
    Verify,
    /// POST /auth/email/verify/resend, per account (the user id). Default 3 per 15 minutes.
    VerifyResend,
    /// The passkey ceremonies' starts (registration, login), per client IP. Default 30 per
    /// minute.
    Passkey,
}

impl Limit {
    /// The counter's name, the first part of its key.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Signup => "signup_ip",
            Limit::Refresh => "refresh_ip",
            Limit::Forgot => "forgot_address",
            Limit::ForgotIp => "forgot_ip",
            Limit::Reset => "reset_ip",
            Limit::Verify => "verify_ip",
            Limit::VerifyResend => "verify_resend_account",
            Limit::Passkey => "passkey_ip",
        }
    }

    fn rate(self, s: &Settings) -> Rate {
        match self {
            Limit::Signup => s.signup_ip_limit,
            Limit::Refresh => s.refresh_ip_limit,
            Limit::Forgot => s.forgot_address_limit,
            Limit::ForgotIp => s.forgot_ip_limit,
            Limit::Reset => s.reset_ip_limit,
            Limit::Verify => s.verify_ip_limit,
            Limit::VerifyResend => s.verify_resend_account_limit,
            Limit::Passkey => s.passkey_ip_limit,
        }
    }
}

/// The rate limiter of one instance; cheap to clone.
#[derive(Clone)]
pub struct Limiter(Arc<Inner>);

struct Inner {
    settings: Arc<Settings>,
    store: Store,
    clock: Clock,
    secret: [u8; 32],
    /// Key → until when it is refused (the fast path; see the module comment).
    refused: Mutex<HashMap<String, Millis>>,
    /// Refusals by limit name, for /metrics (registered by `Metrics::with_rate_limits`).
    refusals: Family<[Label; 1], prometheus_client::metrics::counter::Counter>,
}

/// A login attempt counted as a failure; `refund` hands its counters to the success's flow,
/// which takes them back in its own transaction. Empty when rate limits are off.
#[derive(Debug, Default)]
#[must_use]
pub struct LoginAttempt {
    refund: Option<Refund>,
}

impl LoginAttempt {
    /// What a successful attempt takes back (`None` with rate limits off).
    pub fn refund(self) -> Option<Refund> {
        self.refund
    }
}

impl Limiter {
    /// `secret` keys the hashes of subjects; every instance must derive the same one.
    pub fn new(settings: Arc<Settings>, store: Store, clock: Clock, secret: [u8; 32]) -> Limiter {
        Limiter(Arc::new(Inner {
            settings,
            store,
            clock,
            secret,
            refused: Mutex::new(HashMap::new()),
            refusals: Family::default(),
        }))
    }

    /// The counter of refusals by limit (`limit` label: the counter's name, e.g. `login_ip`).
    pub fn refusals(&self) -> Family<[Label; 1], prometheus_client::metrics::counter::Counter> {
        self.0.refusals.clone()
    }

    fn count_refusal(&self, name: &str) {
        self.0
            .refusals
            .get_or_create(&[label("limit", name.to_owned())])
            .inc();
    }

    fn enabled(&self) -> bool {
        self.0.settings.rate_limits
    }

    /// The database key of a counter: its name and a keyed hash of its subject.
    pub fn key(&self, name: &str, subject: &str) -> String {
        let mac = hmac_sha256(&self.0.secret, subject.as_bytes());
        format!("{name}:{}", URL_SAFE_NO_PAD.encode(&mac[..16]))
    }

    /// Counts one request against `limit` for `subject`: 429 `rate_limited` once it is over.
    pub async fn check(&self, limit: Limit, subject: &str) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        let key = self.key(limit.name(), subject);
        let now = self.0.clock.now();
        self.refused_in_memory(&key, now)?;
        let rate = limit.rate(&self.0.settings);
        // A transaction of its own: the hit counts even if the request fails afterwards.
        let window = self
            .0
            .store
            .hit_limit(key.clone(), now, millis(rate.period))
            .await?;
        if window.count > i64::from(rate.max) {
            self.remember_refusal(key, window.expires_at, now);
            self.count_refusal(limit.name());
            return Err(refuse(limit.name(), window.expires_at, now));
        }
        Ok(())
    }

    /// Counts a login attempt (or a password change's check of the current password) as a
    /// failure, before the password is checked: 429 when a limit refuses it. `device` is the
    /// device id of a valid device cookie for this address (see `crate::device`): its failures
    /// are counted on their own instead of the account's, so the owner's browser is never held
    /// back by failures from elsewhere.
    pub async fn login_attempt(
        &self,
        client: &ClientInfo,
        email: &Email,
        device: Option<&str>,
    ) -> Result<LoginAttempt, ApiError> {
        if !self.enabled() {
            return Ok(LoginAttempt::default());
        }
        let s = &self.0.settings;
        let now = self.0.clock.now();
        let ip = client.rate_key();
        let attempts_key = self.key(LOGIN_IP, &ip);
        self.refused_in_memory(&attempts_key, now)?;
        let strikes_key = match device {
            Some(id) => self.key(LOGIN_FAILURE_DEVICE, id),
            None => self.key(LOGIN_FAILURE_ACCOUNT, email.normalized()),
        };
        let counter = |key, rate: Rate| Counter {
            key,
            max: i64::from(rate.max),
            period: millis(rate.period),
        };
        let attempt = NewAttempt {
            attempts: counter(attempts_key.clone(), s.login_ip_limit),
            failures: counter(self.key(LOGIN_FAILURE_IP, &ip), s.login_failure_ip_limit),
            strikes: counter(strikes_key, s.login_failure_account_limit),
            max_wait: millis(MAX_ACCOUNT_DELAY),
            now,
        };
        match self.0.store.count_attempt(attempt).await? {
            Attempt::Counted(refund) => Ok(LoginAttempt {
                refund: Some(refund),
            }),
            Attempt::Refused { which, until } => {
                let name = match which {
                    Which::Attempts => {
                        self.remember_refusal(attempts_key, until, now);
                        LOGIN_IP
                    }
                    Which::Failures => LOGIN_FAILURE_IP,
                    Which::Strikes => match device {
                        Some(_) => LOGIN_FAILURE_DEVICE,
                        None => LOGIN_FAILURE_ACCOUNT,
                    },
                };
                self.count_refusal(name);
                Err(refuse(name, until, now))
            }
        }
    }

    /// The key of the account's failed-login strikes, which a reset forgets in its own flow;
    /// `None` with rate limits off.
    pub fn strikes_key(&self, email: &Email) -> Option<String> {
        self.enabled()
            .then(|| self.key(LOGIN_FAILURE_ACCOUNT, email.normalized()))
    }

    /// Deletes counters that mean nothing any more; returns how many.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        self.0.store.prune_rate_limits(self.0.clock.now()).await
    }

    fn refused_in_memory(&self, key: &str, now: Millis) -> Result<(), ApiError> {
        let until = self
            .0
            .refused
            .lock()
            .ok()
            .and_then(|refused| refused.get(key).copied());
        match until {
            // Not logged again: the first refusal of this window was, and the response line
            // shows the 429 (a flood must not become a flood of log lines too).
            Some(until) if until > now => {
                // The key starts with the limit's name (see `key`).
                self.count_refusal(key.split(':').next().unwrap_or("unknown"));
                Err(ApiError::RateLimited {
                    retry_after_secs: seconds_until(until, now),
                })
            }
            _ => Ok(()),
        }
    }

    fn remember_refusal(&self, key: String, until: Millis, now: Millis) {
        // A poisoned lock only costs the fast path.
        if let Ok(mut refused) = self.0.refused.lock() {
            if refused.len() >= MAX_REMEMBERED {
                refused.retain(|_, until| *until > now);
            }
            if refused.len() < MAX_REMEMBERED {
                refused.insert(key, until);
            }
        }
    }
}

/// The one 429 of every limit. Only the log says which limit it was (never the subject).
fn refuse(name: &str, until: Millis, now: Millis) -> ApiError {
    let retry_after_secs = seconds_until(until, now);
    tracing::warn!(limit = name, retry_after_secs, "rate limited");
    ApiError::RateLimited { retry_after_secs }
}

/// Whole seconds, rounded up, and at least one: a client that waits that long gets through.
fn seconds_until(until: Millis, now: Millis) -> u64 {
    u64::try_from((until - now + 999) / 1000)
        .unwrap_or(1)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let secs = |until, now| match refuse("test", until, now) {
            ApiError::RateLimited { retry_after_secs } => retry_after_secs,
            other => panic!("{other:?}"),
        };
        assert_eq!(secs(60_000, 0), 60);
        assert_eq!(secs(60_000, 1), 60);
        assert_eq!(secs(60_000, 59_001), 1);
        assert_eq!(secs(60_000, 60_000), 1);
    }
}
