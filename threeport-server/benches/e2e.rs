//! The distributed write path end to end: one `api` and two `controller passive` processes on
//! PostgreSQL and NATS JetStream (a nats-server of its own), gateway definitions created
//! through the API. Their reconciler costs nothing of its own (it marks them reconciled), so
//! what is measured is the engine: API, store, outbox relay, bus, lease, status write.
//! `BENCH_KIND=workload-definition` runs workload definitions instead, whose reconcile also
//! lists what the definition owns and creates one record per manifest (a second object write,
//! notification and relay per object).
//!
//! 1. Steady load: 200 creates/s for 30 s, after 5 s of the same load unmeasured (the
//!    processes have just started); an observer polls the oldest 16 objects not yet seen
//!    reconciled every 5 ms: POST → reconciled latency, p50 and p99, and by 5-s window.
//! 2. Sustainable rate: 8 concurrent clients create as fast as the API answers for 10 s; the
//!    rate is what was created over the time until all of it was reconciled: until the last
//!    status write committed (its `updated_at`, read from the database once all are seen
//!    reconciled, so the checking itself is not timed).
//! 3. The baseline, in the same run: raw single-row `INSERT` + commit into PostgreSQL from 8
//!    connections for 5 s.
//!
//! `cargo bench -p threeport-server --bench e2e`. PostgreSQL: `THREEPORT_TEST_POSTGRES_URL`,
//! else `postgres://postgres@127.0.0.1:5432/postgres` (a database is created and dropped);
//! nats-server: `THREEPORT_NATS_SERVER`, else on PATH. `BENCH_RATE`, `BENCH_SECONDS` and
//! `BENCH_WARMUP` change the steady load.

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

use plane::Plane;
use serde_json::{Value, json};

const MANIFEST: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n";
const CONCURRENCY: usize = 8;
/// Objects the steady-load observer polls per round, oldest first.
const OBSERVED: usize = 16;

/// The kind the bench creates and the controller that reconciles it.
struct Kind {
    plural: &'static str,
    controller: &'static str,
    spec: Value,
}

