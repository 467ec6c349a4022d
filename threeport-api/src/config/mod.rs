//! Threeport's YAML config files, read as they are, and what they expand to.
//!
//! A file holds one object under one PascalCase key (`Workload:`, `AwsAccount:`, …) with
//! PascalCase fields. Plain kinds (`WorkloadDefinition`, `AwsAccount`) expand to one object;
//! abstractions (`Workload`, `KubernetesRuntime`, `AwsRelationalDatabase`, …) to several: a
//! root that owns the rest, so deleting the root deletes them all, and the server creates
//! them in one transaction. Other objects are named (`AwsAccountName: default`,
//! `WorkloadInstance: {Name: web}`) and resolved to ids later ([`Target::Named`]); file fields
//! (`YAMLDocument`, `…ValuesDocument`, `VarsDocument`, `ConfigDir`, …) are read relative to
//! the file's directory; a config given as text ([`ConfigFile::from_text`]) reads none.
//! [`plan`] turns an expansion into writes, through the HTTP [`Client`](crate::Client) or any
//! other [`plan::Objects`].
//!
//! Strictness: a field no config of that key has is an error with its line (serde's
//! `deny_unknown_fields`); so is a field of the family a key does not take (a
//! `WorkloadInstance` inside `AwsRelationalDatabaseDefinition`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value, json};

pub mod aws_files;
mod error;
pub mod plan;
pub mod tfvars;

use crate::kebab_case;
pub use error::ConfigError;

/// `{Name: web}`: another object, by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NameRef {
    name: String,
}

type Labels = BTreeMap<String, String>;

