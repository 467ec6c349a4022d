//! `POST /v0/workloads`: a workload with the services it depends on — database, bucket,
//! domain name, gateway, secret — created in one transaction, all or nothing.
//!
//! ```json
//! {"name": "shop",
//!  "definition": {"yaml_document": "…"},
//!  "instance": {"runtime": "…"},
//!  "database": {AwsRelationalDatabaseDefinition spec},
//!  "bucket": {AwsObjectStorageBucketDefinition spec},
//!  "domain_name": {DomainNameDefinition spec},
//!  "gateway": {GatewayDefinition spec},
//!  "secret": {SecretDefinition spec, with "data"}}
//! ```
//!
//! Every part becomes a definition and an instance named after the workload; the links
//! between them (`definition`, `workload_instance`, the gateway's `domain_name`) are filled in
//! by the server. The answer (201) maps each created object's kind to the object.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Map, Value};
use threeport_core::object::{Labels, NewObject, ObjectId};
use threeport_core::{ApiObject, Error};

use crate::ApiError;
use crate::model::{
    AwsObjectStorageBucketDefinition, AwsObjectStorageBucketInstance,
    AwsRelationalDatabaseDefinition, AwsRelationalDatabaseInstance, DomainNameDefinition,
    DomainNameInstance, GatewayDefinition, GatewayInstance, SecretDefinition, SecretInstance,
    WorkloadDefinition, WorkloadInstance,
};
use crate::registry::plural_path;
use crate::rest::{
    ApiResult, ApiState, body_object, create_once, decode, hand_over_secret, mark_replayed,
    seal_fields, take_secret,
};

/// The `/v0/workloads` route.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/v0/workloads", post(create_workload))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadRequest {
    name: String,
    #[serde(default)]
    labels: Labels,
    definition: Value,
    #[serde(default)]
    instance: Option<Value>,
    #[serde(default)]
    database: Option<Value>,
    #[serde(default)]
    bucket: Option<Value>,
    #[serde(default)]
    domain_name: Option<Value>,
    #[serde(default)]
    gateway: Option<Value>,
    #[serde(default)]
    secret: Option<Value>,
}

/// Builds the objects in order, each with an id chosen up front so later ones can link to it.
struct Plan<'a> {
    state: &'a ApiState,
    name: String,
    labels: Labels,
    objects: Vec<(ObjectId, NewObject)>,
}

impl Plan<'_> {
    /// Adds an object of kind `T` from the request's `part`, with `links` filled in; returns
    /// its id. Errors name the field as `<part>.<field>`.
    fn add<T: ApiObject>(
        &mut self,
        part: &str,
        spec: Value,
        links: &[(&str, ObjectId)],
    ) -> ApiResult<ObjectId> {
        let Value::Object(mut spec) = spec else {
            return Err(ApiError(Error::invalid(part, "must be a JSON object")));
        };
        for (field, id) in links {
            if spec.get(*field).is_some_and(|v| !v.is_null()) {
                return Err(ApiError(Error::invalid(
                    format!("{part}.{field}"),
                    "is set by the server: it links the parts of the workload",
                )));
            }
            spec.insert((*field).to_owned(), Value::String(id.to_string()));
        }
        let entry = self
            .state
            .kinds
            .by_plural(&plural_path(T::KIND))
            .ok_or_else(|| {
                ApiError(Error::invalid(
                    part,
                    format!("{} is not served here", T::KIND),
                ))
            })?;
        let mut spec = Value::Object(spec);
        seal_fields(self.state, entry, &mut spec)?;
        let checked = entry.check(&spec).map_err(|err| match err {
            Error::Invalid { field, message } => {
                let field = field.strip_prefix("spec").unwrap_or(&field);
                ApiError(Error::invalid(format!("{part}{field}"), message))
            }
            other => ApiError(other),
        })?;
        let id = ObjectId::new();
        self.objects.push((
            id,
            NewObject {
                kind: T::KIND.to_owned(),
                name: self.name.clone(),
                labels: self.labels.clone(),
                references: checked.references,
                owners: Vec::new(),
                spec: checked.spec,
            },
        ));
        Ok(id)
    }

    /// A definition from `part` and its instance serving the workload instance.
    fn add_service<D: ApiObject, I: ApiObject>(
        &mut self,
        part: &str,
        spec: Value,
        links: &[(&str, ObjectId)],
        workload: ObjectId,
    ) -> ApiResult<ObjectId> {
        let definition = self.add::<D>(part, spec, links)?;
        self.add::<I>(
            part,
            Value::Object(Map::new()),
            &[("definition", definition), ("workload_instance", workload)],
        )?;
        Ok(definition)
    }
}

async fn create_workload(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let request: WorkloadRequest = decode(body_object(&body, false)?)?;
    let mut plan = Plan {
        state: &state,
        name: request.name,
        labels: request.labels,
        objects: Vec::new(),
    };
    let definition = plan.add::<WorkloadDefinition>("definition", request.definition, &[])?;
    let instance = request
        .instance
        .unwrap_or_else(|| Value::Object(Map::new()));
    let workload =
        plan.add::<WorkloadInstance>("instance", instance, &[("definition", definition)])?;
    if let Some(spec) = request.database {
        plan.add_service::<AwsRelationalDatabaseDefinition, AwsRelationalDatabaseInstance>(
            "database",
            spec,
            &[],
            workload,
        )?;
    }
    if let Some(spec) = request.bucket {
        plan.add_service::<AwsObjectStorageBucketDefinition, AwsObjectStorageBucketInstance>(
            "bucket",
            spec,
            &[],
            workload,
        )?;
    }
    let domain = match request.domain_name {
        Some(spec) => Some(
            plan.add_service::<DomainNameDefinition, DomainNameInstance>(
                "domain_name",
                spec,
                &[],
                workload,
            )?,
        ),
        None => None,
    };
    if let Some(spec) = request.gateway {
        let links: Vec<(&str, ObjectId)> = domain.map(|d| ("domain_name", d)).into_iter().collect();
        plan.add_service::<GatewayDefinition, GatewayInstance>("gateway", spec, &links, workload)?;
    }
    let mut secret = None;
    if let Some(mut spec) = request.secret {
        let entry = state
            .kinds
            .by_plural(&plural_path(SecretDefinition::KIND))
            .ok_or_else(|| ApiError(Error::invalid("secret", "secrets are not served here")))?;
        secret = take_secret(entry, &mut spec).map_err(|ApiError(err)| match err {
            Error::Invalid { message, .. } => ApiError(Error::invalid("secret.data", message)),
            other => ApiError(other),
        })?;
        plan.add_service::<SecretDefinition, SecretInstance>("secret", spec, &[], workload)?;
    }
    let (created, replayed) =
        create_once(&state, &headers, "POST /v0/workloads", &body, plan.objects).await?;
    if let Some(secret) = secret {
        let definition = created
            .iter()
            .find(|o| o.meta.kind == SecretDefinition::KIND)
            .expect("the secret definition was created");
        hand_over_secret(&state, definition, secret).await?;
    }
    let objects: Map<String, Value> = created
        .into_iter()
        .map(|o| {
            let kind = o.meta.kind.clone();
            (kind, serde_json::to_value(o).unwrap_or(Value::Null))
        })
        .collect();
    let mut response = (StatusCode::CREATED, axum::Json(objects)).into_response();
    if replayed {
        mark_replayed(&mut response);
    }
    Ok(response)
}
