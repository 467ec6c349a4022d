//! [`MemoryAws`]: the AWS traits in memory, for tests and embedding.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use threeport_core::{Result, SecretValues};

use crate::{
    BucketState, DatabaseRequest, DatabaseState, ObjectStorage, RelationalDatabases, SecretStore,
    validate_bucket_name,
};

/// Buckets and secrets of one pretend account, in memory.
#[derive(Debug, Default)]
pub struct MemoryAws {
    buckets: Mutex<HashMap<String, BucketState>>,
    secrets: Mutex<HashMap<String, SecretValues>>,
    databases: Mutex<HashMap<String, DatabaseState>>,
}

impl MemoryAws {
    /// An empty account.
    pub fn new() -> Self {
        Self::default()
    }

    /// The values of a secret (tests only: threeport itself never reads a secret back).
    pub fn secret_values(&self, name: &str) -> Option<SecretValues> {
        self.secrets.lock().unwrap().get(name).cloned()
    }
}

#[async_trait]
impl ObjectStorage for MemoryAws {
    async fn ensure_bucket(&self, name: &str, public_read: bool) -> Result<()> {
        validate_bucket_name(name)?;
        self.buckets
            .lock()
            .unwrap()
            .insert(name.to_owned(), BucketState { public_read });
        Ok(())
    }

    async fn bucket(&self, name: &str) -> Result<Option<BucketState>> {
        validate_bucket_name(name)?;
        Ok(self.buckets.lock().unwrap().get(name).copied())
    }

    async fn delete_bucket(&self, name: &str) -> Result<bool> {
        validate_bucket_name(name)?;
        Ok(self.buckets.lock().unwrap().remove(name).is_some())
    }
}

#[async_trait]
impl SecretStore for MemoryAws {
    async fn put_secret(&self, name: &str, values: &SecretValues) -> Result<String> {
        self.secrets
            .lock()
            .unwrap()
            .insert(name.to_owned(), values.clone());
        Ok(format!(
            "arn:aws:secretsmanager:us-east-1:000000000000:secret:{name}"
        ))
    }

    async fn secret_arn(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .secrets
            .lock()
            .unwrap()
            .contains_key(name)
            .then(|| format!("arn:aws:secretsmanager:us-east-1:000000000000:secret:{name}")))
    }

    async fn delete_secret(&self, name: &str) -> Result<bool> {
        Ok(self.secrets.lock().unwrap().remove(name).is_some())
    }
}

#[async_trait]
impl RelationalDatabases for MemoryAws {
    async fn create_database(&self, request: &DatabaseRequest) -> Result<()> {
        request.validate()?;
        // Available at once, as moto makes them.
        self.databases
            .lock()
            .unwrap()
            .entry(request.identifier.clone())
            .or_insert_with(|| DatabaseState {
                status: "available".to_owned(),
                host: Some(format!("{}.memory.rds.local", request.identifier)),
                port: Some(request.port),
            });
        Ok(())
    }

    async fn database(&self, identifier: &str) -> Result<Option<DatabaseState>> {
        Ok(self.databases.lock().unwrap().get(identifier).cloned())
    }

    async fn delete_database(&self, identifier: &str) -> Result<bool> {
        Ok(self.databases.lock().unwrap().remove(identifier).is_some())
    }
}
