//! The engine API: the control plane's store, bus and locker over HTTP under `/v0/engine`, for
//! reconcilers that run elsewhere with only a URL and a token (their client side is
//! [`threeport_api::remote`]).
//!
//! - `POST /v0/engine/store`: one [`Store`](threeport_core::Store) call ([`StoreCall`]).
//!   Objects of served kinds are admitted as the REST API admits them (defaults, sealed
//!   fields, spec checks naming the field); secret values are refused (they go through REST).
//! - `POST /v0/engine/locks`: leases with fencing tokens ([`LockCall`]).
//! - `POST /v0/engine/bus/publish`; `POST /v0/engine/subscriptions` joins a consumer group;
//!   `POST /v0/engine/subscriptions/{id}/next?wait_ms=` long-polls for the next delivery
//!   (`null` when none came within the wait); `POST /v0/engine/deliveries/{id}` settles one
//!   ([`Settle`]); `DELETE /v0/engine/subscriptions/{id}` leaves the group.
//!
//! The server holds the bus's subscriptions and unsettled deliveries for the remote members:
//! an unsettled delivery is redelivered by the bus after its ack-wait, as in-process, and the
//! server forgets deliveries past twice their ack-wait and members that stopped asking. A
//! token limited to kinds ([`Scope::Reconcile`]) writes, leases, publishes and subscribes for
//! those kinds only (403 otherwise).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use threeport_api::remote::wire::{
    LockCall, MAX_WAIT, Publish, RemoteDelivery, Settle, StoreCall, Subscribed,
};
use threeport_core::object::Reference;
use threeport_core::{Delivery, Error, NewObject, ObjectId, SubscribeOptions, Subscription};
use tokio_util::sync::CancellationToken;

use crate::auth::{Scope, forbidden};
use crate::rest::{ApiError, ApiState, prepare, take_secret};

/// The engine API's routes on `api`'s backends; long-polls end when `stopping` is cancelled.
pub fn routes(api: ApiState, stopping: CancellationToken) -> Router {
    let engine = Arc::new(EngineApi {
        api,
        stopping,
        subscriptions: Mutex::default(),
        deliveries: Mutex::default(),
        last_sweep: Mutex::new(Instant::now()),
    });
    Router::new()
        .route("/v0/engine/store", post(store_call))
        .route("/v0/engine/locks", post(lock_call))
        .route("/v0/engine/bus/publish", post(publish))
        .route("/v0/engine/subscriptions", post(subscribe))
        .route("/v0/engine/subscriptions/{id}", delete(unsubscribe))
        .route("/v0/engine/subscriptions/{id}/next", post(next))
        .route("/v0/engine/deliveries/{id}", post(settle))
        .with_state(engine)
}

/// The backends, and what the server holds for remote members of consumer groups.
struct EngineApi {
    api: ApiState,
    stopping: CancellationToken,
    subscriptions: Mutex<HashMap<String, Arc<HeldSubscription>>>,
    deliveries: Mutex<HashMap<String, Arc<HeldDelivery>>>,
    last_sweep: Mutex<Instant>,
}

/// A bus subscription taken for a remote member.
struct HeldSubscription {
    options: SubscribeOptions,
    /// One `next` at a time: a member asks again once it has a free worker.
    subscription: tokio::sync::Mutex<Box<dyn Subscription>>,
    touched: Mutex<Instant>,
}

/// A delivery a remote member has taken and not settled yet.
struct HeldDelivery {
    kind: String,
    ack_wait: Duration,
    delivery: tokio::sync::Mutex<Option<Delivery>>,
    touched: Mutex<Instant>,
}

/// How long a member may go without asking for a delivery before the server forgets it (it
/// joins again when it asks: see [`threeport_api::remote`]).
fn idle_limit(options: &SubscribeOptions) -> Duration {
    (options.ack_wait * 4).max(Duration::from_secs(120))
}

