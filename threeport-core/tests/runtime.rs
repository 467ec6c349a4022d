//! The controller runtime's guarantees, on the memory fakes. Timing-sensitive tests run on
//! tokio's paused clock, so they are exact and fast.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use threeport_core::*;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Widget {
    size: u32,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct WidgetStatus {
    builds: u32,
    built_by: String,
}

impl ApiObject for Widget {
    const KIND: &'static str = "Widget";
    type Status = WidgetStatus;
}

/// What the test reconciler does on a call: wait, then panic or return.
#[derive(Clone)]
struct Step {
    sleep: Duration,
    panic: bool,
    result: Result<Action, ReconcileError>,
}

impl Step {
    fn done() -> Self {
        Step {
            sleep: Duration::ZERO,
            panic: false,
            result: Ok(Action::Done),
        }
    }
    fn sleep(mut self, d: Duration) -> Self {
        self.sleep = d;
        self
    }
    fn returns(result: Result<Action, ReconcileError>) -> Self {
        Step {
            result,
            ..Step::done()
        }
    }
}

type Script = dyn Fn(&Object<Widget>, u32) -> Step + Send + Sync;

/// Records what the runtime made it do.
#[derive(Default)]
struct Probe {
    calls: AtomicU32,
    cleanups: AtomicU32,
    call_times: Mutex<Vec<Instant>>,
    running: Mutex<HashMap<ObjectId, u32>>,
    max_running_per_object: AtomicU32,
    secrets: Mutex<Vec<SecretValues>>,
}

struct RunningGuard<'a>(&'a Probe, ObjectId);
impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        *self.0.running.lock().unwrap().get_mut(&self.1).unwrap() -= 1;
    }
}

impl Probe {
    fn enter(&self, id: ObjectId) -> RunningGuard<'_> {
        let mut running = self.running.lock().unwrap();
        let n = running.entry(id).or_default();
        *n += 1;
        self.max_running_per_object.fetch_max(*n, Ordering::SeqCst);
        RunningGuard(self, id)
    }
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
    fn gaps(&self) -> Vec<Duration> {
        let times = self.call_times.lock().unwrap();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

struct TestReconciler {
    name: &'static str,
    probe: Arc<Probe>,
    script: Arc<Script>,
    cleanup_script: Arc<Script>,
}

impl TestReconciler {
    fn new(
        probe: &Arc<Probe>,
        script: impl Fn(&Object<Widget>, u32) -> Step + Send + Sync + 'static,
    ) -> Self {
        TestReconciler {
            name: "replica",
            probe: probe.clone(),
            script: Arc::new(script),
            cleanup_script: Arc::new(|_, _| Step::done()),
        }
    }
    fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
    fn cleanup(
        mut self,
        script: impl Fn(&Object<Widget>, u32) -> Step + Send + Sync + 'static,
    ) -> Self {
        self.cleanup_script = Arc::new(script);
        self
    }
}

async fn perform(
    probe: &Probe,
    obj: &Object<Widget>,
    step: Step,
) -> Result<Action, ReconcileError> {
    let _guard = probe.enter(obj.id());
    tokio::time::sleep(step.sleep).await;
    if step.panic {
        panic!("reconciler bug");
    }
    step.result
}

#[async_trait]
impl Reconciler for TestReconciler {
    type Object = Widget;

    async fn reconcile(
        &self,
        obj: &mut Object<Widget>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        if let Some(secret) = ctx.secret() {
            self.probe.secrets.lock().unwrap().push(secret.clone());
        }
        let n = self.probe.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.probe.call_times.lock().unwrap().push(Instant::now());
        let step = (self.script)(obj, n);
        let result = perform(&self.probe, obj, step).await;
        obj.status.details.builds += 1;
        obj.status.details.built_by = self.name.to_owned();
        result
    }

    async fn cleanup(
        &self,
        obj: &mut Object<Widget>,
        _ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let n = self.probe.cleanups.fetch_add(1, Ordering::SeqCst) + 1;
        let step = (self.cleanup_script)(obj, n);
        perform(&self.probe, obj, step).await
    }
}

fn quick_config() -> ControllerConfig {
    ControllerConfig {
        lease_ttl: Duration::from_secs(30),
        ack_wait: Duration::from_secs(30),
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.0,
        },
        lock_busy_delay: Duration::from_millis(100),
        ..ControllerConfig::default()
    }
}

