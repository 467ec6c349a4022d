//! The contract of owners, cascading deletion and [`Relation`]s, checked together with the
//! [`Outbox`] the follow-up notifications land in.
//!
//! Run it on a store no live relay drains: the checks claim entries themselves.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::unique_name;
use crate::bus::Operation;
use crate::error::ErrorKind;
use crate::object::{
    Condition, ConditionStatus, LifecycleState, NewObject, ObjectId, ObjectRef, RawObject,
    Reference, Status,
};
use crate::outbox::Outbox;
use crate::relation::{Propagation, Relation, Via};
use crate::store::{SpecUpdate, StatusWrite, Store};

/// Runs every check.
pub async fn run(store: Arc<dyn Store>, outbox: Arc<dyn Outbox>) {
    owners_must_exist_and_are_fixed(&*store).await;
    foreground_deletion_cascades_and_owners_go_last(&*store, &*outbox).await;
    orphan_deletion_keeps_dependents(&*store).await;
    cascades_are_refused_while_referenced_from_outside(&*store).await;
    relations_notify_followers_of_every_change(&*store, &*outbox).await;
}

fn new(kind: &str, name: &str) -> NewObject {
    NewObject::new(kind, name, json!({}))
}

#[track_caller]
fn expect_error<T: std::fmt::Debug>(
    result: crate::Result<T>,
    kind: ErrorKind,
    field: Option<&str>,
    rule: &str,
) {
    match result {
        Err(err) if err.kind() == kind => {
            if let Some(field) = field {
                assert!(
                    matches!(&err, crate::Error::Invalid { field: f, .. } if f == field),
                    "{rule}: the error must name {field}, got {err:?}"
                );
            }
        }
        other => panic!("{rule}: expected a {kind} error, got {other:?}"),
    }
}

/// The `Related` notifications pending for objects of `kind`, completed as they are read.
async fn related_of(outbox: &dyn Outbox, kind: &str) -> Vec<ObjectId> {
    pending_of(outbox, kind, Operation::Related).await
}

/// The `Followed` notifications pending for follower kind `kind` (the ids are the followed
/// objects'), completed as they are read.
async fn followed_of(outbox: &dyn Outbox, kind: &str) -> Vec<ObjectId> {
    pending_of(outbox, kind, Operation::Followed).await
}

async fn pending_of(outbox: &dyn Outbox, kind: &str, operation: Operation) -> Vec<ObjectId> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let claimer = unique_name("conformance-related-");
    let entries = outbox
        .claim(&claimer, 10_000, Duration::from_millis(1))
        .await
        .expect("claim");
    let mine: Vec<_> = entries
        .into_iter()
        .filter(|e| e.notification.kind == kind && e.notification.operation == operation)
        .collect();
    let seqs: Vec<u64> = mine.iter().map(|e| e.seq).collect();
    outbox.complete(&seqs).await.expect("complete");
    let mut ids: Vec<ObjectId> = mine.into_iter().map(|e| e.notification.id).collect();
    ids.sort();
    ids.dedup();
    ids
}

async fn write_status(store: &dyn Store, obj: &RawObject, status: Status<serde_json::Value>) {
    store
        .update_status(
            &obj.meta.kind,
            obj.meta.id,
            StatusWrite {
                expected_version: None,
                fence: None,
                status,
            },
        )
        .await
        .expect("status write");
}

