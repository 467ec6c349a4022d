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
//!     kinds: Arc::new(KindRegistry::new().with::<AwsAccount>()),
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! # drop((app, listener));
//! // axum::serve(listener, app).await.unwrap(); — then POST /v0/aws-accounts
//! # });
//! ```
//!
//! Still to come (issue 5): the full Threeport object model, the composite workload route,
//! authentication, OpenAPI, health and metrics endpoints, the `threeport-server` binary and the
//! typed client.

mod registry;
pub mod rest;

pub use registry::{KindEntry, KindRegistry, plural_path};
pub use rest::{ApiError, ApiState, router};
