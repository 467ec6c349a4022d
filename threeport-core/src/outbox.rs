//! The transactional outbox: notifications a store recorded with its writes, and the
//! [`OutboxRelay`] that forwards them to a [`Bus`].
//!
//! A store writes each desired-state change and its notification in one transaction. The relay
//! claims pending notifications for a while (so several relays never publish the same row
//! concurrently), publishes them, and deletes them once the bus accepted them. A relay that dies
//! loses its claims when they time out, and another relay picks the rows up: nothing is lost
//! between "saved" and "notified", at the price of an occasional duplicate (harmless, since
//! notifications are hints).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::bus::{Bus, Notification};
use crate::error::Result;

/// A notification waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Position in the outbox (ascending in commit order for one writer).
    pub seq: u64,
    /// The notification to publish.
    pub notification: Notification,
}

/// The outbox side of a store: notifications recorded atomically with object writes.
///
/// Contract (checked by [`conformance::outbox`](crate::conformance::outbox)): every
/// desired-state write leaves one entry; `claim` hands an entry to one claimer at a time until
/// its claim times out; `complete` deletes entries for good.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Outbox: Send + Sync + std::fmt::Debug + 'static {
    /// Claims up to `limit` pending entries for `claimer` during `claim_for`, oldest first.
    /// Entries already claimed by `claimer` are returned again; others' live claims are skipped.
    async fn claim(
        &self,
        claimer: &str,
        limit: usize,
        claim_for: Duration,
    ) -> Result<Vec<OutboxEntry>>;

    /// Deletes published entries.
    async fn complete(&self, seqs: &[u64]) -> Result<()>;

    /// [`complete`](Outbox::complete)s `published`, then [`claim`](Outbox::claim)s as it
    /// does (never returning an entry of `published`). A relay's every round does both: a
    /// backend may do them in one round trip (the default makes two).
    async fn complete_and_claim(
        &self,
        published: &[u64],
        claimer: &str,
        limit: usize,
        claim_for: Duration,
    ) -> Result<Vec<OutboxEntry>> {
        if !published.is_empty() {
            self.complete(published).await?;
        }
        self.claim(claimer, limit, claim_for).await
    }

    /// Waits until new entries may be pending, at most `timeout`. The default just sleeps;
    /// backends that learn of their own writes wake up early.
    async fn wait_for_entries(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }
}

/// Settings of an [`OutboxRelay`].
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Identifies this relay's claims; unique per process.
    pub claimer: String,
    /// Entries claimed per round.
    pub batch: usize,
    /// How long a claim protects entries from other relays.
    pub claim_for: Duration,
    /// Longest wait between polls when nothing wakes the relay.
    pub poll_interval: Duration,
    /// Pause after a failed round (store or bus unavailable).
    pub retry_delay: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            claimer: format!("relay-{}", uuid::Uuid::now_v7()),
            batch: 256,
            claim_for: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// Forwards outbox entries to a bus until cancelled.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use threeport_core::*;
/// use tokio_util::sync::CancellationToken;
///
/// let store = Arc::new(MemoryStore::new());
/// let bus = Arc::new(MemoryBus::new());
/// let mut sub = bus.subscribe(SubscribeOptions::new("g", "Widget")).await?;
/// let stop = CancellationToken::new();
/// let relay = OutboxRelay::new(store.clone(), bus.clone(), RelayConfig::default());
/// let task = tokio::spawn(relay.run(stop.clone()));
///
/// let new = NewObject { kind: "Widget".into(), name: "w".into(), labels: Default::default(),
///                       references: vec![], owners: Vec::new(), spec: serde_json::json!({}) };
/// let created = store.create(new).await?;
/// let delivery = sub.next().await?.unwrap();
/// assert_eq!(delivery.notification.id, created.meta.id);
/// assert_eq!(delivery.notification.operation, Operation::Created);
/// stop.cancel();
/// task.await.unwrap();
/// # Ok::<(), threeport_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    bus: Arc<dyn Bus>,
    config: RelayConfig,
    metrics: RelayMetrics,
}

