//! # threeport-controllers
//!
//! The reconcilers of the threeport control plane, by the name `threeport-server controller
//! <name>` takes ([`available`], [`spawn`]), what they reach the outside world through
//! ([`Providers`]: clusters, AWS accounts) and the sealing of secret fields ([`seal`]).
//!
//! The workload-definition controller needs nothing outside the control plane. Those that
//! reach Kubernetes clusters (workloads, Helm charts through [`helm`], runtimes, health) come
//! with the `kubernetes` feature, those that reach AWS with `aws` (both on by default; the
//! Python package leaves them out).

#[cfg(feature = "kubernetes")]
pub mod agent;
pub mod attached;
#[cfg(feature = "aws")]
mod aws;
#[cfg(feature = "kubernetes")]
mod clusters;
#[cfg(feature = "kubernetes")]
pub mod control_plane;
#[cfg(feature = "kubernetes")]
mod deploy;
#[cfg(feature = "aws")]
mod eks;
pub mod health;
#[cfg(feature = "kubernetes")]
pub mod helm;
#[cfg(feature = "aws")]
mod network;
#[cfg(feature = "kubernetes")]
pub mod observability;
mod passive;
#[cfg(feature = "kubernetes")]
mod runtime;
pub mod seal;
#[cfg(feature = "aws")]
pub mod support;
pub mod terraform;
mod workload_definition;
#[cfg(feature = "kubernetes")]
mod workload_instance;

use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
// The kinds controllers follow; without the Kubernetes controllers, none.
#[cfg_attr(not(feature = "kubernetes"), allow(unused_imports))]
use threeport_api::model::{
    AwsEksKubernetesRuntimeInstance, AwsObjectStorageBucketInstance, AwsRelationalDatabaseInstance,
    ControlPlaneDefinition, HelmWorkloadDefinition, HelmWorkloadInstance,
    KubernetesRuntimeInstance, ObservabilityStackDefinition, SecretInstance, WorkloadDefinition,
};
#[cfg(feature = "aws")]
use threeport_api::model::{
    DomainNameDefinition, GatewayDefinition, SecretDefinition, TerraformDefinition,
    WorkloadInstance,
};
#[cfg_attr(not(feature = "kubernetes"), allow(unused_imports))]
use threeport_core::ApiObject;
use threeport_core::{
    Backends, Controller, ControllerConfig, ControllerMetricFamilies, ControllerMetrics,
    Reconciler, Result, Via,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "aws")]
pub use aws::{
    AwsProvider, AwsServices, BucketReconciler, DatabaseReconciler, FixedAws, SdkAws,
    SecretInstanceReconciler, SecretReconciler, VALUES_STORED, master_password,
};
#[cfg(feature = "kubernetes")]
pub use clusters::{ClusterProvider, KubeClusters, SingleCluster};
#[cfg(feature = "kubernetes")]
pub use deploy::{FIELD_MANAGER, RUNTIME_READY};
#[cfg(feature = "aws")]
pub use eks::{CONNECTION_TOKEN_FIELD, EksReconciler, SERVICE_ACCOUNT, SYSTEM_NAMESPACE};
#[cfg(feature = "kubernetes")]
pub use health::{HealthConfig, HealthWatchers};
#[cfg(feature = "aws")]
pub use network::{
    DomainNameInstanceReconciler, GATEWAY_INSTANCE_LABEL, GatewayInstanceReconciler, SUPPORT_READY,
    gateway_manifests,
};
pub use passive::{PASSIVE_KINDS, PassiveReconciler};
#[cfg(feature = "kubernetes")]
pub use runtime::{AGENT_READY, CLUSTER_READY, RuntimeReconciler};
pub use workload_definition::{WorkloadDefinitionReconciler, split_manifests};
#[cfg(feature = "kubernetes")]
pub use workload_instance::WorkloadInstanceReconciler;

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
    /// Timings of the runtimes' health watches.
    #[cfg(feature = "kubernetes")]
    pub health: HealthConfig,
    /// Renders Helm charts (the `helm` command line by default).
    #[cfg(feature = "kubernetes")]
    pub charts: Arc<dyn helm::ChartRenderer>,
    /// The charts of the support services installed on runtimes (gateways, certificates,
    /// DNS, secrets, autoscaling).
    #[cfg(feature = "aws")]
    pub support_charts: support::SupportCharts,
    /// This control plane's API as others reach it (given to the control planes it makes).
    pub public_url: Option<String>,
    /// How Terraform is run.
    #[cfg(feature = "aws")]
    pub terraform: terraform::TerraformConfig,
}

