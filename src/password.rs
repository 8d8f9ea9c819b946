//! Argon2id hashing and verification, off the async runtime.
//!
//! Hashing is deliberately expensive (m=19456 KiB, t=2, p=1 by default), so it never runs on an
//! async worker: each hash runs on one of the hasher's own threads (`Pool`), as many as
//! `hash_threads`, which take jobs from one queue in order. Callers hash *before* they open a
//! transaction, so no connection or lock is ever held while a hash is computed.
//!
//! Load shedding: the queue in front of those threads is bounded. A job is admitted only while
//! fewer than `threads + queue` jobs are running or waiting; past that, `reserve` fails at once
//! with `HashError::Overloaded` (503 `overloaded` with `Retry-After`). A flood of signups or logins
//! is then refused in microseconds instead of piling up requests, memory and timeouts, and the
//! endpoints that never hash (/auth/me, refresh, JWKS, health) do not wait behind it.
//!
//! Logins for unknown accounts verify a dummy hash with the same parameters, so the response time
//! does not reveal whether an account exists.
//!
//! The Argon2id implementation itself sits behind a small trait in `argon2id`, chosen by
//! measurement (see the README's "Performance" section).

pub mod argon2id;
pub mod imported;

use std::sync::{Arc, Mutex, mpsc};

use anyhow::{Context, anyhow};
use argon2::password_hash::PasswordHash;
use argon2::{Params, Version};
use secrecy::{ExposeSecret, SecretString};

use self::argon2id::{Argon2id, Cost};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub matches: bool,
    /// The stored hash uses other parameters than the configured ones: rehash it now that the
    /// password is known.
    pub needs_rehash: bool,
}

/// Why a hash or a verification did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The queue is full: the caller answers 503 `overloaded` at once.
    #[error("password hashing queue full")]
    Overloaded,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

#[derive(Clone)]
pub struct Hasher {
    cost: Cost,
    /// The Argon2id implementation (`argon2id::CHOSEN`).
    argon2: &'static dyn Argon2id,
    threads: usize,
    /// Jobs running or waiting: `capacity` (`threads + queue`) permits, taken without waiting.
    admitted: Arc<Semaphore>,
    capacity: usize,
    pool: Pool,
    dummy_hash: Arc<str>,
}

