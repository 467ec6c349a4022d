//! [`NatsBus`]: notifications on JetStream work-queue streams, consumed by partition.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use async_trait::async_trait;
use futures::StreamExt;
use threeport_core::object::validate_kind;
use threeport_core::{
    Bus, Delivery, DeliveryHandle, Error, Notification, ObjectId, Result, SubscribeOptions,
    Subscription,
};
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::partition::{
    self, Member, PartitionLocker, Pending, Pulled, Registry, belongs_to, consumer_name,
    partition_of, unknown_group_error,
};
use crate::{NatsConfig, NatsLocker, nats_error};

/// Stream metadata key recording the partition count the subjects were laid out with.
const PARTITIONS_METADATA: &str = "threeport.partitions";

/// The [`Bus`] on NATS JetStream. Cheap to clone.
///
/// Subscriptions consume by partition (see [`NatsConfig::partitions`]): pair the bus with
/// [`NatsBus::locker`] so per-object leases cost no NATS round trip.
#[derive(Debug, Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    js: Context,
    config: NatsConfig,
    /// Streams this process has already made sure of.
    ensured: Arc<Mutex<HashSet<String>>>,
    leases: Arc<OnceCell<NatsLocker>>,
    registry: Registry,
}

impl NatsBus {
    /// A bus on an open connection.
    pub fn new(client: async_nats::Client, config: NatsConfig) -> Self {
        NatsBus {
            js: jetstream::new(client.clone()),
            client,
            config,
            ensured: Arc::default(),
            leases: Arc::default(),
            registry: Registry::default(),
        }
    }

    /// The per-object [`Locker`](threeport_core::Locker) to run controllers with on this bus:
    /// it grants an object's lease from the partition this process holds, with no NATS
    /// round trip, and falls back to a [`NatsLocker`] for other keys.
    pub async fn locker(&self) -> Result<PartitionLocker> {
        Ok(PartitionLocker::new(
            self.registry.clone(),
            self.config.partitions,
            self.leases().await?.clone(),
        ))
    }

    /// The partitions of `kind` this process's subscriptions hold now (diagnostics, tests).
    pub fn held_partitions(&self, kind: &str) -> Vec<u16> {
        self.registry.held_partitions(kind)
    }

    /// The partitions of `kind` this process's subscriptions should hold by the membership
    /// they last saw (rendezvous hashing may give a subscription none); once every process
    /// holds what it wants, ownership has settled (diagnostics, tests).
    pub fn wanted_partitions(&self, kind: &str) -> Vec<u16> {
        self.registry.wanted_partitions(kind)
    }

    async fn leases(&self) -> Result<&NatsLocker> {
        self.leases
            .get_or_try_init(|| NatsLocker::new(self.client.clone(), &self.config))
            .await
    }

    fn stream_name(&self, kind: &str, flavor: Flavor) -> String {
        let prefix = self.config.prefix.to_ascii_uppercase();
        match flavor {
            Flavor::Hints => format!("{prefix}_{kind}"),
            Flavor::Secrets => format!("{prefix}_SECRETS_{kind}"),
        }
    }

    fn secret_subject(&self, kind: &str, id: ObjectId) -> String {
        let partition = partition_of(id, self.config.partitions);
        format!("{}.secret.{kind}.{partition}.{id}", self.config.prefix)
    }

    fn notify_subject(&self, kind: &str, id: ObjectId) -> String {
        let partition = partition_of(id, self.config.partitions);
        format!("{}.notify.{kind}.{partition}.{id}", self.config.prefix)
    }

    fn schedule_subject(&self, kind: &str, id: ObjectId) -> String {
        let partition = partition_of(id, self.config.partitions);
        format!("{}.schedule.{kind}.{partition}.{id}", self.config.prefix)
    }

