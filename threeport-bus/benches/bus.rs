//! The controller runtime on NATS: throughput and latency against raw JetStream.
//!
//! `cargo bench -p threeport-bus --bench bus` (starts its own nats-server like the tests;
//! `BENCH_N` changes the 20,000 notifications).
//!
//! 1. Throughput: N notifications published to a running controller (NATS bus, NATS leases
//!    from the bus's partition locker, memory store, no-op reconciler, concurrency 32), until
//!    all are reconciled; against raw JetStream on the same kind of client: publish N, pull and
//!    ack them with 32 in flight. For information, the same run with a per-object KV lease
//!    (`NatsLocker`, two KV writes per reconcile) and with in-process leases.
//! 2. Latency from publish to reconcile start, at a steady 200 notifications/s (a burst would
//!    only measure queueing).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use threeport_bus::{NatsBus, NatsConfig, NatsLocker, connect};
use threeport_core::*;
use tokio_util::sync::CancellationToken;

const CONCURRENCY: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    n: u64,
}

impl ApiObject for Item {
    const KIND: &'static str = "Item";
    type Status = ();
}

/// Records when each object's first reconcile started.
#[derive(Default)]
struct Starts(Mutex<HashMap<ObjectId, Instant>>);

struct Noop(Arc<Starts>);

#[async_trait]
impl Reconciler for Noop {
    type Object = Item;
    async fn reconcile(
        &self,
        item: &mut Object<Item>,
        _: &Context,
    ) -> Result<Action, ReconcileError> {
        self.0
            .0
            .lock()
            .unwrap()
            .entry(item.id())
            .or_insert_with(Instant::now);
        Ok(Action::Done)
    }
}

fn main() {
    let n: u64 = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(n));
}

async fn run(n: u64) {
    let server = common::NatsServer::start().await;
    println!(
        "bus bench: {n} notifications, concurrency {CONCURRENCY}, nats-server on {}",
        server.url
    );

    let (runtime_took, latencies) = engine(&server.url, n, Leases::Partitions).await;
    let reconciles_per_s = n as f64 / runtime_took.as_secs_f64();
    println!(
        "  runtime on NATS: {runtime_took:>9.3?}  {reconciles_per_s:>8.0} reconciles/s (NATS bus, partition leases in NATS KV)"
    );
    let (object_took, _) = engine(&server.url, n, Leases::PerObject).await;
    println!(
        "  same, per-object KV leases: {object_took:>9.3?}  {:>8.0} reconciles/s (informational: NatsLocker)",
        n as f64 / object_took.as_secs_f64()
    );
    let (local_took, _) = engine(&server.url, n, Leases::InProcess).await;
    println!(
        "  same, in-process leases: {local_took:>9.3?}  {:>8.0} reconciles/s (informational: the KV leases' share)",
        n as f64 / local_took.as_secs_f64()
    );

    let raw_took = raw_jetstream(&server.url, n).await;
    let raw_js_per_s = n as f64 / raw_took.as_secs_f64();
    println!(
        "  raw JetStream:   {raw_took:>9.3?}  {raw_js_per_s:>8.0} messages/s (publish, pull, ack)"
    );

    let mut latencies = latencies;
    let p50 = percentile(&mut latencies, 50.0);
    let p99 = percentile(&mut latencies, 99.0);
    println!(
        "  publish → reconcile start at 200/s: p50 {p50:.3} ms  p99 {p99:.3} ms ({} samples)",
        latencies.len()
    );
    println!(
        "RESULT bus reconciles_per_s={reconciles_per_s:.0} raw_js_per_s={raw_js_per_s:.0} ratio={:.3} latency_p50_ms={p50:.3} latency_p99_ms={p99:.3}",
        reconciles_per_s / raw_js_per_s
    );
}

/// Where the controller takes its per-object leases.
#[derive(Clone, Copy)]
enum Leases {
    /// `NatsBus::locker`: leases granted from the partitions this process holds.
    Partitions,
    /// `NatsLocker`: a KV create and delete per reconcile.
    PerObject,
    InProcess,
}

