//! Request extractors. Input is parsed here, at the edge, into the shapes handlers work with, and
//! every rejection is an `ApiError` so it comes out in the contract's JSON shape.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum_extra::extract::CookieJar;
use ipnet::{IpNet, Ipv6Net};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::app::AppState;
use crate::cookies;
use crate::error::{ApiError, FieldErrors};
use crate::store;
use crate::store::liveness::Verified;
use crate::tokens;

/// Request bodies larger than this get 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A JSON body, strictly: `Content-Type: application/json`, at most 16 KiB, a JSON object, no
/// unknown fields (so no client can set a field it does not own), each field of the right type.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + 'static,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|err| {
                let too_large = std::error::Error::source(&err)
                    .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
                if too_large {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::InvalidJson
                }
            })?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| ApiError::InvalidJson)?;
        let serde_json::Value::Object(object) = &value else {
            return Err(ApiError::field("body", "must be a JSON object"));
        };
        let known = serde_aux::serde_introspection::serde_introspect::<T>();
        let unknown: FieldErrors = object
            .keys()
            .filter(|key| !known.contains(&key.as_str()))
            .map(|key| (key.clone(), "is not a known field".to_owned()))
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::Validation(unknown));
        }
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|err| {
                let path = err.path().to_string();
                ApiError::field(&path, "has the wrong type")
            })
    }
}

/// `ApiJson`, or `T::default()` for a request without a body (no `Content-Type` and nothing
/// sent): for the endpoints whose every field is optional, so `POST` alone is a valid call.
pub struct ApiJsonOrEmpty<T>(pub T);

impl<S, T> FromRequest<S> for ApiJsonOrEmpty<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default + 'static,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if req.headers().contains_key(header::CONTENT_TYPE) {
            return ApiJson::from_request(req, state)
                .await
                .map(|ApiJson(t)| ApiJsonOrEmpty(t));
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::UnsupportedMediaType)?;
        match bytes.is_empty() {
            true => Ok(ApiJsonOrEmpty(T::default())),
            false => Err(ApiError::UnsupportedMediaType),
        }
    }
}

fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Where a request comes from, for sessions, audit events and rate limits.
///
/// `ip` is the client's address as `client_ip` decides it: the socket peer, or, when the peer is
/// a configured trusted proxy, what the proxies recorded in `X-Forwarded-For`.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// The subject of per-IP rate limits: the address, or for IPv6 its /64. One IPv6 host is
    /// usually handed a whole /64 and can pick a fresh address for every request, so counting
    /// single IPv6 addresses would limit nobody.
    pub fn rate_key(&self) -> String {
        match self.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()) {
            Some(IpAddr::V6(v6)) => Ipv6Net::new(v6, 64)
                .map(|net| net.trunc().to_string())
                .unwrap_or_else(|_| v6.to_string()),
            Some(ip) => ip.to_string(),
            None => "unknown".to_owned(),
        }
    }

    pub fn actor(&self, user_id: Option<Uuid>, session_id: Option<Uuid>) -> store::audit::Actor {
        store::audit::Actor {
            user_id,
            session_id,
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            admin_key_id: None,
        }
    }
}

impl<S> FromRequestParts<S> for ClientInfo
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| client_ip(c.0.ip(), &parts.headers, &state.settings.trusted_proxies))
            .map(|ip| ip.to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(512).collect());
        Ok(ClientInfo { ip, user_agent })
    }
}

/// The client's address. Without trusted proxies it is the socket peer, and `X-Forwarded-For`
/// is ignored: anyone can send that header, and believing it would let a client choose the IP
/// its rate limits count and its sessions show. When the peer is a trusted proxy, the header is
/// read from the right (each proxy appends the address it received the request from), skipping
/// trusted hops; the first untrusted address is the client. Everything to its left was written
/// by the client itself and is ignored. An entry that is no address stops the walk at the last
/// trusted hop, the closest address that is known to be true.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    // Several X-Forwarded-For headers form one list, in order (RFC 9110 §5.3).
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("not an address").split(','))
        .collect();
    for hop in hops.iter().rev() {
        let hop = hop.trim();
        let Some(ip) = hop
            .parse::<IpAddr>()
            .ok()
            .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// The caller's live session: a valid access token (bearer header or access cookie) whose session
/// has not been revoked. latchkey's own endpoints check liveness so that logout takes effect at once.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        authenticate(&state, &parts.headers)
            .await?
            .ok_or(ApiError::Unauthenticated)
    }
}

/// The subject of the request's valid access token, read from its headers in place; whether its
/// session is live is left to the handler (`GET /auth/me` reads it with the account).
pub struct TokenSubject(pub Verified);

impl<S> FromRequestParts<S> for TokenSubject
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        access_claims(&state, &parts.headers)
            .await
            .map(TokenSubject)
            .ok_or(ApiError::Unauthenticated)
    }
}

