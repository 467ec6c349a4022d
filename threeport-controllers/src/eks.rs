//! The EKS controller: provisions the cluster behind an `eks` Kubernetes runtime.
//!
//! In order, each piece recorded in the `AwsEksKubernetesRuntimeInstance`'s status (its
//! inventory) as it is made: the network (VPC, internet gateway, route table, a subnet per
//! zone, every piece tagged with the object's id so a create whose answer was lost is found
//! rather than repeated), the control-plane and node roles, the cluster, its OIDC provider
//! (for workload roles), the default node group. Cluster and node group take minutes: the
//! request is acknowledged in status and the object requeued to poll, so no worker waits; an
//! acknowledgement long gone stale with nothing to show means the request was lost, and it
//! is made again. Once the cluster serves, the controller signs in with an EKS token, creates
//! a service account for threeport with its token, and writes the connection data (token
//! sealed) in its own status; the `KubernetesRuntimeInstance`, which owns this object and
//! follows it, takes it into its status. No controller writes another object's spec.
//! Deletion tears the inventory down in reverse. Nothing is ever deleted outside the cleanup
//! of an object whose deletion was asked for.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::json;
use threeport_api::model::{
    AwsAccount, AwsEksKubernetesRuntimeDefinition, AwsEksKubernetesRuntimeInstance, ConnectionData,
    KubernetesRuntimeInstance,
};
use threeport_aws::{ClusterRequest, EksStatus, NodeGroupRequest, RoleRequest, Trust, partition};
use threeport_core::object::EventType;
use threeport_core::{Action, Context, Object, ReconcileError, Reconciler};
use threeport_k8s::{ClusterConnection, ResourceRef, apply_all};

use crate::aws::{AwsProvider, AwsServices, cloud_name};
use crate::clusters::ClusterProvider;
use crate::deploy::FIELD_MANAGER;
use crate::seal::Sealer;

/// The field name a connection token is sealed under, wherever the connection data is kept.
pub const CONNECTION_TOKEN_FIELD: &str = "spec.connection.token";

/// Namespace of threeport's service account in the clusters it makes.
pub const SYSTEM_NAMESPACE: &str = "threeport-system";

/// Threeport's service account in the clusters it makes (bound to `cluster-admin`).
pub const SERVICE_ACCOUNT: &str = "threeport-control-plane";

/// After this long without the cluster or node group showing up, a creation request counts
/// as lost and is made again.
const ACKNOWLEDGEMENT_STALE: Duration = Duration::from_secs(10 * 60);

const CLUSTER_POLICIES: &[&str] = &["AmazonEKSClusterPolicy"];
const NODE_POLICIES: &[&str] = &[
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
];

/// Reconciles `AwsEksKubernetesRuntimeInstance`: an EKS cluster for a runtime.
#[derive(Debug, Clone)]
pub struct EksReconciler {
    aws: Arc<dyn AwsProvider>,
    clusters: Arc<dyn ClusterProvider>,
    sealer: Arc<Sealer>,
    poll: Duration,
}

impl EksReconciler {
    /// A controller reaching AWS through `aws` and the new clusters through `clusters`,
    /// sealing the service-account token it writes with `sealer`.
    pub fn new(
        aws: Arc<dyn AwsProvider>,
        clusters: Arc<dyn ClusterProvider>,
        sealer: Arc<Sealer>,
    ) -> Self {
        EksReconciler {
            aws,
            clusters,
            sealer,
            poll: Duration::from_secs(30),
        }
    }

    /// How often a cluster or node group being created or deleted is looked at (30 s).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    async fn services(
        &self,
        instance: &Object<AwsEksKubernetesRuntimeInstance>,
        ctx: &Context,
    ) -> Result<(Object<AwsEksKubernetesRuntimeDefinition>, AwsServices), ReconcileError> {
        let definition = ctx
            .api::<AwsEksKubernetesRuntimeDefinition>()
            .get(instance.spec.definition)
            .await?;
        let account = ctx
            .api::<AwsAccount>()
            .get(definition.spec.aws_account)
            .await?;
        let services = self.aws.services(&account, &instance.spec.region).await?;
        Ok((definition, services))
    }
}

