//! Settings, resolved once at start and passed down.
//!
//! Every setting can be given as a flag, as an environment variable or in a TOML file; the
//! precedence is flags > environment > file > defaults (clap resolves the first two, this module
//! merges the file under them). Secrets are `SecretString` from the moment they are read.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
#[cfg(test)]
use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

use crate::webhooks::endpoint::{self, Endpoint, EndpointSetting};

#[derive(Debug, Parser)]
#[command(name = "latchkey", version, about = "Account and session service")]
pub struct Cli {
    #[command(flatten)]
    pub overrides: Overrides,
    /// Print the result of an admin command as JSON.
    #[arg(long, global = true)]
    pub json: bool,
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
    /// Manage accounts.
    Users {
        #[command(subcommand)]
        action: UsersCommand,
    },
    /// Inspect and retry emails given up (dead).
    Mail {
        #[command(subcommand)]
        action: MailCommand,
    },
    /// Manage sessions.
    Sessions {
        #[command(subcommand)]
        action: SessionsCommand,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
    /// Inspect and retry webhook deliveries, or send a test event.
    Webhooks {
        #[command(subcommand)]
        action: WebhooksCommand,
    },
    /// Manage the keys of the admin API (`/admin/v1`).
    AdminKeys {
        #[command(subcommand)]
        action: AdminKeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminKeysCommand {
    /// Create a key and print it, once (only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
    },
    /// List the keys (names, ids, state; never a key).
    List,
    /// Revoke a key by id: the next request with it gets 401.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List deliveries waiting, newest first; `--dead`: those given up instead.
    List {
        #[arg(long)]
        dead: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Make a dead delivery due again (same `webhook-id`, attempts counted anew).
    Retry { id: String },
    /// Send a signed `webhook.test` event to a configured endpoint now and print the answer.
    Test { url: String },
}

#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// List emails given up, newest first, with their last error (never their bodies).
    Dead {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Make a dead email due again (while its body, and the link in it, are still kept).
    Retry { id: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key; older keys keep verifying the tokens they signed until those expire.
    Rotate,
    /// List the signing keys, active and retired (no key material).
    List,
}

/// A user is named by id or by email (case-insensitive).
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List accounts, newest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Show an account and its live sessions.
    Show { user: String },
    /// Disable an account: it cannot log in, and its sessions are revoked.
    Disable { user: String },
    /// Enable a disabled account.
    Enable { user: String },
    /// Delete an account with its profile, sessions and tokens; asks for confirmation on a
    /// terminal, and needs `--yes` otherwise.
    Delete {
        user: String,
        /// Delete without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Mark an account's email address verified.
    Verify { user: String },
    /// List an account's sessions, live and ended (until pruned).
    Sessions { user: String },
    /// Show an account's audit events, newest first.
    Audit {
        user: String,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Replace an account's `app_metadata` with a JSON object.
    SetAppMetadata {
        user: String,
        #[arg(value_name = "JSON")]
        app_metadata: String,
    },
    /// Create an account (a password read from stdin with `--password-stdin`, else none: the
    /// owner sets it with the link of `--send-invite` or a reset).
    Create {
        email: String,
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        verified: bool,
        #[arg(long)]
        send_invite: bool,
    },
    /// Import accounts from an NDJSON file (`-` for stdin), hashes and all (see the README).
    Import { file: String },
    /// List the accounts an email re-key left on their old key: addresses that are one address
    /// under the current rules, and stored addresses those rules refuse.
    EmailCollisions,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Revoke every session of a user.
    Revoke {
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective settings, secrets redacted; fail with a reason on a bad value.
    Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    On,
    Off,
}

/// SQLite's `synchronous` setting: what a power loss (not a crash of the process, which loses
/// nothing committed either way) can lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// `NORMAL` in WAL mode: a power loss can lose the transactions committed since the last
    /// sync of the WAL, never corrupt the database. The default, and SQLite's advice for WAL.
    #[default]
    Normal,
    /// `FULL`: every commit is synced to disk before it returns; nothing committed is lost, at
    /// the price of an fsync per write transaction.
    Full,
}

impl SqliteSynchronous {
    pub fn pragma(self) -> &'static str {
        match self {
            SqliteSynchronous::Normal => "NORMAL",
            SqliteSynchronous::Full => "FULL",
        }
    }
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
    /// SQLite durability: `normal` (a power loss may lose the last commits) or `full`.
    #[arg(long, env = "LATCHKEY_SQLITE_SYNCHRONOUS", global = true)]
    pub sqlite_synchronous: Option<SqliteSynchronous>,
    /// Public URL of the service: token issuer, allowed origin, links in emails.
    #[arg(long, env = "LATCHKEY_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// smtp://host:port to deliver emails; unset, emails are logged.
    #[arg(long, env = "LATCHKEY_SMTP_URL", global = true, hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender address of emails.
    #[arg(long, env = "LATCHKEY_MAIL_FROM", global = true)]
    pub mail_from: Option<String>,
    /// Directory of email templates overriding the built-in ones (file by file).
    #[arg(long, env = "LATCHKEY_MAIL_TEMPLATES", global = true)]
    pub mail_templates: Option<PathBuf>,
    /// Hosted pages (/signup, /login, /account, …): on, or off for apps with their own pages.
    #[arg(long, env = "LATCHKEY_PAGES", global = true)]
    pub pages: Option<Toggle>,
    /// Directory of page templates, the string catalogue and the stylesheet overriding the
    /// built-in ones (file by file).
    #[arg(long, env = "LATCHKEY_PAGES_TEMPLATES", global = true)]
    pub pages_templates: Option<PathBuf>,
    /// The reset link in emails, for apps with their own pages: a URL with `{token}` in it.
    #[arg(long, env = "LATCHKEY_RESET_LINK_URL", global = true)]
    pub reset_link_url: Option<String>,
    /// The verification link in emails, for apps with their own pages: a URL with `{token}`.
    #[arg(long, env = "LATCHKEY_VERIFY_LINK_URL", global = true)]
    pub verify_link_url: Option<String>,
    /// Seconds between two reset or verification emails to one address (0: no limit).
    #[arg(long, env = "LATCHKEY_MAIL_THROTTLE", global = true)]
    pub mail_throttle: Option<u64>,
    /// Delivery attempts of an email before it is given up (marked dead).
    #[arg(long, env = "LATCHKEY_MAIL_MAX_ATTEMPTS", global = true)]
    pub mail_max_attempts: Option<u32>,
    /// Seconds between two looks at the outbox when nothing wakes the mail worker.
    #[arg(long, env = "LATCHKEY_MAIL_POLL_INTERVAL", global = true)]
    pub mail_poll_interval: Option<u64>,
    /// Lifetime of a password reset link in seconds.
    #[arg(long, env = "LATCHKEY_PASSWORD_RESET_TTL", global = true)]
    pub password_reset_ttl: Option<u64>,
    /// Lifetime of an email verification link in seconds.
    #[arg(long, env = "LATCHKEY_EMAIL_VERIFICATION_TTL", global = true)]
    pub email_verification_ttl: Option<u64>,
    /// Lifetime of a passwordless sign-in code and link in seconds.
    #[arg(long, env = "LATCHKEY_PASSWORDLESS_TTL", global = true)]
    pub passwordless_ttl: Option<u64>,
    /// A passwordless sign-in of an address without an account creates the account.
    #[arg(long, env = "LATCHKEY_PASSWORDLESS_SIGNUP", global = true)]
    pub passwordless_signup: Option<bool>,
    /// The passwordless sign-in link in emails, for apps with their own pages: a URL with
    /// `{token}`.
    #[arg(long, env = "LATCHKEY_PASSWORDLESS_LINK_URL", global = true)]
    pub passwordless_link_url: Option<String>,
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
    /// Hash jobs that may wait for a hashing thread; beyond, 503 at once (default: 4 per thread).
    #[arg(long, env = "LATCHKEY_HASH_QUEUE", global = true)]
    pub hash_queue: Option<usize>,
    /// Signups per client IP, as COUNT/PERIOD (period in s, m or h), e.g. 20/1m.
    #[arg(long, env = "LATCHKEY_SIGNUP_IP_LIMIT", global = true)]
    pub signup_ip_limit: Option<Rate>,
    /// Login attempts per client IP.
    #[arg(long, env = "LATCHKEY_LOGIN_IP_LIMIT", global = true)]
    pub login_ip_limit: Option<Rate>,
    /// Failed logins per client IP.
    #[arg(long, env = "LATCHKEY_LOGIN_FAILURE_IP_LIMIT", global = true)]
    pub login_failure_ip_limit: Option<Rate>,
    /// Failed logins per account before each further attempt must wait (doubling).
    #[arg(long, env = "LATCHKEY_LOGIN_FAILURE_ACCOUNT_LIMIT", global = true)]
    pub login_failure_account_limit: Option<Rate>,
    /// Refreshes per client IP.
    #[arg(long, env = "LATCHKEY_REFRESH_IP_LIMIT", global = true)]
    pub refresh_ip_limit: Option<Rate>,
    /// Password reset requests per email address.
    #[arg(long, env = "LATCHKEY_FORGOT_ADDRESS_LIMIT", global = true)]
    pub forgot_address_limit: Option<Rate>,
    /// Password reset requests per client IP.
    #[arg(long, env = "LATCHKEY_FORGOT_IP_LIMIT", global = true)]
    pub forgot_ip_limit: Option<Rate>,
    /// Password resets (token submissions) per client IP.
    #[arg(long, env = "LATCHKEY_RESET_IP_LIMIT", global = true)]
    pub reset_ip_limit: Option<Rate>,
    /// Email verifications (token submissions) per client IP.
    #[arg(long, env = "LATCHKEY_VERIFY_IP_LIMIT", global = true)]
    pub verify_ip_limit: Option<Rate>,
    /// Verification email resends per account.
    #[arg(long, env = "LATCHKEY_VERIFY_RESEND_ACCOUNT_LIMIT", global = true)]
    pub verify_resend_account_limit: Option<Rate>,
    /// Passkey ceremonies started (registrations and logins) per client IP.
    #[arg(long, env = "LATCHKEY_PASSKEY_IP_LIMIT", global = true)]
    pub passkey_ip_limit: Option<Rate>,
    /// Proxies (IPs or CIDR ranges, comma-separated) whose X-Forwarded-For is believed.
    #[arg(
        long,
        env = "LATCHKEY_TRUSTED_PROXIES",
        global = true,
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<String>>,
    /// Seconds between SIGTERM and the end of accepting, while /readyz answers 503 so that load
    /// balancers take the instance out before its port closes.
    #[arg(long, env = "LATCHKEY_DRAIN_PERIOD", global = true)]
    pub drain_period: Option<u64>,
    /// How long acquiring a PostgreSQL connection (its liveness check included) and /readyz's
    /// probe may take before the request is answered 503 `unavailable`, e.g. `1s`, `300ms`.
    #[arg(long, env = "LATCHKEY_DATABASE_TIMEOUT", global = true)]
    pub database_timeout: Option<Period>,
    /// Serve GET /metrics on this address instead of the main one (which then answers 404).
    #[arg(long, env = "LATCHKEY_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<SocketAddr>,
    /// How often the gauges read from the database (outbox backlogs, the invariant count) are
    /// refreshed in the background, e.g. `30s`.
    #[arg(long, env = "LATCHKEY_METRICS_REFRESH", global = true)]
    pub metrics_refresh: Option<Period>,
    /// How long audit events are kept, e.g. `365d`; `0` keeps them forever.
    #[arg(long, env = "LATCHKEY_AUDIT_RETENTION", global = true)]
    pub audit_retention: Option<Period>,
    /// Seconds a request may take before it is answered 503.
    #[arg(long, env = "LATCHKEY_REQUEST_TIMEOUT", global = true)]
    pub request_timeout: Option<u64>,
    /// Seconds a client may take to send a request's headers (also the keep-alive idle limit).
    #[arg(long, env = "LATCHKEY_HEADER_READ_TIMEOUT", global = true)]
    pub header_read_timeout: Option<u64>,
    /// Largest request head (request line and headers) in bytes; larger gets 431.
    #[arg(long, env = "LATCHKEY_MAX_HEADER_BYTES", global = true)]
    pub max_header_bytes: Option<usize>,
    /// Open connections served at once; further clients wait to be accepted.
    #[arg(long, env = "LATCHKEY_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<usize>,
    /// Signup answers 202 whether or not the address has an account, and emails its owner.
    #[arg(long, env = "LATCHKEY_CONCEAL_EXISTING_ACCOUNTS", global = true)]
    pub conceal_existing_accounts: Option<bool>,
    /// A JSON Schema (draft 2020-12) file for `profile.metadata`; unset: any object of at most
    /// 4 KiB. Read at start.
    #[arg(long, env = "LATCHKEY_PROFILE_SCHEMA", global = true)]
    pub profile_schema: Option<PathBuf>,
    /// Top-level keys of `app_metadata` copied into access tokens as claims (comma-separated).
    #[arg(
        long,
        env = "LATCHKEY_TOKEN_CLAIMS",
        global = true,
        value_delimiter = ','
    )]
    pub token_claims: Option<Vec<String>>,
    /// Webhook endpoints (comma-separated); each gets `webhook_secret` and `webhook_events`.
    #[arg(
        long,
        env = "LATCHKEY_WEBHOOK_URL",
        global = true,
        value_delimiter = ','
    )]
    pub webhook_url: Option<Vec<String>>,
    /// `whsec_<base64>` secret(s) of `webhook_url`, space-separated to sign with several at once.
    #[arg(
        long,
        env = "LATCHKEY_WEBHOOK_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// Event types sent to `webhook_url` (comma-separated); unset: all.
    #[arg(
        long,
        env = "LATCHKEY_WEBHOOK_EVENTS",
        global = true,
        value_delimiter = ','
    )]
    pub webhook_events: Option<Vec<String>>,
    /// Endpoints with their own secret and filter: `[[webhooks]]` tables of the TOML file.
    #[arg(skip)]
    pub webhooks: Option<Vec<EndpointSetting>>,
    /// OpenID Connect providers to sign in with: `[[oidc_providers]]` tables of the TOML file
    /// (see `oidc::settings`).
    #[arg(skip)]
    pub oidc_providers: Option<Vec<crate::oidc::ProviderSetting>>,
    /// Delivery attempts of a webhook before it is marked dead.
    #[arg(long, env = "LATCHKEY_WEBHOOK_MAX_ATTEMPTS", global = true)]
    pub webhook_max_attempts: Option<u32>,
    /// Milliseconds before the first retry of a webhook; each next waits about twice as long
    /// (with jitter), at most an hour.
    #[arg(long, env = "LATCHKEY_WEBHOOK_RETRY_BASE_MS", global = true)]
    pub webhook_retry_base_ms: Option<u64>,
    /// Seconds a receiver has to answer one delivery.
    #[arg(long, env = "LATCHKEY_WEBHOOK_TIMEOUT", global = true)]
    pub webhook_timeout: Option<u64>,
    /// Allow a public URL other than localhost without secure cookies or a configured
    /// key-encryption key (never in production).
    #[arg(long, env = "LATCHKEY_INSECURE_DEV", global = true)]
    #[serde(default)]
    pub insecure_dev: bool,
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
            sqlite_synchronous: self.sqlite_synchronous.or(lower.sqlite_synchronous),
            public_url: self.public_url.or(lower.public_url),
            smtp_url: self.smtp_url.or(lower.smtp_url),
            mail_from: self.mail_from.or(lower.mail_from),
            mail_templates: self.mail_templates.or(lower.mail_templates),
            pages: self.pages.or(lower.pages),
            pages_templates: self.pages_templates.or(lower.pages_templates),
            reset_link_url: self.reset_link_url.or(lower.reset_link_url),
            verify_link_url: self.verify_link_url.or(lower.verify_link_url),
            mail_throttle: self.mail_throttle.or(lower.mail_throttle),
            mail_max_attempts: self.mail_max_attempts.or(lower.mail_max_attempts),
            mail_poll_interval: self.mail_poll_interval.or(lower.mail_poll_interval),
            password_reset_ttl: self.password_reset_ttl.or(lower.password_reset_ttl),
            email_verification_ttl: self.email_verification_ttl.or(lower.email_verification_ttl),
            passwordless_ttl: self.passwordless_ttl.or(lower.passwordless_ttl),
            passwordless_signup: self.passwordless_signup.or(lower.passwordless_signup),
            passwordless_link_url: self.passwordless_link_url.or(lower.passwordless_link_url),
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
            hash_queue: self.hash_queue.or(lower.hash_queue),
            signup_ip_limit: self.signup_ip_limit.or(lower.signup_ip_limit),
            login_ip_limit: self.login_ip_limit.or(lower.login_ip_limit),
            login_failure_ip_limit: self.login_failure_ip_limit.or(lower.login_failure_ip_limit),
            login_failure_account_limit: self
                .login_failure_account_limit
                .or(lower.login_failure_account_limit),
            refresh_ip_limit: self.refresh_ip_limit.or(lower.refresh_ip_limit),
            forgot_address_limit: self.forgot_address_limit.or(lower.forgot_address_limit),
            forgot_ip_limit: self.forgot_ip_limit.or(lower.forgot_ip_limit),
            reset_ip_limit: self.reset_ip_limit.or(lower.reset_ip_limit),
            verify_ip_limit: self.verify_ip_limit.or(lower.verify_ip_limit),
            passkey_ip_limit: self.passkey_ip_limit.or(lower.passkey_ip_limit),
            verify_resend_account_limit: self
                .verify_resend_account_limit
                .or(lower.verify_resend_account_limit),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            drain_period: self.drain_period.or(lower.drain_period),
            database_timeout: self.database_timeout.or(lower.database_timeout),
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            metrics_refresh: self.metrics_refresh.or(lower.metrics_refresh),
            audit_retention: self.audit_retention.or(lower.audit_retention),
            request_timeout: self.request_timeout.or(lower.request_timeout),
            header_read_timeout: self.header_read_timeout.or(lower.header_read_timeout),
            max_header_bytes: self.max_header_bytes.or(lower.max_header_bytes),
            max_connections: self.max_connections.or(lower.max_connections),
            conceal_existing_accounts: self
                .conceal_existing_accounts
                .or(lower.conceal_existing_accounts),
            profile_schema: self.profile_schema.or(lower.profile_schema),
            token_claims: self.token_claims.or(lower.token_claims),
            webhook_url: self.webhook_url.or(lower.webhook_url),
            webhook_secret: self.webhook_secret.or(lower.webhook_secret),
            webhook_events: self.webhook_events.or(lower.webhook_events),
            webhooks: self.webhooks.or(lower.webhooks),
            oidc_providers: self.oidc_providers.or(lower.oidc_providers),
            webhook_max_attempts: self.webhook_max_attempts.or(lower.webhook_max_attempts),
            webhook_retry_base_ms: self.webhook_retry_base_ms.or(lower.webhook_retry_base_ms),
            webhook_timeout: self.webhook_timeout.or(lower.webhook_timeout),
            insecure_dev: self.insecure_dev || lower.insecure_dev,
            config: self.config.or(lower.config),
        }
    }
}

