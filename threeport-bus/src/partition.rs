//! Partitioned consumption: who pulls which objects, and the [`PartitionLocker`] that turns
//! partition ownership into per-object leases without a write per object.
//!
//! A kind's notification subjects carry a partition number (`hash(id) % partitions`). Each
//! partition has its own durable consumer, and each subscription (a *member*) pulls only the
//! partitions it holds a lease on, in the same KV bucket as [`NatsLocker`]'s leases, so every
//! token comes from one revision sequence. Members announce themselves in a membership key;
//! each partition belongs to the live member that rendezvous hashing with bounded loads
//! picks ([`assign`]), so ownership splits evenly and moves little when membership changes.
//!
//! Handing a partition over: the owner stops pulling it, returns unprocessed messages (NAK),
//! waits until every delivery it handed out is settled, and only then deletes the lease; the
//! next owner takes it with a higher revision. A member that dies keeps its partitions until
//! the lease TTL runs out. Deliveries of a partition whose lease was lost fail their lease
//! renewal, so the runtime abandons them, and their late writes are fenced off by the token.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::message::AckKind;
use async_trait::async_trait;
use futures::StreamExt;
use threeport_core::{Error, Lease, Locker, ObjectId, Result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::locker::{NatsLocker, now_ms};
use crate::nats_error;

/// How often a member looks at its partitions while one changes hands.
const HANDOVER_POLL: Duration = Duration::from_millis(50);

/// How long one pull request stays open at the server (an idle partition opens one this
/// often). A partition being handed over waits for its request to end: the handover's cost.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// Messages a partition's pull may hold client-side before the runtime asks for them.
const PULL_BATCH: usize = 32;

/// The partition of an object: FNV-1a of its id, so every build and platform agrees.
pub(crate) fn partition_of(id: ObjectId, partitions: u16) -> u16 {
    let hash = fnv1a(id.0.as_bytes());
    u16::try_from(hash % u64::from(partitions.max(1))).unwrap_or(0)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The owner of each partition among `members`: rendezvous hashing with bounded loads. In
/// partition order, each goes to the highest-scoring member that holds fewer than
/// `ceil(partitions / members)`, so the split is even (8 and 8 of 16 between two members,
/// where plain rendezvous hashing gave splits like 10 and 6, and the busier replica's queue
/// set the tail latency), and a membership change moves few partitions. Every member computes
/// the same answer from the same membership.
pub(crate) fn assign<'a>(
    kind: &str,
    partitions: u16,
    members: &'a [String],
) -> Vec<Option<&'a str>> {
    if members.is_empty() {
        return vec![None; usize::from(partitions)];
    }
    let cap = usize::from(partitions).div_ceil(members.len());
    let mut load = vec![0usize; members.len()];
    (0..partitions)
        .map(|partition| {
            let mut ranked: Vec<(u64, &str, usize)> = members
                .iter()
                .enumerate()
                .map(|(i, member)| (score(kind, partition, member), member.as_str(), i))
                .collect();
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            let (_, owner, i) = ranked
                .into_iter()
                .find(|&(_, _, i)| load[i] < cap)
                .expect("members * cap >= partitions");
            load[i] += 1;
            Some(owner)
        })
        .collect()
}

fn score(kind: &str, partition: u16, member: &str) -> u64 {
    let seed = format!("{kind}\u{0}{partition}\u{0}{member}");
    // One more mixing round: FNV of near-identical strings is weakly spread.
    fnv1a(&fnv1a(seed.as_bytes()).to_le_bytes())
}

/// Counts messages of one partition that a member pulled and has not settled yet.
#[derive(Debug)]
pub(crate) struct Pending {
    counter: Arc<AtomicUsize>,
}

