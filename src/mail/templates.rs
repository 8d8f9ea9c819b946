//! Email templates: a plain-text and an HTML body per kind of email, in the one template engine
//! of the pages (`crate::templates`), built in and overridable file by file from the directory of
//! the `mail_templates` setting.
//!
//! The text template starts with a `Subject: …` line and a blank line. HTML bodies are escaped by
//! the engine; line breaks are removed from the subject. Every template is rendered once with
//! sample values when it is loaded (an unknown variable is an error), so a broken override stops
//! the start, not a delivery.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, anyhow, bail};

use super::Kind;
use crate::templates;

/// The subject and bodies of one email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct Templates {
    compiled: templates::Templates,
}

const KINDS: [Kind; 9] = [
    Kind::PasswordReset,
    Kind::EmailVerification,
    Kind::PasswordChanged,
    Kind::AccountExists,
    Kind::EmailChange,
    Kind::EmailChangeNotice,
    Kind::AccountDeleted,
    Kind::Invite,
    Kind::Passwordless,
];

/// The built-in text and HTML templates of `kind`.
fn builtin(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::PasswordReset => (
            include_str!("templates/password_reset.txt"),
            include_str!("templates/password_reset.html"),
        ),
        Kind::EmailVerification => (
            include_str!("templates/email_verification.txt"),
            include_str!("templates/email_verification.html"),
        ),
        Kind::PasswordChanged => (
            include_str!("templates/password_changed.txt"),
            include_str!("templates/password_changed.html"),
        ),
        Kind::AccountExists => (
            include_str!("templates/account_exists.txt"),
            include_str!("templates/account_exists.html"),
        ),
        Kind::EmailChange => (
            include_str!("templates/email_change.txt"),
            include_str!("templates/email_change.html"),
        ),
        Kind::EmailChangeNotice => (
            include_str!("templates/email_change_notice.txt"),
            include_str!("templates/email_change_notice.html"),
        ),
        Kind::AccountDeleted => (
            include_str!("templates/account_deleted.txt"),
            include_str!("templates/account_deleted.html"),
        ),
        Kind::Invite => (
            include_str!("templates/invite.txt"),
            include_str!("templates/invite.html"),
        ),
        Kind::Passwordless => (
            include_str!("templates/passwordless.txt"),
            include_str!("templates/passwordless.html"),
        ),
    }
}

impl Templates {
    /// The built-in templates, with the files of `dir` in place of those it holds.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Templates> {
        // The subject line is split off the text template, so each kind is three templates:
        // `{kind}.subject`, `{kind}.txt` and `{kind}.html`.
        let mut sources = Vec::new();
        for kind in KINDS {
            let (text, html) = builtin(kind);
            let name = kind.as_str();
            let text = templates::read("email", dir, &format!("{name}.txt"), text)?;
            let html = templates::read("email", dir, &format!("{name}.html"), html)?;
            let (subject, body) =
                split_subject(&text).with_context(|| format!("email template {name}.txt"))?;
            for (ext, source) in [("subject", subject), ("txt", body), ("html", html.as_str())] {
                sources.push((format!("{name}.{ext}"), source.to_owned()));
            }
        }
        let compiled = templates::Templates::compile("email", sources)?;
        let templates = Templates { compiled };
        // Check every template now: a rendering with every known name must succeed.
        for kind in KINDS {
            let sample: Vec<(&str, &str)> = kind.placeholders().iter().map(|n| (*n, "x")).collect();
            templates
                .render(kind, &sample)
                .with_context(|| format!("email template {}", kind.as_str()))?;
        }
        Ok(templates)
    }

    /// Fills the templates of `kind` with `values` (every placeholder of that kind).
    pub fn render(&self, kind: Kind, values: &[(&str, &str)]) -> anyhow::Result<Rendered> {
        let context: BTreeMap<&str, &str> = values.iter().copied().collect();
        let part = |ext: &str| {
            let name = format!("{}.{ext}", kind.as_str());
            self.compiled
                .render(&name, &context)
                .map_err(|err| anyhow!("{name}: {err:#}"))
        };
        Ok(Rendered {
            subject: part("subject")?
                .replace(['\r', '\n'], " ")
                .trim()
                .to_owned(),
            text: part("txt")?,
            html: part("html")?,
        })
    }
}