struct Harness {
    memory: MemoryBackends,
    shutdown: CancellationToken,
    widgets: Api<Widget>,
}

impl Harness {
    fn new() -> Self {
        let memory = MemoryBackends::new();
        let shutdown = CancellationToken::new();
        memory.spawn_relay(shutdown.clone());
        let widgets = Api::new(memory.store.clone());
        Harness {
            memory,
            shutdown,
            widgets,
        }
    }

    fn start(
        &self,
        reconciler: TestReconciler,
        config: ControllerConfig,
    ) -> (ControllerMetrics, JoinHandle<Result<()>>) {
        self.start_on(self.memory.backends(), reconciler, config)
    }

    fn start_on(
        &self,
        backends: Backends,
        reconciler: TestReconciler,
        config: ControllerConfig,
    ) -> (ControllerMetrics, JoinHandle<Result<()>>) {
        let controller = Controller::new(reconciler, backends).with_config(config);
        let metrics = controller.metrics();
        (metrics, tokio::spawn(controller.run(self.shutdown.clone())))
    }

    async fn create(&self, name: &str, size: u32) -> Object<Widget> {
        self.widgets.create(name, Widget { size }).await.unwrap()
    }

    async fn resize(&self, id: ObjectId, size: u32) -> Object<Widget> {
        let mut obj = self.widgets.get(id).await.unwrap();
        obj.spec.size = size;
        self.widgets.update(&obj).await.unwrap()
    }

    async fn reconciled(&self, id: ObjectId) -> Object<Widget> {
        self.wait(id, |o| o.is_reconciled()).await
    }

    async fn wait(
        &self,
        id: ObjectId,
        done: impl FnMut(&Object<Widget>) -> bool + Send,
    ) -> Object<Widget> {
        tokio::time::timeout(Duration::from_secs(3600), self.widgets.wait_until(id, done))
            .await
            .expect("condition not reached within an hour of (paused) time")
            .unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn new_objects_are_reconciled_and_marked_ready() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    h.start(
        TestReconciler::new(&probe, |_, _| Step::done()),
        quick_config(),
    );
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(h.create(&format!("w{i}"), i).await.id());
    }
    for id in ids {
        let obj = h.reconciled(id).await;
        assert_eq!(obj.status.state, LifecycleState::Reconciled);
        assert_eq!(obj.status.observed_generation, 1);
        assert_eq!(obj.status.details.builds, 1);
        let ready = obj.status.condition("Ready").unwrap();
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::True, "Reconciled")
        );
    }
    assert_eq!(probe.calls(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_spec_change_is_reconciled_at_its_generation() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    h.start(
        TestReconciler::new(&probe, |_, _| Step::done()),
        quick_config(),
    );
    let id = h.create("w", 1).await.id();
    h.reconciled(id).await;
    let updated = h.resize(id, 2).await;
    assert_eq!(updated.meta.generation, 2);
    assert!(
        !updated.is_reconciled(),
        "a new generation is not reconciled yet"
    );
    let obj = h.reconciled(id).await;
    assert_eq!(obj.status.observed_generation, 2);
    assert_eq!(obj.status.details.builds, 2);
}

/// Two replicas, many updates per object: never two reconciles of one object at once, and
/// every object ends reconciled at its last generation.
async fn mutual_exclusion_scenario() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    for name in ["a", "b"] {
        let reconciler =
            TestReconciler::new(&probe, |_, _| Step::done().sleep(Duration::from_millis(20)))
                .named(name);
        h.start(
            reconciler,
            ControllerConfig {
                concurrency: 4,
                ..quick_config()
            },
        );
    }
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(h.create(&format!("w{i}"), 0).await.id());
    }
    for round in 1..=5 {
        for id in &ids {
            h.resize(*id, round).await;
        }
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    for id in &ids {
        let obj = h
            .wait(*id, |o| o.is_reconciled() && o.meta.generation == 6)
            .await;
        assert_eq!(obj.spec.size, 5);
    }
    assert_eq!(
        probe.max_running_per_object.load(Ordering::SeqCst),
        1,
        "an object was reconciled concurrently"
    );
    assert!(probe.calls() >= 20);
}

