//! [`RuntimeWatcher`]: what runs on one runtime for each workload instance, folded into
//! health reports.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use threeport_api::model::{HealthReport, ResourceHealth, WORKLOAD_INSTANCE_LABEL};
use threeport_core::health::{Health, HealthStatus, aggregate};
use threeport_core::object::{EventType, MAX_EVENTS};
use threeport_core::{Event, ObjectId, Timestamp};
use threeport_k8s::health::object_health;
use threeport_k8s::{Change, Cluster, Reflector, ReflectorConfig, Selector};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{HealthMetrics, HealthSink, Reported};

/// The kinds a runtime watcher watches (one watch each, by threeport's instance label):
/// those with a health of their own, and the pods and replica sets they run.
pub const WATCHED_KINDS: &[(&str, &str)] = &[
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "ReplicaSet"),
    ("v1", "Pod"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "Service"),
    ("networking.k8s.io/v1", "Ingress"),
];

/// Index of the events watch among the reflectors (after the kinds); custom kinds follow it.
const EVENTS: usize = WATCHED_KINDS.len();

/// API groups Kubernetes itself serves: kinds of other groups are custom resources, whose
/// health is their `Ready` condition.
const BUILT_IN_GROUPS: &[&str] = &[
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "rbac.authorization.k8s.io",
    "networking.k8s.io",
    "storage.k8s.io",
    "apiextensions.k8s.io",
    "admissionregistration.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "node.k8s.io",
    "certificates.k8s.io",
    "apiregistration.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "resource.k8s.io",
];

/// Whether objects of `api_version` are custom resources (a group Kubernetes does not serve
/// itself: `example.com/v1`, `gateway.networking.k8s.io/v1`), which a watcher watches when
/// told to ([`RuntimeWatcher::with_custom_kinds`]).
pub fn is_custom_kind(api_version: &str) -> bool {
    match api_version.split_once('/') {
        Some((group, _)) => !BUILT_IN_GROUPS.contains(&group),
        None => false,
    }
}

/// Custom kinds to watch: `(api_version, kind)`.
pub type CustomKinds = std::collections::BTreeSet<(String, String)>;

/// Kubernetes events kept per object (the newest).
const EVENTS_PER_OBJECT: usize = MAX_EVENTS;

/// Watches one runtime's cluster and reports each workload instance's health to a sink.
#[derive(Debug, Clone)]
pub struct RuntimeWatcher {
    cluster: Arc<dyn Cluster>,
    sink: Arc<dyn HealthSink>,
    flush_every: Duration,
    reflector: ReflectorConfig,
    metrics: HealthMetrics,
    custom: Option<tokio::sync::watch::Receiver<CustomKinds>>,
}

/// What health needs of one object a watch reported (never the object itself: at thousands
/// of instances the JSON would dominate the process's memory).
#[derive(Debug)]
struct Tracked {
    instance: ObjectId,
    /// Index into the watcher's kinds ([`Seen::kinds`]).
    kind: usize,
    namespace: Option<String>,
    name: String,
    health: Health,
    /// Made by a controller for another object (pods, replica sets).
    child: bool,
}

impl Tracked {
    /// `Deployment shop/web`.
    fn describe(&self, kinds: &[(String, String)]) -> String {
        let kind = &kinds[self.kind].1;
        match &self.namespace {
            Some(namespace) => format!("{kind} {namespace}/{}", self.name),
            None => format!("{kind} {}", self.name),
        }
    }
}

/// Everything the watches have reported, by object UID.
#[derive(Debug)]
struct Seen {
    /// What each watch watches: [`WATCHED_KINDS`], the events (at [`EVENTS`]), then the
    /// custom kinds added since.
    kinds: Vec<(String, String)>,
    objects: HashMap<String, Tracked>,
    by_instance: HashMap<ObjectId, HashSet<String>>,
    /// Kubernetes events (as threeport events) by the UID of the object they are about, then
    /// by their own UID.
    events: HashMap<String, BTreeMap<String, Event>>,
    synced: Vec<bool>,
    /// Why a watch cannot reach the cluster now, per watch.
    unreachable: Vec<Option<String>>,
    dirty: HashSet<ObjectId>,
    /// The last report each instance's status took.
    sent: HashMap<ObjectId, HealthReport>,
    /// Instances whose report was refused for now (being reconciled): not before then.
    later: HashMap<ObjectId, tokio::time::Instant>,
}

