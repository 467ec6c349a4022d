//! The [`Outbox`] contract, checked together with the [`Store`] whose writes fill it.
//!
//! Run it on a store no live relay drains: the checks claim entries themselves.

use std::sync::Arc;

use serde_json::json;

use super::{Timing, unique_name};
use crate::bus::{Notification, Operation};
use crate::object::{Labels, NewObject, Status};
use crate::outbox::{Outbox, OutboxEntry};
use crate::store::{SpecUpdate, StatusWrite, Store};

/// Runs every outbox check.
pub async fn run(store: Arc<dyn Store>, outbox: Arc<dyn Outbox>, timing: Timing) {
    desired_state_writes_record_notifications(&*store, &*outbox).await;
    failed_writes_record_nothing(&*store, &*outbox).await;
    claims_are_exclusive_until_they_time_out(&*store, &*outbox, timing).await;
    completing_and_claiming_at_once_never_returns_the_completed(&*store, &*outbox).await;
}

/// Every entry of `kind` a fresh claimer can see now, claimed for a moment.
async fn entries_of(outbox: &dyn Outbox, kind: &str) -> Vec<OutboxEntry> {
    let claimer = unique_name("conformance-peek-");
    let entries = outbox
        .claim(&claimer, 10_000, std::time::Duration::from_millis(1))
        .await
        .expect("claim");
    entries
        .into_iter()
        .filter(|e| e.notification.kind == kind)
        .collect()
}

fn new(kind: &str, name: &str) -> NewObject {
    NewObject {
        kind: kind.to_owned(),
        name: name.to_owned(),
        labels: Labels::new(),
        references: Vec::new(),
        owners: Vec::new(),
        spec: json!({}),
    }
}

/// create, update and schedule_deletion each leave one entry, in order, with the new version;
/// status writes and removal leave none.
pub async fn desired_state_writes_record_notifications(store: &dyn Store, outbox: &dyn Outbox) {
    let kind = unique_name("Conf");
    let obj = store.create(new(&kind, "o")).await.expect("create");
    let id = obj.meta.id;
    let update = SpecUpdate {
        expected_version: Some(1),
        labels: Labels::new(),
        references: Vec::new(),
        spec: json!({"x": 1}),
    };
    store.update(&kind, id, update).await.expect("update");
    let status = StatusWrite {
        expected_version: None,
        fence: None,
        status: Status::default(),
    };
    store
        .update_status(&kind, id, status)
        .await
        .expect("status");
    store
        .schedule_deletion(&kind, id, None)
        .await
        .expect("delete");
    store.remove(&kind, id, None).await.expect("remove");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let got: Vec<Notification> = entries_of(outbox, &kind)
        .await
        .into_iter()
        .map(|e| e.notification)
        .collect();
    let expected: Vec<Notification> = [
        (Operation::Created, 1),
        (Operation::Updated, 2),
        (Operation::Deleted, 4),
    ]
    .into_iter()
    .map(|(operation, version)| Notification {
        kind: kind.clone(),
        id,
        operation,
        version,
        secret: None,
    })
    .collect();
    assert_eq!(
        got, expected,
        "one notification per desired-state write, in order"
    );
}

