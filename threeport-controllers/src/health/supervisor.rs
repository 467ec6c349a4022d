//! [`HealthWatchers`]: one [`RuntimeWatcher`] per runtime the control plane reaches, held by
//! one replica at a time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use threeport_api::model::{
    AppliedResource, HelmWorkloadInstance, KubernetesRuntimeInstance, WorkloadInstance,
    runtime_connection,
};
use threeport_core::{Api, ApiObject, Backends, Lease, ListQuery, Object, ObjectId, Result};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::watcher::{CustomKinds, is_custom_kind};
use super::{HealthMetrics, RuntimeWatcher, StoreSink};
use crate::clusters::ClusterProvider;

/// Timings of [`HealthWatchers`].
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// How often runtimes are looked at (new ones watched, gone ones stopped) and the
    /// watch leases renewed.
    pub poll: Duration,
    /// How long a replica's hold on a runtime's watch lasts without renewal: another
    /// replica takes over within this after one dies.
    pub lease_ttl: Duration,
    /// How often a watcher reports changes.
    pub flush: Duration,
    /// How often the instances are read for the custom kinds they deployed (each runtime's
    /// watcher then watches those too).
    pub custom_kinds_every: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            poll: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(20),
            flush: Duration::from_millis(100),
            custom_kinds_every: Duration::from_secs(30),
        }
    }
}

/// A runtime being watched here.
struct Watching {
    lease: Lease,
    task: JoinHandle<()>,
    /// The connection data it was started with: a change restarts it.
    connection: String,
    /// Tells the watcher which custom kinds to watch.
    custom: tokio::sync::watch::Sender<CustomKinds>,
}

/// Calls `visit` with every object of kind `T`, a page at a time (at thousands of
/// instances, holding them all at once would be most of the process's memory).
async fn each<T: ApiObject>(backends: &Backends, mut visit: impl FnMut(&Object<T>)) -> Result<()> {
    let api = Api::<T>::new(backends.store.clone());
    let mut query = ListQuery::default().limit(200);
    loop {
        let page = api.list(&query).await?;
        page.items.iter().for_each(&mut visit);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(()),
        }
    }
}

/// The custom kinds ([`is_custom_kind`]) the (Helm) workload instances of each runtime
/// deployed, from their statuses.
async fn custom_kinds_by_runtime(backends: &Backends) -> Result<HashMap<ObjectId, CustomKinds>> {
    let mut by_runtime: HashMap<ObjectId, CustomKinds> = HashMap::new();
    let mut add = |runtime: Option<ObjectId>, resources: &[AppliedResource]| {
        let Some(runtime) = runtime else { return };
        for resource in resources {
            if is_custom_kind(&resource.api_version) {
                by_runtime
                    .entry(runtime)
                    .or_default()
                    .insert((resource.api_version.clone(), resource.kind.clone()));
            }
        }
    };
    each::<WorkloadInstance>(backends, |instance| {
        let status = &instance.status.details;
        add(status.runtime, &status.resources);
    })
    .await?;
    each::<HelmWorkloadInstance>(backends, |instance| {
        let status = &instance.status.details.workload;
        add(status.runtime, &status.resources);
    })
    .await?;
    Ok(by_runtime)
}

/// Watches the health of what runs on every runtime this control plane can reach and that
/// has no agent of its own: one [`RuntimeWatcher`] per runtime, on the replica that holds
/// the runtime's `health-watch/<id>` lease (so N controller replicas make one set of
/// watches, and another takes over when that one stops).
#[derive(Debug)]
pub struct HealthWatchers {
    clusters: Arc<dyn ClusterProvider>,
    backends: Backends,
    config: HealthConfig,
    holder: String,
    metrics: HealthMetrics,
}

impl HealthWatchers {
    /// Watchers reaching clusters through `clusters`, writing through `backends`.
    pub fn new(
        clusters: Arc<dyn ClusterProvider>,
        backends: Backends,
        config: HealthConfig,
    ) -> Self {
        HealthWatchers {
            clusters,
            backends,
            config,
            holder: format!("health-{}", ObjectId::new()),
            metrics: HealthMetrics::default(),
        }
    }

