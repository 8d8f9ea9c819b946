//! The events latchkey tells an app about, and the body of a delivery.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value, json};

use crate::clock::{Millis, rfc3339};
use crate::store::users::Account;

/// The contract's event types; `as_str` is the `type` of the body and `webhook_outbox.event_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    UserCreated,
    UserLogin,
    UserPasswordChanged,
    UserPasswordReset,
    UserEmailVerified,
    /// An email change's link was used: the user with the new address.
    UserEmailChanged,
    UserProfileUpdated,
    UserDisabled,
    UserDeleted,
    SessionRevoked,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::UserCreated,
        EventType::UserLogin,
        EventType::UserPasswordChanged,
        EventType::UserPasswordReset,
        EventType::UserEmailVerified,
        EventType::UserEmailChanged,
        EventType::UserProfileUpdated,
        EventType::UserDisabled,
        EventType::UserDeleted,
        EventType::SessionRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::UserCreated => "user.created",
            EventType::UserLogin => "user.login",
            EventType::UserPasswordChanged => "user.password_changed",
            EventType::UserPasswordReset => "user.password_reset",
            EventType::UserEmailVerified => "user.email_verified",
            EventType::UserEmailChanged => "user.email_changed",
            EventType::UserProfileUpdated => "user.profile_updated",
            EventType::UserDisabled => "user.disabled",
            EventType::UserDeleted => "user.deleted",
            EventType::SessionRevoked => "session.revoked",
        }
    }
}

impl FromStr for EventType {
    type Err = String;

    fn from_str(s: &str) -> Result<EventType, String> {
        let s = s.trim();
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                format!("{s:?} is not a webhook event type ({})", known.join(", "))
            })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of a delivery: `{"type", "timestamp", "data"}`, `timestamp` the time of the event
/// (the same on every attempt; the `webhook-timestamp` header is the attempt's). `data` is built
/// by the store from the rows the flow wrote (see `store::flows::events`), so it can only hold
/// what the API shows anyway: never a password, a hash or a token.
pub fn body(event: EventType, data: Value, at: Millis) -> String {
    json!({
        "type": event.as_str(),
        "timestamp": rfc3339(at),
        "data": data,
    })
    .to_string()
}

/// A new event id, the `webhook-id` of every delivery of the event: `evt_` and a UUIDv7 (ordered
/// by time, unique without coordination).
pub fn new_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

/// `data`: the user and profile as the API shows them, and the session and reason where there
/// is one.
pub fn data(account: &Account, session_id: Option<&str>, reason: Option<&str>) -> Value {
    let mut data = Map::new();
    data.insert("user".into(), user(account));
    data.insert("profile".into(), profile(account));
    if let Some(id) = session_id {
        data.insert("session_id".into(), json!(id));
    }
    if let Some(reason) = reason {
        data.insert("reason".into(), json!(reason));
    }
    Value::Object(data)
}

/// The contract's `user` object.
pub fn user(a: &Account) -> Value {
    json!({
        "id": a.id,
        "email": a.email,
        "email_verified": a.email_verified_at.is_some(),
        "created_at": rfc3339(a.created_at),
        "app_metadata": json_object(&a.app_metadata),
    })
}

/// The contract's `profile` object.
pub fn profile(a: &Account) -> Value {
    json!({
        "display_name": a.display_name,
        "metadata": json_object(&a.metadata),
        "created_at": rfc3339(a.profile_created_at),
        "updated_at": rfc3339(a.profile_updated_at),
        "last_login_at": a.last_login_at.map(rfc3339),
    })
}

/// A stored JSON object column; only valid objects are ever written, so anything else (a row
/// edited by hand) reads as `{}` rather than failing the flow.
pub fn json_object(stored: &str) -> Value {
    match serde_json::from_str::<Value>(stored) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => Value::Object(Map::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_back() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
        }
        assert!("user.nothing".parse::<EventType>().is_err());
    }
}