impl Pending {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Pending {
            counter: counter.clone(),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A pulled message on its way to the runtime, counted against its partition until settled.
pub(crate) struct Pulled {
    pub(crate) message: Message,
    pub(crate) pending: Pending,
}

/// A partition lease this member holds.
struct Held {
    lease: Lease,
    /// Local deadline: the lease counts as ours until then, measured from before the request
    /// that last renewed it, so it never outlives the server-side value.
    valid_until: Instant,
    /// Stops the partition's pull.
    pull: CancellationToken,
    leaving: bool,
}

/// One subscription's share of a kind: its partition leases and their pulls.
pub(crate) struct Member {
    kind: String,
    name: String,
    partitions: u16,
    ttl: Duration,
    leases: NatsLocker,
    held: Mutex<HashMap<u16, Held>>,
    /// The partitions the last membership it saw gives it (rendezvous may give it none).
    wanted: Mutex<Vec<u16>>,
    pending: Vec<Arc<AtomicUsize>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Member {
    pub(crate) fn new(kind: &str, partitions: u16, ttl: Duration, leases: NatsLocker) -> Self {
        Member {
            kind: kind.to_owned(),
            name: format!("m-{}", uuid::Uuid::now_v7().simple()),
            partitions,
            ttl,
            leases,
            held: Mutex::new(HashMap::new()),
            wanted: Mutex::new(Vec::new()),
            pending: (0..partitions).map(|_| Arc::default()).collect(),
        }
    }

    /// The fencing token of `partition` if this member holds it now.
    fn token(&self, partition: u16) -> Option<u64> {
        let held = self.held.lock().unwrap();
        held.get(&partition)
            .filter(|h| h.valid_until > Instant::now())
            .map(|h| h.lease.token)
    }

    /// The partitions held now, for tests and diagnostics.
    pub(crate) fn held_partitions(&self) -> Vec<u16> {
        let mut held: Vec<u16> = self.held.lock().unwrap().keys().copied().collect();
        held.sort_unstable();
        held
    }

    /// Whether a partition is on its way out of this member, or one it should hold is not
    /// held yet.
    fn handing_over(&self) -> bool {
        let held = self.held.lock().unwrap();
        held.values().any(|h| h.leaving)
            || self
                .wanted
                .lock()
                .unwrap()
                .iter()
                .any(|p| !held.contains_key(p))
    }

    /// The partitions the last membership it saw gives it, for tests and diagnostics.
    pub(crate) fn wanted_partitions(&self) -> Vec<u16> {
        self.wanted.lock().unwrap().clone()
    }

    fn partition_key(&self, partition: u16) -> String {
        format!("partitions.{}.{partition}", self.kind)
    }

    fn members_key(&self) -> String {
        format!("members.{}", self.kind)
    }

    /// Writes this member's heartbeat into the membership key (or takes it out) and returns
    /// the live members, sorted.
    async fn announce(&self, present: bool) -> Result<Vec<String>> {
        let kv = self.leases.kv();
        let key = self.members_key();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        for _ in 0..20 {
            let entry = kv
                .entry(&key)
                .await
                .map_err(|e| nats_error("reading the members", e))?;
            let (mut members, revision): (BTreeMap<String, u64>, u64) = match entry {
                Some(entry) if entry.operation == Operation::Put => (
                    serde_json::from_slice(&entry.value).unwrap_or_default(),
                    entry.revision,
                ),
                Some(entry) => (BTreeMap::new(), entry.revision),
                None => (BTreeMap::new(), 0),
            };
            let now = now_ms();
            members.retain(|_, expires| *expires > now);
            if present {
                members.insert(self.name.clone(), now.saturating_add(ttl_ms));
            } else {
                members.remove(&self.name);
            }
            let value: bytes::Bytes = serde_json::to_vec(&members).map_err(Error::backend)?.into();
            let written = if revision == 0 {
                kv.create(&key, value)
                    .await
                    .map_err(|e| (e.kind() == CreateErrorKind::AlreadyExists, e.to_string()))
            } else {
                kv.update(&key, value, revision).await.map_err(|e| {
                    (
                        e.kind() == UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                })
            };
            match written {
                Ok(_) => return Ok(members.into_keys().collect()),
                // Another member wrote in between: read again.
                Err((true, _)) => {
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(1..10))).await;
                }
                Err((false, err)) => return Err(nats_error("announcing membership", err)),
            }
        }
        Err(Error::unavailable("membership key too contended"))
    }
}

/// Makes a partition's consumer (`partition`, index among its consumers) again after the
/// server lost it (a memory stream does not survive a restart).
pub(crate) type Reopen = Arc<
    dyn Fn(u16, usize) -> futures::future::BoxFuture<'static, Result<PullConsumer>> + Send + Sync,
>;

/// Runs a member until `stop` fires, then hands its partitions back and leaves.
pub(crate) async fn run_member(
    member: Arc<Member>,
    consumers: Vec<Vec<PullConsumer>>,
    reopen: Reopen,
    tx: mpsc::Sender<Pulled>,
    stop: CancellationToken,
) {
    let consumers = Arc::new(
        consumers
            .into_iter()
            .map(|list| list.into_iter().map(|c| Arc::new(Mutex::new(c))).collect())
            .collect::<Vec<Vec<_>>>(),
    );
    let consumers = Consumers {
        all: consumers,
        reopen,
    };
    let tick = member.ttl / 4;
    let mut members: Option<Vec<String>> = None;
    let mut next_announce = Instant::now();
    let leave_started = loop {
        let leaving = stop.is_cancelled();
        if leaving || Instant::now() >= next_announce {
            members = match member.announce(!leaving).await {
                Ok(members) => Some(members),
                Err(err) => {
                    tracing::debug!(kind = %member.kind, error = %err, "membership heartbeat failed");
                    None
                }
            };
            next_announce = Instant::now() + tick;
        }
        balance(&member, members.as_deref(), leaving, &consumers, &tx).await;
        if leaving {
            break Instant::now();
        }
        // While a partition changes hands, look again soon (with the membership last seen):
        // its messages wait meanwhile, and a tick apart each step of a handover took seconds.
        let until_announce = next_announce.saturating_duration_since(Instant::now());
        let pause = if member.handing_over() {
            HANDOVER_POLL.min(until_announce)
        } else {
            until_announce
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    };
    // Leaving: hand every partition back once its deliveries are settled; a lease whose
    // deliveries outlive the TTL is simply left to expire.
    while !member.held.lock().unwrap().is_empty() && leave_started.elapsed() < member.ttl {
        balance(&member, None, true, &consumers, &tx).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<Held> = member
        .held
        .lock()
        .unwrap()
        .drain()
        .map(|(_, h)| h)
        .collect();
    for held in left {
        held.pull.cancel();
    }
    if let Err(err) = member.announce(false).await {
        tracing::debug!(kind = %member.kind, error = %err, "leaving the membership failed; it will expire");
    }
}

/// One round: renew what stays, hand back what another member should have, claim what is ours.
async fn balance(
    member: &Arc<Member>,
    members: Option<&[String]>,
    leaving: bool,
    consumers: &Consumers,
    tx: &mpsc::Sender<Pulled>,
) {
    let owners = members.map(|members| assign(&member.kind, member.partitions, members));
    let mine = |partition: u16| {
        owners
            .as_ref()
            .is_some_and(|owners| owners[usize::from(partition)] == Some(member.name.as_str()))
    };
    if leaving {
        member.wanted.lock().unwrap().clear();
    } else if owners.is_some() {
        *member.wanted.lock().unwrap() = (0..member.partitions).filter(|p| mine(*p)).collect();
    }
    for partition in 0..member.partitions {
        let wanted = !leaving
            && match members {
                Some(_) => mine(partition),
                // Membership unknown (server unreachable): keep what we have.
                None => member.held.lock().unwrap().contains_key(&partition),
            };
        let held = member
            .held
            .lock()
            .unwrap()
            .get(&partition)
            .map(|h| (h.lease.clone(), h.valid_until, h.leaving));
        match held {
            Some((_, valid_until, _)) if valid_until <= Instant::now() => {
                tracing::warn!(kind = %member.kind, partition, "partition lease expired before it was renewed");
                drop_partition(member, partition);
            }
            Some((lease, _, _)) if wanted => renew(member, partition, &lease).await,
            Some((lease, valid_until, was_leaving)) => {
                if !was_leaving {
                    // Another member should own it: stop pulling, let the deliveries settle.
                    let mut all = member.held.lock().unwrap();
                    if let Some(h) = all.get_mut(&partition) {
                        h.leaving = true;
                        h.pull.cancel();
                    }
                }
                if member.pending[usize::from(partition)].load(Ordering::SeqCst) == 0 {
                    drop_partition(member, partition);
                    if let Err(err) = member.leases.release(&lease).await {
                        tracing::debug!(kind = %member.kind, partition, error = %err, "releasing a partition failed; it will expire");
                    }
                } else if valid_until - Instant::now() < member.ttl / 2 {
                    renew(member, partition, &lease).await;
                }
            }
            None if wanted => claim(member, partition, consumers, tx).await,
            None => {}
        }
    }
}

async fn renew(member: &Member, partition: u16, lease: &Lease) {
    let asked = Instant::now();
    match member.leases.renew(lease).await {
        Ok(renewed) => {
            if let Some(h) = member.held.lock().unwrap().get_mut(&partition) {
                h.lease = renewed;
                h.valid_until = asked + member.ttl;
            }
        }
        Err(err) if err.kind() == threeport_core::ErrorKind::Conflict => {
            tracing::warn!(kind = %member.kind, partition, "partition lease lost");
            drop_partition(member, partition);
        }
        // Unreachable server: keep the partition until its local deadline.
        Err(err) => {
            tracing::debug!(kind = %member.kind, partition, error = %err, "renewing a partition failed")
        }
    }
}

fn drop_partition(member: &Member, partition: u16) {
    if let Some(held) = member.held.lock().unwrap().remove(&partition) {
        held.pull.cancel();
    }
}

/// A member's consumers: per partition, the current handle of each (replaced when reopened).
#[derive(Clone)]
struct Consumers {
    all: Arc<Vec<Vec<Arc<Mutex<PullConsumer>>>>>,
    reopen: Reopen,
}

async fn claim(
    member: &Arc<Member>,
    partition: u16,
    consumers: &Consumers,
    tx: &mpsc::Sender<Pulled>,
) {
    let asked = Instant::now();
    let key = member.partition_key(partition);
    let lease = match member.leases.acquire(&key, &member.name, member.ttl).await {
        Ok(Some(lease)) => lease,
        // Held by its previous owner, which hands it over once its deliveries settle.
        Ok(None) => return,
        Err(err) => {
            tracing::debug!(kind = %member.kind, partition, error = %err, "claiming a partition failed");
            return;
        }
    };
    tracing::debug!(kind = %member.kind, partition, token = lease.token, "partition claimed");
    let pull = CancellationToken::new();
    member.held.lock().unwrap().insert(
        partition,
        Held {
            lease,
            valid_until: asked + member.ttl,
            pull: pull.clone(),
            leaving: false,
        },
    );
    for (index, consumer) in consumers.all[usize::from(partition)].iter().enumerate() {
        tokio::spawn(pull_partition(
            PartitionConsumer {
                current: consumer.clone(),
                reopen: consumers.reopen.clone(),
                partition,
                index,
            },
            member.pending[usize::from(partition)].clone(),
            tx.clone(),
            pull.clone(),
        ));
    }
}

/// One consumer of a partition, and how to make it again.
struct PartitionConsumer {
    current: Arc<Mutex<PullConsumer>>,
    reopen: Reopen,
    partition: u16,
    index: usize,
}

impl PartitionConsumer {
    /// After a failed pull: if the server lost the consumer (or its stream), makes it again.
    async fn recover(&self, err: &str) {
        let lower = err.to_ascii_lowercase();
        // A pull request's failure carries only the status: 503 (no responders) or 409
        // (consumer deleted).
        let lost = [
            "not found",
            "no responders",
            "deleted",
            "10014",
            "10059",
            ": 503",
            ": 409",
        ];
        if !lost.iter().any(|sign| lower.contains(sign)) {
            return;
        }
        match (self.reopen)(self.partition, self.index).await {
            Ok(consumer) => {
                tracing::info!(partition = self.partition, "partition consumer made again");
                *self.current.lock().unwrap() = consumer;
            }
            Err(err) => {
                tracing::debug!(partition = self.partition, error = %err, "making a partition consumer again failed")
            }
        }
    }
}

/// Forwards one partition's messages until `stop`; then returns what it still holds.
async fn pull_partition(
    consumer: PartitionConsumer,
    pending: Arc<AtomicUsize>,
    tx: mpsc::Sender<Pulled>,
    stop: CancellationToken,
) {
    // Once stopping, the open pull request is read to its end and what arrives goes back:
    // a request left open at the server would receive messages nobody reads, and those would
    // wait for the ack-wait (30 s) before anyone saw them again.
    let mut stopping = false;
    while !stopping {
        let current = consumer.current.lock().unwrap().clone();
        let mut messages = match current
            .batch()
            .max_messages(PULL_BATCH)
            .expires(PULL_EXPIRES)
            .messages()
            .await
        {
            Ok(messages) => messages,
            Err(err) => {
                tracing::debug!(error = %err, "opening a partition pull failed; retrying");
                consumer.recover(&err.to_string()).await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                }
            }
        };
        loop {
            let next = if stopping {
                // The request ends at its expiry; the client gives up a little later.
                tokio::time::timeout(PULL_EXPIRES * 2, messages.next())
                    .await
                    .unwrap_or(None)
            } else {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => {
                        stopping = true;
                        continue;
                    }
                    next = messages.next() => next,
                }
            };
            let message = match next {
                // This request is over: the next one, unless stopping.
                None => break,
                Some(Err(_)) if stopping => break,
                // The request failed (a reconnect, or the consumer or the server gone): make
                // the consumer again if the server lost it, and open a new request.
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "partition pull hiccup");
                    consumer.recover(&err.to_string()).await;
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                    break;
                }
                Some(Ok(message)) => message,
            };
            if stopping {
                nak(&message).await;
                continue;
            }
            let permit = tokio::select! {
                biased;
                _ = stop.cancelled() => None,
                permit = tx.reserve() => permit.ok(),
            };
            match permit {
                Some(permit) => permit.send(Pulled {
                    pending: Pending::new(&pending),
                    message,
                }),
                None => {
                    nak(&message).await;
                    stopping = true;
                }
            }
        }
    }
}