    /// Creates the kind's stream of `flavor` if missing, once per process; refuses one whose
    /// configuration differs.
    async fn ensure_stream(&self, kind: &str, flavor: Flavor) -> Result<()> {
        let name = self.stream_name(kind, flavor);
        if self.ensured.lock().unwrap().contains(&name) {
            return Ok(());
        }
        self.config.validate()?;
        let partitions = self.config.partitions.to_string();
        let prefix = &self.config.prefix;
        let (subjects, storage, schedules) = match flavor {
            Flavor::Hints => (
                vec![
                    format!("{prefix}.notify.{kind}.>"),
                    format!("{prefix}.schedule.{kind}.>"),
                ],
                StorageType::File,
                true,
            ),
            // Secret values never touch the disk of any server.
            Flavor::Secrets => (
                vec![format!("{prefix}.secret.{kind}.>")],
                StorageType::Memory,
                false,
            ),
        };
        let wanted = stream::Config {
            name: name.clone(),
            subjects,
            retention: RetentionPolicy::WorkQueue,
            storage,
            num_replicas: self.config.replicas,
            allow_message_schedules: schedules,
            metadata: [(PARTITIONS_METADATA.to_owned(), partitions.clone())].into(),
            ..Default::default()
        };
        let mut stream = self
            .js
            .get_or_create_stream(wanted.clone())
            .await
            .map_err(|e| nats_error(&format!("creating stream {name}"), e))?;
        {
            let info = stream
                .info()
                .await
                .map_err(|e| nats_error(&format!("reading stream {name}"), e))?;
            let found = &info.config;
            let found_partitions = found.metadata.get(PARTITIONS_METADATA);
            if found.retention != wanted.retention
                || found.storage != wanted.storage
                || found.subjects != wanted.subjects
                || found.allow_message_schedules != wanted.allow_message_schedules
                || found_partitions != Some(&partitions)
            {
                return Err(Error::conflict(format!(
                    "stream {name} exists with another configuration (retention {:?}, storage {:?}, \
                     subjects {:?}, schedules {}, partitions {}); threeport needs work-queue \
                     retention, {:?} storage, subjects {:?}, schedules {} and {partitions} \
                     partitions",
                    found.retention,
                    found.storage,
                    found.subjects,
                    found.allow_message_schedules,
                    found_partitions.map_or("unset", String::as_str),
                    wanted.storage,
                    wanted.subjects,
                    wanted.allow_message_schedules,
                )));
            }
        }
        self.ensured.lock().unwrap().insert(name);
        Ok(())
    }

    /// Makes the next [`ensure_stream`](Self::ensure_stream) of the kind's stream ask the
    /// server again.
    fn forget_stream(&self, kind: &str, flavor: Flavor) {
        let name = self.stream_name(kind, flavor);
        self.ensured.lock().unwrap().remove(&name);
    }

    /// The kind's partition consumers for the group, created where missing: for each
    /// partition, one on the hints stream and one on the secrets stream. Refuses other groups
    /// and mismatched configurations.
    async fn consumers(
        &self,
        kind: &str,
        options: &SubscribeOptions,
    ) -> Result<Vec<Vec<PullConsumer>>> {
        let mut consumers: Vec<Vec<PullConsumer>> =
            vec![Vec::new(); usize::from(self.config.partitions)];
        for flavor in FLAVORS {
            for (partition, consumer) in self
                .flavor_consumers(kind, flavor, options)
                .await?
                .into_iter()
                .enumerate()
            {
                consumers[partition].push(consumer);
            }
        }
        Ok(consumers)
    }

    async fn flavor_consumers(
        &self,
        kind: &str,
        flavor: Flavor,
        options: &SubscribeOptions,
    ) -> Result<Vec<PullConsumer>> {
        // Subscribing is rare: check the stream on the server every time (a memory stream
        // does not survive a server restart).
        self.forget_stream(kind, flavor);
        self.ensure_stream(kind, flavor).await?;
        let stream = self
            .js
            .get_stream(self.stream_name(kind, flavor))
            .await
            .map_err(|e| nats_error(&format!("opening the stream of {kind}"), e))?;
        let mut names = stream.consumer_names();
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| nats_error(&format!("listing consumers of {kind}"), e))?;
            if !belongs_to(&name, &options.group) {
                return Err(unknown_group_error(kind, &name));
            }
        }
        let mut consumers = Vec::with_capacity(usize::from(self.config.partitions));
        for partition in 0..self.config.partitions {
            consumers.push(
                self.partition_consumer(&stream, kind, flavor, partition, options)
                    .await?,
            );
        }
        Ok(consumers)
    }
}

impl NatsBus {
    /// One partition's consumer for the group on `stream`, created if missing; refuses one
    /// configured otherwise.
    async fn partition_consumer(
        &self,
        stream: &stream::Stream,
        kind: &str,
        flavor: Flavor,
        partition: u16,
        options: &SubscribeOptions,
    ) -> Result<PullConsumer> {
        let max_deliver = options.max_deliveries.map_or(-1, i64::from);
        let topic = match flavor {
            Flavor::Hints => "notify",
            Flavor::Secrets => "secret",
        };
        let name = consumer_name(&options.group, partition);
        let filter = format!("{}.{topic}.{kind}.{partition}.>", self.config.prefix);
        if let Ok(existing) = stream.consumer_info(&name).await {
            let c = &existing.config;
            if c.ack_wait != options.ack_wait
                || c.max_deliver != max_deliver
                || c.filter_subject != filter
            {
                return Err(Error::conflict(format!(
                    "consumer {name} on {kind} exists with ack_wait {:?}, max_deliver {} \
                     (asked for {:?}, {max_deliver})",
                    c.ack_wait, c.max_deliver, options.ack_wait
                )));
            }
        }
        let config = pull::Config {
            durable_name: Some(name.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_deliver,
            filter_subject: filter,
            ..Default::default()
        };
        stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| {
                let text = e.to_string();
                // Overlapping filters: another group raced us to the kind.
                if text.contains("10100") || text.to_ascii_lowercase().contains("overlap") {
                    unknown_group_error(kind, &text)
                } else {
                    nats_error(&format!("creating consumer {name} on {kind}"), e)
                }
            })
    }

