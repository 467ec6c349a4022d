//! The kinds this control plane serves: Threeport's object model from `threeport-api`.

pub use threeport_api::model::*;

use std::sync::Arc;

use serde_json::Value;
use threeport_core::store::ListQuery;
use threeport_core::{Api, Error, Store};

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
        .serve::<KindDefinition>()
        .defaulted::<KindDefinition>(crate::custom::admit_kind_definition)
        .serve::<TerraformDefinition>()
        .serve::<TerraformInstance>()
        .serve::<ControlPlaneDefinition>()
        .serve::<ControlPlaneInstance>()
        .serve::<Event>()
        .defaulted::<WorkloadInstance>(|store, spec| Box::pin(default_runtime(store, spec)))
        .defaulted::<HelmWorkloadInstance>(|store, spec| Box::pin(default_runtime(store, spec)))
}

/// A (Helm) workload instance that names no runtime runs on the default runtime: the API names it
/// in the spec when the instance is written (so the reference keeps that runtime from being
/// deleted while it hosts the workload, and the instance follows it), rather than the
/// controller writing the instance's spec later. With no default runtime, it stays unnamed.
async fn default_runtime(store: Arc<dyn Store>, mut spec: Value) -> Result<Value, Error> {
    if !spec.get("runtime").is_none_or(Value::is_null) {
        return Ok(spec);
    }
    let runtimes = Api::<KubernetesRuntimeInstance>::new(store);
    let default = runtimes
        .list_all(&ListQuery::default().limit(1000))
        .await?
        .into_iter()
        .find(|r| r.spec.default_runtime && !r.is_deleting());
    if let (Some(runtime), Some(fields)) = (default, spec.as_object_mut()) {
        fields.insert("runtime".into(), Value::String(runtime.id().to_string()));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::registry;

    #[test]
    fn every_kind_is_served_once() {
        let registry = registry();
        assert_eq!(registry.entries().count(), 29);
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
