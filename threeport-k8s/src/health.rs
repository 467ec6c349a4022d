//! Health of live Kubernetes objects, after Argo CD's health model: each object is
//! [`HealthStatus::Healthy`], `Progressing`, `Degraded`, `Down`, `Suspended` or `Unknown`,
//! with a reason; a set of objects is as healthy as its worst member ([`aggregate`]).
//!
//! - Deployment, StatefulSet, DaemonSet, ReplicaSet: rollout (observed generation, updated
//!   replicas) and ready/available replicas. A rollout still going is `Progressing`; one past
//!   its deadline `Degraded`; a finished one with nothing available `Down`; a paused one
//!   `Suspended`.
//! - Pod: phase and container waiting reasons (`CrashLoopBackOff`, `ImagePullBackOff`, … are
//!   `Degraded`); a pod not ready yet is `Progressing`.
//! - Job: `Complete` / `Failed` conditions, suspension. CronJob: suspension.
//! - PersistentVolumeClaim: `Bound`, `Pending`, `Lost`.
//! - Service of type `LoadBalancer` and Ingress: an address in `status.loadBalancer.ingress`.
//! - Anything else with a `Ready` condition (custom resources): that condition. Objects with
//!   no notion of health (ConfigMaps, Secrets, RBAC) are healthy when they exist.
//!
//! ```
//! use serde_json::json;
//! use threeport_k8s::health::{HealthStatus, object_health};
//!
//! let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
//!     "metadata": {"name": "web", "generation": 2},
//!     "spec": {"replicas": 2},
//!     "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
//!                "availableReplicas": 1, "readyReplicas": 1}});
//! let health = object_health(&deployment);
//! assert_eq!(health.status, HealthStatus::Progressing);
//! assert_eq!(health.reason, "1 of 2 replicas available");
//! ```

use serde_json::Value;

pub use threeport_core::health::{Health, HealthStatus, aggregate};

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

/// The condition of `type_` in `status.conditions`.
fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Whether the controller has seen the latest spec (`status.observedGeneration`).
fn generation_observed(object: &Value) -> bool {
    let observed = &object["status"]["observedGeneration"];
    observed.is_null() || int(observed) >= int(&object["metadata"]["generation"])
}

/// The health of one live object.
pub fn object_health(object: &Value) -> Health {
    match (
        object["apiVersion"].as_str().unwrap_or_default(),
        object["kind"].as_str().unwrap_or_default(),
    ) {
        ("apps/v1", "Deployment") => deployment(object),
        ("apps/v1", "StatefulSet") => stateful_set(object),
        ("apps/v1", "DaemonSet") => daemon_set(object),
        ("apps/v1", "ReplicaSet") => replica_set(object),
        ("v1", "Pod") => pod(object),
        ("batch/v1", "Job") => job(object),
        ("batch/v1", "CronJob") => {
            if object["spec"]["suspend"].as_bool() == Some(true) {
                Health::new(HealthStatus::Suspended, "CronJob is suspended")
            } else {
                Health::healthy()
            }
        }
        ("v1", "PersistentVolumeClaim") => match object["status"]["phase"].as_str() {
            Some("Bound") => Health::healthy(),
            Some("Lost") => Health::new(HealthStatus::Degraded, "claim lost its volume"),
            _ => Health::new(
                HealthStatus::Progressing,
                "waiting for the claim to be bound",
            ),
        },
        ("v1", "Service") if object["spec"]["type"] == "LoadBalancer" => load_balancer(object),
        ("networking.k8s.io/v1", "Ingress") => load_balancer(object),
        _ => ready_condition(object),
    }
}

