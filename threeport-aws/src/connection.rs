//! [`AwsConnection`]: how to reach AWS for one account and region.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use threeport_core::{Error, Result};

/// The regions AWS has (commercial, GovCloud, China). A region outside it is refused before any
/// call, as a terminal error, rather than retried against an endpoint that does not exist.
pub const REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

/// The ARN partition of a region: `aws-cn` for China, `aws-us-gov` for GovCloud, else `aws`.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// A role to act as, assumed through STS with the base credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    /// `arn:aws:iam::123456789012:role/threeport`.
    pub role_arn: String,
    /// External id the role's trust policy requires, if any.
    pub external_id: Option<String>,
}

/// How to reach AWS for one account.
///
/// Base credentials are the access keys given, or, when `access_key_id` is empty, the
/// standard chain (environment, profile, web identity, container and instance roles). With
/// [`assume_role`](Self::assume_role), threeport acts as that role, assumed with the base
/// credentials and refreshed before it expires.
#[derive(Clone, Default)]
pub struct AwsConnection {
    /// Region (`us-east-1`).
    pub region: String,
    /// Access key id; empty: the standard credential chain.
    pub access_key_id: String,
    /// Secret access key (opened from its sealed form by the caller; never logged).
    pub secret_access_key: String,
    /// A role to assume with the base credentials.
    pub assume_role: Option<AssumeRole>,
    /// Endpoint override (`http://127.0.0.1:5000` for moto); `None`: AWS itself.
    pub endpoint: Option<String>,
}

impl std::fmt::Debug for AwsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsConnection")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("assume_role", &self.assume_role)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AwsConnection {
    /// The SDK configuration every service client of this crate is made from: the region,
    /// credentials (assuming the role, if any), the endpoint override, and an HTTPS client on
    /// rustls with `ring` (the workspace's one crypto provider).
    ///
    /// Errors: `Invalid` (field `region`) for a missing or unknown region, (field
    /// `assume_role.role_arn`) for a role that is not an IAM role ARN.
    pub async fn sdk_config(&self) -> Result<SdkConfig> {
        if self.region.is_empty() {
            return Err(Error::invalid("region", "is required"));
        }
        if !REGIONS.contains(&self.region.as_str()) {
            return Err(Error::invalid(
                "region",
                format!("{:?} is not an AWS region", self.region),
            ));
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let region = Region::new(self.region.clone());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region.clone())
            .http_client(http);
        if !self.access_key_id.is_empty() {
            loader = loader.credentials_provider(Credentials::new(
                &self.access_key_id,
                &self.secret_access_key,
                None,
                None,
                "threeport",
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let base = loader.load().await;
        let Some(role) = &self.assume_role else {
            return Ok(base);
        };
        if !role.role_arn.starts_with("arn:aws") || !role.role_arn.contains(":role/") {
            return Err(Error::invalid(
                "assume_role.role_arn",
                format!("{:?} is not an IAM role ARN", role.role_arn),
            ));
        }
        let mut assume = aws_config::sts::AssumeRoleProvider::builder(role.role_arn.clone())
            .session_name("threeport")
            .region(region)
            .configure(&base);
        if let Some(external_id) = &role.external_id {
            assume = assume.external_id(external_id.clone());
        }
        let assumed = assume.build().await;
        Ok(base
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(assumed))
            .build())
    }

    /// The environment a tool that speaks to AWS itself (Terraform's AWS provider) is given to
    /// act for this connection: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN` (a role's short-lived credentials, assumed now), `AWS_REGION`,
    /// `AWS_DEFAULT_REGION` and `AWS_ENDPOINT_URL` (with an endpoint override). Values are
    /// secrets: hand them to a child process, never to a log or a file.
    ///
    /// Errors: as [`sdk_config`](Self::sdk_config); `Unavailable` when credentials cannot be
    /// had (the role cannot be assumed, no credentials in the standard chain).
    pub async fn environment(&self) -> Result<Vec<(String, String)>> {
        use aws_credential_types::provider::ProvideCredentials;
        let config = self.sdk_config().await?;
        let provider = config
            .credentials_provider()
            .ok_or_else(|| Error::unavailable("no AWS credentials are configured"))?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| Error::unavailable(format!("AWS credentials: {e}")))?;
        let mut env = vec![
            ("AWS_REGION".to_owned(), self.region.clone()),
            ("AWS_DEFAULT_REGION".to_owned(), self.region.clone()),
            (
                "AWS_ACCESS_KEY_ID".to_owned(),
                credentials.access_key_id().to_owned(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                credentials.secret_access_key().to_owned(),
            ),
        ];
        if let Some(token) = credentials.session_token() {
            env.push(("AWS_SESSION_TOKEN".to_owned(), token.to_owned()));
        }
        if let Some(endpoint) = &self.endpoint {
            env.push(("AWS_ENDPOINT_URL".to_owned(), endpoint.clone()));
        }
        Ok(env)
    }
}
