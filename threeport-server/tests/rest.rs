//! The generic REST routes over real HTTP, on the memory store and on SQLite.

mod common;

use std::sync::Arc;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use threeport_core::object::Reference;
use threeport_core::{ApiObject, MemoryStore, ObjectId, Outbox, Store, ValidationError};
use threeport_server::{ApiState, KindRegistry, router};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Engine {
    Postgres,
    Mysql,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseDefinition {
    engine: Engine,
    storage_gb: u32,
}

impl ApiObject for DatabaseDefinition {
    const KIND: &'static str = "DatabaseDefinition";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        if self.storage_gb < 20 {
            return Err(ValidationError::new("storage_gb", "must be at least 20"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseInstance {
    definition: ObjectId,
}

impl ApiObject for DatabaseInstance {
    const KIND: &'static str = "DatabaseInstance";
    type Status = ();
    fn references(&self) -> Vec<Reference> {
        vec![Reference {
            field: "definition".into(),
            kind: DatabaseDefinition::KIND.into(),
            id: self.definition,
        }]
    }
}

/// Serves the API on a free loopback port; returns its base URL.
async fn serve(store: Arc<dyn Store>) -> String {
    let kinds = KindRegistry::new()
        .with::<DatabaseDefinition>()
        .with::<DatabaseInstance>();
    let state = ApiState {
        store,
        bus: Arc::new(threeport_core::MemoryBus::new()),
        locker: Arc::new(threeport_core::MemoryLocker::new()),
        kinds: Arc::new(kinds),
        sealer: Arc::new(threeport_server::Sealer::ephemeral().unwrap()),
    };
    let app = router(state.clone()).merge(threeport_server::batch::routes(state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v0")
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn crud_round_trip(store: Arc<dyn Store>, outbox: Arc<dyn Outbox>) {
    let base = serve(store).await;
    let http = common::http_client();
    let defs = format!("{base}/database-definitions");

    let (status, created) = send(http.post(&defs).json(&json!({
        "name": "orders",
        "labels": {"team": "shop"},
        "spec": {"engine": "postgres", "storage_gb": 50}
    })))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["version"], 1);
    let one = format!("{defs}/{id}");

    let (status, got) = send(http.get(&one)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["spec"]["engine"], "postgres");

    let (status, page) = send(http.get(format!("{defs}?label=team=shop&limit=10"))).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (_, page) = send(http.get(format!("{defs}?name=other"))).await;
    assert!(page["items"].as_array().unwrap().is_empty());

    // Patch with a stale version: conflict; with none: merged onto what is stored.
    let (status, err) = send(
        http.patch(&one)
            .header("If-Match", "\"7\"")
            .json(&json!({"spec": {"storage_gb": 100}})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let (status, patched) =
        send(http.patch(&one).json(&json!({"spec": {"storage_gb": 100}}))).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        patched["spec"],
        json!({"engine": "postgres", "storage_gb": 100})
    );
    assert_eq!(patched["version"], 2);

    let (status, replaced) = send(http.put(&one).json(&json!({
        "spec": {"engine": "mysql", "storage_gb": 100},
        "version": 2
    })))
    .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["spec"]["engine"], "mysql");

    // An instance references the definition, which then cannot be deleted.
    let (status, instance) = send(
        http.post(format!("{base}/database-instances"))
            .json(&json!({"name": "orders-1", "spec": {"definition": id}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{instance}");
    let (status, err) = send(http.delete(&one)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let (status, page) =
        send(http.get(format!("{base}/database-instances?ref=definition={id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    let instance_url = format!(
        "{base}/database-instances/{}",
        instance["id"].as_str().unwrap()
    );
    let (status, deleting) = send(http.delete(&instance_url)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{deleting}");
    assert!(deleting["deletion_scheduled_at"].is_string());

    // Create, patch, put and delete each notified through the outbox.
    let entries = outbox
        .claim("test", 100, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let for_definition = entries
        .iter()
        .filter(|e| e.notification.id.to_string() == id)
        .count();
    assert_eq!(
        for_definition, 3,
        "create, patch and put notify: {entries:?}"
    );
}

async fn bad_input_is_refused_naming_the_field(store: Arc<dyn Store>) {
    let base = serve(store).await;
    let http = common::http_client();
    let defs = format!("{base}/database-definitions");
    let cases = [
        (
            json!({"name": "a", "spec": {"engine": "oracle", "storage_gb": 50}}),
            "spec.engine",
        ),
        (
            json!({"name": "a", "spec": {"engine": "mysql", "storage_gb": 5}}),
            "spec.storage_gb",
        ),
        (
            json!({"name": "a", "spec": {"engine": "mysql", "storage_gb": 50, "x": 1}}),
            "spec.x",
        ),
        (
            json!({"name": "a", "spec": {"engine": "mysql"}}),
            "spec.storage_gb",
        ),
        (json!({"name": "a", "colour": "red", "spec": {}}), "colour"),
        (json!({"name": "a", "status": {}, "spec": {}}), "status"),
        (json!({"name": "a", "version": 3, "spec": {}}), "version"),
        (
            json!({"name": "", "spec": {"engine": "mysql", "storage_gb": 50}}),
            "name",
        ),
        (json!([1, 2]), "body"),
    ];
    for (body, field) in cases {
        let (status, err) = send(http.post(&defs).json(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {err}");
        assert_eq!(err["field"], field, "{body} → {err}");
    }
    let (status, err) = send(http.post(&defs).body("{not json")).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("body"))
    );
    let (status, err) = send(
        http.post(format!("{base}/database-instances"))
            .json(&json!({"name": "i", "spec": {"definition": ObjectId::new()}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "dangling reference: {err}");
    let (status, _) = send(http.get(format!("{base}/no-such-kinds"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, err) = send(http.get(format!("{defs}/not-an-id"))).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    let (status, _) = send(http.get(format!("{defs}/{}", ObjectId::new()))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, err) = send(http.get(format!("{defs}?limit=5000"))).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("limit"))
    );
    let (status, err) = send(http.get(format!("{defs}?colour=red"))).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("colour"))
    );
}

/// `POST /v0/batch`: objects of several kinds, later ones referencing and owned by earlier
/// ones through ids the client chose, created all or none; mistakes named by index.
async fn a_batch_is_created_whole_or_not_at_all(store: Arc<dyn Store>) {
    let base = serve(store).await;
    let http = common::http_client();
    let definition = ObjectId::new();
    let batch = |storage_gb: u32, definition: ObjectId| {
        json!({"objects": [
            {"kind": "DatabaseDefinition", "id": definition.to_string(), "name": "db",
             "spec": {"engine": "postgres", "storage_gb": storage_gb}},
            {"kind": "DatabaseInstance", "name": "db",
             "owners": [{"kind": "DatabaseDefinition", "id": definition.to_string()}],
             "spec": {"definition": definition.to_string()}}]})
    };
    // A mistake in the second object: named by its index, and nothing is created.
    let (status, err) = send(
        http.post(format!("{base}/batch"))
            .json(&batch(5, definition)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["field"], "objects[0].spec.storage_gb", "{err}");
    let (_, listed) = send(http.get(format!("{base}/database-definitions"))).await;
    assert_eq!(listed["items"], json!([]), "nothing was created");

    let (status, created) = send(
        http.post(format!("{base}/batch"))
            .json(&batch(50, definition)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let items = created["items"].as_array().unwrap();
    assert_eq!(items[0]["id"], definition.to_string());
    assert_eq!(items[1]["kind"], "DatabaseInstance");
    assert_eq!(items[1]["owners"][0]["id"], definition.to_string());
    assert_eq!(items[1]["references"][0]["id"], definition.to_string());

    // The same id again: refused, naming the object that asked for it.
    let mut again = batch(50, definition);
    again["objects"][0]["name"] = json!("db2");
    let (status, err) = send(http.post(format!("{base}/batch")).json(&again)).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("objects[0].id")),
        "{err}"
    );

    let mut twice = batch(50, ObjectId::new());
    twice["objects"][1]["id"] = twice["objects"][0]["id"].clone();
    let (status, err) = send(http.post(format!("{base}/batch")).json(&twice)).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("objects[1].id")),
        "{err}"
    );

    let mut unknown = batch(50, ObjectId::new());
    unknown["objects"][1]["kind"] = json!("Nope");
    let (status, err) = send(http.post(format!("{base}/batch")).json(&unknown)).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("objects[1].kind")),
        "{err}"
    );

    let (status, err) = send(
        http.post(format!("{base}/batch"))
            .json(&json!({"objects": []})),
    )
    .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("objects")),
        "{err}"
    );
}

#[tokio::test]
async fn memory_store_over_http() {
    let store = Arc::new(MemoryStore::new());
    crud_round_trip(store.clone(), store).await;
    bad_input_is_refused_naming_the_field(Arc::new(MemoryStore::new())).await;
    a_batch_is_created_whole_or_not_at_all(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn sqlite_over_http() {
    let options = threeport_store::ConnectOptions::default();
    let sql = threeport_store::connect("sqlite::memory:", &options)
        .await
        .unwrap();
    crud_round_trip(sql.store.clone(), sql.outbox.clone()).await;
    let sql = threeport_store::connect("sqlite::memory:", &options)
        .await
        .unwrap();
    bad_input_is_refused_naming_the_field(sql.store).await;
    let sql = threeport_store::connect("sqlite::memory:", &options)
        .await
        .unwrap();
    a_batch_is_created_whole_or_not_at_all(sql.store).await;
}
