//! [`EksClusters`]: [`KubernetesClusters`] on Amazon EKS, with the EKS authentication token.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_eks::error::ProvideErrorMetadata;
use aws_sdk_eks::types::{NodegroupScalingConfig, VpcConfigRequest};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use threeport_core::{Error, Result};

use crate::error::sdk_error;
use crate::{ClusterRequest, ClusterState, EksStatus, KubernetesClusters, NodeGroupRequest};

/// EKS clusters of one account and region.
#[derive(Debug, Clone)]
pub struct EksClusters {
    client: aws_sdk_eks::Client,
    config: aws_config::SdkConfig,
}

impl EksClusters {
    /// A client for the account and region of `config` (from [`AwsConnection::sdk_config`]).
    ///
    /// [`AwsConnection::sdk_config`]: crate::AwsConnection::sdk_config
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        EksClusters {
            client: aws_sdk_eks::Client::new(config),
            config: config.clone(),
        }
    }
}

/// Checks a cluster name as EKS does.
pub(crate) fn validate_cluster_name(name: &str) -> Result<()> {
    let ok = (1..=100).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "cluster",
            format!("{name:?} is not a valid EKS cluster name"),
        ))
    }
}

/// Percent-encodes a query value as SigV4 does (everything but unreserved characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The EKS authentication token for `cluster`: `k8s-aws-v1.` and the base64url of an STS
/// `GetCallerIdentity` URL presigned (for 60 s) with the cluster name in `x-k8s-aws-id`.
/// EKS calls it to learn who the bearer is.
pub(crate) fn presigned_token(
    identity: &Identity,
    region: &str,
    cluster: &str,
    now: SystemTime,
) -> Result<String> {
    let host = format!("sts.{region}.amazonaws.com");
    let url = format!("https://{host}/?Action=GetCallerIdentity&Version=2011-06-15");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(60));
    let params = v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| Error::backend(format!("signing the EKS token: {e}")))?
        .into();
    let request = SignableRequest::new(
        "GET",
        url.as_str(),
        [("host", host.as_str()), ("x-k8s-aws-id", cluster)].into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| Error::backend(format!("signing the EKS token: {e}")))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| Error::backend(format!("signing the EKS token: {e}")))?
        .into_parts();
    let (_, query) = instructions.into_parts();
    let mut presigned = url;
    for (name, value) in query {
        presigned.push('&');
        presigned.push_str(name);
        presigned.push('=');
        presigned.push_str(&encode(&value));
    }
    Ok(format!(
        "k8s-aws-v1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(presigned)
    ))
}

