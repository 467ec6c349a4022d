//! The controller runtime: drives a [`Reconciler`] from bus deliveries.
//!
//! Per delivery: lock the object (lease) → load it (ack and skip if gone) → reconcile or clean
//! up, renewing the lease and heartbeating the delivery meanwhile → wait until work the
//! reconcile spawned has stopped (also after a timeout) → write lifecycle, status and
//! conditions (fenced by the lease token) → run again, under the same lease, if a notification
//! for the object arrived meanwhile → release the lease in the background → ack or requeue.
//!
//! Deliveries reach the `concurrency` workers through one intake task, which takes the next
//! one from the subscription only when a worker is idle: what busy workers could not start
//! yet stays on the bus, where another replica may take it.
//!
//! Beside the deliveries, a resync looks at the kind's objects at start (once notifications in
//! transit had `resync_grace` to arrive) and every `resync_period`, and notifies the bus of
//! those waiting for a reconcile (level-triggered, like controller-runtime's initial list):
//! notifications are hints and a bus may lose them.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backoff::Backoff;
use super::metrics::{ControllerMetrics, ReconcileResult};
use super::reconciler::{Action, Context, ReconcileError, Reconciler};
use crate::bus::{Bus, Delivery, Notification, Operation, SubscribeOptions, Subscription};
use crate::error::{Error, ErrorKind, Result};
use crate::lock::{Lease, Locker};
use crate::object::{
    ConditionStatus, EventType, LifecycleState, Object, ObjectId, RawObject, Timestamp, now,
};
use crate::relation::{Relation, Via};
use crate::store::{ListQuery, MAX_PAGE_SIZE, StatusWrite, Store};

/// The backends a controller runs on.
#[derive(Debug, Clone)]
pub struct Backends {
    /// Where objects live.
    pub store: Arc<dyn Store>,
    /// Where notifications arrive.
    pub bus: Arc<dyn Bus>,
    /// Where per-object leases are taken.
    pub locker: Arc<dyn Locker>,
}

/// Tuning of a [`Controller`]. The defaults suit production; tests shorten the durations.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Controller name: the bus consumer group and the metrics label. Empty means
    /// `<kind>-controller` in lower case. Replicas of one controller share the name.
    pub name: String,
    /// Reconciles running at once in this replica.
    pub concurrency: usize,
    /// Lease time to live; renewed every third of it while a reconcile runs.
    pub lease_ttl: Duration,
    /// Bus ack-wait; the delivery is heartbeated every third of it while a reconcile runs.
    pub ack_wait: Duration,
    /// Longest a single reconcile may run before it is cut off (and retried).
    pub reconcile_timeout: Duration,
    /// Backoff after failed reconciles.
    pub backoff: Backoff,
    /// Consecutive failed reconciles before the object is marked failed.
    pub max_retries: u32,
    /// Deliveries of one notification that never completed (crash, lost lease) before the
    /// object is marked interrupted instead of reconciled again.
    pub max_deliveries: u32,
    /// Requeue delay when another replica holds the object's lease.
    pub lock_busy_delay: Duration,
    /// On shutdown, how long running reconciles may finish before they are aborted.
    pub drain_timeout: Duration,
    /// How often the controller looks at every object of its kind and notifies the bus of
    /// those still waiting for a reconcile (pending, acknowledged, failing or deletion
    /// scheduled, with no requeue scheduled later). It always does so once at start (after
    /// `resync_grace`). `None`: only at start.
    pub resync_period: Option<Duration>,
    /// Time a notification may take to get through (outbox, relay, bus): the start-up resync
    /// waits this long, and a resync leaves objects written more recently to the
    /// notifications still on their way (a resync's notification would make a second reconcile).
    pub resync_grace: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            name: String::new(),
            concurrency: 8,
            lease_ttl: Duration::from_secs(30),
            ack_wait: Duration::from_secs(30),
            reconcile_timeout: Duration::from_secs(300),
            backoff: Backoff::default(),
            max_retries: 20,
            max_deliveries: 10,
            lock_busy_delay: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
            resync_period: Some(Duration::from_secs(300)),
            resync_grace: Duration::from_secs(10),
        }
    }
}

/// Runs a [`Reconciler`] for its kind: any number of replicas may run against the same
/// backends; each object is reconciled by one of them at a time.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use async_trait::async_trait;
/// use serde::{Deserialize, Serialize};
/// use threeport_core::*;
/// use tokio_util::sync::CancellationToken;
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct Widget { size: u32 }
/// impl ApiObject for Widget {
///     const KIND: &'static str = "Widget";
///     type Status = ();
/// }
/// struct Noop;
/// #[async_trait]
/// impl Reconciler for Noop {
///     type Object = Widget;
///     async fn reconcile(&self, _: &mut Object<Widget>, _: &Context) -> Result<Action, ReconcileError> {
///         Ok(Action::Done)
///     }
/// }
///
/// let memory = MemoryBackends::new();
/// let shutdown = CancellationToken::new();
/// let relay = memory.spawn_relay(shutdown.clone());
/// let controller = tokio::spawn(Controller::new(Noop, memory.backends()).run(shutdown.clone()));
///
/// let widgets = Api::<Widget>::new(memory.store.clone());
/// let created = widgets.create("w", Widget { size: 1 }).await?;
/// let reconciled = widgets.wait_until(created.id(), |w| w.is_reconciled()).await?;
/// assert_eq!(reconciled.status.state, LifecycleState::Reconciled);
///
/// shutdown.cancel();
/// controller.await.unwrap()?;
/// relay.await.unwrap();
/// # Ok::<(), threeport_core::Error>(())
/// # }).unwrap();
/// ```
pub struct Controller<R: Reconciler> {
    reconciler: R,
    backends: Backends,
    config: ControllerConfig,
    metrics: ControllerMetrics,
    relations: Vec<Relation>,
    maps: Vec<(String, MapFn)>,
}

/// A mapping function of [`Controller::follows_mapped`]: the ids of this controller's objects
/// a change of the given object concerns.
pub type MapFn = Arc<dyn Fn(&RawObject) -> Vec<ObjectId> + Send + Sync>;

impl<R: Reconciler> std::fmt::Debug for Controller<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("kind", &self.reconciler.kind())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<R: Reconciler> Controller<R> {
    /// A controller with the default configuration and unexported metrics.
    pub fn new(reconciler: R, backends: Backends) -> Self {
        Controller {
            reconciler,
            backends,
            config: ControllerConfig::default(),
            metrics: ControllerMetrics::unregistered(),
            relations: Vec::new(),
            maps: Vec::new(),
        }
    }

