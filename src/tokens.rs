//! The tokens latchkey issues.
//!
//! - Access tokens are JWTs signed with EdDSA (header `typ: at+jwt`, `kid`), claims `iss`, `aud`,
//!   `sub` (user id), `sid` (session id), `iat`, `exp`, `jti`. Verification accepts only EdDSA and
//!   only the keys of the key ring, checks `typ`, `iss`, `aud`, and `exp` against the service
//!   clock with `LEEWAY`.
//! - Opaque tokens (refresh, password reset, email verification) are 256 random bits, base64url.
//!   Only a hash is stored, and the hash is domain-separated by purpose, so a token of one kind
//!   can never be found where another kind is looked up.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, Header};
use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::clock::Millis;
use crate::keys::{KeyRing, LEEWAY};

const ACCESS_TYP: &str = "at+jwt";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    /// How the session signed in (RFC 8176): `["pwd"]`, `["pwd", "otp"]` with a second factor,
    /// `["otp"]` with an emailed code, `["otp", "mfa"]` with an emailed code and a second factor.
    #[serde(default)]
    pub amr: Vec<String>,
    /// The authenticator assurance level (NIST SP 800-63B): 1, or 2 with a second factor.
    #[serde(default)]
    pub aal: u8,
    /// The keys of `app_metadata` chosen with `token_claims`, copied as they are (see
    /// `app_claims`); none of them can shadow a claim above (checked at start).
    #[serde(flatten)]
    pub app: Map<String, Value>,
}

/// The claims an access token always has, and those it gets later (`amr`, `aal` with MFA): no
/// `token_claims` key may take their place.
pub const RESERVED_CLAIMS: [&str; 10] = [
    "iss", "aud", "sub", "sid", "exp", "iat", "jti", "nbf", "amr", "aal",
];

/// The top-level keys `names` of a stored `app_metadata` object that it has.
pub fn app_claims(app_metadata: &str, names: &[String]) -> Map<String, Value> {
    if names.is_empty() {
        return Map::new();
    }
    let Ok(Value::Object(mut all)) = serde_json::from_str::<Value>(app_metadata) else {
        return Map::new();
    };
    names
        .iter()
        .filter_map(|name| all.remove(name).map(|v| (name.clone(), v)))
        .collect()
}

pub struct AccessToken {
    pub token: SecretString,
    pub expires_in: u64,
}

/// Signs an access token for `session_id` of `user_id`, valid `ttl_secs` from `now`.
pub fn mint_access(
    keys: &KeyRing,
    issuer: &str,
    user_id: Uuid,
    session_id: Uuid,
    now: Millis,
    ttl_secs: u64,
) -> anyhow::Result<AccessToken> {
    let session = (session_id, SignIn::Password);
    mint_access_with(keys, issuer, user_id, session, now, ttl_secs, Map::new())
}

/// How a session signed in, stored with it (`sessions.amr`) and carried by its access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    Password,
    /// The password and a one-time code (TOTP or a recovery code).
    PasswordAndOtp,
    /// A passkey alone (WebAuthn with user verification: something held and something known or
    /// are, RFC 8176 `hwk`).
    Passkey,
    /// The password and a passkey as the second factor.
    PasswordAndPasskey,
    /// A one-time link or code emailed to the account's address (passwordless): `["otp"]`.
    EmailOtp,
    /// An emailed code or link, then a second factor: `["otp", "mfa"]` (RFC 8176: no password
    /// was used, and more than one factor was).
    EmailOtpAndOtp,
    /// An emailed code or link, then a passkey as the second factor: `["otp", "hwk"]`.
    EmailOtpAndPasskey,
    /// An OpenID Connect provider's ID token (`["oidc"]`, as the contract names it; the
    /// provider's own factors are its business).
    Oidc,
    /// A provider's sign-in, then a code (TOTP or recovery): `["oidc", "mfa"]`.
    OidcAndOtp,
    /// A provider's sign-in, then a passkey: `["oidc", "hwk"]`.
    OidcAndPasskey,
}