#[tokio::test(start_paused = true)]
async fn two_replicas_never_reconcile_one_object_concurrently() {
    mutual_exclusion_scenario().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_reconcile_one_object_concurrently_on_real_threads() {
    mutual_exclusion_scenario().await;
}

#[tokio::test(start_paused = true)]
async fn notifications_during_a_reconcile_coalesce_into_one_follow_up() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    // Both runs outlast the ack-wait: only heartbeats keep the delivery.
    let (metrics, _) = h.start(
        TestReconciler::new(&probe, |_, _| Step::done().sleep(Duration::from_secs(10))),
        ControllerConfig {
            ack_wait: Duration::from_secs(3),
            ..quick_config()
        },
    );
    let group = "widget-controller";
    let id = h.create("w", 0).await.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(probe.calls(), 1, "first reconcile running");
    for size in 1..=10 {
        h.resize(id, size).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(metrics.coalesced.get() >= 1);
    assert_eq!(
        h.memory.bus.backlog(group),
        1,
        "coalesced notifications are acked at once; only the original delivery is in flight"
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(probe.calls(), 2, "the follow-up run started");
    assert_eq!(
        h.memory.bus.backlog(group),
        1,
        "the original delivery stays unacked (heartbeated) until the follow-up finishes"
    );
    let obj = h
        .wait(id, |o| o.is_reconciled() && o.meta.generation == 11)
        .await;
    assert_eq!(obj.spec.size, 10);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        probe.calls(),
        2,
        "ten notifications during one reconcile make one follow-up"
    );
    assert_eq!(metrics.queue_depth.get(), 0, "every delivery settled");
    assert_eq!(h.memory.bus.backlog(group), 0);
}

#[tokio::test(start_paused = true)]
async fn secret_values_reach_a_reconcile_of_their_own() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    let (metrics, _) = h.start(
        TestReconciler::new(&probe, |_, _| Step::done().sleep(Duration::from_secs(5))),
        quick_config(),
    );
    let id = h.create("w", 0).await.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(probe.calls(), 1, "first reconcile running");
    // Arrives while the object is being reconciled: folding it into the follow-up would
    // lose the values, so it waits for a run of its own.
    let secret = SecretValues([("token".to_owned(), "hunter2".to_owned())].into());
    h.memory
        .bus
        .publish(
            Notification::new(Widget::KIND, id, Operation::Updated, 2).with_secret(secret.clone()),
        )
        .await
        .unwrap();
    h.wait(id, |_| probe.calls() >= 2).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(*probe.secrets.lock().unwrap(), vec![secret]);
    assert_eq!(metrics.queue_depth.get(), 0, "every delivery settled");
    assert_eq!(probe.max_running_per_object.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn requeue_after_waits_the_delay_and_shows_progress() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    h.start(
        TestReconciler::new(&probe, |_, n| {
            if n < 3 {
                Step::returns(Ok(Action::RequeueAfter(Duration::from_secs(10))))
            } else {
                Step::done()
            }
        }),
        quick_config(),
    );
    let id = h.create("w", 1).await.id();
    let in_progress = h
        .wait(id, |o| {
            o.status.state == LifecycleState::CreationAcknowledged
        })
        .await;
    assert!(
        in_progress.status.acknowledged_at.is_some(),
        "heartbeat recorded"
    );
    assert_eq!(
        in_progress.status.condition("Ready").unwrap().reason,
        "Progressing"
    );
    h.reconciled(id).await;
    let gaps = probe.gaps();
    assert_eq!(gaps.len(), 2);
    for gap in gaps {
        assert!(
            gap >= Duration::from_secs(10) && gap < Duration::from_millis(10_100),
            "gap {gap:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_per_failure_and_resets_on_success() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    // Calls 1-3 fail, 4 succeeds; after a spec change, call 5 fails and 6 succeeds.
    h.start(
        TestReconciler::new(&probe, |_, n| match n {
            1..=3 | 5 => Step::returns(Err(ReconcileError::retryable("cloud says no"))),
            _ => Step::done(),
        }),
        quick_config(),
    );
    let id = h.create("w", 1).await.id();
    let failing = h.wait(id, |o| o.status.failures == 2).await;
    assert_eq!(failing.status.reason.as_deref(), Some("cloud says no"));
    assert_eq!(
        failing.status.condition("Ready").unwrap().reason,
        "ReconcileError"
    );
    assert_eq!(
        failing.status.events.len(),
        1,
        "repeated errors fold into one event"
    );
    assert_eq!(failing.status.events[0].count, 2);
    let ok = h.reconciled(id).await;
    assert_eq!(ok.status.failures, 0, "success resets the failure count");
    assert_eq!(ok.status.reason, None);
    h.resize(id, 2).await;
    h.wait(id, |o| {
        o.is_reconciled() && o.status.observed_generation == 2
    })
    .await;
    let gaps: Vec<u64> = probe.gaps().iter().map(|g| g.as_millis() as u64).collect();
    // 1 s, 2 s, 4 s between the failing attempts; the failure after the reset waits 1 s again.
    assert_eq!(gaps[0..3], [1000, 2000, 4000], "{gaps:?}");
    assert_eq!(
        gaps[4], 1000,
        "backoff must restart after a success: {gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn endless_failures_stop_at_the_retry_bound_until_the_object_changes() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    let (metrics, _) = h.start(
        TestReconciler::new(&probe, |o, _| {
            if o.spec.size == 0 {
                Step::returns(Err(ReconcileError::retryable("still broken")))
            } else {
                Step::done()
            }
        }),
        ControllerConfig {
            max_retries: 3,
            ..quick_config()
        },
    );
    let id = h.create("w", 0).await.id();
    let failed = h
        .wait(id, |o| o.status.state == LifecycleState::CreationFailed)
        .await;
    assert_eq!(
        failed.status.reason.as_deref(),
        Some("gave up after 4 failed attempts: still broken")
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(probe.calls(), 4, "no retries past the bound");
    assert_eq!(metrics.reconciles(ReconcileResult::terminal).get(), 1);
    h.resize(id, 1).await;
    h.reconciled(id).await;
}

#[tokio::test(start_paused = true)]
async fn terminal_errors_are_recorded_and_not_retried_until_the_object_changes() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    let (metrics, _) = h.start(
        TestReconciler::new(&probe, |o, _| {
            if o.spec.size == 0 {
                Step::returns(Err(ReconcileError::terminal("size must be positive")))
            } else {
                Step::done()
            }
        }),
        quick_config(),
    );
    let id = h.create("w", 0).await.id();
    let failed = h
        .wait(id, |o| o.status.state == LifecycleState::CreationFailed)
        .await;
    assert_eq!(
        failed.status.reason.as_deref(),
        Some("size must be positive")
    );
    let ready = failed.status.condition("Ready").unwrap();
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::False, "Failed")
    );
    assert_eq!(failed.status.events[0].type_, EventType::Warning);
    // A duplicate notification of the same generation is skipped, not retried.
    h.memory
        .bus
        .publish(Notification {
            kind: "Widget".into(),
            id,
            operation: Operation::Updated,
            version: 1,
            secret: None,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(probe.calls(), 1);
    assert_eq!(metrics.reconciles(ReconcileResult::skipped).get(), 1);
    h.resize(id, 3).await;
    let fixed = h.reconciled(id).await;
    assert_eq!(fixed.status.reason, None);
    assert_eq!(probe.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn panics_become_retryable_errors_and_a_metric() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    let (metrics, controller) = h.start(
        TestReconciler::new(&probe, |_, n| Step {
            panic: n == 1,
            ..Step::done()
        }),
        quick_config(),
    );
    let id = h.create("w", 1).await.id();
    h.reconciled(id).await;
    assert_eq!(probe.calls(), 2);
    assert_eq!(metrics.reconcile_panics.get(), 1);
    assert!(
        !controller.is_finished(),
        "the controller survives a panicking reconciler"
    );
}

#[tokio::test(start_paused = true)]
async fn reconciles_past_the_timeout_are_cut_off_and_retried() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    let (metrics, _) = h.start(
        TestReconciler::new(&probe, |_, n| {
            if n == 1 {
                Step::done().sleep(Duration::from_secs(3600))
            } else {
                Step::done()
            }
        }),
        ControllerConfig {
            reconcile_timeout: Duration::from_secs(5),
            ..quick_config()
        },
    );
    let started = Instant::now();
    let id = h.create("w", 1).await.id();
    h.reconciled(id).await;
    assert_eq!(metrics.reconcile_timeouts.get(), 1);
    assert_eq!(
        probe.running.lock().unwrap()[&id],
        0,
        "the timed-out reconcile was dropped"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "retried after the timeout and 1 s backoff"
    );
}

/// How a [`FaultyLocker`] mishandles renewals.
#[derive(Debug, Clone, Copy)]
enum RenewFault {
    /// Claims success without renewing: the lease silently expires, as after a process pause.
    Lie,
    /// Fails every renewal, as when the lock service is unreachable.
    Fail,
}

/// A memory locker with faulty renewals.
#[derive(Debug)]
struct FaultyLocker(Arc<MemoryLocker>, RenewFault);

#[async_trait]
impl Locker for FaultyLocker {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        self.0.acquire(key, holder, ttl).await
    }
    async fn renew(&self, lease: &Lease) -> Result<Lease> {
        match self.1 {
            RenewFault::Lie => Ok(lease.clone()),
            RenewFault::Fail => Err(Error::unavailable("lock service unreachable")),
        }
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.0.release(lease).await
    }
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_over_and_the_old_holders_write_is_fenced_off() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    let config = ControllerConfig {
        concurrency: 1,
        lease_ttl: Duration::from_secs(3),
        ..quick_config()
    };
    // Replica "stale" believes it renews, but its lease runs out; its reconcile is slow.
    let stale_backends = Backends {
        locker: Arc::new(FaultyLocker(h.memory.locker.clone(), RenewFault::Lie)),
        ..h.memory.backends()
    };
    let (stale_metrics, _) = h.start_on(
        stale_backends,
        TestReconciler::new(&probe, |_, _| Step::done().sleep(Duration::from_secs(20)))
            .named("stale"),
        config.clone(),
    );
    let id = h.create("w", 1).await.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(probe.calls(), 1, "stale replica is reconciling");
    // A fresh replica starts; a change arrives after the stale lease expired.
    let fresh_probe = Arc::new(Probe::default());
    h.start(
        TestReconciler::new(&fresh_probe, |_, _| Step::done()).named("fresh"),
        config,
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    h.resize(id, 2).await;
    let obj = h
        .wait(id, |o| {
            o.is_reconciled() && o.status.observed_generation == 2
        })
        .await;
    assert_eq!(obj.status.details.built_by, "fresh");
    // The stale replica finishes later; its write carries an older fencing token.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        stale_metrics.leases_lost.get(),
        1,
        "stale write must be fenced off"
    );
    let end = h.widgets.get(id).await.unwrap();
    assert_eq!(
        end.status.details.built_by, "fresh",
        "the newer holder's status stands"
    );
    assert_eq!(end.status.observed_generation, 2);
}

#[tokio::test(start_paused = true)]
async fn a_reconcile_whose_lease_cannot_be_renewed_is_abandoned() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    let backends = Backends {
        locker: Arc::new(FaultyLocker(h.memory.locker.clone(), RenewFault::Fail)),
        ..h.memory.backends()
    };
    let (metrics, _) = h.start_on(
        backends,
        TestReconciler::new(&probe, |_, _| Step::done().sleep(Duration::from_secs(20))),
        ControllerConfig {
            lease_ttl: Duration::from_secs(3),
            ..quick_config()
        },
    );
    let id = h.create("w", 1).await.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        metrics.leases_lost.get(),
        1,
        "abandoned at the first failed renewal (ttl/3)"
    );
    assert_eq!(probe.calls(), 2, "retried after the lock-busy delay");
    assert_eq!(
        probe.max_running_per_object.load(Ordering::SeqCst),
        1,
        "the abandoned reconcile was dropped before the retry started"
    );
    let obj = h.widgets.get(id).await.unwrap();
    assert_eq!(
        obj.status.details.builds, 0,
        "nothing written by the abandoned reconcile"
    );
}

