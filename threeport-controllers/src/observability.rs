//! Observability stacks: metrics (kube-prometheus-stack), logging (Loki, with Promtail
//! shipping pod logs to it) and dashboards (Grafana, with data sources for both and
//! threeport's own dashboard), each chart a `HelmWorkloadDefinition` + `HelmWorkloadInstance`
//! pair owned by the `ObservabilityStackInstance` — released by the Helm controller, removed
//! when its component is turned off, and with the stack.
//!
//! Values merge in three layers, by Helm's rules: what threeport wires (service names, data
//! sources, the push URL), then the definition's, then the instance's overrides.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{Value, json};
use threeport_api::model::{
    HelmWorkloadDefinition, HelmWorkloadInstance, KubernetesRuntimeInstance,
    ObservabilityStackDefinition, ObservabilityStackInstance,
};
use threeport_core::object::ConditionStatus;
use threeport_core::{Action, ApiObject, Context, Object, ObjectRef, ReconcileError, Reconciler};

use crate::deploy::{OwnedRelease, dns_name, get_by_name, release_owned};

/// Threeport's Grafana dashboard of a control plane's own metrics.
pub const DASHBOARD: &str = include_str!("../observability/threeport-control-plane.json");

/// Threeport's alerting rules, as a PrometheusRule's `spec` (YAML).
pub const ALERTS: &str = include_str!("../observability/threeport-alerts.yaml");

/// Condition of a stack: whether every enabled component is released and every disabled one
/// removed.
pub const COMPONENTS_READY: &str = "ComponentsReady";

/// A chart of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StackChart {
    /// kube-prometheus-stack (metrics).
    Metrics,
    /// Loki (logging).
    Loki,
    /// Promtail (logging: ships pod logs to Loki).
    Promtail,
    /// Grafana (dashboards).
    Grafana,
}

impl StackChart {
    /// Every chart, in install order.
    pub const ALL: [StackChart; 4] = [
        StackChart::Metrics,
        StackChart::Loki,
        StackChart::Promtail,
        StackChart::Grafana,
    ];

    /// The suffix of its objects' names (`<stack>-<suffix>`).
    pub fn suffix(self) -> &'static str {
        match self {
            StackChart::Metrics => "metrics",
            StackChart::Loki => "loki",
            StackChart::Promtail => "promtail",
            StackChart::Grafana => "grafana",
        }
    }
}

/// A chart source (repository, chart, pinned version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackChartSource {
    /// Chart repository URL.
    pub repo: String,
    /// Chart name.
    pub chart: String,
    /// Version used when the definition names none.
    pub version: String,
}

/// Where a stack's charts come from: pinned here, overridable (tests serve stand-ins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackCharts(BTreeMap<StackChart, StackChartSource>);

impl Default for StackCharts {
    fn default() -> Self {
        let pin = |repo: &str, chart: &str, version: &str| StackChartSource {
            repo: repo.to_owned(),
            chart: chart.to_owned(),
            version: version.to_owned(),
        };
        let grafana = "https://grafana.github.io/helm-charts";
        StackCharts(BTreeMap::from([
            (
                StackChart::Metrics,
                pin(
                    "https://prometheus-community.github.io/helm-charts",
                    "kube-prometheus-stack",
                    "77.6.2",
                ),
            ),
            (StackChart::Loki, pin(grafana, "loki", "6.40.0")),
            (StackChart::Promtail, pin(grafana, "promtail", "6.17.0")),
            (StackChart::Grafana, pin(grafana, "grafana", "10.0.0")),
        ]))
    }
}

impl StackCharts {
    /// The source of `chart`.
    pub fn get(&self, chart: StackChart) -> &StackChartSource {
        &self.0[&chart]
    }

    /// These sources with `chart`'s replaced.
    pub fn with(mut self, chart: StackChart, source: StackChartSource) -> Self {
        self.0.insert(chart, source);
        self
    }
}

/// Reconciles `ObservabilityStackInstance`.
#[derive(Debug, Clone, Default)]
pub struct ObservabilityStackReconciler {
    charts: StackCharts,
}

impl ObservabilityStackReconciler {
    /// A controller installing from `charts`.
    pub fn new(charts: StackCharts) -> Self {
        ObservabilityStackReconciler { charts }
    }
}

