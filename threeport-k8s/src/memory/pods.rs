//! What a cluster's controllers and kubelets would do, on a test's say: pods of a workload
//! resource in a given state, the resource's status to match, and the events they report.

use serde_json::{Value, json};
use threeport_core::{Error, Result};

use super::{MemoryCluster, PodState};
use crate::ResourceRef;

/// Kubernetes' timestamp format, to the second.
fn timestamp() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl MemoryCluster {
    /// Replaces the pods of `owner` (a Deployment, StatefulSet, DaemonSet or ReplicaSet) with
    /// `count` pods in `state`, labelled from its pod template and owned by it; sets the
    /// owner's status through its status subresource as its controller would (a rollout that
    /// finished, with `count` replicas ready if they are [`PodState::Ready`], none otherwise);
    /// records the events a kubelet reports for that state. Returns the pods.
    pub fn set_pods(
        &self,
        owner: &ResourceRef,
        state: PodState,
        count: usize,
    ) -> Result<Vec<Value>> {
        let Some(live) = self.get_sync(owner)? else {
            return Err(Error::not_found(&owner.kind, &owner.name));
        };
        let namespace = live["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let uid = live["metadata"]["uid"].clone();
        // The old pods go, as a rollout or a restart replaces them.
        let pods = ResourceRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: Some(namespace.clone()),
            name: String::new(),
        };
        for pod in self.list_sync("v1", "Pod", Some(&namespace))? {
            let owned = pod["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid));
            if owned {
                let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                self.delete_sync(&ResourceRef {
                    name: name.to_owned(),
                    ..pods.clone()
                })?;
            }
        }
        let template = &live["spec"]["template"];
        let container = template["spec"]["containers"][0]["name"]
            .as_str()
            .unwrap_or("main")
            .to_owned();
        let image = template["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or("image")
            .to_owned();
        let serial = {
            let mut state = self.state.lock().unwrap();
            state.uid += 1;
            state.uid
        };
        let mut created = Vec::with_capacity(count);
        for index in 0..count {
            let name = format!("{}-{serial:x}-{index}", owner.name);
            let (phase, container_state, ready) = match state {
                PodState::Ready => (
                    "Running",
                    json!({"running": {"startedAt": timestamp()}}),
                    true,
                ),
                PodState::CrashLoop => (
                    "Running",
                    json!({"waiting": {"reason": "CrashLoopBackOff",
                        "message": format!("back-off 5m0s restarting failed container={container} pod={name}")}}),
                    false,
                ),
                PodState::ImagePullBackOff => (
                    "Pending",
                    json!({"waiting": {"reason": "ImagePullBackOff",
                        "message": format!("Back-off pulling image \"{image}\"")}}),
                    false,
                ),
                PodState::Pending => ("Pending", Value::Null, false),
            };
            let statuses = if container_state.is_null() {
                json!([])
            } else {
                json!([{"name": container, "image": image, "ready": ready,
                        "restartCount": if state == PodState::CrashLoop { 5 } else { 0 },
                        "state": container_state}])
            };
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace,
                             "labels": template["metadata"]["labels"].clone(),
                             "ownerReferences": [{"apiVersion": live["apiVersion"], "kind": live["kind"],
                                                  "name": owner.name, "uid": uid, "controller": true}]},
                "spec": template["spec"].clone(),
            });
            self.apply_sync(&pod, "kube-controller-manager")?;
            let reference = ResourceRef {
                name: name.clone(),
                ..pods.clone()
            };
            let conditions = json!([{"type": "Ready", "status": if ready { "True" } else { "False" }},
                                    {"type": "PodScheduled", "status": if state == PodState::Pending { "False" } else { "True" }}]);
            let pod = self.merge_status_sync(
                &reference,
                &json!({"phase": phase, "conditions": conditions, "containerStatuses": statuses}),
            )?;
            match state {
                PodState::Ready => self.record_event(
                    &pod,
                    "Normal",
                    "Started",
                    &format!("Started container {container}"),
                )?,
                PodState::CrashLoop => self.record_event(
                    &pod,
                    "Warning",
                    "BackOff",
                    "Back-off restarting failed container",
                )?,
                PodState::ImagePullBackOff => self.record_event(
                    &pod,
                    "Warning",
                    "Failed",
                    &format!("Failed to pull image \"{image}\": not found"),
                )?,
                PodState::Pending => self.record_event(
                    &pod,
                    "Warning",
                    "FailedScheduling",
                    "0/1 nodes are available: insufficient cpu",
                )?,
            };
            created.push(pod);
        }
        let ready = if state == PodState::Ready { count } else { 0 };
        let generation = live["metadata"]["generation"].clone();
        let status = match owner.kind.as_str() {
            "DaemonSet" => {
                json!({"observedGeneration": generation, "desiredNumberScheduled": count,
                "currentNumberScheduled": count, "updatedNumberScheduled": count,
                "numberReady": ready, "numberAvailable": ready})
            }
            "StatefulSet" => json!({"observedGeneration": generation, "replicas": count,
                "updatedReplicas": count, "currentReplicas": count, "readyReplicas": ready,
                "availableReplicas": ready, "currentRevision": "r1", "updateRevision": "r1"}),
            _ => {
                let available = if ready > 0 {
                    json!({"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                           "message": "Deployment has minimum availability."})
                } else {
                    json!({"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                           "message": "Deployment does not have minimum availability."})
                };
                json!({"observedGeneration": generation, "replicas": count, "updatedReplicas": count,
                       "readyReplicas": ready, "availableReplicas": ready,
                       "unavailableReplicas": count - ready,
                       "conditions": [available,
                           {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                            "message": "ReplicaSet has successfully progressed."}]})
            }
        };
        self.merge_status_sync(owner, &status)?;
        Ok(created)
    }

    /// Records a Kubernetes event about `object`, as a kubelet or controller would: a repeat
    /// (same object, type and reason) raises the existing event's `count` and `lastTimestamp`
    /// instead of making another. Returns the event.
    pub fn record_event(
        &self,
        object: &Value,
        event_type: &str,
        reason: &str,
        message: &str,
    ) -> Result<Value> {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let uid = &object["metadata"]["uid"];
        let existing = self
            .list_sync("v1", "Event", Some(&namespace))?
            .into_iter()
            .find(|e| {
                e["involvedObject"]["uid"] == *uid
                    && e["reason"] == reason
                    && e["type"] == event_type
            });
        let now = timestamp();
        let event = match existing {
            Some(mut event) => {
                let count = event["count"].as_u64().unwrap_or(1) + 1;
                event["count"] = json!(count);
                event["lastTimestamp"] = json!(now);
                event["message"] = json!(message);
                event
            }
            None => {
                let serial = {
                    let mut state = self.state.lock().unwrap();
                    state.uid += 1;
                    state.uid
                };
                let name = format!(
                    "{}.{serial:x}",
                    object["metadata"]["name"].as_str().unwrap_or("object")
                );
                json!({"apiVersion": "v1", "kind": "Event",
                       "metadata": {"name": name, "namespace": namespace},
                       "involvedObject": {"apiVersion": object["apiVersion"], "kind": object["kind"],
                                          "name": object["metadata"]["name"], "namespace": namespace,
                                          "uid": uid},
                       "type": event_type, "reason": reason, "message": message, "count": 1,
                       "firstTimestamp": now, "lastTimestamp": now,
                       "source": {"component": "kubelet"}})
            }
        };
        self.apply_sync(&event, "kubelet")
    }
}
