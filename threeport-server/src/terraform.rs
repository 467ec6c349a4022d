//! The Terraform actions beside the generic routes:
//!
//! - `POST /v0/terraform-instances/{id}/approve` with `{"plan": "<id>"}`: applies exactly the
//!   plan awaiting approval (`status.details.plan`), by recording it as the instance's
//!   `approved_plan`. Refused (409) when no plan waits, when another plan replaced the one
//!   named, or when the plan is stale (the configuration, variables or account changed since
//!   it was made: a new plan is on its way). A plan the state outran (another apply since)
//!   is found stale by Terraform at apply, and planned again.
//! - `GET /v0/terraform-instances/{id}/outputs[?sensitive=true]`: the outputs, name →
//!   `{"sensitive", "value"}`; sensitive values (sealed in status) are opened only when
//!   asked for. Every API token may ask today (tokens carry no scopes yet).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use threeport_api::model::{TerraformDefinition, TerraformInstance};
use threeport_controllers::terraform::{inputs_digest, output_field};
use threeport_core::{Api, Error, ObjectId};

use crate::rest::{ApiError, ApiResult, ApiState, Write, body_object, decode};

/// The Terraform routes.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/v0/terraform-instances/{id}/approve", post(approve))
        .route("/v0/terraform-instances/{id}/outputs", get(outputs))
        .with_state(state)
}

fn object_id(id: &str) -> ApiResult<ObjectId> {
    id.parse()
        .map_err(|_| ApiError(Error::invalid("id", format!("{id:?} is not an object id"))))
}

/// What `approve` takes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Approval {
    /// The plan approved (`status.details.plan.id`).
    plan: String,
}

async fn approve(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let id = object_id(&id)?;
    let approval: Approval = decode(body_object(&body, Write::Change)?)?;
    let instances = Api::<TerraformInstance>::new(state.store.clone());
    let mut instance = instances.get(id).await?;
    if instance.is_deleting() {
        return Err(ApiError(Error::conflict(format!(
            "TerraformInstance {} is being deleted",
            instance.meta.name
        ))));
    }
    let definition = Api::<TerraformDefinition>::new(state.store.clone())
        .get(instance.spec.definition)
        .await?;
    let refused = |message: String| Err(ApiError(Error::conflict(message)));
    let Some(plan) = instance
        .status
        .details
        .plan
        .clone()
        .filter(|plan| plan.awaiting_approval)
    else {
        return refused(format!(
            "plan: no plan of TerraformInstance {} awaits approval",
            instance.meta.name
        ));
    };
    if plan.id != approval.plan {
        return refused(format!(
            "plan: {} is not the plan awaiting approval ({}): it was replaced",
            approval.plan, plan.id
        ));
    }
    if plan.inputs != inputs_digest(&definition.spec, &instance.spec) {
        return refused(format!(
            "plan: {} is stale: the configuration, variables or account changed since it was \
             made; a new plan is on its way",
            plan.id
        ));
    }
    instance.spec.approved_plan = Some(plan.id);
    let updated = instances.update(&instance).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(updated.to_raw()?)).into_response())
}

/// `?sensitive=true|false` (default false); anything else is a 400 naming the parameter.
fn sensitive_asked(query: Option<&str>) -> ApiResult<bool> {
    let mut asked = false;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (key, value) {
            ("sensitive", "true") => asked = true,
            ("sensitive", "false") => asked = false,
            ("sensitive", other) => {
                return Err(ApiError(Error::invalid(
                    "sensitive",
                    format!("must be true or false, not {other:?}"),
                )));
            }
            (other, _) => {
                return Err(ApiError(Error::invalid(
                    other,
                    "unknown query parameter (only `sensitive`)",
                )));
            }
        }
    }
    Ok(asked)
}

async fn outputs(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let id = object_id(&id)?;
    let sensitive = sensitive_asked(query.as_deref())?;
    let instance = Api::<TerraformInstance>::new(state.store.clone())
        .get(id)
        .await?;
    let mut outputs = Map::new();
    for (name, output) in &instance.status.details.outputs {
        let value = match (&output.sealed, sensitive) {
            (Some(sealed), true) => {
                let opened = state.sealer.open(&output_field(name), sealed)?;
                serde_json::from_str(&opened).unwrap_or(Value::String(opened))
            }
            (Some(_), false) => Value::Null,
            (None, _) => output.value.clone().unwrap_or(Value::Null),
        };
        outputs.insert(
            name.clone(),
            json!({"sensitive": output.sensitive, "value": value}),
        );
    }
    Ok(axum::Json(Value::Object(outputs)).into_response())
}
