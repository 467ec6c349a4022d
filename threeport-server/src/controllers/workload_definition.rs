//! The workload-definition controller: splits a definition's YAML stream into one
//! `WorkloadResourceDefinition` record per resource, keeps those records in step with the
//! manifests, and removes them when the definition goes.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;
use threeport_api::model::{
    WORKLOAD_DEFINITION_LABEL, WorkloadDefinition, WorkloadInstance, WorkloadResourceDefinition,
};
use threeport_core::object::{Labels, NewObject};
use threeport_core::store::ListQuery;
use threeport_core::{
    Action, Api, ApiObject, Context, ErrorKind, Object, ReconcileError, Reconciler,
};

use super::nudge::set_label;

/// Splits a YAML stream into resource manifests: empty documents are skipped, `List` kinds
/// expanded. A document that does not parse, or a resource without `apiVersion`, `kind` or
/// `metadata.name`, is an error naming the document's index (from 0) and the reason.
pub fn split_manifests(yaml: &str) -> Result<Vec<Value>, String> {
    let mut manifests = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(document)
            .map_err(|e| format!("document {index}: not valid YAML: {e}"))?;
        let value = serde_json::to_value(value)
            .map_err(|e| format!("document {index}: not representable as JSON: {e}"))?;
        match value {
            Value::Null => continue,
            Value::Object(_) => {}
            _ => return Err(format!("document {index}: not a mapping")),
        }
        let is_list = value["kind"].as_str().is_some_and(|k| k.ends_with("List"))
            && value["items"].is_array();
        let resources = if is_list {
            value["items"].as_array().cloned().unwrap_or_default()
        } else {
            vec![value]
        };
        for resource in resources {
            for (path, present) in [
                ("apiVersion", resource["apiVersion"].is_string()),
                ("kind", resource["kind"].is_string()),
                ("metadata.name", resource["metadata"]["name"].is_string()),
            ] {
                if !present {
                    return Err(format!("document {index}: a resource has no {path}"));
                }
            }
            manifests.push(resource);
        }
    }
    if manifests.is_empty() {
        return Err("the document defines no resources".to_owned());
    }
    Ok(manifests)
}

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

#[cfg(test)]
mod tests {
    use super::split_manifests;

    #[test]
    fn manifests_seen_in_the_wild_split() {
        let yaml = "# a comment\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: b}\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n";
        let manifests = split_manifests(yaml).unwrap();
        let kinds: Vec<&str> = manifests
            .iter()
            .map(|m| m["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["ConfigMap", "Secret", "Deployment"]);
    }

    #[test]
    fn bad_documents_are_named_by_index() {
        let err =
            split_manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\nkind: Pod\n")
                .unwrap_err();
        assert!(
            err.starts_with("document 1:") && err.contains("apiVersion"),
            "{err}"
        );
        let err = split_manifests("a: [\n").unwrap_err();
        assert!(err.starts_with("document 0: not valid YAML"), "{err}");
        assert!(split_manifests("# nothing\n").is_err());
    }
}
