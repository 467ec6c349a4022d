//! Observability stacks end to end on the memory backends: components released by the real
//! Helm engine from stand-in charts under the upstream names (kube-prometheus-stack, loki,
//! promtail, grafana) served on loopback, onto a cluster behind the fake API server's memory
//! cluster; the data sources and the log push URL wired, threeport's ServiceMonitor, alerts
//! and dashboard installed; logging turned off removes just it; deleting the stack removes
//! everything. And the dashboard and alerts only query metrics the server exports.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use threeport_core::{Api, MemoryBackends, Object};
use threeport_k8s::{Cluster, MemoryCluster, ResourceRef};
use threeport_server::Sealer;
use threeport_server::controllers::helm::{HelmCli, HelmWorkloadInstanceReconciler};
use threeport_server::controllers::observability::{
    ALERTS, DASHBOARD, ObservabilityStackReconciler, StackChart, StackChartSource, StackCharts,
};
use threeport_server::controllers::{
    ClusterProvider, PASSIVE_KINDS, PassiveReconciler, SingleCluster, declared,
};
use threeport_server::model::*;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

fn run<R: threeport_core::Reconciler>(
    memory: &MemoryBackends,
    shutdown: &CancellationToken,
    name: &str,
    reconciler: R,
) {
    let controller = declared(name, reconciler, memory.backends()).unwrap();
    tokio::spawn(controller.run(shutdown.clone()));
}

fn resource(api_version: &str, kind: &str, namespace: &str, name: &str) -> ResourceRef {
    ResourceRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: Some(namespace.into()),
        name: name.into(),
    }
}