impl Hasher {
    /// A hasher with `threads` hashing threads and a queue of four waiting jobs per thread.
    pub fn new(memory_kib: u32, iterations: u32, threads: usize) -> anyhow::Result<Hasher> {
        let cost = Cost {
            memory_kib,
            iterations,
        };
        let argon2 = argon2id::CHOSEN;
        // Also checks the parameters: invalid ones fail here, at start.
        let dummy = SecretString::from("latchkey dummy password for unknown accounts");
        let dummy_hash = hash_blocking(argon2, cost, &dummy)?;
        Ok(Hasher {
            cost,
            argon2,
            threads,
            admitted: Arc::new(Semaphore::new(threads.saturating_mul(5))),
            capacity: threads.saturating_mul(5),
            pool: Pool::start(threads)?,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Lets at most `queue` jobs wait for a thread; one more is refused.
    pub fn with_queue(mut self, queue: usize) -> Hasher {
        self.capacity = self.threads.saturating_add(queue);
        self.admitted = Arc::new(Semaphore::new(self.capacity));
        self
    }

    /// Jobs running or waiting now (for the metrics).
    pub fn jobs_in_flight(&self) -> usize {
        self.capacity
            .saturating_sub(self.admitted.available_permits())
    }

    /// Takes a place in the queue now, or fails at once with `Overloaded` when it is full. A
    /// caller that must not do anything else before it knows the hash can run (login reserves
    /// its rate-limit counters only once it has a place) reserves first, then hashes with it.
    pub fn reserve(&self) -> Result<HashSlot, HashError> {
        let admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| HashError::Overloaded)?;
        Ok(HashSlot {
            hasher: self.clone(),
            admitted,
        })
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: SecretString) -> Result<String, HashError> {
        self.reserve()?.hash(password).await
    }

    /// Verifies a password against a stored PHC hash, or against the dummy hash when there is no
    /// account (the answer is then always "no match", after the same amount of work).
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<Verified, HashError> {
        self.reserve()?.verify(password, stored).await
    }
}

/// A place in the hashing queue, good for one hash or one verification.
pub struct HashSlot {
    hasher: Hasher,
    admitted: OwnedSemaphorePermit,
}

impl HashSlot {
    /// Hashes a password into a PHC string.
    pub async fn hash(self, password: SecretString) -> Result<String, HashError> {
        let (argon2, cost) = (self.hasher.argon2, self.hasher.cost);
        Ok(self
            .run(move || hash_blocking(argon2, cost, &password))
            .await??)
    }

    /// See `Hasher::verify`.
    pub async fn verify(
        self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<Verified, HashError> {
        let (argon2, cost) = (self.hasher.argon2, self.hasher.cost);
        // An account without a password (invited, imported without a hash) is treated like no
        // account: the dummy hash's work, and no match.
        let stored = stored.filter(|s| imported::scheme(s) != Some(imported::Scheme::Unusable));
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.hasher.dummy_hash.to_string());
        let verified = self
            .run(move || verify_blocking(argon2, cost, &password, &phc))
            .await??;
        Ok(Verified {
            matches: verified.matches && known,
            ..verified
        })
    }

    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (done, result) = oneshot::channel();
        // The place in the queue is the caller's while the job waits, and goes with the job
        // once a thread takes it: a request that gives up (timeout, closed connection) before
        // then frees its place at once and its job is skipped, so abandoned requests neither
        // burn hashing time nor keep the queue full; one that gives up later cannot free the
        // place while its hash still occupies a thread.
        let place = Place(Arc::new(Mutex::new(Some(self.admitted))));
        let taken = Arc::clone(&place.0);
        self.hasher.pool.run(Box::new(move || {
            let Some(_admitted) = taken.lock().ok().and_then(|mut p| p.take()) else {
                return;
            };
            let _ = done.send(work());
        }))?;
        let outcome = result.await;
        drop(place);
        Ok(outcome.context("hashing job failed")?)
    }
}

/// A waiting job's place in the queue, given up when its caller is dropped before a thread took
/// the job.
struct Place(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Drop for Place {
    fn drop(&mut self) {
        if let Ok(mut place) = self.0.lock() {
            place.take();
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads, started with the hasher and ended when its last clone is dropped. They
/// are the process's only threads at a lower CPU priority (`lower_this_threads_priority`), and
/// they run nothing but hashes (tokio's blocking pool also resolves names and reads files).
#[derive(Clone)]
struct Pool {
    jobs: mpsc::Sender<Job>,
}

impl Pool {
    fn start(threads: usize) -> anyhow::Result<Pool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("latchkey-hash-{n}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    loop {
                        // One thread waits on the queue at a time, the others for the lock.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => break,
                        };
                        // Every sender gone: the hasher was dropped.
                        let Ok(job) = job else { break };
                        // A panicking job drops its answer's sender (its caller sees the
                        // failure) and leaves the thread serving.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .context("cannot start a hashing thread")?;
        }
        Ok(Pool { jobs })
    }

    fn run(&self, job: Job) -> Result<(), HashError> {
        self.jobs
            .send(job)
            .map_err(|_| HashError::Failed(anyhow!("the hashing threads are gone")))
    }
}

/// Hashing threads run at the lowest nice value, 19, below the async workers (0). With one
/// hashing thread per core, a flood of signups keeps every core busy hashing; the requests that
/// never hash (GET /auth/me, refresh, JWKS) must still be scheduled the moment they wake, and
/// hashing gets every cycle they leave. Nice 19 rather than nice 10 cut `GET /auth/me`'s p99
/// under a signup flood by about a tenth; `SCHED_IDLE` did no better than nice 19 and would
/// leave logins almost nothing (a weight of 3 against 1024) while other requests keep the cores
/// busy. Measured in the README's "Performance" (mixed load).
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain system call without pointers; on Linux, `who = 0` with PRIO_PROCESS names
    // the calling thread alone. A failure leaves the priority as it was, which is harmless.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

fn hash_blocking(
    argon2: &dyn Argon2id,
    cost: Cost,
    password: &SecretString,
) -> anyhow::Result<String> {
    argon2.hash(cost, password.expose_secret().as_bytes())
}

fn verify_blocking(
    argon2: &dyn Argon2id,
    cost: Cost,
    password: &SecretString,
    phc: &str,
) -> anyhow::Result<Verified> {
    // An imported bcrypt, scrypt or PBKDF2 hash: verified as it is, replaced at this login.
    use imported::Scheme;
    if let Some(scheme @ (Scheme::Bcrypt | Scheme::Scrypt | Scheme::Pbkdf2)) = imported::scheme(phc)
    {
        let matches = imported::verify(scheme, phc, password.expose_secret().as_bytes())?;
        return Ok(Verified {
            matches,
            needs_rehash: true,
        });
    }
    let parsed =
        PasswordHash::new(phc).map_err(|e| anyhow!("stored hash is not a PHC string: {e}"))?;
    let matches = argon2.verify(cost, phc, password.expose_secret().as_bytes())?;
    let current = Params::try_from(&parsed).ok();
    let needs_rehash = parsed.algorithm.as_str() != "argon2id"
        || parsed.version != Some(Version::V0x13.into())
        || current.is_none_or(|p| {
            p.m_cost() != cost.memory_kib || p.t_cost() != cost.iterations || p.p_cost() != 1
        });
    Ok(Verified {
        matches,
        needs_rehash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    /// What a job sees of the thread it runs on: its name and its nice value.
    fn where_it_runs() -> (Option<String>, i32) {
        let name = std::thread::current().name().map(str::to_owned);
        // SAFETY: a plain system call; `who = 0` names the calling thread.
        (name, unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
    }

    #[tokio::test]
    async fn a_job_whose_caller_went_away_before_a_thread_took_it_frees_its_place_and_is_skipped() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let hasher = Hasher::new(1024, 1, 1).unwrap().with_queue(1);
        // The one thread is busy until `release`.
        let (release, busy) = mpsc::channel::<()>();
        hasher
            .pool
            .run(Box::new(move || {
                let _ = busy.recv();
            }))
            .unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let queued = hasher
            .reserve()
            .unwrap()
            .run(move || flag.store(true, Ordering::SeqCst));
        let mut queued = Box::pin(queued);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), &mut queued).await;
        assert!(waited.is_err(), "queued behind the busy thread");
        assert_eq!(
            hasher.jobs_in_flight(),
            1,
            "its place is held while it waits"
        );
        drop(queued);
        assert_eq!(
            hasher.jobs_in_flight(),
            0,
            "given up: the place is free at once"
        );
        release.send(()).unwrap();
        // The thread reaches the abandoned job and skips it: the next one runs after it.
        let (done, next) = oneshot::channel();
        hasher
            .pool
            .run(Box::new(move || {
                let _ = done.send(());
            }))
            .unwrap();
        next.await.unwrap();
        assert!(!ran.load(Ordering::SeqCst), "the abandoned job never ran");
    }

    #[tokio::test]
    async fn jobs_run_on_the_pools_own_lowered_threads_and_a_panic_fails_only_its_job() {
        let before = where_it_runs().1;
        let pool = Pool::start(1).unwrap();
        let (done, failed) = oneshot::channel::<()>();
        pool.run(Box::new(move || {
            let _done = done;
            panic!("a hash went wrong");
        }))
        .unwrap();
        assert!(
            failed.await.is_err(),
            "the panicking job's caller sees it fail"
        );
        let (done, answer) = oneshot::channel();
        pool.run(Box::new(move || {
            let _ = done.send(where_it_runs());
        }))
        .unwrap();
        let expected = (Some("latchkey-hash-0".to_owned()), 19);
        assert_eq!(answer.await.unwrap(), expected, "the same thread serves on");
        assert_eq!(
            where_it_runs().1,
            before,
            "the caller's thread is left as it was"
        );
    }

    #[tokio::test]
    async fn hashes_in_phc_form_with_the_configured_parameters() {
        let hasher = Hasher::new(19_456, 2, 1).unwrap();
        let phc = hasher.hash(secret("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let ok = hasher
            .verify(secret("correct horse"), Some(phc.clone()))
            .await
            .unwrap();
        assert_eq!(
            ok,
            Verified {
                matches: true,
                needs_rehash: false
            }
        );
        let wrong = hasher
            .verify(secret("wrong horse"), Some(phc))
            .await
            .unwrap();
        assert_eq!(
            wrong,
            Verified {
                matches: false,
                needs_rehash: false
            }
        );
    }

    #[tokio::test]
    async fn unknown_accounts_never_match() {
        let hasher = Hasher::new(1024, 1, 1).unwrap();
        let v = hasher
            .verify(secret("latchkey dummy password for unknown accounts"), None)
            .await
            .unwrap();
        assert!(!v.matches);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_frees_up_after_the_job() {
        let hasher = Hasher::new(1024, 1, 1).unwrap().with_queue(1);
        let first = hasher.reserve().unwrap();
        let second = hasher.reserve().unwrap();
        assert!(matches!(hasher.reserve(), Err(HashError::Overloaded)));
        assert!(matches!(
            hasher.hash(secret("correct horse")).await,
            Err(HashError::Overloaded)
        ));
        first.hash(secret("correct horse")).await.unwrap();
        drop(second);
        hasher.reserve().unwrap();
    }

    #[tokio::test]
    async fn older_parameters_ask_for_a_rehash() {
        let old = Hasher::new(1024, 1, 1).unwrap();
        let phc = old.hash(secret("correct horse")).await.unwrap();
        let current = Hasher::new(19_456, 2, 1).unwrap();
        let v = current
            .verify(secret("correct horse"), Some(phc))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verified {
                matches: true,
                needs_rehash: true
            }
        );
    }
}
