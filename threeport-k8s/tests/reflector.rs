//! The reflector over the wire (`KubeCluster` against the fake API server): it resumes a
//! dropped watch without replaying what it saw, lists again after 410 Gone, and the fake
//! server's status subresource, events and pods behave as a cluster's would.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use threeport_k8s::{
    Change, Cluster, ClusterConnection, FakeApiServer, KubeCluster, MemoryCluster, PodState,
    Reflector, ReflectorConfig, ResourceRef, Selector,
};
use tokio::sync::mpsc;

async fn connect(server: &FakeApiServer) -> Arc<dyn Cluster> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(
        KubeCluster::connect(&ClusterConnection {
            api_endpoint: server.url.clone(),
            ..ClusterConnection::default()
        })
        .await
        .unwrap(),
    )
}

fn deployment(name: &str, label: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": "default", "labels": {"owner": label}},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name, "owner": label}},
                                 "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}})
}

async fn next(received: &mut mpsc::Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("a change within 10 s")
        .expect("reflector running")
}

fn name(change: &Change) -> String {
    match change {
        Change::Applied(o) | Change::Deleted(o) => o["metadata"]["name"].as_str().unwrap().into(),
        Change::Synced(items) => format!("synced {}", items.len()),
        Change::Unreachable(why) => format!("unreachable: {why}"),
        Change::Reachable => "reachable".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_resume_and_expired_versions_list_again() {
    let server = FakeApiServer::start(MemoryCluster::new()).await.unwrap();
    server
        .cluster
        .set_bookmark_interval(Duration::from_millis(50));
    let cluster = connect(&server).await;
    cluster
        .apply(&deployment("before", "a"), "t")
        .await
        .unwrap();
    cluster.apply(&deployment("other", "b"), "t").await.unwrap();
    let (changes, mut received) = mpsc::channel(64);
    let reflector = Reflector::new(
        cluster.clone(),
        Selector::kind("apps/v1", "Deployment").labels("owner=a"),
    )
    .with_config(ReflectorConfig {
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    });
    let task = tokio::spawn(reflector.run(changes));
    assert_eq!(name(&next(&mut received).await), "synced 1");
    cluster.apply(&deployment("first", "a"), "t").await.unwrap();
    assert_eq!(name(&next(&mut received).await), "first");
    assert_eq!(server.cluster.open_watches(), 1);

    // The connection drops; what changes meanwhile arrives once, nothing is replayed.
    server.cluster.close_watches();
    cluster
        .apply(&deployment("second", "a"), "t")
        .await
        .unwrap();
    assert_eq!(name(&next(&mut received).await), "second");
    // Idle for a while: bookmarks move the resume point past others' changes.
    cluster
        .apply(&deployment("elsewhere", "b"), "t")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.cluster.close_watches();
    cluster.apply(&deployment("third", "a"), "t").await.unwrap();
    assert_eq!(name(&next(&mut received).await), "third");

    // The API server forgets the history: 410, then a fresh list that shows the deletion.
    cluster
        .delete(&ResourceRef::of(&deployment("first", "a")).unwrap())
        .await
        .unwrap();
    server.cluster.expire_watches();
    loop {
        match next(&mut received).await {
            // Seen live or not, the list settles it.
            Change::Deleted(o) if o["metadata"]["name"] == "first" => {}
            Change::Synced(items) => {
                let mut names: Vec<&str> = items
                    .iter()
                    .map(|o| o["metadata"]["name"].as_str().unwrap())
                    .collect();
                names.sort();
                assert_eq!(names, ["before", "second", "third"]);
                break;
            }
            other => panic!("expected a fresh list, got {other:?}"),
        }
    }
    cluster
        .apply(&deployment("fourth", "a"), "t")
        .await
        .unwrap();
    assert_eq!(name(&next(&mut received).await), "fourth");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), received.recv())
            .await
            .is_err(),
        "nothing more"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_pods_and_events() {
    let server = FakeApiServer::start(MemoryCluster::new()).await.unwrap();
    let cluster = connect(&server).await;
    let web = deployment("web", "a");
    cluster.apply(&web, "threeport").await.unwrap();
    let reference = ResourceRef::of(&web).unwrap();

    // Status written through the subresource survives the next apply.
    let http = reqwest::Client::new();
    let response = http
        .patch(format!(
            "{}/apis/apps/v1/namespaces/default/deployments/web/status",
            server.url
        ))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"readyReplicas": 7}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let live = cluster.apply(&web, "threeport").await.unwrap();
    assert_eq!(live["status"]["readyReplicas"], 7);

    let pods = server
        .cluster
        .set_pods(&reference, PodState::CrashLoop, 2)
        .unwrap();
    assert_eq!(pods.len(), 2);
    let listed = cluster
        .list_selected(&Selector::kind("v1", "Pod").labels("owner=a"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);
    assert_eq!(
        listed.items[0]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "CrashLoopBackOff"
    );
    let live = cluster.get(&reference).await.unwrap().unwrap();
    assert_eq!(live["status"]["availableReplicas"], 0);
    // A repeat raises the count of the same event.
    server
        .cluster
        .record_event(&pods[0], "Warning", "BackOff", "again")
        .unwrap();
    let events = cluster.list("v1", "Event", Some("default")).await.unwrap();
    assert_eq!(events.len(), 2, "one per pod");
    let first = events
        .iter()
        .find(|e| e["involvedObject"]["uid"] == pods[0]["metadata"]["uid"])
        .unwrap();
    assert_eq!(
        (first["count"].as_u64(), first["type"].as_str()),
        (Some(2), Some("Warning"))
    );

    // Ready replaces the pods.
    server
        .cluster
        .set_pods(&reference, PodState::Ready, 2)
        .unwrap();
    let live = cluster.get(&reference).await.unwrap().unwrap();
    assert_eq!(live["status"]["availableReplicas"], 2);
    let listed = cluster.list("v1", "Pod", Some("default")).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|p| p["status"]["phase"] == "Running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_version_is_410_on_the_wire() {
    let server = FakeApiServer::start(MemoryCluster::new()).await.unwrap();
    let cluster = connect(&server).await;
    cluster.apply(&deployment("web", "a"), "t").await.unwrap();
    server.cluster.compact();
    let body = reqwest::get(format!(
        "{}/apis/apps/v1/deployments?watch=true&resourceVersion=1",
        server.url
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let line: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(
        (line["type"].as_str(), line["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_said_once_and_its_end_brings_a_fresh_list() {
    let server = FakeApiServer::start(MemoryCluster::new()).await.unwrap();
    let cluster = connect(&server).await;
    cluster.apply(&deployment("web", "a"), "t").await.unwrap();
    let (changes, mut received) = mpsc::channel(64);
    let reflector = Reflector::new(cluster.clone(), Selector::kind("apps/v1", "Deployment"))
        .with_config(ReflectorConfig {
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        });
    let task = tokio::spawn(reflector.run(changes));
    assert_eq!(name(&next(&mut received).await), "synced 1");

    server.set_available(false);
    let said = name(&next(&mut received).await);
    assert!(said.starts_with("unreachable"), "{said}");
    // Retries go on, and are not said again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Changed meanwhile, behind the reflector's back.
    Cluster::apply(&server.cluster, &deployment("meanwhile", "a"), "t")
        .await
        .unwrap();
    server.set_available(true);
    assert_eq!(name(&next(&mut received).await), "reachable");
    assert_eq!(name(&next(&mut received).await), "synced 2");
    task.abort();
}
