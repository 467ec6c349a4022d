//! The AWS controllers: S3 buckets, Secrets Manager secrets and RDS databases for workloads.
//!
//! Every cloud resource gets a name derived from its object's id, recorded in the object's
//! status as the controller's inventory: an interrupted create finds the same name again and
//! resumes (the operations are idempotent) instead of making a second one, and deletion tears
//! down what the inventory lists. A reconcile never deletes anything: only the cleanup of an
//! object whose deletion was requested does (Threeport once deleted healthy clusters after a
//! controller restart, its issue #113). Long creations (RDS) return at once and requeue to
//! poll, so no worker waits on AWS. Credentials a controller makes (an RDS master password)
//! are derived from the server's key and the object's id, so a resumed create knows them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use threeport_api::model::{
    AwsAccount, AwsCredentials, AwsEksKubernetesRuntimeInstance, AwsObjectStorageBucketDefinition,
    AwsObjectStorageBucketInstance, AwsRelationalDatabaseDefinition, AwsRelationalDatabaseInstance,
    KubernetesRuntimeInstance, MachineSize, SecretDefinition, SecretInstance, WorkloadInstance,
};
use threeport_aws::{
    AssumeRole, AwsConnection, DatabaseRequest, DatabaseStatus, DnsZones, Ec2Networks, EksClusters,
    IamRoles, KubernetesClusters, MemoryAws, NETWORK_CIDR, Networks, ObjectStorage, RdsDatabases,
    RelationalDatabases, RoleRequest, Roles, Route53Zones, S3Storage, SecretStore,
    SecretsManagerStore, Trust, partition,
};
use threeport_core::object::{ConditionStatus, EventType};
use threeport_core::{Action, Context, Object, ObjectId, ReconcileError, Reconciler, Result};

use crate::attached::{DATABASE_PASSWORD_FIELD, secret_manager_name};
use crate::seal::Sealer;

/// How often a resource being created or deleted is looked at again.
const POLL: Duration = Duration::from_secs(15);

/// When a resource just requested is first looked at.
const FIRST_LOOK: Duration = Duration::from_secs(1);

/// The AWS services of one account and region.
#[derive(Debug, Clone)]
pub struct AwsServices {
    /// S3.
    pub storage: Arc<dyn ObjectStorage>,
    /// Secrets Manager.
    pub secrets: Arc<dyn SecretStore>,
    /// RDS.
    pub databases: Arc<dyn RelationalDatabases>,
    /// EC2 networks.
    pub networks: Arc<dyn Networks>,
    /// IAM.
    pub roles: Arc<dyn Roles>,
    /// EKS.
    pub clusters: Arc<dyn KubernetesClusters>,
    /// Route 53.
    pub zones: Arc<dyn DnsZones>,
}

impl AwsServices {
    /// Every service from one in-memory account.
    pub fn memory(aws: Arc<MemoryAws>) -> Self {
        AwsServices {
            storage: aws.clone(),
            secrets: aws.clone(),
            databases: aws.clone(),
            networks: aws.clone(),
            roles: aws.clone(),
            zones: aws.clone(),
            clusters: aws,
        }
    }
}

/// Gives the AWS services of an account.
#[async_trait]
pub trait AwsProvider: Send + Sync + std::fmt::Debug + 'static {
    /// The services of `account` in `region`.
    async fn services(&self, account: &Object<AwsAccount>, region: &str) -> Result<AwsServices>;

    /// The environment a tool speaking to AWS itself (Terraform) gets to act as `account` in
    /// `region` ([`AwsConnection::environment`]). The default has no credentials to give:
    /// `Unavailable`.
    async fn environment(
        &self,
        account: &Object<AwsAccount>,
        region: &str,
    ) -> Result<Vec<(String, String)>> {
        let _ = region;
        Err(threeport_core::Error::unavailable(format!(
            "no AWS credentials can be handed out for account {}",
            account.meta.name
        )))
    }
}

