//! Threeport's object model: every kind the control plane serves, as Rust types with real
//! enums and Threeport's defaults. Definitions hold reusable configuration; instances reference
//! a definition and say where it runs.

mod aws;
mod custom;
mod network;
mod runtime;
mod support;
mod terraform;
mod workload;

use threeport_core::object::Reference;
use threeport_core::{ApiObject, ObjectId, ValidationError};

pub use aws::*;
pub use custom::*;
pub use network::*;
pub use runtime::*;
pub use support::*;
pub use terraform::*;
pub use workload::*;

/// A reference from `field` to an object of kind `T`.
fn reference<T: ApiObject>(field: &str, id: ObjectId) -> Reference {
    Reference::new(field, T::KIND, id)
}

/// An optional reference, present when `id` is.
fn maybe_reference<T: ApiObject>(field: &str, id: Option<ObjectId>) -> Option<Reference> {
    id.map(|id| reference::<T>(field, id))
}

fn require(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    Ok(())
}

/// A DNS-1123 label, as Kubernetes names namespaces, services and service accounts.
fn dns_label(field: &str, value: &str) -> Result<(), ValidationError> {
    let ok = (1..=63).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("{value:?} must be 1-63 lower-case letters, digits and '-', not at either end"),
        ))
    }
}

/// A domain name: dot-separated DNS labels.
fn domain(field: &str, value: &str) -> Result<(), ValidationError> {
    let ok = value.len() <= 253
        && value.contains('.')
        && value
            .split('.')
            .all(|label| dns_label(field, label).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("{value:?} is not a domain name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_rules() {
        assert!(dns_label("f", "web-1").is_ok());
        assert!(dns_label("f", "Web").is_err());
        assert!(dns_label("f", "-a").is_err());
        assert!(domain("f", "example.com").is_ok());
        assert!(domain("f", "localhost").is_err());
    }
}
