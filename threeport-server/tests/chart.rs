//! The Helm chart in `deploy/helm/threeport`, rendered by the real Helm engine (`helm` on PATH
//! or the tests' stand-in): under its defaults (plus the settings it requires) and an HA set,
//! its schema and its checks refusing bad values, the manifests applied to the fake Kubernetes
//! API server's memory cluster, and the binary run with exactly the arguments and environment
//! the chart's API and controller Deployments give it, becoming ready against PostgreSQL and
//! NATS.

mod common;

#[path = "../../threeport-store/tests/common/mod.rs"]
mod postgres;

#[path = "../../threeport-bus/tests/common/mod.rs"]
mod nats;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use threeport_k8s::{Cluster, MemoryCluster};
use threeport_server::model::RuntimeAgent;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/helm/threeport");
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// `helm template` of the chart with `values` (YAML); the manifests, or Helm's error.
fn render(values: &str) -> Result<Vec<Value>, String> {
    let dir = common::process::temp_dir();
    let file = dir.join("values.yaml");
    std::fs::write(&file, values).unwrap();
    let out = std::process::Command::new(common::helm_bin())
        .args([
            "template",
            "tp",
            CHART,
            "--namespace",
            "threeport",
            "--values",
        ])
        .arg(&file)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    Ok(serde_yaml::Deserializer::from_str(&text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect())
}

fn required(extra: &str) -> String {
    format!(
        "database:\n  url: postgres://threeport:pw@db:5432/threeport\nencryption:\n  key: {KEY}\nauth:\n  tokenHashes: ['{}']\n{extra}",
        "ab".repeat(32)
    )
}

fn find<'a>(manifests: &'a [Value], kind: &str, name: &str) -> &'a Value {
    manifests
        .iter()
        .find(|m| m["kind"] == kind && m["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

#[tokio::test]
async fn the_chart_renders_by_default_and_highly_available_and_refuses_bad_values() {
    let defaults = render(&required("")).expect("renders with its defaults");
    let api = find(&defaults, "Deployment", "tp-threeport-api");
    assert_eq!(api["spec"]["replicas"], 2);
    let c = container(api);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(
        api["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    find(&defaults, "PodDisruptionBudget", "tp-threeport-api");
    // Each controller group its own Deployment, every controller in one group.
    let mut all = Vec::new();
    for group in ["workloads", "runtimes", "services", "terraform"] {
        let deployment = find(&defaults, "Deployment", &format!("tp-threeport-{group}"));
        let args = container(deployment)["args"].as_array().unwrap().clone();
        assert_eq!(args[0], "controller");
        all.extend(
            args.iter()
                .skip(1)
                .take_while(|a| !a.as_str().unwrap().starts_with("--"))
                .map(|a| a.as_str().unwrap().to_owned()),
        );
        assert_eq!(
            container(deployment)["readinessProbe"]["httpGet"]["port"],
            "metrics"
        );
    }
    all.sort();
    let mut available: Vec<String> = threeport_server::controllers::available()
        .map(str::to_owned)
        .collect();
    available.sort();
    assert_eq!(all, available, "every controller runs somewhere");
    // The bundled NATS: three JetStream nodes routed to each other.
    let nats = find(&defaults, "StatefulSet", "tp-threeport-nats");
    assert_eq!(nats["spec"]["replicas"], 3);
    let conf = find(&defaults, "ConfigMap", "tp-threeport-nats")["data"]["nats.conf"]
        .as_str()
        .unwrap();
    assert!(
        conf.contains("jetstream") && conf.matches(":6222").count() == 3,
        "{conf}"
    );
    let env = container(api)["env"].as_array().unwrap();
    let nats_url = env
        .iter()
        .find(|e| e["name"] == "THREEPORT_NATS_URL")
        .unwrap();
    assert_eq!(
        nats_url["value"],
        "nats://tp-threeport-nats.threeport.svc:4222"
    );
    // Secrets come from a Secret, never inline in the pod spec.
    for name in ["THREEPORT_DATABASE_URL", "THREEPORT_ENCRYPTION_KEY"] {
        let var = env.iter().find(|e| e["name"] == name).unwrap();
        assert!(var["valueFrom"]["secretKeyRef"].is_object(), "{var}");
    }
    let test = find(&defaults, "Pod", "tp-threeport-test-readyz");
    assert_eq!(test["metadata"]["annotations"]["helm.sh/hook"], "test");

    // High availability: three API replicas, an external NATS, TLS from an existing Secret,
    // a ServiceMonitor.
    let ha = render(&required(
        "api:\n  replicas: 3\n  podDisruptionBudget:\n    minAvailable: 2\nnats:\n  url: nats://nats.messaging:4222\n  bundled:\n    enabled: false\ntls:\n  enabled: true\n  existingSecret: threeport-tls\nserviceMonitor:\n  enabled: true\n",
    ))
    .expect("renders highly available");
    let api = find(&ha, "Deployment", "tp-threeport-api");
    assert_eq!(api["spec"]["replicas"], 3);
    assert_eq!(
        find(&ha, "PodDisruptionBudget", "tp-threeport-api")["spec"]["minAvailable"],
        2
    );
    assert!(
        !ha.iter().any(|m| m["kind"] == "StatefulSet"),
        "no bundled NATS"
    );
    let args = container(api)["args"].to_string();
    assert!(args.contains("--tls-cert"), "{args}");
    assert_eq!(
        container(api)["readinessProbe"]["httpGet"]["scheme"],
        "HTTPS"
    );
    find(&ha, "ServiceMonitor", "tp-threeport");

    // Bad values: the schema (or the chart's checks) refuse them, naming what is wrong.
    for (values, says) in [
        (required("api:\n  replicas: three\n"), "replicas"),
        (
            required("controllers:\n  groups:\n    - name: all\n      controllers: [teleport]\n"),
            "controllers",
        ),
        (required("logFormat: xml\n"), "logFormat"),
        (required("apiReplicas: 3\n"), "apiReplicas"),
        ("encryption:\n  key: abc\n".to_owned(), "key"),
        (format!("encryption:\n  key: {KEY}\n"), "database.url"),
    ] {
        let err = render(&values).expect_err(&values);
        assert!(err.contains(says), "{says} in {err}");
    }

    // What it renders is accepted by the (fake) API server.
    let cluster = MemoryCluster::new();
    let mut manifests = vec![json!({"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": "threeport"}})];
    manifests.extend(
        defaults
            .into_iter()
            // Hooks are Helm's to run.
            .filter(|m| m["metadata"]["annotations"]["helm.sh/hook"].is_null()),
    );
    threeport_k8s::apply_all(&cluster, &manifests, "helm")
        .await
        .expect("the manifests apply");
    let deployments = cluster
        .list("apps/v1", "Deployment", Some("threeport"))
        .await
        .unwrap();
    // The API and the four controller groups.
    assert_eq!(deployments.len(), 5);
}

/// The environment of `container`, its secret references resolved from `secret`'s data.
fn environment(container: &Value, secret: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = match e["value"].as_str() {
                Some(v) => v.to_owned(),
                None => {
                    let key = e["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap();
                    secret["stringData"][key].as_str().unwrap().to_owned()
                }
            };
            (name, value)
        })
        .collect()
}

/// The binary run as `container` says, its volume mounts under `root`.
fn launch(container: &Value, env: &BTreeMap<String, String>, root: &Path) -> tokio::process::Child {
    let mount = |text: &str| {
        ["/etc/threeport/auth", "/var/lib/threeport"]
            .iter()
            .fold(text.to_owned(), |t, path| {
                t.replace(path, &format!("{}{path}", root.display()))
            })
    };
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| mount(a.as_str().unwrap()))
        .collect();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_threeport-server"))
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.clone(), mount(v))))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn until_ready(url: &str) {
    let http = common::http_client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(url).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{url} never ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_becomes_ready_with_the_charts_arguments_and_environment() {
    let database = postgres::fresh_postgres().await;
    let nats = nats::NatsServer::start().await;
    let (api_port, metrics_port) = (nats::free_port(), nats::free_port());
    let minted = threeport_server::auth::mint_token().unwrap();
    let manifests = render(&format!(
        "database:\n  url: {database}\nencryption:\n  key: {KEY}\nauth:\n  tokenHashes: ['{}']\nnats:\n  url: {}\napi:\n  port: {api_port}\ncontrollers:\n  metricsPort: {metrics_port}\nparent:\n  apiUrl: https://parent.example.com\n  controlPlaneInstance: 01a2-parent\n",
        minted.hash, nats.url
    ))
    .unwrap();
    let secret = find(&manifests, "Secret", "tp-threeport");
    // The mounted token file, as the Secret's `tokens` key becomes it.
    let root = common::process::temp_dir();
    std::fs::create_dir_all(root.join("etc/threeport/auth")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/threeport")).unwrap();
    std::fs::write(
        root.join("etc/threeport/auth/tokens"),
        secret["stringData"]["tokens"].as_str().unwrap(),
    )
    .unwrap();

    let api = container(find(&manifests, "Deployment", "tp-threeport-api")).clone();
    let _api = launch(&api, &environment(&api, secret), &root);
    until_ready(&format!("http://127.0.0.1:{api_port}/readyz")).await;
    let workloads = container(find(&manifests, "Deployment", "tp-threeport-workloads")).clone();
    let _controllers = launch(&workloads, &environment(&workloads, secret), &root);
    until_ready(&format!("http://127.0.0.1:{metrics_port}/readyz")).await;

    // The token from the chart's Secret opens the API, and the controllers reconcile.
    let http = common::http_client();
    let id = common::process::create(
        &http,
        format!("http://127.0.0.1:{api_port}/v0/workload-definitions"),
        &minted.token,
        json!({"name": "web", "spec": {"yaml_document":
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n"}}),
    )
    .await;
    common::process::wait_reconciled(
        &http,
        &format!("http://127.0.0.1:{api_port}"),
        &minted.token,
        &id,
    )
    .await;
    // A child made by a parent says so.
    let (_, version) =
        common::process::send(http.get(format!("http://127.0.0.1:{api_port}/version"))).await;
    assert_eq!(
        version["parent"],
        json!({"api_url": "https://parent.example.com", "control_plane_instance": "01a2-parent"})
    );
    // The chart's test hook's check, by the binary itself.
    let probe = tokio::process::Command::new(env!("CARGO_BIN_EXE_threeport-server"))
        .args(["probe", &format!("http://127.0.0.1:{api_port}/readyz")])
        .output()
        .await
        .unwrap();
    assert!(probe.status.success(), "{probe:?}");
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_threeport-server"))
        .args(["probe", "http://127.0.0.1:9/readyz"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    drop(nats);
}

#[test]
fn the_agent_alone_renders_with_the_rights_the_runtime_controller_gives_it() {
    let manifests = render(
        "agentOnly: true\nagent:\n  apiUrl: https://threeport.example.com\n  token: tp_agent\n",
    )
    .expect("renders the agent alone");
    assert!(
        !manifests
            .iter()
            .any(|m| m["metadata"]["name"] == "tp-threeport-api"),
        "no control plane"
    );
    let deployment = find(&manifests, "Deployment", "tp-threeport-agent");
    assert_eq!(container(deployment)["args"], json!(["agent"]));
    let secret = find(&manifests, "Secret", "tp-threeport-agent");
    assert_eq!(secret["stringData"]["token"], "tp_agent");
    let env = environment(container(deployment), secret);
    assert_eq!(env["THREEPORT_API_URL"], "https://threeport.example.com");
    assert_eq!(env["THREEPORT_API_TOKEN"], "tp_agent");
    // The same read-only rules the runtime controller installs the agent with.
    let agent = RuntimeAgent {
        api_url: "https://threeport.example.com".into(),
        token: "tp_agent".into(),
        api_ca: None,
        image: None,
    };
    let installed = threeport_server::controllers::agent::agent_manifests(&agent, "tp_agent");
    let role = installed
        .iter()
        .find(|m| m["kind"] == "ClusterRole")
        .unwrap();
    assert_eq!(
        find(&manifests, "ClusterRole", "tp-threeport-agent")["rules"],
        role["rules"]
    );
    let err = render("agentOnly: true\n").expect_err("needs the API");
    assert!(err.contains("agent.apiUrl"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_instance_installs_a_child_from_the_chart_and_delete_uninstalls_it() {
    use std::sync::Arc;
    use threeport_core::{Api, MemoryBackends, Object};
    use threeport_server::Sealer;
    use threeport_server::controllers::control_plane::{
        ControlPlaneChart, ControlPlaneReconciler, TOKEN_FIELD, token_hash,
    };
    use threeport_server::controllers::helm::{HelmCli, HelmWorkloadInstanceReconciler};
    use threeport_server::controllers::{
        PASSIVE_KINDS, PassiveReconciler, SingleCluster, declared,
    };
    use threeport_server::model::*;
    use tokio_util::sync::CancellationToken;

    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let sealer = Arc::new(Sealer::ephemeral().unwrap());
    let cluster = MemoryCluster::new();
    // cert-manager is on this runtime (a child's `tls_issuer` needs it, as the README says).
    let certificates = json!({"apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "certificates.cert-manager.io"},
        "spec": {"group": "cert-manager.io", "scope": "Namespaced",
            "names": {"kind": "Certificate", "plural": "certificates"},
            "versions": [{"name": "v1", "served": true, "storage": true}]}});
    threeport_k8s::Cluster::apply(&cluster, &certificates, "cert-manager")
        .await
        .unwrap();
    let scratch = common::process::temp_dir();
    let repo_dir = scratch.join("repo");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let url = common::chart_repository(&repo_dir, &[(CHART, "0.1.0")]).await;
    let helm = declared(
        "helm-workload-instance",
        HelmWorkloadInstanceReconciler::new(
            Arc::new(SingleCluster(Arc::new(cluster.clone()))),
            Arc::new(HelmCli::new(common::helm_bin(), scratch.join("cache"))),
            sealer.clone(),
        ),
        memory.backends(),
    )
    .unwrap();
    tokio::spawn(helm.run(shutdown.clone()));
    let chart = ControlPlaneChart {
        repo: url,
        chart: "threeport".into(),
        version: "0.1.0".into(),
    };
    let planes = declared(
        "control-plane-instance",
        ControlPlaneReconciler::new(sealer.clone(), chart)
            .with_public_url(Some("https://parent.example.com".into())),
        memory.backends(),
    )
    .unwrap();
    tokio::spawn(planes.run(shutdown.clone()));
    for kind in PASSIVE_KINDS {
        let passive = declared("passive", PassiveReconciler::new(kind), memory.backends()).unwrap();
        tokio::spawn(passive.run(shutdown.clone()));
    }

    let store = memory.store.clone();
    let runtime = common::default_existing_runtime(&store).await;
    let definition = Api::<ControlPlaneDefinition>::new(store.clone())
        .create(
            "team",
            ControlPlaneDefinition {
                auth_enabled: true,
                controllers: vec!["workload-definition".into(), "workload-instance".into()],
                image: Some("registry.example.com/threeport-server:1.2.3".into()),
                controller_images: [(
                    "workload-instance".to_owned(),
                    "registry.example.com/custom-workloads:7".to_owned(),
                )]
                .into(),
            },
        )
        .await
        .unwrap();
    let planes = Api::<ControlPlaneInstance>::new(store.clone());
    let child = planes
        .create(
            "team-a",
            ControlPlaneInstance {
                definition: definition.id(),
                runtime: runtime.id(),
                namespace: "team-a".into(),
                genesis: false,
                secret: Some("team-a-plane".into()),
                tls_secret: None,
                tls_issuer: Some("cluster-ca".into()),
            },
        )
        .await
        .unwrap();
    let installed = tokio::time::timeout(
        Duration::from_secs(60),
        planes.wait_until(child.id(), |o: &Object<ControlPlaneInstance>| {
            o.is_reconciled()
        }),
    )
    .await
    .expect("the child is installed")
    .unwrap();
    let status = &installed.status.details;
    assert_eq!(
        status.endpoint.as_deref(),
        Some("https://team-a-api.team-a.svc:443")
    );
    let token = sealer
        .open(TOKEN_FIELD, status.token.as_deref().unwrap())
        .unwrap();
    assert!(token.starts_with("tp_"));
    // The child's API accepts that token (its hash is in the child's token Secret), reads its
    // database URL and key from the instance's Secret, runs the definition's image and
    // controllers.
    let get = |kind: &str, api_version: &str, name: &str| {
        let cluster = cluster.clone();
        let resource = threeport_k8s::ResourceRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: Some("team-a".into()),
            name: name.into(),
        };
        async move { cluster.get(&resource).await.unwrap() }
    };
    let tokens = get("Secret", "v1", "team-a")
        .await
        .expect("the token Secret");
    assert!(
        tokens["stringData"]["tokens"]
            .as_str()
            .unwrap()
            .contains(&token_hash(&token)),
        "{tokens}"
    );
    let api = get("Deployment", "apps/v1", "team-a-api")
        .await
        .expect("the API");
    assert_eq!(
        container(&api)["image"],
        "registry.example.com/threeport-server:1.2.3"
    );
    let env = container(&api)["env"].to_string();
    assert!(env.contains("team-a-plane"), "{env}");
    // The child's side of the link: its parent and the instance that made it.
    let vars = container(&api)["env"].as_array().unwrap().clone();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .map(|v| v["value"].clone())
    };
    assert_eq!(
        var("THREEPORT_PARENT_INSTANCE"),
        Some(json!(child.id().to_string()))
    );
    assert_eq!(
        var("THREEPORT_PARENT_API_URL"),
        Some(json!("https://parent.example.com"))
    );
    let controllers = get("Deployment", "apps/v1", "team-a-all")
        .await
        .expect("the controllers");
    assert_eq!(
        container(&controllers)["args"],
        json!([
            "controller",
            "workload-definition",
            "--metrics-listen",
            "0.0.0.0:9090",
            "--concurrency",
            "8"
        ])
    );
    // A controller with an image of its own runs alone with it.
    let custom = get("Deployment", "apps/v1", "team-a-workload-instance")
        .await
        .expect("the custom component");
    assert_eq!(
        container(&custom)["image"],
        "registry.example.com/custom-workloads:7"
    );
    assert_eq!(container(&custom)["args"][1], "workload-instance");
    // Its API serves HTTPS with a certificate cert-manager issues for the Service's names.
    let certificate = get("Certificate", "cert-manager.io/v1", "team-a")
        .await
        .expect("the child's certificate");
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "cluster-ca");
    assert!(
        certificate["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&json!("team-a-api.team-a.svc")),
        "{certificate}"
    );
    let args = container(&api)["args"].to_string();
    assert!(args.contains("--tls-cert"), "{args}");

    // Deleting the instance uninstalls the child.
    planes.delete(child.id()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), planes.wait_until_gone(child.id()))
        .await
        .expect("the instance goes")
        .unwrap();
    assert!(get("Deployment", "apps/v1", "team-a-api").await.is_none());
    assert!(
        Api::<HelmWorkloadInstance>::new(store.clone())
            .list_all(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    shutdown.cancel();
}
