//! Terraform for what threeport's own controllers do not cover.
//!
//! A `TerraformInstance` runs its definition's configuration with its variables, as its AWS
//! account (credentials handed to Terraform as environment, never written to disk): `init`,
//! `plan` to a saved plan, `apply` of exactly that plan, `output -json`. The state lives with
//! threeport ([`state`]), reached by Terraform through an HTTP backend each controller process
//! serves on loopback ([`backend`]), so any replica can take an instance over and two can never
//! apply at once. With manual approval the run stops at the plan, its summary in status, until
//! `POST /v0/terraform-instances/{id}/approve` names it; a plan made stale by a change is
//! planned again. Deleting the instance runs `destroy` and forgets the state.

pub mod backend;
pub mod cli;
pub mod state;

#[cfg(feature = "aws")]
mod reconciler;

use threeport_api::model::{TerraformDefinition, TerraformInstance};

#[cfg(feature = "aws")]
pub use reconciler::{APPLIED, TerraformConfig, TerraformReconciler};

/// Digest of what an instance's plan is made from: the configuration, the variables and the
/// account. A plan made from other inputs is stale.
pub fn inputs_digest(definition: &TerraformDefinition, instance: &TerraformInstance) -> String {
    let inputs = serde_json::json!({
        "files": definition.configuration_files,
        "account": instance.account(definition),
        "variables": instance.variables,
    });
    let digest = ring::digest::digest(&ring::digest::SHA256, inputs.to_string().as_bytes());
    hex::encode(&digest.as_ref()[..16])
}

/// The field a sensitive output `name` is sealed under (the sealing is bound to it).
pub fn output_field(name: &str) -> String {
    format!("status.details.outputs.{name}")
}
