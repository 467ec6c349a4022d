//! SqliteStore, the embedded default: the core conformance suites on a file and in memory,
//! persistence across reopen, and concurrent writers on one file.

use std::sync::Arc;

use threeport_core::conformance::{self, Timing};
use threeport_core::{Labels, ListQuery, NewObject, Store};
use threeport_store::{ConnectOptions, SqliteStore, connect};

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("threeport-test-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    fn url(&self, file: &str) -> String {
        format!("sqlite://{}", self.0.join(file).display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn file_store(dir: &TempDir) -> Arc<SqliteStore> {
    Arc::new(
        SqliteStore::connect(&dir.url("store.db"), &ConnectOptions::default())
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_passes_the_store_suite() {
    let dir = TempDir::new();
    conformance::store::run(file_store(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_memory_passes_the_store_suite() {
    let store = SqliteStore::connect("sqlite::memory:", &ConnectOptions::default())
        .await
        .unwrap();
    conformance::store::run(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_outbox_suite() {
    let dir = TempDir::new();
    let store = file_store(&dir).await;
    conformance::outbox::run(store.clone(), store, Timing::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_relations_suite() {
    let dir = TempDir::new();
    let store = file_store(&dir).await;
    conformance::relations::run(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_locker_suite() {
    let dir = TempDir::new();
    conformance::locker::run(file_store(&dir).await, Timing::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_survive_reopening_the_file() {
    let dir = TempDir::new();
    let url = dir.url("persist.db");
    let first = connect(&url, &ConnectOptions::default()).await.unwrap();
    let created = first
        .store
        .create(NewObject {
            kind: "Widget".into(),
            name: "kept".into(),
            labels: Labels::from([("env".into(), "prod".into())]),
            references: vec![],
            owners: Vec::new(),
            spec: serde_json::json!({"size": 3}),
        })
        .await
        .unwrap();
    drop(first);
    let second = connect(&url, &ConnectOptions::default()).await.unwrap();
    let got = second.store.get("Widget", created.meta.id).await.unwrap();
    assert_eq!(got, created);
    let page = second
        .store
        .list("Widget", &ListQuery::default().label("env", "prod"))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_worth_of_pools_share_one_file() {
    let dir = TempDir::new();
    let url = dir.url("shared.db");
    let a = SqliteStore::connect(&url, &ConnectOptions::default())
        .await
        .unwrap();
    let b = SqliteStore::connect(&url, &ConnectOptions::default())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                store
                    .create(NewObject {
                        kind: "Widget".into(),
                        name: format!("w{i}"),
                        labels: Labels::new(),
                        references: vec![],
                        owners: vec![],
                        spec: serde_json::json!({}),
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await
            .unwrap()
            .expect("concurrent writers on one file all succeed");
    }
    let all = a.list("Widget", &ListQuery::default()).await.unwrap();
    assert_eq!(all.items.len(), 40);
}

#[tokio::test]
async fn an_unopenable_path_is_reported_clearly() {
    let err = connect(
        "sqlite:///nonexistent-dir/sub/x.db",
        &ConnectOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), threeport_core::ErrorKind::Unavailable);
    assert!(
        err.to_string().contains("cannot open SQLite database"),
        "{err}"
    );
}
