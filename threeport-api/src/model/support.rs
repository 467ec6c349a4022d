//! Support services and the rest: observability, secrets, control planes, events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use threeport_core::object::{EventType, Reference};
use threeport_core::{ApiObject, ObjectId, ValidationError};
use utoipa::ToSchema;

use super::{
    AwsAccount, HelmWorkloadInstance, KubernetesRuntimeInstance, WorkloadInstance, dns_label,
    maybe_reference, reference, require,
};

/// A support service threeport installs on a runtime (as a Helm workload instance the
/// runtime owns) when a workload first needs it, or up front when the runtime lists it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum SupportService {
    /// The Gateway API CRDs and Envoy Gateway, serving GatewayClass `threeport`: for gateways.
    EnvoyGateway,
    /// cert-manager, with an ACME ClusterIssuer per domain name: for TLS ports.
    CertManager,
    /// external-dns, publishing gateways' host names into Route 53: for domain names.
    ExternalDns,
    /// The external-secrets operator, with a ClusterSecretStore per AWS region: for secrets.
    ExternalSecrets,
    /// The Kubernetes cluster-autoscaler, for EKS node groups (installed on every EKS runtime).
    ClusterAutoscaler,
}

impl SupportService {
    /// Every support service.
    pub const ALL: [SupportService; 5] = [
        SupportService::EnvoyGateway,
        SupportService::CertManager,
        SupportService::ExternalDns,
        SupportService::ExternalSecrets,
        SupportService::ClusterAutoscaler,
    ];

    /// Its name (`cert-manager`), as in the API and in its Helm objects' names.
    pub fn name(self) -> &'static str {
        match self {
            SupportService::EnvoyGateway => "envoy-gateway",
            SupportService::CertManager => "cert-manager",
            SupportService::ExternalDns => "external-dns",
            SupportService::ExternalSecrets => "external-secrets",
            SupportService::ClusterAutoscaler => "cluster-autoscaler",
        }
    }

    /// The service named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<SupportService> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for SupportService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One component of an observability stack.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservabilityComponent {
    /// Deploy it.
    #[serde(default)]
    pub enabled: bool,
    /// Helm chart version; `None`: threeport's pinned default.
    #[serde(default)]
    pub chart_version: Option<String>,
    /// Helm values (YAML).
    #[serde(default)]
    pub values: Option<String>,
}

fn enabled() -> ObservabilityComponent {
    ObservabilityComponent {
        enabled: true,
        ..ObservabilityComponent::default()
    }
}

/// Metrics (Prometheus), logging (Loki, Promtail) and dashboards (Grafana).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservabilityStackDefinition {
    /// Metrics.
    #[serde(default = "enabled")]
    pub metrics: ObservabilityComponent,
    /// Logging.
    #[serde(default = "enabled")]
    pub logging: ObservabilityComponent,
    /// Dashboards.
    #[serde(default = "enabled")]
    pub dashboards: ObservabilityComponent,
    /// Helm values of the log collector (Promtail), installed with logging (`logging.values`
    /// are Loki's).
    #[serde(default)]
    pub promtail_values: Option<String>,
}

/// Per-instance Helm values, merged over the definition's by Helm's rules (mappings merge
/// key by key, anything else is replaced).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservabilityOverrides {
    /// Over kube-prometheus-stack's values.
    #[serde(default)]
    pub metrics: Option<String>,
    /// Over Loki's values.
    #[serde(default)]
    pub logging: Option<String>,
    /// Over Promtail's values.
    #[serde(default)]
    pub promtail: Option<String>,
    /// Over Grafana's values.
    #[serde(default)]
    pub dashboards: Option<String>,
}

impl ObservabilityOverrides {
    fn validate(&self) -> Result<(), ValidationError> {
        for (name, values) in [
            ("overrides.metrics", &self.metrics),
            ("overrides.logging", &self.logging),
            ("overrides.promtail", &self.promtail),
            ("overrides.dashboards", &self.dashboards),
        ] {
            if let Some(values) = values {
                super::workload::values_mapping(name, values)?;
            }
        }
        Ok(())
    }
}

