//! The Helm-workload-instance controller: renders the instance's chart with its definition's
//! and its own values, and applies the release the way workload instances are applied; runs
//! the chart's hooks around it ([`hooks`](super::hooks) says how they map); upgrades in
//! place when the chart or the values change; removes everything when the instance goes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use threeport_api::model::{
    AppliedResource, HelmWorkloadDefinition, HelmWorkloadInstance, HelmWorkloadInstanceStatus,
    split_manifests,
};
use threeport_core::object::{ConditionStatus, EventType};
use threeport_core::{Action, Context, Object, ObjectId, ReconcileError, Reconciler, Status};
use threeport_k8s::{Cluster, ResourceRef, apply_all, delete_all};

use super::hooks::{self, DeletePolicy, Hook, HookEvent, HookState};
use super::renderer::{ChartRenderer, ChartSource, RenderRequest, RenderedChart};
use crate::attached::{Attachments, Target};
use crate::clusters::ClusterProvider;
use crate::deploy::{
    FIELD_MANAGER, applied, dns_name, find_runtime, generated_namespace, is_namespaced, label,
    namespace_manifest, prune, reference, runtime_cluster,
};
use crate::seal::Sealer;

/// Condition of a Helm workload instance: whether its hooks have run for the release it
/// asks for (`False` names the hook it waits for).
pub const HOOKS_DONE: &str = "HooksDone";

/// How often a release waiting for a hook looks again.
const HOOK_POLL: Duration = Duration::from_secs(1);

/// Reconciles `HelmWorkloadInstance` objects.
#[derive(Debug, Clone)]
pub struct HelmWorkloadInstanceReconciler {
    clusters: Arc<dyn ClusterProvider>,
    renderer: Arc<dyn ChartRenderer>,
    sealer: Arc<Sealer>,
}

impl HelmWorkloadInstanceReconciler {
    /// A controller reaching clusters through `clusters`, rendering charts with `renderer`,
    /// opening what attached services sealed with `sealer`.
    pub fn new(
        clusters: Arc<dyn ClusterProvider>,
        renderer: Arc<dyn ChartRenderer>,
        sealer: Arc<Sealer>,
    ) -> Self {
        HelmWorkloadInstanceReconciler {
            clusters,
            renderer,
            sealer,
        }
    }
}

/// The chart a definition names.
fn source(definition: &HelmWorkloadDefinition) -> Result<ChartSource, ReconcileError> {
    let invalid = |e: threeport_core::ValidationError| ReconcileError::Terminal(e.to_string());
    if let Some(archive) = definition.archive().map_err(invalid)? {
        return Ok(ChartSource::Archive(archive));
    }
    let repo = definition.repo.clone().unwrap_or_default();
    let chart = definition.chart.clone().unwrap_or_default();
    let version = definition.chart_version.clone();
    Ok(if repo.starts_with("oci://") {
        ChartSource::Oci {
            reference: format!("{}/{chart}", repo.trim_end_matches('/')),
            version,
        }
    } else {
        ChartSource::Repository {
            url: repo,
            chart,
            version,
        }
    })
}

/// The release name of an instance: its name as a DNS label of at most 53 characters.
fn release_name(instance: &Object<HelmWorkloadInstance>) -> String {
    let name = dns_name(&instance.meta.name, 53);
    if name.is_empty() {
        "release".to_owned()
    } else {
        name
    }
}

/// What identifies a release: the chart archive, the values, release name and namespace and
/// the additional resources. A change of any is an upgrade (and runs the upgrade hooks).
fn fingerprint(
    chart: &RenderedChart,
    values: &[&str],
    release: &str,
    namespace: &str,
    extra: Option<&str>,
) -> String {
    let identity = json!([chart.digest, values, release, namespace, extra]);
    let digest = ring::digest::digest(&ring::digest::SHA256, identity.to_string().as_bytes());
    hex::encode(&digest.as_ref()[..16])
}

/// Readies an object for the cluster: the release namespace where it has none and its kind
/// is namespaced, Threeport's labels.
fn prepare(manifest: &mut Value, namespace: &str, known: &[Value], instance: ObjectId) {
    let kind = manifest["kind"].as_str().unwrap_or_default().to_owned();
    if !manifest["metadata"]["namespace"].is_string() && is_namespaced(&kind, known) {
        manifest["metadata"]["namespace"] = json!(namespace);
    }
    label(manifest, instance);
}

