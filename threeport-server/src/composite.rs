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
//! A Helm workload is the same request with `helm_definition` (a HelmWorkloadDefinition spec)
//! instead of `definition`: its `instance` is a HelmWorkloadInstance, and of the services it
//! takes a `secret` (the others attach to manifest workloads only).
//!
//! Every part becomes a definition and an instance, named after the workload unless the part
//! names itself (`"secret": {"name": "wordpress-secret", …}` makes `wordpress-secret`); the
//! links between them (`definition`, `workload_instance`, the gateway's `domain_name`) are
//! filled in by the server. The answer (201) maps each created object's kind to the object.
//!
//! Every part is owned, directly or through its service definition, by the workload
//! definition: `DELETE /v0/workloads/{name}` deletes that definition with foreground
//! propagation, which takes every part with it (instances before their definitions), and
//! `?dry_run=true` lists what would go.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use serde::Deserialize;
use serde_json::{Map, Value};
use threeport_core::object::{Labels, NewObject, ObjectId, ObjectRef};
use threeport_core::store::ListQuery;
use threeport_core::{ApiObject, Error};

use crate::ApiError;
use crate::model::{
    AwsObjectStorageBucketDefinition, AwsObjectStorageBucketInstance,
    AwsRelationalDatabaseDefinition, AwsRelationalDatabaseInstance, DomainNameDefinition,
    DomainNameInstance, GatewayDefinition, GatewayInstance, HelmWorkloadDefinition,
    HelmWorkloadInstance, SecretDefinition, SecretInstance, WorkloadDefinition, WorkloadInstance,
};
use crate::registry::plural_path;
use crate::rest::{
    ApiResult, ApiState, Write, body_object, create_once, decode, delete_options, hand_over_secret,
    mark_replayed, prepare, preview, take_secret, within,
};

