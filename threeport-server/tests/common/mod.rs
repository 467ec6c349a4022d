//! Test support shared by the server's test binaries.

#![allow(dead_code)] // each test binary uses its own subset

pub mod pg_cluster;
pub mod process;

/// A plain HTTP client. The workspace's rustls has only the `ring` provider, which must be
/// installed for clients built without an explicit TLS configuration.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The `helm` the tests render with.
pub fn helm_bin() -> std::path::PathBuf {
    if let Ok(bin) = std::env::var("THREEPORT_TEST_HELM") {
        return bin.into();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("helm"))
            .find(|candidate| candidate.is_file())
    });
    on_path.expect(
        "no helm: put helm (3.8+) on PATH, or run ./scripts/test, which provides one \
         (THREEPORT_TEST_HELM)",
    )
}

/// A test chart of the repository's (`tests/charts/<name>`).
pub fn chart_dir(name: &str) -> String {
    format!("{}/tests/charts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs the tests' `helm` with `args`; panics with its error output if it fails.
pub fn helm(args: &[&str]) {
    let out = std::process::Command::new(helm_bin())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A chart repository on loopback serving the repository's test charts `charts` (name, or a
/// chart directory's path; version), packaged into `dir`; returns its URL.
pub async fn chart_repository(dir: &std::path::Path, charts: &[(&str, &str)]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let repo = dir.to_str().unwrap();
    for (chart, version) in charts {
        let source = if chart.contains('/') {
            chart.to_string()
        } else {
            chart_dir(chart)
        };
        helm(&[
            "package",
            &source,
            "--version",
            version,
            "--destination",
            repo,
        ]);
    }
    helm(&["repo", "index", repo, "--url", &url]);
    let root = dir.to_owned();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let path = root.join(uri.path().trim_start_matches('/'));
        async move {
            match tokio::fs::read(&path).await {
                Ok(bytes) => (reqwest::StatusCode::OK, bytes),
                Err(_) => (reqwest::StatusCode::NOT_FOUND, Vec::new()),
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Installs the external-secrets operator's `ExternalSecret` CRD on `cluster`, as on a runtime
/// that has the operator: workload instances with secrets deploy an `ExternalSecret`.
pub async fn install_external_secrets_crd(cluster: &threeport_k8s::MemoryCluster) {
    use threeport_k8s::Cluster;
    let crd = serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "externalsecrets.external-secrets.io"},
        "spec": {"group": "external-secrets.io", "scope": "Namespaced",
            "names": {"kind": "ExternalSecret", "plural": "externalsecrets"},
            "versions": [{"name": "v1", "served": true, "storage": true}]}});
    cluster.apply(&crd, "operator").await.unwrap();
}

/// An existing cluster (no connection data: the tests' cluster providers need none) as the
/// default runtime `here`.
pub async fn default_existing_runtime<S: threeport_core::Store>(
    store: &std::sync::Arc<S>,
) -> threeport_core::Object<threeport_server::model::KubernetesRuntimeInstance> {
    existing_runtime(store, "here", None).await
}

/// An existing cluster reached with `connection` as the default runtime `name`.
pub async fn existing_runtime<S: threeport_core::Store>(
    store: &std::sync::Arc<S>,
    name: &str,
    connection: Option<threeport_server::model::ConnectionData>,
) -> threeport_core::Object<threeport_server::model::KubernetesRuntimeInstance> {
    use threeport_core::Api;
    use threeport_server::model::*;
    let definition = Api::<KubernetesRuntimeDefinition>::new(store.clone())
        .create(
            "existing",
            KubernetesRuntimeDefinition {
                infra_provider: InfraProvider::Existing,
                aws_account: None,
                high_availability: false,
                node_size: NodeSize::Medium,
                node_profile: NodeProfile::Balanced,
                node_maximum: 4,
            },
        )
        .await
        .unwrap();
    Api::<KubernetesRuntimeInstance>::new(store.clone())
        .create(
            name,
            KubernetesRuntimeInstance {
                definition: definition.id(),
                location: "Europe:Paris".into(),
                default_runtime: true,
                agent: None,
                support_services: Vec::new(),
                connection,
            },
        )
        .await
        .unwrap()
}

/// The `orders` PostgreSQL database definition the AWS tests use, in `account`.
pub fn orders_database(
    account: threeport_core::ObjectId,
) -> threeport_server::model::AwsRelationalDatabaseDefinition {
    use threeport_server::model::{AwsRelationalDatabaseDefinition, DatabaseEngine, MachineSize};
    AwsRelationalDatabaseDefinition {
        aws_account: account,
        engine: DatabaseEngine::Postgres,
        engine_version: "16.4".into(),
        database_name: "orders".into(),
        database_port: 5432,
        backup_days: 7,
        machine_size: MachineSize::Small,
        storage_gb: 20,
        workload_secret_name: "orders-db".into(),
    }
}
