//! # threeport-aws
//!
//! AWS for threeport, as typed operations behind small traits, each with an implementation on
//! the official AWS SDK for Rust and an in-memory fake that behaves the same (both pass
//! [`conformance`]):
//!
//! - [`ObjectStorage`]: S3 buckets, idempotent, with the public-read flag honoured.
//! - [`SecretStore`]: Secrets Manager secrets, written from [`SecretValues`] that threeport
//!   never persists.
//!
//! [`AwsConnection`] builds the SDK configuration from an account's credentials and region, with
//! an endpoint override for testing (moto) and TLS on rustls with the `ring` provider.
//! Errors are sorted by what a controller should do: bad credentials, names or regions are
//! `Invalid` (a terminal error), throttling and 5xx are `Unavailable` (retry with backoff).
//!
//! Still to come (issue 7): EKS, RDS, EC2/IAM, role assumption, the resource inventory and the
//! AWS controller.
//!
//! [`SecretValues`]: threeport_core::SecretValues

pub mod conformance;
mod error;
mod memory;
mod s3;
mod secrets;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use threeport_core::{Error, Result, SecretValues};

pub use memory::MemoryAws;
pub use s3::S3Storage;
pub use secrets::SecretsManagerStore;

/// S3 buckets.
#[async_trait]
pub trait ObjectStorage: Send + Sync + std::fmt::Debug + 'static {
    /// Creates the bucket if it is missing (it is ours if it exists in our account), and sets
    /// whether anyone may read its objects.
    async fn ensure_bucket(&self, name: &str, public_read: bool) -> Result<()>;

    /// Whether the bucket exists, and if so whether it is publicly readable.
    async fn bucket(&self, name: &str) -> Result<Option<BucketState>>;

    /// Deletes the bucket; `false` if it was not there.
    async fn delete_bucket(&self, name: &str) -> Result<bool>;
}

/// What [`ObjectStorage::bucket`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    /// Anyone may read its objects.
    pub public_read: bool,
}

/// Secrets Manager secrets.
#[async_trait]
pub trait SecretStore: Send + Sync + std::fmt::Debug + 'static {
    /// Creates the secret, or gives it a new value; returns its ARN.
    async fn put_secret(&self, name: &str, values: &SecretValues) -> Result<String>;

    /// The secret's ARN, if it exists. (Its value is never read back by threeport.)
    async fn secret_arn(&self, name: &str) -> Result<Option<String>>;

    /// Deletes the secret at once (no recovery window); `false` if it was not there.
    async fn delete_secret(&self, name: &str) -> Result<bool>;
}

/// Checks a bucket name as S3 does: 3 to 63 lower-case letters, digits, `-` and `.`, starting
/// and ending with a letter or digit.
pub fn validate_bucket_name(name: &str) -> Result<()> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "bucket",
            format!(
                "{name:?} is not a valid bucket name (3-63 lower-case letters, digits, '-' and '.')"
            ),
        ))
    }
}

/// How to reach AWS for one account.
#[derive(Clone, Default)]
pub struct AwsConnection {
    /// Region (`us-east-1`).
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key (opened from its sealed form by the caller; never logged).
    pub secret_access_key: String,
    /// Endpoint override (`http://127.0.0.1:5000` for moto); `None`: AWS itself.
    pub endpoint: Option<String>,
}

impl std::fmt::Debug for AwsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsConnection")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AwsConnection {
    /// The SDK configuration: static credentials, the region, the endpoint override, and an
    /// HTTPS client on rustls with `ring` (the workspace's one crypto provider).
    pub fn sdk_config(&self) -> Result<SdkConfig> {
        if self.region.is_empty() {
            return Err(Error::invalid("region", "is required"));
        }
        let credentials = Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            None,
            None,
            "threeport",
        );
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut builder = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .http_client(http);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(builder.build())
    }
}
