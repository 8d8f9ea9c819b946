//! `profile.metadata`: the app's own fields of a profile, a JSON object checked against the
//! operator's JSON Schema (`profile_schema`, draft 2020-12), or, without one, at most 4 KiB.
//!
//! The schema is read and compiled once at start: a replaced file takes effect at the next start,
//! and a schema that does not compile stops the start with the reason. It can reach nothing
//! outside itself: the validator is built without HTTP or file resolution, so a `$ref` to another
//! document fails the start instead of fetching anything.

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::error::FieldErrors;

/// The cap on metadata without a schema, in bytes of its compact JSON.
pub const MAX_BYTES: usize = 4096;

/// Valid metadata: the object, and its compact JSON text as stored (both made once, at the
/// edge, so that neither the hooks nor the store parse or print it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    text: String,
    value: Value,
}

impl Metadata {
    pub fn empty() -> Metadata {
        Metadata {
            text: "{}".to_owned(),
            value: Value::Object(Default::default()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The object itself, for the application's hooks.
    pub fn value(&self) -> &Value {
        &self.value
    }
}

/// What metadata must be: the operator's schema, or the default cap.
pub struct MetadataRules {
    schema: Option<jsonschema::Validator>,
}

impl MetadataRules {
    /// Reads and compiles the schema at `path`, if any.
    pub fn load(path: Option<&Path>) -> anyhow::Result<MetadataRules> {
        let Some(path) = path else {
            return Ok(MetadataRules { schema: None });
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read profile_schema {}", path.display()))?;
        let schema: Value = serde_json::from_str(&text)
            .with_context(|| format!("profile_schema {} is not JSON", path.display()))?;
        MetadataRules::from_schema(&schema)
            .with_context(|| format!("profile_schema {}", path.display()))
    }

    pub fn from_schema(schema: &Value) -> anyhow::Result<MetadataRules> {
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(schema)
            .map_err(|e| anyhow::anyhow!("is not a valid JSON Schema: {e}"))?;
        Ok(MetadataRules {
            schema: Some(validator),
        })
    }

    /// Checks `value`; every problem at once, keyed `metadata` or `metadata/<pointer>`.
    pub fn parse(&self, value: &Value) -> Result<Metadata, FieldErrors> {
        let mut errors = FieldErrors::new();
        if !value.is_object() {
            errors.insert("metadata".into(), "must be a JSON object".into());
            return Err(errors);
        }
        let text = value.to_string();
        match &self.schema {
            None if text.len() > MAX_BYTES => {
                errors.insert("metadata".into(), "must be at most 4 KiB as JSON".into());
            }
            None => {}
            Some(schema) => {
                for error in schema.iter_errors(value) {
                    let key = format!("metadata{}", error.instance_path().as_str());
                    // Masked: the message names the rule broken, not the value sent.
                    let message = error.masked().to_string();
                    errors
                        .entry(key)
                        .and_modify(|m| {
                            m.push_str("; ");
                            m.push_str(&message);
                        })
                        .or_insert(message);
                }
            }
        }
        if errors.is_empty() {
            Ok(Metadata {
                text,
                value: value.clone(),
            })
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn without_a_schema_any_object_of_at_most_4_kib() {
        let rules = MetadataRules::load(None).unwrap();
        assert_eq!(
            rules.parse(&json!({"a": 1})).unwrap().as_str(),
            r#"{"a":1}"#
        );
        let big = json!({"a": "x".repeat(MAX_BYTES)});
        assert!(rules.parse(&big).unwrap_err().contains_key("metadata"));
        assert!(
            rules
                .parse(&json!([1]))
                .unwrap_err()
                .contains_key("metadata")
        );
    }

    #[test]
    fn a_schema_reports_each_pointer() {
        let rules = MetadataRules::from_schema(&json!({
            "type": "object",
            "properties": {"plan": {"enum": ["free", "pro"]}, "age": {"type": "integer"}},
            "additionalProperties": false,
        }))
        .unwrap();
        assert!(rules.parse(&json!({"plan": "pro", "age": 3})).is_ok());
        let errors = rules
            .parse(&json!({"plan": "gold", "age": "x"}))
            .unwrap_err();
        let keys: Vec<&str> = errors.keys().map(String::as_str).collect();
        assert_eq!(keys, ["metadata/age", "metadata/plan"]);
        assert!(!errors["metadata/plan"].contains("gold"), "{errors:?}");
    }

    #[test]
    fn remote_references_are_refused_at_start() {
        let remote = json!({"$ref": "https://example.com/schema.json"});
        assert!(MetadataRules::from_schema(&remote).is_err());
    }
}