    /// Counts what the watchers do in `metrics`.
    pub fn with_metrics(mut self, metrics: HealthMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs until `shutdown`; then stops every watcher and gives up its leases.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut watching: HashMap<ObjectId, Watching> = HashMap::new();
        let mut custom = HashMap::new();
        let mut scanned: Option<tokio::time::Instant> = None;
        loop {
            self.look(&mut watching, &custom).await;
            let due = scanned.is_none_or(|at| at.elapsed() >= self.config.custom_kinds_every);
            if due && !watching.is_empty() {
                match custom_kinds_by_runtime(&self.backends).await {
                    Ok(found) => {
                        custom = found;
                        scanned = Some(tokio::time::Instant::now());
                        for (id, watch) in &watching {
                            let kinds = custom.get(id).cloned().unwrap_or_default();
                            watch.custom.send_if_modified(|current| {
                                let grew = !kinds.is_subset(current);
                                current.extend(kinds);
                                grew
                            });
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "reading the custom kinds instances use failed");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
        for (_, watch) in watching.drain() {
            self.stop(watch).await;
        }
    }

    async fn stop(&self, watch: Watching) {
        watch.task.abort();
        self.metrics.runtimes.dec();
        let _ = self.backends.locker.release(&watch.lease).await;
    }

    /// Starts, keeps and stops watchers to match the runtimes there are now.
    async fn look(
        &self,
        watching: &mut HashMap<ObjectId, Watching>,
        custom: &HashMap<ObjectId, CustomKinds>,
    ) {
        let runtimes = match Api::<KubernetesRuntimeInstance>::new(self.backends.store.clone())
            .list_all(&ListQuery::default())
            .await
        {
            Ok(runtimes) => runtimes,
            Err(err) => {
                tracing::warn!(error = %err, "listing runtimes for health watches failed");
                return;
            }
        };
        let wanted: HashMap<ObjectId, &Object<KubernetesRuntimeInstance>> = runtimes
            .iter()
            .filter(|r| {
                !r.is_deleting() && r.spec.agent.is_none() && runtime_connection(r).is_some()
            })
            .map(|r| (r.id(), r))
            .collect();
        let stale: Vec<ObjectId> = watching
            .iter()
            .filter(|(id, watch)| {
                wanted
                    .get(id)
                    .is_none_or(|r| connection_of(r) != watch.connection)
                    || watch.task.is_finished()
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(watch) = watching.remove(&id) {
                tracing::info!(runtime = %id, "health watch stopped");
                self.stop(watch).await;
            }
        }
        for (id, runtime) in wanted {
            if let Some(watch) = watching.get_mut(&id) {
                match self.backends.locker.renew(&watch.lease).await {
                    Ok(renewed) => watch.lease = renewed,
                    Err(err) => {
                        tracing::info!(runtime = %id, error = %err, "health watch lease lost; stopping");
                        if let Some(watch) = watching.remove(&id) {
                            watch.task.abort();
                            self.metrics.runtimes.dec();
                        }
                    }
                }
                continue;
            }
            let key = format!("health-watch/{id}");
            let lease = match self
                .backends
                .locker
                .acquire(&key, &self.holder, self.config.lease_ttl)
                .await
            {
                Ok(Some(lease)) => lease,
                // Another replica watches it.
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(runtime = %id, error = %err, "taking a health watch lease failed");
                    continue;
                }
            };
            let cluster = match self.clusters.cluster(runtime).await {
                Ok(cluster) => cluster,
                Err(err) => {
                    tracing::warn!(runtime = %id, error = %err, "cannot reach the runtime to watch it");
                    let _ = self.backends.locker.release(&lease).await;
                    continue;
                }
            };
            let sink = Arc::new(StoreSink::new(self.backends.clone(), self.holder.clone()));
            let (kinds, told) =
                tokio::sync::watch::channel(custom.get(&id).cloned().unwrap_or_default());
            let watcher = RuntimeWatcher::new(cluster, sink)
                .flush_every(self.config.flush)
                .with_metrics(self.metrics.clone())
                .with_custom_kinds(told);
            self.metrics.runtimes.inc();
            tracing::info!(runtime = %id, name = %runtime.meta.name, "health watch started");
            watching.insert(
                id,
                Watching {
                    lease,
                    task: tokio::spawn(watcher.run()),
                    connection: connection_of(runtime),
                    custom: kinds,
                },
            );
        }
    }
}

fn connection_of(runtime: &Object<KubernetesRuntimeInstance>) -> String {
    serde_json::to_string(&runtime_connection(runtime)).unwrap_or_default()
}
