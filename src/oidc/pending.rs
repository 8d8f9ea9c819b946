//! A sign-in with a provider between its start and its callback: kept by the browser that
//! started it, in the `__Host-lk_oidc` cookie (see `cookies`), sealed with the key-encryption
//! key (ChaCha20-Poly1305, bound to the provider's id): the browser can neither read the PKCE
//! verifier and nonce nor change a byte, and a cookie of one provider does not open for another.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Millis;
use crate::keys::Kek;

/// How long a started sign-in may take at the provider.
pub const TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// What the callback needs to finish a sign-in.
#[derive(Serialize, Deserialize)]
pub struct Pending {
    pub provider: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// Where the browser goes after it (checked against the allowed origins at the start).
    pub return_to: Option<String>,
    /// A link of the provider's account to a signed-in user, instead of a sign-in.
    pub link: Option<LinkTo>,
    pub expires_at: Millis,
}

/// The signed-in session that asked to link a provider's account: the callback links it to
/// this session's user, while the session is still live.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LinkTo {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("provider", &self.provider)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

fn context(provider: &str) -> String {
    format!("oidc-pending:{provider}")
}

impl Pending {
    /// The cookie's value.
    pub fn seal(&self, kek: &Kek) -> anyhow::Result<String> {
        let json = serde_json::to_vec(self)?;
        kek.seal_secret(&context(&self.provider), &json)
    }

    /// The cookie's value opened, when it is this provider's, intact and unexpired.
    pub fn open(kek: &Kek, provider: &str, sealed: &str, now: Millis) -> Option<Pending> {
        use secrecy::ExposeSecret as _;
        if sealed.len() > 4096 {
            return None;
        }
        let json = kek.open_secret(&context(provider), sealed).ok()?;
        let pending: Pending = serde_json::from_slice(json.expose_secret()).ok()?;
        (pending.provider == provider && now < pending.expires_at).then_some(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(expires_at: Millis) -> Pending {
        Pending {
            provider: "google".into(),
            state: "s".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            return_to: None,
            link: None,
            expires_at,
        }
    }

    #[test]
    fn a_cookie_opens_only_for_its_provider_unchanged_and_in_time() {
        let kek = || Kek::from_setting(Some(&Kek::generate_encoded().into())).unwrap();
        let (kek, other) = (kek(), kek());
        let sealed = pending(1_000).seal(&kek).unwrap();
        assert_eq!(
            Pending::open(&kek, "google", &sealed, 999).unwrap().state,
            "s"
        );
        assert!(Pending::open(&kek, "google", &sealed, 1_000).is_none());
        assert!(Pending::open(&kek, "github", &sealed, 0).is_none());
        assert!(Pending::open(&other, "google", &sealed, 0).is_none());
        let mut bytes = sealed.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(Pending::open(&kek, "google", &tampered, 0).is_none());
        assert!(Pending::open(&kek, "google", "", 0).is_none());
    }
}
