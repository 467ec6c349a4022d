//! The endpoints behind the web console, over HTTP: `/v0/overview` (what fails first),
//! `/v0/<plural>/<id>/related` (both ways), `/v0/<plural>/<id>/retry`, `/v0/configs` (tptctl
//! configs as text) and `/v0/watch` (server-sent changes, ended when the server stops).

mod common;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use threeport_core::object::{LifecycleState, ObjectId, Status};
use threeport_core::store::StatusWrite;
use threeport_core::{Bus, MemoryBus, MemoryStore, Operation, Store, SubscribeOptions};
use threeport_server::watch::ChangeFeed;
use threeport_server::{ApiState, Ops, Sealer, app, model};
use tokio_util::sync::CancellationToken;

struct Plane {
    base: String,
    store: Arc<dyn Store>,
    bus: Arc<MemoryBus>,
    http: reqwest::Client,
    stopping: CancellationToken,
}

/// The whole API, without authentication, on a memory store whose writes are watched.
async fn plane() -> Plane {
    let changes = ChangeFeed::new(Duration::from_secs(60));
    let store = changes.observe(Arc::new(MemoryStore::new()));
    let bus = Arc::new(MemoryBus::new());
    let state = ApiState {
        store: store.clone(),
        bus: bus.clone(),
        locker: Arc::new(threeport_core::MemoryLocker::new()),
        kinds: Arc::new(model::registry()),
        sealer: Arc::new(Sealer::ephemeral().unwrap()),
    };
    let stopping = CancellationToken::new();
    let ops = Ops {
        changes,
        stopping: stopping.clone(),
        ..Ops::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app(state, None, ops);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Plane {
        base: format!("http://{addr}"),
        store,
        bus,
        http: common::http_client(),
        stopping,
    }
}

impl Plane {
    async fn call(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// What `/metrics` says.
    async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.base);
        let response = self.http.get(url).send().await.unwrap();
        response.text().await.unwrap()
    }

    async fn config(&self, text: &str, apply: bool) -> (StatusCode, Value) {
        let url = format!("{}/v0/configs?apply={apply}", self.base);
        self.call(self.http.post(url).body(text.to_owned())).await
    }

    /// Sets `kind`/`id`'s lifecycle state, as a controller would.
    async fn stop(&self, kind: &str, id: &str, state: LifecycleState, reason: &str) {
        let id: ObjectId = id.parse().unwrap();
        let current = self.store.get(kind, id).await.unwrap();
        let status = Status {
            state,
            reason: Some(reason.to_owned()),
            observed_generation: current.meta.generation,
            ..Status::default()
        };
        let write = StatusWrite {
            expected_version: None,
            fence: None,
            status,
        };
        self.store.update_status(kind, id, write).await.unwrap();
    }
}

const RUNTIME: &str =
    "KubernetesRuntime:\n  Name: edge\n  InfraProvider: kind\n  Location: Europe:Paris\n";
const WORKLOAD: &str = "Workload:\n  Name: shop\n  YAML: |\n    apiVersion: v1\n    kind: ConfigMap\n    metadata:\n      name: shop\n  KubernetesRuntimeInstance:\n    Name: edge\n";

