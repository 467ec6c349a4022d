//! The in-memory fakes must pass the same conformance suites as the real backends.

use std::sync::Arc;

use threeport_core::conformance::{self, Timing};
use threeport_core::{MemoryBus, MemoryLocker, MemoryStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_store_suite() {
    conformance::store::run(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_outbox_suite() {
    let store = Arc::new(MemoryStore::new());
    conformance::outbox::run(store.clone(), store, Timing::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_relations_suite() {
    let store = Arc::new(MemoryStore::new());
    conformance::relations::run(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bus_passes_the_bus_suite() {
    conformance::bus::run(Arc::new(MemoryBus::new()), Timing::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_locker_passes_the_locker_suite() {
    conformance::locker::run(Arc::new(MemoryLocker::new()), Timing::default()).await;
}
