//! The typed client (`threeport-api`) against the real API over HTTP.

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
