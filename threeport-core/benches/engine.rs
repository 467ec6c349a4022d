//! Engine throughput: no-op reconciles through the full controller runtime on the memory
//! fakes, against a bare tokio mpsc channel feeding a worker pool of the same size.
//!
//! `cargo bench -p threeport-core --bench engine` (set `BENCH_N` to change the 100,000 and
//! `BENCH_ROUNDS` the 7 rounds; the medians are reported).
//!
//! Each reconcile takes the full path: bus delivery → lease acquire → store get → decode →
//! reconcile → status write (fenced) → ack → lease release, with a tracing span, metrics and the
//! heartbeat timer. After the throughput figures, the bench times each step alone, on one task,
//! to show where the per-reconcile time goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use threeport_core::*;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    n: u64,
}

impl ApiObject for Item {
    const KIND: &'static str = "Item";
    type Status = ();
}

struct Noop;

#[async_trait]
impl Reconciler for Noop {
    type Object = Item;
    async fn reconcile(&self, _: &mut Object<Item>, _: &Context) -> Result<Action, ReconcileError> {
        Ok(Action::Done)
    }
}

const CONCURRENCY: usize = 8;

fn main() {
    let n: u64 = env_or("BENCH_N", 100_000);
    let rounds: usize = env_or("BENCH_ROUNDS", 7).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "engine bench: {n} no-op reconciles, concurrency {CONCURRENCY}, 2 worker threads, \
         {rounds} rounds of runtime then baseline (medians reported: this machine is noisy)"
    );

    let mut engine_rates = Vec::with_capacity(rounds);
    let mut baseline_rates = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let engine = runtime.block_on(engine_run(n));
        let engine_per_s = n as f64 / engine.as_secs_f64();
        println!(
            "  round {round} runtime : {engine:>10.3?}  {engine_per_s:>10.0} reconciles/s  ({:.2} µs each)",
            engine.as_secs_f64() * 1e6 / n as f64
        );
        let baseline = runtime.block_on(baseline_run(n));
        let baseline_per_s = n as f64 / baseline.as_secs_f64();
        println!(
            "  round {round} baseline: {baseline:>10.3?}  {baseline_per_s:>10.0} messages/s    (tokio mpsc → {CONCURRENCY} workers)"
        );
        engine_rates.push(engine_per_s);
        baseline_rates.push(baseline_per_s);
    }
    let engine_per_s = median(&mut engine_rates);
    let baseline_per_s = median(&mut baseline_rates);
    println!(
        "  median  runtime {engine_per_s:.0} reconciles/s, baseline {baseline_per_s:.0} messages/s"
    );

    println!("where a reconcile's time goes (each step alone, one task, µs per call):");
    runtime.block_on(breakdown(n.min(100_000)));

    println!(
        "RESULT engine reconciles_per_s={engine_per_s:.0} baseline_per_s={baseline_per_s:.0} ratio={:.3}",
        engine_per_s / baseline_per_s
    );
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Publishes `n` notifications to a running controller; returns the time until all were
/// reconciled, settled and their status written.
async fn engine_run(n: u64) -> Duration {
    let memory = MemoryBackends::new();
    let ids = seed(&memory, n).await;
    let shutdown = CancellationToken::new();
    let controller = Controller::new(Noop, memory.backends()).with_config(ControllerConfig {
        concurrency: CONCURRENCY,
        ..ControllerConfig::default()
    });
    let metrics = controller.metrics();
    let task = tokio::spawn(controller.run(shutdown.clone()));
    // Let the controller subscribe before the clock starts.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    let bus = memory.bus.clone();
    let producer = tokio::spawn(async move {
        for id in ids {
            let notification = Notification {
                kind: Item::KIND.into(),
                id,
                operation: Operation::Created,
                version: 1,
                secret: None,
            };
            bus.publish(notification).await.expect("publish");
        }
    });
    let done = metrics.reconciles(ReconcileResult::success);
    while done.get() < n || metrics.queue_depth.get() > 0 {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = started.elapsed();
    producer.await.expect("producer");
    assert_eq!(
        memory.bus.backlog("item-controller"),
        0,
        "every delivery acked"
    );
    shutdown.cancel();
    task.await.expect("join").expect("controller");
    elapsed
}

/// The same number of messages through a bare mpsc channel to `CONCURRENCY` workers.
async fn baseline_run(n: u64) -> Duration {
    let (tx, rx) = tokio::sync::mpsc::channel::<(ObjectId, u64)>(1024);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let handled = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let rx = rx.clone();
            let handled = handled.clone();
            tokio::spawn(async move {
                loop {
                    let message = rx.lock().await.recv().await;
                    match message {
                        Some(m) => {
                            std::hint::black_box(m);
                            handled.fetch_add(1, Ordering::Relaxed);
                        }
                        None => return,
                    }
                }
            })
        })
        .collect();
    for i in 0..n {
        tx.send((ObjectId::new(), i)).await.expect("send");
    }
    drop(tx);
    for worker in workers {
        worker.await.expect("worker");
    }
    assert_eq!(handled.load(Ordering::Relaxed), n);
    started.elapsed()
}

