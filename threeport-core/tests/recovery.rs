//! What the runtime does about work it may have lost track of: the resync at start and every
//! `resync_period` (lost notifications), and reconciles that time out while work they spawned
//! still runs (the object stays locked until it stopped).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use threeport_core::*;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    /// What the reconciler answers: "done", "fail", "terminal" or "later" (requeue in 1 h).
    answer: String,
}

impl ApiObject for Job {
    const KIND: &'static str = "Job";
    type Status = u32;
}

/// Counts calls and answers as the spec says.
#[derive(Default)]
struct Scripted {
    calls: AtomicU32,
}

/// The reconciler around a shared [`Scripted`].
struct Counting(Arc<Scripted>);

#[async_trait]
impl Reconciler for Counting {
    type Object = Job;
    async fn reconcile(
        &self,
        obj: &mut Object<Job>,
        _: &Context,
    ) -> Result<Action, ReconcileError> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        obj.status.details += 1;
        match obj.spec.answer.as_str() {
            "fail" => Err(ReconcileError::retryable("not yet")),
            "terminal" => Err(ReconcileError::terminal("never")),
            "later" => Ok(Action::RequeueAfter(Duration::from_secs(3600))),
            _ => Ok(Action::Done),
        }
    }
}

fn config() -> ControllerConfig {
    ControllerConfig {
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(1),
            jitter: 0.0,
        },
        max_retries: 3,
        resync_period: None,
        // Objects are written just before the controllers look (and on a paused clock).
        resync_grace: Duration::ZERO,
        ..ControllerConfig::default()
    }
}

/// Objects written while their notifications are lost (the outbox emptied without a relay, as
/// when a bus forgets what it held).
async fn create_with_lost_notifications(
    memory: &MemoryBackends,
    answers: &[&str],
) -> Vec<ObjectId> {
    let jobs = Api::<Job>::new(memory.store.clone());
    let mut ids = Vec::new();
    for (i, answer) in answers.iter().enumerate() {
        let job = Job {
            answer: (*answer).to_owned(),
        };
        ids.push(jobs.create(&format!("job-{i}"), job).await.unwrap().id());
    }
    lose_notifications(memory).await;
    ids
}

