//! Sign-in with OpenID Connect providers (authorization-code flow with PKCE), with the
//! `openidconnect` crate.
//!
//! - **Providers** are configured by issuer URL, client id and secret (`[[oidc_providers]]`,
//!   see `settings`). Their discovery document and JWKS are fetched on first use and cached for
//!   an hour; an ID token signed with a key the cache does not have refetches the JWKS once (a
//!   provider rotating its keys), so an unknown `kid` is refused only after that.
//! - **Start** (`begin`): a fresh `state`, `nonce` and PKCE verifier (S256), sealed with the
//!   key-encryption key into a short-lived HttpOnly cookie (`pending::Pending`), so the callback
//!   works only in the browser that started it, once, within ten minutes.
//! - **Callback** (`finish`): the cookie opened and its `state` compared in constant time, the
//!   `iss` of the answer checked when sent (RFC 9207, against mix-up), the code exchanged with
//!   the verifier, and the ID token verified: signature, `iss`, `aud` (no other audience), `azp`
//!   (when present it is us), `exp` against the service's clock, and
//!   `nonce`. An ID token without the address, or without `email_verified`, is completed from
//!   the userinfo endpoint (for the same `sub`). What comes out is the provider's word on who
//!   signed in (`Verified`); what the service does with it (sign in, create, link) is
//!   `routes::oidc` and `store::flows::oidc`.
//!
//! Every failure is logged with its reason and answered with the one `oidc_failed`: the browser
//! learns nothing of what went wrong inside.

pub mod pending;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenClaims, CoreJsonWebKeySet, CoreProviderMetadata,
    CoreUserInfoClaims,
};
use openidconnect::{
    AccessToken, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndUserName, LocalizedClaim, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError, SubjectIdentifier,
    TokenResponse as _,
};
use secrecy::ExposeSecret as _;
use subtle::ConstantTimeEq as _;
use url::Url;

pub use self::pending::{LinkTo, Pending};
pub use self::settings::{Provider, ProviderSetting};
use crate::clock::{Clock, Millis};

/// How long a discovery document and its JWKS are used before they are fetched again.
const CACHE_TTL: Duration = Duration::from_secs(3600);
/// How long the provider has to answer one request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a sign-in with a provider failed: logged, never shown.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);

fn fail(reason: impl std::fmt::Display) -> Failure {
    Failure(reason.to_string())
}

/// What the provider said about the account that signed in, its ID token verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The ID token's `sub`: with the provider, the identity's key.
    pub subject: String,
    pub email: Option<String>,
    /// `email_verified`; absent is `false`.
    pub email_verified: bool,
    pub name: Option<String>,
}

/// The callback's query, as the provider sent it.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// RFC 9207: the issuer of the answer, when the provider says it.
    pub iss: Option<String>,
    /// The provider's refusal (`access_denied` when the user said no).
    pub error: Option<String>,
}

/// The configured providers and what is known of them.
pub struct Oidc {
    providers: Vec<Arc<Provider>>,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Discovered>>,
}

#[derive(Clone)]
struct Discovered {
    metadata: CoreProviderMetadata,
    fetched_at: Instant,
}

