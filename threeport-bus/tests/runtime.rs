//! The core controller runtime on the NATS bus and NATS leases (objects in the memory store):
//! several replicas on separate connections, and a nats-server restart in the middle of a run.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::NatsServer;
use serde::{Deserialize, Serialize};
use threeport_bus::{NatsBus, NatsConfig, connect};
use threeport_core::{
    Action, Api, ApiObject, Backends, Context, Controller, ControllerConfig, ListQuery,
    MemoryStore, Object, ObjectId, OutboxRelay, ReconcileError, Reconciler, RelayConfig,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    n: u32,
}

impl ApiObject for Job {
    const KIND: &'static str = "Job";
    /// Which replica reconciled it.
    type Status = String;
}

#[derive(Default)]
struct Watch {
    running: Mutex<HashMap<ObjectId, u32>>,
    worst: AtomicU32,
    per_replica: Mutex<HashMap<String, u32>>,
}

struct Running<'a>(&'a Watch, ObjectId);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        *self.0.running.lock().unwrap().get_mut(&self.1).unwrap() -= 1;
    }
}

struct Worker {
    replica: String,
    watch: Arc<Watch>,
}

#[async_trait]
impl Reconciler for Worker {
    type Object = Job;
    async fn reconcile(
        &self,
        job: &mut Object<Job>,
        _: &Context,
    ) -> Result<Action, ReconcileError> {
        let n = {
            let mut running = self.watch.running.lock().unwrap();
            let n = running.entry(job.id()).or_default();
            *n += 1;
            *n
        };
        self.watch.worst.fetch_max(n, Ordering::SeqCst);
        // Counts down even if the reconcile is dropped (a replica killed mid-run).
        let _running = Running(&self.watch, job.id());
        tokio::time::sleep(Duration::from_millis(2)).await;
        *self
            .watch
            .per_replica
            .lock()
            .unwrap()
            .entry(self.replica.clone())
            .or_default() += 1;
        job.status.details = self.replica.clone();
        Ok(Action::Done)
    }
}

struct Cluster {
    store: Arc<MemoryStore>,
    watch: Arc<Watch>,
    shutdown: CancellationToken,
    replicas: Vec<Replica>,
}

struct Replica {
    client: async_nats::Client,
    bus: Arc<NatsBus>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<threeport_core::Result<()>>,
}

/// Short partition leases, so ownership settles and moves within a test's patience.
fn config() -> NatsConfig {
    NatsConfig {
        partition_ttl: Duration::from_secs(2),
        ..NatsConfig::default()
    }
}

async fn cluster(server: &NatsServer, replicas: usize) -> Cluster {
    cluster_with(server, replicas, Duration::from_secs(5)).await
}

/// A cluster whose controllers' deliveries are redelivered after `ack_wait`.
async fn cluster_with(server: &NatsServer, replicas: usize, ack_wait: Duration) -> Cluster {
    let store = Arc::new(MemoryStore::new());
    let watch = Arc::new(Watch::default());
    let shutdown = CancellationToken::new();
    let relay_client = connect(&server.url, Duration::from_secs(5)).await.unwrap();
    let relay_bus = Arc::new(NatsBus::new(relay_client, config()));
    let relay = OutboxRelay::new(
        store.clone(),
        relay_bus,
        RelayConfig {
            retry_delay: Duration::from_millis(200),
            ..RelayConfig::default()
        },
    );
    tokio::spawn(relay.run(shutdown.clone()));
    let mut cluster = Cluster {
        store,
        watch,
        shutdown,
        replicas: Vec::new(),
    };
    for _ in 0..replicas {
        cluster.add_replica(server, ack_wait).await;
    }
    cluster
}

