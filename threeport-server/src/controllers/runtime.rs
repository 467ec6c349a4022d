//! The Kubernetes-runtime controller: checks that a runtime instance's cluster answers.
//!
//! `existing` and `kind` runtimes are registered by their connection data and health-checked
//! (listing namespaces); `eks` runtimes are provisioned by the AWS controller, which does not
//! exist yet in this build, so they fail with that reason.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use threeport_api::model::{InfraProvider, KubernetesRuntimeDefinition, KubernetesRuntimeInstance};
use threeport_core::{Action, Context, Object, ReconcileError, Reconciler};

use super::clusters::ClusterProvider;

/// Reconciles `KubernetesRuntimeInstance` objects.
#[derive(Debug, Clone)]
pub struct RuntimeReconciler {
    clusters: Arc<dyn ClusterProvider>,
}

impl RuntimeReconciler {
    /// A controller reaching clusters through `clusters`.
    pub fn new(clusters: Arc<dyn ClusterProvider>) -> Self {
        RuntimeReconciler { clusters }
    }
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
            return Err(ReconcileError::terminal(
                "eks runtimes are provisioned by the AWS controller, which this build does not have yet",
            ));
        }
        if runtime.spec.connection.is_none() {
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
}