/// Real AWS through the SDK: the account's access keys (opened with the server's key), or its
/// role assumed through STS with the server's own credentials (the standard chain:
/// environment, profile, web identity, instance role); any endpoint that speaks the AWS APIs
/// (moto) for tests.
#[derive(Debug)]
pub struct SdkAws {
    sealer: Arc<Sealer>,
    endpoint: Option<String>,
    base: Option<(String, String)>,
}

impl SdkAws {
    /// AWS itself, or the API at `endpoint`.
    pub fn new(sealer: Arc<Sealer>, endpoint: Option<String>) -> Self {
        SdkAws {
            sealer,
            endpoint,
            base: None,
        }
    }

    /// Assume accounts' roles with these access keys instead of the standard chain.
    pub fn with_base_credentials(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        self.base = Some((access_key_id.to_owned(), secret_access_key.to_owned()));
        self
    }
}

impl SdkAws {
    /// How to reach AWS as `account` in `region`.
    fn connection(&self, account: &Object<AwsAccount>, region: &str) -> Result<AwsConnection> {
        let connection = match &account.spec.credentials {
            AwsCredentials::AccessKeys {
                access_key_id,
                secret_access_key,
            } => AwsConnection {
                access_key_id: access_key_id.clone(),
                secret_access_key: self.sealer.open(
                    "spec.credentials.access_keys.secret_access_key",
                    secret_access_key,
                )?,
                ..AwsConnection::default()
            },
            AwsCredentials::Role {
                role_arn,
                external_id,
            } => {
                let (access_key_id, secret_access_key) = self.base.clone().unwrap_or_default();
                AwsConnection {
                    access_key_id,
                    secret_access_key,
                    assume_role: Some(AssumeRole {
                        role_arn: role_arn.clone(),
                        external_id: external_id.clone(),
                    }),
                    ..AwsConnection::default()
                }
            }
        };
        Ok(AwsConnection {
            region: region.to_owned(),
            endpoint: self.endpoint.clone(),
            ..connection
        })
    }
}

#[async_trait]
impl AwsProvider for SdkAws {
    async fn services(&self, account: &Object<AwsAccount>, region: &str) -> Result<AwsServices> {
        let config = self.connection(account, region)?.sdk_config().await?;
        Ok(AwsServices {
            storage: Arc::new(S3Storage::new(&config)),
            secrets: Arc::new(SecretsManagerStore::new(&config)),
            databases: Arc::new(RdsDatabases::new(&config)),
            networks: Arc::new(Ec2Networks::new(&config)),
            roles: Arc::new(IamRoles::new(&config)),
            zones: Arc::new(Route53Zones::new(&config)),
            clusters: Arc::new(EksClusters::new(&config)),
        })
    }

    async fn environment(
        &self,
        account: &Object<AwsAccount>,
        region: &str,
    ) -> Result<Vec<(String, String)>> {
        self.connection(account, region)?.environment().await
    }
}

/// The same services for every account (tests, with `threeport_aws::MemoryAws`).
#[derive(Debug, Clone)]
pub struct FixedAws(pub AwsServices);

#[async_trait]
impl AwsProvider for FixedAws {
    async fn services(&self, _: &Object<AwsAccount>, _: &str) -> Result<AwsServices> {
        Ok(self.0.clone())
    }
}

/// A cloud name for an object: `tp-<workload>-<8 hex of the id>`, lower case, within `max`.
pub(crate) fn cloud_name(workload: &str, id: ObjectId, max: usize) -> String {
    let suffix = id.0.simple().to_string();
    let suffix = &suffix[suffix.len() - 8..];
    let mut base: String = workload
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(max.saturating_sub(suffix.len() + 4));
    let base = base.trim_matches('-');
    if base.is_empty() {
        format!("tp-{suffix}")
    } else {
        format!("tp-{base}-{suffix}")
    }
}

