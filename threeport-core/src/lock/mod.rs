//! Leases: the [`Locker`] trait and the in-memory [`MemoryLocker`].
//!
//! A lease is held for a TTL and must be renewed while work runs. Each acquisition gets a
//! fencing token larger than any earlier one for the same key, so a store can refuse writes
//! from a holder whose lease ran out and was taken over.

mod memory;

use std::time::Duration;

use async_trait::async_trait;

pub use memory::MemoryLocker;

use crate::error::Result;

/// A held lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// What is locked (the runtime uses `<kind>/<id>`).
    pub key: String,
    /// Who holds it.
    pub holder: String,
    /// Fencing token: strictly greater than the token of every earlier acquisition of `key`,
    /// and never lower after a renewal.
    pub token: u64,
    /// Time to live from the last acquisition or renewal.
    pub ttl: Duration,
}

impl Lease {
    /// The error a locker returns when this lease can no longer be renewed.
    pub fn lost(&self) -> crate::Error {
        crate::Error::conflict(format!(
            "lease on {:?} (token {}) was lost: it expired or was taken over",
            self.key, self.token
        ))
    }
}

/// Mutual exclusion by leases with fencing tokens.
///
/// Contract (checked by [`conformance::locker`](crate::conformance::locker)): one holder per
/// key at a time; an unrenewed lease expires after its TTL and can then be taken by anyone;
/// renewing an expired or taken-over lease answers `Conflict`; releasing a lease you no longer
/// hold does nothing.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Locker: Send + Sync + std::fmt::Debug + 'static {
    /// Takes the lease on `key` for `ttl`, or `Ok(None)` if someone holds it.
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>>;

    /// Extends a held lease by its TTL; returns the renewed lease (its token may grow).
    async fn renew(&self, lease: &Lease) -> Result<Lease>;

    /// Gives the lease up. A no-op if it was already lost.
    async fn release(&self, lease: &Lease) -> Result<()>;
}
