//! The AWS controllers end to end with the workload and runtime controllers, on the memory
//! backends with the in-memory AWS fake: an EKS runtime provisioned (with answers lost mid
//! create), connected and deployed to over HTTP through the fake API server, a database
//! attached to its workload placed in its VPC, then torn down leaving nothing; databases, buckets and secrets attached to a workload's resources; and a
//! secret attached to a Helm workload (its chart uploaded with the definition).

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use threeport_aws::MemoryAws;
use threeport_core::{
    Api, ApiObject, Bus, MemoryBackends, Notification, Object, ObjectId, Operation, SecretValues,
};
use threeport_k8s::{Cluster, FakeApiServer, MemoryCluster, ResourceRef};
use threeport_server::Sealer;
use threeport_server::controllers::attached::ROLE_ANNOTATION;
use threeport_server::controllers::helm::{HelmCli, HelmWorkloadInstanceReconciler};
use threeport_server::controllers::{
    AwsProvider, AwsServices, BucketReconciler, ClusterProvider, DatabaseReconciler, EksReconciler,
    FixedAws, KubeClusters, RuntimeReconciler, SecretInstanceReconciler, SecretReconciler,
    SingleCluster, WorkloadDefinitionReconciler, WorkloadInstanceReconciler, declared,
    master_password,
};
use threeport_server::model::*;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn account() -> AwsAccount {
    AwsAccount {
        account_id: "123456789012".into(),
        default_region: "us-east-1".into(),
        default_account: true,
        credentials: AwsCredentials::Role {
            role_arn: "arn:aws:iam::123456789012:role/threeport".into(),
            external_id: None,
        },
    }
}

/// A runtime definition for `provider` in `account`.
fn runtime_definition(
    provider: InfraProvider,
    account: Option<ObjectId>,
) -> KubernetesRuntimeDefinition {
    KubernetesRuntimeDefinition {
        infra_provider: provider,
        aws_account: account,
        high_availability: false,
        node_size: NodeSize::Medium,
        node_profile: NodeProfile::Balanced,
        node_maximum: 4,
    }
}

/// Runs `reconciler`'s controller on `memory` until `shutdown`.
/// Runs `reconciler` as controller `name` of the table: following what it declares.
fn run<R: threeport_core::Reconciler>(
    memory: &MemoryBackends,
    shutdown: &CancellationToken,
    reconciler: R,
) {
    let name = match reconciler.kind() {
        "KubernetesRuntimeInstance" => "kubernetes-runtime",
        "AwsEksKubernetesRuntimeInstance" => "aws-eks",
        "WorkloadDefinition" => "workload-definition",
        "WorkloadInstance" => "workload-instance",
        "AwsObjectStorageBucketInstance" => "aws-bucket",
        "AwsRelationalDatabaseInstance" => "aws-database",
        "SecretDefinition" => "aws-secret",
        "SecretInstance" => "aws-secret-instance",
        "HelmWorkloadInstance" => "helm-workload-instance",
        other => panic!("no controller for {other}"),
    };
    let controller = declared(name, reconciler, memory.backends()).unwrap();
    tokio::spawn(controller.run(shutdown.clone()));
}

fn resource(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> ResourceRef {
    ResourceRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: namespace.map(str::to_owned),
        name: name.into(),
    }
}

/// The `orders` database of `account`, attached to `workload`: its instances' API and the
/// instance.
async fn attach_orders_database<S: threeport_core::Store>(
    store: &Arc<S>,
    account: ObjectId,
    workload: ObjectId,
) -> (
    Api<AwsRelationalDatabaseInstance>,
    Object<AwsRelationalDatabaseInstance>,
) {
    let definition = Api::<AwsRelationalDatabaseDefinition>::new(store.clone())
        .create("orders", common::orders_database(account))
        .await
        .unwrap();
    let databases = Api::<AwsRelationalDatabaseInstance>::new(store.clone());
    let database = databases
        .create(
            "orders",
            AwsRelationalDatabaseInstance {
                definition: definition.id(),
                workload_instance: workload,
            },
        )
        .await
        .unwrap();
    (databases, database)
}