/// The account and services behind an object with an `aws_account`.
async fn account_services(
    aws: &Arc<dyn AwsProvider>,
    ctx: &Context,
    account: ObjectId,
) -> std::result::Result<(AwsServices, String), ReconcileError> {
    let account = ctx.api::<AwsAccount>().get(account).await?;
    let region = account.spec.default_region.clone();
    let services = aws.services(&account, &region).await?;
    Ok((services, region))
}

/// The services of an account in `region` (not its default one: a runtime's, say).
async fn services_in(
    aws: &Arc<dyn AwsProvider>,
    ctx: &Context,
    account: ObjectId,
    region: &str,
) -> std::result::Result<AwsServices, ReconcileError> {
    let account = ctx.api::<AwsAccount>().get(account).await?;
    Ok(aws.services(&account, region).await?)
}

/// A service definition that names the AWS account its resources live in.
trait InAccount: threeport_core::ApiObject {
    fn aws_account(&self) -> ObjectId;
}

impl InAccount for AwsObjectStorageBucketDefinition {
    fn aws_account(&self) -> ObjectId {
        self.aws_account
    }
}

impl InAccount for AwsRelationalDatabaseDefinition {
    fn aws_account(&self) -> ObjectId {
        self.aws_account
    }
}

/// A service instance's definition, and the AWS services and region of its account.
async fn definition_services<D: InAccount>(
    aws: &Arc<dyn AwsProvider>,
    ctx: &Context,
    definition: ObjectId,
) -> std::result::Result<(Object<D>, AwsServices, String), ReconcileError> {
    let definition = ctx.api::<D>().get(definition).await?;
    let (services, region) = account_services(aws, ctx, definition.spec.aws_account()).await?;
    Ok((definition, services, region))
}

/// The name of the workload instance a service serves (for cloud names).
async fn workload_name(
    ctx: &Context,
    workload: ObjectId,
) -> std::result::Result<String, ReconcileError> {
    Ok(ctx.api::<WorkloadInstance>().get(workload).await?.meta.name)
}

/// The EKS cluster threeport made for the runtime a workload runs on, if it runs on one.
async fn workload_eks(
    ctx: &Context,
    workload: ObjectId,
) -> std::result::Result<Option<Object<AwsEksKubernetesRuntimeInstance>>, ReconcileError> {
    let instance = ctx.api::<WorkloadInstance>().get(workload).await?;
    let Some(runtime) = instance.spec.runtime.or(instance.status.details.runtime) else {
        return Ok(None);
    };
    let runtime = ctx.api::<KubernetesRuntimeInstance>().get(runtime).await?;
    let eks = ctx
        .api::<AwsEksKubernetesRuntimeInstance>()
        .get_by_name(&runtime.meta.name)
        .await;
    Ok(eks.ok().filter(|eks| eks.spec.runtime == runtime.id()))
}

/// Who may act as a workload's role: its service account through the cluster's OIDC
/// provider when the workload runs on an EKS runtime threeport made (any namespace of that
/// cluster: the workload's may be generated later), else the account's principals.
async fn workload_trust(
    ctx: &Context,
    workload: ObjectId,
    service_account: &str,
    account_id: &str,
) -> std::result::Result<Trust, ReconcileError> {
    if let Some(eks) = workload_eks(ctx, workload).await?
        && let (Some(provider_arn), Some(issuer)) = (
            eks.status.details.oidc_provider_arn.clone(),
            eks.status.details.oidc_issuer.clone(),
        )
    {
        return Ok(Trust::ServiceAccount {
            provider_arn,
            issuer: issuer.trim_start_matches("https://").to_owned(),
            namespace: "*".to_owned(),
            name: service_account.to_owned(),
        });
    }
    Ok(Trust::Account(account_id.to_owned()))
}

/// Where a workload's database goes: the VPC of the EKS runtime threeport made for it.
struct Placement {
    region: String,
    vpc_id: String,
    subnet_ids: Vec<String>,
}

