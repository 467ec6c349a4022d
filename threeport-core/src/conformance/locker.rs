//! The [`Locker`] contract.

use std::sync::Arc;

use super::{Timing, unique_name};
use crate::error::ErrorKind;
use crate::lock::Locker;

/// Runs every locker check.
pub async fn run(locker: Arc<dyn Locker>, timing: Timing) {
    one_holder_at_a_time(&*locker, timing).await;
    renewal_keeps_the_lease_past_its_ttl(&*locker, timing).await;
    expired_leases_are_taken_over_with_a_larger_token(&*locker, timing).await;
    release_frees_and_is_idempotent(&*locker, timing).await;
    concurrent_acquires_yield_one_holder(locker.clone(), timing).await;
}

/// Acquires a lease that must be free.
async fn take(
    locker: &dyn Locker,
    key: &str,
    holder: &str,
    ttl: std::time::Duration,
) -> crate::lock::Lease {
    locker
        .acquire(key, holder, ttl)
        .await
        .expect("acquire")
        .unwrap_or_else(|| panic!("{key} must be free for {holder}"))
}

/// A held key cannot be taken by anyone else; other keys are independent.
pub async fn one_holder_at_a_time(locker: &dyn Locker, timing: Timing) {
    let key = unique_name("k");
    let ttl = timing.unit * 5;
    let lease = take(locker, &key, "a", ttl).await;
    assert_eq!(
        (lease.key.as_str(), lease.holder.as_str()),
        (key.as_str(), "a")
    );
    assert!(
        locker
            .acquire(&key, "b", ttl)
            .await
            .expect("acquire")
            .is_none(),
        "held by a"
    );
    assert!(
        locker
            .acquire(&key, "a", ttl)
            .await
            .expect("acquire")
            .is_none(),
        "not re-entrant"
    );
    let other = locker
        .acquire(&unique_name("k"), "b", ttl)
        .await
        .expect("acquire");
    assert!(other.is_some(), "other keys are independent");
}

/// Renewing within the TTL keeps the lease alive well past the first TTL.
pub async fn renewal_keeps_the_lease_past_its_ttl(locker: &dyn Locker, timing: Timing) {
    let key = unique_name("k");
    let ttl = timing.unit * 2;
    let mut lease = take(locker, &key, "a", ttl).await;
    for _ in 0..4 {
        tokio::time::sleep(timing.unit).await;
        let renewed = locker.renew(&lease).await.expect("renew within ttl");
        assert!(
            renewed.token >= lease.token,
            "tokens never go down on renewal"
        );
        lease = renewed;
    }
    assert!(
        locker
            .acquire(&key, "b", ttl)
            .await
            .expect("acquire")
            .is_none(),
        "still held after 2 TTLs of renewals"
    );
}

/// An unrenewed lease expires; the next holder's token is larger; the old holder can neither
/// renew nor release the new holder's lease.
pub async fn expired_leases_are_taken_over_with_a_larger_token(
    locker: &dyn Locker,
    timing: Timing,
) {
    let key = unique_name("k");
    let ttl = timing.unit;
    let old = take(locker, &key, "a", ttl).await;
    tokio::time::sleep(ttl * 3).await;
    let new = locker
        .acquire(&key, "b", timing.unit * 10)
        .await
        .expect("acquire")
        .expect("expired lease must be free");
    assert!(
        new.token > old.token,
        "fencing token must grow: {} then {}",
        old.token,
        new.token
    );
    match locker.renew(&old).await {
        Err(err) => assert_eq!(
            err.kind(),
            ErrorKind::Conflict,
            "renewing a lost lease: {err}"
        ),
        Ok(lease) => panic!("renewed a lease that was taken over: {lease:?}"),
    }
    locker
        .release(&old)
        .await
        .expect("releasing a lost lease is a no-op");
    assert!(
        locker
            .acquire(&key, "c", ttl)
            .await
            .expect("acquire")
            .is_none(),
        "old holder's release must not free b's lease"
    );
}

/// Release frees the key at once; releasing twice is fine.
pub async fn release_frees_and_is_idempotent(locker: &dyn Locker, timing: Timing) {
    let key = unique_name("k");
    let ttl = timing.unit * 10;
    let lease = take(locker, &key, "a", ttl).await;
    locker.release(&lease).await.expect("release");
    locker.release(&lease).await.expect("release again");
    let next = locker
        .acquire(&key, "b", ttl)
        .await
        .expect("acquire")
        .expect("freed");
    assert!(next.token > lease.token);
    assert!(
        locker.renew(&lease).await.is_err(),
        "a released lease cannot be renewed"
    );
}

/// Many concurrent acquires of one key: exactly one wins.
pub async fn concurrent_acquires_yield_one_holder(locker: Arc<dyn Locker>, timing: Timing) {
    let key = unique_name("k");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let locker = locker.clone();
            let key = key.clone();
            tokio::spawn(async move {
                locker
                    .acquire(&key, &format!("h{i}"), timing.unit * 10)
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if task.await.expect("task").expect("acquire").is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one concurrent acquire must win");
}