impl Oidc {
    pub fn new(providers: &[Provider]) -> anyhow::Result<Oidc> {
        // Redirects are never followed (the specification's advice: a redirect could reach an
        // internal address).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(HTTP_TIMEOUT)
            .build()?;
        Ok(Oidc {
            providers: providers.iter().cloned().map(Arc::new).collect(),
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The configured providers, in their configured order (the login page's buttons).
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    pub fn provider(&self, id: &str) -> Option<Arc<Provider>> {
        self.providers.iter().find(|p| p.id == id).cloned()
    }

    /// The provider's discovery document (with its JWKS), from the cache while it is fresh;
    /// a stale one is used when the provider cannot be reached.
    async fn metadata(&self, provider: &Provider) -> Result<CoreProviderMetadata, Failure> {
        let cached = self.cached(&provider.id);
        if let Some(d) = &cached
            && d.fetched_at.elapsed() < CACHE_TTL
        {
            return Ok(d.metadata.clone());
        }
        match self.discover(provider).await {
            Ok(metadata) => Ok(metadata),
            Err(err) => match cached {
                Some(stale) => {
                    tracing::warn!(provider = %provider.id, error = %err,
                        "OpenID provider unreachable: its cached discovery document is used");
                    Ok(stale.metadata)
                }
                None => Err(err),
            },
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Discovered>> {
        // A panic while holding the lock leaves a map that is merely stale.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cached(&self, id: &str) -> Option<Discovered> {
        self.cache().get(id).cloned()
    }

    /// Fetches the discovery document and the JWKS, and caches them.
    async fn discover(&self, provider: &Provider) -> Result<CoreProviderMetadata, Failure> {
        let metadata = CoreProviderMetadata::discover_async(provider.issuer.clone(), &self.http)
            .await
            .map_err(|e| {
                fail(format_args!(
                    "discovery of {}: {e}",
                    provider.issuer.as_str()
                ))
            })?;
        self.remember(provider, &metadata);
        Ok(metadata)
    }

    fn remember(&self, provider: &Provider, metadata: &CoreProviderMetadata) {
        let discovered = Discovered {
            metadata: metadata.clone(),
            fetched_at: Instant::now(),
        };
        self.cache().insert(provider.id.clone(), discovered);
    }

    /// The metadata with its JWKS fetched again (a key the cached set does not have).
    async fn refetch_keys(
        &self,
        provider: &Provider,
        metadata: CoreProviderMetadata,
    ) -> Result<CoreProviderMetadata, Failure> {
        let keys = CoreJsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| fail(format_args!("JWKS of {}: {e}", provider.issuer.as_str())))?;
        let metadata = metadata.set_jwks(keys);
        self.remember(provider, &metadata);
        Ok(metadata)
    }

    /// Starts a sign-in: the provider's authorization URL, and what the callback will need,
    /// to be sealed into the browser's cookie.
    pub async fn begin(
        &self,
        provider: &Provider,
        redirect_uri: RedirectUrl,
        return_to: Option<String>,
        link: Option<LinkTo>,
        expires_at: Millis,
    ) -> Result<(Url, Pending), Failure> {
        let metadata = self.metadata(provider).await?;
        let client = client(provider, metadata, redirect_uri);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in &provider.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let pending = Pending {
            provider: provider.id.clone(),
            state: state.into_secret(),
            nonce: nonce.secret().clone(),
            verifier: verifier.into_secret(),
            return_to,
            link,
            expires_at,
        };
        Ok((url, pending))
    }

    /// Finishes a sign-in: see the module docs. `pending` is the opened cookie, for this
    /// provider and unexpired (`Pending::open`).
    pub async fn finish(
        &self,
        provider: &Provider,
        redirect_uri: RedirectUrl,
        query: &CallbackQuery,
        pending: &Pending,
        clock: &Clock,
    ) -> Result<Verified, Failure> {
        let state = query.state.as_deref().unwrap_or_default();
        if !bool::from(state.as_bytes().ct_eq(pending.state.as_bytes())) {
            return Err(fail("the state does not match the browser's"));
        }
        if let Some(error) = &query.error {
            return Err(fail(format_args!("the provider answered error={error}")));
        }
        let code = query
            .code
            .as_deref()
            .filter(|c| !c.is_empty() && c.len() <= 2048);
        let code = code.ok_or_else(|| fail("no code"))?;
        let metadata = self.metadata(provider).await?;
        if let Some(iss) = &query.iss
            && iss != metadata.issuer().as_str()
        {
            return Err(fail(format_args!("the answer's iss is {iss}")));
        }
        // One client for the exchange, the ID token and userinfo; another only when the keys had
        // to be fetched again.
        let mut provider_client = client(provider, metadata.clone(), redirect_uri.clone());
        let exchange = provider_client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| fail(format_args!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()));
        let tokens = exchange
            .request_async(&self.http)
            .await
            .map_err(|e| fail(format_args!("code exchange: {e}")))?;
        let id_token = tokens.id_token().ok_or_else(|| fail("no ID token"))?;
        let nonce = Nonce::new(pending.nonce.clone());
        let now = clock.clone();
        let verify = |client: &Client| {
            let clock = now.clone();
            let verifier = client.id_token_verifier().set_time_fn(move || {
                chrono::DateTime::from_timestamp_millis(clock.now()).unwrap_or_default()
            });
            id_token.claims(&verifier, &nonce).cloned()
        };
        let claims = match verify(&provider_client) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let metadata = self.refetch_keys(provider, metadata).await?;
                provider_client = client(provider, metadata, redirect_uri);
                verify(&provider_client)
            }
            verified => verified,
        }
        .map_err(|e| fail(format_args!("ID token: {e}")))?;
        authorized_party(&claims, &provider.client_id)?;
        let mut verified = Verified {
            subject: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified: claims.email_verified().unwrap_or(false),
            name: default_name(claims.name()),
        };
        // OpenID Connect Core 5.4: when an access token is issued, a provider may give the
        // scopes' claims at its userinfo endpoint only (the conformant behaviour, and the
        // default of some). The address is read there when the ID token has none, or does not
        // say whether it is verified.
        if verified.email.is_none() || claims.email_verified().is_none() {
            let info = user_info(
                &self.http,
                &provider_client,
                tokens.access_token(),
                claims.subject(),
            );
            if let Some(info) = info.await {
                verified.with_user_info(&info);
            }
        }
        Ok(verified)
    }
}

impl Verified {
    /// The address and whether it is verified come together from the userinfo answer when it
    /// has an address (never the ID token's address with the endpoint's `email_verified`); the
    /// name only when the ID token had none.
    fn with_user_info(&mut self, info: &CoreUserInfoClaims) {
        if let Some(email) = info.email() {
            self.email = Some(email.as_str().to_owned());
            self.email_verified = info.email_verified().unwrap_or(false);
        }
        if self.name.is_none() {
            self.name = default_name(info.name());
        }
    }
}

/// The name in the default language, from an ID token's or a userinfo answer's claims.
fn default_name(name: Option<&LocalizedClaim<EndUserName>>) -> Option<String> {
    name.and_then(|n| n.get(None))
        .map(|n| n.as_str().to_owned())
}

/// The provider's userinfo answer for the ID token's subject (OpenID Connect Core 5.3; the crate
/// refuses an answer about another `sub`). `None`, logged, when the provider has no such
/// endpoint or its answer is refused: the ID token alone still signs in a known identity, and
/// an account is never made without a verified address.
async fn user_info(
    http: &reqwest::Client,
    client: &Client,
    access_token: &AccessToken,
    subject: &SubjectIdentifier,
) -> Option<CoreUserInfoClaims> {
    let request = client
        .user_info(access_token.clone(), Some(subject.clone()))
        .ok()?;
    match request.request_async(http).await {
        Ok(claims) => Some(claims),
        Err(err) => {
            tracing::warn!(error = %err, "the provider's userinfo answer was refused");
            None
        }
    }
}

/// OpenID Connect Core 3.1.3.7, step 5 (which the crate leaves to its users): an `azp` must be
/// this client. (Step 4 cannot arise: the crate refuses every audience besides this client.)
fn authorized_party(claims: &CoreIdTokenClaims, client_id: &str) -> Result<(), Failure> {
    match claims.authorized_party() {
        Some(azp) if azp.as_str() != client_id => Err(fail(format_args!("azp is {}", **azp))),
        _ => Ok(()),
    }
}

type Client = openidconnect::Client<
    openidconnect::EmptyAdditionalClaims,
    openidconnect::core::CoreAuthDisplay,
    openidconnect::core::CoreGenderClaim,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJsonWebKey,
    openidconnect::core::CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    openidconnect::core::CoreTokenResponse,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

fn client(provider: &Provider, metadata: CoreProviderMetadata, redirect: RedirectUrl) -> Client {
    let secret = ClientSecret::new(provider.client_secret.expose_secret().to_owned());
    CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(provider.client_id.clone()),
        Some(secret),
    )
    .set_redirect_uri(redirect)
}
