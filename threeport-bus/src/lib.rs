//! # threeport-bus
//!
//! NATS JetStream implementations of `threeport-core`'s [`Bus`](threeport_core::Bus) and
//! [`Locker`](threeport_core::Locker), on `async-nats`:
//!
//! - [`NatsBus`]: one work-queue stream per object kind (`THREEPORT_<Kind>`, file storage),
//!   subjects `threeport.notify.<Kind>.<id>`; one durable pull consumer per group with explicit
//!   ack, ack-wait, in-progress heartbeats and an optional max-deliver bound. `requeue_after`
//!   publishes a one-shot server-side schedule (`threeport.schedule.<Kind>.<id>`, ADR-51) that
//!   fires a fresh notification after the delay, so a deliberate requeue starts the attempt count
//!   anew, as the bus contract requires.
//! - [`NatsLocker`]: leases in a key-value bucket, taken with create-if-absent, renewed and
//!   taken over with compare-and-set on the key's revision; the revision is the fencing token.
//!
//! Requires nats-server 2.12 or newer with JetStream (message schedules appeared in 2.12);
//! tested with 2.15.1.

mod bus;
mod locker;

use std::time::Duration;

pub use bus::NatsBus;
pub use locker::NatsLocker;
use threeport_core::Error;

/// How the NATS backends lay out their streams and buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Subject prefix (`threeport`); stream names use it upper-cased.
    pub prefix: String,
    /// Replicas of each stream and bucket: 1 for a single server, 3 for a production cluster.
    pub replicas: usize,
    /// Key-value bucket holding the leases.
    pub lease_bucket: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            prefix: "threeport".to_owned(),
            replicas: 1,
            lease_bucket: "threeport_leases".to_owned(),
        }
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
    if lower.contains("timed out")
        || lower.contains("timeout")
        || lower.contains("disconnect")
        || lower.contains("connection")
    {
        Error::unavailable(message)
    } else {
        Error::backend(message)
    }
}
