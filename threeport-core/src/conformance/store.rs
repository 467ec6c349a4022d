//! The [`Store`] contract.

use std::sync::Arc;

use serde_json::json;

use super::unique_name;
use crate::error::ErrorKind;
use crate::object::{
    ConditionStatus, Labels, LifecycleState, NewObject, ObjectId, RawObject, Reference, Status,
};
use crate::store::{
    IdempotencyKey, ListQuery, MAX_PAGE_SIZE, Once, SpecUpdate, StatusWrite, Store,
};

/// Runs every store check.
pub async fn run(store: Arc<dyn Store>) {
    create_and_get(&*store).await;
    names_are_unique_per_kind(&*store).await;
    concurrent_creates_of_one_name_yield_one_winner(store.clone()).await;
    updates_are_conditional_on_version(&*store).await;
    concurrent_read_modify_write_loses_no_update(store.clone()).await;
    status_writes_bump_version_only_and_honour_fences(&*store).await;
    lists_paginate_in_id_order(&*store).await;
    lists_filter_by_name_labels_and_references(&*store).await;
    references_must_resolve_and_block_deletion(&*store).await;
    create_all_is_all_or_nothing(&*store).await;
    create_all_once_creates_once_per_key(store.clone()).await;
    deletion_is_two_phase(&*store).await;
    invalid_input_names_the_field(&*store).await;
}

fn new(kind: &str, name: &str, spec: serde_json::Value) -> NewObject {
    NewObject {
        kind: kind.to_owned(),
        name: name.to_owned(),
        labels: Labels::new(),
        references: Vec::new(),
        owners: Vec::new(),
        spec,
    }
}

fn spec_update(obj: &RawObject, spec: serde_json::Value, expected: Option<u64>) -> SpecUpdate {
    SpecUpdate {
        expected_version: expected,
        labels: obj.meta.labels.clone(),
        references: obj.meta.references.clone(),
        spec,
    }
}

#[track_caller]
fn expect_kind<T: std::fmt::Debug>(result: crate::Result<T>, kind: ErrorKind, rule: &str) {
    match result {
        Err(err) if err.kind() == kind => {}
        other => panic!("{rule}: expected a {kind} error, got {other:?}"),
    }
}

/// Create assigns id, version 1, generation 1 and `Pending`; get returns the same object.
pub async fn create_and_get(store: &dyn Store) {
    let kind = unique_name("Conf");
    let created = store
        .create(
            new(&kind, "first", json!({"size": 3, "nested": {"a": [1, 2]}})).label("team", "core"),
        )
        .await
        .expect("create");
    assert_eq!(created.meta.kind, kind);
    assert_eq!(created.meta.name, "first");
    assert_eq!((created.meta.version, created.meta.generation), (1, 1));
    assert_eq!(created.status.state, LifecycleState::Pending);
    assert_eq!(
        created.meta.labels.get("team").map(String::as_str),
        Some("core")
    );
    assert!(created.meta.deletion_scheduled_at.is_none());
    let got = store.get(&kind, created.meta.id).await.expect("get");
    assert_eq!(got.meta.id, created.meta.id);
    assert_eq!(got.spec, json!({"size": 3, "nested": {"a": [1, 2]}}));
    assert_eq!(got.meta.version, 1);
    expect_kind(
        store.get(&kind, ObjectId::new()).await,
        ErrorKind::NotFound,
        "get of a missing id",
    );
    expect_kind(
        store.get(&unique_name("Other"), created.meta.id).await,
        ErrorKind::NotFound,
        "get under another kind",
    );
}

/// A name is unique within its kind, not across kinds.
pub async fn names_are_unique_per_kind(store: &dyn Store) {
    let (a, b) = (unique_name("Conf"), unique_name("Conf"));
    store
        .create(new(&a, "same", json!({})))
        .await
        .expect("create a");
    store
        .create(new(&b, "same", json!({})))
        .await
        .expect("same name in another kind");
    expect_kind(
        store.create(new(&a, "same", json!({}))).await,
        ErrorKind::AlreadyExists,
        "duplicate name in one kind",
    );
}

