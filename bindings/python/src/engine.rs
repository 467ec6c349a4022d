//! `EngineCore`: the controller runtime of `threeport-core` driving reconcilers written in
//! Python, behind `threeport.Engine`.
//!
//! Each registered kind gets a real [`Controller`] (leases, coalescing, requeue, backoff,
//! retry bounds, concurrency, graceful shutdown), whose reconciler hands the object, as JSON,
//! to a Python callable on a blocking thread and reads back what to do. The Python side
//! (`threeport._engine`) turns the user's `def` or `async def` into that callable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use serde_json::{Value, json};
use threeport_core::object::EventType;
use threeport_core::store::{ListQuery, SpecUpdate};
use threeport_core::{
    Action, Backends, Context, Controller, ControllerConfig, Dynamic, Labels, MemoryBackends,
    NewObject, Object, ObjectId, Outbox, OutboxRelay, ReconcileError, Reconciler, RelayConfig,
};
use threeport_server::KindRegistry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::errors::{core_error, json_error, validation};
use crate::runtime;

/// A reconciler whose work is done by a Python callable.
struct PythonReconciler {
    kind: String,
    adapter: Arc<Py<PyAny>>,
}

impl PythonReconciler {
    /// Calls the adapter with the object; applies the status it returns; maps its verdict.
    async fn invoke(
        &self,
        phase: &str,
        obj: &mut Object<Dynamic>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let payload = json!({
            "phase": phase,
            "object": obj,
            "attempt": ctx.attempt(),
            "secret": ctx.secret(),
        })
        .to_string();
        let adapter = self.adapter.clone();
        let cancelled = ctx.cancelled().clone();
        let (kind, id) = (self.kind.clone(), obj.meta.id);
        // Through the context: if the reconcile times out, the runtime keeps the object
        // locked until this thread has returned (a `def` cannot be stopped from outside; an
        // `async def` is cancelled by the adapter when `cancelled` is set).
        let answer = ctx
            .spawn_blocking(move || {
                let answer = Python::attach(|py| {
                    let cancellation = Cancellation {
                        token: cancelled.clone(),
                    };
                    adapter
                        .call1(py, (payload, cancellation))
                        .and_then(|answer| answer.extract::<String>(py))
                        .map_err(|err| err.to_string())
                });
                if cancelled.is_cancelled() {
                    tracing::warn!(%kind, %id, "a Python reconcile returned after the runtime gave up on it (timeout or shutdown); its result was discarded");
                }
                answer
            })
            .await
            .map_err(|err| ReconcileError::retryable(format!("the Python reconciler died: {err}")))?
            .map_err(ReconcileError::retryable)?;
        let answer: Value = serde_json::from_str(&answer).map_err(|err| {
            ReconcileError::retryable(format!("the Python reconciler's answer: {err}"))
        })?;
        if let Some(status) = answer.get("status") {
            obj.status.details = status.clone();
        }
        for event in answer["events"].as_array().into_iter().flatten() {
            let type_ = if event["warning"].as_bool() == Some(true) {
                EventType::Warning
            } else {
                EventType::Normal
            };
            obj.status.record_event(
                type_,
                event["reason"].as_str().unwrap_or("Python"),
                event["message"].as_str().unwrap_or_default(),
            );
        }
        let message = answer["message"].as_str().unwrap_or_default().to_owned();
        match answer["result"].as_str() {
            Some("done") => Ok(Action::Done),
            Some("requeue") => Ok(Action::RequeueAfter(Duration::from_secs_f64(
                answer["after"].as_f64().unwrap_or(0.0).max(0.0),
            ))),
            Some("terminal") => Err(ReconcileError::terminal(message)),
            _ => Err(ReconcileError::retryable(message)),
        }
    }
}

#[async_trait]
impl Reconciler for PythonReconciler {
    type Object = Dynamic;

    fn kind(&self) -> &str {
        &self.kind
    }

    async fn reconcile(
        &self,
        obj: &mut Object<Dynamic>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        self.invoke("reconcile", obj, ctx).await
    }

    async fn cleanup(
        &self,
        obj: &mut Object<Dynamic>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        self.invoke("cleanup", obj, ctx).await
    }
}

/// Tells a Python reconcile that the runtime gave up on it (timeout, shutdown): an `async def`
/// is then cancelled; a `def` runs on, and what it returns is discarded.
#[pyclass(module = "threeport._threeport", frozen)]
pub struct Cancellation {
    token: CancellationToken,
}

