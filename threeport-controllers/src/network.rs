//! Gateways and domain names on the Kubernetes Gateway API.
//!
//! - [`GatewayInstanceReconciler`]: a `Gateway` (one listener per port) with an `HTTPRoute`
//!   or `TCPRoute` per port in the workload's namespace, a cert-manager `Certificate` for TLS
//!   ports; Envoy Gateway (and cert-manager for TLS) installed on the runtime first.
//! - [`DomainNameInstanceReconciler`]: the Route 53 hosted zone found (or created when
//!   asked), external-dns and cert-manager installed on the runtime with that zone among their
//!   domains (and, on EKS, in their roles' policies), an ACME ClusterIssuer per domain.
//!
//! Deleting either takes away only what is its own: the shared services stay on the runtime.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use threeport_api::model::{
    DomainNameDefinition, DomainNameInstance, GatewayDefinition, GatewayInstance,
    KubernetesRuntimeInstance, SupportService, WorkloadInstance, Zone,
};
use threeport_core::object::{ConditionStatus, EventType};
use threeport_core::store::ListQuery;
use threeport_core::{Action, Context, Object, ObjectId, ReconcileError, Reconciler};
use threeport_k8s::apply_all;

use crate::clusters::ClusterProvider;
use crate::deploy::{FIELD_MANAGER, applied, delete_applied, dns_name, prune, runtime_cluster};
use crate::support::{
    GATEWAY_CLASS, Readiness, Support, account_services, cluster_issuer_name, workload_runtime,
};

/// Condition of gateways and domain names: whether the support services they need are
/// installed on the runtime.
pub const SUPPORT_READY: &str = "SupportServicesReady";

/// Label on the Kubernetes objects of a gateway instance: its id.
pub const GATEWAY_INSTANCE_LABEL: &str = "threeport.io/gateway-instance";

/// Sets `SUPPORT_READY` from `pending` (the services not serving yet); the action to take.
fn support_condition<S>(
    status: &mut threeport_core::Status<S>,
    pending: &[SupportService],
    poll: Duration,
) -> Option<Action> {
    if pending.is_empty() {
        status.set_condition(
            SUPPORT_READY,
            ConditionStatus::True,
            "Installed",
            "the support services it needs are installed",
        );
        return None;
    }
    let names: Vec<&str> = pending.iter().map(|s| s.name()).collect();
    status.set_condition(
        SUPPORT_READY,
        ConditionStatus::False,
        "Installing",
        format!("waiting for {} on the runtime", names.join(", ")),
    );
    Some(Action::RequeueAfter(poll))
}

/// Ensures `services` on `runtime`; the ones not serving yet.
async fn ensure_all(
    support: &Support,
    ctx: &Context,
    runtime: &Object<KubernetesRuntimeInstance>,
    services: &[SupportService],
) -> Result<Vec<SupportService>, ReconcileError> {
    let mut pending = Vec::new();
    for &service in services {
        if support.ensure(ctx, runtime, service).await? == Readiness::Pending {
            pending.push(service);
        }
    }
    Ok(pending)
}

/// Reconciles `GatewayInstance`: the workload's ingress on the Gateway API.
#[derive(Debug, Clone)]
pub struct GatewayInstanceReconciler {
    clusters: Arc<dyn ClusterProvider>,
    support: Support,
}

impl GatewayInstanceReconciler {
    /// A controller reaching runtimes through `clusters`, installing support services with
    /// `support`.
    pub fn new(clusters: Arc<dyn ClusterProvider>, support: Support) -> Self {
        GatewayInstanceReconciler { clusters, support }
    }
}

