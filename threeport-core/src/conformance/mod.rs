//! Behavioural contracts every backend must pass, the in-memory fakes included.
//!
//! Each submodule has one `run` function that checks the whole contract, and the individual
//! checks as public functions so a backend crate can map them onto separate tests. Checks panic
//! with a message that names the broken rule. They use kind and group names unique to each run,
//! so they can share one database or server with other tests, and real time (not a paused
//! clock), since real backends have their own clocks: [`Timing`] says how short the shortest
//! TTL or ack-wait may be for the backend under test.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use threeport_core::{conformance, MemoryLocker};
//!
//! conformance::locker::run(Arc::new(MemoryLocker::new()), conformance::Timing::default()).await;
//! # });
//! ```

pub mod bus;
pub mod locker;
pub mod outbox;
pub mod relations;
pub mod store;

use std::time::Duration;

use crate::object::ObjectId;

/// Time scale of a conformance run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The ack-wait and lease TTL the checks use: the shortest the backend honours reliably.
    /// Checks wait a few multiples of it.
    pub unit: Duration,
}

impl Default for Timing {
    /// 200 ms: enough for in-process backends.
    fn default() -> Self {
        Timing {
            unit: Duration::from_millis(200),
        }
    }
}

/// A kind (or group) name no other run uses: `prefix` plus 32 hex digits.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", ObjectId::new().0.simple())
}
