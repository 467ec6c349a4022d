//! The checks every implementation of this crate's traits passes: the in-memory fake, and the
//! SDK implementations against moto.

use threeport_core::{ErrorKind, SecretValues};

use crate::{
    ClusterRequest, DatabaseRequest, DnsZones, EksStatus, KubernetesClusters, Networks,
    NodeGroupRequest, ObjectStorage, RelationalDatabases, RoleRequest, Roles, SecretStore, Trust,
};

/// Buckets: idempotent creation, the public-read flag both ways, deletion, bad names.
pub async fn object_storage(storage: &dyn ObjectStorage, bucket: &str) {
    assert_eq!(storage.bucket(bucket).await.expect("look up"), None);
    storage.ensure_bucket(bucket, false).await.expect("create");
    storage
        .ensure_bucket(bucket, false)
        .await
        .expect("again: idempotent");
    let state = storage
        .bucket(bucket)
        .await
        .expect("look up")
        .expect("exists");
    assert!(!state.public_read);
    storage
        .ensure_bucket(bucket, true)
        .await
        .expect("make public");
    assert!(
        storage.bucket(bucket).await.unwrap().unwrap().public_read,
        "public read honoured"
    );
    storage
        .ensure_bucket(bucket, false)
        .await
        .expect("make private");
    assert!(!storage.bucket(bucket).await.unwrap().unwrap().public_read);
    assert!(storage.delete_bucket(bucket).await.expect("delete"));
    assert!(!storage.delete_bucket(bucket).await.expect("delete again"));
    let err = storage
        .ensure_bucket("Not_A_Bucket", false)
        .await
        .expect_err("bad name");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
}

/// Secrets: create, update, look up, delete.
pub async fn secret_store(store: &dyn SecretStore, name: &str) {
    assert_eq!(store.secret_arn(name).await.expect("look up"), None);
    let values = SecretValues([("password".to_owned(), "first".to_owned())].into());
    let arn = store.put_secret(name, &values).await.expect("create");
    assert!(arn.starts_with("arn:aws:secretsmanager:"), "{arn}");
    let values = SecretValues([("password".to_owned(), "second".to_owned())].into());
    let again = store.put_secret(name, &values).await.expect("update");
    assert_eq!(arn, again, "same secret");
    assert_eq!(store.secret_arn(name).await.expect("look up"), Some(arn));
    assert!(store.delete_secret(name).await.expect("delete"));
    assert_eq!(store.secret_arn(name).await.expect("look up"), None);
    assert!(!store.delete_secret(name).await.expect("delete again"));
}

/// A small PostgreSQL database `identifier`, in the account's default VPC.
fn orders_database(identifier: &str) -> DatabaseRequest {
    DatabaseRequest {
        identifier: identifier.to_owned(),
        engine: "postgres".to_owned(),
        engine_version: "16.4".to_owned(),
        database_name: "orders".to_owned(),
        port: 5432,
        instance_class: "db.t3.micro".to_owned(),
        storage_gb: 20,
        backup_days: 7,
        master_username: "threeport".to_owned(),
        master_password: "a-long-generated-password".to_owned(),
        subnet_group: None,
        security_group_ids: Vec::new(),
    }
}

/// Databases: creation answers at once and resumes when repeated; the state reports an
/// endpoint once available; deletion; bad input refused before AWS is asked.
pub async fn relational_databases(databases: &dyn RelationalDatabases, identifier: &str) {
    let request = orders_database(identifier);
    assert_eq!(databases.database(identifier).await.expect("look up"), None);
    databases.create_database(&request).await.expect("create");
    databases
        .create_database(&request)
        .await
        .expect("again: resumes, no duplicate");
    let state = databases
        .database(identifier)
        .await
        .expect("look up")
        .expect("exists");
    assert!(state.is_available(), "{state:?}");
    assert_eq!(state.port, Some(5432));
    assert!(databases.delete_database(identifier).await.expect("delete"));
    let oracle = DatabaseRequest {
        engine: "oracle".to_owned(),
        ..request.clone()
    };
    let err = databases
        .create_database(&oracle)
        .await
        .expect_err("unsupported engine");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    let bad = DatabaseRequest {
        identifier: "1-bad--id".to_owned(),
        ..request
    };
    assert_eq!(
        databases
            .create_database(&bad)
            .await
            .expect_err("bad id")
            .kind(),
        ErrorKind::Invalid
    );
}

