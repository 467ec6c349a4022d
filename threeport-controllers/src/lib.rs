//! # threeport-controllers
//!
//! The reconcilers of the threeport control plane, by the name `threeport-server controller
//! <name>` takes ([`AVAILABLE`], [`spawn`]), what they reach the outside world through
//! ([`Providers`]: clusters, AWS accounts) and the sealing of secret fields ([`seal`]).
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
pub mod seal;
mod workload_definition;
#[cfg(feature = "kubernetes")]
mod workload_instance;

use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use threeport_core::{
    Backends, Controller, ControllerConfig, ControllerMetrics, Reconciler, Result,
};
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
    pub sealer: Arc<seal::Sealer>,
}

/// Starts one controller: its reconciler, made from the providers, on the backends.
type Start = fn(
    &Providers,
    Backends,
    ControllerConfig,
    ControllerMetrics,
    CancellationToken,
) -> JoinHandle<Result<()>>;

/// Every controller this build has, by name: the one place a controller is declared.
const CONTROLLERS: &[(&str, Start)] = &[
    ("workload-definition", |_, b, c, m, s| {
        run(WorkloadDefinitionReconciler, b, c, m, s)
    }),
    #[cfg(feature = "kubernetes")]
    ("workload-instance", |p, b, c, m, s| {
        let reconciler = WorkloadInstanceReconciler::new(p.clusters.clone(), p.sealer.clone());
        run(reconciler, b, c, m, s)
    }),
    #[cfg(feature = "kubernetes")]
    ("kubernetes-runtime", |p, b, c, m, s| {
        run(RuntimeReconciler::new(p.clusters.clone()), b, c, m, s)
    }),
    #[cfg(feature = "aws")]
    ("aws-bucket", |p, b, c, m, s| {
        run(BucketReconciler::new(p.aws.clone()), b, c, m, s)
    }),
    #[cfg(feature = "aws")]
    ("aws-database", |p, b, c, m, s| {
        let reconciler = DatabaseReconciler::new(p.aws.clone(), p.sealer.clone());
        run(reconciler, b, c, m, s)
    }),
    #[cfg(feature = "aws")]
    ("aws-secret", |p, b, c, m, s| {
        run(SecretReconciler::new(p.aws.clone()), b, c, m, s)
    }),
    #[cfg(feature = "aws")]
    ("aws-secret-instance", |_, b, c, m, s| {
        run(SecretInstanceReconciler::default(), b, c, m, s)
    }),
    #[cfg(feature = "aws")]
    ("aws-eks", |p, b, c, m, s| {
        let reconciler = EksReconciler::new(p.aws.clone(), p.clusters.clone(), p.sealer.clone());
        run(reconciler, b, c, m, s)
    }),
];

fn run<R: Reconciler>(
    reconciler: R,
    backends: Backends,
    config: ControllerConfig,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) -> JoinHandle<Result<()>> {
    tokio::spawn(
        Controller::new(reconciler, backends)
            .with_config(config)
            .with_metrics(metrics)
            .run(shutdown),
    )
}

/// The names of the controllers this build has, as `threeport-server controller <name>`
/// takes them.
pub fn available() -> impl Iterator<Item = &'static str> {
    CONTROLLERS.iter().map(|(name, _)| *name)
}

/// Starts controller `name` on `backends` until `shutdown`, its metrics in `metrics`, tuned
/// as `tuning` says (its name is set here); controllers that reach clusters or AWS do so
/// through `providers`.
///
/// Errors: `Invalid` (field `controller`) for a name not [`available`].
pub fn spawn(
    name: &str,
    backends: Backends,
    providers: &Providers,
    metrics: &Arc<Mutex<Registry>>,
    tuning: &ControllerConfig,
    shutdown: CancellationToken,
) -> Result<JoinHandle<Result<()>>> {
    let Some((_, start)) = CONTROLLERS.iter().find(|(known, _)| *known == name) else {
        return Err(threeport_core::Error::invalid(
            "controller",
            format!(
                "no controller named {name:?}; available: {}",
                available().collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let group = format!("{name}-controller");
    let registered = ControllerMetrics::register(&mut metrics.lock().unwrap(), &group);
    let config = ControllerConfig {
        name: group,
        ..tuning.clone()
    };
    Ok(start(providers, backends, config, registered, shutdown))
}
