//! Terraform: a configuration (`TerraformDefinition`) applied with variables in an AWS account
//! (`TerraformInstance`), its plan readable before it applies, its outputs in status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use threeport_core::object::Reference;
use threeport_core::{ApiObject, ObjectId, ValidationError};
use utoipa::ToSchema;

use super::{AwsAccount, maybe_reference, reference};

/// Whether a plan applies by itself or waits for someone to approve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TerraformApproval {
    /// Apply every plan as soon as it is made.
    #[default]
    Auto,
    /// Stop at a plan with changes; `POST /v0/terraform-instances/{id}/approve` applies it.
    Manual,
}

/// A Terraform configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerraformDefinition {
    /// File name (`main.tf`, `outputs.tf.json`) → content.
    pub configuration_files: BTreeMap<String, String>,
    /// The account it applies in: its credentials are Terraform's environment.
    #[schema(value_type = String, format = Uuid)]
    pub aws_account: ObjectId,
    /// Whether its instances' plans apply by themselves (an instance may say otherwise).
    #[serde(default)]
    pub approval: TerraformApproval,
}

impl ApiObject for TerraformDefinition {
    const KIND: &'static str = "TerraformDefinition";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        if self.configuration_files.is_empty() {
            return Err(ValidationError::new(
                "configuration_files",
                "at least one file is required",
            ));
        }
        for (name, content) in &self.configuration_files {
            let field = format!("configuration_files.{name}");
            let plain = !name.contains('/') && !name.contains('\\') && !name.starts_with('.');
            if !plain || !(name.ends_with(".tf") || name.ends_with(".tf.json")) {
                return Err(ValidationError::new(
                    field,
                    "must be a plain .tf or .tf.json file name",
                ));
            }
            let syntax = if name.ends_with(".json") {
                serde_json::from_str::<Value>(content)
                    .map(drop)
                    .map_err(|e| (e.line(), e.to_string()))
            } else {
                crate::hcl::check_syntax(content).map_err(|e| (e.line, e.message))
            };
            if let Err((line, message)) = syntax {
                return Err(ValidationError::new(
                    field,
                    format!("{name}:{line}: {message}"),
                ));
            }
        }
        Ok(())
    }
    fn references(&self) -> Vec<Reference> {
        vec![reference::<AwsAccount>("aws_account", self.aws_account)]
    }
}

/// An applied Terraform configuration. Its state is kept by the control plane (Terraform's
/// HTTP backend, sealed at rest); its plan and outputs are in status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerraformInstance {
    /// Its definition.
    #[schema(value_type = String, format = Uuid)]
    pub definition: ObjectId,
    /// Input variables (the CLI's `VarsDocument`, a `.tfvars` file, read into this).
    #[serde(default)]
    pub variables: BTreeMap<String, Value>,
    /// The account it applies in, instead of its definition's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub aws_account: Option<ObjectId>,
    /// Overrides the definition's approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<TerraformApproval>,
    /// The plan someone approved (`status.details.plan.id`); set by `POST …/approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_plan: Option<String>,
}

impl TerraformInstance {
    /// The account it applies in: its own, else its definition's.
    pub fn account(&self, definition: &TerraformDefinition) -> ObjectId {
        self.aws_account.unwrap_or(definition.aws_account)
    }

    /// The approval in force: the instance's, else the definition's.
    pub fn approval(&self, definition: &TerraformDefinition) -> TerraformApproval {
        self.approval.unwrap_or(definition.approval)
    }
}

impl ApiObject for TerraformInstance {
    const KIND: &'static str = "TerraformInstance";
    type Status = TerraformInstanceStatus;
    fn validate(&self) -> Result<(), ValidationError> {
        for name in self.variables.keys() {
            let ok = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(ValidationError::new(
                    format!("variables.{name}"),
                    "is not a Terraform variable name",
                ));
            }
        }
        Ok(())
    }
    fn references(&self) -> Vec<Reference> {
        let mut refs = vec![reference::<TerraformDefinition>(
            "definition",
            self.definition,
        )];
        refs.extend(maybe_reference::<AwsAccount>(
            "aws_account",
            self.aws_account,
        ));
        refs
    }
}

/// What Terraform did for an instance.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct TerraformInstanceStatus {
    /// Digest of the inputs (configuration, variables, account) last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_inputs: Option<String>,
    /// The latest plan: applied, or waiting for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<TerraformPlan>,
    /// The root module's outputs after the last apply; sensitive ones sealed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, TerraformOutput>,
}

/// A plan: what applying it changes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct TerraformPlan {
    /// Identifies the saved plan (a digest of it): what `approve` names.
    pub id: String,
    /// Digest of the inputs it was made from: a plan of other inputs is stale.
    pub inputs: String,
    /// Resources to create.
    pub add: u32,
    /// Resources to update in place.
    pub change: u32,
    /// Resources to destroy (replacements count in `add` and `destroy`).
    pub destroy: u32,
    /// Each resource change, by address.
    #[serde(default)]
    pub changes: Vec<TerraformChange>,
    /// Outputs whose value changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_changes: Vec<String>,
    /// Waiting for `approve` (manual approval).
    #[serde(default)]
    pub awaiting_approval: bool,
    /// Applied.
    #[serde(default)]
    pub applied: bool,
}

/// One resource's planned change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TerraformChange {
    /// Resource address (`terraform_data.web`).
    pub address: String,
    /// `create`, `update`, `delete`, `replace` or `read`.
    pub action: String,
}

/// One output of the root module.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct TerraformOutput {
    /// Marked `sensitive` in the configuration: the value is sealed, not shown.
    #[serde(default)]
    pub sensitive: bool,
    /// The value (non-sensitive outputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// The value, sealed (`sealed:v1:…`; sensitive outputs). `GET
    /// /v0/terraform-instances/{id}/outputs?sensitive=true` opens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}
