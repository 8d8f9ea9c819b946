//! The login challenge of an account with a second factor.

use sha2::{Digest as _, Sha256};

use crate::clock::Millis;

/// How long an `mfa_token` lives.
pub const TTL_SECS: i64 = 300;
/// Wrong codes a challenge takes before its `mfa_token` is dead.
pub const MAX_FAILURES: i64 = 5;

/// A fingerprint of the password hash a login verified, kept with its challenge (not the hash
/// itself): the verification goes on only while the account's hash is still that one.
pub fn credential(password_hash: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"latchkey mfa challenge credential v1\0");
    hasher.update(password_hash.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// When a challenge opened now expires.
pub fn expires_at(now: Millis) -> Millis {
    now + TTL_SECS * 1000
}