#[tokio::test(start_paused = true)]
async fn deletion_runs_cleanup_then_removes_the_object() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    h.start(
        TestReconciler::new(&probe, |_, _| Step::done()).cleanup(|_, n| {
            if n == 1 {
                Step::returns(Ok(Action::RequeueAfter(Duration::from_secs(5))))
            } else {
                Step::done()
            }
        }),
        quick_config(),
    );
    let id = h.create("w", 1).await.id();
    h.reconciled(id).await;
    let scheduled = h.widgets.delete(id).await.unwrap();
    assert_eq!(scheduled.status.state, LifecycleState::DeletionScheduled);
    let deleting = h
        .wait(id, |o| {
            o.status.state == LifecycleState::DeletionAcknowledged
        })
        .await;
    assert!(deleting.status.acknowledged_at.is_some());
    h.widgets.wait_until_gone(id).await.unwrap();
    assert_eq!(probe.cleanups.load(Ordering::SeqCst), 2);
    h.create("w", 1).await;
}

#[tokio::test(start_paused = true)]
async fn a_cleanup_that_fails_terminally_interrupts_the_object() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    h.start(
        TestReconciler::new(&probe, |_, _| Step::done())
            .cleanup(|_, _| Step::returns(Err(ReconcileError::terminal("bucket not empty")))),
        quick_config(),
    );
    let id = h.create("w", 1).await.id();
    h.reconciled(id).await;
    h.widgets.delete(id).await.unwrap();
    let stuck = h
        .wait(id, |o| o.status.state == LifecycleState::Interrupted)
        .await;
    assert_eq!(stuck.status.reason.as_deref(), Some("bucket not empty"));
    assert!(stuck.is_deleting(), "still there for a human to look at");
}

