//! [`MemoryCluster`]: a Kubernetes cluster's API semantics in memory — built-in kinds and
//! registered CRDs, namespaces that must exist, server-side apply by field manager,
//! resource versions with a bounded history that watches resume from (410 Gone past it),
//! bookmarks, status subresources, events, and pods a test can make ready, crash or wait.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Map, Value, json};
use threeport_core::{Error, Result};
use tokio::sync::broadcast;

mod pods;

use crate::label_selector::LabelSelector;
use crate::{Cluster, ObjectList, ResourceRef, Selector, WatchEvent};

/// A served kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KindInfo {
    pub(crate) api_version: String,
    pub(crate) kind: String,
    pub(crate) plural: String,
    pub(crate) namespaced: bool,
}

const BUILT_IN: &[(&str, &str, &str, bool)] = &[
    ("v1", "Namespace", "namespaces", false),
    ("v1", "Node", "nodes", false),
    ("v1", "ConfigMap", "configmaps", true),
    ("v1", "Secret", "secrets", true),
    ("v1", "Service", "services", true),
    ("v1", "ServiceAccount", "serviceaccounts", true),
    ("v1", "Pod", "pods", true),
    ("v1", "Event", "events", true),
    (
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    ("apps/v1", "Deployment", "deployments", true),
    ("apps/v1", "StatefulSet", "statefulsets", true),
    ("apps/v1", "DaemonSet", "daemonsets", true),
    ("apps/v1", "ReplicaSet", "replicasets", true),
    ("batch/v1", "Job", "jobs", true),
    ("batch/v1", "CronJob", "cronjobs", true),
    ("networking.k8s.io/v1", "Ingress", "ingresses", true),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    (
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
    (
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
];

/// Key of a stored object: api version, kind, namespace ("" when cluster-scoped), name.
type Key = (String, String, String, String);

#[derive(Debug)]
struct Stored {
    /// What each field manager applied last, in the order managers first applied.
    applied: Vec<(String, Value)>,
    /// What the status subresource holds (`null`: nothing written there).
    status: Value,
    live: Value,
}

/// One change, as watches see it: its resource version, the kind, the event.
type Change = (u64, KindInfo, WatchEvent);

#[derive(Debug)]
struct State {
    kinds: Vec<KindInfo>,
    objects: BTreeMap<Key, Stored>,
    resource_version: u64,
    uid: u64,
    service_account_token: Option<String>,
    /// The latest changes, oldest first, for watches resuming from a resource version.
    history: VecDeque<Change>,
    history_limit: usize,
    /// Changes up to this version are forgotten: a watch from before it is told 410 Gone.
    compacted_through: u64,
    bookmark_interval: Duration,
}

/// Changes a watch stream may fall behind by before it is ended with 410 Gone.
const WATCH_BUFFER: usize = 16_384;

/// What a test sets the pods of a Deployment, StatefulSet, DaemonSet or ReplicaSet to
/// ([`MemoryCluster::set_pods`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Running and ready.
    Ready,
    /// Running, its container restarting: waiting in `CrashLoopBackOff`, a `BackOff` warning.
    CrashLoop,
    /// Pending, its image not pulled: waiting in `ImagePullBackOff`, a `Failed` warning.
    ImagePullBackOff,
    /// Pending, not scheduled yet.
    Pending,
}

/// Type of the Secrets Kubernetes's token controller fills with a service account's token.
const SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";

/// An in-memory Kubernetes cluster. Cheap to clone; clones share the cluster.
#[derive(Debug, Clone)]
pub struct MemoryCluster {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Change>,
    /// Bumped to end every open watch (a dropped connection); `true`: with 410 Gone.
    closer: Arc<tokio::sync::watch::Sender<(u64, bool)>>,
    open_watches: Arc<AtomicUsize>,
}

impl Default for MemoryCluster {
    fn default() -> Self {
        Self::new()
    }
}

/// Merges `patch` into `target` as JSON merge patch does (objects by key, `null` removes).
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, Value::Object(_)) => {
            // A fresh object: nulls in the patch have nothing to remove.
            let mut fresh = Value::Object(Map::new());
            merge(&mut fresh, patch);
            *target = fresh;
        }
        (target, patch) => *target = patch.clone(),
    }
}

