//! A new password as the contract defines it: 8 to 128 characters after Unicode NFKC
//! normalization, no composition rules, and not a commonly used or easily guessed one.
//!
//! The list of common passwords is Django's (`django/contrib/auth/common-passwords.txt.gz`,
//! BSD-licensed, itself from Royce Williams' list of 20,000 breached passwords), cut to the
//! entries of 8 characters or more, since shorter ones fail the length rule anyway.

use std::collections::HashSet;
use std::sync::LazyLock;

use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;

use super::Email;

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common-passwords.txt").lines().collect());

pub const MIN_CHARS: usize = 8;
pub const MAX_CHARS: usize = 128;

/// A password that passed the rules for new passwords, NFKC-normalized.
pub struct NewPassword(SecretString);

impl NewPassword {
    pub fn parse(raw: &str, owner: &Email) -> Result<NewPassword, &'static str> {
        let normalized = normalize(raw);
        let chars = normalized.chars().count();
        if chars < MIN_CHARS {
            return Err("must be at least 8 characters");
        }
        if chars > MAX_CHARS {
            return Err("must be at most 128 characters");
        }
        let lower = normalized.to_lowercase();
        if COMMON.contains(lower.as_str()) {
            return Err("is too common: it appears in lists of breached passwords");
        }
        let mut distinct = lower.chars().collect::<Vec<_>>();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < 3 {
            return Err("is too easy to guess: use more different characters");
        }
        if lower == owner.normalized()
            || (owner.local_part().len() >= 3 && lower.contains(owner.local_part()))
        {
            return Err("is too easy to guess: it contains your email address");
        }
        Ok(NewPassword(SecretString::from(normalized)))
    }

    pub fn into_secret(self) -> SecretString {
        self.0
    }
}

/// Every password is NFKC-normalized before it is hashed or verified, so that the same password
/// typed on two keyboards (composed or decomposed accents, full-width digits) is the same password.
pub fn normalize(raw: &str) -> String {
    raw.nfkc().collect()
}

/// The normalized form of a password given at login, ready to verify.
pub fn normalize_secret(raw: &SecretString) -> SecretString {
    SecretString::from(normalize(raw.expose_secret()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Email {
        Email::parse("alice@example.com").unwrap()
    }

    #[test]
    fn accepts_reasonable_passwords() {
        for raw in [
            "correct horse battery",
            "tr0ub4dor&3x",
            "8chars!z",
            &format!("{}zz", "x1y".repeat(42)),
        ] {
            assert!(
                NewPassword::parse(raw, &owner()).is_ok(),
                "{raw:?} was rejected"
            );
        }
    }

    #[test]
    fn rejects_bad_passwords_with_a_reason() {
        let too_long = "ab1".repeat(43);
        for (raw, reason) in [
            ("short1!", "must be at least 8 characters"),
            (too_long.as_str(), "must be at most 128 characters"),
            (
                "password",
                "is too common: it appears in lists of breached passwords",
            ),
            (
                "Password1",
                "is too common: it appears in lists of breached passwords",
            ),
            (
                "12345678",
                "is too common: it appears in lists of breached passwords",
            ),
            (
                "qwertyuiop",
                "is too common: it appears in lists of breached passwords",
            ),
            (
                "zzzzzzzzzzzz",
                "is too easy to guess: use more different characters",
            ),
            (
                "alice-rules-2024",
                "is too easy to guess: it contains your email address",
            ),
        ] {
            assert_eq!(
                NewPassword::parse(raw, &owner()).err(),
                Some(reason),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn counts_characters_after_nfkc() {
        // Seven full-width digits and a letter: NFKC makes them ASCII, and they still count as 8.
        assert!(NewPassword::parse("１２３４５６７x", &owner()).is_ok());
        // "ﬃ" is one code point that NFKC expands to three characters.
        assert_eq!(normalize("ﬃ"), "ffi");
        assert_eq!(
            NewPassword::parse("ab\u{FB03}cd", &owner()).err(),
            Some("must be at least 8 characters")
        );
    }
}
