//! The AWS controllers on the memory backends with the in-memory AWS fake, and the bucket
//! controller through the SDK against moto.

mod common;

use std::sync::Arc;
use std::time::Duration;

use threeport_aws::{MemoryAws, ObjectStorage, RelationalDatabases, SecretStore};
use threeport_core::{
    Api, ApiObject, Bus, Controller, LifecycleState, MemoryBackends, Notification, Object,
    Operation, SecretValues,
};
use threeport_server::Sealer;
use threeport_server::controllers::{
    AwsProvider, AwsServices, BucketReconciler, DatabaseReconciler, FixedAws, SdkAws,
    SecretReconciler, master_password,
};
use threeport_server::model::*;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

fn account(credentials: AwsCredentials) -> AwsAccount {
    AwsAccount {
        account_id: "123456789012".into(),
        default_region: "us-east-1".into(),
        default_account: true,
        credentials,
    }
}

fn role() -> AwsCredentials {
    AwsCredentials::Role {
        role_arn: "arn:aws:iam::123456789012:role/x".into(),
        external_id: None,
    }
}

/// A workload instance to attach services to.
async fn workload(memory: &MemoryBackends) -> Object<WorkloadInstance> {
    let definition = Api::<WorkloadDefinition>::new(memory.store.clone())
        .create(
            "shop",
            WorkloadDefinition {
                yaml_document: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n".into(),
            },
        )
        .await
        .unwrap();
    Api::<WorkloadInstance>::new(memory.store.clone())
        .create(
            "shop",
            WorkloadInstance {
                definition: definition.id(),
                runtime: None,
            },
        )
        .await
        .unwrap()
}

fn memory_aws(fake: &Arc<MemoryAws>) -> Arc<dyn AwsProvider> {
    Arc::new(FixedAws(AwsServices::memory(fake.clone())))
}

/// An account with `credentials`, a bucket definition and a bucket instance for a workload.
async fn bucket_instance(
    memory: &MemoryBackends,
    credentials: AwsCredentials,
    public_read: bool,
) -> (
    Api<AwsObjectStorageBucketInstance>,
    Object<AwsObjectStorageBucketInstance>,
) {
    let store = memory.store.clone();
    let account = Api::<AwsAccount>::new(store.clone())
        .create("main", account(credentials))
        .await
        .unwrap();
    let definition = Api::<AwsObjectStorageBucketDefinition>::new(store.clone())
        .create(
            "assets",
            AwsObjectStorageBucketDefinition {
                aws_account: account.id(),
                public_read_access: public_read,
                workload_service_account_name: "web".into(),
                workload_bucket_env_var: "BUCKET".into(),
            },
        )
        .await
        .unwrap();
    let workload = workload(memory).await;
    let buckets = Api::<AwsObjectStorageBucketInstance>::new(store);
    let instance = buckets
        .create(
            "assets",
            AwsObjectStorageBucketInstance {
                definition: definition.id(),
                workload_instance: workload.id(),
            },
        )
        .await
        .unwrap();
    (buckets, instance)
}

