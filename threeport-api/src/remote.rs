//! The engine over HTTP: a [`Store`], a [`Bus`] and a [`Locker`] that talk to a control plane's
//! `/v0/engine` API, so a [`Controller`](threeport_core::Controller) runs anywhere with only an
//! API URL and a token.
//!
//! The control plane answers each call on its own backends (SQL store, NATS or in-process
//! bus, leases), so the runtime's guarantees hold as they do in-process: one reconcile per
//! object at a time (leases with fencing tokens, checked by the store on every status write),
//! redelivery after ack-wait when a replica dies, requeue with a delay. Deliveries are pulled
//! by long-polling (no busy polling), one request at a time and one delivery ahead of the
//! workers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use threeport_api::{Client, remote};
//!
//! let client = Client::builder("http://127.0.0.1:1323").token("tp_…").build()?;
//! let backends = remote::backends(&client);
//! // Controller::new(MyReconciler, backends).run(shutdown).await?;
//! # let _ = backends; Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use threeport_core::relation::{Propagation, Relation};
use threeport_core::{
    Backends, Bus, Delivery, DeliveryHandle, Error, IdempotencyKey, Lease, ListPage, ListQuery,
    Locker, NewObject, Notification, ObjectId, ObjectRef, Once, RawObject, Result, SpecUpdate,
    StatusWrite, Store, SubscribeOptions, Subscription,
};

use crate::Client;

/// The request and answer bodies of the `/v0/engine` API, shared by client and server.
pub mod wire {
    use super::*;

    /// One [`Store`] call (`POST /v0/engine/store`): the method's name as `op`, its
    /// arguments as fields. The answer is the method's result as JSON.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
    pub enum StoreCall {
        /// [`Store::create`].
        Create {
            /// The object.
            object: NewObject,
        },
        /// [`Store::create_all`].
        CreateAll {
            /// The objects with their ids.
            objects: Vec<(ObjectId, NewObject)>,
        },
        /// [`Store::create_all_once`].
        CreateAllOnce {
            /// The idempotency key.
            key: IdempotencyKey,
            /// The objects with their ids.
            objects: Vec<(ObjectId, NewObject)>,
        },
        /// [`Store::get`].
        Get {
            /// Kind.
            kind: String,
            /// Id.
            id: ObjectId,
        },
        /// [`Store::list`].
        List {
            /// Kind.
            kind: String,
            /// Filters and cursor.
            query: ListQuery,
        },
        /// [`Store::update`].
        Update {
            /// Kind.
            kind: String,
            /// Id.
            id: ObjectId,
            /// The new desired state.
            update: SpecUpdate,
        },
        /// [`Store::update_status`]; with `version_only`, [`Store::write_status`].
        UpdateStatus {
            /// Kind.
            kind: String,
            /// Id.
            id: ObjectId,
            /// The status write.
            write: StatusWrite,
            /// Answer only the new version.
            #[serde(default)]
            version_only: bool,
        },
        /// [`Store::schedule_deletion_with`].
        ScheduleDeletion {
            /// Kind.
            kind: String,
            /// Id.
            id: ObjectId,
            /// Expected version.
            expected_version: Option<u64>,
            /// What happens to dependents.
            propagation: Propagation,
        },
        /// [`Store::dependents`].
        Dependents {
            /// Kind.
            kind: String,
            /// Id.
            id: ObjectId,
        },
        /// [`Store::register_relations`].
        RegisterRelations {
            /// The relations.
            relations: Vec<Relation>,
        },
        /// [`Store::remove`].
        Remove {
            /// Kind.
            kind: String,
            /// Id.
            id: ObjectId,
            /// The remover's fencing token.
            fence: Option<u64>,
        },
    }

    impl StoreCall {
        /// The kinds the call writes (for tokens limited to kinds); empty for reads.
        pub fn written_kinds(&self) -> Vec<&str> {
            match self {
                StoreCall::Create { object } => vec![object.kind.as_str()],
                StoreCall::CreateAll { objects } | StoreCall::CreateAllOnce { objects, .. } => {
                    objects.iter().map(|(_, o)| o.kind.as_str()).collect()
                }
                StoreCall::Update { kind, .. }
                | StoreCall::UpdateStatus { kind, .. }
                | StoreCall::ScheduleDeletion { kind, .. }
                | StoreCall::Remove { kind, .. } => vec![kind.as_str()],
                StoreCall::RegisterRelations { relations } => {
                    relations.iter().map(|r| r.follower.as_str()).collect()
                }
                StoreCall::Get { .. } | StoreCall::List { .. } | StoreCall::Dependents { .. } => {
                    Vec::new()
                }
            }
        }
    }