/// How long a report waits after its instance was busy: reconciles take about this long, and
/// asking sooner only adds reads while thousands of instances are being created.
const BUSY_BACKOFF: Duration = Duration::from_millis(500);

fn uid(object: &Value) -> Option<String> {
    object["metadata"]["uid"].as_str().map(str::to_owned)
}

fn instance_of(object: &Value) -> Option<ObjectId> {
    object["metadata"]["labels"][WORKLOAD_INSTANCE_LABEL]
        .as_str()?
        .parse()
        .ok()
}

/// Whether a controller made the object for another (pods of a deployment, its replica sets).
fn is_child(object: &Value) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|owners| owners.iter().any(|o| o["controller"] == true))
}

fn timestamp(value: &Value) -> Option<Timestamp> {
    value
        .as_str()
        .filter(|s| !s.is_empty())
        .and_then(|s| serde_json::from_value(Value::String(s.to_owned())).ok())
}

/// A Kubernetes event as a threeport event, identified by its UID.
fn threeport_event(event: &Value) -> Option<Event> {
    let uid = uid(event)?;
    let first_seen = timestamp(&event["firstTimestamp"])
        .or_else(|| timestamp(&event["eventTime"]))
        .or_else(|| timestamp(&event["metadata"]["creationTimestamp"]))
        .unwrap_or_else(threeport_core::object::now);
    let last_seen = timestamp(&event["lastTimestamp"])
        .or_else(|| timestamp(&event["series"]["lastObservedTime"]))
        .unwrap_or(first_seen);
    let involved = &event["involvedObject"];
    let about = format!(
        "{} {}/{}",
        involved["kind"].as_str().unwrap_or("object"),
        involved["namespace"].as_str().unwrap_or_default(),
        involved["name"].as_str().unwrap_or_default()
    );
    Some(Event {
        type_: if event["type"] == "Warning" {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: event["reason"].as_str().unwrap_or("Unknown").to_owned(),
        message: event["message"].as_str().unwrap_or_default().to_owned(),
        count: event["count"]
            .as_u64()
            .or_else(|| event["series"]["count"].as_u64())
            .unwrap_or(1)
            .try_into()
            .unwrap_or(u32::MAX),
        first_seen,
        last_seen,
        uid: Some(uid),
        about: Some(about),
    })
}

impl Default for Seen {
    fn default() -> Self {
        let kinds: Vec<(String, String)> = WATCHED_KINDS
            .iter()
            .chain(&[("v1", "Event")])
            .map(|(api_version, kind)| ((*api_version).to_owned(), (*kind).to_owned()))
            .collect();
        Seen {
            synced: vec![false; kinds.len()],
            unreachable: vec![None; kinds.len()],
            kinds,
            objects: HashMap::new(),
            by_instance: HashMap::new(),
            events: HashMap::new(),
            dirty: HashSet::new(),
            sent: HashMap::new(),
            later: HashMap::new(),
        }
    }
}

impl Seen {
    /// Adds a watch of a custom kind; returns its index.
    fn add_kind(&mut self, kind: (String, String)) -> usize {
        self.kinds.push(kind);
        self.synced.push(false);
        self.unreachable.push(None);
        self.kinds.len() - 1
    }

    fn forget(&mut self, uid: &str) {
        if let Some(tracked) = self.objects.remove(uid) {
            self.dirty.insert(tracked.instance);
            if let Some(uids) = self.by_instance.get_mut(&tracked.instance) {
                uids.remove(uid);
            }
        }
    }

    fn track(&mut self, kind: usize, object: &Value) {
        let Some(uid) = uid(object) else { return };
        self.forget(&uid);
        let Some(instance) = instance_of(object) else {
            return;
        };
        self.by_instance
            .entry(instance)
            .or_default()
            .insert(uid.clone());
        self.dirty.insert(instance);
        let tracked = Tracked {
            instance,
            kind,
            namespace: object["metadata"]["namespace"].as_str().map(str::to_owned),
            name: object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            health: object_health(object),
            child: is_child(object),
        };
        self.objects.insert(uid, tracked);
    }

    fn about(&mut self, event: &Value) {
        let (Some(about), Some(own)) = (event["involvedObject"]["uid"].as_str(), uid(event)) else {
            return;
        };
        let Some(kept) = threeport_event(event) else {
            return;
        };
        let events = self.events.entry(about.to_owned()).or_default();
        events.insert(own, kept);
        while events.len() > EVENTS_PER_OBJECT {
            // The oldest by last seen goes.
            let oldest = events
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(oldest) => events.remove(&oldest),
                None => break,
            };
        }
        if let Some(tracked) = self.objects.get(about) {
            self.dirty.insert(tracked.instance);
        }
    }

    fn apply(&mut self, source: usize, change: Change) {
        let reach = match &change {
            Change::Unreachable(why) => Some(Some(why.clone())),
            Change::Reachable => Some(None),
            _ => None,
        };
        if let Some(reach) = reach {
            // Every instance's picture is stale (or fresh again).
            self.unreachable[source] = reach;
            self.dirty.extend(self.by_instance.keys().copied());
            return;
        }
        if source == EVENTS {
            match change {
                Change::Synced(events) => {
                    self.events.clear();
                    for event in &events {
                        self.about(event);
                    }
                }
                Change::Applied(event) => self.about(&event),
                // Kubernetes expires events; the instance's status keeps them.
                Change::Deleted(_) | Change::Unreachable(_) | Change::Reachable => {}
            }
            self.synced[source] = true;
            return;
        }
        let (api_version, kind) = self.kinds[source].clone();
        let (api_version, kind) = (api_version.as_str(), kind.as_str());
        match change {
            Change::Synced(objects) => {
                let listed: HashSet<String> = objects.iter().filter_map(uid).collect();
                let gone: Vec<String> = self
                    .objects
                    .iter()
                    .filter(|(uid, t)| t.kind == source && !listed.contains(*uid))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in gone {
                    self.forget(&uid);
                }
                for mut object in objects {
                    object["apiVersion"] = api_version.into();
                    object["kind"] = kind.into();
                    self.track(source, &object);
                }
                self.synced[source] = true;
            }
            Change::Applied(mut object) => {
                // List items come without their type; the health rules need it.
                object["apiVersion"] = api_version.into();
                object["kind"] = kind.into();
                self.track(source, &object);
            }
            Change::Deleted(object) => {
                if let Some(uid) = uid(&object) {
                    self.forget(&uid);
                }
            }
            Change::Unreachable(_) | Change::Reachable => {}
        }
    }

    /// The current picture of one instance.
    fn report(&self, instance: ObjectId) -> HealthReport {
        let uids = self.by_instance.get(&instance);
        let objects: Vec<&Tracked> = uids
            .into_iter()
            .flatten()
            .filter_map(|uid| self.objects.get(uid))
            .collect();
        let mut resources = Vec::new();
        let mut parts: Vec<(String, Health)> = Vec::new();
        for object in objects {
            if object.child {
                // What controllers made counts only when it fails: its owner's status
                // covers the rest.
                if object.health.status == HealthStatus::Degraded {
                    parts.push((object.describe(&self.kinds), object.health.clone()));
                }
                continue;
            }
            parts.push((object.describe(&self.kinds), object.health.clone()));
            let (api_version, kind) = &self.kinds[object.kind];
            resources.push(ResourceHealth {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
                namespace: object.namespace.clone(),
                name: object.name.clone(),
                health: object.health.clone(),
            });
        }
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        resources.sort_by(|a, b| {
            (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name))
        });
        // A custom kind's watch failing (a kind the cluster stopped serving, one it does not
        // let us watch) says nothing of the cluster: only the built-in watches' do.
        let health = match self.unreachable[..=EVENTS].iter().flatten().next() {
            // What was seen last may no longer hold.
            Some(why) => Health::new(
                HealthStatus::Unknown,
                format!("cannot watch the cluster: {why}"),
            ),
            None => aggregate(parts.iter().map(|(name, health)| (name.clone(), health))),
        };
        let mut events: Vec<Event> = uids
            .into_iter()
            .flatten()
            .filter_map(|uid| self.events.get(uid))
            .flat_map(|events| events.values())
            .cloned()
            .collect();
        events.sort_by(|a, b| (a.last_seen, &a.uid).cmp(&(b.last_seen, &b.uid)));
        if events.len() > MAX_EVENTS {
            events.drain(..events.len() - MAX_EVENTS);
        }
        HealthReport {
            health,
            resources,
            events,
            watched_kinds: self
                .kinds
                .iter()
                .enumerate()
                .filter(|(index, _)| *index != EVENTS && self.synced[*index])
                .map(|(_, (api_version, kind))| format!("{api_version}/{kind}"))
                .collect(),
        }
    }
}

