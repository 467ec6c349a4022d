//! Stream and consumer setup is idempotent, and a mismatched existing setup is refused with a
//! message that says what differs. The runtime's delivery bound holds on NATS too.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use common::NatsServer;
use serde::{Deserialize, Serialize};
use threeport_bus::{NatsBus, NatsConfig, NatsLocker, connect};
use threeport_core::*;
use tokio_util::sync::CancellationToken;

fn note(kind: &str) -> Notification {
    Notification {
        kind: kind.into(),
        id: ObjectId::new(),
        operation: Operation::Created,
        version: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_is_idempotent_across_clients() {
    let server = NatsServer::start().await;
    for _ in 0..3 {
        let client = connect(&server.url, Duration::from_secs(5)).await.unwrap();
        let bus = NatsBus::new(client.clone(), NatsConfig::default());
        bus.publish(note("Widget")).await.unwrap();
        bus.subscribe(SubscribeOptions::new("widget-controller", "Widget"))
            .await
            .unwrap();
        NatsLocker::new(client, &NatsConfig::default())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_stream_or_consumer_is_reported() {
    let server = NatsServer::start().await;
    let client = connect(&server.url, Duration::from_secs(5)).await.unwrap();
    // Someone made the Widget stream with limits retention.
    jetstream::new(client.clone())
        .create_stream(stream::Config {
            name: "THREEPORT_Widget".into(),
            subjects: vec!["threeport.notify.Widget.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let bus = NatsBus::new(client.clone(), NatsConfig::default());
    let err = bus.publish(note("Widget")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.to_string()
            .contains("THREEPORT_Widget exists with another configuration"),
        "{err}"
    );

    bus.subscribe(SubscribeOptions::new("gadget-controller", "Gadget"))
        .await
        .unwrap();
    let other_wait = SubscribeOptions {
        ack_wait: Duration::from_secs(5),
        ..SubscribeOptions::new("gadget-controller", "Gadget")
    };
    let err = bus.subscribe(other_wait).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.to_string().contains("exists with ack_wait 30s"),
        "{err}"
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    n: u32,
}

impl ApiObject for Job {
    const KIND: &'static str = "Job";
    type Status = ();
}

struct Never;

#[async_trait]
impl Reconciler for Never {
    type Object = Job;
    async fn reconcile(
        &self,
        _: &mut Object<Job>,
        _: &Context,
    ) -> std::result::Result<Action, ReconcileError> {
        panic!("a poison notification must not reach the reconciler");
    }
}

/// A notification whose every delivery dies unsettled (a crashing replica) ends with the
/// object marked interrupted, with the reason, instead of looping forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_that_never_complete_interrupt_the_object() {
    let server = NatsServer::start().await;
    let client = connect(&server.url, Duration::from_secs(5)).await.unwrap();
    let bus = Arc::new(NatsBus::new(client.clone(), NatsConfig::default()));
    let store = Arc::new(MemoryStore::new());
    let job = Api::<Job>::new(store.clone())
        .create("poison", Job { n: 1 })
        .await
        .unwrap();
    let config = ControllerConfig {
        max_deliveries: 2,
        ack_wait: Duration::from_secs(1),
        ..ControllerConfig::default()
    };
    let options = SubscribeOptions {
        group: "job-controller".into(),
        kinds: vec!["Job".into()],
        ack_wait: config.ack_wait,
        max_deliveries: Some(config.max_deliveries + 1),
    };
    bus.publish(Notification {
        kind: "Job".into(),
        id: job.id(),
        operation: Operation::Created,
        version: 1,
    })
    .await
    .unwrap();
    {
        let mut crashing = bus.subscribe(options).await.unwrap();
        for attempt in 1..=2 {
            let delivery = crashing.next().await.unwrap().unwrap();
            assert_eq!(delivery.attempt, attempt);
            drop(delivery); // the replica "crashes": never settled
        }
    }
    let shutdown = CancellationToken::new();
    let backends = Backends {
        store: store.clone(),
        bus,
        locker: Arc::new(
            NatsLocker::new(client, &NatsConfig::default())
                .await
                .unwrap(),
        ),
    };
    let task = tokio::spawn(
        Controller::new(Never, backends)
            .with_config(config)
            .run(shutdown.clone()),
    );
    let jobs = Api::<Job>::new(store);
    let obj = tokio::time::timeout(
        Duration::from_secs(20),
        jobs.wait_until(job.id(), |j| j.status.state == LifecycleState::Interrupted),
    )
    .await
    .expect("interrupted in time")
    .unwrap();
    assert!(
        obj.status
            .reason
            .unwrap()
            .contains("delivered 2 times without completing")
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
