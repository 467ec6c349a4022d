//! What a rendered chart's objects are to a release: CRDs (installed first), hooks (run
//! around install, upgrade and delete), and the release's resources, in Helm's install
//! order.
//!
//! How Helm's hooks map onto a threeport release:
//! - `pre-install` (first release) and `pre-upgrade` (each later change of chart or values):
//!   applied one at a time in weight order before the release's resources, each waited for
//!   (a Job until it completes, a Pod until it succeeds, anything else once applied); a hook
//!   that fails makes the release fail (terminal, its reason in status).
//! - `post-install` / `post-upgrade`: the same, after the resources; the release counts as
//!   done when they finish.
//! - `pre-delete`: run and waited for when the instance is deleted, before anything goes.
//! - `post-delete`, `pre-rollback`, `post-rollback`: not run (threeport has no rollback: an
//!   older chart or values is an upgrade; after delete nothing is left to run them).
//! - `test` (and Helm 2's `test-success`/`test-failure`): skipped.
//! - Delete policies: `before-hook-creation` (the default) deletes the previous run's object
//!   before a hook runs again; `hook-succeeded` / `hook-failed` delete it once it succeeded /
//!   failed. Whatever a hook leaves is removed with the instance.

use serde_json::Value;

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    /// Before the first release's resources.
    PreInstall,
    /// After them.
    PostInstall,
    /// Before an upgrade's resources.
    PreUpgrade,
    /// After them.
    PostUpgrade,
    /// Before the release is removed.
    PreDelete,
    /// After it was removed (not run).
    PostDelete,
    /// Rollbacks (not run).
    Rollback,
    /// `helm test` (skipped).
    Test,
}

impl HookEvent {
    fn parse(name: &str) -> Option<HookEvent> {
        Some(match name.trim() {
            "pre-install" => HookEvent::PreInstall,
            "post-install" => HookEvent::PostInstall,
            "pre-upgrade" => HookEvent::PreUpgrade,
            "post-upgrade" => HookEvent::PostUpgrade,
            "pre-delete" => HookEvent::PreDelete,
            "post-delete" => HookEvent::PostDelete,
            "pre-rollback" | "post-rollback" => HookEvent::Rollback,
            "test" | "test-success" | "test-failure" => HookEvent::Test,
            _ => return None,
        })
    }

    /// Helm's name for it.
    pub fn name(self) -> &'static str {
        match self {
            HookEvent::PreInstall => "pre-install",
            HookEvent::PostInstall => "post-install",
            HookEvent::PreUpgrade => "pre-upgrade",
            HookEvent::PostUpgrade => "post-upgrade",
            HookEvent::PreDelete => "pre-delete",
            HookEvent::PostDelete => "post-delete",
            HookEvent::Rollback => "rollback",
            HookEvent::Test => "test",
        }
    }
}

/// When a hook's object is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletePolicy {
    /// Before the hook runs again (Helm's default).
    BeforeHookCreation,
    /// Once it succeeded.
    HookSucceeded,
    /// Once it failed.
    HookFailed,
}

/// One hook of a rendered chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    /// The object.
    pub manifest: Value,
    /// When it runs.
    pub events: Vec<HookEvent>,
    /// Order among the hooks of one event (lower first).
    pub weight: i64,
    /// When its object goes.
    pub delete_policies: Vec<DeletePolicy>,
}

impl Hook {
    /// Whether it runs at `event`.
    pub fn runs_at(&self, event: HookEvent) -> bool {
        self.events.contains(&event)
    }

    /// Whether its object is deleted at `policy`'s moment (`before-hook-creation` when it
    /// names none, as in Helm).
    pub fn deleted_on(&self, policy: DeletePolicy) -> bool {
        if self.delete_policies.is_empty() {
            return policy == DeletePolicy::BeforeHookCreation;
        }
        self.delete_policies.contains(&policy)
    }
}

/// A rendered chart, sorted out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Release {
    /// CustomResourceDefinitions (from `crds/` and templates), applied first.
    pub crds: Vec<Value>,
    /// Everything else that is not a hook, in Helm's install order.
    pub resources: Vec<Value>,
    /// The hooks (test hooks left out), in weight order.
    pub hooks: Vec<Hook>,
}

impl Release {
    /// The hooks of `event`, in the order they run.
    pub fn hooks_at(&self, event: HookEvent) -> impl Iterator<Item = &Hook> {
        self.hooks.iter().filter(move |h| h.runs_at(event))
    }
}

/// Sorts a render's objects into CRDs, hooks and resources.
pub fn sort(manifests: Vec<Value>) -> Release {
    let mut release = Release::default();
    for manifest in manifests {
        let annotations = &manifest["metadata"]["annotations"];
        if let Some(events) = annotations["helm.sh/hook"].as_str() {
            let events: Vec<HookEvent> = events.split(',').filter_map(HookEvent::parse).collect();
            if events.is_empty() || events.iter().all(|e| *e == HookEvent::Test) {
                continue;
            }
            let weight = annotations["helm.sh/hook-weight"]
                .as_str()
                .and_then(|w| w.trim().parse().ok())
                .unwrap_or(0);
            let delete_policies = annotations["helm.sh/hook-delete-policy"]
                .as_str()
                .unwrap_or_default()
                .split(',')
                .filter_map(|p| match p.trim() {
                    "before-hook-creation" => Some(DeletePolicy::BeforeHookCreation),
                    "hook-succeeded" => Some(DeletePolicy::HookSucceeded),
                    "hook-failed" => Some(DeletePolicy::HookFailed),
                    _ => None,
                })
                .collect();
            release.hooks.push(Hook {
                manifest,
                events,
                weight,
                delete_policies,
            });
        } else if manifest["kind"] == "CustomResourceDefinition" {
            release.crds.push(manifest);
        } else {
            release.resources.push(manifest);
        }
    }
    // Helm: by weight, then kind (install order), then name.
    release.hooks.sort_by(|a, b| {
        (a.weight, install_rank(&a.manifest), name(&a.manifest)).cmp(&(
            b.weight,
            install_rank(&b.manifest),
            name(&b.manifest),
        ))
    });
    release.resources.sort_by_key(install_rank);
    release
}