/// Waits until `check` holds for `resource` on `cluster` (`None`: absent); returns it.
async fn until(
    cluster: &MemoryCluster,
    resource: &ResourceRef,
    check: impl Fn(Option<&Value>) -> bool,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let live = cluster.get(resource).await.unwrap();
        if check(live.as_ref()) {
            return live;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{resource} never got there: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stack_settled(
    stacks: &Api<ObservabilityStackInstance>,
    id: threeport_core::ObjectId,
) -> Object<ObservabilityStackInstance> {
    tokio::time::timeout(
        WAIT,
        stacks.wait_until(id, |o: &Object<ObservabilityStackInstance>| {
            o.is_reconciled()
        }),
    )
    .await
    .expect("the stack settles")
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_installs_its_components_wired_turns_one_off_and_goes_with_its_deletion() {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let sealer = Arc::new(Sealer::ephemeral().unwrap());
    let cluster = MemoryCluster::new();
    let clusters: Arc<dyn ClusterProvider> = Arc::new(SingleCluster(Arc::new(cluster.clone())));
    let scratch = common::process::temp_dir();
    let repo_dir = scratch.join("repo");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let pinned = StackCharts::default();
    let packages: Vec<(String, String)> = StackChart::ALL
        .iter()
        .map(|c| (pinned.get(*c).chart.clone(), pinned.get(*c).version.clone()))
        .collect();
    let packages: Vec<(&str, &str)> = packages
        .iter()
        .map(|(c, v)| (c.as_str(), v.as_str()))
        .collect();
    let url = common::chart_repository(&repo_dir, &packages).await;
    let charts = StackChart::ALL
        .iter()
        .fold(pinned.clone(), |charts, chart| {
            charts.with(
                *chart,
                StackChartSource {
                    repo: url.clone(),
                    ..pinned.get(*chart).clone()
                },
            )
        });
    let renderer = Arc::new(HelmCli::new(common::helm_bin(), scratch.join("cache")));
    run(
        &memory,
        &shutdown,
        "helm-workload-instance",
        HelmWorkloadInstanceReconciler::new(clusters, renderer, sealer),
    );
    run(
        &memory,
        &shutdown,
        "observability-stack-instance",
        ObservabilityStackReconciler::new(charts),
    );
    for kind in PASSIVE_KINDS {
        run(&memory, &shutdown, "passive", PassiveReconciler::new(kind));
    }

    let store = memory.store.clone();
    let runtime = common::default_existing_runtime(&store).await;
    let definitions = Api::<ObservabilityStackDefinition>::new(store.clone());
    let definition = definitions
        .create(
            "full",
            ObservabilityStackDefinition {
                metrics: ObservabilityComponent {
                    enabled: true,
                    chart_version: None,
                    values: Some("prometheus:\n  prometheusSpec:\n    retention: 30d\n".into()),
                },
                logging: ObservabilityComponent {
                    enabled: true,
                    chart_version: None,
                    values: Some("singleBinary:\n  replicas: 2\n".into()),
                },
                dashboards: ObservabilityComponent {
                    enabled: true,
                    chart_version: None,
                    values: None,
                },
                promtail_values: None,
            },
        )
        .await
        .unwrap();
    let stacks = Api::<ObservabilityStackInstance>::new(store.clone());
    let stack = stacks
        .create(
            "ops",
            ObservabilityStackInstance {
                definition: definition.id(),
                runtime: runtime.id(),
                overrides: ObservabilityOverrides {
                    // The instance's value wins over the definition's.
                    logging: Some("singleBinary:\n  replicas: 1\n".into()),
                    ..Default::default()
                },
            },
        )
        .await
        .unwrap();
    let settled = stack_settled(&stacks, stack.id()).await;
    let status = &settled.status.details;
    let ns = status.namespace.clone().unwrap();
    assert_eq!(ns, "ops-observability");
    assert_eq!(
        status.releases,
        ["ops-metrics", "ops-loki", "ops-promtail", "ops-grafana"]
    );
    assert_eq!(
        status.prometheus_url.as_deref(),
        Some("http://ops-metrics-prometheus.ops-observability.svc:9090")
    );
    let helm = Api::<HelmWorkloadInstance>::new(store.clone());
    for release in &status.releases {
        let instance = helm.get_by_name(release).await.unwrap();
        assert!(instance.is_reconciled(), "{release}: {:?}", instance.status);
        assert!(
            instance.meta.owners.iter().any(|o| o.id == stack.id()),
            "{release} is the stack's"
        );
    }

    // Grafana's data sources point at Prometheus and Loki; the dashboard sidecar is on and
    // threeport's dashboard is there for it.
    let datasources = until(
        &cluster,
        &resource("v1", "ConfigMap", &ns, "ops-grafana"),
        |c| c.is_some(),
    )
    .await
    .unwrap();
    let text = datasources["data"]["datasources.yaml"].as_str().unwrap();
    assert!(
        text.contains("http://ops-metrics-prometheus.ops-observability.svc:9090"),
        "{text}"
    );
    assert!(
        text.contains("http://ops-loki.ops-observability.svc:3100"),
        "{text}"
    );
    let dashboards = until(
        &cluster,
        &resource("v1", "ConfigMap", &ns, "threeport-dashboards"),
        |c| c.is_some(),
    )
    .await
    .unwrap();
    assert_eq!(dashboards["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        dashboards["data"]["threeport-control-plane.json"].as_str(),
        Some(DASHBOARD)
    );
    // Promtail ships pod logs to Loki.
    let promtail = until(
        &cluster,
        &resource("v1", "Secret", &ns, "ops-promtail"),
        |c| c.is_some(),
    )
    .await
    .unwrap();
    let config = match promtail["stringData"]["promtail.yaml"].as_str() {
        Some(text) => text.to_owned(),
        None => {
            use base64::Engine as _;
            let encoded = promtail["data"]["promtail.yaml"].as_str().unwrap();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap();
            String::from_utf8(bytes).unwrap()
        }
    };
    assert!(
        config.contains("http://ops-loki.ops-observability.svc:3100/loki/api/v1/push"),
        "{config}"
    );
    // Loki: the definition's values under the instance's override.
    let loki = until(
        &cluster,
        &resource("apps/v1", "StatefulSet", &ns, "ops-loki"),
        |c| c.is_some(),
    )
    .await
    .unwrap();
    assert_eq!(loki["spec"]["replicas"], 1);
    // Metrics: Prometheus picks up every ServiceMonitor and rule; threeport's are there.
    let prometheus = until(
        &cluster,
        &resource(
            "monitoring.coreos.com/v1",
            "Prometheus",
            &ns,
            "ops-metrics-prometheus",
        ),
        |c| c.is_some(),
    )
    .await
    .unwrap();
    assert_eq!(
        prometheus["spec"]["serviceMonitorSelector"],
        serde_json::json!({})
    );
    until(
        &cluster,
        &resource(
            "monitoring.coreos.com/v1",
            "ServiceMonitor",
            &ns,
            "threeport-control-plane",
        ),
        |c| c.is_some(),
    )
    .await;
    let rule = until(
        &cluster,
        &resource(
            "monitoring.coreos.com/v1",
            "PrometheusRule",
            &ns,
            "threeport-alerts",
        ),
        |c| c.is_some(),
    )
    .await
    .unwrap();
    assert_eq!(rule["spec"]["groups"][0]["name"], "threeport");

    // Logging off: Loki and Promtail go, Grafana loses the Loki data source.
    let mut changed = definitions.get(definition.id()).await.unwrap();
    changed.spec.logging.enabled = false;
    definitions.update(&changed).await.unwrap();
    until(
        &cluster,
        &resource("apps/v1", "StatefulSet", &ns, "ops-loki"),
        |c| c.is_none(),
    )
    .await;
    until(
        &cluster,
        &resource("apps/v1", "DaemonSet", &ns, "ops-promtail"),
        |c| c.is_none(),
    )
    .await;
    until(
        &cluster,
        &resource("v1", "ConfigMap", &ns, "ops-grafana"),
        |c| {
            c.and_then(|c| c["data"]["datasources.yaml"].as_str())
                .is_some_and(|t| !t.contains("loki") && t.contains("prometheus"))
        },
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let gone = helm.get_by_name("ops-loki").await.is_err()
            && Api::<HelmWorkloadDefinition>::new(store.clone())
                .get_by_name("ops-promtail")
                .await
                .is_err();
        let stack = stacks.get(stack.id()).await.unwrap();
        if gone && stack.is_reconciled() {
            assert_eq!(
                stack.status.details.releases,
                ["ops-metrics", "ops-grafana"]
            );
            assert_eq!(stack.status.details.loki_url, None);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "logging never went");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        helm.get_by_name("ops-metrics").await.is_ok(),
        "metrics stay"
    );

    // The stack deleted: every release and what it put on the cluster goes.
    stacks.delete(stack.id()).await.unwrap();
    tokio::time::timeout(WAIT, stacks.wait_until_gone(stack.id()))
        .await
        .expect("the stack goes")
        .unwrap();
    assert!(helm.list_all(&Default::default()).await.unwrap().is_empty());
    for (api_version, kind, name) in [
        ("apps/v1", "Deployment", "ops-grafana"),
        ("v1", "Service", "ops-metrics-prometheus"),
        (
            "monitoring.coreos.com/v1",
            "ServiceMonitor",
            "threeport-control-plane",
        ),
    ] {
        until(&cluster, &resource(api_version, kind, &ns, name), |c| {
            c.is_none()
        })
        .await;
    }
    shutdown.cancel();
}

/// The metric names a PromQL expression reads (functions, keywords, label names and
/// literals left out).
fn metric_names(expr: &str) -> Vec<String> {
    // Label matchers and ranges hold no metric names.
    let mut cleaned = String::new();
    let mut depth = 0;
    for c in expr.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth == 0 => cleaned.push(c),
            _ => {}
        }
    }
    let keywords = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
    ];
    // Aggregations may take `by (…)` before their argument.
    let aggregations = [
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let mut names = Vec::new();
    let chars: Vec<char> = cleaned.chars().collect();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if keywords.contains(&word.as_str()) {
                // `by (le, route)`: label names follow.
                skip_group = next == Some(&'(');
            } else if next != Some(&'(') && !aggregations.contains(&word.as_str()) {
                names.push(word);
            }
            continue;
        }
        if c == '(' && skip_group {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            skip_group = false;
        }
        i += 1;
    }
    names
}