/// Whether a creation acknowledged at `acknowledged` may still show up.
fn still_pending(acknowledged: &Option<String>) -> bool {
    acknowledged
        .as_deref()
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        .is_some_and(|at| {
            tokio_wall_clock()
                .signed_duration_since(at)
                .to_std()
                .unwrap_or_default()
                < ACKNOWLEDGEMENT_STALE
        })
}

fn now() -> String {
    tokio_wall_clock().to_rfc3339()
}

/// The wall-clock time read through tokio's clock: the system's in production; under a paused
/// tokio clock (tests), moved by exactly as much as tokio's time was, so acknowledgements go
/// stale on the test's schedule.
fn tokio_wall_clock() -> DateTime<Utc> {
    let tokio_now = tokio::time::Instant::now().into_std();
    let std_now = std::time::Instant::now();
    let ahead = tokio_now.saturating_duration_since(std_now);
    let behind = std_now.saturating_duration_since(tokio_now);
    Utc::now() + chrono::Duration::from_std(ahead).unwrap_or_default()
        - chrono::Duration::from_std(behind).unwrap_or_default()
}

/// What to do about a cluster or node group after one look.
enum Progress<T> {
    Ready(T),
    Wait,
}

impl EksReconciler {
    /// Signs in to the new cluster with an EKS token and makes threeport's service account;
    /// returns its token, once the cluster's token controller has filled it in.
    async fn service_account_token(
        &self,
        services: &AwsServices,
        cluster_name: &str,
        connection: &ConnectionData,
    ) -> Result<Option<String>, ReconcileError> {
        let token = services.clusters.token(cluster_name).await?;
        let cluster = self
            .clusters
            .connect(&ClusterConnection {
                api_endpoint: connection.api_endpoint.clone(),
                ca_certificate: connection.ca_certificate.clone(),
                token: Some(token),
                ..ClusterConnection::default()
            })
            .await?;
        let secret_name = format!("{SERVICE_ACCOUNT}-token");
        let manifests = vec![
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": SYSTEM_NAMESPACE}}),
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": SERVICE_ACCOUNT, "namespace": SYSTEM_NAMESPACE}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": SERVICE_ACCOUNT},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "cluster-admin"},
                   "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                                 "namespace": SYSTEM_NAMESPACE}]}),
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                   "metadata": {"name": secret_name, "namespace": SYSTEM_NAMESPACE,
                                "annotations": {"kubernetes.io/service-account.name": SERVICE_ACCOUNT}}}),
        ];
        apply_all(cluster.as_ref(), &manifests, FIELD_MANAGER).await?;
        let secret = cluster
            .get(&ResourceRef {
                api_version: "v1".to_owned(),
                kind: "Secret".to_owned(),
                namespace: Some(SYSTEM_NAMESPACE.to_owned()),
                name: secret_name,
            })
            .await?;
        let token = secret
            .as_ref()
            .and_then(|s| s["data"]["token"].as_str())
            .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
            .and_then(|t| String::from_utf8(t).ok());
        Ok(token)
    }
}

#[async_trait]
impl Reconciler for EksReconciler {
    type Object = AwsEksKubernetesRuntimeInstance;

