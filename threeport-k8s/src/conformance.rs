//! The checks every [`Cluster`] passes: the in-memory fake directly, and [`KubeCluster`]
//! over HTTP against the fake API server.
//!
//! [`KubeCluster`]: crate::KubeCluster

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use threeport_core::ErrorKind;

use crate::{Cluster, ResourceRef, Selector, WatchEvent, apply_all, delete_all};

/// Runs every check against a fresh cluster (each check uses its own namespace).
pub async fn run(cluster: &dyn Cluster) {
    apply_creates_then_updates(cluster).await;
    namespaces_must_exist(cluster).await;
    unknown_kinds_are_invalid(cluster).await;
    cluster_scoped_kinds_ignore_namespaces(cluster).await;
    custom_resources_follow_their_definition(cluster).await;
    field_managers_own_what_they_applied(cluster).await;
    lists_and_deletes(cluster).await;
    watches_report_changes(cluster).await;
    watches_select_by_label_and_resume(cluster).await;
    sets_apply_in_dependency_order(cluster).await;
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn config_map(namespace: &str, name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": namespace}, "data": data})
}

fn version(live: &Value) -> String {
    live["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_owned()
}

/// Apply creates, then updates: resource versions move, the live object carries the data.
pub async fn apply_creates_then_updates(cluster: &dyn Cluster) {
    cluster
        .apply(&namespace("conf-apply"), "threeport")
        .await
        .expect("namespace");
    let first = cluster
        .apply(
            &config_map("conf-apply", "web", json!({"a": "1"})),
            "threeport",
        )
        .await
        .expect("create");
    assert_eq!(first["data"]["a"], "1");
    let second = cluster
        .apply(
            &config_map("conf-apply", "web", json!({"a": "2"})),
            "threeport",
        )
        .await
        .expect("update");
    assert_eq!(second["data"]["a"], "2");
    assert_ne!(
        version(&first),
        version(&second),
        "an update bumps resourceVersion"
    );
    assert_eq!(
        first["metadata"]["uid"], second["metadata"]["uid"],
        "same object"
    );
    let got = cluster
        .get(&ResourceRef::of(&second).expect("ref"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got["data"]["a"], "2");
}

/// A namespaced resource needs its namespace.
pub async fn namespaces_must_exist(cluster: &dyn Cluster) {
    let err = cluster
        .apply(&config_map("conf-missing", "web", json!({})), "threeport")
        .await
        .expect_err("no such namespace");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    cluster
        .apply(&namespace("conf-missing"), "threeport")
        .await
        .expect("namespace");
    cluster
        .apply(&config_map("conf-missing", "web", json!({})), "threeport")
        .await
        .expect("now it exists");
}

/// A kind the cluster does not serve is invalid input, named as such.
pub async fn unknown_kinds_are_invalid(cluster: &dyn Cluster) {
    let manifest = json!({"apiVersion": "nowhere.example.com/v1", "kind": "Nothing", "metadata": {"name": "x"}});
    let err = cluster
        .apply(&manifest, "threeport")
        .await
        .expect_err("unknown kind");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    let err = cluster
        .apply(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
            "threeport",
        )
        .await
        .expect_err("no name");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
}

/// Cluster-scoped kinds have no namespace, whatever the manifest says.
pub async fn cluster_scoped_kinds_ignore_namespaces(cluster: &dyn Cluster) {
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                      "metadata": {"name": "conf-reader"}, "rules": []});
    let live = cluster
        .apply(&role, "threeport")
        .await
        .expect("cluster role");
    assert!(live["metadata"]["namespace"].is_null(), "{live}");
    assert!(
        cluster
            .get(&ResourceRef::of(&role).unwrap())
            .await
            .unwrap()
            .is_some()
    );
}

/// A CRD makes its kind servable; deleting it removes the kind.
pub async fn custom_resources_follow_their_definition(cluster: &dyn Cluster) {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.conf.example.com"},
        "spec": {"group": "conf.example.com", "scope": "Namespaced",
                 "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    });
    cluster
        .apply(&namespace("conf-crd"), "threeport")
        .await
        .expect("namespace");
    let widget = json!({"apiVersion": "conf.example.com/v1", "kind": "Widget",
                        "metadata": {"name": "w", "namespace": "conf-crd"}, "spec": {"size": 3}});
    assert_eq!(
        cluster
            .apply(&widget, "threeport")
            .await
            .expect_err("no CRD yet")
            .kind(),
        ErrorKind::Invalid
    );
    cluster.apply(&crd, "threeport").await.expect("crd");
    let live = cluster
        .apply(&widget, "threeport")
        .await
        .expect("custom resource");
    assert_eq!(live["spec"]["size"], 3);
    assert_eq!(
        cluster
            .list("conf.example.com/v1", "Widget", Some("conf-crd"))
            .await
            .expect("list")
            .len(),
        1
    );
}

/// Server-side apply: each field manager owns the fields it applied.
pub async fn field_managers_own_what_they_applied(cluster: &dyn Cluster) {
    cluster
        .apply(&namespace("conf-ssa"), "threeport")
        .await
        .expect("namespace");
    cluster
        .apply(
            &config_map("conf-ssa", "shared", json!({"ours": "1"})),
            "threeport",
        )
        .await
        .expect("ours");
    let both = cluster
        .apply(
            &config_map("conf-ssa", "shared", json!({"theirs": "2"})),
            "someone-else",
        )
        .await
        .expect("theirs");
    assert_eq!(
        (
            both["data"]["ours"].as_str(),
            both["data"]["theirs"].as_str()
        ),
        (Some("1"), Some("2"))
    );
    let ours_changed = cluster
        .apply(
            &config_map("conf-ssa", "shared", json!({"ours": "3"})),
            "threeport",
        )
        .await
        .expect("ours again");
    assert_eq!(ours_changed["data"]["ours"], "3");
    assert_eq!(
        ours_changed["data"]["theirs"], "2",
        "another manager's field stays"
    );
}

/// Lists by namespace; delete says whether there was something to delete.
pub async fn lists_and_deletes(cluster: &dyn Cluster) {
    for ns in ["conf-list-a", "conf-list-b"] {
        cluster
            .apply(&namespace(ns), "threeport")
            .await
            .expect("namespace");
        cluster
            .apply(&config_map(ns, "one", json!({})), "threeport")
            .await
            .expect("cm");
    }
    let in_a = cluster
        .list("v1", "ConfigMap", Some("conf-list-a"))
        .await
        .expect("list a");
    assert_eq!(in_a.len(), 1);
    let everywhere = cluster
        .list("v1", "ConfigMap", None)
        .await
        .expect("list all");
    assert!(everywhere.len() >= 2);
    let one = ResourceRef::of(&config_map("conf-list-a", "one", json!({}))).unwrap();
    assert!(cluster.delete(&one).await.expect("delete"));
    assert!(
        !cluster.delete(&one).await.expect("delete again"),
        "nothing left to delete"
    );
    assert!(cluster.get(&one).await.expect("get").is_none());
}

async fn next_event(
    stream: &mut futures::stream::BoxStream<'static, threeport_core::Result<WatchEvent>>,
) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10s")
        .expect("stream open")
        .expect("event")
}

/// A watch reports what exists, then additions, changes and deletions.
pub async fn watches_report_changes(cluster: &dyn Cluster) {
    cluster
        .apply(&namespace("conf-watch"), "threeport")
        .await
        .expect("namespace");
    cluster
        .apply(&config_map("conf-watch", "before", json!({})), "threeport")
        .await
        .expect("cm");
    let mut events = cluster
        .watch(
            &Selector::kind("v1", "ConfigMap").in_namespace("conf-watch"),
            "",
        )
        .await
        .expect("watch");
    match next_event(&mut events).await {
        WatchEvent::Added(o) => assert_eq!(o["metadata"]["name"], "before"),
        other => panic!("expected the existing object first, got {other:?}"),
    }
    let after = config_map("conf-watch", "after", json!({"k": "v"}));
    cluster.apply(&after, "threeport").await.expect("apply");
    match next_event(&mut events).await {
        WatchEvent::Added(o) => assert_eq!(o["metadata"]["name"], "after"),
        other => panic!("expected ADDED, got {other:?}"),
    }
    cluster
        .delete(&ResourceRef::of(&after).unwrap())
        .await
        .expect("delete");
    match next_event(&mut events).await {
        WatchEvent::Deleted(o) => assert_eq!(o["metadata"]["name"], "after"),
        other => panic!("expected DELETED, got {other:?}"),
    }
}

/// Lists and watches narrowed by a label selector see only matching objects; a watch from a
/// list's resource version reports only what changed after it.
pub async fn watches_select_by_label_and_resume(cluster: &dyn Cluster) {
    cluster
        .apply(&namespace("conf-resume"), "threeport")
        .await
        .expect("namespace");
    let labelled = |name: &str, app: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "conf-resume", "labels": {"app": app}}})
    };
    cluster
        .apply(&labelled("a", "web"), "threeport")
        .await
        .expect("a");
    cluster
        .apply(&labelled("b", "db"), "threeport")
        .await
        .expect("b");
    let selector = Selector::kind("v1", "ConfigMap")
        .in_namespace("conf-resume")
        .labels("app=web");
    let list = cluster.list_selected(&selector).await.expect("list");
    let names: Vec<&str> = list
        .items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a"]);
    assert_eq!(list.items[0]["kind"], "ConfigMap");
    assert!(!list.resource_version.is_empty());
    cluster
        .apply(&labelled("c", "db"), "threeport")
        .await
        .expect("c");
    cluster
        .apply(&labelled("d", "web"), "threeport")
        .await
        .expect("d");
    let mut events = cluster
        .watch(&selector, &list.resource_version)
        .await
        .expect("watch");
    // Only what changed after the list, and only what the selector covers.
    loop {
        match next_event(&mut events).await {
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Added(o) => {
                assert_eq!(o["metadata"]["name"], "d");
                break;
            }
            other => panic!("expected d ADDED, got {other:?}"),
        }
    }
}

/// A set applies namespaces and CRDs first whatever their order, and deletes in reverse.
pub async fn sets_apply_in_dependency_order(cluster: &dyn Cluster) {
    let manifests = vec![
        config_map("conf-set", "a", json!({})),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "conf-set"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
        namespace("conf-set"),
    ];
    let live = apply_all(cluster, &manifests, "threeport")
        .await
        .expect("apply set");
    assert_eq!(live[0]["kind"], "Namespace");
    let refs: Vec<ResourceRef> = manifests
        .iter()
        .map(|m| ResourceRef::of(m).unwrap())
        .collect();
    assert_eq!(delete_all(cluster, &refs).await.expect("delete set"), 3);
    for r in &refs {
        assert!(cluster.get(r).await.expect("get").is_none(), "{r} is gone");
    }
}