#[tokio::test]
async fn buckets_survive_controller_restarts_and_go_with_their_instance() {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let fake = Arc::new(MemoryAws::new());
    let first = shutdown.child_token();
    tokio::spawn(
        Controller::new(BucketReconciler::new(memory_aws(&fake)), memory.backends())
            .run(first.clone()),
    );

    let (buckets, instance) = bucket_instance(&memory, role(), true).await;
    let done = tokio::time::timeout(
        WAIT,
        buckets.wait_until(instance.id(), |o| o.is_reconciled()),
    )
    .await
    .unwrap()
    .unwrap();
    let bucket = done
        .status
        .details
        .bucket
        .clone()
        .expect("the inventory names the bucket");
    assert!(
        fake.bucket(&bucket).await.unwrap().unwrap().public_read,
        "public read honoured"
    );

    // Threeport issue #113: a restarted controller reconciling a healthy resource must leave it.
    first.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::spawn(
        Controller::new(BucketReconciler::new(memory_aws(&fake)), memory.backends())
            .run(shutdown.clone()),
    );
    let mut touched = buckets.get(instance.id()).await.unwrap();
    touched.meta.labels.insert("touched".into(), "yes".into());
    let touched = buckets.update(&touched).await.unwrap();
    let again = tokio::time::timeout(
        WAIT,
        buckets.wait_until(
            instance.id(),
            |o: &Object<AwsObjectStorageBucketInstance>| {
                o.is_reconciled() && o.status.observed_generation == touched.meta.generation
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        again.status.details.bucket.as_deref(),
        Some(bucket.as_str()),
        "same bucket, not a new one"
    );
    assert!(
        fake.bucket(&bucket).await.unwrap().is_some(),
        "the bucket is still there"
    );

    buckets.delete(instance.id()).await.unwrap();
    tokio::time::timeout(WAIT, buckets.wait_until_gone(instance.id()))
        .await
        .unwrap()
        .unwrap();
    assert!(
        fake.bucket(&bucket).await.unwrap().is_none(),
        "deleted from the inventory"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn an_interrupted_database_create_resumes_without_a_duplicate() {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let fake = Arc::new(MemoryAws::new());
    let sealer = Arc::new(Sealer::ephemeral().unwrap());
    let store = memory.store.clone();
    let account = Api::<AwsAccount>::new(store.clone())
        .create("main", account(role()))
        .await
        .unwrap();
    let definition = Api::<AwsRelationalDatabaseDefinition>::new(store.clone())
        .create("orders", common::orders_database(account.id()))
        .await
        .unwrap();
    let workload = workload(&memory).await;
    let databases = Api::<AwsRelationalDatabaseInstance>::new(store.clone());
    let instance = databases
        .create(
            "orders",
            AwsRelationalDatabaseInstance {
                definition: definition.id(),
                workload_instance: workload.id(),
            },
        )
        .await
        .unwrap();
    // A controller that created the database and died before recording anything: the name
    // is derived from the object, so the next one finds it.
    let suffix = instance.id().0.simple().to_string();
    let identifier = format!("tp-shop-{}", &suffix[suffix.len() - 8..]);
    let request = threeport_aws::DatabaseRequest {
        identifier: identifier.clone(),
        engine: "postgres".into(),
        engine_version: "16.4".into(),
        database_name: "orders".into(),
        port: 5432,
        instance_class: "db.t3.small".into(),
        storage_gb: 20,
        backup_days: 7,
        master_username: "threeport".into(),
        master_password: master_password(&sealer, instance.id()),
        subnet_group: None,
        security_group_ids: Vec::new(),
    };
    fake.create_database(&request).await.unwrap();

    tokio::spawn(
        Controller::new(
            DatabaseReconciler::new(memory_aws(&fake), sealer.clone()),
            memory.backends(),
        )
        .run(shutdown.clone()),
    );
    let done = tokio::time::timeout(
        WAIT,
        databases.wait_until(
            instance.id(),
            |o: &Object<AwsRelationalDatabaseInstance>| {
                o.is_reconciled() && o.status.details.host.is_some()
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        done.status.details.identifier.as_deref(),
        Some(identifier.as_str())
    );
    let sealed = done
        .status
        .details
        .master_password
        .clone()
        .unwrap_or_default();
    assert!(
        Sealer::is_sealed(&sealed) || sealed.is_empty(),
        "a password is only ever kept sealed"
    );
    assert!(fake.database(&identifier).await.unwrap().is_some());

    databases.delete(instance.id()).await.unwrap();
    tokio::time::timeout(WAIT, databases.wait_until_gone(instance.id()))
        .await
        .unwrap()
        .unwrap();
    assert!(fake.database(&identifier).await.unwrap().is_none());
    shutdown.cancel();
}

#[tokio::test]
async fn secret_values_reach_secrets_manager_and_nowhere_else() {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let fake = Arc::new(MemoryAws::new());
    tokio::spawn(
        Controller::new(SecretReconciler::new(memory_aws(&fake)), memory.backends())
            .run(shutdown.clone()),
    );
    let store = memory.store.clone();
    let account = Api::<AwsAccount>::new(store.clone())
        .create("main", account(role()))
        .await
        .unwrap();
    let secrets = Api::<SecretDefinition>::new(store.clone());
    let definition = secrets
        .create(
            "db",
            SecretDefinition {
                aws_account: account.id(),
            },
        )
        .await
        .unwrap();
    let values = SecretValues([("password".to_owned(), "hunter2".to_owned())].into());
    memory
        .bus
        .publish(
            Notification::new(
                SecretDefinition::KIND,
                definition.id(),
                Operation::Created,
                1,
            )
            .with_secret(values.clone()),
        )
        .await
        .unwrap();
    let stored = tokio::time::timeout(
        WAIT,
        secrets.wait_until(definition.id(), |o: &Object<SecretDefinition>| {
            o.status.details.arn.is_some()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(fake.secret_values("threeport/db"), Some(values));
    assert!(
        !serde_json::to_string(&stored).unwrap().contains("hunter2"),
        "not in the object"
    );
    secrets.delete(definition.id()).await.unwrap();
    tokio::time::timeout(WAIT, secrets.wait_until_gone(definition.id()))
        .await
        .unwrap()
        .unwrap();
    assert!(fake.secret_arn("threeport/db").await.unwrap().is_none());
    shutdown.cancel();
}

#[path = "../../threeport-aws/tests/common/mod.rs"]
mod moto;

/// The bucket controller through the SDK against `moto`, on memory backends: the server's
/// sealer, the backends, and what stops it.
fn bucket_controller_on(moto: &moto::Moto) -> (Arc<Sealer>, MemoryBackends, CancellationToken) {
    let sealer = Arc::new(Sealer::ephemeral().unwrap());
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let provider: Arc<dyn AwsProvider> =
        Arc::new(SdkAws::new(sealer.clone(), Some(moto.url.clone())));
    tokio::spawn(
        Controller::new(BucketReconciler::new(provider), memory.backends()).run(shutdown.clone()),
    );
    (sealer, memory, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_through_the_sdk_against_moto() {
    let moto = moto::moto().await;
    let (sealer, memory, shutdown) = bucket_controller_on(&moto);
    // As the API stores it: the secret access key sealed.
    let sealed = sealer
        .seal("spec.credentials.access_keys.secret_access_key", "testing")
        .unwrap();
    let credentials = AwsCredentials::AccessKeys {
        access_key_id: "testing".into(),
        secret_access_key: sealed,
    };
    let (buckets, instance) = bucket_instance(&memory, credentials, false).await;
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        buckets.wait_until(instance.id(), |o| o.is_reconciled()),
    )
    .await
    .unwrap()
    .unwrap();
    let bucket = done.status.details.bucket.unwrap();
    let s3 = threeport_aws::S3Storage::new(
        &threeport_aws::AwsConnection {
            region: "us-east-1".into(),
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            endpoint: Some(moto.url.clone()),
            ..Default::default()
        }
        .sdk_config()
        .await
        .unwrap(),
    );
    let state = s3
        .bucket(&bucket)
        .await
        .unwrap()
        .expect("the bucket is in (mock) S3");
    assert!(!state.public_read);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_role_is_assumed_through_sts_by_the_sdk_provider() {
    let moto = moto::moto().await;
    let sealer = Arc::new(Sealer::ephemeral().unwrap());
    let provider =
        SdkAws::new(sealer, Some(moto.url.clone())).with_base_credentials("testing", "testing");
    let memory = MemoryBackends::new();
    let account = Api::<AwsAccount>::new(memory.store.clone())
        .create("main", account(role()))
        .await
        .unwrap();
    let services = provider.services(&account, "us-east-1").await.unwrap();
    services
        .storage
        .ensure_bucket("assumed-role-bucket", false)
        .await
        .expect("acts as the assumed role");
    let err = provider
        .services(&account, "moon-central-1")
        .await
        .expect_err("unknown region");
    assert_eq!(err.kind(), threeport_core::ErrorKind::Invalid, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_stop_the_object_with_the_reason_instead_of_retrying() {
    let moto = moto::moto_checking_credentials().await;
    let (sealer, memory, shutdown) = bucket_controller_on(&moto);
    let credentials = AwsCredentials::AccessKeys {
        access_key_id: "AKIAWRONGWRONGWRONG0".into(),
        secret_access_key: sealer
            .seal("spec.credentials.access_keys.secret_access_key", "wrong")
            .unwrap(),
    };
    let (buckets, instance) = bucket_instance(&memory, credentials, false).await;
    let failed = tokio::time::timeout(
        WAIT,
        buckets.wait_until(instance.id(), |o| o.status.state.is_stopped()),
    )
    .await
    .expect("stopped, not retried endlessly")
    .unwrap();
    assert_eq!(failed.status.state, LifecycleState::CreationFailed);
    let reason = failed.status.reason.unwrap_or_default();
    assert!(reason.contains("AWS refused"), "{reason}");
    assert_eq!(
        failed.status.failures, 0,
        "terminal at once: no retries counted"
    );
    shutdown.cancel();
}
