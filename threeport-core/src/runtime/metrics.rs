//! Prometheus metrics of a controller, named after controller-runtime's so existing dashboards
//! and alerts carry over.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Outcome label of `controller_runtime_reconcile_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReconcileResult {
    /// Reconciled, nothing more to do.
    success,
    /// Reconciled and requeued by the reconciler (`Action::RequeueAfter`).
    requeue_after,
    /// Failed and retried with backoff.
    error,
    /// Failed terminally, or gave up after the retry or delivery bound.
    terminal,
    /// Not run: object gone, or stopped in a failed state at its current generation.
    skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: ReconcileResult,
}

/// The metrics of one controller. Cheap to clone: clones share the same counters.
#[derive(Debug, Clone)]
pub struct ControllerMetrics {
    reconcile_total: Family<ResultLabels, Counter>,
    /// Failed reconciles (errors, terminal errors, panics, timeouts).
    pub reconcile_errors: Counter,
    /// Reconciles that panicked.
    pub reconcile_panics: Counter,
    /// Reconciles cut off by the per-reconcile timeout.
    pub reconcile_timeouts: Counter,
    /// Reconcile duration.
    pub reconcile_time: Histogram,
    /// Workers running a reconcile now.
    pub active_workers: Gauge,
    /// Deliveries received and not yet settled (running or coalesced behind a running one).
    pub queue_depth: Gauge,
    /// Time from a notification being due to its reconcile starting.
    pub queue_latency: Histogram,
    /// Retries scheduled after errors.
    pub retries: Counter,
    /// Notifications folded into an already running reconcile of the same object.
    pub coalesced: Counter,
    /// Reconciles abandoned because the object's lease was lost.
    pub leases_lost: Counter,
    /// Objects a resync found waiting for a reconcile and notified.
    pub resynced: Counter,
    /// Reconciles that finished or gave up (a timeout) while work they spawned through the
    /// context still runs; their objects stay locked until it stops.
    pub overrunning: Gauge,
}

impl ControllerMetrics {
    /// Metrics registered in `registry`, labelled `controller=<name>`.
    pub fn register(registry: &mut Registry, controller: &str) -> Self {
        let metrics = Self::unregistered();
        let sub =
            registry.sub_registry_with_label(("controller".into(), controller.to_owned().into()));
        sub.register(
            "controller_runtime_reconcile",
            "Reconciles by result",
            metrics.reconcile_total.clone(),
        );
        sub.register(
            "controller_runtime_reconcile_errors",
            "Failed reconciles",
            metrics.reconcile_errors.clone(),
        );
        sub.register(
            "controller_runtime_reconcile_panics",
            "Reconciles that panicked",
            metrics.reconcile_panics.clone(),
        );
        sub.register(
            "controller_runtime_reconcile_timeouts",
            "Reconciles cut off by the timeout",
            metrics.reconcile_timeouts.clone(),
        );
        sub.register(
            "controller_runtime_reconcile_time_seconds",
            "Reconcile duration",
            metrics.reconcile_time.clone(),
        );
        sub.register(
            "controller_runtime_active_workers",
            "Workers running a reconcile",
            metrics.active_workers.clone(),
        );
        sub.register(
            "workqueue_depth",
            "Deliveries received and not yet settled",
            metrics.queue_depth.clone(),
        );
        sub.register(
            "workqueue_queue_duration_seconds",
            "Time from due to reconcile start",
            metrics.queue_latency.clone(),
        );
        sub.register(
            "workqueue_retries",
            "Retries after errors",
            metrics.retries.clone(),
        );
        sub.register(
            "workqueue_coalesced",
            "Notifications folded into a running reconcile",
            metrics.coalesced.clone(),
        );
        sub.register(
            "controller_runtime_leases_lost",
            "Reconciles abandoned after losing the lease",
            metrics.leases_lost.clone(),
        );
        sub.register(
            "controller_runtime_resync_notifications",
            "Objects a resync found waiting for a reconcile",
            metrics.resynced.clone(),
        );
        sub.register(
            "controller_runtime_overrunning_reconciles",
            "Reconciles whose spawned work has not stopped yet (objects stay locked)",
            metrics.overrunning.clone(),
        );
        metrics
    }

    /// Metrics that count but are not exported (the default of a controller).
    pub fn unregistered() -> Self {
        ControllerMetrics {
            reconcile_total: Family::default(),
            reconcile_errors: Counter::default(),
            reconcile_panics: Counter::default(),
            reconcile_timeouts: Counter::default(),
            reconcile_time: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            active_workers: Gauge::default(),
            queue_depth: Gauge::default(),
            queue_latency: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            retries: Counter::default(),
            coalesced: Counter::default(),
            leases_lost: Counter::default(),
            resynced: Counter::default(),
            overrunning: Gauge::default(),
        }
    }

    /// The reconcile counter of one result.
    pub fn reconciles(&self, result: ReconcileResult) -> Counter {
        self.reconcile_total
            .get_or_create(&ResultLabels { result })
            .clone()
    }
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::unregistered()
    }
}
