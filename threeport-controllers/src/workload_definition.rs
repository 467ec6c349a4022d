//! The workload-definition controller: splits a definition's YAML stream into one
//! `WorkloadResourceDefinition` record per resource, keeps those records in step with the
//! manifests. The records are owned by the definition ([`NewObject::owned_by`]): deleting it
//! deletes them first. Workload instances follow their definition through a relation, so a
//! changed definition reaches them without anyone writing on them.

use std::collections::BTreeMap;

use async_trait::async_trait;
pub use threeport_api::model::split_manifests;
use threeport_api::model::{WorkloadDefinition, WorkloadResourceDefinition};
use threeport_core::object::NewObject;
use threeport_core::{
    Action, Api, ApiObject, Context, ErrorKind, Object, ReconcileError, Reconciler,
};

/// Reconciles `WorkloadDefinition` objects.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkloadDefinitionReconciler;

/// The records a definition owns, by name.
async fn owned(
    ctx: &Context,
    definition: &Object<WorkloadDefinition>,
) -> Result<BTreeMap<String, Object<WorkloadResourceDefinition>>, ReconcileError> {
    let api = ctx.api::<WorkloadResourceDefinition>();
    let mut records = BTreeMap::new();
    let dependents = ctx
        .store()
        .dependents(WorkloadDefinition::KIND, definition.id())
        .await?;
    for dependent in dependents
        .into_iter()
        .filter(|d| d.kind == WorkloadResourceDefinition::KIND)
    {
        match api.get(dependent.id).await {
            Ok(record) if !record.is_deleting() => {
                records.insert(record.meta.name.clone(), record);
            }
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(records)
}

/// Removes an owned record: nothing reconciles these, so the owner does both phases.
async fn remove(
    api: &Api<WorkloadResourceDefinition>,
    record: &Object<WorkloadResourceDefinition>,
) -> Result<(), ReconcileError> {
    match api.delete(record.id()).await {
        Ok(_) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err.into()),
    }
    match api
        .store()
        .remove(WorkloadResourceDefinition::KIND, record.id(), None)
        .await
    {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[async_trait]
impl Reconciler for WorkloadDefinitionReconciler {
    type Object = WorkloadDefinition;

    async fn reconcile(
        &self,
        definition: &mut Object<WorkloadDefinition>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let manifests =
            split_manifests(&definition.spec.yaml_document).map_err(ReconcileError::Terminal)?;
        let api = ctx.api::<WorkloadResourceDefinition>();
        let mut existing = owned(ctx, definition).await?;
        for (index, manifest) in manifests.iter().enumerate() {
            let name = format!(
                "{}.{index}.{}.{}",
                definition.meta.name,
                manifest["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                manifest["metadata"]["name"].as_str().unwrap_or_default()
            );
            match existing.remove(&name) {
                Some(mut record) if record.spec.manifest != *manifest => {
                    record.spec.manifest = manifest.clone();
                    api.update(&record).await?;
                }
                Some(_) => {}
                None => {
                    let spec = WorkloadResourceDefinition {
                        definition: definition.id(),
                        manifest: manifest.clone(),
                    };
                    let new = NewObject::typed(name, &spec)?
                        .owned_by(WorkloadDefinition::KIND, definition.id());
                    match api.create_new(new).await {
                        Ok(_) => {}
                        // A previous run created it and then failed: it is there, fine.
                        Err(err) if err.kind() == ErrorKind::AlreadyExists => {}
                        Err(err) => return Err(err.into()),
                    }
                }
            }
        }
        // Whatever is left was removed from the manifests.
        for record in existing.values() {
            remove(&api, record).await?;
        }
        definition.status.details.resource_count = manifests.len();
        Ok(Action::Done)
    }
    // No cleanup of its own: the records it owns go first (foreground deletion; removed by
    // their passive controller), and the runtime removes the definition after them.
}