/// What the observability-stack controller installed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct ObservabilityStackStatus {
    /// The namespace of its releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its Helm workload instances, by name.
    #[serde(default)]
    pub releases: Vec<String>,
    /// Prometheus inside the cluster, if metrics are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
    /// Loki inside the cluster, if logging is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loki_url: Option<String>,
    /// Grafana inside the cluster, if dashboards are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana_url: Option<String>,
}

impl ApiObject for ObservabilityStackDefinition {
    const KIND: &'static str = "ObservabilityStackDefinition";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        for (name, component) in [
            ("metrics", &self.metrics),
            ("logging", &self.logging),
            ("dashboards", &self.dashboards),
        ] {
            if let Some(values) = &component.values {
                super::workload::values_mapping(&format!("{name}.values"), values)?;
            }
        }
        if let Some(values) = &self.promtail_values {
            super::workload::values_mapping("promtail_values", values)?;
        }
        Ok(())
    }
}

/// An observability stack on one runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservabilityStackInstance {
    /// Its definition.
    #[schema(value_type = String, format = Uuid)]
    pub definition: ObjectId,
    /// The runtime it observes.
    #[schema(value_type = String, format = Uuid)]
    pub runtime: ObjectId,
    /// Helm values over the definition's, per chart.
    #[serde(default)]
    pub overrides: ObservabilityOverrides,
}

impl ApiObject for ObservabilityStackInstance {
    const KIND: &'static str = "ObservabilityStackInstance";
    type Status = ObservabilityStackStatus;
    fn validate(&self) -> Result<(), ValidationError> {
        self.overrides.validate()
    }
    fn references(&self) -> Vec<Reference> {
        vec![
            reference::<ObservabilityStackDefinition>("definition", self.definition),
            reference::<KubernetesRuntimeInstance>("runtime", self.runtime),
        ]
    }
}

/// A secret kept in a secret manager. Its values (`data` on create) are never stored by
/// threeport: the API hands them to the controller in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretDefinition {
    /// The account whose Secrets Manager keeps it.
    #[schema(value_type = String, format = Uuid)]
    pub aws_account: ObjectId,
}

/// Where the secret's values were stored (never the values).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct SecretDefinitionStatus {
    /// Secrets Manager ARN, once the values arrived and were stored.
    pub arn: Option<String>,
}

impl ApiObject for SecretDefinition {
    const KIND: &'static str = "SecretDefinition";
    const SECRET_FIELD: Option<&'static str> = Some("data");
    type Status = SecretDefinitionStatus;
    fn references(&self) -> Vec<Reference> {
        vec![reference::<AwsAccount>("aws_account", self.aws_account)]
    }
}

/// A secret made available to one workload (or Helm workload) instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretInstance {
    /// Its definition.
    #[schema(value_type = String, format = Uuid)]
    pub definition: ObjectId,
    /// The workload that reads it.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub workload_instance: Option<ObjectId>,
    /// Or the Helm workload that reads it.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub helm_workload_instance: Option<ObjectId>,
}

impl ApiObject for SecretInstance {
    const KIND: &'static str = "SecretInstance";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        if self.workload_instance.is_some() == self.helm_workload_instance.is_some() {
            return Err(ValidationError::new(
                "workload_instance",
                "exactly one of workload_instance and helm_workload_instance is required",
            ));
        }
        Ok(())
    }
    fn references(&self) -> Vec<Reference> {
        let mut refs = vec![reference::<SecretDefinition>("definition", self.definition)];
        refs.extend(maybe_reference::<WorkloadInstance>(
            "workload_instance",
            self.workload_instance,
        ));
        refs.extend(maybe_reference::<HelmWorkloadInstance>(
            "helm_workload_instance",
            self.helm_workload_instance,
        ));
        refs
    }
}

fn default_true() -> bool {
    true
}

fn default_namespace() -> String {
    "threeport-control-plane".to_owned()
}

/// A threeport control plane's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneDefinition {
    /// Require authentication on its API.
    #[serde(default = "default_true")]
    pub auth_enabled: bool,
    /// The controllers it runs (`threeport-server controller` names); empty: all of them.
    #[serde(default)]
    pub controllers: Vec<String>,
    /// The threeport-server image (`registry/threeport-server:tag`); `None`: the chart's
    /// default for this release.
    #[serde(default)]
    pub image: Option<String>,
    /// Images of single controllers, by controller name (Threeport's custom component
    /// images): each runs in a Deployment of its own with that image.
    #[serde(default)]
    pub controller_images: BTreeMap<String, String>,
}

