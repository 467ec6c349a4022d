//! The workload-definition controller: splits a definition's YAML stream into one
//! `WorkloadResourceDefinition` record per resource, keeps those records in step with the
//! manifests, and removes them when the definition goes.

use std::collections::BTreeMap;

use async_trait::async_trait;
pub use threeport_api::model::split_manifests;
use threeport_api::model::{
    WORKLOAD_DEFINITION_LABEL, WorkloadDefinition, WorkloadInstance, WorkloadResourceDefinition,
};
use threeport_core::object::{Labels, NewObject};
use threeport_core::store::ListQuery;
use threeport_core::{
    Action, Api, ApiObject, Context, ErrorKind, Object, ReconcileError, Reconciler,
};

use crate::nudge::set_label;

/// Reconciles `WorkloadDefinition` objects.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkloadDefinitionReconciler;

/// The records a definition owns, by name.
async fn owned(
    ctx: &Context,
    definition: &Object<WorkloadDefinition>,
) -> Result<BTreeMap<String, Object<WorkloadResourceDefinition>>, ReconcileError> {
    let query = ListQuery::default()
        .label(WORKLOAD_DEFINITION_LABEL, definition.id().to_string())
        .limit(1000);
    let records = ctx
        .api::<WorkloadResourceDefinition>()
        .list_all(&query)
        .await?;
    Ok(records
        .into_iter()
        .filter(|r| !r.is_deleting())
        .map(|r| (r.meta.name.clone(), r))
        .collect())
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

/// Label on a workload instance: the generation of its definition it was last told about.
/// Changing it (a desired-state change) is how a new definition reaches the instances.
pub const DEFINITION_GENERATION_LABEL: &str = "threeport.io/definition-generation";

/// Tells every instance of `definition` about its current generation, so they reconcile the
/// new manifests.
async fn poke_instances(
    ctx: &Context,
    definition: &Object<WorkloadDefinition>,
) -> Result<(), ReconcileError> {
    let generation = definition.meta.generation.to_string();
    let instances = ctx.api::<WorkloadInstance>();
    let query = ListQuery::default()
        .referencing("definition", definition.id())
        .limit(1000);
    for instance in instances.list_all(&query).await? {
        set_label::<WorkloadInstance>(
            ctx,
            instance.id(),
            DEFINITION_GENERATION_LABEL,
            Some(&generation),
        )
        .await?;
    }
    Ok(())
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
                    let labels = Labels::from([(
                        WORKLOAD_DEFINITION_LABEL.to_owned(),
                        definition.id().to_string(),
                    )]);
                    let new = NewObject {
                        labels,
                        ..NewObject::typed(name, &spec)?
                    };
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
        poke_instances(ctx, definition).await?;
        Ok(Action::Done)
    }

    async fn cleanup(
        &self,
        definition: &mut Object<WorkloadDefinition>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let api = ctx.api::<WorkloadResourceDefinition>();
        for record in owned(ctx, definition).await?.values() {
            remove(&api, record).await?;
        }
        Ok(Action::Done)
    }
}