    /// One [`Locker`] call (`POST /v0/engine/locks`).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
    pub enum LockCall {
        /// [`Locker::acquire`]: answers the lease or `null`.
        Acquire {
            /// What to lock (`<kind>/<id>`).
            key: String,
            /// Who holds it.
            holder: String,
            /// Time to live.
            ttl: Duration,
        },
        /// [`Locker::renew`]: answers the renewed lease.
        Renew {
            /// The held lease.
            lease: Lease,
        },
        /// [`Locker::release`].
        Release {
            /// The held lease.
            lease: Lease,
        },
    }

    impl LockCall {
        /// The key the call is about.
        pub fn key(&self) -> &str {
            match self {
                LockCall::Acquire { key, .. } => key,
                LockCall::Renew { lease } | LockCall::Release { lease } => &lease.key,
            }
        }
    }

    /// `POST /v0/engine/bus/publish`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Publish {
        /// The notifications.
        pub notifications: Vec<Notification>,
        /// [`Bus::publish_missing`] rather than [`Bus::publish_all`].
        #[serde(default)]
        pub only_missing: bool,
    }

    /// The answer to `POST /v0/engine/subscriptions`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Subscribed {
        /// The subscription: `POST /v0/engine/subscriptions/{id}/next` takes its deliveries.
        pub id: String,
    }

    /// A delivery taken by `POST /v0/engine/subscriptions/{id}/next` (the answer is `null`
    /// if none arrived within the wait).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct RemoteDelivery {
        /// Settle it at `POST /v0/engine/deliveries/{id}`.
        pub id: String,
        /// The notification.
        pub notification: Notification,
        /// See [`Delivery::attempt`].
        pub attempt: u32,
        /// See [`Delivery::due_at`].
        pub due_at: SystemTime,
    }

    /// `POST /v0/engine/deliveries/{id}`: how a delivery is settled.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "settle", rename_all = "snake_case", deny_unknown_fields)]
    pub enum Settle {
        /// [`Delivery::ack`].
        Ack,
        /// [`Delivery::requeue_after`].
        Requeue {
            /// The delay.
            delay: Duration,
        },
        /// [`Delivery::in_progress`].
        InProgress,
    }

    /// Longest a `next` request waits for a delivery (`wait_ms`), shorter than clients'
    /// request timeouts.
    pub const MAX_WAIT: Duration = Duration::from_secs(20);
}

use wire::{LockCall, Publish, RemoteDelivery, Settle, StoreCall, Subscribed};

/// The store, bus and locker of the control plane `client` talks to, over its `/v0/engine`
/// API, with `client`'s token.
pub fn backends(client: &Client) -> Backends {
    let engine = Engine::new(client);
    Backends {
        store: Arc::new(RemoteStore(engine.clone())),
        bus: Arc::new(RemoteBus(engine.clone())),
        locker: Arc::new(RemoteLocker(engine)),
    }
}

/// How the remote backends call the API.
#[derive(Debug, Clone)]
struct Engine {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Engine {
    fn new(client: &Client) -> Self {
        let (http, base, token) = client.parts();
        Engine {
            http: http.clone(),
            base: format!("{base}/v0/engine"),
            token: token.map(str::to_owned),
        }
    }

    /// One call: `body` to `path`; the answer decoded, an error answer as the core error
    /// it stands for.
    async fn call<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        timeout: Option<Duration>,
    ) -> Result<R> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::unavailable(format!("the control plane at {}: {e}", self.base)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::unavailable(format!("the control plane at {}: {e}", self.base)))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| Error::Backend {
                source: format!("the control plane's answer does not decode: {e}").into(),
            });
        }
        Err(error_from(status, &bytes))
    }

    /// Joins the consumer group `options` describe; returns the subscription's id.
    async fn join(&self, options: &SubscribeOptions) -> Result<String> {
        let subscribed: Subscribed = self
            .call(Method::POST, "/subscriptions", Some(options), None)
            .await?;
        Ok(subscribed.id)
    }
}

/// The core error an error answer of the API stands for.
fn error_from(status: StatusCode, body: &[u8]) -> Error {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = body["message"].as_str().unwrap_or("").to_owned();
    match (status, body["error"].as_str()) {
        (StatusCode::NOT_FOUND, _) => Error::NotFound {
            kind: "object".into(),
            id: message,
        },
        (StatusCode::CONFLICT, Some("already_exists")) => Error::AlreadyExists {
            kind: "object".into(),
            name: message,
        },
        (StatusCode::CONFLICT, _) => Error::conflict(message),
        (StatusCode::BAD_REQUEST, _) => Error::invalid(
            body["field"].as_str().unwrap_or("request").to_owned(),
            message,
        ),
        (StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY, _) => {
            Error::unavailable(message)
        }
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => Error::Backend {
            source: format!("refused by the control plane ({status}): {message}").into(),
        },
        _ => Error::Backend {
            source: format!("the control plane answered {status}: {message}").into(),
        },
    }
}

