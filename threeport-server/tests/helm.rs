//! Helm workloads end to end through the API of a `threeport-server serve` process, rendered
//! by a real Helm engine (`helm` on PATH, or `THREEPORT_TEST_HELM`: `./scripts/test` provides
//! a stand-in on helm-python-sdk), from a chart repository served on loopback, onto the fake
//! Kubernetes API server: install with a pre-install hook, values change → upgrade (hook run
//! again, dropped objects pruned), chart version change, health and events, values failing
//! the chart's schema, a missing chart and a failing hook → terminal with the reason, delete →
//! the pre-delete hook, then everything gone.

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use threeport_k8s::{Cluster, FakeApiServer, MemoryCluster, PodState, ResourceRef};

use common::process::{create, register_cluster, send, serve, temp_dir, wait_for};
use common::{chart_repository, helm_bin};

fn resource(kind: &str, namespace: &str, name: &str) -> ResourceRef {
    let api_version = match kind {
        "Deployment" => "apps/v1",
        "Job" => "batch/v1",
        _ => "v1",
    };
    ResourceRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: Some(namespace.into()),
        name: name.into(),
    }
}

struct Setup {
    http: reqwest::Client,
    base: String,
    token: String,
    kube: FakeApiServer,
    repo: String,
    _server: common::process::Server,
}

impl Setup {
    async fn start() -> Setup {
        let kube = FakeApiServer::start_with_token(MemoryCluster::new(), "cluster-token")
            .await
            .unwrap();
        let data = temp_dir();
        let charts = data.join("repo");
        std::fs::create_dir_all(&charts).unwrap();
        let repo = chart_repository(&charts, &[("webapp", "1.0.0"), ("webapp", "1.1.0")]).await;
        let helm = helm_bin();
        let cache = data.join("chart-cache");
        let server = serve(
            &data,
            &[
                "--health-poll-ms",
                "100",
                "--helm-bin",
                helm.to_str().unwrap(),
                "--chart-cache",
                cache.to_str().unwrap(),
            ],
        )
        .await;
        let http = common::http_client();
        let token = server.token.clone().unwrap();
        register_cluster(&http, &server.base, &token, &kube).await;
        Setup {
            http,
            base: server.base.clone(),
            token,
            kube,
            repo,
            _server: server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v0/{path}", self.base)
    }

    async fn create(&self, plural: &str, body: Value) -> String {
        create(&self.http, self.url(plural), &self.token, body).await
    }

    async fn patch(&self, path: &str, body: Value) {
        let (status, got) = send(
            self.http
                .patch(self.url(path))
                .bearer_auth(&self.token)
                .json(&body),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{got}");
    }

    async fn wait(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_for(&self.http, &self.url(path), &self.token, done).await
    }

    async fn get(&self, resource: &ResourceRef) -> Option<Value> {
        self.kube.cluster.get(resource).await.unwrap()
    }

    /// Waits (at most 30 s) until `path` answers 404.
    async fn gone(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, got) = send(self.http.get(self.url(path)).bearer_auth(&self.token)).await;
            if status == StatusCode::NOT_FOUND {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never deleted: {got}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Marks hook Job `job` complete, as the cluster's job controller would.
    fn complete(&self, job: &ResourceRef) {
        self.kube
            .cluster
            .set_status(
                job,
                &json!({"conditions": [{"type": "Complete", "status": "True"}]}),
            )
            .unwrap();
    }
}

fn waits_for_hook(o: &Value, hook: &str) -> bool {
    o["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter().any(|c| {
            c["type"] == "HooksDone"
                && c["status"] == "False"
                && c["message"].as_str().is_some_and(|m| m.contains(hook))
        })
    })
}

