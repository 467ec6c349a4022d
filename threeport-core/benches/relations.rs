//! Relations: how fast a change of followed objects reaches their followers, against the
//! same number of notifications published straight to the followers.
//!
//! `cargo bench -p threeport-core --bench relations` (set `BENCH_N` to change the 1,000).
//!
//! `N` owner objects, each referenced by one dependent whose controller follows the owners
//! ([`Via::Referencing`]). Follow-ups: every owner's status is written (as its own controller
//! would); each write records, in the store's transaction, a `Related` notification for the
//! dependent, which the relay forwards to the bus and the dependent's controller reconciles
//! (reading the owner). Measured: time until every dependent saw its owner's new status, and
//! each one's latency from the owner's write. Baseline: `N` notifications published straight
//! to the bus for the dependents, reconciled by the same controller doing the same reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use threeport_core::*;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Owner {}

impl ApiObject for Owner {
    const KIND: &'static str = "Owner";
    /// The round its status was last written in.
    type Status = u64;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Dependent {
    owner: ObjectId,
    index: usize,
}

impl ApiObject for Dependent {
    const KIND: &'static str = "Dependent";
    type Status = u64;
    fn references(&self) -> Vec<Reference> {
        vec![Reference::new("owner", Owner::KIND, self.owner)]
    }
}

/// What the dependents' reconciler reports.
struct Probe {
    /// The round being measured.
    round: AtomicU64,
    /// When each owner's status was written in this round.
    written: Vec<std::sync::Mutex<Option<Instant>>>,
    /// Dependents that saw this round, and their latencies.
    seen: AtomicUsize,
    latencies: std::sync::Mutex<Vec<Duration>>,
    /// Reconciles in all.
    reconciles: AtomicUsize,
}

struct Follower(Arc<Probe>);

#[async_trait]
impl Reconciler for Follower {
    type Object = Dependent;
    async fn reconcile(
        &self,
        dependent: &mut Object<Dependent>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let owner = ctx.api::<Owner>().get(dependent.spec.owner).await?;
        let probe = &self.0;
        probe.reconciles.fetch_add(1, Ordering::SeqCst);
        let round = probe.round.load(Ordering::SeqCst);
        if owner.status.details == round && dependent.status.details != round {
            let written = *probe.written[dependent.spec.index].lock().unwrap();
            if let Some(written) = written {
                probe.latencies.lock().unwrap().push(written.elapsed());
            }
            dependent.status.details = round;
            probe.seen.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Action::Done)
    }
}

fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "relations bench: {n} owners, each referenced by one dependent that follows it; memory fakes, 2 worker threads"
    );
    runtime.block_on(run(n));
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn run(n: usize) {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let store: Arc<dyn Store> = memory.store.clone();
    let probe = Arc::new(Probe {
        round: AtomicU64::new(0),
        written: (0..n).map(|_| std::sync::Mutex::new(None)).collect(),
        seen: AtomicUsize::new(0),
        latencies: std::sync::Mutex::new(Vec::new()),
        reconciles: AtomicUsize::new(0),
    });
    let config = ControllerConfig {
        concurrency: 8,
        ..ControllerConfig::default()
    };
    let controller = Controller::new(Follower(probe.clone()), memory.backends())
        .with_config(config)
        .follows(Owner::KIND, Via::Referencing);
    tokio::spawn(controller.run(shutdown.clone()));

    let owners = Api::<Owner>::new(store.clone());
    let dependents = Api::<Dependent>::new(store.clone());
    let mut owned = Vec::with_capacity(n);
    let mut dependent_ids = Vec::with_capacity(n);
    for index in 0..n {
        let owner = owners.create(format!("o{index}"), Owner {}).await.unwrap();
        let dependent = dependents
            .create(
                format!("d{index}"),
                Dependent {
                    owner: owner.id(),
                    index,
                },
            )
            .await
            .unwrap();
        owned.push(owner);
        dependent_ids.push(dependent.id());
    }
    // The first reconcile of every dependent (its creation).
    wait_for("the first reconciles", || {
        probe.reconciles.load(Ordering::SeqCst) >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Follow-ups: every owner's status changes; the dependents hear of it through the store.
    probe.round.store(1, Ordering::SeqCst);
    let started = Instant::now();
    for (index, owner) in owned.iter().enumerate() {
        *probe.written[index].lock().unwrap() = Some(Instant::now());
        let mut status = owner.status_to_raw().unwrap();
        status.details = serde_json::json!(1);
        store
            .update_status(
                Owner::KIND,
                owner.id(),
                StatusWrite {
                    expected_version: None,
                    fence: None,
                    status,
                },
            )
            .await
            .unwrap();
    }
    wait_for("every dependent to see its owner's change", || {
        probe.seen.load(Ordering::SeqCst) >= n
    })
    .await;
    let followups = started.elapsed();
    let followups_per_s = n as f64 / followups.as_secs_f64();
    let mut latencies = probe.latencies.lock().unwrap().clone();
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let (p50, p99) = (percentile(0.50), percentile(0.99));
    println!(
        "  follow-ups: {followups:>10.3?}  {followups_per_s:>10.0} dependents/s  latency p50 {p50:.2?}  p99 {p99:.2?}  (owner status write → dependent reconciled)"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Baseline: the same number of notifications published straight to the dependents.
    let before = probe.reconciles.load(Ordering::SeqCst);
    let started = Instant::now();
    let notifications: Vec<Notification> = dependent_ids
        .iter()
        .map(|id| Notification::new(Dependent::KIND, *id, Operation::Updated, 1))
        .collect();
    memory.bus.publish_all(notifications).await.unwrap();
    wait_for("every direct notification to be reconciled", || {
        probe.reconciles.load(Ordering::SeqCst) >= before + n
    })
    .await;
    let direct = started.elapsed();
    let direct_per_s = n as f64 / direct.as_secs_f64();
    println!(
        "  direct    : {direct:>10.3?}  {direct_per_s:>10.0} dependents/s  (notifications published straight to the bus)"
    );
    shutdown.cancel();
    println!(
        "RESULT relations followups_per_s={followups_per_s:.0} direct_per_s={direct_per_s:.0} ratio={:.3} latency_p99_ms={:.2}",
        followups_per_s / direct_per_s,
        p99.as_secs_f64() * 1e3
    );
}
