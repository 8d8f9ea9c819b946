//! Argon2id hashing and verification, off the async runtime.
//!
//! Hashing is deliberately expensive (m=19456 KiB, t=2, p=1 by default), so it never runs on an
//! async worker: each hash runs on tokio's blocking pool, and a semaphore sized to the hashing
//! threads keeps at most that many running at once. Callers hash *before* they open a transaction,
//! so no connection or lock is ever held while a hash is computed.
//!
//! Logins for unknown accounts verify a dummy hash with the same parameters, so the response time
//! does not reveal whether an account exists.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub matches: bool,
    /// The stored hash uses other parameters than the configured ones: rehash it now that the
    /// password is known.
    pub needs_rehash: bool,
}

#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    dummy_hash: Arc<str>,
}

impl Hasher {
    pub fn new(memory_kib: u32, iterations: u32, threads: usize) -> anyhow::Result<Hasher> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| anyhow!("invalid Argon2 parameters: {e}"))?;
        let dummy = SecretString::from("latchkey dummy password for unknown accounts");
        let dummy_hash = hash_blocking(&params, &dummy)?;
        Ok(Hasher {
            params,
            permits: Arc::new(Semaphore::new(threads)),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: SecretString) -> anyhow::Result<String> {
        let params = self.params.clone();
        self.run(move || hash_blocking(&params, &password)).await?
    }

    /// Verifies a password against a stored PHC hash, or against the dummy hash when there is no
    /// account (the answer is then always "no match", after the same amount of work).
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> anyhow::Result<Verified> {
        let params = self.params.clone();
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let verified = self
            .run(move || verify_blocking(&params, &password, &phc))
            .await??;
        Ok(Verified {
            matches: verified.matches && known,
            ..verified
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .context("hasher closed")?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .context("hashing task failed")
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, password: &SecretString) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let hash = argon2(params)
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map_err(|e| anyhow!("argon2 hashing failed: {e}"))?;
    Ok(hash.to_string())
}

fn verify_blocking(
    params: &Params,
    password: &SecretString,
    phc: &str,
) -> anyhow::Result<Verified> {
    let parsed =
        PasswordHash::new(phc).map_err(|e| anyhow!("stored hash is not a PHC string: {e}"))?;
    let matches = argon2(params)
        .verify_password(password.expose_secret().as_bytes(), &parsed)
        .is_ok();
    let current = Params::try_from(&parsed).ok();
    let needs_rehash = parsed.algorithm.as_str() != "argon2id"
        || parsed.version != Some(Version::V0x13.into())
        || current.is_none_or(|p| {
            p.m_cost() != params.m_cost()
                || p.t_cost() != params.t_cost()
                || p.p_cost() != params.p_cost()
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
