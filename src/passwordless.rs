//! Passwordless sign-in: an email with a one-time link and a 6-digit code, either of which opens
//! a session (`routes::passwordless`, `store::flows::passwordless`).
//!
//! The link's token is an opaque token of its own purpose (`tokens::Purpose::Passwordless`). The
//! code has only 20 bits, so it is never worth anything alone: it is checked against the one live
//! row of the address it was sent to, each wrong code counts against that row (counted before the
//! code is compared, so guesses sent in parallel cannot slip past the limit), and after
//! `MAX_ATTEMPTS` the row is dead, link included. At rest it is a keyed hash (a key derived from
//! the key-encryption key) bound to the row's token hash, so a copy of the database does not
//! give the codes away by trying the million of them.

use rand::Rng as _;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

use crate::keys::Kek;

/// Codes tried against one request before its code and link are dead.
pub const MAX_ATTEMPTS: i64 = 5;
/// The digits of a code.
pub const CODE_DIGITS: usize = 6;

/// A new code: six decimal digits, uniformly random.
pub fn new_code() -> SecretString {
    let n: u32 = OsRng.gen_range(0..1_000_000);
    SecretString::from(format!("{n:06}"))
}

/// The stored form of `code` for the row whose link token hashes to `token_hash`.
pub fn code_hash(kek: &Kek, token_hash: &str, code: &SecretString) -> String {
    let key = kek.derive("latchkey passwordless code v1");
    let mut message = Vec::with_capacity(token_hash.len() + 1 + CODE_DIGITS);
    message.extend_from_slice(token_hash.as_bytes());
    message.push(0);
    message.extend_from_slice(code.expose_secret().as_bytes());
    crate::tokens::hmac_sha256(&key, &message)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `code` is the one stored as `stored` for the row `token_hash` (constant time).
pub fn code_matches(kek: &Kek, token_hash: &str, stored: &str, code: &SecretString) -> bool {
    let candidate = code_hash(kek, token_hash, code);
    bool::from(candidate.as_bytes().ct_eq(stored.as_bytes()))
}

/// A code as typed: six ASCII digits once spaces are taken out (mail clients and people split
/// codes as `123 456`); anything else is not a code.
pub fn parse_code(raw: &str) -> Option<SecretString> {
    let digits: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == CODE_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| SecretString::from(digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..100 {
            let code = new_code();
            assert_eq!(code.expose_secret().len(), 6);
            assert!(code.expose_secret().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn a_code_matches_only_its_own_row_and_key() {
        let kek = |encoded: &str| Kek::from_setting(Some(&SecretString::from(encoded))).unwrap();
        let (kek, other) = (kek(&Kek::generate_encoded()), kek(&Kek::generate_encoded()));
        let code = SecretString::from("012345".to_owned());
        let stored = code_hash(&kek, "row-a", &code);
        assert!(code_matches(&kek, "row-a", &stored, &code));
        assert!(!code_matches(&kek, "row-b", &stored, &code));
        assert!(!code_matches(&other, "row-a", &stored, &code));
        let wrong = SecretString::from("012346".to_owned());
        assert!(!code_matches(&kek, "row-a", &stored, &wrong));
    }

    #[test]
    fn typed_codes_are_six_digits_spaces_aside() {
        let parsed = |raw: &str| parse_code(raw).map(|c| c.expose_secret().to_owned());
        assert_eq!(parsed(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(parsed("012345").as_deref(), Some("012345"));
        for bad in ["12345", "1234567", "12345a", "١٢٣٤٥٦", ""] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
    }
}
