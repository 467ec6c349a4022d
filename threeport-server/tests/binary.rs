//! The `threeport-server` binary, run as a user would: the embedded default (SQLite in a
//! data directory, bus in the database), tokens, health endpoints, secrets, SIGTERM, restart.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::Command;

use common::process::{
    BINARY, Server, agent, controllers, create, metrics_text, register_cluster, send, serve, start,
    temp_dir, wait_for, wait_reconciled,
};

fn files_contain(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle)
    })
}

const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n";

#[tokio::test]
async fn embedded_control_plane_end_to_end() {
    let data = temp_dir();
    let server = serve(&data, &[]).await;
    let token = server
        .token
        .clone()
        .expect("a first start mints and prints a token");
    let http = common::http_client();
    let accounts = format!("{}/v0/aws-accounts", server.base);
    let account = json!({
        "name": "main",
        "spec": {
            "account_id": "123456789012",
            "default_region": "us-east-1",
            "credentials": {"role": {"role_arn": "arn:aws:iam::123456789012:role/threeport"}}
        }
    });

    // No token, a wrong token: 401. The right one: created, with Threeport's defaults filled in.
    let (status, err) = send(http.post(&accounts).json(&account)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    let (status, _) = send(http.post(&accounts).bearer_auth("tp_wrong").json(&account)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, created) = send(http.post(&accounts).bearer_auth(&token).json(&account)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["default_account"], false);
    let account_id = created["id"].as_str().unwrap().to_owned();

    // A secret access key is stored sealed: the API answers with the sealed form only.
    let access_key = format!("wJalr-{}", uuid::Uuid::now_v7().simple());
    let (status, keyed) = send(
        http.post(&accounts).bearer_auth(&token).json(&json!({
            "name": "keyed",
            "spec": {"account_id": "210987654321", "default_region": "eu-west-1",
                     "credentials": {"access_keys": {"access_key_id": "AKIA", "secret_access_key": access_key}}}
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{keyed}");
    let stored = keyed["spec"]["credentials"]["access_keys"]["secret_access_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        stored.starts_with("sealed:v1:") && !stored.contains(&access_key),
        "{stored}"
    );
    // Sent back as read (a PUT of the object), it stays sealed, not sealed twice.
    let (status, again) = send(
        http.put(format!("{accounts}/{}", keyed["id"].as_str().unwrap()))
            .bearer_auth(&token)
            .json(&json!({"spec": keyed["spec"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        again["spec"]["credentials"]["access_keys"]["secret_access_key"],
        stored
    );

    // Secret values are accepted, never stored.
    let value = format!("s3cr3t-{}", uuid::Uuid::now_v7().simple());
    let (status, secret) = send(
        http.post(format!("{}/v0/secret-definitions", server.base))
            .bearer_auth(&token)
            .json(&json!({
                "name": "db-password",
                "spec": {"aws_account": account_id, "data": {"password": value}}
            })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{secret}");
    assert_eq!(secret["spec"], json!({"aws_account": account_id}));

    // The workload-definition controller runs in the same process.
    let (status, definition) = send(
        http.post(format!("{}/v0/workload-definitions", server.base))
            .bearer_auth(&token)
            .json(&json!({"name": "web", "spec": {"yaml_document": WEB}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{definition}");
    let id = definition["id"].as_str().unwrap();
    let reconciled = wait_reconciled(&http, &server.base, &token, id).await;
    assert_eq!(
        reconciled["status"]["details"]["resource_count"], 2,
        "{reconciled}"
    );

    // Operational endpoints need no token; requests and reconciles are counted.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let response = http
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let metrics = metrics_text(&http, &server.base).await;
    for line in [
        r#"http_requests_total{method="POST",route="/v0/{plural}",status="401"} 2"#,
        r#"controller_runtime_reconcile_total{controller="workload-definition-controller",result="success"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    // One family per metric name, however many controllers (Prometheus refuses repeats), and
    // the outbox relay and the bus's redeliveries among them.
    let mut families: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let count = families.len();
    families.sort_unstable();
    families.dedup();
    assert_eq!(families.len(), count, "a metric family repeated: {metrics}");
    for family in [
        "threeport_outbox_relayed",
        "threeport_outbox_lag_seconds",
        "workqueue_redeliveries",
    ] {
        assert!(families.contains(&family), "{family} in {metrics}");
    }

    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    assert!(
        !files_contain(&data, value.as_bytes()),
        "a secret value reached the data directory"
    );
    assert!(
        !files_contain(&data, access_key.as_bytes()),
        "a secret access key reached the data directory unsealed"
    );
    assert!(
        files_contain(&data, b"123456789012"),
        "objects are stored there (the scan works)"
    );

    // Restart: the objects and the token are still there; no new token is minted.
    let again = serve(&data, &[]).await;
    assert!(again.token.is_none(), "the token is minted once");
    let (status, got) = send(
        http.get(format!("{}/v0/aws-accounts/{account_id}", again.base))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["name"], "main");
    assert!(again.terminate().await.success());
}

#[tokio::test]
async fn dev_mode_needs_no_token_and_unknown_controllers_are_refused() {
    let data = temp_dir();
    let server = serve(&data, &["--dev"]).await;
    let (status, page) =
        send(common::http_client().get(format!("{}/v0/gateway-definitions", server.base))).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(server.terminate().await.success());

    let output = Command::new(BINARY)
        .args(["controller", "no-such"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no controller named"));

    // A shared database needs a shared encryption key, said before anything starts.
    let output = Command::new(BINARY)
        .args([
            "api",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
            "--data-dir",
        ])
        .arg(&data)
        .env_remove("THREEPORT_ENCRYPTION_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("shared encryption key"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[path = "../../threeport-store/tests/common/mod.rs"]
mod postgres;

#[path = "../../threeport-bus/tests/common/mod.rs"]
mod nats;

/// A control plane on PostgreSQL + NATS, as separate processes would run it: a fresh
/// database, a NATS server, a token file and a shared encryption key; roles start on demand.
struct Distributed {
    nats: nats::NatsServer,
    data: PathBuf,
    plane: Vec<String>,
    token: String,
}

impl Distributed {
    async fn new() -> Self {
        let database = postgres::fresh_postgres().await;
        let nats = nats::NatsServer::start().await;
        let data = temp_dir();
        let minted = threeport_server::auth::mint_token().unwrap();
        std::fs::write(data.join("tokens"), format!("{}\n", minted.hash)).unwrap();
        let plane = vec![
            "--database-url".to_owned(),
            database,
            "--nats-url".to_owned(),
            nats.url.clone(),
            "--encryption-key-file".to_owned(),
            data.join("encryption.key").to_str().unwrap().to_owned(),
        ];
        Distributed {
            nats,
            data,
            plane,
            token: minted.token,
        }
    }

    /// An `api` process.
    async fn api(&self) -> Server {
        let tokens = self.data.join("tokens");
        let mut flags: Vec<&str> = self.plane.iter().map(String::as_str).collect();
        flags.extend(["--token-file", tokens.to_str().unwrap()]);
        let api = start("api", &self.data, &flags).await;
        assert!(api.token.is_none(), "a given token file mints nothing");
        api
    }

    /// A `controller <names>` process; returns it and the URL of its metrics.
    async fn controllers(&self, names: &[&str]) -> (Server, String) {
        let flags: Vec<&str> = self.plane.iter().map(String::as_str).collect();
        controllers(names, &flags).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_processes_share_postgres_and_nats() {
    use threeport_core::{Bus, SubscribeOptions};

    let mut plane = Distributed::new().await;
    let (a, b) = (plane.api().await, plane.api().await);
    let minted_token = plane.token.clone();

    // Controllers would hear of every change through NATS.
    let client = threeport_bus::connect(&plane.nats.url, Duration::from_secs(5))
        .await
        .unwrap();
    let bus = threeport_bus::NatsBus::new(client, threeport_bus::NatsConfig::default());
    let mut notes = bus
        .subscribe(SubscribeOptions::new(
            "aws-account-controller",
            "AwsAccount",
        ))
        .await
        .unwrap();

    let http = common::http_client();
    let account = json!({
        "name": "shared",
        "spec": {"account_id": "123456789012", "default_region": "us-east-1",
                 "credentials": {"access_keys": {"access_key_id": "AKIA", "secret_access_key": "wJalrXUtnFEMI"}}}
    });
    let (status, created) = send(
        http.post(format!("{}/v0/aws-accounts", a.base))
            .bearer_auth(&minted_token)
            .json(&account),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // The other process sees it, and a write from a stale version loses there too.
    let (status, got) = send(
        http.get(format!("{}/v0/aws-accounts/{id}", b.base))
            .bearer_auth(&minted_token),
    )
    .await;
    assert_eq!(
        (status, got["name"].as_str()),
        (StatusCode::OK, Some("shared"))
    );
    let (status, _) = send(
        http.patch(format!("{}/v0/aws-accounts/{id}", a.base))
            .bearer_auth(&minted_token)
            .json(&json!({"labels": {"by": "a"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        http.patch(format!("{}/v0/aws-accounts/{id}", b.base))
            .bearer_auth(&minted_token)
            .header("If-Match", "1")
            .json(&json!({"labels": {"by": "b"}})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = send(
        http.post(format!("{}/v0/aws-accounts", b.base))
            .bearer_auth(&minted_token)
            .json(&account),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "names are unique across processes"
    );

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), notes.next())
            .await
            .expect("notified through NATS")
            .unwrap()
            .unwrap();
        seen.push(delivery.notification.operation);
        delivery.ack().await.unwrap();
    }
    assert_eq!(
        seen,
        [
            threeport_core::Operation::Created,
            threeport_core::Operation::Updated
        ]
    );

    // Readiness follows the bus.
    let ready = http.get(format!("{}/readyz", a.base)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    plane.nats.stop().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = send(http.get(format!("{}/readyz", a.base))).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(body["failing"]["bus"].is_string(), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never unready without NATS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    plane.nats.restart().await;
    assert!(a.terminate().await.success());
    assert!(b.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_and_two_controller_processes_on_postgres_and_nats() {
    let plane = Distributed::new().await;
    let api = plane.api().await;
    let mut controllers = Vec::new();
    for _ in 0..2 {
        // The definitions' records are removed by the passive controller when a definition's
        // deletion cascades to them.
        controllers.push(plane.controllers(&["workload-definition", "passive"]).await);
    }
    let minted_token = plane.token.clone();

    let http = common::http_client();
    let mut ids = Vec::new();
    for n in 0..20 {
        let (status, created) = send(
            http.post(format!("{}/v0/workload-definitions", api.base))
                .bearer_auth(&minted_token)
                .json(&json!({"name": format!("web-{n}"), "spec": {"yaml_document": WEB}})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let got = wait_reconciled(&http, &api.base, &minted_token, id).await;
        assert_eq!(got["status"]["details"]["resource_count"], 2);
    }
    let (_, records) = send(
        http.get(format!(
            "{}/v0/workload-resource-definitions?limit=1000",
            api.base
        ))
        .bearer_auth(&minted_token),
    )
    .await;
    assert_eq!(
        records["items"].as_array().unwrap().len(),
        40,
        "two records per definition"
    );

    // Between them the two processes reconciled each definition (successfully) once.
    let mut successes = 0;
    for (_, metrics) in &controllers {
        let text = http
            .get(metrics)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        successes += text
            .lines()
            .filter(|l| {
                l.starts_with("controller_runtime_reconcile_total")
                    && l.contains("workload-definition-controller")
                    && l.contains("result=\"success\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    assert_eq!(successes, 20);

    // Deleting a definition removes its records too.
    let (status, _) = send(
        http.delete(format!("{}/v0/workload-definitions/{}", api.base, ids[0]))
            .bearer_auth(&minted_token),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = send(
            http.get(format!("{}/v0/workload-definitions/{}", api.base, ids[0]))
                .bearer_auth(&minted_token),
        )
        .await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, records) = send(
        http.get(format!(
            "{}/v0/workload-resource-definitions?limit=1000",
            api.base
        ))
        .bearer_auth(&minted_token),
    )
    .await;
    assert_eq!(records["items"].as_array().unwrap().len(), 38);

    for (controller, _) in controllers {
        assert!(controller.terminate().await.success());
    }
    assert!(api.terminate().await.success());
}

/// A runtime watched by `threeport-server agent` (as if inside the cluster) instead of the
/// control plane: the agent reports health and events through the API with its own token;
/// killed and started again, it duplicates no event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reports_health_through_the_api() {
    use threeport_k8s::{FakeApiServer, MemoryCluster, PodState, ResourceRef};
    use threeport_server::auth::mint_token;
    let kube = FakeApiServer::start_with_token(MemoryCluster::new(), "cluster-token")
        .await
        .unwrap();
    let data = temp_dir();
    // A token for people and one of its own for the agent.
    let (person, agent_token) = (mint_token().unwrap(), mint_token().unwrap());
    let tokens = data.join("tokens");
    std::fs::write(&tokens, format!("{}\n{}\n", person.hash, agent_token.hash)).unwrap();
    let server = serve(
        &data,
        &[
            "--health-poll-ms",
            "100",
            "--token-file",
            tokens.to_str().unwrap(),
        ],
    )
    .await;
    let base = server.base.clone();
    let token = person.token;
    let http = common::http_client();
    let api = |path: &str| format!("{base}/v0/{path}");
    let definition = create(
        &http,
        api("kubernetes-runtime-definitions"),
        &token,
        json!({"name": "existing", "spec": {"infra_provider": "existing"}}),
    )
    .await;
    create(
        &http,
        api("kubernetes-runtime-instances"),
        &token,
        json!({"name": "remote", "spec": {
            "definition": definition, "location": "Europe:Paris", "default_runtime": true,
            "agent": {"api_url": base, "token": agent_token.token},
            "connection": {"api_endpoint": kube.url, "token": "cluster-token"}}}),
    )
    .await;
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n";
    let (_, instance) = deploy(&http, &base, &token, "web", yaml).await;
    let url = api(&format!("workload-instances/{instance}"));
    let deployed = wait_for(&http, &url, &token, |o| {
        o["status"]["state"] == "reconciled"
    })
    .await;
    let namespace = deployed["status"]["details"]["namespace"]
        .as_str()
        .unwrap()
        .to_owned();
    let deployment = ResourceRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        namespace: Some(namespace),
        name: "web".into(),
    };
    // Nobody watches the runtime yet: the control plane leaves it to its agent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(kube.cluster.open_watches(), 0);
    let got = send(http.get(&url).bearer_auth(&token)).await.1;
    assert!(got["status"]["details"]["health"].is_null(), "{got}");

    let agent_flags = [
        "--api-url",
        base.as_str(),
        "--api-token",
        agent_token.token.as_str(),
        "--kube-url",
        kube.url.as_str(),
        "--kube-token",
        "cluster-token",
    ];
    let watching = agent(&agent_flags).await;
    kube.cluster
        .set_pods(&deployment, PodState::Ready, 1)
        .unwrap();
    wait_for(&http, &url, &token, |o| {
        o["status"]["details"]["health"]["status"] == "healthy"
    })
    .await;
    kube.cluster
        .set_pods(&deployment, PodState::CrashLoop, 1)
        .unwrap();
    let degraded = wait_for(&http, &url, &token, |o| {
        o["status"]["details"]["health"]["status"] == "degraded"
            && o["status"]["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["reason"] == "BackOff"))
    })
    .await;
    let uids = |o: &Value| -> Vec<String> {
        o["status"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["uid"].as_str().map(str::to_owned))
            .collect()
    };
    let before = uids(&degraded);

    // Killed and started again: it lists every event anew, and adds none twice.
    watching.kill().await;
    let watching = agent(&agent_flags).await;
    kube.cluster
        .set_pods(&deployment, PodState::Ready, 1)
        .unwrap();
    let healthy = wait_for(&http, &url, &token, |o| {
        o["status"]["details"]["health"]["status"] == "healthy"
    })
    .await;
    let after = uids(&healthy);

    // What a person sees: the health column, the resources and the cluster's events.
    let tptctl = Path::new(BINARY).with_file_name("tptctl");
    let run = |args: &[&str]| {
        let mut command = Command::new(&tptctl);
        command
            .args(["--url", base.as_str(), "--token", token.as_str()])
            .args(args)
            .env("TPTCTL_CONFIG", data.join("tptctl.yaml"));
        async move {
            let output = command.output().await.unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap()
        }
    };
    let listed = run(&["get", "workload-instances"]).await;
    assert!(
        listed.contains("HEALTH") && listed.contains("healthy"),
        "{listed}"
    );
    let described = run(&["describe", "workload-instance", "-n", "web"]).await;
    assert!(described.contains("health:     healthy"), "{described}");
    let deployment_row = described
        .lines()
        .find(|l| l.trim_start().starts_with("Deployment"))
        .unwrap_or_else(|| panic!("a resources row: {described}"));
    assert!(deployment_row.contains("healthy"), "{described}");
    let backoff = described
        .lines()
        .find(|l| l.contains("BackOff"))
        .unwrap_or_else(|| panic!("the warning event: {described}"));
    assert!(
        backoff.contains("Warning") && backoff.contains("Pod "),
        "{described}"
    );

    let mut unique = after.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), after.len(), "no event twice: {after:?}");
    assert!(before.iter().all(|uid| after.contains(uid)));

    // A report for an instance that does not exist, or a bad one, is refused clearly.
    let missing = api("workload-instances/0190e8a0-0000-7000-8000-000000000000/health");
    let report = json!({"health": {"status": "healthy"}});
    let (status, _) = send(http.put(&missing).bearer_auth(&token).json(&report)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = send(
        http.put(format!("{url}/health"))
            .bearer_auth(&token)
            .json(&json!({"health": {"status": "fine"}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "health.status", "{body}");
    let (status, _) = send(http.put(format!("{url}/health")).json(&report)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    assert!(watching.terminate().await.success());
    assert!(server.terminate().await.success());
}

/// Creates a workload definition named `name` with `yaml` and an instance of it (on the
/// default runtime); returns both ids.
async fn deploy(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
    yaml: &str,
) -> (String, String) {
    let definition = create(
        http,
        format!("{base}/v0/workload-definitions"),
        token,
        json!({"name": name, "spec": {"yaml_document": yaml}}),
    )
    .await;
    let instance = create(
        http,
        format!("{base}/v0/workload-instances"),
        token,
        json!({"name": name, "spec": {"definition": definition}}),
    )
    .await;
    (definition, instance)
}

/// Through the API at `base`: register the fake cluster as the default runtime, deploy a
/// workload, change its manifests, delete it; checks the cluster each time.
async fn workload_lifecycle(base: &str, token: &str, kube: &threeport_k8s::FakeApiServer) {
    use threeport_k8s::{Cluster, ResourceRef};

    let token = token.to_owned();
    let http = common::http_client();
    let api = |path: &str| format!("{base}/v0/{path}");

    // An existing cluster, registered by its connection data, becomes the default runtime.
    let runtime = register_cluster(&http, base, &token, kube).await;
    wait_for(
        &http,
        &api(&format!("kubernetes-runtime-instances/{runtime}")),
        &token,
        |o| o["status"]["state"] == "reconciled",
    )
    .await;

    let three = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n";
    let (definition, instance) = deploy(&http, base, &token, "web", three).await;
    let instance_url = api(&format!("workload-instances/{instance}"));
    let deployed = wait_for(&http, &instance_url, &token, |o| {
        o["status"]["state"] == "reconciled"
            && o["status"]["details"]["resources"]
                .as_array()
                .is_some_and(|r| r.len() == 4)
    })
    .await;
    let namespace = deployed["status"]["details"]["namespace"]
        .as_str()
        .expect("a generated namespace")
        .to_owned();
    assert_eq!(
        deployed["spec"]["runtime"], runtime,
        "the API names the default runtime in the spec"
    );
    assert_eq!(deployed["generation"], 1, "no controller wrote the spec");
    let deployment = ResourceRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        namespace: Some(namespace.clone()),
        name: "web".into(),
    };
    let live = kube
        .cluster
        .get(&deployment)
        .await
        .unwrap()
        .expect("deployed to the cluster");
    assert_eq!(
        live["metadata"]["labels"]["threeport.io/workload-instance"],
        instance
    );
    assert_eq!(
        live["spec"]["template"]["metadata"]["labels"]["threeport.io/workload-instance"],
        instance
    );
    assert_eq!(live["metadata"]["managedFields"][0]["manager"], "threeport");

    // The runtime hosts a workload: it cannot go.
    let (status, _) = send(
        http.delete(api(&format!("kubernetes-runtime-instances/{runtime}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A new manifest: the deployment changes, the config map goes.
    let two = three.replace("replicas: 1", "replicas: 3").replace(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n",
        "",
    );
    let (status, body) = send(
        http.patch(api(&format!("workload-definitions/{definition}")))
            .bearer_auth(&token)
            .json(&json!({"spec": {"yaml_document": two}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for(&http, &instance_url, &token, |o| {
        o["status"]["state"] == "reconciled"
            && o["status"]["details"]["resources"]
                .as_array()
                .is_some_and(|r| r.len() == 3)
    })
    .await;
    let live = kube.cluster.get(&deployment).await.unwrap().unwrap();
    assert_eq!(live["spec"]["replicas"], 3);
    let settings = ResourceRef {
        kind: "ConfigMap".into(),
        api_version: "v1".into(),
        name: "settings".into(),
        namespace: Some(namespace.clone()),
    };
    assert!(
        kube.cluster.get(&settings).await.unwrap().is_none(),
        "dropped from the manifests, deleted"
    );

    // Deleting the instance removes everything it deployed, namespace last.
    let (status, _) = send(http.delete(&instance_url).bearer_auth(&token)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while send(http.get(&instance_url).bearer_auth(&token)).await.0 != StatusCode::NOT_FOUND {
        assert!(
            tokio::time::Instant::now() < deadline,
            "instance never removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(kube.cluster.get(&deployment).await.unwrap().is_none());
    let ns = ResourceRef {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: namespace,
    };
    assert!(kube.cluster.get(&ns).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_reach_a_cluster_follow_their_manifests_and_leave() {
    use threeport_k8s::{FakeApiServer, MemoryCluster};

    let kube = FakeApiServer::start_with_token(MemoryCluster::new(), "cluster-token")
        .await
        .unwrap();
    let server = serve(&temp_dir(), &[]).await;
    workload_lifecycle(&server.base, server.token.as_deref().unwrap(), &kube).await;
    assert!(server.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_with_two_controller_replicas_on_postgres_and_nats() {
    use threeport_k8s::{FakeApiServer, MemoryCluster};

    let kube = FakeApiServer::start_with_token(MemoryCluster::new(), "cluster-token")
        .await
        .unwrap();
    let plane = Distributed::new().await;
    let api = plane.api().await;
    let names = [
        "workload-definition",
        "workload-instance",
        "kubernetes-runtime",
    ];
    let replicas = [
        plane.controllers(&names).await,
        plane.controllers(&names).await,
    ];
    workload_lifecycle(&api.base, &plane.token, &kube).await;
    for (replica, _) in replicas {
        assert!(replica.terminate().await.success());
    }
    assert!(api.terminate().await.success());
}

#[path = "../../threeport-aws/tests/common/mod.rs"]
mod moto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_services_reach_their_workload_through_the_api() {
    use threeport_k8s::{Cluster, FakeApiServer, MemoryCluster, ResourceRef};

    let moto = moto::moto().await;
    let cluster = MemoryCluster::new();
    common::install_external_secrets_crd(&cluster).await;
    let kube = FakeApiServer::start_with_token(cluster, "cluster-token")
        .await
        .unwrap();
    let server = serve(&temp_dir(), &["--aws-endpoint", &moto.url]).await;
    let token = server.token.clone().unwrap();
    let http = common::http_client();
    let api = |path: &str| format!("{}/v0/{path}", server.base);
    let post = |path: &str, body: Value| create(&http, api(path), &token, body);

    let account = post(
        "aws-accounts",
        json!({"name": "main", "spec": {"account_id": "123456789012",
            "default_region": "us-east-1", "default_account": true,
            "credentials": {"access_keys": {"access_key_id": "testing",
                                            "secret_access_key": "testing"}}}}),
    )
    .await;
    register_cluster(&http, &server.base, &token, &kube).await;
    let shop = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\nspec:\n  selector: {matchLabels: {app: shop}}\n  template:\n    metadata: {labels: {app: shop}}\n    spec:\n      serviceAccountName: shop\n      containers: [{name: shop, image: shop}]\n";
    let (_, workload) = deploy(&http, &server.base, &token, "shop", shop).await;
    let deployed = wait_for(
        &http,
        &api(&format!("workload-instances/{workload}")),
        &token,
        |o| o["status"]["state"] == "reconciled",
    )
    .await;
    let namespace = deployed["status"]["details"]["namespace"]
        .as_str()
        .unwrap()
        .to_owned();

    let database_def = post(
        "aws-relational-database-definitions",
        json!({"name": "orders", "spec": {"aws_account": account, "engine": "postgres",
            "engine_version": "16.4", "database_name": "orders", "database_port": 5432,
            "storage_gb": 20, "workload_secret_name": "orders-db"}}),
    )
    .await;
    let database = post(
        "aws-relational-database-instances",
        json!({"name": "orders", "spec": {"definition": database_def, "workload_instance": workload}}),
    )
    .await;
    let bucket_def = post(
        "aws-object-storage-bucket-definitions",
        json!({"name": "media", "spec": {"aws_account": account,
            "workload_service_account_name": "shop", "workload_bucket_env_var": "MEDIA_BUCKET"}}),
    )
    .await;
    post(
        "aws-object-storage-bucket-instances",
        json!({"name": "media", "spec": {"definition": bucket_def, "workload_instance": workload}}),
    )
    .await;
    let secret_def = post(
        "secret-definitions",
        json!({"name": "api-keys", "spec": {"aws_account": account, "data": {"stripe": "sk_live_1"}}}),
    )
    .await;
    post(
        "secret-instances",
        json!({"name": "api-keys", "spec": {"definition": secret_def, "workload_instance": workload}}),
    )
    .await;

    let get = |kind: &str, api_version: &str, name: &str| ResourceRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: Some(namespace.clone()),
        name: name.into(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (secret, deployment, account_sa, external) = loop {
        let secret = kube
            .cluster
            .get(&get("Secret", "v1", "orders-db"))
            .await
            .unwrap();
        let deployment = kube
            .cluster
            .get(&get("Deployment", "apps/v1", "shop"))
            .await
            .unwrap();
        let account_sa = kube
            .cluster
            .get(&get("ServiceAccount", "v1", "shop"))
            .await
            .unwrap();
        let external = kube
            .cluster
            .get(&get("ExternalSecret", "external-secrets.io/v1", "api-keys"))
            .await
            .unwrap();
        let env_set = deployment.as_ref().is_some_and(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"] == "MEDIA_BUCKET"
        });
        if let (Some(secret), true, Some(account_sa), Some(external)) =
            (&secret, env_set, &account_sa, &external)
        {
            break (
                secret.clone(),
                deployment.clone().unwrap(),
                account_sa.clone(),
                external.clone(),
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all there: secret {secret:?} deployment {deployment:?} sa {account_sa:?} external {external:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        secret["stringData"]["db-endpoint"]
            .as_str()
            .is_some_and(|h| h.contains("rds")),
        "{secret}"
    );
    assert_eq!(secret["stringData"]["db-user"], "threeport");
    let bucket = deployment["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(bucket.starts_with("tp-shop-"), "{bucket}");
    assert!(
        account_sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            .as_str()
            .is_some_and(|arn| arn.contains(":role/")),
        "{account_sa}"
    );
    assert_eq!(
        external["spec"]["dataFrom"][0]["extract"]["key"],
        "threeport/api-keys"
    );
    // The database password is sealed in threeport's store; the secret's value is not there.
    let (_, stored) = send(
        http.get(api(&format!(
            "aws-relational-database-instances/{database}"
        )))
        .bearer_auth(&token),
    )
    .await;
    let sealed = stored["status"]["details"]["master_password"]
        .as_str()
        .unwrap();
    assert!(sealed.starts_with("sealed:"), "{sealed}");
    let password = secret["stringData"]["db-password"].as_str().unwrap();
    assert!(!stored.to_string().contains(password));
    assert!(server.terminate().await.success());
}