fn load_balancer(object: &Value) -> Health {
    let has_address = object["status"]["loadBalancer"]["ingress"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    if has_address {
        Health::healthy()
    } else {
        Health::new(
            HealthStatus::Progressing,
            "waiting for a load balancer address",
        )
    }
}

/// Custom resources: their `Ready` condition, if they have one.
fn ready_condition(object: &Value) -> Health {
    let Some(ready) = condition(object, "Ready") else {
        return Health::healthy();
    };
    let message = ready["message"]
        .as_str()
        .or_else(|| ready["reason"].as_str())
        .unwrap_or_default();
    match ready["status"].as_str() {
        Some("True") => Health::healthy(),
        Some("False") => Health::new(HealthStatus::Degraded, message),
        _ => Health::new(HealthStatus::Progressing, message),
    }
}

/// Desired replicas (`spec.replicas`, default 1).
fn desired(object: &Value) -> i64 {
    object["spec"]["replicas"].as_i64().unwrap_or(1)
}

/// A rollout that finished with `available` of `desired` replicas available.
fn replicas(available: i64, desired: i64, finished: bool) -> Health {
    if available >= desired {
        Health::healthy()
    } else if available == 0 && finished {
        Health::new(
            HealthStatus::Down,
            format!("0 of {desired} replicas available"),
        )
    } else {
        Health::new(
            HealthStatus::Progressing,
            format!("{available} of {desired} replicas available"),
        )
    }
}

fn deployment(object: &Value) -> Health {
    if object["spec"]["paused"].as_bool() == Some(true) {
        return Health::new(HealthStatus::Suspended, "rollout is paused");
    }
    if !generation_observed(object) {
        return Health::new(
            HealthStatus::Progressing,
            "waiting for the rollout to start",
        );
    }
    let status = &object["status"];
    let progressing = condition(object, "Progressing");
    if progressing.is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded") {
        return Health::new(
            HealthStatus::Degraded,
            format!(
                "rollout exceeded its progress deadline: {}",
                progressing
                    .and_then(|c| c["message"].as_str())
                    .unwrap_or_default()
            ),
        );
    }
    let desired = desired(object);
    let updated = int(&status["updatedReplicas"]);
    if updated < desired {
        return Health::new(
            HealthStatus::Progressing,
            format!("{updated} of {desired} replicas updated"),
        );
    }
    if int(&status["replicas"]) > updated {
        return Health::new(
            HealthStatus::Progressing,
            format!(
                "{} old replicas pending termination",
                int(&status["replicas"]) - updated
            ),
        );
    }
    // The new replica set became available once: what is unavailable now has gone down.
    let finished = progressing.is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
    replicas(int(&status["availableReplicas"]), desired, finished)
}

fn stateful_set(object: &Value) -> Health {
    if !generation_observed(object) {
        return Health::new(
            HealthStatus::Progressing,
            "waiting for the rollout to start",
        );
    }
    let status = &object["status"];
    let desired = desired(object);
    let updated = int(&status["updatedReplicas"]);
    if object["spec"]["updateStrategy"]["type"] != "OnDelete" && updated < desired {
        return Health::new(
            HealthStatus::Progressing,
            format!("{updated} of {desired} replicas updated"),
        );
    }
    let finished = status["currentRevision"].is_string()
        && status["currentRevision"] == status["updateRevision"];
    replicas(int(&status["readyReplicas"]), desired, finished)
}

fn daemon_set(object: &Value) -> Health {
    if !generation_observed(object) {
        return Health::new(
            HealthStatus::Progressing,
            "waiting for the rollout to start",
        );
    }
    let status = &object["status"];
    let desired = int(&status["desiredNumberScheduled"]);
    let updated = int(&status["updatedNumberScheduled"]);
    if updated < desired {
        return Health::new(
            HealthStatus::Progressing,
            format!("{updated} of {desired} pods updated"),
        );
    }
    replicas(int(&status["numberAvailable"]), desired, true)
}

fn replica_set(object: &Value) -> Health {
    if !generation_observed(object) {
        return Health::new(HealthStatus::Progressing, "waiting for the replica set");
    }
    replicas(
        int(&object["status"]["availableReplicas"]),
        desired(object),
        false,
    )
}

/// Container waiting reasons that mean the pod will not start without a change.
const FAILING_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

fn pod(object: &Value) -> Health {
    let status = &object["status"];
    let containers = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|field| status[*field].as_array())
        .flatten();
    for container in containers {
        let waiting = &container["state"]["waiting"];
        if let Some(reason) = waiting["reason"].as_str()
            && FAILING_REASONS.contains(&reason)
        {
            let name = container["name"].as_str().unwrap_or("container");
            let message = waiting["message"].as_str().unwrap_or_default();
            let reason = if message.is_empty() {
                format!("container {name}: {reason}")
            } else {
                format!("container {name}: {reason}: {message}")
            };
            return Health::new(HealthStatus::Degraded, reason);
        }
    }
    match status["phase"].as_str() {
        Some("Succeeded") => Health::healthy(),
        Some("Failed") => Health::new(
            HealthStatus::Degraded,
            status["message"]
                .as_str()
                .or_else(|| status["reason"].as_str())
                .unwrap_or("pod failed"),
        ),
        Some("Running") if condition(object, "Ready").is_some_and(|c| c["status"] == "True") => {
            Health::healthy()
        }
        Some("Running") => Health::new(HealthStatus::Progressing, "pod is not ready"),
        _ => {
            let unscheduled =
                condition(object, "PodScheduled").is_some_and(|c| c["status"] == "False");
            Health::new(
                HealthStatus::Progressing,
                if unscheduled {
                    "pod is waiting to be scheduled"
                } else {
                    "pod is starting"
                },
            )
        }
    }
}

