//! Password hashes brought in by an import (admin API or `latchkey users import`), verified as
//! they are at the next login and then replaced by Argon2id (`Verified::needs_rehash`).
//!
//! Accepted forms, each verified by the maintained crate of its algorithm:
//! - Argon2 (`$argon2id$`, `$argon2i$`, `$argon2d$`, PHC, any parameters): the service's own
//!   verifier (`argon2id::CHOSEN`), which reads variant and parameters from the string.
//! - bcrypt (`$2a$`, `$2b$`, `$2x$`, `$2y$`, MCF): the `bcrypt` crate.
//! - scrypt (`$scrypt$ln=…,r=…,p=…$salt$hash`, PHC): the `scrypt` crate.
//! - PBKDF2 (`$pbkdf2-sha256$i=…,l=…$salt$hash`, PHC; `$pbkdf2-sha512$` too): the `pbkdf2` crate.
//!
//! An import is an operator's input, but a hash's parameters decide how much CPU and memory every
//! login attempt against it costs, so they are bounded here at import time (`check`): a stored
//! hash can never make one login take minutes or gigabytes.
//!
//! Accounts created without a password (an admin invite, an import without a hash) store
//! `UNUSABLE`: no password matches it, and login spends the dummy hash's time on it like on an
//! unknown account.

use anyhow::anyhow;
use argon2::password_hash::PasswordHash;

/// The stored hash of an account that has no password yet (invited, or imported without one).
/// Not a PHC or MCF string, so nothing can ever verify against it.
pub const UNUSABLE: &str = "!no-password";

/// The algorithm of a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Argon2,
    Bcrypt,
    Scrypt,
    Pbkdf2,
    /// `UNUSABLE`, or anything else starting with `!`.
    Unusable,
}

/// The scheme of `hash` by its prefix, or `None` for a form latchkey does not know.
pub fn scheme(hash: &str) -> Option<Scheme> {
    if hash.starts_with('!') {
        return Some(Scheme::Unusable);
    }
    let id = hash.strip_prefix('$')?.split('$').next()?;
    Some(match id {
        "argon2id" | "argon2i" | "argon2d" => Scheme::Argon2,
        "2a" | "2b" | "2x" | "2y" => Scheme::Bcrypt,
        "scrypt" => Scheme::Scrypt,
        "pbkdf2-sha256" | "pbkdf2-sha512" => Scheme::Pbkdf2,
        _ => return None,
    })
}

/// The most a stored hash may cost one login: bcrypt cost 16 (about 4 s here), scrypt
/// 2^20 × r 8 (1 GiB), PBKDF2 10 million rounds, Argon2 1 GiB and 16 passes.
const BCRYPT_MAX_COST: u32 = 16;
const SCRYPT_MAX_BYTES: u64 = 1 << 30;
const PBKDF2_MAX_ROUNDS: u32 = 10_000_000;
const ARGON2_MAX_KIB: u32 = 1 << 20;
const ARGON2_MAX_PASSES: u32 = 16;

/// Whether `hash` can be imported: a known form, well formed, with parameters inside the bounds.
/// The reason is for the import's per-line report.
pub fn check(hash: &str) -> Result<(), String> {
    let unsupported =
        || "is not an argon2, bcrypt, scrypt or pbkdf2-sha256 hash in PHC or MCF form".to_owned();
    match scheme(hash).ok_or_else(unsupported)? {
        Scheme::Unusable => Err(unsupported()),
        Scheme::Bcrypt => {
            let parts: bcrypt::HashParts = hash
                .parse()
                .map_err(|e| format!("is not a valid bcrypt hash: {e}"))?;
            if parts.get_cost() > BCRYPT_MAX_COST {
                return Err(format!("bcrypt cost above {BCRYPT_MAX_COST}"));
            }
            Ok(())
        }
        Scheme::Argon2 | Scheme::Scrypt | Scheme::Pbkdf2 => {
            let parsed =
                PasswordHash::new(hash).map_err(|e| format!("is not a PHC string: {e}"))?;
            if parsed.hash.is_none() || parsed.salt.is_none() {
                return Err("has no salt or no hash".to_owned());
            }
            let param = |name: &str| parsed.params.get_decimal(name);
            match scheme(hash) {
                Some(Scheme::Argon2) => {
                    let m = param("m").ok_or("has no m parameter")?;
                    let t = param("t").ok_or("has no t parameter")?;
                    if m > ARGON2_MAX_KIB || t > ARGON2_MAX_PASSES {
                        return Err("argon2 parameters above 1 GiB or 16 passes".to_owned());
                    }
                    argon2::Params::try_from(&parsed)
                        .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
                }
                Some(Scheme::Scrypt) => {
                    let params = scrypt::Params::try_from(&parsed)
                        .map_err(|e| format!("invalid scrypt parameters: {e}"))?;
                    let bytes = 128u64
                        .saturating_mul(u64::from(params.r()))
                        .saturating_mul(1u64 << params.log_n().min(63))
                        .saturating_mul(u64::from(params.p()));
                    if bytes > SCRYPT_MAX_BYTES {
                        return Err("scrypt parameters above 1 GiB".to_owned());
                    }
                }
                _ => {
                    let rounds = param("i").ok_or("has no i parameter")?;
                    if rounds > PBKDF2_MAX_ROUNDS {
                        return Err(format!("pbkdf2 rounds above {PBKDF2_MAX_ROUNDS}"));
                    }
                    pbkdf2::Params::try_from(&parsed)
                        .map_err(|e| format!("invalid pbkdf2 parameters: {e}"))?;
                }
            }
            Ok(())
        }
    }
}

