//! The object model: the envelope every API object shares, its lifecycle, conditions and events,
//! and the [`ApiObject`] trait through which a Rust type becomes an object kind.
//!
//! Objects are stored untyped ([`RawObject`]: JSON spec and status details) so one store and one
//! runtime serve every kind; [`Object<T>`] is the typed view of the same envelope.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::Error;

/// Wall-clock timestamp stored on objects (UTC).
pub type Timestamp = DateTime<Utc>;

/// Labels: free-form string pairs used for selection.
pub type Labels = BTreeMap<String, String>;

/// Maximum length of an object name or a label key/value.
pub const MAX_NAME_LEN: usize = 253;

/// Most owners one object may have.
pub const MAX_OWNERS: usize = 16;

/// Maximum number of events kept on an object; the oldest are dropped first.
pub const MAX_EVENTS: usize = 20;

/// Current wall-clock time, the one clock used for stored timestamps.
pub fn now() -> Timestamp {
    Utc::now()
}

/// Identifier of an object: a UUIDv7, so ids sort by creation time and cursors stay stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectId(pub Uuid);

impl ObjectId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        ObjectId(Uuid::now_v7())
    }
}

impl Default for ObjectId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ObjectId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        // The hyphenated form only (what ids are written as), so every spelling of an id is
        // the same string.
        if s.len() != 36 {
            return Err(Error::invalid(
                "id",
                format!("{s:?} is not a UUID in its hyphenated form (8-4-4-4-12 hex digits)"),
            ));
        }
        Uuid::try_parse(s)
            .map(ObjectId)
            .map_err(|e| Error::invalid("id", format!("{s:?} is not a UUID: {e}")))
    }
}

/// A reference from one object to another, declared by [`ApiObject::references`].
///
/// References are indexed: lists can filter on them, and an object that is referenced cannot be
/// deleted (a definition with live instances answers `Conflict`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reference {
    /// Name of the spec field holding the reference (`definition`, `runtime`, ...).
    pub field: String,
    /// Kind of the referenced object.
    pub kind: String,
    /// Id of the referenced object.
    pub id: ObjectId,
}

impl Reference {
    /// A reference from `field` to the object `kind`/`id`.
    pub fn new(field: impl Into<String>, kind: impl Into<String>, id: ObjectId) -> Self {
        Reference {
            field: field.into(),
            kind: kind.into(),
            id,
        }
    }
}

/// An object named by kind and id: an owner in [`ObjectMeta::owners`], a dependent in
/// [`Store::dependents`](crate::Store::dependents).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    /// Kind of the object.
    pub kind: String,
    /// Id of the object.
    pub id: ObjectId,
}

impl ObjectRef {
    /// The object `kind`/`id`.
    pub fn new(kind: impl Into<String>, id: ObjectId) -> Self {
        ObjectRef {
            kind: kind.into(),
            id,
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

/// The envelope fields every object has, whatever its kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Unique id, assigned by the store.
    pub id: ObjectId,
    /// Kind name (`WorkloadInstance`, ...).
    pub kind: String,
    /// Name, unique per kind.
    pub name: String,
    /// Bumped on every write (spec or status); conditional writes compare it.
    pub version: u64,
    /// Bumped on every change of desired state (spec, labels, deletion); status writes leave it.
    pub generation: u64,
    /// When the object was created.
    pub created_at: Timestamp,
    /// When the object was last written.
    pub updated_at: Timestamp,
    /// Set when deletion was requested; the object stays until its reconciler cleaned up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_scheduled_at: Option<Timestamp>,
    /// Selection labels.
    #[serde(default)]
    pub labels: Labels,
    /// Indexed references to other objects, derived from the spec.
    #[serde(default)]
    pub references: Vec<Reference>,
    /// The objects this one was made on behalf of, set at creation and fixed afterwards.
    /// Deleting an owner deletes what it owns first ([`Propagation`](crate::Propagation)).
    #[serde(default)]
    pub owners: Vec<ObjectRef>,
}

/// The shared lifecycle protocol (Threeport's, tidied): where an object is between
/// "desired state written" and "desired state realised", or on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleState {
    /// Desired state written (created or changed), not yet picked up.
    #[default]
    Pending,
    /// A reconcile is underway and has not finished (long creates requeue in this state);
    /// `acknowledged_at` is its heartbeat, and a stale one means the work was interrupted.
    CreationAcknowledged,
    /// An agent confirmed the realised state exists (set by agents, not the runtime).
    CreationConfirmed,
    /// Desired state realised.
    Reconciled,
    /// The reconciler gave up with a terminal error; retried only when the object changes.
    CreationFailed,
    /// Deletion requested; cleanup not yet started.
    DeletionScheduled,
    /// Cleanup is underway (heartbeat in `acknowledged_at`).
    DeletionAcknowledged,
    /// Cleanup finished; the row is about to be removed.
    DeletionConfirmed,
    /// Reconciliation stopped and a human must intervene; `reason` says why.
    Interrupted,
}

impl LifecycleState {
    /// States in which the runtime does not reconcile again until the object changes.
    pub fn is_stopped(self) -> bool {
        matches!(
            self,
            LifecycleState::CreationFailed | LifecycleState::Interrupted
        )
    }
}

/// Truth value of a [`Condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

/// A named aspect of an object's state, Kubernetes style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// Condition type (`Ready`, `DatabaseAvailable`, ...).
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Timestamp,
}