/// The `/v0/workloads` routes.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/v0/workloads", post(create_workload))
        .route("/v0/workloads/{name}", delete(delete_workload))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadRequest {
    name: String,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    definition: Option<Value>,
    #[serde(default)]
    helm_definition: Option<Value>,
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
    async fn add<T: ApiObject>(
        &mut self,
        part: &str,
        spec: Value,
        links: &[(&str, ObjectId)],
        owner: Option<ObjectRef>,
    ) -> ApiResult<ObjectId> {
        let Value::Object(mut spec) = spec else {
            return Err(ApiError(Error::invalid(part, "must be a JSON object")));
        };
        let name = match spec.remove("name") {
            None | Some(Value::Null) => self.name.clone(),
            Some(Value::String(name)) => name,
            Some(_) => {
                return Err(ApiError(Error::invalid(
                    format!("{part}.name"),
                    "must be a string: the name of this part's objects",
                )));
            }
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
        let checked = prepare(self.state, entry, Value::Object(spec))
            .await
            .map_err(|err| within(part, err))?;
        let id = ObjectId::new();
        self.objects.push((
            id,
            NewObject {
                kind: T::KIND.to_owned(),
                name,
                labels: self.labels.clone(),
                references: checked.references,
                owners: owner.into_iter().collect(),
                spec: checked.spec,
            },
        ));
        Ok(id)
    }

    /// A definition from `part`, owned by the workload definition `root`, and its instance
    /// serving the workload instance (linked by its field `workload_field`), owned by that
    /// definition (so it goes first).
    async fn add_service<D: ApiObject, I: ApiObject>(
        &mut self,
        part: &str,
        spec: Value,
        links: &[(&str, ObjectId)],
        (workload_field, workload): (&str, ObjectId),
        root: &ObjectRef,
    ) -> ApiResult<ObjectId> {
        let name = spec.get("name").cloned();
        let definition = self.add::<D>(part, spec, links, Some(root.clone())).await?;
        let mut instance = Map::new();
        if let Some(name) = name {
            instance.insert("name".into(), name);
        }
        self.add::<I>(
            part,
            Value::Object(instance),
            &[("definition", definition), (workload_field, workload)],
            Some(ObjectRef::new(D::KIND, definition)),
        )
        .await?;
        Ok(definition)
    }
}

async fn create_workload(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let request: WorkloadRequest = decode(body_object(&body, Write::Create)?)?;
    let mut plan = Plan {
        state: &state,
        name: request.name,
        labels: request.labels,
        objects: Vec::new(),
    };
    // The workload definition owns every other part: it is what the workload is deleted by.
    let instance = request
        .instance
        .unwrap_or_else(|| Value::Object(Map::new()));
    let (root, workload) = match (request.definition, request.helm_definition) {
        (Some(spec), None) => {
            let definition = plan
                .add::<WorkloadDefinition>("definition", spec, &[], None)
                .await?;
            let root = ObjectRef::new(WorkloadDefinition::KIND, definition);
            let links = [("definition", definition)];
            let instance = plan
                .add::<WorkloadInstance>("instance", instance, &links, Some(root.clone()))
                .await?;
            (root, ("workload_instance", instance))
        }
        (None, Some(spec)) => {
            let definition = plan
                .add::<HelmWorkloadDefinition>("helm_definition", spec, &[], None)
                .await?;
            let root = ObjectRef::new(HelmWorkloadDefinition::KIND, definition);
            let links = [("definition", definition)];
            let instance = plan
                .add::<HelmWorkloadInstance>("instance", instance, &links, Some(root.clone()))
                .await?;
            for (part, given) in [
                ("database", request.database.is_some()),
                ("bucket", request.bucket.is_some()),
                ("domain_name", request.domain_name.is_some()),
                ("gateway", request.gateway.is_some()),
            ] {
                if given {
                    return Err(ApiError(Error::invalid(
                        part,
                        "attaches to a manifest workload (`definition`), not a Helm workload",
                    )));
                }
            }
            (root, ("helm_workload_instance", instance))
        }
        (Some(_), Some(_)) => {
            return Err(ApiError(Error::invalid(
                "helm_definition",
                "a workload has either `definition` (manifests) or `helm_definition`, not both",
            )));
        }
        (None, None) => {
            return Err(ApiError(Error::invalid(
                "definition",
                "required: the workload's manifests (or `helm_definition` for a Helm chart)",
            )));
        }
    };
    if let Some(spec) = request.database {
        plan.add_service::<AwsRelationalDatabaseDefinition, AwsRelationalDatabaseInstance>(
            "database",
            spec,
            &[],
            workload,
            &root,
        )
        .await?;
    }
    if let Some(spec) = request.bucket {
        plan.add_service::<AwsObjectStorageBucketDefinition, AwsObjectStorageBucketInstance>(
            "bucket",
            spec,
            &[],
            workload,
            &root,
        )
        .await?;
    }
    let domain = match request.domain_name {
        Some(spec) => Some(
            plan.add_service::<DomainNameDefinition, DomainNameInstance>(
                "domain_name",
                spec,
                &[],
                workload,
                &root,
            )
            .await?,
        ),
        None => None,
    };
    if let Some(spec) = request.gateway {
        let links: Vec<(&str, ObjectId)> = domain.map(|d| ("domain_name", d)).into_iter().collect();
        plan.add_service::<GatewayDefinition, GatewayInstance>(
            "gateway", spec, &links, workload, &root,
        )
        .await?;
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
        plan.add_service::<SecretDefinition, SecretInstance>("secret", spec, &[], workload, &root)
            .await?;
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

/// `DELETE /v0/workloads/{name}`: the workload definition named `name`, and with it (owners,
/// foreground by default) every part the composite create made; `?dry_run=true` answers
/// what would be deleted, `?propagation=orphan` keeps the parts.
async fn delete_workload(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (propagation, dry_run) = delete_options(raw.as_deref())?;
    threeport_core::object::validate_name("name", &name)?;
    // A manifest workload, else a Helm workload, of that name.
    let mut root = None;
    for kind in [WorkloadDefinition::KIND, HelmWorkloadDefinition::KIND] {
        let found = state
            .store
            .list(kind, &ListQuery::named(name.as_str()))
            .await?;
        if let Some(definition) = found.items.into_iter().next() {
            root = Some(ObjectRef::new(kind, definition.meta.id));
            break;
        }
    }
    let Some(root) = root else {
        return Err(ApiError(Error::not_found("Workload", name)));
    };
    if dry_run {
        return preview(&*state.store, &root, propagation).await;
    }
    let plan = threeport_core::relation::deletion_plan(&*state.store, &root, propagation).await?;
    state
        .store
        .schedule_deletion_with(&root.kind, root.id, None, propagation)
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(plan)).into_response())
}
