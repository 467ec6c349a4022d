//! Workload health from the cluster, over the wire: the control plane's runtime watcher
//! (`KubeCluster` against the fake API server) folds Deployments, pods and events into the
//! instance's status: ready → healthy, crashing → degraded with a warning event, nothing
//! available → down; a dropped watch, a forced 410 and a restarted watcher converge without
//! duplicating an event; the number of watches does not grow with the instances.

mod common;

use std::sync::Arc;
use std::time::Duration;

use threeport_core::health::HealthStatus;
use threeport_core::{Api, Backends, EventType, MemoryBackends, Object, ObjectId};
use threeport_k8s::{FakeApiServer, MemoryCluster, PodState, ResourceRef};
use threeport_server::Sealer;
use threeport_server::controllers::{
    ClusterProvider, HealthConfig, HealthWatchers, KubeClusters, WorkloadDefinitionReconciler,
    WorkloadInstanceReconciler, declared, health::WATCHED_KINDS,
};
use threeport_server::model::*;
use tokio_util::sync::CancellationToken;

const TEN_SECONDS: Duration = Duration::from_secs(10);

const WORKLOAD: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec: {selector: {app: web}, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata: {a: b}\n";

struct Plane {
    memory: MemoryBackends,
    server: FakeApiServer,
    clusters: Arc<dyn ClusterProvider>,
    shutdown: CancellationToken,
    watchers: CancellationToken,
    registry: std::sync::Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
    metrics: threeport_server::controllers::health::HealthMetrics,
}

fn fast() -> HealthConfig {
    HealthConfig {
        poll: Duration::from_millis(100),
        lease_ttl: Duration::from_secs(2),
        flush: Duration::from_millis(50),
        custom_kinds_every: Duration::from_millis(200),
    }
}

impl Plane {
    async fn start() -> Plane {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let memory = MemoryBackends::new();
        let shutdown = CancellationToken::new();
        memory.spawn_relay(shutdown.clone());
        let server = FakeApiServer::start(MemoryCluster::new()).await.unwrap();
        server
            .cluster
            .set_bookmark_interval(Duration::from_millis(100));
        let sealer = Arc::new(Sealer::ephemeral().unwrap());
        let clusters: Arc<dyn ClusterProvider> = Arc::new(KubeClusters::new(sealer.clone()));
        let instances = WorkloadInstanceReconciler::new(clusters.clone(), sealer);
        let instances = declared("workload-instance", instances, memory.backends()).unwrap();
        tokio::spawn(instances.run(shutdown.clone()));
        let definitions = declared(
            "workload-definition",
            WorkloadDefinitionReconciler,
            memory.backends(),
        )
        .unwrap();
        tokio::spawn(definitions.run(shutdown.clone()));
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = threeport_server::controllers::health::HealthMetrics::register(&mut registry);
        let plane = Plane {
            memory,
            server,
            clusters,
            shutdown,
            watchers: CancellationToken::new(),
            registry: Arc::new(std::sync::Mutex::new(registry)),
            metrics,
        };
        plane.start_watchers();
        plane.runtime().await;
        plane
    }

    /// The watchers' metrics, as `/metrics` shows them.
    fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry.lock().unwrap())
            .unwrap();
        text
    }

    fn backends(&self) -> Backends {
        self.memory.backends()
    }

    /// Starts the health watchers (again, after [`stop_watchers`]).
    fn start_watchers(&self) {
        let watchers = HealthWatchers::new(self.clusters.clone(), self.backends(), fast())
            .with_metrics(self.metrics.clone());
        tokio::spawn(watchers.run(self.watchers.clone()));
    }

    async fn runtime(&self) -> ObjectId {
        let store = self.memory.store.clone();
        let connection = ConnectionData {
            api_endpoint: self.server.url.clone(),
            ca_certificate: None,
            token: None,
            client_certificate: None,
            client_key: None,
            kubeconfig: None,
        };
        common::existing_runtime(&store, "local", Some(connection))
            .await
            .id()
    }

    /// A reconciled workload instance of [`WORKLOAD`].
    async fn instance(&self, name: &str) -> Object<WorkloadInstance> {
        self.instance_of(name, WORKLOAD).await
    }

    /// A reconciled workload instance of `yaml`.
    async fn instance_of(&self, name: &str, yaml: &str) -> Object<WorkloadInstance> {
        let store = self.memory.store.clone();
        let definition = Api::<WorkloadDefinition>::new(store.clone())
            .create(
                name,
                WorkloadDefinition {
                    yaml_document: yaml.into(),
                },
            )
            .await
            .unwrap();
        let instances = Api::<WorkloadInstance>::new(store);
        let instance = instances
            .create(
                name,
                WorkloadInstance {
                    definition: definition.id(),
                    runtime: None,
                },
            )
            .await
            .unwrap();
        tokio::time::timeout(
            TEN_SECONDS,
            instances.wait_until(instance.id(), |o: &Object<WorkloadInstance>| {
                o.is_reconciled()
            }),
        )
        .await
        .expect("reconciled within 10 s")
        .unwrap()
    }

    fn deployment(&self, instance: &Object<WorkloadInstance>) -> ResourceRef {
        ResourceRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: instance.status.details.namespace.clone(),
            name: "web".into(),
        }
    }

    /// Waits (up to 10 s) until the instance's health is `status`.
    async fn health(&self, id: ObjectId, status: HealthStatus) -> Object<WorkloadInstance> {
        let instances = Api::<WorkloadInstance>::new(self.memory.store.clone());
        let waited = tokio::time::timeout(
            TEN_SECONDS,
            instances.wait_until(id, |o: &Object<WorkloadInstance>| {
                o.status.details.health.as_ref().map(|h| h.status) == Some(status)
            }),
        )
        .await;
        match waited {
            Ok(found) => found.unwrap(),
            Err(_) => panic!(
                "health never became {status}: {:?}",
                instances.get(id).await.unwrap().status.details.health
            ),
        }
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.watchers.cancel();
        self.shutdown.cancel();
    }
}

