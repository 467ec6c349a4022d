//! Kinds that only hold configuration (definitions other controllers read, records a
//! controller writes): nothing to build, nothing to tear down. They still need a controller:
//! the one that marks them reconciled and, when a deletion reaches them (a cascade from
//! their owner, or a user's DELETE), removes them, so that whatever owns them can go next.

use async_trait::async_trait;
use threeport_api::model::{
    AwsAccount, AwsEksKubernetesRuntimeDefinition, AwsObjectStorageBucketDefinition,
    AwsRelationalDatabaseDefinition, ControlPlaneDefinition, DomainNameDefinition,
    GatewayDefinition, HelmWorkloadDefinition, KindDefinition, KubernetesRuntimeDefinition,
    ObservabilityStackDefinition, TerraformDefinition, WorkloadResourceDefinition,
};
#[cfg(not(feature = "kubernetes"))]
use threeport_api::model::{ControlPlaneInstance, ObservabilityStackInstance};
#[cfg(not(feature = "aws"))]
use threeport_api::model::{DomainNameInstance, GatewayInstance};
use threeport_core::{Action, ApiObject, Context, Dynamic, Object, ReconcileError, Reconciler};

/// The kinds [`PassiveReconciler`]s serve in the stock control plane.
pub const PASSIVE_KINDS: &[&str] = &[
    AwsAccount::KIND,
    HelmWorkloadDefinition::KIND,
    WorkloadResourceDefinition::KIND,
    KubernetesRuntimeDefinition::KIND,
    AwsEksKubernetesRuntimeDefinition::KIND,
    AwsRelationalDatabaseDefinition::KIND,
    AwsObjectStorageBucketDefinition::KIND,
    DomainNameDefinition::KIND,
    GatewayDefinition::KIND,
    ObservabilityStackDefinition::KIND,
    ControlPlaneDefinition::KIND,
    TerraformDefinition::KIND,
    KindDefinition::KIND,
    // Without the Kubernetes controllers nothing reconciles these; passively, they can go.
    #[cfg(not(feature = "kubernetes"))]
    ObservabilityStackInstance::KIND,
    #[cfg(not(feature = "kubernetes"))]
    ControlPlaneInstance::KIND,
    // Without the AWS controllers nothing reconciles these; passively, they can still go.
    #[cfg(not(feature = "aws"))]
    DomainNameInstance::KIND,
    #[cfg(not(feature = "aws"))]
    GatewayInstance::KIND,
];

/// Reconciles objects of one kind that need no work: marks them reconciled, and removes
/// them once their deletion is asked for (after what they own, as for every object).
#[derive(Debug, Clone)]
pub struct PassiveReconciler {
    kind: &'static str,
}

impl PassiveReconciler {
    /// A reconciler for `kind`.
    pub fn new(kind: &'static str) -> Self {
        PassiveReconciler { kind }
    }
}

#[async_trait]
impl Reconciler for PassiveReconciler {
    type Object = Dynamic;

    fn kind(&self) -> &str {
        self.kind
    }

    async fn reconcile(
        &self,
        _object: &mut Object<Dynamic>,
        _ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        Ok(Action::Done)
    }
}
