//! The SDK implementations against moto (an AWS API mock server on loopback), and the
//! in-memory fake, pass the same checks.

mod common;

use aws_config::SdkConfig;
use common::{Moto, moto};
use threeport_aws::{
    AwsConnection, Ec2Networks, EksClusters, IamRoles, MemoryAws, RdsDatabases, S3Storage,
    SecretsManagerStore, conformance,
};

fn connection(moto: &Moto, region: &str) -> AwsConnection {
    AwsConnection {
        region: region.to_owned(),
        access_key_id: "testing".to_owned(),
        secret_access_key: "testing".to_owned(),
        endpoint: Some(moto.url.clone()),
        ..AwsConnection::default()
    }
}

async fn config(moto: &Moto, region: &str) -> SdkConfig {
    connection(moto, region).sdk_config().await.unwrap()
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
    conformance::networks(&aws, &unique("net")).await;
    conformance::roles(&aws, &unique("role")).await;
    conformance::kubernetes_clusters(&aws, &aws, &aws, &unique("eks")).await;
    let slow = MemoryAws::new().with_creation_polls(3);
    conformance::kubernetes_clusters(&slow, &slow, &slow, &unique("eks")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_secrets_manager_and_rds_pass_against_moto() {
    let moto = moto().await;
    for region in ["us-east-1", "eu-west-3"] {
        let config = config(&moto, region).await;
        conformance::object_storage(&S3Storage::new(&config), &unique("threeport")).await;
        conformance::secret_store(&SecretsManagerStore::new(&config), &unique("threeport/db"))
            .await;
        conformance::relational_databases(&RdsDatabases::new(&config), &unique("orders")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_iam_and_eks_pass_against_moto() {
    let moto = moto().await;
    for region in ["us-east-1", "eu-west-3"] {
        let config = config(&moto, region).await;
        let networks = Ec2Networks::new(&config);
        conformance::networks(&networks, &unique("net")).await;
        let roles = IamRoles::new(&config);
        conformance::roles(&roles, &unique("role")).await;
        let clusters = EksClusters::new(&config);
        conformance::kubernetes_clusters(&clusters, &networks, &roles, &unique("eks")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assumed_role_acts_through_sts() {
    use threeport_aws::{AssumeRole, ObjectStorage};
    let moto = moto().await;
    let assumed = AwsConnection {
        assume_role: Some(AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/threeport".to_owned(),
            external_id: Some("tenant-7".to_owned()),
        }),
        ..connection(&moto, "us-east-1")
    };
    let config = assumed.sdk_config().await.unwrap();
    let credentials = aws_credential_types::provider::ProvideCredentials::provide_credentials(
        config.credentials_provider().unwrap().as_ref(),
    )
    .await
    .expect("STS gave credentials for the role");
    assert_ne!(credentials.access_key_id(), "testing", "not the base keys");
    assert!(
        credentials.session_token().is_some(),
        "temporary credentials"
    );
    let storage = S3Storage::new(&config);
    let bucket = unique("assumed");
    storage
        .ensure_bucket(&bucket, false)
        .await
        .expect("acts as the role");
    assert!(storage.delete_bucket(&bucket).await.unwrap());
    let not_a_role = AwsConnection {
        assume_role: Some(AssumeRole {
            role_arn: "arn:aws:iam::123456789012:user/someone".to_owned(),
            external_id: None,
        }),
        ..connection(&moto, "us-east-1")
    };
    let err = not_a_role.sdk_config().await.unwrap_err();
    assert_eq!(err.kind(), threeport_core::ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("role_arn"), "{err}");
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
        ..AwsConnection::default()
    };
    let err = S3Storage::new(&nowhere.sdk_config().await.unwrap())
        .bucket("some-bucket")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = AwsConnection::default().sdk_config().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    let unknown = AwsConnection {
        region: "moon-central-1".into(),
        ..nowhere
    };
    let err = unknown.sdk_config().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("moon-central-1"), "{err}");
}
