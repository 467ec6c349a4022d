//! AWS: accounts, EKS runtimes, RDS databases, S3 buckets.

use serde::{Deserialize, Serialize};
use threeport_core::object::Reference;
use threeport_core::{ApiObject, ObjectId, ValidationError};
use utoipa::ToSchema;

use super::{ConnectionData, WorkloadInstance, dns_label, reference, require};

/// An AWS region name (`us-east-1`, `us-gov-west-1`).
fn aws_region(field: &str, value: &str) -> Result<(), ValidationError> {
    let parts: Vec<&str> = value.split('-').collect();
    let ok = (3..=4).contains(&parts.len())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok();
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("{value:?} is not an AWS region"),
        ))
    }
}

/// How threeport acts in an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AwsCredentials {
    /// Assume a role (the recommended way).
    Role {
        /// The role to assume.
        role_arn: String,
        /// External id the role's trust policy requires.
        #[serde(default)]
        external_id: Option<String>,
    },
    /// Long-lived access keys.
    AccessKeys {
        /// The access key id (not secret).
        access_key_id: String,
        /// The secret access key: sent in plain text, stored encrypted (`sealed:v1:…`),
        /// readable only by the controllers that hold the server's key.
        secret_access_key: String,
    },
}

/// An AWS account threeport manages resources in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsAccount {
    /// The 12-digit account id.
    pub account_id: String,
    /// Region used when an object names none.
    pub default_region: String,
    /// The account used when an object names none.
    #[serde(default)]
    pub default_account: bool,
    /// How to authenticate.
    pub credentials: AwsCredentials,
}

impl ApiObject for AwsAccount {
    const KIND: &'static str = "AwsAccount";
    const SEALED_FIELDS: &'static [&'static str] = &["credentials.access_keys.secret_access_key"];
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValidationError::new("account_id", "must be 12 digits"));
        }
        aws_region("default_region", &self.default_region)?;
        match &self.credentials {
            AwsCredentials::Role { role_arn, .. } if !role_arn.starts_with("arn:aws") => Err(
                ValidationError::new("credentials.role.role_arn", "must be an IAM role ARN"),
            ),
            AwsCredentials::AccessKeys {
                access_key_id,
                secret_access_key,
            } => {
                require("credentials.access_keys.access_key_id", access_key_id)?;
                require(
                    "credentials.access_keys.secret_access_key",
                    secret_access_key,
                )
            }
            AwsCredentials::Role { .. } => Ok(()),
        }
    }
}

fn default_zone_count() -> u32 {
    2
}
fn default_instance_type() -> String {
    "t3.medium".to_owned()
}
fn default_initial_size() -> u32 {
    2
}
fn default_minimum_size() -> u32 {
    2
}
fn default_maximum_size() -> u32 {
    6
}

/// An EKS cluster shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsEksKubernetesRuntimeDefinition {
    /// The account it is created in.
    #[schema(value_type = String, format = Uuid)]
    pub aws_account: ObjectId,
    /// Availability zones to spread over.
    #[serde(default = "default_zone_count")]
    pub zone_count: u32,
    /// Instance type of the default node group.
    #[serde(default = "default_instance_type")]
    pub default_node_group_instance_type: String,
    /// Nodes the default node group starts with.
    #[serde(default = "default_initial_size")]
    pub default_node_group_initial_size: u32,
    /// Fewest nodes of the default node group.
    #[serde(default = "default_minimum_size")]
    pub default_node_group_minimum_size: u32,
    /// Most nodes of the default node group.
    #[serde(default = "default_maximum_size")]
    pub default_node_group_maximum_size: u32,
}

impl ApiObject for AwsEksKubernetesRuntimeDefinition {
    const KIND: &'static str = "AwsEksKubernetesRuntimeDefinition";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        if !(1..=6).contains(&self.zone_count) {
            return Err(ValidationError::new("zone_count", "must be 1 to 6"));
        }
        let (min, initial, max) = (
            self.default_node_group_minimum_size,
            self.default_node_group_initial_size,
            self.default_node_group_maximum_size,
        );
        if !(min <= initial && initial <= max && max > 0) {
            return Err(ValidationError::new(
                "default_node_group_initial_size",
                format!(
                    "need minimum ≤ initial ≤ maximum, maximum > 0 (got {min}, {initial}, {max})"
                ),
            ));
        }
        require(
            "default_node_group_instance_type",
            &self.default_node_group_instance_type,
        )
    }
    fn references(&self) -> Vec<Reference> {
        vec![reference::<AwsAccount>("aws_account", self.aws_account)]
    }
}

/// An EKS cluster: the cloud side of a Kubernetes runtime instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsEksKubernetesRuntimeInstance {
    /// Its shape.
    #[schema(value_type = String, format = Uuid)]
    pub definition: ObjectId,
    /// The runtime it provides.
    #[schema(value_type = String, format = Uuid)]
    pub runtime: ObjectId,
    /// AWS region.
    pub region: String,
}

