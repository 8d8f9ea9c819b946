//! TOTP secrets and codes: RFC 6238 with SHA-1, 6 digits and 30-second steps, what every
//! authenticator app understands; `totp-rs` computes the codes.

use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretBox};
use subtle::ConstantTimeEq as _;
use totp_rs::{Algorithm, TOTP};
use uuid::Uuid;

use crate::clock::Millis;
use crate::keys::Kek;

/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// Steps before and after the current one that are accepted (clock skew).
pub const SKEW_STEPS: u64 = 1;
const DIGITS: usize = 6;
/// 160 bits, the size RFC 4226 recommends.
const SECRET_BYTES: usize = 20;

/// A new random secret.
pub fn new_secret() -> SecretBox<Vec<u8>> {
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    SecretBox::new(Box::new(secret))
}

/// The sealing context of a user's TOTP secret: a sealed secret opens only for its owner.
fn context(user_id: Uuid) -> String {
    format!("latchkey totp secret v1 {user_id}")
}

pub fn seal(kek: &Kek, user_id: Uuid, secret: &SecretBox<Vec<u8>>) -> anyhow::Result<String> {
    kek.seal_secret(&context(user_id), secret.expose_secret())
}

pub fn open(kek: &Kek, user_id: Uuid, sealed: &str) -> anyhow::Result<SecretBox<Vec<u8>>> {
    kek.open_secret(&context(user_id), sealed)
}

fn totp(secret: &[u8], issuer: Option<String>, account: String) -> TOTP {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        0,
        STEP_SECS,
        secret.to_vec(),
        issuer,
        account,
    )
}

/// What an authenticator app is given: the secret in base32 and as an `otpauth://` URI.
pub struct Enrollment {
    pub secret_base32: String,
    pub uri: String,
}

/// The enrollment of `secret` for `account` (the email address) at `issuer` (the public URL's
/// host). Neither may contain `:` in the URI's label; any is replaced.
pub fn enrollment(secret: &SecretBox<Vec<u8>>, issuer: &str, account: &str) -> Enrollment {
    let issuer = issuer.replace(':', "_");
    let t = totp(
        secret.expose_secret(),
        Some(issuer),
        account.replace(':', "_"),
    );
    Enrollment {
        secret_base32: t.get_secret_base32(),
        uri: t.get_url(),
    }
}

/// The step of `code` if it is the code of a step within the skew of `now`, the latest such step
/// when several match. Compared in constant time.
pub fn matching_step(secret: &SecretBox<Vec<u8>>, code: &str, now: Millis) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret.expose_secret(), None, String::new());
    let current = u64::try_from(now).ok()? / 1000 / STEP_SECS;
    let mut found = None;
    for step in current.saturating_sub(SKEW_STEPS)..=current + SKEW_STEPS {
        let expected = t.generate(step * STEP_SECS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    found
}

/// The QR code of an `otpauth://` URI, as an SVG document.
pub fn qr_svg(uri: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::new(uri.as_bytes())?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, appendix B (SHA-1, the 8-digit values' last 6 digits).
    #[test]
    fn codes_are_those_of_the_rfc_test_vectors() {
        let secret = SecretBox::new(Box::new(b"12345678901234567890".to_vec()));
        for (time, code) in [
            (59_u64, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            let now = Millis::try_from(time * 1000).unwrap();
            assert_eq!(matching_step(&secret, code, now), Some(time / 30), "{time}");
            // One step later still matches the same step (skew); two later do not.
            let later = now + 30_000;
            assert_eq!(matching_step(&secret, code, later), Some(time / 30));
            assert_eq!(matching_step(&secret, code, now + 60_000), None, "{time}");
        }
        let now = 59_000;
        for bad in ["", "28708", "2870822", "28708a", "000000"] {
            assert_eq!(matching_step(&secret, bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn the_uri_names_issuer_account_and_the_rfc_parameters() {
        let secret = SecretBox::new(Box::new(b"12345678901234567890".to_vec()));
        let e = enrollment(&secret, "auth.example.com", "ada@example.com");
        assert_eq!(e.secret_base32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        // SHA1, 6 digits and 30 s are the URI format's defaults: left out, as authenticators
        // expect.
        assert_eq!(
            e.uri,
            "otpauth://totp/auth.example.com:ada%40example.com\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=auth.example.com"
        );
        let svg = qr_svg(&e.uri).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{svg}");
    }
}
