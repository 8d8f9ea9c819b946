//! The ceilings, measured in-process with latchkey's own code: Argon2id hashes per second, one
//! EdDSA access-token verification, and the database's rate for the refresh transaction.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use latchkey::clock::{Clock, Millis, millis};
use latchkey::config::SqliteSynchronous;
use latchkey::domain::Email;
use latchkey::keys::{Kek, KeyRing};
use latchkey::password::argon2id::{self, Argon2id, Cost};
use latchkey::store::flows::login::{Login, NewLogin};
use latchkey::store::flows::refresh::{NewRotation, Rotation};
use latchkey::store::flows::signup::{NewSignup, Signup};
use latchkey::store::flows::{NewChallenge, NewLink, NewMail, NewSession, Throttle};
use latchkey::store::{Store, audit};
use latchkey::tokens::{self, Purpose};
use secrecy::SecretString;
use uuid::Uuid;

/// Hashing speed of one Argon2id implementation.
#[derive(Debug, Clone)]
pub struct Hasher {
    pub name: &'static str,
    pub chosen: bool,
    pub one_thread: f64,
    pub all_cores: f64,
}

/// Every candidate on one thread and on one thread per core.
pub fn hashers(cost: Cost, cores: usize, duration: Duration) -> Vec<Hasher> {
    argon2id::candidates()
        .into_iter()
        .map(|candidate| Hasher {
            name: candidate.name(),
            chosen: candidate.name() == argon2id::CHOSEN.name(),
            one_thread: hashes_per_second(candidate, cost, 1, duration / 2),
            all_cores: hashes_per_second(candidate, cost, cores, duration),
        })
        .collect()
}

/// Hashes per second of the service's implementation on one thread per core.
pub fn argon2_ceiling(cost: Cost, cores: usize, duration: Duration) -> f64 {
    hashes_per_second(argon2id::CHOSEN, cost, cores, duration)
}

fn hashes_per_second(hasher: &dyn Argon2id, cost: Cost, threads: usize, duration: Duration) -> f64 {
    // One hash first, so the first allocation and CPU feature detection are not measured.
    let _ = hasher.hash(cost, b"warm up");
    let started = Instant::now();
    let deadline = started + duration;
    let hashes: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        if hasher.hash(cost, b"correct horse battery staple").is_ok() {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    hashes as f64 / started.elapsed().as_secs_f64()
}

/// The ceilings' `database_timeout`, generous: at concurrency 64 the tasks queue for the pool's
/// 16 connections, and on a machine shared with other work a wait past the service's default of
/// 1 s failed the whole run.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Microseconds for one access-token verification as `GET /auth/me` does it (header, key lookup,
/// Ed25519 signature, claims), on one thread.
pub async fn eddsa_verify_us(scratch: &Path) -> anyhow::Result<f64> {
    let url = format!("sqlite://{}", scratch.join("keys.db").display());
    let store = Store::connect(
        &SecretString::from(url),
        SqliteSynchronous::default(),
        DATABASE_TIMEOUT,
    )
    .await?;
    store.migrate().await?;
    let kek = Kek::from_setting(Some(&SecretString::from(Kek::generate_encoded())))?;
    let clock = Clock::default();
    let issuer = "http://localhost:8080";
    let ttl = Duration::from_secs(900);
    let ring = KeyRing::load(store.clone(), kek, clock.clone(), ttl, issuer.into()).await?;
    let token = tokens::mint_access(
        &ring,
        issuer,
        Uuid::now_v7(),
        Uuid::now_v7(),
        clock.now(),
        900,
    )?;
    let token = secrecy::ExposeSecret::expose_secret(&token.token).to_owned();
    let started = Instant::now();
    let mut n = 0u32;
    while n < 2000 || started.elapsed() < Duration::from_secs(1) {
        tokens::verify_access(&ring, &token, clock.now())
            .await
            .context("the token does not verify")?;
        n += 1;
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    store.close().await;
    Ok(us)
}

/// Refresh transactions per second that the database commits with `concurrency` clients, through
/// the same store call as `POST /auth/refresh` (`Store::rotate_refresh`: spend the token, extend
/// the live session, insert its successor, write the audit event, read the account, commit).
pub async fn refresh_transactions(
    database_url: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let store = Store::connect(
        &SecretString::from(database_url.to_owned()),
        SqliteSynchronous::default(),
        DATABASE_TIMEOUT,
    )
    .await?;
    store.migrate().await?;
    let clock = Clock::default();
    let idle = millis(Duration::from_secs(7 * 24 * 3600));
    let run = Uuid::now_v7().simple().to_string();
    add_idle_sessions(&store, &run, FILLER_SESSIONS).await?;
    let mut chains = Vec::new();
    for w in 0..concurrency {
        let (_, token) = account_with_session(&store, &format!("txn-{run}-{w}"), idle).await?;
        chains.push(token);
    }

    let started = Instant::now();
    let deadline = started + duration;
    let workers = chains.into_iter().map(|mut token| {
        let store = store.clone();
        let clock = clock.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let successor = token_hash();
                let rotation = NewRotation {
                    token_hash: token,
                    successor_hash: successor.clone(),
                    idle_timeout: idle,
                    actor: audit::Actor {
                        ip: Some("127.0.0.1".to_owned()),
                        ..audit::Actor::default()
                    },
                    now: clock.now(),
                };
                match store.rotate_refresh(rotation).await? {
                    Rotation::Rotated { .. } => {}
                    Rotation::NotSpendable => anyhow::bail!("the refresh token was not spent"),
                }
                token = successor;
                n += 1;
            }
            anyhow::Ok(n)
        })
    });
    let counts = futures_util::future::join_all(workers).await;
    let elapsed = started.elapsed().as_secs_f64();
    store.close().await;
    let mut total = 0;
    for count in counts {
        total += count.context("a worker panicked")??;
    }
    Ok(total as f64 / elapsed)
}

