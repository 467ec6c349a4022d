//! Health of what an object runs (a workload's resources on a cluster, say), in the terms of
//! Argo CD's health model: the status, its reason, and the rule that a whole is as healthy as
//! its worst part ([`aggregate`]). Adapters decide the health of their own things
//! (`threeport_k8s::health` for Kubernetes objects).

use serde::{Deserialize, Serialize};

/// How healthy something is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Running as desired.
    Healthy,
    /// Deliberately stopped (a paused rollout, a suspended job).
    Suspended,
    /// On its way to healthy.
    Progressing,
    /// Not known (not observed yet, or the cluster cannot be reached).
    #[default]
    Unknown,
    /// Desired to run, but nothing of it runs (or it is missing from the cluster).
    Down,
    /// Failing: crashing containers, failed jobs, rollouts past their deadline.
    Degraded,
}

impl HealthStatus {
    /// Lower is better: the order [`aggregate`] takes the worst by.
    pub fn severity(self) -> u8 {
        match self {
            HealthStatus::Healthy => 0,
            HealthStatus::Suspended => 1,
            HealthStatus::Progressing => 2,
            HealthStatus::Unknown => 3,
            HealthStatus::Down => 4,
            HealthStatus::Degraded => 5,
        }
    }

    /// `healthy`, `progressing`, …
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Suspended => "suspended",
            HealthStatus::Progressing => "progressing",
            HealthStatus::Unknown => "unknown",
            HealthStatus::Down => "down",
            HealthStatus::Degraded => "degraded",
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A health status and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// The status.
    pub status: HealthStatus,
    /// Why, for a person (empty when healthy needs no explaining).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl Health {
    /// A status with a reason.
    pub fn new(status: HealthStatus, reason: impl Into<String>) -> Self {
        Health {
            status,
            reason: reason.into(),
        }
    }

    /// Healthy, nothing to explain.
    pub fn healthy() -> Self {
        Health::new(HealthStatus::Healthy, "")
    }
}

/// The worst of `parts` (each with a name for the reason), or healthy when there are none.
/// The reason names the part: `Deployment shop/web: 0 of 2 replicas available`.
pub fn aggregate<'a>(parts: impl IntoIterator<Item = (String, &'a Health)>) -> Health {
    let mut worst: Option<(String, &Health)> = None;
    for (name, health) in parts {
        if worst
            .as_ref()
            .is_none_or(|(_, w)| health.status.severity() > w.status.severity())
        {
            worst = Some((name, health));
        }
    }
    match worst {
        None => Health::healthy(),
        Some((_, health)) if health.status == HealthStatus::Healthy => Health::healthy(),
        Some((name, health)) if health.reason.is_empty() => Health::new(health.status, name),
        Some((name, health)) => Health::new(health.status, format!("{name}: {}", health.reason)),
    }
}