impl ApiObject for ControlPlaneDefinition {
    const KIND: &'static str = "ControlPlaneDefinition";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        for (i, name) in self.controllers.iter().enumerate() {
            dns_label(&format!("controllers[{i}]"), name)?;
        }
        let images = self.image.iter().map(|i| ("image".to_owned(), i)).chain(
            self.controller_images
                .iter()
                .map(|(name, image)| (format!("controller_images.{name}"), image)),
        );
        for (field, image) in images {
            if image.trim().is_empty() || image.contains(char::is_whitespace) {
                return Err(ValidationError::new(
                    field,
                    "must be an image reference (`registry/threeport-server:tag`)",
                ));
            }
        }
        for name in self.controller_images.keys() {
            dns_label(&format!("controller_images.{name}"), name)?;
        }
        Ok(())
    }
}

/// Where a child control plane answers, and how to reach it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct ControlPlaneStatus {
    /// Its API inside the runtime's cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// An API token for it, sealed (`sealed:v1:…`); only its hash went to the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The Helm workload instance that installs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// A threeport control plane deployed on a runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneInstance {
    /// Its definition.
    #[schema(value_type = String, format = Uuid)]
    pub definition: ObjectId,
    /// Where it runs.
    #[schema(value_type = String, format = Uuid)]
    pub runtime: ObjectId,
    /// Namespace it runs in.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The first control plane, which created the others.
    #[serde(default)]
    pub genesis: bool,
    /// A Secret in `namespace` holding the child's database URL (key `url`) and sealing key
    /// (key `key`, 64 hex digits): threeport never stores either.
    #[serde(default)]
    pub secret: Option<String>,
    /// Serve the child's API over HTTPS with this `kubernetes.io/tls` Secret in `namespace`.
    #[serde(default)]
    pub tls_secret: Option<String>,
    /// Serve the child's API over HTTPS with a certificate from this cert-manager
    /// ClusterIssuer, for the API Service's cluster DNS names.
    #[serde(default)]
    pub tls_issuer: Option<String>,
}

impl ControlPlaneInstance {
    /// Whether its API is served over HTTPS.
    pub fn tls(&self) -> bool {
        self.tls_secret.is_some() || self.tls_issuer.is_some()
    }
}

impl ApiObject for ControlPlaneInstance {
    const KIND: &'static str = "ControlPlaneInstance";
    type Status = ControlPlaneStatus;
    fn validate(&self) -> Result<(), ValidationError> {
        if let Some(secret) = &self.secret {
            dns_label("secret", secret)?;
        }
        if let Some(secret) = &self.tls_secret {
            dns_label("tls_secret", secret)?;
        }
        if let Some(issuer) = &self.tls_issuer {
            dns_label("tls_issuer", issuer)?;
            if self.tls_secret.is_some() {
                return Err(ValidationError::new(
                    "tls_issuer",
                    "give either tls_secret (a certificate of your own) or tls_issuer \
                     (cert-manager makes one), not both",
                ));
            }
        }
        dns_label("namespace", &self.namespace)
    }
    fn references(&self) -> Vec<Reference> {
        vec![
            reference::<ControlPlaneDefinition>("definition", self.definition),
            reference::<KubernetesRuntimeInstance>("runtime", self.runtime),
        ]
    }
}

/// Something that happened to an object, reported by a controller or an in-cluster agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Kind of the object it happened to.
    pub object_kind: String,
    /// Id of the object it happened to.
    #[schema(value_type = String, format = Uuid)]
    pub object_id: ObjectId,
    /// Normal or warning.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "Normal")]
    pub event_type: EventType,
    /// Machine-readable cause (`Scheduled`, `BackOff`).
    pub reason: String,
    /// What happened.
    pub message: String,
    /// Times it happened.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

impl ApiObject for Event {
    const KIND: &'static str = "Event";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        threeport_core::object::validate_kind(&self.object_kind)
            .map_err(|e| ValidationError::new("object_kind", e.to_string()))?;
        require("reason", &self.reason)
    }
}
