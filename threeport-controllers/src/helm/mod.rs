//! Helm charts as workloads: rendering a chart with Helm's own engine ([`ChartRenderer`],
//! [`HelmCli`]), what a render's hooks ask for ([`hooks`]), and the controller that releases
//! Helm workload instances ([`HelmWorkloadInstanceReconciler`]).
//!
//! A release is applied like any workload: server-side apply, Threeport's labels, a
//! generated namespace when none is given, pruning of what a new render dropped. Helm's
//! release records (the `sh.helm.release.v1` Secrets) are not written: the instance's status
//! is the release record.

pub mod hooks;
mod instance;
mod renderer;

pub use instance::{HOOKS_DONE, HelmWorkloadInstanceReconciler};
pub use renderer::{
    ChartRenderer, ChartSource, HelmCli, RenderError, RenderRequest, RenderedChart,
};