/// What the AWS controller created for an EKS runtime (its inventory), in creation order;
/// teardown goes in reverse.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct EksInstanceStatus {
    /// Value of the `threeport:owner` tag on every EC2 piece of its network.
    pub network_owner: Option<String>,
    /// VPC id.
    pub vpc_id: Option<String>,
    /// Internet gateway id.
    pub internet_gateway_id: Option<String>,
    /// Route table id.
    pub route_table_id: Option<String>,
    /// Subnet ids, one per zone.
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    /// IAM role of the control plane.
    pub cluster_role: Option<String>,
    /// IAM role of the nodes.
    pub node_role: Option<String>,
    /// EKS cluster name.
    pub cluster_name: Option<String>,
    /// When the cluster creation was requested (RFC 3339); a cluster not seen long after it
    /// means the request was lost, and it is made again.
    pub cluster_creation_acknowledged: Option<String>,
    /// Node group name.
    pub node_group_name: Option<String>,
    /// When the node group creation was requested (RFC 3339).
    pub node_group_creation_acknowledged: Option<String>,
    /// The cluster's OIDC issuer, registered as an IAM OIDC provider (for workload roles).
    pub oidc_issuer: Option<String>,
    /// ARN of that IAM OIDC provider.
    pub oidc_provider_arn: Option<String>,
    /// The service account threeport uses in the cluster (its token is in `connection`,
    /// sealed).
    pub service_account: Option<String>,
    /// How to reach the cluster, once it serves (token sealed): its runtime, which owns and
    /// follows this object, takes it into its own status.
    #[serde(default)]
    pub connection: Option<ConnectionData>,
}

impl ApiObject for AwsEksKubernetesRuntimeInstance {
    const KIND: &'static str = "AwsEksKubernetesRuntimeInstance";
    type Status = EksInstanceStatus;
    fn validate(&self) -> Result<(), ValidationError> {
        aws_region("region", &self.region)
    }
    /// The runtime is the owner, not a dependency: the runtime controller creates this object
    /// and deletes it when the runtime goes, so it must not block that deletion.
    fn references(&self) -> Vec<Reference> {
        vec![reference::<AwsEksKubernetesRuntimeDefinition>(
            "definition",
            self.definition,
        )]
    }
}

/// The AWS region of a Threeport location (`NorthAmerica:NewYork` → `us-east-1`), if known.
pub fn aws_region_of(location: &str) -> Option<&'static str> {
    const REGIONS: &[(&str, &str)] = &[
        ("NorthAmerica:NewYork", "us-east-1"),
        ("NorthAmerica:Virginia", "us-east-1"),
        ("NorthAmerica:Ohio", "us-east-2"),
        ("NorthAmerica:California", "us-west-1"),
        ("NorthAmerica:Oregon", "us-west-2"),
        ("NorthAmerica:Montreal", "ca-central-1"),
        ("SouthAmerica:SaoPaulo", "sa-east-1"),
        ("Europe:Ireland", "eu-west-1"),
        ("Europe:London", "eu-west-2"),
        ("Europe:Paris", "eu-west-3"),
        ("Europe:Frankfurt", "eu-central-1"),
        ("Europe:Stockholm", "eu-north-1"),
        ("Asia:Mumbai", "ap-south-1"),
        ("Asia:Singapore", "ap-southeast-1"),
        ("Asia:Seoul", "ap-northeast-2"),
        ("Asia:Tokyo", "ap-northeast-1"),
        ("Oceania:Sydney", "ap-southeast-2"),
    ];
    REGIONS
        .iter()
        .find(|(name, _)| *name == location)
        .map(|(_, region)| *region)
}

/// Database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseEngine {
    /// MySQL.
    Mysql,
    /// PostgreSQL.
    Postgres,
    /// MariaDB.
    Mariadb,
}

/// Database machine size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MachineSize {
    /// 2 vCPU burstable.
    XSmall,
    /// 2 vCPU.
    #[default]
    Small,
    /// 4 vCPU.
    Medium,
    /// 8 vCPU.
    Large,
    /// 16 vCPU.
    XLarge,
}

fn default_backup_days() -> u32 {
    7
}

/// An RDS database for a workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsRelationalDatabaseDefinition {
    /// The account it is created in.
    #[schema(value_type = String, format = Uuid)]
    pub aws_account: ObjectId,
    /// Engine.
    pub engine: DatabaseEngine,
    /// Engine version (`16.4`).
    pub engine_version: String,
    /// Name of the database created in it.
    pub database_name: String,
    /// Port it listens on.
    pub database_port: u16,
    /// Days of automated backups (0 disables them).
    #[serde(default = "default_backup_days")]
    pub backup_days: u32,
    /// Machine size.
    #[serde(default)]
    pub machine_size: MachineSize,
    /// Allocated storage in GB.
    pub storage_gb: u32,
    /// Name of the Kubernetes Secret the workload reads the connection details from.
    pub workload_secret_name: String,
}

