//! [`MemoryBus`]: the in-process bus, on tokio's clock (so tests can pause time).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Object ids need no DoS-resistant hash.
type FastHash = foldhash::fast::RandomState;

use super::{Bus, Delivery, DeliveryHandle, Notification, SubscribeOptions, Subscription};
use crate::error::{Error, Result};
use crate::object::{ObjectId, validate_kind};

/// An in-process [`Bus`] with the same contract as the NATS JetStream bus: durable groups,
/// competing consumers, ack-wait redelivery, delayed requeue, coalescing of pending
/// notifications per object, and a dead-letter list for notifications past `max_deliveries`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use threeport_core::{Bus, MemoryBus, Notification, ObjectId, Operation, SubscribeOptions};
///
/// let bus = MemoryBus::new();
/// let mut sub = bus.subscribe(SubscribeOptions::new("widgets", "Widget")).await?;
/// let id = ObjectId::new();
/// bus.publish(Notification { kind: "Widget".into(), id, operation: Operation::Created, version: 1, secret: None }).await?;
///
/// let delivery = sub.next().await?.expect("bus open");
/// assert_eq!((delivery.notification.id, delivery.attempt), (id, 1));
/// delivery.requeue_after(Duration::from_millis(10)).await?;
/// let again = sub.next().await?.expect("bus open");
/// again.ack().await?;
/// # Ok::<(), threeport_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    shared: Arc<Mutex<BusState>>,
    dead_letters: Arc<Mutex<Vec<DeadLetter>>>,
}

/// A notification the bus gave up on after `max_deliveries` deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The consumer group that could not process it.
    pub group: String,
    /// The notification.
    pub notification: Notification,
    /// How many times it was delivered.
    pub deliveries: u32,
}

#[derive(Debug, Default)]
struct BusState {
    groups: HashMap<String, Arc<Group>>,
    /// Published for kinds no group receives yet: kept for the first group that does.
    unclaimed: HashMap<String, Vec<Notification>>,
    closed: bool,
}

#[derive(Debug)]
struct Group {
    options: SubscribeOptions,
    queue: Mutex<Queue>,
    wake: Notify,
    dead_letters: Arc<Mutex<Vec<DeadLetter>>>,
}

#[derive(Debug, Default)]
struct Queue {
    next_seq: u64,
    /// By sequence number: taken and settled roughly in order, which a B-tree keeps in cache.
    messages: BTreeMap<u64, Message>,
    /// Messages waiting to be delivered, by due time.
    ready: BTreeSet<(Instant, u64)>,
    /// The ready message of each object, for coalescing (ids are unique across kinds; the
    /// message's kind is checked before folding all the same).
    ready_by_object: HashMap<ObjectId, u64, FastHash>,
    /// Delivered, unsettled messages, by ack deadline.
    in_flight: BTreeSet<(Instant, u64)>,
    closed: bool,
}

#[derive(Debug)]
struct Message {
    notification: Notification,
    attempt: u32,
    due: Instant,
    due_wall: SystemTime,
    /// Set while delivered: the ack deadline and the token the holder must present.
    in_flight: Option<(Instant, u64)>,
    next_token: u64,
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notifications dropped after `max_deliveries`, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().unwrap().clone()
    }

    /// Notifications of a group not yet settled (ready or in flight); 0 for an unknown group.
    pub fn backlog(&self, group: &str) -> usize {
        let state = self.shared.lock().unwrap();
        state
            .groups
            .get(group)
            .map_or(0, |g| g.queue.lock().unwrap().messages.len())
    }

    /// Closes the bus: every subscription's `next` answers `Ok(None)`, publishes fail.
    pub fn close(&self) {
        let mut state = self.shared.lock().unwrap();
        state.closed = true;
        for group in state.groups.values() {
            group.queue.lock().unwrap().closed = true;
            group.wake.notify_waiters();
        }
    }
}

