//! # threeport-bus
//!
//! NATS JetStream implementations of `threeport-core`'s [`Bus`](threeport_core::Bus) and
//! [`Locker`](threeport_core::Locker), on `async-nats`:
//!
//! - [`NatsBus`]: per object kind a work-queue stream with file storage (`THREEPORT_<Kind>`,
//!   subjects `threeport.notify.<Kind>.<partition>.<id>`), and one with memory storage for
//!   notifications that carry secret values (`THREEPORT_SECRETS_<Kind>`), which therefore never
//!   reach a server's disk. Each partition has a durable pull consumer per group with explicit
//!   ack, ack-wait, in-progress heartbeats and an optional max-deliver bound. `requeue_after`
//!   publishes a one-shot server-side schedule (`threeport.schedule.<Kind>.<partition>.<id>`,
//!   ADR-51) that fires a fresh notification after the delay, so a deliberate requeue starts
//!   the attempt count anew; a secret-carrying delivery is NAKed with the delay instead, so its
//!   values stay in memory.
//! - Partitioned consumption: each replica (subscription) pulls only the partitions it holds a
//!   lease on; partitions split evenly over the live replicas (rendezvous hashing with bounded
//!   loads) and are handed over when replicas come and go (see [`NatsConfig::partitions`]).
//!   [`NatsBus::locker`] turns that ownership into per-object leases with no NATS round trip
//!   per object: run controllers with it.
//! - [`NatsLocker`]: leases in a key-value bucket, taken with create-if-absent, renewed and
//!   taken over with compare-and-set on the key's revision; the revision is the fencing token.
//!   Partition leases are `NatsLocker` leases in the same bucket, so every token is comparable.
//!
//! Requires nats-server 2.12 or newer with JetStream (message schedules appeared in 2.12);
//! tested with 2.15.1. Use `tls://` URLs to encrypt secret-carrying notifications in transit.
//!
//! ```no_run
//! # async fn run() -> threeport_core::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use threeport_bus::{NatsBus, NatsConfig, connect};
//! use threeport_core::{Backends, MemoryStore};
//!
//! let client = connect("nats://127.0.0.1:4222", Duration::from_secs(5)).await?;
//! let bus = NatsBus::new(client, NatsConfig::default());
//! let backends = Backends {
//!     store: Arc::new(MemoryStore::new()),
//!     locker: Arc::new(bus.locker().await?),
//!     bus: Arc::new(bus),
//! };
//! # let _ = backends; Ok(()) }
//! ```

mod bus;
mod locker;
mod partition;

use std::time::Duration;

pub use bus::NatsBus;
pub use locker::NatsLocker;
pub use partition::PartitionLocker;
use threeport_core::Error;

/// How the NATS backends lay out their streams and buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Subject prefix (`threeport`); stream names use it upper-cased.
    pub prefix: String,
    /// Replicas of each stream and bucket: 1 for a single server, 3 for a production cluster.
    pub replicas: usize,
    /// Key-value bucket holding the leases: per-object, partition and membership keys.
    pub lease_bucket: String,
    /// Partitions per kind. Fixed for the life of a stream: every process must agree (a
    /// stream laid out with another count is refused). More partitions spread work finer
    /// over more replicas; 16 suits up to about 8 replicas per controller.
    pub partitions: u16,
    /// Time to live of a partition lease, renewed every quarter of it. A replica that dies
    /// holds its partitions this long before another takes them over.
    pub partition_ttl: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            prefix: "threeport".to_owned(),
            replicas: 1,
            lease_bucket: "threeport_leases".to_owned(),
            partitions: 16,
            partition_ttl: Duration::from_secs(10),
        }
    }
}

impl NatsConfig {
    /// Checks the settings a stream or subscription depends on.
    pub fn validate(&self) -> Result<(), Error> {
        if self.partitions == 0 {
            return Err(Error::invalid("partitions", "must be at least 1"));
        }
        if self.partition_ttl < Duration::from_millis(100) {
            return Err(Error::invalid(
                "partition_ttl",
                "must be at least 100ms (it is renewed every quarter of it)",
            ));
        }
        Ok(())
    }
}

/// Connects to `url` (`nats://host:4222`), waiting at most `timeout` for the server.
pub async fn connect(url: &str, timeout: Duration) -> Result<async_nats::Client, Error> {
    async_nats::ConnectOptions::new()
        .connection_timeout(timeout)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(url)
        .await
        .map_err(|e| Error::unavailable(format!("cannot connect to NATS at {url}: {e}")))
}

/// Maps a client error: timeouts and connection trouble are `Unavailable`.
pub(crate) fn nats_error(what: &str, err: impl std::fmt::Display) -> Error {
    let message = format!("{what}: {err}");
    let lower = message.to_ascii_lowercase();
    // A server that is restarting answers for a while as if its streams were gone.
    if lower.contains("timed out")
        || lower.contains("timeout")
        || lower.contains("disconnect")
        || lower.contains("connection")
        || lower.contains("no responders")
        || lower.contains("stream not found")
        || lower.contains("jetstream not enabled")
    {
        Error::unavailable(message)
    } else {
        Error::backend(message)
    }
}
