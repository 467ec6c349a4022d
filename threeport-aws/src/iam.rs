//! [`IamRoles`]: [`Roles`] on AWS IAM.

use async_trait::async_trait;
use aws_sdk_iam::error::ProvideErrorMetadata;
use threeport_core::{Error, Result};

use crate::error::sdk_error;
use crate::{RoleRequest, Roles};

/// Name of the inline policy threeport puts on a role.
const INLINE_POLICY: &str = "threeport";

/// Thumbprint IAM asks for with an OIDC provider. (For EKS issuers IAM verifies against its
/// own trust store and ignores it, but the API requires one.)
const OIDC_THUMBPRINT: &str = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280";

/// IAM of one account (IAM is global: the region only signs requests).
#[derive(Debug, Clone)]
pub struct IamRoles {
    client: aws_sdk_iam::Client,
}

impl IamRoles {
    /// A client for the account of `config` (from [`AwsConnection::sdk_config`]).
    ///
    /// [`AwsConnection::sdk_config`]: crate::AwsConnection::sdk_config
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        IamRoles {
            client: aws_sdk_iam::Client::new(config),
        }
    }
}

/// Checks a role name as IAM does.
pub(crate) fn validate_role_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "role",
            format!("{name:?} is not a valid IAM role name (1-64 letters, digits and +=,.@_-)"),
        ))
    }
}

/// The provider's path as IAM names it: the issuer URL without `https://`.
fn issuer_path(issuer_url: &str) -> &str {
    issuer_url.trim_start_matches("https://")
}

impl IamRoles {
    async fn oidc_provider_arn(&self, issuer_url: &str) -> Result<Option<String>> {
        let listed = self
            .client
            .list_open_id_connect_providers()
            .send()
            .await
            .map_err(|e| sdk_error("oidc_provider", e))?;
        let suffix = format!("oidc-provider/{}", issuer_path(issuer_url));
        Ok(listed
            .open_id_connect_provider_list()
            .iter()
            .filter_map(|p| p.arn())
            .find(|arn| arn.ends_with(&suffix))
            .map(str::to_owned))
    }
}

#[async_trait]
impl Roles for IamRoles {
    async fn ensure_role(&self, request: &RoleRequest) -> Result<String> {
        validate_role_name(&request.name)?;
        let trust = request.trust.policy();
        let created = self
            .client
            .create_role()
            .role_name(&request.name)
            .assume_role_policy_document(&trust)
            .description("created by threeport")
            .send()
            .await;
        let arn = match created {
            Ok(output) => output.role().map(|r| r.arn().to_owned()),
            Err(err) if err.code() == Some("EntityAlreadyExists") => {
                // Ours from an earlier attempt (names are derived from object ids): bring its
                // trust up to date.
                self.client
                    .update_assume_role_policy()
                    .role_name(&request.name)
                    .policy_document(&trust)
                    .send()
                    .await
                    .map_err(|e| sdk_error("role", e))?;
                let existing = self
                    .client
                    .get_role()
                    .role_name(&request.name)
                    .send()
                    .await
                    .map_err(|e| sdk_error("role", e))?;
                existing.role().map(|r| r.arn().to_owned())
            }
            Err(err) => return Err(sdk_error("role", err)),
        };
        for policy in &request.managed_policies {
            self.client
                .attach_role_policy()
                .role_name(&request.name)
                .policy_arn(policy)
                .send()
                .await
                .map_err(|e| sdk_error("role", e))?;
        }
        if let Some(document) = &request.inline_policy {
            self.client
                .put_role_policy()
                .role_name(&request.name)
                .policy_name(INLINE_POLICY)
                .policy_document(document)
                .send()
                .await
                .map_err(|e| sdk_error("role", e))?;
        }
        arn.ok_or_else(|| Error::backend("IAM answered without the role's ARN"))
    }

    async fn delete_role(&self, name: &str) -> Result<bool> {
        validate_role_name(name)?;
        let attached = match self
            .client
            .list_attached_role_policies()
            .role_name(name)
            .send()
            .await
        {
            Ok(output) => output,
            Err(err) if err.code() == Some("NoSuchEntity") => return Ok(false),
            Err(err) => return Err(sdk_error("role", err)),
        };
        for policy in attached.attached_policies() {
            self.client
                .detach_role_policy()
                .role_name(name)
                .set_policy_arn(policy.policy_arn().map(str::to_owned))
                .send()
                .await
                .map_err(|e| sdk_error("role", e))?;
        }
        let inline = self
            .client
            .list_role_policies()
            .role_name(name)
            .send()
            .await
            .map_err(|e| sdk_error("role", e))?;
        for policy in inline.policy_names() {
            self.client
                .delete_role_policy()
                .role_name(name)
                .policy_name(policy)
                .send()
                .await
                .map_err(|e| sdk_error("role", e))?;
        }
        match self.client.delete_role().role_name(name).send().await {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("NoSuchEntity") => Ok(false),
            Err(err) => Err(sdk_error("role", err)),
        }
    }

    async fn ensure_oidc_provider(&self, issuer_url: &str) -> Result<String> {
        if !issuer_url.starts_with("https://") {
            return Err(Error::invalid(
                "oidc_issuer",
                format!("{issuer_url:?} is not an https URL"),
            ));
        }
        if let Some(arn) = self.oidc_provider_arn(issuer_url).await? {
            return Ok(arn);
        }
        let created = self
            .client
            .create_open_id_connect_provider()
            .url(issuer_url)
            .client_id_list("sts.amazonaws.com")
            .thumbprint_list(OIDC_THUMBPRINT)
            .send()
            .await;
        match created {
            Ok(output) => output
                .open_id_connect_provider_arn()
                .map(str::to_owned)
                .ok_or_else(|| Error::backend("IAM answered without the provider's ARN")),
            // Made by a concurrent or earlier attempt whose answer was lost.
            Err(err) if err.code() == Some("EntityAlreadyExists") => self
                .oidc_provider_arn(issuer_url)
                .await?
                .ok_or_else(|| Error::unavailable("the OIDC provider exists but is not listed")),
            Err(err) => Err(sdk_error("oidc_provider", err)),
        }
    }

    async fn delete_oidc_provider(&self, issuer_url: &str) -> Result<bool> {
        let Some(arn) = self.oidc_provider_arn(issuer_url).await? else {
            return Ok(false);
        };
        match self
            .client
            .delete_open_id_connect_provider()
            .open_id_connect_provider_arn(arn)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("NoSuchEntity") => Ok(false),
            Err(err) => Err(sdk_error("oidc_provider", err)),
        }
    }
}