/// The Kubernetes objects of a gateway: a `Gateway`, routes, a `Certificate` for TLS.
pub fn gateway_manifests(
    name: &str,
    namespace: &str,
    class: &str,
    host: Option<&str>,
    issuer: Option<&str>,
    definition: &GatewayDefinition,
) -> Vec<Value> {
    let secret = format!("{name}-tls");
    let tls = json!({"mode": "Terminate",
                     "certificateRefs": [{"kind": "Secret", "name": secret}]});
    let mut listeners = Vec::new();
    let mut routes = Vec::new();
    let service = &definition.service_name;
    for port in &definition.http_ports {
        let listener = format!(
            "{}-{}",
            if port.tls_enabled { "https" } else { "http" },
            port.port
        );
        let mut entry = json!({"name": listener, "port": port.port,
            "protocol": if port.tls_enabled { "HTTPS" } else { "HTTP" }});
        if let Some(host) = host {
            entry["hostname"] = json!(host);
        }
        if port.tls_enabled {
            entry["tls"] = tls.clone();
        }
        listeners.push(entry);
        let rule = if port.https_redirect {
            json!({"filters": [{"type": "RequestRedirect",
                "requestRedirect": {"scheme": "https", "statusCode": 301}}]})
        } else {
            json!({"matches": [{"path": {"type": "PathPrefix", "value": port.path}}],
                   "backendRefs": [{"name": service,
                                    "port": port.service_port.unwrap_or(port.port)}]})
        };
        let mut route = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": format!("{name}-{listener}"), "namespace": namespace},
            "spec": {"parentRefs": [{"name": name, "sectionName": listener}],
                     "rules": [rule]},
        });
        if let Some(host) = host {
            route["spec"]["hostnames"] = json!([host]);
        }
        routes.push(route);
    }
    for port in &definition.tcp_ports {
        let listener = format!("tcp-{}", port.port);
        let mut entry = json!({"name": listener, "port": port.port,
            "protocol": if port.tls_enabled { "TLS" } else { "TCP" }});
        if port.tls_enabled {
            entry["tls"] = tls.clone();
            if let Some(host) = host {
                entry["hostname"] = json!(host);
            }
        }
        listeners.push(entry);
        let mut route = json!({
            "apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
            "metadata": {"name": format!("{name}-{listener}"), "namespace": namespace},
            "spec": {"parentRefs": [{"name": name, "sectionName": listener}],
                     "rules": [{"backendRefs": [{"name": service,
                         "port": port.service_port.unwrap_or(port.port)}]}]},
        });
        if let Some(host) = host {
            // TCP routes carry no host names: external-dns takes it from here.
            route["metadata"]["annotations"] =
                json!({"external-dns.alpha.kubernetes.io/hostname": host});
        }
        routes.push(route);
    }
    let mut manifests = vec![json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gatewayClassName": class, "listeners": listeners},
    })];
    if let (Some(host), Some(issuer)) = (host, issuer) {
        manifests.push(json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": secret, "namespace": namespace},
            "spec": {"secretName": secret, "dnsNames": [host],
                     "issuerRef": {"kind": "ClusterIssuer", "name": issuer}},
        }));
    }
    manifests.extend(routes);
    manifests
}

/// The namespace of the workload's Service `service`, if its controller applied one.
fn service_namespace(workload: &Object<WorkloadInstance>, service: &str) -> Option<String> {
    let status = &workload.status.details;
    status
        .resources
        .iter()
        .find(|r| r.kind == "Service" && r.name == service)
        .map(|r| {
            r.namespace
                .clone()
                .or_else(|| status.namespace.clone())
                .unwrap_or_else(|| "default".to_owned())
        })
}

/// The domain-name instance of `domain` serving `workload`, if there is one.
async fn domain_instance(
    ctx: &Context,
    domain: ObjectId,
    workload: ObjectId,
) -> Result<Option<Object<DomainNameInstance>>, ReconcileError> {
    let query = ListQuery::default()
        .referencing("workload_instance", workload)
        .limit(1000);
    Ok(ctx
        .api::<DomainNameInstance>()
        .list_all(&query)
        .await?
        .into_iter()
        .find(|d| d.spec.definition == domain && !d.is_deleting()))
}

#[async_trait]
impl Reconciler for GatewayInstanceReconciler {
    type Object = GatewayInstance;