impl Queue {
    /// Adds a notification due at `due`, folding it into the object's ready message if any.
    fn enqueue(&mut self, notification: Notification, due: Instant, attempt: u32) {
        // Notifications with secrets stay whole: folding would drop one's secret.
        if let Some(&seq) = self.ready_by_object.get(&notification.id)
            && notification.secret.is_none()
            && self.messages[&seq].notification.secret.is_none()
            && self.messages[&seq].notification.kind == notification.kind
        {
            let msg = self.messages.get_mut(&seq).expect("indexed message exists");
            msg.notification.version = msg.notification.version.max(notification.version);
            msg.notification.operation = notification.operation;
            msg.attempt = msg.attempt.min(attempt);
            if due < msg.due {
                self.ready.remove(&(msg.due, seq));
                msg.due = due;
                msg.due_wall = wall_clock_at(due);
                self.ready.insert((due, seq));
            }
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = notification.id;
        self.messages.insert(
            seq,
            Message {
                notification,
                attempt,
                due,
                due_wall: wall_clock_at(due),
                in_flight: None,
                next_token: 0,
            },
        );
        self.ready.insert((due, seq));
        self.ready_by_object.insert(id, seq);
    }

    /// Returns expired in-flight messages to the ready set (their holder missed ack-wait).
    fn expire_in_flight(&mut self, now: Instant) {
        while let Some(&(deadline, seq)) = self.in_flight.first() {
            if deadline > now {
                break;
            }
            self.in_flight.pop_first();
            let msg = self
                .messages
                .get_mut(&seq)
                .expect("in-flight message exists");
            msg.in_flight = None;
            msg.due = now;
            msg.due_wall = SystemTime::now();
            self.ready.insert((now, seq));
        }
    }

    /// Takes the message a settle call refers to, if its holder still owns it.
    fn take_in_flight(&mut self, seq: u64, token: u64) -> Result<Message> {
        match self.messages.get(&seq).and_then(|m| m.in_flight) {
            Some((deadline, held)) if held == token => {
                self.in_flight.remove(&(deadline, seq));
                Ok(self.messages.remove(&seq).expect("checked above"))
            }
            _ => Err(Error::conflict(
                "delivery is no longer held: its ack-wait ran out and it was redelivered",
            )),
        }
    }
}

fn wall_clock_at(due: Instant) -> SystemTime {
    SystemTime::now() + due.saturating_duration_since(Instant::now())
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, notification: Notification) -> Result<()> {
        validate_kind(&notification.kind)?;
        let mut state = self.shared.lock().unwrap();
        if state.closed {
            return Err(Error::unavailable("bus closed"));
        }
        let now = Instant::now();
        let mut delivered = false;
        for group in state.groups.values() {
            if group.options.kinds.contains(&notification.kind) {
                group
                    .queue
                    .lock()
                    .unwrap()
                    .enqueue(notification.clone(), now, 0);
                // One waiting member is enough to take it (a permit is kept if none waits).
                group.wake.notify_one();
                delivered = true;
            }
        }
        if !delivered {
            state
                .unclaimed
                .entry(notification.kind.clone())
                .or_default()
                .push(notification);
        }
        Ok(())
    }

    async fn publish_missing(&self, notifications: Vec<Notification>) -> Result<()> {
        let held: HashSet<(String, ObjectId)> = {
            let state = self.shared.lock().unwrap();
            let queued = state.groups.values().flat_map(|group| {
                let queue = group.queue.lock().unwrap();
                queue
                    .messages
                    .values()
                    .map(|m| (m.notification.kind.clone(), m.notification.id))
                    .collect::<Vec<_>>()
            });
            let unclaimed = state
                .unclaimed
                .values()
                .flatten()
                .map(|n| (n.kind.clone(), n.id));
            queued.chain(unclaimed).collect()
        };
        for notification in notifications {
            if !held.contains(&(notification.kind.clone(), notification.id)) {
                self.publish(notification).await?;
            }
        }
        Ok(())
    }

    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Subscription>> {
        options.validate()?;
        let mut state = self.shared.lock().unwrap();
        if state.closed {
            return Err(Error::unavailable("bus closed"));
        }
        if let Some(group) = state.groups.get(&options.group) {
            if group.options != options {
                return Err(Error::conflict(format!(
                    "consumer group {:?} exists with different options: {:?} (asked for {:?})",
                    options.group, group.options, options
                )));
            }
            return Ok(Box::new(MemorySubscription {
                group: group.clone(),
            }));
        }
        // Work-queue semantics: each kind belongs to one consumer group (as on JetStream).
        if let Some((kind, owner)) = options.kinds.iter().find_map(|kind| {
            state
                .groups
                .values()
                .find(|g| g.options.kinds.contains(kind))
                .map(|g| (kind, &g.options.group))
        }) {
            return Err(Error::conflict(format!(
                "kind {kind} is already consumed by group {owner:?}; a kind has one consumer group"
            )));
        }
        let group = Arc::new(Group {
            options: options.clone(),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            dead_letters: self.dead_letters.clone(),
        });
        {
            let mut queue = group.queue.lock().unwrap();
            let now = Instant::now();
            for kind in &options.kinds {
                for notification in state.unclaimed.remove(kind).unwrap_or_default() {
                    queue.enqueue(notification, now, 0);
                }
            }
        }
        state.groups.insert(options.group.clone(), group.clone());
        Ok(Box::new(MemorySubscription { group }))
    }
}

