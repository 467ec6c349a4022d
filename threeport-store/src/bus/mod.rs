//! [`SqlBus`]: a durable [`Bus`] in the SQL database itself, for control planes without NATS
//! (the embedded default on SQLite, or PostgreSQL/CockroachDB alone).
//!
//! A notification is a row of `threeport_queue` from its publish until a controller acks the
//! reconcile it caused: a crash, a `kill -9` or a clean stop loses nothing, and a requeue is a
//! row with a later visibility time, so it survives a restart too. A delivery hides its row
//! for the ack-wait (heartbeats extend it); an unsettled one becomes visible again with its
//! attempt counted. New notifications fold into the object's row that has not been delivered
//! yet (earliest deadline wins). Several processes may share the queue (claims skip rows
//! others hold), each learning of the others' writes by polling.
//!
//! Secret-carrying notifications never touch the database: they travel through an in-memory
//! bus inside this one, so they reach only controllers in the publishing process (run the API
//! and the controllers in one process, `serve`, or use NATS to share them between processes).

mod postgres;
mod sqlite;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::FutureExt as _;
use threeport_core::{
    Bus, Delivery, DeliveryHandle, Error, MemoryBus, Notification, Result, SubscribeOptions,
    Subscription,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::{PgStore, SqliteStore};

/// Settings of a [`SqlBus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlBusConfig {
    /// Longest a subscription waits before looking at the queue again when nothing in this
    /// process woke it (notifications other processes published).
    pub poll_interval: Duration,
    /// Rows one look claims at most; a subscription hands them out one by one.
    pub batch: usize,
}

impl Default for SqlBusConfig {
    fn default() -> Self {
        SqlBusConfig {
            poll_interval: Duration::from_secs(1),
            batch: 8,
        }
    }
}

/// A claimed queue row, as a backend returns it.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub seq: i64,
    pub token: i64,
    pub notification: Notification,
    pub attempt: u32,
    pub due_at: SystemTime,
}

/// The SQL of one database dialect.
#[async_trait]
pub(crate) trait Queue: Send + Sync + std::fmt::Debug + 'static {
    /// Adds notifications (none carries a secret), folding each into its object's row that
    /// was not delivered yet; one transaction. With `only_missing`, a notification whose
    /// object has any row (delivered or not) is dropped instead.
    async fn insert(&self, notifications: &[Notification], only_missing: bool) -> Result<()>;
    /// Deletes visible rows of `kinds` delivered `max_deliveries` times already (returning
    /// them), then claims up to `limit` visible rows for `ack_wait`, earliest first.
    async fn claim(
        &self,
        kinds: &[String],
        limit: usize,
        ack_wait: Duration,
        max_deliveries: Option<u32>,
    ) -> Result<(Vec<Claimed>, Vec<Claimed>)>;
    /// Deletes a delivered row if `token` still holds it.
    async fn ack(&self, seq: i64, token: i64) -> Result<bool>;
    /// Makes a delivered row visible after `delay` as a fresh attempt (folding it into the
    /// object's undelivered row if there is one), if `token` still holds it.
    async fn requeue(&self, seq: i64, token: i64, delay: Duration) -> Result<bool>;
    /// Pushes a delivered row's ack deadline to `ack_wait` from now, if `token` holds it.
    async fn extend(&self, seq: i64, token: i64, ack_wait: Duration) -> Result<bool>;
    /// Hands claimed rows that were never handed out back, as if never claimed.
    async fn unclaim(&self, claims: &[(i64, i64)]) -> Result<()>;
    /// Time until the earliest row of `kinds` becomes visible (zero if one is), if any.
    async fn next_visible(&self, kinds: &[String]) -> Result<Option<Duration>>;
}

