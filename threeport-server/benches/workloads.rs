//! 200 workload instances of 5 resources each, created through the API of a `threeport-server
//! serve` process (the embedded default: SQLite with the bus in it, every controller), until all
//! are reconciled against the fake Kubernetes API server; the control plane process's peak
//! resident memory is read from `/proc/<pid>/status` (`VmHWM`).
//!
//! `cargo bench -p threeport-server --bench workloads` (`BENCH_INSTANCES` changes the 200).

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use threeport_k8s::{Cluster, FakeApiServer, MemoryCluster};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_threeport-server");
const CONCURRENCY: usize = 16;

const FIVE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata: {mode: production}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: web\nstringData: {password: example}\n";

fn main() {
    let instances: usize = std::env::var("BENCH_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(instances));
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn run(instances: usize) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kube = FakeApiServer::start_with_token(MemoryCluster::new(), "bench")
        .await
        .expect("fake API server");
    let data =
        std::env::temp_dir().join(format!("threeport-bench-{}", uuid::Uuid::now_v7().simple()));
    let mut server = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("THREEPORT_LOG", "warn")
        .env("THREEPORT_AWS_ENDPOINT", "http://127.0.0.1:9")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("threeport-server");
    let pid = server.id().expect("pid");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let (mut base, mut token) = (String::new(), String::new());
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(rest) = line.strip_prefix("threeport control plane on ") {
            base = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        if let Some(at) = line.find("tp_") {
            token = line[at..].trim().to_owned();
        }
        if line.starts_with("try:") {
            break;
        }
    }
    println!(
        "workloads bench: {instances} instances × 5 resources, threeport-server pid {pid} at {base}"
    );
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{base}/v0/{path}");
    let post = |path: String, body: Value| {
        let request = http.post(api(&path)).bearer_auth(&token).json(&body);
        async move {
            let response = request.send().await.expect("post");
            assert_eq!(response.status(), reqwest::StatusCode::CREATED, "{path}");
            let created: Value = response.json().await.expect("body");
            created["id"].as_str().expect("id").to_owned()
        }
    };
    let runtime_def = post(
        "kubernetes-runtime-definitions".into(),
        json!({"name": "existing", "spec": {"infra_provider": "existing"}}),
    )
    .await;
    post(
        "kubernetes-runtime-instances".into(),
        json!({"name": "local", "spec": {
        "definition": runtime_def, "location": "Europe:Paris", "default_runtime": true,
        "connection": {"api_endpoint": kube.url, "token": "bench"}}}),
    )
    .await;
    let definition = post(
        "workload-definitions".into(),
        json!({"name": "web", "spec": {"yaml_document": FIVE}}),
    )
    .await;

    let started = Instant::now();
    futures::stream::iter(0..instances)
        .for_each_concurrent(CONCURRENCY, |n| {
            let body = json!({"name": format!("web-{n}"), "spec": {"definition": definition}});
            let post = &post;
            async move {
                post("workload-instances".into(), body).await;
            }
        })
        .await;
    let created = started.elapsed();
    loop {
        let mut reconciled = 0;
        let mut after: Option<String> = None;
        loop {
            let mut url = api("workload-instances?limit=1000");
            if let Some(after) = &after {
                url.push_str(&format!("&after={after}"));
            }
            let page: Value = http
                .get(url)
                .bearer_auth(&token)
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("page");
            reconciled += page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| {
                    i["status"]["state"] == "reconciled"
                        && i["status"]["details"]["resources"]
                            .as_array()
                            .is_some_and(|r| r.len() == 6)
                })
                .count();
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        if reconciled == instances {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {reconciled} of {instances} reconciled in 10 min"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let deployed = kube
        .cluster
        .list("apps/v1", "Deployment", None)
        .await
        .expect("list")
        .len();
    let peak = peak_rss_mb(pid);
    println!(
        "  {instances} instances created through the API in {created:.2?}; all reconciled after {seconds:.2} s"
    );
    println!(
        "  deployments in the cluster: {deployed}; control plane peak RSS (VmHWM): {peak:.1} MB"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    let _ = server.wait().await;
    let _ = std::fs::remove_dir_all(&data);
    println!("RESULT workloads instances={instances} seconds={seconds:.2} peak_rss_mb={peak:.1}");
}
