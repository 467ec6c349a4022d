//! The transactional outbox end to end on both SQL backends: a relay that dies between commit
//! and publish loses nothing, and several relays together publish every row exactly once.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use threeport_core::{
    Bus, Labels, NewObject, Notification, ObjectId, OutboxRelay, RelayConfig, Result, Store,
    SubscribeOptions, Subscription,
};
use threeport_store::{ConnectOptions, SqlBackends, connect};
use tokio_util::sync::CancellationToken;

/// A memory bus that counts every publish, so duplicates cannot hide behind coalescing.
#[derive(Debug, Default)]
struct CountingBus {
    inner: threeport_core::MemoryBus,
    published: Mutex<HashMap<ObjectId, u32>>,
}

#[async_trait]
impl Bus for CountingBus {
    async fn publish(&self, notification: Notification) -> Result<()> {
        *self
            .published
            .lock()
            .unwrap()
            .entry(notification.id)
            .or_default() += 1;
        self.inner.publish(notification).await
    }
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Subscription>> {
        self.inner.subscribe(options).await
    }
}

fn widget(name: String) -> NewObject {
    NewObject {
        kind: "Widget".into(),
        name,
        labels: Labels::new(),
        references: vec![],
        owners: Vec::new(),
        spec: serde_json::json!({}),
    }
}

fn quick_relay() -> RelayConfig {
    RelayConfig {
        claim_for: Duration::from_secs(1),
        poll_interval: Duration::from_millis(50),
        ..RelayConfig::default()
    }
}

async fn backends(postgres: bool) -> (SqlBackends, Option<std::path::PathBuf>) {
    if postgres {
        (
            connect(&common::fresh_postgres().await, &ConnectOptions::default())
                .await
                .unwrap(),
            None,
        )
    } else {
        let path = std::env::temp_dir().join(format!(
            "threeport-relay-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let url = format!("sqlite://{}", path.display());
        (
            connect(&url, &ConnectOptions::default()).await.unwrap(),
            Some(path),
        )
    }
}

async fn receive_all(sub: &mut Box<dyn Subscription>, expected: usize) -> HashMap<ObjectId, u32> {
    let mut seen = HashMap::new();
    while seen.len() < expected {
        let delivery = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {expected} notifications arrived", seen.len()))
            .unwrap()
            .unwrap();
        *seen.entry(delivery.notification.id).or_default() += 1;
        delivery.ack().await.unwrap();
    }
    seen
}

async fn dead_relay_loses_nothing(postgres: bool) {
    let (sql, file) = backends(postgres).await;
    let bus = Arc::new(CountingBus::default());
    let mut sub = bus
        .subscribe(SubscribeOptions::new("g", "Widget"))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(
            sql.store
                .create(widget(format!("w{i}")))
                .await
                .unwrap()
                .meta
                .id,
        );
    }
    // A relay claims everything, then dies before publishing: the rows stay, claimed.
    let claimed = sql
        .outbox
        .claim("dead-relay", 1000, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 50);

    let shutdown = CancellationToken::new();
    let relay = OutboxRelay::new(sql.outbox.clone(), bus.clone(), quick_relay());
    let task = tokio::spawn(relay.run(shutdown.clone()));
    let seen = receive_all(&mut sub, 50).await;
    for id in &ids {
        assert!(seen.contains_key(id), "notification for {id} lost");
    }
    shutdown.cancel();
    task.await.unwrap();
    assert!(
        sql.outbox
            .claim("check", 1000, Duration::from_millis(1))
            .await
            .unwrap()
            .is_empty(),
        "outbox drained"
    );
    if let Some(file) = file {
        let _ = std::fs::remove_file(file);
    }
}

async fn several_relays_publish_each_row_once(postgres: bool) {
    let (sql, file) = backends(postgres).await;
    let bus = Arc::new(CountingBus::default());
    let mut sub = bus
        .subscribe(SubscribeOptions::new("g", "Widget"))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let relays: Vec<_> = (0..3)
        .map(|_| {
            let config = RelayConfig {
                batch: 16,
                claim_for: Duration::from_secs(30),
                ..quick_relay()
            };
            tokio::spawn(
                OutboxRelay::new(sql.outbox.clone(), bus.clone(), config).run(shutdown.clone()),
            )
        })
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store: Arc<dyn Store> = sql.store.clone();
            tokio::spawn(async move {
                for i in 0..75 {
                    store.create(widget(format!("w{w}-{i}"))).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let seen = receive_all(&mut sub, 300).await;
    assert_eq!(seen.len(), 300, "none skipped");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let published = bus.published.lock().unwrap().clone();
    let doubles: Vec<_> = published.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubles.is_empty(),
        "rows published more than once by concurrent relays: {doubles:?}"
    );
    assert_eq!(published.len(), 300);
    shutdown.cancel();
    for relay in relays {
        relay.await.unwrap();
    }
    if let Some(file) = file {
        let _ = std::fs::remove_file(file);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_relay_that_died_between_commit_and_publish_loses_nothing() {
    dead_relay_loses_nothing(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_relay_that_died_between_commit_and_publish_loses_nothing() {
    dead_relay_loses_nothing(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_relays_together_publish_each_row_once() {
    several_relays_publish_each_row_once(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_relays_together_publish_each_row_once() {
    several_relays_publish_each_row_once(false).await;
}