/// The cluster events in an instance's status, by UID: each at most once.
fn cluster_events(instance: &Object<WorkloadInstance>) -> Vec<(String, u32)> {
    let events: Vec<(String, u32)> = instance
        .status
        .events
        .iter()
        .filter_map(|e| e.uid.clone().map(|uid| (uid, e.count)))
        .collect();
    let mut uids: Vec<&String> = events.iter().map(|(uid, _)| uid).collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), events.len(), "an event twice: {events:?}");
    events
}

/// Custom resources count by their `Ready` condition: the watcher learns from the instances
/// which custom kinds they deployed, and watches those too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_count_by_their_ready_condition() {
    use threeport_k8s::Cluster;
    let plane = Plane::start().await;
    let cluster = &plane.server.cluster;
    let crd = serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "subresources": {"status": {}}}]}});
    cluster.apply(&crd, "operator").await.unwrap();
    let yaml = format!(
        "{WORKLOAD}---\napiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: gear\nspec: {{size: 3}}\n"
    );
    let instance = plane.instance_of("gears", &yaml).await;
    cluster
        .set_pods(&plane.deployment(&instance), PodState::Ready, 2)
        .unwrap();
    let widget = ResourceRef {
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        namespace: instance.status.details.namespace.clone(),
        name: "gear".into(),
    };
    // No condition yet: nothing to say against it.
    plane.health(instance.id(), HealthStatus::Healthy).await;
    cluster
        .set_status(
            &widget,
            &serde_json::json!({"conditions": [{"type": "Ready", "status": "False",
                "reason": "QuotaExceeded", "message": "waiting for quota"}]}),
        )
        .unwrap();
    let degraded = plane.health(instance.id(), HealthStatus::Degraded).await;
    let health = degraded.status.details.health.unwrap();
    assert!(
        health.reason.contains("Widget") && health.reason.contains("waiting for quota"),
        "{health:?}"
    );
    let recorded = degraded
        .status
        .details
        .resources
        .iter()
        .find(|r| r.kind == "Widget")
        .and_then(|r| r.health.clone())
        .map(|h| h.status);
    assert_eq!(recorded, Some(HealthStatus::Degraded));
    cluster
        .set_status(
            &widget,
            &serde_json::json!({"conditions": [{"type": "Ready", "status": "True"}]}),
        )
        .unwrap();
    plane.health(instance.id(), HealthStatus::Healthy).await;
    // One more watch for the custom kind, whatever the number of its objects.
    assert_eq!(cluster.open_watches(), WATCHED_KINDS.len() + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_pods_and_events_are_kept_once() {
    let plane = Plane::start().await;
    let instance = plane.instance("shop").await;
    let deployment = plane.deployment(&instance);
    let cluster = &plane.server.cluster;

    // Applied, no pods yet: the rollout has not started.
    let seen = plane.health(instance.id(), HealthStatus::Progressing).await;
    let resources = &seen.status.details.resources;
    assert_eq!(
        resources
            .iter()
            .find(|r| r.kind == "Service")
            .and_then(|r| r.health.as_ref())
            .map(|h| h.status),
        Some(HealthStatus::Healthy)
    );
    assert_eq!(
        resources
            .iter()
            .find(|r| r.kind == "ConfigMap")
            .unwrap()
            .health,
        None,
        "kinds without a health of their own are not watched"
    );

    cluster.set_pods(&deployment, PodState::Ready, 2).unwrap();
    let healthy = plane.health(instance.id(), HealthStatus::Healthy).await;
    let web = healthy
        .status
        .details
        .resources
        .iter()
        .find(|r| r.kind == "Deployment")
        .unwrap();
    assert_eq!(web.health.as_ref().unwrap().status, HealthStatus::Healthy);

    cluster
        .set_pods(&deployment, PodState::CrashLoop, 2)
        .unwrap();
    let degraded = plane.health(instance.id(), HealthStatus::Degraded).await;
    let reason = &degraded.status.details.health.as_ref().unwrap().reason;
    assert!(reason.contains("CrashLoopBackOff"), "{reason}");
    let warning = degraded
        .status
        .events
        .iter()
        .find(|e| e.type_ == EventType::Warning && e.reason == "BackOff")
        .expect("the kubelet's warning");
    assert!(warning.about.as_deref().unwrap().starts_with("Pod "));
    cluster_events(&degraded);

    // The same event again raises its count; it is not added twice.
    let pods = threeport_k8s::Cluster::list(cluster, "v1", "Pod", deployment.namespace.as_deref());
    let pod = pods.await.unwrap().into_iter().next().unwrap();
    cluster
        .record_event(
            &pod,
            "Warning",
            "BackOff",
            "Back-off restarting failed container",
        )
        .unwrap();
    let instances = Api::<WorkloadInstance>::new(plane.memory.store.clone());
    let counted = tokio::time::timeout(
        TEN_SECONDS,
        instances.wait_until(instance.id(), |o: &Object<WorkloadInstance>| {
            o.status
                .events
                .iter()
                .any(|e| e.reason == "BackOff" && e.count == 2)
        }),
    )
    .await
    .expect("the count raised")
    .unwrap();
    cluster_events(&counted);

    // The rollout finished, and none of its pods is available now (not schedulable): down.
    cluster.set_pods(&deployment, PodState::Pending, 2).unwrap();
    let down = plane.health(instance.id(), HealthStatus::Down).await;
    assert_eq!(
        down.status.details.health.unwrap().reason,
        format!(
            "Deployment {}/web: 0 of 2 replicas available",
            deployment.namespace.as_deref().unwrap()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_410_and_restarts_lose_nothing_and_duplicate_nothing() {
    let mut plane = Plane::start().await;
    let instance = plane.instance("shop").await;
    let deployment = plane.deployment(&instance);
    let cluster = plane.server.cluster.clone();
    cluster
        .set_pods(&deployment, PodState::CrashLoop, 2)
        .unwrap();
    let degraded = plane.health(instance.id(), HealthStatus::Degraded).await;
    let before = cluster_events(&degraded);

    // The connections drop and the change happens while they are down.
    cluster.close_watches();
    cluster.set_pods(&deployment, PodState::Ready, 2).unwrap();
    plane.health(instance.id(), HealthStatus::Healthy).await;

    // The API server forgets the history: the watcher lists again.
    cluster.expire_watches();
    cluster
        .set_pods(&deployment, PodState::CrashLoop, 2)
        .unwrap();
    plane.health(instance.id(), HealthStatus::Degraded).await;

    // The watcher restarts (a controller restart): it lists every event again.
    plane.watchers.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    plane.watchers = CancellationToken::new();
    plane.start_watchers();
    cluster.set_pods(&deployment, PodState::Ready, 2).unwrap();
    let healthy = plane.health(instance.id(), HealthStatus::Healthy).await;
    let after = cluster_events(&healthy);
    for (uid, _) in &before {
        assert!(after.iter().any(|(u, _)| u == uid), "event {uid} kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_makes_health_unknown_until_it_answers() {
    let plane = Plane::start().await;
    let instance = plane.instance("shop").await;
    let deployment = plane.deployment(&instance);
    plane
        .server
        .cluster
        .set_pods(&deployment, PodState::Ready, 2)
        .unwrap();
    plane.health(instance.id(), HealthStatus::Healthy).await;
    plane.server.set_available(false);
    let unknown = plane.health(instance.id(), HealthStatus::Unknown).await;
    let reason = unknown.status.details.health.unwrap().reason;
    assert!(reason.starts_with("cannot watch the cluster"), "{reason}");
    let text = plane.metrics_text();
    let unreachable: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix("threeport_health_unreachable_watches "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(unreachable >= 1, "{text}");
    // It changed meanwhile; once it answers, that shows.
    plane
        .server
        .cluster
        .set_pods(&deployment, PodState::CrashLoop, 2)
        .unwrap();
    plane.server.set_available(true);
    plane.health(instance.id(), HealthStatus::Degraded).await;
    let text = plane.metrics_text();
    assert!(text.contains("threeport_health_runtimes 1"), "{text}");
    assert!(
        text.contains("threeport_health_reports_total{outcome=\"recorded\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_do_not_grow_with_instances() {
    let plane = Plane::start().await;
    let first = plane.instance("one").await;
    plane.health(first.id(), HealthStatus::Progressing).await;
    let watches = plane.server.cluster.open_watches();
    assert_eq!(watches, WATCHED_KINDS.len() + 1, "one per kind, and events");
    for name in ["two", "three", "four"] {
        let instance = plane.instance(name).await;
        plane.health(instance.id(), HealthStatus::Progressing).await;
    }
    assert_eq!(plane.server.cluster.open_watches(), watches);

    // A runtime that goes takes its watches with it.
    let runtimes = Api::<KubernetesRuntimeInstance>::new(plane.memory.store.clone());
    let runtime = runtimes.get_by_name("local").await.unwrap();
    let mut agent = runtime.clone();
    agent.spec.agent = Some(RuntimeAgent {
        api_url: "https://threeport.example.com".into(),
        token: "tp_agent".into(),
        api_ca: None,
        image: None,
    });
    runtimes.update(&agent).await.unwrap();
    tokio::time::timeout(TEN_SECONDS, async {
        while plane.server.cluster.open_watches() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("watches stopped once an agent watches the runtime");
}
