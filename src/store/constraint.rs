//! Unique violations, told apart by constraint: the database decides uniqueness, and the store
//! turns its "no" into the outcome of the use case (a taken address is `EmailTaken`, not a 500).
//!
//! PostgreSQL names the violated constraint; SQLite only says which columns
//! (`UNIQUE constraint failed: users.email_normalized`), so each constraint knows both forms.

/// The unique constraints a use case expects to be violated now and then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constraint {
    /// One account per address (`users.email_normalized`).
    UserEmail,
    /// One registration per authenticator credential (`passkeys.credential_id`).
    PasskeyCredential,
    /// One user per provider account (`identities (provider, subject)`).
    Identity,
}

impl Constraint {
    fn postgres_name(self) -> &'static str {
        match self {
            Constraint::UserEmail => "users_email_normalized_key",
            Constraint::PasskeyCredential => "passkeys_credential_id_key",
            Constraint::Identity => "identities_provider_subject_key",
        }
    }

    fn sqlite_columns(self) -> &'static str {
        match self {
            Constraint::UserEmail => "users.email_normalized",
            Constraint::PasskeyCredential => "passkeys.credential_id",
            Constraint::Identity => "identities.provider, identities.subject",
        }
    }

    /// Whether `err` is a violation of this constraint.
    pub fn violated_by(self, err: &sqlx::Error) -> bool {
        let sqlx::Error::Database(e) = err else {
            return false;
        };
        if !e.is_unique_violation() {
            return false;
        }
        match e.constraint() {
            Some(name) => name == self.postgres_name(),
            None => e
                .message()
                .strip_prefix("UNIQUE constraint failed: ")
                .is_some_and(|columns| columns == self.sqlite_columns()),
        }
    }
}