/// Owners must exist (earlier in the same `create_all` counts), not be deleting and not be
/// the object itself; they come back as written and survive spec updates.
pub async fn owners_must_exist_and_are_fixed(store: &dyn Store) {
    let kind = unique_name("Own");
    let owner = store.create(new(&kind, "owner")).await.expect("create");
    let missing = ObjectId::new();
    expect_error(
        store
            .create(new(&kind, "dangling").owned_by(&kind, missing))
            .await,
        ErrorKind::Invalid,
        Some("owners[0]"),
        "a missing owner is refused",
    );
    let me = ObjectId::new();
    expect_error(
        store
            .create_all(vec![(me, new(&kind, "self").owned_by(&kind, me))])
            .await,
        ErrorKind::Invalid,
        Some("owners[0]"),
        "an object cannot own itself",
    );
    let (a, b) = (ObjectId::new(), ObjectId::new());
    expect_error(
        store
            .create_all(vec![
                (a, new(&kind, "a").owned_by(&kind, b)),
                (b, new(&kind, "b").owned_by(&kind, a)),
            ])
            .await,
        ErrorKind::Invalid,
        Some("owners[0]"),
        "owners come before what they own, so no cycle can form",
    );
    let created = store
        .create_all(vec![
            (a, new(&kind, "a").owned_by(&kind, owner.meta.id)),
            (b, new(&kind, "b").owned_by(&kind, a)),
        ])
        .await
        .expect("an owner created earlier in the same call");
    assert_eq!(
        created[1].meta.owners,
        vec![ObjectRef::new(kind.clone(), a)]
    );
    let update = SpecUpdate {
        expected_version: None,
        labels: Default::default(),
        references: Vec::new(),
        spec: json!({"changed": true}),
    };
    let updated = store.update(&kind, b, update).await.expect("update");
    assert_eq!(updated.meta.owners, created[1].meta.owners, "owners stay");
    assert_eq!(
        store
            .dependents(&kind, owner.meta.id)
            .await
            .expect("dependents"),
        vec![ObjectRef::new(kind.clone(), a)]
    );
    let twice = new(&kind, "twice")
        .owned_by(&kind, owner.meta.id)
        .owned_by(&kind, owner.meta.id);
    expect_error(
        store.create(twice).await,
        ErrorKind::Invalid,
        Some("owners[1]"),
        "an owner listed twice",
    );
    store
        .schedule_deletion_with(&kind, b, None, Propagation::Orphan)
        .await
        .expect("delete");
    expect_error(
        store.create(new(&kind, "late").owned_by(&kind, b)).await,
        ErrorKind::Invalid,
        Some("owners[0]"),
        "an owner being deleted is refused",
    );
}

/// Foreground: the owner and everything it owns, transitively, are scheduled at once; an
/// owner cannot be removed while it owns anything; a dependent's removal notifies its owner.
pub async fn foreground_deletion_cascades_and_owners_go_last(
    store: &dyn Store,
    outbox: &dyn Outbox,
) {
    let kind = unique_name("Casc");
    let top = store.create(new(&kind, "top")).await.expect("create");
    let mid = store
        .create(new(&kind, "mid").owned_by(&kind, top.meta.id))
        .await
        .expect("create");
    let mut leaf = new(&kind, "leaf").owned_by(&kind, mid.meta.id);
    // A dependent may reference its owner: the reference is inside the cascade.
    leaf.references
        .push(Reference::new("parent", kind.clone(), mid.meta.id));
    let leaf = store.create(leaf).await.expect("create");
    let scheduled = store
        .schedule_deletion(&kind, top.meta.id, None)
        .await
        .expect("foreground is the default");
    assert_eq!(scheduled.meta.id, top.meta.id);
    for obj in [&top, &mid, &leaf] {
        let got = store.get(&kind, obj.meta.id).await.expect("get");
        assert!(
            got.meta.deletion_scheduled_at.is_some(),
            "{} is scheduled with its owner",
            obj.meta.name
        );
        assert_eq!(got.status.state, LifecycleState::DeletionScheduled);
    }
    expect_error(
        store.remove(&kind, top.meta.id, None).await,
        ErrorKind::Conflict,
        None,
        "an owner is removed only once what it owns is gone",
    );
    expect_error(
        store.remove(&kind, mid.meta.id, None).await,
        ErrorKind::Conflict,
        None,
        "transitively",
    );
    related_of(outbox, &kind).await;
    store.remove(&kind, leaf.meta.id, None).await.expect("leaf");
    assert_eq!(
        related_of(outbox, &kind).await,
        vec![mid.meta.id],
        "removing a dependent notifies its owner"
    );
    store.remove(&kind, mid.meta.id, None).await.expect("mid");
    store.remove(&kind, top.meta.id, None).await.expect("top");
    expect_error(
        store.get(&kind, top.meta.id).await,
        ErrorKind::NotFound,
        None,
        "gone",
    );
}