/// A member of a [`MemoryBus`] consumer group.
#[derive(Debug)]
struct MemorySubscription {
    group: Arc<Group>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Option<Delivery>> {
        loop {
            // Look first: with a backlog there is no need to register for a wake-up.
            if let Polled::Ready(delivery) = self.poll_queue() {
                return Ok(delivery);
            }
            // Registered before looking again, so a publish in between is not missed.
            let notified = self.group.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake_at = match self.poll_queue() {
                Polled::Ready(delivery) => return Ok(delivery),
                Polled::WaitUntil(at) => at,
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// What a look at the queue found.
enum Polled {
    /// A delivery, or `None` once the bus is closed.
    Ready(Option<Delivery>),
    /// Nothing due: wait for a publish, or until this time (the next due message or ack
    /// deadline).
    WaitUntil(Option<Instant>),
}

impl MemorySubscription {
    fn poll_queue(&self) -> Polled {
        let mut queue = self.group.queue.lock().unwrap();
        if queue.closed {
            return Polled::Ready(None);
        }
        let now = Instant::now();
        queue.expire_in_flight(now);
        match self.take_due(&mut queue, now) {
            Some(delivery) => Polled::Ready(Some(delivery)),
            None => {
                let next_ready = queue.ready.first().map(|&(due, _)| due);
                let next_expiry = queue.in_flight.first().map(|&(deadline, _)| deadline);
                Polled::WaitUntil(next_ready.into_iter().chain(next_expiry).min())
            }
        }
    }

    /// Pops the earliest due message, dead-lettering those past `max_deliveries`.
    fn take_due(&self, queue: &mut Queue, now: Instant) -> Option<Delivery> {
        let ack_wait = self.group.options.ack_wait;
        while let Some(&(due, seq)) = queue.ready.first() {
            if due > now {
                return None;
            }
            queue.ready.pop_first();
            let msg = queue.messages.get_mut(&seq).expect("ready message exists");
            if queue.ready_by_object.get(&msg.notification.id) == Some(&seq) {
                queue.ready_by_object.remove(&msg.notification.id);
            }
            msg.attempt += 1;
            if let Some(max) = self.group.options.max_deliveries
                && msg.attempt > max
            {
                let msg = queue.messages.remove(&seq).expect("ready message exists");
                dead_letter(&self.group, msg);
                continue;
            }
            let token = msg.next_token;
            msg.next_token += 1;
            let deadline = now + ack_wait;
            msg.in_flight = Some((deadline, token));
            queue.in_flight.insert((deadline, seq));
            let delivery = Delivery::new(
                msg.notification.clone(),
                msg.attempt,
                msg.due_wall,
                Box::new(MemoryDeliveryHandle {
                    group: self.group.clone(),
                    seq,
                    token,
                }),
            );
            return Some(delivery);
        }
        None
    }
}

fn dead_letter(group: &Group, msg: Message) {
    tracing::warn!(
        group = %group.options.group,
        kind = %msg.notification.kind,
        id = %msg.notification.id,
        deliveries = msg.attempt - 1,
        "notification exceeded max deliveries; dead-lettered"
    );
    group.dead_letters.lock().unwrap().push(DeadLetter {
        group: group.options.group.clone(),
        notification: msg.notification,
        deliveries: msg.attempt - 1,
    });
}

#[derive(Debug)]
struct MemoryDeliveryHandle {
    group: Arc<Group>,
    seq: u64,
    token: u64,
}

#[async_trait]
impl DeliveryHandle for MemoryDeliveryHandle {
    async fn ack(&self) -> Result<()> {
        let mut queue = self.group.queue.lock().unwrap();
        queue.take_in_flight(self.seq, self.token).map(drop)
    }

    async fn requeue_after(&self, delay: Duration) -> Result<()> {
        let mut queue = self.group.queue.lock().unwrap();
        let msg = queue.take_in_flight(self.seq, self.token)?;
        queue.enqueue(msg.notification, Instant::now() + delay, 0);
        drop(queue);
        self.group.wake.notify_waiters();
        Ok(())
    }

    async fn in_progress(&self) -> Result<()> {
        let mut queue = self.group.queue.lock().unwrap();
        let queue = &mut *queue;
        match queue.messages.get_mut(&self.seq) {
            Some(msg) if msg.in_flight.is_some_and(|(_, t)| t == self.token) => {
                let (old, token) = msg.in_flight.expect("checked");
                let deadline = Instant::now() + self.group.options.ack_wait;
                msg.in_flight = Some((deadline, token));
                queue.in_flight.remove(&(old, self.seq));
                queue.in_flight.insert((deadline, self.seq));
                Ok(())
            }
            _ => Err(Error::conflict(
                "delivery is no longer held: its ack-wait ran out and it was redelivered",
            )),
        }
    }
}
