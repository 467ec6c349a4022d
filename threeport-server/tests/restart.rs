//! A PostgreSQL restart under load: one `api` and two `controller` processes on a private
//! PostgreSQL and NATS, 25 creates/s through the typed client, the database stopped
//! (`pg_ctl stop -m fast`, and separately `-m immediate`) and started again. Every create
//! succeeds (503s with `Retry-After` while the database is away for longer than a request
//! waits for a connection, retried by the client with its `Idempotency-Key`, so a create whose
//! answer was lost is not refused as a duplicate), no
//! process exits, `/readyz` says "not ready" within a second during the outage, and every
//! object is reconciled once the database is back.

mod common;

#[path = "../../threeport-bus/tests/common/mod.rs"]
mod nats;

use std::time::Duration;

use reqwest::StatusCode;
use threeport_api::Client;
use threeport_server::model::WorkloadDefinition;
use tokio::time::Instant;

use common::pg_cluster::{PgCluster, StopMode};
use common::process::{controllers, distributed_api, temp_dir};

const MANIFEST: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n";

async fn restart_under_load(mode: StopMode) {
    let pg = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let nats = nats::NatsServer::start().await;
    let data = temp_dir();
    let url = pg.url();
    let (mut api, plane) = distributed_api(&data, &url, &nats.url, &[]).await;
    let (mut first, _) = controllers(&["workload-definition"], &plane).await;
    let (mut second, _) = controllers(&["workload-definition"], &plane).await;
    let client = Client::builder(&api.base)
        .token(api.token.as_deref().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // 25 creates/s for 12 s; the database goes away for 6 s after 3 s: longer than a
    // request waits for a connection (5 s), so creates are refused with 503 meanwhile.
    let load = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(40));
            let mut creates = Vec::new();
            for n in 0..300 {
                tick.tick().await;
                let client = client.clone();
                creates.push(tokio::spawn(async move {
                    let spec = WorkloadDefinition {
                        yaml_document: MANIFEST.into(),
                    };
                    client
                        .api::<WorkloadDefinition>()
                        .create(&format!("web-{n}"), &spec)
                        .await
                }));
            }
            let mut results = Vec::new();
            for create in creates {
                results.push(create.await.unwrap());
            }
            results
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.stop(mode);
        pg
    })
    .await
    .unwrap();

    // While the database is away, readiness says so at once.
    let http = common::http_client();
    let asked = Instant::now();
    let ready = http
        .get(format!("{}/readyz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "/readyz took {:?} with the database away",
        asked.elapsed()
    );
    assert!(ready.headers().contains_key("retry-after"));

    tokio::time::sleep(Duration::from_secs(6)).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again();
        pg
    })
    .await
    .unwrap();
    let results = load.await.unwrap();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} creates failed after {mode:?}, e.g. {:?}",
        failed.len(),
        results.len(),
        failed.first()
    );
    for process in [&mut api.child, &mut first.child, &mut second.child] {
        assert!(
            process.try_wait().unwrap().is_none(),
            "a process exited while the database was away"
        );
    }

    let definitions = client.api::<WorkloadDefinition>();
    let deadline = Instant::now() + Duration::from_secs(60);
    for created in results.into_iter().map(Result::unwrap) {
        loop {
            let current = definitions.get(created.id()).await.unwrap();
            if current.is_reconciled() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never reconciled after {mode:?}: {:?}",
                current.name(),
                current.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let all = definitions
        .list_all(&threeport_api::ListParams::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 300, "one object per create, none twice");
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_postgres_shutdown_under_load_loses_and_fails_nothing() {
    restart_under_load(StopMode::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_under_load_loses_and_fails_nothing() {
    restart_under_load(StopMode::Immediate).await;
}
