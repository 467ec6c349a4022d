//! # threeport-k8s
//!
//! Kubernetes access for threeport, behind one small dyn-compatible trait, [`Cluster`]:
//! server-side apply of arbitrary manifests (core kinds, any API group, custom resources) under
//! a field manager, reads, lists, deletes and watches.
//!
//! - [`KubeCluster`]: the real thing, on `kube`, built from a runtime's connection data; kinds
//!   are resolved through API discovery, so CRDs work like built-in kinds.
//! - [`MemoryCluster`]: an in-memory fake with the same behaviour (namespaces must exist,
//!   CRDs register their kinds, field managers own what they applied).
//! - [`FakeApiServer`]: that fake behind the Kubernetes HTTP API on loopback (discovery, get,
//!   list, create, server-side apply, merge patch, delete, watch, `Status` error bodies), so
//!   `KubeCluster` is tested over the wire.
//! - [`conformance`]: the checks every `Cluster` passes.
//! - [`health`]: Argo CD's health model for live objects (healthy, progressing, degraded,
//!   down, suspended, unknown, with a reason).
//! - [`Reflector`]: a resumable list-and-watch of the objects one [`Selector`] covers: resumed
//!   from its last resource version, re-listed when that version expired (410 Gone),
//!   reconnected with backoff.
//!
//! [`apply_all`] and [`delete_all`] order a set of manifests: namespaces and CRDs before what
//! lives in them, and the reverse on deletion.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use serde_json::json;
//! use threeport_k8s::{Cluster, MemoryCluster, ResourceRef, apply_all};
//!
//! let cluster = MemoryCluster::new();
//! let manifests = [
//!     json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web", "namespace": "shop"}}),
//!     json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
//! ];
//! apply_all(&cluster, &manifests, "threeport").await?;
//! let config = ResourceRef::of(&manifests[0])?;
//! assert!(cluster.get(&config).await?.is_some());
//! # Ok::<(), threeport_core::Error>(()) }).unwrap();
//! ```

pub mod conformance;
mod fake_server;
pub mod health;
mod kube_cluster;
mod label_selector;
mod memory;
mod reflector;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use threeport_core::{Error, Result};

pub use fake_server::FakeApiServer;
pub use kube_cluster::{ClusterConnection, KubeCluster};
pub use memory::{MemoryCluster, PodState};
pub use reflector::{Change, Reflector, ReflectorConfig};

/// Names one live resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceRef {
    /// `v1`, `apps/v1`, `example.com/v1alpha1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// Namespace of a namespaced resource (`None`: cluster-scoped, or the default namespace).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ResourceRef {
    /// The reference a manifest describes. Errors name the missing field.
    pub fn of(manifest: &Value) -> Result<Self> {
        let field = |path: &str, value: &Value| {
            value
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| Error::invalid(path, "is required"))
        };
        Ok(ResourceRef {
            api_version: field("apiVersion", &manifest["apiVersion"])?,
            kind: field("kind", &manifest["kind"])?,
            namespace: manifest["metadata"]["namespace"]
                .as_str()
                .map(str::to_owned),
            name: field("metadata.name", &manifest["metadata"]["name"])?,
        })
    }
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(
                f,
                "{} {}/{} ({})",
                self.kind, ns, self.name, self.api_version
            ),
            None => write!(f, "{} {} ({})", self.kind, self.name, self.api_version),
        }
    }
}

/// What changed, as a watch reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "object")]
pub enum WatchEvent {
    /// Created (or present when the watch started).
    #[serde(rename = "ADDED")]
    Added(Value),
    /// Changed.
    #[serde(rename = "MODIFIED")]
    Modified(Value),
    /// Gone.
    #[serde(rename = "DELETED")]
    Deleted(Value),
    /// Nothing changed for this selection up to this resource version: resume from here.
    #[serde(rename = "BOOKMARK")]
    Bookmark(String),
    /// The resource version the watch started from is too old (HTTP 410 Gone): list again.
    #[serde(rename = "EXPIRED")]
    Expired,
}

