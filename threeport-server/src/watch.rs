//! Object changes as they happen, for people watching (the console): `GET /v0/watch`, a
//! server-sent event stream.
//!
//! The feed is a [`Store`] decorator, [`ChangeFeed::observe`]: every write that goes through
//! the process's store — the API's, and those of the controllers and remote reconcilers it
//! hosts (status included, which controllers are not notified of) — is announced once it is
//! committed. Writes made by other processes (controllers run apart from the API) are not seen
//! here: for them the stream sends `resync` every [`ChangeFeed::resync`], and the watcher reads
//! what it shows again.
//!
//! Events: `ready` (the stream is open), `change` (`{"kind", "id", "version", "change"}`,
//! `change` one of `created`, `updated`, `status`, `deleting`, `removed`; version 0 for
//! `removed`), `resync` (look again: changes may have been missed). `?kind=K` (repeatable)
//! limits changes to those kinds.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use threeport_core::object::{ObjectId, ObjectRef, RawObject};
use threeport_core::store::{IdempotencyKey, ListPage, ListQuery, Once, SpecUpdate, StatusWrite};
use threeport_core::{Error, NewObject, Propagation, Relation, Store};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::rest::{ApiError, ApiResult, query_pairs};

/// How many changes a slow watcher may fall behind before it is told to resync.
const BACKLOG: usize = 1024;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    /// Created.
    Created,
    /// Desired state (spec or labels) replaced.
    Updated,
    /// Status written (by a controller, an agent's report).
    Status,
    /// Deletion scheduled (the object, not the dependents a cascade scheduled with it).
    Deleting,
    /// Removed for good.
    Removed,
}

/// One committed write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The object's kind.
    pub kind: String,
    /// The object's id.
    pub id: ObjectId,
    /// Its version after the write (0 once removed).
    pub version: u64,
    /// What the write did.
    pub change: ChangeType,
}

/// The changes written through one process's store, for watchers (see the module docs).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use threeport_core::{MemoryStore, NewObject, Store};
/// use threeport_server::watch::{ChangeFeed, ChangeType};
///
/// let feed = ChangeFeed::default();
/// let store = feed.observe(Arc::new(MemoryStore::new()));
/// let mut changes = feed.subscribe();
/// let created = store
///     .create(NewObject::new("Note", "hello", serde_json::json!({})))
///     .await
///     .unwrap();
/// let change = changes.recv().await.unwrap();
/// assert_eq!((change.id, change.change), (created.meta.id, ChangeType::Created));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    sender: broadcast::Sender<Change>,
    /// How often watchers are told to look again for what the feed cannot see.
    pub resync: Duration,
}

impl Default for ChangeFeed {
    /// A feed that asks watchers to resync every 30 s.
    fn default() -> Self {
        ChangeFeed::new(Duration::from_secs(30))
    }
}

impl ChangeFeed {
    /// A feed whose watchers resync every `resync`: short when controllers write from other
    /// processes, long (a safety net) when they all run in this one.
    pub fn new(resync: Duration) -> Self {
        ChangeFeed {
            sender: broadcast::channel(BACKLOG).0,
            resync,
        }
    }

    /// `store`, announcing every committed write on this feed.
    pub fn observe(&self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(ObservedStore {
            inner: store,
            feed: self.clone(),
        })
    }

    /// Changes from now on. A receiver that falls 1,024 changes behind gets `Lagged` (the
    /// stream then tells its watcher to resync).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }

    fn announce(&self, kind: &str, id: ObjectId, version: u64, change: ChangeType) {
        // No receiver is the common case (nobody watching): nothing to do.
        let _ = self.sender.send(Change {
            kind: kind.to_owned(),
            id,
            version,
            change,
        });
    }

    fn created(&self, objects: &[RawObject]) {
        for obj in objects {
            self.announce(
                &obj.meta.kind,
                obj.meta.id,
                obj.meta.version,
                ChangeType::Created,
            );
        }
    }
}

/// A store that announces its writes on a [`ChangeFeed`].
#[derive(Debug)]
struct ObservedStore {
    inner: Arc<dyn Store>,
    feed: ChangeFeed,
}

#[async_trait]
impl Store for ObservedStore {
    async fn create(&self, new: NewObject) -> threeport_core::Result<RawObject> {
        let created = self.inner.create(new).await?;
        self.feed.created(std::slice::from_ref(&created));
        Ok(created)
    }

    async fn create_all(
        &self,
        objects: Vec<(ObjectId, NewObject)>,
    ) -> threeport_core::Result<Vec<RawObject>> {
        let created = self.inner.create_all(objects).await?;
        self.feed.created(&created);
        Ok(created)
    }

    async fn create_all_once(
        &self,
        key: &IdempotencyKey,
        objects: Vec<(ObjectId, NewObject)>,
    ) -> threeport_core::Result<Once> {
        let once = self.inner.create_all_once(key, objects).await?;
        if let Once::Created(created) = &once {
            self.feed.created(created);
        }
        Ok(once)
    }

