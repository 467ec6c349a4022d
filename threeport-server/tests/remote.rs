//! Reconcilers that run elsewhere, through a `threeport-server serve` process's engine API:
//! the remote store, bus and locker pass core's conformance suites; tokens limited to a kind
//! write nothing else; two remote replica processes (the `remote_reconciler` example) share
//! 500 objects of a kind of one's own with no object reconciled twice at once; a replica
//! killed with SIGKILL mid-reconcile hands its object to the other after the lease.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use threeport_api::{Client, remote};
use threeport_core::conformance::{self, Timing};
use threeport_core::{ErrorKind, NewObject};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use common::process::{BINARY, create, send, serve, temp_dir};

/// Mints a token into `<data>/tokens` with the server's own command; limited to `kinds`.
fn mint(data: &Path, kinds: Option<&str>) -> String {
    let tokens = data.join("tokens");
    let mut args = vec!["token", "--add-to", tokens.to_str().unwrap()];
    if let Some(kinds) = kinds {
        args.extend(["--kinds", kinds]);
    }
    let out = std::process::Command::new(BINARY)
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The `remote_reconciler` example, built beside the server binary.
fn replica_binary() -> PathBuf {
    let path = Path::new(BINARY).with_file_name("remote_reconciler");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p threeport-examples` (scripts/test does)",
        path.display()
    );
    path
}

/// Starts a remote replica of `Certificate`'s reconciler; returns once it runs.
async fn replica(base: &str, token: &str, name: &str, log: &Path) -> Child {
    let mut child = Command::new(replica_binary())
        .args([base, "Certificate"])
        .env("THREEPORT_TOKEN", token)
        .env("REPLICA", name)
        .env("LEASE_MS", "2000")
        .env("RECONCILE_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the replica starts")
        .unwrap();
    assert_eq!(
        line.as_deref(),
        Some("reconciling, with the control plane's backends")
    );
    child
}

fn certificate_schema() -> Value {
    json!({
        "type": "object",
        "required": ["domain", "size"],
        "additionalProperties": false,
        "properties": {
            "domain": {"type": "string"},
            "size": {"type": "integer", "minimum": 1},
            "work_ms": {"type": "integer", "minimum": 0}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_backends_pass_the_core_conformance_suites() {
    let data = temp_dir();
    let token = mint(&data, None);
    let server = serve(&data, &[]).await;
    let client = Client::builder(&server.base).token(token).build().unwrap();
    let backends = remote::backends(&client);
    let timing = Timing {
        unit: Duration::from_millis(300),
    };
    conformance::store::run(backends.store.clone()).await;
    conformance::relations::owners_must_exist_and_are_fixed(&*backends.store).await;
    conformance::relations::orphan_deletion_keeps_dependents(&*backends.store).await;
    conformance::relations::cascades_are_refused_while_referenced_from_outside(&*backends.store)
        .await;
    conformance::locker::run(backends.locker.clone(), timing).await;
    conformance::bus::run(backends.bus.clone(), timing).await;
}

/// One reconcile: start, end (`None`: its replica never finished it) and the replica, in
/// nanoseconds since the Unix epoch.
type Run = (u128, Option<u128>, String);

/// Who reconciled what, when, from the replicas' logs, by object.
fn reconciles(logs: &[&Path]) -> HashMap<String, Vec<Run>> {
    let mut events: Vec<(u128, String, String, String)> = Vec::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let [event, id, replica, at] = parts[..] else {
                panic!("a torn log line: {line:?}")
            };
            events.push((at.parse().unwrap(), event.into(), id.into(), replica.into()));
        }
    }
    events.sort();
    let mut by_object: HashMap<String, Vec<Run>> = HashMap::new();
    for (at, event, id, replica) in events {
        let runs = by_object.entry(id).or_default();
        if event == "start" {
            runs.push((at, None, replica));
        } else {
            let open = runs
                .iter_mut()
                .rev()
                .find(|(_, end, by)| end.is_none() && *by == replica)
                .expect("an end follows its start");
            open.1 = Some(at);
        }
    }
    by_object
}

/// Asserts that no two reconciles of one object overlapped; an unfinished one (its replica
/// was killed at `killed`) counts as running until then.
fn assert_one_at_a_time(runs: &HashMap<String, Vec<Run>>, killed: Option<u128>) {
    for (id, runs) in runs {
        for pair in runs.windows(2) {
            let (_, end, by) = &pair[0];
            let end = end
                .or(killed)
                .unwrap_or_else(|| panic!("{id}: {by} never ended"));
            assert!(
                pair[1].0 >= end,
                "{id} was reconciled twice at once: {runs:?}"
            );
        }
    }
}

async fn all_certificates(base: &str, token: &str) -> Vec<Value> {
    let client = Client::builder(base).token(token).build().unwrap();
    let params = threeport_api::ListParams {
        limit: Some(1000),
        ..Default::default()
    };
    client
        .kind_at("Certificate", "certificates")
        .list_all(&params)
        .await
        .unwrap()
}

/// Waits until the certificates named by `names` (all, if `None`) are reconciled.
async fn wait_all_reconciled(base: &str, token: &str, names: Option<&[String]>) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all: Vec<Value> = all_certificates(base, token)
            .await
            .into_iter()
            .filter(|c| names.is_none_or(|n| n.iter().any(|n| c["name"] == n.as_str())))
            .collect();
        let waiting = all
            .iter()
            .filter(|c| c["status"]["state"] != "reconciled")
            .count();
        if waiting == 0 {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{waiting} of {} never reconciled",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_replicas_share_a_kind_of_ones_own() {
    let data = temp_dir();
    let admin = mint(&data, None);
    let reconciler = mint(&data, Some("Certificate"));
    let server = serve(&data, &[]).await;
    let base = server.base.clone();
    let http = common::http_client();
    create(
        &http,
        format!("{base}/v0/kind-definitions"),
        &admin,
        json!({"name": "certificates",
               "spec": {"kind": "Certificate", "schema": certificate_schema()}}),
    )
    .await;

    // A token limited to Certificate: reads anything, writes Certificates only, and only
    // through the engine API.
    let (status, body) = send(
        http.post(format!("{base}/v0/certificates"))
            .bearer_auth(&reconciler)
            .json(&json!({"name": "c", "spec": {"domain": "a", "size": 1}})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = send(
        http.get(format!("{base}/v0/workload-definitions"))
            .bearer_auth(&reconciler),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let limited = remote::backends(
        &Client::builder(&base)
            .token(reconciler.clone())
            .build()
            .unwrap(),
    );
    let spec = json!({"yaml_document": "kind: ConfigMap"});
    let refused = limited
        .store
        .create(NewObject::new("WorkloadDefinition", "w", spec))
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("cannot write WorkloadDefinition"),
        "{refused}"
    );
    let refused = limited
        .locker
        .acquire("WorkloadInstance/x", "me", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    // Objects written through the engine API are checked as the REST API checks them.
    let invalid = limited
        .store
        .create(NewObject::new(
            "Certificate",
            "c",
            json!({"domain": "a", "size": 0}),
        ))
        .await
        .unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::Invalid);
    assert!(
        invalid.to_string().starts_with("invalid spec.size"),
        "{invalid}"
    );

    // Two replica processes share 500 objects.
    let logs = [data.join("replica-a.log"), data.join("replica-b.log")];
    let mut a = replica(&base, &reconciler, "a", &logs[0]).await;
    let _b = replica(&base, &reconciler, "b", &logs[1]).await;
    let http_ref = &http;
    let created: Vec<String> = futures::stream::iter(0..500)
        .map(|i| {
            let base = base.clone();
            let admin = admin.clone();
            async move {
                create(
                    http_ref,
                    format!("{base}/v0/certificates"),
                    &admin,
                    json!({"name": format!("cert-{i}"),
                           "spec": {"domain": format!("c{i}.example.com"), "size": 1}}),
                )
                .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(created.len(), 500);
    let all = wait_all_reconciled(&base, &admin, None).await;
    let mut per_replica = BTreeMap::<String, usize>::new();
    for cert in &all {
        let by = cert["status"]["details"]["reconciled_by"].as_str().unwrap();
        *per_replica.entry(by.to_owned()).or_default() += 1;
    }
    assert_eq!(
        per_replica.len(),
        2,
        "both replicas took work: {per_replica:?}"
    );
    let log_paths: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    let runs = reconciles(&log_paths);
    assert_eq!(runs.len(), 500, "every object was reconciled");
    assert_one_at_a_time(&runs, None);

    // Replica a is killed mid-reconcile: b finishes its object once the lease runs out. More
    // slow objects than one replica has workers, so both take some.
    let slow: Vec<String> = (0..20).map(|i| format!("slow-{i}")).collect();
    for name in &slow {
        create(
            &http,
            format!("{base}/v0/certificates"),
            &admin,
            json!({"name": name, "spec": {"domain": "slow.example.com", "size": 1,
                                         "work_ms": 1500}}),
        )
        .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let taken_by_a = loop {
        let runs = reconciles(&log_paths);
        let open = runs.iter().find_map(|(id, runs)| {
            runs.iter()
                .any(|(_, end, by)| end.is_none() && by == "a")
                .then(|| id.clone())
        });
        if let Some(id) = open {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a never took a slow one"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    a.kill().await.unwrap();
    let killed = unix_nanos();
    let finished = wait_all_reconciled(&base, &admin, Some(&slow)).await;
    let handed_over = finished
        .iter()
        .find(|c| c["id"] == taken_by_a.as_str())
        .expect("the object a was reconciling");
    assert_eq!(handed_over["status"]["details"]["reconciled_by"], "b");
    let runs = reconciles(&log_paths);
    assert_one_at_a_time(&runs, Some(killed));

    // Deleting one: its remote reconciler cleans up and the object goes.
    let id = &created[0];
    let (status, body) = send(
        http.delete(format!("{base}/v0/certificates/{id}"))
            .bearer_auth(&admin),
    )
    .await;
    assert!(status.is_success(), "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = send(
            http.get(format!("{base}/v0/certificates/{id}"))
                .bearer_auth(&admin),
        )
        .await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The replica's long-poll does not hold up a stopping server (at most 10 s).
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_reach_a_remote_reconciler_and_are_never_stored() {
    let data = temp_dir();
    let token = mint(&data, None);
    let server = serve(&data, &[]).await;
    let base = server.base.clone();
    let http = common::http_client();
    create(
        &http,
        format!("{base}/v0/kind-definitions"),
        &token,
        json!({"name": "vaults", "spec": {"kind": "Vault", "secret_field": "credentials",
               "schema": {"type": "object", "additionalProperties": false,
                          "properties": {"address": {"type": "string"}}}}}),
    )
    .await;
    let (status, body) = send(
        http.post(format!("{base}/v0/kind-definitions"))
            .bearer_auth(&token)
            .json(
                &json!({"name": "bad", "spec": {"kind": "Bad", "secret_field": "a.b",
                          "schema": {"type": "object"}}}),
            ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "spec.secret_field");

    let client = Client::builder(&base).token(token.clone()).build().unwrap();
    let backends = remote::backends(&client);
    let mut subscription = backends
        .bus
        .subscribe(threeport_core::SubscribeOptions::new(
            "vault-controller",
            "Vault",
        ))
        .await
        .unwrap();
    let id = create(
        &http,
        format!("{base}/v0/vaults"),
        &token,
        json!({"name": "main", "spec": {"address": "https://vault.example.com",
                                        "credentials": {"password": "hunter2-secret"}}}),
    )
    .await;
    let secret = loop {
        let delivery = tokio::time::timeout(Duration::from_secs(15), subscription.next())
            .await
            .expect("a delivery")
            .unwrap()
            .expect("the bus is open");
        assert_eq!(delivery.notification.id.to_string(), id);
        let secret = delivery.notification.secret.clone();
        delivery.ack().await.unwrap();
        if let Some(secret) = secret {
            break secret;
        }
    };
    assert_eq!(secret.0["password"], "hunter2-secret");
    let stored = backends
        .store
        .get("Vault", id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(stored.spec, json!({"address": "https://vault.example.com"}));
    // Through the engine API too, secret values are not taken (they would be stored).
    let refused = backends
        .store
        .create(NewObject::new(
            "Vault",
            "other",
            json!({"credentials": {"password": "x"}}),
        ))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().starts_with("invalid spec.credentials"),
        "{refused}"
    );
    drop(subscription);
    drop(server);
    for file in std::fs::read_dir(&data).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap_or_default();
        assert!(
            !bytes.windows(14).any(|w| w == b"hunter2-secret"),
            "a secret value reached the data directory"
        );
    }
}
