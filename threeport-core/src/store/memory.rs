//! [`MemoryStore`]: objects and outbox in one mutex, so every write and its notification are
//! atomic, exactly as a SQL transaction makes them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    IDEMPOTENCY_WINDOW, IdempotencyKey, ListPage, ListQuery, Once, SpecUpdate, StatusWrite, Store,
};
use crate::bus::{Notification, Operation};
use crate::error::{Error, Result};
use crate::object::{
    LifecycleState, NewObject, ObjectId, ObjectMeta, ObjectRef, RawObject, Reference, Status, now,
    validate_kind,
};
use crate::outbox::{Outbox, OutboxEntry};
use crate::relation::{Propagation, Relation, status_changed};

/// In-memory [`Store`] and [`Outbox`]. Always compiled; passes the same conformance suites as
/// the SQL stores, so tests written against it hold for production backends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<StoreState>,
    outbox_wake: Notify,
}

#[derive(Debug, Default)]
struct StoreState {
    kinds: HashMap<String, KindTable>,
    /// For each object, the objects whose references point at it.
    inbound: HashMap<ObjectId, BTreeSet<(String, ObjectId)>>,
    /// For each owner, the objects it owns.
    owned: HashMap<ObjectId, BTreeSet<ObjectRef>>,
    /// Registered relations.
    relations: BTreeSet<Relation>,
    outbox: BTreeMap<u64, OutboxRow>,
    next_seq: u64,
    /// Idempotency keys: fingerprint, what was created, when (tokio's clock).
    idempotency: HashMap<String, (String, Vec<RawObject>, Instant)>,
}

#[derive(Debug, Default)]
struct KindTable {
    objects: BTreeMap<ObjectId, Stored>,
    names: HashMap<String, ObjectId>,
}

#[derive(Debug)]
struct Stored {
    /// Shared, so a read copies the object after the store's lock is released.
    raw: Arc<RawObject>,
    /// Highest fencing token a status write or removal presented.
    fence: u64,
}

#[derive(Debug)]
struct OutboxRow {
    notification: Notification,
    claim: Option<(String, Instant)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of outbox entries not yet completed (for tests and diagnostics).
    pub fn outbox_len(&self) -> usize {
        self.state.lock().unwrap().outbox.len()
    }
}

impl MemoryStore {
    /// Writes a status and returns `read(written object)`, under one lock.
    fn write_status_then<T>(
        &self,
        kind: &str,
        id: ObjectId,
        write: StatusWrite,
        read: impl FnOnce(&RawObject) -> T,
    ) -> Result<T> {
        let mut state = self.state.lock().unwrap();
        let stored = state.stored_mut(kind, id)?;
        check_version(&stored.raw, write.expected_version)?;
        check_fence(stored, write.fence)?;
        let changed = status_changed(&stored.raw.status, &write.status);
        let raw = Arc::make_mut(&mut stored.raw);
        raw.status = write.status;
        raw.meta.version += 1;
        raw.meta.updated_at = now();
        let read = read(&stored.raw);
        // Followers are notified of a changed status; most kinds have none, and then the
        // object is not copied.
        if changed && state.relations.iter().any(|r| r.followed == kind) {
            let written = state.stored_mut(kind, id)?.raw.clone();
            state.follow(&written, &[]);
            drop(state);
            self.outbox_wake.notify_one();
        }
        Ok(read)
    }
}

