//! `PlaneCore`: an in-process control plane on the memory backends, behind
//! `threeport.testing.ControlPlane`: the real REST API (every kind, validation, sealing,
//! tokens), outbox relay and the built-in controllers that need no cloud or cluster (workload
//! definitions) on a free loopback port, for pytest fixtures. Engines made from it share its
//! backends, so Python reconcilers see what the API writes.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use threeport_api::model::WorkloadDefinition;
use threeport_core::{ApiObject, Controller, MemoryBackends};
use threeport_server::{ApiState, Ops, Sealer, TokenSet};
use tokio_util::sync::CancellationToken;

use crate::engine::EngineCore;
use crate::errors::{Unavailable, core_error};
use crate::runtime;

/// A running in-process control plane.
#[pyclass(module = "threeport._threeport", frozen)]
pub struct PlaneCore {
    memory: MemoryBackends,
    url: String,
    token: Option<String>,
    shutdown: Mutex<Option<CancellationToken>>,
    /// Whether the built-in workload-definition controller (and the one removing its records)
    /// runs.
    controllers: bool,
}

#[pymethods]
impl PlaneCore {
    /// Starts the API and the relay on `127.0.0.1:<free port>`; with `auth`, behind a freshly
    /// minted token (see `token`), else open; with `controllers`, the workload-definition
    /// controller too (without it, an engine may reconcile that kind itself).
    #[new]
    #[pyo3(signature = (auth=true, controllers=true))]
    fn new(py: Python<'_>, auth: bool, controllers: bool) -> PyResult<Self> {
        let memory = MemoryBackends::new();
        let shutdown = CancellationToken::new();
        let (tokens, token) = if auth {
            let minted = threeport_server::auth::mint_token().map_err(core_error)?;
            let mut tokens = TokenSet::new();
            tokens.add_hash(&minted.hash).map_err(core_error)?;
            (Some(Arc::new(tokens)), Some(minted.token))
        } else {
            (None, None)
        };
        // What the API writes (and engines attached over HTTP) is announced at once to
        // `/v0/watch`; the in-process controllers' writes reach watchers at the next resync.
        let changes = threeport_server::watch::ChangeFeed::new(std::time::Duration::from_secs(5));
        let state = ApiState {
            store: changes.observe(memory.store.clone()),
            bus: memory.bus.clone(),
            locker: memory.locker.clone(),
            kinds: Arc::new(threeport_server::model::registry()),
            sealer: Arc::new(Sealer::ephemeral().map_err(core_error)?),
        };
        let ops = Ops {
            changes,
            ..Ops::default()
        };
        let app = threeport_server::app(state, tokens, ops);
        let relay_memory = memory.clone();
        let stop = shutdown.clone();
        let url = py.detach(|| {
            runtime().block_on(async move {
                relay_memory.spawn_relay(stop.clone());
                if controllers {
                    let controller = Controller::new(
                        threeport_server::controllers::WorkloadDefinitionReconciler,
                        relay_memory.backends(),
                    );
                    tokio::spawn(controller.run(stop.clone()));
                    // The records a definition owns, removed when its deletion cascades.
                    let records = Controller::new(
                        threeport_server::controllers::PassiveReconciler::new(
                            "WorkloadResourceDefinition",
                        ),
                        relay_memory.backends(),
                    );
                    tokio::spawn(records.run(stop.clone()));
                }
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let url = format!("http://{}", listener.local_addr()?);
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(stop.cancelled_owned())
                        .await;
                });
                Ok::<_, std::io::Error>(url)
            })
        });
        let url = url.map_err(|e| Unavailable::new_err(format!("cannot listen: {e}")))?;
        Ok(PlaneCore {
            memory,
            url,
            token,
            shutdown: Mutex::new(Some(shutdown)),
            controllers,
        })
    }

    /// Base URL (`http://127.0.0.1:<port>`).
    #[getter]
    fn url(&self) -> String {
        self.url.clone()
    }

    /// The token the API accepts (`None` when started without authentication).
    #[getter]
    fn token(&self) -> Option<String> {
        self.token.clone()
    }

    /// An engine on this control plane's backends.
    fn engine(&self) -> EngineCore {
        let reserved = if self.controllers {
            vec![<WorkloadDefinition as ApiObject>::KIND]
        } else {
            Vec::new()
        };
        EngineCore::on_memory(&self.memory, reserved)
    }

    /// Stops serving.
    fn stop(&self) {
        if let Some(shutdown) = self.shutdown.lock().unwrap().take() {
            shutdown.cancel();
        }
    }
}
