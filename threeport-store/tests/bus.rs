//! SqlBus, the durable bus in the database: the core bus suite on SQLite and PostgreSQL, and
//! what only a durable bus promises: notifications, unsettled deliveries and requeues outlive
//! the process; secret values never reach the database; several processes share one queue.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use threeport_core::conformance::{self, Timing};
use threeport_core::{
    Bus, Notification, ObjectId, Operation, SecretValues, SubscribeOptions, Subscription,
};
use threeport_store::{ConnectOptions, PgStore, SqlBus, SqliteStore};

/// Where a test's database lives, so a "restarted process" can open it again.
enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Db {
    async fn sqlite() -> Self {
        let dir =
            std::env::temp_dir().join(format!("threeport-bus-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Db::Sqlite(dir)
    }

    async fn postgres() -> Self {
        Db::Postgres(common::fresh_postgres().await)
    }

    /// A new "process": its own pool and bus on the same database.
    async fn open(&self) -> SqlBus {
        match self {
            Db::Sqlite(dir) => {
                let url = format!("sqlite://{}", dir.join("bus.db").display());
                SqlBus::sqlite(
                    &SqliteStore::connect(&url, &ConnectOptions::default())
                        .await
                        .unwrap(),
                )
            }
            Db::Postgres(url) => SqlBus::postgres(
                &PgStore::connect(url, &ConnectOptions::default())
                    .await
                    .unwrap(),
            ),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Db::Sqlite(dir) = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn options(kind: &str, ack_wait: Duration) -> SubscribeOptions {
    SubscribeOptions {
        ack_wait,
        ..SubscribeOptions::new("widgets", kind)
    }
}

async fn next_within(
    sub: &mut dyn Subscription,
    within: Duration,
) -> Option<threeport_core::Delivery> {
    tokio::time::timeout(within, sub.next())
        .await
        .ok()
        .map(|d| d.expect("next").expect("bus open"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_bus_passes_the_bus_suite() {
    let db = Db::sqlite().await;
    conformance::bus::run(Arc::new(db.open().await), Timing::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bus_passes_the_bus_suite() {
    let db = Db::postgres().await;
    conformance::bus::run(Arc::new(db.open().await), Timing::default()).await;
}

/// Published, then the process stops before anyone subscribed: the next process gets them.
async fn notifications_outlive_the_process(db: Db) {
    let ids: HashSet<ObjectId> = (0..3).map(|_| ObjectId::new()).collect();
    {
        let bus = db.open().await;
        for id in &ids {
            bus.publish(Notification::new("Widget", *id, Operation::Created, 1))
                .await
                .unwrap();
        }
    }
    let bus = db.open().await;
    let mut sub = bus
        .subscribe(options("Widget", Duration::from_secs(5)))
        .await
        .unwrap();
    let mut seen = HashSet::new();
    while seen.len() < ids.len() {
        let d = next_within(&mut *sub, Duration::from_secs(5))
            .await
            .expect("kept across the restart");
        seen.insert(d.notification.id);
        d.ack().await.unwrap();
    }
    assert_eq!(seen, ids);
    assert!(
        next_within(&mut *sub, Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_notifications_outlive_the_process() {
    notifications_outlive_the_process(Db::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notifications_outlive_the_process() {
    notifications_outlive_the_process(Db::postgres().await).await;
}

/// A delivery taken by a process that then died (never settled) comes back to the next
/// process after the ack-wait, as a second attempt; a requeue made before the death is kept
/// with its delay and comes back as a fresh attempt.
async fn unsettled_and_requeued_deliveries_survive_a_crash(db: Db) {
    let ack_wait = Duration::from_millis(600);
    let (taken, requeued) = (ObjectId::new(), ObjectId::new());
    {
        let bus = db.open().await;
        let mut sub = bus.subscribe(options("Widget", ack_wait)).await.unwrap();
        for id in [taken, requeued] {
            bus.publish(Notification::new("Widget", id, Operation::Created, 1))
                .await
                .unwrap();
        }
        for _ in 0..2 {
            let d = next_within(&mut *sub, Duration::from_secs(5))
                .await
                .unwrap();
            if d.notification.id == requeued {
                d.requeue_after(Duration::from_millis(1500)).await.unwrap();
            } else {
                // The process dies holding it: never settled.
                std::mem::forget(d);
            }
        }
    }
    let restarted = tokio::time::Instant::now();
    let bus = db.open().await;
    let mut sub = bus.subscribe(options("Widget", ack_wait)).await.unwrap();
    let first = next_within(&mut *sub, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        first.notification.id, taken,
        "the unsettled one is due first"
    );
    assert_eq!(first.attempt, 2, "its first delivery counts");
    first.ack().await.unwrap();
    let second = next_within(&mut *sub, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(second.notification.id, requeued);
    assert_eq!(second.attempt, 1, "a requeue starts anew");
    assert!(
        restarted.elapsed() >= Duration::from_millis(700),
        "the requeue delay held across the restart ({:?})",
        restarted.elapsed()
    );
    second.ack().await.unwrap();
    assert!(
        next_within(&mut *sub, Duration::from_millis(800))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unsettled_and_requeued_deliveries_survive_a_crash() {
    unsettled_and_requeued_deliveries_survive_a_crash(Db::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unsettled_and_requeued_deliveries_survive_a_crash() {
    unsettled_and_requeued_deliveries_survive_a_crash(Db::postgres().await).await;
}

/// Notifications for one object waiting to be delivered fold into one, the newest version.
async fn pending_notifications_of_an_object_fold(db: Db) {
    let bus = db.open().await;
    let id = ObjectId::new();
    for version in 1..=5 {
        bus.publish(Notification::new("Widget", id, Operation::Updated, version))
            .await
            .unwrap();
    }
    let mut sub = bus
        .subscribe(options("Widget", Duration::from_secs(5)))
        .await
        .unwrap();
    let d = next_within(&mut *sub, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((d.notification.id, d.notification.version), (id, 5));
    d.ack().await.unwrap();
    assert!(
        next_within(&mut *sub, Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pending_notifications_of_an_object_fold() {
    pending_notifications_of_an_object_fold(Db::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pending_notifications_of_an_object_fold() {
    pending_notifications_of_an_object_fold(Db::postgres().await).await;
}

/// A secret value is delivered (in memory) and never written to the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_never_reach_the_database() {
    let db = Db::sqlite().await;
    let bus = db.open().await;
    let mut sub = bus
        .subscribe(options("Secret", Duration::from_secs(5)))
        .await
        .unwrap();
    let value = format!("s3cr3t-{}", uuid::Uuid::now_v7().simple());
    let secret = SecretValues([("password".to_owned(), value.clone())].into());
    bus.publish(
        Notification::new("Secret", ObjectId::new(), Operation::Created, 1)
            .with_secret(secret.clone()),
    )
    .await
    .unwrap();
    let d = next_within(&mut *sub, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(d.notification.secret, Some(secret));
    d.ack().await.unwrap();
    let Db::Sqlite(dir) = &db else { unreachable!() };
    for file in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "the secret value was written to the database"
        );
    }
}

/// Two processes on one PostgreSQL queue: every notification is delivered to exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_postgres_queue_compete() {
    let db = Db::postgres().await;
    let (a, b) = (db.open().await, db.open().await);
    let mut sub_a = a
        .subscribe(options("Widget", Duration::from_secs(10)))
        .await
        .unwrap();
    let mut sub_b = b
        .subscribe(options("Widget", Duration::from_secs(10)))
        .await
        .unwrap();
    let ids: HashSet<ObjectId> = (0..40).map(|_| ObjectId::new()).collect();
    a.publish_all(
        ids.iter()
            .map(|id| Notification::new("Widget", *id, Operation::Created, 1))
            .collect(),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let (mut from_a, mut from_b) = (0, 0);
    loop {
        let got = tokio::select! {
            d = next_within(&mut *sub_a, Duration::from_secs(3)) => d.map(|d| (d, true)),
            d = next_within(&mut *sub_b, Duration::from_secs(3)) => d.map(|d| (d, false)),
        };
        let Some((d, is_a)) = got else { break };
        if is_a {
            from_a += 1
        } else {
            from_b += 1
        }
        seen.push(d.notification.id);
        d.ack().await.unwrap();
    }
    assert_eq!(seen.len(), ids.len(), "none delivered twice");
    assert_eq!(
        seen.into_iter().collect::<HashSet<_>>(),
        ids,
        "all delivered"
    );
    assert!(
        from_a > 0 && from_b > 0,
        "both processes took work ({from_a}/{from_b})"
    );
}