async fn lose_notifications(memory: &MemoryBackends) {
    let entries = memory
        .store
        .claim("thief", 10_000, Duration::from_secs(60))
        .await
        .unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    memory.store.complete(&seqs).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn objects_whose_notifications_were_lost_are_reconciled_at_start() {
    let memory = MemoryBackends::new();
    let ids = create_with_lost_notifications(&memory, &["done", "done", "done"]).await;
    let shutdown = CancellationToken::new();
    let probe = Arc::new(Scripted::default());
    let controller =
        Controller::new(Counting(probe.clone()), memory.backends()).with_config(config());
    let metrics = controller.metrics();
    tokio::spawn(controller.run(shutdown.clone()));
    let jobs = Api::<Job>::new(memory.store.clone());
    for id in ids {
        jobs.wait_until(id, |j| j.is_reconciled()).await.unwrap();
    }
    assert_eq!(
        probe.calls.load(Ordering::SeqCst),
        3,
        "each reconciled once"
    );
    assert_eq!(metrics.resynced.get(), 3);
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_periodic_resync_finds_notifications_lost_while_running() {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    let probe = Arc::new(Scripted::default());
    let period = Duration::from_secs(120);
    let controller =
        Controller::new(Counting(probe.clone()), memory.backends()).with_config(ControllerConfig {
            resync_period: Some(period),
            ..config()
        });
    tokio::spawn(controller.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await; // the start-up resync found nothing
    let ids = create_with_lost_notifications(&memory, &["done"]).await;
    let jobs = Api::<Job>::new(memory.store.clone());
    tokio::time::sleep(period / 2).await;
    assert!(
        !jobs.get(ids[0]).await.unwrap().is_reconciled(),
        "nothing told the controller yet"
    );
    tokio::time::timeout(period, jobs.wait_until(ids[0], |j| j.is_reconciled()))
        .await
        .expect("the next resync found it")
        .unwrap();
    shutdown.cancel();
}

/// Reconciled, failed and interrupted objects, and one whose next look is scheduled later,
/// are left alone by a resync; one still retrying after a failure is not.
#[tokio::test(start_paused = true)]
async fn a_resync_leaves_settled_and_scheduled_objects_alone() {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let probe = Arc::new(Scripted::default());
    let first = CancellationToken::new();
    let controller =
        Controller::new(Counting(probe.clone()), memory.backends()).with_config(config());
    let running = tokio::spawn(controller.run(first.clone()));
    let jobs = Api::<Job>::new(memory.store.clone());
    let mut ids = Vec::new();
    for (name, answer) in [("a", "done"), ("b", "terminal"), ("c", "later")] {
        ids.push(
            jobs.create(
                name,
                Job {
                    answer: answer.into(),
                },
            )
            .await
            .unwrap()
            .id(),
        );
    }
    jobs.wait_until(ids[0], |j| j.is_reconciled())
        .await
        .unwrap();
    jobs.wait_until(ids[1], |j| j.status.state == LifecycleState::CreationFailed)
        .await
        .unwrap();
    let later = jobs
        .wait_until(ids[2], |j| {
            j.status.state == LifecycleState::CreationAcknowledged
        })
        .await
        .unwrap();
    assert!(
        later.status.requeue_at.is_some(),
        "the next look is recorded"
    );
    first.cancel();
    running.await.unwrap().unwrap();

    // A new controller process: its resync finds nothing to do.
    let calls = probe.calls.load(Ordering::SeqCst);
    let controller =
        Controller::new(Counting(probe.clone()), memory.backends()).with_config(config());
    let metrics = controller.metrics();
    tokio::spawn(controller.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(metrics.resynced.get(), 0, "nothing waits for a reconcile");
    assert_eq!(probe.calls.load(Ordering::SeqCst), calls);
    shutdown.cancel();
}

/// Counts how many pieces of a job's work run at once.
#[derive(Default)]
struct Overlap {
    running: AtomicU32,
    most: AtomicU32,
    calls: AtomicU32,
    saw_cancellation: AtomicBool,
    late_results: Mutex<Vec<u32>>,
}

/// Hands its work to a blocking thread that takes 600 ms and ignores cancellation on the first
/// call; the reconcile times out after 150 ms.
struct BlockingWork(Arc<Overlap>);

#[async_trait]
impl Reconciler for BlockingWork {
    type Object = Job;
    async fn reconcile(
        &self,
        obj: &mut Object<Job>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let overlap = self.0.clone();
        let call = overlap.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let cancelled = ctx.cancelled().clone();
        let result = ctx
            .spawn_blocking(move || {
                let now = overlap.running.fetch_add(1, Ordering::SeqCst) + 1;
                overlap.most.fetch_max(now, Ordering::SeqCst);
                if call == 1 {
                    std::thread::sleep(Duration::from_millis(600));
                    overlap
                        .saw_cancellation
                        .store(cancelled.is_cancelled(), Ordering::SeqCst);
                    overlap.late_results.lock().unwrap().push(call);
                }
                overlap.running.fetch_sub(1, Ordering::SeqCst);
                call
            })
            .await
            .map_err(ReconcileError::retryable)?;
        obj.status.details = result;
        Ok(Action::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_reconcile_keeps_its_object_locked_until_its_blocking_work_stopped() {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let overlap = Arc::new(Overlap::default());
    let config = ControllerConfig {
        reconcile_timeout: Duration::from_millis(150),
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
            jitter: 0.0,
        },
        ..config()
    };
    // Two replicas, so a released lease would let the other one in at once.
    let mut metrics = Vec::new();
    for _ in 0..2 {
        let controller = Controller::new(BlockingWork(overlap.clone()), memory.backends())
            .with_config(config.clone());
        metrics.push(controller.metrics());
        tokio::spawn(controller.run(shutdown.clone()));
    }
    let jobs = Api::<Job>::new(memory.store.clone());
    let id = jobs
        .create(
            "slow",
            Job {
                answer: "done".into(),
            },
        )
        .await
        .unwrap()
        .id();
    let done = tokio::time::timeout(
        Duration::from_secs(10),
        jobs.wait_until(id, |j| j.is_reconciled()),
    )
    .await
    .expect("reconciled after the retry")
    .unwrap();
    assert_eq!(overlap.most.load(Ordering::SeqCst), 1, "never two at once");
    assert_eq!(
        overlap.calls.load(Ordering::SeqCst),
        2,
        "one timeout, one retry"
    );
    assert!(
        overlap.saw_cancellation.load(Ordering::SeqCst),
        "the work was told to stop"
    );
    assert_eq!(
        *overlap.late_results.lock().unwrap(),
        [1],
        "the first call finished late"
    );
    assert_eq!(done.status.details, 2, "its late result was discarded");
    let timeouts: u64 = metrics.iter().map(|m| m.reconcile_timeouts.get()).sum();
    assert_eq!(timeouts, 1);
    shutdown.cancel();
}

/// Fails its first call, slowly; succeeds afterwards.
struct FailsSlowlyOnce(Arc<AtomicU32>);

#[async_trait]
impl Reconciler for FailsSlowlyOnce {
    type Object = Job;
    async fn reconcile(&self, _: &mut Object<Job>, _: &Context) -> Result<Action, ReconcileError> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            return Err(ReconcileError::retryable("first try fails"));
        }
        Ok(Action::Done)
    }
}

/// A resync's delivery whose reconcile fails while a change arrives: the change runs the
/// object again at once (the resync's "does it still wait?" check is not for it).
#[tokio::test(start_paused = true)]
async fn a_change_during_a_resynced_reconcile_runs_it_again() {
    let memory = MemoryBackends::new();
    let ids = create_with_lost_notifications(&memory, &["done"]).await;
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let calls = Arc::new(AtomicU32::new(0));
    let controller = Controller::new(FailsSlowlyOnce(calls.clone()), memory.backends())
        .with_config(ControllerConfig {
            backoff: Backoff {
                initial: Duration::from_secs(600),
                max: Duration::from_secs(600),
                jitter: 0.0,
            },
            ..config()
        });
    tokio::spawn(controller.run(shutdown.clone()));
    let jobs = Api::<Job>::new(memory.store.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the resync started a reconcile"
    );
    let mut job = jobs.get(ids[0]).await.unwrap();
    job.spec.answer = "done again".into();
    jobs.update(&job).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        jobs.wait_until(ids[0], |j| j.is_reconciled()),
    )
    .await
    .expect("the change ran it again, long before the 10-minute backoff")
    .unwrap();
    shutdown.cancel();
}

/// Takes 5 s per reconcile.
struct Slow(Arc<AtomicU32>);

#[async_trait]
impl Reconciler for Slow {
    type Object = Job;
    async fn reconcile(&self, _: &mut Object<Job>, _: &Context) -> Result<Action, ReconcileError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(Action::Done)
    }
}

/// A resync's notification for an object being reconciled here folds into that reconcile; a
/// change does not (it runs the object once more).
#[tokio::test(start_paused = true)]
async fn a_resync_of_an_object_being_reconciled_adds_no_run() {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let calls = Arc::new(AtomicU32::new(0));
    let controller = Controller::new(Slow(calls.clone()), memory.backends()).with_config(config());
    tokio::spawn(controller.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let jobs = Api::<Job>::new(memory.store.clone());
    let job = jobs
        .create(
            "j",
            Job {
                answer: "done".into(),
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "running");
    memory
        .bus
        .publish(Notification::new(
            "Job",
            job.id(),
            Operation::Resync,
            job.meta.version,
        ))
        .await
        .unwrap();
    jobs.wait_until(job.id(), |j| j.is_reconciled())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the resync added no run");
    shutdown.cancel();
}