fn job(object: &Value) -> Health {
    if let Some(failed) = condition(object, "Failed").filter(|c| c["status"] == "True") {
        return Health::new(
            HealthStatus::Degraded,
            failed["message"]
                .as_str()
                .or_else(|| failed["reason"].as_str())
                .unwrap_or("job failed"),
        );
    }
    if condition(object, "Complete").is_some_and(|c| c["status"] == "True") {
        return Health::healthy();
    }
    if object["spec"]["suspend"].as_bool() == Some(true) {
        return Health::new(HealthStatus::Suspended, "job is suspended");
    }
    Health::new(HealthStatus::Progressing, "job is running")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "generation": 1},
               "spec": {"replicas": 2}, "status": status})
    }

    #[test]
    fn deployments_follow_their_rollout() {
        let done =
            json!({"type": "Progressing", "reason": "NewReplicaSetAvailable", "status": "True"});
        let ready = deployment(
            json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                                      "availableReplicas": 2, "conditions": [done]}),
        );
        assert_eq!(object_health(&ready).status, HealthStatus::Healthy);
        let starting = deployment(
            json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                                         "availableReplicas": 0}),
        );
        assert_eq!(object_health(&starting).status, HealthStatus::Progressing);
        let down = deployment(
            json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                                     "availableReplicas": 0, "conditions": [done]}),
        );
        assert_eq!(
            object_health(&down),
            Health::new(HealthStatus::Down, "0 of 2 replicas available")
        );
        let stuck = deployment(json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "ReplicaSet web-1 has timed out progressing."}]}));
        assert_eq!(object_health(&stuck).status, HealthStatus::Degraded);
        let mut paused = ready.clone();
        paused["spec"]["paused"] = json!(true);
        assert_eq!(object_health(&paused).status, HealthStatus::Suspended);
        let mut newer = ready;
        newer["metadata"]["generation"] = json!(2);
        assert_eq!(object_health(&newer).status, HealthStatus::Progressing);
    }

    #[test]
    fn pods_report_failing_containers() {
        let crashing = json!({"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Running",
            "containerStatuses": [{"name": "web", "state": {"waiting": {"reason": "CrashLoopBackOff",
                                                                      "message": "back-off 5m0s"}}}]}});
        assert_eq!(
            object_health(&crashing),
            Health::new(
                HealthStatus::Degraded,
                "container web: CrashLoopBackOff: back-off 5m0s"
            )
        );
        let ready = json!({"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(object_health(&ready).status, HealthStatus::Healthy);
        let pending = json!({"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Pending"}});
        assert_eq!(object_health(&pending).status, HealthStatus::Progressing);
        let failed = json!({"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Failed", "reason": "Evicted"}});
        assert_eq!(
            object_health(&failed),
            Health::new(HealthStatus::Degraded, "Evicted")
        );
    }

    #[test]
    fn other_kinds() {
        let job = |conditions: Value| json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"conditions": conditions}});
        assert_eq!(
            object_health(&job(json!([{"type": "Complete", "status": "True"}]))).status,
            HealthStatus::Healthy
        );
        assert_eq!(
            object_health(&job(
                json!([{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}])
            )),
            Health::new(HealthStatus::Degraded, "BackoffLimitExceeded")
        );
        assert_eq!(
            object_health(&job(json!([]))).status,
            HealthStatus::Progressing
        );
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": "Pending"}});
        assert_eq!(object_health(&pvc).status, HealthStatus::Progressing);
        let lb = json!({"apiVersion": "v1", "kind": "Service", "spec": {"type": "LoadBalancer"}, "status": {}});
        assert_eq!(object_health(&lb).status, HealthStatus::Progressing);
        let cluster_ip =
            json!({"apiVersion": "v1", "kind": "Service", "spec": {"type": "ClusterIP"}});
        assert_eq!(object_health(&cluster_ip).status, HealthStatus::Healthy);
        let custom = json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "status": {"conditions": [{"type": "Ready", "status": "False", "message": "issuer not found"}]}});
        assert_eq!(
            object_health(&custom),
            Health::new(HealthStatus::Degraded, "issuer not found")
        );
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert_eq!(object_health(&config).status, HealthStatus::Healthy);
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"replicas": 1},
            "status": {"updatedReplicas": 1, "readyReplicas": 0, "currentRevision": "a", "updateRevision": "a"}});
        assert_eq!(object_health(&sts).status, HealthStatus::Down);
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "status": {"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}});
        assert_eq!(object_health(&ds).status, HealthStatus::Healthy);
    }

    #[test]
    fn the_worst_part_wins_and_is_named() {
        let healthy = Health::healthy();
        let down = Health::new(HealthStatus::Down, "0 of 1 replicas available");
        let degraded = Health::new(HealthStatus::Degraded, "container web: CrashLoopBackOff");
        assert_eq!(aggregate(Vec::<(String, &Health)>::new()), healthy);
        assert_eq!(
            aggregate([
                ("Deployment web".to_owned(), &down),
                ("Service web".to_owned(), &healthy)
            ]),
            Health::new(
                HealthStatus::Down,
                "Deployment web: 0 of 1 replicas available"
            )
        );
        assert_eq!(
            aggregate([
                ("Deployment web".to_owned(), &down),
                ("Pod web-1".to_owned(), &degraded)
            ])
            .status,
            HealthStatus::Degraded
        );
    }
}