#[test]
fn promql_metric_names_are_found() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{status=~"5.."}[5m])))"#
        ),
        ["http_request_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names("sum(a_total) / clamp_min(sum(b_total), 1e-9) > 0.1"),
        ["a_total", "b_total"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alerts_query_only_metrics_the_server_exports() {
    let data = common::process::temp_dir();
    let server = common::process::serve(&data, &[]).await;
    let http = common::http_client();
    // A request first: a family shows once it has a series.
    http.get(format!("{}/v0/workload-definitions", server.base))
        .send()
        .await
        .unwrap();
    let metrics = common::process::metrics_text(&http, &server.base).await;
    let families: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let exported = |name: &str| {
        ["_total", "_bucket", "_sum", "_count", ""]
            .iter()
            .any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|family| families.contains(&family))
            })
    };

    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut exprs: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let alerts: Value = serde_yaml::from_str(ALERTS).expect("the alerts are YAML");
    let rules = alerts["groups"][0]["rules"].as_array().unwrap();
    for rule in rules {
        assert!(rule["alert"].is_string() && rule["annotations"]["summary"].is_string());
        exprs.push(rule["expr"].as_str().unwrap().to_owned());
    }
    let alert_names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for wanted in [
        "ThreeportReconcileErrorRatio",
        "ThreeportQueueDepthGrowing",
        "ThreeportOutboxLag",
        "ThreeportApiErrors",
    ] {
        assert!(alert_names.contains(&wanted), "{wanted} in {alert_names:?}");
    }
    let mut queried = Vec::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        for name in names {
            assert!(
                exported(&name),
                "{name} (in {expr}) is not on /metrics: {families:?}"
            );
            queried.push(name);
        }
    }
    for needed in [
        "http_requests_total",
        "controller_runtime_reconcile_total",
        "workqueue_depth",
        "threeport_outbox_lag_seconds",
        "workqueue_redeliveries_total",
    ] {
        assert!(queried.iter().any(|q| q == needed), "{needed} is shown");
    }
    server.terminate().await;
}