impl SignIn {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            SignIn::Password => "pwd",
            SignIn::PasswordAndOtp => "pwd otp",
            SignIn::Passkey => "hwk",
            SignIn::PasswordAndPasskey => "pwd hwk",
            SignIn::EmailOtp => "otp",
            SignIn::EmailOtpAndOtp => "otp mfa",
            SignIn::EmailOtpAndPasskey => "otp hwk",
            SignIn::Oidc => "oidc",
            SignIn::OidcAndOtp => "oidc mfa",
            SignIn::OidcAndPasskey => "oidc hwk",
        }
    }

    /// The stored form read back; anything unknown is the weakest.
    pub fn parse(stored: &str) -> SignIn {
        match stored {
            "pwd otp" => SignIn::PasswordAndOtp,
            "hwk" => SignIn::Passkey,
            "pwd hwk" => SignIn::PasswordAndPasskey,
            "otp" => SignIn::EmailOtp,
            "otp mfa" => SignIn::EmailOtpAndOtp,
            "otp hwk" => SignIn::EmailOtpAndPasskey,
            "oidc" => SignIn::Oidc,
            "oidc mfa" => SignIn::OidcAndOtp,
            "oidc hwk" => SignIn::OidcAndPasskey,
            _ => SignIn::Password,
        }
    }

    /// The `amr` claim's values.
    pub fn amr(self) -> Vec<String> {
        self.as_str().split(' ').map(str::to_owned).collect()
    }

    /// The `aal` claim.
    pub fn aal(self) -> u8 {
        match self {
            SignIn::Password | SignIn::EmailOtp | SignIn::Oidc => 1,
            // A passkey is verified with user verification required: multi-factor by itself.
            SignIn::PasswordAndOtp
            | SignIn::Passkey
            | SignIn::PasswordAndPasskey
            | SignIn::EmailOtpAndOtp
            | SignIn::EmailOtpAndPasskey
            | SignIn::OidcAndOtp
            | SignIn::OidcAndPasskey => 2,
        }
    }

    /// How a session signs in whose second factor (a code, or a passkey) followed this first one.
    pub fn with_second_factor(self, passkey: bool) -> SignIn {
        match (self, passkey) {
            (SignIn::EmailOtp | SignIn::EmailOtpAndOtp | SignIn::EmailOtpAndPasskey, false) => {
                SignIn::EmailOtpAndOtp
            }
            (SignIn::EmailOtp | SignIn::EmailOtpAndOtp | SignIn::EmailOtpAndPasskey, true) => {
                SignIn::EmailOtpAndPasskey
            }
            (SignIn::Oidc | SignIn::OidcAndOtp | SignIn::OidcAndPasskey, false) => {
                SignIn::OidcAndOtp
            }
            (SignIn::Oidc | SignIn::OidcAndOtp | SignIn::OidcAndPasskey, true) => {
                SignIn::OidcAndPasskey
            }
            (_, false) => SignIn::PasswordAndOtp,
            (_, true) => SignIn::PasswordAndPasskey,
        }
    }
}

/// `mint_access` with the app's claims (`app_claims`) and how the session signed in.
pub fn mint_access_with(
    keys: &KeyRing,
    issuer: &str,
    user_id: Uuid,
    (session_id, sign_in): (Uuid, SignIn),
    now: Millis,
    ttl_secs: u64,
    app: Map<String, Value>,
) -> anyhow::Result<AccessToken> {
    let iat = now / 1000;
    let claims = AccessClaims {
        iss: issuer.to_owned(),
        aud: issuer.to_owned(),
        sub: user_id,
        sid: session_id,
        iat,
        exp: iat + i64::try_from(ttl_secs)?,
        jti: Uuid::new_v4(),
        amr: sign_in.amr(),
        aal: sign_in.aal(),
        app,
    };
    let (kid, key) = keys.signing_key();
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(ACCESS_TYP.to_owned());
    header.kid = Some(kid);
    let token = jsonwebtoken::encode(&header, &claims, &key)?;
    Ok(AccessToken {
        token: SecretString::from(token),
        expires_in: ttl_secs,
    })
}

/// The claims of a valid access token, or `None` for anything else.
pub async fn verify_access(keys: &KeyRing, token: &str, now: Millis) -> Option<AccessClaims> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(ACCESS_TYP) {
        return None;
    }
    // The key ring's validation checks the algorithm, `iss`, `aud` and the required claims.
    let claims: AccessClaims = keys.decode(header.kid.as_deref()?, token).await?;
    let leeway = i64::try_from(LEEWAY.as_secs()).ok()?;
    (claims.exp + leeway > now / 1000).then_some(claims)
}