async fn seed(memory: &MemoryBackends, n: u64) -> Vec<ObjectId> {
    let items = Api::<Item>::new(memory.store.clone());
    let mut ids = Vec::with_capacity(n as usize);
    for i in 0..n {
        ids.push(
            items
                .create(format!("item-{i}"), Item { n: i })
                .await
                .expect("create")
                .id(),
        );
    }
    // Notifications are published by the bench itself; drop the outbox's copies.
    let pending = memory
        .store
        .claim("bench", usize::MAX, Duration::from_secs(60))
        .await
        .expect("claim");
    let seqs: Vec<u64> = pending.iter().map(|e| e.seq).collect();
    memory.store.complete(&seqs).await.expect("complete");
    ids
}

/// Times each step of the reconcile path alone, sequentially on one task.
async fn breakdown(n: u64) {
    let memory = MemoryBackends::new();
    let ids = seed(&memory, n).await;
    let per_call = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;

    let mut sub = memory
        .bus
        .subscribe(SubscribeOptions::new("breakdown", Item::KIND))
        .await
        .expect("subscribe");
    let t = Instant::now();
    for id in &ids {
        let notification = Notification {
            kind: Item::KIND.into(),
            id: *id,
            operation: Operation::Created,
            version: 1,
            secret: None,
        };
        memory.bus.publish(notification).await.expect("publish");
        let delivery = sub.next().await.expect("next").expect("open");
        delivery.ack().await.expect("ack");
    }
    let bus = per_call(t.elapsed());

    let t = Instant::now();
    for id in &ids {
        let lease = memory
            .locker
            .acquire(&format!("Item/{id}"), "bench", Duration::from_secs(30))
            .await
            .expect("acquire")
            .expect("free");
        memory.locker.release(&lease).await.expect("release");
    }
    let lock = per_call(t.elapsed());

    let t = Instant::now();
    let mut raws = Vec::with_capacity(ids.len());
    for id in &ids {
        raws.push(memory.store.get(Item::KIND, *id).await.expect("get"));
    }
    let get = per_call(t.elapsed());

    let t = Instant::now();
    let objects: Vec<Object<Item>> = raws
        .into_iter()
        .map(|raw| Object::from_raw(raw).expect("decode"))
        .collect();
    let decode = per_call(t.elapsed());

    let t = Instant::now();
    for mut obj in objects {
        obj.status.state = LifecycleState::Reconciled;
        obj.status
            .set_condition("Ready", ConditionStatus::True, "Reconciled", "");
        let write = StatusWrite {
            expected_version: None,
            fence: Some(1),
            status: obj.status_to_raw().expect("encode"),
        };
        memory
            .store
            .write_status(Item::KIND, obj.id(), write)
            .await
            .expect("status");
    }
    let status = per_call(t.elapsed());

    let t = Instant::now();
    for id in &ids {
        let span =
            tracing::info_span!("reconcile", controller = "bench", kind = Item::KIND, id = %id);
        let _entered = span.enter();
        let period = Duration::from_secs(10);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        std::hint::black_box(&mut heartbeat);
    }
    let overhead = per_call(t.elapsed());

    let total = bus + lock + get + decode + status + overhead;
    for (step, micros) in [
        ("bus publish + deliver + ack", bus),
        ("lease acquire + release", lock),
        ("store get (clone out of the map)", get),
        ("decode RawObject → Object<T>", decode),
        ("status encode + fenced write", status),
        ("tracing span + heartbeat timer", overhead),
    ] {
        println!(
            "  {step:<34} {micros:>6.2} µs  ({:>4.1} %)",
            100.0 * micros / total
        );
    }
    println!(
        "  {:<34} {total:>6.2} µs of work per reconcile on one core; the rest is task scheduling",
        "sum"
    );
}
