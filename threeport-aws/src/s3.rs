//! [`S3Storage`]: [`ObjectStorage`] on Amazon S3.

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, PublicAccessBlockConfiguration,
};
use threeport_core::Result;

use crate::error::sdk_error;
use crate::{BucketState, ObjectStorage, validate_bucket_name};

/// S3 buckets of one account and region.
#[derive(Debug, Clone)]
pub struct S3Storage {
    client: aws_sdk_s3::Client,
    region: String,
}

impl S3Storage {
    /// A client for the account and region of `config` (from [`AwsConnection::sdk_config`];
    /// path-style addressing, so endpoint overrides work).
    ///
    /// [`AwsConnection::sdk_config`]: crate::AwsConnection::sdk_config
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let region = config.region().map(ToString::to_string).unwrap_or_default();
        let config = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build();
        S3Storage {
            client: aws_sdk_s3::Client::from_conf(config),
            region,
        }
    }

    fn public_policy(name: &str) -> String {
        serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Sid": "PublicRead", "Effect": "Allow", "Principal": "*",
                           "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{name}/*")}]
        })
        .to_string()
    }
}

#[async_trait]
impl ObjectStorage for S3Storage {
    async fn ensure_bucket(&self, name: &str, public_read: bool) -> Result<()> {
        validate_bucket_name(name)?;
        if self.bucket(name).await?.is_none() {
            let mut create = self.client.create_bucket().bucket(name);
            // us-east-1 is the one region that takes no location constraint.
            if self.region != "us-east-1" {
                create = create.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                        .build(),
                );
            }
            match create.send().await {
                Ok(_) => {}
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_bucket_already_owned_by_you()) => {}
                Err(err) => return Err(sdk_error("bucket", err)),
            }
        }
        let blocked = !public_read;
        self.client
            .put_public_access_block()
            .bucket(name)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(blocked)
                    .ignore_public_acls(blocked)
                    .block_public_policy(blocked)
                    .restrict_public_buckets(blocked)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("bucket", e))?;
        if public_read {
            self.client
                .put_bucket_policy()
                .bucket(name)
                .policy(Self::public_policy(name))
                .send()
                .await
                .map_err(|e| sdk_error("bucket", e))?;
        } else {
            match self.client.delete_bucket_policy().bucket(name).send().await {
                Ok(_) => {}
                Err(err) if err.code() == Some("NoSuchBucketPolicy") => {}
                Err(err) => return Err(sdk_error("bucket", err)),
            }
        }
        Ok(())
    }

    async fn bucket(&self, name: &str) -> Result<Option<BucketState>> {
        validate_bucket_name(name)?;
        match self.client.head_bucket().bucket(name).send().await {
            Ok(_) => {}
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => {
                return Ok(None);
            }
            Err(err) => return Err(sdk_error("bucket", err)),
        }
        let public_read = match self.client.get_bucket_policy().bucket(name).send().await {
            Ok(policy) => policy.policy().is_some_and(grants_public_read),
            Err(err) if err.code() == Some("NoSuchBucketPolicy") => false,
            Err(err) => return Err(sdk_error("bucket", err)),
        };
        Ok(Some(BucketState { public_read }))
    }

    async fn delete_bucket(&self, name: &str) -> Result<bool> {
        validate_bucket_name(name)?;
        match self.client.delete_bucket().bucket(name).send().await {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("NoSuchBucket") => Ok(false),
            Err(err) => Err(sdk_error("bucket", err)),
        }
    }
}

/// Whether a bucket policy lets anyone get objects (AWS may normalise `"*"` to
/// `{"AWS": "*"}` and a single action to a list).
fn grants_public_read(policy: &str) -> bool {
    let Ok(policy) = serde_json::from_str::<serde_json::Value>(policy) else {
        return false;
    };
    let statements = match &policy["Statement"] {
        serde_json::Value::Array(all) => all.clone(),
        one => vec![one.clone()],
    };
    statements.iter().any(|statement| {
        let anyone = statement["Principal"] == "*" || statement["Principal"]["AWS"] == "*";
        let gets = match &statement["Action"] {
            serde_json::Value::Array(actions) => actions.iter().any(|a| a == "s3:GetObject"),
            action => action == "s3:GetObject",
        };
        statement["Effect"] == "Allow" && anyone && gets
    })
}
