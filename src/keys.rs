//! Signing keys for access tokens.
//!
//! Keys are Ed25519, generated on first start and kept in the database so that every instance
//! signs and verifies with the same set. The private half is sealed with ChaCha20-Poly1305 under
//! the key-encryption key (KEK), with the key id as associated data so a sealed key cannot be
//! swapped onto another row. The KEK comes from the settings; without one, a development KEK is
//! generated into `latchkey.kek` (mode 0600) and a warning is logged on every start.
//!
//! `latchkey keys rotate` retires the current key and adds a new one. A retired key stays in the
//! JWKS, and keeps verifying, for as long as a token it signed can still be live: the access-token
//! lifetime, plus the clock leeway, plus the interval at which instances reload their keys (an
//! instance may sign with a key for up to that long after another instance retired it).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::clock::{Clock, Millis, millis};
use crate::store::{self, Store};

/// How often an instance reloads the key set from the database.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(60);
/// The least time between two reloads caused by tokens with an unknown `kid`.
const UNKNOWN_KID_RELOAD: Duration = Duration::from_secs(1);
/// Clock skew tolerated when checking `exp`.
pub const LEEWAY: Duration = Duration::from_secs(60);

const DEV_KEK_FILE: &str = "latchkey.kek";

/// The key-encryption key.
pub struct Kek(SecretBox<[u8; 32]>);

impl Kek {
    /// The configured KEK, or the development one from `latchkey.kek` (created when missing).
    pub fn from_setting(setting: Option<&SecretString>) -> anyhow::Result<Kek> {
        match setting {
            Some(encoded) => Kek::decode(encoded.expose_secret())
                .context("key_encryption_key must be base64 of 32 bytes"),
            None => {
                tracing::warn!(
                    file = DEV_KEK_FILE,
                    "no key_encryption_key configured: using a development key kept in a local file; \
                     configure LATCHKEY_KEY_ENCRYPTION_KEY in production"
                );
                Kek::dev_file(Path::new(DEV_KEK_FILE))
            }
        }
    }

    /// For `config check`: the configured KEK, or the development one if its file exists; `None`
    /// when neither (the server would create the file). Creates nothing.
    pub fn existing(setting: Option<&SecretString>) -> anyhow::Result<Option<Kek>> {
        match setting {
            Some(_) => Kek::from_setting(setting).map(Some),
            None if Path::new(DEV_KEK_FILE).exists() => {
                Kek::dev_file(Path::new(DEV_KEK_FILE)).map(Some)
            }
            None => Ok(None),
        }
    }

    /// A fresh random KEK, base64-encoded, as an operator would put it in the settings.
    pub fn generate_encoded() -> String {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        STANDARD.encode(bytes)
    }

    fn decode(encoded: &str) -> anyhow::Result<Kek> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .or_else(|_| URL_SAFE_NO_PAD.decode(encoded.trim()))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| anyhow!("wrong length"))?;
        Ok(Kek(SecretBox::new(Box::new(key))))
    }

    fn dev_file(path: &Path) -> anyhow::Result<Kek> {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Kek::decode(&text).with_context(|| format!("{} is corrupt", path.display()));
        }
        let encoded = Kek::generate_encoded();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::io::Write::write_all(&mut file, encoded.as_bytes())?;
        Kek::decode(&encoded)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(self.0.expose_secret().into())
    }

    /// Encrypts `plaintext`, bound to `kid`: base64(nonce ‖ ciphertext).
    fn seal(&self, kid: &str, plaintext: &[u8]) -> anyhow::Result<String> {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| anyhow!("sealing a secret failed"))?;
        Ok(STANDARD.encode([nonce.as_slice(), &sealed].concat()))
    }

    fn open(&self, kid: &str, sealed: &str) -> anyhow::Result<SecretBox<[u8; 32]>> {
        let plain = self
            .open_bytes(kid, sealed)
            .map_err(|_| anyhow!("cannot decrypt signing key {kid}: wrong key_encryption_key?"))?;
        let seed: [u8; 32] = plain
            .try_into()
            .map_err(|_| anyhow!("signing key has the wrong length"))?;
        Ok(SecretBox::new(Box::new(seed)))
    }

    fn open_bytes(&self, aad: &str, sealed: &str) -> anyhow::Result<Vec<u8>> {
        let bytes = STANDARD.decode(sealed)?;
        if bytes.len() < 12 {
            bail!("sealed value too short");
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| anyhow!("cannot decrypt: wrong key_encryption_key or context"))
    }

    /// Seals another secret at rest (a TOTP secret), bound to `context` (its purpose and owner):
    /// opened with another context, or moved to another row, it does not open.
    pub fn seal_secret(&self, context: &str, plaintext: &[u8]) -> anyhow::Result<String> {
        self.seal(context, plaintext)
    }

    /// Opens what `seal_secret` sealed with the same context.
    pub fn open_secret(&self, context: &str, sealed: &str) -> anyhow::Result<SecretBox<Vec<u8>>> {
        Ok(SecretBox::new(Box::new(self.open_bytes(context, sealed)?)))
    }

    /// A 32-byte secret derived from the KEK for one purpose (HMAC-SHA256 as a PRF).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        crate::tokens::hmac_sha256(self.0.expose_secret(), purpose.as_bytes())
    }
}

