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
struct ControllerLabels {
    controller: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    controller: String,
    result: ReconcileResult,
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// The metric families of every controller in a registry, each labelled `controller=<name>`:
/// registered once, so an exposition has one family per metric name however many
/// controllers a process runs (Prometheus refuses a family repeated in one scrape).
#[derive(Debug, Clone)]
pub struct ControllerMetricFamilies {
    reconcile_total: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    reconcile_panics: Family<ControllerLabels, Counter>,
    reconcile_timeouts: Family<ControllerLabels, Counter>,
    reconcile_time: HistogramFamily,
    active_workers: Family<ControllerLabels, Gauge>,
    queue_depth: Family<ControllerLabels, Gauge>,
    queue_latency: HistogramFamily,
    retries: Family<ControllerLabels, Counter>,
    redeliveries: Family<ControllerLabels, Counter>,
    coalesced: Family<ControllerLabels, Counter>,
    leases_lost: Family<ControllerLabels, Counter>,
    resynced: Family<ControllerLabels, Counter>,
    overrunning: Family<ControllerLabels, Gauge>,
}

impl Default for ControllerMetricFamilies {
    fn default() -> Self {
        ControllerMetricFamilies {
            reconcile_total: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_panics: Family::default(),
            reconcile_timeouts: Family::default(),
            reconcile_time: Family::new_with_constructor(latency_histogram),
            active_workers: Family::default(),
            queue_depth: Family::default(),
            queue_latency: Family::new_with_constructor(latency_histogram),
            retries: Family::default(),
            redeliveries: Family::default(),
            coalesced: Family::default(),
            leases_lost: Family::default(),
            resynced: Family::default(),
            overrunning: Family::default(),
        }
    }
}

impl ControllerMetricFamilies {
    /// The families, registered in `registry` (once per registry).
    pub fn register(registry: &mut Registry) -> Self {
        let f = Self::default();
        let counters: [(&str, &str, &Family<ControllerLabels, Counter>); 8] = [
            (
                "controller_runtime_reconcile_errors",
                "Failed reconciles",
                &f.reconcile_errors,
            ),
            (
                "controller_runtime_reconcile_panics",
                "Reconciles that panicked",
                &f.reconcile_panics,
            ),
            (
                "controller_runtime_reconcile_timeouts",
                "Reconciles cut off by the timeout",
                &f.reconcile_timeouts,
            ),
            ("workqueue_retries", "Retries after errors", &f.retries),
            (
                "workqueue_redeliveries",
                "Notifications the bus delivered again (not acknowledged in time, or a replica gone)",
                &f.redeliveries,
            ),
            (
                "workqueue_coalesced",
                "Notifications folded into a running reconcile",
                &f.coalesced,
            ),
            (
                "controller_runtime_leases_lost",
                "Reconciles abandoned after losing the lease",
                &f.leases_lost,
            ),
            (
                "controller_runtime_resync_notifications",
                "Objects a resync found waiting for a reconcile",
                &f.resynced,
            ),
        ];
        registry.register(
            "controller_runtime_reconcile",
            "Reconciles by result",
            f.reconcile_total.clone(),
        );
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Reconcile duration",
            f.reconcile_time.clone(),
        );
        registry.register(
            "controller_runtime_active_workers",
            "Workers running a reconcile",
            f.active_workers.clone(),
        );
        registry.register(
            "workqueue_depth",
            "Deliveries received and not yet settled",
            f.queue_depth.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "Time from due to reconcile start",
            f.queue_latency.clone(),
        );
        registry.register(
            "controller_runtime_overrunning_reconciles",
            "Reconciles whose spawned work has not stopped yet (objects stay locked)",
            f.overrunning.clone(),
        );
        f
    }

    /// The metrics of controller `name` (its series in these families).
    pub fn controller(&self, name: &str) -> ControllerMetrics {
        let labels = ControllerLabels {
            controller: name.to_owned(),
        };
        let counter = |f: &Family<ControllerLabels, Counter>| f.get_or_create(&labels).clone();
        let gauge = |f: &Family<ControllerLabels, Gauge>| f.get_or_create(&labels).clone();
        let histogram = |f: &HistogramFamily| f.get_or_create(&labels).clone();
        ControllerMetrics {
            controller: name.to_owned(),
            reconcile_total: self.reconcile_total.clone(),
            reconcile_errors: counter(&self.reconcile_errors),
            reconcile_panics: counter(&self.reconcile_panics),
            reconcile_timeouts: counter(&self.reconcile_timeouts),
            reconcile_time: histogram(&self.reconcile_time),
            active_workers: gauge(&self.active_workers),
            queue_depth: gauge(&self.queue_depth),
            queue_latency: histogram(&self.queue_latency),
            retries: counter(&self.retries),
            redeliveries: counter(&self.redeliveries),
            coalesced: counter(&self.coalesced),
            leases_lost: counter(&self.leases_lost),
            resynced: counter(&self.resynced),
            overrunning: gauge(&self.overrunning),
        }
    }
}

/// The metrics of one controller. Cheap to clone: clones share the same counters.
#[derive(Debug, Clone)]
pub struct ControllerMetrics {
    controller: String,
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
    /// Notifications delivered again by the bus (after an ack timeout or a lost replica).
    pub redeliveries: Counter,
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
    /// Metrics registered in `registry`, labelled `controller=<name>`: for a registry with
    /// this one controller. Several controllers in one registry share one
    /// [`ControllerMetricFamilies`] instead.
    pub fn register(registry: &mut Registry, controller: &str) -> Self {
        ControllerMetricFamilies::register(registry).controller(controller)
    }

    /// Metrics that count but are not exported (the default of a controller).
    pub fn unregistered() -> Self {
        ControllerMetricFamilies::default().controller("")
    }

    /// The reconcile counter of one result.
    pub fn reconciles(&self, result: ReconcileResult) -> Counter {
        self.reconcile_total
            .get_or_create(&ResultLabels {
                controller: self.controller.clone(),
                result,
            })
            .clone()
    }
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::unregistered()
    }
}
