//! Both clusters pass the conformance checks: the in-memory fake directly, and `KubeCluster`
//! over HTTP against the fake API server.

use threeport_k8s::{ClusterConnection, FakeApiServer, KubeCluster, MemoryCluster, conformance};

#[tokio::test]
async fn memory_cluster_passes() {
    conformance::run(&MemoryCluster::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_cluster_against_the_fake_api_server_passes() {
    let server = FakeApiServer::start_with_token(MemoryCluster::new(), "s3cr3t")
        .await
        .unwrap();
    let cluster = KubeCluster::connect(&ClusterConnection {
        api_endpoint: server.url.clone(),
        token: Some("s3cr3t".into()),
        ..ClusterConnection::default()
    })
    .await
    .unwrap();
    conformance::run(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_connects_too() {
    use threeport_k8s::Cluster;
    let server = FakeApiServer::start_with_token(MemoryCluster::new(), "from-kubeconfig")
        .await
        .unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
         clusters: [{{name: fake, cluster: {{server: '{}'}}}}]\n\
         users: [{{name: me, user: {{token: from-kubeconfig}}}}]\n\
         contexts: [{{name: fake, context: {{cluster: fake, user: me}}}}]\n",
        server.url
    );
    let cluster = KubeCluster::connect(&ClusterConnection {
        kubeconfig: Some(kubeconfig),
        ..ClusterConnection::default()
    })
    .await
    .unwrap();
    let namespaces = cluster.list("v1", "Namespace", None).await.unwrap();
    assert_eq!(namespaces[0]["metadata"]["name"], "default");
    let half = KubeCluster::connect(&ClusterConnection {
        api_endpoint: server.url.clone(),
        client_certificate: Some("-----BEGIN CERTIFICATE-----".into()),
        ..ClusterConnection::default()
    })
    .await;
    assert!(half.is_err(), "a certificate without its key is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused() {
    use threeport_k8s::Cluster;
    let server = FakeApiServer::start_with_token(MemoryCluster::new(), "right")
        .await
        .unwrap();
    let cluster = KubeCluster::connect(&ClusterConnection {
        api_endpoint: server.url.clone(),
        token: Some("wrong".into()),
        ..ClusterConnection::default()
    })
    .await
    .unwrap();
    let err = cluster.list("v1", "ConfigMap", None).await.unwrap_err();
    assert!(
        err.to_string().contains("refused") || err.to_string().contains("401"),
        "{err}"
    );
}
