//! Bench support shared by the store and API benches (included with `#[path]`): a fresh
//! database, a concurrency driver, the raw INSERT + COMMIT baseline, percentiles.

#![allow(dead_code)] // each bench uses its own subset

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

/// Tasks running at once in the throughput phases.
pub const CONCURRENCY: usize = 32;

/// Runs `op(i)` for i in 0..n on `CONCURRENCY` tasks; returns the wall time.
pub async fn concurrently<F, Fut>(n: usize, op: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let next = next.clone();
            let op = op.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    op(i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    started.elapsed()
}

/// The baseline: `n` single-row `BEGIN; INSERT; COMMIT` of a comparable row (uuid, kind, name,
/// JSON spec) at `CONCURRENCY`, on `pool`'s database.
pub async fn raw_insert_baseline(pool: &PgPool, n: usize) -> Duration {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_raw (id UUID PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, spec JSONB NOT NULL)",
    )
    .execute(pool)
    .await
    .expect("raw table");
    concurrently(n, {
        let pool = pool.clone();
        move |i| {
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query(
                    "INSERT INTO bench_raw (id, kind, name, spec) VALUES ($1, 'Widget', $2, $3)",
                )
                .bind(uuid::Uuid::now_v7())
                .bind(format!("w{i}"))
                .bind(sqlx::types::Json(
                    serde_json::json!({"size": i, "image": "registry.example.com/app:1.2.3"}),
                ))
                .execute(&mut *tx)
                .await
                .expect("insert");
                tx.commit().await.expect("commit");
            }
        }
    })
    .await
}

/// The `p`th percentile of `samples`, in milliseconds.
pub fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let index = ((samples.len() as f64 * p / 100.0).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[index].as_secs_f64() * 1000.0
}

/// A database URL without its credentials, for printing.
pub fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((_, host)) => format!("postgres://…@{host}"),
        None => url.to_owned(),
    }
}

/// Creates an empty database on the loopback server; returns its URL.
pub async fn fresh_database() -> String {
    let admin = std::env::var("THREEPORT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL must be running on loopback");
    let name = format!("threeport_bench_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    format!(
        "{}/{name}",
        admin.rsplit_once('/').expect("database in URL").0
    )
}
