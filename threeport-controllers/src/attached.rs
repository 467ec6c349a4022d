//! Services attached to a workload instance (RDS databases, S3 buckets, Secrets Manager
//! secrets) and what they add to its resources.
//!
//! The service controllers never touch a cluster or another controller, nor write on the
//! workload: a service instance references its workload instance, and the workload-instance
//! controller follows the service kinds ([`Via::ReferencedBy`](threeport_core::Via)), so
//! the store notifies the workload whenever a service attached to it is created, changes
//! status, is being deleted or is gone. The workload-instance controller then reads the
//! services that reference it and adds their part: a connection Secret for a database; the
//! bucket-name variable on the pods running as the bucket's service account, and the role
//! annotation on that service account; an ExternalSecret for a secret (once its instance's
//! `ValuesStored` condition holds).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use threeport_api::model::{
    AwsObjectStorageBucketDefinition, AwsObjectStorageBucketInstance,
    AwsRelationalDatabaseDefinition, AwsRelationalDatabaseInstance, SecretDefinition,
    SecretInstance,
};
use threeport_core::store::ListQuery;
use threeport_core::{ApiObject, Context, Object, ObjectId, ReconcileError};

use crate::seal::Sealer;

/// Annotation that gives a service account an IAM role on EKS (IRSA).
pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// The ClusterSecretStore (external-secrets operator) an ExternalSecret reads from: set up
/// with the cluster's access to Secrets Manager in the secret's region.
pub fn secret_store_name(region: &str) -> String {
    format!("threeport-aws-secrets-manager-{region}")
}

/// The Secrets Manager name of a secret definition's values.
pub fn secret_manager_name(definition: &Object<SecretDefinition>) -> String {
    format!("threeport/{}", definition.meta.name)
}

/// An environment variable for the pods running as a service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountEnv {
    /// The service account.
    pub service_account: String,
    /// Variable name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// The kind of workload services attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A `WorkloadInstance` (databases, buckets and secrets reference it).
    Workload,
    /// A `HelmWorkloadInstance` (secrets reference it).
    HelmWorkload,
}

impl Target {
    /// The field of a service's spec that references this kind of workload.
    pub fn field(self) -> &'static str {
        match self {
            Target::Workload => "workload_instance",
            Target::HelmWorkload => "helm_workload_instance",
        }
    }
}

/// What the services attached to a workload instance add to it.
#[derive(Debug, Default)]
pub struct Attachments {
    /// Whole resources (connection Secrets, ExternalSecrets), without a namespace: they go
    /// in the workload's.
    pub manifests: Vec<Value>,
    /// Variables for the pods of a service account.
    pub env: Vec<AccountEnv>,
    /// IAM roles for service accounts: account name → role ARN.
    pub roles: BTreeMap<String, String>,
}

/// The live (not deleting) services of kind `T` that reference `workload` in `field`.
async fn serving<T: ApiObject>(
    ctx: &Context,
    field: &str,
    workload: ObjectId,
) -> Result<Vec<Object<T>>, ReconcileError> {
    let query = ListQuery::default()
        .referencing(field, workload)
        .limit(1000);
    Ok(ctx
        .api::<T>()
        .list_all(&query)
        .await?
        .into_iter()
        .filter(|s| !s.is_deleting())
        .collect())
}

