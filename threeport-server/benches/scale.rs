//! How cost grows with the number of workloads: N workload instances of 5 resources each,
//! created through the API and reconciled against the fake Kubernetes API server, at N = 200,
//! 2,000 and 10,000, on
//!
//! - the embedded default: one `threeport-server serve` process (SQLite, the bus in it, every
//!   controller), and
//! - the distributed control plane: one `api` and two `controller` processes on PostgreSQL and
//!   NATS JetStream (a nats-server of the bench's own).
//!
//! Per N and mode: seconds from the first create until every instance is reconciled (16
//! clients create; one observer pages from the oldest instance not yet seen reconciled), the
//! per-instance milliseconds, the latency of listing a 100-item page at that size (200 pages
//! from random places, p50/p99), and the peak resident memory (`VmHWM`) of every process.
//! Each N starts from an empty control plane and an empty cluster.
//!
//! `cargo bench -p threeport-server --bench scale`; `BENCH_SIZES=200,2000` changes the sizes
//! (the largest is the one the RESULT line reports), `BENCH_MODES=embedded` runs one mode.
//! PostgreSQL: `THREEPORT_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/postgres`
//! (a database is created and dropped per run); nats-server: `THREEPORT_NATS_SERVER`, else on
//! PATH.

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

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use threeport_k8s::{Cluster, FakeApiServer, MemoryCluster};

use api::Api;
use plane::Plane;

const CLIENTS: usize = 16;

const FIVE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata: {mode: production}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: web\nstringData: {password: example}\n";

/// The controllers a workload instance needs, as each `controller` process runs them.
const CONTROLLERS: &[&str] = &[
    "workload-definition",
    "workload-instance",
    "kubernetes-runtime",
    "passive",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Embedded,
    Distributed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Embedded => "embedded",
            Mode::Distributed => "distributed",
        }
    }
}

/// What one run measured.
struct Measured {
    seconds: f64,
    list_p50_ms: f64,
    list_p99_ms: f64,
    /// Peak RSS by process, MB.
    rss: Vec<(String, f64)>,
}

impl Measured {
    fn per_instance_ms(&self, n: usize) -> f64 {
        self.seconds * 1000.0 / n as f64
    }

    fn peak_rss_mb(&self) -> f64 {
        self.rss.iter().map(|(_, mb)| *mb).fold(0.0, f64::max)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "200,2000,10000".to_owned())
        .split(',')
        .map(|n| n.trim().parse().expect("BENCH_SIZES: numbers"))
        .collect();
    let modes: Vec<Mode> = match std::env::var("BENCH_MODES").as_deref() {
        Ok("embedded") => vec![Mode::Embedded],
        Ok("distributed") => vec![Mode::Distributed],
        _ => vec![Mode::Embedded, Mode::Distributed],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&sizes, &modes));
}

async fn run(sizes: &[usize], modes: &[Mode]) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!(
        "scale bench: workload instances of 5 resources at N = {sizes:?}, {CLIENTS} clients creating"
    );
    let mut results: Vec<(Mode, usize, Measured)> = Vec::new();
    for &mode in modes {
        for &n in sizes {
            let measured = run_once(mode, n).await;
            let rss = measured
                .rss
                .iter()
                .map(|(name, mb)| format!("{name} {mb:.1}"))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "  {:<11} N={n:>6}: all reconciled after {:>7.2} s, {:>6.2} ms/instance; \
                 list 100 p50 {:.2} ms p99 {:.2} ms; peak RSS MB: {rss}",
                mode.name(),
                measured.seconds,
                measured.per_instance_ms(n),
                measured.list_p50_ms,
                measured.list_p99_ms,
            );
            results.push((mode, n, measured));
        }
    }
    let find = |mode: Mode, n: usize| results.iter().find(|(m, k, _)| *m == mode && *k == n);
    let (smallest, largest) = (sizes[0], *sizes.last().expect("a size"));
    let seconds = |mode| find(mode, largest).map_or(f64::NAN, |(_, _, m)| m.seconds);
    let ratio = match (
        find(Mode::Distributed, largest),
        find(Mode::Distributed, smallest),
    ) {
        (Some((_, _, big)), Some((_, _, small))) => {
            big.per_instance_ms(largest) / small.per_instance_ms(smallest)
        }
        _ => f64::NAN,
    };
    let peak = results
        .iter()
        .map(|(_, _, m)| m.peak_rss_mb())
        .fold(0.0, f64::max);
    println!(
        "  targets: per-instance ratio (distributed, N={largest} over N={smallest}) ≤ 1.5, \
         peak RSS ≤ 128 MB, list p99 ≤ 10 ms at N={largest}"
    );
    println!(
        "RESULT scale n={largest} embedded_s={:.2} distributed_s={:.2} per_instance_ratio={ratio:.3} peak_rss_mb={peak:.1}",
        seconds(Mode::Embedded),
        seconds(Mode::Distributed),
    );
}