/// This watcher's share of the unreachable-watches gauge, given back when it stops.
struct UnreachableWatches {
    gauge: prometheus_client::metrics::gauge::Gauge,
    count: i64,
}

impl UnreachableWatches {
    fn add(&mut self, by: i64) {
        self.count += by;
        self.gauge.inc_by(by);
    }
}

impl Drop for UnreachableWatches {
    fn drop(&mut self) {
        self.gauge.dec_by(self.count);
    }
}

impl RuntimeWatcher {
    /// A watcher of `cluster` reporting to `sink`.
    pub fn new(cluster: Arc<dyn Cluster>, sink: Arc<dyn HealthSink>) -> Self {
        RuntimeWatcher {
            cluster,
            sink,
            flush_every: Duration::from_millis(100),
            reflector: ReflectorConfig::default(),
            metrics: HealthMetrics::default(),
            custom: None,
        }
    }

    /// Also watches the custom kinds `kinds` names, as they come (a watch is added for each
    /// new one; none is dropped before the watcher stops).
    pub fn with_custom_kinds(mut self, kinds: tokio::sync::watch::Receiver<CustomKinds>) -> Self {
        self.custom = Some(kinds);
        self
    }

    /// Counts what it does in `metrics`.
    pub fn with_metrics(mut self, metrics: HealthMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Reports at most this often (default 100 ms).
    pub fn flush_every(mut self, interval: Duration) -> Self {
        self.flush_every = interval;
        self
    }

    /// Watches with these retry timings.
    pub fn with_reflector_config(mut self, config: ReflectorConfig) -> Self {
        self.reflector = config;
        self
    }

    /// One watch: a reflector of `selector`, its changes tagged with `source`.
    fn watch(
        &self,
        reflectors: &mut JoinSet<()>,
        selector: Selector,
        source: usize,
    ) -> futures::stream::BoxStream<'static, (usize, Change)> {
        let (changes, received) = mpsc::channel(256);
        let reflector =
            Reflector::new(self.cluster.clone(), selector).with_config(self.reflector.clone());
        reflectors.spawn(reflector.run(changes));
        futures::stream::unfold(received, |mut received| async move {
            received.recv().await.map(|change| (change, received))
        })
        .map(move |change| (source, change))
        .boxed()
    }

