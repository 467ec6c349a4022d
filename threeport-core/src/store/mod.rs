//! Persistence of API objects: the dyn-compatible [`Store`] trait over untyped objects, the
//! typed [`Api<T>`] layer on top of it, and the in-memory [`MemoryStore`].
//!
//! Every write is conditional (create-if-absent, update-if-version-matches, fenced status
//! writes), and every change of desired state records a [`Notification`](crate::Notification)
//! in the store's [`Outbox`](crate::Outbox) within the same transaction.

mod memory;

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

pub use memory::MemoryStore;

use crate::error::{Error, Result};
use crate::object::{
    ApiObject, Labels, NewObject, Object, ObjectId, ObjectRef, RawObject, Reference, Status,
};
use crate::relation::{Propagation, Relation};

/// Default page size of [`ListQuery`].
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page a store returns; larger limits are rejected as invalid.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Most label filters, and most reference filters, one list may have.
pub const MAX_FILTERS: usize = 16;

/// Filters and a cursor for [`Store::list`]. All filters must match (AND).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListQuery {
    /// Only the object with this exact name.
    pub name: Option<String>,
    /// Only objects carrying all these labels with these values.
    pub labels: Labels,
    /// Only objects whose reference `field` points at the given id.
    pub references: Vec<(String, ObjectId)>,
    /// Cursor: return objects after this id (the `next` of the previous page).
    pub after: Option<ObjectId>,
    /// Page size, 1 to [`MAX_PAGE_SIZE`].
    pub limit: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            name: None,
            labels: Labels::new(),
            references: Vec::new(),
            after: None,
            limit: DEFAULT_PAGE_SIZE,
        }
    }
}

impl ListQuery {
    /// Objects with this name.
    pub fn named(name: impl Into<String>) -> Self {
        ListQuery {
            name: Some(name.into()),
            ..Self::default()
        }
    }

    /// Adds a label filter.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds a reference filter: `field` points at `id`.
    pub fn referencing(mut self, field: impl Into<String>, id: ObjectId) -> Self {
        self.references.push((field.into(), id));
        self
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Rejects what no backend can answer: a limit outside 1..=[`MAX_PAGE_SIZE`], more than
    /// [`MAX_FILTERS`] label or reference filters, a name or label that no object can have
    /// (empty, too long, control characters such as NUL). Errors name the list API's query
    /// parameter (`limit`, `name`, `label`, `ref`). Backends call this first.
    pub fn validate(&self) -> Result<()> {
        if self.limit == 0 || self.limit > MAX_PAGE_SIZE {
            return Err(Error::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        if let Some(name) = &self.name {
            crate::object::validate_name("name", name)?;
        }
        if self.labels.len() > MAX_FILTERS {
            return Err(Error::invalid(
                "label",
                format!("at most {MAX_FILTERS} label filters"),
            ));
        }
        for (key, value) in &self.labels {
            let one = Labels::from([(key.clone(), value.clone())]);
            crate::object::validate_labels(&one).map_err(|err| match err {
                Error::Invalid { message, .. } => Error::invalid("label", message),
                other => other,
            })?;
        }
        if self.references.len() > MAX_FILTERS {
            return Err(Error::invalid(
                "ref",
                format!("at most {MAX_FILTERS} reference filters"),
            ));
        }
        for (field, _) in &self.references {
            let ok = !field.is_empty()
                && field.len() <= 128
                && field
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'));
            if !ok {
                return Err(Error::invalid(
                    "ref",
                    format!("{field:?} is not a spec field name (letters, digits, '_' and '.')"),
                ));
            }
        }
        Ok(())
    }

    /// Whether `obj` passes every filter (the cursor is not checked).
    pub fn matches(&self, obj: &RawObject) -> bool {
        self.name.as_ref().is_none_or(|n| *n == obj.meta.name)
            && self
                .labels
                .iter()
                .all(|(k, v)| obj.meta.labels.get(k) == Some(v))
            && self.references.iter().all(|(field, id)| {
                obj.meta
                    .references
                    .iter()
                    .any(|r| r.field == *field && r.id == *id)
            })
    }
}

/// One page of a list, in ascending id (creation) order. Serializes as the API's list body,
/// `{"items": [...], "next": id or null}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ListPage<O = RawObject> {
    /// The objects.
    pub items: Vec<O>,
    /// Cursor for the next page; `None` on the last page.
    pub next: Option<ObjectId>,
}

impl<O> ListPage<O> {
    /// Builds a page from up to `limit + 1` items fetched in id order: the extra item only says
    /// that another page follows, and the cursor is the last item kept.
    pub fn from_overfetch(mut items: Vec<O>, limit: usize, id_of: impl Fn(&O) -> ObjectId) -> Self {
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(&id_of)
        } else {
            None
        };
        ListPage { items, next }
    }
}

/// A replacement of an object's desired state ([`Store::update`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpecUpdate {
    /// Write only if the stored version is this one.
    pub expected_version: Option<u64>,
    /// New labels.
    pub labels: Labels,
    /// New references (derived from the spec).
    pub references: Vec<Reference>,
    /// New desired state.
    pub spec: Value,
}

