//! Settings, resolved once at start and passed down.
//!
//! Every setting can be given as a flag, as an environment variable or in a TOML file; the
//! precedence is flags > environment > file > defaults (clap resolves the first two, this module
//! merges the file under them). Secrets are `SecretString` from the moment they are read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
#[cfg(test)]
use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

#[derive(Debug, Parser)]
#[command(name = "latchkey", version, about = "Account and session service")]
pub struct Cli {
    #[command(flatten)]
    pub overrides: Overrides,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key; older keys keep verifying the tokens they signed until those expire.
    Rotate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    On,
    Off,
}

/// Every setting as it may be given: `None` means "not given here".
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Address to listen on.
    #[arg(long, env = "LATCHKEY_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// sqlite://FILE (created and migrated on start) or postgres://…
    #[arg(
        long,
        env = "LATCHKEY_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Public URL of the service: token issuer, allowed origin, links in emails.
    #[arg(long, env = "LATCHKEY_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// smtp://host:port to deliver emails; unset, emails are logged.
    #[arg(long, env = "LATCHKEY_SMTP_URL", global = true, hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender address of emails.
    #[arg(long, env = "LATCHKEY_MAIL_FROM", global = true)]
    pub mail_from: Option<String>,
    /// Rate limits: on, or off for benchmarks and tests only.
    #[arg(long, env = "LATCHKEY_RATE_LIMITS", global = true)]
    pub rate_limits: Option<Toggle>,
    /// Secure cookies with __Host-/__Secure- prefixes; false only for plain-HTTP deployments.
    #[arg(long, env = "LATCHKEY_COOKIE_SECURE", global = true)]
    pub cookie_secure: Option<bool>,
    /// Base64 of 32 random bytes that encrypts the signing keys at rest.
    #[arg(
        long,
        env = "LATCHKEY_KEY_ENCRYPTION_KEY",
        global = true,
        hide_env_values = true
    )]
    pub key_encryption_key: Option<String>,
    /// Extra origins allowed to send unsafe requests (comma-separated); the public URL's always is.
    #[arg(
        long,
        env = "LATCHKEY_ALLOWED_ORIGINS",
        global = true,
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// Access token lifetime in seconds.
    #[arg(long, env = "LATCHKEY_ACCESS_TOKEN_TTL", global = true)]
    pub access_token_ttl: Option<u64>,
    /// Seconds without a refresh after which a session ends.
    #[arg(long, env = "LATCHKEY_SESSION_IDLE_TIMEOUT", global = true)]
    pub session_idle_timeout: Option<u64>,
    /// Seconds after login after which a session ends whatever happens.
    #[arg(long, env = "LATCHKEY_SESSION_ABSOLUTE_LIFETIME", global = true)]
    pub session_absolute_lifetime: Option<u64>,
    /// Seconds during which the previous refresh token still yields its successor.
    #[arg(long, env = "LATCHKEY_REFRESH_GRACE_PERIOD", global = true)]
    pub refresh_grace_period: Option<u64>,
    /// Rotate the signing key automatically when it is this many seconds old (default: never).
    #[arg(long, env = "LATCHKEY_KEY_ROTATION_INTERVAL", global = true)]
    pub key_rotation_interval: Option<u64>,
    /// Argon2id memory cost in KiB.
    #[arg(long, env = "LATCHKEY_ARGON2_MEMORY_KIB", global = true)]
    pub argon2_memory_kib: Option<u32>,
    /// Argon2id iterations.
    #[arg(long, env = "LATCHKEY_ARGON2_ITERATIONS", global = true)]
    pub argon2_iterations: Option<u32>,
    /// Threads that hash passwords (default: the number of cores).
    #[arg(long, env = "LATCHKEY_HASH_THREADS", global = true)]
    pub hash_threads: Option<usize>,
    /// A TOML file with the same settings (flags and environment win).
    #[arg(long, env = "LATCHKEY_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

