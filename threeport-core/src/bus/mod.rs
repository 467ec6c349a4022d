//! The notification bus: [`Notification`] hints, the [`Bus`] trait with competing-consumer
//! [`Subscription`]s and explicitly settled [`Delivery`]s, and the in-memory [`MemoryBus`].
//!
//! Notifications are hints (`kind`, `id`, `operation`, `version`), never payloads: the receiver
//! always loads the current object, so duplicates and stale notifications are harmless. The one
//! exception is [`SecretValues`]: secret data that must reach a controller without ever being
//! stored. Such a notification is published straight to the bus (not through the outbox), and
//! buses keep it in memory only.

mod memory;

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use memory::MemoryBus;

use crate::error::Result;
use crate::object::ObjectId;

/// What happened to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// The object was created.
    Created,
    /// Its desired state changed.
    Updated,
    /// Its deletion was scheduled.
    Deleted,
    /// A controller's resync found it waiting for a reconcile (a notification may have been
    /// lost). The runtime reconciles it only if it still waits when the delivery arrives.
    Resync,
    /// An object it follows changed ([`Relation`](crate::Relation)): reconciled even if it
    /// is settled, since what it depends on moved.
    Related,
    /// An object of a kind this kind follows through a mapping function
    /// ([`Via::Mapped`](crate::Via::Mapped)) changed: the notification names *that* object
    /// (its `kind` is the follower's, for routing). The follower's runtime maps it with the
    /// function and notifies the objects it names (`Related`); nothing is reconciled for it.
    Followed,
}

/// A hint that an object needs reconciling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Notification {
    /// Object kind.
    pub kind: String,
    /// Object id.
    pub id: ObjectId,
    /// What happened.
    pub operation: Operation,
    /// The object version the change produced.
    pub version: u64,
    /// Secret values for the controller, if this notification carries them. Buses keep such
    /// notifications in memory only (never on disk); see [`Notification::with_secret`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretValues>,
}

impl Notification {
    /// A hint with no secret.
    pub fn new(kind: impl Into<String>, id: ObjectId, operation: Operation, version: u64) -> Self {
        Notification {
            kind: kind.into(),
            id,
            operation,
            version,
            secret: None,
        }
    }

    /// The same notification carrying `secret`.
    pub fn with_secret(mut self, secret: SecretValues) -> Self {
        self.secret = Some(secret);
        self
    }
}

/// Secret key/value data travelling with a [`Notification`]. Its `Debug` output names the keys
/// and hides the values, so it cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValues(pub std::collections::BTreeMap<String, String>);

impl fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

/// How a consumer group receives notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeOptions {
    /// Durable group name: the members of a group compete for its notifications.
    pub group: String,
    /// Kinds the group receives (at least one).
    pub kinds: Vec<String>,
    /// An un-settled delivery is redelivered after this long (extended by `in_progress`).
    pub ack_wait: Duration,
    /// Deliveries of one notification before the bus gives up on it (dead letter).
    /// `None`: no bound at the bus (the controller runtime enforces its own, lower bound).
    pub max_deliveries: Option<u32>,
}

impl SubscribeOptions {
    /// Options for `group` receiving `kind`, with a 30 s ack-wait and no bus-side bound.
    pub fn new(group: impl Into<String>, kind: impl Into<String>) -> Self {
        SubscribeOptions {
            group: group.into(),
            kinds: vec![kind.into()],
            ack_wait: Duration::from_secs(30),
            max_deliveries: None,
        }
    }
}

impl SubscribeOptions {
    /// Checks the options every bus refuses: no kinds, a malformed kind, a group name outside
    /// 1-128 ASCII letters, digits, `-` and `_` (what JetStream accepts as a consumer name), or a
    /// zero ack-wait.
    pub fn validate(&self) -> Result<()> {
        if self.kinds.is_empty() {
            return Err(crate::Error::invalid(
                "kinds",
                "at least one kind is required",
            ));
        }
        for kind in &self.kinds {
            crate::object::validate_kind(kind)?;
        }
        let group_ok = !self.group.is_empty()
            && self.group.len() <= 128
            && self
                .group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !group_ok {
            return Err(crate::Error::invalid(
                "group",
                format!(
                    "{:?} must be 1-128 ASCII letters, digits, '-' or '_'",
                    self.group
                ),
            ));
        }
        if self.ack_wait.is_zero() {
            return Err(crate::Error::invalid("ack_wait", "must be positive"));
        }
        Ok(())
    }
}

