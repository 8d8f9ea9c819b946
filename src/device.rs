//! Device cookies (OWASP's answer to lockout as a denial of service): a browser that signed in to
//! an account before carries a cookie naming a random device id and bound to the account's
//! address by a MAC. A login presenting a valid one for the address typed is counted against
//! that device's own failure counter instead of the account's, so failures from anywhere else
//! (an attacker guessing) never hold back the owner's own browser, while guesses from a stolen
//! device cookie are still limited like any account's.
//!
//! Value: `<device id>.<MAC>`, both base64url; the MAC is HMAC-SHA256 under a secret derived from
//! the key-encryption key (so every instance agrees), over a purpose label, the normalized
//! address and the id, compared in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq as _;

use crate::domain::Email;
use crate::tokens::hmac_sha256;

/// A new device cookie value for the account of `email`.
pub fn issue(secret: &[u8; 32], email: &Email) -> String {
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    let id = URL_SAFE_NO_PAD.encode(id);
    let mac = URL_SAFE_NO_PAD.encode(mac(secret, email, &id));
    format!("{id}.{mac}")
}

/// The device id of `value` when it is a device cookie of the account of `email`.
pub fn verify(secret: &[u8; 32], email: &Email, value: &str) -> Option<String> {
    let (id, presented) = value.split_once('.')?;
    if id.len() != 22 {
        return None;
    }
    let presented = URL_SAFE_NO_PAD.decode(presented).ok()?;
    let expected = mac(secret, email, id);
    bool::from(expected.ct_eq(presented.as_slice())).then(|| id.to_owned())
}

fn mac(secret: &[u8; 32], email: &Email, id: &str) -> [u8; 32] {
    let message = format!("latchkey device v1\n{}\n{id}", email.normalized());
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
        let value = issue(&secret, &alice);
        let id = verify(&secret, &alice, &value).expect("valid for alice");
        assert_eq!(value.split_once('.').unwrap().0, id);
        // The same account typed differently is the same account.
        let upper = Email::parse("ALICE@example.com").unwrap();
        let first = if value.starts_with('A') { "B" } else { "A" };
        let other_id = format!("{first}{}", &value[1..]);
        assert_eq!(verify(&secret, &upper, &value).as_deref(), Some(&*id));
        for (email, secret, value, why) in [
            (&bob, secret, value.clone(), "another account"),
            (&alice, [8u8; 32], value.clone(), "another secret"),
            (&alice, secret, format!("{value}x"), "a changed MAC"),
            (&alice, secret, other_id, "another id"),
            (&alice, secret, "no-dot".to_owned(), "no separator"),
            (&alice, secret, String::new(), "empty"),
        ] {
            assert_eq!(verify(&secret, email, &value), None, "{why}");
        }
    }
}