/// Orphan: only the owner is deleted; what it owned loses the owner and stays.
pub async fn orphan_deletion_keeps_dependents(store: &dyn Store) {
    let kind = unique_name("Orph");
    let owner = store.create(new(&kind, "owner")).await.expect("create");
    let dependent = store
        .create(new(&kind, "dependent").owned_by(&kind, owner.meta.id))
        .await
        .expect("create");
    store
        .schedule_deletion_with(&kind, owner.meta.id, None, Propagation::Orphan)
        .await
        .expect("orphan");
    let kept = store.get(&kind, dependent.meta.id).await.expect("kept");
    assert!(kept.meta.deletion_scheduled_at.is_none());
    assert!(kept.meta.owners.is_empty(), "the owner is forgotten");
    assert_eq!(kept.meta.generation, dependent.meta.generation);
    assert!(
        store
            .dependents(&kind, owner.meta.id)
            .await
            .expect("dependents")
            .is_empty()
    );
    store
        .remove(&kind, owner.meta.id, None)
        .await
        .expect("nothing owned any more");
    store
        .get(&kind, dependent.meta.id)
        .await
        .expect("still there");
}

/// A cascade that would delete an object something outside it references is refused whole.
pub async fn cascades_are_refused_while_referenced_from_outside(store: &dyn Store) {
    let kind = unique_name("Ref");
    let owner = store.create(new(&kind, "owner")).await.expect("create");
    let dependent = store
        .create(new(&kind, "dependent").owned_by(&kind, owner.meta.id))
        .await
        .expect("create");
    let mut user = new(&kind, "user");
    user.references
        .push(Reference::new("uses", kind.clone(), dependent.meta.id));
    store.create(user).await.expect("create");
    expect_error(
        store.schedule_deletion(&kind, owner.meta.id, None).await,
        ErrorKind::Conflict,
        None,
        "a dependent referenced from outside the cascade",
    );
    for obj in [&owner, &dependent] {
        let got = store.get(&kind, obj.meta.id).await.expect("get");
        assert!(got.meta.deletion_scheduled_at.is_none(), "nothing changed");
    }
    store
        .schedule_deletion_with(&kind, owner.meta.id, None, Propagation::Orphan)
        .await
        .expect("orphaning deletes the owner only, which nobody references");
}

