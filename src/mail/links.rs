//! What signup, the reset worker, resend and the notices share: preparing a one-time link and its
//! rendered email, or a rendered notice, before the store's transaction writes them.
//!
//! The token and its email are written in the same transaction, so either both exist or neither
//! does. The caller wakes the mail worker after its commit.

use secrecy::ExposeSecret as _;

use crate::app::AppState;
use crate::clock::{Millis, millis};
use crate::domain::Email;
use crate::error::ApiError;
use crate::mail::{self, Kind};
use crate::store::flows::{NewLink, NewMail, Throttle};
use crate::store::passwordless::NewCode;
use crate::tokens::{self, Purpose};

/// The kinds of email a link is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    PasswordReset,
    EmailVerification,
    /// The confirmation of an email change, sent to the new address.
    EmailChange,
    /// An operator's invitation: a password-reset token (the reset page and `POST
    /// /auth/password/reset` set the password and mark the address verified, which is all an
    /// invitation needs), in its own email and with the verification link's lifetime, since
    /// an invitation is not answered within the half hour of a reset.
    Invite,
}

impl LinkKind {
    fn purpose(self) -> Purpose {
        match self {
            LinkKind::PasswordReset | LinkKind::Invite => Purpose::PasswordReset,
            LinkKind::EmailVerification => Purpose::EmailVerification,
            LinkKind::EmailChange => Purpose::EmailChange,
        }
    }
}

/// A new link to `to` and its rendered email. The link comes from the configured public URL (or
/// the configured link template), never from the request's Host header.
pub fn prepare(
    state: &AppState,
    kind: LinkKind,
    to: &Email,
    now: Millis,
) -> Result<NewLink, ApiError> {
    let settings = &state.settings;
    let (mail_kind, path, custom, ttl) = match kind {
        LinkKind::PasswordReset => (
            Kind::PasswordReset,
            "password/reset",
            &settings.reset_link_url,
            settings.password_reset_ttl,
        ),
        LinkKind::EmailVerification => (
            Kind::EmailVerification,
            "email/verify",
            &settings.verify_link_url,
            settings.email_verification_ttl,
        ),
        LinkKind::EmailChange => (
            Kind::EmailChange,
            "email/change",
            &None,
            settings.email_verification_ttl,
        ),
        LinkKind::Invite => (
            Kind::Invite,
            "password/reset",
            &settings.reset_link_url,
            settings.email_verification_ttl,
        ),
    };
    let purpose = kind.purpose();
    let token = tokens::new_opaque();
    // The app's own page when it has one (`reset_link_url`, `verify_link_url`), else latchkey's.
    // Tokens are URL-safe base64, so they go into a URL as they are.
    let link = match custom {
        Some(template) => template.replace("{token}", token.expose_secret()),
        None => format!("{}/{path}?token={}", state.issuer, token.expose_secret()),
    };
    let expires_in = mail::human_duration(ttl);
    let values = [
        ("link", link.as_str()),
        ("email", to.as_str()),
        ("expires_in", &expires_in),
        ("public_url", &state.issuer),
    ];
    Ok(NewLink {
        purpose,
        token_hash: tokens::hash_opaque(purpose, &token),
        email_normalized: to.normalized().to_owned(),
        expires_at: now + millis(ttl),
        mail: render(state, mail_kind, to, &values)?,
    })
}

/// A new passwordless code and link for `to` (the account `user_id`, or `None` for a new
/// address), and its rendered email.
pub fn passwordless(
    state: &AppState,
    to: &Email,
    user_id: Option<uuid::Uuid>,
    now: Millis,
) -> Result<(NewCode, NewMail), ApiError> {
    let settings = &state.settings;
    let token = tokens::new_opaque();
    let token_hash = tokens::hash_opaque(Purpose::Passwordless, &token);
    let code = crate::passwordless::new_code();
    let link = match &settings.passwordless_link_url {
        Some(template) => template.replace("{token}", token.expose_secret()),
        None => format!(
            "{}/passwordless?token={}",
            state.issuer,
            token.expose_secret()
        ),
    };
    let expires_in = mail::human_duration(settings.passwordless_ttl);
    let values = [
        ("link", link.as_str()),
        ("code", code.expose_secret()),
        ("email", to.as_str()),
        ("expires_in", &expires_in),
        ("public_url", &state.issuer),
    ];
    let mail = render(state, Kind::Passwordless, to, &values)?;
    let code = NewCode {
        code_hash: crate::passwordless::code_hash(state.keys.kek(), &token_hash, &code),
        token_hash,
        email_normalized: to.normalized().to_owned(),
        email: to.as_str().to_owned(),
        user_id,
        expires_at: now + millis(settings.passwordless_ttl),
    };
    Ok((code, mail))
}

/// The throttle slot of `kind` emails to `to`: one per address and purpose per `mail_throttle`.
pub fn throttle(state: &AppState, kind: Kind, to: &Email) -> Throttle {
    let window = millis(state.settings.mail_throttle);
    Throttle::new(kind.as_str(), to.normalized(), window)
}

/// The notice that the password of `to` changed. Not throttled: it follows a change that
/// succeeded, and its owner must hear of every one.
pub fn password_changed(state: &AppState, to: &Email) -> Result<NewMail, ApiError> {
    let values = [("email", to.as_str()), ("public_url", &*state.issuer)];
    render(state, Kind::PasswordChanged, to, &values)
}

/// The notice that someone tried to sign up with `to`, which has an account (signup with
/// `conceal_existing_accounts`); the store sends at most one per address per throttle window.
pub fn account_exists(state: &AppState, to: &Email) -> Result<NewMail, ApiError> {
    let values = [("email", to.as_str()), ("public_url", &*state.issuer)];
    render(state, Kind::AccountExists, to, &values)
}

/// The notice to `old` that a change of its address to `new` was asked for. Not throttled: the
/// request that causes it is (the new address's confirmation slot).
pub fn email_change_notice(
    state: &AppState,
    old: &Email,
    new: &Email,
) -> Result<NewMail, ApiError> {
    let values = [
        ("email", old.as_str()),
        ("new_email", new.as_str()),
        ("public_url", &*state.issuer),
    ];
    render(state, Kind::EmailChangeNotice, old, &values)
}

/// The notice that the account of `to` was deleted.
pub fn account_deleted(state: &AppState, to: &Email) -> Result<NewMail, ApiError> {
    let values = [("email", to.as_str()), ("public_url", &*state.issuer)];
    render(state, Kind::AccountDeleted, to, &values)
}

fn render(
    state: &AppState,
    kind: Kind,
    to: &Email,
    values: &[(&str, &str)],
) -> Result<NewMail, ApiError> {
    let rendered = state.mailer.render(kind, values)?;
    Ok(NewMail {
        kind: kind.as_str(),
        recipient: to.as_str().to_owned(),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
    })
}