    /// Reconciles this controller's objects when objects of kind `followed` change, mapped
    /// to them `via` references or ownership (see [`Relation`]): in the manner of
    /// kube-runtime's `owns` and `watches`, but recorded by the store in the same
    /// transaction as the change, so no change is lost and nobody polls. Registered with the
    /// store when the controller starts.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use async_trait::async_trait;
    /// use serde::{Deserialize, Serialize};
    /// use threeport_core::*;
    ///
    /// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// struct Database {}
    /// impl ApiObject for Database { const KIND: &'static str = "Database"; type Status = (); }
    ///
    /// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// struct App { database: ObjectId }
    /// impl ApiObject for App {
    ///     const KIND: &'static str = "App";
    ///     type Status = bool; // whether the database was ready when we last looked
    ///     fn references(&self) -> Vec<Reference> {
    ///         vec![Reference::new("database", "Database", self.database)]
    ///     }
    /// }
    ///
    /// struct Apps;
    /// #[async_trait]
    /// impl Reconciler for Apps {
    ///     type Object = App;
    ///     async fn reconcile(&self, app: &mut Object<App>, ctx: &Context) -> Result<Action, ReconcileError> {
    ///         let db = ctx.api::<Database>().get(app.spec.database).await?;
    ///         app.status.details = db.status.state == LifecycleState::Reconciled;
    ///         Ok(Action::Done) // no polling: the database's change brings us back
    ///     }
    /// }
    ///
    /// let backends = MemoryBackends::new();
    /// let shutdown = tokio_util::sync::CancellationToken::new();
    /// backends.spawn_relay(shutdown.clone());
    /// let apps = Controller::new(Apps, backends.backends()).follows("Database", Via::Referencing);
    /// tokio::spawn(apps.run(shutdown.clone()));
    /// tokio::time::sleep(Duration::from_millis(50)).await; // started: relations registered
    ///
    /// let store: std::sync::Arc<dyn Store> = backends.store.clone();
    /// let db = Api::<Database>::new(store.clone()).create("db", Database {}).await?;
    /// let app = Api::<App>::new(store.clone()).create("app", App { database: db.id() }).await?;
    /// let apps_api = Api::<App>::new(store.clone());
    /// apps_api.wait_until(app.id(), |a| a.is_reconciled()).await?;
    /// assert!(!apps_api.get(app.id()).await?.status.details);
    ///
    /// // The database's controller (here: us, by hand) reports it ready.
    /// let mut db = Api::<Database>::new(store.clone()).get(db.id()).await?;
    /// db.status.state = LifecycleState::Reconciled;
    /// Api::<Database>::new(store.clone()).update_status(&db).await?;
    /// apps_api.wait_until(app.id(), |a| a.status.details).await?;
    /// shutdown.cancel();
    /// # Ok::<(), threeport_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn follows(mut self, followed: impl Into<String>, via: Via) -> Self {
        let relation = Relation::new(self.reconciler.kind(), followed, via);
        if !self.relations.contains(&relation) {
            self.relations.push(relation);
        }
        self
    }

    /// Reconciles the objects `map` names whenever an object of kind `followed` changes: for
    /// links no reference or owner expresses (a label selector, a name in a free-form field).
    /// The store records the change in the writing transaction, as for [`follows`]; this
    /// controller's runtime reads the changed object, calls `map` and notifies the objects it
    /// returns (in one bus batch) before acking. A removed object is not mapped (there is
    /// nothing left to read): follow removals [`Via::ReferencedBy`] or [`Via::Owning`].
    ///
    /// [`follows`]: Controller::follows
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use async_trait::async_trait;
    /// use threeport_core::*;
    ///
    /// struct Sites;
    /// #[async_trait]
    /// impl Reconciler for Sites {
    ///     type Object = Dynamic;
    ///     fn kind(&self) -> &str { "Site" }
    ///     async fn reconcile(&self, site: &mut Object<Dynamic>, ctx: &Context) -> Result<Action, ReconcileError> {
    ///         // Count the certificates whose spec names this site.
    ///         let certs = Api::<Dynamic>::of_kind(ctx.store().clone(), "Certificate")?
    ///             .list_all(&ListQuery::default()).await?;
    ///         let mine = certs.iter().filter(|c| c.spec.0["site"] == site.meta.name.as_str()).count();
    ///         site.status.details = serde_json::json!(mine);
    ///         Ok(Action::Done)
    ///     }
    /// }
    ///
    /// let backends = MemoryBackends::new();
    /// let shutdown = tokio_util::sync::CancellationToken::new();
    /// backends.spawn_relay(shutdown.clone());
    /// let store: Arc<dyn Store> = backends.store.clone();
    /// let sites = Api::<Dynamic>::of_kind(store.clone(), "Site")?;
    /// let site = store.create(NewObject::new("Site", "shop", serde_json::json!({}))).await?.meta.id;
    /// let by_name: MapFn = Arc::new(move |cert: &RawObject| {
    ///     // The site the certificate's spec names (a real map would look names up).
    ///     if cert.spec["site"] == "shop" { vec![site] } else { vec![] }
    /// });
    /// let controller = Controller::new(Sites, backends.backends()).follows_mapped("Certificate", by_name);
    /// tokio::spawn(controller.run(shutdown.clone()));
    /// sites.wait_until(site, |s| s.is_reconciled()).await?;
    ///
    /// store.create(NewObject::new("Certificate", "c1", serde_json::json!({"site": "shop"}))).await?;
    /// sites.wait_until(site, |s| s.status.details == serde_json::json!(1)).await?;
    /// shutdown.cancel();
    /// # Ok::<(), threeport_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn follows_mapped(mut self, followed: impl Into<String>, map: MapFn) -> Self {
        let followed = followed.into();
        let relation = Relation::new(self.reconciler.kind(), followed.clone(), Via::Mapped);
        if !self.relations.contains(&relation) {
            self.relations.push(relation);
        }
        self.maps.retain(|(kind, _)| *kind != followed);
        self.maps.push((followed, map));
        self
    }

    /// The relations this controller follows.
    pub fn relations(&self) -> &[Relation] {
        &self.relations
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: ControllerConfig) -> Self {
        self.config = config;
        self
    }

    /// Uses these metrics (typically [`ControllerMetrics::register`]ed in a registry).
    pub fn with_metrics(mut self, metrics: ControllerMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The controller's metrics (shared with the running controller).
    pub fn metrics(&self) -> ControllerMetrics {
        self.metrics.clone()
    }

    /// The effective controller name (bus group, metrics label).
    pub fn name(&self) -> String {
        if self.config.name.is_empty() {
            format!("{}-controller", self.reconciler.kind().to_ascii_lowercase())
        } else {
            self.config.name.clone()
        }
    }

    /// Runs until `shutdown` is cancelled, then stops taking deliveries, lets running reconciles
    /// finish for up to `drain_timeout`, and aborts the rest (their deliveries are requeued and
    /// their leases released).
    ///
    /// Fails only if the bus subscription cannot be made or the configuration is invalid.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let name = self.name();
        let config = &self.config;
        if config.concurrency == 0 {
            return Err(Error::invalid("concurrency", "must be at least 1"));
        }
        if config.lease_ttl.is_zero() || config.ack_wait.is_zero() {
            return Err(Error::invalid(
                "lease_ttl",
                "lease_ttl and ack_wait must be positive",
            ));
        }
        for relation in &self.relations {
            relation.validate()?;
        }
        let options = SubscribeOptions {
            group: name.clone(),
            kinds: vec![self.reconciler.kind().to_owned()],
            ack_wait: config.ack_wait,
            // One more than ours, so the runtime sees the last delivery and marks the object
            // interrupted before the bus gives up on it.
            max_deliveries: Some(config.max_deliveries.saturating_add(1)),
        };
        // A bus that is down at start (a broker restarting) is waited for, with backoff; a
        // subscription the bus refuses (bad configuration) fails the controller at once.
        let mut delay = config.backoff.initial.max(Duration::from_millis(100));
        let subscription = loop {
            match self.backends.bus.subscribe(options.clone()).await {
                Ok(subscription) => break subscription,
                Err(err) if err.kind() == ErrorKind::Unavailable => {
                    tracing::warn!(controller = %name, error = %err, retry_in = ?delay, "cannot subscribe yet");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(config.backoff.max.max(delay));
                }
                Err(err) => return Err(err),
            }
        };
        // Registered before taking deliveries: a change made after this point reaches us.
        let mut delay = config.backoff.initial.max(Duration::from_millis(100));
        while !self.relations.is_empty() {
            match self
                .backends
                .store
                .register_relations(&self.relations)
                .await
            {
                Ok(()) => break,
                Err(err) if err.kind() == ErrorKind::Unavailable => {
                    tracing::warn!(controller = %name, error = %err, retry_in = ?delay, "cannot register relations yet");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(config.backoff.max.max(delay));
                }
                Err(err) => return Err(err),
            }
        }
        let (release, to_release) = tokio::sync::mpsc::unbounded_channel();
        let worker = Arc::new(Worker::new(self, name.clone(), release));
        tracing::info!(controller = %name, kind = worker.reconciler.kind(), holder = %worker.holder, "controller started");
        let resync = tokio::spawn(worker.clone().resync_loop(shutdown.clone()));
        // One intake task receives from the subscription, when a worker is idle, and hands the
        // delivery to `concurrency` long-lived workers through a channel: no task spawned per
        // delivery, and several runnable workers at once, so the scheduler can spread them over
        // its threads (workers taking turns at the subscription ran one at a time). Nothing is
        // taken ahead for busy workers: it stays on the bus for other replicas.
        let (handoff, deliveries) = flume::bounded(worker.config.concurrency);
        let intake = tokio::spawn(
            worker
                .clone()
                .intake(subscription, handoff, shutdown.clone()),
        );
        let mut tasks = JoinSet::new();
        for _ in 0..worker.config.concurrency {
            tasks.spawn(worker.clone().receive(deliveries.clone()));
        }
        drop(deliveries);
        let releases = tokio::spawn(release_leases(worker.backends.locker.clone(), to_release));
        tokio::select! {
            _ = shutdown.cancelled() => {}
            // Every worker stopped by itself: the bus was closed.
            _ = async {
                while let Some(joined) = tasks.join_next().await {
                    report_worker_exit(&name, joined);
                }
            } => {}
        }

        worker.stopping.store(true, Ordering::Relaxed);
        // Phase 1: no more intake (the intake task drops the subscription; deliveries it had
        // handed on and no worker started are requeued); let running reconciles finish.
        if let Err(err) = intake.await
            && err.is_panic()
        {
            tracing::error!(controller = %name, error = %err, "controller intake panicked");
        }
        resync.abort();
        let drain = async {
            while let Some(joined) = tasks.join_next().await {
                report_worker_exit(&name, joined);
            }
        };
        if tokio::time::timeout(worker.config.drain_timeout, drain)
            .await
            .is_err()
        {
            // Phase 2: abort what is left; workers requeue their deliveries and release leases.
            tracing::warn!(controller = %name, running = tasks.len(), "drain timeout; aborting running reconciles");
            worker.abort.cancel();
            let settle = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(Duration::from_secs(5), settle)
                .await
                .is_err()
            {
                tasks.abort_all();
            }
        }
        worker.releases.lock().unwrap().take();
        if tokio::time::timeout(Duration::from_secs(5), releases)
            .await
            .is_err()
        {
            tracing::warn!(controller = %name, "lease releases unfinished at shutdown; they will expire");
        }
        tracing::info!(controller = %name, "controller stopped");
        Ok(())
    }
}

