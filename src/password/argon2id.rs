//! The Argon2id implementations latchkey can hash with, behind one small trait, and the one it
//! uses.
//!
//! Why a trait: the implementation is chosen by measurement (`cargo run --release --example
//! bench`, see the README's "Performance" section), and the runner-up stays compiled in so that
//! every candidate is checked against the RFC 9106 known answer and against the others (a PHC
//! string made by one verifies with the other) by the tests below. Both write and read standard
//! PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$tag`), so the choice can change at any time
//! without touching a stored hash.
//!
//! - `argon2-rust` (chosen): a port of the C reference with SIMD compression functions (AVX-512,
//!   AVX2, SSE2, NEON) picked at run time, so one binary is fast on every x86-64 machine.
//! - RustCrypto `argon2`: portable, AVX2 at best; well under half the speed on this machine.

use std::sync::Mutex;

use anyhow::anyhow;
use rand::RngCore as _;

/// The cost of one hash. Parallelism is always 1: one hash occupies one hashing thread, and
/// throughput comes from hashing several passwords at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub memory_kib: u32,
    pub iterations: u32,
}

/// Length of a fresh salt (RFC 9106 §3.1 recommends 16 bytes).
const SALT_LEN: usize = 16;
/// Length of the tag in a PHC string.
const TAG_LEN: usize = 32;

/// One Argon2id implementation.
pub trait Argon2id: Send + Sync {
    /// The crate it comes from, for logs and the benchmark.
    fn name(&self) -> &'static str;

    /// Hashes `password` with a fresh random salt into a PHC string.
    fn hash(&self, cost: Cost, password: &[u8]) -> anyhow::Result<String>;

    /// Whether `password` matches `phc`, computed with the parameters (and the Argon2 variant)
    /// written in `phc`. A string that is not a PHC Argon2 hash is an error, not a mismatch.
    /// `cost` is the configured one, which sizes any memory kept for the next call.
    fn verify(&self, cost: Cost, phc: &str, password: &[u8]) -> anyhow::Result<bool>;

    /// The raw Argon2id (v1.3) tag with `lanes` lanes, a secret key and associated data: what
    /// the RFC 9106 test vectors check.
    #[allow(clippy::too_many_arguments)]
    fn tag(
        &self,
        cost: Cost,
        lanes: u32,
        password: &[u8],
        salt: &[u8],
        secret: &[u8],
        data: &[u8],
        out: &mut [u8],
    ) -> anyhow::Result<()>;
}

/// The implementation the service hashes with: the fastest correct one measured here.
pub static CHOSEN: &dyn Argon2id = &Argon2Rust;

/// Every candidate, for the benchmark and the tests.
pub fn candidates() -> [&'static dyn Argon2id; 2] {
    [&Argon2Rust, &RustCrypto]
}