fn hook_reference(hook: &Hook) -> ResourceRef {
    ResourceRef::of(&hook.manifest).unwrap_or_else(|_| ResourceRef {
        api_version: String::new(),
        kind: String::new(),
        namespace: None,
        name: String::new(),
    })
}

fn record(live: &Value) -> AppliedResource {
    applied(std::slice::from_ref(live), &[]).remove(0)
}

/// Runs the hooks of `event` in order: applies each, and returns at the first that has not
/// finished (`Some(why)`); `None` when all have. Objects a hook leaves are recorded in
/// `status.hooks`; `hook-succeeded` ones go as soon as they succeed.
async fn run_hooks(
    cluster: &dyn Cluster,
    release: &hooks::Release,
    event: HookEvent,
    status: &mut HelmWorkloadInstanceStatus,
) -> Result<Option<String>, ReconcileError> {
    for hook in release.hooks_at(event) {
        let target = hook_reference(hook);
        let live = match cluster.get(&target).await? {
            // Already ran (or running) for this release.
            Some(live) => live,
            None => cluster.apply(&hook.manifest, FIELD_MANAGER).await?,
        };
        let recorded = record(&live);
        if !status.hooks.iter().any(|h| reference(h) == target) {
            status.hooks.push(recorded);
        }
        match hooks::state(&live) {
            HookState::Running => {
                return Ok(Some(format!("waiting for {} hook {target}", event.name())));
            }
            HookState::Failed(reason) => {
                if hook.deleted_on(DeletePolicy::HookFailed) {
                    forget_hook(cluster, status, &target).await?;
                }
                return Err(ReconcileError::Terminal(format!(
                    "{} hook {target} failed: {reason}",
                    event.name()
                )));
            }
            HookState::Succeeded => {
                if hook.deleted_on(DeletePolicy::HookSucceeded) {
                    forget_hook(cluster, status, &target).await?;
                }
            }
        }
    }
    Ok(None)
}

/// Deletes a hook's object and its record.
async fn forget_hook(
    cluster: &dyn Cluster,
    status: &mut HelmWorkloadInstanceStatus,
    target: &ResourceRef,
) -> Result<(), ReconcileError> {
    cluster.delete(target).await?;
    status.hooks.retain(|h| reference(h) != *target);
    Ok(())
}

/// Sets [`HOOKS_DONE`] false with `why`; the release looks again shortly.
fn waiting(status: &mut Status<HelmWorkloadInstanceStatus>, why: String) -> Action {
    status.set_condition(HOOKS_DONE, ConditionStatus::False, "HookRunning", why);
    Action::RequeueAfter(HOOK_POLL)
}

/// A rendered release, ready for the cluster.
struct Planned {
    chart: RenderedChart,
    /// The release name.
    name: String,
    release: hooks::Release,
    /// The generated namespace (`None`: the instance names its own).
    generated: Option<String>,
    namespace: String,
    fingerprint: String,
}