/// Releases leases as they come, concurrently (a release is a round trip on a networked
/// locker), until the sending side is closed and every release has finished.
async fn release_leases(
    locker: Arc<dyn Locker>,
    mut leases: tokio::sync::mpsc::UnboundedReceiver<Lease>,
) {
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            lease = leases.recv() => match lease {
                Some(lease) => {
                    let locker = locker.clone();
                    let mut release = async move {
                        if let Err(err) = locker.release(&lease).await {
                            tracing::warn!(error = %err, key = %lease.key, "releasing the object lease failed; it will expire");
                        }
                    }
                    .boxed();
                    // An in-process locker is done at once; only a release that waits (a
                    // round trip) is kept to run beside the others.
                    if futures::poll!(release.as_mut()).is_pending() {
                        running.push(release);
                    }
                }
                None => break,
            },
            Some(()) = futures::StreamExt::next(&mut running), if !running.is_empty() => {}
        }
    }
    while futures::StreamExt::next(&mut running).await.is_some() {}
}

fn report_worker_exit(controller: &str, joined: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(err) = joined
        && err.is_panic()
    {
        tracing::error!(controller, error = %err, "controller worker panicked outside a reconcile");
    }
}

/// A count of idle workers the intake waits on: an atomic, and a wake-up only when the count
/// leaves zero (a semaphore took a lock per delivery).
struct IdleWorkers {
    count: AtomicUsize,
    freed: tokio::sync::Notify,
}