/// How long a returned message waits before redelivery: long enough for a partition to
/// change hands.
const RETURN_DELAY: Duration = Duration::from_millis(500);

pub(crate) async fn nak(message: &Message) {
    if let Err(err) = message.ack_with(AckKind::Nak(Some(RETURN_DELAY))).await {
        tracing::debug!(error = %err, "returning a message failed; it comes back after ack-wait");
    }
}

/// The live members of this process, by kind, for the [`PartitionLocker`].
#[derive(Debug, Default, Clone)]
pub(crate) struct Registry(Arc<Mutex<HashMap<String, Vec<Weak<Member>>>>>);

impl Registry {
    pub(crate) fn add(&self, member: &Arc<Member>) {
        let mut all = self.0.lock().unwrap();
        let members = all.entry(member.kind.clone()).or_default();
        members.retain(|m| m.strong_count() > 0);
        members.push(Arc::downgrade(member));
    }

    fn members(&self, kind: &str) -> Vec<Arc<Member>> {
        let all = self.0.lock().unwrap();
        all.get(kind)
            .map(|members| members.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    }

    pub(crate) fn held_partitions(&self, kind: &str) -> Vec<u16> {
        let mut held: Vec<u16> = self
            .members(kind)
            .iter()
            .flat_map(|m| m.held_partitions())
            .collect();
        held.sort_unstable();
        held
    }

    pub(crate) fn wanted_partitions(&self, kind: &str) -> Vec<u16> {
        let mut wanted: Vec<u16> = self
            .members(kind)
            .iter()
            .flat_map(|m| m.wanted_partitions())
            .collect();
        wanted.sort_unstable();
        wanted
    }
}

/// Per-object leases backed by partition ownership; from [`NatsBus::locker`](crate::NatsBus::locker).
///
/// For a key `<kind>/<id>` of a kind this process consumes, the lease is granted if one of the
/// process's subscriptions holds the object's partition (and nobody here holds the key), with
/// the partition lease's revision as the fencing token: no write to NATS per object. Every
/// other key goes to a plain [`NatsLocker`] on the same bucket, so all tokens come from one
/// sequence.
#[derive(Debug, Clone)]
pub struct PartitionLocker {
    registry: Registry,
    partitions: u16,
    fallback: NatsLocker,
    granted: Arc<Mutex<HashSet<String>>>,
}

impl PartitionLocker {
    pub(crate) fn new(registry: Registry, partitions: u16, fallback: NatsLocker) -> Self {
        PartitionLocker {
            registry,
            partitions,
            fallback,
            granted: Arc::default(),
        }
    }

