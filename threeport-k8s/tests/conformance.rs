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
        ca_certificate: None,
        token: Some("s3cr3t".into()),
    })
    .unwrap();
    conformance::run(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused() {
    use threeport_k8s::Cluster;
    let server = FakeApiServer::start_with_token(MemoryCluster::new(), "right")
        .await
        .unwrap();
    let cluster = KubeCluster::connect(&ClusterConnection {
        api_endpoint: server.url.clone(),
        ca_certificate: None,
        token: Some("wrong".into()),
    })
    .unwrap();
    let err = cluster.list("v1", "ConfigMap", None).await.unwrap_err();
    assert!(
        err.to_string().contains("refused") || err.to_string().contains("401"),
        "{err}"
    );
}
