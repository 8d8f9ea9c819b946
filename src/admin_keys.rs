//! Admin API keys: `lk_admin_<id>_<secret>`, made by `latchkey admin-keys create` and shown once.
//!
//! `id` (a UUID, 32 hex digits) finds the key's row; `secret` is 256 random bits (base64url).
//! The database holds only the SHA-256 of the whole key: a key of that entropy cannot be guessed
//! from its hash, so no slow hash is needed (and every admin request would pay for one). The
//! request's hash is compared with the stored one in constant time. Session cookies never
//! authorize the admin API: only `Authorization: Bearer lk_admin_…` does (`AdminKey`).

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::store;

const PREFIX: &str = "lk_admin_";

/// A new key: its id, the key to show once, and the hash to store.
pub struct NewKey {
    pub id: Uuid,
    pub key: SecretString,
    pub hash: String,
}

pub fn generate() -> NewKey {
    let id = Uuid::now_v7();
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let key = SecretString::from(format!(
        "{PREFIX}{}_{}",
        id.simple(),
        URL_SAFE_NO_PAD.encode(secret)
    ));
    let hash = hash(&key);
    NewKey { id, key, hash }
}

/// The stored form of a key: hex SHA-256, domain-separated from the project's other hashes.
fn hash(key: &SecretString) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"latchkey admin key v1\0");
    hasher.update(key.expose_secret().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The id part of a key shaped like one of ours.
fn id_of(key: &str) -> Option<Uuid> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || secret.is_empty() {
        return None;
    }
    Uuid::try_parse(id).ok()
}

/// The admin key a request was made with: present, well formed, live and matching.
#[derive(Debug, Clone, Copy)]
pub struct AdminKey {
    pub id: Uuid,
}

impl AdminKey {
    /// The audit actor of this key's calls, with the client's address.
    pub fn actor(&self, client: &crate::extract::ClientInfo) -> store::audit::Actor {
        store::audit::Actor {
            admin_key_id: Some(self.id),
            ..client.actor(None, None)
        }
    }
}

impl<S> FromRequestParts<S> for AdminKey
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        // The bearer header only: a cookie is never looked at here.
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or(ApiError::Unauthenticated)?;
        let id = id_of(presented).ok_or(ApiError::Unauthenticated)?;
        let stored = store::admin_keys::live_hash(state.store.reader(), id)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        let given = hash(&SecretString::from(presented.to_owned()));
        if !bool::from(given.as_bytes().ct_eq(stored.as_bytes())) {
            return Err(ApiError::Unauthenticated);
        }
        Ok(AdminKey { id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_their_id_and_hash_apart() {
        let a = generate();
        let b = generate();
        let key = a.key.expose_secret();
        assert!(key.starts_with("lk_admin_"));
        assert_eq!(key.len(), PREFIX.len() + 32 + 1 + 43);
        assert_eq!(id_of(key), Some(a.id));
        assert_eq!(hash(&a.key), a.hash);
        assert_ne!(a.hash, b.hash);
        assert_eq!(id_of("lk_admin_nothex_x"), None);
        assert_eq!(id_of("Bearer x"), None);
    }
}
