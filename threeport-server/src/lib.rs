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

pub mod auth;
pub mod composite;
pub mod model;
pub mod openapi;
pub mod ops;
pub mod plane;
mod registry;
pub mod rest;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;

pub use auth::TokenSet;
pub use ops::Ops;
pub use registry::{CheckedSpec, KindEntry, KindRegistry, plural_path};
pub use rest::{ApiError, ApiState, router};

/// The control plane's HTTP surface: the API (behind `tokens` unless `None`, which disables
/// authentication) and the unauthenticated `/healthz`, `/readyz`, `/metrics`, `/openapi.json`
/// and `/docs`.
pub fn app(api: ApiState, tokens: Option<Arc<TokenSet>>, ops: Ops) -> Router {
    let docs = openapi::routes(&api.kinds);
    let mut api_routes = router(api.clone()).merge(composite::routes(api));
    if let Some(tokens) = tokens {
        api_routes = api_routes.layer(middleware::from_fn_with_state(tokens, auth::require_token));
    }
    api_routes
        .merge(ops::routes(ops))
        .merge(docs)
        .layer(middleware::from_fn(log_request))
}

/// One structured log line per request: method, path, status, duration.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}
