//! A signup request, parsed: every field checked, every problem reported at once.

use secrecy::{ExposeSecret, SecretString};

use super::{DisplayName, Email, NewPassword, required};
use crate::error::FieldErrors;

pub struct NewAccount {
    pub email: Email,
    pub password: NewPassword,
    pub display_name: Option<DisplayName>,
}

impl NewAccount {
    pub fn parse(
        email: Option<&str>,
        password: Option<&SecretString>,
        display_name: Option<&str>,
    ) -> Result<NewAccount, FieldErrors> {
        let mut errors = FieldErrors::new();
        let email = required(&mut errors, "email", email, Email::parse);
        // The password is checked against the email, so only once the email is valid.
        let password = match (&email, password) {
            (Some(email), raw) => required(
                &mut errors,
                "password",
                raw.map(|p| p.expose_secret()),
                |raw| NewPassword::parse(raw, email),
            ),
            (None, None) => required(&mut errors, "password", None, |_| Err("")),
            (None, Some(_)) => None,
        };
        let display_name = match display_name.map(DisplayName::parse) {
            Some(Ok(name)) => name,
            Some(Err(problem)) => {
                errors.insert("display_name".into(), problem.into());
                None
            }
            None => None,
        };
        match (email, password) {
            (Some(email), Some(password)) if errors.is_empty() => Ok(NewAccount {
                email,
                password,
                display_name,
            }),
            _ => Err(errors),
        }
    }
}