impl MemoryCluster {
    /// A cluster serving the common built-in kinds, with the `default` namespace.
    pub fn new() -> Self {
        let kinds = BUILT_IN
            .iter()
            .map(|(api_version, kind, plural, namespaced)| KindInfo {
                api_version: (*api_version).to_owned(),
                kind: (*kind).to_owned(),
                plural: (*plural).to_owned(),
                namespaced: *namespaced,
            })
            .collect();
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let cluster = MemoryCluster {
            state: Arc::new(Mutex::new(State {
                kinds,
                objects: BTreeMap::new(),
                resource_version: 0,
                uid: 0,
                service_account_token: None,
                history: VecDeque::new(),
                history_limit: 10_000,
                compacted_through: 0,
                bookmark_interval: Duration::from_secs(1),
            })),
            events,
            closer: Arc::new(tokio::sync::watch::channel((0, false)).0),
            open_watches: Arc::new(AtomicUsize::new(0)),
        };
        let default =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        cluster
            .apply_sync(&default, "kube-system")
            .expect("the default namespace");
        cluster
    }

    /// The token the cluster's token controller puts in `kubernetes.io/service-account-token`
    /// Secrets (by default `memory-token-<uid>`): set it to the token a [`FakeApiServer`]
    /// accepts to make such a Secret's token work against it.
    ///
    /// [`FakeApiServer`]: crate::FakeApiServer
    pub fn set_service_account_token(&self, token: &str) {
        self.state.lock().unwrap().service_account_token = Some(token.to_owned());
    }

    /// Every served kind.
    pub(crate) fn kinds(&self) -> Vec<KindInfo> {
        self.state.lock().unwrap().kinds.clone()
    }

    fn kind_of(state: &State, api_version: &str, kind: &str) -> Result<KindInfo> {
        state
            .kinds
            .iter()
            .find(|k| k.api_version == api_version && k.kind == kind)
            .cloned()
            .ok_or_else(|| {
                Error::invalid(
                    "kind",
                    format!("the cluster serves no kind {kind} in {api_version}"),
                )
            })
    }

    fn key(info: &KindInfo, namespace: Option<&str>, name: &str) -> Key {
        let namespace = if info.namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        (
            info.api_version.clone(),
            info.kind.clone(),
            namespace.to_owned(),
            name.to_owned(),
        )
    }

    /// Records a change in the history and tells the watches, under the state lock, so the
    /// order of resource versions is the order watches see.
    fn record(&self, state: &mut State, info: &KindInfo, event: WatchEvent) {
        let version = state.resource_version;
        state
            .history
            .push_back((version, info.clone(), event.clone()));
        while state.history.len() > state.history_limit {
            if let Some((dropped, _, _)) = state.history.pop_front() {
                state.compacted_through = dropped;
            }
        }
        // Nobody watching is fine.
        let _ = self.events.send((version, info.clone(), event));
    }

    /// Forgets every change so far: a watch resuming from an earlier resource version is
    /// told 410 Gone and must list again (what etcd compaction does).
    pub fn compact(&self) {
        let mut state = self.state.lock().unwrap();
        state.history.clear();
        state.compacted_through = state.resource_version;
    }

    /// How many changes watches can resume across (default 10,000); older ones are forgotten.
    pub fn set_history_limit(&self, limit: usize) {
        self.state.lock().unwrap().history_limit = limit.max(1);
    }

