//! The checks every [`ObjectStorage`] and [`SecretStore`] passes: the in-memory fake, and the
//! SDK implementations against moto.

use threeport_core::{ErrorKind, SecretValues};

use crate::{DatabaseRequest, ObjectStorage, RelationalDatabases, SecretStore};

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

/// Databases: creation answers at once and resumes when repeated; the state reports an
/// endpoint once available; deletion; bad input refused before AWS is asked.
pub async fn relational_databases(databases: &dyn RelationalDatabases, identifier: &str) {
    let request = DatabaseRequest {
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
    };
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