#[pymethods]
impl Cancellation {
    /// Whether the runtime gave up on this reconcile.
    fn is_set(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// A registered Python reconciler.
struct Registration {
    kind: String,
    adapter: Arc<Py<PyAny>>,
    config: ControllerConfig,
}

/// The engine: backends, the registered reconcilers, and their controllers once started.
#[pyclass(module = "threeport._threeport", frozen)]
pub struct EngineCore {
    backends: Backends,
    /// The outbox to relay to the bus; `None` when the control plane relays (remote).
    outbox: Option<Arc<dyn Outbox>>,
    kinds: Arc<KindRegistry>,
    registrations: Mutex<Vec<Registration>>,
    running: Mutex<Option<(CancellationToken, Vec<JoinHandle<()>>)>>,
    description: String,
    /// Kinds a built-in controller on the same backends reconciles already.
    reserved: Vec<&'static str>,
}

impl EngineCore {
    /// An engine on `memory`'s backends (the in-process control plane's, for tests), where
    /// built-in controllers reconcile the `reserved` kinds.
    pub(crate) fn on_memory(memory: &MemoryBackends, reserved: Vec<&'static str>) -> Self {
        EngineCore {
            backends: memory.backends(),
            outbox: Some(memory.store.clone()),
            kinds: Arc::new(threeport_server::model::registry()),
            registrations: Mutex::new(Vec::new()),
            running: Mutex::new(None),
            description: "memory backends".to_owned(),
            reserved,
        }
    }

    /// An engine on the backends of the control plane at `url`, over its engine API.
    fn remote(url: &str, token: Option<String>) -> PyResult<Self> {
        let mut builder = threeport_api::Client::builder(url);
        if let Some(token) = token {
            builder = builder.token(token);
        }
        let client = builder.build().map_err(crate::errors::client_error)?;
        Ok(EngineCore {
            backends: threeport_api::remote::backends(&client),
            outbox: None,
            kinds: Arc::new(threeport_server::model::registry()),
            registrations: Mutex::new(Vec::new()),
            running: Mutex::new(None),
            description: format!("the control plane at {}", client.base_url()),
            reserved: Vec::new(),
        })
    }

    fn block_on<F: std::future::Future + Send>(py: Python<'_>, future: F) -> F::Output
    where
        F::Output: Send,
    {
        py.detach(|| runtime().block_on(future))
    }

    /// A new object: specs of the control plane's kinds are checked (defaults, references),
    /// other kinds' are taken as they are.
    fn new_object(
        &self,
        kind: &str,
        name: String,
        labels: Labels,
        spec: Value,
    ) -> PyResult<NewObject> {
        let (spec, references) = match self.kinds.entries().find(|e| e.kind == kind) {
            Some(entry) => {
                let checked = entry.check(&spec).map_err(core_error)?;
                (checked.spec, checked.references)
            }
            None => (spec, Vec::new()),
        };
        Ok(NewObject {
            kind: kind.to_owned(),
            name,
            labels,
            references,
            owners: Vec::new(),
            spec,
        })
    }
}

fn parse(field: &str, text: &str) -> PyResult<Value> {
    serde_json::from_str(text).map_err(|e| json_error(field, e))
}

fn object_id(id: &str) -> PyResult<ObjectId> {
    id.parse()
        .map_err(|_| validation("id", format!("{id:?} is not an object id")))
}

fn to_json(value: &impl serde::Serialize) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| json_error("answer", e))
}

#[pymethods]
impl EngineCore {
    /// An engine on the memory backends, or on PostgreSQL/CockroachDB (`database_url`),
    /// SQLite (in `data_dir`) and NATS JetStream (`nats_url`), or on a running control
    /// plane's backends over its engine API (`url`, `token`).
    #[new]
    #[pyo3(signature = (database_url=None, nats_url=None, data_dir=None, url=None, token=None))]
    fn new(
        py: Python<'_>,
        database_url: Option<String>,
        nats_url: Option<String>,
        data_dir: Option<String>,
        url: Option<String>,
        token: Option<String>,
    ) -> PyResult<Self> {
        if let Some(url) = url {
            if database_url.is_some() || nats_url.is_some() || data_dir.is_some() {
                return Err(validation(
                    "url",
                    "a remote engine uses the control plane's backends: give url (and token) \
                     or database_url/nats_url/data_dir, not both",
                ));
            }
            return Self::remote(&url, token);
        }
        if token.is_some() {
            return Err(validation("token", "a token needs the control plane's url"));
        }
        if database_url.is_none() && nats_url.is_none() && data_dir.is_none() {
            return Ok(Self::on_memory(&MemoryBackends::new(), Vec::new()));
        }
        let config = threeport_server::plane::PlaneConfig {
            database_url,
            nats_url,
            data_dir: data_dir
                .unwrap_or_else(|| "threeport-data".to_owned())
                .into(),
            ..Default::default()
        };
        let plane =
            Self::block_on(py, threeport_server::plane::open(&config)).map_err(core_error)?;
        Ok(EngineCore {
            backends: Backends {
                store: plane.store,
                bus: plane.bus,
                locker: plane.locker,
            },
            outbox: Some(plane.outbox),
            kinds: Arc::new(threeport_server::model::registry()),
            registrations: Mutex::new(Vec::new()),
            running: Mutex::new(None),
            description: plane.description,
            reserved: Vec::new(),
        })
    }