/// The placement of a database serving `workload`: `None` on a runtime threeport did not
/// make (the account's default VPC); retried later while the runtime's network is coming.
async fn database_placement(
    ctx: &Context,
    workload: ObjectId,
) -> std::result::Result<Option<Placement>, ReconcileError> {
    let Some(eks) = workload_eks(ctx, workload).await? else {
        return Ok(None);
    };
    let network = &eks.status.details;
    match &network.vpc_id {
        Some(vpc_id) if network.subnet_ids.len() >= 2 => Ok(Some(Placement {
            region: eks.spec.region.clone(),
            vpc_id: vpc_id.clone(),
            subnet_ids: network.subnet_ids.clone(),
        })),
        _ => Err(ReconcileError::retry_after(
            POLL,
            format!(
                "waiting for the network of EKS runtime {} (the database goes in its VPC)",
                eks.meta.name
            ),
        )),
    }
}

/// Read and write access to one bucket.
fn bucket_policy(bucket: &str, region: &str) -> String {
    let arn = format!("arn:{}:s3:::{bucket}", partition(region));
    serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": arn},
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
         "Resource": format!("{arn}/*")}]})
    .to_string()
}

/// Reconciles `AwsObjectStorageBucketInstance`: a bucket for the workload.
#[derive(Debug, Clone)]
pub struct BucketReconciler {
    aws: Arc<dyn AwsProvider>,
}

impl BucketReconciler {
    /// A controller reaching AWS through `aws`.
    pub fn new(aws: Arc<dyn AwsProvider>) -> Self {
        BucketReconciler { aws }
    }
}

#[async_trait]
impl Reconciler for BucketReconciler {
    type Object = AwsObjectStorageBucketInstance;

    async fn reconcile(
        &self,
        instance: &mut Object<AwsObjectStorageBucketInstance>,
        ctx: &Context,
    ) -> std::result::Result<Action, ReconcileError> {
        let (definition, services, region) =
            definition_services::<AwsObjectStorageBucketDefinition>(
                &self.aws,
                ctx,
                instance.spec.definition,
            )
            .await?;
        let workload = workload_name(ctx, instance.spec.workload_instance).await?;
        let bucket = instance
            .status
            .details
            .bucket
            .clone()
            .unwrap_or_else(|| cloud_name(&workload, instance.id(), 63));
        // The inventory first: whatever happens next, the names are known.
        instance.status.details.bucket = Some(bucket.clone());
        instance.status.details.region = Some(region.clone());
        services
            .storage
            .ensure_bucket(&bucket, definition.spec.public_read_access)
            .await?;
        let role_name = instance
            .status
            .details
            .role_name
            .clone()
            .unwrap_or_else(|| cloud_name(&workload, instance.id(), 64));
        instance.status.details.role_name = Some(role_name.clone());
        let account = &definition.spec.workload_service_account_name;
        let account_id = ctx
            .api::<AwsAccount>()
            .get(definition.spec.aws_account)
            .await?
            .spec
            .account_id;
        let trust =
            workload_trust(ctx, instance.spec.workload_instance, account, &account_id).await?;
        let role_arn = services
            .roles
            .ensure_role(&RoleRequest {
                name: role_name,
                trust,
                managed_policies: Vec::new(),
                inline_policy: Some(bucket_policy(&bucket, &region)),
            })
            .await?;
        instance.status.details.role_arn = Some(role_arn);
        Ok(Action::Done)
    }

    async fn cleanup(
        &self,
        instance: &mut Object<AwsObjectStorageBucketInstance>,
        ctx: &Context,
    ) -> std::result::Result<Action, ReconcileError> {
        // Its workload was told when its deletion was scheduled (it follows its services)
        // and stops using it.
        let (_, services, _) = definition_services::<AwsObjectStorageBucketDefinition>(
            &self.aws,
            ctx,
            instance.spec.definition,
        )
        .await?;
        if let Some(role) = instance.status.details.role_name.clone() {
            services.roles.delete_role(&role).await?;
            instance.status.details.role_name = None;
            instance.status.details.role_arn = None;
        }
        if let Some(bucket) = instance.status.details.bucket.clone() {
            services.storage.delete_bucket(&bucket).await?;
            instance.status.details.bucket = None;
        }
        Ok(Action::Done)
    }
}