impl Overrides {
    /// Fills what `self` leaves unset from `lower`.
    fn or(self, lower: Overrides) -> Overrides {
        Overrides {
            listen: self.listen.or(lower.listen),
            database_url: self.database_url.or(lower.database_url),
            public_url: self.public_url.or(lower.public_url),
            smtp_url: self.smtp_url.or(lower.smtp_url),
            mail_from: self.mail_from.or(lower.mail_from),
            rate_limits: self.rate_limits.or(lower.rate_limits),
            cookie_secure: self.cookie_secure.or(lower.cookie_secure),
            key_encryption_key: self.key_encryption_key.or(lower.key_encryption_key),
            allowed_origins: self.allowed_origins.or(lower.allowed_origins),
            access_token_ttl: self.access_token_ttl.or(lower.access_token_ttl),
            session_idle_timeout: self.session_idle_timeout.or(lower.session_idle_timeout),
            session_absolute_lifetime: self
                .session_absolute_lifetime
                .or(lower.session_absolute_lifetime),
            refresh_grace_period: self.refresh_grace_period.or(lower.refresh_grace_period),
            key_rotation_interval: self.key_rotation_interval.or(lower.key_rotation_interval),
            argon2_memory_kib: self.argon2_memory_kib.or(lower.argon2_memory_kib),
            argon2_iterations: self.argon2_iterations.or(lower.argon2_iterations),
            hash_threads: self.hash_threads.or(lower.hash_threads),
            config: self.config.or(lower.config),
        }
    }
}

/// The resolved settings of one process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: SecretString,
    pub public_url: Url,
    pub smtp_url: Option<SecretString>,
    pub mail_from: String,
    pub rate_limits: bool,
    pub cookie_secure: bool,
    /// `None`: a development key is kept in `latchkey.kek` in the working directory.
    pub key_encryption_key: Option<SecretString>,
    /// Origins (scheme://host[:port]) allowed to send unsafe requests.
    pub allowed_origins: Vec<String>,
    pub access_token_ttl: Duration,
    pub session_idle_timeout: Duration,
    pub session_absolute_lifetime: Duration,
    pub refresh_grace_period: Duration,
    /// `None`: keys rotate only with `latchkey keys rotate`.
    pub key_rotation_interval: Option<Duration>,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub hash_threads: usize,
}

impl Settings {
    /// Resolves flags and environment (already in `overrides`) over the TOML file over defaults.
    pub fn load(overrides: Overrides) -> anyhow::Result<Settings> {
        let file = match &overrides.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<Overrides>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => Overrides::default(),
        };
        Settings::resolve(overrides.or(file))
    }

    /// Applies defaults and checks every value.
    pub fn resolve(o: Overrides) -> anyhow::Result<Settings> {
        let public_url = Url::parse(o.public_url.as_deref().unwrap_or("http://localhost:8080"))
            .context("public_url is not a URL")?;
        if !matches!(public_url.scheme(), "http" | "https") || public_url.host().is_none() {
            bail!("public_url must be an http:// or https:// URL with a host");
        }
        let mut allowed_origins = vec![origin_of(&public_url)];
        for origin in o.allowed_origins.unwrap_or_default() {
            let url = Url::parse(origin.trim())
                .with_context(|| format!("allowed origin {origin:?} is not a URL"))?;
            allowed_origins.push(origin_of(&url));
        }
        let secs = Duration::from_secs;
        let settings = Settings {
            listen: o
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            database_url: SecretString::from(
                o.database_url
                    .unwrap_or_else(|| "sqlite://latchkey.db".to_owned()),
            ),
            public_url,
            smtp_url: o.smtp_url.map(SecretString::from),
            mail_from: o
                .mail_from
                .unwrap_or_else(|| "latchkey@localhost".to_owned()),
            rate_limits: o.rate_limits.unwrap_or(Toggle::On) == Toggle::On,
            cookie_secure: o.cookie_secure.unwrap_or(true),
            key_encryption_key: o.key_encryption_key.map(SecretString::from),
            allowed_origins,
            access_token_ttl: secs(o.access_token_ttl.unwrap_or(15 * 60)),
            session_idle_timeout: secs(o.session_idle_timeout.unwrap_or(7 * 24 * 3600)),
            session_absolute_lifetime: secs(o.session_absolute_lifetime.unwrap_or(30 * 24 * 3600)),
            refresh_grace_period: secs(o.refresh_grace_period.unwrap_or(10)),
            key_rotation_interval: o.key_rotation_interval.map(secs),
            argon2_memory_kib: o.argon2_memory_kib.unwrap_or(19_456),
            argon2_iterations: o.argon2_iterations.unwrap_or(2),
            hash_threads: o.hash_threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
            }),
        };
        if settings.access_token_ttl.is_zero()
            || settings.session_idle_timeout.is_zero()
            || settings.session_absolute_lifetime.is_zero()
        {
            bail!("token and session lifetimes must be positive");
        }
        if settings
            .key_rotation_interval
            .is_some_and(|i| i <= settings.access_token_ttl)
        {
            bail!("key_rotation_interval must be longer than access_token_ttl");
        }
        if settings.hash_threads == 0 {
            bail!("hash_threads must be at least 1");
        }
        Ok(settings)
    }

    /// The JWT issuer and audience: the public URL, without a trailing slash.
    pub fn issuer(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_owned()
    }
}

