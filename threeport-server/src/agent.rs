//! The in-cluster agent (`threeport-server agent`): a [`RuntimeWatcher`] of the cluster it
//! runs in, reporting through the REST API with its own token ([`ApiSink`]), for clusters the
//! control plane cannot reach. Same watcher, same reports as the control plane's own.
//!
//! [`RuntimeWatcher`]: threeport_controllers::health::RuntimeWatcher

use async_trait::async_trait;
use threeport_api::{Client, ClientError};
use threeport_controllers::health::{HealthSink, Reported};
use threeport_core::{Error, ObjectId, Result};

use crate::model::HealthReport;

/// Sends health reports to the API (`PUT /v0/workload-instances/{id}/health`).
#[derive(Debug, Clone)]
pub struct ApiSink {
    client: Client,
}

impl ApiSink {
    /// Reports through `client` (its URL and token).
    pub fn new(client: Client) -> Self {
        ApiSink { client }
    }
}

#[async_trait]
impl HealthSink for ApiSink {
    async fn report(&self, instance: ObjectId, report: &HealthReport) -> Result<Reported> {
        match self.client.report_health(instance, report).await {
            Ok(()) => Ok(Reported::Recorded),
            Err(ClientError::NotFound { .. }) => Ok(Reported::Gone),
            // Being reconciled, or the API restarting: the watcher sends it again.
            Err(ClientError::Unavailable { .. }) => Ok(Reported::Busy),
            Err(err) => Err(Error::unavailable(format!("reporting health: {err}"))),
        }
    }
}
