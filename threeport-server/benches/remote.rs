//! Reconcilers over HTTP against reconcilers on the backends directly: no-op reconciles of a
//! kind of one's own (a `KindDefinition`) on the distributed control plane (an `api` process
//! on PostgreSQL and NATS JetStream, a nats-server of its own).
//!
//! For each way, `BENCH_OBJECTS` objects (default 5,000) of a kind registered for it are
//! created through the API first (and their notifications relayed to NATS); then two replicas (controllers of 8 workers each) start in
//! this process and reconcile them all; the rate is objects over the time from start to the
//! last reconcile written:
//! - direct (the baseline): the replicas open PostgreSQL and NATS themselves, as a
//!   `threeport-server controller` process does;
//! - remote: the replicas have only the API's URL and a token, and reach the store, the bus
//!   and the leases through its engine API (`threeport_api::remote`).
//!
//! `cargo bench -p threeport-server --bench remote`. PostgreSQL: `THREEPORT_TEST_POSTGRES_URL`,
//! else `postgres://postgres@127.0.0.1:5432/postgres` (a database is created and dropped);
//! nats-server: `THREEPORT_NATS_SERVER`, else on PATH.

#[path = "../../threeport-bus/tests/common/mod.rs"]
#[allow(missing_docs)]
mod nats;
#[path = "common/plane.rs"]
#[allow(dead_code)] // each bench uses its part
mod plane;
#[path = "../tests/common/process.rs"]
#[allow(dead_code, missing_docs)]
mod process;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use threeport_api::{BatchObject, Client, remote};
use threeport_core::{
    Action, Backends, Context, Controller, ControllerConfig, Dynamic, Object, ReconcileError,
    Reconciler,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Reconciles nothing; counts, and says when `target` reconciles were done.
struct Noop {
    kind: String,
    done: Arc<AtomicUsize>,
    target: usize,
    all_done: Arc<Notify>,
}

#[async_trait]
impl Reconciler for Noop {
    type Object = Dynamic;

    fn kind(&self) -> &str {
        &self.kind
    }

    async fn reconcile(
        &self,
        _: &mut Object<Dynamic>,
        _: &Context,
    ) -> Result<Action, ReconcileError> {
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.target {
            self.all_done.notify_one();
        }
        Ok(Action::Done)
    }
}

/// Notifications the API's outbox relay has handed to the bus so far.
async fn relayed(base: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix("threeport_outbox_relayed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Registers `kind` and creates `n` objects of it through the API; returns once their
/// notifications are on the bus (so the replicas do not wait for the relay).
async fn prepare(client: &Client, kind: &str, n: usize) {
    let before = relayed(client.base_url()).await;
    let schema = json!({"type": "object", "required": ["n"],
                        "properties": {"n": {"type": "integer"}}});
    client
        .create_batch(&[BatchObject {
            kind: "KindDefinition".into(),
            id: None,
            name: kind.to_lowercase(),
            labels: Default::default(),
            owners: Vec::new(),
            spec: json!({"kind": kind, "schema": schema}),
        }])
        .await
        .expect("register the kind");
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<BatchObject> = chunk
            .iter()
            .map(|i| BatchObject {
                kind: kind.into(),
                id: None,
                name: format!("o-{i}"),
                labels: Default::default(),
                owners: Vec::new(),
                spec: json!({"n": i}),
            })
            .collect();
        client.create_batch(&batch).await.expect("create objects");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while relayed(client.base_url()).await < before + n as f64 {
        assert!(Instant::now() < deadline, "the relay never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two replicas of a no-op reconciler of `kind` on `backends`: seconds until all `n` objects
/// were reconciled.
async fn reconcile_all(backends: [Backends; 2], kind: &str, n: usize) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let mut replicas = Vec::new();
    for backends in backends {
        let reconciler = Noop {
            kind: kind.to_owned(),
            done: done.clone(),
            target: n,
            all_done: all_done.clone(),
        };
        let controller = Controller::new(reconciler, backends).with_config(ControllerConfig {
            resync_period: None,
            resync_grace: Duration::from_secs(600),
            ..ControllerConfig::default()
        });
        replicas.push(tokio::spawn(controller.run(shutdown.clone())));
    }
    tokio::time::timeout(Duration::from_secs(600), all_done.notified())
        .await
        .expect("every object reconciled within 10 minutes");
    // The last reconcile's status write and ack are part of the work: let them land.
    let elapsed = started.elapsed().as_secs_f64();
    shutdown.cancel();
    for replica in replicas {
        let _ = replica.await;
    }
    elapsed
}

/// CPU seconds (user + system) process `pid` has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after the name; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `phase` and says how much CPU the API process and this one used meanwhile.
async fn measured<F: std::future::Future<Output = f64>>(api_pid: u32, phase: F) -> (f64, String) {
    let (api_before, own_before) = (cpu_seconds(api_pid), cpu_seconds(std::process::id()));
    let seconds = phase.await;
    let api = cpu_seconds(api_pid) - api_before;
    let own = cpu_seconds(std::process::id()) - own_before;
    (
        seconds,
        format!("CPU: api process {api:.2} s, replicas' process {own:.2} s"),
    )
}

/// Median and 99th percentile (ms) of 500 sequential reads of one object from `store`.
async fn read_latency(store: &Arc<dyn threeport_core::Store>, kind: &str) -> (f64, f64) {
    let page = store
        .list(kind, &threeport_core::ListQuery::default().limit(1))
        .await
        .expect("list");
    let id = page.items[0].meta.id;
    let mut took = Vec::with_capacity(500);
    for _ in 0..500 {
        let started = Instant::now();
        store.get(kind, id).await.expect("get");
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    (took[took.len() / 2], took[took.len() * 99 / 100])
}

fn main() {
    // reqwest's TLS stack needs a process-wide crypto provider even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let n: usize = std::env::var("BENCH_OBJECTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000);
        let plane = plane::Plane::distributed(&[], &[]).await;
        let client = Client::builder(&plane.base)
            .token(plane.token.clone())
            .build()
            .unwrap();
        let database_url = plane.database_url.clone().expect("a distributed plane");
        let nats_url = plane.nats_url().expect("a distributed plane");

        prepare(&client, "BenchDirect", n).await;
        let direct_plane = threeport_server::plane::open(&threeport_server::plane::PlaneConfig {
            database_url: Some(database_url),
            nats_url: Some(nats_url),
            data_dir: process::temp_dir(),
            max_connections: 0,
        })
        .await
        .expect("open PostgreSQL and NATS");
        let direct = Backends {
            store: direct_plane.store.clone(),
            bus: direct_plane.bus.clone(),
            locker: direct_plane.locker.clone(),
        };
        let api_pid = plane.processes[0].1.child.id().expect("the api runs");
        let (direct_s, cpu) =
            measured(api_pid, reconcile_all([direct.clone(), direct], "BenchDirect", n)).await;
        let direct_per_s = n as f64 / direct_s;
        println!("direct: {n} no-op reconciles by 2 replicas on PostgreSQL + NATS in {direct_s:.2} s: {direct_per_s:.0}/s ({cpu})");

        prepare(&client, "BenchRemote", n).await;
        let remote = [remote::backends(&client), remote::backends(&client)];
        let (remote_s, cpu) = measured(api_pid, reconcile_all(remote, "BenchRemote", n)).await;
        let remote_per_s = n as f64 / remote_s;
        println!("remote: {n} no-op reconciles by 2 replicas over the engine API in {remote_s:.2} s: {remote_per_s:.0}/s ({cpu})");

        let (direct_p50, direct_p99) = read_latency(&direct_plane.store, "BenchRemote").await;
        let (remote_p50, remote_p99) = read_latency(&remote::backends(&client).store, "BenchRemote").await;
        println!(
            "one read: direct p50 {direct_p50:.3} ms, p99 {direct_p99:.3} ms; over the engine API p50 {remote_p50:.3} ms, p99 {remote_p99:.3} ms"
        );

        plane.stop().await;
        println!(
            "RESULT remote reconciles_per_s={remote_per_s:.0} direct_per_s={direct_per_s:.0} ratio={:.2}",
            remote_per_s / direct_per_s
        );
    });
}