fn reconciled_at(o: &Value, revision: u64) -> bool {
    o["status"]["state"] == "reconciled" && o["status"]["details"]["revision"] == revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_workload_installs_upgrades_and_goes_away() {
    let t = Setup::start().await;
    let definition = t
        .create(
            "helm-workload-definitions",
            json!({"name": "webapp", "spec": {
                "repo": t.repo, "chart": "webapp", "chart_version": "1.0.0",
                "values": "replicaCount: 2\nextraLabels:\n  team: shop\n",
                "additional_resources": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata: {a: b}\n"}}),
        )
        .await;
    let instance = t
        .create(
            "helm-workload-instances",
            json!({"name": "shop", "spec": {"definition": definition,
                "values_overrides": "image:\n  tag: \"1.26\"\n"}}),
        )
        .await;
    let path = format!("helm-workload-instances/{instance}");

    // The pre-install hook runs first, alone, and is waited for.
    let waiting = t
        .wait(&path, |o| waits_for_hook(o, "shop-webapp-migrate"))
        .await;
    let namespace = waiting["status"]["details"]["namespace"]
        .as_str()
        .map(str::to_owned);
    let crd = ResourceRef {
        api_version: "apiextensions.k8s.io/v1".into(),
        kind: "CustomResourceDefinition".into(),
        namespace: None,
        name: "widgets.example.com".into(),
    };
    assert!(t.get(&crd).await.is_some(), "crds/ go first");
    let jobs = t.kube.cluster.list("batch/v1", "Job", None).await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let namespace = namespace.unwrap_or_else(|| {
        jobs[0]["metadata"]["namespace"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    assert!(namespace.starts_with("shop-"), "{namespace}");
    let job = resource("Job", &namespace, "shop-webapp-migrate");
    let web = resource("Deployment", &namespace, "shop-webapp");
    assert!(
        t.get(&web).await.is_none(),
        "nothing else before the hook is done"
    );
    t.complete(&job);

    let installed = t.wait(&path, |o| reconciled_at(o, 1)).await;
    let details = &installed["status"]["details"];
    assert_eq!(details["chart"], "webapp-1.0.0", "{installed}");
    assert_eq!(details["release"], "shop");
    assert!(
        details["chart_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let deployment = t.get(&web).await.expect("the chart's Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2, "definition values");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"], "nginx:1.26",
        "instance values over the definition's"
    );
    assert_eq!(container["ports"].as_array().unwrap().len(), 2, "range");
    let labels = &deployment["metadata"]["labels"];
    assert_eq!(labels["threeport.io/workload-instance"], instance.as_str());
    assert_eq!(labels["team"], "shop", "helpers with range over values");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["threeport.io/workload-instance"],
        instance.as_str()
    );
    let config = t
        .get(&resource("ConfigMap", &namespace, "shop-webapp"))
        .await
        .unwrap();
    assert_eq!(config["data"]["greeting"], "hello from shop", "tpl");
    assert_eq!(config["data"]["image"], "NGINX:1.26", "sprig upper");
    assert!(
        t.get(&resource("Deployment", &namespace, "shop-cache"))
            .await
            .is_some(),
        "sub-chart"
    );
    assert!(
        t.get(&resource("Service", &namespace, "shop-webapp"))
            .await
            .is_some()
    );
    assert!(
        t.get(&resource("ConfigMap", &namespace, "extra"))
            .await
            .is_some(),
        "additional resources"
    );
    assert!(
        t.get(&resource("Pod", &namespace, "shop-webapp-test"))
            .await
            .is_none(),
        "test hooks are skipped"
    );
    let events = installed["status"]["events"].to_string();
    assert!(events.contains("Installed"), "{events}");

    // Health and events cover Helm workloads as any other.
    let cache = resource("Deployment", &namespace, "shop-cache");
    t.kube.cluster.set_pods(&web, PodState::Ready, 2).unwrap();
    t.kube.cluster.set_pods(&cache, PodState::Ready, 1).unwrap();
    t.wait(&path, |o| {
        o["status"]["details"]["health"]["status"] == "healthy"
    })
    .await;
    t.kube
        .cluster
        .set_pods(&web, PodState::CrashLoop, 2)
        .unwrap();
    let degraded = t
        .wait(&path, |o| {
            o["status"]["details"]["health"]["status"] == "degraded"
                && o["status"]["events"].to_string().contains("BackOff")
        })
        .await;
    let web_health = degraded["status"]["details"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "shop-webapp" && r["kind"] == "Deployment")
        .map(|r| r["health"]["status"].clone());
    // Crashing pods leave none of its replicas available.
    assert_eq!(web_health, Some(json!("down")), "{degraded}");
    t.kube.cluster.set_pods(&web, PodState::Ready, 2).unwrap();

    // New values: an upgrade; the pre-upgrade hook runs again, the disabled sub-chart goes.
    t.patch(
        &path,
        json!({"spec": {"values_overrides": "image:\n  tag: \"1.26\"\nreplicaCount: 3\ncache:\n  enabled: false\n"}}),
    )
    .await;
    t.wait(&path, |o| waits_for_hook(o, "pre-upgrade")).await;
    t.complete(&job);
    t.wait(&path, |o| reconciled_at(o, 2)).await;
    assert_eq!(t.get(&web).await.unwrap()["spec"]["replicas"], 3);
    assert!(
        t.get(&resource("Deployment", &namespace, "shop-cache"))
            .await
            .is_none(),
        "pruned"
    );

    // A new chart version, and the additional resources dropped.
    t.patch(
        &format!("helm-workload-definitions/{definition}"),
        json!({"spec": {"chart_version": "~1.1", "additional_resources": null}}),
    )
    .await;
    t.wait(&path, |o| waits_for_hook(o, "pre-upgrade")).await;
    t.complete(&job);
    let upgraded = t.wait(&path, |o| reconciled_at(o, 3)).await;
    assert_eq!(upgraded["status"]["details"]["chart"], "webapp-1.1.0");
    let deployment = t.get(&web).await.unwrap();
    assert_eq!(
        deployment["metadata"]["labels"]["helm.sh/chart"],
        "webapp-1.1.0"
    );
    assert!(
        t.get(&resource("ConfigMap", &namespace, "extra"))
            .await
            .is_none(),
        "pruned"
    );

    // Delete: the pre-delete hook runs first, alone; then everything goes, the generated
    // namespace too.
    let (status, _) = send(t.http.delete(t.url(&path)).bearer_auth(&t.token)).await;
    assert!(status.is_success(), "{status}");
    t.wait(&path, |o| waits_for_hook(o, "pre-delete hook Job"))
        .await;
    let cleanup = resource("Job", &namespace, "shop-webapp-cleanup");
    assert!(t.get(&cleanup).await.is_some());
    assert!(
        t.get(&web).await.is_some(),
        "nothing goes before the pre-delete hook is done"
    );
    t.complete(&cleanup);
    t.gone(&path).await;
    for gone in [
        web,
        job,
        cleanup,
        resource("Service", &namespace, "shop-webapp"),
    ] {
        assert!(t.get(&gone).await.is_none(), "{gone} left behind");
    }
    let ns = ResourceRef {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: namespace.clone(),
    };
    assert!(
        t.get(&ns).await.is_none(),
        "generated namespace left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_and_missing_charts_fail_with_helms_message() {
    let t = Setup::start().await;
    let definition = t
        .create(
            "helm-workload-definitions",
            json!({"name": "webapp", "spec": {"repo": t.repo, "chart": "webapp"}}),
        )
        .await;
    let instance = t
        .create(
            "helm-workload-instances",
            json!({"name": "bad", "spec": {"definition": definition,
                "release_namespace": "bad", "values_overrides": "replicaCount: lots\n"}}),
        )
        .await;
    let failed = t
        .wait(&format!("helm-workload-instances/{instance}"), |o| {
            o["status"]["state"] == "creation_failed"
        })
        .await;
    let text = failed["status"].to_string();
    assert!(
        text.contains("values don't meet the specifications of the schema")
            && text.contains("replicaCount"),
        "{text}"
    );
    assert!(
        t.get(&resource("Deployment", "bad", "bad-webapp"))
            .await
            .is_none()
    );

    let missing = t
        .create(
            "helm-workload-definitions",
            json!({"name": "missing", "spec": {"repo": t.repo, "chart": "nope"}}),
        )
        .await;
    let instance = t
        .create(
            "helm-workload-instances",
            json!({"name": "missing", "spec": {"definition": missing}}),
        )
        .await;
    let failed = t
        .wait(&format!("helm-workload-instances/{instance}"), |o| {
            o["status"]["state"] == "creation_failed"
        })
        .await;
    assert!(
        failed["status"]
            .to_string()
            .contains("\\\"nope\\\" not found"),
        "{failed}"
    );

    // A hook that fails fails the release, with the Job's reason.
    let instance = t
        .create(
            "helm-workload-instances",
            json!({"name": "hooked", "spec": {"definition": definition,
                "release_namespace": "hooked"}}),
        )
        .await;
    let path = format!("helm-workload-instances/{instance}");
    t.wait(&path, |o| waits_for_hook(o, "hooked-webapp-migrate"))
        .await;
    t.kube
        .cluster
        .set_status(
            &resource("Job", "hooked", "hooked-webapp-migrate"),
            &json!({"conditions": [{"type": "Failed", "status": "True",
                "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
        )
        .unwrap();
    let failed = t
        .wait(&path, |o| o["status"]["state"] == "creation_failed")
        .await;
    let reason = failed["status"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("pre-install hook") && reason.contains("backoff limit"),
        "{failed}"
    );
    assert!(
        t.get(&resource("Deployment", "hooked", "hooked-webapp"))
            .await
            .is_none()
    );

    // Bad input never gets that far: the API names the field.
    for (spec, field) in [
        (json!({"chart": "webapp"}), "repo"),
        (json!({"repo": "ftp://x", "chart": "webapp"}), "repo"),
        (
            json!({"repo": t.repo, "chart": "webapp", "values": "- a list\n"}),
            "values",
        ),
        (json!({"chart_archive": "bm90IGd6aXA="}), "chart_archive"),
    ] {
        let (status, body) = send(
            t.http
                .post(t.url("helm-workload-definitions"))
                .bearer_auth(&t.token)
                .json(&json!({"name": "x", "spec": spec})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            body["field"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("spec."),
            field,
            "{body}"
        );
    }
}

/// The composite: `POST /v0/workloads` with `helm_definition` makes the definition and its
/// instance (and a secret) in one transaction; `DELETE /v0/workloads/{name}` takes it all away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_workload_is_created_and_deleted_whole() {
    let t = Setup::start().await;
    let body = json!({"name": "blog", "helm_definition": {
            "repo": t.repo, "chart": "webapp", "chart_version": "1.0.0",
            "values": "migration:\n  enabled: false\ncleanup:\n  enabled: false\n"},
        "instance": {"release_namespace": "blog"},
        "secret": {"aws_account": null, "data": {"token": "t0p"}}});
    // A secret needs an account; the others attach to manifest workloads only.
    let (status, answer) = send(
        t.http
            .post(t.url("workloads"))
            .bearer_auth(&t.token)
            .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["field"]
            .as_str()
            .unwrap_or_default()
            .starts_with("secret"),
        "{answer}"
    );
    let mut with_database = body.clone();
    with_database.as_object_mut().unwrap().remove("secret");
    with_database["database"] = json!({});
    let (status, answer) = send(
        t.http
            .post(t.url("workloads"))
            .bearer_auth(&t.token)
            .json(&with_database),
    )
    .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("database")),
        "{answer}"
    );
    let (status, answer) = send(t.http.post(t.url("workloads")).bearer_auth(&t.token).json(
        &json!({"name": "x", "definition": {"yaml_document": "kind: x"}, "helm_definition": {}}),
    ))
    .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("helm_definition")),
        "{answer}"
    );

    let mut plain = body.clone();
    plain.as_object_mut().unwrap().remove("secret");
    let (status, created) = send(
        t.http
            .post(t.url("workloads"))
            .bearer_auth(&t.token)
            .json(&plain),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let instance = created["HelmWorkloadInstance"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let definition = created["HelmWorkloadDefinition"]["id"].as_str().unwrap();
    assert_eq!(
        created["HelmWorkloadInstance"]["owners"][0]["id"],
        definition
    );
    let path = format!("helm-workload-instances/{instance}");
    t.wait(&path, |o| reconciled_at(o, 1)).await;
    let web = resource("Deployment", "blog", "blog-webapp");
    assert!(t.get(&web).await.is_some());

    let (status, plan) = send(t.http.delete(t.url("workloads/blog")).bearer_auth(&t.token)).await;
    assert!(status.is_success(), "{status} {plan}");
    // The instance goes first (with what it deployed), then the definition that owned it.
    t.gone(&path).await;
    assert!(t.get(&web).await.is_none());
    t.gone(&format!("helm-workload-definitions/{definition}"))
        .await;
}
