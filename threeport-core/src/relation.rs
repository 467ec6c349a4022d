//! Relations between kinds, and what deleting an owner does to what it owns.
//!
//! A controller that must react to other objects declares [`Relation`]s (with
//! [`Controller::follows`](crate::Controller::follows)) instead of polling them or writing on
//! them: when an object of a followed kind changes — its spec, lifecycle state, conditions or
//! details, status writes included, or its creation, deletion or removal — the store records,
//! in the same transaction as the change, a [`Related`](crate::Operation::Related)
//! notification for each object of the follower's kind the relation maps it to. Those travel
//! through the outbox and the bus like every other notification: nothing is lost across
//! crashes, pending ones coalesce per object, nobody polls.
//!
//! The mapping is one of three, all answered by the store's indexes at write time:
//! [`Via::Referencing`] (instances follow their definition), [`Via::ReferencedBy`] (a workload
//! follows the services that reference it) and [`Via::Owning`] (an owner follows what it owns,
//! as kube-runtime's `Controller::owns`).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use threeport_core::{MemoryStore, NewObject, Operation, Outbox, Relation, Status, StatusWrite,
//!                      Store, Via, LifecycleState, Reference};
//! use std::time::Duration;
//!
//! let store = MemoryStore::new();
//! // Instances follow the definition they reference.
//! store.register_relations(&[Relation::new("Instance", "Definition", Via::Referencing)]).await?;
//! let def = store.create(NewObject::new("Definition", "d", serde_json::json!({}))).await?;
//! let mut new = NewObject::new("Instance", "i", serde_json::json!({}));
//! new.references.push(Reference::new("definition", "Definition", def.meta.id));
//! let inst = store.create(new).await?;
//! let pending = store.claim("relay", 100, Duration::from_secs(5)).await?;
//! store.complete(&pending.iter().map(|e| e.seq).collect::<Vec<_>>()).await?;
//!
//! // The definition's controller writes its status: the instance is notified.
//! let mut status = Status::default();
//! status.state = LifecycleState::Reconciled;
//! store.update_status("Definition", def.meta.id,
//!     StatusWrite { expected_version: None, fence: None, status }).await?;
//! let pending = store.claim("relay", 100, Duration::from_secs(5)).await?;
//! assert_eq!(pending.len(), 1);
//! assert_eq!((pending[0].notification.kind.as_str(), pending[0].notification.id),
//!            ("Instance", inst.meta.id));
//! assert_eq!(pending[0].notification.operation, Operation::Related);
//! # Ok::<(), threeport_core::Error>(())
//! # }).unwrap();
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::object::{ObjectRef, RawObject, Status, validate_kind};

/// How a change of a followed object maps to the follower's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The follower's objects that reference the changed object (through the reference
    /// index): workload instances follow their definition.
    Referencing,
    /// The follower's objects the changed object references: a workload instance follows the
    /// databases and buckets attached to it.
    ReferencedBy,
    /// The follower's objects that own the changed object ([`ObjectMeta::owners`](
    /// crate::ObjectMeta::owners)).
    Owning,
    /// Whatever the follower's mapping function says
    /// ([`Controller::follows_mapped`](crate::Controller::follows_mapped)): the store notifies
    /// the follower's controller of the changed object itself
    /// ([`Operation::Followed`](crate::Operation::Followed)), and that controller maps it to
    /// its objects and notifies them.
    Mapped,
}

impl Via {
    /// The name stored by SQL backends.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Referencing => "referencing",
            Via::ReferencedBy => "referenced_by",
            Via::Owning => "owning",
            Via::Mapped => "mapped",
        }
    }

    /// The inverse of [`as_str`](Via::as_str).
    pub fn parse(name: &str) -> Result<Via> {
        match name {
            "referencing" => Ok(Via::Referencing),
            "referenced_by" => Ok(Via::ReferencedBy),
            "owning" => Ok(Via::Owning),
            "mapped" => Ok(Via::Mapped),
            other => Err(Error::backend(format!("unknown relation {other:?}"))),
        }
    }
}

/// Objects of kind `follower` react to changes of objects of kind `followed`, mapped `via`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Relation {
    /// The kind notified.
    pub follower: String,
    /// The kind whose changes are followed.
    pub followed: String,
    /// How a change maps to the follower's objects.
    pub via: Via,
}

impl Relation {
    /// `follower` follows `followed` `via` a mapping.
    pub fn new(follower: impl Into<String>, followed: impl Into<String>, via: Via) -> Self {
        Relation {
            follower: follower.into(),
            followed: followed.into(),
            via,
        }
    }

    /// Both kinds must be well-formed kind names.
    pub fn validate(&self) -> Result<()> {
        validate_kind(&self.follower)?;
        validate_kind(&self.followed)
    }

