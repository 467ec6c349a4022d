//! `POST /v0/configs?apply=false|true`: a Threeport config, as `tptctl create`/`apply` read
//! it (YAML, one PascalCase key), sent as text — what the console's "Create" page posts.
//!
//! The server expands it exactly as `tptctl` does ([`threeport_api::config`]), resolves the
//! objects it names, and writes its parts through the same handlers as `POST /v0/batch` and
//! `PUT /v0/<plural>/<id>` (defaults, sealing, validation, secret hand-over). A config given
//! as text reads no file: file fields are refused, their inline forms work (`YAML` for
//! `YAMLDocument`, `Values` for `ValuesDocument`). Answers 200 with
//! `{"items": [{"kind", "plural", "id", "name", "outcome"}], "notes": [..]}` (outcome
//! `created`, `updated` or `unchanged`); 400 naming the config line for a bad config; 409 if a
//! create finds the object exists.

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use threeport_api::BatchObject;
use threeport_api::config::plan::{self, Objects, Outcome};
use threeport_api::config::{ConfigError, ConfigFile};
use threeport_core::object::{Labels, ObjectId, RawObject};
use threeport_core::store::ListQuery;
use threeport_core::{Api, Dynamic, Error, ErrorKind, Object};

use crate::rest::{ApiError, ApiResult, ApiState, query_pairs, replace_spec};

/// The `/v0/configs` route.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/v0/configs", post(write_config))
        .with_state(state)
}

async fn write_config(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut apply = false;
    for (key, value) in query_pairs(query.as_deref())? {
        match (key.as_str(), value.as_str()) {
            ("apply", "true") => apply = true,
            ("apply", "false") => apply = false,
            ("apply", _) => return Err(ApiError(Error::invalid("apply", "must be true or false"))),
            (other, _) => {
                return Err(ApiError(Error::invalid(
                    other,
                    "unknown parameter: /v0/configs takes apply",
                )));
            }
        }
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError(Error::invalid("config", "is not UTF-8 text")))?;
    let refused = |err: ConfigError| {
        ApiError(match err.kind {
            Some(ErrorKind::AlreadyExists | ErrorKind::Conflict) => Error::conflict(err.message),
            Some(ErrorKind::Unavailable) => Error::unavailable(err.message),
            // A missing object a config names, a bad field: the config's fault.
            _ => Error::invalid("config", err.message),
        })
    };
    let expansion = ConfigFile::from_text("config", text)
        .and_then(|file| file.expand())
        .map_err(refused)?;
    let objects = StoreObjects {
        state: state.clone(),
    };
    let (done, notes) = plan::write(&objects, &expansion, apply)
        .await
        .map_err(refused)?;
    let mut items = Vec::with_capacity(done.len());
    for (object, outcome) in done {
        let plural = threeport_api::plural_path(&object.meta.kind);
        items.push(json!({
            "kind": object.meta.kind,
            "plural": plural,
            "id": object.meta.id,
            "name": object.meta.name,
            "outcome": match outcome {
                Outcome::Created => "created",
                Outcome::Updated => "updated",
                Outcome::Unchanged => "unchanged",
            },
        }));
    }
    Ok((
        StatusCode::OK,
        Json(json!({ "items": items, "notes": notes })),
    ))
}

/// A config's reads and writes, through this server's own handlers.
struct StoreObjects {
    state: ApiState,
}

#[async_trait]
impl Objects for StoreObjects {
    async fn named(&self, kind: &str, name: &str) -> Result<Option<RawObject>, ConfigError> {
        let page = self.state.store.list(kind, &ListQuery::named(name)).await?;
        Ok(page.items.into_iter().next())
    }

    async fn all(&self, kind: &str) -> Result<Vec<RawObject>, ConfigError> {
        let objects = Api::<Dynamic>::of_kind(self.state.store.clone(), kind)?;
        let all = objects
            .list_all(&ListQuery::default().limit(threeport_core::store::MAX_PAGE_SIZE))
            .await?;
        Ok(all.iter().map(Object::to_raw).collect::<Result<_, _>>()?)
    }

    async fn get(&self, kind: &str, id: ObjectId) -> Result<RawObject, ConfigError> {
        Ok(self.state.store.get(kind, id).await?)
    }

    async fn create_batch(&self, objects: &[BatchObject]) -> Result<Vec<RawObject>, ConfigError> {
        let body = serde_json::to_vec(&json!({ "objects": objects })).expect("objects serialize");
        crate::batch::create_objects(&self.state, &HeaderMap::new(), &Bytes::from(body))
            .await
            .map(|(created, _)| created)
            .map_err(|ApiError(err)| err.into())
    }

    async fn replace(
        &self,
        current: &RawObject,
        labels: &Labels,
        spec: &Value,
    ) -> Result<Option<RawObject>, ConfigError> {
        let entry = self
            .state
            .kinds
            .lookup_kind(&self.state.store, &current.meta.kind)
            .await?
            .ok_or_else(|| ConfigError::new(format!("{} is not served", current.meta.kind)))?;
        match replace_spec(
            &self.state,
            &entry,
            current.meta.id,
            Some(current.meta.version),
            labels.clone(),
            spec.clone(),
        )
        .await
        {
            Ok(updated) => Ok(Some(updated)),
            Err(ApiError(err)) if err.kind() == ErrorKind::Conflict => Ok(None),
            Err(ApiError(err)) => Err(err.into()),
        }
    }
}