/// Networks: created piece by piece, found again by owner (no duplicates), deleted.
pub async fn networks(networks: &dyn Networks, owner: &str) {
    let network = networks.ensure_network(owner, 2).await.expect("create");
    assert_eq!(network.subnet_ids.len(), 2, "{network:?}");
    assert!(!network.vpc_id.is_empty() && !network.internet_gateway_id.is_empty());
    assert!(!network.route_table_id.is_empty());
    let again = networks.ensure_network(owner, 2).await.expect("again");
    assert_eq!(network, again, "found again, nothing duplicated");
    let wider = networks
        .ensure_network(owner, 3)
        .await
        .expect("one zone more");
    assert_eq!(wider.vpc_id, network.vpc_id);
    assert_eq!(
        wider.subnet_ids[..2],
        network.subnet_ids[..],
        "zone order kept"
    );
    assert_eq!(wider.subnet_ids.len(), 3);
    assert!(networks.delete_network(owner).await.expect("delete"));
    assert!(!networks.delete_network(owner).await.expect("delete again"));
    let err = networks
        .ensure_network(owner, 40)
        .await
        .expect_err("more zones than the region has");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    networks.delete_network(owner).await.expect("clean up");
}

/// A database placed in a network: a security group admitting the network on the database
/// port and a DB subnet group over its subnets, both found again rather than duplicated, the
/// database created in them, and everything deleted in reverse.
pub async fn database_placement(
    databases: &dyn RelationalDatabases,
    networks: &dyn Networks,
    owner: &str,
) {
    let network = networks.ensure_network(owner, 2).await.expect("network");
    let group = networks
        .ensure_security_group(owner, &network.vpc_id, 5432, crate::NETWORK_CIDR)
        .await
        .expect("security group");
    let again = networks
        .ensure_security_group(owner, &network.vpc_id, 5432, crate::NETWORK_CIDR)
        .await
        .expect("again");
    assert_eq!(group, again, "found again, not duplicated");
    databases
        .ensure_subnet_group(owner, &network.subnet_ids)
        .await
        .expect("subnet group");
    databases
        .ensure_subnet_group(owner, &network.subnet_ids)
        .await
        .expect("again: idempotent");
    let request = DatabaseRequest {
        subnet_group: Some(owner.to_owned()),
        security_group_ids: vec![group.clone()],
        ..orders_database(owner)
    };
    databases.create_database(&request).await.expect("create");
    assert!(
        databases
            .database(owner)
            .await
            .expect("look up")
            .expect("exists")
            .is_available()
    );
    assert!(databases.delete_database(owner).await.expect("delete"));
    assert!(
        databases
            .delete_subnet_group(owner)
            .await
            .expect("delete group")
    );
    assert!(!databases.delete_subnet_group(owner).await.expect("again"));
    assert!(
        networks
            .delete_security_group(owner)
            .await
            .expect("delete sg")
    );
    assert!(!networks.delete_security_group(owner).await.expect("again"));
    assert!(
        networks
            .delete_network(owner)
            .await
            .expect("delete network")
    );
}

/// Roles and OIDC providers: idempotent by name, deleted with their policies, bad names refused.
pub async fn roles(roles: &dyn Roles, name: &str) {
    let request = RoleRequest {
        name: name.to_owned(),
        trust: Trust::Service("eks.amazonaws.com".to_owned()),
        managed_policies: vec!["arn:aws:iam::aws:policy/AmazonEKSClusterPolicy".to_owned()],
        inline_policy: Some(
            serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Action": "s3:GetObject", "Resource": "*"}]})
            .to_string(),
        ),
    };
    let arn = roles.ensure_role(&request).await.expect("create");
    assert!(
        arn.starts_with("arn:aws:iam::") && arn.ends_with(&format!(":role/{name}")),
        "{arn}"
    );
    assert_eq!(roles.ensure_role(&request).await.expect("again"), arn);
    assert!(roles.delete_role(name).await.expect("delete"));
    assert!(!roles.delete_role(name).await.expect("delete again"));
    let issuer = format!("https://oidc.eks.us-east-1.amazonaws.com/id/{name}");
    let provider = roles
        .ensure_oidc_provider(&issuer)
        .await
        .expect("oidc provider");
    assert!(provider.contains(":oidc-provider/oidc.eks."), "{provider}");
    assert_eq!(
        roles.ensure_oidc_provider(&issuer).await.expect("again"),
        provider
    );
    assert!(roles.delete_oidc_provider(&issuer).await.expect("delete"));
    assert!(
        !roles
            .delete_oidc_provider(&issuer)
            .await
            .expect("delete again")
    );
    let bad = RoleRequest {
        name: "no spaces allowed".to_owned(),
        ..request
    };
    assert_eq!(
        roles.ensure_role(&bad).await.expect_err("bad name").kind(),
        ErrorKind::Invalid
    );
}

