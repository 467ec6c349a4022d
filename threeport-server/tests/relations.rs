//! Relations and owners through the whole control plane: every stock controller, over HTTP, on
//! the memory backends (one replica of each controller) and on PostgreSQL + NATS (two replicas
//! of each). A watchdog store under the controllers fails the tests if any controller writes
//! a label or bumps a `generation` (a spec write).
//!
//! - a composite workload's parts keep the names the request gives them; a database turning
//!   ready reaches its workload (no label, no polling); `DELETE /v0/workloads/{name}`
//!   previews, then removes every part;
//! - deleting a runtime definition (foreground) removes its instances' cluster resources
//!   before the runtime instance and the definition go;
//! - an `orphan` delete keeps the dependents.

mod common;

#[path = "../../threeport-store/tests/common/mod.rs"]
mod postgres;

#[path = "../../threeport-bus/tests/common/mod.rs"]
mod nats;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::registry::Registry;
use reqwest::StatusCode;
use serde_json::{Value, json};
use threeport_aws::MemoryAws;
use threeport_core::store::{IdempotencyKey, ListPage, ListQuery, Once, SpecUpdate, StatusWrite};
use threeport_core::{
    Backends, Bus, ControllerConfig, MemoryBackends, NewObject, ObjectId, ObjectRef, OutboxRelay,
    Propagation, RawObject, Relation, RelayConfig, Result, Store,
};
use threeport_k8s::{Cluster, MemoryCluster, ResourceRef};
use threeport_server::auth::mint_token;
use threeport_server::controllers::{
    AwsServices, FixedAws, Providers, SingleCluster, available, spawn,
};
use threeport_server::{ApiState, Ops, Sealer, TokenSet, app, model};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: app\n        image: web:1\n";

/// The store as the controllers see it: every call goes through, and what no controller may
/// do is written down.
#[derive(Debug)]
struct Watchdog {
    inner: Arc<dyn Store>,
    violations: Arc<Mutex<Vec<String>>>,
    /// Held across the removal itself, so the log's order is the order removals happened
    /// (shared by every replica's watchdog).
    removals: Arc<tokio::sync::Mutex<Vec<ObjectRef>>>,
}

#[async_trait]
impl Store for Watchdog {
    async fn create(&self, new: NewObject) -> Result<RawObject> {
        self.inner.create(new).await
    }
    async fn create_all(&self, objects: Vec<(ObjectId, NewObject)>) -> Result<Vec<RawObject>> {
        self.inner.create_all(objects).await
    }
    async fn create_all_once(
        &self,
        key: &IdempotencyKey,
        objects: Vec<(ObjectId, NewObject)>,
    ) -> Result<Once> {
        self.inner.create_all_once(key, objects).await
    }
    async fn get(&self, kind: &str, id: ObjectId) -> Result<RawObject> {
        self.inner.get(kind, id).await
    }
    async fn list(&self, kind: &str, query: &ListQuery) -> Result<ListPage> {
        self.inner.list(kind, query).await
    }
    async fn update(&self, kind: &str, id: ObjectId, update: SpecUpdate) -> Result<RawObject> {
        let before = self.inner.get(kind, id).await?;
        let what = if before.meta.labels != update.labels {
            "wrote labels on"
        } else {
            "wrote the spec of (bumping its generation)"
        };
        self.violations
            .lock()
            .unwrap()
            .push(format!("a controller {what} {kind} {}", before.meta.name));
        self.inner.update(kind, id, update).await
    }
    async fn update_status(
        &self,
        kind: &str,
        id: ObjectId,
        write: StatusWrite,
    ) -> Result<RawObject> {
        let before = self.inner.get(kind, id).await?.meta;
        let written = self.inner.update_status(kind, id, write).await?;
        // Only when nothing else wrote in between (a user's DELETE bumps the generation).
        if written.meta.version == before.version + 1
            && written.meta.generation != before.generation
        {
            self.violations.lock().unwrap().push(format!(
                "a status write bumped the generation of {kind} {}",
                written.meta.name
            ));
        }
        Ok(written)
    }
    async fn schedule_deletion_with(
        &self,
        kind: &str,
        id: ObjectId,
        expected_version: Option<u64>,
        propagation: Propagation,
    ) -> Result<RawObject> {
        self.inner
            .schedule_deletion_with(kind, id, expected_version, propagation)
            .await
    }
    async fn dependents(&self, kind: &str, id: ObjectId) -> Result<Vec<ObjectRef>> {
        self.inner.dependents(kind, id).await
    }
    async fn register_relations(&self, relations: &[Relation]) -> Result<()> {
        self.inner.register_relations(relations).await
    }
    async fn remove(&self, kind: &str, id: ObjectId, fence: Option<u64>) -> Result<()> {
        let mut removals = self.removals.lock().await;
        self.inner.remove(kind, id, fence).await?;
        removals.push(ObjectRef::new(kind, id));
        Ok(())
    }
}