/// A durable bus in the SQL database: a notification is a row of `threeport_queue` from its
/// publish until the reconcile it caused is acked, so a crash, a `kill -9` or a stop loses
/// nothing.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use threeport_core::{Bus, Notification, ObjectId, Operation, SubscribeOptions};
/// use threeport_store::{SqlBus, SqliteStore, ConnectOptions};
///
/// let store = SqliteStore::connect("sqlite::memory:", &ConnectOptions::default()).await?;
/// let bus = SqlBus::sqlite(&store);
/// let mut sub = bus.subscribe(SubscribeOptions::new("widgets", "Widget")).await?;
/// let id = ObjectId::new();
/// bus.publish(Notification::new("Widget", id, Operation::Created, 1)).await?;
/// let delivery = sub.next().await?.expect("open");
/// assert_eq!(delivery.notification.id, id);
/// delivery.ack().await?; // only now is the row gone
/// # Ok::<(), threeport_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct SqlBus {
    queue: Arc<dyn Queue>,
    /// Secret-carrying notifications, in memory only; also keeps the groups of this process
    /// (one consumer group per kind, the same options for every member).
    secrets: MemoryBus,
    /// Woken by this process's publishes and requeues.
    wake: Arc<Notify>,
    config: SqlBusConfig,
}

impl SqlBus {
    /// The bus in `store`'s SQLite database.
    pub fn sqlite(store: &SqliteStore) -> Self {
        Self::on(Arc::new(sqlite::SqliteQueue::new(store.pool().clone())))
    }

    /// The bus in `store`'s PostgreSQL or CockroachDB database.
    pub fn postgres(store: &PgStore) -> Self {
        Self::on(Arc::new(postgres::PgQueue::new(store.pool().clone())))
    }

    fn on(queue: Arc<dyn Queue>) -> Self {
        SqlBus {
            queue,
            secrets: MemoryBus::new(),
            wake: Arc::new(Notify::new()),
            config: SqlBusConfig::default(),
        }
    }

    async fn publish_many(
        &self,
        notifications: Vec<Notification>,
        only_missing: bool,
    ) -> Result<()> {
        let (secret, plain): (Vec<_>, Vec<_>) =
            notifications.into_iter().partition(|n| n.secret.is_some());
        for notification in &plain {
            threeport_core::object::validate_kind(&notification.kind)?;
        }
        if !plain.is_empty() {
            self.queue.insert(&plain, only_missing).await?;
            self.wake.notify_waiters();
        }
        for notification in secret {
            self.secrets.publish(notification).await?;
        }
        Ok(())
    }

    /// Replaces the settings.
    pub fn with_config(mut self, config: SqlBusConfig) -> Self {
        self.config = config;
        self
    }
}

#[async_trait]
impl Bus for SqlBus {
    async fn publish(&self, notification: Notification) -> Result<()> {
        self.publish_all(vec![notification]).await
    }

    async fn publish_all(&self, notifications: Vec<Notification>) -> Result<()> {
        self.publish_many(notifications, false).await
    }

    async fn publish_missing(&self, notifications: Vec<Notification>) -> Result<()> {
        self.publish_many(notifications, true).await
    }

    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Subscription>> {
        // The memory bus checks the options and the one-group-per-kind rule for this process.
        let secrets = self.secrets.subscribe(options.clone()).await?;
        Ok(Box::new(SqlSubscription {
            queue: self.queue.clone(),
            wake: self.wake.clone(),
            config: self.config.clone(),
            options,
            secrets,
            claimed: VecDeque::new(),
            claiming: None,
        }))
    }
}

/// A member of a [`SqlBus`] consumer group. `next` is cancel-safe.
#[derive(Debug)]
struct SqlSubscription {
    queue: Arc<dyn Queue>,
    wake: Arc<Notify>,
    config: SqlBusConfig,
    options: SubscribeOptions,
    secrets: Box<dyn Subscription>,
    /// Claimed rows not handed out yet.
    claimed: VecDeque<Claimed>,
    /// A claim under way. It runs on its own task, so a caller that stops waiting for
    /// `next` (a `select!`) loses nothing: the next call picks its rows up.
    claiming: Option<JoinHandle<Result<ClaimResult>>>,
}

/// Rows dropped after too many deliveries, and rows claimed.
type ClaimResult = (Vec<Claimed>, Vec<Claimed>);

