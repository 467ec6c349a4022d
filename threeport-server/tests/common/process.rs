//! Running the `threeport-server` binary as a user would: start a role, read its banner,
//! stop it with SIGTERM or SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const BINARY: &str = env!("CARGO_BIN_EXE_threeport-server");

/// A running `threeport-server` process.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:<port>` (empty for roles without an API).
    pub base: String,
    /// The token a first start minted, if it printed one.
    pub token: Option<String>,
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "threeport-server-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `serve` on a free port; reads the banner for the address and a minted token.
pub async fn serve(data_dir: &Path, extra: &[&str]) -> Server {
    start("serve", data_dir, extra).await
}

/// Starts the binary with `args` (its stdout piped, AWS calls kept on this machine, where
/// nothing listens, and no `helm` but the one a test names, so no support service's chart is
/// fetched from outside) and reads its banner until `last` says the rest is not needed; `each`
/// sees every line.
async fn launch(args: &[&str], last: impl Fn(&str) -> bool, mut each: impl FnMut(&str)) -> Child {
    let mut child = Command::new(BINARY)
        .env("THREEPORT_AWS_ENDPOINT", "http://127.0.0.1:9")
        .env("THREEPORT_HELM_BIN", "/nonexistent/helm")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await
    {
        each(&line);
        if last(&line) {
            break;
        }
    }
    child
}

/// Starts a role (`serve`, `api`) on a free port and reads its banner.
pub async fn start(role: &str, data_dir: &Path, extra: &[&str]) -> Server {
    let data_dir = data_dir.to_str().unwrap();
    let mut args = vec![role, "--listen", "127.0.0.1:0", "--data-dir", data_dir];
    args.extend(extra);
    let (mut base, mut token) = (None, None);
    let child = launch(
        &args,
        |line| line.starts_with("try:"),
        |line| {
            if let Some(rest) = line.strip_prefix("threeport control plane on ") {
                base = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(at) = line.find("tp_") {
                token = Some(line[at..].trim().to_owned());
            }
        },
    )
    .await;
    Server {
        child,
        base: base.expect("the banner names the address"),
        token,
    }
}

/// Starts the `api` of a distributed plane (PostgreSQL at `database_url`, NATS at `nats_url`,
/// an encryption key in `data`) accepting one fresh token, which is in the returned server's
/// `token`. Also returns the plane's flags, for its `controllers`.
pub async fn distributed_api(
    data: &Path,
    database_url: &str,
    nats_url: &str,
    extra: &[&str],
) -> (Server, Vec<String>) {
    let minted = threeport_server::auth::mint_token().unwrap();
    let tokens = data.join("tokens");
    std::fs::write(&tokens, format!("{}\n", minted.hash)).unwrap();
    let key = data.join("encryption.key");
    let plane: Vec<String> = [
        "--database-url",
        database_url,
        "--nats-url",
        nats_url,
        "--encryption-key-file",
        key.to_str().unwrap(),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .map(str::to_owned)
    .collect();
    let mut api_flags: Vec<&str> = plane.iter().map(String::as_str).collect();
    api_flags.extend(["--token-file", tokens.to_str().unwrap()]);
    let mut api = start("api", data, &api_flags).await;
    api.token = Some(minted.token);
    (api, plane)
}

/// Starts a `controller <names>` process with `flags`; returns it and the URL of its metrics
/// once it says it is ready.
pub async fn controllers(names: &[&str], flags: &[impl AsRef<str>]) -> (Server, String) {
    let mut args = vec!["controller"];
    args.extend(names);
    args.extend(["--metrics-listen", "127.0.0.1:0"]);
    args.extend(flags.iter().map(AsRef::as_ref));
    let mut metrics = None;
    let child = launch(
        &args,
        |line| line == "ready",
        |line| {
            if let Some(url) = line.strip_prefix("metrics on ") {
                metrics = Some(url.to_owned());
            }
        },
    )
    .await;
    let process = Server {
        child,
        base: String::new(),
        token: None,
    };
    (process, metrics.expect("metrics address"))
}

/// Starts `agent` with `flags` and waits until it says it is ready.
pub async fn agent(flags: &[&str]) -> Server {
    let mut args = vec!["agent"];
    args.extend(flags);
    let child = launch(&args, |line| line == "ready", |_| {}).await;
    Server {
        child,
        base: String::new(),
        token: None,
    }
}

/// The Prometheus text a process serves at `base`/metrics.
pub async fn metrics_text(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

impl Server {
    /// Kills the process at once (SIGKILL): no cleanup of any kind.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// Sends SIGTERM and waits for the exit (at most 10 s).
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap();
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("stops within 10s of SIGTERM")
            .unwrap()
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls a workload definition until its controller has reconciled it.
pub async fn wait_reconciled(http: &reqwest::Client, base: &str, token: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, got) = send(
            http.get(format!("{base}/v0/workload-definitions/{id}"))
                .bearer_auth(token),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{got}");
        if got["status"]["state"] == "reconciled" {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reconciled: {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `url` until `done` holds for what it returns (at most 30 s).
pub async fn wait_for(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, got) = send(http.get(url).bearer_auth(token)).await;
        if status == StatusCode::OK && done(&got) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never got there: {status} {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs `body` to `url`; asserts it was created and returns the new object's id.
pub async fn create(http: &reqwest::Client, url: String, token: &str, body: Value) -> String {
    let (status, created) = send(http.post(&url).bearer_auth(token).json(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{url}: {created}");
    created["id"].as_str().unwrap().to_owned()
}

/// Registers the fake API server `kube` as the default runtime (an existing cluster known by
/// its connection data); returns the runtime's id.
pub async fn register_cluster(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    kube: &threeport_k8s::FakeApiServer,
) -> String {
    let definition = create(
        http,
        format!("{base}/v0/kubernetes-runtime-definitions"),
        token,
        json!({"name": "existing", "spec": {"infra_provider": "existing"}}),
    )
    .await;
    create(
        http,
        format!("{base}/v0/kubernetes-runtime-instances"),
        token,
        json!({"name": "local", "spec": {
        "definition": definition, "location": "NorthAmerica:NewYork", "default_runtime": true,
        "connection": {"api_endpoint": kube.url, "token": "cluster-token"}}}),
    )
    .await
}
