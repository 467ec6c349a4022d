//! The workload-instance controller: deploys a workload definition's resources to the
//! instance's runtime (or the default runtime), with Threeport's labels and, when the
//! manifests bring no namespace, a generated one; applies changes, deletes what the manifests
//! dropped, and removes everything, in reverse order, when the instance goes.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use threeport_api::model::{
    AppliedResource, KubernetesRuntimeInstance, WORKLOAD_INSTANCE_LABEL, WorkloadDefinition,
    WorkloadInstance, runtime_connection,
};
use threeport_core::object::{ConditionStatus, EventType};
use threeport_core::store::ListQuery;
use threeport_core::{Action, Context, Object, ReconcileError, Reconciler};
use threeport_k8s::{ResourceRef, apply_all, delete_all};

use crate::attached::Attachments;
use crate::clusters::ClusterProvider;
use crate::seal::Sealer;
use crate::workload_definition::split_manifests;

/// Field manager of everything threeport applies.
pub const FIELD_MANAGER: &str = "threeport";

/// Kinds that live outside namespaces (besides cluster-scoped CRDs in the same manifests).
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "IngressClass",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "APIService",
];

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

    /// The instance's runtime: its own, else the default one.
    async fn runtime(
        &self,
        instance: &Object<WorkloadInstance>,
        ctx: &Context,
    ) -> Result<Object<KubernetesRuntimeInstance>, ReconcileError> {
        let runtimes = ctx.api::<KubernetesRuntimeInstance>();
        if let Some(id) = instance.spec.runtime.or(instance.status.details.runtime) {
            return Ok(runtimes.get(id).await?);
        }
        let all = runtimes.list_all(&ListQuery::default().limit(1000)).await?;
        all.into_iter()
            .find(|r| r.spec.default_runtime && !r.is_deleting())
            .ok_or_else(|| {
                ReconcileError::retry_after(
                    std::time::Duration::from_secs(10),
                    "the instance names no runtime and there is no default runtime",
                )
            })
    }
}

/// Namespaced kinds: everything not known to be cluster-scoped, and not a cluster-scoped CRD
/// among `manifests`.
fn is_namespaced(kind: &str, manifests: &[Value]) -> bool {
    if CLUSTER_SCOPED.contains(&kind) {
        return false;
    }
    !manifests.iter().any(|m| {
        m["kind"] == "CustomResourceDefinition"
            && m["spec"]["names"]["kind"] == kind
            && m["spec"]["scope"] == "Cluster"
    })
}

/// A namespace name for an instance: its name made DNS-safe, and a piece of its id.
fn generated_namespace(instance: &Object<WorkloadInstance>) -> String {
    let mut base: String = instance
        .meta
        .name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(40);
    let id = instance.id().0.simple().to_string();
    format!("{}-{}", base.trim_matches('-'), &id[id.len() - 8..])
}

/// Adds Threeport's labels to a resource and to its pod template, if it has one.
fn label(manifest: &mut Value, instance: &str) {
    let labels =
        json!({WORKLOAD_INSTANCE_LABEL: instance, "app.kubernetes.io/managed-by": "threeport"});
    let add = |target: &mut Value| {
        if !target["labels"].is_object() {
            target["labels"] = json!({});
        }
        for (key, value) in labels.as_object().into_iter().flatten() {
            target["labels"][key] = value.clone();
        }
    };
    add(&mut manifest["metadata"]);
    let template = match manifest["kind"].as_str() {
        Some("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job") => {
            Some(&mut manifest["spec"]["template"])
        }
        Some("CronJob") => Some(&mut manifest["spec"]["jobTemplate"]["spec"]["template"]),
        _ => None,
    };
    if let Some(template) = template.filter(|t| t.is_object()) {
        add(&mut template["metadata"]);
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
    let generated = (!brings_namespace).then(|| generated_namespace(instance));
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
        label(manifest, &instance.id().to_string());
    }
    if let Some(namespace) = &generated {
        let mut ns =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        label(&mut ns, &instance.id().to_string());
        manifests.insert(0, ns);
    }
    (manifests, generated)
}

fn reference(resource: &AppliedResource) -> ResourceRef {
    ResourceRef {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
        namespace: resource.namespace.clone(),
        name: resource.name.clone(),
    }
}

/// Condition of a workload instance: whether its runtime has a cluster to deploy to.
pub const RUNTIME_READY: &str = "RuntimeReady";

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
        let runtime = self.runtime(instance, ctx).await?;
        // An instance written without a runtime while a default runtime existed got it from
        // the API; one written before any existed runs on the default found now (recorded in
        // status, never written into its spec: controllers do not write desired state).
        let cluster = match self.clusters.cluster(&runtime).await {
            Ok(cluster) => cluster,
            Err(err) if runtime_connection(&runtime).is_none() => {
                // An EKS runtime whose cluster is still coming: the instance references the
                // runtime and follows it, so the runtime's progress brings it back.
                instance.status.set_condition(
                    RUNTIME_READY,
                    ConditionStatus::False,
                    "WaitingForRuntime",
                    format!("runtime {}: {err}", runtime.meta.name),
                );
                return Ok(Action::Done);
            }
            Err(err) => return Err(err.into()),
        };
        instance.status.set_condition(
            RUNTIME_READY,
            ConditionStatus::True,
            "RuntimeServing",
            format!("deployed to runtime {}", runtime.meta.name),
        );
        let attachments = Attachments::of(ctx, instance, &self.sealer).await?;
        let (manifests, generated) = prepare(manifests, &attachments, instance);
        let live = apply_all(cluster.as_ref(), &manifests, FIELD_MANAGER).await?;
        let applied: Vec<AppliedResource> = live
            .iter()
            .map(|object| AppliedResource {
                api_version: object["apiVersion"].as_str().unwrap_or_default().to_owned(),
                kind: object["kind"].as_str().unwrap_or_default().to_owned(),
                namespace: object["metadata"]["namespace"].as_str().map(str::to_owned),
                name: object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                resource_version: object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                health: None,
            })
            .map(|mut resource| {
                // The watcher's last word on it stands until it says otherwise.
                resource.health = instance
                    .status
                    .details
                    .resources
                    .iter()
                    .find(|r| reference(r) == reference(&resource))
                    .and_then(|r| r.health.clone());
                resource
            })
            .collect();
        // What an earlier apply put there and the manifests no longer have goes.
        let now: BTreeSet<ResourceRef> = applied.iter().map(reference).collect();
        let dropped: Vec<ResourceRef> = instance
            .status
            .details
            .resources
            .iter()
            .map(reference)
            .filter(|r| !now.contains(r))
            .collect();
        if !dropped.is_empty() {
            delete_all(cluster.as_ref(), &dropped).await?;
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
        let runtime = self.runtime(instance, ctx).await?;
        let cluster = self.clusters.cluster(&runtime).await?;
        let resources: Vec<ResourceRef> = instance
            .status
            .details
            .resources
            .iter()
            .map(reference)
            .collect();
        delete_all(cluster.as_ref(), &resources).await?;
        instance.status.details.resources.clear();
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_scope_decides_namespacing() {
        let manifests = vec![json!({"kind": "CustomResourceDefinition",
            "spec": {"scope": "Cluster", "names": {"kind": "Thing"}}})];
        assert!(!is_namespaced("Thing", &manifests));
        assert!(is_namespaced("Widget", &manifests));
        assert!(!is_namespaced("ClusterRole", &[]));
    }
}
