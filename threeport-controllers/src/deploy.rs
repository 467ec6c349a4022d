//! What the workload and Helm-workload controllers share when they put resources on a
//! cluster: the runtime an instance runs on, namespaces, Threeport's labels, and the record
//! of what was applied (from which a later apply prunes what is gone).

use std::collections::BTreeSet;

use serde_json::{Value, json};
use threeport_api::model::{
    AppliedResource, HelmWorkloadDefinition, HelmWorkloadInstance, KubernetesRuntimeInstance,
    WORKLOAD_INSTANCE_LABEL, runtime_connection,
};
use threeport_core::object::ConditionStatus;
use threeport_core::object::NewObject;
use threeport_core::store::ListQuery;
use threeport_core::{ApiObject, Context, Object, ObjectId, ObjectRef, ReconcileError, Status};
use threeport_k8s::{Cluster, ResourceRef, delete_all};

use crate::clusters::ClusterProvider;

/// Field manager of everything threeport applies.
pub const FIELD_MANAGER: &str = "threeport";

/// Condition of a workload instance: whether its runtime has a cluster to deploy to.
pub const RUNTIME_READY: &str = "RuntimeReady";

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

/// Namespaced kinds: everything not known to be cluster-scoped, and not a cluster-scoped CRD
/// among `manifests`.
pub(crate) fn is_namespaced(kind: &str, manifests: &[Value]) -> bool {
    if CLUSTER_SCOPED.contains(&kind) {
        return false;
    }
    !manifests.iter().any(|m| {
        m["kind"] == "CustomResourceDefinition"
            && m["spec"]["names"]["kind"] == kind
            && m["spec"]["scope"] == "Cluster"
    })
}

/// A DNS label from an object's name: lower-cased, other characters made `-`, at most
/// `max` long, no `-` at either end.
pub(crate) fn dns_name(name: &str, max: usize) -> String {
    let mut base: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(max);
    base.trim_matches('-').to_owned()
}

/// A namespace name for an instance: its name made DNS-safe, and a piece of its id.
pub(crate) fn generated_namespace(name: &str, id: ObjectId) -> String {
    let id = id.0.simple().to_string();
    format!("{}-{}", dns_name(name, 40), &id[id.len() - 8..])
}

/// Adds Threeport's labels to a resource and to its pod template, if it has one.
pub(crate) fn label(manifest: &mut Value, instance: ObjectId) {
    let labels = json!({WORKLOAD_INSTANCE_LABEL: instance.to_string(),
        "app.kubernetes.io/managed-by": "threeport"});
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

/// A labelled Namespace manifest for `instance`.
pub(crate) fn namespace_manifest(name: &str, instance: ObjectId) -> Value {
    let mut namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    label(&mut namespace, instance);
    namespace
}

/// The cluster reference of an applied resource.
pub(crate) fn reference(resource: &AppliedResource) -> ResourceRef {
    ResourceRef {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
        namespace: resource.namespace.clone(),
        name: resource.name.clone(),
    }
}

/// The records of `live` objects as just applied, each keeping the health the watcher last
/// gave the same resource in `previous` (it stands until the watcher says otherwise).
pub(crate) fn applied(live: &[Value], previous: &[AppliedResource]) -> Vec<AppliedResource> {
    live.iter()
        .map(|object| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let mut resource = AppliedResource {
                api_version: text(&object["apiVersion"]),
                kind: text(&object["kind"]),
                namespace: object["metadata"]["namespace"].as_str().map(str::to_owned),
                name: text(&object["metadata"]["name"]),
                resource_version: text(&object["metadata"]["resourceVersion"]),
                health: None,
            };
            resource.health = previous
                .iter()
                .find(|r| reference(r) == reference(&resource))
                .and_then(|r| r.health.clone());
            resource
        })
        .collect()
}

/// Deletes every resource `applied` records (in [`delete_all`]'s order).
pub(crate) async fn delete_applied(
    cluster: &dyn Cluster,
    applied: &[AppliedResource],
) -> Result<(), ReconcileError> {
    let resources: Vec<ResourceRef> = applied.iter().map(reference).collect();
    delete_all(cluster, &resources).await?;
    Ok(())
}

/// Deletes what `previous` applied and `now` no longer has; returns what went (for an event).
pub(crate) async fn prune(
    cluster: &dyn Cluster,
    previous: &[AppliedResource],
    now: &[AppliedResource],
) -> Result<Vec<ResourceRef>, ReconcileError> {
    let kept: BTreeSet<ResourceRef> = now.iter().map(reference).collect();
    let dropped: Vec<ResourceRef> = previous
        .iter()
        .map(reference)
        .filter(|r| !kept.contains(r))
        .collect();
    if !dropped.is_empty() {
        delete_all(cluster, &dropped).await?;
    }
    Ok(dropped)
}

/// Kinds threeport attaches to workloads that an operator it installs serves: the
/// external-secrets operator's `ExternalSecret` (for SecretInstances).
const OPERATOR_KINDS: &[(&str, &str, &str)] = &[(
    "external-secrets.io/v1",
    "ExternalSecret",
    "the external-secrets operator (support service external-secrets)",
)];