impl ApiObject for AwsRelationalDatabaseDefinition {
    const KIND: &'static str = "AwsRelationalDatabaseDefinition";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        require("engine_version", &self.engine_version)?;
        let name_ok = !self.database_name.is_empty()
            && self.database_name.len() <= 63
            && self
                .database_name
                .starts_with(|c: char| c.is_ascii_alphabetic())
            && self
                .database_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(ValidationError::new(
                "database_name",
                "must start with a letter; letters, digits and '_'; at most 63",
            ));
        }
        if self.database_port < 1024 {
            return Err(ValidationError::new(
                "database_port",
                "must be 1024 or above",
            ));
        }
        if self.backup_days > 35 {
            return Err(ValidationError::new("backup_days", "must be 0 to 35"));
        }
        if !(20..=65_536).contains(&self.storage_gb) {
            return Err(ValidationError::new("storage_gb", "must be 20 to 65536"));
        }
        dns_label("workload_secret_name", &self.workload_secret_name)
    }
    fn references(&self) -> Vec<Reference> {
        vec![reference::<AwsAccount>("aws_account", self.aws_account)]
    }
}

/// An RDS database serving one workload instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsRelationalDatabaseInstance {
    /// Its definition.
    #[schema(value_type = String, format = Uuid)]
    pub definition: ObjectId,
    /// The workload that uses it.
    #[schema(value_type = String, format = Uuid)]
    pub workload_instance: ObjectId,
}

/// What the AWS controller created for a database instance (its inventory).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct DatabaseInstanceStatus {
    /// RDS instance identifier.
    pub identifier: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Endpoint host, once available.
    pub host: Option<String>,
    /// Endpoint port, once available.
    pub port: Option<u16>,
    /// Master user.
    pub master_username: Option<String>,
    /// Master password, sealed with the server's key (`sealed:v1:…`).
    pub master_password: Option<String>,
    /// The VPC it was placed in: its workload's EKS runtime's (none: the account's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// The DB subnet group made for it over that VPC's subnets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_group: Option<String>,
    /// The security group made for it, admitting the runtime's network on its port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_id: Option<String>,
}

impl ApiObject for AwsRelationalDatabaseInstance {
    const KIND: &'static str = "AwsRelationalDatabaseInstance";
    type Status = DatabaseInstanceStatus;
    fn references(&self) -> Vec<Reference> {
        vec![
            reference::<AwsRelationalDatabaseDefinition>("definition", self.definition),
            reference::<WorkloadInstance>("workload_instance", self.workload_instance),
        ]
    }
}

/// An S3 bucket for a workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsObjectStorageBucketDefinition {
    /// The account it is created in.
    #[schema(value_type = String, format = Uuid)]
    pub aws_account: ObjectId,
    /// Anyone may read its objects.
    #[serde(default)]
    pub public_read_access: bool,
    /// The workload's service account, granted access through a role.
    pub workload_service_account_name: String,
    /// Environment variable that gives the workload the bucket name.
    pub workload_bucket_env_var: String,
}

impl ApiObject for AwsObjectStorageBucketDefinition {
    const KIND: &'static str = "AwsObjectStorageBucketDefinition";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        dns_label(
            "workload_service_account_name",
            &self.workload_service_account_name,
        )?;
        let var = &self.workload_bucket_env_var;
        let ok = var.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(ValidationError::new(
                "workload_bucket_env_var",
                "must be an environment variable name",
            ));
        }
        Ok(())
    }
    fn references(&self) -> Vec<Reference> {
        vec![reference::<AwsAccount>("aws_account", self.aws_account)]
    }
}

/// An S3 bucket serving one workload instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsObjectStorageBucketInstance {
    /// Its definition.
    #[schema(value_type = String, format = Uuid)]
    pub definition: ObjectId,
    /// The workload that uses it.
    #[schema(value_type = String, format = Uuid)]
    pub workload_instance: ObjectId,
}

/// What the AWS controller created for a bucket instance (its inventory).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct BucketInstanceStatus {
    /// Bucket name.
    pub bucket: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// IAM role the workload's service account acts as to reach the bucket.
    #[serde(default)]
    pub role_name: Option<String>,
    /// Its ARN (annotated on the service account as `eks.amazonaws.com/role-arn`).
    #[serde(default)]
    pub role_arn: Option<String>,
}

impl ApiObject for AwsObjectStorageBucketInstance {
    const KIND: &'static str = "AwsObjectStorageBucketInstance";
    type Status = BucketInstanceStatus;
    fn references(&self) -> Vec<Reference> {
        vec![
            reference::<AwsObjectStorageBucketDefinition>("definition", self.definition),
            reference::<WorkloadInstance>("workload_instance", self.workload_instance),
        ]
    }
}
