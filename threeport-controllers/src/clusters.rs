//! Where controllers get a [`Cluster`] for a Kubernetes runtime instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use threeport_api::model::{KubernetesRuntimeInstance, runtime_connection};
use threeport_core::{Error, Object, ObjectId, Result};
use threeport_k8s::{Cluster, ClusterConnection, KubeCluster};

use crate::seal::Sealer;

/// Gives the cluster of a runtime instance.
#[async_trait]
pub trait ClusterProvider: Send + Sync + std::fmt::Debug + 'static {
    /// The cluster `runtime` describes.
    async fn cluster(
        &self,
        runtime: &Object<KubernetesRuntimeInstance>,
    ) -> Result<Arc<dyn Cluster>>;

    /// A cluster reached with `connection` (credentials in plain form), before any runtime
    /// records it: the AWS controller's first contact with a new EKS cluster.
    async fn connect(&self, connection: &ClusterConnection) -> Result<Arc<dyn Cluster>>;
}

/// Real clusters, reached with `kube` from the runtime's connection data (its token opened
/// with the server's key). Clients are kept per runtime version.
#[derive(Debug)]
pub struct KubeClusters {
    sealer: Arc<Sealer>,
    clients: Mutex<HashMap<(ObjectId, String), Arc<KubeCluster>>>,
}

impl KubeClusters {
    /// Clusters whose tokens `sealer` opens.
    pub fn new(sealer: Arc<Sealer>) -> Self {
        KubeClusters {
            sealer,
            clients: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl ClusterProvider for KubeClusters {
    async fn cluster(
        &self,
        runtime: &Object<KubernetesRuntimeInstance>,
    ) -> Result<Arc<dyn Cluster>> {
        let Some(connection) = runtime_connection(runtime) else {
            // Not a mistake: an EKS runtime gets its connection data once its cluster serves.
            return Err(Error::unavailable(format!(
                "runtime {} has no connection data yet",
                runtime.meta.name
            )));
        };
        // A client per runtime, made again when its connection data changes.
        let key = (
            runtime.id(),
            serde_json::to_string(connection).unwrap_or_default(),
        );
        if let Some(client) = self.clients.lock().unwrap().get(&key) {
            return Ok(client.clone());
        }
        let open = |field: &str, sealed: &Option<String>| {
            sealed
                .as_deref()
                .map(|sealed| {
                    self.sealer
                        .open(&format!("spec.connection.{field}"), sealed)
                })
                .transpose()
        };
        let client = Arc::new(
            KubeCluster::connect(&ClusterConnection {
                api_endpoint: connection.api_endpoint.clone(),
                ca_certificate: connection.ca_certificate.clone(),
                token: open("token", &connection.token)?,
                client_certificate: connection.client_certificate.clone(),
                client_key: open("client_key", &connection.client_key)?,
                kubeconfig: open("kubeconfig", &connection.kubeconfig)?,
            })
            .await?,
        );
        let mut clients = self.clients.lock().unwrap();
        clients.retain(|(id, _), _| *id != runtime.id());
        clients.insert(key, client.clone());
        Ok(client)
    }

    async fn connect(&self, connection: &ClusterConnection) -> Result<Arc<dyn Cluster>> {
        Ok(Arc::new(KubeCluster::connect(connection).await?))
    }
}

/// One cluster for every runtime (tests, single-cluster setups).
#[derive(Debug, Clone)]
pub struct SingleCluster(pub Arc<dyn Cluster>);

#[async_trait]
impl ClusterProvider for SingleCluster {
    async fn cluster(&self, _: &Object<KubernetesRuntimeInstance>) -> Result<Arc<dyn Cluster>> {
        Ok(self.0.clone())
    }

    async fn connect(&self, _: &ClusterConnection) -> Result<Arc<dyn Cluster>> {
        Ok(self.0.clone())
    }
}