/// Every change of a followed object — creation, spec, a status write that changes state,
/// conditions or details, deletion, removal — notifies the followers the relation maps it
/// to; a status write that changes only bookkeeping notifies nobody.
pub async fn relations_notify_followers_of_every_change(store: &dyn Store, outbox: &dyn Outbox) {
    let definition_kind = unique_name("Def");
    let instance_kind = unique_name("Inst");
    let service_kind = unique_name("Svc");
    let workload_kind = unique_name("Work");
    let part_kind = unique_name("Part");
    let whole_kind = unique_name("Whole");
    store
        .register_relations(&[
            Relation::new(&instance_kind, &definition_kind, Via::Referencing),
            Relation::new(&workload_kind, &service_kind, Via::ReferencedBy),
            Relation::new(&whole_kind, &part_kind, Via::Owning),
        ])
        .await
        .expect("register");
    store
        .register_relations(&[Relation::new(
            &instance_kind,
            &definition_kind,
            Via::Referencing,
        )])
        .await
        .expect("registering again is harmless");

    // By reference: instances follow the definition they reference.
    let definition = store
        .create(new(&definition_kind, "d"))
        .await
        .expect("create");
    let mut instances = Vec::new();
    for name in ["i1", "i2"] {
        let mut instance = new(&instance_kind, name);
        instance.references.push(Reference::new(
            "definition",
            definition_kind.clone(),
            definition.meta.id,
        ));
        instances.push(store.create(instance).await.expect("create").meta.id);
    }
    let bystander = store
        .create(new(&instance_kind, "unrelated"))
        .await
        .expect("create");
    instances.sort();
    related_of(outbox, &instance_kind).await;
    let status = Status {
        state: LifecycleState::Reconciled,
        ..Status::default()
    };
    write_status(store, &definition, status.clone()).await;
    assert_eq!(
        related_of(outbox, &instance_kind).await,
        instances,
        "a state change notifies the referrers, and only them"
    );
    let mut bookkeeping = status.clone();
    bookkeeping.failures = 3;
    bookkeeping.acknowledged_at = Some(crate::object::now());
    bookkeeping.record_event(crate::object::EventType::Normal, "Heartbeat", "still here");
    write_status(store, &definition, bookkeeping.clone()).await;
    assert!(
        related_of(outbox, &instance_kind).await.is_empty(),
        "heartbeats, failure counts and events are not changes"
    );
    let mut with_condition = bookkeeping.clone();
    with_condition.conditions.push(Condition {
        type_: "Ready".into(),
        status: ConditionStatus::True,
        reason: "Built".into(),
        message: String::new(),
        last_transition_time: crate::object::now(),
    });
    write_status(store, &definition, with_condition.clone()).await;
    assert_eq!(
        related_of(outbox, &instance_kind).await,
        instances,
        "conditions"
    );
    let mut with_details = with_condition;
    with_details.details = json!({"image": "v2"});
    write_status(store, &definition, with_details).await;
    assert_eq!(
        related_of(outbox, &instance_kind).await,
        instances,
        "details"
    );
    let update = SpecUpdate {
        expected_version: None,
        labels: Default::default(),
        references: Vec::new(),
        spec: json!({"replicas": 2}),
    };
    store
        .update(&definition_kind, definition.meta.id, update)
        .await
        .expect("update");
    assert_eq!(related_of(outbox, &instance_kind).await, instances, "spec");
    let _ = bystander;

    // Referenced by: a workload follows the services that reference it.
    let workload = store
        .create(new(&workload_kind, "w"))
        .await
        .expect("create");
    let mut service = new(&service_kind, "db");
    service.references.push(Reference::new(
        "workload",
        workload_kind.clone(),
        workload.meta.id,
    ));
    let service = store.create(service).await.expect("create");
    let workload_only = vec![workload.meta.id];
    assert_eq!(
        related_of(outbox, &workload_kind).await,
        workload_only,
        "a service attached"
    );
    write_status(store, &service, status.clone()).await;
    assert_eq!(
        related_of(outbox, &workload_kind).await,
        workload_only,
        "the service turned ready"
    );
    store
        .schedule_deletion(&service_kind, service.meta.id, None)
        .await
        .expect("delete");
    assert_eq!(
        related_of(outbox, &workload_kind).await,
        workload_only,
        "the service is going"
    );
    store
        .remove(&service_kind, service.meta.id, None)
        .await
        .expect("remove");
    assert_eq!(
        related_of(outbox, &workload_kind).await,
        workload_only,
        "the service is gone"
    );

    // Owning: a whole follows its parts.
    let whole = store
        .create(new(&whole_kind, "whole"))
        .await
        .expect("create");
    let part = store
        .create(new(&part_kind, "part").owned_by(&whole_kind, whole.meta.id))
        .await
        .expect("create");
    assert_eq!(related_of(outbox, &whole_kind).await, vec![whole.meta.id]);
    write_status(store, &part, status.clone()).await;
    assert_eq!(
        related_of(outbox, &whole_kind).await,
        vec![whole.meta.id],
        "a part changed"
    );
    // Mapped: the follower's controller hears of the changed object itself, and maps it.
    let watcher_kind = unique_name("Watcher");
    let watched_kind = unique_name("Watched");
    store
        .register_relations(&[Relation::new(&watcher_kind, &watched_kind, Via::Mapped)])
        .await
        .expect("register");
    let watched = store
        .create(new(&watched_kind, "watched"))
        .await
        .expect("create");
    assert_eq!(
        followed_of(outbox, &watcher_kind).await,
        vec![watched.meta.id],
        "a mapped follower hears of the created object"
    );
    write_status(store, &watched, status.clone()).await;
    assert_eq!(
        followed_of(outbox, &watcher_kind).await,
        vec![watched.meta.id],
        "and of its status change"
    );
    write_status(store, &watched, bookkeeping).await;
    assert!(
        followed_of(outbox, &watcher_kind).await.is_empty(),
        "bookkeeping"
    );

    expect_error(
        store
            .register_relations(&[Relation::new("not a kind", &part_kind, Via::Owning)])
            .await,
        ErrorKind::Invalid,
        None,
        "relations name kinds",
    );
}