    /// The members of the key's kind and the key's partition, if it is `<kind>/<id>` of a
    /// kind consumed here.
    fn route(&self, key: &str) -> Option<(Vec<Arc<Member>>, u16)> {
        let (kind, id) = key.split_once('/')?;
        let id: ObjectId = id.parse().ok()?;
        let members = self.registry.members(kind);
        (!members.is_empty()).then(|| (members, partition_of(id, self.partitions)))
    }
}

fn token_of(members: &[Arc<Member>], partition: u16) -> Option<u64> {
    members.iter().find_map(|m| m.token(partition))
}

#[async_trait]
impl Locker for PartitionLocker {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let Some((members, partition)) = self.route(key) else {
            return self.fallback.acquire(key, holder, ttl).await;
        };
        if ttl.is_zero() {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        let Some(token) = token_of(&members, partition) else {
            // Another replica owns the partition: the delivery goes back to the bus.
            return Ok(None);
        };
        if !self.granted.lock().unwrap().insert(key.to_owned()) {
            return Ok(None);
        }
        Ok(Some(Lease {
            key: key.to_owned(),
            holder: holder.to_owned(),
            token,
            ttl,
        }))
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease> {
        if !self.granted.lock().unwrap().contains(&lease.key) {
            return self.fallback.renew(lease).await;
        }
        match self
            .route(&lease.key)
            .and_then(|(members, partition)| token_of(&members, partition))
        {
            Some(token) => Ok(Lease {
                token: token.max(lease.token),
                ..lease.clone()
            }),
            None => Err(lease.lost()),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        if self.granted.lock().unwrap().remove(&lease.key) {
            return Ok(());
        }
        self.fallback.release(lease).await
    }
}

/// Names the durable consumer of one partition.
pub(crate) fn consumer_name(group: &str, partition: u16) -> String {
    format!("{group}_p{partition}")
}

/// Whether `consumer` is one of `group`'s partition consumers.
pub(crate) fn belongs_to(consumer: &str, group: &str) -> bool {
    consumer
        .strip_prefix(group)
        .and_then(|rest| rest.strip_prefix("_p"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

pub(crate) fn unknown_group_error(kind: &str, found: &str) -> Error {
    Error::conflict(format!(
        "kind {kind} is already consumed by another group (consumer {found}); a kind has one consumer group"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_ids_evenly() {
        let mut counts = [0u32; 16];
        for _ in 0..16_000 {
            counts[usize::from(partition_of(ObjectId::new(), 16))] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
    }

    #[test]
    fn partitions_split_evenly_and_move_little() {
        let members = |n: usize| -> Vec<String> { (0..n).map(|i| format!("m{i}")).collect() };
        for kind in ["Kind", "WorkloadDefinition", "Other"] {
            for n in 1..=5 {
                let ms = members(n);
                let owners = assign(kind, 16, &ms);
                let mut per_member: HashMap<&str, usize> = HashMap::new();
                for owner in &owners {
                    *per_member.entry(owner.expect("owned")).or_default() += 1;
                }
                let cap = 16usize.div_ceil(n);
                assert!(
                    per_member.values().all(|c| *c <= cap),
                    "{kind} {n}: {per_member:?}"
                );
                if 16 % n == 0 {
                    assert_eq!(per_member.len(), n, "{kind} {n}: {per_member:?}");
                }
            }
            // A newcomer takes its share; few partitions move between the others.
            let (two, three) = (members(2), members(3));
            let before = assign(kind, 64, &two);
            let after = assign(kind, 64, &three);
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
            let to_newcomer = after.iter().filter(|a| **a == Some("m2")).count();
            assert!(to_newcomer >= 16, "{kind}: newcomer got {to_newcomer}");
            assert!(
                moved <= to_newcomer + 8,
                "{kind}: moved {moved}, newcomer {to_newcomer}"
            );
        }
    }

    #[test]
    fn every_member_computes_the_same_owners() {
        let one: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let other: Vec<String> = vec!["c".into(), "a".into(), "b".into()];
        assert_eq!(assign("Kind", 16, &one), assign("Kind", 16, &other));
    }

    #[test]
    fn consumer_names_round_trip() {
        assert!(belongs_to(
            &consumer_name("job-controller", 7),
            "job-controller"
        ));
        assert!(!belongs_to("job-controller", "job-controller"));
        assert!(!belongs_to("other_p1", "job-controller"));
        assert!(!belongs_to("job-controller_px", "job-controller"));
    }
}