/// A notification transport with work-queue semantics.
///
/// Contract (checked by [`conformance::bus`](crate::conformance::bus)):
/// - a kind belongs to one consumer group (work-queue semantics): subscribing a second group
///   to it answers `Conflict`; members of the group compete, each notification going to one
///   member at a time;
/// - notifications published before the first subscription of a group for that kind are kept
///   and delivered once it subscribes;
/// - a delivery not settled within `ack_wait` (or after `in_progress`, the renewed ack-wait) is
///   redelivered with a higher `attempt`;
/// - `requeue_after(d)` redelivers no earlier than `d` later and starts the attempt count anew;
/// - a bus may coalesce pending (not in-flight) notifications of the same object, keeping the
///   earliest due time.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Bus: Send + Sync + fmt::Debug + 'static {
    /// Publishes a notification; returns once the bus has accepted it durably.
    async fn publish(&self, notification: Notification) -> Result<()>;

    /// Publishes several notifications; returns once the bus has accepted all of them
    /// durably. After an error some may have been published (a duplicate is harmless: they
    /// are hints). The default publishes one by one; buses that can batch do (the SQL bus
    /// writes them in one transaction).
    async fn publish_all(&self, notifications: Vec<Notification>) -> Result<()> {
        for notification in notifications {
            self.publish(notification).await?;
        }
        Ok(())
    }

    /// Publishes those of `notifications` whose object has no notification queued or in
    /// flight, as far as the bus can tell; for a controller's resync, a safety net for lost
    /// notifications. Skipping objects the bus already holds keeps their delivery count, so
    /// a notification that crashes its controller every time is still stopped by the
    /// delivery bound. The default publishes them all (duplicates are harmless).
    async fn publish_missing(&self, notifications: Vec<Notification>) -> Result<()> {
        self.publish_all(notifications).await
    }

    /// Joins (creating if needed) the consumer group described by `options`.
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Subscription>>;
}

/// One member of a consumer group.
#[async_trait]
pub trait Subscription: Send + fmt::Debug {
    /// The next delivery, waiting for one. `Ok(None)` once the bus was closed.
    async fn next(&mut self) -> Result<Option<Delivery>>;
}

/// A received notification that must be settled: [`ack`](Delivery::ack) when done,
/// [`requeue_after`](Delivery::requeue_after) to see it again later. Dropping it unsettled means
/// redelivery after ack-wait.
#[derive(Debug)]
pub struct Delivery {
    /// The notification.
    pub notification: Notification,
    /// 1 for the first delivery, counting redeliveries since the last publish or requeue.
    pub attempt: u32,
    /// When the notification became due (published, or its requeue delay ran out).
    pub due_at: SystemTime,
    handle: Box<dyn DeliveryHandle>,
}

impl Delivery {
    /// Wraps a backend's settlement handle. For bus implementations.
    pub fn new(
        notification: Notification,
        attempt: u32,
        due_at: SystemTime,
        handle: Box<dyn DeliveryHandle>,
    ) -> Self {
        Delivery {
            notification,
            attempt,
            due_at,
            handle,
        }
    }

    /// Done: the notification is removed.
    pub async fn ack(self) -> Result<()> {
        self.handle.ack().await
    }

    /// Redeliver no earlier than `delay` from now (to any member of the group).
    pub async fn requeue_after(self, delay: Duration) -> Result<()> {
        self.handle.requeue_after(delay).await
    }

    /// Still working: restart the ack-wait timer.
    pub async fn in_progress(&self) -> Result<()> {
        self.handle.in_progress().await
    }
}

/// Backend side of a [`Delivery`]'s settlement. Settling a delivery that was already
/// redelivered elsewhere (its ack-wait ran out) answers `Conflict`.
#[async_trait]
pub trait DeliveryHandle: Send + Sync + fmt::Debug {
    /// See [`Delivery::ack`].
    async fn ack(&self) -> Result<()>;
    /// See [`Delivery::requeue_after`].
    async fn requeue_after(&self, delay: Duration) -> Result<()>;
    /// See [`Delivery::in_progress`].
    async fn in_progress(&self) -> Result<()>;
}