/// Merges `over` into `base` by Helm's rules: mappings key by key, anything else replaced
/// (`null` removes the key).
pub fn merge_values(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                if value.is_null() {
                    base.remove(&key);
                } else {
                    merge_values(base.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// YAML values as JSON; `field` names them in the error.
fn parse_values(field: &str, text: Option<&str>) -> Result<Value, ReconcileError> {
    let Some(text) = text else {
        return Ok(json!({}));
    };
    let value: Value = serde_yaml::from_str(text)
        .map_err(|e| ReconcileError::terminal(format!("{field}: not YAML: {e}")))?;
    Ok(if value.is_null() { json!({}) } else { value })
}

/// The in-cluster names of a stack's services.
struct Wiring {
    namespace: String,
    metrics: String,
    loki: String,
    promtail: String,
    grafana: String,
}

impl Wiring {
    fn prometheus_url(&self) -> String {
        format!(
            "http://{}-prometheus.{}.svc:9090",
            self.metrics, self.namespace
        )
    }
    fn loki_url(&self) -> String {
        format!("http://{}.{}.svc:3100", self.loki, self.namespace)
    }
    fn grafana_url(&self) -> String {
        format!("http://{}.{}.svc:80", self.grafana, self.namespace)
    }
}

/// What threeport sets on `chart` (values) and adds beside it (manifests).
fn wired(
    chart: StackChart,
    wiring: &Wiring,
    definition: &ObservabilityStackDefinition,
) -> Result<(Value, Vec<Value>), ReconcileError> {
    let namespace = &wiring.namespace;
    Ok(match chart {
        StackChart::Metrics => {
            let rules: Value = serde_yaml::from_str(ALERTS)
                .map_err(|e| ReconcileError::terminal(format!("threeport's alerts: {e}")))?;
            let values = json!({
                "fullnameOverride": wiring.metrics,
                // Grafana is the dashboards component's.
                "grafana": {"enabled": false},
                // Pick up every ServiceMonitor and rule, threeport's among them.
                "prometheus": {"prometheusSpec": {
                    "serviceMonitorSelectorNilUsesHelmValues": false,
                    "ruleSelectorNilUsesHelmValues": false}},
            });
            let monitor = json!({
                "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                "metadata": {"name": "threeport-control-plane", "namespace": namespace},
                "spec": {
                    "selector": {"matchLabels": {"app.kubernetes.io/name": "threeport-server"}},
                    "namespaceSelector": {"any": true},
                    "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
                },
            });
            let rule = json!({
                "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                "metadata": {"name": "threeport-alerts", "namespace": namespace},
                "spec": rules,
            });
            (values, vec![monitor, rule])
        }
        StackChart::Loki => (
            json!({
                "fullnameOverride": wiring.loki,
                "deploymentMode": "SingleBinary",
                "loki": {"auth_enabled": false,
                         "commonConfig": {"replication_factor": 1},
                         "storage": {"type": "filesystem"}},
                "singleBinary": {"replicas": 1},
            }),
            Vec::new(),
        ),
        StackChart::Promtail => (
            json!({
                "fullnameOverride": wiring.promtail,
                "config": {"clients": [{"url": format!("{}/loki/api/v1/push", wiring.loki_url())}]},
            }),
            Vec::new(),
        ),
        StackChart::Grafana => {
            let mut sources = Vec::new();
            if definition.metrics.enabled {
                sources.push(json!({"name": "Prometheus", "type": "prometheus",
                    "uid": "prometheus", "url": wiring.prometheus_url(), "access": "proxy",
                    "isDefault": true}));
            }
            if definition.logging.enabled {
                sources.push(json!({"name": "Loki", "type": "loki", "uid": "loki",
                    "url": wiring.loki_url(), "access": "proxy"}));
            }
            let values = json!({
                "fullnameOverride": wiring.grafana,
                "datasources": {"datasources.yaml": {"apiVersion": 1, "datasources": sources}},
                "sidecar": {"dashboards": {"enabled": true, "label": "grafana_dashboard",
                                           "labelValue": "1", "searchNamespace": "ALL"}},
            });
            let dashboards = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "threeport-dashboards", "namespace": namespace,
                             "labels": {"grafana_dashboard": "1"}},
                "data": {"threeport-control-plane.json": DASHBOARD},
            });
            (values, vec![dashboards])
        }
    })
}

/// Whether `chart` belongs to an enabled component of `definition`.
fn enabled(chart: StackChart, definition: &ObservabilityStackDefinition) -> bool {
    match chart {
        StackChart::Metrics => definition.metrics.enabled,
        StackChart::Loki | StackChart::Promtail => definition.logging.enabled,
        StackChart::Grafana => definition.dashboards.enabled,
    }
}

#[async_trait]
impl Reconciler for ObservabilityStackReconciler {
    type Object = ObservabilityStackInstance;

