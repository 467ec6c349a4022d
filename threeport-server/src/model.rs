//! The kinds this control plane serves: Threeport's object model from `threeport-api`.

pub use threeport_api::model::*;

use crate::KindRegistry;

/// Every kind of the model, for the API: each once, documented; what is secret or sealed
/// is declared on the type (`ApiObject::SECRET_FIELD`, `ApiObject::SEALED_FIELDS`).
pub fn registry() -> KindRegistry {
    KindRegistry::new()
        .serve::<WorkloadDefinition>()
        .serve::<WorkloadInstance>()
        .serve::<WorkloadResourceDefinition>()
        .serve::<WorkloadResourceInstance>()
        .serve::<HelmWorkloadDefinition>()
        .serve::<HelmWorkloadInstance>()
        .serve::<KubernetesRuntimeDefinition>()
        .serve::<KubernetesRuntimeInstance>()
        .serve::<AwsAccount>()
        .serve::<AwsEksKubernetesRuntimeDefinition>()
        .serve::<AwsEksKubernetesRuntimeInstance>()
        .serve::<AwsRelationalDatabaseDefinition>()
        .serve::<AwsRelationalDatabaseInstance>()
        .serve::<AwsObjectStorageBucketDefinition>()
        .serve::<AwsObjectStorageBucketInstance>()
        .serve::<GatewayDefinition>()
        .serve::<GatewayInstance>()
        .serve::<DomainNameDefinition>()
        .serve::<DomainNameInstance>()
        .serve::<ObservabilityStackDefinition>()
        .serve::<ObservabilityStackInstance>()
        .serve::<SecretDefinition>()
        .serve::<SecretInstance>()
        .serve::<TerraformDefinition>()
        .serve::<TerraformInstance>()
        .serve::<ControlPlaneDefinition>()
        .serve::<ControlPlaneInstance>()
        .serve::<Event>()
}

#[cfg(test)]
mod tests {
    use super::registry;

    #[test]
    fn every_kind_is_served_once() {
        let registry = registry();
        assert_eq!(registry.entries().count(), 28);
        assert!(
            registry
                .by_plural("aws-eks-kubernetes-runtime-instances")
                .is_some()
        );
        assert!(
            registry
                .by_plural("secret-definitions")
                .unwrap()
                .secret_field
                .is_some()
        );
    }
}
