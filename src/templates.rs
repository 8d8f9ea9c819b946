//! The one template engine of latchkey (minijinja), for the hosted pages and the emails alike.
//!
//! Templates are built in (`include_str!`) and replaced file by file from an operator's directory
//! (`pages_templates`, `mail_templates`): a file of the same name there wins. Output is escaped by
//! the template's file extension: `.html` is HTML-escaped everywhere a value is printed, unless a
//! template says `|safe`, and other extensions (`.txt`, `.subject`) are not. An undefined variable
//! is an error, not an empty string, so a typo in an override fails the check at start
//! (`Templates::check`) instead of showing a blank on a page or in an email.

use std::path::Path;

use anyhow::{Context, bail};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// A set of compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

/// A template file: its name and the built-in text an override may replace.
pub type Builtin = (&'static str, &'static str);

impl Templates {
    /// Compiles `builtins`, each replaced by the file of the same name in `dir` when there is
    /// one. `what` names the set in errors ("page", "email").
    pub fn load(what: &str, builtins: &[Builtin], dir: Option<&Path>) -> anyhow::Result<Templates> {
        let mut sources = Vec::with_capacity(builtins.len());
        for (name, builtin) in builtins {
            sources.push((name.to_string(), read(what, dir, name, builtin)?));
        }
        Templates::compile(what, sources)
    }

    /// Compiles `(name, source)` pairs as they are.
    pub fn compile(what: &str, sources: Vec<(String, String)>) -> anyhow::Result<Templates> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // An email's text ends as its template does.
        env.set_keep_trailing_newline(true);
        env.set_formatter(html_formatter);
        // Templates must not read files or reach the network: minijinja has no such functions,
        // and no loader is set, so `include` and `extends` only see the templates added here.
        for (name, source) in sources {
            let context = format!("{what} template {name}");
            env.add_template_owned(name, source).context(context)?;
        }
        Ok(Templates { env })
    }

    /// Renders `name` with `context`.
    pub fn render(&self, name: &str, context: impl Serialize) -> anyhow::Result<String> {
        let template = self.env.get_template(name)?;
        Ok(template.render(context)?)
    }

    /// Renders `name` with a sample `context` and reports what fails, naming the template: how a
    /// broken override stops the start.
    pub fn check(&self, what: &str, name: &str, context: impl Serialize) -> anyhow::Result<()> {
        self.render(name, context)
            .map(|_| ())
            .with_context(|| format!("{what} template {name}"))
    }
}

/// HTML-escapes `&<>"'` in `.html` templates, as askama and the HTML spec's attribute rules need,
/// and leaves `/` alone (minijinja's own escaper writes `&#x2f;`), so a link in an email reads
/// `https://…` in its source, as link checkers and mail clients expect. Values marked `|safe`,
/// and other extensions, go through minijinja's formatter unchanged.
fn html_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    if !matches!(state.auto_escape(), minijinja::AutoEscape::Html) || value.is_safe() {
        return minijinja::escape_formatter(out, state, value);
    }
    if value.is_undefined() || value.is_none() {
        return Ok(());
    }
    let text = value.to_string();
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    out.write_str(&escaped)
        .map_err(|_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "output"))
}

/// The text of `name`: the override in `dir` when it exists, else the built-in one.
pub fn read(
    what: &str,
    dir: Option<&Path>,
    name: &str,
    builtin: &'static str,
) -> anyhow::Result<String> {
    if let Some(dir) = dir.filter(|d| !d.is_dir()) {
        bail!("{what} templates {} is not a directory", dir.display());
    }
    let Some(path) = dir.map(|d| d.join(name)).filter(|p| p.exists()) else {
        return Ok(builtin.to_owned());
    };
    tracing::info!(template = %path.display(), "using a {what} template override");
    std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {what} template {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn html_is_escaped_by_extension_and_text_is_not() {
        let templates = Templates::load(
            "test",
            &[("a.html", "<p>{{ v }}</p>"), ("a.txt", "{{ v }}")],
            None,
        )
        .unwrap();
        let v = json!({"v": "<b>o'brien & co</b>"});
        assert_eq!(
            templates.render("a.html", &v).unwrap(),
            "<p>&lt;b&gt;o&#39;brien &amp; co&lt;/b&gt;</p>"
        );
        assert_eq!(
            templates.render("a.txt", &v).unwrap(),
            "<b>o'brien & co</b>"
        );
    }

    #[test]
    fn undefined_variables_are_errors() {
        let templates = Templates::load("test", &[("a.html", "{{ nope }}")], None).unwrap();
        let err = templates.check("test", "a.html", json!({})).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("test template a.html: "),
            "{err:#}"
        );
        let err = Templates::load("test", &[("b.html", "{% if %}")], None)
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").starts_with("test template b.html: "),
            "{err:#}"
        );
    }
}