    /// A partition's consumer made again, with its stream if that is gone too: what a memory
    /// stream needs after a server restart.
    async fn reopen_consumer(
        &self,
        kind: &str,
        flavor: Flavor,
        partition: u16,
        options: &SubscribeOptions,
    ) -> Result<PullConsumer> {
        self.forget_stream(kind, flavor);
        self.ensure_stream(kind, flavor).await?;
        let stream = self
            .js
            .get_stream(self.stream_name(kind, flavor))
            .await
            .map_err(|e| nats_error(&format!("opening the stream of {kind}"), e))?;
        self.partition_consumer(&stream, kind, flavor, partition, options)
            .await
    }
}

/// The flavors of a partition's consumers, in the order [`NatsBus::consumers`] lists them.
const FLAVORS: [Flavor; 2] = [Flavor::Hints, Flavor::Secrets];

/// The two streams of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// Plain notifications (hints): file storage, survive restarts.
    Hints,
    /// Notifications carrying secret values: memory storage only.
    Secrets,
}

impl NatsBus {
    /// Whether the kind's stream holds a notification or a scheduled requeue for the object
    /// (a work-queue stream keeps a message until it is acked, so in flight counts too).
    async fn holds(&self, kind: &str, id: ObjectId) -> Result<bool> {
        self.ensure_stream(kind, Flavor::Hints).await?;
        let stream = self
            .js
            .get_stream(self.stream_name(kind, Flavor::Hints))
            .await
            .map_err(|e| nats_error(&format!("opening the stream of {kind}"), e))?;
        for subject in [
            self.notify_subject(kind, id),
            self.schedule_subject(kind, id),
        ] {
            match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(_) => return Ok(true),
                Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
                Err(err) => return Err(nats_error("looking for a queued notification", err)),
            }
        }
        Ok(false)
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish_missing(&self, notifications: Vec<Notification>) -> Result<()> {
        for notification in notifications {
            validate_kind(&notification.kind)?;
            if notification.secret.is_none()
                && self.holds(&notification.kind, notification.id).await?
            {
                continue;
            }
            self.publish(notification).await?;
        }
        Ok(())
    }

    async fn publish(&self, notification: Notification) -> Result<()> {
        self.publish_all(vec![notification]).await
    }

    /// Sends every publish before waiting for any acknowledgement: one round trip for the
    /// batch instead of one per notification (the outbox relay publishes up to 256 at once).
    async fn publish_all(&self, notifications: Vec<Notification>) -> Result<()> {
        let mut pending = Vec::with_capacity(notifications.len());
        for notification in &notifications {
            validate_kind(&notification.kind)?;
            let (flavor, subject) = if notification.secret.is_some() {
                let subject = self.secret_subject(&notification.kind, notification.id);
                (Flavor::Secrets, subject)
            } else {
                let subject = self.notify_subject(&notification.kind, notification.id);
                (Flavor::Hints, subject)
            };
            self.ensure_stream(&notification.kind, flavor).await?;
            let payload = serde_json::to_vec(notification).map_err(Error::backend)?;
            match self.js.publish(subject, payload.into()).await {
                Ok(ack) => pending.push((&notification.kind, flavor, ack)),
                Err(err) => {
                    self.forget_stream(&notification.kind, flavor);
                    return Err(nats_error("publishing", err));
                }
            }
        }
        for (kind, flavor, ack) in pending {
            if let Err(err) = ack.await {
                // The stream may be gone (a memory stream after a server restart): check it
                // again before the next publish.
                self.forget_stream(kind, flavor);
                return Err(nats_error("publish acknowledgement", err));
            }
        }
        Ok(())
    }

    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Subscription>> {
        options.validate()?;
        let leases = self.leases().await?.clone();
        let (tx, rx) = mpsc::channel(64);
        let stop = CancellationToken::new();
        for kind in &options.kinds {
            let consumers = self.consumers(kind, &options).await?;
            let member = Arc::new(Member::new(
                kind,
                self.config.partitions,
                self.config.partition_ttl,
                leases.clone(),
            ));
            self.registry.add(&member);
            let (bus, kind_name, subscribed) = (self.clone(), kind.clone(), options.clone());
            let reopen: partition::Reopen = Arc::new(move |partition, index| {
                let (bus, kind, options) = (bus.clone(), kind_name.clone(), subscribed.clone());
                Box::pin(async move {
                    bus.reopen_consumer(&kind, FLAVORS[index], partition, &options)
                        .await
                })
            });
            tokio::spawn(partition::run_member(
                member,
                consumers,
                reopen,
                tx.clone(),
                stop.child_token(),
            ));
        }
        Ok(Box::new(NatsSubscription {
            bus: self.clone(),
            messages: rx,
            _stop: stop.drop_guard(),
        }))
    }
}

