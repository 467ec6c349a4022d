//! The NATS bus and locker pass the core conformance suites against a real nats-server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::NatsServer;
use threeport_bus::{NatsBus, NatsConfig, NatsLocker, connect};
use threeport_core::conformance::{self, Timing};

/// JetStream schedules fire with about a second of resolution: checks use a coarser unit.
const TIMING: Timing = Timing {
    unit: Duration::from_millis(500),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_bus_passes_the_bus_suite() {
    let server = NatsServer::start().await;
    let client = connect(&server.url, Duration::from_secs(5)).await.unwrap();
    conformance::bus::run(
        Arc::new(NatsBus::new(client, NatsConfig::default())),
        TIMING,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_locker_passes_the_locker_suite() {
    let server = NatsServer::start().await;
    let client = connect(&server.url, Duration::from_secs(5)).await.unwrap();
    let locker = NatsLocker::new(client, &NatsConfig::default())
        .await
        .unwrap();
    conformance::locker::run(Arc::new(locker), TIMING).await;
}
