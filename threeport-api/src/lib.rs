//! # threeport-api
//!
//! Threeport's object model ([`model`]) and a typed async [`Client`] for the control plane's
//! REST API, used by controllers, the CLI and the Python bindings.
//!
//! ```no_run
//! # async fn demo() -> Result<(), threeport_api::ClientError> {
//! use threeport_api::Client;
//! use threeport_api::model::{AwsAccount, AwsCredentials};
//!
//! let client = Client::builder("http://127.0.0.1:1323").token("tp_…").build()?;
//! let accounts = client.api::<AwsAccount>();
//! let account = accounts
//!     .create("main", &AwsAccount {
//!         account_id: "123456789012".into(),
//!         default_region: "us-east-1".into(),
//!         default_account: true,
//!         credentials: AwsCredentials::Role {
//!             role_arn: "arn:aws:iam::123456789012:role/threeport".into(),
//!             external_id: None,
//!         },
//!     })
//!     .await?;
//! let all = accounts.list_all(&Default::default()).await?;
//! # let _ = (account, all); Ok(()) }
//! ```

mod client;
pub mod config;
pub mod hcl;
pub mod model;
pub mod remote;

pub use client::{
    BatchObject, Client, ClientBuilder, ClientError, IDEMPOTENCY_KEY, ListParams, Page,
    RawResource, Resource, Retry, WorkloadRequest,
};

/// `WorkloadDefinition` → `workload-definition`: a PascalCase name in kebab case, as the CLI
/// names kinds and URLs name their plurals.
pub fn kebab_case(name: &str) -> String {
    let mut kebab = String::with_capacity(name.len() + 8);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                kebab.push('-');
            }
            kebab.push(c.to_ascii_lowercase());
        } else {
            kebab.push(c);
        }
    }
    kebab
}

/// `WorkloadDefinition` → `workload-definitions`; `AwsAccount` → `aws-accounts`.
pub fn plural_path(kind: &str) -> String {
    let mut kebab = kebab_case(kind);
    if kebab.ends_with('s') || kebab.ends_with('x') {
        kebab.push_str("es");
    } else if let Some(stem) = kebab.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'o', 'u'])
    {
        kebab = format!("{stem}ies");
    } else {
        kebab.push('s');
    }
    kebab
}

#[cfg(test)]
mod tests {
    use super::plural_path;

    #[test]
    fn plurals_are_kebab_case() {
        assert_eq!(plural_path("WorkloadDefinition"), "workload-definitions");
        assert_eq!(plural_path("AwsAccount"), "aws-accounts");
        assert_eq!(plural_path("Gateway"), "gateways");
        assert_eq!(
            plural_path("ObservabilityStackDefinition"),
            "observability-stack-definitions"
        );
        assert_eq!(plural_path("Policy"), "policies");
        assert_eq!(plural_path("Address"), "addresses");
    }
}