impl EngineApi {
    /// Forgets deliveries past twice their ack-wait (the bus has handed them to someone
    /// else) and members that stopped asking; at most once a second.
    fn sweep(&self) {
        let now = Instant::now();
        {
            let mut last = self.last_sweep.lock().unwrap();
            if now.duration_since(*last) < Duration::from_secs(1) {
                return;
            }
            *last = now;
        }
        self.deliveries.lock().unwrap().retain(|_, held| {
            now.duration_since(*held.touched.lock().unwrap()) < held.ack_wait * 2
        });
        self.subscriptions.lock().unwrap().retain(|_, held| {
            let idle = now.duration_since(*held.touched.lock().unwrap());
            idle < idle_limit(&held.options) || held.subscription.try_lock().is_err()
        });
    }

    fn subscription(&self, id: &str) -> Result<Arc<HeldSubscription>, Refusal> {
        self.subscriptions
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Refusal::from(Error::not_found("subscription", id)))
    }
}

/// Why an engine call was refused: an error of the backends, or a token's limits.
enum Refusal {
    Api(ApiError),
    Forbidden(String),
}

impl From<Error> for Refusal {
    fn from(err: Error) -> Self {
        Refusal::Api(ApiError(err))
    }
}

impl From<ApiError> for Refusal {
    fn from(err: ApiError) -> Self {
        Refusal::Api(err)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Api(err) => err.into_response(),
            Refusal::Forbidden(message) => forbidden(message),
        }
    }
}

type Answer<T = Json<Value>> = Result<T, Refusal>;

/// The request's scope: everything when authentication is off.
fn scope_of(scope: Option<Extension<Scope>>) -> Scope {
    scope.map_or(Scope::Full, |Extension(scope)| scope)
}

fn check_writes<'a>(scope: &Scope, kinds: impl IntoIterator<Item = &'a str>) -> Answer<()> {
    for kind in kinds {
        scope.check_write(kind).map_err(Refusal::Forbidden)?;
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Answer<T> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body)).map_err(
        |err| {
            let path = err.path().to_string();
            let field = if path == "." { "body".to_owned() } else { path };
            Refusal::from(Error::invalid(field, err.into_inner().to_string()))
        },
    )
}

fn json(value: impl serde::Serialize) -> Answer {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| Refusal::from(Error::invalid("answer", e.to_string())))
}

/// A spec of `kind` as the REST API would store it, with the references it holds, if `kind`
/// is served; `None` for other kinds (taken as they are).
async fn admit(state: &ApiState, kind: &str, spec: &mut Value) -> Answer<Option<Vec<Reference>>> {
    let Some(entry) = state.kinds.lookup_kind(&state.store, kind).await? else {
        return Ok(None);
    };
    let checked = admit_spec(state, &entry, std::mem::take(spec)).await?;
    *spec = checked.spec;
    Ok(Some(checked.references))
}

/// `object` as the REST API would store it.
async fn admit_object(state: &ApiState, object: &mut NewObject) -> Answer<()> {
    if let Some(references) = admit(state, &object.kind, &mut object.spec).await? {
        object.references = references;
    }
    Ok(())
}

/// `objects` as the REST API would store them.
async fn admit_all(
    state: &ApiState,
    mut objects: Vec<(ObjectId, NewObject)>,
) -> Answer<Vec<(ObjectId, NewObject)>> {
    for (_, object) in &mut objects {
        admit_object(state, object).await?;
    }
    Ok(objects)
}

async fn admit_spec(
    state: &ApiState,
    entry: &crate::KindEntry,
    mut spec: Value,
) -> Answer<crate::CheckedSpec> {
    if take_secret(entry, &mut spec)?.is_some() {
        let field = entry.secret_field.unwrap_or("secret");
        return Err(Error::invalid(
            format!("spec.{field}"),
            "secret values are handed over by the REST API (POST /v0/<plural>), never through \
             the engine API",
        )
        .into());
    }
    Ok(prepare(state, entry, spec).await?)
}