/// Fields of the workload family: `Workload`, `WorkloadDefinition`, `WorkloadInstance`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct WorkloadValues {
    name: String,
    #[serde(rename = "YAMLDocument")]
    yaml_document: Option<String>,
    /// The manifests inline (instead of `YAMLDocument`).
    #[serde(rename = "YAML")]
    yaml: Option<String>,
    workload_definition: Option<NameRef>,
    kubernetes_runtime_instance: Option<NameRef>,
    domain_name: Option<DomainNameValues>,
    gateway: Option<GatewayValues>,
    aws_relational_database: Option<DatabaseValues>,
    aws_object_storage_bucket: Option<BucketValues>,
    secret: Option<SecretValues>,
    labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct HelmWorkloadValues {
    name: String,
    repo: Option<String>,
    chart: Option<String>,
    chart_version: Option<String>,
    chart_archive: Option<String>,
    additional_resources: Option<String>,
    additional_resources_document: Option<String>,
    values: Option<String>,
    values_document: Option<String>,
    definition_values: Option<String>,
    definition_values_document: Option<String>,
    instance_values: Option<String>,
    instance_values_document: Option<String>,
    release_namespace: Option<String>,
    helm_workload_definition: Option<NameRef>,
    kubernetes_runtime_instance: Option<NameRef>,
    labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RuntimeValues {
    name: String,
    infra_provider: Option<String>,
    infra_provider_account_name: Option<String>,
    high_availability: Option<bool>,
    node_size: Option<String>,
    node_profile: Option<String>,
    node_maximum: Option<u32>,
    location: Option<String>,
    default_runtime: Option<bool>,
    kubernetes_runtime_definition: Option<NameRef>,
    threeport_agent_image: Option<String>,
    threeport_control_plane_host: Option<bool>,
    #[serde(rename = "APIEndpoint")]
    api_endpoint: Option<String>,
    #[serde(rename = "CACertificate")]
    ca_certificate: Option<String>,
    token: Option<String>,
    kubeconfig_document: Option<String>,
    support_services: Option<Vec<String>>,
    labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct AccountValues {
    name: String,
    #[serde(rename = "AccountID")]
    account_id: String,
    default_account: Option<bool>,
    default_region: Option<String>,
    #[serde(rename = "AccessKeyID")]
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    role_arn: Option<String>,
    external_id: Option<String>,
    local_config: Option<String>,
    local_credentials: Option<String>,
    local_profile: Option<String>,
    labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct EksValues {
    name: String,
    aws_account_name: Option<String>,
    zone_count: Option<u32>,
    default_node_group_instance_type: Option<String>,
    default_node_group_initial_size: Option<u32>,
    default_node_group_minimum_size: Option<u32>,
    default_node_group_maximum_size: Option<u32>,
    location: Option<String>,
    region: Option<String>,
    default_runtime: Option<bool>,
    aws_eks_kubernetes_runtime_definition_name: Option<String>,
    kubernetes_runtime_instance: Option<NameRef>,
    labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DatabaseValues {
    name: Option<String>,
    aws_account_name: Option<String>,
    engine: Option<String>,
    engine_version: Option<String>,
    database_name: Option<String>,
    database_port: Option<u16>,
    backup_days: Option<u32>,
    machine_size: Option<String>,
    storage_gb: Option<u32>,
    workload_secret_name: Option<String>,
    workload_instance: Option<NameRef>,
    aws_relational_database_definition: Option<NameRef>,
    labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct BucketValues {
    name: Option<String>,
    aws_account_name: Option<String>,
    public_read_access: Option<bool>,
    workload_service_account_name: Option<String>,
    workload_bucket_env_var: Option<String>,
    workload_instance: Option<NameRef>,
    aws_object_storage_bucket_definition: Option<NameRef>,
    labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct HttpPortValues {
    port: u16,
    path: Option<String>,
    #[serde(rename = "TLSEnabled")]
    tls_enabled: Option<bool>,
    #[serde(rename = "HTTPSRedirect")]
    https_redirect: Option<bool>,
    service_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TcpPortValues {
    port: u16,
    #[serde(rename = "TLSEnabled")]
    tls_enabled: Option<bool>,
    service_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct GatewayValues {
    name: Option<String>,
    http_ports: Option<Vec<HttpPortValues>>,
    tcp_ports: Option<Vec<TcpPortValues>>,
    service_name: Option<String>,
    sub_domain: Option<String>,
    certificate_issuer: Option<String>,
    gateway_class: Option<String>,
    domain_name_definition: Option<NameRef>,
    gateway_definition: Option<NameRef>,
    workload_instance: Option<NameRef>,
    kubernetes_runtime_instance: Option<NameRef>,
    labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DomainNameValues {
    name: Option<String>,
    domain: Option<String>,
    zone: Option<String>,
    admin_email: Option<String>,
    aws_account_name: Option<String>,
    create_zone: Option<bool>,
    domain_name_definition: Option<NameRef>,
    workload_instance: Option<NameRef>,
    kubernetes_runtime_instance: Option<NameRef>,
    labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SecretValues {
    name: Option<String>,
    data: Option<BTreeMap<String, String>>,
    aws_account_name: Option<String>,
    secret_definition: Option<NameRef>,
    workload_instance: Option<NameRef>,
    helm_workload_instance: Option<NameRef>,
    kubernetes_runtime_instance: Option<NameRef>,
    labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TerraformValues {
    name: String,
    config_dir: Option<String>,
    aws_account: Option<NameRef>,
    aws_account_name: Option<String>,
    vars_document: Option<String>,
    approval: Option<String>,
    terraform_definition: Option<NameRef>,
    labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ObservabilityValues {
    name: String,
    metrics_enabled: Option<bool>,
    logging_enabled: Option<bool>,
    grafana_helm_values: Option<String>,
    grafana_helm_values_document: Option<String>,
    loki_helm_values: Option<String>,
    loki_helm_values_document: Option<String>,
    kube_prometheus_stack_helm_values: Option<String>,
    kube_prometheus_stack_helm_values_document: Option<String>,
    promtail_helm_values: Option<String>,
    promtail_helm_values_document: Option<String>,
    observability_stack_definition: Option<NameRef>,
    kubernetes_runtime_instance: Option<NameRef>,
    labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ControlPlaneValues {
    name: String,
    namespace: Option<String>,
    auth_enabled: Option<bool>,
    onboard_parent: Option<bool>,
    genesis: Option<bool>,
    controllers: Option<Vec<String>>,
    image: Option<String>,
    controller_images: Option<BTreeMap<String, String>>,
    secret: Option<String>,
    tls_secret: Option<String>,
    tls_issuer: Option<String>,
    control_plane_definition: Option<NameRef>,
    kubernetes_runtime_instance: Option<NameRef>,
    labels: Option<Labels>,
}

/// The families of config keys: an abstraction, its definition and its instance share one
/// struct of fields (each key takes its share, [`fields_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Workload,
    Helm,
    Runtime,
    Account,
    Eks,
    Database,
    Bucket,
    Gateway,
    DomainName,
    Secret,
    Terraform,
    Observability,
    ControlPlane,
}

const DATABASE_DEFINITION: &[&str] = &[
    "Name",
    "AwsAccountName",
    "Engine",
    "EngineVersion",
    "DatabaseName",
    "DatabasePort",
    "BackupDays",
    "MachineSize",
    "StorageGb",
    "WorkloadSecretName",
];
const BUCKET_DEFINITION: &[&str] = &[
    "Name",
    "AwsAccountName",
    "PublicReadAccess",
    "WorkloadServiceAccountName",
    "WorkloadBucketEnvVar",
];
const GATEWAY_DEFINITION: &[&str] = &[
    "Name",
    "HttpPorts",
    "TcpPorts",
    "ServiceName",
    "SubDomain",
    "CertificateIssuer",
    "GatewayClass",
];
const DOMAIN_DEFINITION: &[&str] = &[
    "Name",
    "Domain",
    "Zone",
    "AdminEmail",
    "AwsAccountName",
    "CreateZone",
];
const SECRET_DEFINITION: &[&str] = &["Name", "Data", "AwsAccountName"];
const RUNTIME_DEFINITION: &[&str] = &[
    "Name",
    "InfraProvider",
    "InfraProviderAccountName",
    "HighAvailability",
    "NodeSize",
    "NodeProfile",
    "NodeMaximum",
];
const RUNTIME_INSTANCE: &[&str] = &[
    "Location",
    "DefaultRuntime",
    "ThreeportAgentImage",
    "ThreeportControlPlaneHost",
    "APIEndpoint",
    "CACertificate",
    "Token",
    "KubeconfigDocument",
    "SupportServices",
];
const EKS_DEFINITION: &[&str] = &[
    "Name",
    "AwsAccountName",
    "ZoneCount",
    "DefaultNodeGroupInstanceType",
    "DefaultNodeGroupInitialSize",
    "DefaultNodeGroupMinimumSize",
    "DefaultNodeGroupMaximumSize",
];
const OBSERVABILITY_DEFINITION: &[&str] = &[
    "Name",
    "MetricsEnabled",
    "LoggingEnabled",
    "GrafanaHelmValues",
    "GrafanaHelmValuesDocument",
    "LokiHelmValues",
    "LokiHelmValuesDocument",
    "KubePrometheusStackHelmValues",
    "KubePrometheusStackHelmValuesDocument",
    "PromtailHelmValues",
    "PromtailHelmValuesDocument",
];

/// The Helm values fields of an observability stack (an instance's override the
/// definition's).
const OBSERVABILITY_VALUES: &[&str] = &[
    "GrafanaHelmValues",
    "GrafanaHelmValuesDocument",
    "LokiHelmValues",
    "LokiHelmValuesDocument",
    "KubePrometheusStackHelmValues",
    "KubePrometheusStackHelmValuesDocument",
    "PromtailHelmValues",
    "PromtailHelmValuesDocument",
];

/// Every config key, in the order `tptctl` lists them: each abstraction with its definition
/// and instance, and `AwsAccount`.
const KEYS: &[&str] = &[
    "Workload",
    "WorkloadDefinition",
    "WorkloadInstance",
    "HelmWorkload",
    "HelmWorkloadDefinition",
    "HelmWorkloadInstance",
    "KubernetesRuntime",
    "KubernetesRuntimeDefinition",
    "KubernetesRuntimeInstance",
    "AwsAccount",
    "AwsEksKubernetesRuntime",
    "AwsEksKubernetesRuntimeDefinition",
    "AwsEksKubernetesRuntimeInstance",
    "AwsRelationalDatabase",
    "AwsRelationalDatabaseDefinition",
    "AwsRelationalDatabaseInstance",
    "AwsObjectStorageBucket",
    "AwsObjectStorageBucketDefinition",
    "AwsObjectStorageBucketInstance",
    "Gateway",
    "GatewayDefinition",
    "GatewayInstance",
    "DomainName",
    "DomainNameDefinition",
    "DomainNameInstance",
    "Secret",
    "SecretDefinition",
    "SecretInstance",
    "Terraform",
    "TerraformDefinition",
    "TerraformInstance",
    "ObservabilityStack",
    "ObservabilityStackDefinition",
    "ObservabilityStackInstance",
    "ControlPlane",
    "ControlPlaneDefinition",
    "ControlPlaneInstance",
];

/// The family of config key `key`: the one of the abstraction it is, or is a part of.
fn family_of(key: &str) -> Family {
    let base = key
        .strip_suffix("Definition")
        .or_else(|| key.strip_suffix("Instance"))
        .unwrap_or(key);
    match base {
        "Workload" => Family::Workload,
        "HelmWorkload" => Family::Helm,
        "KubernetesRuntime" => Family::Runtime,
        "AwsAccount" => Family::Account,
        "AwsEksKubernetesRuntime" => Family::Eks,
        "AwsRelationalDatabase" => Family::Database,
        "AwsObjectStorageBucket" => Family::Bucket,
        "Gateway" => Family::Gateway,
        "DomainName" => Family::DomainName,
        "Secret" => Family::Secret,
        "Terraform" => Family::Terraform,
        "ObservabilityStack" => Family::Observability,
        _ => Family::ControlPlane,
    }
}

/// Every config key (`Workload`, `AwsAccount`, …).
pub fn keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().copied()
}

/// The fields config key `key` takes (besides `Labels`, which every top-level object takes).
fn fields_of(key: &str) -> Vec<&'static str> {
    let mut fields: Vec<&'static str> = match key {
        "Workload" => vec![
            "Name",
            "YAMLDocument",
            "YAML",
            "KubernetesRuntimeInstance",
            "DomainName",
            "Gateway",
            "AwsRelationalDatabase",
            "AwsObjectStorageBucket",
            "Secret",
        ],
        "WorkloadDefinition" => vec!["Name", "YAMLDocument", "YAML"],
        "WorkloadInstance" => vec!["Name", "WorkloadDefinition", "KubernetesRuntimeInstance"],
        "HelmWorkload" => vec![
            "Name",
            "Repo",
            "Chart",
            "ChartVersion",
            "ChartArchive",
            "AdditionalResources",
            "AdditionalResourcesDocument",
            "DefinitionValues",
            "DefinitionValuesDocument",
            "InstanceValues",
            "InstanceValuesDocument",
            "ReleaseNamespace",
            "KubernetesRuntimeInstance",
        ],
        "HelmWorkloadDefinition" => {
            vec![
                "Name",
                "Repo",
                "Chart",
                "ChartVersion",
                "ChartArchive",
                "AdditionalResources",
                "AdditionalResourcesDocument",
                "Values",
                "ValuesDocument",
            ]
        }
        "HelmWorkloadInstance" => vec![
            "Name",
            "HelmWorkloadDefinition",
            "Values",
            "ValuesDocument",
            "ReleaseNamespace",
            "KubernetesRuntimeInstance",
        ],
        "KubernetesRuntime" => [RUNTIME_DEFINITION, RUNTIME_INSTANCE].concat(),
        "KubernetesRuntimeDefinition" => RUNTIME_DEFINITION.to_vec(),
        "KubernetesRuntimeInstance" => [
            &["Name", "KubernetesRuntimeDefinition"][..],
            RUNTIME_INSTANCE,
        ]
        .concat(),
        "AwsAccount" => vec![
            "Name",
            "AccountID",
            "DefaultAccount",
            "DefaultRegion",
            "AccessKeyID",
            "SecretAccessKey",
            "RoleArn",
            "ExternalId",
            "LocalConfig",
            "LocalCredentials",
            "LocalProfile",
        ],
        "AwsEksKubernetesRuntime" => [EKS_DEFINITION, &["Location", "DefaultRuntime"]].concat(),
        "AwsEksKubernetesRuntimeDefinition" => EKS_DEFINITION.to_vec(),
        "AwsEksKubernetesRuntimeInstance" => vec![
            "Name",
            "AwsEksKubernetesRuntimeDefinitionName",
            "KubernetesRuntimeInstance",
            "Location",
            "Region",
        ],
        "AwsRelationalDatabase" => [DATABASE_DEFINITION, &["WorkloadInstance"]].concat(),
        "AwsRelationalDatabaseDefinition" => DATABASE_DEFINITION.to_vec(),
        "AwsRelationalDatabaseInstance" => {
            vec![
                "Name",
                "AwsRelationalDatabaseDefinition",
                "WorkloadInstance",
            ]
        }
        "AwsObjectStorageBucket" => [BUCKET_DEFINITION, &["WorkloadInstance"]].concat(),
        "AwsObjectStorageBucketDefinition" => BUCKET_DEFINITION.to_vec(),
        "AwsObjectStorageBucketInstance" => {
            vec![
                "Name",
                "AwsObjectStorageBucketDefinition",
                "WorkloadInstance",
            ]
        }
        "Gateway" => [
            GATEWAY_DEFINITION,
            &[
                "DomainNameDefinition",
                "WorkloadInstance",
                "KubernetesRuntimeInstance",
            ],
        ]
        .concat(),
        "GatewayDefinition" => [GATEWAY_DEFINITION, &["DomainNameDefinition"]].concat(),
        "GatewayInstance" => vec![
            "Name",
            "GatewayDefinition",
            "WorkloadInstance",
            "KubernetesRuntimeInstance",
        ],
        "DomainName" => [
            DOMAIN_DEFINITION,
            &["WorkloadInstance", "KubernetesRuntimeInstance"],
        ]
        .concat(),
        "DomainNameDefinition" => DOMAIN_DEFINITION.to_vec(),
        "DomainNameInstance" => vec![
            "Name",
            "DomainNameDefinition",
            "WorkloadInstance",
            "KubernetesRuntimeInstance",
        ],
        "Secret" => [
            SECRET_DEFINITION,
            &[
                "WorkloadInstance",
                "HelmWorkloadInstance",
                "KubernetesRuntimeInstance",
            ],
        ]
        .concat(),
        "SecretDefinition" => SECRET_DEFINITION.to_vec(),
        "SecretInstance" => vec![
            "Name",
            "SecretDefinition",
            "WorkloadInstance",
            "HelmWorkloadInstance",
            "KubernetesRuntimeInstance",
        ],
        "Terraform" => vec![
            "Name",
            "ConfigDir",
            "AwsAccount",
            "AwsAccountName",
            "VarsDocument",
            "Approval",
        ],
        "TerraformDefinition" => vec![
            "Name",
            "ConfigDir",
            "AwsAccount",
            "AwsAccountName",
            "Approval",
        ],
        "TerraformInstance" => vec!["Name", "TerraformDefinition", "VarsDocument", "AwsAccount"],
        "ObservabilityStack" => [OBSERVABILITY_DEFINITION, &["KubernetesRuntimeInstance"]].concat(),
        "ObservabilityStackDefinition" => OBSERVABILITY_DEFINITION.to_vec(),
        "ObservabilityStackInstance" => [
            &[
                "Name",
                "ObservabilityStackDefinition",
                "KubernetesRuntimeInstance",
            ],
            OBSERVABILITY_VALUES,
        ]
        .concat(),
        "ControlPlane" => vec![
            "Name",
            "Namespace",
            "AuthEnabled",
            "Controllers",
            "Image",
            "ControllerImages",
            "Secret",
            "TlsSecret",
            "TlsIssuer",
            "OnboardParent",
            "KubernetesRuntimeInstance",
        ],
        "ControlPlaneDefinition" => vec![
            "Name",
            "AuthEnabled",
            "Controllers",
            "Image",
            "ControllerImages",
        ],
        "ControlPlaneInstance" => vec![
            "Name",
            "ControlPlaneDefinition",
            "KubernetesRuntimeInstance",
            "Namespace",
            "Genesis",
            "Secret",
            "TlsSecret",
            "TlsIssuer",
        ],
        _ => Vec::new(),
    };
    fields.push("Labels");
    fields
}

/// The fields a part nested in a `Workload` takes.
fn nested_fields_of(part: &str) -> &'static [&'static str] {
    match part {
        "AwsRelationalDatabase" => DATABASE_DEFINITION,
        "AwsObjectStorageBucket" => BUCKET_DEFINITION,
        "Gateway" => GATEWAY_DEFINITION,
        "DomainName" => DOMAIN_DEFINITION,
        "Secret" => SECRET_DEFINITION,
        _ => &[],
    }
}

/// Where a link of a part points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Another part of the same expansion, by index.
    Part(usize),
    /// An existing object of `kind` named `name`.
    Named {
        /// Its kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The AWS account marked `default_account`.
    DefaultAccount,
    /// The Kubernetes runtime instance marked `default_runtime`.
    DefaultRuntime,
}

/// A spec field that holds another object's id, filled in once ids are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The spec field (`aws_account`).
    pub field: &'static str,
    /// What it points at.
    pub target: Target,
    /// The config field it came from, for errors (`Workload.AwsRelationalDatabase.AwsAccountName`).
    pub config_field: String,
}

/// One object a config expands to.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Kind.
    pub kind: &'static str,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// The spec, without its links.
    pub spec: Map<String, Value>,
    /// Fields to fill with ids.
    pub links: Vec<Link>,
    /// The part that owns it, if any.
    pub owner: Option<usize>,
}

/// What a config file asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Expansion {
    /// The config key (`Workload`).
    pub key: &'static str,
    /// The objects, root first: the root owns the others (directly or through another part).
    pub parts: Vec<Part>,
    /// Things the user should know: fields accepted for compatibility and ignored.
    pub notes: Vec<String>,
}

/// A config file, read: its key and directory, not yet expanded.
pub struct ConfigFile {
    /// The path it was read from (for a config given as text, a name for its errors).
    pub path: PathBuf,
    text: String,
    /// The config key.
    pub key: &'static str,
    /// Whether its file fields may be read (relative to its directory): not for a config
    /// given as text (the API's `/v0/configs`), where every file field is refused.
    files: bool,
}

/// The config key written `word` on the command line (`workload`, `aws-account`), if any.
pub fn key_of_word(word: &str) -> Option<&'static str> {
    keys().find(|key| kebab_case(key) == word || *key == word)
}

/// Whether config key `key` expands to several objects.
pub fn is_abstraction(key: &str) -> bool {
    !key.ends_with("Definition") && !key.ends_with("Instance") && key != "AwsAccount"
}

/// The kind of the object an abstraction (or plain key) is deleted and described by: the
/// definition for abstractions (it owns the rest), else the kind itself.
pub fn root_kind(key: &'static str) -> &'static str {
    match key {
        "AwsEksKubernetesRuntime" => "KubernetesRuntimeDefinition",
        "Workload" => "WorkloadDefinition",
        key if is_abstraction(key) => definition_kind(key),
        key => key,
    }
}

/// The instance kind listed for an abstraction (`tptctl get workloads`).
pub fn instance_kind(key: &'static str) -> &'static str {
    match key {
        "AwsEksKubernetesRuntime" => "KubernetesRuntimeInstance",
        key => keys()
            .find(|k| k.strip_suffix("Instance") == Some(key))
            .unwrap_or(key),
    }
}

fn definition_kind(key: &'static str) -> &'static str {
    keys()
        .find(|k| k.strip_suffix("Definition") == Some(key))
        .unwrap_or(key)
}

/// The 1-based line of the first `field:` key in `text`, for errors.
fn line_of(text: &str, field: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let trimmed = line.trim_start().trim_start_matches("- ");
            trimmed
                .strip_prefix(field)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|index| index + 1)
}

impl ConfigFile {
    /// Reads `path` and finds its config key.
    #[cfg(test)]
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        Self::read_as(path, None)
    }

    /// Reads `path`, a config of `expected` (if given: otherwise a usage error saying what it
    /// holds), and finds its config key.
    pub fn read_as(path: &Path, expected: Option<&str>) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(path, text, expected, true)
    }

    /// A config given as text (pasted into the console, sent to the API), named `name` in its
    /// errors. It reads no file: file fields (`YAMLDocument`, `ValuesDocument`, `ConfigDir`,
    /// `LocalCredentials`, …) are refused; their inline forms (`YAML`, `Values`, …) work.
    pub fn from_text(name: &str, text: String) -> Result<ConfigFile, ConfigError> {
        Self::parse(Path::new(name), text, None, false)
    }

    fn parse(
        path: &Path,
        text: String,
        expected: Option<&str>,
        files: bool,
    ) -> Result<ConfigFile, ConfigError> {
        let value: serde_yaml::Value = serde_yaml::from_str(&text)
            .map_err(|e| ConfigError::new(format!("{}: not valid YAML: {e}", path.display())))?;
        let serde_yaml::Value::Mapping(top) = value else {
            return Err(ConfigError::new(format!(
                "{}: a config is a mapping with one key naming the object (Workload:, AwsAccount:, …)",
                path.display()
            )));
        };
        let names: Vec<String> = top
            .keys()
            .map(|k| k.as_str().unwrap_or("?").to_owned())
            .collect();
        let [name] = names.as_slice() else {
            return Err(ConfigError::new(format!(
                "{}: a config holds one object under one key, found {}: {}",
                path.display(),
                names.len(),
                names.join(", ")
            )));
        };
        let key = keys().find(|k| k == name).ok_or_else(|| {
            ConfigError::new(format!(
                "{}:{}: unknown object {name:?}; one of: {}",
                path.display(),
                line_of(&text, name).unwrap_or(1),
                keys().collect::<Vec<_>>().join(", ")
            ))
        })?;
        if let Some(expected) = expected
            && expected != key
        {
            return Err(ConfigError::usage(format!(
                "{} holds a {key}, not a {expected}: run `tptctl … {} -c {}`",
                path.display(),
                kebab_case(key),
                path.display()
            )));
        }
        check_fields(path, &text, key, &top)?;
        Ok(ConfigFile {
            path: path.to_owned(),
            text,
            key,
            files,
        })
    }

    /// The directory file field `field` is read relative to; an error if this config may
    /// read no file.
    fn dir(&self, field: &str) -> Result<PathBuf, ConfigError> {
        if !self.files {
            return Err(ConfigError::new(format!(
                "{}:{}: {}.{field} names a file, and a config given as text reads no file: \
                 give the content inline (YAML for YAMLDocument, Values for ValuesDocument, …)",
                self.path.display(),
                line_of(&self.text, field).unwrap_or(1),
                self.key
            )));
        }
        Ok(self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")))
    }

    /// The body under the key, decoded as the family's struct; errors name field and line.
    fn body<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let mut all: BTreeMap<String, T> = serde_yaml::from_str(&self.text).map_err(|e| {
            // serde_yaml says "Workload.Gateway: unknown field `Foo`, expected … at line 7
            // column 5": put the file and line first.
            let message = e.to_string();
            let location = e
                .location()
                .map(|l| format!(":{}", l.line()))
                .unwrap_or_default();
            let message = match message.rfind(" at line ") {
                Some(at) => message[..at].to_owned(),
                None => message,
            };
            ConfigError::new(format!("{}{location}: {message}", self.path.display()))
        })?;
        Ok(all.remove(self.key).expect("the key was found"))
    }

    /// What the config asks for.
    pub fn expand(&self) -> Result<Expansion, ConfigError> {
        let family = family_of(self.key);
        let mut x = Expander {
            file: self,
            parts: Vec::new(),
            notes: Vec::new(),
        };
        match family {
            Family::Workload => x.workload(self.body()?)?,
            Family::Helm => x.helm(self.body()?)?,
            Family::Runtime => x.runtime(self.body()?)?,
            Family::Account => x.account(self.body()?)?,
            Family::Eks => x.eks(self.body()?)?,
            Family::Database => x.database(self.body()?)?,
            Family::Bucket => x.bucket(self.body()?)?,
            Family::Gateway => x.gateway(self.body()?)?,
            Family::DomainName => x.domain_name(self.body()?)?,
            Family::Secret => x.secret(self.body()?)?,
            Family::Terraform => x.terraform(self.body()?)?,
            Family::Observability => x.observability(self.body()?)?,
            Family::ControlPlane => x.control_plane(self.body()?)?,
        }
        Ok(Expansion {
            key: self.key,
            parts: x.parts,
            notes: x.notes,
        })
    }

    /// The name of the config's object (its `Name`), without expanding it.
    pub fn name(&self) -> Result<String, ConfigError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Named {
            name: Option<String>,
        }
        let all: BTreeMap<String, Named> = serde_yaml::from_str(&self.text)
            .map_err(|e| ConfigError::new(format!("{}: {e}", self.path.display())))?;
        all.get(self.key)
            .and_then(|named| named.name.clone())
            .ok_or_else(|| self.missing("Name"))
    }

    fn missing(&self, field: &str) -> ConfigError {
        ConfigError::new(format!(
            "{}: {}.{field} is required",
            self.path.display(),
            self.key
        ))
    }
}

/// Refuses fields of the key's family that this key does not take, with their line.
fn check_fields(
    path: &Path,
    text: &str,
    key: &str,
    top: &serde_yaml::Mapping,
) -> Result<(), ConfigError> {
    let Some(serde_yaml::Value::Mapping(body)) = top.get(key) else {
        return Err(ConfigError::new(format!(
            "{}: {key} must hold the object's fields (Name: …)",
            path.display()
        )));
    };
    let allowed = fields_of(key);
    for field in body.keys().filter_map(|k| k.as_str()) {
        if !allowed.contains(&field) {
            return Err(unknown_field(path, text, key, field, &allowed));
        }
        let nested = nested_fields_of(field);
        if key == "Workload"
            && !nested.is_empty()
            && let Some(serde_yaml::Value::Mapping(part)) = body.get(field)
        {
            for inner in part.keys().filter_map(|k| k.as_str()) {
                if !nested.contains(&inner) {
                    return Err(unknown_field(
                        path,
                        text,
                        &format!("{key}.{field}"),
                        inner,
                        nested,
                    ));
                }
            }
        }
    }
    Ok(())
}

fn unknown_field(path: &Path, text: &str, at: &str, field: &str, allowed: &[&str]) -> ConfigError {
    ConfigError::new(format!(
        "{}:{}: {at}: unknown field `{field}`, expected one of {}",
        path.display(),
        line_of(text, field).unwrap_or(1),
        allowed
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Builds the parts of one config.
struct Expander<'a> {
    file: &'a ConfigFile,
    parts: Vec<Part>,
    notes: Vec<String>,
}

/// A JSON object of the fields that are set.
fn spec(fields: &[(&str, Option<Value>)]) -> Map<String, Value> {
    fields
        .iter()
        .filter_map(|(name, value)| value.clone().map(|v| ((*name).to_owned(), v)))
        .collect()
}

fn some<T: serde::Serialize>(value: &Option<T>) -> Option<Value> {
    value.as_ref().map(|v| json!(v))
}

/// An enum value in Threeport's spelling (`XSmall`, `Public`, `NorthAmerica`) in ours
/// (`x_small`, `public`).
fn enum_value(value: &Option<String>) -> Option<Value> {
    value.as_ref().map(|v| {
        let mut out = String::new();
        for (i, c) in v.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 && !out.ends_with('_') {
                out.push('_');
            }
            if c == '-' || c == ' ' {
                out.push('_');
            } else {
                out.push(c.to_ascii_lowercase());
            }
        }
        Value::String(out)
    })
}

impl Expander<'_> {
    fn push(&mut self, part: Part) -> usize {
        self.parts.push(part);
        self.parts.len() - 1
    }

    fn part(&self, kind: &'static str, name: &str, labels: &Option<Labels>) -> Part {
        Part {
            kind,
            name: name.to_owned(),
            labels: labels.clone().unwrap_or_default(),
            spec: Map::new(),
            links: Vec::new(),
            owner: None,
        }
    }

    fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.file.key)
    }

    fn required<'v, T>(&self, value: &'v Option<T>, field: &str) -> Result<&'v T, ConfigError> {
        value.as_ref().ok_or_else(|| self.file.missing(field))
    }

    /// The content of file field `field`, relative to the config's directory.
    fn document(&self, field: &str, path: &str) -> Result<String, ConfigError> {
        let full = resolve_path(&self.file.dir(field)?, path);
        std::fs::read_to_string(&full).map_err(|e| {
            ConfigError::new(format!(
                "{}:{}: {}: cannot read {}: {e}",
                self.file.path.display(),
                line_of(&self.file.text, field).unwrap_or(1),
                self.field(field),
                full.display()
            ))
        })
    }

    /// The chart archive at `path` (relative to the config's directory), base64-encoded.
    fn archive(&self, path: &str) -> Result<String, ConfigError> {
        use base64::Engine as _;
        let full = resolve_path(&self.file.dir("ChartArchive")?, path);
        let bytes = std::fs::read(&full).map_err(|e| {
            ConfigError::new(format!(
                "{}:{}: {}: cannot read {}: {e}",
                self.file.path.display(),
                line_of(&self.file.text, "ChartArchive").unwrap_or(1),
                self.field("ChartArchive"),
                full.display()
            ))
        })?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// Inline values, or the content of their document field; not both.
    fn inline_or_document(
        &self,
        inline: &Option<String>,
        document: &Option<String>,
        inline_field: &str,
        document_field: &str,
    ) -> Result<Option<String>, ConfigError> {
        match (inline, document) {
            (Some(_), Some(_)) => Err(ConfigError::new(format!(
                "{}: {} and {} cannot both be set",
                self.file.path.display(),
                self.field(inline_field),
                self.field(document_field)
            ))),
            (Some(values), None) => Ok(Some(values.clone())),
            (None, Some(path)) => self.document(document_field, path).map(Some),
            (None, None) => Ok(None),
        }
    }

    fn named(field: &'static str, kind: &'static str, name: &str, config_field: String) -> Link {
        Link {
            field,
            target: Target::Named {
                kind,
                name: name.to_owned(),
            },
            config_field,
        }
    }

    fn account_link(&self, name: &Option<String>, config_field: String) -> Link {
        match name {
            Some(name) => Self::named("aws_account", "AwsAccount", name, config_field),
            None => Link {
                field: "aws_account",
                target: Target::DefaultAccount,
                config_field,
            },
        }
    }

    fn runtime_link(&self, runtime: &Option<NameRef>, required: bool) -> Option<Link> {
        let config_field = self.field("KubernetesRuntimeInstance");
        match runtime {
            Some(runtime) => Some(Self::named(
                "runtime",
                "KubernetesRuntimeInstance",
                &runtime.name,
                config_field,
            )),
            // The API fills in the default runtime where the field is optional.
            None if required => Some(Link {
                field: "runtime",
                target: Target::DefaultRuntime,
                config_field,
            }),
            None => None,
        }
    }

    fn ref_link(
        &self,
        field: &'static str,
        kind: &'static str,
        value: &Option<NameRef>,
        config_field: &str,
    ) -> Result<Link, ConfigError> {
        let value = self.required(value, config_field)?;
        Ok(Self::named(
            field,
            kind,
            &value.name,
            self.field(config_field),
        ))
    }

    fn ignore(&mut self, set: bool, field: &str, why: &str) {
        if set {
            self.notes
                .push(format!("{}: ignored ({why})", self.field(field)));
        }
    }

    /// A definition from `def` and an instance owned by it, named alike.
    fn pair(&mut self, mut definition: Part, mut instance: Part) -> (usize, usize) {
        definition.owner = None;
        let d = self.push(definition);
        instance.owner = Some(d);
        instance.links.push(Link {
            field: "definition",
            target: Target::Part(d),
            config_field: String::new(),
        });
        (d, self.push(instance))
    }

    fn workload(&mut self, v: WorkloadValues) -> Result<(), ConfigError> {
        let key = self.file.key;
        let labels = v.labels.clone();
        let definition = |x: &Self| -> Result<Part, ConfigError> {
            let manifests = x
                .inline_or_document(&v.yaml, &v.yaml_document, "YAML", "YAMLDocument")?
                .ok_or_else(|| x.file.missing("YAMLDocument (or YAML)"))?;
            let mut part = x.part("WorkloadDefinition", &v.name, &labels);
            part.spec = spec(&[("yaml_document", Some(Value::String(manifests)))]);
            Ok(part)
        };
        let instance = |x: &Self| -> Part {
            let mut part = x.part("WorkloadInstance", &v.name, &labels);
            part.links
                .extend(x.runtime_link(&v.kubernetes_runtime_instance, false));
            part
        };
        match key {
            "WorkloadDefinition" => {
                let part = definition(self)?;
                self.push(part);
            }
            "WorkloadInstance" => {
                let mut part = instance(self);
                part.links.push(self.ref_link(
                    "definition",
                    "WorkloadDefinition",
                    &v.workload_definition,
                    "WorkloadDefinition",
                )?);
                self.push(part);
            }
            _ => {
                let (root, workload) = self.pair(definition(self)?, instance(self));
                let service = |x: &mut Self,
                               definition: Part,
                               instance_kind: &'static str,
                               extra: Vec<Link>| {
                    let name = definition.name.clone();
                    let mut definition = definition;
                    definition.owner = Some(root);
                    definition.links.extend(extra);
                    let d = x.push(definition);
                    let mut instance = x.part(instance_kind, &name, &labels);
                    instance.owner = Some(d);
                    instance.links = vec![
                        Link {
                            field: "definition",
                            target: Target::Part(d),
                            config_field: String::new(),
                        },
                        Link {
                            field: "workload_instance",
                            target: Target::Part(workload),
                            config_field: String::new(),
                        },
                    ];
                    x.push(instance);
                    d
                };
                if let Some(db) = &v.aws_relational_database {
                    let part =
                        self.database_definition(db, &v.name, &labels, "AwsRelationalDatabase")?;
                    service(self, part, "AwsRelationalDatabaseInstance", vec![]);
                }
                if let Some(bucket) = &v.aws_object_storage_bucket {
                    let part =
                        self.bucket_definition(bucket, &v.name, &labels, "AwsObjectStorageBucket")?;
                    service(self, part, "AwsObjectStorageBucketInstance", vec![]);
                }
                let domain = match &v.domain_name {
                    Some(domain) => {
                        let part = self.domain_definition(domain, &v.name, &labels);
                        Some(service(self, part, "DomainNameInstance", vec![]))
                    }
                    None => None,
                };
                if let Some(gateway) = &v.gateway {
                    let part = self.gateway_definition(gateway, &v.name, &labels);
                    let links = domain
                        .map(|d| Link {
                            field: "domain_name",
                            target: Target::Part(d),
                            config_field: String::new(),
                        })
                        .into_iter()
                        .collect();
                    service(self, part, "GatewayInstance", links);
                }
                if let Some(secret) = &v.secret {
                    let part = self.secret_definition(secret, &v.name, &labels, "Secret");
                    service(self, part, "SecretInstance", vec![]);
                }
            }
        }
        Ok(())
    }

    fn helm(&mut self, v: HelmWorkloadValues) -> Result<(), ConfigError> {
        let key = self.file.key;
        let definition_values = match key {
            "HelmWorkload" => self.inline_or_document(
                &v.definition_values,
                &v.definition_values_document,
                "DefinitionValues",
                "DefinitionValuesDocument",
            )?,
            _ => {
                self.inline_or_document(&v.values, &v.values_document, "Values", "ValuesDocument")?
            }
        };
        let instance_values = match key {
            "HelmWorkload" => self.inline_or_document(
                &v.instance_values,
                &v.instance_values_document,
                "InstanceValues",
                "InstanceValuesDocument",
            )?,
            _ => definition_values.clone(),
        };
        let mut definition = self.part("HelmWorkloadDefinition", &v.name, &v.labels);
        if key != "HelmWorkloadInstance" {
            // A chart from a repository, or an archive file beside the config.
            let (repo, chart, archive) = match &v.chart_archive {
                Some(path) if v.repo.is_none() => {
                    (None, v.chart.clone(), Some(self.archive(path)?))
                }
                _ => (
                    Some(self.required(&v.repo, "Repo")?.clone()),
                    Some(self.required(&v.chart, "Chart")?.clone()),
                    None,
                ),
            };
            let extra = self.inline_or_document(
                &v.additional_resources,
                &v.additional_resources_document,
                "AdditionalResources",
                "AdditionalResourcesDocument",
            )?;
            definition.spec = spec(&[
                ("repo", repo.map(Value::String)),
                ("chart", chart.map(Value::String)),
                ("chart_version", some(&v.chart_version)),
                ("chart_archive", archive.map(Value::String)),
                ("values", definition_values.map(Value::String)),
                ("additional_resources", extra.map(Value::String)),
            ]);
        }
        let mut instance = self.part("HelmWorkloadInstance", &v.name, &v.labels);
        instance.spec = spec(&[
            ("values_overrides", instance_values.map(Value::String)),
            ("release_namespace", some(&v.release_namespace)),
        ]);
        instance
            .links
            .extend(self.runtime_link(&v.kubernetes_runtime_instance, false));
        match key {
            "HelmWorkloadDefinition" => {
                self.push(definition);
            }
            "HelmWorkloadInstance" => {
                instance.links.push(self.ref_link(
                    "definition",
                    "HelmWorkloadDefinition",
                    &v.helm_workload_definition,
                    "HelmWorkloadDefinition",
                )?);
                self.push(instance);
            }
            _ => {
                self.pair(definition, instance);
            }
        }
        Ok(())
    }

    fn runtime_definition_part(&mut self, v: &RuntimeValues) -> Result<Part, ConfigError> {
        let mut part = self.part("KubernetesRuntimeDefinition", &v.name, &v.labels);
        let provider = enum_value(&v.infra_provider).unwrap_or_else(|| json!("existing"));
        part.spec = spec(&[
            ("infra_provider", Some(provider.clone())),
            ("high_availability", some(&v.high_availability)),
            ("node_size", enum_value(&v.node_size)),
            ("node_profile", enum_value(&v.node_profile)),
            ("node_maximum", some(&v.node_maximum)),
        ]);
        if provider == "eks" || v.infra_provider_account_name.is_some() {
            part.links.push(self.account_link(
                &v.infra_provider_account_name,
                self.field("InfraProviderAccountName"),
            ));
        }
        Ok(part)
    }

    fn runtime_instance_part(&mut self, v: &RuntimeValues) -> Result<Part, ConfigError> {
        self.ignore(
            v.threeport_agent_image.is_some(),
            "ThreeportAgentImage",
            "threeport watches clusters without an agent image setting",
        );
        self.ignore(
            v.threeport_control_plane_host.is_some(),
            "ThreeportControlPlaneHost",
            "set by the control plane itself",
        );
        let mut part = self.part("KubernetesRuntimeInstance", &v.name, &v.labels);
        let kubeconfig = match &v.kubeconfig_document {
            Some(path) => Some(self.document("KubeconfigDocument", path)?),
            None => None,
        };
        let connection = (v.api_endpoint.is_some() || kubeconfig.is_some()).then(|| {
            Value::Object(spec(&[
                ("api_endpoint", some(&v.api_endpoint)),
                ("ca_certificate", some(&v.ca_certificate)),
                ("token", some(&v.token)),
                ("kubeconfig", kubeconfig.map(Value::String)),
            ]))
        });
        part.spec = spec(&[
            (
                "location",
                Some(json!(self.required(&v.location, "Location")?)),
            ),
            ("default_runtime", some(&v.default_runtime)),
            ("connection", connection),
            ("support_services", some(&v.support_services)),
        ]);
        Ok(part)
    }

    fn runtime(&mut self, v: RuntimeValues) -> Result<(), ConfigError> {
        match self.file.key {
            "KubernetesRuntimeDefinition" => {
                let part = self.runtime_definition_part(&v)?;
                self.push(part);
            }
            "KubernetesRuntimeInstance" => {
                let mut part = self.runtime_instance_part(&v)?;
                part.links.push(self.ref_link(
                    "definition",
                    "KubernetesRuntimeDefinition",
                    &v.kubernetes_runtime_definition,
                    "KubernetesRuntimeDefinition",
                )?);
                self.push(part);
            }
            _ => {
                let definition = self.runtime_definition_part(&v)?;
                let instance = self.runtime_instance_part(&v)?;
                self.pair(definition, instance);
            }
        }
        Ok(())
    }

    fn account(&mut self, v: AccountValues) -> Result<(), ConfigError> {
        let dir = if v.local_config.is_some() || v.local_credentials.is_some() {
            let field = if v.local_config.is_some() {
                "LocalConfig"
            } else {
                "LocalCredentials"
            };
            self.file.dir(field)?
        } else {
            PathBuf::new()
        };
        let local = crate::config::aws_files::Profile::read(
            &dir,
            v.local_config.as_deref(),
            v.local_credentials.as_deref(),
            v.local_profile.as_deref(),
        )
        .map_err(|e| ConfigError::new(format!("{}: {e}", self.file.path.display())))?;
        let region = v
            .default_region
            .clone()
            .or_else(|| local.as_ref().and_then(|p| p.region.clone()))
            .ok_or_else(|| {
                self.file
                    .missing("DefaultRegion (or a LocalProfile with a region)")
            })?;
        let role_arn = v
            .role_arn
            .clone()
            .or_else(|| local.as_ref().and_then(|p| p.role_arn.clone()));
        let external_id = v
            .external_id
            .clone()
            .or_else(|| local.as_ref().and_then(|p| p.external_id.clone()));
        let keys = match (&v.access_key_id, &v.secret_access_key) {
            (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
            (None, None) => local
                .as_ref()
                .and_then(|p| p.access_key_id.clone().zip(p.secret_access_key.clone())),
            _ => {
                return Err(ConfigError::new(format!(
                    "{}: {} and {} go together",
                    self.file.path.display(),
                    self.field("AccessKeyID"),
                    self.field("SecretAccessKey")
                )));
            }
        };
        let credentials = match (role_arn, keys) {
            (Some(role_arn), _) => {
                json!({"role": {"role_arn": role_arn, "external_id": external_id}})
            }
            (None, Some((id, secret))) => {
                json!({"access_keys": {"access_key_id": id, "secret_access_key": secret}})
            }
            (None, None) => {
                return Err(ConfigError::new(format!(
                    "{}: {} needs credentials: AccessKeyID and SecretAccessKey, a RoleArn, or \
                     LocalConfig/LocalCredentials/LocalProfile naming a profile that has them",
                    self.file.path.display(),
                    self.file.key
                )));
            }
        };
        let mut part = self.part("AwsAccount", &v.name, &v.labels);
        part.spec = spec(&[
            ("account_id", Some(json!(v.account_id))),
            ("default_region", Some(json!(region))),
            ("default_account", some(&v.default_account)),
            ("credentials", Some(credentials)),
        ]);
        self.push(part);
        Ok(())
    }

    fn eks_definition_part(&self, v: &EksValues) -> Part {
        let mut part = self.part("AwsEksKubernetesRuntimeDefinition", &v.name, &v.labels);
        part.spec = spec(&[
            ("zone_count", some(&v.zone_count)),
            (
                "default_node_group_instance_type",
                some(&v.default_node_group_instance_type),
            ),
            (
                "default_node_group_initial_size",
                some(&v.default_node_group_initial_size),
            ),
            (
                "default_node_group_minimum_size",
                some(&v.default_node_group_minimum_size),
            ),
            (
                "default_node_group_maximum_size",
                some(&v.default_node_group_maximum_size),
            ),
        ]);
        part.links
            .push(self.account_link(&v.aws_account_name, self.field("AwsAccountName")));
        part
    }

    fn eks(&mut self, v: EksValues) -> Result<(), ConfigError> {
        match self.file.key {
            "AwsEksKubernetesRuntimeDefinition" => {
                let part = self.eks_definition_part(&v);
                self.push(part);
            }
            "AwsEksKubernetesRuntimeInstance" => {
                let region = match (&v.region, &v.location) {
                    (Some(region), _) => region.clone(),
                    (None, Some(location)) => crate::model::aws_region_of(location)
                        .ok_or_else(|| {
                            ConfigError::new(format!(
                                "{}: {}: no AWS region is known for {location:?}: give Region",
                                self.file.path.display(),
                                self.field("Location")
                            ))
                        })?
                        .to_owned(),
                    (None, None) => return Err(self.file.missing("Location (or Region)")),
                };
                let mut part = self.part("AwsEksKubernetesRuntimeInstance", &v.name, &v.labels);
                part.spec = spec(&[("region", Some(json!(region)))]);
                let definition = self
                    .required(
                        &v.aws_eks_kubernetes_runtime_definition_name,
                        "AwsEksKubernetesRuntimeDefinitionName",
                    )?
                    .clone();
                part.links.push(Self::named(
                    "definition",
                    "AwsEksKubernetesRuntimeDefinition",
                    &definition,
                    self.field("AwsEksKubernetesRuntimeDefinitionName"),
                ));
                part.links.push(self.ref_link(
                    "runtime",
                    "KubernetesRuntimeInstance",
                    &v.kubernetes_runtime_instance,
                    "KubernetesRuntimeInstance",
                )?);
                self.push(part);
            }
            _ => {
                // The runtime definition is the root; the runtime controller provisions the
                // cluster from the EKS definition of the same name, made here with the
                // config's node groups.
                let mut runtime_definition =
                    self.part("KubernetesRuntimeDefinition", &v.name, &v.labels);
                runtime_definition.spec = spec(&[("infra_provider", Some(json!("eks")))]);
                runtime_definition
                    .links
                    .push(self.account_link(&v.aws_account_name, self.field("AwsAccountName")));
                let mut instance = self.part("KubernetesRuntimeInstance", &v.name, &v.labels);
                instance.spec = spec(&[
                    (
                        "location",
                        Some(json!(self.required(&v.location, "Location")?)),
                    ),
                    ("default_runtime", some(&v.default_runtime)),
                ]);
                let (root, _) = self.pair(runtime_definition, instance);
                let mut eks = self.eks_definition_part(&v);
                eks.owner = Some(root);
                self.push(eks);
            }
        }
        Ok(())
    }

    fn database_definition(
        &self,
        v: &DatabaseValues,
        default_name: &str,
        labels: &Option<Labels>,
        at: &str,
    ) -> Result<Part, ConfigError> {
        let name = v.name.clone().unwrap_or_else(|| default_name.to_owned());
        let mut part = self.part("AwsRelationalDatabaseDefinition", &name, labels);
        let required = |value: &Option<Value>, field: &str| {
            value.clone().ok_or_else(|| {
                ConfigError::new(format!(
                    "{}: {}.{field} is required",
                    self.file.path.display(),
                    qualified(self.file.key, at)
                ))
            })
        };
        part.spec = spec(&[
            ("engine", Some(required(&enum_value(&v.engine), "Engine")?)),
            (
                "engine_version",
                Some(required(&some(&v.engine_version), "EngineVersion")?),
            ),
            (
                "database_name",
                Some(required(&some(&v.database_name), "DatabaseName")?),
            ),
            (
                "database_port",
                Some(required(&some(&v.database_port), "DatabasePort")?),
            ),
            ("backup_days", some(&v.backup_days)),
            ("machine_size", enum_value(&v.machine_size)),
            (
                "storage_gb",
                Some(required(&some(&v.storage_gb), "StorageGb")?),
            ),
            (
                "workload_secret_name",
                Some(required(
                    &some(&v.workload_secret_name),
                    "WorkloadSecretName",
                )?),
            ),
        ]);
        part.links.push(self.account_link(
            &v.aws_account_name,
            format!("{}.AwsAccountName", qualified(self.file.key, at)),
        ));
        Ok(part)
    }

    fn database(&mut self, v: DatabaseValues) -> Result<(), ConfigError> {
        let name = self.required(&v.name, "Name")?.clone();
        self.service_family(
            "AwsRelationalDatabaseInstance",
            &name,
            &v.labels,
            &v.workload_instance,
            &v.aws_relational_database_definition,
            "AwsRelationalDatabaseDefinition",
            |x| x.database_definition(&v, &name, &v.labels, x.file.key),
        )
    }

    fn bucket_definition(
        &self,
        v: &BucketValues,
        default_name: &str,
        labels: &Option<Labels>,
        at: &str,
    ) -> Result<Part, ConfigError> {
        let name = v.name.clone().unwrap_or_else(|| default_name.to_owned());
        let mut part = self.part("AwsObjectStorageBucketDefinition", &name, labels);
        part.spec = spec(&[
            ("public_read_access", some(&v.public_read_access)),
            (
                "workload_service_account_name",
                some(&v.workload_service_account_name),
            ),
            ("workload_bucket_env_var", some(&v.workload_bucket_env_var)),
        ]);
        part.links.push(self.account_link(
            &v.aws_account_name,
            format!("{}.AwsAccountName", qualified(self.file.key, at)),
        ));
        Ok(part)
    }

    fn bucket(&mut self, v: BucketValues) -> Result<(), ConfigError> {
        let name = self.required(&v.name, "Name")?.clone();
        self.service_family(
            "AwsObjectStorageBucketInstance",
            &name,
            &v.labels,
            &v.workload_instance,
            &v.aws_object_storage_bucket_definition,
            "AwsObjectStorageBucketDefinition",
            |x| x.bucket_definition(&v, &name, &v.labels, x.file.key),
        )
    }

    fn gateway_definition(
        &self,
        v: &GatewayValues,
        default_name: &str,
        labels: &Option<Labels>,
    ) -> Part {
        let name = v.name.clone().unwrap_or_else(|| default_name.to_owned());
        let mut part = self.part("GatewayDefinition", &name, labels);
        let http: Option<Value> = v.http_ports.as_ref().map(|ports| {
            ports
                .iter()
                .map(|p| {
                    Value::Object(spec(&[
                        ("port", Some(json!(p.port))),
                        ("path", some(&p.path)),
                        ("tls_enabled", some(&p.tls_enabled)),
                        ("https_redirect", some(&p.https_redirect)),
                        ("service_port", some(&p.service_port)),
                    ]))
                })
                .collect()
        });
        let tcp: Option<Value> = v.tcp_ports.as_ref().map(|ports| {
            ports
                .iter()
                .map(|p| {
                    Value::Object(spec(&[
                        ("port", Some(json!(p.port))),
                        ("tls_enabled", some(&p.tls_enabled)),
                        ("service_port", some(&p.service_port)),
                    ]))
                })
                .collect()
        });
        part.spec = spec(&[
            ("http_ports", http),
            ("tcp_ports", tcp),
            ("service_name", some(&v.service_name)),
            ("subdomain", some(&v.sub_domain)),
            ("certificate_issuer", enum_value(&v.certificate_issuer)),
            ("gateway_class", some(&v.gateway_class)),
        ]);
        part
    }

    fn gateway(&mut self, v: GatewayValues) -> Result<(), ConfigError> {
        let name = self.required(&v.name, "Name")?.clone();
        let domain = v.domain_name_definition.as_ref().map(|d| {
            Self::named(
                "domain_name",
                "DomainNameDefinition",
                &d.name,
                self.field("DomainNameDefinition"),
            )
        });
        self.ignore_runtime(&v.kubernetes_runtime_instance);
        self.service_family(
            "GatewayInstance",
            &name,
            &v.labels,
            &v.workload_instance,
            &v.gateway_definition,
            "GatewayDefinition",
            |x| {
                let mut part = x.gateway_definition(&v, &name, &v.labels);
                part.links.extend(domain.clone());
                Ok(part)
            },
        )
    }

    fn domain_definition(
        &self,
        v: &DomainNameValues,
        default_name: &str,
        labels: &Option<Labels>,
    ) -> Part {
        let name = v.name.clone().unwrap_or_else(|| default_name.to_owned());
        let mut part = self.part("DomainNameDefinition", &name, labels);
        part.spec = spec(&[
            ("domain", some(&v.domain)),
            ("zone", enum_value(&v.zone)),
            ("admin_email", some(&v.admin_email)),
            ("create_zone", some(&v.create_zone)),
        ]);
        // No account named: the controller uses the default one.
        if let Some(account) = &v.aws_account_name {
            part.links.push(Self::named(
                "aws_account",
                "AwsAccount",
                account,
                format!("{}.AwsAccountName", self.field("DomainName")),
            ));
        }
        part
    }

    fn domain_name(&mut self, v: DomainNameValues) -> Result<(), ConfigError> {
        let name = self.required(&v.name, "Name")?.clone();
        self.ignore_runtime(&v.kubernetes_runtime_instance);
        self.service_family(
            "DomainNameInstance",
            &name,
            &v.labels,
            &v.workload_instance,
            &v.domain_name_definition,
            "DomainNameDefinition",
            |x| Ok(x.domain_definition(&v, &name, &v.labels)),
        )
    }

    fn secret_definition(
        &self,
        v: &SecretValues,
        default_name: &str,
        labels: &Option<Labels>,
        at: &str,
    ) -> Part {
        let name = v.name.clone().unwrap_or_else(|| default_name.to_owned());
        let mut part = self.part("SecretDefinition", &name, labels);
        part.spec = spec(&[("data", some(&v.data))]);
        part.links.push(self.account_link(
            &v.aws_account_name,
            format!("{}.AwsAccountName", qualified(self.file.key, at)),
        ));
        part
    }

    fn secret(&mut self, v: SecretValues) -> Result<(), ConfigError> {
        let name = self.required(&v.name, "Name")?.clone();
        self.ignore_runtime(&v.kubernetes_runtime_instance);
        if self.file.key == "SecretDefinition" {
            let part = self.secret_definition(&v, &name, &v.labels, self.file.key);
            self.push(part);
            return Ok(());
        }
        let consumer = match (&v.workload_instance, &v.helm_workload_instance) {
            (Some(w), None) => Self::named(
                "workload_instance",
                "WorkloadInstance",
                &w.name,
                self.field("WorkloadInstance"),
            ),
            (None, Some(h)) => Self::named(
                "helm_workload_instance",
                "HelmWorkloadInstance",
                &h.name,
                self.field("HelmWorkloadInstance"),
            ),
            _ => {
                return Err(ConfigError::new(format!(
                    "{}: {} needs exactly one of WorkloadInstance and HelmWorkloadInstance",
                    self.file.path.display(),
                    self.file.key
                )));
            }
        };
        let mut instance = self.part("SecretInstance", &name, &v.labels);
        instance.links.push(consumer);
        if self.file.key == "SecretInstance" {
            instance.links.push(self.ref_link(
                "definition",
                "SecretDefinition",
                &v.secret_definition,
                "SecretDefinition",
            )?);
            self.push(instance);
        } else {
            let definition = self.secret_definition(&v, &name, &v.labels, self.file.key);
            self.pair(definition, instance);
        }
        Ok(())
    }

    fn ignore_runtime(&mut self, runtime: &Option<NameRef>) {
        self.ignore(
            runtime.is_some(),
            "KubernetesRuntimeInstance",
            "it runs where its workload instance runs",
        );
    }

    /// A service definition/instance family: the definition alone, the instance (of a named
    /// definition, serving a named workload instance), or both.
    #[allow(clippy::too_many_arguments)]
    fn service_family(
        &mut self,
        instance_kind: &'static str,
        name: &str,
        labels: &Option<Labels>,
        workload: &Option<NameRef>,
        definition_ref: &Option<NameRef>,
        definition_field: &str,
        definition: impl FnOnce(&Self) -> Result<Part, ConfigError>,
    ) -> Result<(), ConfigError> {
        let key = self.file.key;
        if key.ends_with("Definition") {
            let part = definition(self)?;
            self.push(part);
            return Ok(());
        }
        let mut instance = self.part(instance_kind, name, labels);
        instance.links.push(self.ref_link(
            "workload_instance",
            "WorkloadInstance",
            workload,
            "WorkloadInstance",
        )?);
        if key.ends_with("Instance") {
            let definition_kind = keys()
                .find(|k| *k == definition_field)
                .expect("a definition kind");
            instance.links.push(self.ref_link(
                "definition",
                definition_kind,
                definition_ref,
                definition_field,
            )?);
            self.push(instance);
        } else {
            let part = definition(self)?;
            self.pair(part, instance);
        }
        Ok(())
    }

    fn terraform(&mut self, v: TerraformValues) -> Result<(), ConfigError> {
        let account = v
            .aws_account_name
            .clone()
            .or_else(|| v.aws_account.as_ref().map(|a| a.name.clone()));
        let mut definition = self.part("TerraformDefinition", &v.name, &v.labels);
        if self.file.key != "TerraformInstance" {
            let dir = self.required(&v.config_dir, "ConfigDir")?;
            definition.spec = spec(&[
                (
                    "configuration_files",
                    Some(json!(self.terraform_files(dir)?)),
                ),
                (
                    "approval",
                    some(&v.approval.as_ref().map(|a| a.to_lowercase())),
                ),
            ]);
            definition
                .links
                .push(self.account_link(&account, self.field("AwsAccountName")));
        }
        let mut instance = self.part("TerraformInstance", &v.name, &v.labels);
        if let Some(path) = &v.vars_document {
            let text = self.document("VarsDocument", path)?;
            let vars =
                crate::config::tfvars::parse(&text, path.ends_with(".json")).map_err(|e| {
                    ConfigError::new(format!(
                        "{}: {}: {e}",
                        self.file.path.display(),
                        self.field("VarsDocument")
                    ))
                })?;
            instance.spec = spec(&[("variables", Some(Value::Object(vars)))]);
        }
        match self.file.key {
            "TerraformDefinition" => {
                self.push(definition);
            }
            "TerraformInstance" => {
                if let Some(account) = &v.aws_account {
                    // Its own account instead of the definition's.
                    instance.links.push(
                        self.account_link(&Some(account.name.clone()), self.field("AwsAccount")),
                    );
                }
                instance.links.push(self.ref_link(
                    "definition",
                    "TerraformDefinition",
                    &v.terraform_definition,
                    "TerraformDefinition",
                )?);
                self.push(instance);
            }
            _ => {
                self.pair(definition, instance);
            }
        }
        Ok(())
    }

    /// The `*.tf` and `*.tf.json` files of `ConfigDir`, name → content.
    fn terraform_files(&self, dir: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        let full = resolve_path(&self.file.dir("ConfigDir")?, dir);
        let fail = |e: std::io::Error| {
            ConfigError::new(format!(
                "{}: {}: cannot read {}: {e}",
                self.file.path.display(),
                self.field("ConfigDir"),
                full.display()
            ))
        };
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&full).map_err(fail)? {
            let entry = entry.map_err(fail)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tf") || name.ends_with(".tf.json") {
                files.insert(name, std::fs::read_to_string(entry.path()).map_err(fail)?);
            }
        }
        if files.is_empty() {
            return Err(ConfigError::new(format!(
                "{}: {}: {} holds no .tf files",
                self.file.path.display(),
                self.field("ConfigDir"),
                full.display()
            )));
        }
        Ok(files)
    }

    fn observability(&mut self, v: ObservabilityValues) -> Result<(), ConfigError> {
        let mut definition = self.part("ObservabilityStackDefinition", &v.name, &v.labels);
        let metrics = self.inline_or_document(
            &v.kube_prometheus_stack_helm_values,
            &v.kube_prometheus_stack_helm_values_document,
            "KubePrometheusStackHelmValues",
            "KubePrometheusStackHelmValuesDocument",
        )?;
        let logging = self.inline_or_document(
            &v.loki_helm_values,
            &v.loki_helm_values_document,
            "LokiHelmValues",
            "LokiHelmValuesDocument",
        )?;
        let promtail = self.inline_or_document(
            &v.promtail_helm_values,
            &v.promtail_helm_values_document,
            "PromtailHelmValues",
            "PromtailHelmValuesDocument",
        )?;
        let dashboards = self.inline_or_document(
            &v.grafana_helm_values,
            &v.grafana_helm_values_document,
            "GrafanaHelmValues",
            "GrafanaHelmValuesDocument",
        )?;
        let text = |values: &Option<String>| values.clone().map(Value::String);
        if self.file.key != "ObservabilityStackInstance" {
            let component = |enabled: bool, values: Option<String>| {
                Value::Object(spec(&[
                    ("enabled", Some(json!(enabled))),
                    ("values", values.map(Value::String)),
                ]))
            };
            // Threeport always installed Grafana; metrics and logging were opt-in.
            definition.spec = spec(&[
                (
                    "metrics",
                    Some(component(
                        v.metrics_enabled.unwrap_or(false),
                        metrics.clone(),
                    )),
                ),
                (
                    "logging",
                    Some(component(
                        v.logging_enabled.unwrap_or(false),
                        logging.clone(),
                    )),
                ),
                ("dashboards", Some(component(true, dashboards.clone()))),
                ("promtail_values", text(&promtail)),
            ]);
        }
        let mut instance = self.part("ObservabilityStackInstance", &v.name, &v.labels);
        instance
            .links
            .extend(self.runtime_link(&v.kubernetes_runtime_instance, true));
        if self.file.key == "ObservabilityStackInstance" {
            // An instance's values override its definition's.
            instance.spec = spec(&[(
                "overrides",
                Some(Value::Object(spec(&[
                    ("metrics", text(&metrics)),
                    ("logging", text(&logging)),
                    ("promtail", text(&promtail)),
                    ("dashboards", text(&dashboards)),
                ]))),
            )]);
        }
        match self.file.key {
            "ObservabilityStackDefinition" => {
                self.push(definition);
            }
            "ObservabilityStackInstance" => {
                instance.links.push(self.ref_link(
                    "definition",
                    "ObservabilityStackDefinition",
                    &v.observability_stack_definition,
                    "ObservabilityStackDefinition",
                )?);
                self.push(instance);
            }
            _ => {
                self.pair(definition, instance);
            }
        }
        Ok(())
    }

    fn control_plane(&mut self, v: ControlPlaneValues) -> Result<(), ConfigError> {
        self.ignore(
            v.onboard_parent.is_some(),
            "OnboardParent",
            "control planes are not onboarded to their parent yet",
        );
        let mut definition = self.part("ControlPlaneDefinition", &v.name, &v.labels);
        definition.spec = spec(&[
            ("auth_enabled", some(&v.auth_enabled)),
            ("controllers", some(&v.controllers)),
            ("image", some(&v.image)),
            ("controller_images", some(&v.controller_images)),
        ]);
        let mut instance = self.part("ControlPlaneInstance", &v.name, &v.labels);
        instance.spec = spec(&[
            ("namespace", some(&v.namespace)),
            ("genesis", some(&v.genesis)),
            ("secret", some(&v.secret)),
            ("tls_secret", some(&v.tls_secret)),
            ("tls_issuer", some(&v.tls_issuer)),
        ]);
        instance
            .links
            .extend(self.runtime_link(&v.kubernetes_runtime_instance, true));
        match self.file.key {
            "ControlPlaneDefinition" => {
                self.push(definition);
            }
            "ControlPlaneInstance" => {
                instance.links.push(self.ref_link(
                    "definition",
                    "ControlPlaneDefinition",
                    &v.control_plane_definition,
                    "ControlPlaneDefinition",
                )?);
                self.push(instance);
            }
            _ => {
                self.pair(definition, instance);
            }
        }
        Ok(())
    }
}

