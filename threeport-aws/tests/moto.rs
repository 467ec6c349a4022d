//! The SDK implementations against moto (an AWS API mock server on loopback), and the
//! in-memory fake, pass the same checks.

use std::process::Stdio;
use std::time::Duration;

use threeport_aws::{
    AwsConnection, MemoryAws, RdsDatabases, S3Storage, SecretsManagerStore, conformance,
};
use tokio::process::{Child, Command};

/// A moto server on a free loopback port. The binary is `THREEPORT_MOTO_SERVER`, else
/// `moto_server` on PATH (`./scripts/test` installs moto).
struct Moto {
    _child: Child,
    url: String,
}

async fn moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binary =
        std::env::var("THREEPORT_MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
    let child = Command::new(&binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("moto is required ({binary}; ./scripts/test installs it): {e}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "moto did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Moto {
        _child: child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

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