/// A member of a consumer group: receives the messages of the partitions it holds. Dropping
/// it hands those partitions back once its deliveries are settled.
struct NatsSubscription {
    bus: NatsBus,
    messages: mpsc::Receiver<Pulled>,
    _stop: DropGuard,
}

impl std::fmt::Debug for NatsSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSubscription").finish_non_exhaustive()
    }
}

impl Drop for NatsSubscription {
    fn drop(&mut self) {
        // Messages pulled but never handed out go back now instead of after the ack-wait.
        self.messages.close();
        let mut left = Vec::new();
        while let Ok(pulled) = self.messages.try_recv() {
            left.push(pulled);
        }
        if !left.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                for pulled in left {
                    partition::nak(&pulled.message).await;
                }
            });
        }
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Result<Option<Delivery>> {
        loop {
            let Some(Pulled { message, pending }) = self.messages.recv().await else {
                return Ok(None);
            };
            let info = message
                .info()
                .map_err(|e| nats_error("reading message info", e))?;
            let attempt = u32::try_from(info.delivered).unwrap_or(u32::MAX).max(1);
            let due_at = SystemTime::from(info.published);
            let notification: Notification = match serde_json::from_slice(&message.payload) {
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!(error = %err, subject = %message.subject, "dropping a malformed notification");
                    if let Err(err) = message.ack_with(AckKind::Term).await {
                        tracing::debug!(error = %err, "terminating a malformed notification failed");
                    }
                    continue;
                }
            };
            let (_, acker) = message.split();
            let handle = NatsDelivery {
                bus: self.bus.clone(),
                acker,
                notification: notification.clone(),
                _pending: pending,
            };
            return Ok(Some(Delivery::new(
                notification,
                attempt,
                due_at,
                Box::new(handle),
            )));
        }
    }
}

struct NatsDelivery {
    bus: NatsBus,
    acker: Acker,
    notification: Notification,
    /// Keeps the partition from being handed over until this delivery is gone.
    _pending: Pending,
}

impl std::fmt::Debug for NatsDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsDelivery")
            .field("notification", &self.notification)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl DeliveryHandle for NatsDelivery {
    async fn ack(&self) -> Result<()> {
        self.acker.ack().await.map_err(|e| nats_error("ack", e))
    }

    async fn requeue_after(&self, delay: Duration) -> Result<()> {
        let n = &self.notification;
        if n.secret.is_some() {
            // A schedule would write the secret to the file stream: hold it back in the
            // memory stream instead (this counts as a delivery attempt).
            let delay = (!delay.is_zero()).then_some(delay);
            return self
                .acker
                .ack_with(AckKind::Nak(delay))
                .await
                .map_err(|e| nats_error("requeue", e));
        }
        let payload = serde_json::to_vec(n).map_err(Error::backend)?;
        let target = self.bus.notify_subject(&n.kind, n.id);
        let published = if delay.is_zero() {
            self.bus.js.publish(target, payload.into()).await
        } else {
            // A one-shot schedule: the server publishes a fresh copy after the delay. One
            // schedule per object subject, so a newer requeue replaces an older one.
            let at = chrono::Utc::now()
                + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Schedule",
                format!(
                    "@at {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                )
                .as_str(),
            );
            headers.insert("Nats-Schedule-Target", target.as_str());
            let subject = self.bus.schedule_subject(&n.kind, n.id);
            self.bus
                .js
                .publish_with_headers(subject, headers, payload.into())
                .await
        };
        published
            .map_err(|e| nats_error("publishing the requeue", e))?
            .await
            .map_err(|e| nats_error("requeue acknowledgement", e))?;
        self.acker
            .ack()
            .await
            .map_err(|e| nats_error("ack after requeue", e))
    }

    async fn in_progress(&self) -> Result<()> {
        self.acker
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| nats_error("in-progress", e))
    }
}
