//! Read views for people (the console), each one request:
//!
//! | method | path | answers |
//! |---|---|---|
//! | `GET` | `/v0/overview` | every kind served with its count by state; what needs attention, worst first; runtimes; workload instances |
//! | `GET` | `/v0/<plural>/<id>/related` | what the object references, who owns it, what it owns, what references it |
//!
//! Objects appear as [`Summary`]: kind, plural, id, name, state, reason, health.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use threeport_core::object::{LifecycleState, ObjectId, RawObject};
use threeport_core::store::ListQuery;
use threeport_core::{Error, ErrorKind};

use crate::rest::{ApiError, ApiResult, ApiState};

/// Most objects the overview reads per kind; past it the counts say `truncated`.
pub const OVERVIEW_SCAN: usize = 50_000;
/// Most objects each list of the overview (attention, runtimes, workloads) holds.
pub const OVERVIEW_ITEMS: usize = 100;
/// Most objects `related` lists per kind and field that references the object.
const RELATED_PER_FIELD: usize = 100;

/// The view routes.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/v0/overview", get(overview))
        .route("/v0/{plural}/{id}/related", get(related))
        .with_state(state)
}

/// One object, as the views list it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Its kind.
    pub kind: String,
    /// Where its kind is served (`/v0/<plural>`).
    pub plural: String,
    /// Its id.
    pub id: ObjectId,
    /// Its name.
    pub name: String,
    /// Lifecycle state.
    pub state: LifecycleState,
    /// Why it failed, was interrupted, or the last retryable error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Consecutive failed reconciles.
    pub failures: u32,
    /// Live health (`status.details.health`), for kinds that report one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Value>,
    /// `type=status` of each condition (`ClusterReady=True`).
    pub conditions: Vec<String>,
    /// Whether deletion was requested.
    pub deleting: bool,
}

impl Summary {
    fn of(obj: &RawObject, plural: &str) -> Summary {
        let health = obj.status.details.get("health").filter(|h| !h.is_null());
        Summary {
            kind: obj.meta.kind.clone(),
            plural: plural.to_owned(),
            id: obj.meta.id,
            name: obj.meta.name.clone(),
            state: obj.status.state,
            reason: obj.status.reason.clone(),
            failures: obj.status.failures,
            health: health.cloned(),
            conditions: obj
                .status
                .conditions
                .iter()
                .map(|c| format!("{}={:?}", c.type_, c.status))
                .collect(),
            deleting: obj.meta.deletion_scheduled_at.is_some(),
        }
    }

    /// How urgently a person should look, lower first; `None`: nothing wrong is known.
    fn attention(&self) -> Option<u8> {
        let health = self
            .health
            .as_ref()
            .and_then(|h| h["status"].as_str())
            .unwrap_or("");
        match self.state {
            LifecycleState::Interrupted => Some(0),
            LifecycleState::CreationFailed => Some(1),
            _ if matches!(health, "degraded" | "down") => Some(2),
            _ if self.failures > 0 && self.reason.is_some() => Some(3),
            _ => None,
        }
    }
}

/// A kind's line in the overview.
#[derive(Debug, Serialize)]
struct KindCount {
    kind: String,
    plural: String,
    /// Spec fields kept sealed (shown redacted).
    sealed_fields: Vec<String>,
    /// A spec field of secret values, never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_field: Option<String>,
    total: usize,
    /// Objects by lifecycle state.
    states: BTreeMap<String, usize>,
    /// Whether there were more than [`OVERVIEW_SCAN`] objects (the rest are not counted).
    truncated: bool,
}

#[derive(Debug, Serialize)]
struct Overview {
    kinds: Vec<KindCount>,
    attention: Vec<Summary>,
    runtimes: Vec<Summary>,
    workloads: Vec<Summary>,
}