/// A control plane: the API over HTTP and every stock controller, `replicas` of each.
struct Plane {
    base: String,
    token: String,
    http: reqwest::Client,
    cluster: MemoryCluster,
    violations: Arc<Mutex<Vec<String>>>,
    removals: Arc<tokio::sync::Mutex<Vec<ObjectRef>>>,
    shutdown: CancellationToken,
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Plane {
    /// `store` and `bus` for the API; `replicas` backends for the controllers, each with its
    /// own bus connection and locker.
    async fn start(store: Arc<dyn Store>, bus: Arc<dyn Bus>, replicas: Vec<Backends>) -> Plane {
        let shutdown = CancellationToken::new();
        let sealer = Arc::new(Sealer::ephemeral().unwrap());
        let cluster = MemoryCluster::new();
        common::install_external_secrets_crd(&cluster).await;
        let providers = Providers {
            clusters: Arc::new(SingleCluster(Arc::new(cluster.clone()))),
            aws: Arc::new(FixedAws(AwsServices::memory(Arc::new(MemoryAws::new())))),
            sealer: sealer.clone(),
            health: Default::default(),
            support_charts: Default::default(),
            public_url: None,
            terraform: Default::default(),
            charts: Arc::new(threeport_server::controllers::helm::HelmCli::from_path()),
        };
        let violations = Arc::new(Mutex::new(Vec::new()));
        let removals = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        for backends in replicas {
            let watched = Backends {
                store: Arc::new(Watchdog {
                    inner: backends.store.clone(),
                    violations: violations.clone(),
                    removals: removals.clone(),
                }),
                ..backends
            };
            let metrics = Arc::new(Mutex::new(Registry::default()));
            let families =
                threeport_core::ControllerMetricFamilies::register(&mut metrics.lock().unwrap());
            let tuning = ControllerConfig {
                concurrency: 4,
                ..ControllerConfig::default()
            };
            for name in available() {
                spawn(
                    name,
                    watched.clone(),
                    &providers,
                    &metrics,
                    &families,
                    &tuning,
                    shutdown.clone(),
                )
                .unwrap();
            }
        }
        let minted = mint_token().unwrap();
        let mut tokens = TokenSet::new();
        tokens.add_hash(&minted.hash).unwrap();
        let state = ApiState {
            store,
            bus,
            locker: Arc::new(threeport_core::MemoryLocker::new()),
            kinds: Arc::new(model::registry()),
            sealer,
        };
        let router = app(state, Some(Arc::new(tokens)), Ops::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        // The controllers have registered their relations before the first write.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Plane {
            base: format!("http://{addr}"),
            token: minted.token,
            http: common::http_client(),
            cluster,
            violations,
            removals,
            shutdown,
        }
    }

    async fn memory() -> Plane {
        let memory = MemoryBackends::new();
        let shutdown = CancellationToken::new();
        memory.spawn_relay(shutdown.clone());
        let plane = Plane::start(
            memory.store.clone(),
            memory.bus.clone(),
            vec![memory.backends()],
        )
        .await;
        // The relay stops with the plane.
        let stop = plane.shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            shutdown.cancel();
        });
        plane
    }

    async fn postgres_and_nats(nats: &nats::NatsServer) -> Plane {
        let config = threeport_store::ConnectOptions::default();
        let store = Arc::new(
            threeport_store::PgStore::connect(&postgres::fresh_postgres().await, &config)
                .await
                .unwrap(),
        );
        let bus_for = || async {
            let client = threeport_bus::connect(&nats.url, Duration::from_secs(5))
                .await
                .unwrap();
            Arc::new(threeport_bus::NatsBus::new(
                client,
                threeport_bus::NatsConfig::default(),
            ))
        };
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let bus = bus_for().await;
            replicas.push(Backends {
                store: store.clone(),
                bus: bus.clone(),
                locker: Arc::new(bus.locker().await.unwrap()),
            });
        }
        let api_bus = bus_for().await;
        let plane = Plane::start(store.clone(), api_bus.clone(), replicas).await;
        let relay = OutboxRelay::new(store, api_bus, RelayConfig::default());
        tokio::spawn(relay.run(plane.shutdown.clone()));
        plane
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, plural: &str, body: Value) -> Value {
        let (status, created) = self
            .send(reqwest::Method::POST, &format!("/v0/{plural}"), Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    async fn get(&self, plural: &str, id: &str) -> Option<Value> {
        let (status, got) = self
            .send(reqwest::Method::GET, &format!("/v0/{plural}/{id}"), None)
            .await;
        match status {
            StatusCode::OK => Some(got),
            StatusCode::NOT_FOUND => None,
            other => panic!("GET {plural}/{id}: {other} {got}"),
        }
    }

    async fn named(&self, plural: &str, name: &str) -> Option<Value> {
        let (status, page) = self
            .send(
                reqwest::Method::GET,
                &format!("/v0/{plural}?name={name}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["items"].as_array().unwrap().first().cloned()
    }

    /// Waits until object `id` satisfies `done` (`None`: gone).
    async fn until(
        &self,
        plural: &str,
        id: &str,
        what: &str,
        done: impl Fn(Option<&Value>) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.get(plural, id).await;
            if done(got.as_ref()) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{plural}/{id}: {what} never happened; last seen {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn assert_no_violations(&self) {
        let violations = self.violations.lock().unwrap();
        assert!(
            violations.is_empty(),
            "controllers must not write labels or specs: {violations:?}"
        );
    }

    /// An existing runtime (the fake cluster) and an AWS account.
    /// Whether the test workload's deployment is on the cluster in `namespace`.
    async fn deployed_in(&self, namespace: &str) -> bool {
        let deployment = ResourceRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some(namespace.into()),
            name: "web".into(),
        };
        self.cluster.get(&deployment).await.unwrap().is_some()
    }

    async fn runtime_and_account(&self, name: &str, default: bool) -> (Value, Value, Value) {
        let account = self
            .create(
                "aws-accounts",
                json!({"name": name, "spec": {"account_id": "123456789012", "default_region": "us-east-1",
                    "default_account": false,
                    "credentials": {"role": {"role_arn": "arn:aws:iam::123456789012:role/threeport"}}}}),
            )
            .await;
        let definition = self
            .create(
                "kubernetes-runtime-definitions",
                json!({"name": name, "spec": {"infra_provider": "existing", "high_availability": false,
                    "node_size": "medium", "node_profile": "balanced", "node_maximum": 4}}),
            )
            .await;
        let runtime = self
            .create(
                "kubernetes-runtime-instances",
                json!({"name": name, "owners": [{"kind": "KubernetesRuntimeDefinition", "id": definition["id"]}],
                    "spec": {"definition": definition["id"], "location": "Europe:Paris",
                    "default_runtime": default,
                    "connection": {"api_endpoint": "https://127.0.0.1:6443"}}}),
            )
            .await;
        (account, definition, runtime)
    }
}

fn reconciled(object: Option<&Value>) -> bool {
    object.is_some_and(|o| {
        o["status"]["state"] == "reconciled"
            && o["status"]["observed_generation"] == o["generation"]
    })
}

/// The namespace a workload instance's status says it deployed to.
fn namespace_of(instance: &Value) -> String {
    instance["status"]["details"]["namespace"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The composite workload: named parts, a database reaching its workload, delete whole.
async fn composite_workloads_go_whole(plane: &Plane) {
    // The default runtime: the composite names none, the API fills it in.
    let (account, _, runtime) = plane.runtime_and_account("shop", true).await;
    let account = account["id"].clone();
    let (status, made) = plane
        .send(
            reqwest::Method::POST,
            "/v0/workloads",
            Some(json!({
                "name": "wordpress",
                "definition": {"yaml_document": WEB},
                "database": {"name": "wordpress-db", "aws_account": account, "engine": "postgres",
                    "engine_version": "16.4", "database_name": "wordpress", "database_port": 5432,
                    "backup_days": 7, "machine_size": "small", "storage_gb": 20,
                    "workload_secret_name": "wordpress-db"},
                "secret": {"name": "wordpress-secret", "aws_account": account,
                    "data": {"api-key": "s3cr3t"}},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    for (kind, name) in [
        ("SecretDefinition", "wordpress-secret"),
        ("SecretInstance", "wordpress-secret"),
        ("AwsRelationalDatabaseDefinition", "wordpress-db"),
        ("AwsRelationalDatabaseInstance", "wordpress-db"),
        ("WorkloadDefinition", "wordpress"),
        ("WorkloadInstance", "wordpress"),
    ] {
        assert_eq!(made[kind]["name"], name, "the part keeps its name: {made}");
    }
    assert_eq!(
        made["WorkloadInstance"]["spec"]["runtime"], runtime["id"],
        "the API names the default runtime: {made}"
    );
    let definition_id = made["WorkloadDefinition"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        made["WorkloadDefinition"]["owners"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        made["WorkloadInstance"]["owners"],
        json!([{"kind": "WorkloadDefinition", "id": definition_id}])
    );

    // The database turns ready (its controller's status write): the workload follows it and
    // deploys the connection Secret; the secret's values stored: its ExternalSecret.
    let instance_id = made["WorkloadInstance"]["id"].as_str().unwrap().to_owned();
    let instance = plane
        .until(
            "workload-instances",
            &instance_id,
            "the database's Secret deployed",
            |o| {
                o.is_some_and(|o| {
                    let kinds: Vec<(&str, &str)> = o["status"]["details"]["resources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| {
                            (
                                r["kind"].as_str().unwrap_or(""),
                                r["name"].as_str().unwrap_or(""),
                            )
                        })
                        .collect();
                    kinds.contains(&("Secret", "wordpress-db"))
                        && kinds.contains(&("ExternalSecret", "wordpress-secret"))
                })
            },
        )
        .await
        .unwrap();
    assert!(
        instance["labels"].as_object().unwrap().is_empty(),
        "no label written on the workload: {instance}"
    );
    assert_eq!(instance["generation"], 1, "nothing wrote its spec");
    let namespace = namespace_of(&instance);
    assert!(plane.deployed_in(&namespace).await);

    // The preview lists every part, and deletes nothing.
    let (status, plan) = plane
        .send(
            reqwest::Method::DELETE,
            "/v0/workloads/wordpress?dry_run=true",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let planned = plan["deletes"].as_array().unwrap().len();
    assert_eq!(
        planned,
        made.as_object().unwrap().len() + 1,
        "the parts and the definition's resource record: {plan}"
    );
    assert_eq!(plan["deletes"][0]["id"], definition_id.as_str());
    assert!(
        plane
            .get("workload-definitions", &definition_id)
            .await
            .is_some()
    );

    let (status, gone) = plane
        .send(reqwest::Method::DELETE, "/v0/workloads/wordpress", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{gone}");
    for (kind, object) in made.as_object().unwrap() {
        let plural = threeport_server::plural_path(kind);
        let id = object["id"].as_str().unwrap();
        plane.until(&plural, id, "removal", |o| o.is_none()).await;
    }
    assert!(
        !plane.deployed_in(&namespace).await,
        "the workload's resources left the cluster"
    );
    let (status, err) = plane
        .send(reqwest::Method::DELETE, "/v0/workloads/wordpress", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    let (status, err) = plane
        .send(
            reqwest::Method::DELETE,
            "/v0/workloads/x?propagation=sideways",
            None,
        )
        .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("propagation"))
    );
    plane.assert_no_violations();
}

/// Foreground deletion of a runtime definition: the workload on its runtime leaves the
/// cluster first, then the runtime instance goes, then the definition.
async fn runtime_definitions_go_after_what_runs_on_them(plane: &Plane) {
    let (_, definition, runtime) = plane.runtime_and_account("edge", false).await;
    let workload_definition = plane
        .create(
            "workload-definitions",
            json!({"name": "edge-web", "spec": {"yaml_document": WEB}}),
        )
        .await;
    let instance = plane
        .create(
            "workload-instances",
            json!({"name": "edge-web", "owners": [{"kind": "KubernetesRuntimeInstance", "id": runtime["id"]}],
                   "spec": {"definition": workload_definition["id"], "runtime": runtime["id"]}}),
        )
        .await;
    let instance_id = instance["id"].as_str().unwrap().to_owned();
    let deployed = plane
        .until("workload-instances", &instance_id, "deployment", reconciled)
        .await
        .unwrap();
    let namespace = namespace_of(&deployed);
    assert!(plane.deployed_in(&namespace).await);

    // Owners are fixed after creation.
    let (status, err) = plane
        .send(
            reqwest::Method::PATCH,
            &format!("/v0/workload-instances/{instance_id}"),
            Some(json!({"owners": []})),
        )
        .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("owners"))
    );

    let definition_id = definition["id"].as_str().unwrap();
    let (status, scheduled) = plane
        .send(
            reqwest::Method::DELETE,
            &format!("/v0/kubernetes-runtime-definitions/{definition_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{scheduled}");
    plane
        .until(
            "kubernetes-runtime-definitions",
            definition_id,
            "removal",
            |o| o.is_none(),
        )
        .await;
    assert!(
        !plane.deployed_in(&namespace).await,
        "the instance's cluster resources are gone"
    );
    let removals = plane.removals.lock().await.clone();
    let position = |id: &str| {
        removals
            .iter()
            .position(|r| r.id.to_string() == id)
            .unwrap_or_else(|| panic!("{id} was not removed by a controller: {removals:?}"))
    };
    let (workload, runtime, definition) = (
        position(&instance_id),
        position(runtime["id"].as_str().unwrap()),
        position(definition_id),
    );
    assert!(
        workload < runtime && runtime < definition,
        "dependents go first: {removals:?}"
    );
    plane.assert_no_violations();
}

/// `orphan`: the owner goes, what it owned stays and forgets it.
async fn orphan_deletes_keep_dependents(plane: &Plane) {
    let base = plane
        .create(
            "workload-definitions",
            json!({"name": "base", "spec": {"yaml_document": WEB}}),
        )
        .await;
    let extra = plane
        .create(
            "workload-definitions",
            json!({"name": "extra", "owners": [{"kind": "WorkloadDefinition", "id": base["id"]}],
                   "spec": {"yaml_document": WEB}}),
        )
        .await;
    let (status, err) = plane
        .create_refused(json!({"name": "dangling", "owners": [{"kind": "WorkloadDefinition", "id": ObjectId::new()}],
                               "spec": {"yaml_document": WEB}}))
        .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("owners[0]"))
    );
    let base_id = base["id"].as_str().unwrap();
    let (status, plan) = plane
        .send(
            reqwest::Method::DELETE,
            &format!("/v0/workload-definitions/{base_id}?propagation=orphan&dry_run=true"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert!(
        plan["orphans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["id"] == extra["id"]),
        "{plan}"
    );
    let (status, _) = plane
        .send(
            reqwest::Method::DELETE,
            &format!("/v0/workload-definitions/{base_id}?propagation=orphan"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    plane
        .until("workload-definitions", base_id, "removal", |o| o.is_none())
        .await;
    let kept = plane
        .get("workload-definitions", extra["id"].as_str().unwrap())
        .await
        .expect("the orphan stays");
    assert!(kept["owners"].as_array().unwrap().is_empty(), "{kept}");
    assert!(kept.get("deletion_scheduled_at").is_none_or(Value::is_null));
    assert!(plane.named("workload-definitions", "extra").await.is_some());
    plane.assert_no_violations();
}

impl Plane {
    async fn create_refused(&self, body: Value) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::POST,
            "/v0/workload-definitions",
            Some(body),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_and_owners_on_the_memory_backends() {
    let plane = Plane::memory().await;
    composite_workloads_go_whole(&plane).await;
    runtime_definitions_go_after_what_runs_on_them(&plane).await;
    orphan_deletes_keep_dependents(&plane).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_and_owners_on_postgres_and_nats_with_two_replicas() {
    let nats = nats::NatsServer::start().await;
    let plane = Plane::postgres_and_nats(&nats).await;
    composite_workloads_go_whole(&plane).await;
    runtime_definitions_go_after_what_runs_on_them(&plane).await;
    orphan_deletes_keep_dependents(&plane).await;
}