impl WatchEvent {
    /// The object an added, modified or deleted event carries.
    pub fn object(&self) -> Option<&Value> {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => Some(o),
            WatchEvent::Bookmark(_) | WatchEvent::Expired => None,
        }
    }
}

/// Which objects a list or a watch covers: one kind, in one namespace or everywhere,
/// optionally narrowed by a label selector (`key`, `!key`, `key=value`, `key!=value`,
/// comma-separated, all must hold).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// `None`: every namespace.
    pub namespace: Option<String>,
    /// Label selector, as Kubernetes writes it.
    pub labels: Option<String>,
}

impl Selector {
    /// Every object of a kind.
    pub fn kind(api_version: &str, kind: &str) -> Self {
        Selector {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: None,
            labels: None,
        }
    }

    /// Only in `namespace`.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// Only objects whose labels match `selector`.
    pub fn labels(mut self, selector: &str) -> Self {
        self.labels = Some(selector.to_owned());
        self
    }
}

/// The objects a [`Selector`] covers, and the resource version to watch from after them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectList {
    /// The objects (with `apiVersion` and `kind`).
    pub items: Vec<Value>,
    /// The list's resource version.
    pub resource_version: String,
}

/// One Kubernetes cluster.
///
/// Errors: `Invalid` for a manifest without `apiVersion`/`kind`/`metadata.name` or a kind
/// the cluster does not serve; `NotFound` (kind `Namespace`) when a namespaced resource's
/// namespace does not exist; `Unavailable` when the API server cannot be reached.
#[async_trait]
pub trait Cluster: Send + Sync + std::fmt::Debug + 'static {
    /// Server-side applies one manifest as `field_manager` (forcing conflicts: threeport owns
    /// what it applies); returns the live object.
    async fn apply(&self, manifest: &Value, field_manager: &str) -> Result<Value>;

    /// The live object, if it exists.
    async fn get(&self, resource: &ResourceRef) -> Result<Option<Value>>;

    /// Objects of a kind, in one namespace or (`None`) everywhere.
    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>>;

    /// Deletes an object; `false` if it was not there.
    async fn delete(&self, resource: &ResourceRef) -> Result<bool>;

    /// The objects `selector` covers, with the resource version of the list.
    async fn list_selected(&self, selector: &Selector) -> Result<ObjectList>;

    /// Changes to the objects `selector` covers after `resource_version` (`""`: the current
    /// objects first, as added), with bookmarks now and then. A version the server no longer
    /// remembers gives [`WatchEvent::Expired`]; the stream ends when the server closes it.
    async fn watch(
        &self,
        selector: &Selector,
        resource_version: &str,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>>;
}

/// Where a kind goes in an apply: namespaces and CRDs first, then the rest in order.
fn apply_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        _ => 2,
    }
}

/// Applies `manifests` in dependency order (namespaces, then CRDs, then the rest in the given
/// order); returns the live objects in that order.
pub async fn apply_all(
    cluster: &dyn Cluster,
    manifests: &[Value],
    field_manager: &str,
) -> Result<Vec<Value>> {
    let mut ordered: Vec<&Value> = manifests.iter().collect();
    ordered.sort_by_key(|m| apply_rank(m["kind"].as_str().unwrap_or_default()));
    let mut live = Vec::with_capacity(ordered.len());
    for manifest in ordered {
        live.push(cluster.apply(manifest, field_manager).await?);
    }
    Ok(live)
}

/// Deletes `resources` in the reverse of [`apply_all`]'s order: what lives in namespaces and
/// custom resources first, namespaces last. Returns how many existed.
pub async fn delete_all(cluster: &dyn Cluster, resources: &[ResourceRef]) -> Result<usize> {
    let mut ordered: Vec<&ResourceRef> = resources.iter().rev().collect();
    ordered.sort_by_key(|r| std::cmp::Reverse(apply_rank(&r.kind)));
    let mut existed = 0;
    for resource in ordered {
        if cluster.delete(resource).await? {
            existed += 1;
        }
    }
    Ok(existed)
}
