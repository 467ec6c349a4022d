//! Support services on runtimes: the Gateway API with Envoy Gateway, cert-manager,
//! external-dns, external-secrets and the cluster-autoscaler, each installed as a
//! `HelmWorkloadDefinition` + `HelmWorkloadInstance` pair that the runtime owns (so they show
//! up, upgrade and uninstall like any Helm workload, and go with the runtime).
//!
//! What a service is given is computed from the store every time, by whichever controller
//! needs it (gateway, domain name, secret, runtime, EKS): the domains and regions in use on
//! the runtime, and on EKS its own IAM role through the cluster's OIDC provider (IRSA), with a
//! policy limited to what the service touches. So any of them writes the same desired state,
//! and the last writer cannot drop what another added.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use threeport_api::model::{
    AwsAccount, AwsEksKubernetesRuntimeDefinition, AwsEksKubernetesRuntimeInstance,
    CertificateIssuer, DomainNameDefinition, DomainNameInstance, HelmWorkloadDefinition,
    HelmWorkloadInstance, KubernetesRuntimeInstance, SecretDefinition, SecretInstance,
    SupportService, WorkloadInstance,
};
use threeport_aws::{HostedZone, RoleRequest, Trust, partition};
use threeport_core::store::ListQuery;
use threeport_core::{
    ApiObject, Context, Error, ErrorKind, Object, ObjectId, ObjectRef, ReconcileError,
};

use crate::attached::secret_store_name;
use crate::aws::{AwsProvider, AwsServices};
use crate::deploy::{OwnedRelease, dns_name, get_by_name, release_owned};

/// Where a support service's chart comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportChart {
    /// Chart repository (`https://…`) or OCI registry path (`oci://…`).
    pub repo: String,
    /// Chart name.
    pub chart: String,
    /// Exact chart version.
    pub version: String,
}

/// The charts support services are installed from: pinned here, in one place, and
/// overridable per service (`threeport-server --support-chart`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportCharts(BTreeMap<SupportService, SupportChart>);

impl Default for SupportCharts {
    fn default() -> Self {
        let pin = |repo: &str, chart: &str, version: &str| SupportChart {
            repo: repo.to_owned(),
            chart: chart.to_owned(),
            version: version.to_owned(),
        };
        SupportCharts(BTreeMap::from([
            (
                SupportService::EnvoyGateway,
                pin("oci://docker.io/envoyproxy", "gateway-helm", "v1.5.1"),
            ),
            (
                SupportService::CertManager,
                pin("https://charts.jetstack.io", "cert-manager", "v1.18.2"),
            ),
            (
                SupportService::ExternalDns,
                pin(
                    "https://kubernetes-sigs.github.io/external-dns/",
                    "external-dns",
                    "1.19.0",
                ),
            ),
            (
                SupportService::ExternalSecrets,
                pin(
                    "https://charts.external-secrets.io",
                    "external-secrets",
                    "0.19.2",
                ),
            ),
            (
                SupportService::ClusterAutoscaler,
                pin(
                    "https://kubernetes.github.io/autoscaler",
                    "cluster-autoscaler",
                    "9.50.1",
                ),
            ),
        ]))
    }
}

impl SupportCharts {
    /// The chart of `service`.
    pub fn get(&self, service: SupportService) -> &SupportChart {
        &self.0[&service]
    }

    /// These charts with `service`'s replaced.
    pub fn with(mut self, service: SupportService, chart: SupportChart) -> Self {
        self.0.insert(service, chart);
        self
    }