/// Severity of an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// Routine progress.
    Normal,
    /// Something went wrong or needs attention.
    Warning,
}

/// Something that happened to an object. Repeats are folded into one event with a count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Severity.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// Machine-readable CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// How many times it happened.
    pub count: u32,
    /// First occurrence.
    pub first_seen: Timestamp,
    /// Latest occurrence.
    pub last_seen: Timestamp,
    /// Identity of an event observed elsewhere (a Kubernetes event's UID): an event with the
    /// same one replaces it rather than adding another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// What it is about, when not the object itself (`Pod shop/web-5d9c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<String>,
}

/// Observed state: the shared lifecycle, conditions and events, plus kind-specific `details`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: DeserializeOwned + Default"))]
pub struct Status<S> {
    /// Lifecycle state.
    #[serde(default)]
    pub state: LifecycleState,
    /// The `generation` the state describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// Heartbeat of an unfinished creation or deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<Timestamp>,
    /// Why the object failed or was interrupted, or the last retryable error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Consecutive failed reconciles; drives backoff and resets on success.
    #[serde(default)]
    pub failures: u32,
    /// When the runtime means to look at an unfinished object again (a requeue or a retry).
    /// A resync leaves the object alone until then: the bus has that look scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeue_at: Option<Timestamp>,
    /// Conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Recent events, oldest first, at most [`MAX_EVENTS`].
    #[serde(default)]
    pub events: Vec<Event>,
    /// Kind-specific observed state (`null` until a reconciler first wrote it).
    #[serde(default, deserialize_with = "null_as_default")]
    pub details: S,
}

/// `null` (what a new object's details are) as the type's default.
fn null_as_default<'de, D, S>(deserializer: D) -> Result<S, D::Error>
where
    D: serde::Deserializer<'de>,
    S: DeserializeOwned + Default,
{
    Ok(Option::<S>::deserialize(deserializer)?.unwrap_or_default())
}

impl<S: Default> Default for Status<S> {
    fn default() -> Self {
        Status {
            state: LifecycleState::Pending,
            observed_generation: 0,
            acknowledged_at: None,
            reason: None,
            failures: 0,
            requeue_at: None,
            conditions: Vec::new(),
            events: Vec::new(),
            details: S::default(),
        }
    }
}

