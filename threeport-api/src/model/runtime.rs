//! Kubernetes runtimes: where workloads run.

use serde::{Deserialize, Serialize};
use threeport_core::object::Reference;
use threeport_core::{ApiObject, Object, ObjectId, ValidationError};
use utoipa::ToSchema;

use super::{AwsAccount, maybe_reference, reference};

/// Who provides a runtime's cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InfraProvider {
    /// A local kind cluster.
    Kind,
    /// Amazon EKS, created by the AWS controller.
    Eks,
    /// A cluster that exists already, registered by its connection data.
    Existing,
}

/// Node size class (Threeport's sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeSize {
    /// About 2 vCPU.
    Small,
    /// About 4 vCPU.
    #[default]
    Medium,
    /// About 8 vCPU.
    Large,
    /// About 16 vCPU.
    XLarge,
    /// About 32 vCPU.
    XxLarge,
    /// About 48 vCPU.
    XxxLarge,
}

/// Node profile: what the nodes are balanced for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeProfile {
    /// General purpose.
    #[default]
    Balanced,
    /// CPU-heavy.
    Compute,
    /// Memory-heavy.
    Memory,
}

fn default_node_maximum() -> u32 {
    250
}

impl NodeSize {
    /// The EC2 size suffix of this class (`xlarge` for about 4 vCPU).
    fn ec2_size(self) -> &'static str {
        match self {
            NodeSize::Small => "large",
            NodeSize::Medium => "xlarge",
            NodeSize::Large => "2xlarge",
            NodeSize::XLarge => "4xlarge",
            NodeSize::XxLarge => "8xlarge",
            NodeSize::XxxLarge => "12xlarge",
        }
    }
}

impl NodeProfile {
    /// The EC2 instance family of this profile (current generation, x86).
    fn ec2_family(self) -> &'static str {
        match self {
            NodeProfile::Balanced => "m6i",
            NodeProfile::Compute => "c6i",
            NodeProfile::Memory => "r6i",
        }
    }
}

/// The node group an EKS runtime of a [`KubernetesRuntimeDefinition`] gets: instance type
/// from node size × profile, zones and bounds from high availability and the node maximum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroupShape {
    /// `m6i.xlarge`.
    pub instance_type: String,
    /// Availability zones the cluster and its nodes spread over.
    pub zones: u32,
    /// Fewest nodes.
    pub minimum: u32,
    /// Nodes it starts with.
    pub initial: u32,
    /// Most nodes (the definition's `node_maximum`, at least `minimum`, at most EKS's 450
    /// per node group).
    pub maximum: u32,
}

/// Most nodes EKS lets one managed node group have.
pub const EKS_NODE_GROUP_LIMIT: u32 = 450;

/// A kind of Kubernetes cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesRuntimeDefinition {
    /// Who provides the cluster.
    pub infra_provider: InfraProvider,
    /// The AWS account of an `eks` runtime.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub aws_account: Option<ObjectId>,
    /// Spread the control plane and nodes for availability.
    #[serde(default)]
    pub high_availability: bool,
    /// Node size.
    #[serde(default)]
    pub node_size: NodeSize,
    /// Node profile.
    #[serde(default)]
    pub node_profile: NodeProfile,
    /// Most nodes the cluster may scale to.
    #[serde(default = "default_node_maximum")]
    pub node_maximum: u32,
}

impl KubernetesRuntimeDefinition {
    /// The node group an EKS runtime of this definition gets:
    ///
    /// | node size | balanced | compute | memory |
    /// |-----------|----------|---------|--------|
    /// | small (2 vCPU) | m6i.large | c6i.large | r6i.large |
    /// | medium (4) | m6i.xlarge | c6i.xlarge | r6i.xlarge |
    /// | large (8) | m6i.2xlarge | c6i.2xlarge | r6i.2xlarge |
    /// | x_large (16) | m6i.4xlarge | c6i.4xlarge | r6i.4xlarge |
    /// | xx_large (32) | m6i.8xlarge | c6i.8xlarge | r6i.8xlarge |
    /// | xxx_large (48) | m6i.12xlarge | c6i.12xlarge | r6i.12xlarge |
    ///
    /// High availability: three zones, at least three nodes (one per zone); otherwise two
    /// zones, at least one node, two to start. The maximum is `node_maximum` (raised to the
    /// minimum, capped at [`EKS_NODE_GROUP_LIMIT`]).
    pub fn node_group(&self) -> NodeGroupShape {
        let (zones, minimum, initial) = if self.high_availability {
            (3, 3, 3)
        } else {
            (2, 1, 2)
        };
        let maximum = self.node_maximum.clamp(minimum, EKS_NODE_GROUP_LIMIT);
        NodeGroupShape {
            instance_type: format!(
                "{}.{}",
                self.node_profile.ec2_family(),
                self.node_size.ec2_size()
            ),
            zones,
            minimum,
            initial: initial.min(maximum),
            maximum,
        }
    }
}

