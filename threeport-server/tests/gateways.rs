//! Gateways, domain names and the support services behind them, end to end on the memory
//! backends: an EKS runtime (the in-memory EKS fake serving the fake Kubernetes API server)
//! whose IAM roles and Route 53 zones are moto's, support services released by the real Helm
//! engine from stand-in charts under the upstream names served on loopback. A workload with a
//! gateway (HTTP→HTTPS redirect, HTTPS, TCP), a domain name and a secret gets Envoy Gateway,
//! cert-manager, external-dns and external-secrets installed as runtime-owned Helm instances,
//! a Gateway, routes, a Certificate and ClusterIssuers, and IRSA roles scoped to its zone and
//! to `threeport/*` secrets; deleting the workload's parts removes its routes and keeps the
//! shared services.

mod common;
#[path = "../../threeport-aws/tests/common/mod.rs"]
mod moto;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use threeport_aws::{AwsConnection, DnsZones, IamRoles, MemoryAws, Route53Zones};
use threeport_core::object::ConditionStatus;
use threeport_core::{
    Api, ApiObject, Bus, MemoryBackends, Notification, Object, Operation, SecretValues,
};
use threeport_k8s::{Cluster, FakeApiServer, MemoryCluster, ResourceRef};
use threeport_server::Sealer;
use threeport_server::controllers::helm::{HelmCli, HelmWorkloadInstanceReconciler};
use threeport_server::controllers::support::{Support, SupportChart, SupportCharts, role_name};
use threeport_server::controllers::{
    AwsProvider, AwsServices, ClusterProvider, DomainNameInstanceReconciler, EksReconciler,
    FixedAws, GatewayInstanceReconciler, KubeClusters, PASSIVE_KINDS, PassiveReconciler,
    RuntimeReconciler, SUPPORT_READY, SecretInstanceReconciler, SecretReconciler,
    WorkloadDefinitionReconciler, WorkloadInstanceReconciler, declared,
};
use threeport_server::model::*;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// Runs `reconciler` as controller `name` of the table: following what it declares.
fn run<R: threeport_core::Reconciler>(
    memory: &MemoryBackends,
    shutdown: &CancellationToken,
    name: &str,
    reconciler: R,
) {
    let controller = declared(name, reconciler, memory.backends()).unwrap();
    tokio::spawn(controller.run(shutdown.clone()));
}

fn resource(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> ResourceRef {
    ResourceRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: namespace.map(str::to_owned),
        name: name.into(),
    }
}