impl HelmWorkloadInstanceReconciler {
    /// Renders the instance's chart and readies every object for its cluster.
    async fn plan(
        &self,
        instance: &Object<HelmWorkloadInstance>,
        definition: &Object<HelmWorkloadDefinition>,
        ctx: &Context,
    ) -> Result<Planned, ReconcileError> {
        let source = source(&definition.spec)?;
        let release_name = release_name(instance);
        let generated = instance
            .spec
            .release_namespace
            .is_none()
            .then(|| generated_namespace(&instance.meta.name, instance.id()));
        let namespace = instance
            .spec
            .release_namespace
            .clone()
            .or(generated.clone())
            .unwrap_or_default();
        let values: Vec<&str> = [
            definition.spec.values.as_deref(),
            instance.spec.values_overrides.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let chart = self
            .renderer
            .render(&RenderRequest {
                source: &source,
                release: &release_name,
                namespace: &namespace,
                values: &values,
            })
            .await?;
        let mut release = hooks::sort(chart.manifests.clone());
        if let Some(extra) = &definition.spec.additional_resources {
            let extra = split_manifests(extra).map_err(|e| {
                ReconcileError::Terminal(format!("the definition's additional resources: {e}"))
            })?;
            release.resources.extend(extra);
        }
        let attachments =
            Attachments::of(ctx, Target::HelmWorkload, instance.id(), &self.sealer).await?;
        release
            .resources
            .extend(attachments.manifests.iter().cloned());
        let known: Vec<Value> = release
            .crds
            .iter()
            .chain(&release.resources)
            .cloned()
            .collect();
        let id = instance.id();
        for manifest in release.crds.iter_mut().chain(&mut release.resources) {
            prepare(manifest, &namespace, &known, id);
        }
        for hook in &mut release.hooks {
            prepare(&mut hook.manifest, &namespace, &known, id);
        }
        attachments.apply_to(&mut release.resources, Some(&namespace));
        let fingerprint = fingerprint(
            &chart,
            &values,
            &release_name,
            &namespace,
            definition.spec.additional_resources.as_deref(),
        );
        Ok(Planned {
            chart,
            name: release_name,
            release,
            generated,
            namespace,
            fingerprint,
        })
    }
}

#[async_trait]
impl Reconciler for HelmWorkloadInstanceReconciler {
    type Object = HelmWorkloadInstance;

    async fn reconcile(
        &self,
        instance: &mut Object<HelmWorkloadInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let definition = ctx
            .api::<HelmWorkloadDefinition>()
            .get(instance.spec.definition)
            .await?;
        let named = instance
            .spec
            .runtime
            .or(instance.status.details.workload.runtime);
        let runtime = find_runtime(ctx, named).await?;
        let Some(cluster) =
            runtime_cluster(self.clusters.as_ref(), &runtime, &mut instance.status).await?
        else {
            return Ok(Action::Done);
        };
        let plan = self.plan(instance, &definition, ctx).await?;
        let cluster = cluster.as_ref();
        crate::deploy::operators_ready(cluster, &plan.release.resources).await?;
        let id = instance.id();
        // First the namespace (a generated one is the release's, and goes with it; one the
        // instance names is made if missing, and left) and the CRDs, which are never removed
        // (as Helm leaves its charts' CRDs: removing one removes every object of its kind).
        let mut first = vec![match &plan.generated {
            Some(generated) => namespace_manifest(generated, id),
            None => json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": plan.namespace}}),
        }];
        first.extend(plan.release.crds.iter().cloned());
        let first = apply_all(cluster, &first, FIELD_MANAGER).await?;
        let owned_namespace: Vec<Value> = first
            .into_iter()
            .filter(|o| o["kind"] == "Namespace" && plan.generated.is_some())
            .collect();
        let status = &mut instance.status.details;
        let releasing = status.released.as_deref() != Some(plan.fingerprint.as_str());
        let upgrade = status.released.is_some();
        let (pre, post) = if upgrade {
            (HookEvent::PreUpgrade, HookEvent::PostUpgrade)
        } else {
            (HookEvent::PreInstall, HookEvent::PostInstall)
        };
        if releasing {
            if status.hooks_for.as_deref() != Some(plan.fingerprint.as_str()) {
                // A new release: the previous runs of its hooks go before they run again.
                for hook in plan.release.hooks.iter().filter(|h| {
                    (h.runs_at(pre) || h.runs_at(post))
                        && h.deleted_on(DeletePolicy::BeforeHookCreation)
                }) {
                    forget_hook(cluster, status, &hook_reference(hook)).await?;
                }
                status.hooks_for = Some(plan.fingerprint.clone());
            }
            if let Some(why) = run_hooks(cluster, &plan.release, pre, status).await? {
                return Ok(waiting(&mut instance.status, why));
            }
        }
        let live = apply_all(cluster, &plan.release.resources, FIELD_MANAGER).await?;
        let mut resources = applied(&owned_namespace, &status.workload.resources);
        resources.extend(applied(&live, &status.workload.resources));
        let dropped = prune(cluster, &status.workload.resources, &resources).await?;
        status.workload.resources = resources;
        status.workload.runtime = Some(runtime.id());
        status.workload.namespace = plan.generated.clone();
        status.release = Some(plan.name.clone());
        if releasing && let Some(why) = run_hooks(cluster, &plan.release, post, status).await? {
            return Ok(waiting(&mut instance.status, why));
        }
        let chart = format!("{}-{}", plan.chart.name, plan.chart.version);
        let status = &mut instance.status;
        if !dropped.is_empty() {
            let names: Vec<String> = dropped.iter().map(ToString::to_string).collect();
            status.record_event(
                EventType::Normal,
                "Pruned",
                format!(
                    "deleted what the chart no longer renders: {}",
                    names.join(", ")
                ),
            );
        }
        status.set_condition(
            HOOKS_DONE,
            ConditionStatus::True,
            "HooksDone",
            "the release's hooks have run",
        );
        if releasing {
            let details = &mut status.details;
            details.revision += 1;
            details.released = Some(plan.fingerprint);
            details.chart = Some(chart.clone());
            details.chart_digest = Some(plan.chart.digest);
            let (reason, verb) = if upgrade {
                ("Upgraded", "upgraded to")
            } else {
                ("Installed", "installed")
            };
            let message = format!(
                "release {} {verb} revision {} (chart {chart}) in namespace {} on runtime {}",
                details.release.clone().unwrap_or_default(),
                details.revision,
                plan.namespace,
                runtime.meta.name
            );
            status.record_event(EventType::Normal, reason, message);
        }
        Ok(Action::Done)
    }