impl Attachments {
    /// Reads what the services referencing workload `instance` (a WorkloadInstance, or a
    /// HelmWorkloadInstance: `target` says which) add to it; database passwords are opened
    /// with `sealer`.
    pub async fn of(
        ctx: &Context,
        target: Target,
        instance: ObjectId,
        sealer: &Sealer,
    ) -> Result<Attachments, ReconcileError> {
        let field = target.field();
        let mut attachments = Attachments::default();
        for database in serving::<AwsRelationalDatabaseInstance>(ctx, field, instance).await? {
            let status = &database.status.details;
            let (Some(host), Some(port), Some(user), Some(password)) = (
                &status.host,
                status.port,
                &status.master_username,
                &status.master_password,
            ) else {
                continue;
            };
            let definition = ctx
                .api::<AwsRelationalDatabaseDefinition>()
                .get(database.spec.definition)
                .await?;
            let password = sealer.open(DATABASE_PASSWORD_FIELD, password)?;
            attachments.manifests.push(json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": definition.spec.workload_secret_name},
                "stringData": {
                    "db-endpoint": host, "db-port": port.to_string(),
                    "db-name": definition.spec.database_name, "db-user": user,
                    "db-password": password,
                },
            }));
        }
        for bucket in serving::<AwsObjectStorageBucketInstance>(ctx, field, instance).await? {
            let status = &bucket.status.details;
            let Some(name) = &status.bucket else {
                continue;
            };
            let definition = ctx
                .api::<AwsObjectStorageBucketDefinition>()
                .get(bucket.spec.definition)
                .await?;
            let account = definition.spec.workload_service_account_name.clone();
            attachments.env.push(AccountEnv {
                service_account: account.clone(),
                name: definition.spec.workload_bucket_env_var.clone(),
                value: name.clone(),
            });
            if let Some(role) = &status.role_arn {
                attachments.roles.insert(account, role.clone());
            }
        }
        for secret in serving::<SecretInstance>(ctx, field, instance).await? {
            let definition = ctx
                .api::<SecretDefinition>()
                .get(secret.spec.definition)
                .await?;
            let Some(arn) = &definition.status.details.arn else {
                continue;
            };
            let region = arn.split(':').nth(3).unwrap_or("us-east-1");
            attachments.manifests.push(json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "metadata": {"name": definition.meta.name},
                "spec": {
                    "refreshInterval": "1h",
                    "secretStoreRef": {"kind": "ClusterSecretStore",
                                       "name": secret_store_name(region)},
                    "target": {"name": definition.meta.name, "creationPolicy": "Owner"},
                    "dataFrom": [{"extract": {"key": secret_manager_name(&definition)}}],
                },
            }));
        }
        Ok(attachments)
    }

    /// Adds the variables and role annotations to `manifests` (already in the workload's
    /// namespace); a service account given a role that the manifests do not define is added.
    pub fn apply_to(&self, manifests: &mut Vec<Value>, namespace: Option<&str>) {
        for manifest in manifests.iter_mut() {
            let spec = match manifest["kind"].as_str() {
                Some("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job") => {
                    &mut manifest["spec"]["template"]["spec"]
                }
                Some("CronJob") => &mut manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                Some("ServiceAccount") => {
                    let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
                    if let Some(role) = self.roles.get(name) {
                        manifest["metadata"]["annotations"][ROLE_ANNOTATION] = json!(role);
                    }
                    continue;
                }
                _ => continue,
            };
            let account = spec["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            for env in self.env.iter().filter(|e| e.service_account == account) {
                for containers in ["initContainers", "containers"] {
                    let Some(list) = spec[containers].as_array_mut() else {
                        continue;
                    };
                    for container in list {
                        set_env(container, &env.name, &env.value);
                    }
                }
            }
        }
        for (account, role) in &self.roles {
            let defined = manifests.iter().any(|m| {
                m["kind"] == "ServiceAccount" && m["metadata"]["name"].as_str() == Some(account)
            });
            if !defined {
                let mut service_account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": account, "annotations": {ROLE_ANNOTATION: role}}});
                if let Some(namespace) = namespace {
                    service_account["metadata"]["namespace"] = json!(namespace);
                }
                manifests.push(service_account);
            }
        }
    }
}

/// Sets (or replaces) variable `name` of `container`.
fn set_env(container: &mut Value, name: &str, value: &str) {
    if !container["env"].is_array() {
        container["env"] = json!([]);
    }
    let list = container["env"].as_array_mut().expect("just made an array");
    list.retain(|e| e["name"] != name);
    list.push(json!({"name": name, "value": value}));
}

/// Field the master password of a database is sealed under.
pub const DATABASE_PASSWORD_FIELD: &str = "status.details.master_password";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_go_to_the_pods_of_the_account_and_roles_to_the_account() {
        let mut manifests = vec![
            json!({"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": {
                "spec": {"serviceAccountName": "shop", "containers": [
                    {"name": "app", "env": [{"name": "BUCKET", "value": "old"}]}]}}}}),
            json!({"kind": "Deployment", "metadata": {"name": "other"}, "spec": {"template": {
                "spec": {"containers": [{"name": "app"}]}}}}),
        ];
        let attachments = Attachments {
            env: vec![AccountEnv {
                service_account: "shop".into(),
                name: "BUCKET".into(),
                value: "tp-shop-1".into(),
            }],
            roles: [("shop".to_owned(), "arn:aws:iam::1:role/r".to_owned())].into(),
            ..Attachments::default()
        };
        attachments.apply_to(&mut manifests, Some("ns"));
        let env = &manifests[0]["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env, &json!([{"name": "BUCKET", "value": "tp-shop-1"}]));
        assert!(manifests[1]["spec"]["template"]["spec"]["containers"][0]["env"].is_null());
        assert_eq!(manifests[2]["kind"], "ServiceAccount");
        assert_eq!(manifests[2]["metadata"]["namespace"], "ns");
        assert_eq!(
            manifests[2]["metadata"]["annotations"][ROLE_ANNOTATION],
            "arn:aws:iam::1:role/r"
        );
    }
}
