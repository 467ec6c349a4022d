//! The [`Bus`] contract.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{Timing, unique_name};
use crate::bus::{
    Bus, Delivery, Notification, Operation, SecretValues, SubscribeOptions, Subscription,
};
use crate::error::ErrorKind;
use crate::object::ObjectId;

/// Runs every bus check.
pub async fn run(bus: Arc<dyn Bus>, timing: Timing) {
    notifications_wait_for_the_first_subscriber(&*bus, timing).await;
    members_of_a_group_compete(&*bus, timing).await;
    a_kind_has_one_consumer_group(&*bus, timing).await;
    unsettled_deliveries_come_back_after_ack_wait(&*bus, timing).await;
    in_progress_extends_the_ack_wait(&*bus, timing).await;
    requeue_after_delays_redelivery(&*bus, timing).await;
    max_deliveries_bounds_redelivery(&*bus, timing).await;
    secret_values_are_delivered_whole(&*bus, timing).await;
    publish_missing_skips_objects_the_bus_holds(&*bus, timing).await;
    bad_options_are_invalid(&*bus).await;
}

fn note(kind: &str) -> Notification {
    Notification {
        kind: kind.to_owned(),
        id: ObjectId::new(),
        operation: Operation::Created,
        version: 1,
        secret: None,
    }
}

fn options(kind: &str, timing: Timing) -> SubscribeOptions {
    SubscribeOptions {
        group: unique_name("group-"),
        kinds: vec![kind.to_owned()],
        ack_wait: timing.unit,
        max_deliveries: None,
    }
}

/// A notification with secret values reaches the group with its values, also when a plain
/// notification for the same object is pending (it must not fold into it), and keeps them
/// across a requeue.
pub async fn secret_values_are_delivered_whole(bus: &dyn Bus, timing: Timing) {
    let kind = unique_name("Conf");
    let plain = note(&kind);
    let secret = SecretValues([("key".to_owned(), "value".to_owned())].into());
    let with_secret = Notification {
        version: 2,
        ..plain.clone()
    }
    .with_secret(secret.clone());
    bus.publish(plain.clone()).await.expect("publish");
    bus.publish(with_secret.clone())
        .await
        .expect("publish secret");
    let mut sub = bus
        .subscribe(SubscribeOptions {
            ack_wait: timing.unit * 10,
            ..options(&kind, timing)
        })
        .await
        .expect("subscribe");
    let mut secrets = Vec::new();
    let mut requeued = false;
    while let Some(d) = next_within(&mut *sub, timing.unit * 10).await {
        assert_eq!(d.notification.id, plain.id);
        match &d.notification.secret {
            Some(values) if !requeued => {
                secrets.push(values.clone());
                requeued = true;
                d.requeue_after(timing.unit).await.expect("requeue");
            }
            Some(values) => {
                secrets.push(values.clone());
                d.ack().await.expect("ack");
            }
            None => d.ack().await.expect("ack"),
        }
        if secrets.len() == 2 {
            break;
        }
    }
    assert_eq!(
        secrets,
        vec![secret.clone(), secret],
        "the secret arrives, and again after a requeue"
    );
}

/// The next delivery within `within`, if any.
async fn next_within(sub: &mut dyn Subscription, within: Duration) -> Option<Delivery> {
    match tokio::time::timeout(within, sub.next()).await {
        Ok(result) => result.expect("next"),
        Err(_) => None,
    }
}

/// Notifications published before a group exists are delivered once it subscribes.
pub async fn notifications_wait_for_the_first_subscriber(bus: &dyn Bus, timing: Timing) {
    let kind = unique_name("Conf");
    let n = note(&kind);
    bus.publish(n.clone()).await.expect("publish");
    let mut sub = bus
        .subscribe(options(&kind, timing))
        .await
        .expect("subscribe");
    let d = next_within(&mut *sub, timing.unit * 10)
        .await
        .expect("kept for the first subscriber");
    assert_eq!(d.notification, n);
    assert_eq!(d.attempt, 1);
    d.ack().await.expect("ack");
}

