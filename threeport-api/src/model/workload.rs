//! Workloads: Kubernetes manifests and Helm charts, and the records of their resources.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use threeport_core::health::{Health, HealthStatus, aggregate};
use threeport_core::object::Reference;
use threeport_core::{ApiObject, Event, ObjectId, ValidationError};
use utoipa::ToSchema;

use super::{KubernetesRuntimeInstance, dns_label, maybe_reference, reference, require};

/// A workload as Kubernetes manifests: one multi-document YAML stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadDefinition {
    /// The manifests (`---`-separated documents; comments and empty documents allowed).
    pub yaml_document: String,
}

/// What the workload-definition controller found in the manifests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct WorkloadDefinitionStatus {
    /// Resources the manifests define (after expanding `List` kinds).
    pub resource_count: usize,
}

impl ApiObject for WorkloadDefinition {
    const KIND: &'static str = "WorkloadDefinition";
    type Status = WorkloadDefinitionStatus;
    fn validate(&self) -> Result<(), ValidationError> {
        require("yaml_document", &self.yaml_document)?;
        split_manifests(&self.yaml_document)
            .map(drop)
            .map_err(|reason| ValidationError::new("yaml_document", reason))
    }
}

/// Splits a YAML stream into resource manifests: empty documents are skipped, `List` kinds
/// expanded. A document that does not parse, or a resource without `apiVersion`, `kind` or
/// `metadata.name`, is an error naming the document's index (from 0) and the reason.
pub fn split_manifests(yaml: &str) -> Result<Vec<Value>, String> {
    let mut manifests = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(document)
            .map_err(|e| format!("document {index}: not valid YAML: {e}"))?;
        let value = serde_json::to_value(value)
            .map_err(|e| format!("document {index}: not representable as JSON: {e}"))?;
        match value {
            Value::Null => continue,
            Value::Object(_) => {}
            Value::Array(_) => {
                return Err(format!(
                    "document {index}: is a list, not a resource (a YAML mapping)"
                ));
            }
            _ => {
                return Err(format!(
                    "document {index}: is a scalar ({value}), not a resource (a YAML mapping)"
                ));
            }
        }
        let is_list = value["kind"].as_str().is_some_and(|k| k.ends_with("List"))
            && value["items"].is_array();
        let resources = if is_list {
            value["items"].as_array().cloned().unwrap_or_default()
        } else {
            vec![value]
        };
        for resource in resources {
            for (path, present) in [
                ("apiVersion", resource["apiVersion"].is_string()),
                ("kind", resource["kind"].is_string()),
                ("metadata.name", resource["metadata"]["name"].is_string()),
            ] {
                if !present {
                    return Err(format!("document {index}: a resource has no {path}"));
                }
            }
            manifests.push(resource);
        }
    }
    if manifests.is_empty() {
        return Err("the document defines no resources".to_owned());
    }
    Ok(manifests)
}

/// A deployment of a [`WorkloadDefinition`] to a Kubernetes runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadInstance {
    /// The definition deployed.
    #[schema(value_type = String, format = Uuid)]
    pub definition: ObjectId,
    /// Where; `None`: the default runtime.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub runtime: Option<ObjectId>,
}

/// One resource a workload instance put on its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct AppliedResource {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// Namespace (none for cluster-scoped kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The live object's resource version after the last apply.
    pub resource_version: String,
    /// Its live health, as the runtime's watcher last saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub health: Option<Health>,
}

impl AppliedResource {
    /// Whether this is the resource `other` names (same API version, kind, namespace, name).
    pub fn is(&self, other: &ResourceHealth) -> bool {
        self.api_version == other.api_version
            && self.kind == other.kind
            && self.namespace == other.namespace
            && self.name == other.name
    }
}