/// Waits until `resource` exists on `cluster`; returns it.
async fn live(cluster: &MemoryCluster, resource: &ResourceRef) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = cluster.get(resource).await.unwrap() {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{resource} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The inline policy of IAM role `name` in moto, and its trust policy.
async fn role_policies(iam: &aws_sdk_iam::Client, name: &str) -> (Value, Value) {
    let role = iam.get_role().role_name(name).send().await.unwrap();
    let trust = role.role().unwrap().assume_role_policy_document().unwrap();
    let policy = iam
        .get_role_policy()
        .role_name(name)
        .policy_name("threeport")
        .send()
        .await
        .unwrap();
    let decode = |text: &str| -> Value {
        let text = percent_decode(text);
        serde_json::from_str(&text).unwrap()
    };
    (decode(policy.policy_document()), decode(trust))
}

/// IAM returns policy documents URL-encoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Waits until Helm instance `name` exists and is released; returns it.
async fn released(memory: &MemoryBackends, name: &str) -> Object<HelmWorkloadInstance> {
    let instances = Api::<HelmWorkloadInstance>::new(memory.store.clone());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(found) = instances.get_by_name(name).await
            && found.is_reconciled()
        {
            return found;
        }
        if tokio::time::Instant::now() > deadline {
            dump(memory).await;
            panic!("{name} never released");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints the status of every object of kind `T`.
async fn dump_kind<T: ApiObject>(memory: &MemoryBackends) {
    for object in Api::<T>::new(memory.store.clone())
        .list_all(&Default::default())
        .await
        .unwrap()
    {
        eprintln!("{} {}: {:?}", T::KIND, object.meta.name, object.status);
    }
}

/// Prints the objects a failed wait may be about.
async fn dump(memory: &MemoryBackends) {
    dump_kind::<KubernetesRuntimeInstance>(memory).await;
    dump_kind::<AwsEksKubernetesRuntimeInstance>(memory).await;
    dump_kind::<HelmWorkloadInstance>(memory).await;
    dump_kind::<GatewayInstance>(memory).await;
    dump_kind::<WorkloadInstance>(memory).await;
    dump_kind::<SecretInstance>(memory).await;
    dump_kind::<DomainNameInstance>(memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_with_a_gateway_and_a_domain_gets_support_services_routes_and_roles() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let moto = moto::moto().await;
    let config = AwsConnection {
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        endpoint: Some(moto.url.clone()),
        ..Default::default()
    }
    .sdk_config()
    .await
    .unwrap();
    let zones = Route53Zones::new(&config);
    let zone = zones.ensure_zone("example.com", None).await.unwrap();
    let iam = aws_sdk_iam::Client::new(&config);

    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let sealer = Arc::new(Sealer::ephemeral().unwrap());
    let cluster = MemoryCluster::new();
    cluster.set_service_account_token("cluster-token");
    let server = FakeApiServer::start_with_token(cluster.clone(), "cluster-token")
        .await
        .unwrap();
    // EKS and EC2 from the memory fake (its cluster is the fake API server); IAM and Route 53
    // are moto's.
    let fake = Arc::new(MemoryAws::new());
    fake.serve_clusters_at(&server.url, None, "cluster-token");
    let services = AwsServices {
        roles: Arc::new(IamRoles::new(&config)),
        zones: Arc::new(Route53Zones::new(&config)),
        ..AwsServices::memory(fake.clone())
    };
    let aws: Arc<dyn AwsProvider> = Arc::new(FixedAws(services));
    let clusters: Arc<dyn ClusterProvider> = Arc::new(KubeClusters::new(sealer.clone()));

    // The support services' charts, under their upstream names and pinned versions, from a
    // repository on loopback.
    let scratch = common::process::temp_dir();
    let repo_dir = scratch.join("repo");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let pinned = SupportCharts::default();
    let served: Vec<(SupportService, SupportChart)> = SupportService::ALL
        .iter()
        .map(|s| (*s, pinned.get(*s).clone()))
        .collect();
    let packages: Vec<(&str, &str)> = served
        .iter()
        .map(|(_, c)| (c.chart.as_str(), c.version.as_str()))
        .collect();
    let url = common::chart_repository(&repo_dir, &packages).await;
    let charts = served.into_iter().fold(pinned, |charts, (service, chart)| {
        charts.with(
            service,
            SupportChart {
                repo: url.clone(),
                ..chart
            },
        )
    });
    let support = Support::new(aws.clone(), charts).with_poll(POLL);

    let renderer = Arc::new(HelmCli::new(common::helm_bin(), scratch.join("cache")));
    run(
        &memory,
        &shutdown,
        "kubernetes-runtime",
        RuntimeReconciler::new(clusters.clone(), sealer.clone()).with_support(support.clone()),
    );
    run(
        &memory,
        &shutdown,
        "aws-eks",
        EksReconciler::new(aws.clone(), clusters.clone(), sealer.clone()).with_poll(POLL),
    );
    run(
        &memory,
        &shutdown,
        "workload-definition",
        WorkloadDefinitionReconciler,
    );
    run(
        &memory,
        &shutdown,
        "workload-instance",
        WorkloadInstanceReconciler::new(clusters.clone(), sealer.clone()),
    );
    run(
        &memory,
        &shutdown,
        "helm-workload-instance",
        HelmWorkloadInstanceReconciler::new(clusters.clone(), renderer, sealer.clone()),
    );
    run(
        &memory,
        &shutdown,
        "gateway-instance",
        GatewayInstanceReconciler::new(clusters.clone(), support.clone()),
    );
    run(
        &memory,
        &shutdown,
        "domain-name-instance",
        DomainNameInstanceReconciler::new(support.clone()),
    );
    run(
        &memory,
        &shutdown,
        "aws-secret",
        SecretReconciler::new(aws.clone()),
    );
    run(
        &memory,
        &shutdown,
        "aws-secret-instance",
        SecretInstanceReconciler::default().with_support(support.clone()),
    );
    for kind in PASSIVE_KINDS {
        run(&memory, &shutdown, "passive", PassiveReconciler::new(kind));
    }

    let store = memory.store.clone();
    let account = Api::<AwsAccount>::new(store.clone())
        .create(
            "main",
            AwsAccount {
                account_id: "123456789012".into(),
                default_region: "us-east-1".into(),
                default_account: true,
                credentials: AwsCredentials::Role {
                    role_arn: "arn:aws:iam::123456789012:role/threeport".into(),
                    external_id: None,
                },
            },
        )
        .await
        .unwrap();
    let runtime_definition = Api::<KubernetesRuntimeDefinition>::new(store.clone())
        .create(
            "eks",
            KubernetesRuntimeDefinition {
                infra_provider: InfraProvider::Eks,
                aws_account: Some(account.id()),
                high_availability: true,
                node_size: NodeSize::Large,
                node_profile: NodeProfile::Memory,
                node_maximum: 12,
            },
        )
        .await
        .unwrap();
    let runtimes = Api::<KubernetesRuntimeInstance>::new(store.clone());
    let runtime = runtimes
        .create(
            "virginia",
            KubernetesRuntimeInstance {
                definition: runtime_definition.id(),
                location: "NorthAmerica:Virginia".into(),
                default_runtime: true,
                agent: None,
                connection: None,
                support_services: Vec::new(),
            },
        )
        .await
        .unwrap();
    // Up with the cluster-autoscaler (EKS), which waits for the node group it scales.
    let runtime = tokio::time::timeout(
        WAIT,
        runtimes.wait_until(runtime.id(), |o: &Object<KubernetesRuntimeInstance>| {
            o.is_reconciled()
                && o.status
                    .condition(SUPPORT_READY)
                    .is_some_and(|c| c.status == ConditionStatus::True)
        }),
    )
    .await;
    if runtime.is_err() {
        dump(&memory).await;
    }
    let runtime = runtime
        .expect("the runtime is up with its autoscaler")
        .unwrap();
    let eks = Api::<AwsEksKubernetesRuntimeInstance>::new(store.clone())
        .get_by_name("virginia")
        .await
        .unwrap();
    let cluster_name = eks.status.details.cluster_name.clone().unwrap();
    let issuer = eks.status.details.oidc_issuer.clone().unwrap();
    let issuer = issuer.trim_start_matches("https://");
    // High availability, large, memory-optimised, at most 12 nodes: that node group.
    let group = &fake.node_group_requests()[0];
    assert_eq!(group.instance_type, "r6i.2xlarge");
    assert_eq!(
        group.subnet_ids.len(),
        3,
        "three zones for high availability"
    );
    assert_eq!((group.minimum, group.maximum), (3, 12));
    let helm_instances = Api::<HelmWorkloadInstance>::new(store.clone());
    let autoscaler = helm_instances
        .get_by_name("cluster-autoscaler-virginia")
        .await
        .unwrap();
    assert!(autoscaler.is_reconciled());
    assert!(
        autoscaler
            .meta
            .owners
            .iter()
            .any(|o| o.id == runtime.id() && o.kind == KubernetesRuntimeInstance::KIND),
        "owned by the runtime: {:?}",
        autoscaler.meta.owners
    );
    let autoscaler_role = role_name(&cluster_name, SupportService::ClusterAutoscaler);
    let (policy, trust) = role_policies(&iam, &autoscaler_role).await;
    assert_eq!(
        policy["Statement"][0]["Condition"]["StringEquals"]["aws:ResourceTag/eks:cluster-name"],
        json!(cluster_name),
        "scaling limited to the cluster's node groups: {policy}"
    );
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringEquals"][format!("{issuer}:sub")],
        json!("system:serviceaccount:kube-system:cluster-autoscaler"),
        "{trust}"
    );
    let account_sa = live(
        &cluster,
        &resource(
            "v1",
            "ServiceAccount",
            Some("kube-system"),
            "cluster-autoscaler",
        ),
    )
    .await;
    assert!(
        account_sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            .as_str()
            .unwrap()
            .ends_with(&format!("role/{autoscaler_role}")),
        "{account_sa}"
    );

    // The workload: a Deployment and its Service, with a domain name, a gateway and a secret.
    let workload_definition = Api::<WorkloadDefinition>::new(store.clone())
        .create(
            "shop",
            WorkloadDefinition {
                yaml_document: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\nspec:\n  selector:\n    matchLabels: {app: shop}\n  template:\n    metadata:\n      labels: {app: shop}\n    spec:\n      containers:\n      - name: app\n        image: shop:1\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: shop\nspec:\n  selector: {app: shop}\n  ports:\n  - port: 8080\n  - name: admin\n    port: 9000\n".into(),
            },
        )
        .await
        .unwrap();
    let workloads = Api::<WorkloadInstance>::new(store.clone());
    let workload = workloads
        .create(
            "shop",
            WorkloadInstance {
                definition: workload_definition.id(),
                runtime: None,
            },
        )
        .await
        .unwrap();
    let domain = Api::<DomainNameDefinition>::new(store.clone())
        .create(
            "example",
            DomainNameDefinition {
                domain: "example.com".into(),
                zone: Zone::Public,
                admin_email: "admin@example.com".into(),
                aws_account: None,
                create_zone: false,
            },
        )
        .await
        .unwrap();
    let domains = Api::<DomainNameInstance>::new(store.clone());
    let domain_instance = domains
        .create(
            "shop",
            DomainNameInstance {
                definition: domain.id(),
                workload_instance: workload.id(),
            },
        )
        .await
        .unwrap();
    let gateway_definition = Api::<GatewayDefinition>::new(store.clone())
        .create(
            "shop",
            GatewayDefinition {
                http_ports: vec![
                    GatewayHttpPort {
                        port: 80,
                        path: "/".into(),
                        tls_enabled: false,
                        https_redirect: true,
                        service_port: None,
                    },
                    GatewayHttpPort {
                        port: 443,
                        path: "/".into(),
                        tls_enabled: true,
                        https_redirect: false,
                        service_port: Some(8080),
                    },
                ],
                tcp_ports: vec![GatewayTcpPort {
                    port: 9000,
                    tls_enabled: false,
                    service_port: None,
                }],
                domain_name: Some(domain.id()),
                subdomain: Some("shop".into()),
                service_name: "shop".into(),
                certificate_issuer: CertificateIssuer::LetsencryptProduction,
                gateway_class: None,
            },
        )
        .await
        .unwrap();
    let gateways = Api::<GatewayInstance>::new(store.clone());
    let gateway = gateways
        .create(
            "shop",
            GatewayInstance {
                definition: gateway_definition.id(),
                workload_instance: workload.id(),
            },
        )
        .await
        .unwrap();
    let secret = Api::<SecretDefinition>::new(store.clone())
        .create(
            "api-keys",
            SecretDefinition {
                aws_account: account.id(),
            },
        )
        .await
        .unwrap();
    memory
        .bus
        .publish(
            Notification::new(SecretDefinition::KIND, secret.id(), Operation::Created, 1)
                .with_secret(SecretValues(
                    [("stripe".to_owned(), "sk_1".to_owned())].into(),
                )),
        )
        .await
        .unwrap();
    let secret_instance = Api::<SecretInstance>::new(store.clone())
        .create(
            "api-keys",
            SecretInstance {
                definition: secret.id(),
                workload_instance: Some(workload.id()),
                helm_workload_instance: None,
            },
        )
        .await
        .unwrap();

    let gateway = tokio::time::timeout(
        WAIT,
        gateways.wait_until(gateway.id(), |o: &Object<GatewayInstance>| {
            o.is_reconciled()
        }),
    )
    .await;
    if gateway.is_err() {
        dump(&memory).await;
    }
    let gateway = gateway.expect("the gateway is reconciled").unwrap();
    let domain_instance = domains.get(domain_instance.id()).await.unwrap();
    assert!(
        domain_instance.is_reconciled(),
        "{:?}",
        domain_instance.status
    );
    assert_eq!(
        domain_instance.status.details.hosted_zone_id.as_deref(),
        Some(zone.id.as_str()),
        "the zone looked up by name"
    );
    assert!(!domain_instance.status.details.zone_created);
    let workload = workloads.get(workload.id()).await.unwrap();
    let namespace = workload.status.details.namespace.clone().unwrap();
    let ns = Some(namespace.as_str());
    assert_eq!(
        gateway.status.details.host.as_deref(),
        Some("shop.example.com")
    );

    // The support services: runtime-owned Helm instances, released.
    for service in ["envoy-gateway", "cert-manager", "external-dns"] {
        let instance = helm_instances
            .get_by_name(&format!("{service}-virginia"))
            .await
            .unwrap();
        assert!(instance.is_reconciled(), "{service}: {:?}", instance.status);
        assert!(
            instance.meta.owners.iter().any(|o| o.id == runtime.id()),
            "{service} is the runtime's"
        );
    }
    live(
        &cluster,
        &resource(
            "gateway.networking.k8s.io/v1",
            "GatewayClass",
            None,
            "threeport",
        ),
    )
    .await;

    // The Gateway: a listener per port, the host name on each HTTP(S) one.
    let live_gateway = live(
        &cluster,
        &resource("gateway.networking.k8s.io/v1", "Gateway", ns, "shop"),
    )
    .await;
    assert_eq!(live_gateway["spec"]["gatewayClassName"], "threeport");
    let listeners = live_gateway["spec"]["listeners"].as_array().unwrap();
    let listener = |name: &str| {
        listeners
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no listener {name}: {listeners:?}"))
            .clone()
    };
    assert_eq!(listener("http-80")["protocol"], "HTTP");
    let https = listener("https-443");
    assert_eq!(https["protocol"], "HTTPS");
    assert_eq!(https["hostname"], "shop.example.com");
    assert_eq!(https["tls"]["certificateRefs"][0]["name"], "shop-tls");
    assert_eq!(listener("tcp-9000")["protocol"], "TCP");
    // The routes: HTTPS to the service's port 8080, HTTP redirected, TCP to 9000.
    let https_route = live(
        &cluster,
        &resource(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            ns,
            "shop-https-443",
        ),
    )
    .await;
    assert_eq!(
        https_route["spec"]["hostnames"],
        json!(["shop.example.com"])
    );
    assert_eq!(
        https_route["spec"]["rules"][0]["backendRefs"][0],
        json!({"name": "shop", "port": 8080})
    );
    let redirect = live(
        &cluster,
        &resource(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            ns,
            "shop-http-80",
        ),
    )
    .await;
    assert_eq!(
        redirect["spec"]["rules"][0]["filters"][0]["requestRedirect"]["scheme"],
        "https"
    );
    let tcp = live(
        &cluster,
        &resource(
            "gateway.networking.k8s.io/v1alpha2",
            "TCPRoute",
            ns,
            "shop-tcp-9000",
        ),
    )
    .await;
    assert_eq!(
        tcp["spec"]["rules"][0]["backendRefs"][0],
        json!({"name": "shop", "port": 9000})
    );
    // The certificate from the domain's production ClusterIssuer, DNS01 on its zone.
    let certificate = live(
        &cluster,
        &resource("cert-manager.io/v1", "Certificate", ns, "shop-tls"),
    )
    .await;
    assert_eq!(certificate["spec"]["dnsNames"], json!(["shop.example.com"]));
    assert_eq!(
        certificate["spec"]["issuerRef"]["name"],
        "letsencrypt-production-example-com"
    );
    let issuer_object = live(
        &cluster,
        &resource(
            "cert-manager.io/v1",
            "ClusterIssuer",
            None,
            "letsencrypt-production-example-com",
        ),
    )
    .await;
    let acme = &issuer_object["spec"]["acme"];
    assert_eq!(
        acme["server"],
        "https://acme-v02.api.letsencrypt.org/directory"
    );
    assert_eq!(acme["email"], "admin@example.com");
    assert_eq!(
        acme["solvers"][0]["dns01"]["route53"]["hostedZoneID"],
        json!(zone.id)
    );
    // external-dns publishes into the zone, as the runtime's owner of its records.
    let external_dns = live(
        &cluster,
        &resource(
            "apps/v1",
            "Deployment",
            Some("external-dns"),
            "external-dns-virginia",
        ),
    )
    .await;
    let args = external_dns["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    for expected in [
        "--provider=aws",
        "--domain-filter=example.com",
        "--source=gateway-httproute",
        "--policy=sync",
    ] {
        assert!(
            args.as_array().unwrap().iter().any(|a| a == expected),
            "{expected} in {args}"
        );
    }
    // IRSA: external-dns and cert-manager may change records in that zone only.
    for service in [SupportService::ExternalDns, SupportService::CertManager] {
        let name = role_name(&cluster_name, service);
        let (policy, trust) = role_policies(&iam, &name).await;
        assert_eq!(
            policy["Statement"][0]["Resource"],
            json!([zone.arn()]),
            "{service}: {policy}"
        );
        assert_eq!(
            trust["Statement"][0]["Condition"]["StringEquals"][format!("{issuer}:sub")],
            json!(format!(
                "system:serviceaccount:{}:{}",
                service.name(),
                service.name()
            )),
        );
    }
    let dns_account = live(
        &cluster,
        &resource("v1", "ServiceAccount", Some("external-dns"), "external-dns"),
    )
    .await;
    assert!(
        dns_account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            .as_str()
            .unwrap()
            .ends_with(&format!(
                "role/{}",
                role_name(&cluster_name, SupportService::ExternalDns)
            ))
    );

    // The secret: external-secrets with a ClusterSecretStore for its region, its role
    // limited to threeport's secrets.
    let external_secrets = released(&memory, "external-secrets-virginia").await;
    assert!(
        external_secrets
            .meta
            .owners
            .iter()
            .any(|o| o.id == runtime.id())
    );
    live(
        &cluster,
        &resource(
            "external-secrets.io/v1",
            "ClusterSecretStore",
            None,
            "threeport-aws-secrets-manager-us-east-1",
        ),
    )
    .await;
    let (policy, _) = role_policies(
        &iam,
        &role_name(&cluster_name, SupportService::ExternalSecrets),
    )
    .await;
    assert_eq!(
        policy["Statement"][0]["Resource"],
        json!("arn:aws:secretsmanager:*:123456789012:secret:threeport/*")
    );

    // A change follows: the TCP port dropped (its listener and route go), a path changed.
    let definitions = Api::<GatewayDefinition>::new(store.clone());
    let mut changed = definitions.get(gateway_definition.id()).await.unwrap();
    changed.spec.tcp_ports.clear();
    changed.spec.http_ports[1].path = "/shop".into();
    definitions.update(&changed).await.unwrap();
    let tcp_route = resource(
        "gateway.networking.k8s.io/v1alpha2",
        "TCPRoute",
        ns,
        "shop-tcp-9000",
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster.get(&tcp_route).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the TCP route stays"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let https_route = live(
        &cluster,
        &resource(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            ns,
            "shop-https-443",
        ),
    )
    .await;
    assert_eq!(
        https_route["spec"]["rules"][0]["matches"][0]["path"]["value"],
        "/shop"
    );
    let live_gateway = live(
        &cluster,
        &resource("gateway.networking.k8s.io/v1", "Gateway", ns, "shop"),
    )
    .await;
    assert_eq!(
        live_gateway["spec"]["listeners"].as_array().unwrap().len(),
        2
    );

    // A zone that does not exist and may not be created: terminal, naming it.
    let missing = Api::<DomainNameDefinition>::new(store.clone())
        .create(
            "missing",
            DomainNameDefinition {
                domain: "missing.example.org".into(),
                zone: Zone::Public,
                admin_email: "admin@example.org".into(),
                aws_account: None,
                create_zone: false,
            },
        )
        .await
        .unwrap();
    let missing_instance = domains
        .create(
            "missing",
            DomainNameInstance {
                definition: missing.id(),
                workload_instance: workload.id(),
            },
        )
        .await
        .unwrap();
    let failed = tokio::time::timeout(
        WAIT,
        domains.wait_until(missing_instance.id(), |o: &Object<DomainNameInstance>| {
            o.status.state == threeport_core::object::LifecycleState::Interrupted
                || o.status.state == threeport_core::object::LifecycleState::CreationFailed
        }),
    )
    .await
    .expect("a missing zone stops the domain name")
    .unwrap();
    let reason = format!("{:?}", failed.status);
    assert!(
        reason.contains("hosted zone missing.example.org does not exist"),
        "{reason}"
    );
    domains.delete(missing_instance.id()).await.unwrap();
    domains
        .wait_until_gone(missing_instance.id())
        .await
        .unwrap();

    // Deleting the workload's parts, then the workload: its routes go, the shared services
    // stay.
    gateways.delete(gateway.id()).await.unwrap();
    tokio::time::timeout(WAIT, gateways.wait_until_gone(gateway.id()))
        .await
        .unwrap()
        .unwrap();
    for (api_version, kind, name) in [
        ("gateway.networking.k8s.io/v1", "Gateway", "shop"),
        (
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "shop-https-443",
        ),
        (
            "gateway.networking.k8s.io/v1alpha2",
            "TCPRoute",
            "shop-tcp-9000",
        ),
        ("cert-manager.io/v1", "Certificate", "shop-tls"),
    ] {
        assert!(
            cluster
                .get(&resource(api_version, kind, ns, name))
                .await
                .unwrap()
                .is_none(),
            "{kind} {name} removed with the gateway"
        );
    }
    domains.delete(domain_instance.id()).await.unwrap();
    Api::<SecretInstance>::new(store.clone())
        .delete(secret_instance.id())
        .await
        .unwrap();
    tokio::time::timeout(WAIT, domains.wait_until_gone(domain_instance.id()))
        .await
        .unwrap()
        .unwrap();
    workloads.delete(workload.id()).await.unwrap();
    tokio::time::timeout(WAIT, workloads.wait_until_gone(workload.id()))
        .await
        .unwrap()
        .unwrap();
    for service in [
        "envoy-gateway",
        "cert-manager",
        "external-dns",
        "external-secrets",
    ] {
        let kept = helm_instances
            .get_by_name(&format!("{service}-virginia"))
            .await
            .unwrap();
        assert!(!kept.is_deleting(), "{service} stays on the runtime");
    }
    assert!(
        cluster
            .get(&resource(
                "gateway.networking.k8s.io/v1",
                "GatewayClass",
                None,
                "threeport"
            ))
            .await
            .unwrap()
            .is_some()
    );
    // With no domain in use, the DNS roles grant nothing.
    let external_dns = tokio::time::timeout(WAIT, async {
        loop {
            let (policy, _) =
                role_policies(&iam, &role_name(&cluster_name, SupportService::ExternalDns)).await;
            if policy["Statement"][0]["Resource"] != json!([zone.arn()]) {
                return policy;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the zone leaves external-dns's policy");
    assert_eq!(
        external_dns["Statement"][0]["Resource"],
        json!(["arn:aws:route53:::hostedzone/none"])
    );

    // The runtime goes with everything it owns: the support services' releases and roles.
    runtimes.delete(runtime.id()).await.unwrap();
    let gone = tokio::time::timeout(WAIT, runtimes.wait_until_gone(runtime.id())).await;
    if gone.is_err() {
        dump(&memory).await;
    }
    gone.expect("the runtime is deleted").unwrap();
    let left = helm_instances.list_all(&Default::default()).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    for service in SupportService::ALL {
        let role = role_name(&cluster_name, service);
        let found = iam.get_role().role_name(&role).send().await;
        assert!(found.is_err(), "role {role} deleted with the cluster");
    }
    assert!(
        zones
            .find_zone("example.com", false)
            .await
            .unwrap()
            .is_some(),
        "a zone threeport did not make stays"
    );
    shutdown.cancel();
}