    async fn cleanup(
        &self,
        instance: &mut Object<HelmWorkloadInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let details = &instance.status.details;
        if details.workload.resources.is_empty() && details.hooks.is_empty() {
            return Ok(Action::Done);
        }
        let named = instance.spec.runtime.or(details.workload.runtime);
        let runtime = find_runtime(ctx, named).await?;
        if runtime.is_deleting() && runtime.spec.connection.is_none() {
            // A cluster threeport made goes with its runtime (a support service it owns is
            // deleted alongside): nothing to uninstall from, and it may be gone already.
            instance.status.record_event(
                EventType::Normal,
                "ClusterDeleted",
                format!(
                    "not uninstalled: runtime {}'s cluster is deleted with it",
                    runtime.meta.name
                ),
            );
            return Ok(Action::Done);
        }
        let cluster = self.clusters.cluster(&runtime).await?;
        let cluster = cluster.as_ref();
        // The chart's pre-delete hooks, if it still renders (a chart that is gone must not
        // keep its release from being removed).
        let definition = ctx
            .api::<HelmWorkloadDefinition>()
            .get(instance.spec.definition)
            .await;
        if let Ok(definition) = definition {
            match self.plan(instance, &definition, ctx).await {
                Ok(plan) => {
                    let status = &mut instance.status.details;
                    if let Some(why) =
                        run_hooks(cluster, &plan.release, HookEvent::PreDelete, status).await?
                    {
                        return Ok(waiting(&mut instance.status, why));
                    }
                }
                Err(err) => instance.status.record_event(
                    EventType::Warning,
                    "PreDeleteHooksSkipped",
                    format!("the chart did not render, so no pre-delete hooks ran: {err}"),
                ),
            }
        }
        let details = &mut instance.status.details;
        let mut gone: Vec<ResourceRef> = details.hooks.iter().map(reference).collect();
        gone.extend(details.workload.resources.iter().map(reference));
        delete_all(cluster, &gone).await?;
        details.hooks.clear();
        details.workload.resources.clear();
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_names_its_chart() {
        let definition = |repo: &str| HelmWorkloadDefinition {
            repo: Some(repo.into()),
            chart: Some("web".into()),
            chart_version: Some("^1.0".into()),
            chart_archive: None,
            values: None,
            additional_resources: None,
        };
        assert_eq!(
            source(&definition("oci://registry.example.com/charts/")).unwrap(),
            ChartSource::Oci {
                reference: "oci://registry.example.com/charts/web".into(),
                version: Some("^1.0".into())
            }
        );
        assert!(matches!(
            source(&definition("https://charts.example.com")).unwrap(),
            ChartSource::Repository { chart, .. } if chart == "web"
        ));
    }
}
