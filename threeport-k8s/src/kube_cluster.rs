//! [`KubeCluster`]: a [`Cluster`] on `kube`, for any kind the API server serves.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, WatchParams};
use kube::core::{GroupVersionKind, WatchEvent as KubeWatchEvent};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use threeport_core::{Error, Result};

use crate::{Cluster, ObjectList, ResourceRef, Selector, WatchEvent};

/// How to reach a cluster's API server (as a KubernetesRuntimeInstance's connection data
/// gives it): an endpoint with a CA and a bearer token or a client certificate, or a whole
/// kubeconfig.
#[derive(Clone, Default)]
pub struct ClusterConnection {
    /// `https://host:6443` (or `http://` for a local test server). Ignored with a kubeconfig.
    pub api_endpoint: String,
    /// PEM CA bundle; `None`: the system's roots.
    pub ca_certificate: Option<String>,
    /// Bearer token.
    pub token: Option<String>,
    /// PEM client certificate (with `client_key`), for certificate authentication.
    pub client_certificate: Option<String>,
    /// PEM private key of `client_certificate`.
    pub client_key: Option<String>,
    /// A kubeconfig (YAML); its current context is used, and the fields above are ignored.
    pub kubeconfig: Option<String>,
}

impl std::fmt::Debug for ClusterConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConnection")
            .field("api_endpoint", &self.api_endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("client_certificate", &self.client_certificate.is_some())
            .field(
                "kubeconfig",
                &self.kubeconfig.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// A cluster reached through `kube`. Kinds are resolved through discovery on first use and
/// cached; a kind the server does not serve is looked up again next time (a CRD may have
/// arrived meanwhile).
pub struct KubeCluster {
    client: kube::Client,
    endpoint: String,
    kinds: Mutex<HashMap<(String, String), (ApiResource, ApiCapabilities)>>,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn kube_error(what: &str, err: kube::Error) -> Error {
    match &err {
        kube::Error::Api(response) => match response.code {
            404 => Error::not_found(what, response.message.clone()),
            409 => Error::conflict(format!("{what}: {}", response.message)),
            400 | 422 => Error::invalid(what, response.message.clone()),
            401 | 403 => Error::invalid(
                "connection",
                format!("{what}: refused: {}", response.message),
            ),
            _ => Error::unavailable(format!("{what}: {err}")),
        },
        _ => Error::unavailable(format!("{what}: {err}")),
    }
}

impl KubeCluster {
    /// Connects to the API server `connection` names (nothing is sent until first use).
    pub async fn connect(connection: &ClusterConnection) -> Result<Self> {
        let config = match &connection.kubeconfig {
            Some(yaml) => {
                let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml)
                    .map_err(|e| Error::invalid("kubeconfig", e.to_string()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| Error::invalid("kubeconfig", e.to_string()))?
            }
            None => Self::config(connection)?,
        };
        Self::from_config(config)
    }

    /// The cluster this process runs in, through its service account (what the in-cluster
    /// agent uses).
    pub fn in_cluster() -> Result<Self> {
        let config = kube::Config::incluster()
            .map_err(|e| Error::invalid("connection", format!("not running in a cluster: {e}")))?;
        Self::from_config(config)
    }

    fn from_config(config: kube::Config) -> Result<Self> {
        let endpoint = config.cluster_url.to_string();
        let client = kube::Client::try_from(config)
            .map_err(|e| Error::invalid("connection", format!("cannot build a client: {e}")))?;
        Ok(KubeCluster {
            client,
            endpoint,
            kinds: Mutex::new(HashMap::new()),
        })
    }

    fn config(connection: &ClusterConnection) -> Result<kube::Config> {
        use base64::Engine as _;
        let cluster_url = connection
            .api_endpoint
            .parse()
            .map_err(|e| Error::invalid("api_endpoint", format!("{e}")))?;
        let mut config = kube::Config::new(cluster_url);
        if let Some(pem) = &connection.ca_certificate {
            config.root_cert = Some(pem_certificates(pem)?);
        }
        if let Some(token) = &connection.token {
            config.auth_info.token = Some(token.clone().into());
        }
        match (&connection.client_certificate, &connection.client_key) {
            (Some(certificate), Some(key)) => {
                let encode = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
                config.auth_info.client_certificate_data = Some(encode(certificate));
                config.auth_info.client_key_data = Some(encode(key).into());
            }
            (None, None) => {}
            _ => {
                return Err(Error::invalid(
                    "client_certificate",
                    "a client certificate needs its key, and a key its certificate",
                ));
            }
        }
        Ok(config)
    }

    /// The API resource and scope of a kind, from discovery.
    async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities)> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.kinds.lock().unwrap().get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let found = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|err| match &err {
                kube::Error::Api(response) if response.code == 404 => Error::invalid(
                    "kind",
                    format!("the cluster serves no kind {kind} in {api_version}"),
                ),
                kube::Error::Discovery(_) => Error::invalid(
                    "kind",
                    format!("the cluster serves no kind {kind} in {api_version}"),
                ),
                _ => kube_error("discovery", err),
            })?;
        self.kinds.lock().unwrap().insert(key, found.clone());
        Ok(found)
    }

    fn api(
        &self,
        resource: &ApiResource,
        capabilities: &ApiCapabilities,
        namespace: Option<&str>,
    ) -> Api<DynamicObject> {
        match (&capabilities.scope, namespace) {
            (Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(self.client.clone(), ns, resource)
            }
            (Scope::Namespaced, None) => Api::all_with(self.client.clone(), resource),
            (Scope::Cluster, _) => Api::all_with(self.client.clone(), resource),
        }
    }

    /// The API for one object: namespaced ones default to `default`.
    async fn object_api(&self, reference: &ResourceRef) -> Result<Api<DynamicObject>> {
        let (resource, capabilities) = self
            .resource(&reference.api_version, &reference.kind)
            .await?;
        let namespace = match capabilities.scope {
            Scope::Namespaced => Some(reference.namespace.as_deref().unwrap_or("default")),
            Scope::Cluster => None,
        };
        Ok(self.api(&resource, &capabilities, namespace))
    }
}