/// Sessions that sit in the ceiling's database besides the refreshing ones, about as many as the
/// server's database holds when its refresh scenario runs (the signups and logins before it open
/// thousands): a statement that scans every session is slow only in a database that has some.
const FILLER_SESSIONS: usize = 5000;

/// A fake password hash: the store compares hashes, it never verifies them.
const UNUSED_HASH: &str = "$argon2id$unused";

/// An account created by the signup use case, with a session; its id and refresh-token hash.
async fn account_with_session(
    store: &Store,
    name: &str,
    idle: Millis,
) -> anyhow::Result<(Uuid, String)> {
    let now = Clock::default().now();
    let user_id = Uuid::now_v7();
    let email =
        Email::parse(&format!("{name}@bench.example")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let session = session_rows(now, idle);
    let token = session.refresh_token_hash.clone();
    let mail = NewMail {
        kind: "email_verification",
        recipient: email.as_str().to_owned(),
        subject: String::new(),
        text: String::new(),
        html: String::new(),
    };
    let signup = NewSignup {
        user_id,
        metadata: latchkey::domain::Metadata::empty(),
        throttle: Throttle::new("email_verification", email.normalized(), 0),
        verification: NewLink {
            purpose: Purpose::EmailVerification,
            token_hash: tokens::hash_opaque(Purpose::EmailVerification, &tokens::new_opaque()),
            email_normalized: email.normalized().to_owned(),
            expires_at: now + idle,
            mail,
        },
        email,
        password_hash: UNUSED_HASH.to_owned(),
        display_name: None,
        session: Some(session),
        actor: audit::Actor::user(user_id),
        now,
    };
    match store.signup(signup).await? {
        Signup::Created(_) => Ok((user_id, token)),
        Signup::EmailTaken => anyhow::bail!("{name} exists already"),
        Signup::Refused(refused) => anyhow::bail!("refused: {refused:?}"),
    }
}

async fn add_idle_sessions(store: &Store, run: &str, n: usize) -> anyhow::Result<()> {
    let idle = 3_600_000;
    let (user_id, _) = account_with_session(store, &format!("filler-{run}"), idle).await?;
    for _ in 1..n {
        let now = Clock::default().now();
        let login = NewLogin {
            user_id,
            verified_hash: UNUSED_HASH.to_owned(),
            rehash: None,
            session: session_rows(now, idle),
            refund: None,
            // The filler account has no second factor: never written.
            challenge: NewChallenge {
                token_hash: token_hash(),
                expires_at: now,
            },
            actor: audit::Actor::user(user_id),
            now,
        };
        match store.login(login).await? {
            Login::Opened(_) => {}
            Login::MfaRequired | Login::Stale => {
                anyhow::bail!("the filler account refused a login")
            }
        }
    }
    Ok(())
}

fn session_rows(now: Millis, idle: Millis) -> NewSession {
    NewSession {
        id: Uuid::now_v7(),
        refresh_token_hash: token_hash(),
        idle_expires_at: now + idle,
        absolute_expires_at: now + 4 * idle,
        user_agent: None,
        ip: Some("127.0.0.1".to_owned()),
        sign_in: tokens::SignIn::Password,
    }
}

/// A refresh-token hash as the service stores it.
fn token_hash() -> String {
    tokens::hash_opaque(Purpose::Refresh, &tokens::new_opaque())
}
