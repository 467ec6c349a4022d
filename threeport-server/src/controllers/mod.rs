//! The controllers this build has, by the name `threeport-server controller <name>` takes.

mod clusters;
mod runtime;
mod workload_definition;
mod workload_instance;

use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use threeport_core::{Backends, Controller, ControllerConfig, ControllerMetrics, Result};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use clusters::{ClusterProvider, KubeClusters, SingleCluster};
pub use runtime::RuntimeReconciler;
pub use workload_definition::{WorkloadDefinitionReconciler, split_manifests};
pub use workload_instance::{FIELD_MANAGER, WorkloadInstanceReconciler};

/// Names of the available controllers.
pub const AVAILABLE: &[&str] = &[
    "workload-definition",
    "workload-instance",
    "kubernetes-runtime",
];

/// Starts controller `name` on `backends` until `shutdown`, its metrics in `metrics`;
/// controllers that reach clusters do so through `clusters`.
///
/// Errors: `Invalid` (field `controller`) for a name not in [`AVAILABLE`].
pub fn spawn(
    name: &str,
    backends: Backends,
    clusters: &Arc<dyn ClusterProvider>,
    metrics: &Arc<Mutex<Registry>>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<Result<()>>> {
    let group = format!("{name}-controller");
    let registered = ControllerMetrics::register(&mut metrics.lock().unwrap(), &group);
    let config = ControllerConfig {
        name: group,
        ..ControllerConfig::default()
    };
    match name {
        "workload-definition" => Ok(tokio::spawn(
            Controller::new(WorkloadDefinitionReconciler, backends)
                .with_config(config)
                .with_metrics(registered)
                .run(shutdown),
        )),
        "workload-instance" => Ok(tokio::spawn(
            Controller::new(WorkloadInstanceReconciler::new(clusters.clone()), backends)
                .with_config(config)
                .with_metrics(registered)
                .run(shutdown),
        )),
        "kubernetes-runtime" => Ok(tokio::spawn(
            Controller::new(RuntimeReconciler::new(clusters.clone()), backends)
                .with_config(config)
                .with_metrics(registered)
                .run(shutdown),
        )),
        other => Err(threeport_core::Error::invalid(
            "controller",
            format!(
                "no controller named {other:?}; available: {}",
                AVAILABLE.join(", ")
            ),
        )),
    }
}