/// The resolved settings of one process.
/// `Serialize` shows it to an operator (`latchkey config check`): secrets come out redacted.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub listen: SocketAddr,
    #[serde(serialize_with = "show::url")]
    pub database_url: SecretString,
    pub sqlite_durability: SqliteSynchronous,
    #[serde(serialize_with = "show::display")]
    pub public_url: Url,
    #[serde(serialize_with = "show::opt_url")]
    pub smtp_url: Option<SecretString>,
    pub mail_from: String,
    /// `None`: the built-in templates only.
    pub mail_templates: Option<PathBuf>,
    /// Whether latchkey serves the hosted pages.
    pub pages: bool,
    /// `None`: the built-in page templates, strings and stylesheet only.
    pub pages_templates: Option<PathBuf>,
    /// `None`: `{public_url}/password/reset?token={token}`.
    pub reset_link_url: Option<String>,
    /// `None`: `{public_url}/email/verify?token={token}`.
    pub verify_link_url: Option<String>,
    /// Zero: no throttle.
    #[serde(serialize_with = "show::secs")]
    pub mail_throttle: Duration,
    pub mail_max_attempts: u32,
    #[serde(serialize_with = "show::secs")]
    pub mail_poll_interval: Duration,
    #[serde(serialize_with = "show::secs")]
    pub password_reset_ttl: Duration,
    #[serde(serialize_with = "show::secs")]
    pub email_verification_ttl: Duration,
    #[serde(serialize_with = "show::secs")]
    pub passwordless_ttl: Duration,
    /// Whether a passwordless sign-in creates the account of an address without one.
    pub passwordless_signup: bool,
    /// `None`: `{public_url}/passwordless?token={token}`.
    pub passwordless_link_url: Option<String>,
    pub rate_limits: bool,
    pub cookie_secure: bool,
    /// `None`: a development key is kept in `latchkey.kek` in the working directory.
    #[serde(serialize_with = "show::opt_redacted")]
    pub key_encryption_key: Option<SecretString>,
    /// Origins (`scheme://host[:port]`) allowed to send unsafe requests.
    pub allowed_origins: Vec<String>,
    #[serde(serialize_with = "show::secs")]
    pub access_token_ttl: Duration,
    #[serde(serialize_with = "show::secs")]
    pub session_idle_timeout: Duration,
    #[serde(serialize_with = "show::secs")]
    pub session_absolute_lifetime: Duration,
    #[serde(serialize_with = "show::secs")]
    pub refresh_grace_period: Duration,
    /// `None`: keys rotate only with `latchkey keys rotate`.
    #[serde(serialize_with = "show::opt_secs")]
    pub key_rotation_interval: Option<Duration>,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub hash_threads: usize,
    /// Hash jobs allowed to wait for a thread; one more is refused with 503 `overloaded`.
    pub hash_queue: usize,
    pub signup_ip_limit: Rate,
    pub login_ip_limit: Rate,
    pub login_failure_ip_limit: Rate,
    /// Failures before the first wait; the wait starts at the period and doubles per failure.
    pub login_failure_account_limit: Rate,
    pub refresh_ip_limit: Rate,
    pub forgot_address_limit: Rate,
    pub forgot_ip_limit: Rate,
    pub reset_ip_limit: Rate,
    pub verify_ip_limit: Rate,
    pub verify_resend_account_limit: Rate,
    pub passkey_ip_limit: Rate,
    /// Peers whose `X-Forwarded-For` is believed; empty: the socket peer is the client.
    #[serde(serialize_with = "show::displays")]
    pub trusted_proxies: Vec<IpNet>,
    /// SIGTERM to closing the port: `/readyz` answers 503 meanwhile, requests are still served.
    #[serde(serialize_with = "show::secs")]
    pub drain_period: Duration,
    /// Acquiring a PostgreSQL connection, and /readyz's probe (see `Store::connect`).
    #[serde(serialize_with = "show::millis", rename = "database_timeout_ms")]
    pub database_timeout: Duration,
    /// `None`: /metrics is served on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    #[serde(serialize_with = "show::secs")]
    pub metrics_refresh: Duration,
    /// `None`: audit events are kept forever.
    #[serde(serialize_with = "show::opt_secs")]
    pub audit_retention: Option<Duration>,
    #[serde(serialize_with = "show::secs")]
    pub request_timeout: Duration,
    #[serde(serialize_with = "show::secs")]
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub conceal_existing_accounts: bool,
    /// `None`: metadata is any object of at most 4 KiB.
    pub profile_schema: Option<PathBuf>,
    /// Keys of `app_metadata` copied into access tokens.
    pub token_claims: Vec<String>,
    /// Where webhook events go, each with its secrets (redacted here) and filter.
    pub webhooks: Vec<Endpoint>,
    pub webhook_max_attempts: u32,
    /// The OpenID Connect providers of the login page's buttons, in their configured order.
    pub oidc_providers: Vec<crate::oidc::Provider>,
    #[serde(serialize_with = "show::millis", rename = "webhook_retry_base_ms")]
    pub webhook_retry_base: Duration,
    #[serde(serialize_with = "show::secs")]
    pub webhook_timeout: Duration,
    pub insecure_dev: bool,
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
        let trusted_proxies = o
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(parse_proxy)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let hash_threads = o.hash_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        });
        let secs = Duration::from_secs;
        let settings = Settings {
            listen: o
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            database_url: SecretString::from(
                o.database_url
                    .unwrap_or_else(|| "sqlite://latchkey.db".to_owned()),
            ),
            sqlite_durability: o.sqlite_synchronous.unwrap_or_default(),
            public_url,
            smtp_url: o.smtp_url.map(SecretString::from),
            mail_from: o
                .mail_from
                .unwrap_or_else(|| "latchkey@localhost".to_owned()),
            mail_templates: o.mail_templates,
            pages: o.pages.unwrap_or(Toggle::On) == Toggle::On,
            pages_templates: o.pages_templates,
            reset_link_url: o
                .reset_link_url
                .map(|u| link_template("reset_link_url", u))
                .transpose()?,
            verify_link_url: o
                .verify_link_url
                .map(|u| link_template("verify_link_url", u))
                .transpose()?,
            mail_throttle: secs(o.mail_throttle.unwrap_or(60)),
            mail_max_attempts: o.mail_max_attempts.unwrap_or(8),
            mail_poll_interval: secs(o.mail_poll_interval.unwrap_or(5)),
            password_reset_ttl: secs(o.password_reset_ttl.unwrap_or(30 * 60)),
            email_verification_ttl: secs(o.email_verification_ttl.unwrap_or(24 * 3600)),
            passwordless_ttl: secs(o.passwordless_ttl.unwrap_or(10 * 60)),
            passwordless_signup: o.passwordless_signup.unwrap_or(false),
            passwordless_link_url: o
                .passwordless_link_url
                .map(|u| link_template("passwordless_link_url", u))
                .transpose()?,
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
            hash_threads,
            // Four waiting jobs per thread: a few hundred milliseconds of queue at the default
            // cost, after which waiting longer helps nobody and 503 tells clients to back off.
            hash_queue: o.hash_queue.unwrap_or(4 * hash_threads),
            signup_ip_limit: o.signup_ip_limit.unwrap_or(Rate::per_minute(20)),
            login_ip_limit: o.login_ip_limit.unwrap_or(Rate::per_minute(30)),
            login_failure_ip_limit: o.login_failure_ip_limit.unwrap_or(Rate::per_minute(10)),
            login_failure_account_limit: o
                .login_failure_account_limit
                .unwrap_or(Rate::new(5, secs(5 * 60))),
            refresh_ip_limit: o.refresh_ip_limit.unwrap_or(Rate::new(150, secs(5 * 60))),
            forgot_address_limit: o.forgot_address_limit.unwrap_or(Rate::per_minute(5)),
            forgot_ip_limit: o.forgot_ip_limit.unwrap_or(Rate::per_minute(20)),
            reset_ip_limit: o.reset_ip_limit.unwrap_or(Rate::per_minute(10)),
            verify_ip_limit: o.verify_ip_limit.unwrap_or(Rate::per_minute(10)),
            passkey_ip_limit: o.passkey_ip_limit.unwrap_or(Rate::per_minute(30)),
            verify_resend_account_limit: o
                .verify_resend_account_limit
                .unwrap_or(Rate::new(3, secs(15 * 60))),
            trusted_proxies,
            drain_period: secs(o.drain_period.unwrap_or(5)),
            database_timeout: o.database_timeout.map_or(secs(1), Period::get),
            metrics_listen: o.metrics_listen,
            metrics_refresh: o.metrics_refresh.map_or(secs(30), Period::get),
            // A year: long enough to answer "who did what to this account" for most disputes,
            // short enough that IPs and user agents of people do not pile up for ever.
            audit_retention: Some(o.audit_retention.map_or(secs(365 * 86_400), Period::get))
                .filter(|d| !d.is_zero()),
            request_timeout: secs(o.request_timeout.unwrap_or(10)),
            header_read_timeout: secs(o.header_read_timeout.unwrap_or(30)),
            max_header_bytes: o.max_header_bytes.unwrap_or(16 * 1024),
            max_connections: o.max_connections.unwrap_or(512),
            conceal_existing_accounts: o.conceal_existing_accounts.unwrap_or(false),
            profile_schema: o.profile_schema,
            token_claims: token_claims(o.token_claims)?,
            webhooks: endpoint::resolve(
                o.webhook_url,
                o.webhook_secret.as_deref(),
                o.webhook_events,
                o.webhooks,
            )?,
            webhook_max_attempts: o.webhook_max_attempts.unwrap_or(12),
            oidc_providers: crate::oidc::settings::resolve(o.oidc_providers, o.insecure_dev)?,
            webhook_retry_base: Duration::from_millis(o.webhook_retry_base_ms.unwrap_or(30_000)),
            webhook_timeout: secs(o.webhook_timeout.unwrap_or(10)),
            insecure_dev: o.insecure_dev,
        };
        settings.refuse_insecure_production()?;
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
        if settings.request_timeout.is_zero() || settings.header_read_timeout.is_zero() {
            bail!("request_timeout and header_read_timeout must be positive");
        }
        if settings.database_timeout.is_zero() || settings.metrics_refresh.is_zero() {
            bail!("database_timeout and metrics_refresh must be positive");
        }
        if settings.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        if settings.max_header_bytes < 1024 {
            bail!("max_header_bytes must be at least 1024");
        }
        if settings.password_reset_ttl.is_zero()
            || settings.email_verification_ttl.is_zero()
            || settings.passwordless_ttl.is_zero()
        {
            bail!(
                "password_reset_ttl, email_verification_ttl and passwordless_ttl must be positive"
            );
        }
        if settings.mail_max_attempts == 0 || settings.mail_poll_interval.is_zero() {
            bail!("mail_max_attempts and mail_poll_interval must be at least 1");
        }
        if settings.webhook_max_attempts == 0
            || settings.webhook_retry_base.is_zero()
            || settings.webhook_timeout.is_zero()
        {
            bail!(
                "webhook_max_attempts, webhook_retry_base_ms and webhook_timeout must be positive"
            );
        }
        // A delivery must end well inside its claim's lease, or another worker would claim the
        // row again while the first may still succeed: a duplicate without any crash.
        if settings.webhook_timeout >= crate::webhooks::worker::LEASE / 2 {
            bail!("webhook_timeout must be shorter than 150 seconds");
        }
        Ok(settings)
    }

    /// A public URL other than localhost means production: there, cookies must be `Secure`, the
    /// signing keys sealed with a configured key-encryption key (the development KEK lives in a
    /// file next to the process), and emails delivered over SMTP (without it they are logged,
    /// live reset links included). `--insecure-dev` overrides this, for a test deployment.
    fn refuse_insecure_production(&self) -> anyhow::Result<()> {
        let local = matches!(
            self.public_url.host_str(),
            Some("localhost" | "127.0.0.1" | "[::1]")
        );
        if local || self.insecure_dev {
            return Ok(());
        }
        if !self.cookie_secure {
            bail!(
                "cookie_secure = false with the public URL {}: refusing to run an insecure production \
                 set-up (pass --insecure-dev to allow it)",
                self.public_url
            );
        }
        if self.smtp_url.is_none() {
            bail!(
                "no smtp_url with the public URL {}: emails, reset links included, would be written \
                 to the log; configure LATCHKEY_SMTP_URL (pass --insecure-dev to log them)",
                self.public_url
            );
        }
        if self.key_encryption_key.is_none() {
            bail!(
                "no key_encryption_key with the public URL {}: configure LATCHKEY_KEY_ENCRYPTION_KEY \
                 (pass --insecure-dev to use a development key)",
                self.public_url
            );
        }
        Ok(())
    }

    /// The JWT issuer and audience: the public URL, without a trailing slash.
    pub fn issuer(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_owned()
    }
}

