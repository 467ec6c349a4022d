//! Workload health from the clusters: what runs for each workload instance, its health
//! (Argo CD's model, [`threeport_k8s::health`]) and the Kubernetes events about it, kept in
//! the instance's status.
//!
//! - [`RuntimeWatcher`]: for one runtime, one watch per resource type, selected by
//!   threeport's instance label (never one per object), plus one of events; resumed from the
//!   last resource version, re-listed on 410 Gone, reconnected with backoff (each a
//!   [`Reflector`](threeport_k8s::Reflector)). It folds what it sees into one
//!   [`HealthReport`](threeport_api::model::HealthReport) per instance and hands the changed ones to a [`HealthSink`] about ten
//!   times a second.
//! - [`HealthSink`]: where reports go. [`StoreSink`] writes them into the store
//!   ([`record_health`]); the in-cluster agent sends them to the API, which does the same.
//! - [`HealthWatchers`]: the control plane's side: a watcher per runtime it can reach (and
//!   that has no agent), each held by one replica through a lease, stopped when the runtime
//!   goes.
//!
//! Reports are level-triggered: each carries the whole current picture of an instance, and
//! events are kept once per Kubernetes UID, so a restarted watcher (or a second one) rewrites
//! the same status and duplicates nothing.

mod metrics;
mod record;
#[cfg(feature = "kubernetes")]
mod supervisor;
#[cfg(feature = "kubernetes")]
mod watcher;

pub use metrics::HealthMetrics;
pub use record::{HealthSink, Reported, StoreSink, record_health};
#[cfg(feature = "kubernetes")]
pub use supervisor::{HealthConfig, HealthWatchers};
#[cfg(feature = "kubernetes")]
pub use watcher::{CustomKinds, RuntimeWatcher, WATCHED_KINDS, is_custom_kind};