    async fn reconcile(
        &self,
        gateway: &mut Object<GatewayInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let definition = ctx
            .api::<GatewayDefinition>()
            .get(gateway.spec.definition)
            .await?
            .spec;
        // The workload places itself; we follow it.
        let workload = ctx
            .api::<WorkloadInstance>()
            .get(gateway.spec.workload_instance)
            .await?;
        let Some(namespace) = service_namespace(&workload, &definition.service_name) else {
            if workload.is_reconciled() {
                return Err(ReconcileError::terminal(format!(
                    "service_name: workload instance {} has no Service named {}",
                    workload.meta.name, definition.service_name
                )));
            }
            gateway.status.set_condition(
                SUPPORT_READY,
                ConditionStatus::False,
                "WaitingForWorkload",
                format!(
                    "workload instance {} is not deployed yet",
                    workload.meta.name
                ),
            );
            return Ok(Action::RequeueAfter(self.support.poll()));
        };
        let Some(runtime_id) = workload_runtime(ctx, workload.id()).await? else {
            return Ok(Action::RequeueAfter(self.support.poll()));
        };
        let runtime = ctx
            .api::<KubernetesRuntimeInstance>()
            .get(runtime_id)
            .await?;
        let Some(cluster) =
            runtime_cluster(self.clusters.as_ref(), &runtime, &mut gateway.status).await?
        else {
            return Ok(Action::RequeueAfter(self.support.poll()));
        };
        let tls = definition.http_ports.iter().any(|p| p.tls_enabled)
            || definition.tcp_ports.iter().any(|p| p.tls_enabled);
        let mut needed = Vec::new();
        if definition.gateway_class.is_none() {
            needed.push(SupportService::EnvoyGateway);
        }
        let mut host = None;
        let mut issuer = None;
        if let Some(domain_id) = definition.domain_name {
            let domain = ctx.api::<DomainNameDefinition>().get(domain_id).await?;
            let name = domain.spec.domain.trim_end_matches('.').to_owned();
            host = Some(match &definition.subdomain {
                Some(sub) => format!("{sub}.{name}"),
                None => name.clone(),
            });
            if tls {
                // The domain's ClusterIssuer comes with its domain-name instance.
                let published = domain_instance(ctx, domain_id, workload.id())
                    .await?
                    .is_some_and(|d| d.is_reconciled());
                if !published {
                    gateway.status.set_condition(
                        SUPPORT_READY,
                        ConditionStatus::False,
                        "WaitingForDomainName",
                        format!(
                            "TLS needs a reconciled domain-name instance of {} for workload {}",
                            domain.meta.name, workload.meta.name
                        ),
                    );
                    return Ok(Action::RequeueAfter(self.support.poll()));
                }
                needed.push(SupportService::CertManager);
                issuer = Some(cluster_issuer_name(&name, definition.certificate_issuer));
            }
        }
        let pending = ensure_all(&self.support, ctx, &runtime, &needed).await?;
        if let Some(action) = support_condition(&mut gateway.status, &pending, self.support.poll())
        {
            return Ok(action);
        }
        let class = definition
            .gateway_class
            .clone()
            .unwrap_or_else(|| GATEWAY_CLASS.to_owned());
        let name = dns_name(&gateway.meta.name, 50);
        let mut manifests = gateway_manifests(
            &name,
            &namespace,
            &class,
            host.as_deref(),
            issuer.as_deref(),
            &definition,
        );
        for manifest in &mut manifests {
            manifest["metadata"]["labels"] = json!({
                GATEWAY_INSTANCE_LABEL: gateway.id().to_string(),
                "app.kubernetes.io/managed-by": "threeport",
            });
        }
        let live = apply_all(cluster.as_ref(), &manifests, FIELD_MANAGER).await?;
        let now = applied(&live, &gateway.status.details.resources);
        let dropped = prune(cluster.as_ref(), &gateway.status.details.resources, &now).await?;
        if !dropped.is_empty() {
            let names: Vec<String> = dropped.iter().map(ToString::to_string).collect();
            gateway.status.record_event(
                EventType::Normal,
                "Pruned",
                format!(
                    "removed what the gateway no longer has: {}",
                    names.join(", ")
                ),
            );
        }
        let details = &mut gateway.status.details;
        if details.resources != now {
            gateway.status.record_event(
                EventType::Normal,
                "Applied",
                format!(
                    "gateway {name} in {namespace} on runtime {} ({class})",
                    runtime.meta.name
                ),
            );
        }
        let details = &mut gateway.status.details;
        details.runtime = Some(runtime.id());
        details.host = host;
        details.gateway_class = Some(class);
        details.resources = now;
        Ok(Action::Done)
    }

    async fn cleanup(
        &self,
        gateway: &mut Object<GatewayInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let Some(runtime_id) = gateway.status.details.runtime else {
            return Ok(Action::Done);
        };
        if gateway.status.details.resources.is_empty() {
            return Ok(Action::Done);
        }
        let runtime = match ctx.api::<KubernetesRuntimeInstance>().get(runtime_id).await {
            Ok(runtime) => runtime,
            // The runtime, and its cluster with the routes on it, went first.
            Err(err) if err.kind() == threeport_core::ErrorKind::NotFound => {
                return Ok(Action::Done);
            }
            Err(err) => return Err(err.into()),
        };
        let cluster = self.clusters.cluster(&runtime).await?;
        delete_applied(cluster.as_ref(), &gateway.status.details.resources).await?;
        gateway.status.details.resources.clear();
        Ok(Action::Done)
    }
}

