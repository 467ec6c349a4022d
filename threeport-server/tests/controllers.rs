//! The workload-definition controller on the memory backends: records follow the manifests,
//! bad manifests fail with the document named, deletion removes the records.

use std::time::Duration;

use threeport_core::{
    Api, ApiObject, Controller, LifecycleState, MemoryBackends, Object, ObjectRef, Store,
};
use threeport_server::controllers::{PassiveReconciler, WorkloadDefinitionReconciler};
use threeport_server::model::{WorkloadDefinition, WorkloadResourceDefinition};
use tokio_util::sync::CancellationToken;

const TWO: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec: {replicas: 1}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n";
const TEN_SECONDS: Duration = Duration::from_secs(10);
const ONE: &str =
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec: {replicas: 3}\n";

async fn records(
    memory: &MemoryBackends,
    definition: &Object<WorkloadDefinition>,
) -> Vec<Object<WorkloadResourceDefinition>> {
    let api = Api::<WorkloadResourceDefinition>::new(memory.store.clone());
    let mut records = Vec::new();
    let dependents = memory
        .store
        .dependents(WorkloadDefinition::KIND, definition.id())
        .await
        .unwrap_or_default();
    for dependent in dependents {
        let record = api.get(dependent.id).await.unwrap();
        // Owned, not labelled: labels belong to users.
        assert_eq!(
            record.meta.owners,
            vec![ObjectRef::new(WorkloadDefinition::KIND, definition.id())]
        );
        assert!(record.meta.labels.is_empty());
        if !record.is_deleting() {
            records.push(record);
        }
    }
    records
}