    async fn get(&self, kind: &str, id: ObjectId) -> threeport_core::Result<RawObject> {
        self.inner.get(kind, id).await
    }

    async fn list(&self, kind: &str, query: &ListQuery) -> threeport_core::Result<ListPage> {
        self.inner.list(kind, query).await
    }

    async fn update(
        &self,
        kind: &str,
        id: ObjectId,
        update: SpecUpdate,
    ) -> threeport_core::Result<RawObject> {
        let updated = self.inner.update(kind, id, update).await?;
        self.feed
            .announce(kind, id, updated.meta.version, ChangeType::Updated);
        Ok(updated)
    }

    async fn update_status(
        &self,
        kind: &str,
        id: ObjectId,
        write: StatusWrite,
    ) -> threeport_core::Result<RawObject> {
        let written = self.inner.update_status(kind, id, write).await?;
        self.feed
            .announce(kind, id, written.meta.version, ChangeType::Status);
        Ok(written)
    }

    async fn write_status(
        &self,
        kind: &str,
        id: ObjectId,
        write: StatusWrite,
    ) -> threeport_core::Result<u64> {
        let version = self.inner.write_status(kind, id, write).await?;
        self.feed.announce(kind, id, version, ChangeType::Status);
        Ok(version)
    }

    async fn schedule_deletion_with(
        &self,
        kind: &str,
        id: ObjectId,
        expected_version: Option<u64>,
        propagation: Propagation,
    ) -> threeport_core::Result<RawObject> {
        let scheduled = self
            .inner
            .schedule_deletion_with(kind, id, expected_version, propagation)
            .await?;
        self.feed
            .announce(kind, id, scheduled.meta.version, ChangeType::Deleting);
        Ok(scheduled)
    }

    async fn dependents(&self, kind: &str, id: ObjectId) -> threeport_core::Result<Vec<ObjectRef>> {
        self.inner.dependents(kind, id).await
    }

    async fn register_relations(&self, relations: &[Relation]) -> threeport_core::Result<()> {
        self.inner.register_relations(relations).await
    }

    async fn remove(
        &self,
        kind: &str,
        id: ObjectId,
        fence: Option<u64>,
    ) -> threeport_core::Result<()> {
        self.inner.remove(kind, id, fence).await?;
        self.feed.announce(kind, id, 0, ChangeType::Removed);
        Ok(())
    }
}

#[derive(Clone)]
struct WatchState {
    feed: ChangeFeed,
    stopping: CancellationToken,
    open: Gauge,
}

/// The `GET /v0/watch` route. Streams end when `stopping` is cancelled, so an open console
/// does not hold a graceful shutdown up. `metrics` gets `watch_streams` (streams open now).
pub fn routes(feed: ChangeFeed, stopping: CancellationToken, metrics: &mut Registry) -> Router {
    let open = Gauge::default();
    metrics.register(
        "watch_streams",
        "Change streams (/v0/watch: open consoles) open now",
        open.clone(),
    );
    Router::new()
        .route("/v0/watch", get(watch))
        .with_state(WatchState {
            feed,
            stopping,
            open,
        })
}

/// Counts a stream as open while it lives.
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What one stream is at.
struct Watcher {
    changes: broadcast::Receiver<Change>,
    kinds: Vec<String>,
    resync: tokio::time::Interval,
    stopping: CancellationToken,
    opened: bool,
    _open: Open,
}

async fn watch(
    State(state): State<WatchState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let mut kinds = Vec::new();
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "kind" => {
                threeport_core::object::validate_kind(&value).map_err(|e| match e {
                    Error::Invalid { message, .. } => ApiError(Error::invalid("kind", message)),
                    other => ApiError(other),
                })?;
                kinds.push(value);
            }
            other => {
                return Err(ApiError(Error::invalid(
                    other,
                    "unknown parameter: /v0/watch takes kind (repeatable)",
                )));
            }
        }
    }
    let mut resync = tokio::time::interval(state.feed.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.reset(); // the first tick one period from now, not at once
    let watcher = Watcher {
        changes: state.feed.subscribe(),
        kinds,
        resync,
        stopping: state.stopping,
        opened: false,
        _open: {
            state.open.inc();
            Open(state.open)
        },
    };
    let stream = futures::stream::unfold(watcher, |mut w| async move {
        if !w.opened {
            w.opened = true;
            return Some((Ok(Event::default().event("ready").data("{}")), w));
        }
        loop {
            let event = tokio::select! {
                () = w.stopping.cancelled() => return None,
                _ = w.resync.tick() => Event::default().event("resync").data("{}"),
                received = w.changes.recv() => match received {
                    Ok(change) if w.kinds.is_empty() || w.kinds.contains(&change.kind) => {
                        let data = serde_json::to_string(&change).expect("a change serializes");
                        Event::default().event("change").data(data)
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        Event::default().event("resync").data("{}")
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            return Some((Ok(event), w));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