/// Runs a controller on NATS; returns the burst time and the paced latencies.
async fn engine(url: &str, n: u64, leases: Leases) -> (Duration, Vec<Duration>) {
    let store = Arc::new(MemoryStore::new());
    let items = Api::<Item>::new(store.clone());
    let paced = 1_000;
    let mut ids = Vec::with_capacity(n as usize + paced);
    for i in 0..n + paced as u64 {
        ids.push(
            items
                .create(format!("item-{i}"), Item { n: i })
                .await
                .expect("create")
                .id(),
        );
    }
    let client = connect(url, Duration::from_secs(5)).await.expect("connect");
    let bus = Arc::new(NatsBus::new(client.clone(), NatsConfig::default()));
    let backends = Backends {
        store: store.clone(),
        bus: bus.clone(),
        locker: match leases {
            Leases::Partitions => Arc::new(bus.locker().await.expect("locker")),
            Leases::PerObject => Arc::new(
                NatsLocker::new(client, &NatsConfig::default())
                    .await
                    .expect("locker"),
            ),
            Leases::InProcess => Arc::new(MemoryLocker::new()),
        },
    };
    let starts = Arc::new(Starts::default());
    let shutdown = CancellationToken::new();
    let controller =
        Controller::new(Noop(starts.clone()), backends).with_config(ControllerConfig {
            concurrency: CONCURRENCY,
            ..ControllerConfig::default()
        });
    let metrics = controller.metrics();
    let task = tokio::spawn(controller.run(shutdown.clone()));
    let done = metrics.reconciles(ReconcileResult::success);
    let note = |id| Notification {
        kind: Item::KIND.into(),
        id,
        operation: Operation::Created,
        version: 1,
        secret: None,
    };

    // Warm up the connection, stream and consumers; wait until this replica holds every
    // partition (a previous run's replica hands them over as it leaves).
    bus.publish(note(ids[0])).await.expect("publish");
    while done.get() < 1 || bus.held_partitions(Item::KIND).len() < 16 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let started = Instant::now();
    let producer = {
        let bus = bus.clone();
        let burst: Vec<ObjectId> = ids[1..=n as usize].to_vec();
        tokio::spawn(async move {
            // Publish with up to CONCURRENCY acknowledgements outstanding.
            futures::stream::iter(burst)
                .for_each_concurrent(CONCURRENCY, |id| {
                    let bus = bus.clone();
                    async move { bus.publish(note(id)).await.expect("publish") }
                })
                .await;
        })
    };
    while done.get() < n + 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    producer.await.expect("producer");

    // Paced: one notification every 5 ms.
    let mut sent_at = Vec::with_capacity(paced);
    for id in &ids[n as usize + 1..] {
        let sent = Instant::now();
        bus.publish(note(*id)).await.expect("publish");
        sent_at.push((*id, sent));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let expected = n + 1 + sent_at.len() as u64;
    while done.get() < expected {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let latencies = {
        let starts = starts.0.lock().unwrap();
        sent_at
            .iter()
            .map(|(id, sent)| starts[id].duration_since(*sent))
            .collect()
    };
    shutdown.cancel();
    task.await.expect("join").expect("controller");
    (took, latencies)
}

/// The same number of messages through raw JetStream: publish, pull, ack, 32 in flight.
async fn raw_jetstream(url: &str, n: u64) -> Duration {
    let client = connect(url, Duration::from_secs(5)).await.expect("connect");
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: "RAW".into(),
            subjects: vec!["raw.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .expect("stream");
    let consumer = stream
        .get_or_create_consumer(
            "raw",
            pull::Config {
                durable_name: Some("raw".into()),
                ..Default::default()
            },
        )
        .await
        .expect("consumer");
    let started = Instant::now();
    let producer = {
        let js = js.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..n)
                .for_each_concurrent(CONCURRENCY, |i| {
                    let js = js.clone();
                    async move {
                        js.publish(format!("raw.{i}"), "{}".into())
                            .await
                            .expect("publish")
                            .await
                            .expect("ack");
                    }
                })
                .await;
        })
    };
    let messages = consumer.messages().await.expect("messages");
    messages
        .take(n as usize)
        .for_each_concurrent(CONCURRENCY, |m| async move {
            m.expect("message").ack().await.expect("ack");
        })
        .await;
    let took = started.elapsed();
    producer.await.expect("producer");
    took
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort();
    let index = ((samples.len() as f64 * p / 100.0).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[index].as_secs_f64() * 1000.0
}
