//! [`MemoryLocker`]: in-process leases on tokio's clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Lease, Locker};
use crate::error::{Error, Result};

/// In-process [`Locker`]. Tokens come from one counter, so they only ever grow.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use threeport_core::{Locker, MemoryLocker};
///
/// let locker = MemoryLocker::new();
/// let ttl = Duration::from_secs(10);
/// let lease = locker.acquire("Widget/1", "replica-a", ttl).await?.expect("free");
/// assert!(locker.acquire("Widget/1", "replica-b", ttl).await?.is_none());
/// locker.release(&lease).await?;
/// let next = locker.acquire("Widget/1", "replica-b", ttl).await?.expect("released");
/// assert!(next.token > lease.token);
/// # Ok::<(), threeport_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct MemoryLocker {
    state: Mutex<LockerState>,
}

#[derive(Debug, Default)]
struct LockerState {
    /// Keys are the runtime's own (`Kind/id`): no DoS-resistant hash needed.
    held: HashMap<String, Held, foldhash::fast::RandomState>,
    last_token: u64,
}

#[derive(Debug)]
struct Held {
    holder: String,
    token: u64,
    expires: Instant,
}

impl MemoryLocker {
    /// No leases held.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Locker for MemoryLocker {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        if ttl.is_zero() {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        if state.held.get(key).is_some_and(|h| h.expires > now) {
            return Ok(None);
        }
        state.last_token += 1;
        let token = state.last_token;
        state.held.insert(
            key.to_owned(),
            Held {
                holder: holder.to_owned(),
                token,
                expires: now + ttl,
            },
        );
        Ok(Some(Lease {
            key: key.to_owned(),
            holder: holder.to_owned(),
            token,
            ttl,
        }))
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        match state.held.get_mut(&lease.key) {
            Some(held) if held.token == lease.token && held.expires > now => {
                held.expires = now + lease.ttl;
                Ok(lease.clone())
            }
            _ => Err(lease.lost()),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        if state
            .held
            .get(&lease.key)
            .is_some_and(|h| h.token == lease.token && h.holder == lease.holder)
        {
            state.held.remove(&lease.key);
        }
        Ok(())
    }
}