impl SpecUpdate {
    /// The checks every store makes before applying the update to object `id`: valid labels,
    /// no reference to itself.
    pub fn validate(&self, id: ObjectId) -> Result<()> {
        crate::object::validate_labels(&self.labels)?;
        if self.references.iter().any(|r| r.id == id) {
            return Err(Error::invalid("spec", "an object cannot reference itself"));
        }
        Ok(())
    }
}

/// How long a store remembers an idempotency key ([`Store::create_all_once`]): a day, as
/// Stripe's API and the IETF `Idempotency-Key` draft suggest.
pub const IDEMPOTENCY_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A client's idempotency key and what identifies the request it came with (a digest of the
/// method, path and body), so a key reused for another request can be told apart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdempotencyKey {
    /// The key the client chose (a UUID, typically).
    pub key: String,
    /// What identifies the request.
    pub fingerprint: String,
}

impl IdempotencyKey {
    /// Checks the key: 1 to 255 bytes of visible ASCII.
    pub fn validate(&self) -> Result<()> {
        let ok = !self.key.is_empty()
            && self.key.len() <= 255
            && self.key.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters (a UUID, say)",
            ))
        }
    }
}

/// What [`Store::create_all_once`] did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Once {
    /// The objects were created now.
    Created(Vec<RawObject>),
    /// The key was used before, within [`IDEMPOTENCY_WINDOW`]: nothing was created.
    Replayed {
        /// The fingerprint of the request that used the key first.
        fingerprint: String,
        /// The objects that request created, as they were created.
        objects: Vec<RawObject>,
    },
}

/// A status-only write ([`Store::update_status`]), made by the controller that holds the lease.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatusWrite {
    /// Write only if the stored version is this one.
    pub expected_version: Option<u64>,
    /// Fencing token of the writer's lease: refused if an equal-or-newer holder wrote before.
    /// Tokens must not go down for one object; the store keeps the highest it has seen.
    pub fence: Option<u64>,
    /// The new status.
    pub status: Status<Value>,
}