/// `scheme://host[:port]` as browsers send it in `Origin`.
fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let s = Settings::resolve(Overrides::default()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.database_url.expose_secret(), "sqlite://latchkey.db");
        assert_eq!(s.public_url.as_str(), "http://localhost:8080/");
        assert_eq!(s.issuer(), "http://localhost:8080");
        assert_eq!(s.mail_from, "latchkey@localhost");
        assert!(s.rate_limits && s.cookie_secure && s.smtp_url.is_none());
        assert_eq!(s.allowed_origins, ["http://localhost:8080"]);
        assert_eq!(s.access_token_ttl, Duration::from_secs(900));
        assert_eq!(s.session_idle_timeout, Duration::from_secs(7 * 86_400));
        assert_eq!(
            s.session_absolute_lifetime,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(s.refresh_grace_period, Duration::from_secs(10));
        assert_eq!((s.argon2_memory_kib, s.argon2_iterations), (19_456, 2));
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: Overrides = toml::from_str(
            "listen = \"0.0.0.0:9000\"\npublic_url = \"https://file.example\"\ncookie_secure = false\n\
             rate_limits = \"off\"\nallowed_origins = [\"https://app.example\"]\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "latchkey",
            "--public-url",
            "https://flag.example/",
            "migrate",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Migrate)));
        let s = Settings::resolve(cli.overrides.or(file)).unwrap();
        assert_eq!(s.issuer(), "https://flag.example");
        assert_eq!(s.listen, "0.0.0.0:9000".parse().unwrap());
        assert!(!s.cookie_secure);
        assert!(!s.rate_limits);
        assert_eq!(
            s.allowed_origins,
            ["https://flag.example", "https://app.example"]
        );
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        assert!(toml::from_str::<Overrides>("no_such_setting = 1").is_err());
        assert!(Cli::try_parse_from(["latchkey", "--rate-limits", "maybe"]).is_err());
        assert!(Cli::try_parse_from(["latchkey", "--listen", "nowhere"]).is_err());
        for bad in [
            Overrides {
                public_url: Some("ftp://example.com".into()),
                ..Overrides::default()
            },
            Overrides {
                public_url: Some("not a url".into()),
                ..Overrides::default()
            },
            Overrides {
                access_token_ttl: Some(0),
                ..Overrides::default()
            },
            Overrides {
                hash_threads: Some(0),
                ..Overrides::default()
            },
        ] {
            assert!(Settings::resolve(bad).is_err());
        }
    }
}