/// Starts one controller: its reconciler, made from the providers, on the backends,
/// following the declared relations.
type Start = fn(&Providers, Backends, Controlled, CancellationToken) -> JoinHandle<Result<()>>;

/// Kinds a controller follows, and how their changes map to its objects.
pub type Follows = &'static [(&'static str, Via)];

/// What every controller is started with besides its reconciler.
struct Controlled {
    config: ControllerConfig,
    metrics: ControllerMetrics,
    follows: Follows,
    /// Where a controller registers metrics of its own besides the runtime's.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    registry: Arc<Mutex<Registry>>,
}

/// Every controller this build has: its name, the kinds it follows (how their changes map
/// to its objects) and how it starts. The one place a controller is declared. No controller
/// writes on another object to make it reconcile: the store notifies followers of every
/// change through these relations.
const CONTROLLERS: &[(&str, Follows, Start)] = &[
    ("workload-definition", &[], |_, b, c, s| {
        run(WorkloadDefinitionReconciler, b, c, s)
    }),
    // One controller per configuration-only kind (`PASSIVE_KINDS`), each its own group.
    ("passive", &[], |_, b, c, s| {
        let handles: Vec<_> = PASSIVE_KINDS
            .iter()
            .map(|&kind| run_passive(kind, &b, &c, &s))
            .collect();
        tokio::spawn(async move {
            for handle in handles {
                handle.await.map_err(|e| {
                    threeport_core::Error::backend(format!("passive controller: {e}"))
                })??;
            }
            Ok(())
        })
    }),
    #[cfg(feature = "kubernetes")]
    (
        "workload-instance",
        &[
            // A changed definition, and the runtime it runs on turning ready.
            (WorkloadDefinition::KIND, Via::Referencing),
            (KubernetesRuntimeInstance::KIND, Via::Referencing),
            // The services attached to it (they reference it).
            (AwsRelationalDatabaseInstance::KIND, Via::ReferencedBy),
            (AwsObjectStorageBucketInstance::KIND, Via::ReferencedBy),
            (SecretInstance::KIND, Via::ReferencedBy),
        ],
        |p, b, c, s| {
            // Health of what the instances run comes from watching the runtimes.
            let metrics = health::HealthMetrics::register(&mut c.registry.lock().unwrap());
            let watchers = HealthWatchers::new(p.clusters.clone(), b.clone(), p.health.clone())
                .with_metrics(metrics);
            tokio::spawn(watchers.run(s.clone()));
            let reconciler = WorkloadInstanceReconciler::new(p.clusters.clone(), p.sealer.clone());
            run(reconciler, b, c, s)
        },
    ),
    #[cfg(feature = "kubernetes")]
    (
        "helm-workload-instance",
        &[
            // A changed definition, and the runtime it runs on turning ready.
            (HelmWorkloadDefinition::KIND, Via::Referencing),
            (KubernetesRuntimeInstance::KIND, Via::Referencing),
            // The secrets attached to it (they reference it).
            (SecretInstance::KIND, Via::ReferencedBy),
        ],
        |p, b, c, s| {
            // Whether charts can be rendered here, said once at start.
            let charts = p.charts.clone();
            tokio::spawn(async move {
                match charts.describe().await {
                    Ok(renderer) => tracing::info!(%renderer, "rendering Helm charts"),
                    Err(err) => tracing::warn!(error = %err, "Helm charts cannot be rendered"),
                }
            });
            let reconciler = helm::HelmWorkloadInstanceReconciler::new(
                p.clusters.clone(),
                p.charts.clone(),
                p.sealer.clone(),
            );
            run(reconciler, b, c, s)
        },
    ),
    #[cfg(feature = "kubernetes")]
    (
        "control-plane-instance",
        &[
            (ControlPlaneDefinition::KIND, Via::Referencing),
            (HelmWorkloadInstance::KIND, Via::Owning),
        ],
        |p, b, c, s| {
            let reconciler = control_plane::ControlPlaneReconciler::new(
                p.sealer.clone(),
                control_plane::ControlPlaneChart::default(),
            )
            .with_public_url(p.public_url.clone());
            run(reconciler, b, c, s)
        },
    ),
    #[cfg(feature = "kubernetes")]
    (
        "observability-stack-instance",
        &[
            // Its definition changing, and the releases it owns making progress.
            (ObservabilityStackDefinition::KIND, Via::Referencing),
            (HelmWorkloadInstance::KIND, Via::Owning),
        ],
        |_, b, c, s| {
            run(
                observability::ObservabilityStackReconciler::default(),
                b,
                c,
                s,
            )
        },
    ),
    #[cfg(feature = "kubernetes")]
    (
        "kubernetes-runtime",
        // The EKS cluster it owns making progress.
        &[(AwsEksKubernetesRuntimeInstance::KIND, Via::Owning)],
        |p, b, c, s| {
            let reconciler = RuntimeReconciler::new(p.clusters.clone(), p.sealer.clone());
            #[cfg(feature = "aws")]
            let reconciler = reconciler.with_support(support_of(p));
            run(reconciler, b, c, s)
        },
    ),
    #[cfg(feature = "aws")]
    (
        "gateway-instance",
        &[
            // Its definition changing, and its workload being deployed or moved.
            (GatewayDefinition::KIND, Via::Referencing),
            (WorkloadInstance::KIND, Via::Referencing),
        ],
        |p, b, c, s| {
            let reconciler = GatewayInstanceReconciler::new(p.clusters.clone(), support_of(p));
            run(reconciler, b, c, s)
        },
    ),
    #[cfg(feature = "aws")]
    (
        "domain-name-instance",
        &[
            (DomainNameDefinition::KIND, Via::Referencing),
            (WorkloadInstance::KIND, Via::Referencing),
        ],
        |p, b, c, s| run(DomainNameInstanceReconciler::new(support_of(p)), b, c, s),
    ),
    #[cfg(feature = "aws")]
    ("aws-bucket", &[], |p, b, c, s| {
        run(BucketReconciler::new(p.aws.clone()), b, c, s)
    }),
    #[cfg(feature = "aws")]
    ("aws-database", &[], |p, b, c, s| {
        let reconciler = DatabaseReconciler::new(p.aws.clone(), p.sealer.clone());
        run(reconciler, b, c, s)
    }),
    #[cfg(feature = "aws")]
    ("aws-secret", &[], |p, b, c, s| {
        run(SecretReconciler::new(p.aws.clone()), b, c, s)
    }),
    #[cfg(feature = "aws")]
    (
        "aws-secret-instance",
        // Its definition's values being stored.
        &[(SecretDefinition::KIND, Via::Referencing)],
        |p, b, c, s| {
            let reconciler = SecretInstanceReconciler::default().with_support(support_of(p));
            run(reconciler, b, c, s)
        },
    ),
    #[cfg(feature = "aws")]
    (
        "terraform-instance",
        // Its definition changing.
        &[(TerraformDefinition::KIND, Via::Referencing)],
        |p, b, c, s| {
            let p = p.clone();
            tokio::spawn(async move {
                let states = terraform::state::StateStore::new(
                    b.store.clone(),
                    p.sealer.clone(),
                    p.terraform.lock_lease,
                );
                // The state records only need marking (their contents are the backend's).
                let records = run_passive(terraform::state::TerraformState::KIND, &b, &c, &s);
                let backend = terraform::backend::StateBackend::start(states, s.clone()).await?;
                let reconciler = terraform::TerraformReconciler::new(
                    p.aws.clone(),
                    backend,
                    p.sealer.clone(),
                    &p.terraform,
                );
                match reconciler.cli().version().await {
                    Ok(version) => tracing::info!(%version, "running Terraform"),
                    Err(err) => tracing::warn!(error = %err, "Terraform cannot be run"),
                }
                run(reconciler, b, c, s).await.map_err(|e| {
                    threeport_core::Error::backend(format!("terraform-instance: {e}"))
                })??;
                records.await.map_err(|e| {
                    threeport_core::Error::backend(format!("terraform state records: {e}"))
                })?
            })
        },
    ),
    #[cfg(feature = "aws")]
    ("aws-eks", &[], |p, b, c, s| {
        let reconciler = EksReconciler::new(p.aws.clone(), p.clusters.clone(), p.sealer.clone());
        run(reconciler, b, c, s)
    }),
];

