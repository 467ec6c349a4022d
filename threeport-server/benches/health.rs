//! How fast workload health reaches the API: 200 workload instances of 5 resources on one
//! runtime (the fake Kubernetes API server, in this process), deployed through the embedded
//! control plane (`threeport-server serve`). Every Deployment's pods are made unschedulable
//! (the instances go `down`), then all are flipped ready at once; measured: seconds from the
//! flip until the API shows every instance `healthy`, the control plane's peak resident
//! memory (`VmHWM`), and the watch connections it holds open on the cluster — with one
//! instance deployed and with all of them (the baseline: a watch per object, as Threeport's
//! agent made them, would be one per resource, 1,000 here).
//!
//! `cargo bench -p threeport-server --bench health`; `BENCH_INSTANCES` changes the count.

#[path = "common/api.rs"]
mod api;
#[path = "../../threeport-bus/tests/common/mod.rs"]
#[allow(missing_docs)]
mod nats;
#[path = "common/plane.rs"]
#[allow(dead_code)] // each bench uses its part
mod plane;
#[path = "../tests/common/process.rs"]
#[allow(dead_code, missing_docs)]
mod process;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use threeport_k8s::{Cluster, FakeApiServer, MemoryCluster, PodState, ResourceRef};

use api::Api;
use plane::{Plane, peak_rss_mb};

const FIVE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata: {mode: production}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n";

fn main() {
    let instances: usize = std::env::var("BENCH_INSTANCES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(instances));
}

/// Every workload instance, as listed.
async fn instances(api: &Api) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = match &after {
            Some(after) => format!("limit=500&after={after}"),
            None => "limit=500".to_owned(),
        };
        let page = api.page(&query).await;
        all.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return all,
        }
    }
}

/// Waits until `n` instances are listed and each satisfies `done`; gives up after `limit`.
/// Returns the seconds it took.
async fn wait_all(api: &Api, n: usize, limit: Duration, done: impl Fn(&Value) -> bool) -> f64 {
    let started = Instant::now();
    loop {
        let listed = instances(api).await;
        let pending = listed.iter().filter(|i| !done(i)).count() + n.saturating_sub(listed.len());
        if pending == 0 {
            return started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < limit,
            "{pending} of {n} instances not there after {limit:?}: {}",
            listed
                .iter()
                .find(|i| !done(i))
                .map(|i| i["status"]["details"]["health"].to_string())
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn health(instance: &Value) -> &str {
    instance["status"]["details"]["health"]["status"]
        .as_str()
        .unwrap_or("-")
}

async fn run(n: usize) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!(
        "health bench: {n} workload instances of 5 resources on one runtime, embedded control plane"
    );
    let kube = FakeApiServer::start_with_token(MemoryCluster::new(), "bench")
        .await
        .expect("fake API server");
    let plane = Plane::embedded().await;
    let pid = plane.processes[0].1.child.id().expect("pid");
    let api = Api::of(&plane);
    api.register_runtime(&kube.url).await;
    let definition = api
        .post(
            "workload-definitions",
            json!({"name": "web", "spec": {"yaml_document": FIVE}}),
        )
        .await;
    let create = |i: usize| {
        let body = json!({"name": format!("web-{i}"), "spec": {"definition": definition}});
        let api = &api;
        async move { api.post("workload-instances", body).await }
    };

    // One instance first: the watches a runtime costs.
    create(0).await;
    wait_all(&api, 1, Duration::from_secs(60), |i| health(i) != "-").await;
    let watches_one = kube.cluster.open_watches();
    futures::stream::iter(1..n)
        .for_each_concurrent(16, |i| async move {
            create(i).await;
        })
        .await;
    wait_all(&api, n, Duration::from_secs(300), |i| health(i) != "-").await;
    let watches_all = kube.cluster.open_watches();
    let rss_deployed = peak_rss_mb(pid);

    // Every claim bound, as a storage provisioner would.
    for claim in kube
        .cluster
        .list("v1", "PersistentVolumeClaim", None)
        .await
        .expect("claims")
    {
        let claim = ResourceRef::of(&claim).expect("reference");
        kube.cluster
            .set_status(&claim, &json!({"phase": "Bound"}))
            .expect("bound");
    }

    // Every deployment's pods unschedulable: down.
    let deployments: Vec<ResourceRef> = kube
        .cluster
        .list("apps/v1", "Deployment", None)
        .await
        .expect("deployments")
        .iter()
        .map(|d| ResourceRef::of(d).expect("reference"))
        .collect();
    assert_eq!(deployments.len(), n);
    for deployment in &deployments {
        kube.cluster
            .set_pods(deployment, PodState::Pending, 2)
            .expect("pods");
    }
    let down_s = wait_all(&api, n, Duration::from_secs(120), |i| health(i) == "down").await;
    let rss_down = peak_rss_mb(pid);

    // The flip: every deployment ready at once.
    let flipped = Instant::now();
    for deployment in &deployments {
        kube.cluster
            .set_pods(deployment, PodState::Ready, 2)
            .expect("pods");
    }
    let flip_s = flipped.elapsed().as_secs_f64();
    wait_all(&api, n, Duration::from_secs(120), |i| {
        health(i) == "healthy"
    })
    .await;
    let seconds = flipped.elapsed().as_secs_f64();
    let rss = peak_rss_mb(pid);
    println!(
        "  watches open on the cluster: {watches_one} with 1 instance, {watches_all} with {n} (a watch per resource would be {})",
        n * 5
    );
    println!("  pods made unschedulable: all {n} instances down after {down_s:.2} s");
    println!(
        "  flipped ready (cluster writes took {flip_s:.2} s): all {n} instances healthy after {seconds:.2} s"
    );
    println!(
        "  control plane peak RSS: {rss:.1} MB (after deploying: {rss_deployed:.1} MB, after all went down: {rss_down:.1} MB)"
    );
    println!("  targets: ≤ 5 s, peak RSS ≤ 60 MB, watches independent of the number of instances");
    println!(
        "RESULT health instances={n} seconds={seconds:.2} peak_rss_mb={rss:.1} watches={watches_all}"
    );
    plane.stop().await;
}