    async fn reconcile(
        &self,
        instance: &mut Object<AwsEksKubernetesRuntimeInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let (definition, services) = self.services(instance, ctx).await?;
        let runtime = ctx
            .api::<KubernetesRuntimeInstance>()
            .get(instance.spec.runtime)
            .await?;
        let id = instance.id();
        let base = cloud_name(&runtime.meta.name, id, 50);
        let spec = &definition.spec;
        let status = &mut instance.status.details;

        // 1. The network, unless the inventory already holds all of it.
        let owner = status
            .network_owner
            .get_or_insert_with(|| format!("threeport-{id}"))
            .clone();
        if status.vpc_id.is_none() || status.subnet_ids.len() != spec.zone_count as usize {
            let network = services
                .networks
                .ensure_network(&owner, spec.zone_count)
                .await?;
            status.vpc_id = Some(network.vpc_id);
            status.internet_gateway_id = Some(network.internet_gateway_id);
            status.route_table_id = Some(network.route_table_id);
            status.subnet_ids = network.subnet_ids;
        }

        // 2. Roles.
        let role = |suffix: &str, service: &str, policies: &[&str]| RoleRequest {
            name: format!("{base}-{suffix}"),
            trust: Trust::Service(service.to_owned()),
            managed_policies: policies
                .iter()
                .map(|p| {
                    format!(
                        "arn:{}:iam::aws:policy/{p}",
                        partition(&instance.spec.region)
                    )
                })
                .collect(),
            inline_policy: None,
        };
        let cluster_role = role("cluster", "eks.amazonaws.com", CLUSTER_POLICIES);
        let cluster_role_arn = services.roles.ensure_role(&cluster_role).await?;
        status.cluster_role = Some(cluster_role.name);
        let node_role = role("nodes", "ec2.amazonaws.com", NODE_POLICIES);
        let node_role_arn = services.roles.ensure_role(&node_role).await?;
        status.node_role = Some(node_role.name);

        // 3. The cluster.
        let cluster_name = status
            .cluster_name
            .get_or_insert_with(|| base.clone())
            .clone();
        let cluster = match services.clusters.cluster(&cluster_name).await? {
            None if still_pending(&status.cluster_creation_acknowledged) => Progress::Wait,
            None => {
                services
                    .clusters
                    .create_cluster(&ClusterRequest {
                        name: cluster_name.clone(),
                        role_arn: cluster_role_arn,
                        subnet_ids: status.subnet_ids.clone(),
                        kubernetes_version: None,
                    })
                    .await?;
                status.cluster_creation_acknowledged = Some(now());
                instance.status.record_event(
                    EventType::Normal,
                    "CreatingCluster",
                    format!("EKS cluster {cluster_name} requested"),
                );
                Progress::Wait
            }
            Some(state) if state.status == EksStatus::Failed => {
                return Err(ReconcileError::terminal(format!(
                    "EKS cluster {cluster_name} failed to create; delete the runtime to clean up"
                )));
            }
            Some(state) if state.is_active() => Progress::Ready(state),
            Some(_) => Progress::Wait,
        };
        let Progress::Ready(cluster) = cluster else {
            return Ok(Action::RequeueAfter(self.poll));
        };
        let status = &mut instance.status.details;

        // 4. The cluster's OIDC provider, for workload roles (IRSA).
        if let Some(issuer) = &cluster.oidc_issuer
            && status.oidc_provider_arn.is_none()
        {
            status.oidc_provider_arn = Some(services.roles.ensure_oidc_provider(issuer).await?);
            status.oidc_issuer = Some(issuer.clone());
        }

        // 5. The default node group.
        let group_name = status
            .node_group_name
            .get_or_insert_with(|| format!("{base}-default"))
            .clone();
        match services
            .clusters
            .node_group(&cluster_name, &group_name)
            .await?
        {
            Some(EksStatus::Active) => {}
            Some(EksStatus::Failed) => {
                return Err(ReconcileError::terminal(format!(
                    "node group {group_name} failed to create; delete the runtime to clean up"
                )));
            }
            Some(_) => return Ok(Action::RequeueAfter(self.poll)),
            None if still_pending(&status.node_group_creation_acknowledged) => {
                return Ok(Action::RequeueAfter(self.poll));
            }
            None => {
                services
                    .clusters
                    .create_node_group(&NodeGroupRequest {
                        cluster: cluster_name.clone(),
                        name: group_name.clone(),
                        node_role_arn,
                        subnet_ids: status.subnet_ids.clone(),
                        instance_type: spec.default_node_group_instance_type.clone(),
                        minimum: spec.default_node_group_minimum_size,
                        maximum: spec.default_node_group_maximum_size,
                        desired: spec.default_node_group_initial_size,
                    })
                    .await?;
                status.node_group_creation_acknowledged = Some(now());
                instance.status.record_event(
                    EventType::Normal,
                    "CreatingNodeGroup",
                    format!("node group {group_name} requested"),
                );
                return Ok(Action::RequeueAfter(self.poll));
            }
        }

        // 6. Threeport's access, in this object's status: the runtime follows it and takes it.
        let endpoint = cluster.endpoint.clone().unwrap_or_default();
        let connected = instance
            .status
            .details
            .connection
            .as_ref()
            .is_some_and(|c| c.api_endpoint == endpoint && c.token.is_some());
        if !connected {
            let mut connection = ConnectionData {
                api_endpoint: endpoint,
                ca_certificate: cluster.ca_certificate.clone(),
                token: None,
                client_certificate: None,
                client_key: None,
                kubeconfig: None,
            };
            let Some(token) = self
                .service_account_token(&services, &cluster_name, &connection)
                .await?
            else {
                // The token controller has not filled it in yet.
                return Ok(Action::RequeueAfter(Duration::from_secs(2)));
            };
            connection.token = Some(self.sealer.seal(CONNECTION_TOKEN_FIELD, &token)?);
            instance.status.details.connection = Some(connection);
            instance.status.details.service_account =
                Some(format!("{SYSTEM_NAMESPACE}/{SERVICE_ACCOUNT}"));
            instance.status.record_event(
                EventType::Normal,
                "Connected",
                format!(
                    "cluster {cluster_name} serves; runtime {} connects with the data in this status",
                    runtime.meta.name
                ),
            );
        }
        Ok(Action::Done)
    }

