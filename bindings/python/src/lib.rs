//! # threeport-python
//!
//! The native part of the `threeport` Python package (module `threeport._threeport`): the
//! control-plane client on `threeport-api`, the controller runtime of `threeport-core` driving
//! reconcilers written in Python, and an in-process control plane for tests. The Python
//! package (`python/threeport`) gives them their Pythonic face; values cross as JSON text.
//!
//! Everything runs on one multi-threaded Tokio runtime shared by the module; calls that wait
//! release the interpreter, so Python threads (and the reconcilers) keep running.

mod client;
mod engine;
mod errors;
mod logs;
mod plane;

use pyo3::prelude::*;

/// The kinds the control plane serves: `(kind, path segment)` pairs
/// (`("WorkloadDefinition", "workload-definitions")`).
#[pyfunction]
fn kinds() -> Vec<(String, String)> {
    threeport_server::model::registry()
        .entries()
        .map(|entry| (entry.kind.to_owned(), entry.plural.clone()))
        .collect()
}

/// The control plane's OpenAPI document (JSON): where the Python spec types come from.
#[pyfunction]
fn openapi() -> String {
    threeport_server::openapi::document(&threeport_server::model::registry()).to_string()
}

/// The extension module.
#[pymodule]
fn _threeport(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // One TLS provider for the process (rustls on ring), as in every threeport binary.
    let _ = rustls::crypto::ring::default_provider().install_default();
    logs::forward_to_python_logging();
    m.add_class::<client::ClientCore>()?;
    m.add_class::<engine::EngineCore>()?;
    m.add_class::<engine::Cancellation>()?;
    m.add_class::<plane::PlaneCore>()?;
    m.add_function(wrap_pyfunction!(kinds, m)?)?;
    m.add_function(wrap_pyfunction!(openapi, m)?)?;
    errors::register(m)?;
    Ok(())
}

/// The module's Tokio runtime.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}