/// A signing key as stored: public half in the clear, private half sealed.
#[derive(Clone, sqlx::FromRow)]
pub struct StoredKey {
    pub kid: String,
    pub public_key: String,
    pub sealed_private_key: String,
    pub created_at: Millis,
    pub retired_at: Option<Millis>,
}

/// Makes a new key, sealed under `kek`.
pub fn generate(kek: &Kek, now: Millis) -> anyhow::Result<StoredKey> {
    let signing = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let kid = uuid::Uuid::now_v7().simple().to_string();
    Ok(StoredKey {
        public_key: URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes()),
        sealed_private_key: kek.seal(&kid, signing.as_bytes())?,
        kid,
        created_at: now,
        retired_at: None,
    })
}

struct Loaded {
    /// What an access token must be (algorithm, issuer, audience, claims), built once per key set
    /// rather than on every verification.
    validation: Validation,
    signing_kid: String,
    /// When the signing key was made (for the `signing_key_age_seconds` metric).
    signing_created_at: Millis,
    signing: EncodingKey,
    verifying: HashMap<String, (DecodingKey, String)>,
}

/// The keys this instance signs and verifies with, reloaded from the database periodically.
#[derive(Clone)]
pub struct KeyRing {
    store: Store,
    kek: Arc<Kek>,
    clock: Clock,
    retention: Duration,
    /// The `iss` and `aud` of access tokens.
    issuer: Arc<str>,
    loaded: Arc<RwLock<Arc<Loaded>>>,
    last_unknown_reload: Arc<AtomicI64>,
}

impl KeyRing {
    /// Loads the key set, creating the first key when there is none.
    pub async fn load(
        store: Store,
        kek: Kek,
        clock: Clock,
        access_ttl: Duration,
        issuer: Arc<str>,
    ) -> anyhow::Result<KeyRing> {
        let now = clock.now();
        if store::keys::insert_first(&store, &generate(&kek, now)?).await? {
            tracing::info!("generated the first signing key");
        }
        let retention = access_ttl + LEEWAY + RELOAD_INTERVAL;
        let loaded = Arc::new(RwLock::new(Arc::new(
            Self::read(&store, &kek, now, retention, &issuer).await?,
        )));
        Ok(KeyRing {
            store,
            kek: Arc::new(kek),
            clock,
            retention,
            issuer,
            loaded,
            last_unknown_reload: Arc::new(AtomicI64::new(0)),
        })
    }