/// `Workload.AwsRelationalDatabase` for a nested part, `AwsRelationalDatabase` for a top one.
fn qualified(key: &str, at: &str) -> String {
    if at == key {
        key.to_owned()
    } else {
        format!("{key}.{at}")
    }
}

/// `path` relative to `dir` unless absolute; `~/` is the home directory.
pub fn resolve_path(dir: &Path, path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = dirs::home_dir()
    {
        return home.join(rest);
    }
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        dir.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// What expanding the config at `path` fails with.
    fn expand_error(path: &Path) -> String {
        ConfigFile::read(path)
            .unwrap()
            .expand()
            .err()
            .unwrap()
            .to_string()
    }

    fn temp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tptctl-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_workload_expands_to_owned_parts_with_its_document_read_relative_to_the_file() {
        let dir = temp();
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        write(
            &dir.join("manifests"),
            "web.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        );
        let path = write(
            &dir,
            "workload.yaml",
            "Workload:\n  Name: web\n  YAMLDocument: manifests/web.yaml\n  KubernetesRuntimeInstance:\n    Name: local\n  AwsRelationalDatabase:\n    Name: web-db\n    Engine: mariadb\n    EngineVersion: \"10.11\"\n    DatabaseName: web\n    DatabasePort: 3306\n    MachineSize: XSmall\n    StorageGb: 20\n    WorkloadSecretName: web-db-conn\n",
        );
        let expansion = ConfigFile::read(&path).unwrap().expand().unwrap();
        let kinds: Vec<&str> = expansion.parts.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [
                "WorkloadDefinition",
                "WorkloadInstance",
                "AwsRelationalDatabaseDefinition",
                "AwsRelationalDatabaseInstance"
            ]
        );
        assert!(
            expansion.parts[0].spec["yaml_document"]
                .as_str()
                .unwrap()
                .contains("ConfigMap")
        );
        assert_eq!(expansion.parts[1].owner, Some(0));
        assert_eq!(expansion.parts[2].owner, Some(0));
        assert_eq!(expansion.parts[3].owner, Some(2));
        assert_eq!(expansion.parts[2].name, "web-db");
        assert_eq!(expansion.parts[2].spec["machine_size"], "x_small");
        assert_eq!(expansion.parts[2].links[0].target, Target::DefaultAccount);
        assert_eq!(
            expansion.parts[1].links[0].target,
            Target::Named {
                kind: "KubernetesRuntimeInstance",
                name: "local".into()
            }
        );
    }

    #[test]
    fn a_helm_workload_takes_its_chart_archive_values_and_extras_from_files_beside_it() {
        let dir = temp();
        std::fs::write(dir.join("webapp-1.0.0.tgz"), [0x1f, 0x8b, 1, 2]).unwrap();
        write(&dir, "values.yaml", "replicaCount: 2\n");
        write(
            &dir,
            "extra.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n",
        );
        let path = write(
            &dir,
            "helm.yaml",
            "HelmWorkload:\n  Name: shop\n  ChartArchive: webapp-1.0.0.tgz\n  DefinitionValuesDocument: values.yaml\n  AdditionalResourcesDocument: extra.yaml\n  InstanceValues: |\n    image: {tag: \"1.26\"}\n  ReleaseNamespace: shop\n",
        );
        let expansion = ConfigFile::read(&path).unwrap().expand().unwrap();
        let definition = &expansion.parts[0].spec;
        assert_eq!(definition["chart_archive"], "H4sBAg==");
        assert!(definition.get("repo").is_none_or(Value::is_null));
        assert_eq!(definition["values"], "replicaCount: 2\n");
        assert!(
            definition["additional_resources"]
                .as_str()
                .unwrap()
                .contains("extra")
        );
        let instance = &expansion.parts[1].spec;
        assert_eq!(instance["release_namespace"], "shop");
        assert!(
            instance["values_overrides"]
                .as_str()
                .unwrap()
                .contains("1.26")
        );

        let path = write(
            &dir,
            "missing.yaml",
            "HelmWorkloadDefinition:\n  Name: x\n  ChartArchive: nowhere.tgz\n",
        );
        let err = expand_error(&path);
        assert!(
            err.contains("HelmWorkloadDefinition.ChartArchive") && err.contains("nowhere.tgz"),
            "{err}"
        );
    }

    #[test]
    fn misspelled_fields_are_named_with_their_line() {
        let dir = temp();
        let path = write(
            &dir,
            "db.yaml",
            "AwsRelationalDatabase:\n  Name: db\n  StorageGB: 20\n",
        );
        let err = ConfigFile::read(&path).err().unwrap().to_string();
        assert!(
            err.contains("db.yaml:3:") && err.contains("`StorageGB`"),
            "{err}"
        );

        // A field of the family that this key does not take.
        let path = write(
            &dir,
            "def.yaml",
            "AwsRelationalDatabaseDefinition:\n  Name: db\n  WorkloadInstance: {Name: w}\n",
        );
        let err = ConfigFile::read(&path).err().unwrap().to_string();
        assert!(
            err.contains("def.yaml:3:") && err.contains("`WorkloadInstance`"),
            "{err}"
        );

        // Inside a nested part, and serde's own check deeper down.
        let path = write(
            &dir,
            "w.yaml",
            "Workload:\n  Name: w\n  YAMLDocument: x.yaml\n  Gateway:\n    ServiceName: web\n    HttpPorts:\n      - Port: 80\n        TLSEnabeld: true\n",
        );
        let err = expand_error(&path);
        assert!(
            err.contains("w.yaml:8:") && err.contains("TLSEnabeld"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_document_names_the_field_and_the_file() {
        let dir = temp();
        let path = write(
            &dir,
            "w.yaml",
            "WorkloadDefinition:\n  Name: w\n  YAMLDocument: nowhere.yaml\n",
        );
        let err = expand_error(&path);
        assert!(
            err.contains("WorkloadDefinition.YAMLDocument") && err.contains("nowhere.yaml"),
            "{err}"
        );
    }

    #[test]
    fn every_key_has_a_word_and_a_root() {
        for key in keys() {
            assert_eq!(key_of_word(&kebab_case(key)), Some(key));
            assert!(!fields_of(key).is_empty());
            assert!(keys().any(|k| k == root_kind(key)), "{key}");
        }
        assert_eq!(root_kind("Workload"), "WorkloadDefinition");
        assert_eq!(instance_kind("Workload"), "WorkloadInstance");
        assert_eq!(
            root_kind("AwsEksKubernetesRuntime"),
            "KubernetesRuntimeDefinition"
        );
        assert!(!is_abstraction("AwsAccount"));
    }
}