/// Whether `password` matches a bcrypt, scrypt or PBKDF2 `hash` (Argon2 goes through the
/// service's own verifier). A malformed hash is an error, not a mismatch.
pub fn verify(scheme: Scheme, hash: &str, password: &[u8]) -> anyhow::Result<bool> {
    use argon2::password_hash::Error;
    let phc = |verifier: &dyn argon2::password_hash::PasswordVerifier| {
        let parsed = PasswordHash::new(hash).map_err(|e| anyhow!("stored hash: {e}"))?;
        match verifier.verify_password(password, &parsed) {
            Ok(()) => Ok(true),
            Err(Error::Password) => Ok(false),
            Err(e) => Err(anyhow!("stored hash: {e}")),
        }
    };
    match scheme {
        Scheme::Bcrypt => bcrypt::verify(password, hash).map_err(|e| anyhow!("bcrypt: {e}")),
        Scheme::Scrypt => phc(&scrypt::Scrypt),
        Scheme::Pbkdf2 => phc(&pbkdf2::Pbkdf2),
        Scheme::Argon2 | Scheme::Unusable => Err(anyhow!("not an imported scheme")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers made by other implementations for `PASSWORD`: pyca `bcrypt` 4, CPython's
    /// `hashlib.scrypt` and `hashlib.pbkdf2_hmac` (PHC strings put together by hand), and
    /// `argon2-cffi` (the C reference) with parameters other than the service's.
    const PASSWORD: &[u8] = b"correct horse battery staple";
    const VECTORS: &[(Scheme, &str)] = &[
        (
            Scheme::Bcrypt,
            "$2b$04$vVvqniooFWD0shPonWKeUOyDOP5XSCL5Q3/VjXP/pZplguJx3FNwy",
        ),
        (
            Scheme::Scrypt,
            "$scrypt$ln=10,r=8,p=1$bGF0Y2hrZXktc2FsdC0xNg$uRfvi2X+Q87Ld6sDtk5EHVSNe+JeyFSNo7ZtMzr0ztc",
        ),
        (
            Scheme::Pbkdf2,
            "$pbkdf2-sha256$i=10000,l=32$bGF0Y2hrZXktc2FsdC0xNg$Fqm37+YcfXg+mAOyT9zr4ajLIk2tDQomEHQz4ZC6A68",
        ),
    ];

    #[test]
    fn known_answers_verify_and_other_passwords_do_not() {
        for (expected, hash) in VECTORS {
            assert_eq!(scheme(hash), Some(*expected), "{hash}");
            check(hash).unwrap_or_else(|e| panic!("{hash}: {e}"));
            assert!(verify(*expected, hash, PASSWORD).unwrap(), "{hash}");
            assert!(!verify(*expected, hash, b"wrong horse").unwrap(), "{hash}");
        }
        // The classic OpenBSD/John the Ripper vector, in the `$2a$` form.
        let classic = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
        assert!(verify(Scheme::Bcrypt, classic, b"U*U").unwrap());
    }

    #[test]
    fn schemes_by_prefix() {
        assert_eq!(scheme("$2b$12$abc"), Some(Scheme::Bcrypt));
        assert_eq!(scheme("$2y$12$abc"), Some(Scheme::Bcrypt));
        assert_eq!(
            scheme("$scrypt$ln=4,r=8,p=1$c2FsdA$aGFzaA"),
            Some(Scheme::Scrypt)
        );
        assert_eq!(
            scheme("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA"),
            Some(Scheme::Pbkdf2)
        );
        assert_eq!(
            scheme("$argon2i$v=19$m=16,t=2,p=1$c2FsdA$aGFzaA"),
            Some(Scheme::Argon2)
        );
        assert_eq!(scheme("$1$md5crypt$x"), None);
        assert_eq!(scheme("plain"), None);
        assert_eq!(scheme(UNUSABLE), Some(Scheme::Unusable));
    }

    #[test]
    fn costly_parameters_are_refused_at_import() {
        let bcrypt_17 = "$2b$17$C6UzMDM.H6dfI/f/IKxGhuHWnH4A5CQPpz/2dFDY1gTWk8pJcKlcW";
        assert!(check(bcrypt_17).unwrap_err().contains("cost"));
        let scrypt_huge = "$scrypt$ln=24,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(check(scrypt_huge).is_err());
        let pbkdf2_huge = "$pbkdf2-sha256$i=20000000,l=32$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert!(check(pbkdf2_huge).unwrap_err().contains("rounds"));
        assert!(check("$md5$x").is_err());
        assert!(check(UNUSABLE).is_err());
    }
}