/// Reconciles `DomainNameInstance`: the domain's hosted zone, and the DNS services that
/// publish into it on the workload's runtime.
#[derive(Debug, Clone)]
pub struct DomainNameInstanceReconciler {
    support: Support,
}

impl DomainNameInstanceReconciler {
    /// A controller reaching AWS and installing support services through `support`.
    pub fn new(support: Support) -> Self {
        DomainNameInstanceReconciler { support }
    }
}

#[async_trait]
impl Reconciler for DomainNameInstanceReconciler {
    type Object = DomainNameInstance;

    async fn reconcile(
        &self,
        instance: &mut Object<DomainNameInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let definition = ctx
            .api::<DomainNameDefinition>()
            .get(instance.spec.definition)
            .await?;
        let domain = definition.spec.domain.trim_end_matches('.').to_owned();
        let (services, region) =
            account_services(self.support.aws(), ctx, definition.spec.aws_account).await?;
        let private = definition.spec.zone == Zone::Private;
        let zone = match services.zones.find_zone(&domain, private).await? {
            Some(zone) => zone,
            None if definition.spec.create_zone => {
                let zone = services.zones.ensure_zone(&domain, None).await?;
                instance.status.details.zone_created = true;
                instance.status.record_event(
                    EventType::Normal,
                    "ZoneCreated",
                    format!(
                        "created hosted zone {domain} ({}): delegate the domain to its name servers",
                        zone.id
                    ),
                );
                zone
            }
            None => {
                let visibility = if private { "private" } else { "public" };
                return Err(ReconcileError::terminal(format!(
                    "hosted zone {domain} does not exist in Route 53 as a {visibility} zone \
                     (domain name definition {}): create it{}",
                    definition.meta.name,
                    if private { "" } else { ", or set create_zone" }
                )));
            }
        };
        let details = &mut instance.status.details;
        details.domain = Some(domain);
        details.hosted_zone_id = Some(zone.id);
        details.region = Some(region);
        let Some(runtime_id) = workload_runtime(ctx, instance.spec.workload_instance).await? else {
            instance.status.set_condition(
                SUPPORT_READY,
                ConditionStatus::False,
                "WaitingForWorkload",
                "its workload instance is not placed on a runtime yet",
            );
            return Ok(Action::RequeueAfter(self.support.poll()));
        };
        instance.status.details.runtime = Some(runtime_id);
        let runtime = ctx
            .api::<KubernetesRuntimeInstance>()
            .get(runtime_id)
            .await?;
        let needed = [SupportService::ExternalDns, SupportService::CertManager];
        let pending = ensure_all(&self.support, ctx, &runtime, &needed).await?;
        if let Some(action) = support_condition(&mut instance.status, &pending, self.support.poll())
        {
            return Ok(action);
        }
        Ok(Action::Done)
    }

    async fn cleanup(
        &self,
        instance: &mut Object<DomainNameInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        // Being deleted, it is left out of what the DNS services are given now.
        let Some(runtime_id) = instance.status.details.runtime else {
            return Ok(Action::Done);
        };
        let runtime = match ctx.api::<KubernetesRuntimeInstance>().get(runtime_id).await {
            Ok(runtime) if !runtime.is_deleting() => runtime,
            Ok(_) => return Ok(Action::Done),
            Err(err) if err.kind() == threeport_core::ErrorKind::NotFound => {
                return Ok(Action::Done);
            }
            Err(err) => return Err(err.into()),
        };
        // Best effort: a runtime's DNS services that cannot be updated now (AWS or the store
        // unreachable) must not keep the domain name from going; the next domain name or
        // gateway on the runtime derives them again without it.
        if let Err(err) = ensure_all(
            &self.support,
            ctx,
            &runtime,
            &[SupportService::ExternalDns, SupportService::CertManager],
        )
        .await
        {
            tracing::warn!(error = %err, runtime = %runtime.meta.name,
                "the runtime's DNS services still list the deleted domain name");
        }
        Ok(Action::Done)
    }
}
