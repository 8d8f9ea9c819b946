//! Recovery codes: ten per enrollment, shown once, stored as hashes (under their own purpose), each
//! good for one sign-in when the authenticator is lost.

use rand::Rng as _;
use secrecy::{ExposeSecret, SecretString};

use crate::tokens::{self, Purpose};

pub const COUNT: usize = 10;
/// Lowercase letters and digits without the easily confused `0 o 1 l i`: 31 symbols, so ten of
/// them are about 50 bits, guessed at a rate the failed-login limits allow in no lifetime.
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
const LENGTH: usize = 10;

/// New codes, formatted `xxxxx-xxxxx`.
pub fn generate() -> Vec<SecretString> {
    let mut rng = rand::rngs::OsRng;
    (0..COUNT)
        .map(|_| {
            let raw: String = (0..LENGTH)
                .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
                .collect();
            SecretString::from(format!("{}-{}", &raw[..LENGTH / 2], &raw[LENGTH / 2..]))
        })
        .collect()
}

/// The stored hash of a code as typed: case, spaces and dashes do not matter.
pub fn hash(code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    tokens::hash_opaque(Purpose::RecoveryCode, &SecretString::from(normalized))
}

/// The hashes of new codes, for the store.
pub fn hashes(codes: &[SecretString]) -> Vec<String> {
    codes.iter().map(|c| hash(c.expose_secret())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_typed_loosely() {
        let codes = generate();
        assert_eq!(codes.len(), COUNT);
        let hashes = hashes(&codes);
        let distinct: std::collections::BTreeSet<_> = hashes.iter().collect();
        assert_eq!(distinct.len(), COUNT);
        let code = codes[0].expose_secret();
        assert_eq!(code.len(), 11);
        assert_eq!(hash(&code.to_uppercase()), hashes[0]);
        assert_eq!(hash(&code.replace('-', " ")), hashes[0]);
        assert_ne!(hash(&code[1..]), hashes[0]);
    }
}