fn id_of(answer: &Value, kind: &str) -> String {
    answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {answer}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_overview_shows_what_fails_first_and_related_goes_both_ways() {
    let p = plane().await;
    let (status, runtime) = p.config(RUNTIME, false).await;
    assert_eq!(status, StatusCode::OK, "{runtime}");
    let (status, workload) = p.config(WORKLOAD, false).await;
    assert_eq!(status, StatusCode::OK, "{workload}");
    let edge = id_of(&runtime, "KubernetesRuntimeInstance");
    let shop = id_of(&workload, "WorkloadInstance");
    let shop_definition = id_of(&workload, "WorkloadDefinition");
    p.stop(
        "KubernetesRuntimeInstance",
        &edge,
        LifecycleState::CreationFailed,
        "no connection data",
    )
    .await;
    p.stop(
        "WorkloadInstance",
        &shop,
        LifecycleState::Interrupted,
        "cleanup gave up",
    )
    .await;

    let (status, overview) = p.call(p.http.get(format!("{}/v0/overview", p.base))).await;
    assert_eq!(status, StatusCode::OK, "{overview}");
    let attention: Vec<(&str, &str)> = overview["attention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap(), o["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        attention,
        [("shop", "interrupted"), ("edge", "creation_failed")]
    );
    assert_eq!(overview["attention"][0]["reason"], "cleanup gave up");
    assert_eq!(overview["runtimes"][0]["name"], "edge");
    assert_eq!(overview["workloads"][0]["plural"], "workload-instances");
    let kinds = overview["kinds"].as_array().unwrap();
    let instances = kinds
        .iter()
        .find(|k| k["kind"] == "WorkloadInstance")
        .unwrap();
    assert_eq!(instances["total"], 1);
    assert_eq!(instances["states"], json!({"interrupted": 1}));
    let accounts = kinds.iter().find(|k| k["kind"] == "AwsAccount").unwrap();
    assert_eq!(
        accounts["sealed_fields"],
        json!(["credentials.access_keys.secret_access_key"])
    );

    // From the instance: its definition and runtime, and its owner.
    let url = format!("{}/v0/workload-instances/{shop}/related", p.base);
    let (status, related) = p.call(p.http.get(url)).await;
    assert_eq!(status, StatusCode::OK, "{related}");
    let references: Vec<(&str, &str)> = related["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["field"].as_str().unwrap(), l["name"].as_str().unwrap()))
        .collect();
    assert!(references.contains(&("definition", "shop")), "{related}");
    assert!(references.contains(&("runtime", "edge")), "{related}");
    assert_eq!(related["owners"][0]["id"], shop_definition);
    // And back: the runtime is referenced by the instance; the definition owns it.
    let url = format!("{}/v0/kubernetes-runtime-instances/{edge}/related", p.base);
    let (_, related) = p.call(p.http.get(url)).await;
    assert_eq!(related["referenced_by"][0]["name"], "shop", "{related}");
    assert_eq!(related["referenced_by"][0]["field"], "runtime");
    let url = format!(
        "{}/v0/workload-definitions/{shop_definition}/related",
        p.base
    );
    let (_, related) = p.call(p.http.get(url)).await;
    let owned: Vec<&str> = related["owns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert!(owned.contains(&"WorkloadInstance"), "{related}");
    let url = format!("{}/v0/workload-instances/not-an-id/related", p.base);
    let (status, err) = p.call(p.http.get(url)).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
}

#[tokio::test]
async fn retry_takes_up_a_stopped_object_again_and_refuses_others() {
    let p = plane().await;
    let (_, runtime) = p.config(RUNTIME, false).await;
    let edge = id_of(&runtime, "KubernetesRuntimeInstance");
    let url = format!("{}/v0/kubernetes-runtime-instances/{edge}/retry", p.base);
    let (status, err) = p.call(p.http.post(&url)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("Pending"),
        "{err}"
    );

    p.stop(
        "KubernetesRuntimeInstance",
        &edge,
        LifecycleState::CreationFailed,
        "no connection data",
    )
    .await;
    let (status, err) = p
        .call(p.http.post(&url).json(&json!({"force": true})))
        .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("force"))
    );
    let (status, err) = p.call(p.http.post(&url).json(&json!({"version": 1}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "a stale version: {err}");
    let (status, retried) = p.call(p.http.post(&url)).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(
        retried["generation"], 2,
        "a new generation for the controller"
    );
    assert_eq!(
        retried["spec"]["location"], "Europe:Paris",
        "the spec unchanged"
    );

    // Stopped while being deleted (its cleanup gave up): back to "deletion scheduled", and its
    // controller is told.
    let mut notified = p
        .bus
        .subscribe(SubscribeOptions::new("test", "KubernetesRuntimeInstance"))
        .await
        .unwrap();
    let url_object = format!("{}/v0/kubernetes-runtime-instances/{edge}", p.base);
    let (status, _) = p.call(p.http.delete(&url_object)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    p.stop(
        "KubernetesRuntimeInstance",
        &edge,
        LifecycleState::Interrupted,
        "cleanup gave up",
    )
    .await;
    let (status, retried) = p.call(p.http.post(&url)).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["status"]["state"], "deletion_scheduled");
    assert!(
        retried["deletion_scheduled_at"].is_string(),
        "still being deleted"
    );
    let delivery = tokio::time::timeout(Duration::from_secs(5), notified.next())
        .await
        .expect("the controller is notified")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.notification.id.to_string(), edge);
    assert_eq!(delivery.notification.operation, Operation::Deleted);
    let (status, _) = p.call(p.http.post(&url)).await;
    assert_eq!(status, StatusCode::CONFLICT, "no longer stopped");
}

#[tokio::test]
async fn configs_are_created_and_applied_as_tptctl_does_and_read_no_file() {
    let p = plane().await;
    let (status, created) = p.config(RUNTIME, false).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let outcomes: Vec<(&str, &str)> = created["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["kind"].as_str().unwrap(), i["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("KubernetesRuntimeDefinition", "created"),
            ("KubernetesRuntimeInstance", "created")
        ]
    );
    let (status, err) = p.config(RUNTIME, false).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(err["message"].as_str().unwrap().contains("exists already"));
    let (status, applied) = p.config(RUNTIME, true).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["items"][1]["outcome"], "unchanged");
    let moved = RUNTIME.replace("Europe:Paris", "Europe:Berlin");
    let (_, applied) = p.config(&moved, true).await;
    assert_eq!(applied["items"][1]["outcome"], "updated", "{applied}");

    for (text, words) in [
        (
            "WorkloadDefinition:\n  Name: x\n  YAMLDocument: /etc/passwd\n",
            &["config:3", "YAMLDocument names a file"][..],
        ),
        (
            "AwsAccount:\n  Name: a\n  AccountID: \"1\"\n  LocalCredentials: ~/.aws/credentials\n",
            &["LocalCredentials names a file"],
        ),
        ("Gadget:\n  Name: g\n", &["unknown object \"Gadget\""]),
        (
            "WorkloadDefinition:\n  Name: x\n",
            &["YAMLDocument (or YAML) is required"],
        ),
        ("- not a mapping\n", &["a config is a mapping"]),
    ] {
        let (status, err) = p.config(text, false).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}: {err}");
        assert_eq!(err["field"], "config");
        let message = err["message"].as_str().unwrap();
        for word in words {
            assert!(message.contains(word), "{text}: {message}");
        }
        assert!(!message.contains("root:"), "no file was read: {message}");
    }
    let url = format!("{}/v0/configs?apply=maybe", p.base);
    let (status, err) = p.call(p.http.post(url).body(RUNTIME)).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("apply"))
    );
}