    /// The follower objects a change of `changed` maps to, given the objects of any kind that
    /// reference it (`referrers`): what every store computes, in its own way, at write time.
    /// None for [`Via::Mapped`], whose follower hears of `changed` itself
    /// ([`Relation::followed_notification`]).
    pub fn targets<'a>(
        &'a self,
        changed: &'a RawObject,
        referrers: &'a [ObjectRef],
    ) -> Box<dyn Iterator<Item = ObjectRef> + 'a> {
        let follower = self.follower.as_str();
        match self.via {
            Via::Referencing => Box::new(
                referrers
                    .iter()
                    .filter(move |r| r.kind == follower)
                    .cloned(),
            ),
            Via::ReferencedBy => Box::new(
                changed
                    .meta
                    .references
                    .iter()
                    .filter(move |r| r.kind == follower)
                    .map(|r| ObjectRef::new(r.kind.clone(), r.id)),
            ),
            Via::Owning => Box::new(
                changed
                    .meta
                    .owners
                    .iter()
                    .filter(move |o| o.kind == follower)
                    .cloned(),
            ),
            Via::Mapped => Box::new(std::iter::empty()),
        }
    }

    /// For [`Via::Mapped`]: the notification that tells the follower's controller that
    /// `changed` changed (addressed to the follower's kind, naming the changed object).
    pub fn followed_notification(&self, changed: &RawObject) -> Option<crate::Notification> {
        (self.via == Via::Mapped).then(|| {
            crate::Notification::new(
                self.follower.clone(),
                changed.meta.id,
                crate::Operation::Followed,
                changed.meta.version,
            )
        })
    }
}

/// Whether a status write changes what followers see: the lifecycle state, the conditions or
/// the details. Heartbeats, failure counts, requeue times and events are the writer's own
/// bookkeeping and notify nobody.
pub fn status_changed(before: &Status<Value>, after: &Status<Value>) -> bool {
    before.state != after.state
        || before.conditions != after.conditions
        || before.details != after.details
}

/// What deleting an object does to the objects it owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// Its dependents are deleted first, transitively, and the owner is removed only once
    /// they are gone (Kubernetes' foreground cascading deletion).
    #[default]
    Foreground,
    /// Its dependents are kept: they lose this owner and live on.
    Orphan,
}

impl std::str::FromStr for Propagation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "foreground" => Ok(Propagation::Foreground),
            "orphan" => Ok(Propagation::Orphan),
            other => Err(Error::invalid(
                "propagation",
                format!("{other:?} is not one of foreground, orphan"),
            )),
        }
    }
}

/// What deleting an object would do ([`deletion_plan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionPlan {
    /// What happens to the objects it owns.
    pub propagation: Propagation,
    /// The objects deleted: the object first, then what it owns, transitively.
    pub deletes: Vec<ObjectRef>,
    /// The objects that lose it as an owner and stay.
    pub orphans: Vec<ObjectRef>,
}

/// What deleting `root` with `propagation` would delete and orphan, without deleting
/// anything: a preview of the cascade.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use threeport_core::{MemoryStore, NewObject, ObjectRef, Propagation, Store};
/// use threeport_core::relation::deletion_plan;
///
/// let store = MemoryStore::new();
/// let app = store.create(NewObject::new("App", "shop", serde_json::json!({}))).await?;
/// let db = store
///     .create(NewObject::new("Database", "orders", serde_json::json!({})).owned_by("App", app.meta.id))
///     .await?;
/// let root = ObjectRef::new("App", app.meta.id);
/// let plan = deletion_plan(&store, &root, Propagation::Foreground).await?;
/// assert_eq!(plan.deletes, vec![root.clone(), ObjectRef::new("Database", db.meta.id)]);
/// let plan = deletion_plan(&store, &root, Propagation::Orphan).await?;
/// assert_eq!(plan.orphans, vec![ObjectRef::new("Database", db.meta.id)]);
/// # Ok::<(), threeport_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn deletion_plan(
    store: &dyn crate::Store,
    root: &ObjectRef,
    propagation: Propagation,
) -> Result<DeletionPlan> {
    let mut plan = DeletionPlan {
        propagation,
        deletes: vec![root.clone()],
        orphans: Vec::new(),
    };
    let direct = store.dependents(&root.kind, root.id).await?;
    match propagation {
        Propagation::Orphan => plan.orphans = direct,
        Propagation::Foreground => {
            plan.deletes.extend(direct);
            let mut gone = Vec::new();
            let mut next = 1;
            while next < plan.deletes.len() {
                let owner = plan.deletes[next].clone();
                next += 1;
                let dependents = match store.dependents(&owner.kind, owner.id).await {
                    Ok(dependents) => dependents,
                    // Removed while the plan was being made (a controller replacing its
                    // records): nothing of it is left to delete.
                    Err(err) if err.kind() == crate::ErrorKind::NotFound => {
                        gone.push(owner);
                        continue;
                    }
                    Err(err) => return Err(err),
                };
                for dependent in dependents {
                    if !plan.deletes.contains(&dependent) {
                        plan.deletes.push(dependent);
                    }
                }
            }
            plan.deletes.retain(|part| !gone.contains(part));
        }
    }
    Ok(plan)
}