/// Reconciles `SecretDefinition`: stores the values its creation carried in Secrets Manager.
#[derive(Debug, Clone)]
pub struct SecretReconciler {
    aws: Arc<dyn AwsProvider>,
}

impl SecretReconciler {
    /// A controller reaching AWS through `aws`.
    pub fn new(aws: Arc<dyn AwsProvider>) -> Self {
        SecretReconciler { aws }
    }
}

#[async_trait]
impl Reconciler for SecretReconciler {
    type Object = SecretDefinition;

    async fn reconcile(
        &self,
        definition: &mut Object<SecretDefinition>,
        ctx: &Context,
    ) -> std::result::Result<Action, ReconcileError> {
        let Some(values) = ctx.secret() else {
            // The plain notification of the creation: the values come with their own.
            if definition.status.details.arn.is_none() {
                definition.status.record_event(
                    EventType::Normal,
                    "WaitingForValues",
                    "the secret values travel with their own notification",
                );
            }
            return Ok(Action::Done);
        };
        let (services, _) = account_services(&self.aws, ctx, definition.spec.aws_account).await?;
        let arn = services
            .secrets
            .put_secret(&secret_manager_name(definition), values)
            .await?;
        definition.status.details.arn = Some(arn.clone());
        definition.status.record_event(
            EventType::Normal,
            "Stored",
            "the values are in Secrets Manager",
        );
        // Its instances follow it: this status write reaches them.
        Ok(Action::Done)
    }

    async fn cleanup(
        &self,
        definition: &mut Object<SecretDefinition>,
        ctx: &Context,
    ) -> std::result::Result<Action, ReconcileError> {
        if definition.status.details.arn.is_none() {
            return Ok(Action::Done);
        }
        let (services, _) = account_services(&self.aws, ctx, definition.spec.aws_account).await?;
        services
            .secrets
            .delete_secret(&secret_manager_name(definition))
            .await?;
        Ok(Action::Done)
    }
}

/// Condition of a secret instance: whether its definition's values are stored, so its
/// workload can read them.
pub const VALUES_STORED: &str = "ValuesStored";

/// Reconciles `SecretInstance`: follows its definition and says, in its `ValuesStored`
/// condition, whether the values are stored; its workload follows it and adds an
/// ExternalSecret reading them (see [`super::attached`]). The values never pass through
/// threeport's store.
///
/// With [`with_support`](Self::with_support) (as in the stock control plane) it also
/// installs the external-secrets operator, with a ClusterSecretStore for the secret's region,
/// on the runtime of the workload it serves.
#[derive(Debug, Clone, Default)]
pub struct SecretInstanceReconciler {
    support: Option<crate::support::Support>,
}

impl SecretInstanceReconciler {
    /// Installs external-secrets through `support` where the secret is read.
    pub fn with_support(mut self, support: crate::support::Support) -> Self {
        self.support = Some(support);
        self
    }
}

#[async_trait]
impl Reconciler for SecretInstanceReconciler {
    type Object = SecretInstance;

    async fn reconcile(
        &self,
        instance: &mut Object<SecretInstance>,
        ctx: &Context,
    ) -> std::result::Result<Action, ReconcileError> {
        // A workload or Helm workload instance follows it (whichever it serves): this
        // condition changing when the values are stored brings that one back to add them.
        let definition = ctx
            .api::<SecretDefinition>()
            .get(instance.spec.definition)
            .await?;
        let (status, reason, message) = match &definition.status.details.arn {
            Some(_) => (
                ConditionStatus::True,
                "Stored",
                "the values are in Secrets Manager",
            ),
            None => (
                ConditionStatus::False,
                "WaitingForValues",
                "the definition's values are not stored yet",
            ),
        };
        let stored = status == ConditionStatus::True;
        instance
            .status
            .set_condition(VALUES_STORED, status, reason, message);
        if let Some(support) = self.support.as_ref().filter(|_| stored)
            && let Some(runtime) = crate::support::secret_runtime(ctx, &instance.spec).await?
        {
            // Its region's ClusterSecretStore comes with the operator; the workload's
            // ExternalSecret reads through it once both are there.
            let runtime = ctx.api::<KubernetesRuntimeInstance>().get(runtime).await?;
            support
                .ensure(
                    ctx,
                    &runtime,
                    threeport_api::model::SupportService::ExternalSecrets,
                )
                .await?;
        }
        Ok(Action::Done)
    }
}