impl<S> Status<S> {
    /// The condition of the given type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Sets a condition; `last_transition_time` moves only when its status changes.
    pub fn set_condition(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) {
        let message = message.into();
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(existing) => {
                if existing.status != status {
                    existing.last_transition_time = now();
                }
                existing.status = status;
                if existing.reason != reason {
                    existing.reason = reason.to_owned();
                }
                if existing.message != message {
                    existing.message = message;
                }
            }
            None => self.conditions.push(Condition {
                type_: type_.to_owned(),
                status,
                reason: reason.to_owned(),
                message,
                last_transition_time: now(),
            }),
        }
    }

    /// Records an event, folding it into an identical recent one (same type, reason, message).
    pub fn record_event(&mut self, type_: EventType, reason: &str, message: impl Into<String>) {
        let message = message.into();
        let at = now();
        if let Some(existing) = self
            .events
            .iter_mut()
            .find(|e| e.type_ == type_ && e.reason == reason && e.message == message)
        {
            existing.count = existing.count.saturating_add(1);
            existing.last_seen = at;
            return;
        }
        if self.events.len() >= MAX_EVENTS {
            self.events.remove(0);
        }
        self.events.push(Event {
            type_,
            reason: reason.to_owned(),
            message,
            count: 1,
            first_seen: at,
            last_seen: at,
            uid: None,
            about: None,
        });
    }

    /// Records an event observed elsewhere (it has a `uid`): one with the same uid is
    /// updated in place (count, last seen, message), so observing the same event again,
    /// after a restart or from another replica, never duplicates it; a new one is appended,
    /// the oldest dropped beyond [`MAX_EVENTS`]. Returns whether anything changed.
    pub fn observe_event(&mut self, event: Event) -> bool {
        if let Some(existing) = self
            .events
            .iter_mut()
            .find(|e| e.uid.is_some() && e.uid == event.uid)
        {
            let changed = existing.count != event.count
                || existing.last_seen != event.last_seen
                || existing.message != event.message;
            existing.count = event.count;
            existing.last_seen = event.last_seen;
            existing.message = event.message;
            return changed;
        }
        if self.events.len() >= MAX_EVENTS {
            self.events.remove(0);
        }
        self.events.push(event);
        true
    }

    /// A copy of the shared fields with other kind-specific details.
    pub fn clone_with_details<U>(&self, details: U) -> Status<U> {
        Status {
            state: self.state,
            observed_generation: self.observed_generation,
            acknowledged_at: self.acknowledged_at,
            reason: self.reason.clone(),
            failures: self.failures,
            requeue_at: self.requeue_at,
            conditions: self.conditions.clone(),
            events: self.events.clone(),
            details,
        }
    }

    /// Converts the kind-specific details, keeping the shared fields.
    pub fn map_details<U>(self, f: impl FnOnce(S) -> U) -> Status<U> {
        Status {
            state: self.state,
            observed_generation: self.observed_generation,
            acknowledged_at: self.acknowledged_at,
            reason: self.reason,
            failures: self.failures,
            requeue_at: self.requeue_at,
            conditions: self.conditions,
            events: self.events,
            details: f(self.details),
        }
    }
}

/// Raised by [`ApiObject::validate`]: which spec field is wrong and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// Path of the field inside the spec (`replicas`, `ports[0].number`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ValidationError {
    /// A validation failure of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<ValidationError> for Error {
    fn from(err: ValidationError) -> Self {
        Error::invalid(format!("spec.{}", err.field), err.message)
    }
}

/// A Rust type that is the spec of an object kind.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use threeport_core::{ApiObject, ValidationError};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Widget {
///     replicas: u32,
/// }
///
/// impl ApiObject for Widget {
///     const KIND: &'static str = "Widget";
///     type Status = ();
///     fn validate(&self) -> Result<(), ValidationError> {
///         if self.replicas > 10 {
///             return Err(ValidationError::new("replicas", "at most 10"));
///         }
///         Ok(())
///     }
/// }
///
/// assert!(Widget { replicas: 11 }.validate().is_err());
/// ```
pub trait ApiObject:
    Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static
{
    /// Kind name: ASCII letters and digits, starting with a letter (it appears in bus subjects).
    const KIND: &'static str;
    /// The spec field whose values are secret (a map of strings): taken out of a creation
    /// request before the spec is stored, they travel to the controller in memory only
    /// ([`SecretValues`](crate::SecretValues)). `None`: the kind has none.
    const SECRET_FIELD: Option<&'static str> = None;
    /// Spec paths (dotted, inside the spec) whose values are kept encrypted at rest: the API
    /// seals them before storing.
    const SEALED_FIELDS: &'static [&'static str] = &[];
    /// Kind-specific observed state, kept in [`Status::details`].
    type Status: Serialize
        + DeserializeOwned
        + Clone
        + fmt::Debug
        + Default
        + PartialEq
        + Send
        + Sync
        + 'static;

    /// Checks the spec before it is stored. The default accepts everything.
    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }

    /// References this spec makes to other objects (indexed; they block the target's deletion).
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }

    /// Whether a stored object of kind `kind` decodes as this type: only [`Self::KIND`],
    /// except for types that stand for any kind ([`Dynamic`]).
    fn is_kind(kind: &str) -> bool {
        kind == Self::KIND
    }
}