/// What a cluster watcher saw of one workload instance's objects (the control plane's own
/// watcher, or the agent in the cluster reporting through
/// `PUT /v0/workload-instances/{id}/health`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthReport {
    /// The instance's health: the worst of its resources and of the pods they run.
    #[schema(value_type = Object)]
    pub health: Health,
    /// Each resource threeport applied, with its health.
    #[serde(default)]
    pub resources: Vec<ResourceHealth>,
    /// Kubernetes events about its objects and their pods (identified by the events' UIDs).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Event>,
    /// The kinds the watcher covers (`apps/v1/Deployment`): an applied resource of one of
    /// these that the report lacks is missing from the cluster.
    #[serde(default)]
    pub watched_kinds: Vec<String>,
}

/// One live resource's health in a [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceHealth {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// Namespace (none for cluster-scoped kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Its health.
    #[schema(value_type = Object)]
    pub health: Health,
}

/// What the workload-instance controller deployed, and where.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct WorkloadInstanceStatus {
    /// The runtime it runs on.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub runtime: Option<ObjectId>,
    /// The namespace threeport generated for it, if the manifests brought none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Every resource applied, in apply order, with its live health.
    pub resources: Vec<AppliedResource>,
    /// The workload's health on its cluster (`None` until a watcher has reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub health: Option<Health>,
}

impl WorkloadInstanceStatus {
    /// Takes in a watcher's report: the health, each resource's health, the events (kept once
    /// per UID). Returns whether anything changed.
    pub fn observe(&mut self, report: &HealthReport) -> bool {
        let mut changed = false;
        let mut missing = Vec::new();
        for resource in &mut self.resources {
            let watched = report
                .watched_kinds
                .iter()
                .any(|k| *k == format!("{}/{}", resource.api_version, resource.kind));
            let health = match report.resources.iter().find(|r| resource.is(r)) {
                Some(found) => Some(found.health.clone()),
                None if watched => {
                    missing.push(resource.clone());
                    Some(Health::new(HealthStatus::Down, "not found on the cluster"))
                }
                None => None,
            };
            if health.is_some() && resource.health != health {
                resource.health = health;
                changed = true;
            }
        }
        let down = Health::new(HealthStatus::Down, "not found on the cluster");
        let names: Vec<String> = missing
            .iter()
            .map(|r| match &r.namespace {
                Some(ns) => format!("{} {ns}/{}", r.kind, r.name),
                None => format!("{} {}", r.kind, r.name),
            })
            .collect();
        let health = aggregate(
            std::iter::once((String::new(), &report.health))
                .chain(names.into_iter().map(|name| (name, &down))),
        );
        // The report's own reason already names its part.
        let health = if health.status == report.health.status {
            report.health.clone()
        } else {
            health
        };
        changed |= self.health.as_ref() != Some(&health);
        self.health = Some(health);
        changed
    }
}

/// Label on every resource threeport deploys for a workload instance: the instance's id.
pub const WORKLOAD_INSTANCE_LABEL: &str = "threeport.io/workload-instance";

impl ApiObject for WorkloadInstance {
    const KIND: &'static str = "WorkloadInstance";
    type Status = WorkloadInstanceStatus;
    fn references(&self) -> Vec<Reference> {
        let mut refs = vec![reference::<WorkloadDefinition>(
            "definition",
            self.definition,
        )];
        refs.extend(maybe_reference::<KubernetesRuntimeInstance>(
            "runtime",
            self.runtime,
        ));
        refs
    }
}

/// One resource of a workload definition, as the workload-definition controller split it out.
/// Owned by its definition (its `owners`): the controller creates, updates and removes these
/// records, and deleting the definition deletes them first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadResourceDefinition {
    /// The definition it belongs to.
    #[schema(value_type = String, format = Uuid)]
    pub definition: ObjectId,
    /// The resource's manifest, as JSON.
    pub manifest: Value,
}

impl ApiObject for WorkloadResourceDefinition {
    const KIND: &'static str = "WorkloadResourceDefinition";
    type Status = ();
}

/// One resource of a workload instance, as deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadResourceInstance {
    /// The instance it belongs to.
    #[schema(value_type = String, format = Uuid)]
    pub instance: ObjectId,
    /// The manifest applied (with namespace and labels filled in).
    pub manifest: Value,
}

