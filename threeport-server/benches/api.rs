//! The control plane API on the loopback PostgreSQL: create throughput against raw INSERTs,
//! and GET latency at a steady request rate.
//!
//! `cargo bench -p threeport-server --bench api` (`THREEPORT_TEST_POSTGRES_URL` overrides the
//! server; `BENCH_CREATES` the number of creates, 10,000 by default).
//!
//! 1. POST `/v0/aws-accounts` through HTTP (bearer token checked, spec decoded and validated,
//!    object + outbox row written, the outbox relayed to an in-process bus) from 32 concurrent
//!    connections, against the raw single-row `BEGIN; INSERT; COMMIT` baseline at the same
//!    concurrency on the same database.
//! 2. GET by id at a fixed 1,000 requests/s for 5 s (open loop: latency counts from the
//!    scheduled send time, so a stall is not hidden by sending less).

#[path = "../../threeport-store/benches/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{CONCURRENCY, concurrently, fresh_database, percentile, raw_insert_baseline, redact};
use threeport_core::{MemoryBus, OutboxRelay, RelayConfig};
use threeport_server::auth::mint_token;
use threeport_server::{ApiState, Ops, TokenSet, app, model};
use threeport_store::ConnectOptions;
use tokio_util::sync::CancellationToken;

const GET_RATE: u64 = 1_000;
const GET_SECONDS: u64 = 5;

fn main() {
    let creates: usize = std::env::var("BENCH_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(creates));
}

async fn run(creates: usize) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = fresh_database().await;
    let options = ConnectOptions {
        max_connections: CONCURRENCY as u32,
        ..ConnectOptions::default()
    };
    let sql = threeport_store::connect(&url, &options)
        .await
        .expect("connect");
    let bus = Arc::new(MemoryBus::new());
    let shutdown = CancellationToken::new();
    tokio::spawn(
        OutboxRelay::new(sql.outbox.clone(), bus.clone(), RelayConfig::default())
            .run(shutdown.clone()),
    );
    let minted = mint_token().expect("token");
    let mut tokens = TokenSet::new();
    tokens.add_hash(&minted.hash).expect("hash");
    let app = app(
        ApiState {
            store: sql.store.clone(),
            bus,
            locker: Arc::new(threeport_core::MemoryLocker::new()),
            kinds: Arc::new(model::registry()),

            sealer: Arc::new(threeport_server::Sealer::ephemeral().unwrap()),
        },
        Some(Arc::new(tokens)),
        Ops::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!(
        "http://{}/v0/aws-accounts",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client");
    println!(
        "api bench on {}: {creates} creates, {CONCURRENCY} concurrent connections; GET at {GET_RATE}/s for {GET_SECONDS}s",
        redact(&url)
    );

    let ids = Arc::new(Mutex::new(Vec::with_capacity(creates)));
    let took = concurrently(creates, {
        let (http, base, token, ids) = (http.clone(), base.clone(), minted.token.clone(), ids.clone());
        move |i| {
            let (http, base, token, ids) = (http.clone(), base.clone(), token.clone(), ids.clone());
            async move {
                let body = json!({
                    "name": format!("account-{i}"),
                    "labels": {"team": "platform"},
                    "spec": {
                        "account_id": format!("{:012}", i),
                        "default_region": "us-east-1",
                        "credentials": {"role": {"role_arn": "arn:aws:iam::123456789012:role/threeport"}}
                    }
                });
                let response = http.post(&base).bearer_auth(&token).json(&body).send().await.expect("post");
                assert_eq!(response.status(), reqwest::StatusCode::CREATED);
                let created: Value = response.json().await.expect("body");
                ids.lock().unwrap().push(created["id"].as_str().expect("id").to_owned());
            }
        }
    })
    .await;
    let create_per_s = creates as f64 / took.as_secs_f64();
    println!("  POST create over HTTP:          {took:>9.3?}  {create_per_s:>8.0}/s");

    let pool = sqlx::PgPool::connect(&url).await.expect("pool");
    let took = raw_insert_baseline(&pool, creates).await;
    let raw_insert_per_s = creates as f64 / took.as_secs_f64();
    println!("  raw INSERT + COMMIT (baseline): {took:>9.3?}  {raw_insert_per_s:>8.0}/s");

    let ids = Arc::new(ids.lock().unwrap().clone());
    let samples = Arc::new(Mutex::new(Vec::new()));
    let start = tokio::time::Instant::now();
    let total = GET_RATE * GET_SECONDS;
    let mut tasks = Vec::with_capacity(total as usize);
    for k in 0..total {
        let at = start + Duration::from_micros(k * 1_000_000 / GET_RATE);
        tokio::time::sleep_until(at).await;
        let (http, base, token, ids, samples) = (
            http.clone(),
            base.clone(),
            minted.token.clone(),
            ids.clone(),
            samples.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let id = &ids[fastrand::usize(..ids.len())];
            let response = http
                .get(format!("{base}/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("get");
            assert_eq!(response.status(), reqwest::StatusCode::OK);
            response.bytes().await.expect("body");
            samples.lock().unwrap().push(at.elapsed());
        }));
    }
    let scheduled = start.elapsed();
    for task in tasks {
        task.await.expect("get task");
    }
    let mut samples = samples.lock().unwrap().clone();
    let p50 = percentile(&mut samples, 50.0);
    let p99 = percentile(&mut samples, 99.0);
    println!(
        "  GET by id at {GET_RATE}/s ({} requests sent in {scheduled:.2?}): p50 {p50:.3} ms  p99 {p99:.3} ms",
        samples.len()
    );
    shutdown.cancel();
    println!(
        "RESULT api create_per_s={create_per_s:.0} raw_insert_per_s={raw_insert_per_s:.0} ratio={:.3} get_p50_ms={p50:.3} get_p99_ms={p99:.3}",
        create_per_s / raw_insert_per_s
    );
}