    /// Watches of the custom kinds among `wanted` not watched yet.
    fn add_custom(
        &self,
        seen: &mut Seen,
        reflectors: &mut JoinSet<()>,
        wanted: CustomKinds,
    ) -> Vec<futures::stream::BoxStream<'static, (usize, Change)>> {
        let mut streams = Vec::new();
        for (api_version, kind) in wanted {
            let known = seen
                .kinds
                .iter()
                .any(|(a, k)| *a == api_version && *k == kind);
            if known {
                continue;
            }
            tracing::info!(%api_version, %kind, "watching a custom kind the instances use");
            let selector = Selector::kind(&api_version, &kind).labels(WORKLOAD_INSTANCE_LABEL);
            let source = seen.add_kind((api_version, kind));
            streams.push(self.watch(reflectors, selector, source));
        }
        streams
    }

    /// Watches and reports until the task is aborted (its watches end with it).
    pub async fn run(mut self) {
        let mut reflectors = JoinSet::new();
        let selector = |(api_version, kind): &(&str, &str)| {
            Selector::kind(api_version, kind).labels(WORKLOAD_INSTANCE_LABEL)
        };
        let selectors = WATCHED_KINDS
            .iter()
            .map(selector)
            .chain([Selector::kind("v1", "Event")]);
        let streams: Vec<_> = selectors
            .enumerate()
            .map(|(source, selector)| self.watch(&mut reflectors, selector, source))
            .collect();
        let mut changes = futures::stream::select_all(streams);
        let mut seen = Seen::default();
        let mut unreachable = UnreachableWatches {
            gauge: self.metrics.unreachable.clone(),
            count: 0,
        };
        let mut custom = self.custom.take();
        if let Some(kinds) = custom.as_mut() {
            let initial = kinds.borrow_and_update().clone();
            for stream in self.add_custom(&mut seen, &mut reflectors, initial) {
                changes.push(stream);
            }
        }
        let mut tick = tokio::time::interval(self.flush_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wanted = async {
                match custom.as_mut() {
                    Some(kinds) => match kinds.changed().await {
                        Ok(()) => Some(kinds.borrow_and_update().clone()),
                        Err(_) => None,
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                change = changes.next() => match change {
                    Some((source, change)) => {
                        self.count(&change, &mut unreachable);
                        seen.apply(source, change);
                    }
                    None => return,
                },
                wanted = wanted => match wanted {
                    Some(wanted) => {
                        for stream in self.add_custom(&mut seen, &mut reflectors, wanted) {
                            changes.push(stream);
                        }
                    }
                    // Nobody tells of custom kinds any more: keep what is watched.
                    None => custom = None,
                },
                _ = tick.tick() => self.flush(&mut seen).await,
            }
        }
    }

    fn count(&self, change: &Change, unreachable: &mut UnreachableWatches) {
        match change {
            Change::Synced(_) => {
                self.metrics.lists.inc();
            }
            Change::Unreachable(_) => unreachable.add(1),
            Change::Reachable => unreachable.add(-1),
            Change::Applied(_) | Change::Deleted(_) => {}
        }
    }

    /// Sends the reports of instances whose picture changed (once every watch has listed:
    /// half a picture would report healthy things as missing).
    async fn flush(&self, seen: &mut Seen) {
        // Custom kinds' watches are not waited for: one the cluster refuses would hold back
        // every report (their kinds count as watched once they have listed).
        if seen.dirty.is_empty() || !seen.synced[..=EVENTS].iter().all(|s| *s) {
            return;
        }
        let now = tokio::time::Instant::now();
        seen.later.retain(|_, at| *at > now);
        let due: Vec<ObjectId> = seen
            .dirty
            .iter()
            .filter(|id| !seen.later.contains_key(id))
            .copied()
            .collect();
        let reports: Vec<(ObjectId, HealthReport)> = due
            .iter()
            .map(|id| (*id, seen.report(*id)))
            .filter(|(id, report)| seen.sent.get(id) != Some(report))
            .collect();
        for id in &due {
            seen.dirty.remove(id);
        }
        let sink = &self.sink;
        let outcomes: Vec<(ObjectId, HealthReport, threeport_core::Result<Reported>)> =
            futures::stream::iter(reports)
                .map(|(id, report)| async move {
                    let outcome = sink.report(id, &report).await;
                    (id, report, outcome)
                })
                .buffer_unordered(16)
                .collect()
                .await;
        for (id, report, outcome) in outcomes {
            self.metrics.reported(outcome.as_ref().ok().copied());
            match outcome {
                Ok(Reported::Recorded) => {
                    let empty = report.resources.is_empty()
                        && seen.by_instance.get(&id).is_none_or(|u| u.is_empty());
                    if empty {
                        seen.sent.remove(&id);
                        seen.by_instance.remove(&id);
                    } else {
                        seen.sent.insert(id, report);
                    }
                }
                Ok(Reported::Gone) => {
                    seen.sent.remove(&id);
                }
                Ok(Reported::Busy) => {
                    seen.dirty.insert(id);
                    seen.later.insert(id, now + BUSY_BACKOFF);
                }
                Err(err) => {
                    tracing::warn!(instance = %id, error = %err, "recording health failed; retrying");
                    seen.dirty.insert(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn custom_kinds_are_those_of_groups_kubernetes_does_not_serve() {
        for custom in [
            "example.com/v1",
            "gateway.networking.k8s.io/v1",
            "cert-manager.io/v1",
        ] {
            assert!(is_custom_kind(custom), "{custom}");
        }
        for built_in in [
            "v1",
            "apps/v1",
            "networking.k8s.io/v1",
            "rbac.authorization.k8s.io/v1",
        ] {
            assert!(!is_custom_kind(built_in), "{built_in}");
        }
    }

    #[test]
    fn kubernetes_events_become_threeport_events() {
        let event = json!({"metadata": {"uid": "e1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "p1"},
            "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container",
            "count": 4, "firstTimestamp": "2026-01-01T00:00:01Z", "lastTimestamp": "2026-01-01T00:05:00Z"});
        let converted = threeport_event(&event).unwrap();
        assert_eq!(converted.type_, EventType::Warning);
        assert_eq!(converted.count, 4);
        assert_eq!(converted.about.as_deref(), Some("Pod shop/web-1"));
        assert!(converted.last_seen > converted.first_seen);
        assert_eq!(threeport_event(&json!({"reason": "NoUid"})), None);
    }
}
