//! An email address as the contract defines it: trimmed, valid, at most 254 characters, unique
//! case-insensitively. It is stored as given and compared through its normalized (lowercase) form.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    as_given: String,
    normalized: String,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("is required");
        }
        if trimmed.chars().count() > 254 {
            return Err("must be at most 254 characters");
        }
        if !email_address::EmailAddress::is_valid(trimmed) {
            return Err("is not a valid email address");
        }
        // The RFC allows addresses no mail system delivers to; refuse the ones users mistype.
        let (local, domain) = trimmed
            .rsplit_once('@')
            .ok_or("is not a valid email address")?;
        if local.starts_with('"')
            || !domain.contains('.')
            || domain.starts_with('[')
            || domain.ends_with('.')
        {
            return Err("is not a valid email address");
        }
        Ok(Email {
            as_given: trimmed.to_owned(),
            normalized: trimmed.to_lowercase(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.as_given
    }

    /// The form uniqueness is decided on.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The part before the `@`, lowercased, for the easily-guessed-password check.
    pub fn local_part(&self) -> &str {
        self.normalized
            .rsplit_once('@')
            .map_or("", |(local, _)| local)
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn accepts_and_normalizes_valid_addresses() {
        let email = Email::parse("  Alice@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Alice@Example.COM");
        assert_eq!(email.normalized(), "alice@example.com");
        assert_eq!(email.local_part(), "alice");
        assert!(Email::parse("first.last+tag@sub.example.co.uk").is_ok());
    }

    #[test]
    fn rejects_invalid_addresses() {
        let long = format!("{}@example.com", "a".repeat(243));
        for (raw, why) in [
            ("", "empty"),
            ("   ", "blank"),
            ("alice", "no @"),
            ("alice@", "no domain"),
            ("@example.com", "no local part"),
            ("alice@localhost", "domain without a dot"),
            ("alice@@example.com", "two @"),
            ("al ice@example.com", "space inside"),
            ("alice@example.com.", "trailing dot"),
            ("\"a b\"@example.com", "quoted local part"),
            ("alice@[127.0.0.1]", "address literal"),
            (long.as_str(), "255 characters"),
        ] {
            assert!(Email::parse(raw).is_err(), "{why}: {raw:?} was accepted");
        }
    }

    #[test]
    fn accepts_exactly_254_characters() {
        let domain = format!(
            "{}.{}.{}.com",
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(57)
        );
        let raw = format!("{}@{domain}", "a".repeat(64));
        assert_eq!(raw.len(), 254);
        assert!(Email::parse(&raw).is_ok());
        assert_eq!(
            Email::parse(&format!("a{raw}")),
            Err("must be at most 254 characters")
        );
    }
}
