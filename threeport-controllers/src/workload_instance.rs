//! The workload-instance controller: deploys a workload definition's resources to the
//! instance's runtime (or the default runtime), with Threeport's labels and, when the
//! manifests bring no namespace, a generated one; applies changes, deletes what the manifests
//! dropped, and removes everything, in reverse order, when the instance goes.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use threeport_api::model::{WorkloadDefinition, WorkloadInstance};
use threeport_core::object::EventType;
use threeport_core::{Action, Context, Object, ReconcileError, Reconciler};
use threeport_k8s::apply_all;

use crate::attached::{Attachments, Target};
use crate::clusters::ClusterProvider;
use crate::deploy::{
    FIELD_MANAGER, applied, delete_applied, find_runtime, generated_namespace, is_namespaced,
    label, namespace_manifest, operators_ready, prune, runtime_cluster,
};
use crate::seal::Sealer;
use crate::workload_definition::split_manifests;

/// Reconciles `WorkloadInstance` objects.
#[derive(Debug, Clone)]
pub struct WorkloadInstanceReconciler {
    clusters: Arc<dyn ClusterProvider>,
    sealer: Arc<Sealer>,
}

impl WorkloadInstanceReconciler {
    /// A controller reaching clusters through `clusters`, opening the database passwords of
    /// attached services with `sealer`.
    pub fn new(clusters: Arc<dyn ClusterProvider>, sealer: Arc<Sealer>) -> Self {
        WorkloadInstanceReconciler { clusters, sealer }
    }
}

/// The manifests to apply for `instance`: its definition's and what attached services add,
/// labelled, with its namespace filled in (generated and created when the manifests bring
/// none; else the first one they name, for what the services add). Returns them and the
/// generated namespace.
fn prepare(
    mut manifests: Vec<Value>,
    attachments: &Attachments,
    instance: &Object<WorkloadInstance>,
) -> (Vec<Value>, Option<String>) {
    let brings_namespace = manifests.iter().any(|m| m["kind"] == "Namespace")
        || manifests
            .iter()
            .any(|m| m["metadata"]["namespace"].is_string());
    let generated =
        (!brings_namespace).then(|| generated_namespace(&instance.meta.name, instance.id()));
    let namespace = generated.clone().or_else(|| {
        manifests
            .iter()
            .find_map(|m| m["metadata"]["namespace"].as_str().map(str::to_owned))
            .or_else(|| {
                manifests
                    .iter()
                    .find(|m| m["kind"] == "Namespace")
                    .and_then(|m| m["metadata"]["name"].as_str().map(str::to_owned))
            })
    });
    let own = manifests.len();
    manifests.extend(attachments.manifests.iter().cloned());
    let kinds: Vec<Value> = manifests.clone();
    for (index, manifest) in manifests.iter_mut().enumerate() {
        let kind = manifest["kind"].as_str().unwrap_or_default().to_owned();
        let fill = if index < own { &generated } else { &namespace };
        if let Some(namespace) = fill
            && is_namespaced(&kind, &kinds)
        {
            manifest["metadata"]["namespace"] = json!(namespace);
        }
    }
    attachments.apply_to(&mut manifests, namespace.as_deref());
    for manifest in &mut manifests {
        label(manifest, instance.id());
    }
    if let Some(namespace) = &generated {
        manifests.insert(0, namespace_manifest(namespace, instance.id()));
    }
    (manifests, generated)
}

#[async_trait]
impl Reconciler for WorkloadInstanceReconciler {
    type Object = WorkloadInstance;

    async fn reconcile(
        &self,
        instance: &mut Object<WorkloadInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let definition = ctx
            .api::<WorkloadDefinition>()
            .get(instance.spec.definition)
            .await?;
        let manifests =
            split_manifests(&definition.spec.yaml_document).map_err(ReconcileError::Terminal)?;
        // An instance written without a runtime while a default runtime existed got it from
        // the API; one written before any existed runs on the default found now (recorded in
        // status, never written into its spec: controllers do not write desired state).
        let named = instance.spec.runtime.or(instance.status.details.runtime);
        let runtime = find_runtime(ctx, named).await?;
        let Some(cluster) =
            runtime_cluster(self.clusters.as_ref(), &runtime, &mut instance.status).await?
        else {
            return Ok(Action::Done);
        };
        let attachments =
            Attachments::of(ctx, Target::Workload, instance.id(), &self.sealer).await?;
        operators_ready(cluster.as_ref(), &attachments.manifests).await?;
        let (manifests, generated) = prepare(manifests, &attachments, instance);
        let live = apply_all(cluster.as_ref(), &manifests, FIELD_MANAGER).await?;
        let applied = applied(&live, &instance.status.details.resources);
        // What an earlier apply put there and the manifests no longer have goes.
        let dropped = prune(
            cluster.as_ref(),
            &instance.status.details.resources,
            &applied,
        )
        .await?;
        if !dropped.is_empty() {
            let names: Vec<String> = dropped.iter().map(ToString::to_string).collect();
            instance.status.record_event(
                EventType::Normal,
                "Pruned",
                format!(
                    "deleted what the manifests no longer define: {}",
                    names.join(", ")
                ),
            );
        }
        instance.status.record_event(
            EventType::Normal,
            "Applied",
            format!(
                "{} resources applied to runtime {}",
                applied.len(),
                runtime.meta.name
            ),
        );
        let details = &mut instance.status.details;
        details.runtime = Some(runtime.id());
        details.namespace = generated;
        details.resources = applied;
        Ok(Action::Done)
    }

    async fn cleanup(
        &self,
        instance: &mut Object<WorkloadInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        if instance.status.details.resources.is_empty() {
            return Ok(Action::Done);
        }
        let named = instance.spec.runtime.or(instance.status.details.runtime);
        let runtime = find_runtime(ctx, named).await?;
        let cluster = self.clusters.cluster(&runtime).await?;
        delete_applied(cluster.as_ref(), &instance.status.details.resources).await?;
        instance.status.details.resources.clear();
        Ok(Action::Done)
    }
}
