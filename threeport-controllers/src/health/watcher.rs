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

/// Index of the events watch among the reflectors (after the kinds).
const EVENTS: usize = WATCHED_KINDS.len();

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
}

/// What health needs of one object a watch reported (never the object itself: at thousands
/// of instances the JSON would dominate the process's memory).
#[derive(Debug)]
struct Tracked {
    instance: ObjectId,
    /// Index into [`WATCHED_KINDS`].
    kind: usize,
    namespace: Option<String>,
    name: String,
    health: Health,
    /// Made by a controller for another object (pods, replica sets).
    child: bool,
}

impl Tracked {
    /// `Deployment shop/web`.
    fn describe(&self) -> String {
        let kind = WATCHED_KINDS[self.kind].1;
        match &self.namespace {
            Some(namespace) => format!("{kind} {namespace}/{}", self.name),
            None => format!("{kind} {}", self.name),
        }
    }
}

/// Everything the watches have reported, by object UID.
#[derive(Debug, Default)]
struct Seen {
    objects: HashMap<String, Tracked>,
    by_instance: HashMap<ObjectId, HashSet<String>>,
    /// Kubernetes events (as threeport events) by the UID of the object they are about, then
    /// by their own UID.
    events: HashMap<String, BTreeMap<String, Event>>,
    synced: [bool; EVENTS + 1],
    /// Why a watch cannot reach the cluster now, per watch.
    unreachable: [Option<String>; EVENTS + 1],
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

impl Seen {
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
        let (api_version, kind) = WATCHED_KINDS[source];
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
                    parts.push((object.describe(), object.health.clone()));
                }
                continue;
            }
            parts.push((object.describe(), object.health.clone()));
            let (api_version, kind) = WATCHED_KINDS[object.kind];
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
        let health = match self.unreachable.iter().flatten().next() {
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
            watched_kinds: WATCHED_KINDS
                .iter()
                .map(|(api_version, kind)| format!("{api_version}/{kind}"))
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
        }
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

    /// Watches and reports until the task is aborted (its watches end with it).
    pub async fn run(self) {
        let mut reflectors = JoinSet::new();
        let selector = |(api_version, kind): &(&str, &str)| {
            Selector::kind(api_version, kind).labels(WORKLOAD_INSTANCE_LABEL)
        };
        let selectors = WATCHED_KINDS
            .iter()
            .map(selector)
            .chain([Selector::kind("v1", "Event")]);
        let mut streams = Vec::new();
        for (source, selector) in selectors.enumerate() {
            let (changes, received) = mpsc::channel(256);
            let reflector =
                Reflector::new(self.cluster.clone(), selector).with_config(self.reflector.clone());
            reflectors.spawn(reflector.run(changes));
            streams.push(
                futures::stream::unfold(received, |mut received| async move {
                    received.recv().await.map(|change| (change, received))
                })
                .map(move |change| (source, change))
                .boxed(),
            );
        }
        let mut changes = futures::stream::select_all(streams);
        let mut seen = Seen::default();
        let mut unreachable = UnreachableWatches {
            gauge: self.metrics.unreachable.clone(),
            count: 0,
        };
        let mut tick = tokio::time::interval(self.flush_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = changes.next() => match change {
                    Some((source, change)) => {
                        self.count(&change, &mut unreachable);
                        seen.apply(source, change);
                    }
                    None => return,
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
        if seen.dirty.is_empty() || !seen.synced.iter().all(|s| *s) {
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
