//! [`Reflector`]: keeps a consumer up to date with the objects one [`Selector`] covers, over
//! one watch at a time: list, then watch from the list's resource version; resume from the
//! last version seen (events and bookmarks) when the connection ends; list again when that
//! version has expired (410 Gone); back off while the API server cannot be reached, saying so
//! once ([`Change::Unreachable`]) and again when it answers ([`Change::Reachable`]). A kind
//! the cluster does not serve counts as having no objects (looked for again with backoff: a
//! CRD may arrive).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use threeport_core::Error;
use tokio::sync::mpsc;

use crate::{Cluster, Selector, WatchEvent};

/// What a [`Reflector`] tells its consumer.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Every object the selector covers, after a (re)list: anything the consumer knew and
    /// this lacks is gone.
    Synced(Vec<Value>),
    /// An object was created or changed.
    Applied(Value),
    /// An object was deleted.
    Deleted(Value),
    /// The API server cannot be reached (or refuses): what is known may be stale.
    Unreachable(String),
    /// It answers again (after [`Unreachable`](Change::Unreachable)).
    Reachable,
}

/// How a [`Reflector`] retries.
#[derive(Debug, Clone)]
pub struct ReflectorConfig {
    /// First wait after a failure.
    pub min_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for ReflectorConfig {
    fn default() -> Self {
        ReflectorConfig {
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A resumable list-and-watch of the objects one [`Selector`] covers.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use serde_json::json;
/// use threeport_k8s::{Change, Cluster, MemoryCluster, Reflector, Selector};
///
/// let cluster = MemoryCluster::new();
/// let (changes, mut received) = tokio::sync::mpsc::channel(16);
/// let selector = Selector::kind("v1", "ConfigMap").labels("app=web");
/// let task = tokio::spawn(Reflector::new(Arc::new(cluster.clone()), selector).run(changes));
/// assert_eq!(received.recv().await, Some(Change::Synced(vec![])));
/// let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
///                     "metadata": {"name": "web", "labels": {"app": "web"}}});
/// cluster.apply(&config, "test").await?;
/// let Some(Change::Applied(seen)) = received.recv().await else { panic!() };
/// assert_eq!(seen["metadata"]["name"], "web");
/// task.abort();
/// # Ok::<(), threeport_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Reflector {
    cluster: Arc<dyn Cluster>,
    selector: Selector,
    config: ReflectorConfig,
}

impl Reflector {
    /// A reflector of what `selector` covers in `cluster`.
    pub fn new(cluster: Arc<dyn Cluster>, selector: Selector) -> Self {
        Reflector {
            cluster,
            selector,
            config: ReflectorConfig::default(),
        }
    }

    /// With other retry timings.
    pub fn with_config(mut self, config: ReflectorConfig) -> Self {
        self.config = config;
        self
    }

    /// Sends changes to `changes` until it is closed (or the task is aborted). Never gives
    /// up on the cluster: failures are logged and retried with backoff.
    pub async fn run(self, changes: mpsc::Sender<Change>) {
        let what = format!("{} {}", self.selector.api_version, self.selector.kind);
        let mut version: Option<String> = None;
        let mut failures: u32 = 0;
        let mut unreachable = false;
        loop {
            if failures > 0 {
                let factor = 2u32.saturating_pow(failures.min(16) - 1);
                let delay = self
                    .config
                    .min_backoff
                    .saturating_mul(factor)
                    .min(self.config.max_backoff);
                tokio::time::sleep(delay).await;
            }
            if unreachable {
                // Back from an outage: a fresh list says how things are now, and that the
                // server answers again.
                version = None;
            }
            let from = match &version {
                Some(from) => from.clone(),
                None => match self.cluster.list_selected(&self.selector).await {
                    Ok(list) => {
                        if !tell(&changes, &mut unreachable, None).await
                            || changes.send(Change::Synced(list.items)).await.is_err()
                        {
                            return;
                        }
                        version = Some(list.resource_version.clone());
                        list.resource_version
                    }
                    Err(Error::Invalid { field, message }) if field == "kind" => {
                        // Not served (yet): nothing of it exists.
                        let err = message;
                        failures += 1;
                        tracing::debug!(kind = %what, error = %err, "kind not served; looking again later");
                        if changes.send(Change::Synced(Vec::new())).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(err) => {
                        failures += 1;
                        tracing::warn!(kind = %what, error = %err, "listing failed; retrying");
                        if !tell(&changes, &mut unreachable, Some(&err)).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let mut events = match self.cluster.watch(&self.selector, &from).await {
                Ok(events) => events,
                Err(err) => {
                    failures += 1;
                    tracing::warn!(kind = %what, error = %err, "watching failed; retrying");
                    if !tell(&changes, &mut unreachable, Some(&err)).await {
                        return;
                    }
                    continue;
                }
            };
            let mut delivered = false;
            let mut delivered_any = false;
            while let Some(event) = events.next().await {
                delivered = true;
                let change = match event {
                    Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)) => {
                        Change::Applied(object)
                    }
                    Ok(WatchEvent::Deleted(object)) => Change::Deleted(object),
                    Ok(WatchEvent::Bookmark(at)) => {
                        failures = 0;
                        delivered_any = true;
                        version = Some(at);
                        continue;
                    }
                    Ok(WatchEvent::Expired) => {
                        tracing::debug!(kind = %what, "resource version expired; listing again");
                        version = None;
                        break;
                    }
                    Err(err) => {
                        failures += 1;
                        tracing::warn!(kind = %what, error = %err, "watch failed; resuming");
                        // Refused at once (the server answers, but not this): unreachable.
                        if !delivered_any && !tell(&changes, &mut unreachable, Some(&err)).await {
                            return;
                        }
                        break;
                    }
                };
                failures = 0;
                delivered_any = true;
                if let Change::Applied(object) | Change::Deleted(object) = &change
                    && let Some(at) = object["metadata"]["resourceVersion"].as_str()
                {
                    version = Some(at.to_owned());
                }
                if changes.send(change).await.is_err() {
                    return;
                }
            }
            if !delivered {
                // A watch that ends at once, again and again, must not spin.
                failures += 1;
            }
            // The server closed the watch (they do, every few minutes): resume where it was.
            tracing::debug!(kind = %what, from = ?version, "watch ended; resuming");
        }
    }
}

/// Tells the consumer what changed about reaching the server (`now`: the failure, if
/// failing); false once the consumer is gone.
async fn tell(changes: &mpsc::Sender<Change>, unreachable: &mut bool, now: Option<&Error>) -> bool {
    let change = match (now, *unreachable) {
        (Some(err), false) => Change::Unreachable(err.to_string()),
        (None, true) => Change::Reachable,
        _ => return true,
    };
    *unreachable = now.is_some();
    changes.send(change).await.is_ok()
}