/// Waits (retrying) while `manifests` hold a kind from [`OPERATOR_KINDS`] that `cluster` does
/// not serve yet: its operator is being installed alongside, and applying now would fail.
pub(crate) async fn operators_ready(
    cluster: &dyn Cluster,
    manifests: &[Value],
) -> Result<(), ReconcileError> {
    for (api_version, kind, operator) in OPERATOR_KINDS {
        let wanted = manifests
            .iter()
            .any(|m| m["apiVersion"] == *api_version && m["kind"] == *kind);
        if !wanted {
            continue;
        }
        match cluster.list(api_version, kind, Some("default")).await {
            Ok(_) => {}
            Err(err) if err.kind() == threeport_core::ErrorKind::Invalid => {
                return Err(ReconcileError::retry_after(
                    std::time::Duration::from_secs(5),
                    format!("the cluster serves no {kind} yet: waiting for {operator}"),
                ));
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// The runtime an instance runs on: the one it names (in its spec, else the one its status
/// recorded), else the default runtime.
pub(crate) async fn find_runtime(
    ctx: &Context,
    named: Option<ObjectId>,
) -> Result<Object<KubernetesRuntimeInstance>, ReconcileError> {
    let runtimes = ctx.api::<KubernetesRuntimeInstance>();
    if let Some(id) = named {
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

/// The cluster of `runtime`, or `None` (with the instance's [`RUNTIME_READY`] condition
/// saying why) while an EKS runtime's cluster is still coming: the instance references the
/// runtime and follows it, so the runtime's progress brings it back.
pub(crate) async fn runtime_cluster<S>(
    clusters: &dyn ClusterProvider,
    runtime: &Object<KubernetesRuntimeInstance>,
    status: &mut Status<S>,
) -> Result<Option<std::sync::Arc<dyn Cluster>>, ReconcileError> {
    match clusters.cluster(runtime).await {
        Ok(cluster) => {
            status.set_condition(
                RUNTIME_READY,
                ConditionStatus::True,
                "RuntimeServing",
                format!("deployed to runtime {}", runtime.meta.name),
            );
            Ok(Some(cluster))
        }
        Err(err) if runtime_connection(runtime).is_none() => {
            status.set_condition(
                RUNTIME_READY,
                ConditionStatus::False,
                "WaitingForRuntime",
                format!("runtime {}: {err}", runtime.meta.name),
            );
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// The object `name` of kind `T` with `spec`, owned by `owner`: created if `before` (as read
/// before `spec` was computed) is `None`, else updated from `before` if its spec differs. A
/// write that finds the object changed since fails as a conflict, and the reconcile is
/// retried, computing again.
pub(crate) async fn upsert<T: ApiObject + PartialEq>(
    ctx: &Context,
    name: &str,
    spec: T,
    owner: ObjectRef,
    before: Option<Object<T>>,
) -> Result<Object<T>, ReconcileError> {
    let api = ctx.api::<T>();
    let Some(mut existing) = before else {
        let mut new = NewObject::typed(name, &spec)?;
        new.owners.push(owner.clone());
        return Ok(api.create_new(new).await?);
    };
    if !existing.meta.owners.iter().any(|o| o.id == owner.id) {
        return Err(ReconcileError::terminal(format!(
            "{} {name} exists and is not threeport's support service of this runtime: \
             rename it",
            T::KIND
        )));
    }
    if existing.spec == spec {
        return Ok(existing);
    }
    existing.spec = spec;
    Ok(api.update(&existing).await?)
}

/// A Helm release that an object owns (a runtime's support service, a stack's component, a
/// child control plane): a `HelmWorkloadDefinition` + `HelmWorkloadInstance` pair named `name`.
pub(crate) struct OwnedRelease<'a> {
    /// Name of both objects.
    pub name: &'a str,
    /// Chart repository.
    pub repo: &'a str,
    /// Chart name.
    pub chart: &'a str,
    /// Chart version.
    pub version: &'a str,
    /// Values (JSON, which is YAML: one mapping).
    pub values: &'a Value,
    /// Manifests released beside the chart.
    pub additional: &'a [Value],
    /// Where.
    pub runtime: ObjectId,
    /// Release namespace.
    pub namespace: &'a str,
    /// Who owns both.
    pub owner: ObjectRef,
}

/// Creates the pair of `release`, or brings it to `release` (the definition updated from
/// `before`, as read before the values were computed: see [`upsert`]); returns the instance.
pub(crate) async fn release_owned(
    ctx: &Context,
    release: OwnedRelease<'_>,
    before: Option<Object<HelmWorkloadDefinition>>,
) -> Result<Object<HelmWorkloadInstance>, ReconcileError> {
    let additional = (!release.additional.is_empty()).then(|| {
        release
            .additional
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n---\n")
    });
    let spec = HelmWorkloadDefinition {
        repo: Some(release.repo.to_owned()),
        chart: Some(release.chart.to_owned()),
        chart_version: Some(release.version.to_owned()),
        chart_archive: None,
        values: Some(release.values.to_string()),
        additional_resources: additional,
    };
    let definition = upsert(ctx, release.name, spec, release.owner.clone(), before).await?;
    let before = get_by_name::<HelmWorkloadInstance>(ctx, release.name).await?;
    let instance = HelmWorkloadInstance {
        definition: definition.id(),
        runtime: Some(release.runtime),
        values_overrides: None,
        release_namespace: Some(release.namespace.to_owned()),
    };
    upsert(ctx, release.name, instance, release.owner, before).await
}

/// The object of kind `T` named `name`, if there is one.
pub(crate) async fn get_by_name<T: ApiObject>(
    ctx: &Context,
    name: &str,
) -> Result<Option<Object<T>>, ReconcileError> {
    match ctx.api::<T>().get_by_name(name).await {
        Ok(found) => Ok(Some(found)),
        Err(err) if err.kind() == threeport_core::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
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

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(dns_name("My_App.v2", 53), "my-app-v2");
        assert_eq!(dns_name("-x-", 53), "x");
        assert_eq!(dns_name(&"a".repeat(80), 53).len(), 53);
    }
}