    /// How often an idle watch gets a bookmark (default 1 s).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.state.lock().unwrap().bookmark_interval = interval;
    }

    /// Ends every open watch, as a dropped connection or an API server restart would.
    pub fn close_watches(&self) {
        self.closer.send_modify(|(generation, expire)| {
            *generation += 1;
            *expire = false;
        });
    }

    /// Forgets every change so far ([`compact`](Self::compact)) and ends every open watch
    /// with 410 Gone, as an API server whose watch cache lost track does: watchers must list
    /// again.
    pub fn expire_watches(&self) {
        self.compact();
        self.closer.send_modify(|(generation, expire)| {
            *generation += 1;
            *expire = true;
        });
    }

    /// Watches open now.
    pub fn open_watches(&self) -> usize {
        self.open_watches.load(Ordering::SeqCst)
    }

    /// Server-side apply, synchronously (the in-memory work never waits).
    pub(crate) fn apply_sync(&self, manifest: &Value, field_manager: &str) -> Result<Value> {
        let resource = ResourceRef::of(manifest)?;
        if field_manager.is_empty() {
            return Err(Error::invalid("fieldManager", "is required for apply"));
        }
        let mut state = self.state.lock().unwrap();
        let info = Self::kind_of(&state, &resource.api_version, &resource.kind)?;
        let key = Self::key(&info, resource.namespace.as_deref(), &resource.name);
        if info.namespaced && !state.objects.contains_key(&namespace_key(&key.2)) {
            return Err(Error::not_found("Namespace", &key.2));
        }
        state.resource_version += 1;
        let resource_version = state.resource_version.to_string();
        let mut applied = manifest.clone();
        if let Some(metadata) = applied["metadata"].as_object_mut() {
            for server_field in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "managedFields",
                "generation",
            ] {
                metadata.remove(server_field);
            }
        }
        let (event, live) = match state.objects.get_mut(&key) {
            Some(stored) => {
                match stored.applied.iter_mut().find(|(m, _)| m == field_manager) {
                    Some((_, previous)) => *previous = applied,
                    None => stored.applied.push((field_manager.to_owned(), applied)),
                }
                let old_spec = stored.live["spec"].clone();
                let metadata = stored.live["metadata"].clone();
                let mut live = Value::Object(Map::new());
                for (_, config) in &stored.applied {
                    merge(&mut live, config);
                }
                let mut generation = metadata["generation"].as_u64().unwrap_or(1);
                if live["spec"] != old_spec {
                    generation += 1;
                }
                live["metadata"]["uid"] = metadata["uid"].clone();
                live["metadata"]["creationTimestamp"] = metadata["creationTimestamp"].clone();
                live["metadata"]["generation"] = json!(generation);
                finish_metadata(&mut live, &stored.applied, &key, &resource_version);
                if !stored.status.is_null() {
                    live["status"] = stored.status.clone();
                }
                stored.live = live.clone();
                (WatchEvent::Modified(live.clone()), live)
            }
            None => {
                state.uid += 1;
                let applied = vec![(field_manager.to_owned(), applied)];
                let mut live = applied[0].1.clone();
                live["metadata"]["uid"] =
                    json!(format!("00000000-0000-0000-0000-{:012}", state.uid));
                live["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                live["metadata"]["generation"] = json!(1);
                finish_metadata(&mut live, &applied, &key, &resource_version);
                state.objects.insert(
                    key.clone(),
                    Stored {
                        applied,
                        status: Value::Null,
                        live: live.clone(),
                    },
                );
                (WatchEvent::Added(live.clone()), live)
            }
        };
        let (event, live) = if info.kind == "Secret"
            && live["type"] == SERVICE_ACCOUNT_TOKEN
            && live["data"]["token"].is_null()
        {
            // What the token controller does: fill in the service account's token.
            use base64::Engine;
            let token = state
                .service_account_token
                .clone()
                .unwrap_or_else(|| format!("memory-token-{}", state.uid));
            let fill = json!({"data": {
                "token": base64::engine::general_purpose::STANDARD.encode(token)}});
            let stored = state.objects.get_mut(&key).expect("just stored");
            stored
                .applied
                .push(("kube-controller-manager".to_owned(), fill.clone()));
            merge(&mut stored.live, &fill);
            let live = stored.live.clone();
            let event = match event {
                WatchEvent::Added(_) => WatchEvent::Added(live.clone()),
                _ => WatchEvent::Modified(live.clone()),
            };
            (event, live)
        } else {
            (event, live)
        };
        if info.kind == "CustomResourceDefinition" {
            register_crd(&mut state, &live)?;
        }
        self.record(&mut state, &info, event);
        Ok(live)
    }

    /// Creates an object, refusing one that exists (HTTP POST).
    pub(crate) fn create_sync(&self, manifest: &Value, field_manager: &str) -> Result<Value> {
        let resource = ResourceRef::of(manifest)?;
        if self.get_sync(&resource)?.is_some() {
            return Err(Error::AlreadyExists {
                kind: resource.kind,
                name: resource.name,
            });
        }
        self.apply_sync(manifest, field_manager)
    }

    /// JSON merge patch of an existing object: the fields it sets belong to the
    /// `merge-patch` manager; the fields it nulls leave every manager's configuration.
    pub(crate) fn merge_patch_sync(&self, resource: &ResourceRef, patch: &Value) -> Result<Value> {
        const MANAGER: &str = "merge-patch";
        let own = {
            let mut state = self.state.lock().unwrap();
            let info = Self::kind_of(&state, &resource.api_version, &resource.kind)?;
            let key = Self::key(&info, resource.namespace.as_deref(), &resource.name);
            let Some(stored) = state.objects.get_mut(&key) else {
                return Err(Error::not_found(&resource.kind, &resource.name));
            };
            let removals = only_nulls(patch);
            for (_, config) in &mut stored.applied {
                remove_paths(config, &removals);
            }
            let mut own = stored
                .applied
                .iter()
                .find(|(m, _)| m == MANAGER)
                .map(|(_, c)| c.clone())
                .unwrap_or_else(|| json!({"metadata": {}}));
            merge(&mut own, patch);
            own["apiVersion"] = json!(resource.api_version);
            own["kind"] = json!(resource.kind);
            own["metadata"]["name"] = json!(resource.name);
            if !key.2.is_empty() {
                own["metadata"]["namespace"] = json!(key.2);
            }
            own
        };
        self.apply_sync(&own, MANAGER)
    }

    pub(crate) fn get_sync(&self, resource: &ResourceRef) -> Result<Option<Value>> {
        let state = self.state.lock().unwrap();
        let info = Self::kind_of(&state, &resource.api_version, &resource.kind)?;
        let key = Self::key(&info, resource.namespace.as_deref(), &resource.name);
        Ok(state.objects.get(&key).map(|s| s.live.clone()))
    }

    pub(crate) fn list_sync(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>> {
        let selector = Selector {
            namespace: namespace.map(str::to_owned),
            ..Selector::kind(api_version, kind)
        };
        Ok(self.list_selected_sync(&selector)?.items)
    }

    /// The objects `selector` covers, with the current resource version.
    pub(crate) fn list_selected_sync(&self, selector: &Selector) -> Result<ObjectList> {
        let labels = LabelSelector::parse(selector.labels.as_deref().unwrap_or_default())?;
        let state = self.state.lock().unwrap();
        let info = Self::kind_of(&state, &selector.api_version, &selector.kind)?;
        let items = state
            .objects
            .iter()
            .filter(|((v, k, ns, _), stored)| {
                *v == info.api_version
                    && *k == info.kind
                    && selector
                        .namespace
                        .as_deref()
                        .is_none_or(|n| !info.namespaced || n == ns)
                    && labels.matches(&stored.live)
            })
            .map(|(_, s)| s.live.clone())
            .collect();
        Ok(ObjectList {
            items,
            resource_version: state.resource_version.to_string(),
        })
    }

    /// Merges `patch` into an object's status, as its controller writes the status
    /// subresource (a PVC bound, a load balancer's address): later applies keep it.
    pub fn set_status(&self, resource: &ResourceRef, patch: &Value) -> Result<Value> {
        self.merge_status_sync(resource, patch)
    }

    /// JSON merge patch of an object's status subresource: later applies keep it.
    pub(crate) fn merge_status_sync(&self, resource: &ResourceRef, patch: &Value) -> Result<Value> {
        let mut state = self.state.lock().unwrap();
        let info = Self::kind_of(&state, &resource.api_version, &resource.kind)?;
        let key = Self::key(&info, resource.namespace.as_deref(), &resource.name);
        if !state.objects.contains_key(&key) {
            return Err(Error::not_found(&resource.kind, &resource.name));
        }
        state.resource_version += 1;
        let version = state.resource_version;
        let stored = state.objects.get_mut(&key).expect("checked");
        if stored.status.is_null() {
            stored.status = stored.live["status"].clone();
        }
        merge(&mut stored.status, patch);
        stored.live["status"] = stored.status.clone();
        stored.live["metadata"]["resourceVersion"] = json!(version.to_string());
        let live = stored.live.clone();
        self.record(&mut state, &info, WatchEvent::Modified(live.clone()));
        Ok(live)
    }

    pub(crate) fn delete_sync(&self, resource: &ResourceRef) -> Result<bool> {
        let mut state = self.state.lock().unwrap();
        let info = Self::kind_of(&state, &resource.api_version, &resource.kind)?;
        let key = Self::key(&info, resource.namespace.as_deref(), &resource.name);
        let Some(stored) = state.objects.remove(&key) else {
            return Ok(false);
        };
        let mut gone = vec![(info.clone(), stored.live.clone())];
        // What lived in a namespace, or was of a CRD's kinds, goes with it.
        if info.kind == "Namespace" {
            let inside: Vec<Key> = state
                .objects
                .keys()
                .filter(|k| k.2 == key.3)
                .cloned()
                .collect();
            for k in inside {
                let stored = state.objects.remove(&k).expect("listed");
                let kind = Self::kind_of(&state, &k.0, &k.1)?;
                gone.push((kind, stored.live));
            }
        }
        if info.kind == "CustomResourceDefinition" {
            let removed: Vec<KindInfo> = crd_kinds(&stored.live);
            state.kinds.retain(|k| !removed.contains(k));
            let instances: Vec<Key> = state
                .objects
                .keys()
                .filter(|k| {
                    removed
                        .iter()
                        .any(|r| r.api_version == k.0 && r.kind == k.1)
                })
                .cloned()
                .collect();
            for k in instances {
                let stored = state.objects.remove(&k).expect("listed");
                let kind = removed
                    .iter()
                    .find(|r| r.kind == k.1)
                    .cloned()
                    .expect("matched");
                gone.push((kind, stored.live));
            }
        }
        for (kind, mut live) in gone {
            // A deletion is a change of its own, with its own resource version.
            state.resource_version += 1;
            live["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
            self.record(&mut state, &kind, WatchEvent::Deleted(live));
        }
        Ok(true)
    }

    /// Changes to what `selector` covers after `resource_version` (`""` or `"0"`: the
    /// current objects first, as added), with a bookmark when idle for the bookmark interval;
    /// [`WatchEvent::Expired`] for a version before the history, or for a watch that fell
    /// [`WATCH_BUFFER`] changes behind. Ends when [`close_watches`](Self::close_watches) is
    /// called.
    pub(crate) fn watch_sync(
        &self,
        selector: &Selector,
        resource_version: &str,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>> {
        let labels = LabelSelector::parse(selector.labels.as_deref().unwrap_or_default())?;
        let from = match resource_version {
            "" | "0" => None,
            v => Some(v.parse::<u64>().map_err(|_| {
                Error::invalid(
                    "resourceVersion",
                    format!("{v:?} is not a resource version"),
                )
            })?),
        };
        // Subscribe under the lock, so nothing falls between what is replayed and what comes.
        let state = self.state.lock().unwrap();
        let info = Self::kind_of(&state, &selector.api_version, &selector.kind)?;
        let receiver = self.events.subscribe();
        let this_kind = info.clone();
        let covers = {
            let selector = selector.clone();
            move |kind: &KindInfo, object: &Value| {
                *kind == info
                    && (!info.namespaced
                        || selector
                            .namespace
                            .as_deref()
                            .is_none_or(|n| object["metadata"]["namespace"].as_str() == Some(n)))
                    && labels.matches(object)
            }
        };
        let initial: Vec<Result<WatchEvent>> = match from {
            None => state
                .objects
                .iter()
                .filter(|((v, k, _, _), s)| {
                    *v == this_kind.api_version
                        && *k == this_kind.kind
                        && covers(&this_kind, &s.live)
                })
                .map(|(_, s)| Ok(WatchEvent::Added(s.live.clone())))
                .collect(),
            Some(from) if from < state.compacted_through => {
                return Ok(futures::stream::iter([Ok(WatchEvent::Expired)]).boxed());
            }
            Some(from) => state
                .history
                .iter()
                .filter(|(version, kind, event)| {
                    *version > from && event.object().is_some_and(|o| covers(kind, o))
                })
                .map(|(_, _, event)| Ok(event.clone()))
                .collect(),
        };
        let start = state.resource_version;
        let interval = state.bookmark_interval;
        drop(state);
        let watch = LiveWatch {
            receiver,
            closer: self.closer.subscribe(),
            last_seen: start,
            interval,
            covers: Box::new(covers),
            _open: OpenWatch::new(&self.open_watches),
        };
        Ok(futures::stream::iter(initial).chain(watch.stream()).boxed())
    }
}

/// Counts a watch as open while it lives.
struct OpenWatch(Arc<AtomicUsize>);

impl OpenWatch {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        OpenWatch(count.clone())
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

type Covers = Box<dyn Fn(&KindInfo, &Value) -> bool + Send + Sync>;

/// The live part of a watch: changes after it started, bookmarks when idle.
struct LiveWatch {
    receiver: broadcast::Receiver<Change>,
    closer: tokio::sync::watch::Receiver<(u64, bool)>,
    /// Every change up to this version has been seen (sent or filtered out).
    last_seen: u64,
    interval: Duration,
    covers: Covers,
    _open: OpenWatch,
}

impl LiveWatch {
    fn stream(self) -> BoxStream<'static, Result<WatchEvent>> {
        futures::stream::unfold(Some(self), |watch| async move {
            let mut watch = watch?;
            loop {
                tokio::select! {
                    changed = watch.closer.changed() => {
                        let expired = changed.is_ok() && watch.closer.borrow().1;
                        return expired.then_some((Ok(WatchEvent::Expired), None));
                    }
                    received = watch.receiver.recv() => match received {
                        Ok((version, kind, event)) => {
                            if version <= watch.last_seen {
                                continue;
                            }
                            watch.last_seen = version;
                            if event.object().is_some_and(|o| (watch.covers)(&kind, o)) {
                                return Some((Ok(event), Some(watch)));
                            }
                        }
                        // Fell behind: what a real API server says to a watch it cannot serve.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            return Some((Ok(WatchEvent::Expired), None));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    () = tokio::time::sleep(watch.interval) => {
                        let bookmark = WatchEvent::Bookmark(watch.last_seen.to_string());
                        return Some((Ok(bookmark), Some(watch)));
                    }
                }
            }
        })
        .boxed()
    }
}

/// Removes from `target` the `null` leaves of `removals`, descending only where `target` has
/// objects (a configuration without the field stays as it was).
fn remove_paths(target: &mut Value, removals: &Value) {
    let (Value::Object(target), Value::Object(removals)) = (target, removals) else {
        return;
    };
    for (key, removal) in removals {
        if removal.is_null() {
            target.remove(key);
        } else if let Some(inner) = target.get_mut(key) {
            remove_paths(inner, removal);
        }
    }
}

/// The removals of a merge patch: its `null` leaves, nothing else.
fn only_nulls(patch: &Value) -> Value {
    match patch {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter_map(|(k, v)| match v {
                    Value::Null => Some((k.clone(), Value::Null)),
                    Value::Object(_) => {
                        let inner = only_nulls(v);
                        inner
                            .as_object()
                            .is_some_and(|m| !m.is_empty())
                            .then(|| (k.clone(), inner))
                    }
                    _ => None,
                })
                .collect(),
        ),
        _ => Value::Object(Map::new()),
    }
}

fn namespace_key(namespace: &str) -> Key {
    (
        "v1".into(),
        "Namespace".into(),
        String::new(),
        namespace.to_owned(),
    )
}

fn finish_metadata(
    live: &mut Value,
    applied: &[(String, Value)],
    key: &Key,
    resource_version: &str,
) {
    let metadata = &mut live["metadata"];
    metadata["name"] = json!(key.3);
    if key.2.is_empty() {
        if let Some(m) = metadata.as_object_mut() {
            m.remove("namespace");
        }
    } else {
        metadata["namespace"] = json!(key.2);
    }
    metadata["resourceVersion"] = json!(resource_version);
    metadata["managedFields"] = Value::Array(
        applied
            .iter()
            .map(|(manager, _)| json!({"manager": manager, "operation": "Apply"}))
            .collect(),
    );
}

fn crd_kinds(crd: &Value) -> Vec<KindInfo> {
    let spec = &crd["spec"];
    let (Some(group), Some(kind), Some(plural)) = (
        spec["group"].as_str(),
        spec["names"]["kind"].as_str(),
        spec["names"]["plural"].as_str(),
    ) else {
        return Vec::new();
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| v["name"].as_str())
        .map(|version| KindInfo {
            api_version: format!("{group}/{version}"),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
        })
        .collect()
}

fn register_crd(state: &mut State, crd: &Value) -> Result<()> {
    let kinds = crd_kinds(crd);
    if kinds.is_empty() {
        return Err(Error::invalid(
            "spec",
            "a CustomResourceDefinition needs spec.group, spec.names.kind, spec.names.plural and served versions",
        ));
    }
    for kind in kinds {
        state
            .kinds
            .retain(|k| !(k.api_version == kind.api_version && k.kind == kind.kind));
        state.kinds.push(kind);
    }
    Ok(())
}

#[async_trait]
impl Cluster for MemoryCluster {
    async fn apply(&self, manifest: &Value, field_manager: &str) -> Result<Value> {
        self.apply_sync(manifest, field_manager)
    }

    async fn get(&self, resource: &ResourceRef) -> Result<Option<Value>> {
        self.get_sync(resource)
    }

    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>> {
        self.list_sync(api_version, kind, namespace)
    }

    async fn delete(&self, resource: &ResourceRef) -> Result<bool> {
        self.delete_sync(resource)
    }

    async fn list_selected(&self, selector: &Selector) -> Result<ObjectList> {
        self.list_selected_sync(selector)
    }

    async fn watch(
        &self,
        selector: &Selector,
        resource_version: &str,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>> {
        self.watch_sync(selector, resource_version)
    }
}
