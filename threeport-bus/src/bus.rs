//! [`NatsBus`]: notifications on JetStream work-queue streams.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use async_trait::async_trait;
use futures::stream::{SelectAll, StreamExt};
use threeport_core::object::validate_kind;
use threeport_core::{
    Bus, Delivery, DeliveryHandle, Error, Notification, Result, SubscribeOptions, Subscription,
};

use crate::{NatsConfig, nats_error};

/// The [`Bus`] on NATS JetStream. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NatsBus {
    js: Context,
    config: NatsConfig,
    /// Streams this process has already made sure of.
    ensured: Arc<Mutex<HashSet<String>>>,
}

impl NatsBus {
    /// A bus on an open connection.
    pub fn new(client: async_nats::Client, config: NatsConfig) -> Self {
        NatsBus {
            js: jetstream::new(client),
            config,
            ensured: Arc::default(),
        }
    }

    fn stream_name(&self, kind: &str) -> String {
        format!("{}_{kind}", self.config.prefix.to_ascii_uppercase())
    }

    fn notify_subject(&self, kind: &str, id: impl std::fmt::Display) -> String {
        format!("{}.notify.{kind}.{id}", self.config.prefix)
    }

    fn schedule_subject(&self, kind: &str, id: impl std::fmt::Display) -> String {
        format!("{}.schedule.{kind}.{id}", self.config.prefix)
    }

    /// Creates the kind's stream if missing, once per process; refuses one whose
    /// configuration differs.
    async fn ensure_stream(&self, kind: &str) -> Result<()> {
        let name = self.stream_name(kind);
        if self.ensured.lock().unwrap().contains(&name) {
            return Ok(());
        }
        let wanted = stream::Config {
            name: name.clone(),
            subjects: vec![
                format!("{}.notify.{kind}.>", self.config.prefix),
                format!("{}.schedule.{kind}.>", self.config.prefix),
            ],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            num_replicas: self.config.replicas,
            allow_message_schedules: true,
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
            if found.retention != wanted.retention
                || found.storage != wanted.storage
                || found.subjects != wanted.subjects
                || !found.allow_message_schedules
            {
                return Err(Error::conflict(format!(
                    "stream {name} exists with another configuration (retention {:?}, storage {:?}, \
                     subjects {:?}, schedules {}); threeport needs work-queue retention, file \
                     storage, subjects {:?} and message schedules",
                    found.retention,
                    found.storage,
                    found.subjects,
                    found.allow_message_schedules,
                    wanted.subjects
                )));
            }
        }
        self.ensured.lock().unwrap().insert(name);
        Ok(())
    }

    async fn consumer(&self, kind: &str, options: &SubscribeOptions) -> Result<PullConsumer> {
        self.ensure_stream(kind).await?;
        let stream = self
            .js
            .get_stream(self.stream_name(kind))
            .await
            .map_err(|e| nats_error(&format!("opening the stream of {kind}"), e))?;
        let max_deliver = options.max_deliveries.map_or(-1, i64::from);
        let filter = format!("{}.notify.{kind}.>", self.config.prefix);
        if let Ok(existing) = stream.consumer_info(&options.group).await {
            let c = &existing.config;
            if c.ack_wait != options.ack_wait
                || c.max_deliver != max_deliver
                || c.filter_subject != filter
            {
                return Err(Error::conflict(format!(
                    "consumer {} on {kind} exists with ack_wait {:?}, max_deliver {} (asked for {:?}, {})",
                    options.group, c.ack_wait, c.max_deliver, options.ack_wait, max_deliver
                )));
            }
        }
        let config = pull::Config {
            durable_name: Some(options.group.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_deliver,
            filter_subject: filter,
            ..Default::default()
        };
        stream
            .get_or_create_consumer(&options.group, config)
            .await
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("10100") || text.to_ascii_lowercase().contains("not unique") || text.contains("10099") {
                    Error::conflict(format!(
                        "kind {kind} is already consumed by another group; a kind has one consumer group ({text})"
                    ))
                } else {
                    nats_error(&format!("creating consumer {} on {kind}", options.group), e)
                }
            })
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, notification: Notification) -> Result<()> {
        validate_kind(&notification.kind)?;
        self.ensure_stream(&notification.kind).await?;
        let subject = self.notify_subject(&notification.kind, notification.id);
        let payload = serde_json::to_vec(&notification).map_err(Error::backend)?;
        self.js
            .publish(subject, payload.into())
            .await
            .map_err(|e| nats_error("publishing", e))?
            .await
            .map_err(|e| nats_error("publish acknowledgement", e))?;
        Ok(())
    }

    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Subscription>> {
        options.validate()?;
        let mut streams = SelectAll::new();
        for kind in &options.kinds {
            let consumer = self.consumer(kind, &options).await?;
            let messages = consumer
                .messages()
                .await
                .map_err(|e| nats_error(&format!("pulling from {kind}"), e))?;
            streams.push(messages);
        }
        Ok(Box::new(NatsSubscription {
            bus: self.clone(),
            messages: streams,
        }))
    }
}

/// A member of a consumer group: pulls messages from the group's consumers.
struct NatsSubscription {
    bus: NatsBus,
    messages: SelectAll<async_nats::jetstream::consumer::pull::Stream>,
}

impl std::fmt::Debug for NatsSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSubscription").finish_non_exhaustive()
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Result<Option<Delivery>> {
        loop {
            let message = match self.messages.next().await {
                None => return Ok(None),
                Some(Err(err)) => {
                    // Heartbeat gaps and reconnects surface here; the pull stream recovers.
                    tracing::debug!(error = %err, "pull stream hiccup");
                    continue;
                }
                Some(Ok(message)) => message,
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