    async fn reconcile(
        &self,
        stack: &mut Object<ObservabilityStackInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let definition = ctx
            .api::<ObservabilityStackDefinition>()
            .get(stack.spec.definition)
            .await?
            .spec;
        // The runtime must exist; the Helm controller waits for its cluster.
        let runtime = ctx
            .api::<KubernetesRuntimeInstance>()
            .get(stack.spec.runtime)
            .await?;
        let base = dns_name(&stack.meta.name, 40);
        let wiring = Wiring {
            namespace: format!("{base}-observability"),
            metrics: format!("{base}-metrics"),
            loki: format!("{base}-loki"),
            promtail: format!("{base}-promtail"),
            grafana: format!("{base}-grafana"),
        };
        let owner = ObjectRef::new(ObservabilityStackInstance::KIND, stack.id());
        let overrides = &stack.spec.overrides;
        let mut releases = Vec::new();
        let mut waiting = Vec::new();
        for chart in StackChart::ALL {
            let name = format!("{}-{}", stack.meta.name, chart.suffix());
            if !enabled(chart, &definition) {
                if remove(ctx, &name).await? {
                    waiting.push(format!("{name} (removing)"));
                }
                continue;
            }
            let (component, own, over) = match chart {
                StackChart::Metrics => (
                    &definition.metrics,
                    definition.metrics.values.as_deref(),
                    overrides.metrics.as_deref(),
                ),
                StackChart::Loki => (
                    &definition.logging,
                    definition.logging.values.as_deref(),
                    overrides.logging.as_deref(),
                ),
                StackChart::Promtail => (
                    &definition.logging,
                    definition.promtail_values.as_deref(),
                    overrides.promtail.as_deref(),
                ),
                StackChart::Grafana => (
                    &definition.dashboards,
                    definition.dashboards.values.as_deref(),
                    overrides.dashboards.as_deref(),
                ),
            };
            let (mut values, additional) = wired(chart, &wiring, &definition)?;
            merge_values(&mut values, parse_values("definition values", own)?);
            merge_values(&mut values, parse_values("overrides", over)?);
            let source = self.charts.get(chart);
            let version = component
                .chart_version
                .clone()
                .unwrap_or_else(|| source.version.clone());
            let release = OwnedRelease {
                name: &name,
                repo: &source.repo,
                chart: &source.chart,
                version: &version,
                values: &values,
                additional: &additional,
                runtime: runtime.id(),
                namespace: &wiring.namespace,
                owner: owner.clone(),
            };
            let before = get_by_name::<HelmWorkloadDefinition>(ctx, &name).await?;
            let instance = release_owned(ctx, release, before).await?;
            if !instance.is_reconciled() {
                waiting.push(name.clone());
            }
            releases.push(name);
        }
        let details = &mut stack.status.details;
        details.namespace = Some(wiring.namespace.clone());
        details.releases = releases;
        details.prometheus_url = definition.metrics.enabled.then(|| wiring.prometheus_url());
        details.loki_url = definition.logging.enabled.then(|| wiring.loki_url());
        details.grafana_url = definition.dashboards.enabled.then(|| wiring.grafana_url());
        if waiting.is_empty() {
            stack.status.set_condition(
                COMPONENTS_READY,
                ConditionStatus::True,
                "Released",
                "every enabled component is released",
            );
            Ok(Action::Done)
        } else {
            // The stack follows the Helm instances it owns: their progress brings it back.
            stack.status.set_condition(
                COMPONENTS_READY,
                ConditionStatus::False,
                "Releasing",
                format!("waiting for {}", waiting.join(", ")),
            );
            Ok(Action::RequeueAfter(std::time::Duration::from_secs(30)))
        }
    }
}

/// Removes release `name` of a component turned off: its instance first (the Helm controller
/// uninstalls it), then its definition. `true` while it is still going.
async fn remove(ctx: &Context, name: &str) -> Result<bool, ReconcileError> {
    if let Some(instance) = get_by_name::<HelmWorkloadInstance>(ctx, name).await? {
        if !instance.is_deleting() {
            ctx.api::<HelmWorkloadInstance>()
                .delete(instance.id())
                .await?;
        }
        return Ok(true);
    }
    if let Some(definition) = get_by_name::<HelmWorkloadDefinition>(ctx, name).await? {
        if !definition.is_deleting() {
            ctx.api::<HelmWorkloadDefinition>()
                .delete(definition.id())
                .await?;
        }
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_merge_by_helms_rules() {
        let mut base = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": 1});
        merge_values(
            &mut base,
            json!({"a": {"c": [3], "f": true}, "d": {"g": 1}, "e": null}),
        );
        assert_eq!(
            base,
            json!({"a": {"b": 1, "c": [3], "f": true}, "d": {"g": 1}})
        );
    }

    #[test]
    fn the_dashboard_and_alerts_parse() {
        let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
        assert_eq!(dashboard["uid"], "threeport-control-plane");
        let alerts: Value = serde_yaml::from_str(ALERTS).unwrap();
        assert!(alerts["groups"][0]["rules"].as_array().unwrap().len() >= 4);
    }
}
