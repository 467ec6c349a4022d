//! The core controller runtime on SQL store and SQL leases (no NATS): two replicas, every object
//! reconciled at its last generation, never two reconciles of one object at once.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use threeport_core::{
    Action, Api, ApiObject, Backends, Context, Controller, ControllerConfig, MemoryBus, Object,
    ObjectId, OutboxRelay, ReconcileError, Reconciler, RelayConfig,
};
use threeport_store::{ConnectOptions, connect};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Widget {
    size: u32,
}

impl ApiObject for Widget {
    const KIND: &'static str = "Widget";
    type Status = u32;
}

#[derive(Default)]
struct Overlap {
    running: Mutex<HashMap<ObjectId, u32>>,
    worst: AtomicU32,
}

struct Slow(Arc<Overlap>);

#[async_trait]
impl Reconciler for Slow {
    type Object = Widget;
    async fn reconcile(
        &self,
        obj: &mut Object<Widget>,
        _: &Context,
    ) -> Result<Action, ReconcileError> {
        let now_running = {
            let mut running = self.0.running.lock().unwrap();
            let n = running.entry(obj.id()).or_default();
            *n += 1;
            *n
        };
        self.0.worst.fetch_max(now_running, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        *self.0.running.lock().unwrap().get_mut(&obj.id()).unwrap() -= 1;
        obj.status.details = obj.spec.size;
        Ok(Action::Done)
    }
}

async fn two_replicas_on_sql(url: &str) {
    let sql = connect(url, &ConnectOptions::default()).await.unwrap();
    let bus = Arc::new(MemoryBus::new());
    let shutdown = CancellationToken::new();
    let relay = OutboxRelay::new(sql.outbox.clone(), bus.clone(), RelayConfig::default());
    tokio::spawn(relay.run(shutdown.clone()));
    let overlap = Arc::new(Overlap::default());
    let backends = Backends {
        store: sql.store.clone(),
        bus: bus.clone(),
        locker: sql.locker.clone(),
    };
    let replicas: Vec<_> = (0..2)
        .map(|_| {
            let config = ControllerConfig {
                concurrency: 4,
                lock_busy_delay: Duration::from_millis(50),
                ..ControllerConfig::default()
            };
            tokio::spawn(
                Controller::new(Slow(overlap.clone()), backends.clone())
                    .with_config(config)
                    .run(shutdown.clone()),
            )
        })
        .collect();
    let widgets = Api::<Widget>::new(sql.store.clone());
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            widgets
                .create(format!("w{i}"), Widget { size: 0 })
                .await
                .unwrap()
                .id(),
        );
    }
    for size in 1..=3 {
        for id in &ids {
            // Status writes by the controllers bump the version: read-modify-write until it sticks.
            loop {
                let mut obj = widgets.get(*id).await.unwrap();
                obj.spec.size = size;
                match widgets.update(&obj).await {
                    Ok(_) => break,
                    Err(err) if err.kind() == threeport_core::ErrorKind::Conflict => continue,
                    Err(err) => panic!("update failed: {err}"),
                }
            }
        }
    }
    for id in &ids {
        let obj = tokio::time::timeout(
            Duration::from_secs(30),
            widgets.wait_until(*id, |o| o.is_reconciled() && o.meta.generation == 4),
        )
        .await
        .expect("reconciled in time")
        .unwrap();
        assert_eq!(obj.status.details, 3);
    }
    assert_eq!(
        overlap.worst.load(Ordering::SeqCst),
        1,
        "an object was reconciled concurrently"
    );
    shutdown.cancel();
    for replica in replicas {
        replica.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_store_and_leases() {
    two_replicas_on_sql(&common::fresh_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_sqlite_store_and_leases() {
    let path = std::env::temp_dir().join(format!(
        "threeport-ctl-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    two_replicas_on_sql(&format!("sqlite://{}", path.display())).await;
    let _ = std::fs::remove_file(path);
}