impl ApiObject for KubernetesRuntimeDefinition {
    const KIND: &'static str = "KubernetesRuntimeDefinition";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        if self.infra_provider == InfraProvider::Eks && self.aws_account.is_none() {
            return Err(ValidationError::new(
                "aws_account",
                "an eks runtime needs an AWS account",
            ));
        }
        if self.node_maximum == 0 {
            return Err(ValidationError::new("node_maximum", "must be at least 1"));
        }
        Ok(())
    }
    fn references(&self) -> Vec<Reference> {
        maybe_reference::<AwsAccount>("aws_account", self.aws_account)
            .into_iter()
            .collect()
    }
}

/// How to reach a cluster's API server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionData {
    /// `https://host:port` of the API server (not needed with a kubeconfig).
    #[serde(default)]
    pub api_endpoint: String,
    /// PEM CA bundle that signs the API server's certificate.
    #[serde(default)]
    pub ca_certificate: Option<String>,
    /// Bearer token for the API server: sent in plain text, stored encrypted (`sealed:v1:…`).
    #[serde(default)]
    pub token: Option<String>,
    /// PEM client certificate, for certificate authentication (with `client_key`).
    #[serde(default)]
    pub client_certificate: Option<String>,
    /// PEM key of `client_certificate`: stored encrypted.
    #[serde(default)]
    pub client_key: Option<String>,
    /// A whole kubeconfig (YAML), instead of the fields above: stored encrypted.
    #[serde(default)]
    pub kubeconfig: Option<String>,
}

/// One Kubernetes cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesRuntimeInstance {
    /// Its definition.
    #[schema(value_type = String, format = Uuid)]
    pub definition: ObjectId,
    /// Where it runs, as Threeport names locations: `<Region>:<City>` (`NorthAmerica:NewYork`).
    pub location: String,
    /// Workloads without a runtime go here.
    #[serde(default)]
    pub default_runtime: bool,
    /// How to reach it, for existing clusters. Clusters threeport creates (EKS) have theirs in
    /// status ([`RuntimeStatus::connection`]); this one wins when both are set.
    #[serde(default)]
    pub connection: Option<ConnectionData>,
    /// Watched by a threeport agent inside the cluster (`threeport-server agent`, installed by
    /// the runtime controller) instead of from the control plane: for clusters the control
    /// plane cannot reach.
    #[serde(default)]
    pub agent: Option<RuntimeAgent>,
    /// Support services to install now rather than when a workload first needs them
    /// (`envoy-gateway`, `cert-manager`, `external-dns`, `external-secrets`,
    /// `cluster-autoscaler`).
    #[serde(default)]
    pub support_services: Vec<super::SupportService>,
}

/// How the in-cluster agent of a runtime reaches the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeAgent {
    /// The API's URL as the cluster reaches it (`https://threeport.example.com`).
    pub api_url: String,
    /// The agent's own API token (mint one with `threeport-server token --add-to <file>`):
    /// sent in plain text, stored encrypted (`sealed:v1:…`), put in a Secret on the cluster.
    pub token: String,
    /// PEM CA bundle of the API's certificate, if not signed by a public CA.
    #[serde(default)]
    pub api_ca: Option<String>,
    /// Image with the `threeport-server` binary; default [`AGENT_IMAGE`] at this release.
    #[serde(default)]
    pub image: Option<String>,
}

/// Image the agent runs by default (tagged with the release).
pub const AGENT_IMAGE: &str = "ghcr.io/threeport/threeport-server";

