//! `ClientCore`: the control-plane client behind `threeport.Client` and
//! `threeport.AsyncClient`. One operation set, called blocking (interpreter released) or as
//! an awaitable; arguments and answers are JSON text.

use std::time::Duration;

use pyo3::prelude::*;
use serde_json::{Value, json};
use threeport_api::{Client, ListParams};
use threeport_core::{Labels, ObjectId, ObjectRef, Propagation};

use crate::errors::{client_error, json_error};
use crate::runtime;

/// A client of one control plane.
#[pyclass(module = "threeport._threeport", frozen)]
pub struct ClientCore {
    client: Client,
}

fn id(args: &Value, field: &str) -> PyResult<ObjectId> {
    args[field]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| crate::errors::validation(field, "not an object id"))
}

fn labels(args: &Value) -> PyResult<Labels> {
    match &args["labels"] {
        Value::Null => Ok(Labels::new()),
        labels => serde_json::from_value(labels.clone()).map_err(|e| json_error("labels", e)),
    }
}

fn owners(args: &Value) -> PyResult<Vec<ObjectRef>> {
    match &args["owners"] {
        Value::Null => Ok(Vec::new()),
        owners => serde_json::from_value(owners.clone()).map_err(|e| json_error("owners", e)),
    }
}

fn propagation(args: &Value) -> PyResult<Propagation> {
    match args["propagation"].as_str() {
        None => Ok(Propagation::Foreground),
        Some(value) => value.parse().map_err(|e: threeport_core::Error| {
            crate::errors::validation("propagation", e.to_string())
        }),
    }
}

/// Runs `op` on `kind` with `args`; answers JSON.
async fn call(client: Client, op: String, kind: String, args: Value) -> PyResult<String> {
    // A kind of one's own may be served at a plural of its own.
    let objects = match args["_plural"].as_str() {
        Some(plural) => client.kind_at(&kind, plural),
        None => client.kind(&kind),
    };
    let answer: Value = match op.as_str() {
        "create" => objects
            .create_owned(
                args["name"].as_str().unwrap_or_default(),
                &labels(&args)?,
                &owners(&args)?,
                &args["spec"],
            )
            .await
            .map_err(client_error)?,
        "get" => objects.get(id(&args, "id")?).await.map_err(client_error)?,
        "list" => {
            let params = ListParams {
                name: args["name"].as_str().map(str::to_owned),
                labels: labels(&args)?,
                references: args["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|pair| {
                        Some((
                            pair[0].as_str()?.to_owned(),
                            pair[1].as_str()?.parse().ok()?,
                        ))
                    })
                    .collect(),
                after: args["after"].as_str().and_then(|a| a.parse().ok()),
                limit: args["limit"].as_u64().map(|l| l as usize),
            };
            let (items, next): (Vec<Value>, _) =
                objects.list(&params).await.map_err(client_error)?;
            json!({"items": items, "next": next})
        }
        "replace" => objects
            .replace(
                id(&args, "id")?,
                args["version"].as_u64().unwrap_or_default(),
                &labels(&args)?,
                &args["spec"],
            )
            .await
            .map_err(client_error)?,
        "patch" => objects
            .patch(id(&args, "id")?, &args["patch"])
            .await
            .map_err(client_error)?,
        "delete" => objects
            .delete_with(id(&args, "id")?, propagation(&args)?)
            .await
            .map_err(client_error)?,
        "deletion_plan" => {
            let plan = objects
                .deletion_plan(id(&args, "id")?, propagation(&args)?)
                .await
                .map_err(client_error)?;
            serde_json::to_value(plan).map_err(|e| json_error("answer", e))?
        }
        "delete_workload" => {
            let plan = client
                .delete_workload(
                    args["name"].as_str().unwrap_or_default(),
                    propagation(&args)?,
                    args["dry_run"].as_bool().unwrap_or(false),
                )
                .await
                .map_err(client_error)?;
            serde_json::to_value(plan).map_err(|e| json_error("answer", e))?
        }
        "create_workload" => {
            let created = client
                .create_workload_json(&args)
                .await
                .map_err(client_error)?;
            serde_json::to_value(created).map_err(|e| json_error("answer", e))?
        }
        other => {
            return Err(crate::errors::validation(
                "op",
                format!("no operation {other:?}"),
            ));
        }
    };
    Ok(answer.to_string())
}

#[pymethods]
impl ClientCore {
    /// A client of the control plane at `url`, with a bearer `token`, a CA (PEM) to trust, a
    /// client identity (certificate and key, PEM) for mutual TLS, a request timeout, and how
    /// often an unavailable answer is retried (creates carry an `Idempotency-Key`, so a retry
    /// never creates twice).
    #[new]
    #[pyo3(signature = (url, token=None, ca_pem=None, identity_pem=None, timeout=30.0, retries=6))]
    fn new(
        url: String,
        token: Option<String>,
        ca_pem: Option<String>,
        identity_pem: Option<String>,
        timeout: f64,
        retries: u32,
    ) -> PyResult<Self> {
        if !(timeout.is_finite() && timeout > 0.0) {
            return Err(crate::errors::validation(
                "timeout",
                format!("{timeout} is not a positive number of seconds"),
            ));
        }
        let retry = threeport_api::Retry {
            retries,
            ..threeport_api::Retry::default()
        };
        let mut builder = Client::builder(url)
            .timeout(Duration::from_secs_f64(timeout))
            .retry(retry);
        if let Some(token) = token {
            builder = builder.token(token);
        }
        if let Some(ca) = ca_pem {
            builder = builder.ca_pem(ca);
        }
        if let Some(identity) = identity_pem {
            builder = builder.identity_pem(identity);
        }
        let _guard = runtime().enter();
        Ok(ClientCore {
            client: builder.build().map_err(client_error)?,
        })
    }

    /// Runs an operation, waiting for the answer with the interpreter released.
    fn call(&self, py: Python<'_>, op: String, kind: String, args: &str) -> PyResult<String> {
        let args: Value = serde_json::from_str(args).map_err(|e| json_error("args", e))?;
        let client = self.client.clone();
        py.detach(|| runtime().block_on(call(client, op, kind, args)))
    }

    /// Runs an operation; returns an awaitable of the answer.
    fn call_async<'py>(
        &self,
        py: Python<'py>,
        op: String,
        kind: String,
        args: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args: Value = serde_json::from_str(args).map_err(|e| json_error("args", e))?;
        let client = self.client.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, call(client, op, kind, args))
    }
}
