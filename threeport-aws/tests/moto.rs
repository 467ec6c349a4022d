//! The SDK implementations against moto (an AWS API mock server on loopback), and the
//! in-memory fake, pass the same checks.

mod common;

use common::{Moto, moto};
use threeport_aws::{
    AwsConnection, MemoryAws, RdsDatabases, S3Storage, SecretsManagerStore, conformance,
};

fn connection(moto: &Moto, region: &str) -> AwsConnection {
    AwsConnection {
        region: region.to_owned(),
        access_key_id: "testing".to_owned(),
        secret_access_key: "testing".to_owned(),
        endpoint: Some(moto.url.clone()),
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

#[tokio::test]
async fn memory_fake_passes() {
    let aws = MemoryAws::new();
    conformance::object_storage(&aws, &unique("bucket")).await;
    conformance::secret_store(&aws, &unique("secret")).await;
    conformance::relational_databases(&aws, &unique("db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_secrets_manager_and_rds_pass_against_moto() {
    let moto = moto().await;
    for region in ["us-east-1", "eu-west-3"] {
        let storage = S3Storage::new(&connection(&moto, region)).unwrap();
        conformance::object_storage(&storage, &unique("threeport")).await;
        let secrets = SecretsManagerStore::new(&connection(&moto, region)).unwrap();
        conformance::secret_store(&secrets, &unique("threeport/db")).await;
        let databases = RdsDatabases::new(&connection(&moto, region)).unwrap();
        conformance::relational_databases(&databases, &unique("orders")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_unavailable_and_no_region_is_invalid() {
    use threeport_aws::ObjectStorage;
    use threeport_core::ErrorKind;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = AwsConnection {
        region: "us-east-1".into(),
        access_key_id: "k".into(),
        secret_access_key: "s".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
    };
    let err = S3Storage::new(&nowhere)
        .unwrap()
        .bucket("some-bucket")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = S3Storage::new(&AwsConnection::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
}
