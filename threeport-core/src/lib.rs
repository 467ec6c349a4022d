//! # threeport-core
//!
//! The embeddable reconciliation engine of threeport. It owns the ideas, not the I/O:
//!
//! - the **object model** ([`ApiObject`], [`Object`], [`RawObject`]): one envelope and one
//!   lifecycle for every kind;
//! - the **backend traits**, small and dyn-compatible: [`Store`] (conditional writes, cursor
//!   lists), [`Outbox`] (notifications committed with the writes), [`Bus`] (competing
//!   consumers, ack-wait, delayed requeue) and [`Locker`] (leases with fencing tokens), with one
//!   portable [`Error`];
//! - **in-memory fakes** of each, always compiled ([`MemoryStore`], [`MemoryBus`],
//!   [`MemoryLocker`], bundled as [`MemoryBackends`]);
//! - public **[`conformance`] suites** every backend must pass, the fakes included;
//! - the **[`Controller`] runtime** that drives a [`Reconciler`]: per-object mutual exclusion
//!   across replicas, coalescing, backoff that resets on success, timeouts, panic capture,
//!   two-phase deletion, metrics and graceful shutdown;
//! - **[`relation`]s and owners**: a controller follows other kinds
//!   ([`Controller::follows`], [`Via`]) and the store notifies it of their changes in the
//!   writing transaction; objects record their owners ([`ObjectRef`]) and deletion cascades
//!   from owners to what they own ([`Propagation`]).
//!
//! Adapters (`threeport-store`, `threeport-bus`, ...) implement the traits; nothing here does
//! network I/O. Time goes through tokio's clock, so tests can pause it.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use async_trait::async_trait;
//! use serde::{Deserialize, Serialize};
//! use threeport_core::*;
//! use tokio_util::sync::CancellationToken;
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! struct Bucket { public: bool }
//! impl ApiObject for Bucket {
//!     const KIND: &'static str = "Bucket";
//!     type Status = Option<String>; // the bucket's URL once created
//! }
//!
//! struct BucketReconciler;
//! #[async_trait]
//! impl Reconciler for BucketReconciler {
//!     type Object = Bucket;
//!     async fn reconcile(&self, obj: &mut Object<Bucket>, _: &Context) -> Result<Action, ReconcileError> {
//!         obj.status.details = Some(format!("s3://{}", obj.name()));
//!         Ok(Action::Done)
//!     }
//! }
//!
//! let memory = MemoryBackends::new();
//! let shutdown = CancellationToken::new();
//! memory.spawn_relay(shutdown.clone());
//! tokio::spawn(Controller::new(BucketReconciler, memory.backends()).run(shutdown.clone()));
//!
//! let buckets = Api::<Bucket>::new(memory.store.clone());
//! let id = buckets.create("logs", Bucket { public: false }).await?.id();
//! let done = buckets.wait_until(id, |b| b.is_reconciled()).await?;
//! assert_eq!(done.status.details.as_deref(), Some("s3://logs"));
//! shutdown.cancel();
//! # Ok::<(), threeport_core::Error>(())
//! # }).unwrap();
//! ```

pub mod bus;
pub mod conformance;
pub mod error;
pub mod health;
pub mod lock;
pub mod memory;
pub mod object;
pub mod outbox;
pub mod relation;
pub mod runtime;
pub mod store;

pub use bus::{
    Bus, Delivery, DeliveryHandle, MemoryBus, Notification, Operation, SecretValues,
    SubscribeOptions, Subscription,
};
pub use error::{Error, ErrorKind, Result};
pub use lock::{Lease, Locker, MemoryLocker};
pub use memory::MemoryBackends;
pub use object::{
    ApiObject, Condition, ConditionStatus, Dynamic, Event, EventType, Labels, LifecycleState,
    NewObject, Object, ObjectId, ObjectMeta, ObjectRef, RawObject, Reference, Status, Timestamp,
    ValidationError,
};
pub use outbox::{Outbox, OutboxEntry, OutboxRelay, RelayConfig, RelayMetrics};
pub use relation::{Propagation, Relation, Via};
pub use runtime::{
    Action, Backends, Backoff, Context, Controller, ControllerConfig, ControllerMetricFamilies,
    ControllerMetrics, MapFn, ReconcileError, ReconcileResult, Reconciler,
};
pub use store::{
    Api, IdempotencyKey, ListPage, ListQuery, MemoryStore, Once, SpecUpdate, StatusWrite, Store,
};