/// The spec of an object of any kind, as JSON, with its status details as JSON too: for
/// reconcilers whose kind is known only at run time (language bindings, generic tools). Its
/// reconciler names the kind with [`Reconciler::kind`](crate::Reconciler::kind).
///
/// ```
/// use threeport_core::{ApiObject, Dynamic};
/// assert!(Dynamic::is_kind("Widget") && Dynamic::is_kind("Gadget"));
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Dynamic(pub Value);

impl ApiObject for Dynamic {
    /// A placeholder: a `Dynamic` object's kind is the one it was stored under.
    const KIND: &'static str = "Dynamic";
    type Status = Value;
    fn is_kind(_: &str) -> bool {
        true
    }
}

/// An object as stored: envelope, JSON spec and JSON status details. Serves every kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawObject {
    /// Envelope.
    #[serde(flatten)]
    pub meta: ObjectMeta,
    /// Desired state.
    pub spec: Value,
    /// Observed state.
    pub status: Status<Value>,
}

impl RawObject {
    /// Whether the object waits for a reconcile that the runtime may have lost track of: its
    /// current generation is neither realised nor stopped, or a retry is pending, and no
    /// requeue is scheduled after `at`. Pending, acknowledged, failing and deletion-scheduled
    /// objects qualify; reconciled and stopped (failed, interrupted) ones at their generation
    /// do not. A controller's resync notifies itself of these.
    ///
    /// ```
    /// use threeport_core::{LifecycleState, RawObject};
    /// let mut raw: RawObject = serde_json::from_value(serde_json::json!({
    ///     "id": "01890a5d-ac96-774b-bcce-b302099a8057", "kind": "Widget", "name": "w",
    ///     "version": 1, "generation": 1, "created_at": "2026-01-01T00:00:00Z",
    ///     "updated_at": "2026-01-01T00:00:00Z", "spec": {}, "status": {}
    /// })).unwrap();
    /// let now = threeport_core::object::now();
    /// assert!(raw.needs_reconcile(now), "pending");
    /// raw.status.state = LifecycleState::Reconciled;
    /// raw.status.observed_generation = 1;
    /// assert!(!raw.needs_reconcile(now), "reconciled at its generation");
    /// ```
    pub fn needs_reconcile(&self, at: Timestamp) -> bool {
        let status = &self.status;
        let current = status.observed_generation == self.meta.generation;
        let settled = match status.state {
            LifecycleState::Reconciled => current && status.failures == 0,
            state if state.is_stopped() => current,
            _ => false,
        };
        !settled && status.requeue_at.is_none_or(|due| due <= at)
    }
}

/// A typed object of kind `T`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "T: ApiObject", deserialize = "T: ApiObject"))]
pub struct Object<T: ApiObject> {
    /// Envelope.
    #[serde(flatten)]
    pub meta: ObjectMeta,
    /// Desired state.
    pub spec: T,
    /// Observed state.
    pub status: Status<T::Status>,
}

impl<T: ApiObject> Object<T> {
    /// Decodes a stored object; fails with [`Error::Invalid`] if the kind or JSON does not match.
    pub fn from_raw(raw: RawObject) -> Result<Self, Error> {
        let (spec, details) = Self::decode_parts(&raw)?;
        Ok(Object {
            meta: raw.meta,
            spec,
            status: raw.status.map_details(|_| details),
        })
    }

    /// Decodes a stored object without consuming it (the JSON is read in place, not copied),
    /// so the caller keeps the raw object when decoding fails.
    pub fn decode(raw: &RawObject) -> Result<Self, Error> {
        let (spec, details) = Self::decode_parts(raw)?;
        Ok(Object {
            meta: raw.meta.clone(),
            spec,
            status: raw.status.clone_with_details(details),
        })
    }

    fn decode_parts(raw: &RawObject) -> Result<(T, T::Status), Error> {
        if !T::is_kind(&raw.meta.kind) {
            return Err(Error::invalid(
                "kind",
                format!("expected {}, found {}", T::KIND, raw.meta.kind),
            ));
        }
        let spec = T::deserialize(&raw.spec).map_err(|e| Error::invalid("spec", e.to_string()))?;
        let details = if raw.status.details.is_null() {
            T::Status::default()
        } else {
            T::Status::deserialize(&raw.status.details)
                .map_err(|e| Error::invalid("status.details", e.to_string()))?
        };
        Ok((spec, details))
    }