    /// Parses an override in the form `<service>=<repo>/<chart>@<version>`
    /// (`cert-manager=https://charts.example.com/cert-manager@v1.18.2`).
    ///
    /// Errors: `Invalid` (field `support_chart`) naming what is wrong.
    pub fn parse_override(text: &str) -> threeport_core::Result<(SupportService, SupportChart)> {
        let invalid = |message: String| Error::invalid("support_chart", message);
        let (name, source) = text.split_once('=').ok_or_else(|| {
            invalid(format!(
                "{text:?}: expected <service>=<repo>/<chart>@<version>"
            ))
        })?;
        let service = SupportService::from_name(name).ok_or_else(|| {
            let known: Vec<_> = SupportService::ALL.iter().map(|s| s.name()).collect();
            invalid(format!(
                "unknown service {name:?} (one of {})",
                known.join(", ")
            ))
        })?;
        let (path, version) = source
            .rsplit_once('@')
            .filter(|(_, v)| !v.is_empty())
            .ok_or_else(|| invalid(format!("{text:?}: no @<version>")))?;
        let (repo, chart) = path
            .trim_end_matches('/')
            .rsplit_once('/')
            .filter(|(repo, chart)| repo.contains("://") && !chart.is_empty())
            .ok_or_else(|| invalid(format!("{text:?}: expected <repo URL>/<chart>")))?;
        let chart = SupportChart {
            repo: repo.to_owned(),
            chart: chart.to_owned(),
            version: version.to_owned(),
        };
        Ok((service, chart))
    }
}

/// The namespace a service is installed in.
pub fn namespace(service: SupportService) -> &'static str {
    match service {
        SupportService::EnvoyGateway => "envoy-gateway-system",
        SupportService::CertManager => "cert-manager",
        SupportService::ExternalDns => "external-dns",
        SupportService::ExternalSecrets => "external-secrets",
        SupportService::ClusterAutoscaler => "kube-system",
    }
}

/// The service account a service's chart is told to use (its IRSA role trusts it).
fn service_account(service: SupportService) -> &'static str {
    service.name()
}

/// Name of the Helm definition and instance of `service` on runtime `runtime`.
pub fn object_name(service: SupportService, runtime: &str) -> String {
    format!("{}-{}", service.name(), runtime)
}

/// The GatewayClass threeport's Envoy Gateway serves.
pub const GATEWAY_CLASS: &str = "threeport";

/// The ClusterIssuer of `domain` at `issuer` (one per domain and ACME server, made with
/// cert-manager).
pub fn cluster_issuer_name(domain: &str, issuer: CertificateIssuer) -> String {
    format!(
        "letsencrypt-{}-{}",
        issuer.short_name(),
        dns_name(domain, 40)
    )
}

/// A domain in use on a runtime: its definition and zone.
#[derive(Debug, Clone)]
struct DomainInUse {
    definition: DomainNameDefinition,
    zone: HostedZone,
    region: String,
}

/// The EKS side of a runtime threeport made: its cluster and the account's services.
struct Eks {
    cluster: String,
    region: String,
    account_id: String,
    provider_arn: String,
    issuer: String,
    services: AwsServices,
}

/// Installs support services, computing what each is given from the store.
#[derive(Debug, Clone)]
pub struct Support {
    aws: Arc<dyn AwsProvider>,
    charts: SupportCharts,
    poll: Duration,
}

/// Whether a support service is installed and serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Its Helm instance is reconciled.
    Ready,
    /// Not yet: look again later.
    Pending,
}

impl Support {
    /// Support reaching AWS through `aws`, installing from `charts`.
    pub fn new(aws: Arc<dyn AwsProvider>, charts: SupportCharts) -> Self {
        Support {
            aws,
            charts,
            poll: Duration::from_secs(5),
        }
    }

    /// Those waiting for a service to install look again every `poll` (default 5 s; tests
    /// use milliseconds).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// How often those waiting for a service look again.
    pub fn poll(&self) -> Duration {
        self.poll
    }

    /// The AWS accounts it reaches.
    pub fn aws(&self) -> &Arc<dyn AwsProvider> {
        &self.aws
    }

    /// Makes sure `service` is installed on `runtime` with what it needs now; says whether
    /// it is serving.
    pub async fn ensure(
        &self,
        ctx: &Context,
        runtime: &Object<KubernetesRuntimeInstance>,
        service: SupportService,
    ) -> Result<Readiness, ReconcileError> {
        let name = object_name(service, &runtime.meta.name);
        // Read before computing: an update based on this version fails if another controller
        // wrote in between (from a store that may have changed), and is then retried.
        let before = get_by_name::<HelmWorkloadDefinition>(ctx, &name).await?;
        let eks = self.eks(ctx, runtime).await?;
        let (values, additional) = self.desired(ctx, runtime, service, eks.as_ref()).await?;
        let chart = self.charts.get(service);
        let release = OwnedRelease {
            name: &name,
            repo: &chart.repo,
            chart: &chart.chart,
            version: &chart.version,
            values: &values,
            additional: &additional,
            runtime: runtime.id(),
            namespace: namespace(service),
            owner: ObjectRef::new(KubernetesRuntimeInstance::KIND, runtime.id()),
        };
        let instance = release_owned(ctx, release, before).await?;
        // The instance follows its definition: a changed definition brings it back to
        // release again.
        Ok(if instance.is_reconciled() {
            Readiness::Ready
        } else {
            Readiness::Pending
        })
    }