/// Two members of one group split the notifications: each is delivered to exactly one.
pub async fn members_of_a_group_compete(bus: &dyn Bus, timing: Timing) {
    let kind = unique_name("Conf");
    let opts = SubscribeOptions {
        ack_wait: timing.unit * 10,
        ..options(&kind, timing)
    };
    let mut a = bus.subscribe(opts.clone()).await.expect("subscribe a");
    let mut b = bus.subscribe(opts).await.expect("subscribe b");
    let published: HashSet<ObjectId> = (0..20).map(|_| ObjectId::new()).collect();
    for id in &published {
        bus.publish(Notification {
            id: *id,
            ..note(&kind)
        })
        .await
        .expect("publish");
    }
    let mut seen = Vec::new();
    let quiet = timing.unit * 2;
    loop {
        let got = tokio::select! {
            d = next_within(&mut *a, quiet) => d,
            d = next_within(&mut *b, quiet) => d,
        };
        match got {
            Some(d) => {
                seen.push(d.notification.id);
                d.ack().await.expect("ack");
            }
            None => break,
        }
    }
    let unique: HashSet<ObjectId> = seen.iter().copied().collect();
    assert_eq!(unique, published, "every notification delivered");
    assert_eq!(
        seen.len(),
        published.len(),
        "no notification delivered twice"
    );
}

/// A kind belongs to one consumer group: a second group is refused; kinds stay apart.
pub async fn a_kind_has_one_consumer_group(bus: &dyn Bus, timing: Timing) {
    let kind = unique_name("Conf");
    let other = unique_name("Conf");
    let first = options(&kind, timing);
    let mut g1 = bus.subscribe(first.clone()).await.expect("first group");
    let mut again = bus
        .subscribe(first)
        .await
        .expect("more members of the same group are fine");
    match bus.subscribe(options(&kind, timing)).await {
        Err(err) => assert_eq!(err.kind(), ErrorKind::Conflict, "second group: {err}"),
        Ok(_) => panic!("a second consumer group on {kind} must be refused"),
    }
    let mut g3 = bus
        .subscribe(options(&other, timing))
        .await
        .expect("other kind, other group");
    let n = note(&kind);
    bus.publish(n.clone()).await.expect("publish");
    let d = tokio::select! {
        d = next_within(&mut *g1, timing.unit * 10) => d,
        d = next_within(&mut *again, timing.unit * 10) => d,
    };
    let d = d.expect("the group gets it");
    assert_eq!(d.notification, n);
    d.ack().await.expect("ack");
    assert!(
        next_within(&mut *g3, timing.unit).await.is_none(),
        "other kinds stay out"
    );
}

/// A delivery neither acked nor requeued comes back after ack-wait with a higher attempt.
pub async fn unsettled_deliveries_come_back_after_ack_wait(bus: &dyn Bus, timing: Timing) {
    let kind = unique_name("Conf");
    let mut sub = bus
        .subscribe(options(&kind, timing))
        .await
        .expect("subscribe");
    let n = note(&kind);
    bus.publish(n.clone()).await.expect("publish");
    let first = next_within(&mut *sub, timing.unit * 10)
        .await
        .expect("first delivery");
    assert_eq!(first.attempt, 1);
    let second = next_within(&mut *sub, timing.unit * 10)
        .await
        .expect("redelivered after ack-wait");
    assert_eq!(second.notification, n);
    assert_eq!(second.attempt, 2, "redelivery counts the attempt");
    second.ack().await.expect("ack");
    drop(first);
    assert!(
        next_within(&mut *sub, timing.unit * 3).await.is_none(),
        "acked means gone"
    );
}

/// `in_progress` restarts the ack-wait, so a long job keeps its delivery.
pub async fn in_progress_extends_the_ack_wait(bus: &dyn Bus, timing: Timing) {
    let kind = unique_name("Conf");
    let mut sub = bus
        .subscribe(options(&kind, timing))
        .await
        .expect("subscribe");
    bus.publish(note(&kind)).await.expect("publish");
    let d = next_within(&mut *sub, timing.unit * 10)
        .await
        .expect("delivery");
    for _ in 0..6 {
        tokio::time::sleep(timing.unit / 3).await;
        d.in_progress().await.expect("in progress");
        assert!(
            tokio::time::timeout(Duration::from_millis(1), sub.next())
                .await
                .is_err(),
            "redelivered while in progress"
        );
    }
    d.ack().await.expect("ack");
    assert!(
        next_within(&mut *sub, timing.unit * 3).await.is_none(),
        "acked means gone"
    );
}

