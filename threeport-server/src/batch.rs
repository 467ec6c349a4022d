//! `POST /v0/batch`: objects of any served kinds created in one transaction, all or nothing.
//!
//! ```json
//! {"objects": [
//!   {"kind": "KubernetesRuntimeDefinition", "id": "0190…", "name": "local",
//!    "spec": {"infra_provider": "kind"}},
//!   {"kind": "KubernetesRuntimeInstance", "name": "local",
//!    "owners": [{"kind": "KubernetesRuntimeDefinition", "id": "0190…"}],
//!    "spec": {"definition": "0190…", "location": "Europe:Paris"}}
//! ]}
//! ```
//!
//! This is how clients create Threeport's abstractions (a definition and its instance, a
//! runtime with its EKS shape) without a client-side saga: an object may carry the `id` it is
//! to have (a UUID the client chose, typically v7), so later objects of the same batch can
//! reference or be owned by it. Each object goes through exactly what `POST /v0/<plural>` does
//! (defaults, sealing, validation, secret hand-over); errors name the object by its index
//! (`objects[1].spec.location`). The answer (201) is `{"items": [objects, in request order]}`.
//! `Idempotency-Key` works as for single creates.

use std::collections::HashSet;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::Value;
use threeport_core::object::{Labels, NewObject, ObjectId, ObjectRef};
use threeport_core::{Error, SecretValues};

use crate::ApiError;
use crate::rest::{
    ApiResult, ApiState, Write, body_object, create_once, decode, hand_over_secret, mark_replayed,
    prepare, take_secret, within,
};

/// Most objects one batch may create.
pub const MAX_BATCH: usize = 100;

/// The `/v0/batch` route.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/v0/batch", post(create_batch))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    objects: Vec<BatchObject>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchObject {
    kind: String,
    #[serde(default)]
    id: Option<ObjectId>,
    name: String,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    owners: Vec<ObjectRef>,
    spec: Value,
}

async fn create_batch(
    State(state): State<ApiState>,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult<Response> {
    let (created, replayed) = create_objects(&state, &headers, &raw).await?;
    let mut response = (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "items": created })),
    )
        .into_response();
    if replayed {
        mark_replayed(&mut response);
    }
    Ok(response)
}

/// What `POST /v0/batch` does with its body `raw` (`{"objects": [..]}`): the objects created
/// in request order, and whether an `Idempotency-Key` replayed an earlier request's. Also how
/// `/v0/configs` creates a config's parts.
pub(crate) async fn create_objects(
    state: &ApiState,
    headers: &HeaderMap,
    raw: &Bytes,
) -> ApiResult<(Vec<threeport_core::object::RawObject>, bool)> {
    let request: BatchRequest = decode(body_object(raw, Write::Create)?)?;
    if request.objects.is_empty() || request.objects.len() > MAX_BATCH {
        return Err(ApiError(Error::invalid(
            "objects",
            format!(
                "must hold 1 to {MAX_BATCH} objects (got {})",
                request.objects.len()
            ),
        )));
    }
    let mut ids = HashSet::new();
    let mut objects = Vec::with_capacity(request.objects.len());
    let mut secrets: Vec<(ObjectId, SecretValues)> = Vec::new();
    for (index, mut object) in request.objects.into_iter().enumerate() {
        let at = format!("objects[{index}]");
        let entry = state
            .kinds
            .lookup_kind(&state.store, &object.kind)
            .await?
            .ok_or_else(|| {
                ApiError(Error::invalid(
                    format!("{at}.kind"),
                    format!("{:?} is not a kind served here", object.kind),
                ))
            })?;
        let id = object.id.unwrap_or_else(ObjectId::new);
        if !ids.insert(id) {
            return Err(ApiError(Error::invalid(
                format!("{at}.id"),
                format!("{id} is given to another object of this batch"),
            )));
        }
        let entry = &*entry;
        let secret = take_secret(entry, &mut object.spec)
            .map_err(|err| within(&format!("{at}.spec"), err))?;
        let checked = prepare(state, entry, object.spec)
            .await
            .map_err(|err| within(&format!("{at}.spec"), err))?;
        if let Some(secret) = secret {
            secrets.push((id, secret));
        }
        objects.push((
            id,
            NewObject {
                kind: entry.kind.to_owned(),
                name: object.name,
                labels: object.labels,
                references: checked.references,
                owners: object.owners,
                spec: checked.spec,
            },
        ));
    }
    let ids: Vec<ObjectId> = objects.iter().map(|(id, _)| *id).collect();
    let (created, replayed) = create_once(state, headers, "POST /v0/batch", raw, objects)
        .await
        .map_err(|ApiError(err)| match err {
            // The store names a taken id in `ids`: name the object that asked for it.
            Error::Invalid { field, message } if field == "ids" => {
                let index = ids.iter().position(|id| message.contains(&id.to_string()));
                let field = index.map_or(field, |i| format!("objects[{i}].id"));
                ApiError(Error::invalid(field, message))
            }
            other => ApiError(other),
        })?;
    for (id, secret) in secrets {
        if let Some(object) = created.iter().find(|o| o.meta.id == id) {
            hand_over_secret(state, object, secret).await?;
        }
    }
    Ok((created, replayed))
}