/// Reconciles `AwsRelationalDatabaseInstance`: an RDS instance for the workload.
#[derive(Debug, Clone)]
pub struct DatabaseReconciler {
    aws: Arc<dyn AwsProvider>,
    sealer: Arc<Sealer>,
}

impl DatabaseReconciler {
    /// A controller reaching AWS through `aws`, keeping master passwords sealed with `sealer`.
    pub fn new(aws: Arc<dyn AwsProvider>, sealer: Arc<Sealer>) -> Self {
        DatabaseReconciler { aws, sealer }
    }
}

fn instance_class(size: MachineSize) -> &'static str {
    match size {
        MachineSize::XSmall => "db.t3.micro",
        MachineSize::Small => "db.t3.small",
        MachineSize::Medium => "db.m6i.large",
        MachineSize::Large => "db.m6i.2xlarge",
        MachineSize::XLarge => "db.m6i.4xlarge",
    }
}

/// The master password of a database instance: derived from the server's key and the
/// object's id, so a create interrupted before anything was recorded resumes with the same one.
pub fn master_password(sealer: &Sealer, instance: ObjectId) -> String {
    sealer.derive(&format!("rds-master-password:{instance}"))
}

#[async_trait]
impl Reconciler for DatabaseReconciler {
    type Object = AwsRelationalDatabaseInstance;

    async fn reconcile(
        &self,
        instance: &mut Object<AwsRelationalDatabaseInstance>,
        ctx: &Context,
    ) -> std::result::Result<Action, ReconcileError> {
        let (definition, services, region) =
            definition_services::<AwsRelationalDatabaseDefinition>(
                &self.aws,
                ctx,
                instance.spec.definition,
            )
            .await?;
        let workload = workload_name(ctx, instance.spec.workload_instance).await?;
        // On an EKS runtime threeport made, the database goes in the runtime's VPC (and
        // region), where the workload's pods can reach it.
        let placement = database_placement(ctx, instance.spec.workload_instance).await?;
        let (services, region) = match &placement {
            Some(placement) if placement.region != region => {
                let services = services_in(
                    &self.aws,
                    ctx,
                    definition.spec.aws_account,
                    &placement.region,
                )
                .await?;
                (services, placement.region.clone())
            }
            _ => (services, region),
        };
        let id = instance.id();
        let status = &mut instance.status.details;
        let identifier = status
            .identifier
            .clone()
            .unwrap_or_else(|| cloud_name(&workload, id, 63));
        // The inventory first: whatever happens next, the identifier is known.
        status.identifier = Some(identifier.clone());
        status.region = Some(region);
        match services.databases.database(&identifier).await? {
            None => {
                let (subnet_group, security_group_ids) = match &placement {
                    Some(placement) => {
                        // Named after the database (the security group found by its tag),
                        // recorded before they are made: a lost answer leaks nothing.
                        status.vpc_id = Some(placement.vpc_id.clone());
                        status.subnet_group = Some(identifier.clone());
                        let group = services
                            .networks
                            .ensure_security_group(
                                &identifier,
                                &placement.vpc_id,
                                definition.spec.database_port,
                                NETWORK_CIDR,
                            )
                            .await?;
                        status.security_group_id = Some(group.clone());
                        services
                            .databases
                            .ensure_subnet_group(&identifier, &placement.subnet_ids)
                            .await?;
                        (Some(identifier.clone()), vec![group])
                    }
                    None => (None, Vec::new()),
                };
                let password = master_password(&self.sealer, id);
                status.master_password =
                    Some(self.sealer.seal(DATABASE_PASSWORD_FIELD, &password)?);
                status.master_username = Some("threeport".to_owned());
                let spec = &definition.spec;
                let engine = serde_json::to_value(spec.engine)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                services
                    .databases
                    .create_database(&DatabaseRequest {
                        identifier: identifier.clone(),
                        engine,
                        engine_version: spec.engine_version.clone(),
                        database_name: spec.database_name.clone(),
                        port: spec.database_port,
                        instance_class: instance_class(spec.machine_size).to_owned(),
                        storage_gb: spec.storage_gb,
                        backup_days: spec.backup_days,
                        master_username: "threeport".to_owned(),
                        master_password: password,
                        subnet_group,
                        security_group_ids,
                    })
                    .await?;
                instance.status.record_event(
                    EventType::Normal,
                    "Creating",
                    format!("RDS instance {identifier} requested"),
                );
                // A first look soon (some endpoints answer at once), then every POLL.
                Ok(Action::RequeueAfter(FIRST_LOOK))
            }
            Some(state) if state.is_available() => {
                // Also after a resumed create: the password is derived, not remembered.
                if status.master_password.is_none() {
                    let password = master_password(&self.sealer, id);
                    status.master_password =
                        Some(self.sealer.seal(DATABASE_PASSWORD_FIELD, &password)?);
                    status.master_username = Some("threeport".to_owned());
                }
                // The workload follows its databases: this status write reaches it.
                status.host = state.host;
                status.port = state.port;
                Ok(Action::Done)
            }
            Some(_) => Ok(Action::RequeueAfter(POLL)),
        }
    }