/// Polls `cluster` until `check` finds what it wants in `resource`.
async fn until(
    cluster: &MemoryCluster,
    resource: &ResourceRef,
    check: impl Fn(&Option<Value>) -> bool,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let live = cluster.get(resource).await.unwrap();
        if check(&live) {
            return live;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{resource} never got there: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eks_runtime_is_provisioned_connected_used_and_torn_down_without_leaks() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let sealer = Arc::new(Sealer::ephemeral().unwrap());
    // The "EKS cluster" is the fake API server; its token controller hands out the token the
    // server accepts.
    let cluster = MemoryCluster::new();
    cluster.set_service_account_token("cluster-token");
    let server = FakeApiServer::start_with_token(cluster.clone(), "cluster-token")
        .await
        .unwrap();
    let fake = Arc::new(MemoryAws::new().with_creation_polls(3));
    fake.serve_clusters_at(&server.url, None, "cluster-token");
    // Two answers lost mid-create: after AWS made a subnet, and after it took the cluster.
    fake.lose_next_answer("create_subnet");
    fake.lose_next_answer("create_cluster");
    let aws: Arc<dyn AwsProvider> = Arc::new(FixedAws(AwsServices::memory(fake.clone())));
    let clusters: Arc<dyn ClusterProvider> = Arc::new(KubeClusters::new(sealer.clone()));
    run(
        &memory,
        &shutdown,
        RuntimeReconciler::new(clusters.clone(), sealer.clone()),
    );
    run(
        &memory,
        &shutdown,
        EksReconciler::new(aws.clone(), clusters.clone(), sealer.clone())
            .with_poll(Duration::from_millis(50)),
    );
    run(
        &memory,
        &shutdown,
        DatabaseReconciler::new(aws, sealer.clone()),
    );
    run(&memory, &shutdown, WorkloadDefinitionReconciler);
    run(
        &memory,
        &shutdown,
        WorkloadInstanceReconciler::new(clusters, sealer.clone()),
    );

    let store = memory.store.clone();
    let account = Api::<AwsAccount>::new(store.clone())
        .create("main", account())
        .await
        .unwrap();
    let definition = Api::<KubernetesRuntimeDefinition>::new(store.clone())
        .create(
            "eks",
            runtime_definition(InfraProvider::Eks, Some(account.id())),
        )
        .await
        .unwrap();
    let runtimes = Api::<KubernetesRuntimeInstance>::new(store.clone());
    let runtime = runtimes
        .create(
            "paris",
            KubernetesRuntimeInstance {
                definition: definition.id(),
                location: "Europe:Paris".into(),
                default_runtime: true,
                agent: None,
                support_services: Vec::new(),
                connection: None,
            },
        )
        .await
        .unwrap();
    let connected = tokio::time::timeout(
        WAIT,
        runtimes.wait_until(runtime.id(), |o: &Object<KubernetesRuntimeInstance>| {
            o.status.details.connection.is_some() && o.is_reconciled()
        }),
    )
    .await
    .expect("the runtime is connected and healthy")
    .unwrap();
    // The EKS controller wrote it in its own object's status; the runtime, which owns and
    // follows that object, took it into its status. Nobody wrote the runtime's spec.
    assert!(connected.spec.connection.is_none());
    assert_eq!(connected.meta.generation, 1);
    let connection = connected.status.details.connection.unwrap();
    assert_eq!(connection.api_endpoint, server.url);
    let token = connection.token.expect("a token");
    assert!(token.starts_with("sealed:"), "sealed at rest: {token}");
    assert_eq!(
        sealer.open("spec.connection.token", &token).unwrap(),
        "cluster-token"
    );

    let eks = Api::<AwsEksKubernetesRuntimeInstance>::new(store.clone())
        .get_by_name("paris")
        .await
        .unwrap();
    let inventory = &eks.status.details;
    assert_eq!(inventory.subnet_ids.len(), 2, "{inventory:?}");
    assert!(inventory.vpc_id.is_some() && inventory.oidc_provider_arn.is_some());
    // The cluster request's answer was lost, so the next look found the cluster being made;
    // the node group's request was acknowledged.
    assert!(inventory.node_group_creation_acknowledged.is_some());
    // The runtime definition's node size (medium), profile (balanced), availability (no) and
    // maximum (4) shaped the node group.
    let groups = fake.node_group_requests();
    assert_eq!(groups.len(), 1, "{groups:?}");
    let group = &groups[0];
    assert_eq!(group.instance_type, "m6i.xlarge");
    assert_eq!((group.minimum, group.desired, group.maximum), (1, 2, 4));
    assert_eq!(
        group.subnet_ids.len(),
        2,
        "two zones without high availability"
    );
    assert!(
        eks.status
            .events
            .iter()
            .any(|e| e.reason == "CreatingNodeGroup"),
        "{:?}",
        eks.status.events
    );
    assert_eq!(
        fake.network_pieces_created(),
        3 + 2,
        "VPC, gateway, route table and two subnets, none made twice after the lost answers"
    );
    let cloud = fake.cloud_inventory();
    let count = |prefix: &str| cloud.iter().filter(|c| c.starts_with(prefix)).count();
    assert_eq!(
        (
            count("cluster/"),
            count("nodegroup/"),
            count("role/"),
            count("oidc/")
        ),
        (1, 1, 2, 1),
        "{cloud:?}"
    );
    assert!(
        cluster
            .get(&resource(
                "v1",
                "ServiceAccount",
                Some("threeport-system"),
                "threeport-control-plane"
            ))
            .await
            .unwrap()
            .is_some(),
        "threeport's own service account in the new cluster"
    );

    // A workload lands on it, over HTTP, with the service account's token.
    let workload_definition = Api::<WorkloadDefinition>::new(store.clone())
        .create(
            "web",
            WorkloadDefinition {
                yaml_document: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: default\ndata:\n  a: b\n".into(),
            },
        )
        .await
        .unwrap();
    let workloads = Api::<WorkloadInstance>::new(store.clone());
    let workload = workloads
        .create(
            "web",
            WorkloadInstance {
                definition: workload_definition.id(),
                runtime: None,
            },
        )
        .await
        .unwrap();
    tokio::time::timeout(
        WAIT,
        workloads.wait_until(workload.id(), |o| o.is_reconciled()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        cluster
            .get(&resource("v1", "ConfigMap", Some("default"), "web"))
            .await
            .unwrap()
            .is_some()
    );

    // A database attached to it lands in the runtime's VPC: a subnet group over its subnets
    // and a security group admitting its network on the database port.
    let (databases, database) = attach_orders_database(&store, account.id(), workload.id()).await;
    let placed = tokio::time::timeout(
        WAIT,
        databases.wait_until(database.id(), |o| o.is_reconciled()),
    )
    .await
    .expect("the database is made")
    .unwrap();
    let placed = placed.status.details;
    let identifier = placed.identifier.clone().unwrap();
    assert_eq!(placed.vpc_id, inventory.vpc_id, "{placed:?}");
    assert_eq!(placed.subnet_group.as_deref(), Some(identifier.as_str()));
    let requests = fake.database_requests();
    let request = requests
        .iter()
        .find(|r| r.identifier == identifier)
        .unwrap();
    assert_eq!(request.subnet_group.as_deref(), Some(identifier.as_str()));
    assert_eq!(
        request.security_group_ids,
        vec![placed.security_group_id.clone().unwrap()]
    );
    assert_eq!(
        fake.security_group_rules(&identifier),
        vec![(5432, threeport_aws::NETWORK_CIDR.to_owned())]
    );
    let cloud = fake.cloud_inventory();
    assert!(
        cloud.contains(&format!("db-subnet-group/{identifier}")),
        "{cloud:?}"
    );

    // Teardown in reverse: nothing left in the account (the database's subnet group and
    // security group go with it, before the network).
    databases.delete(database.id()).await.unwrap();
    tokio::time::timeout(WAIT, databases.wait_until_gone(database.id()))
        .await
        .unwrap()
        .unwrap();
    workloads.delete(workload.id()).await.unwrap();
    tokio::time::timeout(WAIT, workloads.wait_until_gone(workload.id()))
        .await
        .unwrap()
        .unwrap();
    runtimes.delete(runtime.id()).await.unwrap();
    tokio::time::timeout(WAIT, runtimes.wait_until_gone(runtime.id()))
        .await
        .expect("the runtime goes once its cluster is gone")
        .unwrap();
    assert_eq!(fake.cloud_inventory(), Vec::<String>::new());
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_buckets_and_secrets_become_part_of_their_workload() {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let sealer = Arc::new(Sealer::ephemeral().unwrap());
    let cluster = MemoryCluster::new();
    common::install_external_secrets_crd(&cluster).await;
    let clusters: Arc<dyn ClusterProvider> = Arc::new(SingleCluster(Arc::new(cluster.clone())));
    let fake = Arc::new(MemoryAws::new());
    let aws: Arc<dyn AwsProvider> = Arc::new(FixedAws(AwsServices::memory(fake.clone())));
    run(&memory, &shutdown, WorkloadDefinitionReconciler);
    run(
        &memory,
        &shutdown,
        WorkloadInstanceReconciler::new(clusters, sealer.clone()),
    );
    run(&memory, &shutdown, BucketReconciler::new(aws.clone()));
    run(
        &memory,
        &shutdown,
        DatabaseReconciler::new(aws.clone(), sealer.clone()),
    );
    run(&memory, &shutdown, SecretReconciler::new(aws.clone()));
    run(&memory, &shutdown, SecretInstanceReconciler::default());

    let store = memory.store.clone();
    let account = Api::<AwsAccount>::new(store.clone())
        .create("main", account())
        .await
        .unwrap();
    common::default_existing_runtime(&store).await;
    let definition = Api::<WorkloadDefinition>::new(store.clone())
        .create(
            "shop",
            WorkloadDefinition {
                yaml_document: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\nspec:\n  selector:\n    matchLabels: {app: shop}\n  template:\n    metadata:\n      labels: {app: shop}\n    spec:\n      serviceAccountName: shop\n      containers:\n      - name: app\n        image: shop:1\n".into(),
            },
        )
        .await
        .unwrap();
    let workloads = Api::<WorkloadInstance>::new(store.clone());
    let workload = workloads
        .create(
            "shop",
            WorkloadInstance {
                definition: definition.id(),
                runtime: None,
            },
        )
        .await
        .unwrap();
    let workload = tokio::time::timeout(
        WAIT,
        workloads.wait_until(workload.id(), |o| o.is_reconciled()),
    )
    .await
    .unwrap()
    .unwrap();
    let namespace = workload.status.details.namespace.clone().unwrap();
    let ns = Some(namespace.as_str());

    // A database, a bucket and a secret for it.
    let (databases, database) = attach_orders_database(&store, account.id(), workload.id()).await;
    let bucket_definition = Api::<AwsObjectStorageBucketDefinition>::new(store.clone())
        .create(
            "media",
            AwsObjectStorageBucketDefinition {
                aws_account: account.id(),
                public_read_access: false,
                workload_service_account_name: "shop".into(),
                workload_bucket_env_var: "MEDIA_BUCKET".into(),
            },
        )
        .await
        .unwrap();
    let buckets = Api::<AwsObjectStorageBucketInstance>::new(store.clone());
    let bucket = buckets
        .create(
            "media",
            AwsObjectStorageBucketInstance {
                definition: bucket_definition.id(),
                workload_instance: workload.id(),
            },
        )
        .await
        .unwrap();
    let secrets = Api::<SecretDefinition>::new(store.clone());
    let secret = secrets
        .create(
            "api-keys",
            SecretDefinition {
                aws_account: account.id(),
            },
        )
        .await
        .unwrap();
    memory
        .bus
        .publish(
            Notification::new(SecretDefinition::KIND, secret.id(), Operation::Created, 1)
                .with_secret(SecretValues(
                    [("stripe".to_owned(), "sk_1".to_owned())].into(),
                )),
        )
        .await
        .unwrap();
    Api::<SecretInstance>::new(store.clone())
        .create(
            "api-keys",
            SecretInstance {
                definition: secret.id(),
                workload_instance: Some(workload.id()),
                helm_workload_instance: None,
            },
        )
        .await
        .unwrap();

    // The connection Secret, with the password only the cluster sees.
    let connection = until(&cluster, &resource("v1", "Secret", ns, "orders-db"), |s| {
        s.is_some()
    })
    .await
    .unwrap();
    let data = &connection["stringData"];
    assert_eq!(
        data["db-endpoint"],
        format!(
            "{}.memory.rds.local",
            fake_identifier(&databases, database.id()).await
        )
    );
    assert_eq!(data["db-port"], "5432");
    assert_eq!(data["db-name"], "orders");
    assert_eq!(data["db-password"], master_password(&sealer, database.id()));
    // The bucket's name in the pods of its service account, and the role on that account.
    let bucket_name = buckets
        .get(bucket.id())
        .await
        .unwrap()
        .status
        .details
        .bucket;
    let bucket_name = bucket_name.expect("bucket recorded");
    until(
        &cluster,
        &resource("apps/v1", "Deployment", ns, "shop"),
        |d| {
            d.as_ref().is_some_and(|d| {
                d["spec"]["template"]["spec"]["containers"][0]["env"]
                    == json!([{"name": "MEDIA_BUCKET", "value": bucket_name}])
            })
        },
    )
    .await;
    let account_role = until(
        &cluster,
        &resource("v1", "ServiceAccount", ns, "shop"),
        |s| s.is_some(),
    )
    .await
    .unwrap();
    let role_arn = account_role["metadata"]["annotations"][ROLE_ANNOTATION]
        .as_str()
        .unwrap()
        .to_owned();
    let role_name = role_arn.rsplit('/').next().unwrap();
    let role = fake.role(role_name).expect("the role exists");
    assert!(
        role.inline_policy
            .as_deref()
            .unwrap()
            .contains(&bucket_name),
        "scoped to the bucket"
    );
    // The secret through the external-secrets operator; its value never in the cluster's
    // manifests or threeport's store.
    let external = until(
        &cluster,
        &resource("external-secrets.io/v1", "ExternalSecret", ns, "api-keys"),
        |s| s.is_some(),
    )
    .await
    .unwrap();
    assert_eq!(
        external["spec"]["dataFrom"][0]["extract"]["key"],
        "threeport/api-keys"
    );
    assert!(!external.to_string().contains("sk_1"));

    // A service removed: what it added goes from the workload.
    databases.delete(database.id()).await.unwrap();
    until(&cluster, &resource("v1", "Secret", ns, "orders-db"), |s| {
        s.is_none()
    })
    .await;
    buckets.delete(bucket.id()).await.unwrap();
    until(
        &cluster,
        &resource("apps/v1", "Deployment", ns, "shop"),
        |d| {
            d.as_ref()
                .is_some_and(|d| d["spec"]["template"]["spec"]["containers"][0]["env"].is_null())
        },
    )
    .await;
    // The workload drops the bucket's variables as soon as the bucket is going; the role
    // goes when its deletion finishes.
    tokio::time::timeout(WAIT, async {
        while fake.role(role_name).is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the bucket's role went with it");
    shutdown.cancel();
}

/// Threeport's issue #298: a secret attached to a Helm workload reaches its release (as an
/// ExternalSecret in the release's namespace), from a chart uploaded with its definition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_a_helm_workload() {
    use base64::Engine as _;
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let sealer = Arc::new(Sealer::ephemeral().unwrap());
    let cluster = MemoryCluster::new();
    common::install_external_secrets_crd(&cluster).await;
    let clusters: Arc<dyn ClusterProvider> = Arc::new(SingleCluster(Arc::new(cluster.clone())));
    let aws: Arc<dyn AwsProvider> =
        Arc::new(FixedAws(AwsServices::memory(Arc::new(MemoryAws::new()))));
    let scratch = common::process::temp_dir();
    let renderer = Arc::new(HelmCli::new(common::helm_bin(), scratch.join("cache")));
    run(
        &memory,
        &shutdown,
        HelmWorkloadInstanceReconciler::new(clusters, renderer, sealer.clone()),
    );
    run(&memory, &shutdown, SecretReconciler::new(aws.clone()));
    run(&memory, &shutdown, SecretInstanceReconciler::default());

    let store = memory.store.clone();
    let account = Api::<AwsAccount>::new(store.clone())
        .create("main", account())
        .await
        .unwrap();
    let runtime = common::default_existing_runtime(&store).await;
    // The chart as `helm package` makes it, uploaded with the definition.
    let packaged = std::process::Command::new(common::helm_bin())
        .args(["package", &common::chart_dir("webapp"), "--destination"])
        .arg(&scratch)
        .output()
        .unwrap();
    assert!(packaged.status.success(), "{packaged:?}");
    let archive = std::fs::read(scratch.join("webapp-1.0.0.tgz")).unwrap();
    let definition = Api::<HelmWorkloadDefinition>::new(store.clone())
        .create(
            "webapp",
            HelmWorkloadDefinition {
                repo: None,
                chart: None,
                chart_version: None,
                chart_archive: Some(base64::engine::general_purpose::STANDARD.encode(archive)),
                values: Some("migration:\n  enabled: false\n".into()),
                additional_resources: None,
            },
        )
        .await
        .unwrap();
    let instances = Api::<HelmWorkloadInstance>::new(store.clone());
    let instance = instances
        .create(
            "shop",
            HelmWorkloadInstance {
                definition: definition.id(),
                runtime: Some(runtime.id()),
                values_overrides: None,
                release_namespace: Some("shop".into()),
            },
        )
        .await
        .unwrap();
    let secret = Api::<SecretDefinition>::new(store.clone())
        .create(
            "api-keys",
            SecretDefinition {
                aws_account: account.id(),
            },
        )
        .await
        .unwrap();
    // The secret instance first, while the values are not stored yet: it waits for them
    // (as for a workload instance), and their arrival reaches the Helm workload through it.
    let secret_instances = Api::<SecretInstance>::new(store.clone());
    let secret_instance = secret_instances
        .create(
            "api-keys",
            SecretInstance {
                definition: secret.id(),
                workload_instance: None,
                helm_workload_instance: Some(instance.id()),
            },
        )
        .await
        .unwrap();
    tokio::time::timeout(
        WAIT,
        secret_instances.wait_until(secret_instance.id(), |o: &Object<SecretInstance>| {
            !o.status.conditions.is_empty() || o.status.state.is_stopped()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let waiting = secret_instances.get(secret_instance.id()).await.unwrap();
    assert!(
        waiting.is_reconciled(),
        "a secret for a Helm workload waits for its values: {:?}",
        waiting.status
    );
    memory
        .bus
        .publish(
            Notification::new(SecretDefinition::KIND, secret.id(), Operation::Created, 1)
                .with_secret(SecretValues(
                    [("stripe".to_owned(), "sk_1".to_owned())].into(),
                )),
        )
        .await
        .unwrap();

    // Released with the secret's ExternalSecret among its resources (the instance follows
    // its secrets: their values being stored brings it back).
    let released = tokio::time::timeout(
        WAIT,
        instances.wait_until(instance.id(), |o: &Object<HelmWorkloadInstance>| {
            o.is_reconciled()
                && o.status
                    .details
                    .workload
                    .resources
                    .iter()
                    .any(|r| r.kind == "ExternalSecret")
        }),
    )
    .await;
    let released = match released {
        Ok(released) => released.unwrap(),
        Err(_) => panic!(
            "the secret never reached the release: {:?}\nsecret instance: {:?}",
            instances.get(instance.id()).await.unwrap().status,
            Api::<SecretInstance>::new(store.clone())
                .get_by_name("api-keys")
                .await
                .unwrap()
                .status
        ),
    };
    assert_eq!(
        released.status.details.chart.as_deref(),
        Some("webapp-1.0.0")
    );
    let external = cluster
        .get(&resource(
            "external-secrets.io/v1",
            "ExternalSecret",
            Some("shop"),
            "api-keys",
        ))
        .await
        .unwrap()
        .expect("applied");
    assert_eq!(
        external["spec"]["dataFrom"][0]["extract"]["key"],
        "threeport/api-keys"
    );
    assert_eq!(
        external["metadata"]["labels"]["threeport.io/workload-instance"],
        instance.id().to_string()
    );
    assert!(
        cluster
            .get(&resource(
                "apps/v1",
                "Deployment",
                Some("shop"),
                "shop-webapp"
            ))
            .await
            .unwrap()
            .is_some()
    );
    shutdown.cancel();
}

async fn fake_identifier(databases: &Api<AwsRelationalDatabaseInstance>, id: ObjectId) -> String {
    databases
        .get(id)
        .await
        .unwrap()
        .status
        .details
        .identifier
        .unwrap()
}
