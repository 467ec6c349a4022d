//! [`MemoryBackends`]: the in-memory store, bus and locker wired together, for embedding and
//! tests.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::MemoryBus;
use crate::lock::MemoryLocker;
use crate::outbox::{OutboxRelay, RelayConfig};
use crate::runtime::Backends;
use crate::store::MemoryStore;

/// The in-memory fakes of every backend trait, sharing one process.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackends {
    /// Objects and their outbox.
    pub store: Arc<MemoryStore>,
    /// Notifications.
    pub bus: Arc<MemoryBus>,
    /// Leases.
    pub locker: Arc<MemoryLocker>,
}

impl MemoryBackends {
    /// Fresh, empty backends.
    pub fn new() -> Self {
        Self::default()
    }

    /// The backends as trait objects, for [`Controller::new`](crate::Controller::new).
    pub fn backends(&self) -> Backends {
        Backends {
            store: self.store.clone(),
            bus: self.bus.clone(),
            locker: self.locker.clone(),
        }
    }

    /// Spawns the outbox relay that turns store writes into bus notifications.
    pub fn spawn_relay(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let relay = OutboxRelay::new(self.store.clone(), self.bus.clone(), RelayConfig::default());
        tokio::spawn(relay.run(shutdown))
    }
}