async fn store_call(
    State(engine): State<Arc<EngineApi>>,
    scope: Option<Extension<Scope>>,
    body: Bytes,
) -> Answer {
    let call: StoreCall = decode(&body)?;
    check_writes(&scope_of(scope), call.written_kinds())?;
    let state = &engine.api;
    let store = &state.store;
    match call {
        StoreCall::Create { mut object } => {
            admit_object(state, &mut object).await?;
            json(store.create(object).await?)
        }
        StoreCall::CreateAll { objects } => {
            json(store.create_all(admit_all(state, objects).await?).await?)
        }
        StoreCall::CreateAllOnce { key, objects } => json(
            store
                .create_all_once(&key, admit_all(state, objects).await?)
                .await?,
        ),
        StoreCall::Get { kind, id } => json(store.get(&kind, id).await?),
        StoreCall::List { kind, query } => json(store.list(&kind, &query).await?),
        StoreCall::Update {
            kind,
            id,
            mut update,
        } => {
            if let Some(references) = admit(state, &kind, &mut update.spec).await? {
                update.references = references;
            }
            json(store.update(&kind, id, update).await?)
        }
        StoreCall::UpdateStatus {
            kind,
            id,
            write,
            version_only: true,
        } => json(store.write_status(&kind, id, write).await?),
        StoreCall::UpdateStatus {
            kind, id, write, ..
        } => json(store.update_status(&kind, id, write).await?),
        StoreCall::ScheduleDeletion {
            kind,
            id,
            expected_version,
            propagation,
        } => json(
            store
                .schedule_deletion_with(&kind, id, expected_version, propagation)
                .await?,
        ),
        StoreCall::Dependents { kind, id } => json(store.dependents(&kind, id).await?),
        StoreCall::RegisterRelations { relations } => {
            json(store.register_relations(&relations).await?)
        }
        StoreCall::Remove { kind, id, fence } => json(store.remove(&kind, id, fence).await?),
    }
}

async fn lock_call(
    State(engine): State<Arc<EngineApi>>,
    scope: Option<Extension<Scope>>,
    body: Bytes,
) -> Answer {
    let call: LockCall = decode(&body)?;
    let scope = scope_of(scope);
    if let Scope::Reconcile(_) = &scope {
        // The runtime locks `<kind>/<id>`: a limited token locks only objects of its kinds.
        let kind = call.key().split_once('/').map_or("", |(kind, _)| kind);
        check_writes(&scope, [kind])?;
    }
    let locker = &engine.api.locker;
    match call {
        LockCall::Acquire { key, holder, ttl } => json(locker.acquire(&key, &holder, ttl).await?),
        LockCall::Renew { lease } => json(locker.renew(&lease).await?),
        LockCall::Release { lease } => json(locker.release(&lease).await?),
    }
}

async fn publish(
    State(engine): State<Arc<EngineApi>>,
    scope: Option<Extension<Scope>>,
    body: Bytes,
) -> Answer {
    let publish: Publish = decode(&body)?;
    check_writes(
        &scope_of(scope),
        publish.notifications.iter().map(|n| n.kind.as_str()),
    )?;
    let bus = &engine.api.bus;
    if publish.only_missing {
        json(bus.publish_missing(publish.notifications).await?)
    } else {
        json(bus.publish_all(publish.notifications).await?)
    }
}

async fn subscribe(
    State(engine): State<Arc<EngineApi>>,
    scope: Option<Extension<Scope>>,
    body: Bytes,
) -> Answer<(StatusCode, Json<Value>)> {
    let options: SubscribeOptions = decode(&body)?;
    options.validate()?;
    check_writes(&scope_of(scope), options.kinds.iter().map(String::as_str))?;
    engine.sweep();
    let subscription = engine.api.bus.subscribe(options.clone()).await?;
    let id = threeport_core::ObjectId::new().to_string();
    let held = HeldSubscription {
        options,
        subscription: tokio::sync::Mutex::new(subscription),
        touched: Mutex::new(Instant::now()),
    };
    engine
        .subscriptions
        .lock()
        .unwrap()
        .insert(id.clone(), Arc::new(held));
    Ok((StatusCode::CREATED, json(Subscribed { id })?))
}