    async fn read(
        store: &Store,
        kek: &Kek,
        now: Millis,
        retention: Duration,
        issuer: &str,
    ) -> anyhow::Result<Loaded> {
        let keys = store::keys::live(store, now - millis(retention)).await?;
        let current = keys
            .iter()
            .find(|k| k.retired_at.is_none())
            .ok_or_else(|| anyhow!("no active signing key"))?;
        let seed = kek.open(&current.kid, &current.sealed_private_key)?;
        let der = ed25519_dalek::SigningKey::from_bytes(seed.expose_secret())
            .to_pkcs8_der()
            .map_err(|e| anyhow!("cannot encode signing key: {e}"))?;
        let mut verifying = HashMap::new();
        for key in &keys {
            let decoding = DecodingKey::from_ed_components(&key.public_key)?;
            verifying.insert(key.kid.clone(), (decoding, key.public_key.clone()));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        // `exp` is checked by `tokens::verify_access` against the service clock (which tests can
        // move); the claims are typed integers, so a claim of the wrong JSON type fails to decode
        // instead of being skipped.
        validation.validate_exp = false;
        Ok(Loaded {
            validation,
            signing_kid: current.kid.clone(),
            signing_created_at: current.created_at,
            signing: EncodingKey::from_ed_der(der.as_bytes()),
            verifying,
        })
    }

    /// Re-reads the key set (after a rotation by another process, or on an unknown `kid`).
    pub async fn reload(&self) -> anyhow::Result<()> {
        let now = self.clock.now();
        let fresh = Self::read(&self.store, &self.kek, now, self.retention, &self.issuer).await?;
        *self
            .loaded
            .write()
            .map_err(|_| anyhow!("key ring lock poisoned"))? = Arc::new(fresh);
        Ok(())
    }

    fn current(&self) -> Arc<Loaded> {
        // A poisoned lock still holds a complete key set: the writer only swaps an Arc.
        Arc::clone(
            &self
                .loaded
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub fn kek(&self) -> &Kek {
        &self.kek
    }

    /// When the key new tokens are signed with was made.
    pub fn signing_key_created_at(&self) -> Millis {
        self.current().signing_created_at
    }

    /// The key id and key new tokens are signed with.
    pub fn signing_key(&self) -> (String, EncodingKey) {
        let loaded = self.current();
        (loaded.signing_kid.clone(), loaded.signing.clone())
    }

    /// The claims of `token`, verified with the key `kid` names and the ring's validation (no
    /// key is cloned, no validation built). An unknown `kid` may be a key another instance has
    /// just made: the set is reloaded, but at most once per `UNKNOWN_KID_RELOAD`, so that tokens
    /// with made-up key ids cannot turn into a database query each.
    pub async fn decode<T: DeserializeOwned>(&self, kid: &str, token: &str) -> Option<T> {
        let mut loaded = self.current();
        if !loaded.verifying.contains_key(kid) {
            let now = self.clock.now();
            let last = self.last_unknown_reload.load(Ordering::Relaxed);
            if now - last < millis(UNKNOWN_KID_RELOAD)
                || self
                    .last_unknown_reload
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                return None;
            }
            if let Err(err) = self.reload().await {
                tracing::warn!(error = %err, "reloading signing keys failed");
            }
            loaded = self.current();
        }
        let (key, _) = loaded.verifying.get(kid)?;
        jsonwebtoken::decode::<T>(token, key, &loaded.validation)
            .ok()
            .map(|data| data.claims)
    }

    /// The JWKS: every key that can still verify a live token.
    pub fn jwks(&self) -> Jwks {
        let loaded = self.current();
        let mut keys: Vec<_> = loaded.verifying.iter().collect();
        keys.sort_by(|a, b| b.0.cmp(a.0));
        let keys = keys
            .into_iter()
            .map(|(kid, (_, x))| Jwk {
                kty: "OKP",
                crv: "Ed25519",
                alg: "EdDSA",
                use_: "sig",
                kid: kid.clone(),
                x: x.clone(),
            })
            .collect();
        Jwks { keys }
    }
}

/// A JSON Web Key Set (RFC 7517): every public key that can still verify a live access token.
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// An Ed25519 public key as a JWK (RFC 8037).
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwk {
    #[schema(example = "OKP")]
    kty: &'static str,
    #[schema(example = "Ed25519")]
    crv: &'static str,
    #[schema(example = "EdDSA")]
    alg: &'static str,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    use_: &'static str,
    /// The `kid` of the access tokens this key verifies.
    kid: String,
    /// The public key, base64url without padding.
    x: String,
}

/// Retires the current keys and adds a new one: what `latchkey keys rotate` does.
/// Opens every signing key that is not retired with `kek`, as the server does at start; for
/// `config check`. Returns how many; an error names the key that does not open.
pub async fn check_sealed(store: &Store, kek: &Kek, now: Millis) -> anyhow::Result<usize> {
    let keys = store::keys::live(store, now).await?;
    for key in keys.iter().filter(|k| k.retired_at.is_none()) {
        kek.open(&key.kid, &key.sealed_private_key)
            .with_context(|| {
                format!(
                    "key_encryption_key cannot open the stored signing key {} (a different KEK \
                 sealed it)",
                    key.kid
                )
            })?;
    }
    Ok(keys.len())
}

pub async fn rotate(store: &Store, kek: &Kek, now: Millis) -> anyhow::Result<String> {
    let key = generate(kek, now)?;
    store::keys::rotate(store, &key, None).await?;
    Ok(key.kid)
}

/// Rotates only when the current key was made before `made_before` (automatic rotation). Of
/// several instances trying at once, one rotates; the others find a fresh key and do nothing.
pub async fn rotate_if_older(
    store: &Store,
    kek: &Kek,
    now: Millis,
    made_before: Millis,
) -> anyhow::Result<Option<String>> {
    let key = generate(kek, now)?;
    Ok(store::keys::rotate(store, &key, Some(made_before))
        .await?
        .then_some(key.kid))
}