impl IdleWorkers {
    fn new(workers: usize) -> Self {
        IdleWorkers {
            count: AtomicUsize::new(workers),
            freed: tokio::sync::Notify::new(),
        }
    }

    /// Claims an idle worker; `false` if none is idle.
    fn take(&self) -> bool {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// A worker became idle.
    fn put(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) == 0 {
            self.freed.notify_one();
        }
    }

    /// Returns once a worker may be idle (take again to claim it).
    async fn wait(&self) {
        let freed = self.freed.notified();
        tokio::pin!(freed);
        // Registered before looking, so a `put` in between is not missed.
        freed.as_mut().enable();
        if self.count.load(Ordering::Acquire) == 0 {
            freed.await;
        }
    }
}

/// Whether a delivery starts work on its object or folds into work already running here.
enum Admission {
    Start(Delivery),
    Coalesced(Delivery),
    /// Work runs for the object here and the delivery cannot fold into it: retry it later.
    Busy(Delivery),
}

/// How to settle a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack,
    Requeue(Duration),
}

/// What happened to a guarded reconcile.
enum Guarded {
    Finished(std::result::Result<Action, ReconcileError>),
    LeaseLost(Error),
    Aborted,
}

/// Counters resolved once, so the hot path does not look up label sets.
struct ResultCounters {
    success: Counter,
    requeue_after: Counter,
    error: Counter,
    terminal: Counter,
    skipped: Counter,
}

/// State shared by the receive loop and the worker tasks of one running controller.
struct Worker<R: Reconciler> {
    reconciler: R,
    backends: Backends,
    config: ControllerConfig,
    name: String,
    holder: String,
    metrics: ControllerMetrics,
    results: ResultCounters,
    /// Objects being worked on here; `true` once a notification arrived during the work, which
    /// then runs once more before its delivery is settled.
    active: Mutex<HashMap<ObjectId, bool, foldhash::fast::RandomState>>,
    /// Mapping functions by followed kind ([`Controller::follows_mapped`]).
    maps: Vec<(String, MapFn)>,
    abort: CancellationToken,
    /// Set once shutdown began (a flag, not the token: workers look at it on every delivery,
    /// and the token's check takes a lock shared by every thread).
    stopping: AtomicBool,
    /// Idle workers: the intake takes a delivery from the bus only for one of them.
    idle: IdleWorkers,
    /// Leases to release ([`release_leases`]); `None` once the controller stopped.
    releases: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Lease>>>,
}

/// The wall-clock time `delay` from now, for `Status::requeue_at`.
fn due_in(delay: Duration) -> Timestamp {
    now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)
}

impl<R: Reconciler> Worker<R> {
    fn new(
        controller: Controller<R>,
        name: String,
        releases: tokio::sync::mpsc::UnboundedSender<Lease>,
    ) -> Self {
        let metrics = controller.metrics;
        let results = ResultCounters {
            success: metrics.reconciles(ReconcileResult::success),
            requeue_after: metrics.reconciles(ReconcileResult::requeue_after),
            error: metrics.reconciles(ReconcileResult::error),
            terminal: metrics.reconciles(ReconcileResult::terminal),
            skipped: metrics.reconciles(ReconcileResult::skipped),
        };
        let idle = IdleWorkers::new(controller.config.concurrency);
        Worker {
            maps: controller.maps,
            reconciler: controller.reconciler,
            backends: controller.backends,
            config: controller.config,
            holder: format!("{name}-{}", uuid::Uuid::now_v7()),
            name,
            metrics,
            results,
            active: Mutex::default(),
            abort: CancellationToken::new(),
            stopping: AtomicBool::new(false),
            idle,
            releases: Mutex::new(Some(releases)),
        }
    }