/// A [`Store`] over the control plane's `/v0/engine/store`.
#[derive(Debug, Clone)]
pub struct RemoteStore(Engine);

impl RemoteStore {
    /// The store of the control plane `client` talks to.
    pub fn new(client: &Client) -> Self {
        RemoteStore(Engine::new(client))
    }

    async fn call<R: DeserializeOwned>(&self, call: StoreCall) -> Result<R> {
        self.0.call(Method::POST, "/store", Some(&call), None).await
    }
}

#[async_trait]
impl Store for RemoteStore {
    async fn create(&self, object: NewObject) -> Result<RawObject> {
        self.call(StoreCall::Create { object }).await
    }

    async fn create_all(&self, objects: Vec<(ObjectId, NewObject)>) -> Result<Vec<RawObject>> {
        self.call(StoreCall::CreateAll { objects }).await
    }

    async fn create_all_once(
        &self,
        key: &IdempotencyKey,
        objects: Vec<(ObjectId, NewObject)>,
    ) -> Result<Once> {
        self.call(StoreCall::CreateAllOnce {
            key: key.clone(),
            objects,
        })
        .await
    }

    async fn get(&self, kind: &str, id: ObjectId) -> Result<RawObject> {
        self.call(StoreCall::Get {
            kind: kind.to_owned(),
            id,
        })
        .await
    }

    async fn list(&self, kind: &str, query: &ListQuery) -> Result<ListPage> {
        // Checked here too: a bad query is the caller's error, whichever side finds it.
        query.validate()?;
        self.call(StoreCall::List {
            kind: kind.to_owned(),
            query: query.clone(),
        })
        .await
    }

    async fn update(&self, kind: &str, id: ObjectId, update: SpecUpdate) -> Result<RawObject> {
        self.call(StoreCall::Update {
            kind: kind.to_owned(),
            id,
            update,
        })
        .await
    }

    async fn update_status(
        &self,
        kind: &str,
        id: ObjectId,
        write: StatusWrite,
    ) -> Result<RawObject> {
        self.call(StoreCall::UpdateStatus {
            kind: kind.to_owned(),
            id,
            write,
            version_only: false,
        })
        .await
    }

    async fn write_status(&self, kind: &str, id: ObjectId, write: StatusWrite) -> Result<u64> {
        self.call(StoreCall::UpdateStatus {
            kind: kind.to_owned(),
            id,
            write,
            version_only: true,
        })
        .await
    }

    async fn schedule_deletion_with(
        &self,
        kind: &str,
        id: ObjectId,
        expected_version: Option<u64>,
        propagation: Propagation,
    ) -> Result<RawObject> {
        self.call(StoreCall::ScheduleDeletion {
            kind: kind.to_owned(),
            id,
            expected_version,
            propagation,
        })
        .await
    }

    async fn dependents(&self, kind: &str, id: ObjectId) -> Result<Vec<ObjectRef>> {
        self.call(StoreCall::Dependents {
            kind: kind.to_owned(),
            id,
        })
        .await
    }

    async fn register_relations(&self, relations: &[Relation]) -> Result<()> {
        self.call(StoreCall::RegisterRelations {
            relations: relations.to_vec(),
        })
        .await
    }

    async fn remove(&self, kind: &str, id: ObjectId, fence: Option<u64>) -> Result<()> {
        self.call(StoreCall::Remove {
            kind: kind.to_owned(),
            id,
            fence,
        })
        .await
    }
}

/// A [`Locker`] over the control plane's `/v0/engine/locks`: the leases are the control
/// plane's, so remote and in-process replicas exclude each other.
#[derive(Debug, Clone)]
pub struct RemoteLocker(Engine);

impl RemoteLocker {
    /// The locker of the control plane `client` talks to.
    pub fn new(client: &Client) -> Self {
        RemoteLocker(Engine::new(client))
    }
}

#[async_trait]
impl Locker for RemoteLocker {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let call = LockCall::Acquire {
            key: key.to_owned(),
            holder: holder.to_owned(),
            ttl,
        };
        self.0.call(Method::POST, "/locks", Some(&call), None).await
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease> {
        let call = LockCall::Renew {
            lease: lease.clone(),
        };
        self.0.call(Method::POST, "/locks", Some(&call), None).await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let call = LockCall::Release {
            lease: lease.clone(),
        };
        self.0.call(Method::POST, "/locks", Some(&call), None).await
    }
}

/// A [`Bus`] over the control plane's `/v0/engine/bus` and `/v0/engine/subscriptions`.
#[derive(Debug, Clone)]
pub struct RemoteBus(Engine);