/// `requeue_after(d)` hides the notification for `d`, then delivers it as a fresh attempt.
pub async fn requeue_after_delays_redelivery(bus: &dyn Bus, timing: Timing) {
    let kind = unique_name("Conf");
    let opts = SubscribeOptions {
        ack_wait: timing.unit * 10,
        ..options(&kind, timing)
    };
    let mut sub = bus.subscribe(opts).await.expect("subscribe");
    let n = note(&kind);
    bus.publish(n.clone()).await.expect("publish");
    let d = next_within(&mut *sub, timing.unit * 10)
        .await
        .expect("delivery");
    let delay = timing.unit * 3;
    let requeued_at = tokio::time::Instant::now();
    d.requeue_after(delay).await.expect("requeue");
    let again = next_within(&mut *sub, timing.unit * 20)
        .await
        .expect("comes back");
    assert!(
        requeued_at.elapsed() >= delay,
        "came back after {:?}, before the {delay:?} delay",
        requeued_at.elapsed()
    );
    assert_eq!(again.notification.id, n.id);
    assert_eq!(again.attempt, 1, "a requeue starts the attempt count anew");
    again.ack().await.expect("ack");
}

/// With `max_deliveries: Some(n)`, an unsettled notification is delivered n times, no more.
pub async fn max_deliveries_bounds_redelivery(bus: &dyn Bus, timing: Timing) {
    let kind = unique_name("Conf");
    let opts = SubscribeOptions {
        max_deliveries: Some(2),
        ..options(&kind, timing)
    };
    let mut sub = bus.subscribe(opts).await.expect("subscribe");
    bus.publish(note(&kind)).await.expect("publish");
    let mut attempts = Vec::new();
    while let Some(d) = next_within(&mut *sub, timing.unit * 5).await {
        attempts.push(d.attempt);
    }
    assert_eq!(attempts, [1, 2], "delivered exactly max_deliveries times");
}

/// `publish_missing` (a resync's publish) adds nothing for an object with a notification in
/// flight or a requeue pending, and publishes the others.
pub async fn publish_missing_skips_objects_the_bus_holds(bus: &dyn Bus, timing: Timing) {
    let kind = unique_name("Conf");
    let opts = SubscribeOptions {
        ack_wait: timing.unit * 20,
        ..options(&kind, timing)
    };
    let mut sub = bus.subscribe(opts).await.expect("subscribe");
    let (in_flight, requeued, missing) = (note(&kind), note(&kind), note(&kind));
    bus.publish_all(vec![in_flight.clone(), requeued.clone()])
        .await
        .expect("publish");
    let mut held = None;
    for _ in 0..2 {
        let d = next_within(&mut *sub, timing.unit * 10)
            .await
            .expect("delivery");
        if d.notification.id == requeued.id {
            d.requeue_after(timing.unit * 15).await.expect("requeue");
        } else {
            held = Some(d);
        }
    }
    let held = held.expect("the in-flight one was delivered");
    bus.publish_missing(vec![in_flight.clone(), requeued.clone(), missing.clone()])
        .await
        .expect("publish missing");
    let d = next_within(&mut *sub, timing.unit * 10)
        .await
        .expect("the missing one is published");
    assert_eq!(d.notification.id, missing.id);
    d.ack().await.expect("ack");
    assert!(
        next_within(&mut *sub, timing.unit * 5).await.is_none(),
        "objects the bus held got no second notification"
    );
    held.ack().await.expect("ack");
    let again = next_within(&mut *sub, timing.unit * 20)
        .await
        .expect("the requeue still comes");
    assert_eq!(again.notification.id, requeued.id);
    again.ack().await.expect("ack");
}

/// Subscriptions without kinds, with a bad kind or group name, or a zero ack-wait are `Invalid`.
pub async fn bad_options_are_invalid(bus: &dyn Bus) {
    let kind = unique_name("Conf");
    let timing = Timing::default();
    let cases = [
        SubscribeOptions {
            kinds: vec![],
            ..options(&kind, timing)
        },
        SubscribeOptions {
            kinds: vec!["no.dots".into()],
            ..options(&kind, timing)
        },
        SubscribeOptions {
            ack_wait: Duration::ZERO,
            ..options(&kind, timing)
        },
        SubscribeOptions {
            group: "no spaces".into(),
            ..options(&kind, timing)
        },
    ];
    for opts in cases {
        match bus.subscribe(opts.clone()).await {
            Err(err) => assert_eq!(err.kind(), ErrorKind::Invalid, "{opts:?}: {err}"),
            Ok(_) => panic!("subscribe accepted invalid options {opts:?}"),
        }
    }
}