fn fresh_salt() -> [u8; SALT_LEN] {
    let mut salt = [0; SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    salt
}

/// `argon2-rust`: runtime-dispatched SIMD.
pub struct Argon2Rust;

/// The memory of finished hashes, kept for the next ones: allocating 19 MiB afresh for every hash
/// cost a fifth of a signup's CPU in page faults and the kernel clearing pages (measured with perf,
/// see the README's "Performance"). There are never more arenas than hashes that ran at once,
/// which the service bounds to its hashing threads: the memory budget counts 19 MiB per hashing
/// thread anyway. An arena is wiped after every use (`zeroize-memory`). Per process rather than
/// per thread: the hasher's threads share them with the benchmark's and the tests' own threads.
static ARENAS: Mutex<Vec<argon2_rust::Hasher>> = Mutex::new(Vec::new());

impl Argon2Rust {
    /// Runs `f` with a kept arena for `cost`, or a new one, and keeps it afterwards.
    fn pooled<T>(
        cost: Cost,
        f: impl FnOnce(&mut argon2_rust::Hasher) -> Result<T, argon2_rust::Error>,
    ) -> anyhow::Result<T> {
        let params = Self::params(cost, 1)?;
        // A poisoned lock only means no reuse: an arena in the pool is always a complete one.
        let kept = ARENAS.lock().ok().and_then(|mut arenas| arenas.pop());
        let mut hasher = match kept {
            Some(hasher) if *hasher.params() == params => hasher,
            // Another cost (a test, or a changed setting): that arena is freed.
            _ => Self::argon2(params).hasher(),
        };
        let result = f(&mut hasher);
        if let Ok(mut arenas) = ARENAS.lock() {
            arenas.push(hasher);
        }
        result.map_err(|e| anyhow!("argon2 failed: {e}"))
    }

    fn params(cost: Cost, lanes: u32) -> anyhow::Result<argon2_rust::Params> {
        use argon2_rust::params::{Memory, TagLen};
        argon2_rust::Params::builder()
            .memory(Memory::kib(u64::from(cost.memory_kib)))
            .passes(cost.iterations)
            .lanes(lanes)
            .tag_len(TagLen::bytes(TAG_LEN as u64))
            .build()
            .map_err(|e| anyhow!("invalid Argon2 parameters: {e}"))
    }

    fn argon2(params: argon2_rust::Params) -> argon2_rust::Argon2 {
        argon2_rust::Argon2::new(
            argon2_rust::Algorithm::Argon2id,
            argon2_rust::Version::V0x13,
            params,
        )
    }
}

impl Argon2id for Argon2Rust {
    fn name(&self) -> &'static str {
        "argon2-rust 1.1"
    }

    fn hash(&self, cost: Cost, password: &[u8]) -> anyhow::Result<String> {
        Self::pooled(cost, |hasher| hasher.hash_encoded(password, &fresh_salt()))
    }

    fn verify(&self, cost: Cost, phc: &str, password: &[u8]) -> anyhow::Result<bool> {
        use argon2_rust::{Algorithm, Error};
        // The C reference's decoder wants to be told the variant; it is the string's first field.
        let algorithm = match phc.split('$').nth(1) {
            Some("argon2id") => Algorithm::Argon2id,
            Some("argon2i") => Algorithm::Argon2i,
            Some("argon2d") => Algorithm::Argon2d,
            _ => return Err(anyhow!("stored hash is not an Argon2 PHC string")),
        };
        // A string with more memory than `cost` gets an arena of its own, freed after the call.
        Self::pooled(cost, |hasher| {
            match hasher.verify_encoded(phc, password, algorithm) {
                Ok(()) => Ok(true),
                Err(Error::VerifyMismatch) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    fn tag(
        &self,
        cost: Cost,
        lanes: u32,
        password: &[u8],
        salt: &[u8],
        secret: &[u8],
        data: &[u8],
        out: &mut [u8],
    ) -> anyhow::Result<()> {
        Self::argon2(Self::params(cost, lanes)?)
            .hash_into_with_ad(password, salt, secret, data, out)
            .map_err(|e| anyhow!("argon2 hashing failed: {e}"))
    }
}

/// RustCrypto `argon2`: portable Rust, AVX2 when the CPU has it.
pub struct RustCrypto;

impl RustCrypto {
    fn params(cost: Cost, lanes: u32, data: &[u8]) -> anyhow::Result<argon2::Params> {
        let mut builder = argon2::ParamsBuilder::new();
        builder
            .m_cost(cost.memory_kib)
            .t_cost(cost.iterations)
            .p_cost(lanes)
            .output_len(TAG_LEN);
        if !data.is_empty() {
            let data = argon2::AssociatedData::new(data)
                .map_err(|e| anyhow!("invalid Argon2 associated data: {e}"))?;
            builder.data(data);
        }
        builder
            .build()
            .map_err(|e| anyhow!("invalid Argon2 parameters: {e}"))
    }
}

impl Argon2id for RustCrypto {
    fn name(&self) -> &'static str {
        "RustCrypto argon2 0.5"
    }

    fn hash(&self, cost: Cost, password: &[u8]) -> anyhow::Result<String> {
        use argon2::password_hash::{PasswordHasher as _, SaltString};
        let salt = SaltString::encode_b64(&fresh_salt())
            .map_err(|e| anyhow!("cannot encode the salt: {e}"))?;
        let argon2 = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            Self::params(cost, 1, &[])?,
        );
        let hash = argon2
            .hash_password(password, &salt)
            .map_err(|e| anyhow!("argon2 hashing failed: {e}"))?;
        Ok(hash.to_string())
    }

    fn verify(&self, _cost: Cost, phc: &str, password: &[u8]) -> anyhow::Result<bool> {
        use argon2::password_hash::{Error, PasswordHash, PasswordVerifier as _};
        let parsed =
            PasswordHash::new(phc).map_err(|e| anyhow!("stored hash is not a PHC string: {e}"))?;
        // The variant, version and parameters come from the string, not from this instance.
        match argon2::Argon2::default().verify_password(password, &parsed) {
            Ok(()) => Ok(true),
            Err(Error::Password) => Ok(false),
            Err(e) => Err(anyhow!("argon2 verification failed: {e}")),
        }
    }

    fn tag(
        &self,
        cost: Cost,
        lanes: u32,
        password: &[u8],
        salt: &[u8],
        secret: &[u8],
        data: &[u8],
        out: &mut [u8],
    ) -> anyhow::Result<()> {
        argon2::Argon2::new_with_secret(
            secret,
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            Self::params(cost, lanes, data)?,
        )
        .map_err(|e| anyhow!("invalid Argon2 secret: {e}"))?
        .hash_password_into(password, salt, out)
        .map_err(|e| anyhow!("argon2 hashing failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small enough for unoptimised test builds; the parameters do not matter to compatibility.
    const CHEAP: Cost = Cost {
        memory_kib: 1024,
        iterations: 1,
    };

    #[test]
    fn every_candidate_gives_the_rfc_9106_argon2id_test_vector() {
        // RFC 9106 §5.3: password 32×0x01, salt 16×0x02, secret 8×0x03, associated data
        // 12×0x04, m=32 KiB, t=3, p=4, 32-byte tag.
        let expected = "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659";
        let cost = Cost {
            memory_kib: 32,
            iterations: 3,
        };
        for candidate in candidates() {
            let mut tag = [0u8; 32];
            candidate
                .tag(cost, 4, &[1; 32], &[2; 16], &[3; 8], &[4; 12], &mut tag)
                .unwrap();
            let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, expected, "{}", candidate.name());
        }
    }

    #[test]
    fn a_hash_made_by_one_candidate_verifies_with_every_other() {
        for maker in candidates() {
            let phc = maker.hash(CHEAP, "correct horse".as_bytes()).unwrap();
            assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
            for checker in candidates() {
                let names = (maker.name(), checker.name());
                assert!(
                    checker.verify(CHEAP, &phc, b"correct horse").unwrap(),
                    "{names:?}"
                );
                assert!(
                    !checker.verify(CHEAP, &phc, b"correct horsf").unwrap(),
                    "{names:?}"
                );
            }
        }
    }

    #[test]
    fn each_candidate_recomputes_the_tag_of_a_phc_string_from_its_salt() {
        // The tag of RustCrypto's string, recomputed by each candidate from its parts.
        let phc = RustCrypto.hash(CHEAP, b"correct horse").unwrap();
        let fields: Vec<&str> = phc.split('$').collect();
        let salt = base64_decode(fields[4]);
        for candidate in candidates() {
            let mut tag = [0u8; 32];
            candidate
                .tag(CHEAP, 1, b"correct horse", &salt, &[], &[], &mut tag)
                .unwrap();
            assert_eq!(base64_decode(fields[5]), tag, "{}", candidate.name());
        }
    }

    #[test]
    fn other_argon2_variants_and_garbage_are_told_apart() {
        // An Argon2i string from the C reference's test suite (src/test.c, v=19, m=64 KiB, t=2,
        // p=1): verifiable by both, though latchkey never writes one (it asks for a rehash).
        let argon2i = "$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ\
                       $wWKIMhR9lyDFvRz9YTZweHKfbftvj+qf+YFY4NeBbtA";
        for candidate in candidates() {
            assert!(
                candidate.verify(CHEAP, argon2i, b"password").unwrap(),
                "{}",
                candidate.name()
            );
            assert!(
                !candidate.verify(CHEAP, argon2i, b"passwore").unwrap(),
                "{}",
                candidate.name()
            );
            assert!(
                candidate.verify(CHEAP, "not a hash", b"password").is_err(),
                "{}",
                candidate.name()
            );
        }
    }

    #[test]
    fn the_memory_kept_between_hashes_follows_a_change_of_cost() {
        // The second cost replaces the first one's arena; the first hash still verifies.
        let other = Cost {
            memory_kib: 512,
            iterations: 2,
        };
        let first = Argon2Rust.hash(CHEAP, b"correct horse").unwrap();
        let second = Argon2Rust.hash(other, b"correct horse").unwrap();
        assert!(
            second.starts_with("$argon2id$v=19$m=512,t=2,p=1$"),
            "{second}"
        );
        for phc in [&first, &second] {
            assert!(Argon2Rust.verify(other, phc, b"correct horse").unwrap());
            assert!(RustCrypto.verify(other, phc, b"correct horse").unwrap());
        }
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(s)
            .unwrap()
    }
}