/// Persistence of API objects of every kind.
///
/// Implementations: [`MemoryStore`] here, SQL stores in `threeport-store`. All must pass
/// [`conformance::store`](crate::conformance::store).
///
/// Desired-state writes (`create`, `update`, `schedule_deletion`) record a notification in the
/// backend's [`Outbox`](crate::Outbox) atomically with the change. Status writes do not
/// notify the object's own controller (they are its output), but every write, status writes
/// and `remove` included, notifies the objects that follow the written one through a
/// registered [`Relation`].
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Creates an object with version 1 and generation 1.
    ///
    /// Errors: `AlreadyExists` if the kind already has that name; `Invalid` for a bad kind,
    /// name or labels, or a reference to a missing or deleting object (the field is named).
    async fn create(&self, new: NewObject) -> Result<RawObject>;

    /// Creates several objects in one transaction, in order, with the ids given: all of them
    /// or none. An object may reference objects created before it in the same call. Each gets
    /// its creation notification, as with [`Store::create`].
    ///
    /// Errors: as for `create`, for the first object that fails; `Invalid` (field `ids`) if
    /// an id repeats or is taken.
    async fn create_all(&self, objects: Vec<(ObjectId, NewObject)>) -> Result<Vec<RawObject>>;

    /// [`create_all`](Store::create_all), remembered under an idempotency key for
    /// [`IDEMPOTENCY_WINDOW`]: the objects and the key's record are written in one
    /// transaction, so a request retried after its answer was lost finds what the first one
    /// created ([`Once::Replayed`], with the objects as they were created and the first
    /// request's fingerprint) instead of creating twice. Concurrent requests with one key
    /// create once; the others replay.
    ///
    /// Errors: as for `create_all`; `Invalid` (field `Idempotency-Key`) for an empty key or
    /// one over 255 bytes.
    async fn create_all_once(
        &self,
        key: &IdempotencyKey,
        objects: Vec<(ObjectId, NewObject)>,
    ) -> Result<Once>;

    /// Reads one object. `NotFound` if absent.
    async fn get(&self, kind: &str, id: ObjectId) -> Result<RawObject>;

    /// Lists objects of a kind in ascending id order, filtered, one page at a time.
    async fn list(&self, kind: &str, query: &ListQuery) -> Result<ListPage>;

    /// Replaces desired state; bumps version and generation.
    ///
    /// Errors: `NotFound`; `Conflict` on a version mismatch or if deletion was scheduled;
    /// `Invalid` as for `create`.
    async fn update(&self, kind: &str, id: ObjectId, update: SpecUpdate) -> Result<RawObject>;

    /// Replaces the status; bumps version only. `Conflict` on a version mismatch or stale fence.
    async fn update_status(
        &self,
        kind: &str,
        id: ObjectId,
        write: StatusWrite,
    ) -> Result<RawObject>;

    /// [`update_status`](Store::update_status) for a writer that needs only the new version
    /// (the controller runtime): a store may skip reading the object back.
    async fn write_status(&self, kind: &str, id: ObjectId, write: StatusWrite) -> Result<u64> {
        self.update_status(kind, id, write)
            .await
            .map(|written| written.meta.version)
    }

    /// Requests deletion (first phase) with [`Propagation::Foreground`]: see
    /// [`schedule_deletion_with`](Store::schedule_deletion_with).
    async fn schedule_deletion(
        &self,
        kind: &str,
        id: ObjectId,
        expected_version: Option<u64>,
    ) -> Result<RawObject> {
        self.schedule_deletion_with(kind, id, expected_version, Propagation::Foreground)
            .await
    }

    /// Requests deletion (first phase): sets `deletion_scheduled_at`, the lifecycle state to
    /// `DeletionScheduled`, bumps generation, notifies. Idempotent on an object already being
    /// deleted. With [`Propagation::Foreground`], every object it owns, transitively, is
    /// scheduled for deletion in the same transaction (and the runtime removes the owner only
    /// once they are gone); with [`Propagation::Orphan`], the objects it owns lose it as an
    /// owner and stay.
    ///
    /// Errors: `NotFound`; `Conflict` on a version mismatch or while objects outside the
    /// cascade reference it or one of its dependents.
    async fn schedule_deletion_with(
        &self,
        kind: &str,
        id: ObjectId,
        expected_version: Option<u64>,
        propagation: Propagation,
    ) -> Result<RawObject>;

    /// The objects `id` owns directly (whose [`owners`](crate::ObjectMeta::owners) name it),
    /// in id order.
    async fn dependents(&self, kind: &str, id: ObjectId) -> Result<Vec<ObjectRef>>;

    /// Records relations ([`Relation`]): from now on, every change of a followed object
    /// notifies the follower's objects it maps to, in the same transaction. Idempotent;
    /// SQL stores keep them in the database, so every process writing to it honours them.
    async fn register_relations(&self, relations: &[Relation]) -> Result<()>;

    /// Removes the row (second phase, after cleanup) and notifies its owners (an owner being
    /// deleted waits for its dependents). `Conflict` on a stale fence, or while it still owns
    /// objects.
    async fn remove(&self, kind: &str, id: ObjectId, fence: Option<u64>) -> Result<()>;
}