async fn overview(State(state): State<ApiState>) -> ApiResult<Json<Value>> {
    let mut view = Overview {
        kinds: Vec::new(),
        attention: Vec::new(),
        runtimes: Vec::new(),
        workloads: Vec::new(),
    };
    for entry in state.kinds.served(&state.store).await? {
        let mut count = KindCount {
            kind: entry.kind.to_owned(),
            plural: entry.plural.clone(),
            sealed_fields: entry.sealed_fields.clone(),
            secret_field: entry.secret_field.map(str::to_owned),
            total: 0,
            states: BTreeMap::new(),
            truncated: false,
        };
        let mut query = ListQuery::default().limit(threeport_core::store::MAX_PAGE_SIZE);
        loop {
            let page = state.store.list(entry.kind, &query).await?;
            for obj in &page.items {
                count.total += 1;
                let state_name = serde_json::to_value(obj.status.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                *count.states.entry(state_name).or_default() += 1;
                let summary = Summary::of(obj, &entry.plural);
                if summary.attention().is_some() {
                    view.attention.push(summary.clone());
                }
                match entry.kind {
                    "KubernetesRuntimeInstance" if view.runtimes.len() < OVERVIEW_ITEMS => {
                        view.runtimes.push(summary)
                    }
                    "WorkloadInstance" | "HelmWorkloadInstance"
                        if view.workloads.len() < OVERVIEW_ITEMS =>
                    {
                        view.workloads.push(summary)
                    }
                    _ => {}
                }
            }
            match page.next {
                Some(next) if count.total < OVERVIEW_SCAN => query.after = Some(next),
                Some(_) => {
                    count.truncated = true;
                    break;
                }
                None => break,
            }
        }
        view.kinds.push(count);
    }
    view.attention
        .sort_by(|a, b| (a.attention(), &a.kind, &a.name).cmp(&(b.attention(), &b.kind, &b.name)));
    view.attention.truncate(OVERVIEW_ITEMS);
    Ok(Json(
        serde_json::to_value(view).expect("the overview serializes"),
    ))
}

/// Another object, as `related` names it.
#[derive(Debug, Serialize)]
struct Link {
    /// The spec field of the reference (references, referenced by).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(flatten)]
    object: Summary,
}

#[derive(Debug, Serialize)]
struct Related {
    references: Vec<Link>,
    owners: Vec<Link>,
    owns: Vec<Link>,
    referenced_by: Vec<Link>,
}

/// The object `kind`/`id` as a link; `None` if it is gone (removed meanwhile) or its kind is
/// no longer served.
async fn link(
    state: &ApiState,
    field: Option<&str>,
    kind: &str,
    id: ObjectId,
) -> ApiResult<Option<Link>> {
    let Some(entry) = state.kinds.lookup_kind(&state.store, kind).await? else {
        return Ok(None);
    };
    match state.store.get(kind, id).await {
        Ok(obj) => Ok(Some(Link {
            field: field.map(str::to_owned),
            object: Summary::of(&obj, &entry.plural),
        })),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(ApiError(err)),
    }
}

async fn related(
    State(state): State<ApiState>,
    Path((plural, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let entry = state
        .kinds
        .lookup(&state.store, &plural)
        .await?
        .ok_or_else(|| ApiError(Error::not_found("object kind", format!("/v0/{plural}"))))?;
    let id: ObjectId = id.parse().map_err(ApiError)?;
    let obj = state.store.get(entry.kind, id).await?;
    let mut view = Related {
        references: Vec::new(),
        owners: Vec::new(),
        owns: Vec::new(),
        referenced_by: Vec::new(),
    };
    for reference in &obj.meta.references {
        let found = link(
            &state,
            Some(&reference.field),
            &reference.kind,
            reference.id,
        )
        .await?;
        view.references.extend(found);
    }
    for owner in &obj.meta.owners {
        view.owners
            .extend(link(&state, None, &owner.kind, owner.id).await?);
    }
    for dependent in state.store.dependents(entry.kind, id).await? {
        view.owns
            .extend(link(&state, None, &dependent.kind, dependent.id).await?);
    }
    // Whatever may reference it: every kind's reference fields, asked at once.
    let mut asks = Vec::new();
    for other in state.kinds.served(&state.store).await? {
        for field in other.reference_fields.clone() {
            let store = state.store.clone();
            let other = other.clone();
            asks.push(async move {
                let query = ListQuery::default()
                    .referencing(field.clone(), id)
                    .limit(RELATED_PER_FIELD);
                let page = store.list(other.kind, &query).await?;
                Ok::<_, Error>(
                    page.items
                        .iter()
                        .map(|o| Link {
                            field: Some(field.clone()),
                            object: Summary::of(o, &other.plural),
                        })
                        .collect::<Vec<_>>(),
                )
            });
        }
    }
    for links in futures::future::try_join_all(asks).await? {
        view.referenced_by.extend(links);
    }
    Ok(Json(
        serde_json::to_value(view).expect("related objects serialize"),
    ))
}
