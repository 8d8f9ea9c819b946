//! Values parsed once at the edge. A handler that holds an `Email` or a `NewPassword` knows it is
//! valid: the types have private fields and one constructor each that checks the contract's rules.

mod display_name;
mod email;
pub mod metadata;
mod new_account;
pub mod password;

pub use display_name::DisplayName;
pub use email::Email;
pub use metadata::{Metadata, MetadataRules};
pub use new_account::NewAccount;
pub use password::NewPassword;

use crate::error::FieldErrors;

/// Parses a required field, recording its problem under `name` when it is missing or invalid.
pub fn required<T>(
    errors: &mut FieldErrors,
    name: &str,
    raw: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, &'static str>,
) -> Option<T> {
    match raw.map(parse) {
        Some(Ok(value)) => Some(value),
        Some(Err(problem)) => {
            errors.insert(name.to_owned(), problem.to_owned());
            None
        }
        None => {
            errors.insert(name.to_owned(), "is required".to_owned());
            None
        }
    }
}