    async fn cleanup(
        &self,
        instance: &mut Object<AwsEksKubernetesRuntimeInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let (_, services) = self.services(instance, ctx).await?;
        let status = &mut instance.status.details;
        if let Some(cluster) = &status.cluster_name {
            // The support services' IRSA roles, named after the cluster (made by whichever
            // controller installed a service; absent ones are skipped).
            for service in threeport_api::model::SupportService::ALL {
                let role = crate::support::role_name(cluster, service);
                services.roles.delete_role(&role).await?;
            }
        }
        if let (Some(cluster), Some(group)) = (&status.cluster_name, &status.node_group_name) {
            match services.clusters.node_group(cluster, group).await? {
                Some(state) => {
                    if state != EksStatus::Deleting {
                        services.clusters.delete_node_group(cluster, group).await?;
                    }
                    return Ok(Action::RequeueAfter(self.poll));
                }
                None => {
                    status.node_group_name = None;
                    status.node_group_creation_acknowledged = None;
                }
            }
        }
        if let Some(cluster) = &status.cluster_name {
            match services.clusters.cluster(cluster).await? {
                Some(state) => {
                    // Seen: the create landed, so once it is gone it is our delete's doing,
                    // not a create still to show up.
                    status.cluster_creation_acknowledged = None;
                    if state.status != EksStatus::Deleting {
                        services.clusters.delete_cluster(cluster).await?;
                    }
                    return Ok(Action::RequeueAfter(self.poll));
                }
                // A creation still in flight could show up after teardown: wait for it.
                None if still_pending(&status.cluster_creation_acknowledged) => {
                    return Ok(Action::RequeueAfter(self.poll));
                }
                None => {
                    status.cluster_name = None;
                    status.cluster_creation_acknowledged = None;
                }
            }
        }
        if let Some(issuer) = status.oidc_issuer.clone() {
            services.roles.delete_oidc_provider(&issuer).await?;
            status.oidc_issuer = None;
            status.oidc_provider_arn = None;
        }
        for recorded in [&mut status.node_role, &mut status.cluster_role] {
            if let Some(role) = recorded.clone() {
                services.roles.delete_role(&role).await?;
                *recorded = None;
            }
        }
        if let Some(owner) = status.network_owner.clone() {
            services.networks.delete_network(&owner).await?;
            status.network_owner = None;
            status.vpc_id = None;
            status.internet_gateway_id = None;
            status.route_table_id = None;
            status.subnet_ids.clear();
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{ACKNOWLEDGEMENT_STALE, now, still_pending};

    /// Staleness goes by tokio's clock: on a paused clock it follows the test's time.
    #[tokio::test(start_paused = true)]
    async fn acknowledgements_go_stale_on_tokios_clock() {
        let acknowledged = Some(now());
        assert!(still_pending(&acknowledged));
        tokio::time::advance(ACKNOWLEDGEMENT_STALE - Duration::from_secs(5)).await;
        assert!(still_pending(&acknowledged));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!still_pending(&acknowledged), "stale after the window");
    }
}