#[async_trait]
impl KubernetesClusters for EksClusters {
    async fn create_cluster(&self, request: &ClusterRequest) -> Result<()> {
        validate_cluster_name(&request.name)?;
        let created = self
            .client
            .create_cluster()
            .name(&request.name)
            .role_arn(&request.role_arn)
            .resources_vpc_config(
                VpcConfigRequest::builder()
                    .set_subnet_ids(Some(request.subnet_ids.clone()))
                    .endpoint_public_access(true)
                    .build(),
            )
            .set_version(request.kubernetes_version.clone())
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            // Made by an earlier attempt whose answer was lost: resume.
            Err(err) if err.code() == Some("ResourceInUseException") => Ok(()),
            Err(err) => Err(sdk_error("cluster", err)),
        }
    }

    async fn cluster(&self, name: &str) -> Result<Option<ClusterState>> {
        validate_cluster_name(name)?;
        let described = match self.client.describe_cluster().name(name).send().await {
            Ok(output) => output,
            Err(err) if err.code() == Some("ResourceNotFoundException") => return Ok(None),
            Err(err) => return Err(sdk_error("cluster", err)),
        };
        let Some(cluster) = described.cluster() else {
            return Ok(None);
        };
        let ca_certificate = cluster
            .certificate_authority()
            .and_then(|ca| ca.data())
            .map(|data| {
                // EKS gives the PEM base64-encoded.
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .ok()
                    .and_then(|pem| String::from_utf8(pem).ok())
                    .unwrap_or_else(|| data.to_owned())
            });
        Ok(Some(ClusterState {
            status: EksStatus::parse(cluster.status().map(|s| s.as_str()).unwrap_or_default()),
            endpoint: cluster.endpoint().map(str::to_owned),
            ca_certificate,
            oidc_issuer: cluster
                .identity()
                .and_then(|i| i.oidc())
                .and_then(|o| o.issuer())
                .map(str::to_owned),
        }))
    }

    async fn delete_cluster(&self, name: &str) -> Result<bool> {
        validate_cluster_name(name)?;
        match self.client.delete_cluster().name(name).send().await {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("ResourceNotFoundException") => Ok(false),
            Err(err) => Err(sdk_error("cluster", err)),
        }
    }

    async fn create_node_group(&self, request: &NodeGroupRequest) -> Result<()> {
        validate_cluster_name(&request.cluster)?;
        let size = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        let created = self
            .client
            .create_nodegroup()
            .cluster_name(&request.cluster)
            .nodegroup_name(&request.name)
            .node_role(&request.node_role_arn)
            .set_subnets(Some(request.subnet_ids.clone()))
            .instance_types(&request.instance_type)
            .scaling_config(
                NodegroupScalingConfig::builder()
                    .min_size(size(request.minimum))
                    .max_size(size(request.maximum))
                    .desired_size(size(request.desired))
                    .build(),
            )
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some("ResourceInUseException") => Ok(()),
            Err(err) => Err(sdk_error("node_group", err)),
        }
    }

    async fn node_group(&self, cluster: &str, name: &str) -> Result<Option<EksStatus>> {
        let described = self
            .client
            .describe_nodegroup()
            .cluster_name(cluster)
            .nodegroup_name(name)
            .send()
            .await;
        match described {
            Ok(output) => Ok(output
                .nodegroup()
                .map(|g| EksStatus::parse(g.status().map(|s| s.as_str()).unwrap_or_default()))),
            Err(err) if err.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(err) => Err(sdk_error("node_group", err)),
        }
    }

    async fn delete_node_group(&self, cluster: &str, name: &str) -> Result<bool> {
        let deleted = self
            .client
            .delete_nodegroup()
            .cluster_name(cluster)
            .nodegroup_name(name)
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("ResourceNotFoundException") => Ok(false),
            Err(err) => Err(sdk_error("node_group", err)),
        }
    }

    async fn token(&self, cluster: &str) -> Result<String> {
        validate_cluster_name(cluster)?;
        let provider = self
            .config
            .credentials_provider()
            .ok_or_else(|| Error::invalid("credentials", "no AWS credentials configured"))?;
        let credentials = provider.provide_credentials().await.map_err(|e| {
            Error::invalid("credentials", format!("AWS credentials unavailable: {e}"))
        })?;
        let region = self
            .config
            .region()
            .map(ToString::to_string)
            .unwrap_or_default();
        presigned_token(&credentials.into(), &region, cluster, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;

    #[test]
    fn the_token_is_a_presigned_get_caller_identity_url_naming_the_cluster() {
        let identity: Identity = Credentials::new("AKIDEXAMPLE", "secret", None, None, "t").into();
        let token =
            presigned_token(&identity, "eu-west-3", "shop", SystemTime::UNIX_EPOCH).unwrap();
        let encoded = token.strip_prefix("k8s-aws-v1.").expect("EKS token prefix");
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap();
        assert!(
            url.starts_with(
                "https://sts.eu-west-3.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"
            ),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F19700101%2Feu-west-3%2Fsts%2Faws4_request",
            "X-Amz-Expires=60",
            "X-Amz-SignedHeaders=host%3Bx-k8s-aws-id",
            "X-Amz-Signature=",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        assert!(!url.contains("secret"), "the secret key never appears");
    }
}
