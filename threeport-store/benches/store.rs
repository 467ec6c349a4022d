//! Store throughput and latency on the loopback PostgreSQL.
//!
//! `cargo bench -p threeport-store --bench store` (`THREEPORT_TEST_POSTGRES_URL` overrides the
//! server; `BENCH_CREATES` the number of creates per phase).
//!
//! 1. Creates through the Store (object row + outbox row, one statement) from 32 tasks, against
//!    a raw single-row `BEGIN; INSERT; COMMIT` loop at the same concurrency on the same database.
//! 2. With 100,000 objects stored: get-by-id and list-page(100) latency (one client, random ids
//!    and random cursors), plus a labelled list for information.

use std::sync::Arc;
use std::time::Instant;

use threeport_core::{Labels, ListQuery, NewObject, ObjectId, Store};
use threeport_store::{ConnectOptions, PgStore};

#[path = "support/mod.rs"]
mod support;
use support::{CONCURRENCY, concurrently, fresh_database, percentile, redact};

const STORED: i64 = 100_000;

fn main() {
    let creates: usize = std::env::var("BENCH_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(creates));
}

async fn run(creates: usize) {
    let url = fresh_database().await;
    let options = ConnectOptions {
        max_connections: CONCURRENCY as u32,
        ..ConnectOptions::default()
    };
    let store = Arc::new(PgStore::connect(&url, &options).await.expect("connect"));
    println!(
        "store bench on {}: {creates} creates per phase, {CONCURRENCY} concurrent tasks",
        redact(&url)
    );

    let took = concurrently(creates, {
        let store = store.clone();
        move |i| {
            let store = store.clone();
            async move {
                let new = NewObject {
                    kind: "Widget".into(),
                    name: format!("w{i}"),
                    labels: Labels::from([("tier".into(), "gold".into())]),
                    references: vec![],
                    owners: vec![],
                    spec: serde_json::json!({"size": i, "image": "registry.example.com/app:1.2.3"}),
                };
                store.create(new).await.expect("create");
            }
        }
    })
    .await;
    let create_per_s = creates as f64 / took.as_secs_f64();
    println!("  store create (object + outbox row): {took:>9.3?}  {create_per_s:>8.0}/s");

    let took = support::raw_insert_baseline(store.pool(), creates).await;
    let raw_insert_per_s = creates as f64 / took.as_secs_f64();
    println!("  raw INSERT + COMMIT (baseline):     {took:>9.3?}  {raw_insert_per_s:>8.0}/s");

    // Fill up to 100,000 objects in bulk (not measured), half of them labelled silver.
    let missing = STORED - creates as i64;
    if missing > 0 {
        sqlx::query(
            "INSERT INTO threeport_objects (id, kind, name, version, generation, created_at, updated_at, labels, refs, spec, status) \
             SELECT gen_random_uuid(), 'Widget', 'bulk' || n, 1, 1, now(), now(), \
                    jsonb_build_object('tier', CASE WHEN n % 2 = 0 THEN 'silver' ELSE 'gold' END), '[]', \
                    jsonb_build_object('size', n), '{}' FROM generate_series(1, $1) AS n",
        )
        .bind(missing)
        .execute(store.pool())
        .await
        .expect("bulk fill");
    }
    sqlx::query("ANALYZE threeport_objects")
        .execute(store.pool())
        .await
        .expect("analyze");
    let ids: Vec<ObjectId> =
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM threeport_objects")
            .fetch_all(store.pool())
            .await
            .expect("ids")
            .into_iter()
            .map(ObjectId)
            .collect();
    println!("  {} objects stored", ids.len());

    let samples = 2_000;
    let mut get = Vec::with_capacity(samples);
    for _ in 0..samples {
        let id = ids[fastrand::usize(..ids.len())];
        let t = Instant::now();
        store.get("Widget", id).await.expect("get");
        get.push(t.elapsed());
    }
    let mut list = Vec::with_capacity(samples);
    for _ in 0..samples {
        let query = ListQuery {
            after: Some(ids[fastrand::usize(..ids.len())]),
            ..ListQuery::default()
        };
        let t = Instant::now();
        let page = store.list("Widget", &query).await.expect("list");
        list.push(t.elapsed());
        assert!(page.items.len() <= 100);
    }
    let mut labelled = Vec::with_capacity(samples / 4);
    for _ in 0..samples / 4 {
        let query = ListQuery {
            after: Some(ids[fastrand::usize(..ids.len())]),
            ..ListQuery::default().label("tier", "silver")
        };
        let t = Instant::now();
        store.list("Widget", &query).await.expect("labelled list");
        labelled.push(t.elapsed());
    }
    let (get_p50, get_p99) = (percentile(&mut get, 50.0), percentile(&mut get, 99.0));
    let (list_p50, list_p99) = (percentile(&mut list, 50.0), percentile(&mut list, 99.0));
    let (lab_p50, lab_p99) = (
        percentile(&mut labelled, 50.0),
        percentile(&mut labelled, 99.0),
    );
    println!("  get by id:                 p50 {get_p50:.3} ms  p99 {get_p99:.3} ms");
    println!("  list page of 100 (cursor): p50 {list_p50:.3} ms  p99 {list_p99:.3} ms");
    println!(
        "  list page of 100, label:   p50 {lab_p50:.3} ms  p99 {lab_p99:.3} ms  (GIN index; informational)"
    );
    println!(
        "RESULT store create_per_s={create_per_s:.0} raw_insert_per_s={raw_insert_per_s:.0} ratio={:.3} get_p99_ms={get_p99:.3} list_p99_ms={list_p99:.3}",
        create_per_s / raw_insert_per_s
    );
}
