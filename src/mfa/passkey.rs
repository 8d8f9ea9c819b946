//! Passkeys (WebAuthn), verified by webauthn-rs.
//!
//! - **The relying party** is the public URL: its host is the RP id and its origin the only
//!   origin an answer may come from (`relying_party`).
//! - **A ceremony** (a registration, a passwordless login, or a passkey answering a login
//!   challenge) runs in two requests. The start keeps the challenge's state in the database
//!   (`passkey_ceremonies`), found by the hash of an opaque handle, `ceremony`, that the client
//!   sends back with its answer; the finish spends it in the transaction that writes the outcome,
//!   so an answer works once, and only for the kind of ceremony it was started as
//!   (`CeremonyKind`). The state never goes to the client.
//! - **Registration** asks for a discoverable credential with user verification, so the same
//!   passkey signs in without an email address (the credential names its user by the user handle,
//!   which is the user id).
//! - **A passkey login** is a sign-in of its own (`amr` `["hwk"]`, `aal` 2: possession and user
//!   verification). As the answer to a login challenge it is the second factor (`["pwd", "hwk"]`).
//! - **Counters**: webauthn-rs refuses an assertion whose signature counter went backwards (a
//!   cloned authenticator); the stored credential is updated in the finishing transaction only if
//!   it is still the one the assertion was checked against, so two logins racing with one
//!   credential cannot both move it.

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use url::Url;
use webauthn_rs::prelude::{Passkey, RequestChallengeResponse, Webauthn, WebauthnBuilder};

use crate::clock::Millis;

/// How long a ceremony waits for its answer (the browser's own timeout is about as long).
pub const CEREMONY_TTL_SECS: i64 = 300;
/// Passkeys one account may have.
pub const MAX_PER_USER: i64 = 10;
/// The longest name a passkey can be given.
pub const MAX_NAME_CHARS: usize = 64;

/// What a ceremony was started for; its answer is taken only by the finish of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyKind {
    /// Adding a passkey to the signed-in account.
    Register,
    /// A passwordless login with a discoverable credential.
    Login,
    /// A passkey answering the login challenge of an account with a second factor.
    SecondFactor,
}

impl CeremonyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CeremonyKind::Register => "register",
            CeremonyKind::Login => "login",
            CeremonyKind::SecondFactor => "second_factor",
        }
    }
}

/// The relying party of the public URL: its host is the RP id, its origin the one allowed.
pub fn relying_party(public_url: &Url) -> anyhow::Result<Webauthn> {
    let rp_id = public_url
        .host_str()
        .context("the public URL has no host for passkeys")?;
    let origin = Url::parse(&public_url.origin().ascii_serialization())?;
    WebauthnBuilder::new(rp_id, &origin)
        .and_then(|b| b.rp_name(rp_id).build())
        .context("the public URL cannot be a passkey relying party")
}

/// Registration options (`publicKey`, as JSON) that ask for a discoverable credential: the
/// passkey must name its user, so it can sign in without an address. (webauthn-rs' passkey
/// registration leaves that to the authenticator; the state it keeps does not depend on it.)
pub fn require_discoverable(mut public_key: Value) -> Value {
    if let Some(selection) = public_key.get_mut("authenticatorSelection") {
        selection["residentKey"] = json!("required");
        selection["requireResidentKey"] = json!(true);
    }
    public_key
}

/// Request options for a login started by the user (a button), not by the browser's autofill.
pub fn without_mediation(mut rcr: RequestChallengeResponse) -> RequestChallengeResponse {
    rcr.mediation = None;
    rcr
}

/// A credential id as stored and shown: base64url without padding.
pub fn credential_id(passkey: &Passkey) -> String {
    encode_id(passkey.cred_id().as_slice())
}

/// The same for the raw bytes an assertion names.
pub fn encode_id(raw: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

/// When a ceremony started now expires.
pub fn expires_at(now: Millis) -> Millis {
    now + CEREMONY_TTL_SECS * 1000
}

/// A passkey's name as the user gave it: trimmed, 1 to `MAX_NAME_CHARS` characters, no control
/// characters; none gives "Passkey".
pub fn parse_name(name: Option<&str>) -> Result<String, &'static str> {
    let Some(name) = name.map(str::trim) else {
        return Ok("Passkey".to_owned());
    };
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err("must be at most 64 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relying_party_is_the_public_urls_host() {
        let url = Url::parse("https://auth.example.com/").unwrap();
        let rp = relying_party(&url).unwrap();
        assert_eq!(
            rp.get_allowed_origins(),
            &[Url::parse("https://auth.example.com").unwrap()]
        );
    }

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(parse_name(None).unwrap(), "Passkey");
        assert_eq!(parse_name(Some("  Phone ")).unwrap(), "Phone");
        assert!(parse_name(Some("   ")).is_err());
        assert!(parse_name(Some(&"x".repeat(65))).is_err());
        assert_eq!(
            parse_name(Some(&"é".repeat(64))).unwrap().chars().count(),
            64
        );
        assert!(parse_name(Some("a\u{7}b")).is_err());
    }
}