/// A database or SMTP URL as it may be shown: its password replaced.
pub fn redacted_url(raw: &str) -> String {
    show::redact_url(raw)
}

/// A link template of an app's own page: an http(s) URL with `{token}` where the token goes.
fn link_template(name: &str, template: String) -> anyhow::Result<String> {
    if !template.contains("{token}") {
        bail!("{name} must contain {{token}}");
    }
    let url = Url::parse(&template.replace("{token}", "T"))
        .with_context(|| format!("{name} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        bail!("{name} must be an http:// or https:// URL with a host");
    }
    Ok(template)
}

/// The `token_claims` list: names of `app_metadata` keys, none of them a claim the access token
/// already has (or will have: `amr`, `aal`), none twice.
fn token_claims(raw: Option<Vec<String>>) -> anyhow::Result<Vec<String>> {
    let mut claims: Vec<String> = Vec::new();
    for name in raw.unwrap_or_default() {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        if crate::tokens::RESERVED_CLAIMS.contains(&name) {
            bail!("token_claims may not include {name:?}: the access token sets that claim itself");
        }
        if claims.iter().any(|c| c == name) {
            bail!("token_claims lists {name:?} twice");
        }
        claims.push(name.to_owned());
    }
    Ok(claims)
}

/// `scheme://host[:port]` as browsers send it in `Origin`.
fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// A trusted proxy: a CIDR range, or one address.
fn parse_proxy(proxy: &str) -> anyhow::Result<IpNet> {
    proxy
        .parse::<IpNet>()
        .or_else(|_| proxy.parse::<IpAddr>().map(IpNet::from))
        .with_context(|| {
            format!("trusted proxy {proxy:?} is neither an IP address nor a CIDR range")
        })
}

/// A rate limit as configured: at most `max` events per `period`, written `COUNT/PERIOD` with the
/// period in seconds, minutes or hours (`20/1m`, `150/5m`, `5/30s`, `3/1h`; a bare number is
/// seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Rate {
    pub max: u32,
    pub period: Duration,
}