impl ApiObject for WorkloadResourceInstance {
    const KIND: &'static str = "WorkloadResourceInstance";
    type Status = ();
    fn references(&self) -> Vec<Reference> {
        vec![reference::<WorkloadInstance>("instance", self.instance)]
    }
}

/// A workload as a Helm chart: from an HTTP(S) chart repository (`repo` + `chart`), an OCI
/// registry (`repo` = `oci://host/path` + `chart`), or a chart archive uploaded with the
/// definition (`chart_archive`); default values; resources deployed beside the release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HelmWorkloadDefinition {
    /// Chart repository: `https://…` (or `http://…`), or an OCI registry `oci://…`.
    #[serde(default)]
    pub repo: Option<String>,
    /// Chart name in `repo`.
    #[serde(default)]
    pub chart: Option<String>,
    /// Chart version or semver constraint (`1.2.3`, `^1.2`, `>=1.0 <2`); `None`: the latest.
    #[serde(default)]
    pub chart_version: Option<String>,
    /// A packaged chart (`helm package`'s `.tgz`), base64-encoded, instead of `repo`.
    #[serde(default)]
    pub chart_archive: Option<String>,
    /// Default values (one YAML mapping).
    #[serde(default)]
    pub values: Option<String>,
    /// Manifests deployed beside the release, in its namespace (a YAML stream).
    #[serde(default)]
    pub additional_resources: Option<String>,
}

/// The largest chart archive a definition carries (the decoded `.tgz`).
pub const CHART_ARCHIVE_LIMIT: usize = 1 << 20;

impl HelmWorkloadDefinition {
    /// The uploaded chart archive, decoded (`None` without one).
    ///
    /// Errors: a message for `chart_archive` that is not base64 of a gzip archive.
    pub fn archive(&self) -> Result<Option<Vec<u8>>, ValidationError> {
        use base64::Engine as _;
        let Some(encoded) = &self.chart_archive else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| ValidationError::new("chart_archive", format!("not base64: {e}")))?;
        if !bytes.starts_with(&[0x1f, 0x8b]) {
            return Err(ValidationError::new(
                "chart_archive",
                "not a gzip-compressed chart archive (`helm package` makes one)",
            ));
        }
        if bytes.len() > CHART_ARCHIVE_LIMIT {
            return Err(ValidationError::new(
                "chart_archive",
                format!(
                    "{} bytes, more than the {CHART_ARCHIVE_LIMIT} a definition carries: serve it from a chart repository",
                    bytes.len()
                ),
            ));
        }
        Ok(Some(bytes))
    }
}

/// Values: one YAML document that is a mapping (or empty).
pub(super) fn values_mapping(field: &str, text: &str) -> Result<(), ValidationError> {
    let value: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| ValidationError::new(field, format!("not one valid YAML document: {e}")))?;
    match value {
        serde_yaml::Value::Mapping(_) | serde_yaml::Value::Null => Ok(()),
        _ => Err(ValidationError::new(
            field,
            "must be a YAML mapping of values (`key: value`)",
        )),
    }
}

impl ApiObject for HelmWorkloadDefinition {
    const KIND: &'static str = "HelmWorkloadDefinition";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        match (&self.repo, &self.chart_archive) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::new(
                    "chart_archive",
                    "give either repo (with chart) or chart_archive, not both",
                ));
            }
            (None, None) => {
                return Err(ValidationError::new(
                    "repo",
                    "a chart repository (with chart) or a chart_archive is required",
                ));
            }
            (Some(repo), None) => {
                if !["https://", "http://", "oci://"]
                    .iter()
                    .any(|scheme| repo.starts_with(scheme))
                {
                    return Err(ValidationError::new(
                        "repo",
                        "must be an https:// (or http://) chart repository or an oci:// registry",
                    ));
                }
                require("chart", self.chart.as_deref().unwrap_or_default())?;
                let chart = self.chart.as_deref().unwrap_or_default();
                if chart.contains(['/', ' ', ':']) {
                    return Err(ValidationError::new(
                        "chart",
                        format!("{chart:?} is a chart name in repo, not a path or reference"),
                    ));
                }
            }
            (None, Some(_)) => {
                self.archive()?;
            }
        }
        if let Some(version) = &self.chart_version {
            let allowed = |c: char| c.is_ascii_alphanumeric() || " .*^~<>=!|,+-".contains(c);
            if version.trim().is_empty() || !version.chars().all(allowed) {
                return Err(ValidationError::new(
                    "chart_version",
                    format!("{version:?} is not a version or semver constraint"),
                ));
            }
        }
        if let Some(values) = &self.values {
            values_mapping("values", values)?;
        }
        if let Some(resources) = &self.additional_resources {
            split_manifests(resources)
                .map_err(|reason| ValidationError::new("additional_resources", reason))?;
        }
        Ok(())
    }
}

