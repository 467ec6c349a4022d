//! The controllers this build has, by the name `threeport-server controller <name>` takes.
//!
//! The workload-definition controller needs nothing outside the control plane. Those that
//! reach Kubernetes clusters come with the `kubernetes` feature, those that reach AWS with
//! `aws` (both on by default; the Python package leaves them out).

pub mod attached;
#[cfg(feature = "aws")]
mod aws;
#[cfg(feature = "kubernetes")]
mod clusters;
#[cfg(feature = "aws")]
mod eks;
mod nudge;
#[cfg(feature = "kubernetes")]
mod runtime;
mod workload_definition;
#[cfg(feature = "kubernetes")]
mod workload_instance;

use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use threeport_core::{Backends, Controller, ControllerConfig, ControllerMetrics, Result};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "aws")]
pub use aws::{
    AwsProvider, AwsServices, BucketReconciler, DatabaseReconciler, FixedAws, SdkAws,
    SecretInstanceReconciler, SecretReconciler, master_password,
};
#[cfg(feature = "kubernetes")]
pub use clusters::{ClusterProvider, KubeClusters, SingleCluster};
#[cfg(feature = "aws")]
pub use eks::{EksReconciler, SERVICE_ACCOUNT, SYSTEM_NAMESPACE};
#[cfg(feature = "kubernetes")]
pub use runtime::RuntimeReconciler;
pub use workload_definition::{WorkloadDefinitionReconciler, split_manifests};
#[cfg(feature = "kubernetes")]
pub use workload_instance::{FIELD_MANAGER, WorkloadInstanceReconciler};

/// Names of the available controllers.
#[cfg(all(feature = "kubernetes", feature = "aws"))]
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
/// Names of the available controllers.
#[cfg(all(feature = "kubernetes", not(feature = "aws")))]
pub const AVAILABLE: &[&str] = &[
    "workload-definition",
    "workload-instance",
    "kubernetes-runtime",
];
/// Names of the available controllers.
#[cfg(not(feature = "kubernetes"))]
pub const AVAILABLE: &[&str] = &["workload-definition"];

/// What controllers reach the outside world through.
#[derive(Debug, Clone)]
pub struct Providers {
    /// Kubernetes clusters.
    #[cfg(feature = "kubernetes")]
    pub clusters: Arc<dyn ClusterProvider>,
    /// AWS accounts.
    #[cfg(feature = "aws")]
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
    #[cfg(feature = "kubernetes")]
    let clusters = &providers.clusters;
    #[cfg(not(feature = "kubernetes"))]
    let _ = providers;
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
        #[cfg(feature = "kubernetes")]
        "workload-instance" => Ok(tokio::spawn(
            Controller::new(
                WorkloadInstanceReconciler::new(clusters.clone(), providers.sealer.clone()),
                backends,
            )
            .with_config(config)
            .with_metrics(registered)
            .run(shutdown),
        )),
        #[cfg(feature = "kubernetes")]
        "kubernetes-runtime" => Ok(tokio::spawn(
            Controller::new(RuntimeReconciler::new(clusters.clone()), backends)
                .with_config(config)
                .with_metrics(registered)
                .run(shutdown),
        )),
        #[cfg(feature = "aws")]
        "aws-bucket" => Ok(tokio::spawn(
            Controller::new(BucketReconciler::new(providers.aws.clone()), backends)
                .with_config(config)
                .with_metrics(registered)
                .run(shutdown),
        )),
        #[cfg(feature = "aws")]
        "aws-database" => Ok(tokio::spawn(
            Controller::new(
                DatabaseReconciler::new(providers.aws.clone(), providers.sealer.clone()),
                backends,
            )
            .with_config(config)
            .with_metrics(registered)
            .run(shutdown),
        )),
        #[cfg(feature = "aws")]
        "aws-secret" => Ok(tokio::spawn(
            Controller::new(SecretReconciler::new(providers.aws.clone()), backends)
                .with_config(config)
                .with_metrics(registered)
                .run(shutdown),
        )),
        #[cfg(feature = "aws")]
        "aws-secret-instance" => Ok(tokio::spawn(
            Controller::new(SecretInstanceReconciler::default(), backends)
                .with_config(config)
                .with_metrics(registered)
                .run(shutdown),
        )),
        #[cfg(feature = "aws")]
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