impl Rate {
    pub const fn new(max: u32, period: Duration) -> Rate {
        Rate { max, period }
    }

    pub const fn per_minute(max: u32) -> Rate {
        Rate::new(max, Duration::from_secs(60))
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let bad =
            || format!("{s:?} is not a rate such as 20/1m (COUNT/PERIOD, period in s, m or h)");
        let (max, period) = s.trim().split_once('/').ok_or_else(bad)?;
        let max: u32 = max.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        let (number, unit) = match period.char_indices().last() {
            Some((i, 's')) => (&period[..i], 1),
            Some((i, 'm')) => (&period[..i], 60),
            Some((i, 'h')) => (&period[..i], 3600),
            _ => (period, 1),
        };
        let number: u64 = match number {
            "" => 1,
            n => n.parse().map_err(|_| bad())?,
        };
        if max == 0 || number == 0 {
            return Err(format!("{s:?}: the count and the period must be positive"));
        }
        Ok(Rate::new(
            max,
            Duration::from_secs(number.saturating_mul(unit)),
        ))
    }
}

impl TryFrom<String> for Rate {
    type Error = String;

    fn try_from(s: String) -> Result<Rate, String> {
        s.parse()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.max, self.period.as_secs())
    }
}

/// A duration as configured: a number with a unit, `ms`, `s`, `m`, `h` or `d` (`300ms`, `1s`,
/// `365d`); a bare number is seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "PeriodText")]
pub struct Period(Duration);

