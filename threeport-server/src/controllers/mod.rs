//! The controllers this build has, by the name `threeport-server controller <name>` takes.

pub mod attached;
mod aws;
mod clusters;
mod eks;
mod nudge;
mod runtime;
mod workload_definition;
mod workload_instance;

use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use threeport_core::{Backends, Controller, ControllerConfig, ControllerMetrics, Result};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use aws::{
    AwsProvider, AwsServices, BucketReconciler, DatabaseReconciler, FixedAws, SdkAws,
    SecretInstanceReconciler, SecretReconciler, master_password,
};
pub use clusters::{ClusterProvider, KubeClusters, SingleCluster};
pub use eks::{EksReconciler, SERVICE_ACCOUNT, SYSTEM_NAMESPACE};
pub use runtime::RuntimeReconciler;
pub use workload_definition::{WorkloadDefinitionReconciler, split_manifests};
pub use workload_instance::{FIELD_MANAGER, WorkloadInstanceReconciler};

/// Names of the available controllers.
pub const AVAILABLE: &[&str] = &[
    "workload-definition",
    "workload-instance",
    "kubernetes-runtime",
    "aws-bucket",
    "aws-database",
    "aws-secret",
    "aws-secret-instance",
    "aws-eks",
];

/// What controllers reach the outside world through.
#[derive(Debug, Clone)]
pub struct Providers {
    /// Kubernetes clusters.
    pub clusters: Arc<dyn ClusterProvider>,
    /// AWS accounts.
    pub aws: Arc<dyn AwsProvider>,
    /// Seals what controllers keep secret in status (database passwords).
    pub sealer: Arc<crate::Sealer>,
}

/// Starts controller `name` on `backends` until `shutdown`, its metrics in `metrics`, tuned
/// as `tuning` says (its name is set here); controllers that reach clusters or AWS do so
/// through `providers`.
///
/// Errors: `Invalid` (field `controller`) for a name not in [`AVAILABLE`].
pub fn spawn(
    name: &str,
    backends: Backends,
    providers: &Providers,
    metrics: &Arc<Mutex<Registry>>,
    tuning: &ControllerConfig,
    shutdown: CancellationToken,
) -> Result<JoinHandle<Result<()>>> {
    let clusters = &providers.clusters;
    let group = format!("{name}-controller");
    let registered = ControllerMetrics::register(&mut metrics.lock().unwrap(), &group);
    let config = ControllerConfig {
        name: group,
        ..tuning.clone()
    };
    match name {
        "workload-definition" => Ok(tokio::spawn(
            Controller::new(WorkloadDefinitionReconciler, backends)
                .with_config(config)
                .with_metrics(registered)
                .run(shutdown),
        )),
        "workload-instance" => Ok(tokio::spawn(
            Controller::new(
                WorkloadInstanceReconciler::new(clusters.clone(), providers.sealer.clone()),
                backends,
            )
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
        "aws-bucket" => Ok(tokio::spawn(
            Controller::new(BucketReconciler::new(providers.aws.clone()), backends)
                .with_config(config)
                .with_metrics(registered)
                .run(shutdown),
        )),
        "aws-database" => Ok(tokio::spawn(
            Controller::new(
                DatabaseReconciler::new(providers.aws.clone(), providers.sealer.clone()),
                backends,
            )
            .with_config(config)
            .with_metrics(registered)
            .run(shutdown),
        )),
        "aws-secret" => Ok(tokio::spawn(
            Controller::new(SecretReconciler::new(providers.aws.clone()), backends)
                .with_config(config)
                .with_metrics(registered)
                .run(shutdown),
        )),
        "aws-secret-instance" => Ok(tokio::spawn(
            Controller::new(SecretInstanceReconciler::default(), backends)
                .with_config(config)
                .with_metrics(registered)
                .run(shutdown),
        )),
        "aws-eks" => Ok(tokio::spawn(
            Controller::new(
                EksReconciler::new(
                    providers.aws.clone(),
                    clusters.clone(),
                    providers.sealer.clone(),
                ),
                backends,
            )
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