    /// What the engine runs on.
    #[getter]
    fn description(&self) -> String {
        self.description.clone()
    }

    /// Registers `adapter` as the reconciler of `kind` (started by [`start`](Self::start)).
    #[pyo3(signature = (kind, adapter, name=None, concurrency=4, reconcile_timeout=300.0, max_retries=10, backoff_initial=0.5, backoff_max=60.0, resync_period=300.0))]
    #[allow(clippy::too_many_arguments)]
    fn register(
        &self,
        kind: String,
        adapter: Py<PyAny>,
        name: Option<String>,
        concurrency: usize,
        reconcile_timeout: f64,
        max_retries: u32,
        backoff_initial: f64,
        backoff_max: f64,
        resync_period: Option<f64>,
    ) -> PyResult<()> {
        threeport_core::object::validate_kind(&kind).map_err(core_error)?;
        if concurrency == 0 {
            return Err(validation("concurrency", "must be at least 1"));
        }
        for (field, value) in [
            ("reconcile_timeout", reconcile_timeout),
            ("backoff_initial", backoff_initial),
            ("backoff_max", backoff_max),
            ("resync_period", resync_period.unwrap_or(1.0)),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(validation(
                    field,
                    format!("{value} is not a positive number of seconds"),
                ));
            }
        }
        if self.reserved.contains(&kind.as_str()) {
            return Err(validation(
                "kind",
                format!(
                    "the control plane's own controller reconciles {kind}: make it with \
                     ControlPlane(controllers=False) to reconcile {kind} here"
                ),
            ));
        }
        if self.running.lock().unwrap().is_some() {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                "the engine is running: register the reconciler of {kind} before start()"
            )));
        }
        let mut registrations = self.registrations.lock().unwrap();
        if registrations.iter().any(|r| r.kind == kind) {
            return Err(crate::errors::Conflict::new_err(format!(
                "kind {kind} already has a reconciler"
            )));
        }
        let mut config = ControllerConfig {
            name: name.unwrap_or_else(|| format!("{}-python", kind.to_ascii_lowercase())),
            concurrency,
            reconcile_timeout: Duration::from_secs_f64(reconcile_timeout),
            max_retries,
            resync_period: resync_period.map(Duration::from_secs_f64),
            ..ControllerConfig::default()
        };
        config.backoff.initial = Duration::from_secs_f64(backoff_initial);
        config.backoff.max = Duration::from_secs_f64(backoff_max.max(backoff_initial));
        registrations.push(Registration {
            kind,
            adapter: Arc::new(adapter),
            config,
        });
        Ok(())
    }

    /// Starts the outbox relay and a controller per registered kind, in the background.
    fn start(&self) -> PyResult<()> {
        let mut running = self.running.lock().unwrap();
        if running.is_some() {
            return Ok(());
        }
        let shutdown = CancellationToken::new();
        let _guard = runtime().enter();
        let mut tasks = Vec::new();
        if let Some(outbox) = &self.outbox {
            let relay = OutboxRelay::new(
                outbox.clone(),
                self.backends.bus.clone(),
                RelayConfig::default(),
            );
            tasks.push(tokio::spawn(relay.run(shutdown.clone())));
        }
        for registration in self.registrations.lock().unwrap().iter() {
            let controller = Controller::new(
                PythonReconciler {
                    kind: registration.kind.clone(),
                    adapter: registration.adapter.clone(),
                },
                self.backends.clone(),
            )
            .with_config(registration.config.clone());
            let token = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(err) = controller.run(token).await {
                    tracing::error!(error = %err, "controller stopped");
                }
            }));
        }
        *running = Some((shutdown, tasks));
        Ok(())
    }

    /// Stops gracefully: no new work, work in progress finishes (or is handed back), leases
    /// released. Waits at most `timeout` seconds.
    #[pyo3(signature = (timeout=30.0))]
    fn stop(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let Some((shutdown, tasks)) = self.running.lock().unwrap().take() else {
            return Ok(());
        };
        shutdown.cancel();
        let wait = Duration::from_secs_f64(timeout.max(0.0));
        Self::block_on(py, async move {
            let _ = tokio::time::timeout(wait, futures_join(tasks)).await;
        });
        Ok(())
    }

    /// Starts, then runs until Ctrl-C (or `stop` from another thread), then stops gracefully.
    fn run(&self, py: Python<'_>) -> PyResult<()> {
        self.start()?;
        loop {
            py.detach(|| std::thread::sleep(Duration::from_millis(100)));
            if let Err(err) = py.check_signals() {
                self.stop(py, 30.0)?;
                if err.is_instance_of::<PyKeyboardInterrupt>(py) {
                    return Ok(());
                }
                return Err(err);
            }
            if self.running.lock().unwrap().is_none() {
                return Ok(());
            }
        }
    }

    /// Whether the controllers are running.
    #[getter]
    fn running(&self) -> bool {
        self.running.lock().unwrap().is_some()
    }

    /// Creates an object; returns it (JSON).
    #[pyo3(signature = (kind, name, spec, labels="{}"))]
    fn create(
        &self,
        py: Python<'_>,
        kind: &str,
        name: String,
        spec: &str,
        labels: &str,
    ) -> PyResult<String> {
        let labels: Labels = serde_json::from_str(labels).map_err(|e| json_error("labels", e))?;
        let new = self.new_object(kind, name, labels, parse("spec", spec)?)?;
        let store = self.backends.store.clone();
        let created =
            Self::block_on(py, async move { store.create(new).await }).map_err(core_error)?;
        to_json(&created)
    }

    /// Reads an object (JSON).
    fn get(&self, py: Python<'_>, kind: String, id: &str) -> PyResult<String> {
        let id = object_id(id)?;
        let store = self.backends.store.clone();
        let raw =
            Self::block_on(py, async move { store.get(&kind, id).await }).map_err(core_error)?;
        to_json(&raw)
    }

    /// One page of a kind's objects (JSON `{"items": […], "next": id-or-null}`), optionally
    /// only those with `labels`, after the cursor `after`.
    #[pyo3(signature = (kind, labels="{}", after=None, limit=500))]
    fn list(
        &self,
        py: Python<'_>,
        kind: String,
        labels: &str,
        after: Option<&str>,
        limit: usize,
    ) -> PyResult<String> {
        let labels: Labels = serde_json::from_str(labels).map_err(|e| json_error("labels", e))?;
        let mut query = ListQuery::default().limit(limit);
        query.after = after.map(object_id).transpose()?;
        for (key, value) in labels {
            query = query.label(key, value);
        }
        let store = self.backends.store.clone();
        let page = Self::block_on(py, async move { store.list(&kind, &query).await })
            .map_err(core_error)?;
        to_json(&json!({"items": page.items, "next": page.next}))
    }

    /// Replaces an object's spec and labels, if its version is still `version` (when given).
    #[pyo3(signature = (kind, id, spec, labels="{}", version=None))]
    fn update(
        &self,
        py: Python<'_>,
        kind: String,
        id: &str,
        spec: &str,
        labels: &str,
        version: Option<u64>,
    ) -> PyResult<String> {
        let id = object_id(id)?;
        let labels: Labels = serde_json::from_str(labels).map_err(|e| json_error("labels", e))?;
        let checked = self.new_object(&kind, String::new(), labels, parse("spec", spec)?)?;
        let store = self.backends.store.clone();
        let update = SpecUpdate {
            expected_version: version,
            labels: checked.labels,
            references: checked.references,
            spec: checked.spec,
        };
        let updated = Self::block_on(py, async move { store.update(&kind, id, update).await })
            .map_err(core_error)?;
        to_json(&updated)
    }

    /// Asks for an object's deletion: its reconciler's cleanup runs, then it goes.
    fn delete(&self, py: Python<'_>, kind: String, id: &str) -> PyResult<String> {
        let id = object_id(id)?;
        let store = self.backends.store.clone();
        let deleting = Self::block_on(
            py,
            async move { store.schedule_deletion(&kind, id, None).await },
        )
        .map_err(core_error)?;
        to_json(&deleting)
    }
}

/// Waits for every task (panics and cancellations are the tasks' own business).
async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}