/// What an opaque token is for; part of its stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Refresh,
    PasswordReset,
    EmailVerification,
    /// The `mfa_token` of a login that needs its second factor.
    MfaChallenge,
    /// A TOTP recovery code.
    RecoveryCode,
    /// The link of an email change, sent to the new address: it proves that address and swaps it
    /// in, and is worth nothing as a verification or reset token (nor they as it).
    EmailChange,
    /// The handle of a passkey ceremony (registration or authentication) between its start and
    /// its finish.
    PasskeyCeremony,
    /// The link of a passwordless sign-in (its code is hashed with a key of its own, bound to
    /// this token's hash: `crate::passwordless`); worth nothing as a reset, verification or
    /// refresh token, nor they as it.
    Passwordless,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Refresh => "latchkey refresh token v1",
            Purpose::PasswordReset => "latchkey password reset token v1",
            Purpose::EmailVerification => "latchkey email verification token v1",
            Purpose::MfaChallenge => "latchkey mfa challenge token v1",
            Purpose::RecoveryCode => "latchkey mfa recovery code v1",
            Purpose::EmailChange => "latchkey email change token v1",
            Purpose::PasskeyCeremony => "latchkey passkey ceremony v1",
            Purpose::Passwordless => "latchkey passwordless sign-in token v1",
        }
    }

    /// The name stored next to one-time tokens (`one_time_tokens.purpose`).
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Refresh => "refresh",
            Purpose::PasswordReset => "password_reset",
            Purpose::EmailVerification => "email_verification",
            Purpose::MfaChallenge => "mfa_challenge",
            Purpose::RecoveryCode => "recovery_code",
            Purpose::EmailChange => "email_change",
            Purpose::PasskeyCeremony => "passkey_ceremony",
            Purpose::Passwordless => "passwordless",
        }
    }
}

/// A new opaque token: 256 random bits, base64url.
pub fn new_opaque() -> SecretString {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    SecretString::from(URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of an opaque token: hex SHA-256 of its purpose and value.
pub fn hash_opaque(purpose: Purpose, token: &SecretString) -> String {
    let mut hasher = Sha256::new();
    hasher.update(purpose.label().as_bytes());
    hasher.update([0u8]);
    hasher.update(token.expose_secret().as_bytes());
    hex(&hasher.finalize())
}

/// The refresh token that replaces `predecessor` when it is rotated.
///
/// It is derived (HMAC with a secret of the service) rather than random, so that a request which
/// presents the predecessor again within the grace window can be given the very same successor
/// without the service ever storing a token in a recoverable form.
pub fn successor(secret: &[u8; 32], predecessor: &SecretString) -> SecretString {
    let mac = hmac_sha256(secret, predecessor.expose_secret().as_bytes());
    SecretString::from(URL_SAFE_NO_PAD.encode(mac))
}

/// HMAC-SHA256, the one keyed hash of the project.
#[allow(clippy::expect_used)]
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_tokens_are_256_random_bits() {
        let a = new_opaque();
        let b = new_opaque();
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose_secret()).unwrap().len(), 32);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(hash_opaque(Purpose::Refresh, &a).len(), 64);
        assert_eq!(
            hash_opaque(Purpose::Refresh, &a),
            hash_opaque(Purpose::Refresh, &a)
        );
    }

    #[test]
    fn one_token_hashes_differently_for_each_purpose() {
        let token = new_opaque();
        let purposes = [
            Purpose::Refresh,
            Purpose::PasswordReset,
            Purpose::EmailVerification,
            Purpose::MfaChallenge,
            Purpose::RecoveryCode,
            Purpose::EmailChange,
            Purpose::PasskeyCeremony,
            Purpose::Passwordless,
        ];
        let hashes: std::collections::HashSet<String> =
            purposes.iter().map(|p| hash_opaque(*p, &token)).collect();
        assert_eq!(hashes.len(), purposes.len());
    }

    #[test]
    fn successors_are_deterministic_and_secret_dependent() {
        let token = new_opaque();
        let s1 = successor(&[1; 32], &token);
        assert_eq!(
            s1.expose_secret(),
            successor(&[1; 32], &token).expose_secret()
        );
        assert_ne!(
            s1.expose_secret(),
            successor(&[2; 32], &token).expose_secret()
        );
        assert_ne!(s1.expose_secret(), token.expose_secret());
    }
}
