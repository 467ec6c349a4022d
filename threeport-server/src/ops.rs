//! Operational endpoints, outside authentication: `/healthz` (the process serves),
//! `/readyz` (every backend answers), `/metrics` (Prometheus text) and `/version`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use serde_json::json;
use threeport_core::Error;

/// A named readiness check.
#[derive(Clone)]
pub struct Probe {
    /// What it checks (`store`, `bus`).
    pub name: &'static str,
    check: Arc<dyn Fn() -> BoxFuture<'static, Result<(), Error>> + Send + Sync>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").field("name", &self.name).finish()
    }
}

impl Probe {
    /// A check that runs `check` on every `/readyz` request.
    pub fn new<F, Fut>(name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        Probe {
            name,
            check: Arc::new(move || Box::pin(check())),
        }
    }

    /// Runs the check.
    pub async fn check(&self) -> Result<(), Error> {
        (self.check)().await
    }
}

/// What the operational endpoints report on.
#[derive(Debug, Clone, Default)]
pub struct Ops {
    /// Checked by `/readyz`.
    pub probes: Vec<Probe>,
    /// Exported by `/metrics`: the controllers' and the server's metrics.
    pub metrics: Arc<Mutex<Registry>>,
    /// Cancelled when the server starts to stop: long-polls (the engine API's) answer at once
    /// instead of holding the graceful shutdown up.
    pub stopping: tokio_util::sync::CancellationToken,
    /// The changes written through this process's store, for `/v0/watch` (the console's live
    /// updates): wrap the store in [`ChangeFeed::observe`](crate::watch::ChangeFeed::observe)
    /// to fill it.
    pub changes: crate::watch::ChangeFeed,
}

/// The `/healthz`, `/readyz`, `/metrics` and `/version` routes.
pub fn routes(ops: Ops) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(ops)
}

/// `{"version": "0.1.0"}`: the server's release, for clients to report (`tptctl version`).
/// The release, and for a control plane made by another one (its chart sets
/// `THREEPORT_PARENT_API_URL` and `THREEPORT_PARENT_INSTANCE`) its parent: the child's side of
/// the link, the parent's `ControlPlaneInstance` being the other.
async fn version() -> axum::Json<serde_json::Value> {
    let mut body = serde_json::json!({ "version": env!("CARGO_PKG_VERSION") });
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(instance) = var("THREEPORT_PARENT_INSTANCE") {
        body["parent"] = serde_json::json!({
            "api_url": var("THREEPORT_PARENT_API_URL"),
            "control_plane_instance": instance,
        });
    }
    axum::Json(body)
}

/// How long `/readyz` waits for a probe: an orchestrator needs a quick "not ready" while a
/// backend is down (a database restarting), not a request that hangs until its pool gives up.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

async fn ready(State(ops): State<Ops>) -> Response {
    // The probes run at once, so the answer comes within one timeout whatever fails.
    let checks = ops.probes.iter().map(|probe| async move {
        let checked = tokio::time::timeout(PROBE_TIMEOUT, probe.check()).await;
        let outcome = match checked {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        (probe.name, outcome)
    });
    let failures: serde_json::Map<String, serde_json::Value> = futures::future::join_all(checks)
        .await
        .into_iter()
        .filter_map(|(name, outcome)| outcome.map(|o| (name.to_owned(), o.into())))
        .collect();
    if failures.is_empty() {
        (StatusCode::OK, axum::Json(json!({ "ready": true }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            axum::Json(json!({ "ready": false, "failing": failures })),
        )
            .into_response()
    }
}

async fn metrics(State(ops): State<Ops>) -> Response {
    let mut text = String::new();
    let encoded =
        prometheus_client::encoding::text::encode(&mut text, &ops.metrics.lock().unwrap());
    match encoded {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