impl SqlSubscription {
    fn delivery(&self, claimed: Claimed) -> Delivery {
        Delivery::new(
            claimed.notification,
            claimed.attempt,
            claimed.due_at,
            Box::new(SqlDeliveryHandle {
                queue: self.queue.clone(),
                wake: self.wake.clone(),
                seq: claimed.seq,
                token: claimed.token,
                ack_wait: self.options.ack_wait,
            }),
        )
    }
}

#[async_trait]
impl Subscription for SqlSubscription {
    async fn next(&mut self) -> Result<Option<Delivery>> {
        loop {
            // Secret notifications first: they are few, and only in memory.
            if let Some(delivery) = self.secrets.next().now_or_never() {
                return delivery;
            }
            if let Some(claimed) = self.claimed.pop_front() {
                return Ok(Some(self.delivery(claimed)));
            }
            // Listen before looking, so a publish in between is not missed.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let claiming = self.claiming.get_or_insert_with(|| {
                let queue = self.queue.clone();
                let (kinds, batch) = (self.options.kinds.clone(), self.config.batch.max(1));
                let (ack_wait, max) = (self.options.ack_wait, self.options.max_deliveries);
                tokio::spawn(async move { queue.claim(&kinds, batch, ack_wait, max).await })
            });
            let claim = claiming.await;
            self.claiming = None;
            let (dead, claimed) =
                claim.map_err(|err| Error::backend(format!("claiming notifications: {err}")))??;
            for dead in dead {
                tracing::warn!(
                    group = %self.options.group,
                    kind = %dead.notification.kind,
                    id = %dead.notification.id,
                    deliveries = dead.attempt,
                    "notification exceeded max deliveries; dropped"
                );
            }
            if !claimed.is_empty() {
                self.claimed.extend(claimed);
                continue;
            }
            let wait = self
                .queue
                .next_visible(&self.options.kinds)
                .await?
                .map_or(self.config.poll_interval, |d| {
                    d.min(self.config.poll_interval)
                });
            tokio::select! {
                delivery = self.secrets.next() => return delivery,
                _ = &mut woken => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

impl Drop for SqlSubscription {
    /// Claimed rows never handed out go back at once instead of after the ack-wait.
    fn drop(&mut self) {
        let claiming = self.claiming.take();
        if self.claimed.is_empty() && claiming.is_none() {
            return;
        }
        let mut claims: Vec<(i64, i64)> = self.claimed.iter().map(|c| (c.seq, c.token)).collect();
        let queue = self.queue.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(Ok(Ok((_, late)))) = match claiming {
                    Some(claiming) => Some(claiming.await),
                    None => None,
                } {
                    claims.extend(late.iter().map(|c| (c.seq, c.token)));
                }
                if claims.is_empty() {
                    return;
                }
                if let Err(err) = queue.unclaim(&claims).await {
                    tracing::debug!(error = %err, "handing back claimed notifications failed; they return after the ack-wait");
                }
            });
        }
    }
}

/// Settles one delivered row.
#[derive(Debug)]
struct SqlDeliveryHandle {
    queue: Arc<dyn Queue>,
    wake: Arc<Notify>,
    seq: i64,
    token: i64,
    ack_wait: Duration,
}

fn no_longer_held() -> Error {
    Error::conflict("delivery is no longer held: its ack-wait ran out and it was redelivered")
}

#[async_trait]
impl DeliveryHandle for SqlDeliveryHandle {
    async fn ack(&self) -> Result<()> {
        if self.queue.ack(self.seq, self.token).await? {
            Ok(())
        } else {
            Err(no_longer_held())
        }
    }

    async fn requeue_after(&self, delay: Duration) -> Result<()> {
        if self.queue.requeue(self.seq, self.token, delay).await? {
            self.wake.notify_waiters();
            Ok(())
        } else {
            Err(no_longer_held())
        }
    }

    async fn in_progress(&self) -> Result<()> {
        if self
            .queue
            .extend(self.seq, self.token, self.ack_wait)
            .await?
        {
            Ok(())
        } else {
            Err(no_longer_held())
        }
    }
}