/// Typed access to the objects of kind `T` in a [`Store`], in the manner of kube's `Api<K>`.
///
/// ```
/// # tokio_test_block_on(async {
/// use std::sync::Arc;
/// use serde::{Deserialize, Serialize};
/// use threeport_core::{Api, ApiObject, ListQuery, MemoryStore, Store};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct Widget { size: u32 }
/// impl ApiObject for Widget {
///     const KIND: &'static str = "Widget";
///     type Status = ();
/// }
///
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// let widgets = Api::<Widget>::new(store);
/// let created = widgets.create("small", Widget { size: 1 }).await?;
/// assert_eq!(created.meta.version, 1);
///
/// let mut obj = widgets.get_by_name("small").await?;
/// obj.spec.size = 2;
/// let updated = widgets.update(&obj).await?;
/// assert_eq!((updated.meta.version, updated.meta.generation), (2, 2));
///
/// // A write based on a stale version is refused, not silently applied.
/// assert!(widgets.update(&obj).await.is_err());
/// assert_eq!(widgets.list_all(&ListQuery::default()).await?.len(), 1);
/// # Ok::<(), threeport_core::Error>(())
/// # }).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
pub struct Api<T> {
    store: Arc<dyn Store>,
    /// The kind queried: `T::KIND`, or for [`Dynamic`](crate::Dynamic) objects the one given.
    kind: Option<Arc<str>>,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Api<T> {
    fn clone(&self) -> Self {
        Api {
            store: self.store.clone(),
            kind: self.kind.clone(),
            _kind: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Api<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("kind", &self.kind)
            .field("store", &self.store)
            .finish()
    }
}

impl Api<crate::Dynamic> {
    /// Access to the objects of `kind` as JSON: for kinds known only at run time. (A
    /// `Dynamic` object's kind is a value: [`Api::new`] has none to query, and every call on
    /// it is `Invalid`.)
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use threeport_core::{Api, Dynamic, MemoryStore, NewObject, Store};
    ///
    /// let store = Arc::new(MemoryStore::new());
    /// let spec = serde_json::json!({"size": 3});
    /// store.create(NewObject { kind: "Widget".into(), name: "w".into(),
    ///                          labels: Default::default(), references: vec![], owners: Vec::new(), spec }).await?;
    /// let widgets = Api::<Dynamic>::of_kind(store.clone(), "Widget")?;
    /// assert_eq!(widgets.get_by_name("w").await?.spec.0["size"], 3);
    /// assert!(Api::<Dynamic>::new(store).get_by_name("w").await.is_err());
    /// # Ok::<(), threeport_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn of_kind(store: Arc<dyn Store>, kind: &str) -> Result<Self> {
        crate::object::validate_kind(kind)?;
        Ok(Api {
            store,
            kind: Some(Arc::from(kind)),
            _kind: PhantomData,
        })
    }
}

impl<T: ApiObject> Api<T> {
    /// Typed access to kind `T` in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        // `Dynamic`'s KIND is a placeholder, never a kind to query.
        let kind = (T::KIND != <crate::Dynamic as ApiObject>::KIND).then(|| Arc::from(T::KIND));
        Api {
            store,
            kind,
            _kind: PhantomData,
        }
    }

    /// The kind this API reads and writes.
    pub fn kind(&self) -> Result<&str> {
        self.kind.as_deref().ok_or_else(|| {
            Error::invalid(
                "kind",
                "an Api<Dynamic> has no kind: make it with Api::<Dynamic>::of_kind(store, kind)",
            )
        })
    }