/// The next server-sent event of `response`: (event, data).
async fn next_event(
    response: &mut reqwest::Response,
    buffer: &mut String,
) -> Option<(String, Value)> {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event:") {
                    event = rest.trim().to_owned();
                } else if let Some(rest) = line.strip_prefix("data:") {
                    data.push_str(rest.trim());
                }
            }
            if event.is_empty() {
                continue; // a keep-alive comment
            }
            return Some((event, serde_json::from_str(&data).unwrap()));
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()?;
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn the_watch_stream_announces_writes_and_ends_when_the_server_stops() {
    let p = plane().await;
    let (status, err) = p
        .call(p.http.get(format!("{}/v0/watch?since=1", p.base)))
        .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("since"))
    );

    let url = format!("{}/v0/watch?kind=KubernetesRuntimeInstance", p.base);
    let mut response = p.http.get(url).send().await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "server-sent events"
    );
    let mut buffer = String::new();
    assert_eq!(
        next_event(&mut response, &mut buffer).await.unwrap().0,
        "ready"
    );
    let metrics = p.metrics().await;
    assert!(metrics.contains("watch_streams 1"), "{metrics}");
    let (_, runtime) = p.config(RUNTIME, false).await;
    let edge = id_of(&runtime, "KubernetesRuntimeInstance");
    // Only the kind asked for: the definition created first is not announced.
    let (event, change) = next_event(&mut response, &mut buffer).await.unwrap();
    assert_eq!(event, "change");
    assert_eq!(
        (change["id"].as_str(), change["change"].as_str()),
        (Some(edge.as_str()), Some("created"))
    );
    p.stop(
        "KubernetesRuntimeInstance",
        &edge,
        LifecycleState::CreationFailed,
        "x",
    )
    .await;
    let (_, change) = next_event(&mut response, &mut buffer).await.unwrap();
    assert_eq!(
        change["change"], "status",
        "a status write is announced: {change}"
    );
    assert_eq!(change["version"], 2);

    p.stopping.cancel();
    assert!(
        next_event(&mut response, &mut buffer).await.is_none(),
        "the stream ends when the server stops"
    );
    let metrics = p.metrics().await;
    assert!(metrics.contains("watch_streams 0"), "{metrics}");
}