/// Whether a listed instance is reconciled with its five resources (and the namespace).
fn deployed(item: &Value) -> bool {
    item["status"]["state"] == "reconciled"
        && item["status"]["details"]["resources"]
            .as_array()
            .is_some_and(|r| r.len() == 6)
}

async fn run_once(mode: Mode, n: usize) -> Measured {
    let kube = FakeApiServer::start_with_token(MemoryCluster::new(), "bench")
        .await
        .expect("fake API server");
    let plane = match mode {
        Mode::Embedded => Plane::embedded().await,
        Mode::Distributed => Plane::distributed(&[CONTROLLERS, CONTROLLERS], &[]).await,
    };
    let api = Api::of(&plane);
    api.register_runtime(&kube.url).await;
    let definition = api
        .post(
            "workload-definitions",
            json!({"name": "web", "spec": {"yaml_document": FIVE}}),
        )
        .await;

    let started = Instant::now();
    let waiting = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let creating = {
        let api = api.clone();
        let waiting = waiting.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..n)
                .for_each_concurrent(CLIENTS, |i| {
                    let api = api.clone();
                    let waiting = waiting.clone();
                    let body =
                        json!({"name": format!("web-{i}"), "spec": {"definition": definition}});
                    async move {
                        let id = api.post("workload-instances", body).await;
                        waiting.lock().expect("lock").insert(id);
                    }
                })
                .await;
        })
    };
    // Ids are time-ordered: page from just before the oldest one not yet seen reconciled.
    let mut created_all = false;
    loop {
        if !created_all && creating.is_finished() {
            created_all = true;
        }
        let oldest = waiting.lock().expect("lock").first().cloned();
        match oldest {
            None if created_all => break,
            None => {}
            Some(oldest) => {
                let before = uuid::Uuid::from_u128(
                    uuid::Uuid::parse_str(&oldest).expect("uuid").as_u128() - 1,
                );
                let mut after = before.to_string();
                loop {
                    let page = api.page(&format!("limit=500&after={after}")).await;
                    let mut waiting = waiting.lock().expect("lock");
                    for item in page["items"].as_array().into_iter().flatten() {
                        if deployed(item) {
                            waiting.remove(item["id"].as_str().unwrap_or(""));
                        }
                    }
                    drop(waiting);
                    match page["next"].as_str() {
                        Some(next) => after = next.to_owned(),
                        None => break,
                    }
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{} of {n} instances not reconciled after 30 min",
            waiting.lock().expect("lock").len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    creating.await.expect("creates");
    let seconds = started.elapsed().as_secs_f64();
    let deployments = kube
        .cluster
        .list("apps/v1", "Deployment", None)
        .await
        .expect("list")
        .len();
    assert_eq!(deployments, n, "one deployment per instance in the cluster");

    // Listing at this size: 100-item pages from random places (ids of instances created).
    let mut ids = Vec::with_capacity(n);
    let mut after: Option<String> = None;
    loop {
        let query = match &after {
            Some(after) => format!("limit=1000&after={after}"),
            None => "limit=1000".to_owned(),
        };
        let page = api.page(&query).await;
        for item in page["items"].as_array().into_iter().flatten() {
            ids.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let mut latencies = Vec::with_capacity(200);
    for _ in 0..200 {
        let from = &ids[fastrand::usize(..ids.len())];
        let at = Instant::now();
        let page = api.page(&format!("limit=100&after={from}")).await;
        latencies.push(at.elapsed().as_secs_f64() * 1000.0);
        assert!(page["items"].is_array(), "{page}");
    }
    latencies.sort_by(f64::total_cmp);
    let measured = Measured {
        seconds,
        list_p50_ms: percentile(&latencies, 0.5),
        list_p99_ms: percentile(&latencies, 0.99),
        rss: plane.peak_rss(),
    };
    plane.stop().await;
    measured
}
