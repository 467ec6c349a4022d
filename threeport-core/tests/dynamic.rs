//! A reconciler whose kind is known only at run time ([`Dynamic`]), as language bindings use.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use threeport_core::{
    Action, Context, Controller, Dynamic, MemoryBackends, NewObject, Object, ReconcileError,
    Reconciler, Store,
};
use tokio_util::sync::CancellationToken;

struct Doubler {
    kind: String,
}

#[async_trait]
impl Reconciler for Doubler {
    type Object = Dynamic;

    fn kind(&self) -> &str {
        &self.kind
    }

    async fn reconcile(
        &self,
        obj: &mut Object<Dynamic>,
        _: &Context,
    ) -> Result<Action, ReconcileError> {
        let n = obj.spec.0["n"].as_i64().unwrap_or_default();
        obj.status.details = json!({"doubled": n * 2});
        Ok(Action::Done)
    }
}

#[tokio::test]
async fn a_kind_named_at_run_time_is_reconciled_as_json() {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    tokio::spawn(
        Controller::new(
            Doubler {
                kind: "Gadget".into(),
            },
            memory.backends(),
        )
        .run(shutdown.clone()),
    );
    let created = memory
        .store
        .create(NewObject {
            kind: "Gadget".into(),
            name: "g".into(),
            labels: Default::default(),
            references: Vec::new(),
            owners: Vec::new(),
            spec: json!({"n": 21}),
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let raw = memory.store.get("Gadget", created.meta.id).await.unwrap();
        if raw.status.details == json!({"doubled": 42}) {
            assert_eq!(raw.status.observed_generation, raw.meta.generation);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{raw:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
}
