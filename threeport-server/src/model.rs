//! The kinds this control plane serves: Threeport's object model from `threeport-api`.

pub use threeport_api::model::*;

use crate::KindRegistry;

/// Every kind of the model, for the API.
pub fn registry() -> KindRegistry {
    let registry = KindRegistry::new()
        .with::<WorkloadDefinition>()
        .with::<WorkloadInstance>()
        .with::<WorkloadResourceDefinition>()
        .with::<WorkloadResourceInstance>()
        .with::<HelmWorkloadDefinition>()
        .with::<HelmWorkloadInstance>()
        .with::<KubernetesRuntimeDefinition>()
        .with::<KubernetesRuntimeInstance>()
        .with::<AwsAccount>()
        .with::<AwsEksKubernetesRuntimeDefinition>()
        .with::<AwsEksKubernetesRuntimeInstance>()
        .with::<AwsRelationalDatabaseDefinition>()
        .with::<AwsRelationalDatabaseInstance>()
        .with::<AwsObjectStorageBucketDefinition>()
        .with::<AwsObjectStorageBucketInstance>()
        .with::<GatewayDefinition>()
        .with::<GatewayInstance>()
        .with::<DomainNameDefinition>()
        .with::<DomainNameInstance>()
        .with::<ObservabilityStackDefinition>()
        .with::<ObservabilityStackInstance>()
        .with_secret::<SecretDefinition>("data")
        .with::<SecretInstance>()
        .with::<TerraformDefinition>()
        .with::<TerraformInstance>()
        .with::<ControlPlaneDefinition>()
        .with::<ControlPlaneInstance>()
        .with::<Event>();
    // Secret parts are encrypted at rest; every kind documents its spec in the OpenAPI document.
    registry
        .sealed::<AwsAccount>(&["credentials.access_keys.secret_access_key"])
        .sealed::<KubernetesRuntimeInstance>(&[
            "connection.token",
            "connection.client_key",
            "connection.kubeconfig",
        ])
        .documented::<WorkloadDefinition>()
        .documented::<WorkloadInstance>()
        .documented::<WorkloadResourceDefinition>()
        .documented::<WorkloadResourceInstance>()
        .documented::<HelmWorkloadDefinition>()
        .documented::<HelmWorkloadInstance>()
        .documented::<KubernetesRuntimeDefinition>()
        .documented::<KubernetesRuntimeInstance>()
        .documented::<AwsAccount>()
        .documented::<AwsEksKubernetesRuntimeDefinition>()
        .documented::<AwsEksKubernetesRuntimeInstance>()
        .documented::<AwsRelationalDatabaseDefinition>()
        .documented::<AwsRelationalDatabaseInstance>()
        .documented::<AwsObjectStorageBucketDefinition>()
        .documented::<AwsObjectStorageBucketInstance>()
        .documented::<GatewayDefinition>()
        .documented::<GatewayInstance>()
        .documented::<DomainNameDefinition>()
        .documented::<DomainNameInstance>()
        .documented::<ObservabilityStackDefinition>()
        .documented::<ObservabilityStackInstance>()
        .documented::<SecretDefinition>()
        .documented::<SecretInstance>()
        .documented::<TerraformDefinition>()
        .documented::<TerraformInstance>()
        .documented::<ControlPlaneDefinition>()
        .documented::<ControlPlaneInstance>()
        .documented::<Event>()
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