    /// Encodes this object for storage.
    pub fn to_raw(&self) -> Result<RawObject, Error> {
        Ok(RawObject {
            meta: self.meta.clone(),
            spec: serde_json::to_value(&self.spec)?,
            status: self.status_to_raw()?,
        })
    }

    /// Encodes the status alone, for status writes.
    pub fn status_to_raw(&self) -> Result<Status<Value>, Error> {
        let details = serde_json::to_value(&self.status.details)
            .map_err(|e| Error::invalid("status.details", e.to_string()))?;
        Ok(self.status.clone_with_details(details))
    }

    /// Id shorthand.
    pub fn id(&self) -> ObjectId {
        self.meta.id
    }

    /// Name shorthand.
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// Whether deletion was requested.
    pub fn is_deleting(&self) -> bool {
        self.meta.deletion_scheduled_at.is_some()
    }

    /// Whether the current generation is realised ([`LifecycleState::Reconciled`] and observed).
    pub fn is_reconciled(&self) -> bool {
        self.status.state == LifecycleState::Reconciled
            && self.status.observed_generation == self.meta.generation
    }
}

/// A request to create an object: everything but the store-assigned envelope fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewObject {
    /// Kind name.
    pub kind: String,
    /// Name, unique per kind.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// References derived from the spec.
    pub references: Vec<Reference>,
    /// Owners: existing objects (or ones created earlier in the same
    /// [`create_all`](crate::Store::create_all)) this one is made on behalf of.
    pub owners: Vec<ObjectRef>,
    /// Desired state.
    pub spec: Value,
}

impl NewObject {
    /// A creation request for an object of `kind` named `name`, with no labels, references
    /// or owners.
    pub fn new(kind: impl Into<String>, name: impl Into<String>, spec: Value) -> Self {
        NewObject {
            kind: kind.into(),
            name: name.into(),
            labels: Labels::new(),
            references: Vec::new(),
            owners: Vec::new(),
            spec,
        }
    }

    /// Builds a creation request from a typed spec, validating it first.
    pub fn typed<T: ApiObject>(name: impl Into<String>, spec: &T) -> Result<Self, Error> {
        spec.validate()?;
        Ok(NewObject {
            kind: T::KIND.to_owned(),
            name: name.into(),
            labels: Labels::new(),
            references: spec.references(),
            owners: Vec::new(),
            spec: serde_json::to_value(spec)?,
        })
    }

    /// The checks every store makes before creating: kind, name and labels well formed,
    /// owners well formed and not repeated.
    pub fn validate(&self) -> Result<(), Error> {
        validate_kind(&self.kind)?;
        validate_name("name", &self.name)?;
        validate_labels(&self.labels)?;
        if self.owners.len() > MAX_OWNERS {
            return Err(Error::invalid(
                "owners",
                format!("at most {MAX_OWNERS} owners"),
            ));
        }
        for (i, owner) in self.owners.iter().enumerate() {
            validate_kind(&owner.kind)
                .map_err(|_| Error::invalid(format!("owners[{i}].kind"), "is not a kind name"))?;
            if self.owners[..i].iter().any(|o| o.id == owner.id) {
                return Err(Error::invalid(
                    format!("owners[{i}]"),
                    format!("{owner} is listed twice"),
                ));
            }
        }
        Ok(())
    }

    /// Adds an owner.
    pub fn owned_by(mut self, kind: impl Into<String>, id: ObjectId) -> Self {
        self.owners.push(ObjectRef::new(kind, id));
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// Checks a kind name: ASCII letter first, then letters and digits, at most 63 characters.
pub fn validate_kind(kind: &str) -> Result<(), Error> {
    let mut chars = kind.chars();
    let ok = kind.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "kind",
            format!("{kind:?} must be 1-63 ASCII letters and digits, starting with a letter"),
        ))
    }
}

/// Checks a name or label key: 1 to [`MAX_NAME_LEN`] characters, no whitespace or control.
pub fn validate_name(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            field,
            format!("{value:?} must not contain whitespace or control characters"),
        ));
    }
    Ok(())
}

