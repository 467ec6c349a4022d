//! Equality-based label selectors (`key`, `!key`, `key=value`, `key==value`, `key!=value`),
//! as the in-memory cluster evaluates them.

use serde_json::Value;
use threeport_core::{Error, Result};

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    Absent(String),
    Equals(String, String),
    Differs(String, String),
}

/// A parsed selector: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses `selector`; set-based forms (`in`, `notin`) are refused with a message.
    pub(crate) fn parse(selector: &str) -> Result<Self> {
        let mut requirements = Vec::new();
        for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let requirement = if let Some((key, value)) = part.split_once("!=") {
                Requirement::Differs(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some(key) = part.strip_prefix('!') {
                Requirement::Absent(key.trim().to_owned())
            } else if part.contains(' ') || part.contains('(') {
                return Err(Error::invalid(
                    "labelSelector",
                    format!("{part:?}: only equality-based requirements are supported"),
                ));
            } else {
                Requirement::Exists(part.to_owned())
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether `object`'s labels satisfy every requirement.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels[key].as_str();
        self.0.iter().all(|requirement| match requirement {
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::Absent(key) => label(key).is_none(),
            Requirement::Equals(key, value) => label(key) == Some(value.as_str()),
            Requirement::Differs(key, value) => label(key) != Some(value.as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_requirement_must_hold() {
        let object = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let matches = |s: &str| LabelSelector::parse(s).unwrap().matches(&object);
        assert!(matches("app"));
        assert!(matches("app=web,tier==front"));
        assert!(matches("!owner,app!=db"));
        assert!(!matches("app=db"));
        assert!(!matches("app,!tier"));
        assert!(matches(""));
        assert!(LabelSelector::parse("app in (web)").is_err());
    }
}
