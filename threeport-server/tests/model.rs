//! Threeport's object model through the HTTP API: every kind accepts a valid spec, secrets
//! travel on the bus only, and random input never gets a 5xx.

mod common;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use threeport_core::{Bus, MemoryBus, MemoryStore, SubscribeOptions};
use threeport_server::{ApiState, Ops, app, model};

async fn serve(bus: Arc<MemoryBus>) -> String {
    let app = app(
        ApiState {
            store: Arc::new(MemoryStore::new()),
            bus,
            locker: Arc::new(threeport_core::MemoryLocker::new()),
            kinds: Arc::new(model::registry()),

            sealer: Arc::new(threeport_server::Sealer::ephemeral().unwrap()),
        },
        None,
        Ops::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v0")
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// Creates an object; returns its id.
    async fn create(&self, plural: &str, name: &str, spec: Value) -> String {
        let response = self
            .http
            .post(format!("{}/{plural}", self.base))
            .json(&json!({"name": name, "spec": spec}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{plural}: {body}");
        body["id"].as_str().unwrap().to_owned()
    }
}

/// One valid object of every kind, created in dependency order; returns (plural, id) pairs.
async fn one_of_each(client: &Client) -> Vec<(String, String)> {
    let mut made = Vec::new();
    let mut create = async |plural: &str, spec: Value| {
        let id = client.create(plural, "one", spec).await;
        made.push((plural.to_owned(), id.clone()));
        id
    };
    let account = create(
        "aws-accounts",
        json!({
            "account_id": "123456789012", "default_region": "eu-west-1",
            "credentials": {"access_keys": {"access_key_id": "AKIAEXAMPLE", "secret_access_key": "wJalrXUtnFEMI"}}
        }),
    )
    .await;
    let runtime_def = create(
        "kubernetes-runtime-definitions",
        json!({"infra_provider": "eks", "aws_account": account}),
    )
    .await;
    let runtime = create(
        "kubernetes-runtime-instances",
        json!({
            "definition": runtime_def, "location": "NorthAmerica:NewYork", "default_runtime": true
        }),
    )
    .await;
    let eks_def = create(
        "aws-eks-kubernetes-runtime-definitions",
        json!({"aws_account": account}),
    )
    .await;
    create(
        "aws-eks-kubernetes-runtime-instances",
        json!({"definition": eks_def, "runtime": runtime, "region": "eu-west-1"}),
    )
    .await;
    let workload_def = create("workload-definitions", json!({
        "yaml_document": "# web\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n"
    })).await;
    let workload = create("workload-instances", json!({"definition": workload_def})).await;
    create(
        "workload-resource-definitions",
        json!({"definition": workload_def, "manifest": {"kind": "Service"}}),
    )
    .await;
    create(
        "workload-resource-instances",
        json!({"instance": workload, "manifest": {"kind": "Service"}}),
    )
    .await;
    let helm_def = create(
        "helm-workload-definitions",
        json!({"repo": "oci://ghcr.io/charts", "chart": "redis", "values": "replicas: 2\n"}),
    )
    .await;
    let helm = create(
        "helm-workload-instances",
        json!({"definition": helm_def, "runtime": runtime, "release_namespace": "cache"}),
    )
    .await;
    let db_def = create("aws-relational-database-definitions", json!({
        "aws_account": account, "engine": "postgres", "engine_version": "16.4", "database_name": "orders",
        "database_port": 5432, "storage_gb": 50, "workload_secret_name": "orders-db"
    })).await;
    create(
        "aws-relational-database-instances",
        json!({"definition": db_def, "workload_instance": workload}),
    )
    .await;
    let bucket_def = create("aws-object-storage-bucket-definitions", json!({
        "aws_account": account, "workload_service_account_name": "web", "workload_bucket_env_var": "BUCKET"
    })).await;
    create(
        "aws-object-storage-bucket-instances",
        json!({"definition": bucket_def, "workload_instance": workload}),
    )
    .await;
    let domain = create(
        "domain-name-definitions",
        json!({"domain": "example.com", "admin_email": "ops@example.com"}),
    )
    .await;
    create(
        "domain-name-instances",
        json!({"definition": domain, "workload_instance": workload}),
    )
    .await;
    let gateway = create("gateway-definitions", json!({
        "http_ports": [{"port": 443, "tls_enabled": true}, {"port": 80, "https_redirect": true}],
        "domain_name": domain, "subdomain": "shop", "service_name": "web"
    })).await;
    create(
        "gateway-instances",
        json!({"definition": gateway, "workload_instance": workload}),
    )
    .await;
    let stack = create(
        "observability-stack-definitions",
        json!({"logging": {"enabled": false}}),
    )
    .await;
    create(
        "observability-stack-instances",
        json!({"definition": stack, "runtime": runtime}),
    )
    .await;
    let secret = create("secret-definitions", json!({"aws_account": account})).await;
    create(
        "secret-instances",
        json!({"definition": secret, "helm_workload_instance": helm}),
    )
    .await;
    let terraform = create("terraform-definitions", json!({"aws_account": account, "configuration_files": {"main.tf": "resource \"x\" \"y\" {}"}})).await;
    create(
        "terraform-instances",
        json!({"definition": terraform, "variables": {"size": 3}}),
    )
    .await;
    let control_plane = create("control-plane-definitions", json!({})).await;
    create(
        "control-plane-instances",
        json!({"definition": control_plane, "runtime": runtime}),
    )
    .await;
    create(
        "kind-definitions",
        json!({"kind": "Certificate", "schema": {"type": "object"}}),
    )
    .await;
    create("events", json!({"object_kind": "WorkloadInstance", "object_id": workload, "type": "Normal", "reason": "Created", "message": "ok"})).await;
    made
}

#[tokio::test]
async fn every_kind_accepts_a_valid_spec_with_defaults_filled_in() {
    let client = Client {
        http: common::http_client(),
        base: serve(Arc::new(MemoryBus::new())).await,
    };
    let made = one_of_each(&client).await;
    assert_eq!(
        made.len(),
        model::registry().entries().count(),
        "one of every kind"
    );
    let (_, runtime_def) = &made[1];
    let got: Value = client
        .http
        .get(format!(
            "{}/kubernetes-runtime-definitions/{runtime_def}",
            client.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["spec"]["node_size"], "medium");
    assert_eq!(got["spec"]["node_maximum"], 250);
    // A definition with instances cannot go.
    let response = client
        .http
        .delete(format!(
            "{}/kubernetes-runtime-definitions/{runtime_def}",
            client.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
}

/// An API on a memory bus whose secret notifications the test receives, with an AWS account.
async fn with_secret_listener() -> (Client, Box<dyn threeport_core::Subscription>, String) {
    let bus = Arc::new(MemoryBus::new());
    let sub = bus
        .subscribe(SubscribeOptions::new(
            "secret-definition-controller",
            "SecretDefinition",
        ))
        .await
        .unwrap();
    let client = Client {
        http: common::http_client(),
        base: serve(bus.clone()).await,
    };
    let account = client
        .create(
            "aws-accounts",
            "main",
            json!({
                "account_id": "123456789012", "default_region": "us-east-1",
                "credentials": {"role": {"role_arn": "arn:aws:iam::123456789012:role/x"}}
            }),
        )
        .await;
    (client, sub, account)
}

#[tokio::test]
async fn secret_values_go_to_the_bus_not_the_store() {
    let (client, mut sub, account) = with_secret_listener().await;
    let id = client
        .create(
            "secret-definitions",
            "db",
            json!({"aws_account": account, "data": {"password": "hunter2"}}),
        )
        .await;
    let delivery = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(delivery.notification.id.to_string(), id);
    let secret = delivery
        .notification
        .secret
        .clone()
        .expect("the values travel with it");
    assert_eq!(secret.0["password"], "hunter2");
    delivery.ack().await.unwrap();
    let stored: Value = client
        .http
        .get(format!("{}/secret-definitions/{id}", client.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!stored.to_string().contains("hunter2"), "{stored}");

    let response = client
        .http
        .post(format!("{}/secret-definitions", client.base))
        .json(&json!({"name": "bad", "spec": {"aws_account": account, "data": {"n": 1}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["field"], "spec.data");
}

/// A random JSON value, biased towards the shapes the API expects.
fn random_value(rng: &mut fastrand::Rng, depth: u32, ids: &[String]) -> Value {
    const KEYS: &[&str] = &[
        "name",
        "spec",
        "labels",
        "version",
        "status",
        "id",
        "definition",
        "runtime",
        "aws_account",
        "engine",
        "port",
        "http_ports",
        "yaml_document",
        "data",
        "location",
        "credentials",
        "role",
        "infra_provider",
        "values",
        "",
        "😀",
        "a.b",
    ];
    match rng.u8(0..if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!(rng.f64() * 1e6 - 5e5),
        4 => match rng.u8(0..4) {
            0 => Value::String(ids[rng.usize(0..ids.len())].clone()),
            1 => Value::String("eks".into()),
            2 => Value::String(String::new()),
            _ => Value::String((0..rng.usize(0..20)).map(|_| rng.char(..)).collect()),
        },
        5 => Value::String("a: [1\n---\n: :".into()),
        6 => Value::Array(
            (0..rng.usize(0..4))
                .map(|_| random_value(rng, depth - 1, ids))
                .collect(),
        ),
        _ => {
            let mut map = Map::new();
            for _ in 0..rng.usize(0..5) {
                map.insert(
                    KEYS[rng.usize(0..KEYS.len())].to_owned(),
                    random_value(rng, depth - 1, ids),
                );
            }
            Value::Object(map)
        }
    }
}

#[tokio::test]
async fn random_input_on_every_route_never_gets_a_5xx() {
    let client = Client {
        http: common::http_client(),
        base: serve(Arc::new(MemoryBus::new())).await,
    };
    let made = one_of_each(&client).await;
    let ids: Vec<String> = made.iter().map(|(_, id)| id.clone()).collect();
    let mut rng = fastrand::Rng::with_seed(0x7472_6565_706f_7274);
    let mut requests = 0;
    for (plural, id) in &made {
        for _ in 0..60 {
            let body = random_value(&mut rng, 3, &ids);
            let collection = format!("{}/{plural}", client.base);
            let one = format!("{collection}/{id}");
            let request = match rng.u8(0..7) {
                6 => client
                    .http
                    .post(format!("{}/workloads", client.base))
                    .json(&body),
                0 => client.http.post(&collection).json(&body),
                1 => client.http.put(&one).json(&body),
                2 => client.http.patch(&one).json(&body),
                3 => client
                    .http
                    .post(&collection)
                    .body(body.to_string().replace('}', "")),
                4 => client.http.get(&collection).query(&[(
                    ["name", "label", "ref", "after", "limit", "x"][rng.usize(0..6)],
                    body.to_string(),
                )]),
                _ => client.http.get(format!("{collection}/{}", rng.u64(..))),
            };
            let response = request.send().await.unwrap();
            requests += 1;
            assert!(
                !response.status().is_server_error(),
                "{plural}: {body} → {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
    }
    assert_eq!(requests, made.len() * 60);
}

#[tokio::test]
async fn a_composite_workload_is_created_in_one_transaction() {
    let (client, mut secrets, account) = with_secret_listener().await;
    let workload = |name: &str, storage_gb: u32| {
        json!({
            "name": name,
            "definition": {"yaml_document": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"},
            "database": {
                "aws_account": account, "engine": "postgres", "engine_version": "16.4",
                "database_name": "shop", "database_port": 5432, "storage_gb": storage_gb,
                "workload_secret_name": "shop-db"
            },
            "bucket": {"aws_account": account, "workload_service_account_name": "web", "workload_bucket_env_var": "BUCKET"},
            "domain_name": {"domain": "example.com", "admin_email": "ops@example.com"},
            "gateway": {"http_ports": [{"port": 443, "tls_enabled": true}], "subdomain": "shop", "service_name": "web"},
            "secret": {"aws_account": account, "data": {"api_key": "k-123"}}
        })
    };
    let post = |body: Value| {
        client
            .http
            .post(format!("{}/workloads", client.base))
            .json(&body)
            .send()
    };

    // A bad part: 400 naming it, and nothing of the workload exists.
    let response = post(workload("shop", 5)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let err: Value = response.json().await.unwrap();
    assert_eq!(err["field"], "database.storage_gb", "{err}");
    let page: Value = client
        .http
        .get(format!("{}/workload-definitions", client.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(page["items"].as_array().unwrap().is_empty(), "{page}");

    let response = post(workload("shop", 50)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    assert_eq!(
        created.as_object().unwrap().len(),
        12,
        "six definitions and six instances: {created}"
    );
    let workload_instance = &created["WorkloadInstance"]["id"];
    assert_eq!(
        created["WorkloadInstance"]["spec"]["definition"],
        created["WorkloadDefinition"]["id"]
    );
    assert_eq!(
        created["GatewayInstance"]["spec"]["workload_instance"],
        *workload_instance
    );
    assert_eq!(
        created["GatewayDefinition"]["spec"]["domain_name"],
        created["DomainNameDefinition"]["id"]
    );
    assert_eq!(
        created["SecretDefinition"]["spec"],
        json!({"aws_account": account})
    );
    let delivery = tokio::time::timeout(Duration::from_secs(5), secrets.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        delivery.notification.secret.clone().unwrap().0["api_key"],
        "k-123"
    );

    // Same name again: one part collides, so no part is created twice.
    let response = post(workload("shop", 50)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let page: Value = client
        .http
        .get(format!("{}/gateway-definitions", client.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // Links are the server's to set.
    let mut linked = workload("other", 50);
    linked["gateway"]["domain_name"] = json!(account);
    let response = post(linked).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let err: Value = response.json().await.unwrap();
    assert_eq!(err["field"], "gateway.domain_name", "{err}");
}

/// Every `$ref` in `value`.
fn refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => found.push(r.clone()),
                    _ => refs(v, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_kind_from_its_type() {
    let base = serve(Arc::new(MemoryBus::new())).await;
    let root = base.trim_end_matches("/v0");
    let http = common::http_client();
    let doc: Value = http
        .get(format!("{root}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for entry in model::registry().entries() {
        let collection = &doc["paths"][format!("/v0/{}", entry.plural)];
        let object = &doc["paths"][format!("/v0/{}/{{id}}", entry.plural)];
        for (path, method) in [
            (collection, "post"),
            (collection, "get"),
            (object, "get"),
            (object, "put"),
            (object, "patch"),
            (object, "delete"),
        ] {
            assert!(path[method].is_object(), "{} {method}", entry.plural);
        }
        assert!(
            doc["components"]["schemas"][entry.kind].is_object(),
            "schema of {}",
            entry.kind
        );
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 100);
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .expect("local reference");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} resolves"
        );
    }
    let engine = &doc["components"]["schemas"]["DatabaseEngine"];
    assert_eq!(
        engine["enum"],
        json!(["mysql", "postgres", "mariadb"]),
        "{engine}"
    );
    let database = &doc["components"]["schemas"]["AwsRelationalDatabaseDefinition"];
    assert!(
        database["required"]
            .as_array()
            .unwrap()
            .contains(&json!("storage_gb")),
        "{database}"
    );

    let page = http
        .get(format!("{root}/docs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/v0/aws-eks-kubernetes-runtime-instances"));
}
