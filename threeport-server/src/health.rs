//! `PUT /v0/workload-instances/{id}/health`: where an in-cluster agent reports what it sees
//! of a workload instance (a [`HealthReport`]); answers `{"recorded": true}`, 404 for an
//! instance that is gone, 503 with `Retry-After` while a reconcile holds the instance. Written into the instance's status under the
//! instance's lease, as the control plane's own watchers do ([`record_health`]).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use serde_json::{Value, json};
use threeport_controllers::health::{Reported, record_health};
use threeport_core::{Backends, Error, ObjectId};

use crate::model::HealthReport;
use crate::rest::{ApiError, ApiResult, ApiState, decode};

/// The health-report route.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/v0/workload-instances/{id}/health", put(report))
        .with_state(state)
}

async fn report(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let id: ObjectId = id
        .parse()
        .map_err(|_| ApiError(Error::invalid("id", format!("{id:?} is not an object id"))))?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError(Error::invalid("body", format!("not valid JSON: {e}"))))?;
    let Value::Object(map) = value else {
        return Err(ApiError(Error::invalid("body", "must be a JSON object")));
    };
    let report: HealthReport = decode(map)?;
    let backends = Backends {
        store: state.store.clone(),
        bus: state.bus.clone(),
        locker: state.locker.clone(),
    };
    match record_health(&backends, id, &report, "api-health-report").await? {
        Reported::Recorded => Ok(axum::Json(json!({"recorded": true})).into_response()),
        Reported::Gone => Err(ApiError(Error::not_found("WorkloadInstance", id.to_string()))),
        Reported::Busy => Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            axum::Json(json!({"error": "unavailable",
                              "message": "the instance is being reconciled: send the report again"})),
        )
            .into_response()),
    }
}