/// Starts a passive controller of `kind` (named `<kind>-passive`) beside controller `c`.
fn run_passive(
    kind: &'static str,
    backends: &Backends,
    c: &Controlled,
    shutdown: &CancellationToken,
) -> JoinHandle<Result<()>> {
    let controlled = Controlled {
        config: ControllerConfig {
            name: format!("{}-passive", kind.to_ascii_lowercase()),
            ..c.config.clone()
        },
        metrics: c.metrics.clone(),
        follows: &[],
        registry: c.registry.clone(),
    };
    run(
        PassiveReconciler::new(kind),
        backends.clone(),
        controlled,
        shutdown.clone(),
    )
}

/// How controllers install support services, from the providers.
#[cfg(feature = "aws")]
fn support_of(providers: &Providers) -> support::Support {
    support::Support::new(providers.aws.clone(), providers.support_charts.clone())
}

/// The relations controller `name` follows ([`Controller::follows`]), as declared; for
/// embedders that build their controllers themselves. Empty for an unknown name.
pub fn follows(name: &str) -> Follows {
    CONTROLLERS
        .iter()
        .find(|(known, _, _)| *known == name)
        .map_or(&[], |(_, follows, _)| follows)
}

/// A controller for `reconciler` following what the table declares for controller `name`:
/// for tests and embedders that make the reconciler themselves (with fakes, say).
///
/// Errors: `Invalid` (field `controller`) for a name not [`available`].
pub fn declared<R: Reconciler>(
    name: &str,
    reconciler: R,
    backends: Backends,
) -> Result<Controller<R>> {
    let Some((_, follows, _)) = CONTROLLERS.iter().find(|(known, _, _)| *known == name) else {
        return Err(unknown(name));
    };
    Ok(following(Controller::new(reconciler, backends), follows))
}