/// Clusters and node groups: creation answers at once and resumes when repeated, the state
/// turns ACTIVE with an endpoint and an OIDC issuer, a token is given, deletion in order.
pub async fn kubernetes_clusters(
    clusters: &dyn KubernetesClusters,
    networks: &dyn Networks,
    roles: &dyn Roles,
    name: &str,
) {
    let network = networks.ensure_network(name, 2).await.expect("network");
    let role = |suffix: &str, service: &str| RoleRequest {
        name: format!("{name}-{suffix}"),
        trust: Trust::Service(service.to_owned()),
        managed_policies: vec![],
        inline_policy: None,
    };
    let cluster_role = roles
        .ensure_role(&role("cluster", "eks.amazonaws.com"))
        .await
        .expect("cluster role");
    let node_role = roles
        .ensure_role(&role("nodes", "ec2.amazonaws.com"))
        .await
        .expect("node role");
    assert_eq!(clusters.cluster(name).await.expect("look up"), None);
    let request = ClusterRequest {
        name: name.to_owned(),
        role_arn: cluster_role,
        subnet_ids: network.subnet_ids.clone(),
        kubernetes_version: None,
    };
    clusters.create_cluster(&request).await.expect("create");
    clusters
        .create_cluster(&request)
        .await
        .expect("again: resumes, no duplicate");
    let mut state = clusters
        .cluster(name)
        .await
        .expect("look up")
        .expect("exists");
    for _ in 0..20 {
        if state.is_active() {
            break;
        }
        assert_eq!(state.status, EksStatus::Creating, "{state:?}");
        state = clusters.cluster(name).await.unwrap().unwrap();
    }
    assert!(state.is_active(), "{state:?}");
    assert!(state.oidc_issuer.is_some(), "{state:?}");
    assert!(!clusters.token(name).await.expect("token").is_empty());
    let group = NodeGroupRequest {
        cluster: name.to_owned(),
        name: "default".to_owned(),
        node_role_arn: node_role,
        subnet_ids: network.subnet_ids,
        instance_type: "t3.medium".to_owned(),
        minimum: 1,
        maximum: 3,
        desired: 2,
    };
    clusters
        .create_node_group(&group)
        .await
        .expect("node group");
    clusters.create_node_group(&group).await.expect("again");
    let mut status = None;
    for _ in 0..20 {
        status = clusters.node_group(name, "default").await.expect("look up");
        if status == Some(EksStatus::Active) {
            break;
        }
    }
    assert_eq!(status, Some(EksStatus::Active));
    assert!(
        clusters
            .delete_node_group(name, "default")
            .await
            .expect("delete group")
    );
    assert_eq!(
        clusters.node_group(name, "default").await.expect("look up"),
        None,
        "gone at once in the fake and moto (EKS takes minutes: callers poll)"
    );
    assert!(clusters.delete_cluster(name).await.expect("delete cluster"));
    assert!(
        !clusters
            .delete_node_group(name, "default")
            .await
            .expect("again")
    );
    let err = clusters
        .create_cluster(&ClusterRequest {
            name: "-bad".to_owned(),
            ..request
        })
        .await
        .expect_err("bad name");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    roles
        .delete_role(&format!("{name}-cluster"))
        .await
        .expect("clean up");
    roles
        .delete_role(&format!("{name}-nodes"))
        .await
        .expect("clean up");
    networks.delete_network(name).await.expect("clean up");
}

/// Hosted zones: not found before, created once (a second ensure finds it), found by name
/// with or without the trailing dot, deleted, bad names refused.
pub async fn dns_zones(zones: &dyn DnsZones, domain: &str) {
    assert_eq!(zones.find_zone(domain, false).await.expect("look up"), None);
    let created = zones.ensure_zone(domain, None).await.expect("create");
    assert_eq!(created.name, domain);
    assert!(!created.private);
    assert!(
        !created.id.is_empty() && !created.id.starts_with('/'),
        "{created:?}"
    );
    assert!(created.arn().starts_with("arn:aws:route53:::hostedzone/"));
    let again = zones.ensure_zone(domain, None).await.expect("again");
    assert_eq!(again, created, "found, not made twice");
    let dotted = format!("{domain}.");
    assert_eq!(
        zones.find_zone(&dotted, false).await.expect("look up"),
        Some(created)
    );
    assert_eq!(
        zones.find_zone(domain, true).await.expect("look up"),
        None,
        "a public zone is not the private one"
    );
    let parent = domain.split_once('.').map(|(_, p)| p).unwrap_or(domain);
    assert_eq!(
        zones
            .find_zone(&format!("other.{parent}"), false)
            .await
            .expect("look up"),
        None,
        "only the exact name"
    );
    assert!(
        !zones
            .delete_zone(domain, true)
            .await
            .expect("no private one")
    );
    assert!(zones.delete_zone(domain, false).await.expect("delete"));
    assert!(
        !zones
            .delete_zone(domain, false)
            .await
            .expect("delete again")
    );
    assert_eq!(zones.find_zone(domain, false).await.expect("look up"), None);
    let err = zones
        .find_zone("not a domain", false)
        .await
        .expect_err("bad name");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
}
