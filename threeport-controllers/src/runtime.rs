//! The Kubernetes-runtime controller.
//!
//! `existing` and `kind` runtimes are registered by their connection data and health-checked
//! (listing namespaces). For an `eks` runtime it creates the `AwsEksKubernetesRuntimeDefinition`
//! and `AwsEksKubernetesRuntimeInstance` objects the AWS controller provisions the cluster from
//! (the region from the runtime's location, else the account's default region), and waits
//! until that controller writes the connection data in the EKS instance's status, which it
//! copies into its own. The EKS instance is owned by the runtime:
//! the runtime follows it (its progress brings the runtime back; nobody polls) and deleting
//! the runtime deletes it first (foreground cascade), so the cluster is torn down before the
//! runtime goes.
//!
//! A runtime that asks for an agent (`spec.agent`) gets one installed on its cluster
//! ([`agent_manifests`](crate::agent::agent_manifests)): it reports the health of what runs
//! there through the API, and the control plane does not watch that cluster itself. Dropping
//! `spec.agent`, or deleting the runtime, removes it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use threeport_api::model::{
    AwsAccount, AwsEksKubernetesRuntimeDefinition, AwsEksKubernetesRuntimeInstance, InfraProvider,
    KubernetesRuntimeDefinition, KubernetesRuntimeInstance, aws_region_of, runtime_connection,
};
use threeport_core::object::{ConditionStatus, NewObject};
use threeport_core::{
    Action, ApiObject, Context, Error, ErrorKind, Object, ObjectRef, ReconcileError, Reconciler,
};

use crate::agent::agent_manifests;
use crate::clusters::ClusterProvider;
use crate::deploy::FIELD_MANAGER;
use crate::seal::Sealer;

/// Reconciles `KubernetesRuntimeInstance` objects.
#[derive(Debug, Clone)]
pub struct RuntimeReconciler {
    clusters: Arc<dyn ClusterProvider>,
    sealer: Arc<Sealer>,
    #[cfg(feature = "aws")]
    support: Option<crate::support::Support>,
}

impl RuntimeReconciler {
    /// A controller reaching clusters through `clusters`, opening agents' tokens with
    /// `sealer`. Declare it following `AwsEksKubernetesRuntimeInstance` by ownership (as the
    /// controller table does).
    pub fn new(clusters: Arc<dyn ClusterProvider>, sealer: Arc<Sealer>) -> Self {
        RuntimeReconciler {
            clusters,
            sealer,
            #[cfg(feature = "aws")]
            support: None,
        }
    }

    /// Installs the support services the runtime lists (and on EKS the cluster-autoscaler)
    /// through `support`.
    #[cfg(feature = "aws")]
    pub fn with_support(mut self, support: crate::support::Support) -> Self {
        self.support = Some(support);
        self
    }

    /// Installs what the runtime asks for up front, and the cluster-autoscaler on EKS.
    #[cfg(feature = "aws")]
    async fn support_services(
        &self,
        runtime: &mut Object<KubernetesRuntimeInstance>,
        eks: bool,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        use crate::network::SUPPORT_READY;
        use threeport_api::model::SupportService;
        let Some(support) = &self.support else {
            return Ok(Action::Done);
        };
        let mut wanted = runtime.spec.support_services.clone();
        if eks {
            wanted.push(SupportService::ClusterAutoscaler);
        }
        wanted.sort();
        wanted.dedup();
        let mut pending = Vec::new();
        for service in wanted {
            if support.ensure(ctx, runtime, service).await? == crate::support::Readiness::Pending {
                pending.push(service.name());
            }
        }
        if pending.is_empty() {
            runtime.status.set_condition(
                SUPPORT_READY,
                ConditionStatus::True,
                "Installed",
                "the support services it lists are installed",
            );
            return Ok(Action::Done);
        }
        runtime.status.set_condition(
            SUPPORT_READY,
            ConditionStatus::False,
            "Installing",
            format!("waiting for {}", pending.join(", ")),
        );
        Ok(Action::RequeueAfter(support.poll()))
    }

    /// Installs, updates or removes the runtime's agent as its spec says.
    async fn agent(
        &self,
        runtime: &mut Object<KubernetesRuntimeInstance>,
        cluster: &dyn threeport_k8s::Cluster,
    ) -> Result<(), ReconcileError> {
        match &runtime.spec.agent {
            Some(agent) => {
                let token = self.sealer.open("spec.agent.token", &agent.token)?;
                threeport_k8s::apply_all(cluster, &agent_manifests(agent, &token), FIELD_MANAGER)
                    .await?;
                runtime.status.details.agent_installed = true;
                runtime.status.set_condition(
                    AGENT_READY,
                    ConditionStatus::True,
                    "Installed",
                    format!("the agent reports to {}", agent.api_url),
                );
            }
            None if runtime.status.details.agent_installed => {
                remove_agent(cluster).await?;
                runtime.status.details.agent_installed = false;
                runtime.status.set_condition(
                    AGENT_READY,
                    ConditionStatus::False,
                    "Removed",
                    "the runtime asks for no agent: the control plane watches it",
                );
            }
            None => {}
        }
        Ok(())
    }
}