/// Checks labels: keys like names, values at most [`MAX_NAME_LEN`] characters without control
/// characters.
pub fn validate_labels(labels: &Labels) -> Result<(), Error> {
    for (key, value) in labels {
        validate_name("labels", key)?;
        if value.chars().count() > MAX_NAME_LEN || value.chars().any(char::is_control) {
            return Err(Error::invalid(
                format!("labels.{key}"),
                format!(
                    "value must be at most {MAX_NAME_LEN} characters without control characters"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Widget {
        size: u32,
    }
    impl ApiObject for Widget {
        const KIND: &'static str = "Widget";
        type Status = WidgetStatus;
    }
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    struct WidgetStatus {
        ready_replicas: u32,
    }

    #[test]
    fn events_deduplicate_with_count_and_cap() {
        let mut status = Status::<()>::default();
        status.record_event(EventType::Warning, "Failed", "boom");
        status.record_event(EventType::Warning, "Failed", "boom");
        assert_eq!(status.events.len(), 1);
        assert_eq!(status.events[0].count, 2);
        for i in 0..MAX_EVENTS + 5 {
            status.record_event(EventType::Normal, "Step", format!("step {i}"));
        }
        assert_eq!(status.events.len(), MAX_EVENTS);
        assert_eq!(
            status.events.last().unwrap().message,
            format!("step {}", MAX_EVENTS + 4)
        );
    }

    #[test]
    fn observed_events_are_kept_once_per_uid() {
        let mut status = Status::<()>::default();
        let event = |uid: &str, count: u32| Event {
            type_: EventType::Warning,
            reason: "BackOff".into(),
            message: "Back-off restarting failed container".into(),
            count,
            first_seen: now(),
            last_seen: now(),
            uid: Some(uid.into()),
            about: Some("Pod shop/web-1".into()),
        };
        assert!(status.observe_event(event("a", 1)));
        assert!(
            !status.observe_event(status.events[0].clone()),
            "the same again"
        );
        assert!(status.observe_event(event("a", 3)));
        assert_eq!((status.events.len(), status.events[0].count), (1, 3));
        for i in 0..MAX_EVENTS {
            status.observe_event(event(&format!("u{i}"), 1));
        }
        assert_eq!(status.events.len(), MAX_EVENTS);
        assert_eq!(
            status.events[0].uid.as_deref(),
            Some("u0"),
            "the oldest went"
        );
    }

    #[test]
    fn condition_transition_time_moves_only_on_status_change() {
        let mut status = Status::<()>::default();
        status.set_condition("Ready", ConditionStatus::False, "Pending", "");
        let first = status.condition("Ready").unwrap().last_transition_time;
        status.set_condition("Ready", ConditionStatus::False, "StillPending", "x");
        assert_eq!(
            status.condition("Ready").unwrap().last_transition_time,
            first
        );
        assert_eq!(status.condition("Ready").unwrap().reason, "StillPending");
        std::thread::sleep(std::time::Duration::from_millis(2));
        status.set_condition("Ready", ConditionStatus::True, "Reconciled", "");
        assert!(status.condition("Ready").unwrap().last_transition_time > first);
    }

    #[test]
    fn typed_round_trip_through_raw() {
        let raw = RawObject {
            meta: ObjectMeta {
                id: ObjectId::new(),
                kind: "Widget".into(),
                name: "w".into(),
                version: 1,
                generation: 1,
                created_at: now(),
                updated_at: now(),
                deletion_scheduled_at: None,
                labels: Labels::new(),
                references: vec![],
                owners: vec![],
            },
            spec: serde_json::json!({"size": 3}),
            status: Status::default(),
        };
        let mut obj = Object::<Widget>::from_raw(raw.clone()).unwrap();
        assert_eq!(obj.spec.size, 3);
        assert_eq!(obj.status.details, WidgetStatus::default());
        obj.status.details.ready_replicas = 2;
        let back = obj.to_raw().unwrap();
        assert_eq!(back.status.details["ready_replicas"], 2);
        let mut wrong = raw;
        wrong.meta.kind = "Gadget".into();
        assert_eq!(
            Object::<Widget>::from_raw(wrong).unwrap_err().kind(),
            crate::ErrorKind::Invalid
        );
    }

    #[test]
    fn kind_and_name_validation() {
        assert!(validate_kind("WorkloadInstance").is_ok());
        assert!(validate_kind("1abc").is_err());
        assert!(validate_kind("a.b").is_err());
        assert!(validate_name("name", "web-1").is_ok());
        assert!(validate_name("name", "").is_err());
        assert!(validate_name("name", "a b").is_err());
        assert!(validate_name("name", &"x".repeat(254)).is_err());
    }
}
