//! Exact timing of the memory fakes on tokio's paused clock: ack-wait redelivery, requeue
//! delays and lease expiry happen at their deadline, not a tick before.

use std::time::Duration;

use threeport_core::*;
use tokio::time::{Instant, advance};

fn note() -> Notification {
    Notification {
        kind: "Widget".into(),
        id: ObjectId::new(),
        operation: Operation::Created,
        version: 1,
        secret: None,
    }
}

async fn poll_now(sub: &mut Box<dyn Subscription>) -> Option<Delivery> {
    tokio::time::timeout(Duration::ZERO, sub.next())
        .await
        .ok()
        .map(|r| r.unwrap().unwrap())
}

#[tokio::test(start_paused = true)]
async fn ack_wait_redelivers_exactly_at_the_deadline() {
    let bus = MemoryBus::new();
    let options = SubscribeOptions {
        ack_wait: Duration::from_secs(30),
        ..SubscribeOptions::new("g", "Widget")
    };
    let mut sub = bus.subscribe(options).await.unwrap();
    bus.publish(note()).await.unwrap();
    let first = poll_now(&mut sub).await.expect("delivered at once");
    advance(Duration::from_millis(29_999)).await;
    assert!(poll_now(&mut sub).await.is_none(), "not before ack-wait");
    first.in_progress().await.unwrap();
    advance(Duration::from_millis(29_999)).await;
    assert!(
        poll_now(&mut sub).await.is_none(),
        "in_progress restarted the ack-wait"
    );
    advance(Duration::from_millis(1)).await;
    let second = poll_now(&mut sub)
        .await
        .expect("redelivered at the deadline");
    assert_eq!(second.attempt, 2);
    assert_eq!(
        first.ack().await.unwrap_err().kind(),
        ErrorKind::Conflict,
        "the old holder lost it"
    );
    second.ack().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn requeue_after_delivers_at_the_delay_and_coalesces_to_the_earliest() {
    let bus = MemoryBus::new();
    let mut sub = bus
        .subscribe(SubscribeOptions::new("g", "Widget"))
        .await
        .unwrap();
    let n = note();
    bus.publish(n.clone()).await.unwrap();
    let d = poll_now(&mut sub).await.unwrap();
    let start = Instant::now();
    d.requeue_after(Duration::from_secs(60)).await.unwrap();
    advance(Duration::from_secs(10)).await;
    // A fresh change of the same object is due now: it folds into the pending requeue.
    bus.publish(Notification {
        version: 2,
        ..n.clone()
    })
    .await
    .unwrap();
    let merged = poll_now(&mut sub).await.expect("earliest deadline wins");
    assert_eq!(merged.notification.version, 2);
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    merged.requeue_after(Duration::from_secs(5)).await.unwrap();
    advance(Duration::from_millis(4_999)).await;
    assert!(poll_now(&mut sub).await.is_none());
    advance(Duration::from_millis(1)).await;
    poll_now(&mut sub)
        .await
        .expect("due after exactly 5 s")
        .ack()
        .await
        .unwrap();
    advance(Duration::from_secs(120)).await;
    assert!(
        poll_now(&mut sub).await.is_none(),
        "the 60 s requeue was folded, not kept"
    );
    assert_eq!(bus.backlog("g"), 0);
}

#[tokio::test(start_paused = true)]
async fn leases_expire_exactly_at_their_ttl_and_renewal_pushes_the_deadline() {
    let locker = MemoryLocker::new();
    let ttl = Duration::from_secs(10);
    let lease = locker.acquire("k", "a", ttl).await.unwrap().unwrap();
    advance(Duration::from_millis(9_999)).await;
    assert!(locker.acquire("k", "b", ttl).await.unwrap().is_none());
    let lease = locker.renew(&lease).await.unwrap();
    advance(Duration::from_millis(9_999)).await;
    assert!(
        locker.acquire("k", "b", ttl).await.unwrap().is_none(),
        "renewal extended it"
    );
    advance(Duration::from_millis(1)).await;
    let taken = locker
        .acquire("k", "b", ttl)
        .await
        .unwrap()
        .expect("expired at the TTL");
    assert!(taken.token > lease.token);
    assert!(locker.renew(&lease).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn outbox_claims_expire_at_their_deadline() {
    let store = MemoryStore::new();
    store
        .create(NewObject {
            kind: "Widget".into(),
            name: "w".into(),
            labels: Labels::new(),
            references: vec![],
            owners: Vec::new(),
            spec: serde_json::json!({}),
        })
        .await
        .unwrap();
    let claim_for = Duration::from_secs(30);
    assert_eq!(store.claim("a", 10, claim_for).await.unwrap().len(), 1);
    advance(Duration::from_millis(29_999)).await;
    assert!(store.claim("b", 10, claim_for).await.unwrap().is_empty());
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        store.claim("b", 10, claim_for).await.unwrap().len(),
        1,
        "a's claim timed out"
    );
}
