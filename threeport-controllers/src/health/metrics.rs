//! Prometheus metrics of the health watchers.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Reported;

/// Outcome label of `threeport_health_reports_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Outcome {
    recorded,
    busy,
    gone,
    error,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

/// What the health watchers of a process did. Cheap to clone: clones share the counters.
#[derive(Debug, Clone, Default)]
pub struct HealthMetrics {
    reports: Family<OutcomeLabels, Counter>,
    /// Runtimes this process watches now.
    pub runtimes: Gauge,
    /// Watches that cannot reach their cluster now.
    pub unreachable: Gauge,
    /// Lists (a watch's first, and after 410 Gone or an outage).
    pub lists: Counter,
}

impl HealthMetrics {
    /// Metrics registered in `registry` (`threeport_health_*`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = HealthMetrics::default();
        let health = registry.sub_registry_with_prefix("threeport_health");
        health.register(
            "reports",
            "Health reports handed to the store or the API, by outcome",
            metrics.reports.clone(),
        );
        health.register(
            "runtimes",
            "Runtimes whose health this process watches",
            metrics.runtimes.clone(),
        );
        health.register(
            "unreachable_watches",
            "Watches that cannot reach their cluster",
            metrics.unreachable.clone(),
        );
        health.register(
            "lists",
            "Lists of a watched kind (first, after 410 Gone, after an outage)",
            metrics.lists.clone(),
        );
        metrics
    }

    /// Counts a report's outcome (`None`: it failed).
    pub fn reported(&self, outcome: Option<Reported>) {
        let outcome = match outcome {
            Some(Reported::Recorded) => Outcome::recorded,
            Some(Reported::Busy) => Outcome::busy,
            Some(Reported::Gone) => Outcome::gone,
            None => Outcome::error,
        };
        self.reports.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}