/// N concurrent creates of one name: exactly one succeeds, the rest get `AlreadyExists`.
pub async fn concurrent_creates_of_one_name_yield_one_winner(store: Arc<dyn Store>) {
    let kind = unique_name("Conf");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let kind = kind.clone();
            tokio::spawn(
                async move { store.create(new(&kind, "contested", json!({"i": i}))).await },
            )
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => wins += 1,
            Err(err) => assert_eq!(err.kind(), ErrorKind::AlreadyExists, "loser error: {err}"),
        }
    }
    assert_eq!(wins, 1, "exactly one concurrent create must win");
    let page = store
        .list(&kind, &ListQuery::default())
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1);
}

/// Updates bump version and generation, and are refused on a stale version.
pub async fn updates_are_conditional_on_version(store: &dyn Store) {
    let kind = unique_name("Conf");
    let v1 = store
        .create(new(&kind, "u", json!({"n": 1})))
        .await
        .expect("create");
    let v2 = store
        .update(
            &kind,
            v1.meta.id,
            spec_update(&v1, json!({"n": 2}), Some(1)),
        )
        .await
        .expect("update at the current version");
    assert_eq!((v2.meta.version, v2.meta.generation), (2, 2));
    assert_eq!(v2.spec, json!({"n": 2}));
    assert!(v2.meta.updated_at >= v1.meta.updated_at);
    expect_kind(
        store
            .update(
                &kind,
                v1.meta.id,
                spec_update(&v1, json!({"n": 3}), Some(1)),
            )
            .await,
        ErrorKind::Conflict,
        "update at a stale version",
    );
    assert_eq!(
        store.get(&kind, v1.meta.id).await.expect("get").spec,
        json!({"n": 2})
    );
    let mut labelled = spec_update(&v2, json!({"n": 4}), None);
    labelled.labels.insert("tier".into(), "gold".into());
    let v3 = store
        .update(&kind, v1.meta.id, labelled)
        .await
        .expect("unconditional update");
    assert_eq!(v3.meta.version, 3);
    assert_eq!(v3.meta.labels.get("tier").map(String::as_str), Some("gold"));
    expect_kind(
        store
            .update(&kind, ObjectId::new(), spec_update(&v1, json!({}), None))
            .await,
        ErrorKind::NotFound,
        "update of a missing object",
    );
}

