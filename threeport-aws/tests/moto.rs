//! The SDK implementations against moto (an AWS API mock server on loopback), and the
//! in-memory fake, pass the same checks.

mod common;
mod fault;

use aws_config::SdkConfig;
use common::{Moto, moto};
use threeport_aws::{
    AwsConnection, Ec2Networks, EksClusters, IamRoles, MemoryAws, RdsDatabases, Route53Zones,
    S3Storage, SecretsManagerStore, conformance,
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

/// A domain no other test uses.
fn zone_name() -> String {
    format!("{}.example.com", unique("zone").to_ascii_lowercase())
}

#[tokio::test]
async fn memory_fake_passes() {
    let aws = MemoryAws::new();
    conformance::object_storage(&aws, &unique("bucket")).await;
    conformance::secret_store(&aws, &unique("secret")).await;
    conformance::relational_databases(&aws, &unique("db")).await;
    conformance::networks(&aws, &unique("net")).await;
    conformance::database_placement(&aws, &aws, &unique("placed")).await;
    conformance::roles(&aws, &unique("role")).await;
    conformance::dns_zones(&aws, &zone_name()).await;
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
async fn ec2_iam_route53_and_eks_pass_against_moto() {
    let moto = moto().await;
    for region in ["us-east-1", "eu-west-3"] {
        let config = config(&moto, region).await;
        let networks = Ec2Networks::new(&config);
        conformance::networks(&networks, &unique("net")).await;
        let databases = RdsDatabases::new(&config);
        conformance::database_placement(&databases, &networks, &unique("placed")).await;
        let roles = IamRoles::new(&config);
        conformance::roles(&roles, &unique("role")).await;
        conformance::dns_zones(&Route53Zones::new(&config), &zone_name()).await;
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

/// Tagged EC2 pieces of `owner`: (VPCs, subnets), counted straight from moto.
async fn ec2_pieces(config: &SdkConfig, owner: &str) -> (usize, usize) {
    use aws_sdk_ec2::types::Filter;
    let ec2 = aws_sdk_ec2::Client::new(config);
    let tag = || {
        Filter::builder()
            .name(format!("tag:{}", threeport_aws::OWNER_TAG))
            .values(owner)
            .build()
    };
    let vpcs = ec2.describe_vpcs().filters(tag()).send().await.unwrap();
    let subnets = ec2.describe_subnets().filters(tag()).send().await.unwrap();
    (vpcs.vpcs().len(), subnets.subnets().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_whose_answers_are_lost_resume_without_leaking() {
    use fault::{Fault, FaultProxy};
    use threeport_aws::{
        ClusterRequest, DatabaseRequest, KubernetesClusters, Networks, RelationalDatabases,
        RoleRequest, Roles, Trust,
    };
    use threeport_core::ErrorKind;
    let moto = moto().await;
    let proxy = FaultProxy::start(&moto.url).await;
    let through_proxy = AwsConnection {
        endpoint: Some(proxy.url.clone()),
        ..connection(&moto, "us-east-1")
    }
    .sdk_config()
    .await
    .unwrap();
    let direct = config(&moto, "us-east-1").await;

    // EC2: AWS makes the VPC, then a subnet, but the answers never arrive.
    proxy.inject("Action=CreateVpc", Fault::LoseAnswer, 1);
    proxy.inject("Action=CreateSubnet", Fault::LoseAnswer, 1);
    let networks = Ec2Networks::new(&through_proxy);
    let owner = unique("lost");
    for lost in ["VPC", "subnet"] {
        let err = networks.ensure_network(&owner, 2).await.expect_err(lost);
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{lost}: {err}");
    }
    let network = networks.ensure_network(&owner, 2).await.expect("resumed");
    assert_eq!(network.subnet_ids.len(), 2);
    assert_eq!(
        ec2_pieces(&direct, &owner).await,
        (1, 2),
        "one VPC and two subnets: nothing made twice"
    );

    // IAM, EKS and RDS creations are named: the retry finds the first one's result.
    proxy.inject("Action=CreateRole", Fault::LoseAnswer, 1);
    proxy.inject("POST /clusters", Fault::LoseAnswer, 1);
    proxy.inject("Action=CreateDBInstance", Fault::LoseAnswer, 1);
    let roles = IamRoles::new(&through_proxy);
    let role_name = unique("lost-role");
    let request = RoleRequest {
        name: role_name.clone(),
        trust: Trust::Service("eks.amazonaws.com".into()),
        managed_policies: vec![],
        inline_policy: None,
    };
    let arn = match roles.ensure_role(&request).await {
        Ok(arn) => arn,
        Err(_) => roles.ensure_role(&request).await.expect("resumed"),
    };
    let clusters = EksClusters::new(&through_proxy);
    let cluster = ClusterRequest {
        name: unique("lost-cluster"),
        role_arn: arn,
        subnet_ids: network.subnet_ids.clone(),
        kubernetes_version: None,
    };
    if clusters.create_cluster(&cluster).await.is_err() {
        clusters.create_cluster(&cluster).await.expect("resumed");
    }
    let databases = RdsDatabases::new(&through_proxy);
    let database = DatabaseRequest {
        identifier: unique("lost-db"),
        engine: "postgres".into(),
        engine_version: "16.4".into(),
        database_name: "orders".into(),
        port: 5432,
        instance_class: "db.t3.micro".into(),
        storage_gb: 20,
        backup_days: 0,
        master_username: "threeport".into(),
        master_password: "a-long-generated-password".into(),
        subnet_group: None,
        security_group_ids: Vec::new(),
    };
    if databases.create_database(&database).await.is_err() {
        databases.create_database(&database).await.expect("resumed");
    }
    let iam = aws_sdk_iam::Client::new(&direct);
    let named = |listed: Vec<String>, name: &str| listed.iter().filter(|n| *n == name).count();
    let roles_listed = iam.list_roles().send().await.unwrap();
    let role_names = roles_listed
        .roles()
        .iter()
        .map(|r| r.role_name().to_owned())
        .collect();
    assert_eq!(named(role_names, &role_name), 1);
    let eks = aws_sdk_eks::Client::new(&direct);
    let cluster_names = eks
        .list_clusters()
        .send()
        .await
        .unwrap()
        .clusters()
        .to_vec();
    assert_eq!(named(cluster_names, &cluster.name), 1);
    assert!(
        RdsDatabases::new(&direct)
            .database(&database.identifier)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_transient_and_refusals_are_terminal() {
    use fault::{Fault, FaultProxy};
    use threeport_aws::{Networks, ObjectStorage, RelationalDatabases, SecretStore};
    use threeport_core::ErrorKind;
    let moto = moto().await;
    let proxy = FaultProxy::start(&moto.url).await;
    let through_proxy = AwsConnection {
        endpoint: Some(proxy.url.clone()),
        ..connection(&moto, "us-east-1")
    }
    .sdk_config()
    .await
    .unwrap();
    let networks = Ec2Networks::new(&through_proxy);
    proxy.inject(
        "Action=DescribeVpcs",
        Fault::ec2_error(503, "RequestLimitExceeded"),
        1,
    );
    let err = networks.ensure_network("throttled", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "throttling: {err}");
    proxy.inject(
        "Action=DescribeVpcs",
        Fault::ec2_error(500, "InternalError"),
        1,
    );
    let err = networks.ensure_network("throttled", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "5xx: {err}");
    proxy.inject(
        "Action=DescribeVpcs",
        Fault::ec2_error(400, "VpcLimitExceeded"),
        1,
    );
    let err = networks.ensure_network("quota", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "quota: {err}");
    assert!(err.to_string().contains("VpcLimitExceeded"), "{err}");

    // Wrong credentials, refused by moto itself when it checks them as AWS does.
    let strict = common::moto_checking_credentials().await;
    let wrong = AwsConnection {
        region: "us-east-1".into(),
        access_key_id: "AKIAWRONGWRONGWRONG0".into(),
        secret_access_key: "wrong".into(),
        endpoint: Some(strict.url.clone()),
        ..AwsConnection::default()
    }
    .sdk_config()
    .await
    .unwrap();
    let refused: Vec<(&str, threeport_core::Error)> = vec![
        (
            "s3",
            S3Storage::new(&wrong)
                .ensure_bucket("refused-bucket", false)
                .await
                .unwrap_err(),
        ),
        (
            "ec2",
            Ec2Networks::new(&wrong)
                .ensure_network("refused", 1)
                .await
                .unwrap_err(),
        ),
        (
            "secrets manager",
            SecretsManagerStore::new(&wrong)
                .secret_arn("refused")
                .await
                .unwrap_err(),
        ),
        (
            "rds",
            RdsDatabases::new(&wrong)
                .database("refused")
                .await
                .unwrap_err(),
        ),
    ];
    for (service, err) in refused {
        assert_eq!(err.kind(), ErrorKind::Invalid, "{service}: {err}");
        assert!(err.to_string().contains("AWS refused"), "{service}: {err}");
    }
}