/// A release of a [`HelmWorkloadDefinition`] on a Kubernetes runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HelmWorkloadInstance {
    /// The definition released.
    #[schema(value_type = String, format = Uuid)]
    pub definition: ObjectId,
    /// Where; `None`: the default runtime.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub runtime: Option<ObjectId>,
    /// Values merged over the definition's by Helm's rules (one YAML mapping).
    #[serde(default)]
    pub values_overrides: Option<String>,
    /// Release namespace; `None`: one generated for the release (and removed with it).
    #[serde(default)]
    pub release_namespace: Option<String>,
}

/// What the Helm-workload-instance controller released: the workload part (runtime,
/// generated namespace, resources with their health, the instance's health) and the release.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct HelmWorkloadInstanceStatus {
    /// Runtime, generated namespace, resources applied and health, as for workload instances.
    #[serde(flatten)]
    pub workload: WorkloadInstanceStatus,
    /// The release name (the instance's name, made a DNS label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The chart released: `name-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    /// The released chart archive's digest (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_digest: Option<String>,
    /// Releases so far: 1 after the install, one more per upgrade.
    #[serde(default)]
    pub revision: u64,
    /// Fingerprint of what revision `revision` released (chart, values, namespace, extras).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<String>,
    /// Fingerprint of the release whose hooks are running or ran last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks_for: Option<String>,
    /// Hook objects left on the cluster (removed with the instance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<AppliedResource>,
}

impl ApiObject for HelmWorkloadInstance {
    const KIND: &'static str = "HelmWorkloadInstance";
    type Status = HelmWorkloadInstanceStatus;
    fn validate(&self) -> Result<(), ValidationError> {
        if let Some(values) = &self.values_overrides {
            values_mapping("values_overrides", values)?;
        }
        if let Some(namespace) = &self.release_namespace {
            dns_label("release_namespace", namespace)?;
        }
        Ok(())
    }
    fn references(&self) -> Vec<Reference> {
        let mut refs = vec![reference::<HelmWorkloadDefinition>(
            "definition",
            self.definition,
        )];
        refs.extend(maybe_reference::<KubernetesRuntimeInstance>(
            "runtime",
            self.runtime,
        ));
        refs
    }
}

#[cfg(test)]
mod tests {
    use super::split_manifests;

    #[test]
    fn manifests_seen_in_the_wild_split() {
        let yaml = "# a comment\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: b}\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n";
        let manifests = split_manifests(yaml).unwrap();
        let kinds: Vec<&str> = manifests
            .iter()
            .map(|m| m["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["ConfigMap", "Secret", "Deployment"]);
    }

    #[test]
    fn bad_documents_are_named_by_index() {
        let err =
            split_manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\nkind: Pod\n")
                .unwrap_err();
        assert!(
            err.starts_with("document 1:") && err.contains("apiVersion"),
            "{err}"
        );
        let err =
            split_manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\njust text\n")
                .unwrap_err();
        assert!(err.starts_with("document 1: is a scalar"), "{err}");
        let err = split_manifests("a: [\n").unwrap_err();
        assert!(err.starts_with("document 0: not valid YAML"), "{err}");
        assert!(split_manifests("# nothing\n").is_err());
    }
}
