//! Email templates: a plain-text and an HTML body per kind of email, built in (`include_str!`)
//! and overridable file by file from the directory of the `mail_templates` setting.
//!
//! A template is text with `{{name}}` placeholders; the text template starts with a
//! `Subject: …` line and a blank line. Values are HTML-escaped in HTML bodies, and line breaks are
//! removed from them in the subject. Every template is checked when it is loaded (known
//! placeholders only, a subject line), so a broken override stops the start, not a delivery.

use std::path::Path;

use anyhow::{Context, anyhow, bail};

use super::Kind;

/// The subject and bodies of one email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

struct Pair {
    /// The text template without its subject line.
    text: String,
    subject: String,
    html: String,
}

pub struct Templates {
    password_reset: Pair,
    email_verification: Pair,
    password_changed: Pair,
    account_exists: Pair,
}

impl Templates {
    /// The built-in templates, with the files of `dir` in place of those it holds.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Templates> {
        if let Some(dir) = dir.filter(|d| !d.is_dir()) {
            bail!("mail_templates {} is not a directory", dir.display());
        }
        Ok(Templates {
            password_reset: pair(
                dir,
                Kind::PasswordReset,
                include_str!("templates/password_reset.txt"),
                include_str!("templates/password_reset.html"),
            )?,
            email_verification: pair(
                dir,
                Kind::EmailVerification,
                include_str!("templates/email_verification.txt"),
                include_str!("templates/email_verification.html"),
            )?,
            password_changed: pair(
                dir,
                Kind::PasswordChanged,
                include_str!("templates/password_changed.txt"),
                include_str!("templates/password_changed.html"),
            )?,
            account_exists: pair(
                dir,
                Kind::AccountExists,
                include_str!("templates/account_exists.txt"),
                include_str!("templates/account_exists.html"),
            )?,
        })
    }

    /// Fills the templates of `kind` with `values` (every placeholder of that kind).
    pub fn render(&self, kind: Kind, values: &[(&str, &str)]) -> anyhow::Result<Rendered> {
        let pair = match kind {
            Kind::PasswordReset => &self.password_reset,
            Kind::EmailVerification => &self.email_verification,
            Kind::PasswordChanged => &self.password_changed,
            Kind::AccountExists => &self.account_exists,
        };
        let one_line = |v: &str| v.replace(['\r', '\n'], " ");
        Ok(Rendered {
            subject: substitute(&pair.subject, values, one_line)?,
            text: substitute(&pair.text, values, str::to_owned)?,
            html: substitute(&pair.html, values, html_escape)?,
        })
    }
}

/// The two templates of `kind`, each from `dir` when it is there, checked.
fn pair(dir: Option<&Path>, kind: Kind, text: &str, html: &str) -> anyhow::Result<Pair> {
    let read = |ext: &str, builtin: &str| -> anyhow::Result<String> {
        let Some(path) = dir.map(|d| d.join(format!("{}.{ext}", kind.as_str()))) else {
            return Ok(builtin.to_owned());
        };
        if !path.exists() {
            return Ok(builtin.to_owned());
        }
        tracing::info!(template = %path.display(), "using an email template override");
        std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read email template {}", path.display()))
    };
    let text = read("txt", text)?;
    let html = read("html", html)?;
    let (subject, body) =
        split_subject(&text).with_context(|| format!("email template {}.txt", kind.as_str()))?;
    let pair = Pair {
        text: body.to_owned(),
        subject: subject.to_owned(),
        html,
    };
    // Check every placeholder now: a rendering with every known name must succeed.
    let sample: Vec<(&str, &str)> = kind.placeholders().iter().map(|n| (*n, "x")).collect();
    for (which, template) in [
        ("txt", &pair.subject),
        ("txt", &pair.text),
        ("html", &pair.html),
    ] {
        substitute(template, &sample, str::to_owned)
            .with_context(|| format!("email template {}.{which}", kind.as_str()))?;
    }
    Ok(pair)
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

/// Replaces each `{{name}}` with its value, passed through `escape`. An unknown name or an
/// unclosed `{{` is an error.
fn substitute(
    template: &str,
    values: &[(&str, &str)],
    escape: impl Fn(&str) -> String,
) -> anyhow::Result<String> {
    let mut out = String::with_capacity(template.len() + 128);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| anyhow!("a {{{{ without its }}}}"))?;
        let name = after[..end].trim();
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| anyhow!("unknown placeholder {{{{{name}}}}}"))?;
        out.push_str(&escape(value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn html_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_and_escapes_for_html_only() {
        let values = [
            ("email", "o'brien<x>@example.com"),
            ("link", "https://a/b?c=1&d=2"),
        ];
        assert_eq!(
            substitute("{{email}} {{ link }}", &values, str::to_owned).unwrap(),
            "o'brien<x>@example.com https://a/b?c=1&d=2"
        );
        assert_eq!(
            substitute("<a href=\"{{link}}\">{{email}}</a>", &values, html_escape).unwrap(),
            "<a href=\"https://a/b?c=1&amp;d=2\">o&#39;brien&lt;x&gt;@example.com</a>"
        );
    }

    #[test]
    fn refuses_unknown_and_unclosed_placeholders() {
        let values = [("email", "a@example.com")];
        let unknown = substitute("hi {{name}}", &values, str::to_owned).unwrap_err();
        assert_eq!(unknown.to_string(), "unknown placeholder {{name}}");
        let unclosed = substitute("hi {{email", &values, str::to_owned).unwrap_err();
        assert_eq!(unclosed.to_string(), "a {{ without its }}");
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
        assert_eq!(
            format!("{err:#}"),
            "email template password_reset.html: unknown placeholder {{token}}"
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