/// A write refused by the store leaves no notification behind (same transaction).
pub async fn failed_writes_record_nothing(store: &dyn Store, outbox: &dyn Outbox) {
    let kind = unique_name("Conf");
    let obj = store.create(new(&kind, "o")).await.expect("create");
    let created = entries_of(outbox, &kind).await;
    assert_eq!(created.len(), 1);
    outbox.complete(&[created[0].seq]).await.expect("complete");
    assert!(store.create(new(&kind, "o")).await.is_err(), "duplicate");
    let stale = SpecUpdate {
        expected_version: Some(99),
        labels: Labels::new(),
        references: Vec::new(),
        spec: json!({}),
    };
    assert!(
        store.update(&kind, obj.meta.id, stale).await.is_err(),
        "stale"
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(
        entries_of(outbox, &kind).await.is_empty(),
        "refused writes must not notify"
    );
}

/// One claimer at a time; its own entries come back to it; others get them after the claim
/// times out; completed entries are gone for good.
pub async fn claims_are_exclusive_until_they_time_out(
    store: &dyn Store,
    outbox: &dyn Outbox,
    timing: Timing,
) {
    let kind = unique_name("Conf");
    for i in 0..3 {
        store
            .create(new(&kind, &format!("o{i}")))
            .await
            .expect("create");
    }
    let mine = |entries: Vec<OutboxEntry>| -> Vec<u64> {
        entries
            .into_iter()
            .filter(|e| e.notification.kind == kind)
            .map(|e| e.seq)
            .collect()
    };
    let (a, b) = (unique_name("relay-a-"), unique_name("relay-b-"));
    let claim_for = timing.unit * 2;
    let by_a = mine(outbox.claim(&a, 10_000, claim_for).await.expect("claim a"));
    assert_eq!(by_a.len(), 3, "all three entries claimed by a");
    assert!(
        by_a.windows(2).all(|w| w[0] < w[1]),
        "entries come oldest first"
    );
    let by_b = mine(outbox.claim(&b, 10_000, claim_for).await.expect("claim b"));
    assert!(by_b.is_empty(), "b must not get entries a holds: {by_b:?}");
    let again = mine(
        outbox
            .claim(&a, 10_000, claim_for)
            .await
            .expect("claim a again"),
    );
    assert_eq!(again, by_a, "a's own claims come back to a");
    tokio::time::sleep(claim_for + timing.unit).await;
    let taken_over = mine(
        outbox
            .claim(&b, 10_000, claim_for)
            .await
            .expect("claim b later"),
    );
    assert_eq!(taken_over, by_a, "b takes over once a's claim timed out");
    outbox.complete(&taken_over).await.expect("complete");
    tokio::time::sleep(claim_for + timing.unit).await;
    let left = mine(
        outbox
            .claim(&a, 10_000, claim_for)
            .await
            .expect("claim after complete"),
    );
    assert!(left.is_empty(), "completed entries must be gone: {left:?}");
}

/// `complete_and_claim` deletes what it is given and claims as `claim` does, never handing
/// back an entry it was asked to delete (even one its claimer holds).
pub async fn completing_and_claiming_at_once_never_returns_the_completed(
    store: &dyn Store,
    outbox: &dyn Outbox,
) {
    let kind = unique_name("Conf");
    for name in ["a", "b", "c"] {
        store.create(new(&kind, name)).await.expect("create");
    }
    let claimer = unique_name("conformance-relay-");
    let claim_for = std::time::Duration::from_secs(30);
    let of_kind = |entries: Vec<OutboxEntry>| -> Vec<u64> {
        entries
            .into_iter()
            .filter(|e| e.notification.kind == kind)
            .map(|e| e.seq)
            .collect()
    };
    let claimed = of_kind(
        outbox
            .complete_and_claim(&[], &claimer, 10_000, claim_for)
            .await
            .expect("claim"),
    );
    assert_eq!(claimed.len(), 3, "three creates, three entries");
    let again = of_kind(
        outbox
            .complete_and_claim(&claimed[..1], &claimer, 10_000, claim_for)
            .await
            .expect("complete and claim"),
    );
    assert_eq!(
        again,
        claimed[1..].to_vec(),
        "the completed entry is gone; the claimer's others come back"
    );
    let left = of_kind(
        outbox
            .complete_and_claim(&claimed[1..], &claimer, 10_000, claim_for)
            .await
            .expect("complete and claim"),
    );
    assert!(left.is_empty(), "all completed: {left:?}");
    assert!(
        entries_of(outbox, &kind).await.is_empty(),
        "completed entries are gone for good"
    );
}
