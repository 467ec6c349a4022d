//! Where health reports go, and how one is written into a workload instance's status.

use std::time::Duration;

use async_trait::async_trait;
use threeport_api::model::{
    HealthReport, HelmWorkloadInstance, WorkloadInstance, WorkloadInstanceStatus,
};
use threeport_core::runtime::{ObservedWrite, write_observed_change};
use threeport_core::{ApiObject, Backends, ObjectId, Result};

/// What became of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// Recorded (or already what the status said).
    Recorded,
    /// Not now (the instance is being reconciled): send it again shortly.
    Busy,
    /// The instance does not exist: forget it.
    Gone,
}

/// Takes a runtime watcher's reports.
#[async_trait]
pub trait HealthSink: Send + Sync + std::fmt::Debug + 'static {
    /// Records what the watcher saw of `instance` (a WorkloadInstance or HelmWorkloadInstance).
    async fn report(&self, instance: ObjectId, report: &HealthReport) -> Result<Reported>;
}

/// How long [`record_health`] waits for a reconcile to release an instance.
const BUSY_PATIENCE: Duration = Duration::from_secs(2);

/// Writes `report` into (Helm) workload instance `id`'s status under the instance's lease, so it
/// neither races nor is lost to a reconcile: health, each resource's health, events kept
/// once per UID. Waits a little while a reconcile holds the lease, then says
/// [`Reported::Busy`].
pub async fn record_health(
    backends: &Backends,
    id: ObjectId,
    report: &HealthReport,
    holder: &str,
) -> Result<Reported> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        // A change not reconciled yet (and not failing): its reconcile is due or under way;
        // leave the lease to it (taking it would send that reconcile back to the queue for a
        // second) and come back.
        let current = match get_instance(backends, id).await {
            Ok(current)
                if current.status.observed_generation < current.meta.generation
                    && current.status.failures == 0 =>
            {
                return Ok(Reported::Busy);
            }
            Ok(current) => current,
            Err(err) if err.kind() == threeport_core::ErrorKind::NotFound => {
                return Ok(Reported::Gone);
            }
            Err(err) => return Err(err),
        };
        let written = write_observed_change(backends, current, holder, |status| {
            let Ok(mut details) =
                serde_json::from_value::<WorkloadInstanceStatus>(status.details.clone())
            else {
                return false;
            };
            let mut changed = details.observe(report);
            for event in &report.events {
                changed |= status.observe_event(event.clone());
            }
            if changed {
                // Field by field: a Helm workload's status has more than the workload part.
                let (Ok(serde_json::Value::Object(fields)), Some(target)) = (
                    serde_json::to_value(&details),
                    status.details.as_object_mut(),
                ) else {
                    return false;
                };
                target.extend(fields);
            }
            changed
        })
        .await?;
        match written {
            ObservedWrite::Written(_) | ObservedWrite::Unchanged => return Ok(Reported::Recorded),
            ObservedWrite::Gone => return Ok(Reported::Gone),
            ObservedWrite::Busy if started.elapsed() >= BUSY_PATIENCE => return Ok(Reported::Busy),
            ObservedWrite::Busy => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
    }
}

/// The instance a report is about: a workload instance, else a Helm workload instance (their
/// objects carry the same label, with ids unique across kinds).
async fn get_instance(backends: &Backends, id: ObjectId) -> Result<threeport_core::RawObject> {
    match backends.store.get(WorkloadInstance::KIND, id).await {
        Err(err) if err.kind() == threeport_core::ErrorKind::NotFound => {
            backends.store.get(HelmWorkloadInstance::KIND, id).await
        }
        found => found,
    }
}

/// Writes reports straight into the store (the control plane's own watchers).
#[derive(Debug, Clone)]
pub struct StoreSink {
    backends: Backends,
    holder: String,
}

impl StoreSink {
    /// A sink writing through `backends`, taking instance leases as `holder`.
    pub fn new(backends: Backends, holder: impl Into<String>) -> Self {
        StoreSink {
            backends,
            holder: holder.into(),
        }
    }
}

#[async_trait]
impl HealthSink for StoreSink {
    async fn report(&self, instance: ObjectId, report: &HealthReport) -> Result<Reported> {
        record_health(&self.backends, instance, report, &self.holder).await
    }
}
