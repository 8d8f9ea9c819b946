//! The ceilings, measured in-process with latchkey's own code: Argon2id hashes per second, one
//! EdDSA access-token verification, and the database's rate for the refresh transaction.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use latchkey::clock::{Clock, millis};
use latchkey::domain::Email;
use latchkey::keys::{Kek, KeyRing};
use latchkey::password::argon2id::{self, Argon2id, Cost};
use latchkey::store::{self, Store, audit, sessions, users};
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

/// Microseconds for one access-token verification as `GET /auth/me` does it (header, key lookup,
/// Ed25519 signature, claims), on one thread.
pub async fn eddsa_verify_us(scratch: &Path) -> anyhow::Result<f64> {
    let url = format!("sqlite://{}", scratch.join("keys.db").display());
    let store = Store::connect(&SecretString::from(url)).await?;
    store.migrate().await?;
    let kek = Kek::from_setting(Some(&SecretString::from(Kek::generate_encoded())))?;
    let clock = Clock::default();
    let ring = KeyRing::load(store.clone(), kek, clock.clone(), Duration::from_secs(900)).await?;
    let issuer = "http://localhost:8080";
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
        tokens::verify_access(&ring, issuer, &token, clock.now())
            .await
            .context("the token does not verify")?;
        n += 1;
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    store.close().await;
    Ok(us)
}

/// Refresh transactions per second that the database commits with `concurrency` clients, through
/// the same store functions and the same statements as `POST /auth/refresh`: spend the token,
/// insert its successor, extend the session, write the audit event, read the account, commit.
pub async fn refresh_transactions(
    database_url: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let store = Store::connect(&SecretString::from(database_url.to_owned())).await?;
    store.migrate().await?;
    let clock = Clock::default();
    let idle = millis(Duration::from_secs(7 * 24 * 3600));
    let run = Uuid::now_v7().simple().to_string();
    add_idle_sessions(&store, &run, FILLER_SESSIONS).await?;
    let mut chains = Vec::new();
    for w in 0..concurrency {
        let now = clock.now();
        let user_id = Uuid::now_v7();
        let session_id = Uuid::now_v7();
        let email = Email::parse(&format!("txn-{run}-{w}@bench.example"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let token = token_hash();
        let mut tx = store.begin().await?;
        users::insert_user(&mut *tx, user_id, &email, "$argon2id$unused", now).await?;
        users::insert_profile(&mut *tx, user_id, None, now).await?;
        let session = sessions::NewSession {
            id: session_id,
            user_id,
            now,
            idle_expires_at: now + idle,
            absolute_expires_at: now + 4 * idle,
            user_agent: None,
            ip: Some("127.0.0.1"),
        };
        sessions::insert_session(&mut *tx, &session).await?;
        sessions::insert_refresh_token(&mut *tx, &token, session_id, now).await?;
        tx.commit().await?;
        chains.push((user_id, session_id, token));
    }

    let started = Instant::now();
    let deadline = started + duration;
    let workers = chains.into_iter().map(|(user_id, session_id, mut token)| {
        let store = store.clone();
        let clock = clock.clone();
        tokio::spawn(async move {
            let actor = audit::Actor {
                user_id: Some(user_id),
                session_id: Some(session_id),
                ip: Some("127.0.0.1".to_owned()),
                user_agent: None,
            };
            let mut n = 0u64;
            while Instant::now() < deadline {
                let now = clock.now();
                let successor = token_hash();
                let mut tx = store.begin().await?;
                sessions::spend_refresh_token(&mut tx, &token, now)
                    .await?
                    .context("the refresh token was not spent")?;
                sessions::insert_refresh_token(&mut *tx, &successor, session_id, now).await?;
                sessions::touch_session(&mut *tx, session_id, now, now + idle).await?;
                audit::record(&mut *tx, audit::Kind::Refresh, &actor, now).await?;
                store::users::find_account(&mut *tx, user_id)
                    .await?
                    .context("the account vanished")?;
                tx.commit().await?;
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

async fn add_idle_sessions(store: &Store, run: &str, n: usize) -> anyhow::Result<()> {
    let clock = Clock::default();
    let now = clock.now();
    let user_id = Uuid::now_v7();
    let email =
        Email::parse(&format!("filler-{run}@bench.example")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut tx = store.begin().await?;
    users::insert_user(&mut *tx, user_id, &email, "$argon2id$unused", now).await?;
    users::insert_profile(&mut *tx, user_id, None, now).await?;
    for _ in 0..n {
        let id = Uuid::now_v7();
        let session = sessions::NewSession {
            id,
            user_id,
            now,
            idle_expires_at: now + 3_600_000,
            absolute_expires_at: now + 7_200_000,
            user_agent: None,
            ip: None,
        };
        sessions::insert_session(&mut *tx, &session).await?;
        sessions::insert_refresh_token(&mut *tx, &token_hash(), id, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A refresh-token hash as the service stores it.
fn token_hash() -> String {
    tokens::hash_opaque(Purpose::Refresh, &tokens::new_opaque())
}
