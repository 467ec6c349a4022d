//! [`SecretsManagerStore`]: [`SecretStore`] on AWS Secrets Manager.

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use threeport_core::{Error, Result, SecretValues};

use crate::SecretStore;
use crate::error::sdk_error;

/// Secrets of one account and region.
#[derive(Debug, Clone)]
pub struct SecretsManagerStore {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManagerStore {
    /// A client for the account and region of `config` (from [`AwsConnection::sdk_config`]).
    ///
    /// [`AwsConnection::sdk_config`]: crate::AwsConnection::sdk_config
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        SecretsManagerStore {
            client: aws_sdk_secretsmanager::Client::new(config),
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = (1..=512).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "secret",
            format!("{name:?} is not a valid secret name"),
        ))
    }
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    async fn put_secret(&self, name: &str, values: &SecretValues) -> Result<String> {
        check_name(name)?;
        let value = serde_json::to_string(&values.0).map_err(Error::backend)?;
        match self
            .client
            .create_secret()
            .name(name)
            .secret_string(&value)
            .send()
            .await
        {
            Ok(created) => return Ok(created.arn().unwrap_or_default().to_owned()),
            Err(err) if err.code() == Some("ResourceExistsException") => {}
            Err(err) => return Err(sdk_error("secret", err)),
        }
        let updated = self
            .client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .map_err(|e| sdk_error("secret", e))?;
        Ok(updated.arn().unwrap_or_default().to_owned())
    }

    async fn secret_arn(&self, name: &str) -> Result<Option<String>> {
        check_name(name)?;
        match self.client.describe_secret().secret_id(name).send().await {
            Ok(found) if found.deleted_date().is_some() => Ok(None),
            Ok(found) => Ok(found.arn().map(str::to_owned)),
            Err(err) if err.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(err) => Err(sdk_error("secret", err)),
        }
    }

    async fn delete_secret(&self, name: &str) -> Result<bool> {
        // A forced delete of a missing secret may succeed (moto, and AWS during the deletion
        // of a just-deleted one): ask first, so the answer means something.
        if self.secret_arn(name).await?.is_none() {
            return Ok(false);
        }
        match self
            .client
            .delete_secret()
            .secret_id(name)
            .force_delete_without_recovery(true)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("ResourceNotFoundException") => Ok(false),
            Err(err) => Err(sdk_error("secret", err)),
        }
    }
}