    /// The values and additional manifests of `service` on `runtime`, and on EKS its role.
    async fn desired(
        &self,
        ctx: &Context,
        runtime: &Object<KubernetesRuntimeInstance>,
        service: SupportService,
        eks: Option<&Eks>,
    ) -> Result<(Value, Vec<Value>), ReconcileError> {
        let account = service_account(service);
        let (mut values, additional, policy) = match service {
            SupportService::EnvoyGateway => {
                let class = json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                    "metadata": {"name": GATEWAY_CLASS},
                    "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"},
                });
                (json!({}), vec![class], None)
            }
            SupportService::CertManager => {
                let domains = self.domains_on(ctx, runtime.id()).await?;
                let issuers = domains
                    .iter()
                    .flat_map(|d| {
                        [
                            CertificateIssuer::LetsencryptStaging,
                            CertificateIssuer::LetsencryptProduction,
                        ]
                        .map(|issuer| cluster_issuer(d, issuer))
                    })
                    .collect();
                let values = json!({
                    "crds": {"enabled": true},
                    // The IRSA token is readable by the pod's group.
                    "securityContext": {"fsGroup": 1001},
                    "serviceAccount": {"name": account},
                });
                (values, issuers, Some(dns_policy(&domains, true)))
            }
            SupportService::ExternalDns => {
                let domains = self.domains_on(ctx, runtime.id()).await?;
                let filters: Vec<&str> = domains.iter().map(|d| d.zone.name.as_str()).collect();
                let region = domains
                    .first()
                    .map(|d| d.region.clone())
                    .or_else(|| eks.map(|e| e.region.clone()))
                    .unwrap_or_else(|| "us-east-1".to_owned());
                let values = json!({
                    "provider": {"name": "aws"},
                    "sources": ["gateway-httproute", "gateway-tcproute", "gateway-tlsroute"],
                    "domainFilters": filters,
                    "policy": "sync",
                    "registry": "txt",
                    "txtOwnerId": format!("threeport-{}", runtime.id()),
                    "env": [{"name": "AWS_DEFAULT_REGION", "value": region}],
                    "serviceAccount": {"name": account},
                });
                (values, Vec::new(), Some(dns_policy(&domains, false)))
            }
            SupportService::ExternalSecrets => {
                let regions = self.secret_regions_on(ctx, runtime).await?;
                let stores = regions
                    .iter()
                    .map(|region| {
                        json!({
                            "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
                            "metadata": {"name": secret_store_name(region)},
                            "spec": {"provider": {"aws": {
                                "service": "SecretsManager", "region": region}}},
                        })
                    })
                    .collect();
                let values = json!({
                    "installCRDs": true,
                    "serviceAccount": {"name": account},
                });
                let policy = eks.map(|e| {
                    json!({"Version": "2012-10-17", "Statement": [{
                        "Effect": "Allow",
                        "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret",
                                   "secretsmanager:ListSecretVersionIds",
                                   "secretsmanager:GetResourcePolicy"],
                        "Resource": format!(
                            "arn:{}:secretsmanager:*:{}:secret:threeport/*",
                            partition(&e.region), e.account_id),
                    }]})
                });
                (values, stores, policy)
            }
            SupportService::ClusterAutoscaler => {
                let Some(eks) = eks else {
                    return Err(ReconcileError::terminal(
                        "the cluster-autoscaler is for EKS runtimes threeport made",
                    ));
                };
                let values = json!({
                    "cloudProvider": "aws",
                    "awsRegion": eks.region,
                    "autoDiscovery": {"clusterName": eks.cluster},
                    "rbac": {"serviceAccount": {"create": true, "name": account}},
                });
                let arn = |what: &str| {
                    format!(
                        "arn:{}:{what}:{}:{}",
                        partition(&eks.region),
                        eks.region,
                        eks.account_id
                    )
                };
                let policy = json!({"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow",
                     "Action": ["autoscaling:SetDesiredCapacity",
                                "autoscaling:TerminateInstanceInAutoScalingGroup"],
                     "Resource": "*",
                     "Condition": {"StringEquals": {
                         "aws:ResourceTag/eks:cluster-name": eks.cluster}}},
                    {"Effect": "Allow",
                     "Action": ["eks:DescribeNodegroup"],
                     "Resource": format!("{}:nodegroup/{}/*", arn("eks"), eks.cluster)},
                    {"Effect": "Allow",
                     "Action": ["autoscaling:DescribeAutoScalingGroups",
                                "autoscaling:DescribeAutoScalingInstances",
                                "autoscaling:DescribeLaunchConfigurations",
                                "autoscaling:DescribeScalingActivities",
                                "autoscaling:DescribeTags",
                                "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
                                "ec2:DescribeLaunchTemplateVersions",
                                "ec2:GetInstanceTypesFromInstanceRequirements"],
                     "Resource": "*"},
                ]});
                (values, Vec::new(), Some(policy))
            }
        };
        if let (Some(eks), Some(policy)) = (eks, policy) {
            let role_arn = self.ensure_role(eks, service, &policy).await?;
            let annotations = json!({"eks.amazonaws.com/role-arn": role_arn});
            match service {
                SupportService::ClusterAutoscaler => {
                    values["rbac"]["serviceAccount"]["annotations"] = annotations;
                }
                _ => values["serviceAccount"]["annotations"] = annotations,
            }
        }
        Ok((values, additional))
    }

    /// The role of `service` on an EKS cluster, trusting only its service account.
    async fn ensure_role(
        &self,
        eks: &Eks,
        service: SupportService,
        policy: &Value,
    ) -> Result<String, ReconcileError> {
        let request = RoleRequest {
            name: role_name(&eks.cluster, service),
            trust: Trust::ServiceAccount {
                provider_arn: eks.provider_arn.clone(),
                issuer: eks.issuer.trim_start_matches("https://").to_owned(),
                namespace: namespace(service).to_owned(),
                name: service_account(service).to_owned(),
            },
            managed_policies: Vec::new(),
            inline_policy: Some(policy.to_string()),
        };
        Ok(eks.services.roles.ensure_role(&request).await?)
    }

    /// The EKS side of `runtime`, if threeport made its cluster and it has an OIDC provider.
    async fn eks(
        &self,
        ctx: &Context,
        runtime: &Object<KubernetesRuntimeInstance>,
    ) -> Result<Option<Eks>, ReconcileError> {
        // The runtime controller names the EKS instance it makes after the runtime.
        let eks = match ctx
            .api::<AwsEksKubernetesRuntimeInstance>()
            .get_by_name(&runtime.meta.name)
            .await
        {
            Ok(eks) if eks.spec.runtime == runtime.id() => eks,
            Ok(_) => return Ok(None),
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let status = &eks.status.details;
        let (Some(cluster), Some(provider_arn), Some(issuer)) = (
            status.cluster_name.clone(),
            status.oidc_provider_arn.clone(),
            status.oidc_issuer.clone(),
        ) else {
            return Err(ReconcileError::retry_after(
                std::time::Duration::from_secs(10),
                format!(
                    "EKS cluster of runtime {} has no OIDC provider yet",
                    runtime.meta.name
                ),
            ));
        };
        let definition = ctx
            .api::<AwsEksKubernetesRuntimeDefinition>()
            .get(eks.spec.definition)
            .await?;
        let account = ctx
            .api::<AwsAccount>()
            .get(definition.spec.aws_account)
            .await?;
        let services = self.aws.services(&account, &eks.spec.region).await?;
        Ok(Some(Eks {
            cluster,
            region: eks.spec.region.clone(),
            account_id: account.spec.account_id.clone(),
            provider_arn,
            issuer,
            services,
        }))
    }

    /// The domain names whose workloads run on `runtime` (not being deleted), with their
    /// zones; a domain whose zone does not exist (yet) is left out.
    async fn domains_on(
        &self,
        ctx: &Context,
        runtime: ObjectId,
    ) -> Result<Vec<DomainInUse>, ReconcileError> {
        let instances = ctx
            .api::<DomainNameInstance>()
            .list_all(&ListQuery::default().limit(1000))
            .await?;
        let mut seen = BTreeSet::new();
        let mut domains = Vec::new();
        for instance in instances.iter().filter(|i| !i.is_deleting()) {
            if workload_runtime(ctx, instance.spec.workload_instance).await? != Some(runtime)
                || !seen.insert(instance.spec.definition)
            {
                continue;
            }
            let definition = ctx
                .api::<DomainNameDefinition>()
                .get(instance.spec.definition)
                .await?;
            let (services, region) =
                account_services(&self.aws, ctx, definition.spec.aws_account).await?;
            let private = definition.spec.zone == threeport_api::model::Zone::Private;
            if let Some(zone) = services
                .zones
                .find_zone(&definition.spec.domain, private)
                .await?
            {
                domains.push(DomainInUse {
                    definition: definition.spec,
                    zone,
                    region,
                });
            }
        }
        domains.sort_by(|a, b| a.zone.name.cmp(&b.zone.name));
        Ok(domains)
    }

    /// The regions of the secrets read by workloads on `runtime`, and the runtime's own on
    /// EKS (so its first secret finds a store).
    async fn secret_regions_on(
        &self,
        ctx: &Context,
        runtime: &Object<KubernetesRuntimeInstance>,
    ) -> Result<BTreeSet<String>, ReconcileError> {
        let mut regions = BTreeSet::new();
        let instances = ctx
            .api::<SecretInstance>()
            .list_all(&ListQuery::default().limit(1000))
            .await?;
        for instance in instances.iter().filter(|i| !i.is_deleting()) {
            if secret_runtime(ctx, &instance.spec).await? != Some(runtime.id()) {
                continue;
            }
            let definition = ctx
                .api::<SecretDefinition>()
                .get(instance.spec.definition)
                .await?;
            if let Some(region) = definition
                .status
                .details
                .arn
                .as_deref()
                .and_then(|arn| arn.split(':').nth(3))
            {
                regions.insert(region.to_owned());
            }
        }
        Ok(regions)
    }
}

