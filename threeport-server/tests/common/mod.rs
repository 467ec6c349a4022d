//! Test support shared by the server's test binaries.

#![allow(dead_code)] // each test binary uses its own subset

pub mod pg_cluster;
pub mod process;

/// A plain HTTP client. The workspace's rustls has only the `ring` provider, which must be
/// installed for clients built without an explicit TLS configuration.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The `orders` PostgreSQL database definition the AWS tests use, in `account`.
pub fn orders_database(
    account: threeport_core::ObjectId,
) -> threeport_server::model::AwsRelationalDatabaseDefinition {
    use threeport_server::model::{AwsRelationalDatabaseDefinition, DatabaseEngine, MachineSize};
    AwsRelationalDatabaseDefinition {
        aws_account: account,
        engine: DatabaseEngine::Postgres,
        engine_version: "16.4".into(),
        database_name: "orders".into(),
        database_port: 5432,
        backup_days: 7,
        machine_size: MachineSize::Small,
        storage_gb: 20,
        workload_secret_name: "orders-db".into(),
    }
}
