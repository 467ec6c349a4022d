//! Kinds of your own: a `KindDefinition` registers a kind at run time, served by every API
//! replica with the same generic handlers as the built-in kinds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use threeport_core::ApiObject;
use threeport_core::ValidationError;
use utoipa::ToSchema;

/// A kind of your own (Kubernetes' CustomResourceDefinition): its name, where it is served,
/// the JSON Schema (2020-12) of its spec, and which spec fields reference other objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KindDefinition {
    /// The kind's name, PascalCase (`Certificate`); not a built-in kind's.
    pub kind: String,
    /// Its URL segment under `/v0/` (`certificates`); default: the kind in kebab case,
    /// pluralized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plural: Option<String>,
    /// JSON Schema (draft 2020-12) every spec of the kind must satisfy. A change is refused
    /// while an existing object would not satisfy it.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// Top-level spec fields that hold the id of another object, field → that object's
    /// kind: they become the object's references (relations, owners' cascades, `?ref=`).
    #[serde(default)]
    pub references: BTreeMap<String, String>,
    /// Dotted spec paths whose values are kept encrypted at rest (`credentials.password`).
    #[serde(default)]
    pub sealed_fields: Vec<String>,
    /// A top-level spec field for secret values (an object of strings), outside the schema:
    /// accepted on create, taken out of the spec before it is checked and stored, and handed
    /// to the kind's reconcilers with the creation's notification, in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_field: Option<String>,
}

impl KindDefinition {
    /// The URL segment it is served at.
    pub fn plural(&self) -> String {
        self.plural
            .clone()
            .unwrap_or_else(|| crate::plural_path(&self.kind))
    }
}

/// `Certificate`, `TlsCertificate2`: PascalCase ASCII, at most 63 characters.
fn is_kind_name(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}

impl ApiObject for KindDefinition {
    const KIND: &'static str = "KindDefinition";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        if !is_kind_name(&self.kind) {
            return Err(ValidationError::new(
                "kind",
                "must be PascalCase ASCII letters and digits (`Certificate`), at most 63",
            ));
        }
        let plural = self.plural();
        let plural_ok = plural.len() <= 63
            && plural.starts_with(|c: char| c.is_ascii_lowercase())
            && plural
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !plural_ok {
            return Err(ValidationError::new(
                "plural",
                "must be lower-case letters, digits and dashes (`certificates`), at most 63",
            ));
        }
        if !self.schema.is_object() {
            return Err(ValidationError::new(
                "schema",
                "must be a JSON Schema (an object)",
            ));
        }
        for (field, kind) in &self.references {
            let field_ok =
                !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !field_ok {
                return Err(ValidationError::new(
                    format!("references.{field}"),
                    "must name a top-level spec field",
                ));
            }
            if !is_kind_name(kind) {
                return Err(ValidationError::new(
                    format!("references.{field}"),
                    "must be a kind name (`KubernetesRuntimeInstance`)",
                ));
            }
        }
        if let Some(field) = &self.secret_field {
            let field_ok =
                !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !field_ok {
                return Err(ValidationError::new(
                    "secret_field",
                    "must name a top-level spec field (letters, digits and `_`)",
                ));
            }
            let taken = self.references.contains_key(field)
                || self
                    .sealed_fields
                    .iter()
                    .any(|p| p.split('.').next() == Some(field.as_str()));
            if taken {
                return Err(ValidationError::new(
                    "secret_field",
                    format!(
                        "{field:?} is a reference or sealed field: secret values are never stored"
                    ),
                ));
            }
        }
        for (i, path) in self.sealed_fields.iter().enumerate() {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(ValidationError::new(
                    format!("sealed_fields[{i}]"),
                    "must be a dotted spec path (`credentials.password`)",
                ));
            }
        }
        Ok(())
    }
}