/// The DER certificates of a PEM bundle.
fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|cert| cert.map(|c| c.to_vec()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid("ca_certificate", e.to_string()))?;
    if certs.is_empty() {
        return Err(Error::invalid("ca_certificate", "no PEM certificate in it"));
    }
    Ok(certs)
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn apply(&self, manifest: &Value, field_manager: &str) -> Result<Value> {
        let reference = ResourceRef::of(manifest)?;
        let api = self.object_api(&reference).await?;
        let params = PatchParams::apply(field_manager).force();
        let live = api
            .patch(&reference.name, &params, &Patch::Apply(manifest))
            .await
            .map_err(|err| match &err {
                // The namespace is what is missing when the kind itself is known.
                kube::Error::Api(response) if response.code == 404 => Error::not_found(
                    "Namespace",
                    reference
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".to_owned()),
                ),
                _ => kube_error(&reference.to_string(), err),
            })?;
        serde_json::to_value(live).map_err(Error::backend)
    }

    async fn get(&self, reference: &ResourceRef) -> Result<Option<Value>> {
        let api = self.object_api(reference).await?;
        let found = api
            .get_opt(&reference.name)
            .await
            .map_err(|e| kube_error(&reference.to_string(), e))?;
        found
            .map(|o| serde_json::to_value(o).map_err(Error::backend))
            .transpose()
    }

    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>> {
        let (resource, capabilities) = self.resource(api_version, kind).await?;
        let list = self
            .api(&resource, &capabilities, namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_error(kind, e))?;
        list.items
            .into_iter()
            .map(|o| {
                let mut value = serde_json::to_value(o).map_err(Error::backend)?;
                // Items of a list come without their type; put it back.
                value["apiVersion"] = api_version.into();
                value["kind"] = kind.into();
                Ok(value)
            })
            .collect()
    }

    async fn delete(&self, reference: &ResourceRef) -> Result<bool> {
        let api = self.object_api(reference).await?;
        match api.delete(&reference.name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(response)) if response.code == 404 => Ok(false),
            Err(err) => Err(kube_error(&reference.to_string(), err)),
        }
    }

    async fn list_selected(&self, selector: &Selector) -> Result<ObjectList> {
        let (resource, capabilities) = self.resource(&selector.api_version, &selector.kind).await?;
        let mut params = ListParams::default();
        if let Some(labels) = &selector.labels {
            params = params.labels(labels);
        }
        let list = self
            .api(&resource, &capabilities, selector.namespace.as_deref())
            .list(&params)
            .await
            .map_err(|e| kube_error(&selector.kind, e))?;
        let items = list
            .items
            .into_iter()
            .map(|o| {
                let mut value = serde_json::to_value(o).map_err(Error::backend)?;
                value["apiVersion"] = selector.api_version.as_str().into();
                value["kind"] = selector.kind.as_str().into();
                Ok(value)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ObjectList {
            items,
            resource_version: list.metadata.resource_version.unwrap_or_default(),
        })
    }

    async fn watch(
        &self,
        selector: &Selector,
        resource_version: &str,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>> {
        let (resource, capabilities) = self.resource(&selector.api_version, &selector.kind).await?;
        let api = self.api(&resource, &capabilities, selector.namespace.as_deref());
        // Bookmarks are on by default: a resumed watch starts from the latest one.
        let mut params = WatchParams::default();
        if let Some(labels) = &selector.labels {
            params = params.labels(labels);
        }
        // From resource version "0": the current objects first, as ADDED.
        let from = if resource_version.is_empty() {
            "0"
        } else {
            resource_version
        };
        let events = match api.watch(&params, from).await {
            Ok(events) => events,
            Err(kube::Error::Api(response)) if response.code == 410 => {
                return Ok(futures::stream::iter([Ok(WatchEvent::Expired)]).boxed());
            }
            Err(err) => return Err(kube_error(&selector.kind, err)),
        };
        Ok(events
            .map_err(move |e| kube_error("watch", e))
            .filter_map(|event| async move {
                let to_value = |o: DynamicObject| serde_json::to_value(o).map_err(Error::backend);
                match event {
                    Ok(KubeWatchEvent::Added(o)) => Some(to_value(o).map(WatchEvent::Added)),
                    Ok(KubeWatchEvent::Modified(o)) => Some(to_value(o).map(WatchEvent::Modified)),
                    Ok(KubeWatchEvent::Deleted(o)) => Some(to_value(o).map(WatchEvent::Deleted)),
                    Ok(KubeWatchEvent::Bookmark(b)) => {
                        Some(Ok(WatchEvent::Bookmark(b.metadata.resource_version)))
                    }
                    Ok(KubeWatchEvent::Error(e)) if e.code == 410 => Some(Ok(WatchEvent::Expired)),
                    Ok(KubeWatchEvent::Error(e)) => {
                        Some(Err(Error::unavailable(format!("watch: {}", e.message))))
                    }
                    Err(err) => Some(Err(err)),
                }
            })
            .boxed())
    }
}