fn name(manifest: &Value) -> &str {
    manifest["metadata"]["name"].as_str().unwrap_or_default()
}

/// Helm's install order of kinds (`releaseutil.InstallOrder`); other kinds after them.
fn install_rank(manifest: &Value) -> usize {
    const ORDER: &[&str] = &[
        "PriorityClass",
        "Namespace",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "PodSecurityPolicy",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Secret",
        "SecretList",
        "ConfigMap",
        "StorageClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleList",
        "ClusterRoleBinding",
        "ClusterRoleBindingList",
        "Role",
        "RoleList",
        "RoleBinding",
        "RoleBindingList",
        "Service",
        "DaemonSet",
        "Pod",
        "ReplicationController",
        "ReplicaSet",
        "Deployment",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "Job",
        "CronJob",
        "IngressClass",
        "Ingress",
        "APIService",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    let kind = manifest["kind"].as_str().unwrap_or_default();
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

/// Where a hook's object stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookState {
    /// Still running.
    Running,
    /// Done.
    Succeeded,
    /// Failed, and why.
    Failed(String),
}

/// The state of a hook from its live object: a Job by its `Complete`/`Failed` conditions, a
/// Pod by its phase; any other kind is done once applied.
pub fn state(live: &Value) -> HookState {
    match live["kind"].as_str() {
        Some("Job") => {
            let conditions = live["status"]["conditions"].as_array();
            let holds = |kind: &str| {
                conditions
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == kind && c["status"] == "True")
            };
            if let Some(failed) = holds("Failed") {
                HookState::Failed(
                    failed["message"]
                        .as_str()
                        .or(failed["reason"].as_str())
                        .unwrap_or("failed")
                        .to_owned(),
                )
            } else if holds("Complete").is_some() {
                HookState::Succeeded
            } else {
                HookState::Running
            }
        }
        Some("Pod") => match live["status"]["phase"].as_str() {
            Some("Succeeded") => HookState::Succeeded,
            Some("Failed") => HookState::Failed(
                live["status"]["message"]
                    .as_str()
                    .unwrap_or("the pod failed")
                    .to_owned(),
            ),
            _ => HookState::Running,
        },
        _ => HookState::Succeeded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: &str, name: &str, annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": kind,
               "metadata": {"name": name, "annotations": annotations}})
    }

    #[test]
    fn a_render_sorts_into_crds_resources_and_hooks() {
        let release = sort(vec![
            object("Deployment", "web", json!({})),
            object(
                "Job",
                "migrate",
                json!({"helm.sh/hook": "pre-install,pre-upgrade",
                "helm.sh/hook-weight": "5"}),
            ),
            object("Pod", "test", json!({"helm.sh/hook": "test"})),
            object(
                "ConfigMap",
                "seed",
                json!({"helm.sh/hook": "pre-install",
                "helm.sh/hook-weight": "-1", "helm.sh/hook-delete-policy": "hook-succeeded"}),
            ),
            object("CustomResourceDefinition", "widgets.example.com", json!({})),
            object("ServiceAccount", "web", json!({})),
        ]);
        assert_eq!(release.crds.len(), 1);
        let kinds: Vec<&str> = release
            .resources
            .iter()
            .map(|r| r["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["ServiceAccount", "Deployment"]);
        let pre: Vec<&str> = release
            .hooks_at(HookEvent::PreInstall)
            .map(|h| name(&h.manifest))
            .collect();
        assert_eq!(
            pre,
            ["seed", "migrate"],
            "by weight; the test hook is skipped"
        );
        assert_eq!(release.hooks_at(HookEvent::PreUpgrade).count(), 1);
        assert!(release.hooks[0].deleted_on(DeletePolicy::HookSucceeded));
        assert!(!release.hooks[0].deleted_on(DeletePolicy::BeforeHookCreation));
        assert!(release.hooks[1].deleted_on(DeletePolicy::BeforeHookCreation));
    }

    #[test]
    fn hook_state_follows_jobs_and_pods() {
        let job = |conditions: Value| json!({"kind": "Job", "status": {"conditions": conditions}});
        assert_eq!(state(&job(json!([]))), HookState::Running);
        assert_eq!(
            state(&job(json!([{"type": "Complete", "status": "True"}]))),
            HookState::Succeeded
        );
        assert_eq!(
            state(&job(
                json!([{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}])
            )),
            HookState::Failed("BackoffLimitExceeded".into())
        );
        assert_eq!(
            state(&json!({"kind": "Pod", "status": {"phase": "Pending"}})),
            HookState::Running
        );
        assert_eq!(state(&json!({"kind": "ConfigMap"})), HookState::Succeeded);
    }
}