/// Prometheus metrics of an outbox relay: how far behind the store the bus is.
#[derive(Debug, Clone)]
pub struct RelayMetrics {
    /// Notifications published.
    pub relayed: Counter,
    /// Rounds that failed (store or bus unavailable).
    pub errors: Counter,
    /// Seconds since the relay last found the outbox drained: about 0 while it keeps up, the
    /// age of the oldest waiting notification at most when it falls behind.
    pub lag_seconds: Gauge<f64, AtomicU64>,
    /// When the outbox was last drained.
    drained_at: Arc<std::sync::Mutex<std::time::Instant>>,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        RelayMetrics {
            relayed: Counter::default(),
            errors: Counter::default(),
            lag_seconds: Gauge::default(),
            drained_at: Arc::new(std::sync::Mutex::new(std::time::Instant::now())),
        }
    }
}

impl RelayMetrics {
    /// Metrics registered in `registry` (`threeport_outbox_relayed_total`,
    /// `threeport_outbox_relay_errors_total`, `threeport_outbox_lag_seconds`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let outbox = registry.sub_registry_with_prefix("threeport_outbox");
        outbox.register(
            "relayed",
            "Notifications published from the outbox to the bus",
            metrics.relayed.clone(),
        );
        outbox.register(
            "relay_errors",
            "Relay rounds that failed (store or bus unavailable)",
            metrics.errors.clone(),
        );
        outbox.register(
            "lag_seconds",
            "Seconds since the outbox was last drained (0 while the relay keeps up)",
            metrics.lag_seconds.clone(),
        );
        metrics
    }

    /// Records a round that published `relayed` of at most `batch`, or failed.
    fn round(&self, outcome: std::result::Result<usize, ()>, batch: usize) {
        let mut drained_at = self.drained_at.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(relayed) => {
                self.relayed.inc_by(relayed as u64);
                // A round short of a full batch emptied the outbox.
                if relayed < batch {
                    *drained_at = std::time::Instant::now();
                }
            }
            Err(()) => {
                self.errors.inc();
            }
        }
        self.lag_seconds.set(drained_at.elapsed().as_secs_f64());
    }
}

impl OutboxRelay {
    /// A relay from `outbox` to `bus`.
    pub fn new(outbox: Arc<dyn Outbox>, bus: Arc<dyn Bus>, config: RelayConfig) -> Self {
        OutboxRelay {
            outbox,
            bus,
            config,
            metrics: RelayMetrics::default(),
        }
    }

    /// Reports to `metrics` (from [`RelayMetrics::register`]).
    pub fn with_metrics(mut self, metrics: RelayMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Relays until `shutdown` is cancelled. Failures are logged and retried, never fatal.
    ///
    /// A round's published entries are deleted by the next round's claim, in the same round
    /// trip; the next round comes at once after a round that relayed anything, and a round
    /// that finds nothing new has deleted them.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut published = Vec::new();
        while !shutdown.is_cancelled() {
            let round = self.relay_round(&mut published).await;
            self.metrics.round(
                round.as_ref().map(|n| *n).map_err(|_| ()),
                self.config.batch,
            );
            let delay = match round {
                Ok(0) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.outbox.wait_for_entries(self.config.poll_interval) => {}
                    }
                    continue;
                }
                Ok(_) => continue,
                Err(err) => {
                    tracing::warn!(error = %err, "outbox relay round failed; retrying");
                    self.config.retry_delay
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        // What the last round published is deleted now, not re-published after its claim
        // times out.
        if !published.is_empty()
            && let Err(err) = self.outbox.complete(&published).await
        {
            tracing::debug!(error = %err, "completing the last relayed entries failed; they are relayed again later");
        }
    }

    /// One round: claim, publish, complete. Returns how many entries were relayed.
    pub async fn relay_once(&self) -> Result<usize> {
        let mut published = Vec::new();
        let relayed = self.relay_round(&mut published).await?;
        if !published.is_empty() {
            self.outbox.complete(&published).await?;
        }
        Ok(relayed)
    }

    /// Completes `published` (the previous round's entries) and claims new ones in one call,
    /// publishes those and leaves their seqs in `published` for the next round. A failed
    /// round keeps what it had to complete.
    async fn relay_round(&self, published: &mut Vec<u64>) -> Result<usize> {
        let entries = self
            .outbox
            .complete_and_claim(
                published,
                &self.config.claimer,
                self.config.batch,
                self.config.claim_for,
            )
            .await?;
        published.clear();
        if entries.is_empty() {
            return Ok(0);
        }
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        // All or none: after a failure every entry is published again later (duplicates are
        // harmless hints), never lost.
        self.bus
            .publish_all(entries.into_iter().map(|e| e.notification).collect())
            .await?;
        *published = seqs;
        Ok(published.len())
    }
}
