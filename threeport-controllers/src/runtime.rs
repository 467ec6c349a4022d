//! The Kubernetes-runtime controller.
//!
//! `existing` and `kind` runtimes are registered by their connection data and health-checked
//! (listing namespaces). For an `eks` runtime it creates the `AwsEksKubernetesRuntimeDefinition`
//! and `AwsEksKubernetesRuntimeInstance` objects the AWS controller provisions the cluster from
//! (the region from the runtime's location, else the account's default region), and waits
//! until that controller writes the connection data; deleting the runtime deletes them too.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use threeport_api::model::{
    AwsAccount, AwsEksKubernetesRuntimeDefinition, AwsEksKubernetesRuntimeInstance, InfraProvider,
    KubernetesRuntimeDefinition, KubernetesRuntimeInstance, aws_region_of,
};
use threeport_core::object::EventType;
use threeport_core::{
    Action, ApiObject, Context, Error, ErrorKind, Object, ReconcileError, Reconciler,
};

use crate::clusters::ClusterProvider;

/// How often a runtime waiting for its cluster looks again.
const WAITING: Duration = Duration::from_secs(30);

/// Reconciles `KubernetesRuntimeInstance` objects.
#[derive(Debug, Clone)]
pub struct RuntimeReconciler {
    clusters: Arc<dyn ClusterProvider>,
    waiting: Duration,
}

impl RuntimeReconciler {
    /// A controller reaching clusters through `clusters`.
    pub fn new(clusters: Arc<dyn ClusterProvider>) -> Self {
        RuntimeReconciler {
            clusters,
            waiting: WAITING,
        }
    }

    /// How often a runtime waiting for its EKS cluster to come or go looks again (30 s).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.waiting = poll;
        self
    }
}

/// The object of kind `T` named `name`, created from `spec` if missing.
async fn ensure<T: ApiObject>(ctx: &Context, name: &str, spec: &T) -> Result<Object<T>, Error> {
    let api = ctx.api::<T>();
    match api.create(name, spec.clone()).await {
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
    let eks_definition = ensure(
        ctx,
        &definition.meta.name,
        &AwsEksKubernetesRuntimeDefinition {
            aws_account: account_id,
            zone_count: 2,
            default_node_group_instance_type: "t3.medium".to_owned(),
            default_node_group_initial_size: 2,
            default_node_group_minimum_size: 2,
            default_node_group_maximum_size: definition.spec.node_maximum.clamp(2, 6),
        },
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
                runtime.status.record_event(
                    EventType::Normal,
                    "WaitingForCluster",
                    format!(
                        "EKS cluster {} in {} requested; waiting for the AWS controller to create it",
                        eks.meta.name, eks.spec.region
                    ),
                );
                return Ok(Action::RequeueAfter(self.waiting));
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
        Ok(Action::Done)
    }

    async fn cleanup(
        &self,
        runtime: &mut Object<KubernetesRuntimeInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        // An EKS cluster behind it goes first: its object's deletion is the AWS controller's
        // cue to tear the cluster down, and it disappears when that is done.
        let instances = ctx.api::<AwsEksKubernetesRuntimeInstance>();
        match instances.get_by_name(&runtime.meta.name).await {
            Ok(eks) if eks.spec.runtime == runtime.id() => {
                if !eks.is_deleting() {
                    instances.delete(eks.id()).await?;
                }
                Ok(Action::RequeueAfter(self.waiting))
            }
            Ok(_) => Ok(Action::Done),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(Action::Done),
            Err(err) => Err(err.into()),
        }
    }
}