    /// Receives deliveries from the subscription and hands them to the workers, until shutdown
    /// or the bus closes; then drops the subscription and the channel's sending side, which
    /// stops the workers once they have taken what is left.
    async fn intake(
        self: Arc<Self>,
        mut subscription: Box<dyn Subscription>,
        handoff: flume::Sender<Delivery>,
        shutdown: CancellationToken,
    ) {
        while !self.stopping.load(Ordering::Relaxed) {
            if !self.idle.take() {
                tokio::select! {
                    biased;
                    _ = self.idle.wait() => {}
                    _ = shutdown.cancelled() => return,
                }
                continue;
            }
            // The subscription first: with a backlog, the token is not looked at per delivery.
            let next = tokio::select! {
                biased;
                next = subscription.next() => next,
                _ = shutdown.cancelled() => return,
            };
            let delivery = match next {
                Ok(Some(delivery)) => delivery,
                Ok(None) => {
                    tracing::info!(controller = %self.name, "bus closed; stopping");
                    return;
                }
                Err(err) => {
                    self.idle.put();
                    tracing::warn!(controller = %self.name, error = %err, "receiving from the bus failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            self.metrics.queue_depth.inc();
            if delivery.attempt > 1 {
                self.metrics.redeliveries.inc();
            }
            let latency = SystemTime::now()
                .duration_since(delivery.due_at)
                .unwrap_or_default();
            self.metrics.queue_latency.observe(latency.as_secs_f64());
            // A worker is idle (it was claimed above): this does not wait.
            if handoff.send_async(delivery).await.is_err() {
                return;
            }
        }
    }

    /// One of the controller's workers: takes the next delivery the intake handed on and works
    /// on it, until the intake stops. After shutdown it starts no more work: what it still
    /// takes from the channel goes back to the bus at once, for this or another replica.
    async fn receive(self: Arc<Self>, deliveries: flume::Receiver<Delivery>) {
        while let Ok(delivery) = deliveries.recv_async().await {
            if self.stopping.load(Ordering::Relaxed) {
                if let Err(err) = delivery.requeue_after(Duration::ZERO).await {
                    tracing::debug!(error = %err, "requeueing a delivery at shutdown failed; the bus will redeliver it");
                }
                self.metrics.queue_depth.dec();
                self.idle.put();
                continue;
            }
            match self.admit(delivery) {
                Admission::Start(delivery) => {
                    // A bug outside the reconciler (which has its own guard) must not cost the
                    // controller a worker: the delivery is redelivered after ack-wait.
                    let id = delivery.notification.id;
                    if let Err(panic) = AssertUnwindSafe(self.work(delivery)).catch_unwind().await {
                        self.active.lock().unwrap().remove(&id);
                        self.metrics.queue_depth.dec();
                        tracing::error!(controller = %self.name, %id, panic = %panic_message(panic.as_ref()), "controller worker panicked outside a reconcile");
                    }
                }
                Admission::Busy(delivery) => {
                    if let Err(err) = delivery.requeue_after(self.config.lock_busy_delay).await {
                        tracing::debug!(error = %err, "requeueing a delivery failed; the bus will redeliver it");
                    }
                    self.metrics.queue_depth.dec();
                }
                Admission::Coalesced(delivery) => {
                    // The running work covers this change: its own delivery stays unacked
                    // until a reconcile that started after this moment has finished.
                    if let Err(err) = delivery.ack().await {
                        tracing::debug!(error = %err, "acking a coalesced delivery failed");
                    }
                    self.metrics.queue_depth.dec();
                }
            }
            self.idle.put();
            // Counts against tokio's cooperative budget: a worker whose deliveries never wait
            // (all in memory) yields now and then, so the intake it woke (in this thread's
            // unstealable next-task slot) and the other workers get to run. Yielding after
            // every delivery instead moved workers between threads all the time (half the
            // engine bench's throughput in some runs).
            tokio::task::coop::consume_budget().await;
        }
    }

    /// Resyncs `resync_grace` after start, then every `resync_period`; a failed resync is
    /// retried with backoff.
    async fn resync_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failures = 0;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(self.config.resync_grace) => {}
        }
        loop {
            let next = match self.resync().await {
                Ok(notified) => {
                    failures = 0;
                    if notified > 0 {
                        tracing::info!(controller = %self.name, notified, "resync: objects waiting for a reconcile notified");
                    }
                    match self.config.resync_period {
                        Some(period) => period,
                        None => return,
                    }
                }
                Err(err) => {
                    failures += 1;
                    let delay = self.config.backoff.delay(failures);
                    tracing::warn!(controller = %self.name, error = %err, retry_in = ?delay, "resync failed");
                    delay
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(next) => {}
            }
        }
    }

    /// Notifies the bus of every object of the kind that waits for a reconcile
    /// ([`RawObject::needs_reconcile`]); returns how many.
    async fn resync(&self) -> Result<usize> {
        let kind = self.reconciler.kind();
        let mut query = ListQuery::default().limit(MAX_PAGE_SIZE);
        let mut notified = 0;
        let grace = chrono::Duration::from_std(self.config.resync_grace).unwrap_or_default();
        loop {
            let page = self.backends.store.list(kind, &query).await?;
            let at = now();
            let waiting: Vec<Notification> = page
                .items
                .iter()
                .filter(|obj| obj.meta.updated_at <= at - grace && obj.needs_reconcile(at))
                .map(|obj| {
                    Notification::new(kind, obj.meta.id, Operation::Resync, obj.meta.version)
                })
                .collect();
            if !waiting.is_empty() {
                notified += waiting.len();
                self.metrics.resynced.inc_by(waiting.len() as u64);
                self.backends.bus.publish_missing(waiting).await?;
            }
            match page.next {
                Some(after) => query.after = Some(after),
                None => return Ok(notified),
            }
        }
    }

    /// Starts work on a delivery's object, or marks the work already running for it here to
    /// run once more.
    fn admit(&self, delivery: Delivery) -> Admission {
        let mut active = self.active.lock().unwrap();
        match active.get_mut(&delivery.notification.id) {
            // Its secret must reach a reconcile of its own: it cannot fold into another.
            Some(_) if delivery.notification.secret.is_some() => Admission::Busy(delivery),
            // A resync asks that the object be reconciled: it is being reconciled right now.
            Some(_) if delivery.notification.operation == Operation::Resync => {
                self.metrics.coalesced.inc();
                Admission::Coalesced(delivery)
            }
            Some(dirty) => {
                *dirty = true;
                self.metrics.coalesced.inc();
                Admission::Coalesced(delivery)
            }
            None => {
                active.insert(delivery.notification.id, false);
                Admission::Start(delivery)
            }
        }
    }

    /// Reconciles the object until no notification arrived during the last run, then settles
    /// the delivery. Until then it stays unacked, so a crash at any point means redelivery.
    /// The lease is taken once and kept across those runs.
    async fn work(&self, delivery: Delivery) {
        let id = delivery.notification.id;
        if delivery.notification.operation == Operation::Followed {
            return self.map_followed(delivery).await;
        }
        let key = super::lease_key(self.reconciler.kind(), id);
        let mut lease = None;
        // A re-run is for a notification that arrived during the previous run, not for the
        // delivery's own (maybe a resync's).
        let mut rerun = false;
        loop {
            let settle = if self.abort.is_cancelled() {
                Settle::Requeue(Duration::ZERO)
            } else {
                let span = tracing::info_span!(
                    "reconcile",
                    controller = %self.name,
                    kind = self.reconciler.kind(),
                    id = %id,
                    attempt = delivery.attempt,
                );
                self.process(id, &key, &mut lease, &delivery, rerun)
                    .instrument(span)
                    .await
            };
            {
                let mut active = self.active.lock().unwrap();
                let dirty = active
                    .get_mut(&id)
                    .is_some_and(|d| std::mem::replace(d, false));
                if dirty && !self.abort.is_cancelled() {
                    rerun = true;
                    continue;
                }
                active.remove(&id);
            }
            if let Some(lease) = lease {
                self.release_later(lease);
            }
            self.settle(delivery, settle).await;
            return;
        }
    }

    /// A followed object changed ([`Via::Mapped`]): maps it to this kind's objects and
    /// notifies them, again if it changed once more meanwhile; then settles the delivery.
    async fn map_followed(&self, delivery: Delivery) {
        let id = delivery.notification.id;
        let span = tracing::info_span!("map", controller = %self.name, followed = %id);
        loop {
            let settle = self.map_once(id).instrument(span.clone()).await;
            let dirty = {
                let mut active = self.active.lock().unwrap();
                let dirty = active
                    .get_mut(&id)
                    .is_some_and(|d| std::mem::replace(d, false));
                if !dirty || self.abort.is_cancelled() || !matches!(settle, Settle::Ack) {
                    active.remove(&id);
                }
                dirty
            };
            if dirty && !self.abort.is_cancelled() && matches!(settle, Settle::Ack) {
                continue;
            }
            self.settle(delivery, settle).await;
            return;
        }
    }

    async fn map_once(&self, id: ObjectId) -> Settle {
        let kind = self.reconciler.kind();
        for (followed, map) in &self.maps {
            match self.backends.store.get(followed, id).await {
                Ok(changed) => {
                    let notifications: Vec<Notification> = map(&changed)
                        .into_iter()
                        .map(|target| Notification::new(kind, target, Operation::Related, 0))
                        .collect();
                    tracing::debug!(kind = %followed, targets = notifications.len(), "mapped a followed change");
                    return match self.backends.bus.publish_all(notifications).await {
                        Ok(()) => Settle::Ack,
                        Err(err) => {
                            tracing::warn!(error = %err, "notifying mapped objects failed; requeueing");
                            Settle::Requeue(self.config.backoff.delay(1))
                        }
                    };
                }
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(err) => {
                    tracing::warn!(error = %err, "reading a followed object failed; requeueing");
                    return Settle::Requeue(self.config.backoff.delay(1));
                }
            }
        }
        // Removed, or of a kind this process maps no more.
        Settle::Ack
    }

    /// One locked reconcile of `id`; says how to settle its delivery. Takes the lease, or
    /// renews the one a previous run of this work left in `lease`.
    async fn process(
        &self,
        id: ObjectId,
        key: &str,
        lease: &mut Option<Lease>,
        delivery: &Delivery,
        rerun: bool,
    ) -> Settle {
        let locker = &self.backends.locker;
        let held = match lease.take() {
            // Renewing proves the lease is still ours after the previous run.
            Some(previous) => match locker.renew(&previous).await {
                Ok(renewed) => Ok(Some(renewed)),
                Err(err) if err.kind() == ErrorKind::Conflict => {
                    self.metrics.leases_lost.inc();
                    locker
                        .acquire(key, &self.holder, self.config.lease_ttl)
                        .await
                }
                Err(err) => {
                    self.release_later(previous);
                    Err(err)
                }
            },
            None => {
                locker
                    .acquire(key, &self.holder, self.config.lease_ttl)
                    .await
            }
        };
        let current = match held {
            Ok(Some(current)) => lease.insert(current),
            Ok(None) => {
                tracing::debug!("object locked by another replica; requeueing");
                return Settle::Requeue(self.config.lock_busy_delay);
            }
            Err(err) => {
                tracing::warn!(error = %err, "taking the object lease failed; requeueing");
                return Settle::Requeue(self.config.lock_busy_delay);
            }
        };
        self.reconcile_locked(id, current, delivery, rerun).await
    }

    /// Releases a lease without holding up the worker: the object is free here already, and
    /// another replica that finds it still held retries after `lock_busy_delay`. Shutdown
    /// waits for these releases.
    fn release_later(&self, lease: Lease) {
        if let Some(releases) = &*self.releases.lock().unwrap() {
            let _ = releases.send(lease);
        }
    }

    async fn reconcile_locked(
        &self,
        id: ObjectId,
        lease: &mut Lease,
        delivery: &Delivery,
        rerun: bool,
    ) -> Settle {
        let kind = self.reconciler.kind();
        let raw = match self.backends.store.get(kind, id).await {
            Ok(raw) => raw,
            Err(err) if err.kind() == ErrorKind::NotFound => {
                self.results.skipped.inc();
                tracing::debug!("object is gone; nothing to do");
                return Settle::Ack;
            }
            Err(err) => {
                tracing::warn!(error = %err, "loading the object failed; requeueing");
                return Settle::Requeue(self.config.backoff.delay(1));
            }
        };
        // A resync's notification races with the work it may duplicate: the object could have
        // been reconciled since the resync looked at it.
        if !rerun
            && delivery.notification.operation == Operation::Resync
            && !raw.needs_reconcile(now())
        {
            self.results.skipped.inc();
            tracing::debug!("resynced object no longer waits; skipping");
            return Settle::Ack;
        }
        let generation = raw.meta.generation;
        let mut obj = match Object::<R::Object>::decode(&raw) {
            Ok(obj) => obj,
            Err(err) => return self.fail_undecodable(raw, lease, err).await,
        };
        let before = obj.status.clone();
        let deleting = obj.is_deleting();
        let attempt = delivery.attempt;
        if deleting {
            // Foreground deletion: what the object owns goes first; the last dependent's
            // removal notifies it again.
            match self.backends.store.dependents(kind, id).await {
                Ok(dependents) if !dependents.is_empty() => {
                    self.results.skipped.inc();
                    tracing::debug!(
                        dependents = dependents.len(),
                        "waiting for the objects it owns to be deleted"
                    );
                    return Settle::Ack;
                }
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => return Settle::Ack,
                Err(err) => {
                    tracing::warn!(error = %err, "listing dependents failed; requeueing");
                    return Settle::Requeue(self.config.backoff.delay(1));
                }
            }
        }

        let settle = if attempt > self.config.max_deliveries {
            let reason = format!(
                "notification delivered {} times without completing (the controller crashed, \
                 timed out or lost its lease each time); fix the cause, then update the object",
                attempt - 1
            );
            self.stop(&mut obj, generation, LifecycleState::Interrupted, reason);
            Settle::Ack
        } else if obj.status.state.is_stopped() && obj.status.observed_generation == generation {
            self.results.skipped.inc();
            tracing::debug!(state = ?obj.status.state, "object stopped at this generation; skipping");
            return Settle::Ack;
        } else {
            let ctx = Context {
                store: self.backends.store.clone(),
                fence: lease.token,
                attempt,
                // Its own token (not a child of `abort`, whose lock every reconcile would
                // take): run_guarded cancels it when the reconcile is given up, aborts included.
                cancelled: CancellationToken::new(),
                secret: delivery.notification.secret.clone(),
                work: Arc::default(),
            };
            let started = Instant::now();
            self.metrics.active_workers.inc();
            let outcome = self
                .run_guarded(&mut obj, deleting, &ctx, lease, delivery)
                .await;
            self.metrics.active_workers.dec();
            self.metrics
                .reconcile_time
                .observe(started.elapsed().as_secs_f64());
            match outcome {
                Guarded::Finished(Ok(Action::Done)) if deleting => {
                    return self.remove(id, lease).await;
                }
                Guarded::Finished(result) => self.apply(&mut obj, generation, deleting, result),
                Guarded::LeaseLost(err) => {
                    self.metrics.leases_lost.inc();
                    tracing::warn!(error = %err, "lease lost during reconcile; abandoned");
                    return Settle::Requeue(self.config.lock_busy_delay);
                }
                Guarded::Aborted => return Settle::Requeue(Duration::ZERO),
            }
        };
        if obj.status == before {
            return settle;
        }
        let failures = obj.status.failures;
        match self.write_status(obj, lease).await {
            Ok(()) => settle,
            Err(err) if err.kind() == ErrorKind::NotFound => Settle::Ack,
            Err(err) if err.kind() == ErrorKind::Conflict => {
                self.metrics.leases_lost.inc();
                tracing::warn!(error = %err, "status write fenced off: a newer lease holder took over");
                Settle::Ack
            }
            Err(err) => {
                tracing::warn!(error = %err, "writing status failed; requeueing");
                Settle::Requeue(self.config.backoff.delay(failures.max(1)))
            }
        }
    }

    /// Runs the reconciler with panic capture, the timeout, lease renewal and delivery
    /// heartbeats; then, whatever the outcome, waits until work it spawned through the
    /// context has stopped, keeping the lease meanwhile.
    async fn run_guarded(
        &self,
        obj: &mut Object<R::Object>,
        deleting: bool,
        ctx: &Context,
        lease: &mut Lease,
        delivery: &Delivery,
    ) -> Guarded {
        let outcome = self
            .run_with_deadline(obj, deleting, ctx, lease, delivery)
            .await;
        // The reconcile future is gone here: an async reconcile has stopped. Cancelling tells
        // the work it spawned to stop too, unless it finished normally.
        if !matches!(outcome, Guarded::Finished(Ok(_))) {
            ctx.cancelled.cancel();
        }
        match self.wait_for_spawned_work(ctx, lease, delivery).await {
            Some(err) if !matches!(outcome, Guarded::LeaseLost(_)) => Guarded::LeaseLost(err),
            _ => outcome,
        }
    }

    async fn run_with_deadline(
        &self,
        obj: &mut Object<R::Object>,
        deleting: bool,
        ctx: &Context,
        lease: &mut Lease,
        delivery: &Delivery,
    ) -> Guarded {
        let reconciler = &self.reconciler;
        let work = async move {
            if deleting {
                reconciler.cleanup(obj, ctx).await
            } else {
                reconciler.reconcile(obj, ctx).await
            }
        };
        let timeout = self.config.reconcile_timeout;
        let deadline = Instant::now() + timeout;
        let work = AssertUnwindSafe(work).catch_unwind();
        tokio::pin!(work);
        // Reconciles with nothing to wait for finish in their first poll: no timer is set up
        // for them (the deadline still counts from before that poll).
        if let std::task::Poll::Ready(result) = futures::poll!(work.as_mut()) {
            return Guarded::Finished(self.caught(result));
        }
        let expired = tokio::time::sleep_until(deadline);
        tokio::pin!(expired);
        let mut heartbeat = self.heartbeat();
        loop {
            tokio::select! {
                biased;
                result = &mut work => return Guarded::Finished(self.caught(result)),
                _ = &mut expired => {
                    self.metrics.reconcile_timeouts.inc();
                    tracing::warn!(?timeout, "reconcile timed out");
                    return Guarded::Finished(Err(ReconcileError::Retryable(format!(
                        "reconcile timed out after {timeout:?}"
                    ))));
                }
                _ = self.abort.cancelled() => return Guarded::Aborted,
                _ = heartbeat.tick() => {
                    match self.backends.locker.renew(lease).await {
                        Ok(renewed) => *lease = renewed,
                        Err(err) => return Guarded::LeaseLost(err),
                    }
                    if let Err(err) = delivery.in_progress().await {
                        tracing::debug!(error = %err, "delivery heartbeat failed");
                    }
                }
            }
        }
    }

    /// A reconcile's result, or its panic as a retryable error.
    fn caught(
        &self,
        result: std::thread::Result<std::result::Result<Action, ReconcileError>>,
    ) -> std::result::Result<Action, ReconcileError> {
        result.unwrap_or_else(|panic| {
            self.metrics.reconcile_panics.inc();
            let message = panic_message(panic.as_ref());
            tracing::error!(panic = %message, "reconciler panicked");
            Err(ReconcileError::Retryable(format!(
                "reconciler panicked: {message}"
            )))
        })
    }

    /// Renews the lease and heartbeats the delivery every third of the shorter of lease TTL
    /// and ack-wait.
    fn heartbeat(&self) -> tokio::time::Interval {
        let period = self.config.lease_ttl.min(self.config.ack_wait) / 3;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat
    }

    /// Waits until the work a reconcile spawned through its context ([`Context::spawn_blocking`],
    /// [`Context::spawn`]) has stopped, renewing the lease and heartbeating the delivery
    /// meanwhile, so no other reconcile of the object starts before. A timed-out reconcile's
    /// blocking thread cannot be stopped from outside: it is waited for, and what it returns
    /// is discarded. Returns the error if the lease could not be renewed meanwhile.
    async fn wait_for_spawned_work(
        &self,
        ctx: &Context,
        lease: &mut Lease,
        delivery: &Delivery,
    ) -> Option<Error> {
        let work = ctx.work.get()?;
        work.close();
        if work.is_empty() {
            return None;
        }
        let started = Instant::now();
        self.metrics.overrunning.inc();
        let mut lost = None;
        let mut heartbeat = self.heartbeat();
        let mut next_warning = Duration::from_secs(10);
        loop {
            tokio::select! {
                _ = work.wait() => break,
                _ = heartbeat.tick() => {
                    if lost.is_none() {
                        match self.backends.locker.renew(lease).await {
                            Ok(renewed) => *lease = renewed,
                            Err(err) => {
                                tracing::error!(error = %err, "lease lost while the reconcile's work still runs");
                                lost = Some(err);
                            }
                        }
                    }
                    if let Err(err) = delivery.in_progress().await {
                        tracing::debug!(error = %err, "delivery heartbeat failed");
                    }
                    if started.elapsed() >= next_warning {
                        tracing::warn!(waited = ?started.elapsed(), "the reconcile's spawned work has not stopped yet; the object stays locked");
                        next_warning *= 2;
                    }
                }
            }
        }
        self.metrics.overrunning.dec();
        if ctx.cancelled.is_cancelled() {
            tracing::info!(waited = ?started.elapsed(), "the abandoned reconcile's spawned work stopped; its result was discarded");
        }
        lost
    }

    /// Folds a reconcile result into the object's status; says how to settle the deliveries.
    fn apply(
        &self,
        obj: &mut Object<R::Object>,
        generation: u64,
        deleting: bool,
        result: std::result::Result<Action, ReconcileError>,
    ) -> Settle {
        let status = &mut obj.status;
        match result {
            Ok(Action::Done) => {
                // Deletions that finish never get here: the object is removed instead.
                status.state = LifecycleState::Reconciled;
                status.observed_generation = generation;
                status.failures = 0;
                status.reason = None;
                status.acknowledged_at = None;
                status.requeue_at = None;
                status.set_condition("Ready", ConditionStatus::True, "Reconciled", "");
                self.results.success.inc();
                tracing::debug!("reconciled");
                Settle::Ack
            }
            Ok(Action::RequeueAfter(delay)) => {
                status.failures = 0;
                status.reason = None;
                let steady = status.state == LifecycleState::Reconciled
                    && status.observed_generation == generation;
                // A steady object's periodic look needs no record: it is settled, and the bus
                // keeps the requeue. An unfinished one records when it is due, so a resync
                // leaves it alone until then.
                if deleting {
                    status.state = LifecycleState::DeletionAcknowledged;
                    status.acknowledged_at = Some(now());
                    status.requeue_at = Some(due_in(delay));
                    status.set_condition("Ready", ConditionStatus::False, "Deleting", "");
                } else if !steady {
                    status.state = LifecycleState::CreationAcknowledged;
                    status.acknowledged_at = Some(now());
                    status.requeue_at = Some(due_in(delay));
                    status.set_condition("Ready", ConditionStatus::False, "Progressing", "");
                }
                status.observed_generation = generation;
                self.results.requeue_after.inc();
                tracing::debug!(?delay, "requeued by the reconciler");
                Settle::Requeue(delay)
            }
            Err(ReconcileError::Terminal(message)) => {
                let state = if deleting {
                    LifecycleState::Interrupted
                } else {
                    LifecycleState::CreationFailed
                };
                self.stop(obj, generation, state, message);
                Settle::Ack
            }
            Err(err) => {
                self.metrics.reconcile_errors.inc();
                status.failures = status.failures.saturating_add(1);
                let message = err.to_string();
                if status.failures > self.config.max_retries {
                    let attempts = status.failures;
                    let state = if deleting {
                        LifecycleState::Interrupted
                    } else {
                        LifecycleState::CreationFailed
                    };
                    self.stop(
                        obj,
                        generation,
                        state,
                        format!("gave up after {attempts} failed attempts: {message}"),
                    );
                    return Settle::Ack;
                }
                let delay = match err {
                    ReconcileError::RetryAfter { delay, .. } => delay,
                    _ => self.config.backoff.delay(status.failures),
                };
                status.set_condition("Ready", ConditionStatus::False, "ReconcileError", &message);
                status.record_event(EventType::Warning, "ReconcileError", &message);
                status.reason = Some(message);
                status.requeue_at = Some(due_in(delay));
                self.metrics.retries.inc();
                self.results.error.inc();
                tracing::warn!(error = %err, failures = status.failures, ?delay, "reconcile failed; retrying");
                Settle::Requeue(delay)
            }
        }
    }

    /// Records a state that stops reconciliation until the object changes.
    fn stop(
        &self,
        obj: &mut Object<R::Object>,
        generation: u64,
        state: LifecycleState,
        reason: String,
    ) {
        let status = &mut obj.status;
        status.state = state;
        status.observed_generation = generation;
        status.acknowledged_at = None;
        status.requeue_at = None;
        let condition_reason = match state {
            LifecycleState::Interrupted => "Interrupted",
            _ => "Failed",
        };
        status.set_condition("Ready", ConditionStatus::False, condition_reason, &reason);
        status.record_event(EventType::Warning, condition_reason, &reason);
        status.reason = Some(reason);
        self.metrics.reconcile_errors.inc();
        self.results.terminal.inc();
        tracing::error!(
            ?state,
            reason = status.reason.as_deref().unwrap_or_default(),
            "reconciliation stopped"
        );
    }

    /// A stored spec this binary cannot decode: nothing to reconcile, tell the user why.
    async fn fail_undecodable(&self, mut raw: RawObject, lease: &Lease, err: Error) -> Settle {
        let generation = raw.meta.generation;
        if raw.status.state == LifecycleState::CreationFailed
            && raw.status.observed_generation == generation
        {
            return Settle::Ack;
        }
        let reason = format!("stored object cannot be decoded: {err}");
        raw.status.state = LifecycleState::CreationFailed;
        raw.status.observed_generation = generation;
        raw.status
            .set_condition("Ready", ConditionStatus::False, "Failed", &reason);
        raw.status.reason = Some(reason);
        self.results.terminal.inc();
        let write = StatusWrite {
            expected_version: None,
            fence: Some(lease.token),
            status: raw.status,
        };
        if let Err(err) = self
            .backends
            .store
            .update_status(self.reconciler.kind(), raw.meta.id, write)
            .await
        {
            tracing::warn!(error = %err, "recording the decode failure failed");
        }
        Settle::Ack
    }

    /// Writes the object's status, fenced by the lease; takes the object, so the status is
    /// moved into the write rather than copied.
    async fn write_status(&self, obj: Object<R::Object>, lease: &Lease) -> Result<()> {
        let details = serde_json::to_value(&obj.status.details)
            .map_err(|e| Error::invalid("status.details", e.to_string()))?;
        let write = StatusWrite {
            expected_version: None,
            fence: Some(lease.token),
            status: obj.status.map_details(|_| details),
        };
        self.backends
            .store
            .write_status(self.reconciler.kind(), obj.meta.id, write)
            .await
            .map(drop)
    }

    /// Second phase of deletion: cleanup finished, remove the row.
    async fn remove(&self, id: ObjectId, lease: &Lease) -> Settle {
        match self
            .backends
            .store
            .remove(self.reconciler.kind(), id, Some(lease.token))
            .await
        {
            Ok(()) => {
                self.results.success.inc();
                tracing::debug!("cleaned up and removed");
                Settle::Ack
            }
            Err(err) if err.kind() == ErrorKind::NotFound => Settle::Ack,
            Err(err) if err.kind() == ErrorKind::Conflict => {
                self.metrics.leases_lost.inc();
                tracing::warn!(error = %err, "removal fenced off: a newer lease holder took over");
                Settle::Ack
            }
            Err(err) => {
                tracing::warn!(error = %err, "removing the object failed; requeueing");
                Settle::Requeue(self.config.backoff.delay(1))
            }
        }
    }

    /// Acks or requeues a delivery as decided.
    async fn settle(&self, delivery: Delivery, settle: Settle) {
        let result = match settle {
            Settle::Ack => delivery.ack().await,
            Settle::Requeue(delay) => delivery.requeue_after(delay).await,
        };
        if let Err(err) = result {
            tracing::debug!(error = %err, "settling a delivery failed; the bus will redeliver it");
        }
        self.metrics.queue_depth.dec();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
