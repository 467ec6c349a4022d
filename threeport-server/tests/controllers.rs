//! The workload-definition controller on the memory backends: records follow the manifests,
//! bad manifests fail with the document named, deletion removes the records.

use std::time::Duration;

use threeport_core::store::ListQuery;
use threeport_core::{Api, Controller, LifecycleState, MemoryBackends, Object};
use threeport_server::controllers::WorkloadDefinitionReconciler;
use threeport_server::model::{
    WORKLOAD_DEFINITION_LABEL, WorkloadDefinition, WorkloadResourceDefinition,
};
use tokio_util::sync::CancellationToken;

const TWO: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec: {replicas: 1}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n";
const TEN_SECONDS: Duration = Duration::from_secs(10);
const ONE: &str =
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec: {replicas: 3}\n";

async fn records(
    memory: &MemoryBackends,
    definition: &Object<WorkloadDefinition>,
) -> Vec<Object<WorkloadResourceDefinition>> {
    Api::<WorkloadResourceDefinition>::new(memory.store.clone())
        .list_all(
            &ListQuery::default().label(WORKLOAD_DEFINITION_LABEL, definition.id().to_string()),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn records_follow_the_manifests() {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    tokio::spawn(
        Controller::new(WorkloadDefinitionReconciler, memory.backends()).run(shutdown.clone()),
    );
    let definitions = Api::<WorkloadDefinition>::new(memory.store.clone());

    let created = definitions
        .create(
            "web",
            WorkloadDefinition {
                yaml_document: TWO.into(),
            },
        )
        .await
        .unwrap();
    let done = tokio::time::timeout(
        TEN_SECONDS,
        definitions.wait_until(created.id(), |o| o.is_reconciled()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(done.status.details.resource_count, 2);
    assert_eq!(records(&memory, &done).await.len(), 2);

    // The service goes, the deployment changes.
    let mut changed = done.clone();
    changed.spec.yaml_document = ONE.into();
    let changed = definitions.update(&changed).await.unwrap();
    let done = tokio::time::timeout(
        TEN_SECONDS,
        definitions.wait_until(changed.id(), |o: &Object<WorkloadDefinition>| {
            o.is_reconciled() && o.status.observed_generation == changed.meta.generation
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let left = records(&memory, &done).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].spec.manifest["spec"]["replicas"], 3);

    // A resource without apiVersion: the definition fails, naming the document.
    let bad = definitions
        .create(
            "bad",
            WorkloadDefinition {
                yaml_document: format!("{ONE}---\nkind: Service\nmetadata: {{name: x}}\n"),
            },
        )
        .await
        .unwrap();
    let failed = tokio::time::timeout(
        TEN_SECONDS,
        definitions.wait_until(bad.id(), |o| o.status.state.is_stopped()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_ne!(failed.status.state, LifecycleState::Reconciled);
    let reason = failed.status.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("document 1") && reason.contains("apiVersion"),
        "{reason}"
    );

    // Deleting the definition removes its records, then the definition.
    definitions.delete(done.id()).await.unwrap();
    tokio::time::timeout(TEN_SECONDS, definitions.wait_until_gone(done.id()))
        .await
        .unwrap()
        .unwrap();
    assert!(records(&memory, &done).await.is_empty());
    shutdown.cancel();
}