async fn all_reconciled(store: &Arc<MemoryStore>, expected: usize, within: Duration) {
    let jobs = Api::<Job>::new(store.clone());
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let all = jobs
            .list_all(&ListQuery::default().limit(1000))
            .await
            .unwrap();
        let done = all.iter().filter(|j| j.is_reconciled()).count();
        if all.len() == expected && done == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {expected} reconciled in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three settled replicas, `jobs` objects created and their reconciles under way.
async fn busy_cluster(server: &NatsServer, jobs: u32) -> Cluster {
    let cluster = cluster(server, 3).await;
    cluster.settled().await;
    let api = Api::<Job>::new(cluster.store.clone());
    for n in 0..jobs {
        api.create(format!("job-{n}"), Job { n }).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster
}

impl Cluster {
    /// Starts one more replica, on a connection of its own as a separate process would have.
    async fn add_replica(&mut self, server: &NatsServer, ack_wait: Duration) {
        let client = connect(&server.url, Duration::from_secs(5)).await.unwrap();
        let bus = Arc::new(NatsBus::new(client.clone(), config()));
        let backends = Backends {
            store: self.store.clone(),
            bus: bus.clone(),
            locker: Arc::new(bus.locker().await.unwrap()),
        };
        let config = ControllerConfig {
            concurrency: 8,
            ack_wait,
            lease_ttl: Duration::from_secs(10),
            lock_busy_delay: Duration::from_millis(200),
            ..ControllerConfig::default()
        };
        let worker = Worker {
            replica: format!("replica-{}", self.replicas.len()),
            watch: self.watch.clone(),
        };
        let shutdown = self.shutdown.child_token();
        let task = tokio::spawn(
            Controller::new(worker, backends)
                .with_config(config)
                .run(shutdown.clone()),
        );
        self.replicas.push(Replica {
            client,
            bus,
            shutdown,
            task,
        });
    }

    /// Waits until the running replicas hold every partition between them, each its share.
    async fn settled(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let running = self.replicas.iter().filter(|r| !r.shutdown.is_cancelled());
            // Each holds exactly what the assignment gives it (at most ceil(16 / members)).
            let (held, wanted): (Vec<Vec<u16>>, Vec<Vec<u16>>) = running
                .map(|r| {
                    (
                        r.bus.held_partitions(Job::KIND),
                        r.bus.wanted_partitions(Job::KIND),
                    )
                })
                .unzip();
            // And every one holds some: a replica that has not seen the others yet wants all
            // 16 and holds them, which alone would look settled.
            if held.iter().map(Vec::len).sum::<usize>() == 16
                && held == wanted
                && held.iter().all(|h| !h.is_empty())
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "partitions never settled: held {held:?}, wanted {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the replicas, after checking no object was ever reconciled by two at once.
    async fn stop_without_overlap(self) {
        assert_eq!(
            self.watch.worst.load(Ordering::SeqCst),
            1,
            "an object was reconciled by two replicas at once"
        );
        self.stop().await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for replica in self.replicas {
            replica.task.await.unwrap().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_a_thousand_objects_without_overlap() {
    let server = NatsServer::start().await;
    let cluster = cluster(&server, 3).await;
    cluster.settled().await;
    let jobs = Api::<Job>::new(cluster.store.clone());
    for n in 0..1000 {
        jobs.create(format!("job-{n}"), Job { n }).await.unwrap();
    }
    all_reconciled(&cluster.store, 1000, Duration::from_secs(60)).await;
    assert_eq!(
        cluster.watch.worst.load(Ordering::SeqCst),
        1,
        "an object was reconciled by two replicas at once"
    );
    let spread = cluster.watch.per_replica.lock().unwrap().clone();
    assert_eq!(spread.len(), 3, "every replica took work: {spread:?}");
    // One partition of 16 holds about 60 of the 1,000; on a loaded machine a slow lease
    // renewal can hand one over mid-run, so a replica's share may end a little under that.
    assert!(
        spread.values().all(|n| *n >= 20),
        "work spread over the replicas: {spread:?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_handed_over_under_load_leave_nothing_to_the_ack_wait() {
    // An ack-wait far longer than the work: a message stranded in a handover (sent to a
    // member that no longer reads its partition) would show as a run that takes that long.
    // (The scale bench's distributed run stranded some this way, its streaming pulls leaving
    // requests open at the server; this smaller cluster did not reproduce that trigger, so it
    // guards the property, handovers under a backlog, rather than that one cause.)
    let ack_wait = Duration::from_secs(60);
    let server = NatsServer::start().await;
    let mut cluster = cluster_with(&server, 1, ack_wait).await;
    cluster.settled().await;
    let jobs = Api::<Job>::new(cluster.store.clone());
    for n in 0..200 {
        jobs.create(format!("before-{n}"), Job { n }).await.unwrap();
    }
    // A backlog, and two more replicas join while work flows: most partitions move, some twice.
    cluster.add_replica(&server, ack_wait).await;
    for n in 0..600 {
        jobs.create(format!("during-{n}"), Job { n }).await.unwrap();
    }
    cluster.add_replica(&server, ack_wait).await;
    for n in 0..600 {
        jobs.create(format!("after-{n}"), Job { n }).await.unwrap();
    }
    all_reconciled(&cluster.store, 1400, Duration::from_secs(40)).await;
    cluster.settled().await;
    cluster.stop_without_overlap().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_run_loses_nothing() {
    let mut server = NatsServer::start().await;
    let cluster = cluster(&server, 2).await;
    let jobs = Api::<Job>::new(cluster.store.clone());
    let done = |jobs: Api<Job>| async move {
        jobs.list_all(&ListQuery::default().limit(1000))
            .await
            .unwrap()
            .iter()
            .filter(|j| j.is_reconciled())
            .count()
    };
    // Work flowing, then the server taken down while it is: as soon as some is done, not
    // after a fixed pause (an idle machine finished all of it within one).
    let creating = {
        let jobs = jobs.clone();
        tokio::spawn(async move {
            for n in 0..300 {
                jobs.create(format!("before-{n}"), Job { n }).await.unwrap();
            }
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while done(jobs.clone()).await < 10 {
        assert!(tokio::time::Instant::now() < deadline, "no work got done");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.stop().await;
    let done_at_stop = done(jobs.clone()).await;
    assert!(
        done_at_stop < 300,
        "the restart must interrupt work in flight ({done_at_stop} done)"
    );
    creating.await.unwrap();
    for n in 0..100 {
        jobs.create(format!("during-{n}"), Job { n }).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart().await;
    all_reconciled(&cluster.store, 400, Duration::from_secs(90)).await;
    cluster.stop_without_overlap().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_leaving_mid_run_hands_its_partitions_over() {
    let server = NatsServer::start().await;
    let mut cluster = busy_cluster(&server, 600).await;
    let leaving = cluster.replicas.remove(0);
    leaving.shutdown.cancel();
    leaving.task.await.unwrap().unwrap();
    // The two left take over its partitions, and what it had not done gets done.
    cluster.settled().await;
    all_reconciled(&cluster.store, 600, Duration::from_secs(60)).await;
    cluster.stop_without_overlap().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_vanishes_loses_its_partitions_after_the_ttl() {
    let server = NatsServer::start().await;
    let mut cluster = busy_cluster(&server, 600).await;
    // No goodbye: its connection closes and its process stops.
    let gone = cluster.replicas.remove(0);
    gone.task.abort();
    gone.client.drain().await.unwrap();
    cluster.settled().await;
    all_reconciled(&cluster.store, 600, Duration::from_secs(60)).await;
    cluster.stop_without_overlap().await;
}