fn following<R: Reconciler>(mut controller: Controller<R>, follows: Follows) -> Controller<R> {
    for (kind, via) in follows {
        controller = controller.follows(*kind, *via);
    }
    controller
}

fn unknown(name: &str) -> threeport_core::Error {
    threeport_core::Error::invalid(
        "controller",
        format!(
            "no controller named {name:?}; available: {}",
            available().collect::<Vec<_>>().join(", ")
        ),
    )
}

fn run<R: Reconciler>(
    reconciler: R,
    backends: Backends,
    controlled: Controlled,
    shutdown: CancellationToken,
) -> JoinHandle<Result<()>> {
    let controller = Controller::new(reconciler, backends)
        .with_config(controlled.config)
        .with_metrics(controlled.metrics);
    tokio::spawn(following(controller, controlled.follows).run(shutdown))
}

/// The names of the controllers this build has, as `threeport-server controller <name>`
/// takes them.
pub fn available() -> impl Iterator<Item = &'static str> {
    CONTROLLERS.iter().map(|(name, _, _)| *name)
}

/// Starts controller `name` on `backends` until `shutdown`, its metrics in `families` (one set
/// registered in `metrics` for every controller of the process) and its own in `metrics`, tuned
/// as `tuning` says (its name is set here); controllers that reach clusters or AWS do so
/// through `providers`.
///
/// Errors: `Invalid` (field `controller`) for a name not [`available`].
pub fn spawn(
    name: &str,
    backends: Backends,
    providers: &Providers,
    metrics: &Arc<Mutex<Registry>>,
    families: &ControllerMetricFamilies,
    tuning: &ControllerConfig,
    shutdown: CancellationToken,
) -> Result<JoinHandle<Result<()>>> {
    let Some((_, follows, start)) = CONTROLLERS.iter().find(|(known, _, _)| *known == name) else {
        return Err(unknown(name));
    };
    let group = format!("{name}-controller");
    let registered = families.controller(&group);
    let config = ControllerConfig {
        name: group,
        ..tuning.clone()
    };
    let controlled = Controlled {
        config,
        metrics: registered,
        follows,
        registry: metrics.clone(),
    };
    Ok(start(providers, backends, controlled, shutdown))
}