/// The authenticated session of a request, if it has one. Liveness comes from the liveness
/// cache when it knows the session (see `store::liveness` for what that guarantees), else from
/// the database, and what the database says is kept for the next request.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Authenticated>, ApiError> {
    let Some(token) = access_claims(state, headers).await else {
        return Ok(None);
    };
    let now = state.clock.now();
    let (user_id, session_id) = (token.user_id, token.session_id);
    let liveness = state.store.liveness();
    if !liveness.session_live(user_id, session_id, now) {
        let ticket = liveness.ticket();
        let reader = state.store.reader();
        let Some(until) = store::sessions::live_until(reader, session_id, user_id, now).await?
        else {
            return Ok(None);
        };
        if let Some(ticket) = ticket {
            liveness.put_session(ticket, user_id, session_id, until, now);
        }
    }
    crate::telemetry::record_user(user_id);
    Ok(Some(Authenticated {
        user_id,
        session_id,
    }))
}

/// The subject of the request's access token (bearer, else cookie) when it is one the server
/// issued and it has not expired. Whether its session is still live is NOT checked here: callers
/// check it in the same query as what they read (`authenticate`, `GET /auth/me`). A token is
/// verified once and then found in the liveness cache until it expires.
pub async fn access_claims(state: &AppState, headers: &HeaderMap) -> Option<Verified> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110 §11.1).
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let cookie;
    let token = match bearer {
        Some(token) => token,
        None => {
            let jar = CookieJar::from_headers(headers);
            cookie = cookies::access_token(&jar, state.settings.cookie_secure)?;
            cookie.as_str()
        }
    };
    let now = state.clock.now();
    let liveness = state.store.liveness();
    if let Some(verified) = liveness.token(token, now) {
        return Some(verified);
    }
    let claims = tokens::verify_access(&state.keys, token, now).await?;
    let leeway = i64::try_from(crate::keys::LEEWAY.as_secs()).ok()?;
    let verified = Verified {
        user_id: claims.sub,
        session_id: claims.sid,
        until: claims.exp.checked_add(leeway)?.checked_mul(1000)?,
    };
    liveness.put_token(token, verified, now);
    Some(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies_and_read_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        // (socket peer, X-Forwarded-For, the client it makes)
        for (peer, forwarded, client) in [
            // An untrusted peer: the header is ignored.
            ("203.0.113.9", "198.51.100.1", "203.0.113.9"),
            // A trusted peer without a header is the client.
            ("10.0.0.1", "", "10.0.0.1"),
            ("10.0.0.1", "198.51.100.1", "198.51.100.1"),
            // Trusted hops skipped; what the client wrote itself, on the left, ignored.
            (
                "10.0.0.1",
                "1.1.1.1, 198.51.100.1, 10.0.0.7",
                "198.51.100.1",
            ),
            // Only trusted hops: the farthest one.
            ("10.0.0.1", "10.0.0.9, 10.0.0.7", "10.0.0.9"),
            // Garbage stops the walk at the last trusted hop.
            ("10.0.0.1", "198.51.100.1, garbage", "10.0.0.1"),
            ("10.0.0.1", "garbage, 10.0.0.7", "10.0.0.7"),
            // Addresses with ports, IPv6, IPv4-mapped IPv6.
            ("10.0.0.1", "198.51.100.1:4711", "198.51.100.1"),
            ("10.0.0.1", "[2001:db8::1]:4711", "2001:db8::1"),
            ("::1", "2001:db8::1", "2001:db8::1"),
            ("::ffff:10.0.0.1", "198.51.100.1", "198.51.100.1"),
            ("10.0.0.1", "::ffff:198.51.100.1", "198.51.100.1"),
        ] {
            let mut headers = HeaderMap::new();
            if !forwarded.is_empty() {
                headers.insert("x-forwarded-for", forwarded.parse().unwrap());
            }
            let why = format!("{peer} with {forwarded:?}");
            assert_eq!(client_ip(ip(peer), &headers, &trusted), ip(client), "{why}");
        }
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "198.51.100.1".parse().unwrap());
        headers.append("x-forwarded-for", "198.51.100.2, 10.0.0.3".parse().unwrap());
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers, &trusted),
            ip("198.51.100.2"),
            "several headers are one list"
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers, &[]),
            ip("10.0.0.1"),
            "no trusted proxies: the peer"
        );
    }

    #[test]
    fn ipv6_clients_are_rate_limited_per_64() {
        let key = |ip: &str| {
            ClientInfo {
                ip: Some(ip.to_owned()),
                user_agent: None,
            }
            .rate_key()
        };
        assert_eq!(key("203.0.113.9"), "203.0.113.9");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2::ffff"), key("2001:db8:1:2:aaaa::1"));
        assert_eq!(ClientInfo::default().rate_key(), "unknown");
    }
}
