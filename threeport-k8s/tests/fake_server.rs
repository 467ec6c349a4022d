//! The fake API server's wire behaviour beyond what `KubeCluster` uses: discovery documents,
//! create (201/409), merge patch, `Status` error bodies, unsupported patch types.

use serde_json::{Value, json};
use threeport_k8s::{FakeApiServer, MemoryCluster};

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_wire_speaks_kubernetes() {
    let server = FakeApiServer::start(MemoryCluster::new()).await.unwrap();
    let http = http();
    let url = |path: &str| format!("{}{path}", server.url);

    let (_, versions) = call(http.get(url("/api"))).await;
    assert_eq!(versions["versions"], json!(["v1"]));
    let (_, groups) = call(http.get(url("/apis"))).await;
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "apps")
    );
    let (_, core) = call(http.get(url("/api/v1"))).await;
    let configmaps = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "ConfigMap")
        .unwrap();
    assert_eq!(
        (
            configmaps["name"].as_str(),
            configmaps["namespaced"].as_bool()
        ),
        (Some("configmaps"), Some(true))
    );

    let collection = url("/api/v1/namespaces/default/configmaps");
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    let (status, created) = call(http.post(&collection).json(&body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["metadata"]["namespace"], "default");
    let (status, conflict) = call(http.post(&collection).json(&body)).await;
    assert_eq!(
        (
            status,
            conflict["kind"].as_str(),
            conflict["reason"].as_str()
        ),
        (409, Some("Status"), Some("AlreadyExists"))
    );

    let (status, patched) = call(
        http.patch(format!("{collection}/c"))
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"data": {"b": "2", "a": null}}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["data"], json!({"b": "2"}));

    let (status, missing) = call(http.get(format!("{collection}/nope"))).await;
    assert_eq!(
        (status, missing["code"].as_u64(), missing["reason"].as_str()),
        (404, Some(404), Some("NotFound"))
    );
    let (status, _) = call(
        http.patch(format!("{collection}/c"))
            .header("Content-Type", "application/strategic-merge-patch+json")
            .body("{}"),
    )
    .await;
    assert_eq!(status, 415);
    let (status, invalid) = call(
        http.patch(format!("{collection}/c"))
            .header("Content-Type", "application/apply-patch+yaml")
            .body("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"),
    )
    .await;
    assert_eq!(
        (status, invalid["reason"].as_str()),
        (422, Some("Invalid")),
        "apply needs a field manager"
    );
    let (status, applied) = call(
        http.patch(format!("{collection}/c?fieldManager=me"))
            .header("Content-Type", "application/apply-patch+yaml")
            .body("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {z: '9'}\n"),
    )
    .await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["data"]["z"], "9");
    let (status, _) = call(http.get(url("/apis/nowhere.example.com/v1"))).await;
    assert_eq!(status, 404);
    let (status, _) = call(http.delete(format!("{collection}/c"))).await;
    assert_eq!(status, 200);
    let (status, _) = call(http.delete(format!("{collection}/c"))).await;
    assert_eq!(status, 404);
}
