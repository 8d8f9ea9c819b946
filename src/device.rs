//! Device cookies (OWASP's answer to lockout as a denial of service): a browser that signed in to
//! an account before carries a cookie naming a random device id and bound to the account's
//! address by a MAC. A login presenting a valid one for the address typed is counted against
//! that device's own failure counter instead of the account's, so failures from anywhere else
//! (an attacker guessing) never hold back the owner's own browser, while guesses from a stolen
//! device cookie are still limited like any account's.
//!
//! Value: `<device id>.<MAC>`, both base64url; the MAC is HMAC-SHA256 under a secret derived from
//! the key-encryption key (so every instance agrees), over a purpose label, the normalized
//! address, the account's current password hash and the id, compared in constant time. Binding
//! the hash makes a reset or a password change end every device cookie issued before it: someone
//! who knew the old password cannot keep a stock of cookies, each a guessing budget of its own,
//! against the new one. (A disabled account has no credentials to verify against at all.)

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq as _;

use crate::domain::Email;
use crate::tokens::hmac_sha256;

/// A new device cookie value for the account of `email` whose password hash is `credential`.
pub fn issue(secret: &[u8; 32], email: &Email, credential: &str) -> String {
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    let id = URL_SAFE_NO_PAD.encode(id);
    let mac = URL_SAFE_NO_PAD.encode(mac(secret, email, credential, &id));
    format!("{id}.{mac}")
}

/// The device id of `value` when it is a device cookie of the account of `email`, issued since
/// its password hash became `credential`.
pub fn verify(secret: &[u8; 32], email: &Email, credential: &str, value: &str) -> Option<String> {
    let (id, presented) = value.split_once('.')?;
    if id.len() != 22 {
        return None;
    }
    let presented = URL_SAFE_NO_PAD.decode(presented).ok()?;
    let expected = mac(secret, email, credential, id);
    bool::from(expected.ct_eq(presented.as_slice())).then(|| id.to_owned())
}

fn mac(secret: &[u8; 32], email: &Email, credential: &str, id: &str) -> [u8; 32] {
    let message = format!(
        "latchkey device v1\n{}\n{credential}\n{id}",
        email.normalized()
    );
    hmac_sha256(secret, message.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_cookie_verifies_for_its_account_only() {
        let secret = [7u8; 32];
        let alice = Email::parse("alice@example.com").unwrap();
        let bob = Email::parse("bob@example.com").unwrap();
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
        let value = issue(&secret, &alice, hash);
        let id = verify(&secret, &alice, hash, &value).expect("valid for alice");
        assert_eq!(value.split_once('.').unwrap().0, id);
        // The same account typed differently is the same account.
        let upper = Email::parse("ALICE@example.com").unwrap();
        let first = if value.starts_with('A') { "B" } else { "A" };
        let other_id = format!("{first}{}", &value[1..]);
        assert_eq!(verify(&secret, &upper, hash, &value).as_deref(), Some(&*id));
        let new_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$bmV3";
        for (email, secret, credential, value, why) in [
            (&bob, secret, hash, value.clone(), "another account"),
            (&alice, [8u8; 32], hash, value.clone(), "another secret"),
            (
                &alice,
                secret,
                new_hash,
                value.clone(),
                "the password changed since",
            ),
            (&alice, secret, hash, format!("{value}x"), "a changed MAC"),
            (&alice, secret, hash, other_id, "another id"),
            (&alice, secret, hash, "no-dot".to_owned(), "no separator"),
            (&alice, secret, hash, String::new(), "empty"),
        ] {
            assert_eq!(verify(&secret, email, credential, &value), None, "{why}");
        }
    }
}
