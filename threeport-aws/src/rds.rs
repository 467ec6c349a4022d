//! [`RdsDatabases`]: [`RelationalDatabases`] on Amazon RDS.

use async_trait::async_trait;
use aws_sdk_rds::error::ProvideErrorMetadata;
use threeport_core::Result;

use crate::error::sdk_error;
use crate::{DatabaseRequest, DatabaseState, DatabaseStatus, RelationalDatabases};

/// RDS instances of one account and region.
#[derive(Debug, Clone)]
pub struct RdsDatabases {
    client: aws_sdk_rds::Client,
}

impl RdsDatabases {
    /// A client for the account and region of `config` (from [`AwsConnection::sdk_config`]).
    ///
    /// [`AwsConnection::sdk_config`]: crate::AwsConnection::sdk_config
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        RdsDatabases {
            client: aws_sdk_rds::Client::new(config),
        }
    }
}

#[async_trait]
impl RelationalDatabases for RdsDatabases {
    async fn create_database(&self, request: &DatabaseRequest) -> Result<()> {
        request.validate()?;
        let created = self
            .client
            .create_db_instance()
            .db_instance_identifier(&request.identifier)
            .engine(&request.engine)
            .engine_version(&request.engine_version)
            .db_name(&request.database_name)
            .port(i32::from(request.port))
            .db_instance_class(&request.instance_class)
            .allocated_storage(i32::try_from(request.storage_gb).unwrap_or(i32::MAX))
            .backup_retention_period(i32::try_from(request.backup_days).unwrap_or(35))
            .master_username(&request.master_username)
            .master_user_password(&request.master_password)
            .set_db_subnet_group_name(request.subnet_group.clone())
            .set_vpc_security_group_ids(
                (!request.security_group_ids.is_empty())
                    .then(|| request.security_group_ids.clone()),
            )
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            // Created by an earlier, interrupted attempt: resume, do not duplicate.
            Err(err) if err.code() == Some("DBInstanceAlreadyExists") => Ok(()),
            Err(err) => Err(sdk_error("database", err)),
        }
    }

    async fn database(&self, identifier: &str) -> Result<Option<DatabaseState>> {
        let described = self
            .client
            .describe_db_instances()
            .db_instance_identifier(identifier)
            .send()
            .await;
        let output = match described {
            Ok(output) => output,
            Err(err) if err.code() == Some("DBInstanceNotFound") => return Ok(None),
            Err(err) => return Err(sdk_error("database", err)),
        };
        Ok(output.db_instances().first().map(|instance| DatabaseState {
            status: DatabaseStatus::parse(instance.db_instance_status().unwrap_or_default()),
            host: instance
                .endpoint()
                .and_then(|e| e.address())
                .map(str::to_owned),
            port: instance
                .endpoint()
                .and_then(|e| e.port())
                .and_then(|p| u16::try_from(p).ok()),
        }))
    }

    async fn delete_database(&self, identifier: &str) -> Result<bool> {
        let deleted = self
            .client
            .delete_db_instance()
            .db_instance_identifier(identifier)
            .skip_final_snapshot(true)
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("DBInstanceNotFound") => Ok(false),
            Err(err) => Err(sdk_error("database", err)),
        }
    }

    async fn ensure_subnet_group(&self, name: &str, subnet_ids: &[String]) -> Result<()> {
        let created = self
            .client
            .create_db_subnet_group()
            .db_subnet_group_name(name)
            .db_subnet_group_description(format!("threeport: {name}"))
            .set_subnet_ids(Some(subnet_ids.to_vec()))
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            // Made by an earlier attempt.
            Err(err) if err.code() == Some("DBSubnetGroupAlreadyExists") => Ok(()),
            Err(err) => Err(sdk_error("subnet_group", err)),
        }
    }

    async fn delete_subnet_group(&self, name: &str) -> Result<bool> {
        let deleted = self
            .client
            .delete_db_subnet_group()
            .db_subnet_group_name(name)
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("DBSubnetGroupNotFoundFault") => Ok(false),
            Err(err) if err.code() == Some("InvalidDBSubnetGroupStateFault") => {
                Err(threeport_core::Error::unavailable(format!(
                    "DB subnet group {name} still in use: {}",
                    err.message().unwrap_or("InvalidDBSubnetGroupStateFault")
                )))
            }
            Err(err) => Err(sdk_error("subnet_group", err)),
        }
    }
}