impl Period {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for Period {
    type Err = String;

    fn from_str(s: &str) -> Result<Period, String> {
        let bad = || format!("{s:?} is not a duration such as 300ms, 1s, 5m, 2h or 365d");
        let text = s.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let millis = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        Ok(Period(Duration::from_millis(number.saturating_mul(millis))))
    }
}

/// A TOML file may give a duration as a string (`"300ms"`) or as a number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum PeriodText {
    Text(String),
    Secs(u64),
}

impl TryFrom<PeriodText> for Period {
    type Error = String;

    fn try_from(value: PeriodText) -> Result<Period, String> {
        match value {
            PeriodText::Text(text) => text.parse(),
            PeriodText::Secs(secs) => Ok(Period(Duration::from_secs(secs))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_units_and_operations_have_their_defaults() {
        for (text, millis) in [
            ("300ms", 300),
            ("1s", 1000),
            ("2", 2000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("365d", 31_536_000_000),
            ("0", 0),
        ] {
            assert_eq!(
                text.parse::<Period>(),
                Ok(Period(Duration::from_millis(millis))),
                "{text}"
            );
        }
        for bad in ["", "ms", "1.5s", "-1s", "1w", "s1"] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
        let file: Overrides =
            toml::from_str("database_timeout = \"250ms\"\naudit_retention = 0\n").unwrap();
        let s = Settings::resolve(file).unwrap();
        assert_eq!(s.database_timeout, Duration::from_millis(250));
        assert_eq!(s.audit_retention, None, "0 keeps audit events forever");
        let s = Settings::resolve(Overrides::default()).unwrap();
        assert_eq!(s.database_timeout, Duration::from_secs(1));
        assert_eq!(s.metrics_refresh, Duration::from_secs(30));
        assert_eq!(s.audit_retention, Some(Duration::from_secs(365 * 86_400)));
        assert_eq!(s.metrics_listen, None);
        assert!(
            Settings::resolve(Overrides {
                database_timeout: Some("0ms".parse().unwrap()),
                ..Overrides::default()
            })
            .is_err()
        );
    }

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
        assert_eq!(s.password_reset_ttl, Duration::from_secs(30 * 60));
        assert_eq!(s.email_verification_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(s.mail_throttle, Duration::from_secs(60));
        assert_eq!(s.mail_max_attempts, 8);
        assert_eq!(s.mail_poll_interval, Duration::from_secs(5));
        assert!(s.mail_templates.is_none());
        assert!(s.profile_schema.is_none() && s.token_claims.is_empty() && s.webhooks.is_empty());
        assert_eq!(s.webhook_max_attempts, 12);
        assert_eq!(s.webhook_retry_base, Duration::from_secs(30));
        assert_eq!(s.webhook_timeout, Duration::from_secs(10));
        assert!(
            Settings::resolve(Overrides {
                webhook_timeout: Some(150),
                ..Overrides::default()
            })
            .is_err()
        );
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: Overrides = toml::from_str(
            "listen = \"0.0.0.0:9000\"\npublic_url = \"https://file.example\"\ncookie_secure = false\ninsecure_dev = true\n\
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
            Overrides {
                public_url: Some("https://auth.example.com".into()),
                cookie_secure: Some(false),
                key_encryption_key: Some(crate::keys::Kek::generate_encoded()),
                ..Overrides::default()
            },
            Overrides {
                public_url: Some("https://auth.example.com".into()),
                ..Overrides::default()
            },
            Overrides {
                password_reset_ttl: Some(0),
                ..Overrides::default()
            },
            Overrides {
                mail_max_attempts: Some(0),
                ..Overrides::default()
            },
        ] {
            assert!(Settings::resolve(bad).is_err());
        }
    }

    #[test]
    fn production_needs_smtp_unless_insecure_dev() {
        let production = |smtp: Option<&str>, insecure_dev: bool| {
            Settings::resolve(Overrides {
                public_url: Some("https://auth.example.com".into()),
                key_encryption_key: Some(crate::keys::Kek::generate_encoded()),
                smtp_url: smtp.map(str::to_owned),
                insecure_dev,
                ..Overrides::default()
            })
        };
        let err = production(None, false).err().unwrap().to_string();
        assert!(
            err.starts_with("no smtp_url with the public URL https://auth.example.com/"),
            "{err}"
        );
        assert!(production(Some("smtp://relay:25"), false).is_ok());
        assert!(production(None, true).is_ok());
        // Development on localhost logs emails, as before.
        assert!(Settings::resolve(Overrides::default()).is_ok());
    }

    #[test]
    fn token_claims_never_shadow_the_token_s_own_claims() {
        let with = |claims: &[&str]| {
            Settings::resolve(Overrides {
                token_claims: Some(claims.iter().map(|c| (*c).to_owned()).collect()),
                ..Overrides::default()
            })
        };
        assert_eq!(
            with(&["plan", " org "]).unwrap().token_claims,
            ["plan", "org"]
        );
        for reserved in [
            "iss", "aud", "sub", "sid", "exp", "iat", "jti", "amr", "aal",
        ] {
            assert!(with(&["plan", reserved]).is_err(), "{reserved}");
        }
        assert!(with(&["plan", "plan"]).is_err());
    }

    #[test]
    fn abuse_protections_have_the_documented_defaults() {
        let s = Settings::resolve(Overrides {
            hash_threads: Some(3),
            ..Overrides::default()
        })
        .unwrap();
        let rate = |max, secs| Rate::new(max, Duration::from_secs(secs));
        assert_eq!(s.signup_ip_limit, rate(20, 60));
        assert_eq!(s.login_ip_limit, rate(30, 60));
        assert_eq!(s.login_failure_ip_limit, rate(10, 60));
        assert_eq!(s.login_failure_account_limit, rate(5, 300));
        assert_eq!(s.refresh_ip_limit, rate(150, 300));
        assert_eq!(s.forgot_address_limit, rate(5, 60));
        assert_eq!(s.forgot_ip_limit, rate(20, 60));
        assert_eq!(s.reset_ip_limit, rate(10, 60));
        assert_eq!(s.verify_ip_limit, rate(10, 60));
        assert_eq!(s.verify_resend_account_limit, rate(3, 900));
        assert_eq!(s.hash_queue, 12);
        assert!(s.trusted_proxies.is_empty());
        assert_eq!(s.request_timeout, Duration::from_secs(10));
        assert_eq!(s.header_read_timeout, Duration::from_secs(30));
        assert_eq!((s.max_header_bytes, s.max_connections), (16 * 1024, 512));
        assert!(!s.conceal_existing_accounts);
    }

    #[test]
    fn rates_and_trusted_proxies_parse_from_every_source() {
        for (text, max, secs) in [
            ("20/1m", 20, 60),
            ("150/5m", 150, 300),
            ("5/30s", 5, 30),
            ("3/1h", 3, 3600),
            ("7/45", 7, 45),
            (" 10 / m ", 10, 60),
        ] {
            assert_eq!(
                text.parse::<Rate>(),
                Ok(Rate::new(max, Duration::from_secs(secs))),
                "{text}"
            );
        }
        for bad in ["", "20", "0/1m", "5/0s", "x/1m", "5/1d", "-1/1m"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        let file: Overrides = toml::from_str(
            "login_ip_limit = \"3/1m\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "latchkey",
            "--signup-ip-limit",
            "2/10s",
            "--trusted-proxies",
            "192.0.2.1,2001:db8::/32",
        ])
        .unwrap();
        let s = Settings::resolve(cli.overrides.or(file)).unwrap();
        assert_eq!(s.login_ip_limit, Rate::new(3, Duration::from_secs(60)));
        assert_eq!(s.signup_ip_limit, Rate::new(2, Duration::from_secs(10)));
        let proxies: Vec<String> = s.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(proxies, ["192.0.2.1/32", "2001:db8::/32"]);
        assert!(toml::from_str::<Overrides>("login_ip_limit = \"lots\"").is_err());
        assert!(
            Settings::resolve(Overrides {
                trusted_proxies: Some(vec!["proxy.example".into()]),
                ..Overrides::default()
            })
            .is_err()
        );
    }
}

/// How settings are shown to an operator: durations in seconds, secrets redacted (a URL keeps all
/// but its password).
mod show {
    use std::fmt::Display;
    use std::time::Duration;

    use secrecy::{ExposeSecret, SecretString};
    use serde::Serializer;

    pub fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn url<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact_url(secret.expose_secret()))
    }

    pub fn opt_url<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
        match secret {
            Some(secret) => url(secret, s),
            None => s.serialize_none(),
        }
    }

    pub fn opt_redacted<S: Serializer>(
        secret: &Option<SecretString>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match secret {
            Some(_) => s.serialize_str("<redacted>"),
            None => s.serialize_none(),
        }
    }

    pub fn display<S: Serializer, T: Display>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn displays<S: Serializer, T: Display>(values: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(values.iter().map(ToString::to_string))
    }

    /// A URL with its password replaced.
    pub fn redact_url(raw: &str) -> String {
        match url::Url::parse(raw) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("redacted"));
                url.to_string()
            }
            Ok(url) => url.to_string(),
            Err(_) => "<unparseable>".to_owned(),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::redact_url;

        #[test]
        fn passwords_in_urls_are_redacted() {
            assert_eq!(
                redact_url("postgres://app:s3cret@db:5432/x"),
                "postgres://app:redacted@db:5432/x"
            );
            assert_eq!(redact_url("sqlite://latchkey.db"), "sqlite://latchkey.db");
            assert_eq!(redact_url("smtp://mail:25"), "smtp://mail:25");
        }
    }
}
