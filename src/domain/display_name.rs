//! A profile's display name: trimmed, 1 to 100 characters, no control characters. An empty or
//! blank name means "no name".

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// `Ok(None)` for a blank name.
    pub fn parse(raw: &str) -> Result<Option<DisplayName>, &'static str> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        if trimmed.chars().count() > 100 {
            return Err("must be at most 100 characters");
        }
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Some(DisplayName(trimmed.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::DisplayName;

    #[test]
    fn parses_names() {
        assert_eq!(
            DisplayName::parse("  Ada Lovelace ")
                .unwrap()
                .unwrap()
                .as_str(),
            "Ada Lovelace"
        );
        assert_eq!(DisplayName::parse("   ").unwrap(), None);
        assert!(DisplayName::parse(&"é".repeat(100)).unwrap().is_some());
        assert_eq!(
            DisplayName::parse(&"é".repeat(101)),
            Err("must be at most 100 characters")
        );
        assert_eq!(
            DisplayName::parse("a\u{0}b"),
            Err("must not contain control characters")
        );
    }
}