/// `Subject: …` on the first line, then a blank line, then the body.
fn split_subject(text: &str) -> anyhow::Result<(&str, &str)> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let subject = first
        .trim_end_matches('\r')
        .strip_prefix("Subject:")
        .ok_or_else(|| anyhow!("must start with a \"Subject: ...\" line"))?
        .trim();
    if subject.is_empty() {
        bail!("has an empty subject");
    }
    let body = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))
        .unwrap_or(rest);
    Ok((subject, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_in_html_only_and_subjects_stay_one_line() {
        let templates = Templates::load(None).unwrap();
        let rendered = templates
            .render(
                Kind::PasswordChanged,
                &[
                    ("email", "o'brien<x>@example.com"),
                    ("public_url", "http://x"),
                ],
            )
            .unwrap();
        assert!(
            rendered.text.contains("o'brien<x>@example.com"),
            "{}",
            rendered.text
        );
        assert!(
            rendered.html.contains("o&#39;brien&lt;x&gt;@example.com"),
            "{}",
            rendered.html
        );
        assert!(!rendered.html.contains("<x>"));
    }

    #[test]
    fn the_built_in_templates_render_every_kind() {
        let templates = Templates::load(None).unwrap();
        let rendered = templates
            .render(
                Kind::PasswordReset,
                &[
                    ("link", "http://localhost:8080/password/reset?token=T"),
                    ("email", "alice@example.com"),
                    ("expires_in", "30 minutes"),
                    ("public_url", "http://localhost:8080"),
                ],
            )
            .unwrap();
        assert_eq!(rendered.subject, "Reset your password");
        assert!(rendered.text.starts_with("Hello,"), "{}", rendered.text);
        assert!(
            rendered
                .text
                .contains("\nhttp://localhost:8080/password/reset?token=T\n")
        );
        assert!(
            rendered
                .html
                .contains("<a href=\"http://localhost:8080/password/reset?token=T\">")
        );
        let subject = templates
            .render(
                Kind::PasswordChanged,
                &[("email", "a\r\nb"), ("public_url", "http://x")],
            )
            .unwrap()
            .subject;
        assert_eq!(subject, "Your password was changed");
    }

    #[test]
    fn overrides_replace_built_in_files_and_are_checked() {
        let dir = std::env::temp_dir().join(format!("latchkey-templates-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("email_verification.txt"),
            "Subject: Welcome {{email}}\n\nGo to {{link}}\n",
        )
        .unwrap();
        let templates = Templates::load(Some(&dir)).unwrap();
        let rendered = templates
            .render(
                Kind::EmailVerification,
                &[
                    ("link", "L"),
                    ("email", "e@example.com"),
                    ("expires_in", "1 day"),
                    ("public_url", "P"),
                ],
            )
            .unwrap();
        assert_eq!(rendered.subject, "Welcome e@example.com");
        assert_eq!(rendered.text, "Go to L\n");
        assert!(
            rendered.html.contains("<a href=\"L\">"),
            "built-in HTML kept"
        );

        std::fs::write(dir.join("password_reset.html"), "{{token}}").unwrap();
        let err = Templates::load(Some(&dir)).err().unwrap();
        let err = format!("{err:#}");
        assert!(
            err.starts_with("email template password_reset: password_reset.html: undefined value"),
            "{err}"
        );
        std::fs::write(dir.join("password_reset.html"), "ok").unwrap();
        std::fs::write(dir.join("password_reset.txt"), "no subject").unwrap();
        let err = Templates::load(Some(&dir)).err().unwrap();
        assert_eq!(
            format!("{err:#}"),
            "email template password_reset.txt: must start with a \"Subject: ...\" line"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Templates::load(Some(&dir)).is_err(), "a missing directory");
    }
}
