//! Emails: what latchkey sends, how it is rendered, and how it leaves the building.
//!
//! A flow never sends an email itself. It writes the rendered email to the outbox table inside
//! its own transaction (`store::outbox::enqueue`), so an email exists exactly when the token it
//! carries was committed: never one for a rolled-back token, never a lost one. After the commit
//! the flow wakes the worker (`Mailer::wake`), which claims due rows, delivers them and records
//! the outcome (`worker`); the worker also polls, for rows written by other instances and for
//! retries.
//!
//! Delivery is plain SMTP (`smtp://host:port`, typically a relay on the same host or network)
//! through lettre, built without a TLS stack to keep the build small: no OpenSSL, no rustls.
//! Without `smtp_url` the worker writes each email, link included, to the log instead, so a
//! developer can follow it locally.

pub mod admin;
pub mod links;
pub mod templates;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use tokio::sync::Notify;

use crate::config::Settings;
use crate::store::outbox::Claimed;
pub use templates::{Rendered, Templates};

/// The emails latchkey sends; `as_str` is the template name and `outbox.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PasswordReset,
    EmailVerification,
    /// A notice after a password reset or change, so an owner learns of a change they did not make.
    PasswordChanged,
    /// With `conceal_existing_accounts`: someone tried to sign up with an address that has an
    /// account. The owner hears of it instead of the requester.
    AccountExists,
    /// The confirmation link of an email change, to the new address.
    EmailChange,
    /// The notice to the old address that a change to another one was asked for.
    EmailChangeNotice,
    /// The notice that the account was deleted, to its address.
    AccountDeleted,
    /// An account created by an operator (admin API `send_invite`): a link that sets the
    /// password (a password-reset token, see `links::prepare`).
    Invite,
    /// A passwordless sign-in: a one-time link and a 6-digit code (`crate::passwordless`).
    Passwordless,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::PasswordReset => "password_reset",
            Kind::EmailVerification => "email_verification",
            Kind::PasswordChanged => "password_changed",
            Kind::AccountExists => "account_exists",
            Kind::EmailChange => "email_change",
            Kind::EmailChangeNotice => "email_change_notice",
            Kind::AccountDeleted => "account_deleted",
            Kind::Invite => "invite",
            Kind::Passwordless => "passwordless",
        }
    }

    /// The `{{name}}`s its templates may use.
    pub fn placeholders(self) -> &'static [&'static str] {
        match self {
            Kind::PasswordReset | Kind::EmailVerification | Kind::EmailChange | Kind::Invite => {
                &["link", "email", "expires_in", "public_url"]
            }
            Kind::Passwordless => &["link", "code", "email", "expires_in", "public_url"],
            Kind::EmailChangeNotice => &["email", "new_email", "public_url"],
            Kind::PasswordChanged | Kind::AccountExists | Kind::AccountDeleted => {
                &["email", "public_url"]
            }
        }
    }
}

/// How long one SMTP delivery may take, connection included. The claim lease is longer
/// (`worker::LEASE`), so a message is never claimed again while its delivery may still succeed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a delivery failed.
#[derive(Debug)]
pub enum SendError {
    /// Worth another attempt: the relay is unreachable or answered 4xx.
    Transient(String),
    /// Never worth another attempt: the relay answered 5xx, or the message cannot be built.
    Permanent(String),
}

/// Renders emails and delivers claimed ones; cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    templates: Arc<Templates>,
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    wake: Arc<Notify>,
}

impl Mailer {
    /// Loads the templates and sets up the transport; a bad template, sender or SMTP URL stops
    /// the start with a reason.
    pub fn new(settings: &Settings) -> anyhow::Result<Mailer> {
        let templates = Templates::load(settings.mail_templates.as_deref())?;
        let from: Mailbox = settings.mail_from.parse().with_context(|| {
            format!("mail_from {:?} is not an email address", settings.mail_from)
        })?;
        let transport = match &settings.smtp_url {
            Some(url) => {
                let (host, port) = smtp_relay(url.expose_secret())?;
                let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                    .port(port)
                    .timeout(Some(SEND_TIMEOUT / 2))
                    .build();
                Some(transport)
            }
            None => {
                tracing::warn!(
                    "no smtp_url configured: emails are written to the log, links included, \
                     instead of being sent (fine for development only)"
                );
                None
            }
        };
        Ok(Mailer {
            templates: Arc::new(templates),
            transport,
            from,
            wake: Arc::new(Notify::new()),
        })
    }

    pub fn render(&self, kind: Kind, values: &[(&str, &str)]) -> anyhow::Result<Rendered> {
        self.templates.render(kind, values)
    }

    /// Tells this instance's worker that the outbox has new rows. Called after a commit; a wake
    /// while the worker is busy is kept for its next wait, so none is lost.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Delivers one claimed message over SMTP, or writes it to the log without SMTP.
    pub async fn deliver(&self, message: &Claimed) -> Result<(), SendError> {
        let Some(transport) = &self.transport else {
            tracing::info!(
                kind = %message.kind,
                "email to {} not sent (no smtp_url configured), subject {:?}; it reads:\n{}",
                message.recipient,
                message.subject,
                message.body_text
            );
            return Ok(());
        };
        let to: Mailbox = message
            .recipient
            .parse()
            .map_err(|e| SendError::Permanent(format!("bad recipient address: {e}")))?;
        // A Message-ID derived from the outbox row: a retry after an unclear outcome carries the
        // same id, so receiving systems can recognise the duplicate.
        let message_id = format!("<{}@{}>", message.id, self.from.email.domain());
        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone())
            .message_id(Some(message_id))
            .multipart(MultiPart::alternative_plain_html(
                message.body_text.clone(),
                message.body_html.clone(),
            ))
            .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))?;
        match tokio::time::timeout(SEND_TIMEOUT, transport.send(email)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
            Ok(Err(e)) => Err(SendError::Transient(e.to_string())),
            Err(_) => Err(SendError::Transient(format!(
                "no answer within {}s",
                SEND_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Host and port of `smtp://host[:port]` (port 25 by default). This build speaks plain SMTP only,
/// so anything that needs TLS (`smtps://`, `?tls=`, credentials) is refused at start rather than
/// silently sent in clear.
fn smtp_relay(raw: &str) -> anyhow::Result<(String, u16)> {
    let url = url::Url::parse(raw).context("smtp_url is not a URL")?;
    if url.scheme() != "smtp" {
        bail!("smtp_url must be smtp://host:port: this build delivers over plain SMTP to a relay");
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        bail!("smtp_url takes no credentials or options: they need TLS, not in this build");
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .context("smtp_url has no host")?;
    Ok((host.to_owned(), url.port().unwrap_or(25)))
}

/// "30 minutes", "24 hours": how long a link lives, for people.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_are_plain_smtp_to_a_host() {
        assert_eq!(
            smtp_relay("smtp://127.0.0.1:2525").unwrap(),
            ("127.0.0.1".to_owned(), 2525)
        );
        assert_eq!(
            smtp_relay("smtp://relay.internal").unwrap(),
            ("relay.internal".to_owned(), 25)
        );
        for bad in [
            "smtps://relay.internal",
            "smtp://user:secret@relay.internal",
            "smtp://relay.internal?tls=required",
            "relay.internal:25",
        ] {
            assert!(smtp_relay(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(1800)), "30 minutes");
        assert_eq!(human_duration(Duration::from_secs(86_400)), "24 hours");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(90)), "90 seconds");
    }
}