impl StoreState {
    /// Creates `objects`, all or none (see [`Store::create_all`]).
    fn create_all(&mut self, objects: Vec<(ObjectId, NewObject)>) -> Result<Vec<RawObject>> {
        // Check everything first, so the inserts below cannot fail half-way.
        let mut planned: HashMap<ObjectId, &str> = HashMap::new();
        let mut names: HashSet<(&str, &str)> = HashSet::new();
        for (id, new) in &objects {
            new.validate()?;
            let taken = self.kinds.values().any(|t| t.objects.contains_key(id));
            if taken || planned.insert(*id, &new.kind).is_some() {
                return Err(Error::invalid("ids", format!("id {id} is taken")));
            }
            let exists = self
                .kinds
                .get(&new.kind)
                .is_some_and(|t| t.names.contains_key(&new.name));
            if exists || !names.insert((&new.kind, &new.name)) {
                return Err(Error::AlreadyExists {
                    kind: new.kind.clone(),
                    name: new.name.clone(),
                });
            }
            // References to objects earlier in this call are satisfied; the rest must exist.
            let stored: Vec<Reference> = new
                .references
                .iter()
                .filter(|r| r.id == *id || planned.get(&r.id) != Some(&r.kind.as_str()))
                .cloned()
                .collect();
            self.check_references(&stored)?;
            for (i, owner) in new.owners.iter().enumerate() {
                let field = || format!("owners[{i}]");
                if owner.id == *id {
                    return Err(Error::invalid(field(), "an object cannot own itself"));
                }
                if planned.get(&owner.id) == Some(&owner.kind.as_str()) {
                    continue;
                }
                match self
                    .kinds
                    .get(&owner.kind)
                    .and_then(|t| t.objects.get(&owner.id))
                {
                    None => {
                        return Err(Error::invalid(
                            field(),
                            format!("owner {owner} does not exist"),
                        ));
                    }
                    Some(o) if o.raw.meta.deletion_scheduled_at.is_some() => {
                        return Err(Error::invalid(
                            field(),
                            format!("owner {owner} is being deleted"),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        let at = now();
        let mut created = Vec::with_capacity(objects.len());
        for (id, new) in objects {
            let raw = RawObject {
                meta: ObjectMeta {
                    id,
                    kind: new.kind,
                    name: new.name,
                    version: 1,
                    generation: 1,
                    created_at: at,
                    updated_at: at,
                    deletion_scheduled_at: None,
                    labels: new.labels,
                    references: new.references,
                    owners: new.owners,
                },
                spec: new.spec,
                status: Status::default(),
            };
            let table = self.kinds.entry(raw.meta.kind.clone()).or_default();
            table.names.insert(raw.meta.name.clone(), id);
            table.objects.insert(
                id,
                Stored {
                    raw: Arc::new(raw.clone()),
                    fence: 0,
                },
            );
            self.link((&raw.meta.kind, id), &raw.meta.references);
            for owner in &raw.meta.owners {
                self.owned
                    .entry(owner.id)
                    .or_default()
                    .insert(ObjectRef::new(raw.meta.kind.clone(), id));
            }
            self.record(&raw.meta, Operation::Created);
            self.follow(&raw, &[]);
            created.push(raw);
        }
        Ok(created)
    }

    fn stored_mut(&mut self, kind: &str, id: ObjectId) -> Result<&mut Stored> {
        self.kinds
            .get_mut(kind)
            .and_then(|t| t.objects.get_mut(&id))
            .ok_or_else(|| Error::not_found(kind, id))
    }

    /// Every reference must point at an existing object of the named kind that is not being
    /// deleted. The error names the referencing field.
    fn check_references(&self, references: &[Reference]) -> Result<()> {
        for r in references {
            let target = self.kinds.get(&r.kind).and_then(|t| t.objects.get(&r.id));
            match target {
                None => {
                    return Err(Error::invalid(
                        format!("spec.{}", r.field),
                        format!("references {} {} which does not exist", r.kind, r.id),
                    ));
                }
                Some(t) if t.raw.meta.deletion_scheduled_at.is_some() => {
                    return Err(Error::invalid(
                        format!("spec.{}", r.field),
                        format!("references {} {} which is being deleted", r.kind, r.id),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn link(&mut self, from: (&str, ObjectId), references: &[Reference]) {
        for r in references {
            self.inbound
                .entry(r.id)
                .or_default()
                .insert((from.0.to_owned(), from.1));
        }
    }

    fn unlink(&mut self, from: (&str, ObjectId), references: &[Reference]) {
        for r in references {
            if let Some(set) = self.inbound.get_mut(&r.id) {
                set.remove(&(from.0.to_owned(), from.1));
                if set.is_empty() {
                    self.inbound.remove(&r.id);
                }
            }
        }
    }

    fn record(&mut self, meta: &ObjectMeta, operation: Operation) {
        self.record_notification(Notification::new(
            meta.kind.clone(),
            meta.id,
            operation,
            meta.version,
        ));
    }

    fn record_notification(&mut self, notification: Notification) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outbox.insert(
            seq,
            OutboxRow {
                notification,
                claim: None,
            },
        );
    }

    fn referrers(&self, id: ObjectId) -> Vec<ObjectRef> {
        self.inbound.get(&id).map_or_else(Vec::new, |set| {
            set.iter()
                .map(|(kind, id)| ObjectRef::new(kind.clone(), *id))
                .collect()
        })
    }

    /// Notifies the objects that follow `changed` through a relation, and `also` (owners
    /// waiting for a dependent's removal).
    fn follow(&mut self, changed: &RawObject, also: &[ObjectRef]) {
        let referrers = self.referrers(changed.meta.id);
        let mut targets: BTreeSet<ObjectRef> = also.iter().cloned().collect();
        for relation in self
            .relations
            .iter()
            .filter(|r| r.followed == changed.meta.kind)
        {
            targets.extend(relation.targets(changed, &referrers));
        }
        let followed: Vec<Notification> = self
            .relations
            .iter()
            .filter(|r| r.followed == changed.meta.kind)
            .filter_map(|r| r.followed_notification(changed))
            .collect();
        for notification in followed {
            self.record_notification(notification);
        }
        for target in targets {
            let version = self
                .kinds
                .get(&target.kind)
                .and_then(|t| t.objects.get(&target.id))
                .map(|s| s.raw.meta.version);
            if let Some(version) = version {
                self.record_notification(Notification::new(
                    target.kind,
                    target.id,
                    Operation::Related,
                    version,
                ));
            }
        }
    }

    /// `root` and, transitively, every object it owns.
    fn cascade(&self, root: ObjectRef) -> Vec<ObjectRef> {
        let mut seen = BTreeSet::from([root.clone()]);
        let mut order = vec![root];
        let mut next = 0;
        while next < order.len() {
            let id = order[next].id;
            next += 1;
            for dependent in self.owned.get(&id).into_iter().flatten() {
                if seen.insert(dependent.clone()) {
                    order.push(dependent.clone());
                }
            }
        }
        order
    }
}

fn check_version(stored: &RawObject, expected: Option<u64>) -> Result<()> {
    match expected {
        Some(v) if v != stored.meta.version => Err(Error::conflict(format!(
            "{} {} is at version {}, not {v}",
            stored.meta.kind, stored.meta.id, stored.meta.version
        ))),
        _ => Ok(()),
    }
}

fn check_fence(stored: &mut Stored, fence: Option<u64>) -> Result<()> {
    if let Some(token) = fence {
        if token < stored.fence {
            return Err(Error::conflict(format!(
                "stale fencing token {token} for {} {}: a newer lease holder ({}) wrote since",
                stored.raw.meta.kind, stored.raw.meta.id, stored.fence
            )));
        }
        stored.fence = token;
    }
    Ok(())
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(&self, new: NewObject) -> Result<RawObject> {
        let mut created = self.create_all(vec![(ObjectId::new(), new)]).await?;
        Ok(created.pop().expect("one object created"))
    }

    async fn create_all(&self, objects: Vec<(ObjectId, NewObject)>) -> Result<Vec<RawObject>> {
        let created = self.state.lock().unwrap().create_all(objects)?;
        self.outbox_wake.notify_one();
        Ok(created)
    }

    async fn create_all_once(
        &self,
        key: &IdempotencyKey,
        objects: Vec<(ObjectId, NewObject)>,
    ) -> Result<Once> {
        key.validate()?;
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        state
            .idempotency
            .retain(|_, (_, _, at)| now.duration_since(*at) < IDEMPOTENCY_WINDOW);
        if let Some((fingerprint, objects, _)) = state.idempotency.get(&key.key) {
            return Ok(Once::Replayed {
                fingerprint: fingerprint.clone(),
                objects: objects.clone(),
            });
        }
        let created = state.create_all(objects)?;
        state.idempotency.insert(
            key.key.clone(),
            (key.fingerprint.clone(), created.clone(), now),
        );
        drop(state);
        self.outbox_wake.notify_one();
        Ok(Once::Created(created))
    }

    async fn get(&self, kind: &str, id: ObjectId) -> Result<RawObject> {
        let shared = {
            let state = self.state.lock().unwrap();
            state
                .kinds
                .get(kind)
                .and_then(|t| t.objects.get(&id))
                .map(|s| s.raw.clone())
                .ok_or_else(|| Error::not_found(kind, id))?
        };
        // Copied outside the lock.
        Ok(Arc::unwrap_or_clone(shared))
    }

    async fn list(&self, kind: &str, query: &ListQuery) -> Result<ListPage> {
        validate_kind(kind)?;
        query.validate()?;
        let state = self.state.lock().unwrap();
        let Some(table) = state.kinds.get(kind) else {
            return Ok(ListPage {
                items: Vec::new(),
                next: None,
            });
        };
        let after = query.after.map_or(Bound::Unbounded, Bound::Excluded);
        let candidates: Box<dyn Iterator<Item = &Stored>> = match &query.name {
            // The name index narrows the scan to at most one object.
            Some(name) => Box::new(
                table
                    .names
                    .get(name)
                    .and_then(|id| table.objects.get(id))
                    .filter(|s| query.after.is_none_or(|a| s.raw.meta.id > a))
                    .into_iter(),
            ),
            None => Box::new(
                table
                    .objects
                    .range((after, Bound::Unbounded))
                    .map(|(_, s)| s),
            ),
        };
        let shared: Vec<Arc<RawObject>> = candidates
            .filter(|s| query.matches(&s.raw))
            .take(query.limit + 1)
            .map(|s| s.raw.clone())
            .collect();
        drop(state);
        // Copied outside the lock.
        let items = shared.into_iter().map(Arc::unwrap_or_clone).collect();
        Ok(ListPage::from_overfetch(items, query.limit, |o| o.meta.id))
    }

    async fn update(&self, kind: &str, id: ObjectId, update: SpecUpdate) -> Result<RawObject> {
        update.validate(id)?;
        let mut state = self.state.lock().unwrap();
        {
            let stored = state.stored_mut(kind, id)?;
            check_version(&stored.raw, update.expected_version)?;
            if stored.raw.meta.deletion_scheduled_at.is_some() {
                return Err(Error::conflict(format!(
                    "{kind} {id} is being deleted; its desired state can no longer change"
                )));
            }
        }
        state.check_references(&update.references)?;
        let stored = state.stored_mut(kind, id)?;
        let raw = Arc::make_mut(&mut stored.raw);
        let old_refs = std::mem::replace(&mut raw.meta.references, update.references);
        raw.spec = update.spec;
        raw.meta.labels = update.labels;
        raw.meta.version += 1;
        raw.meta.generation += 1;
        raw.meta.updated_at = now();
        let raw = stored.raw.clone();
        state.unlink((kind, id), &old_refs);
        state.link((kind, id), &raw.meta.references);
        state.record(&raw.meta, Operation::Updated);
        state.follow(&raw, &[]);
        drop(state);
        self.outbox_wake.notify_one();
        Ok(Arc::unwrap_or_clone(raw))
    }

    async fn update_status(
        &self,
        kind: &str,
        id: ObjectId,
        write: StatusWrite,
    ) -> Result<RawObject> {
        self.write_status_then(kind, id, write, RawObject::clone)
    }

    async fn write_status(&self, kind: &str, id: ObjectId, write: StatusWrite) -> Result<u64> {
        self.write_status_then(kind, id, write, |written| written.meta.version)
    }

    async fn schedule_deletion_with(
        &self,
        kind: &str,
        id: ObjectId,
        expected_version: Option<u64>,
        propagation: Propagation,
    ) -> Result<RawObject> {
        let mut state = self.state.lock().unwrap();
        let stored = state.stored_mut(kind, id)?;
        check_version(&stored.raw, expected_version)?;
        if stored.raw.meta.deletion_scheduled_at.is_some() {
            return Ok(RawObject::clone(&stored.raw));
        }
        let root = ObjectRef::new(kind, id);
        let cascade = match propagation {
            Propagation::Foreground => state.cascade(root),
            Propagation::Orphan => vec![root],
        };
        let members: BTreeSet<ObjectId> = cascade.iter().map(|o| o.id).collect();
        for member in &cascade {
            let outside: Vec<_> = state
                .referrers(member.id)
                .into_iter()
                .filter(|r| !members.contains(&r.id))
                .collect();
            if let Some(first) = outside.first() {
                let whose = if member.id == id {
                    String::new()
                } else {
                    format!(" (its dependent {member})")
                };
                return Err(Error::conflict(format!(
                    "{kind} {id}{whose} is still referenced by {} object(s), e.g. {first}; \
                     delete those first",
                    outside.len()
                )));
            }
        }
        let at = now();
        if propagation == Propagation::Orphan {
            for dependent in state.owned.remove(&id).unwrap_or_default() {
                let stored = state.stored_mut(&dependent.kind, dependent.id)?;
                let raw = Arc::make_mut(&mut stored.raw);
                raw.meta.owners.retain(|o| o.id != id);
                raw.meta.version += 1;
                raw.meta.updated_at = at;
            }
        }
        let mut root_raw = None;
        for member in cascade {
            let stored = state.stored_mut(&member.kind, member.id)?;
            if stored.raw.meta.deletion_scheduled_at.is_some() {
                continue;
            }
            let raw = Arc::make_mut(&mut stored.raw);
            raw.meta.deletion_scheduled_at = Some(at);
            raw.meta.version += 1;
            raw.meta.generation += 1;
            raw.meta.updated_at = at;
            raw.status.state = LifecycleState::DeletionScheduled;
            let raw = stored.raw.clone();
            state.record(&raw.meta, Operation::Deleted);
            state.follow(&raw, &[]);
            root_raw.get_or_insert(raw);
        }
        drop(state);
        self.outbox_wake.notify_one();
        Ok(Arc::unwrap_or_clone(
            root_raw.expect("the root is scheduled"),
        ))
    }

    async fn dependents(&self, kind: &str, id: ObjectId) -> Result<Vec<ObjectRef>> {
        let state = self.state.lock().unwrap();
        let _ = state
            .kinds
            .get(kind)
            .and_then(|t| t.objects.get(&id))
            .ok_or_else(|| Error::not_found(kind, id))?;
        let mut dependents: Vec<ObjectRef> = state
            .owned
            .get(&id)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        dependents.sort_by_key(|d| d.id);
        Ok(dependents)
    }

    async fn register_relations(&self, relations: &[Relation]) -> Result<()> {
        for relation in relations {
            relation.validate()?;
        }
        let mut state = self.state.lock().unwrap();
        state.relations.extend(relations.iter().cloned());
        Ok(())
    }

    async fn remove(&self, kind: &str, id: ObjectId, fence: Option<u64>) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        check_fence(state.stored_mut(kind, id)?, fence)?;
        if let Some(first) = state.owned.get(&id).and_then(|d| d.first()) {
            return Err(Error::conflict(format!(
                "{kind} {id} still owns objects, e.g. {first}: they go first"
            )));
        }
        let table = state.kinds.get_mut(kind).expect("found above");
        let stored = table.objects.remove(&id).expect("found above");
        table.names.remove(&stored.raw.meta.name);
        let raw = stored.raw;
        for owner in &raw.meta.owners {
            if let Some(set) = state.owned.get_mut(&owner.id) {
                set.remove(&ObjectRef::new(kind, id));
                if set.is_empty() {
                    state.owned.remove(&owner.id);
                }
            }
        }
        state.follow(&raw, &raw.meta.owners);
        state.unlink((kind, id), &raw.meta.references);
        drop(state);
        self.outbox_wake.notify_one();
        Ok(())
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn claim(
        &self,
        claimer: &str,
        limit: usize,
        claim_for: Duration,
    ) -> Result<Vec<OutboxEntry>> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let mut claimed = Vec::new();
        for (&seq, row) in state.outbox.iter_mut() {
            if claimed.len() >= limit {
                break;
            }
            let free = match &row.claim {
                None => true,
                Some((owner, until)) => owner == claimer || *until <= now,
            };
            if free {
                row.claim = Some((claimer.to_owned(), now + claim_for));
                claimed.push(OutboxEntry {
                    seq,
                    notification: row.notification.clone(),
                });
            }
        }
        Ok(claimed)
    }

    async fn complete(&self, seqs: &[u64]) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        for seq in seqs {
            state.outbox.remove(seq);
        }
        Ok(())
    }

    async fn wait_for_entries(&self, timeout: Duration) {
        // notify_one keeps a permit, so a write made just before we wait is not missed.
        let _ = tokio::time::timeout(timeout, self.outbox_wake.notified()).await;
    }
}
