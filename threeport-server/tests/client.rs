//! The typed client (`threeport-api`) against the real API over HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use threeport_api::model::{
    AwsAccount, AwsCredentials, AwsRelationalDatabaseDefinition, DatabaseEngine, InfraProvider,
    KubernetesRuntimeDefinition, MachineSize, WorkloadDefinition,
};
use threeport_api::{Client, ClientError, ListParams, WorkloadRequest};
use threeport_core::{MemoryBus, MemoryStore, ObjectId};
use threeport_server::auth::mint_token;
use threeport_server::{ApiState, Ops, TokenSet, app, model};

/// Serves the model on memory backends with one token; returns (url, token).
async fn serve() -> (String, String) {
    let minted = mint_token().unwrap();
    let mut tokens = TokenSet::new();
    tokens.add_hash(&minted.hash).unwrap();
    let app = app(
        ApiState {
            store: Arc::new(MemoryStore::new()),
            bus: Arc::new(MemoryBus::new()),
            locker: Arc::new(threeport_core::MemoryLocker::new()),
            kinds: Arc::new(model::registry()),

            sealer: Arc::new(threeport_server::Sealer::ephemeral().unwrap()),
        },
        Some(Arc::new(tokens)),
        Ops::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), minted.token)
}

fn account(n: u32) -> AwsAccount {
    AwsAccount {
        account_id: format!("{:012}", 100_000_000_000u64 + u64::from(n)),
        default_region: "us-east-1".into(),
        default_account: n == 0,
        credentials: AwsCredentials::Role {
            role_arn: "arn:aws:iam::123456789012:role/threeport".into(),
            external_id: Some("x".into()),
        },
    }
}