#[tokio::test(start_paused = true)]
async fn deliveries_that_never_complete_mark_the_object_interrupted() {
    let h = Harness::new();
    let config = ControllerConfig {
        max_deliveries: 3,
        ack_wait: Duration::from_secs(5),
        ..quick_config()
    };
    let id = h.create("w", 1).await.id();
    // A "replica" that takes the notification and crashes each time (never settles it).
    let mut crashing = h
        .memory
        .bus
        .subscribe(SubscribeOptions {
            group: "widget-controller".into(),
            kinds: vec!["Widget".into()],
            ack_wait: config.ack_wait,
            max_deliveries: Some(config.max_deliveries + 1),
        })
        .await
        .unwrap();
    for attempt in 1..=3 {
        let delivery = crashing.next().await.unwrap().unwrap();
        assert_eq!(delivery.attempt, attempt);
        drop(delivery);
    }
    drop(crashing);
    let probe = Arc::new(Probe::default());
    h.start(TestReconciler::new(&probe, |_, _| Step::done()), config);
    let obj = h
        .wait(id, |o| o.status.state == LifecycleState::Interrupted)
        .await;
    assert!(
        obj.status
            .reason
            .as_deref()
            .unwrap()
            .contains("delivered 3 times without completing")
    );
    assert_eq!(
        probe.calls(),
        0,
        "a poison notification is not handed to the reconciler again"
    );
}