    /// The underlying untyped store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Validates and creates an object named `name`.
    pub async fn create(&self, name: impl Into<String>, spec: T) -> Result<Object<T>> {
        // `NewObject::typed` has validated the spec already.
        let mut new = NewObject::typed(name, &spec)?;
        new.kind = self.kind()?.to_owned();
        Object::from_raw(self.store.create(new).await?)
    }

    /// Creates from a prepared [`NewObject`] (labels included); checks the kind and validates.
    pub async fn create_new(&self, new: NewObject) -> Result<Object<T>> {
        let kind = self.kind()?;
        if new.kind != kind {
            return Err(Error::invalid(
                "kind",
                format!("expected {kind}, found {}", new.kind),
            ));
        }
        let spec: T = serde_json::from_value(new.spec.clone())
            .map_err(|e| Error::invalid("spec", e.to_string()))?;
        spec.validate()?;
        Object::from_raw(self.store.create(new).await?)
    }

    /// Reads by id.
    pub async fn get(&self, id: ObjectId) -> Result<Object<T>> {
        Object::from_raw(self.store.get(self.kind()?, id).await?)
    }

    /// Reads by name. `NotFound` if no object of this kind has it.
    pub async fn get_by_name(&self, name: &str) -> Result<Object<T>> {
        let kind = self.kind()?;
        let page = self.store.list(kind, &ListQuery::named(name)).await?;
        match page.items.into_iter().next() {
            Some(raw) => Object::from_raw(raw),
            None => Err(Error::not_found(kind, name)),
        }
    }

    /// One page of objects.
    pub async fn list(&self, query: &ListQuery) -> Result<ListPage<Object<T>>> {
        let page = self.store.list(self.kind()?, query).await?;
        Ok(ListPage {
            items: page
                .items
                .into_iter()
                .map(Object::from_raw)
                .collect::<Result<_>>()?,
            next: page.next,
        })
    }

    /// Every matching object, following the cursor to the last page.
    pub async fn list_all(&self, query: &ListQuery) -> Result<Vec<Object<T>>> {
        let mut query = query.clone();
        let mut all = Vec::new();
        loop {
            let page = self.list(&query).await?;
            all.extend(page.items);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Writes `obj`'s spec and labels if its `meta.version` is still current.
    pub async fn update(&self, obj: &Object<T>) -> Result<Object<T>> {
        obj.spec.validate()?;
        let update = SpecUpdate {
            expected_version: Some(obj.meta.version),
            labels: obj.meta.labels.clone(),
            references: obj.spec.references(),
            spec: serde_json::to_value(&obj.spec)?,
        };
        Object::from_raw(self.store.update(self.kind()?, obj.meta.id, update).await?)
    }

    /// Writes `obj`'s status if its `meta.version` is still current.
    pub async fn update_status(&self, obj: &Object<T>) -> Result<Object<T>> {
        let write = StatusWrite {
            expected_version: Some(obj.meta.version),
            fence: None,
            status: obj.to_raw()?.status,
        };
        Object::from_raw(
            self.store
                .update_status(self.kind()?, obj.meta.id, write)
                .await?,
        )
    }

    /// Polls the object until `done` holds for it (every 10 ms, on tokio's clock). Wrap in
    /// `tokio::time::timeout` to bound the wait. `NotFound` if the object disappears.
    pub async fn wait_until(
        &self,
        id: ObjectId,
        mut done: impl FnMut(&Object<T>) -> bool + Send,
    ) -> Result<Object<T>> {
        loop {
            let obj = self.get(id).await?;
            if done(&obj) {
                return Ok(obj);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Polls until the object is gone (its deletion finished).
    pub async fn wait_until_gone(&self, id: ObjectId) -> Result<()> {
        loop {
            match self.store.get(self.kind()?, id).await {
                Err(err) if err.kind() == crate::ErrorKind::NotFound => return Ok(()),
                Err(err) => return Err(err),
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    }

    /// Schedules deletion: the controller cleans up, then the object disappears.
    pub async fn delete(&self, id: ObjectId) -> Result<Object<T>> {
        Object::from_raw(self.store.schedule_deletion(self.kind()?, id, None).await?)
    }
}