#[tokio::test]
async fn typed_crud_pagination_errors_and_composites() {
    let (url, token) = serve().await;
    let anonymous = Client::builder(&url).build().unwrap();
    match anonymous
        .api::<AwsAccount>()
        .list(&ListParams::default())
        .await
    {
        Err(ClientError::Unauthorized { .. }) => {}
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    let client = Client::builder(&url).token(&token).build().unwrap();
    let accounts = client.api::<AwsAccount>();
    for n in 0..5 {
        accounts
            .create(&format!("acct-{n}"), &account(n))
            .await
            .unwrap();
    }
    let first = accounts
        .list(&ListParams {
            limit: Some(2),
            ..ListParams::default()
        })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    assert!(first.next.is_some());
    let all = accounts
        .list_all(&ListParams {
            limit: Some(2),
            ..ListParams::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 5, "list_all follows the cursor to the end");

    // Optimistic concurrency: a replace from a stale copy is a conflict.
    let mut stale = all[0].clone();
    let mut fresh = all[0].clone();
    fresh.spec.default_region = "eu-west-1".into();
    let fresh = accounts.replace(&fresh).await.unwrap();
    assert_eq!(fresh.spec.default_region, "eu-west-1");
    stale.spec.default_region = "us-west-2".into();
    assert!(matches!(
        accounts.replace(&stale).await,
        Err(ClientError::Conflict { .. })
    ));
    let patched = accounts
        .patch(fresh.meta.id, &json!({"labels": {"team": "infra"}}))
        .await
        .unwrap();
    assert_eq!(patched.meta.labels["team"], "infra");
    let mut by_label = ListParams::default();
    by_label.labels.insert("team".into(), "infra".into());
    assert_eq!(accounts.list_all(&by_label).await.unwrap().len(), 1);

    let mut bad = account(9);
    bad.account_id = "12".into();
    match accounts.create("bad", &bad).await {
        Err(ClientError::Invalid { field, .. }) => assert_eq!(field, "spec.account_id"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(matches!(
        accounts.get(ObjectId::new()).await,
        Err(ClientError::NotFound { .. })
    ));

    // A definition in use cannot be deleted; the composite call links everything.
    let runtimes = client.api::<KubernetesRuntimeDefinition>();
    let runtime = runtimes
        .create(
            "eks",
            &KubernetesRuntimeDefinition {
                infra_provider: InfraProvider::Eks,
                aws_account: Some(fresh.meta.id),
                high_availability: false,
                node_size: Default::default(),
                node_profile: Default::default(),
                node_maximum: 10,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        accounts.delete(fresh.meta.id).await,
        Err(ClientError::Conflict { .. })
    ));
    let created = client
        .create_workload(&WorkloadRequest {
            name: "shop".into(),
            labels: Default::default(),
            definition: WorkloadDefinition {
                yaml_document: "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
                    .into(),
            },
            runtime: None,
            database: Some(AwsRelationalDatabaseDefinition {
                aws_account: fresh.meta.id,
                engine: DatabaseEngine::Postgres,
                engine_version: "16.4".into(),
                database_name: "shop".into(),
                database_port: 5432,
                backup_days: 7,
                machine_size: MachineSize::Small,
                storage_gb: 20,
                workload_secret_name: "shop-db".into(),
            }),
            bucket: None,
            domain_name: None,
            gateway: None,
            secret: None,
        })
        .await
        .unwrap();
    assert_eq!(created.len(), 4, "{created:?}");
    let deleted = runtimes.delete(runtime.meta.id).await.unwrap();
    assert!(deleted.meta.deletion_scheduled_at.is_some());
    let waited = runtimes
        .wait_until(runtime.meta.id, Duration::from_secs(5), |o| o.is_deleting())
        .await
        .unwrap();
    assert_eq!(waited.meta.id, runtime.meta.id);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_bad_urls_are_invalid() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder(format!("http://127.0.0.1:{port}"))
        .build()
        .unwrap();
    match client.api::<AwsAccount>().get(ObjectId::new()).await {
        Err(ClientError::Unavailable { .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        Client::builder("ftp://x").build(),
        Err(ClientError::Invalid { .. })
    ));
}

/// A proxy in front of `upstream` that forwards every request, but drops the answer to the
/// first `lose` request and says 503 instead: a commit whose answer was lost. Returns its URL
/// and the `Idempotency-Key`s of the requests it saw.
async fn answer_losing_proxy(
    upstream: String,
    lose: reqwest::Method,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;
    let keys = Arc::new(std::sync::Mutex::new(Vec::new()));
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = common::http_client();
    let seen = keys.clone();
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (http, upstream, seen, lost, lose) = (
            http.clone(),
            upstream.clone(),
            seen.clone(),
            lost.clone(),
            lose.clone(),
        );
        async move {
            if let Some(key) = headers.get("idempotency-key") {
                seen.lock().unwrap().push(key.to_str().unwrap().to_owned());
            }
            let mut request = http
                .request(method.clone(), format!("{upstream}{uri}"))
                .body(body);
            for name in [
                "authorization",
                "content-type",
                "if-match",
                "idempotency-key",
            ] {
                if let Some(value) = headers.get(name) {
                    request = request.header(name, value.as_bytes());
                }
            }
            let response = request.send().await.unwrap();
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
            let content_type = response.headers().get("content-type").cloned();
            let answer = response.bytes().await.unwrap();
            if method == lose && !lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "0")],
                    axum::Json(json!({"error": "unavailable", "message": "connection lost"})),
                )
                    .into_response();
            }
            let mut reply = (status, answer).into_response();
            if let Some(value) = content_type {
                reply.headers_mut().insert("content-type", value);
            }
            reply
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), keys)
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_retried_without_a_duplicate() {
    let (url, token) = serve().await;
    let (proxy, keys) = answer_losing_proxy(url.clone(), reqwest::Method::POST).await;
    let client = Client::builder(&proxy).token(&token).build().unwrap();
    let spec = WorkloadDefinition {
        yaml_document: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n".into(),
    };
    let created = client
        .api::<WorkloadDefinition>()
        .create("web", &spec)
        .await
        .expect("the retry gets the object the lost attempt created");
    let keys = keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "sent twice");
    assert_eq!(keys[0], keys[1], "with one Idempotency-Key");
    let direct = Client::builder(&url).token(&token).build().unwrap();
    let all = direct
        .api::<WorkloadDefinition>()
        .list_all(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "created once");
    assert_eq!(all[0].id(), created.id());
    // Two creates, two keys.
    direct
        .api::<WorkloadDefinition>()
        .create("other", &spec)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_replace_whose_answer_was_lost_is_not_repeated_blindly() {
    let (url, token) = serve().await;
    let direct = Client::builder(&url).token(&token).build().unwrap();
    let spec = WorkloadDefinition {
        yaml_document: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n".into(),
    };
    let created = direct
        .api::<WorkloadDefinition>()
        .create("web", &spec)
        .await
        .unwrap();
    let (proxy, _) = answer_losing_proxy(url, reqwest::Method::PUT).await;
    let client = Client::builder(&proxy).token(&token).build().unwrap();
    let err = client
        .api::<WorkloadDefinition>()
        .replace(&created)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Unavailable { .. }),
        "the caller learns the outcome is unknown, not a spurious conflict: {err}"
    );
}