#[tokio::test(start_paused = true)]
async fn notifications_for_missing_objects_are_acked_and_skipped() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    let (metrics, _) = h.start(
        TestReconciler::new(&probe, |_, _| Step::done()),
        quick_config(),
    );
    h.memory
        .bus
        .publish(Notification {
            kind: "Widget".into(),
            id: ObjectId::new(),
            operation: Operation::Created,
            version: 1,
            secret: None,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(metrics.reconciles(ReconcileResult::skipped).get(), 1);
    assert_eq!(h.memory.bus.backlog("widget-controller"), 0);
    assert_eq!(probe.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stored_spec_that_does_not_decode_fails_with_the_reason() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    h.start(
        TestReconciler::new(&probe, |_, _| Step::done()),
        quick_config(),
    );
    let raw = h
        .memory
        .store
        .create(NewObject {
            kind: "Widget".into(),
            name: "corrupt".into(),
            labels: Labels::new(),
            references: vec![],
            owners: Vec::new(),
            spec: serde_json::json!({"size": "huge"}),
        })
        .await
        .unwrap();
    let obj = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let obj = h.memory.store.get("Widget", raw.meta.id).await.unwrap();
            if obj.status.state == LifecycleState::CreationFailed {
                return obj;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert!(obj.status.reason.unwrap().contains("cannot be decoded"));
    assert_eq!(probe.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_running_reconciles() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    let (_, controller) = h.start(
        TestReconciler::new(&probe, |_, _| Step::done().sleep(Duration::from_secs(5))),
        quick_config(),
    );
    let id = h.create("w", 1).await.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(probe.calls(), 1);
    let stopping = Instant::now();
    h.shutdown.cancel();
    controller.await.unwrap().unwrap();
    assert!(
        stopping.elapsed() >= Duration::from_secs(4),
        "waited for the running reconcile"
    );
    assert!(
        h.widgets.get(id).await.unwrap().is_reconciled(),
        "drained work completed"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_aborts_past_the_drain_timeout_and_hands_the_work_back() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    let shutdown_one = CancellationToken::new();
    let controller = Controller::new(
        TestReconciler::new(&probe, |_, _| Step::done().sleep(Duration::from_secs(3600))),
        h.memory.backends(),
    )
    .with_config(ControllerConfig {
        drain_timeout: Duration::from_secs(2),
        ..quick_config()
    });
    let task = tokio::spawn(controller.run(shutdown_one.clone()));
    let id = h.create("w", 1).await.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopping = Instant::now();
    shutdown_one.cancel();
    task.await.unwrap().unwrap();
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    // The lease was released and the delivery requeued at once: a new replica takes over now.
    let fresh = Arc::new(Probe::default());
    h.start(
        TestReconciler::new(&fresh, |_, _| Step::done()),
        quick_config(),
    );
    let restarted = Instant::now();
    h.reconciled(id).await;
    assert!(
        restarted.elapsed() < Duration::from_secs(1),
        "no wait for ack-wait or lease expiry"
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_are_exported_in_prometheus_text_format() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ControllerMetrics::register(&mut registry, "widget-controller");
    let controller = Controller::new(
        TestReconciler::new(&probe, |_, _| Step::done()),
        h.memory.backends(),
    )
    .with_config(quick_config())
    .with_metrics(metrics);
    tokio::spawn(controller.run(h.shutdown.clone()));
    let id = h.create("w", 1).await.id();
    h.reconciled(id).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"controller_runtime_reconcile_total{controller="widget-controller",result="success"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            "controller_runtime_reconcile_time_seconds_count{controller=\"widget-controller\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("workqueue_depth{controller=\"widget-controller\"} 0"),
        "{text}"
    );
}

/// A bus that is down for its first `outages` subscriptions, then the memory bus.
#[derive(Debug)]
struct StartingBus {
    inner: Arc<MemoryBus>,
    outages: AtomicU32,
    refuse: bool,
}

#[async_trait]
impl Bus for StartingBus {
    async fn publish(&self, notification: Notification) -> Result<()> {
        self.inner.publish(notification).await
    }

    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Subscription>> {
        if self.refuse {
            return Err(Error::invalid("group", "refused by configuration"));
        }
        if self
            .outages
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::unavailable("broker restarting"));
        }
        self.inner.subscribe(options).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_bus_down_at_start_is_waited_for_and_a_refusal_fails_at_once() {
    let h = Harness::new();
    let probe = Arc::new(Probe::default());
    let starting = Arc::new(StartingBus {
        inner: h.memory.bus.clone(),
        outages: AtomicU32::new(3),
        refuse: false,
    });
    let backends = Backends {
        bus: starting.clone(),
        ..h.memory.backends()
    };
    h.start_on(
        backends.clone(),
        TestReconciler::new(&probe, |_, _| Step::done()),
        quick_config(),
    );
    let id = h.create("w", 1).await.id();
    h.reconciled(id).await;
    assert_eq!(
        starting.outages.load(Ordering::SeqCst),
        0,
        "every outage was sat out"
    );

    let refusing = Backends {
        bus: Arc::new(StartingBus {
            inner: h.memory.bus.clone(),
            outages: AtomicU32::new(0),
            refuse: true,
        }),
        ..h.memory.backends()
    };
    let (_, task) = h.start_on(
        refusing,
        TestReconciler::new(&probe, |_, _| Step::done()),
        quick_config(),
    );
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
}