/// The IAM role name of `service` on `cluster` (64 characters at most).
pub fn role_name(cluster: &str, service: SupportService) -> String {
    let suffix = format!("-{}", service.name());
    let mut base: String = format!("threeport-{cluster}");
    base.truncate(64 - suffix.len());
    format!("{base}{suffix}")
}

/// Route 53 rights on `domains`' zones only: external-dns publishes records; cert-manager
/// (`dns01`) also reads change status for its DNS01 challenges.
fn dns_policy(domains: &[DomainInUse], dns01: bool) -> Value {
    let zones: Vec<String> = domains.iter().map(|d| d.zone.arn()).collect();
    let mut statements = vec![json!({
        "Effect": "Allow",
        "Action": ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets"],
        "Resource": if zones.is_empty() {
            // No zone in use yet: a statement that grants nothing.
            vec!["arn:aws:route53:::hostedzone/none".to_owned()]
        } else {
            zones
        },
    })];
    if dns01 {
        statements.push(json!({"Effect": "Allow", "Action": ["route53:GetChange"],
                               "Resource": "arn:aws:route53:::change/*"}));
        statements.push(
            json!({"Effect": "Allow", "Action": ["route53:ListHostedZonesByName"],
                               "Resource": "*"}),
        );
    } else {
        statements.push(json!({"Effect": "Allow",
            "Action": ["route53:ListHostedZones", "route53:ListTagsForResource"],
            "Resource": "*"}));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The ACME ClusterIssuer of a domain at `issuer`: DNS01 on the domain's zone only.
fn cluster_issuer(domain: &DomainInUse, issuer: CertificateIssuer) -> Value {
    let name = cluster_issuer_name(&domain.zone.name, issuer);
    json!({
        "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
        "metadata": {"name": name},
        "spec": {"acme": {
            "server": issuer.server(),
            "email": domain.definition.admin_email,
            "privateKeySecretRef": {"name": format!("{name}-account")},
            "solvers": [{
                "selector": {"dnsZones": [domain.zone.name]},
                "dns01": {"route53": {"region": domain.region,
                                      "hostedZoneID": domain.zone.id}},
            }],
        }},
    })
}

/// The runtime a workload instance runs on: the one it names, else the one its controller
/// recorded, else the default runtime it will go to (its services are installed before it
/// deploys: an ExternalSecret waits for its operator).
pub(crate) async fn workload_runtime(
    ctx: &Context,
    workload: ObjectId,
) -> Result<Option<ObjectId>, ReconcileError> {
    match ctx.api::<WorkloadInstance>().get(workload).await {
        Ok(w) => placed(ctx, w.spec.runtime.or(w.status.details.runtime)).await,
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// `named`, else the default runtime's id, if there is one.
async fn placed(
    ctx: &Context,
    named: Option<ObjectId>,
) -> Result<Option<ObjectId>, ReconcileError> {
    if named.is_some() {
        return Ok(named);
    }
    let all = ctx
        .api::<KubernetesRuntimeInstance>()
        .list_all(&ListQuery::default().limit(1000))
        .await?;
    Ok(all
        .into_iter()
        .find(|r| r.spec.default_runtime && !r.is_deleting())
        .map(|r| r.id()))
}

/// The runtime of the workload or Helm workload a secret instance serves.
pub(crate) async fn secret_runtime(
    ctx: &Context,
    secret: &SecretInstance,
) -> Result<Option<ObjectId>, ReconcileError> {
    if let Some(workload) = secret.workload_instance {
        return workload_runtime(ctx, workload).await;
    }
    let Some(helm) = secret.helm_workload_instance else {
        return Ok(None);
    };
    match ctx.api::<HelmWorkloadInstance>().get(helm).await {
        Ok(h) => placed(ctx, h.spec.runtime.or(h.status.details.workload.runtime)).await,
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// The services and region of a domain's account: the one named, else the default account.
pub(crate) async fn account_services(
    aws: &Arc<dyn AwsProvider>,
    ctx: &Context,
    account: Option<ObjectId>,
) -> Result<(AwsServices, String), ReconcileError> {
    let account = match account {
        Some(id) => ctx.api::<AwsAccount>().get(id).await?,
        None => ctx
            .api::<AwsAccount>()
            .list_all(&ListQuery::default().limit(1000))
            .await?
            .into_iter()
            .find(|a| a.spec.default_account)
            .ok_or_else(|| {
                ReconcileError::terminal(
                    "no aws_account named and no default AWS account (default_account: true)",
                )
            })?,
    };
    let region = account.spec.default_region.clone();
    Ok((aws.services(&account, &region).await?, region))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_name_service_repository_chart_and_version() {
        let (service, chart) = SupportCharts::parse_override(
            "cert-manager=https://charts.example.com/stable/cert-manager@v1.18.2",
        )
        .unwrap();
        assert_eq!(service, SupportService::CertManager);
        assert_eq!(chart.repo, "https://charts.example.com/stable");
        assert_eq!(chart.chart, "cert-manager");
        assert_eq!(chart.version, "v1.18.2");
        let charts = SupportCharts::default().with(service, chart.clone());
        assert_eq!(charts.get(SupportService::CertManager), &chart);
        for bad in [
            "cert-manager",
            "nginx=https://x.example/nginx@1",
            "cert-manager=https://x.example/cert-manager",
            "cert-manager=cert-manager@1",
        ] {
            let err = SupportCharts::parse_override(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Invalid, "{bad}: {err}");
        }
    }

    #[test]
    fn role_names_fit_iam() {
        let long = "c".repeat(100);
        for service in SupportService::ALL {
            let name = role_name(&long, service);
            assert!(name.len() <= 64 && name.ends_with(service.name()), "{name}");
        }
        assert_eq!(
            role_name("paris", SupportService::ExternalDns),
            "threeport-paris-external-dns"
        );
    }
}