/// `BENCH_KIND`: `passive` (gateway definitions, the default) or `workload-definition`.
fn bench_kind() -> Kind {
    match std::env::var("BENCH_KIND").as_deref() {
        Ok("workload-definition") => Kind {
            plural: "workload-definitions",
            controller: "workload-definition",
            spec: json!({"yaml_document": MANIFEST}),
        },
        Ok("passive") | Err(_) => Kind {
            plural: "gateway-definitions",
            controller: "passive",
            spec: json!({"http_ports": [{"port": 80}], "service_name": "web"}),
        },
        Ok(other) => panic!("BENCH_KIND={other:?}: passive or workload-definition"),
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The sum of the samples of `metric` (any labels) in Prometheus text.
fn metric_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reconciles, mean reconcile time and mean wait from due to start, from a controller's metrics.
fn controller_summary(text: &str) -> String {
    let count = metric_sum(text, "controller_runtime_reconcile_time_seconds_count");
    let time = metric_sum(text, "controller_runtime_reconcile_time_seconds_sum");
    let queued = metric_sum(text, "workqueue_queue_duration_seconds_count");
    let waited = metric_sum(text, "workqueue_queue_duration_seconds_sum");
    format!(
        "{count:.0} reconciles, mean {:.1} ms each; {queued:.0} deliveries waited {:.1} ms on average from due to start",
        1000.0 * time / count.max(1.0),
        1000.0 * waited / queued.max(1.0),
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

/// The API as a client sees it.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    plural: &'static str,
    spec: Value,
}

impl Api {
    /// Creates an object of the bench's kind; its id.
    async fn create(&self, name: &str) -> String {
        let response = self
            .http
            .post(format!("{}/v0/{}", self.base, self.plural))
            .bearer_auth(&self.token)
            .json(&json!({"name": name, "spec": self.spec}))
            .send()
            .await
            .expect("create");
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
        let created: Value = response.json().await.expect("body");
        created["id"].as_str().expect("id").to_owned()
    }

    async fn reconciled(&self, id: &str) -> bool {
        let object: Value = self
            .http
            .get(format!("{}/v0/{}/{id}", self.base, self.plural))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("body");
        object["status"]["state"] == "reconciled"
    }

    /// Polls until `id` is reconciled (every 2 ms).
    async fn until_reconciled(&self, id: &str) {
        while !self.reconciled(id).await {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

async fn run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rate: u64 = env_or("BENCH_RATE", 200);
    let seconds: u64 = env_or("BENCH_SECONDS", 30);
    let warmup: u64 = env_or("BENCH_WARMUP", 5);
    // Four processes and PostgreSQL share two cores here: one thread each (every hand-over
    // between threads is a wake-up), and enough reconciles at once in each controller for
    // its writes to share statements (group commit).
    let kind = bench_kind();
    let plane = Plane::distributed(
        &[&[kind.controller], &[kind.controller]],
        &["--worker-threads", "1", "--concurrency", "32"],
    )
    .await;
    let url = plane.database_url.clone().expect("a distributed plane");
    let api = Api {
        http: reqwest::Client::new(),
        base: plane.base.clone(),
        token: plane.token.clone(),
        plural: kind.plural,
        spec: kind.spec.clone(),
    };
    println!(
        "e2e bench: api {} + 2 `controller {}` (one thread each, 32 reconciles at once) on PostgreSQL ({url}) and NATS; creating {}",
        plane.base, kind.controller, kind.plural
    );
    // Warm up connections and the first reconcile.
    let id = api.create("warm-up").await;
    api.until_reconciled(&id).await;

    // 1. Steady load, open loop: one create every 1/rate s, whatever the answers do. One
    // observer polls the oldest objects not yet seen reconciled, a few at a time by id (a list
    // page from the oldest waiting id cost the API and the database more than the load itself
    // once a straggler made the pages long).
    let posted: Arc<std::sync::Mutex<std::collections::BTreeMap<String, Instant>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let observer = {
        let api = api.clone();
        let posted = posted.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let oldest: Vec<String> = posted
                    .lock()
                    .expect("lock")
                    .keys()
                    .take(OBSERVED)
                    .cloned()
                    .collect();
                if oldest.is_empty() && done.load(Ordering::Relaxed) {
                    return latencies;
                }
                let checks = oldest.iter().map(|id| api.reconciled(id));
                let reconciled = futures::future::join_all(checks).await;
                let now = Instant::now();
                {
                    let mut waiting = posted.lock().expect("lock");
                    for (id, _) in oldest.iter().zip(reconciled).filter(|(_, r)| *r) {
                        if let Some(at) = waiting.remove(id) {
                            latencies.push((at, (now - at).as_secs_f64() * 1000.0));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut creates = Vec::new();
    // The first `warmup` seconds run the same load unmeasured: the processes have just
    // started, their connection pools fill (a TLS handshake each) and the controllers split
    // the partitions; the windows below show that phase too.
    let warmup_started = Instant::now();
    let started = warmup_started + Duration::from_secs(warmup);
    for n in 0..rate * (warmup + seconds) {
        tick.tick().await;
        let api = api.clone();
        let posted = posted.clone();
        creates.push(tokio::spawn(async move {
            let at = Instant::now();
            let id = api.create(&format!("steady-{n}")).await;
            posted.lock().expect("lock").insert(id, at);
        }));
    }
    let offered = started.elapsed().as_secs_f64();
    let measured_from = started;
    for create in creates {
        create.await.expect("create");
    }
    done.store(true, Ordering::Relaxed);
    let timed = observer.await.expect("observer");
    // The tail by when the object was posted: stragglers spread out, or stalls?
    let mut windows: std::collections::BTreeMap<u64, Vec<f64>> = Default::default();
    for (at, ms) in &timed {
        let window = at.saturating_duration_since(warmup_started).as_secs() / 5 * 5;
        windows.entry(window).or_default().push(*ms);
    }
    for (window, mut ms) in windows {
        ms.sort_by(f64::total_cmp);
        let phase = if window < warmup {
            "warm-up"
        } else {
            "measured"
        };
        println!(
            "    {phase:>8}, posted {window:>2}-{:>2} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            window + 5,
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN)
        );
    }
    let mut latencies: Vec<f64> = timed
        .into_iter()
        .filter(|(at, _)| *at >= measured_from)
        .map(|(_, ms)| ms)
        .collect();
    let drained = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "  steady: {} creates at {rate}/s offered over {offered:.1} s, all reconciled after {drained:.1} s; \
         POST→reconciled p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
        latencies.len(),
        latencies.last().copied().unwrap_or(f64::NAN)
    );

    // 2. As fast as 8 clients can create for 10 s; then until every one is reconciled.
    let created = Arc::new(AtomicUsize::new(0));
    let window = Duration::from_secs(10);
    let started_at = std::time::SystemTime::now();
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..CONCURRENCY {
        let api = api.clone();
        let created = created.clone();
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut n = 0;
            while started.elapsed() < window {
                ids.push(api.create(&format!("burst-{worker}-{n}")).await);
                created.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for worker in workers {
        ids.extend(worker.await.expect("worker"));
    }
    let create_rate = ids.len() as f64 / started.elapsed().as_secs_f64();
    // The newest first (one cheap poll), then all of them from the database until none waits;
    // the end is the last status write's commit, not when this loop saw it (checking 10,000
    // objects one GET at a time took seconds of its own).
    api.until_reconciled(ids.last().expect("objects created"))
        .await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(CONCURRENCY as u32)
        .connect(&url)
        .await
        .expect("pool");
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|id| id.parse().expect("uuid")).collect();
    let last_write = loop {
        let (waiting, last): (i64, f64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status->>'state' IS DISTINCT FROM 'reconciled'), \
             extract(epoch FROM max(updated_at))::FLOAT8 FROM threeport_objects WHERE id = ANY($1)",
        )
        .bind(&uuids)
        .fetch_one(&pool)
        .await
        .expect("burst state");
        if waiting == 0 {
            break last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let since_epoch = started_at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let burst_seconds = last_write - since_epoch;
    let sustainable = ids.len() as f64 / burst_seconds;
    println!(
        "  sustainable: {} created by {CONCURRENCY} clients in 10 s ({create_rate:.0}/s accepted), \
         all reconciled after {burst_seconds:.1} s: {sustainable:.0}/s end to end",
        ids.len()
    );

    // 3. Raw PostgreSQL: single-row INSERT + COMMIT from 8 connections, same database.
    sqlx::query(
        "CREATE TABLE bench_raw (id UUID PRIMARY KEY, name TEXT NOT NULL, spec JSONB NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("table");
    let inserted = Arc::new(AtomicUsize::new(0));
    let raw_window = Duration::from_secs(5);
    let started = Instant::now();
    let mut inserters = Vec::new();
    for _ in 0..CONCURRENCY {
        let pool = pool.clone();
        let inserted = inserted.clone();
        let spec = kind.spec.clone();
        inserters.push(tokio::spawn(async move {
            while started.elapsed() < raw_window {
                sqlx::query("INSERT INTO bench_raw (id, name, spec) VALUES ($1, $2, $3)")
                    .bind(uuid::Uuid::now_v7())
                    .bind("raw")
                    .bind(&spec)
                    .execute(&pool)
                    .await
                    .expect("insert");
                inserted.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for inserter in inserters {
        inserter.await.expect("inserter");
    }
    let raw = inserted.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    println!("  baseline: raw INSERT + COMMIT at {CONCURRENCY} connections: {raw:.0}/s");

    // Where a reconcile's time went, from the controllers' own metrics.
    for (n, metrics) in plane.controller_metrics.iter().enumerate() {
        let text = process::metrics_text(&api.http, metrics).await;
        println!("  controller {}: {}", n + 1, controller_summary(&text));
    }
    plane.stop().await;
    println!(
        "RESULT e2e rate_per_s={sustainable:.0} raw_insert_per_s={raw:.0} ratio={:.3} latency_p50_ms={p50:.1} latency_p99_ms={p99:.1}",
        sustainable / raw
    );
}
