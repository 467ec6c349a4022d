//! The generated mockall mocks (feature `mock`) plug into the runtime like any backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use threeport_core::lock::MockLocker;
use threeport_core::*;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    id: u32,
}

impl ApiObject for Job {
    const KIND: &'static str = "Job";
    type Status = ();
}

struct Noop;

#[async_trait]
impl Reconciler for Noop {
    type Object = Job;
    async fn reconcile(&self, _: &mut Object<Job>, _: &Context) -> Result<Action, ReconcileError> {
        Ok(Action::Done)
    }
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_lock_service_delays_the_reconcile_instead_of_losing_it() {
    let mut locker = MockLocker::new();
    let mut seq = mockall::Sequence::new();
    locker
        .expect_acquire()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Err(Error::unavailable("lock service down")));
    locker
        .expect_acquire()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|key, holder, ttl| {
            Ok(Some(Lease {
                key: key.to_owned(),
                holder: holder.to_owned(),
                token: 7,
                ttl,
            }))
        });
    locker
        .expect_release()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));

    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let backends = Backends {
        locker: Arc::new(locker),
        ..memory.backends()
    };
    let controller = Controller::new(Noop, backends).with_config(ControllerConfig {
        lock_busy_delay: Duration::from_secs(2),
        ..ControllerConfig::default()
    });
    let task = tokio::spawn(controller.run(shutdown.clone()));

    let jobs = Api::<Job>::new(memory.store.clone());
    let started = tokio::time::Instant::now();
    let id = jobs.create("j", Job { id: 1 }).await.unwrap().id();
    jobs.wait_until(id, |j| j.is_reconciled()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "retried after the lock-busy delay"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