/// Concurrent read-modify-write loops retrying on `Conflict` lose no increment.
pub async fn concurrent_read_modify_write_loses_no_update(store: Arc<dyn Store>) {
    let kind = unique_name("Conf");
    let id = store
        .create(new(&kind, "counter", json!({"n": 0})))
        .await
        .expect("create")
        .meta
        .id;
    let writers = 8;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let store = store.clone();
            let kind = kind.clone();
            tokio::spawn(async move {
                loop {
                    let cur = store.get(&kind, id).await.expect("get");
                    let n = cur.spec["n"].as_u64().expect("n");
                    let update = spec_update(&cur, json!({"n": n + 1}), Some(cur.meta.version));
                    match store.update(&kind, id, update).await {
                        Ok(_) => return,
                        Err(err) if err.kind() == ErrorKind::Conflict => continue,
                        Err(err) => panic!("update failed: {err}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    let end = store.get(&kind, id).await.expect("get");
    assert_eq!(end.spec["n"], writers, "an update was lost");
    assert_eq!(end.meta.version, 1 + writers as u64);
}

/// Status writes bump version but not generation; they honour version and fencing tokens.
pub async fn status_writes_bump_version_only_and_honour_fences(store: &dyn Store) {
    let kind = unique_name("Conf");
    let obj = store
        .create(new(&kind, "s", json!({})))
        .await
        .expect("create");
    let id = obj.meta.id;
    let mut status = Status::<serde_json::Value> {
        state: LifecycleState::Reconciled,
        observed_generation: 1,
        details: json!({"endpoint": "https://x"}),
        ..Default::default()
    };
    status.set_condition("Ready", ConditionStatus::True, "Reconciled", "");
    let write = |expected: Option<u64>, fence: Option<u64>, status: &Status<serde_json::Value>| {
        StatusWrite {
            expected_version: expected,
            fence,
            status: status.clone(),
        }
    };
    let s1 = store
        .update_status(&kind, id, write(Some(1), Some(5), &status))
        .await
        .expect("status write");
    assert_eq!(
        (s1.meta.version, s1.meta.generation),
        (2, 1),
        "status writes bump version only"
    );
    let got = store.get(&kind, id).await.expect("get");
    assert_eq!(got.status, status, "status round-trips");
    expect_kind(
        store
            .update_status(&kind, id, write(Some(1), None, &status))
            .await,
        ErrorKind::Conflict,
        "status write at a stale version",
    );
    expect_kind(
        store
            .update_status(&kind, id, write(None, Some(3), &status))
            .await,
        ErrorKind::Conflict,
        "status write with an older fencing token",
    );
    store
        .update_status(&kind, id, write(None, Some(5), &status))
        .await
        .expect("same token again");
    store
        .update_status(&kind, id, write(None, Some(9), &status))
        .await
        .expect("newer token");
    expect_kind(
        store
            .update_status(&kind, id, write(None, Some(5), &status))
            .await,
        ErrorKind::Conflict,
        "token older than the newest seen",
    );
    expect_kind(
        store.remove(&kind, id, Some(8)).await,
        ErrorKind::Conflict,
        "removal with an older fencing token",
    );
    expect_kind(
        store
            .update_status(&kind, ObjectId::new(), write(None, None, &status))
            .await,
        ErrorKind::NotFound,
        "status write of a missing object",
    );
}

/// Lists come in ascending id order, one page at a time, with a cursor to the end.
pub async fn lists_paginate_in_id_order(store: &dyn Store) {
    let kind = unique_name("Conf");
    let mut created = Vec::new();
    for i in 0..25 {
        created.push(
            store
                .create(new(&kind, &format!("o{i:02}"), json!({})))
                .await
                .expect("create")
                .meta
                .id,
        );
    }
    let mut query = ListQuery::default().limit(10);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.list(&kind, &query).await.expect("list");
        pages += 1;
        assert!(page.items.len() <= 10, "page over the limit");
        seen.extend(page.items.iter().map(|o| o.meta.id));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3, "25 objects in pages of 10");
    let mut sorted = created.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "every object once, in id order");
    expect_kind(
        store.list(&kind, &ListQuery::default().limit(0)).await,
        ErrorKind::Invalid,
        "limit 0",
    );
    expect_kind(
        store
            .list(&kind, &ListQuery::default().limit(MAX_PAGE_SIZE + 1))
            .await,
        ErrorKind::Invalid,
        "limit over the maximum",
    );
    let empty = store
        .list(&unique_name("Empty"), &ListQuery::default())
        .await
        .expect("list empty kind");
    assert!(empty.items.is_empty() && empty.next.is_none());
}

/// Name, label and reference filters combine with AND.
pub async fn lists_filter_by_name_labels_and_references(store: &dyn Store) {
    let def_kind = unique_name("ConfDef");
    let kind = unique_name("Conf");
    let d1 = store
        .create(new(&def_kind, "d1", json!({})))
        .await
        .expect("def")
        .meta
        .id;
    let d2 = store
        .create(new(&def_kind, "d2", json!({})))
        .await
        .expect("def")
        .meta
        .id;
    for (name, env, def) in [("a", "prod", d1), ("b", "prod", d2), ("c", "dev", d1)] {
        let mut obj = new(&kind, name, json!({})).label("env", env);
        obj.references = vec![Reference::new("definition", def_kind.clone(), def)];
        store.create(obj).await.expect("create");
    }
    let names = |page: crate::store::ListPage| -> Vec<String> {
        page.items.into_iter().map(|o| o.meta.name).collect()
    };
    let prod = store
        .list(&kind, &ListQuery::default().label("env", "prod"))
        .await
        .expect("list");
    assert_eq!(names(prod), ["a", "b"]);
    let of_d1 = store
        .list(&kind, &ListQuery::default().referencing("definition", d1))
        .await
        .expect("list");
    assert_eq!(names(of_d1), ["a", "c"]);
    let both = ListQuery::default()
        .label("env", "prod")
        .referencing("definition", d1);
    assert_eq!(names(store.list(&kind, &both).await.expect("list")), ["a"]);
    let named = store
        .list(&kind, &ListQuery::named("c"))
        .await
        .expect("list");
    assert_eq!(names(named), ["c"]);
    let none = store
        .list(&kind, &ListQuery::named("c").label("env", "prod"))
        .await
        .expect("list");
    assert!(none.items.is_empty());
    let wrong_field = ListQuery::default().referencing("runtime", d1);
    assert!(
        store
            .list(&kind, &wrong_field)
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

/// `create_all` creates every object or none; later objects may reference earlier ones.
pub async fn create_all_is_all_or_nothing(store: &dyn Store) {
    let def_kind = unique_name("ConfDef");
    let kind = unique_name("Conf");
    let (def_id, inst_id) = (ObjectId::new(), ObjectId::new());
    let mut instance = new(&kind, "inst", json!({"n": 1}));
    instance.references = vec![Reference::new("definition", def_kind.clone(), def_id)];
    let created = store
        .create_all(vec![
            (def_id, new(&def_kind, "def", json!({}))),
            (inst_id, instance.clone()),
        ])
        .await
        .expect("a definition and its instance in one call");
    assert_eq!(
        created.iter().map(|o| o.meta.id).collect::<Vec<_>>(),
        vec![def_id, inst_id]
    );
    assert_eq!(
        store.get(&kind, inst_id).await.expect("stored").spec,
        json!({"n": 1})
    );
    expect_kind(
        store.schedule_deletion(&def_kind, def_id, None).await,
        ErrorKind::Conflict,
        "the batch's references block deletion like any other",
    );

    // The second object's name is taken: the first is not created either.
    let fresh = ObjectId::new();
    expect_kind(
        store
            .create_all(vec![
                (fresh, new(&def_kind, "fresh", json!({}))),
                (ObjectId::new(), new(&kind, "inst", json!({}))),
            ])
            .await,
        ErrorKind::AlreadyExists,
        "a taken name in the batch",
    );
    expect_kind(
        store.get(&def_kind, fresh).await,
        ErrorKind::NotFound,
        "nothing of a failed batch is stored",
    );
    // A dangling reference in the batch: nothing stored, the field named.
    let mut dangling = new(&kind, "dangling", json!({}));
    dangling.references = vec![Reference::new(
        "definition",
        def_kind.clone(),
        ObjectId::new(),
    )];
    match store
        .create_all(vec![
            (fresh, new(&def_kind, "fresh", json!({}))),
            (ObjectId::new(), dangling),
        ])
        .await
    {
        Err(crate::Error::Invalid { field, .. }) => assert_eq!(field, "spec.definition"),
        other => {
            panic!("a dangling reference must be Invalid naming spec.definition, got {other:?}")
        }
    }
    expect_kind(
        store.get(&def_kind, fresh).await,
        ErrorKind::NotFound,
        "rolled back",
    );
    // Ids are the caller's: a repeated or taken one is refused.
    expect_kind(
        store
            .create_all(vec![(def_id, new(&def_kind, "again", json!({})))])
            .await,
        ErrorKind::Invalid,
        "a taken id",
    );
}

/// References must point at live objects, and block the target's deletion while they exist.
pub async fn references_must_resolve_and_block_deletion(store: &dyn Store) {
    let def_kind = unique_name("ConfDef");
    let kind = unique_name("Conf");
    let def = store
        .create(new(&def_kind, "def", json!({})))
        .await
        .expect("def");
    let mut dangling = new(&kind, "dangling", json!({}));
    dangling.references = vec![Reference::new(
        "definition",
        def_kind.clone(),
        ObjectId::new(),
    )];
    match store.create(dangling).await {
        Err(crate::Error::Invalid { field, .. }) => assert_eq!(field, "spec.definition"),
        other => {
            panic!("a dangling reference must be Invalid naming spec.definition, got {other:?}")
        }
    }
    let mut instance = new(&kind, "inst", json!({}));
    instance.references = vec![Reference::new("definition", def_kind.clone(), def.meta.id)];
    let inst = store.create(instance).await.expect("instance");
    expect_kind(
        store.schedule_deletion(&def_kind, def.meta.id, None).await,
        ErrorKind::Conflict,
        "deleting a definition with live instances",
    );
    store
        .schedule_deletion(&kind, inst.meta.id, None)
        .await
        .expect("delete instance");
    store
        .remove(&kind, inst.meta.id, None)
        .await
        .expect("remove instance");
    store
        .schedule_deletion(&def_kind, def.meta.id, None)
        .await
        .expect("definition deletable once unreferenced");
    let mut late = new(&kind, "late", json!({}));
    late.references = vec![Reference::new("definition", def_kind.clone(), def.meta.id)];
    expect_kind(
        store.create(late).await,
        ErrorKind::Invalid,
        "referencing an object being deleted",
    );
}

/// Deletion: schedule (object stays, state `DeletionScheduled`), then remove.
pub async fn deletion_is_two_phase(store: &dyn Store) {
    let kind = unique_name("Conf");
    let obj = store
        .create(new(&kind, "doomed", json!({})))
        .await
        .expect("create");
    let id = obj.meta.id;
    expect_kind(
        store.schedule_deletion(&kind, id, Some(7)).await,
        ErrorKind::Conflict,
        "scheduling deletion at a stale version",
    );
    let scheduled = store
        .schedule_deletion(&kind, id, Some(1))
        .await
        .expect("schedule");
    assert!(scheduled.meta.deletion_scheduled_at.is_some());
    assert_eq!(scheduled.status.state, LifecycleState::DeletionScheduled);
    assert_eq!(
        scheduled.meta.generation, 2,
        "deletion is a change of desired state"
    );
    let again = store
        .schedule_deletion(&kind, id, None)
        .await
        .expect("idempotent");
    assert_eq!(
        again.meta.deletion_scheduled_at,
        scheduled.meta.deletion_scheduled_at
    );
    assert!(
        store.get(&kind, id).await.is_ok(),
        "object stays until removed"
    );
    expect_kind(
        store
            .update(&kind, id, spec_update(&scheduled, json!({"x": 1}), None))
            .await,
        ErrorKind::Conflict,
        "changing the spec of an object being deleted",
    );
    store.remove(&kind, id, None).await.expect("remove");
    expect_kind(
        store.get(&kind, id).await,
        ErrorKind::NotFound,
        "get after removal",
    );
    expect_kind(
        store.remove(&kind, id, None).await,
        ErrorKind::NotFound,
        "second removal",
    );
    store
        .create(new(&kind, "doomed", json!({})))
        .await
        .expect("name free after removal");
}

/// Bad kinds, names and labels are `Invalid`, naming the field; nothing is stored.
pub async fn invalid_input_names_the_field(store: &dyn Store) {
    let kind = unique_name("Conf");
    let field_of = |result: crate::Result<RawObject>| match result {
        Err(crate::Error::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert_eq!(
        field_of(store.create(new("not a kind", "x", json!({}))).await),
        "kind"
    );
    assert_eq!(
        field_of(store.create(new(&kind, "", json!({}))).await),
        "name"
    );
    assert_eq!(
        field_of(store.create(new(&kind, "has space", json!({}))).await),
        "name"
    );
    assert_eq!(
        field_of(store.create(new(&kind, &"n".repeat(300), json!({}))).await),
        "name"
    );
    let bad_label = new(&kind, "ok", json!({})).label("", "v");
    assert_eq!(field_of(store.create(bad_label).await), "labels");
    let page = store
        .list(&kind, &ListQuery::default())
        .await
        .expect("list");
    assert!(page.items.is_empty(), "invalid creates must store nothing");
}

/// `create_all_once`: the first call with a key creates; later ones (also concurrent ones)
/// replay what it created with its fingerprint and create nothing; a call that failed
/// recorded nothing; a bad key is `Invalid`.
pub async fn create_all_once_creates_once_per_key(store: Arc<dyn Store>) {
    let kind = unique_name("Conf");
    let key = |fingerprint: &str| IdempotencyKey {
        key: unique_name("key-"),
        fingerprint: fingerprint.to_owned(),
    };
    let first = key("POST a");
    let id = ObjectId::new();
    let created = match store
        .create_all_once(&first, vec![(id, new(&kind, "a", json!({"n": 1})))])
        .await
        .expect("create")
    {
        Once::Created(created) => created,
        other => panic!("the first use of a key creates: {other:?}"),
    };
    let again = IdempotencyKey {
        fingerprint: "POST b".into(),
        ..first.clone()
    };
    match store
        .create_all_once(&again, vec![(ObjectId::new(), new(&kind, "b", json!({})))])
        .await
        .expect("replay")
    {
        Once::Replayed {
            fingerprint,
            objects,
        } => {
            assert_eq!(fingerprint, "POST a", "the first request's fingerprint");
            assert_eq!(
                objects, created,
                "the objects as the first call created them"
            );
        }
        other => panic!("a used key replays: {other:?}"),
    }
    expect_kind(
        store.get(&kind, ObjectId::new()).await,
        ErrorKind::NotFound,
        "sanity",
    );
    let listed = store
        .list(&kind, &ListQuery::default())
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1, "the replay created nothing");

    // A failed call (name taken) records nothing: the key is free for a corrected request.
    let failing = key("POST c");
    expect_kind(
        store
            .create_all_once(
                &failing,
                vec![(ObjectId::new(), new(&kind, "a", json!({})))],
            )
            .await,
        ErrorKind::AlreadyExists,
        "a taken name",
    );
    assert!(matches!(
        store
            .create_all_once(
                &failing,
                vec![(ObjectId::new(), new(&kind, "c", json!({})))]
            )
            .await
            .expect("retry"),
        Once::Created(_)
    ));

    // Concurrent requests with one key: one creates, the others replay it.
    let shared = key("POST d");
    let tasks: Vec<_> = (0..6)
        .map(|n| {
            let (store, shared, kind) = (store.clone(), shared.clone(), kind.clone());
            tokio::spawn(async move {
                store
                    .create_all_once(
                        &shared,
                        vec![(ObjectId::new(), new(&kind, &format!("d{n}"), json!({})))],
                    )
                    .await
            })
        })
        .collect();
    let mut made = 0;
    for task in tasks {
        match task.await.expect("task").expect("create or replay") {
            Once::Created(_) => made += 1,
            Once::Replayed { fingerprint, .. } => assert_eq!(fingerprint, "POST d"),
        }
    }
    assert_eq!(made, 1, "one of the concurrent requests created");

    for bad in ["", "has space", &"k".repeat(256)] {
        let bad = IdempotencyKey {
            key: bad.to_owned(),
            fingerprint: String::new(),
        };
        expect_kind(
            store.create_all_once(&bad, vec![]).await,
            ErrorKind::Invalid,
            "a bad idempotency key",
        );
    }
}
