//! The manifests of a runtime's in-cluster agent (`threeport-server agent`): its namespace,
//! a ServiceAccount allowed only to read what the health watcher watches, a Secret with its
//! API token, and a Deployment running it.

use serde_json::{Value, json};
use threeport_api::model::{AGENT_IMAGE, RuntimeAgent};

use crate::health::WATCHED_KINDS;

/// Namespace the agent runs in.
pub const AGENT_NAMESPACE: &str = "threeport-agent";
/// Name of the agent's ServiceAccount, ClusterRole(Binding), Secret and Deployment.
pub const AGENT_NAME: &str = "threeport-agent";

/// The plural a kind is served under (the watched kinds' and events').
fn plural(kind: &str) -> String {
    match kind {
        "Ingress" => "ingresses".to_owned(),
        "PersistentVolumeClaim" => "persistentvolumeclaims".to_owned(),
        other => format!("{}s", other.to_ascii_lowercase()),
    }
}

/// Read-only rules for every kind the watcher watches, and events.
fn rules() -> Vec<Value> {
    let mut by_group: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (api_version, kind) in WATCHED_KINDS.iter().chain(&[("v1", "Event")]) {
        let group = api_version.split_once('/').map_or("", |(group, _)| group);
        by_group.entry(group).or_default().push(plural(kind));
    }
    by_group
        .into_iter()
        .map(|(group, resources)| {
            json!({"apiGroups": [group], "resources": resources, "verbs": ["get", "list", "watch"]})
        })
        .collect()
}

/// Everything the agent needs on the cluster, in apply order. `token` is the agent's API
/// token in plain text (it goes into a Secret there, never into a manifest kept elsewhere).
pub fn agent_manifests(agent: &RuntimeAgent, token: &str) -> Vec<Value> {
    let image = agent
        .image
        .clone()
        .unwrap_or_else(|| format!("{AGENT_IMAGE}:{}", env!("CARGO_PKG_VERSION")));
    let labels =
        json!({"app.kubernetes.io/name": AGENT_NAME, "app.kubernetes.io/managed-by": "threeport"});
    let mut secret = json!({"token": token});
    let mut env = vec![
        json!({"name": "THREEPORT_API_URL", "value": agent.api_url}),
        json!({"name": "THREEPORT_API_TOKEN",
               "valueFrom": {"secretKeyRef": {"name": AGENT_NAME, "key": "token"}}}),
    ];
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    if let Some(ca) = &agent.api_ca {
        secret["ca.crt"] = json!(ca);
        env.push(json!({"name": "THREEPORT_API_CA", "value": "/etc/threeport/ca.crt"}));
        mounts.push(json!({"name": "api-ca", "mountPath": "/etc/threeport", "readOnly": true}));
        volumes.push(json!({"name": "api-ca", "secret": {"secretName": AGENT_NAME,
                                                        "items": [{"key": "ca.crt", "path": "ca.crt"}]}}));
    }
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AGENT_NAMESPACE, "labels": labels}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": AGENT_NAME, "namespace": AGENT_NAMESPACE, "labels": labels}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": AGENT_NAME, "labels": labels}, "rules": rules()}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": AGENT_NAME, "labels": labels},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AGENT_NAME},
               "subjects": [{"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": AGENT_NAMESPACE}]}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": AGENT_NAME, "namespace": AGENT_NAMESPACE, "labels": labels},
               "stringData": secret}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": AGENT_NAME, "namespace": AGENT_NAMESPACE, "labels": labels},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": AGENT_NAME}},
                        "template": {"metadata": {"labels": labels},
                            "spec": {"serviceAccountName": AGENT_NAME,
                                     "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
                                     "containers": [{"name": "agent", "image": image, "args": ["agent"],
                                         "env": env, "volumeMounts": mounts,
                                         "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                                       "limits": {"memory": "128Mi"}},
                                         "securityContext": {"allowPrivilegeEscalation": false,
                                                             "readOnlyRootFilesystem": true,
                                                             "capabilities": {"drop": ["ALL"]}}}],
                                     "volumes": volumes}}}}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_may_only_read() {
        let agent = RuntimeAgent {
            api_url: "https://threeport.example.com".into(),
            token: "ignored".into(),
            api_ca: Some("-----BEGIN CERTIFICATE-----".into()),
            image: None,
        };
        let manifests = agent_manifests(&agent, "tp_plain");
        let role = manifests
            .iter()
            .find(|m| m["kind"] == "ClusterRole")
            .unwrap();
        for rule in role["rules"].as_array().unwrap() {
            assert_eq!(rule["verbs"], json!(["get", "list", "watch"]));
        }
        let resources: Vec<&Value> = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["resources"].as_array().unwrap())
            .collect();
        for wanted in [
            "deployments",
            "pods",
            "events",
            "ingresses",
            "persistentvolumeclaims",
        ] {
            assert!(resources.iter().any(|r| *r == wanted), "{wanted}");
        }
        let deployment = manifests.last().unwrap();
        let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(
            !env.to_string().contains("tp_plain"),
            "the token only in the Secret"
        );
        assert_eq!(manifests[4]["stringData"]["token"], "tp_plain");
    }
}
