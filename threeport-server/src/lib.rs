//! # threeport-server
//!
//! The threeport control plane's REST API, generic over object kinds and stores: register the
//! kinds in a [`KindRegistry`], and [`router`] serves create, list, get, replace, patch and
//! delete for each under `/v0/<kebab-case-plural>`, on any [`Store`](threeport_core::Store) —
//! every desired-state change notifies controllers through the store's outbox.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use serde::{Deserialize, Serialize};
//! use threeport_core::{ApiObject, MemoryStore};
//! use threeport_server::{ApiState, KindRegistry, router};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct AwsAccount { account_id: String, default_region: String }
//! impl ApiObject for AwsAccount {
//!     const KIND: &'static str = "AwsAccount";
//!     type Status = ();
//! }
//!
//! let app = router(ApiState {
//!     store: Arc::new(MemoryStore::new()),
//!     bus: Arc::new(threeport_core::MemoryBus::new()),
//!     locker: Arc::new(threeport_core::MemoryLocker::new()),
//!     sealer: Arc::new(threeport_server::Sealer::ephemeral().unwrap()),
//!     kinds: Arc::new(KindRegistry::new().with::<AwsAccount>()),
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! # drop((app, listener));
//! // axum::serve(listener, app).await.unwrap(); — then POST /v0/aws-accounts
//! # });
//! ```
//!
//! [`app`] composes the whole HTTP surface: the API behind bearer-token authentication
//! ([`auth`]), and the operational endpoints ([`ops`]). [`plane::open`] opens the backends the
//! `threeport-server` binary runs on.

pub mod agent;
pub mod auth;
pub mod batch;
pub mod composite;
pub mod configs;
pub mod console;
pub mod custom;
pub mod health;
pub mod model;
pub mod openapi;
pub mod ops;
pub mod plane;
mod registry;
pub mod remote;
pub mod rest;
pub mod terraform;
#[cfg(feature = "tls")]
pub mod tls;
pub mod views;
pub mod watch;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use auth::TokenSet;
pub use ops::Ops;
pub use registry::{CheckedSpec, KindEntry, KindRegistry, plural_path};
pub use rest::{ApiError, ApiState, router};
/// The controllers the server runs (the `threeport-controllers` crate).
pub use threeport_controllers as controllers;
/// Sealing of secret fields, shared by the API (which seals) and the controllers (which open).
pub use threeport_controllers::seal::{self, Sealer};

/// The control plane's HTTP surface: the API (behind `tokens` unless `None`, which disables
/// authentication) and the unauthenticated `/healthz`, `/readyz`, `/metrics`, `/version`,
/// `/openapi.json`, `/docs` and the web console's page and assets (`/console/`, [`console`]:
/// its data comes from the API, with the token its user signs in with). Every request is logged (the engine API's at debug level) and
/// counted in `ops.metrics` (`http_requests_total`, `http_request_duration_seconds`, by method,
/// route and status).
pub fn app(api: ApiState, tokens: Option<Arc<TokenSet>>, ops: Ops) -> Router {
    let metrics = HttpMetrics::register(&mut ops.metrics.lock().unwrap());
    let docs = openapi::routes(&api.kinds, api.store.clone());
    let mut api_routes = router(api.clone())
        .merge(composite::routes(api.clone()))
        .merge(health::routes(api.clone()))
        .merge(terraform::routes(api.clone()))
        .merge(remote::routes(api.clone(), ops.stopping.clone()))
        .merge(views::routes(api.clone()))
        .merge(configs::routes(api.clone()))
        .merge(watch::routes(
            ops.changes.clone(),
            ops.stopping.clone(),
            &mut ops.metrics.lock().unwrap(),
        ))
        .merge(batch::routes(api));
    if let Some(tokens) = tokens {
        api_routes = api_routes.layer(middleware::from_fn_with_state(tokens, auth::require_token));
    }
    api_routes
        .merge(ops::routes(ops))
        .merge(docs)
        .merge(console::routes())
        .layer(middleware::from_fn_with_state(metrics, observe_request))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route template (`/v0/{plural}/{id}`), not the raw path: bounded cardinality.
    route: String,
    status: u16,
}

/// Request counters and latencies.
#[derive(Debug, Clone)]
struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
}

impl HttpMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 14))
            }),
        };
        registry.register(
            "http_requests",
            "HTTP requests served, by method, route and status",
            metrics.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by method, route and status",
            metrics.duration.clone(),
        );
        metrics
    }
}

/// One structured log line and the metrics per request.
async fn observe_request(
    State(metrics): State<HttpMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed();
    let labels = RequestLabels {
        method: method.to_string(),
        route,
        status: response.status().as_u16(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .duration
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    let ms = took.as_secs_f64() * 1000.0;
    if path.starts_with("/v0/engine/") && labels.status < 500 {
        // Remote replicas' traffic, several requests per reconcile: counted and timed above,
        // logged only when asked for (their reconciles are logged where they run).
        tracing::debug!(%method, path, status = labels.status, ms, "request");
    } else {
        tracing::info!(%method, path, status = labels.status, ms, "request");
    }
    response
}
