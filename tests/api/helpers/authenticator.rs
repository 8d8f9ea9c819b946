//! A software WebAuthn authenticator and client for the tests, written from the specification
//! (W3C WebAuthn Level 2: §5.8.1 client data, §6.1 authenticator data, §6.5 attestation objects
//! with the `none` format, §6.3.3 assertion signatures; RFC 8152 COSE_Key for ES256), and
//! independent of the service's verifier (webauthn-rs): P-256 keys and ECDSA from OpenSSL, CBOR
//! by serde_cbor_2.
//!
//! Its credentials are discoverable (they keep the user handle), so it answers a `get` without
//! `allowCredentials` like a platform passkey does. It answers in the JSON form that the
//! browser's `PublicKeyCredential.toJSON()` gives, which is what the service's endpoints take.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::sha::sha256;
use openssl::sign::Signer;
use serde_cbor_2::Value as Cbor;
use serde_json::{Value, json};

/// Authenticator data flags (WebAuthn §6.1).
const USER_PRESENT: u8 = 0x01;
const USER_VERIFIED: u8 = 0x04;
const ATTESTED_DATA: u8 = 0x40;

/// One credential the authenticator holds.
#[derive(Clone)]
pub struct Credential {
    pub id: Vec<u8>,
    key: EcKey<Private>,
    pub rp_id: String,
    pub user_handle: Vec<u8>,
    pub counter: u32,
}

impl Credential {
    /// The credential id as the service stores and shows it (base64url).
    pub fn id_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.id)
    }
}

/// A passkey provider: the origin its client runs on, and its credentials.
pub struct Authenticator {
    pub origin: String,
    pub credentials: Vec<Credential>,
    /// Whether it reports the user verified (a PIN or biometric); a security key without one
    /// reports presence only.
    pub verifies_user: bool,
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

impl Authenticator {
    pub fn new(origin: &str) -> Authenticator {
        Authenticator {
            origin: origin.to_owned(),
            credentials: Vec::new(),
            verifies_user: true,
        }
    }

    fn flags(&self) -> u8 {
        match self.verifies_user {
            true => USER_PRESENT | USER_VERIFIED,
            false => USER_PRESENT,
        }
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        json!({
            "type": kind,
            "challenge": challenge,
            "origin": self.origin,
            "crossOrigin": false,
        })
        .to_string()
        .into_bytes()
    }

    /// Answers `navigator.credentials.create()` for a start's `publicKey`: a new ES256
    /// credential with `none` attestation.
    pub fn create(&mut self, options: &Value) -> Value {
        let rp_id = options["rp"]["id"].as_str().expect("rp.id").to_owned();
        let algorithms: Vec<i64> = options["pubKeyCredParams"]
            .as_array()
            .expect("pubKeyCredParams")
            .iter()
            .filter_map(|p| p["alg"].as_i64())
            .collect();
        assert!(algorithms.contains(&-7), "ES256 is offered: {algorithms:?}");
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        self.credentials.push(Credential {
            id: rand::random::<[u8; 16]>().to_vec(),
            key: EcKey::generate(&group).unwrap(),
            rp_id,
            user_handle: unb64(options["user"]["id"].as_str().expect("user.id")),
            counter: 0,
        });
        self.attest(self.credentials.len() - 1, options)
    }

    /// The attestation of the credential at `index` for `options`: what `create` answers, or a
    /// second registration of a credential the authenticator holds already.
    pub fn attest(&self, index: usize, options: &Value) -> Value {
        let credential = &self.credentials[index];
        let challenge = options["challenge"].as_str().expect("challenge");
        let id = &credential.id;
        let mut auth_data = sha256(credential.rp_id.as_bytes()).to_vec();
        auth_data.push(self.flags() | ATTESTED_DATA);
        auth_data.extend_from_slice(&credential.counter.to_be_bytes());
        auth_data.extend_from_slice(&[0u8; 16]); // AAGUID: none
        auth_data.extend_from_slice(&u16::try_from(id.len()).unwrap().to_be_bytes());
        auth_data.extend_from_slice(id);
        auth_data.extend_from_slice(&cose_key(&credential.key));
        let attestation = Cbor::Map(BTreeMap::from([
            (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
            (Cbor::Text("attStmt".into()), Cbor::Map(BTreeMap::new())),
            (Cbor::Text("authData".into()), Cbor::Bytes(auth_data)),
        ]));
        let client_data = self.client_data("webauthn.create", challenge);
        json!({
            "id": b64(id),
            "rawId": b64(id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "response": {
                "attestationObject": b64(&serde_cbor_2::to_vec(&attestation).unwrap()),
                "clientDataJSON": b64(&client_data),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
        })
    }

    /// Answers `navigator.credentials.get()` for a start's `publicKey` with the first credential
    /// it may use: one of `allowCredentials`, or else one of the relying party's.
    pub fn get(&mut self, options: &Value) -> Value {
        let rp_id = options["rpId"].as_str().expect("rpId");
        let allowed: Vec<Vec<u8>> = options["allowCredentials"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|c| unb64(c["id"].as_str().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        let index = self
            .credentials
            .iter()
            .position(|c| c.rp_id == rp_id && (allowed.is_empty() || allowed.contains(&c.id)))
            .expect("a credential for this relying party");
        self.get_with(index, options)
    }

    /// `get` with the credential at `index`, whatever the options allow.
    pub fn get_with(&mut self, index: usize, options: &Value) -> Value {
        let challenge = options["challenge"].as_str().expect("challenge").to_owned();
        let client_data = self.client_data("webauthn.get", &challenge);
        let flags = self.flags();
        let credential = &mut self.credentials[index];
        credential.counter += 1;
        let mut auth_data = sha256(credential.rp_id.as_bytes()).to_vec();
        auth_data.push(flags);
        auth_data.extend_from_slice(&credential.counter.to_be_bytes());
        let key = PKey::from_ec_key(credential.key.clone()).unwrap();
        let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
        signer.update(&auth_data).unwrap();
        signer.update(&sha256(&client_data)).unwrap();
        let signature = signer.sign_to_vec().unwrap();
        json!({
            "id": b64(&credential.id),
            "rawId": b64(&credential.id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(&signature),
                "userHandle": b64(&credential.user_handle),
            },
            "clientExtensionResults": {},
        })
    }
}

/// The COSE_Key of an ES256 public key: kty EC2 (2), alg ES256 (-7), crv P-256 (1), x, y.
fn cose_key(key: &EcKey<Private>) -> Vec<u8> {
    let group = key.group();
    let mut ctx = BigNumContext::new().unwrap();
    let mut x = openssl::bn::BigNum::new().unwrap();
    let mut y = openssl::bn::BigNum::new().unwrap();
    key.public_key()
        .affine_coordinates(group, &mut x, &mut y, &mut ctx)
        .unwrap();
    let map = Cbor::Map(BTreeMap::from([
        (Cbor::Integer(1), Cbor::Integer(2)),
        (Cbor::Integer(3), Cbor::Integer(-7)),
        (Cbor::Integer(-1), Cbor::Integer(1)),
        (Cbor::Integer(-2), Cbor::Bytes(x.to_vec_padded(32).unwrap())),
        (Cbor::Integer(-3), Cbor::Bytes(y.to_vec_padded(32).unwrap())),
    ]));
    serde_cbor_2::to_vec(&map).unwrap()
}