impl RemoteBus {
    /// The bus of the control plane `client` talks to.
    pub fn new(client: &Client) -> Self {
        RemoteBus(Engine::new(client))
    }

    async fn publish_with(
        &self,
        notifications: Vec<Notification>,
        only_missing: bool,
    ) -> Result<()> {
        let body = Publish {
            notifications,
            only_missing,
        };
        self.0
            .call(Method::POST, "/bus/publish", Some(&body), None)
            .await
    }
}

#[async_trait]
impl Bus for RemoteBus {
    async fn publish(&self, notification: Notification) -> Result<()> {
        self.publish_with(vec![notification], false).await
    }

    async fn publish_all(&self, notifications: Vec<Notification>) -> Result<()> {
        self.publish_with(notifications, false).await
    }

    async fn publish_missing(&self, notifications: Vec<Notification>) -> Result<()> {
        self.publish_with(notifications, true).await
    }

    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Subscription>> {
        options.validate()?;
        let id = self.0.join(&options).await?;
        Ok(Box::new(RemoteSubscription {
            engine: self.0.clone(),
            options,
            id,
            pending: None,
        }))
    }
}

/// One member of a consumer group, held by the control plane for this process.
#[derive(Debug)]
struct RemoteSubscription {
    engine: Engine,
    options: SubscribeOptions,
    id: String,
    /// The long-poll in flight. It runs as its own task, so a caller that stops waiting
    /// (a `select!`, a timeout) loses nothing: the next call takes up the same request, and a
    /// delivery it brings back.
    pending: Option<tokio::task::JoinHandle<Result<Option<RemoteDelivery>>>>,
}

impl RemoteSubscription {
    fn poll(&self) -> tokio::task::JoinHandle<Result<Option<RemoteDelivery>>> {
        let engine = self.engine.clone();
        let wait = wire::MAX_WAIT;
        let path = format!(
            "/subscriptions/{}/next?wait_ms={}",
            self.id,
            wait.as_millis()
        );
        tokio::spawn(async move {
            engine
                .call(
                    Method::POST,
                    &path,
                    None::<&()>,
                    Some(wait + Duration::from_secs(10)),
                )
                .await
        })
    }
}

#[async_trait]
impl Subscription for RemoteSubscription {
    async fn next(&mut self) -> Result<Option<Delivery>> {
        loop {
            if self.pending.is_none() {
                self.pending = Some(self.poll());
            }
            let pending = self.pending.as_mut().expect("a long-poll in flight");
            let answer = pending.await;
            self.pending = None;
            let answer = answer.map_err(|e| Error::Backend {
                source: format!("the long-poll task failed: {e}").into(),
            })?;
            match answer {
                Ok(Some(delivery)) => {
                    // One request ahead: while this delivery is worked on, the next one is on
                    // its way (a member holds at most one it has not started, as a NATS pull
                    // consumer holds its batch), so a backlog does not wait a round trip per
                    // delivery.
                    self.pending = Some(self.poll());
                    let handle = RemoteDeliveryHandle {
                        engine: self.engine.clone(),
                        id: delivery.id,
                    };
                    return Ok(Some(Delivery::new(
                        delivery.notification,
                        delivery.attempt,
                        delivery.due_at,
                        Box::new(handle),
                    )));
                }
                Ok(None) => continue,
                // The control plane forgot the subscription (it restarted, or this process
                // did not ask for a long time): join the group again.
                Err(err) if err.kind() == threeport_core::ErrorKind::NotFound => {
                    self.id = self.engine.join(&self.options).await?;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

impl Drop for RemoteSubscription {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.abort();
        }
        // Leave the group when this member goes away (best effort: the control plane also
        // forgets members that stop asking).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let engine = self.engine.clone();
        let path = format!("/subscriptions/{}", self.id);
        runtime.spawn(async move {
            let _: Result<()> = engine.call(Method::DELETE, &path, None::<&()>, None).await;
        });
    }
}

/// Settles a delivery held by the control plane.
#[derive(Debug)]
struct RemoteDeliveryHandle {
    engine: Engine,
    id: String,
}

impl RemoteDeliveryHandle {
    async fn settle(&self, settle: Settle) -> Result<()> {
        let path = format!("/deliveries/{}", self.id);
        self.engine
            .call(Method::POST, &path, Some(&settle), None)
            .await
    }
}

#[async_trait]
impl DeliveryHandle for RemoteDeliveryHandle {
    async fn ack(&self) -> Result<()> {
        self.settle(Settle::Ack).await
    }

    async fn requeue_after(&self, delay: Duration) -> Result<()> {
        self.settle(Settle::Requeue { delay }).await
    }

    async fn in_progress(&self) -> Result<()> {
        self.settle(Settle::InProgress).await
    }
}