async fn unsubscribe(State(engine): State<Arc<EngineApi>>, Path(id): Path<String>) -> Answer {
    engine.subscriptions.lock().unwrap().remove(&id);
    json(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wait {
    /// How long to wait for a delivery, in milliseconds (at most [`MAX_WAIT`]).
    wait_ms: Option<u64>,
}

async fn next(
    State(engine): State<Arc<EngineApi>>,
    scope: Option<Extension<Scope>>,
    Path(id): Path<String>,
    Query(wait): Query<Wait>,
) -> Answer {
    engine.sweep();
    let held = engine.subscription(&id)?;
    check_writes(
        &scope_of(scope),
        held.options.kinds.iter().map(String::as_str),
    )?;
    let wait = wait
        .wait_ms
        .map_or(MAX_WAIT, Duration::from_millis)
        .min(MAX_WAIT);
    *held.touched.lock().unwrap() = Instant::now();
    let taken = {
        let mut subscription = held.subscription.lock().await;
        tokio::select! {
            taken = tokio::time::timeout(wait, subscription.next()) => taken,
            // The server is stopping: do not hold the shutdown up; the member asks again
            // (another replica, or this one once it is back).
            _ = engine.stopping.cancelled() => {
                return Err(Error::unavailable("the control plane is stopping").into());
            }
        }
    };
    *held.touched.lock().unwrap() = Instant::now();
    let delivery = match taken {
        Err(_) => return json(None::<RemoteDelivery>),
        Ok(Ok(Some(delivery))) => delivery,
        Ok(Ok(None)) => return Err(Error::unavailable("the bus is closed").into()),
        Ok(Err(err)) => return Err(err.into()),
    };
    let id = threeport_core::ObjectId::new().to_string();
    let answer = RemoteDelivery {
        id: id.clone(),
        notification: delivery.notification.clone(),
        attempt: delivery.attempt,
        due_at: delivery.due_at,
    };
    let held_delivery = HeldDelivery {
        kind: delivery.notification.kind.clone(),
        ack_wait: held.options.ack_wait,
        delivery: tokio::sync::Mutex::new(Some(delivery)),
        touched: Mutex::new(Instant::now()),
    };
    engine
        .deliveries
        .lock()
        .unwrap()
        .insert(id, Arc::new(held_delivery));
    json(Some(answer))
}

async fn settle(
    State(engine): State<Arc<EngineApi>>,
    scope: Option<Extension<Scope>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let settle: Settle = decode(&body)?;
    let gone = || {
        Refusal::from(Error::conflict(format!(
            "delivery {id} is no longer held: its ack-wait ran out and it was redelivered"
        )))
    };
    let held = engine
        .deliveries
        .lock()
        .unwrap()
        .get(&id)
        .cloned()
        .ok_or_else(gone)?;
    check_writes(&scope_of(scope), [held.kind.as_str()])?;
    match settle {
        Settle::InProgress => {
            let delivery = held.delivery.lock().await;
            let delivery = delivery.as_ref().ok_or_else(gone)?;
            delivery.in_progress().await?;
            *held.touched.lock().unwrap() = Instant::now();
        }
        Settle::Ack | Settle::Requeue { .. } => {
            engine.deliveries.lock().unwrap().remove(&id);
            let delivery = held.delivery.lock().await.take().ok_or_else(gone)?;
            match settle {
                Settle::Requeue { delay } => delivery.requeue_after(delay).await?,
                _ => delivery.ack().await?,
            }
        }
    }
    json(())
}