/// What the runtime controller observed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct RuntimeStatus {
    /// How to reach a cluster threeport created (EKS): copied from the cluster's own object,
    /// which its controller wrote; secrets sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionData>,
    /// Whether the agent's resources are installed on the cluster.
    #[serde(default)]
    pub agent_installed: bool,
}

/// How to reach runtime `runtime`'s cluster: its spec's connection data (existing clusters),
/// else what its status holds (clusters threeport created); `None` while there is neither.
pub fn runtime_connection(runtime: &Object<KubernetesRuntimeInstance>) -> Option<&ConnectionData> {
    runtime
        .spec
        .connection
        .as_ref()
        .or(runtime.status.details.connection.as_ref())
}

impl ApiObject for KubernetesRuntimeInstance {
    const KIND: &'static str = "KubernetesRuntimeInstance";
    const SEALED_FIELDS: &'static [&'static str] = &[
        "connection.token",
        "connection.client_key",
        "connection.kubeconfig",
        "agent.token",
    ];
    type Status = RuntimeStatus;
    fn validate(&self) -> Result<(), ValidationError> {
        let well_formed = self.location.split_once(':').is_some_and(|(region, city)| {
            [region, city]
                .iter()
                .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()))
        });
        if !well_formed {
            return Err(ValidationError::new(
                "location",
                format!(
                    "{:?} must be <Region>:<City>, e.g. NorthAmerica:NewYork",
                    self.location
                ),
            ));
        }
        if let Some(agent) = &self.agent {
            if !["https://", "http://"]
                .iter()
                .any(|scheme| agent.api_url.starts_with(scheme))
            {
                return Err(ValidationError::new(
                    "agent.api_url",
                    "must be the API's https:// (or http://) URL",
                ));
            }
            if agent.token.trim().is_empty() {
                return Err(ValidationError::new(
                    "agent.token",
                    "is required: mint one with `threeport-server token --add-to <token file>`",
                ));
            }
        }
        if let Some(connection) = &self.connection
            && connection.kubeconfig.is_none()
        {
            // Plain HTTP only to this machine (a local API server or proxy).
            let endpoint = &connection.api_endpoint;
            let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|prefix| endpoint.starts_with(prefix));
            if !endpoint.starts_with("https://") && !loopback {
                return Err(ValidationError::new(
                    "connection.api_endpoint",
                    "must be an https:// URL (http:// only on loopback)",
                ));
            }
            if connection.client_certificate.is_some() != connection.client_key.is_some() {
                return Err(ValidationError::new(
                    "connection.client_key",
                    "a client certificate and its key go together",
                ));
            }
        }
        Ok(())
    }
    fn references(&self) -> Vec<Reference> {
        vec![reference::<KubernetesRuntimeDefinition>(
            "definition",
            self.definition,
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(
        size: NodeSize,
        profile: NodeProfile,
        ha: bool,
        max: u32,
    ) -> KubernetesRuntimeDefinition {
        KubernetesRuntimeDefinition {
            infra_provider: InfraProvider::Eks,
            aws_account: None,
            high_availability: ha,
            node_size: size,
            node_profile: profile,
            node_maximum: max,
        }
    }

    #[test]
    fn size_profile_and_availability_shape_the_node_group() {
        let shape = definition(NodeSize::Medium, NodeProfile::Balanced, false, 250).node_group();
        assert_eq!(
            shape,
            NodeGroupShape {
                instance_type: "m6i.xlarge".into(),
                zones: 2,
                minimum: 1,
                initial: 2,
                maximum: 250
            }
        );
        let shape = definition(NodeSize::XxLarge, NodeProfile::Memory, true, 2).node_group();
        assert_eq!(shape.instance_type, "r6i.8xlarge");
        assert_eq!(
            (shape.zones, shape.minimum, shape.initial, shape.maximum),
            (3, 3, 3, 3)
        );
        let shape = definition(NodeSize::Small, NodeProfile::Compute, false, 1000).node_group();
        assert_eq!(shape.instance_type, "c6i.large");
        assert_eq!(shape.maximum, EKS_NODE_GROUP_LIMIT);
        let shape = definition(NodeSize::Small, NodeProfile::Compute, false, 1).node_group();
        assert_eq!((shape.minimum, shape.initial, shape.maximum), (1, 1, 1));
    }
}
