//! Nothing lost without NATS: the embedded default (SQLite) and PostgreSQL with the bus in the
//! database, stopped with SIGTERM or killed with SIGKILL three times while workload
//! definitions are created and reconciled, end with every accepted object reconciled once the
//! control plane is back, each without a failed or overlapping reconcile.

mod common;

#[path = "../../threeport-store/tests/common/mod.rs"]
mod postgres;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::process::{metrics_text, send, serve, temp_dir};

const MANIFESTS: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n";

#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    Kill,
}

/// Creates workload definitions from 4 connections until the server stops answering; returns
/// the ids it accepted.
async fn create_until_refused(base: String, token: String, round: usize) -> Vec<String> {
    let http = common::http_client();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let creators = (0..4).map(|task| {
        let (http, base, token, accepted) = (http.clone(), base.clone(), token.clone(), accepted.clone());
        tokio::spawn(async move {
            for n in 0.. {
                let body = json!({"name": format!("r{round}-t{task}-{n}"), "spec": {"yaml_document": MANIFESTS}});
                let sent = http
                    .post(format!("{base}/v0/workload-definitions"))
                    .bearer_auth(&token)
                    .json(&body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let Ok(response) = sent else { return };
                if response.status() != StatusCode::CREATED {
                    return; // shutting down
                }
                let created: Value = response.json().await.unwrap();
                accepted.lock().unwrap().push(created["id"].as_str().unwrap().to_owned());
            }
        })
    });
    let creators: Vec<_> = creators.collect();
    for creator in creators {
        creator.await.unwrap();
    }
    Arc::try_unwrap(accepted).unwrap().into_inner().unwrap()
}

/// Every workload definition, page by page.
async fn all_definitions(http: &reqwest::Client, base: &str, token: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = send(
            http.get(format!("{base}/v0/workload-definitions?limit=1000{after}"))
                .bearer_auth(token),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        all.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return all,
        }
    }
}

async fn stop_three_times_then_recover(stop: Stop, database: Option<String>) {
    let data = temp_dir();
    let key = data.join("encryption.key");
    let mut flags: Vec<String> = Vec::new();
    if let Some(url) = database {
        flags = vec![
            "--database-url".into(),
            url,
            "--encryption-key-file".into(),
            key.to_str().unwrap().into(),
        ];
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut token = None;
    let mut accepted = Vec::new();
    for round in 0..3 {
        let server = serve(&data, &flags).await;
        let token = token
            .get_or_insert_with(|| server.token.clone().expect("first start mints a token"))
            .clone();
        let creating = tokio::spawn(create_until_refused(server.base.clone(), token, round));
        // Stop it mid-stream: creating, relaying and reconciling all under way.
        tokio::time::sleep(Duration::from_millis(1500 + 300 * round as u64)).await;
        match stop {
            Stop::Kill => server.kill().await,
            Stop::Term => assert!(server.terminate().await.success()),
        }
        let created = creating.await.unwrap();
        assert!(
            !created.is_empty(),
            "round {round} created something before the stop"
        );
        accepted.extend(created);
    }
    let token = token.unwrap();
    let server = serve(&data, &flags).await;
    let http = common::http_client();
    // Objects a killed process held stay locked (and their deliveries hidden) for up to the
    // 30 s lease TTL and ack-wait: then they are reconciled.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let definitions = loop {
        let definitions = all_definitions(&http, &server.base, &token).await;
        let waiting: Vec<&Value> = definitions
            .iter()
            .filter(|d| d["status"]["state"] != "reconciled")
            .collect();
        if waiting.is_empty() {
            break definitions;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} definitions never reconciled after {stop:?}, e.g. {}",
            waiting.len(),
            definitions.len(),
            waiting[0]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let stored: std::collections::HashSet<&str> = definitions
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    for id in &accepted {
        assert!(
            stored.contains(id.as_str()),
            "accepted definition {id} was lost"
        );
    }
    for definition in &definitions {
        let status = &definition["status"];
        assert_eq!(status["failures"], 0, "a reconcile failed: {definition}");
        let warnings: Vec<&Value> = status["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "Warning")
            .collect();
        assert!(warnings.is_empty(), "warnings recorded: {definition}");
    }
    let metrics = metrics_text(&http, &server.base).await;
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "controller_runtime_leases_lost_total{controller=\"workload-definition-controller\"} 0"
        )),
        "no reconcile was fenced off after losing its lease:\n{metrics}"
    );
    eprintln!(
        "{stop:?}: {} accepted, {} stored, all reconciled",
        accepted.len(),
        definitions.len()
    );
    assert!(server.terminate().await.success());
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_loses_nothing_to_kill_9() {
    stop_three_times_then_recover(Stop::Kill, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_loses_nothing_to_sigterm() {
    stop_three_times_then_recover(Stop::Term, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_with_the_bus_in_the_database_loses_nothing_to_kill_9() {
    stop_three_times_then_recover(Stop::Kill, Some(postgres::fresh_postgres().await)).await;
}
