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
use threeport_core::{Locker, ObjectId};
use tokio_util::sync::CancellationToken;

fn note(kind: &str) -> Notification {
    Notification {
        kind: kind.into(),
        id: ObjectId::new(),
        operation: Operation::Created,
        version: 1,
        secret: None,
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

    // Processes that disagree on the partition count would route objects apart.
    let eight = NatsBus::new(
        client.clone(),
        NatsConfig {
            partitions: 8,
            ..NatsConfig::default()
        },
    );
    let err = eight.publish(note("Gadget")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("partitions 16"), "{err}");
    let zero = NatsBus::new(
        client,
        NatsConfig {
            partitions: 0,
            ..NatsConfig::default()
        },
    );
    let err = zero.publish(note("Gizmo")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("partitions"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_leases_follow_partition_ownership() {
    let server = NatsServer::start().await;
    let config = NatsConfig {
        partition_ttl: Duration::from_secs(2),
        ..NatsConfig::default()
    };
    let mut buses = Vec::new();
    let mut subscriptions = Vec::new();
    for _ in 0..2 {
        let client = connect(&server.url, Duration::from_secs(5)).await.unwrap();
        let bus = NatsBus::new(client, config.clone());
        subscriptions.push(
            bus.subscribe(SubscribeOptions::new("part-controller", "Part"))
                .await
                .unwrap(),
        );
        buses.push(bus);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while buses[0].held_partitions("Part").len() + buses[1].held_partitions("Part").len() != 16
        || buses.iter().any(|b| b.held_partitions("Part").is_empty())
    {
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lockers = [
        buses[0].locker().await.unwrap(),
        buses[1].locker().await.unwrap(),
    ];
    let ttl = Duration::from_secs(30);
    // An object's lease is granted where its partition is held, and only there, once.
    let key = format!("Part/{}", ObjectId::new());
    let (mine, theirs) = match lockers[0].acquire(&key, "a", ttl).await.unwrap() {
        Some(lease) => (lease, &lockers[1]),
        None => (
            lockers[1]
                .acquire(&key, "b", ttl)
                .await
                .unwrap()
                .expect("the other holds it"),
            &lockers[0],
        ),
    };
    assert!(theirs.acquire(&key, "x", ttl).await.unwrap().is_none());
    let owner = if std::ptr::eq(theirs, &lockers[0]) {
        &lockers[1]
    } else {
        &lockers[0]
    };
    assert!(
        owner.acquire(&key, "again", ttl).await.unwrap().is_none(),
        "held once"
    );
    let renewed = owner.renew(&mine).await.unwrap();
    assert!(renewed.token >= mine.token, "tokens never go down");
    owner.release(&renewed).await.unwrap();
    assert!(owner.acquire(&key, "again", ttl).await.unwrap().is_some());

    // Keys of kinds not consumed here are plain KV leases, shared across processes.
    let plain = lockers[0]
        .acquire("report/1", "a", ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(
        lockers[1]
            .acquire("report/1", "b", ttl)
            .await
            .unwrap()
            .is_none()
    );
    lockers[0].release(&plain).await.unwrap();
    assert!(
        lockers[1]
            .acquire("report/1", "b", ttl)
            .await
            .unwrap()
            .is_some()
    );

    // A subscription that goes away hands its partitions to the one left.
    drop(subscriptions.remove(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while buses[1].held_partitions("Part").len() != 16 {
        assert!(tokio::time::Instant::now() < deadline, "never handed over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(buses[0].held_partitions("Part").is_empty());
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
        secret: None,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_travel_in_memory_only() {
    let server = NatsServer::start().await;
    let client = connect(&server.url, Duration::from_secs(5)).await.unwrap();
    let bus = NatsBus::new(client.clone(), NatsConfig::default());
    let mut sub = bus
        .subscribe(SubscribeOptions::new("vault-controller", "Vault"))
        .await
        .unwrap();
    let value = format!("s3cr3t-{}", ObjectId::new());
    let secret = threeport_core::SecretValues([("password".to_owned(), value.clone())].into());
    let plain = note("Vault");
    let with_secret = note("Vault").with_secret(secret.clone());
    assert!(
        !format!("{with_secret:?}").contains(&value),
        "Debug hides the value"
    );
    bus.publish(plain.clone()).await.unwrap();
    bus.publish(with_secret.clone()).await.unwrap();
    // Flush the file store, so the check below would see anything written to disk.
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        common::files_contain(&server.dir, plain.id.to_string().as_bytes()),
        "plain notifications are on disk (the scan works)"
    );
    assert!(
        !common::files_contain(&server.dir, value.as_bytes()),
        "a secret value reached the server's disk"
    );

    let mut got = Vec::new();
    while got.len() < 2 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("delivered")
            .unwrap()
            .unwrap();
        got.push(d);
    }
    let secret_delivery = got
        .iter()
        .position(|d| d.notification.id == with_secret.id)
        .expect("the secret notification arrives");
    let d = got.remove(secret_delivery);
    assert_eq!(d.notification.secret, Some(secret.clone()));
    for other in got {
        other.ack().await.unwrap();
    }
    // Requeued, it comes back from memory with its values.
    d.requeue_after(Duration::from_millis(100)).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("requeued")
        .unwrap()
        .unwrap();
    assert_eq!(again.notification.id, with_secret.id);
    assert_eq!(again.notification.secret, Some(secret));
    again.ack().await.unwrap();
    assert!(!common::files_contain(&server.dir, value.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_notifications_flow_again_after_a_server_restart() {
    let mut server = NatsServer::start().await;
    let client = connect(&server.url, Duration::from_secs(5)).await.unwrap();
    let bus = NatsBus::new(client.clone(), NatsConfig::default());
    let mut sub = bus
        .subscribe(SubscribeOptions::new("vault-controller", "Vault"))
        .await
        .unwrap();
    // The secrets stream lives in memory: a restart loses it and its consumers.
    server.restart().await;
    let secret = threeport_core::SecretValues([("password".to_owned(), "p".to_owned())].into());
    let with_secret = note("Vault").with_secret(secret.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Err(err) = bus.publish(with_secret.clone()).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never published: {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("the secret notification arrives after the restart")
        .unwrap()
        .unwrap();
    assert_eq!(got.notification.id, with_secret.id);
    assert_eq!(got.notification.secret, Some(secret));
    got.ack().await.unwrap();
}