    async fn cleanup(
        &self,
        instance: &mut Object<AwsRelationalDatabaseInstance>,
        ctx: &Context,
    ) -> std::result::Result<Action, ReconcileError> {
        // Its workload was told when its deletion was scheduled (it follows its services)
        // and stops using it.
        let Some(identifier) = instance.status.details.identifier.clone() else {
            return Ok(Action::Done);
        };
        let (definition, services, default_region) = definition_services::<
            AwsRelationalDatabaseDefinition,
        >(
            &self.aws, ctx, instance.spec.definition
        )
        .await?;
        // Where it was made (a runtime's region, maybe not the account's).
        let services = match &instance.status.details.region {
            Some(region) if *region != default_region => {
                services_in(&self.aws, ctx, definition.spec.aws_account, region).await?
            }
            _ => services,
        };
        match services.databases.database(&identifier).await? {
            None => {}
            Some(state) if state.status == DatabaseStatus::Deleting => {
                return Ok(Action::RequeueAfter(POLL));
            }
            Some(_) => {
                services.databases.delete_database(&identifier).await?;
                // Gone at once in the fake and moto; RDS takes minutes: look again.
                if services.databases.database(&identifier).await?.is_some() {
                    return Ok(Action::RequeueAfter(POLL));
                }
            }
        }
        // Then what placed it: AWS refuses (Unavailable, retried) while the deleted database
        // still holds them.
        let status = &mut instance.status.details;
        if let Some(group) = status.subnet_group.clone() {
            services.databases.delete_subnet_group(&group).await?;
            status.subnet_group = None;
        }
        if status.security_group_id.is_some() {
            services.networks.delete_security_group(&identifier).await?;
            status.security_group_id = None;
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::cloud_name;
    use threeport_core::ObjectId;

    #[test]
    fn cloud_names_are_dns_safe_and_bounded() {
        let id = ObjectId::new();
        let name = cloud_name("Shop_Front!", id, 63);
        assert!(name.starts_with("tp-shop-front"), "{name}");
        assert!(name.len() <= 63);
        assert_eq!(
            name,
            cloud_name("Shop_Front!", id, 63),
            "deterministic: a resumed create finds it"
        );
        assert!(cloud_name(&"x".repeat(100), id, 63).len() <= 63);
    }
}