/// Deletes what [`agent_manifests`] installs.
async fn remove_agent(cluster: &dyn threeport_k8s::Cluster) -> Result<(), Error> {
    let placeholder = threeport_api::model::RuntimeAgent {
        api_url: String::new(),
        token: String::new(),
        api_ca: None,
        image: None,
    };
    let resources = agent_manifests(&placeholder, "")
        .iter()
        .map(threeport_k8s::ResourceRef::of)
        .collect::<Result<Vec<_>, _>>()?;
    threeport_k8s::delete_all(cluster, &resources).await?;
    Ok(())
}

/// The object of kind `T` named `name`, created from `spec` (owned by `owner`, if given) if
/// missing.
async fn ensure<T: ApiObject>(
    ctx: &Context,
    name: &str,
    spec: &T,
    owner: Option<ObjectRef>,
) -> Result<Object<T>, Error> {
    let api = ctx.api::<T>();
    let mut new = NewObject::typed(name, spec)?;
    new.owners.extend(owner);
    match api.create_new(new).await {
        Ok(created) => Ok(created),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => api.get_by_name(name).await,
        Err(err) => Err(err),
    }
}

/// Creates the EKS objects of an `eks` runtime.
async fn ensure_eks(
    ctx: &Context,
    definition: &Object<KubernetesRuntimeDefinition>,
    runtime: &Object<KubernetesRuntimeInstance>,
) -> Result<Object<AwsEksKubernetesRuntimeInstance>, ReconcileError> {
    let account_id = definition.spec.aws_account.ok_or_else(|| {
        ReconcileError::terminal("an eks runtime definition needs an AWS account")
    })?;
    let account = ctx.api::<AwsAccount>().get(account_id).await?;
    let region = aws_region_of(&runtime.spec.location)
        .map(str::to_owned)
        .unwrap_or(account.spec.default_region);
    // Node size, profile, availability and maximum decide the node group.
    let shape = definition.spec.node_group();
    let eks_definition = ensure(
        ctx,
        &definition.meta.name,
        &AwsEksKubernetesRuntimeDefinition {
            aws_account: account_id,
            zone_count: shape.zones,
            default_node_group_instance_type: shape.instance_type,
            default_node_group_initial_size: shape.initial,
            default_node_group_minimum_size: shape.minimum,
            default_node_group_maximum_size: shape.maximum,
        },
        None,
    )
    .await?;
    Ok(ensure(
        ctx,
        &runtime.meta.name,
        &AwsEksKubernetesRuntimeInstance {
            definition: eks_definition.id(),
            runtime: runtime.id(),
            region,
        },
        Some(ObjectRef::new(
            KubernetesRuntimeInstance::KIND,
            runtime.id(),
        )),
    )
    .await?)
}

#[async_trait]
impl Reconciler for RuntimeReconciler {
    type Object = KubernetesRuntimeInstance;

    async fn reconcile(
        &self,
        runtime: &mut Object<KubernetesRuntimeInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let definition = ctx
            .api::<KubernetesRuntimeDefinition>()
            .get(runtime.spec.definition)
            .await?;
        if definition.spec.infra_provider == InfraProvider::Eks {
            let eks = ensure_eks(ctx, &definition, runtime).await?;
            if runtime.spec.connection.is_none() {
                runtime.status.details.connection = eks.status.details.connection.clone();
            }
            if runtime_connection(runtime).is_none() {
                // The EKS instance's progress brings us back (we follow what we own).
                runtime.status.set_condition(
                    CLUSTER_READY,
                    ConditionStatus::False,
                    "WaitingForCluster",
                    format!(
                        "EKS cluster {} in {} requested; waiting for the AWS controller to create it",
                        eks.meta.name, eks.spec.region
                    ),
                );
                return Ok(Action::Done);
            }
        } else if runtime.spec.connection.is_none() {
            return Err(ReconcileError::terminal(
                "an existing or kind runtime needs connection data (spec.connection)",
            ));
        }
        let cluster = self.clusters.cluster(runtime).await?;
        cluster.list("v1", "Namespace", None).await.map_err(|e| {
            ReconcileError::retry_after(
                Duration::from_secs(10),
                format!("the cluster does not answer: {e}"),
            )
        })?;
        runtime.status.set_condition(
            CLUSTER_READY,
            ConditionStatus::True,
            "Serving",
            "the cluster answers",
        );
        self.agent(runtime, cluster.as_ref()).await?;
        #[cfg(feature = "aws")]
        return self
            .support_services(
                runtime,
                definition.spec.infra_provider == InfraProvider::Eks,
                ctx,
            )
            .await;
        #[cfg(not(feature = "aws"))]
        Ok(Action::Done)
    }

    /// Removes the agent, if one was installed. An EKS cluster behind the runtime is owned by
    /// it, so deleting the runtime deletes that first, and the runtime is removed once it is
    /// gone.
    async fn cleanup(
        &self,
        runtime: &mut Object<KubernetesRuntimeInstance>,
        _ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        if runtime.status.details.agent_installed {
            let cluster = self.clusters.cluster(runtime).await?;
            remove_agent(cluster.as_ref()).await?;
            runtime.status.details.agent_installed = false;
        }
        Ok(Action::Done)
    }
}

/// Condition of a runtime with an agent: whether the agent is installed.
pub const AGENT_READY: &str = "AgentInstalled";

/// Condition of a runtime: whether its cluster serves.
pub const CLUSTER_READY: &str = "ClusterReady";