#[tokio::test]
async fn records_follow_the_manifests() {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    tokio::spawn(
        Controller::new(WorkloadDefinitionReconciler, memory.backends()).run(shutdown.clone()),
    );
    tokio::spawn(
        Controller::new(
            PassiveReconciler::new(WorkloadResourceDefinition::KIND),
            memory.backends(),
        )
        .run(shutdown.clone()),
    );
    let definitions = Api::<WorkloadDefinition>::new(memory.store.clone());

    let created = definitions
        .create(
            "web",
            WorkloadDefinition {
                yaml_document: TWO.into(),
            },
        )
        .await
        .unwrap();
    let done = tokio::time::timeout(
        TEN_SECONDS,
        definitions.wait_until(created.id(), |o| o.is_reconciled()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(done.status.details.resource_count, 2);
    assert_eq!(records(&memory, &done).await.len(), 2);

    // The service goes, the deployment changes.
    let mut changed = done.clone();
    changed.spec.yaml_document = ONE.into();
    let changed = definitions.update(&changed).await.unwrap();
    let done = tokio::time::timeout(
        TEN_SECONDS,
        definitions.wait_until(changed.id(), |o: &Object<WorkloadDefinition>| {
            o.is_reconciled() && o.status.observed_generation == changed.meta.generation
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let left = records(&memory, &done).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].spec.manifest["spec"]["replicas"], 3);

    // A resource without apiVersion is refused at create, naming the document...
    let bad_yaml = format!("{ONE}---\nkind: Service\nmetadata: {{name: x}}\n");
    let refused = definitions
        .create(
            "bad",
            WorkloadDefinition {
                yaml_document: bad_yaml.clone(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, threeport_core::Error::Invalid { field, message }
            if field.ends_with("yaml_document") && message.contains("document 1")),
        "{refused}"
    );
    // ...and one stored before that check existed fails in the controller, naming it too.
    let bad = threeport_core::Store::create(
        &*memory.store,
        threeport_core::NewObject {
            kind: "WorkloadDefinition".into(),
            name: "bad".into(),
            labels: Default::default(),
            references: vec![],
            owners: Vec::new(),
            spec: serde_json::json!({ "yaml_document": bad_yaml }),
        },
    )
    .await
    .unwrap();
    let failed = tokio::time::timeout(
        TEN_SECONDS,
        definitions.wait_until(bad.meta.id, |o| o.status.state.is_stopped()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_ne!(failed.status.state, LifecycleState::Reconciled);
    let reason = failed.status.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("document 1") && reason.contains("apiVersion"),
        "{reason}"
    );

    // Deleting the definition removes its records (owned: the cascade), then the definition.
    definitions.delete(done.id()).await.unwrap();
    tokio::time::timeout(TEN_SECONDS, definitions.wait_until_gone(done.id()))
        .await
        .unwrap()
        .unwrap();
    assert!(records(&memory, &done).await.is_empty());
    shutdown.cancel();
}

mod cluster_controllers {
    use std::sync::Arc;
    use std::time::Duration;

    use threeport_core::{Api, LifecycleState, MemoryBackends, Object};
    use threeport_k8s::{Cluster, MemoryCluster, ResourceRef};
    use threeport_server::controllers::{
        ClusterProvider, RuntimeReconciler, SingleCluster, WorkloadDefinitionReconciler,
        WorkloadInstanceReconciler, declared,
    };
    use threeport_server::model::*;
    use tokio_util::sync::CancellationToken;

    const TEN_SECONDS: Duration = Duration::from_secs(10);

    struct Plane {
        memory: MemoryBackends,
        cluster: MemoryCluster,
        shutdown: CancellationToken,
        sealer: Arc<threeport_server::Sealer>,
    }

    fn start() -> Plane {
        let memory = MemoryBackends::new();
        let shutdown = CancellationToken::new();
        memory.spawn_relay(shutdown.clone());
        let cluster = MemoryCluster::new();
        let clusters: Arc<dyn ClusterProvider> = Arc::new(SingleCluster(Arc::new(cluster.clone())));
        // As the controller table declares them: with what each follows.
        let sealer = Arc::new(threeport_server::Sealer::ephemeral().unwrap());
        let runtimes = RuntimeReconciler::new(clusters.clone(), sealer.clone());
        let runtimes = declared("kubernetes-runtime", runtimes, memory.backends()).unwrap();
        tokio::spawn(runtimes.run(shutdown.clone()));
        let instances = WorkloadInstanceReconciler::new(clusters, sealer.clone());
        let instances = declared("workload-instance", instances, memory.backends()).unwrap();
        tokio::spawn(instances.run(shutdown.clone()));
        let definitions = WorkloadDefinitionReconciler;
        let definitions = declared("workload-definition", definitions, memory.backends()).unwrap();
        tokio::spawn(definitions.run(shutdown.clone()));
        Plane {
            memory,
            cluster,
            shutdown,
            sealer,
        }
    }

    fn account() -> AwsAccount {
        AwsAccount {
            account_id: "123456789012".into(),
            default_region: "us-east-1".into(),
            default_account: true,
            credentials: AwsCredentials::Role {
                role_arn: "arn:aws:iam::123456789012:role/x".into(),
                external_id: None,
            },
        }
    }

    fn definition(
        provider: InfraProvider,
        account: Option<threeport_core::ObjectId>,
    ) -> KubernetesRuntimeDefinition {
        KubernetesRuntimeDefinition {
            infra_provider: provider,
            aws_account: account,
            high_availability: false,
            node_size: NodeSize::Medium,
            node_profile: NodeProfile::Balanced,
            node_maximum: 6,
        }
    }

    #[tokio::test]
    async fn an_eks_runtime_requests_its_cluster_from_the_aws_controller() {
        let plane = start();
        let store = plane.memory.store.clone();
        let account = Api::<AwsAccount>::new(store.clone())
            .create("main", account())
            .await
            .unwrap();
        let def = Api::<KubernetesRuntimeDefinition>::new(store.clone())
            .create("eks", definition(InfraProvider::Eks, Some(account.id())))
            .await
            .unwrap();
        let runtimes = Api::<KubernetesRuntimeInstance>::new(store.clone());
        let runtime = runtimes
            .create(
                "paris",
                KubernetesRuntimeInstance {
                    definition: def.id(),
                    location: "Europe:Paris".into(),
                    default_runtime: true,
                    agent: None,
                    support_services: Vec::new(),
                    connection: None,
                },
            )
            .await
            .unwrap();
        // It waits without polling: the EKS instance it owns (and follows) brings it back.
        let waiting = tokio::time::timeout(
            TEN_SECONDS,
            runtimes.wait_until(runtime.id(), |o| {
                o.status
                    .condition("ClusterReady")
                    .is_some_and(|c| c.reason == "WaitingForCluster")
            }),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(waiting.status.state, LifecycleState::Reconciled);
        let eks = Api::<AwsEksKubernetesRuntimeInstance>::new(store.clone())
            .get_by_name("paris")
            .await
            .unwrap();
        assert_eq!(
            (eks.spec.region.as_str(), eks.spec.runtime),
            ("eu-west-3", runtime.id())
        );
        assert_eq!(
            eks.meta.owners,
            vec![threeport_core::ObjectRef::new(
                "KubernetesRuntimeInstance",
                runtime.id()
            )],
            "the runtime owns its EKS instance"
        );
        let eks_def = Api::<AwsEksKubernetesRuntimeDefinition>::new(store.clone())
            .get(eks.spec.definition)
            .await
            .unwrap();
        assert_eq!(eks_def.spec.aws_account, account.id());

        // The AWS controller (issue 7) would write the connection data; then it is checked.
        let mut connected = runtimes.get(runtime.id()).await.unwrap();
        connected.spec.connection = Some(ConnectionData {
            api_endpoint: "https://eks.example.com".into(),
            ca_certificate: None,
            token: None,
            client_certificate: None,
            client_key: None,
            kubeconfig: None,
        });
        runtimes.update(&connected).await.unwrap();
        tokio::time::timeout(
            TEN_SECONDS,
            runtimes.wait_until(runtime.id(), |o: &Object<KubernetesRuntimeInstance>| {
                o.is_reconciled()
            }),
        )
        .await
        .unwrap()
        .unwrap();
        plane.shutdown.cancel();
    }

    #[tokio::test]
    async fn crds_custom_resources_and_lists_deploy_together() {
        let plane = start();
        let store = plane.memory.store.clone();
        let def = Api::<KubernetesRuntimeDefinition>::new(store.clone())
            .create("existing", definition(InfraProvider::Existing, None))
            .await
            .unwrap();
        Api::<KubernetesRuntimeInstance>::new(store.clone())
            .create(
                "local",
                KubernetesRuntimeInstance {
                    definition: def.id(),
                    location: "Europe:Paris".into(),
                    default_runtime: true,
                    agent: None,
                    support_services: Vec::new(),
                    connection: Some(ConnectionData {
                        api_endpoint: "https://k8s.example.com".into(),
                        ca_certificate: None,
                        token: None,
                        client_certificate: None,
                        client_key: None,
                        kubeconfig: None,
                    }),
                },
            )
            .await
            .unwrap();
        // A custom resource before its CRD, and a List, in one file with its own namespace.
        let yaml = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: shop}\nspec: {size: 2}\n---\n# the definition\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {kind: Widget, plural: widgets}\n  versions: [{name: v1, served: true, storage: true}]\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: shop}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b, namespace: shop}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
        let workload = Api::<WorkloadDefinition>::new(store.clone())
            .create(
                "widgets",
                WorkloadDefinition {
                    yaml_document: yaml.into(),
                },
            )
            .await
            .unwrap();
        let instances = Api::<WorkloadInstance>::new(store.clone());
        let instance = instances
            .create(
                "widgets",
                WorkloadInstance {
                    definition: workload.id(),
                    runtime: None,
                },
            )
            .await
            .unwrap();
        let done = tokio::time::timeout(
            TEN_SECONDS,
            instances.wait_until(instance.id(), |o: &Object<WorkloadInstance>| {
                o.is_reconciled() && o.status.details.resources.len() == 5
            }),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            done.status.details.namespace, None,
            "the manifests bring their namespace"
        );
        let widget = ResourceRef {
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            namespace: Some("shop".into()),
            name: "w".into(),
        };
        let live = plane
            .cluster
            .get(&widget)
            .await
            .unwrap()
            .expect("the custom resource is there");
        assert_eq!(
            live["metadata"]["labels"]["threeport.io/workload-instance"],
            instance.id().to_string()
        );
        plane.shutdown.cancel();
    }

    #[tokio::test]
    async fn a_runtime_asking_for_an_agent_gets_one_and_loses_it() {
        let plane = start();
        let store = plane.memory.store.clone();
        let def = Api::<KubernetesRuntimeDefinition>::new(store.clone())
            .create("existing", definition(InfraProvider::Existing, None))
            .await
            .unwrap();
        // Through the store directly: the API would seal the token; here the test does.
        let sealed = plane.sealer.seal("spec.agent.token", "tp_agent").unwrap();
        let runtimes = Api::<KubernetesRuntimeInstance>::new(store.clone());
        let runtime = runtimes
            .create(
                "remote",
                KubernetesRuntimeInstance {
                    definition: def.id(),
                    location: "Europe:Paris".into(),
                    default_runtime: true,
                    agent: Some(RuntimeAgent {
                        api_url: "https://threeport.example.com".into(),
                        token: sealed,
                        api_ca: None,
                        image: Some("registry.example.com/threeport-server:test".into()),
                    }),
                    support_services: Vec::new(),
                    connection: Some(ConnectionData {
                        api_endpoint: "https://k8s.example.com".into(),
                        ca_certificate: None,
                        token: None,
                        client_certificate: None,
                        client_key: None,
                        kubeconfig: None,
                    }),
                },
            )
            .await
            .unwrap();
        let installed = tokio::time::timeout(
            TEN_SECONDS,
            runtimes.wait_until(runtime.id(), |o: &Object<KubernetesRuntimeInstance>| {
                o.is_reconciled() && o.status.details.agent_installed
            }),
        )
        .await
        .unwrap()
        .unwrap();
        let named = |kind: &str, api_version: &str, namespaced: bool| ResourceRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespaced.then(|| "threeport-agent".into()),
            name: "threeport-agent".into(),
        };
        let deployment = plane
            .cluster
            .get(&named("Deployment", "apps/v1", true))
            .await
            .unwrap()
            .expect("the agent's deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["image"],
            "registry.example.com/threeport-server:test"
        );
        assert_eq!(container["args"], serde_json::json!(["agent"]));
        let secret = plane
            .cluster
            .get(&named("Secret", "v1", true))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            secret["stringData"]["token"], "tp_agent",
            "opened for the cluster"
        );
        assert!(
            plane
                .cluster
                .get(&named("ClusterRole", "rbac.authorization.k8s.io/v1", false))
                .await
                .unwrap()
                .is_some()
        );

        // No agent wanted any more: it goes.
        let mut without = installed.clone();
        without.spec.agent = None;
        runtimes.update(&without).await.unwrap();
        tokio::time::timeout(
            TEN_SECONDS,
            runtimes.wait_until(runtime.id(), |o: &Object<KubernetesRuntimeInstance>| {
                o.is_reconciled() && !o.status.details.agent_installed
            }),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(
            plane
                .cluster
                .get(&named("Deployment", "apps/v1", true))
                .await
                .unwrap()
                .is_none()
        );
        plane.shutdown.cancel();
    }
}
