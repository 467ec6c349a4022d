//! The controller runtime: [`Reconciler`]s driven by [`Controller`] with locks, retries,
//! backoff, coalescing, timeouts, panic capture, metrics and graceful shutdown.

mod backoff;
mod controller;
mod metrics;
mod observed;
mod reconciler;

pub use backoff::Backoff;
pub use controller::{Backends, Controller, ControllerConfig, MapFn};
pub use metrics::{ControllerMetricFamilies, ControllerMetrics, ReconcileResult};
pub use observed::{ObservedWrite, lease_key, write_observed_change, write_observed_status};
pub use reconciler::{Action, Context, ReconcileError, Reconciler};
