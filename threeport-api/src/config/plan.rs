//! Turning an [`Expansion`] into API calls: ids for the parts, names resolved to ids, then one
//! batch create (all or nothing, server-side) and, for `apply`, replaces of the parts that
//! exist and changed.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::Value;
use threeport_core::object::{Labels, RawObject};
use threeport_core::{ObjectId, ObjectRef};

use crate::{BatchObject, Client, ClientError, ListParams};

use crate::config::ConfigError;
use crate::config::{Expansion, Target};

/// Where a config's objects are looked up and written: the API over HTTP ([`Client`]), or the
/// API server's own handlers (its `/v0/configs`).
#[async_trait]
pub trait Objects: Send + Sync {
    /// The object of `kind` named `name`, if there is one.
    async fn named(&self, kind: &str, name: &str) -> Result<Option<RawObject>, ConfigError>;
    /// Every object of `kind`.
    async fn all(&self, kind: &str) -> Result<Vec<RawObject>, ConfigError>;
    /// The object `kind`/`id`.
    async fn get(&self, kind: &str, id: ObjectId) -> Result<RawObject, ConfigError>;
    /// Creates `objects` in one transaction, all or none (`POST /v0/batch`); errors name an
    /// object by its index (`objects[1].spec.location`).
    async fn create_batch(&self, objects: &[BatchObject]) -> Result<Vec<RawObject>, ConfigError>;
    /// Replaces `current`'s labels and spec if it is still at its version; `None` if it moved
    /// on (a version conflict).
    async fn replace(
        &self,
        current: &RawObject,
        labels: &Labels,
        spec: &Value,
    ) -> Result<Option<RawObject>, ConfigError>;
}

#[async_trait]
impl Objects for Client {
    async fn named(&self, kind: &str, name: &str) -> Result<Option<RawObject>, ConfigError> {
        let params = ListParams {
            name: Some(name.to_owned()),
            ..ListParams::default()
        };
        let (mut items, _) = self.kind(kind).list::<RawObject>(&params).await?;
        Ok(items.pop())
    }

    async fn all(&self, kind: &str) -> Result<Vec<RawObject>, ConfigError> {
        Ok(self.kind(kind).list_all(&ListParams::default()).await?)
    }

    async fn get(&self, kind: &str, id: ObjectId) -> Result<RawObject, ConfigError> {
        Ok(self.kind(kind).get(id).await?)
    }

    async fn create_batch(&self, objects: &[BatchObject]) -> Result<Vec<RawObject>, ConfigError> {
        Ok(Client::create_batch(self, objects).await?)
    }

    async fn replace(
        &self,
        current: &RawObject,
        labels: &Labels,
        spec: &Value,
    ) -> Result<Option<RawObject>, ConfigError> {
        match self
            .kind(&current.meta.kind)
            .replace::<RawObject>(current.meta.id, current.meta.version, labels, spec)
            .await
        {
            Ok(updated) => Ok(Some(updated)),
            Err(ClientError::Conflict { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

/// Finds objects by name, asking once per (kind, name).
pub struct Lookup<'a> {
    objects: &'a dyn Objects,
    found: HashMap<(String, String), Option<RawObject>>,
    flagged: HashMap<(String, String), Option<ObjectId>>,
}

impl<'a> Lookup<'a> {
    /// A lookup through `objects`.
    pub fn new(objects: &'a dyn Objects) -> Self {
        Lookup {
            objects,
            found: HashMap::new(),
            flagged: HashMap::new(),
        }
    }

    /// The object of `kind` named `name`, if there is one.
    pub async fn find(&mut self, kind: &str, name: &str) -> Result<Option<RawObject>, ConfigError> {
        let key = (kind.to_owned(), name.to_owned());
        if let Some(found) = self.found.get(&key) {
            return Ok(found.clone());
        }
        let found = self.objects.named(kind, name).await?;
        self.found.insert(key, found.clone());
        Ok(found)
    }

    /// The object of `kind` named `name`; an error naming `field` if there is none.
    pub async fn require(
        &mut self,
        kind: &str,
        name: &str,
        field: &str,
    ) -> Result<RawObject, ConfigError> {
        self.find(kind, name)
            .await?
            .ok_or_else(|| ConfigError::new(format!("{field}: no {kind} named {name:?}")))
    }

    /// The first object of `kind` whose spec has `flag: true` (the default account or runtime),
    /// looked for once per lookup however many parts fall back on it.
    async fn flagged(
        &mut self,
        kind: &str,
        flag: &str,
        field: &str,
    ) -> Result<ObjectId, ConfigError> {
        let key = (kind.to_owned(), flag.to_owned());
        if !self.flagged.contains_key(&key) {
            let all = self.objects.all(kind).await?;
            let found = all
                .into_iter()
                .find(|o| o.spec[flag] == Value::Bool(true))
                .map(|o| o.meta.id);
            self.flagged.insert(key.clone(), found);
        }
        self.flagged[&key].ok_or_else(|| {
            ConfigError::new(format!(
                "{field}: none given, and no {kind} has {flag}: true"
            ))
        })
    }
}

/// A part with its id decided and its links filled in.
pub struct Resolved {
    /// What to create.
    pub object: BatchObject,
    /// The object as it exists, if it does (apply).
    pub existing: Option<RawObject>,
}

/// Gives every part an id (the existing object's, with `reuse`, else a new one) and fills in
/// its links.
pub async fn resolve(
    expansion: &Expansion,
    lookup: &mut Lookup<'_>,
    reuse: bool,
) -> Result<Vec<Resolved>, ConfigError> {
    let mut existing = Vec::with_capacity(expansion.parts.len());
    for part in &expansion.parts {
        existing.push(if reuse {
            lookup.find(part.kind, &part.name).await?
        } else {
            None
        });
    }
    let ids: Vec<ObjectId> = existing
        .iter()
        .map(|e| e.as_ref().map(|o| o.meta.id).unwrap_or_else(ObjectId::new))
        .collect();
    let mut resolved = Vec::with_capacity(expansion.parts.len());
    for ((part, existing), id) in expansion.parts.iter().zip(existing).zip(&ids) {
        let mut spec = part.spec.clone();
        for link in &part.links {
            let id = match &link.target {
                Target::Part(index) => ids[*index],
                Target::Named { kind, name } => {
                    lookup
                        .require(kind, name, &link.config_field)
                        .await?
                        .meta
                        .id
                }
                Target::DefaultAccount => {
                    lookup
                        .flagged("AwsAccount", "default_account", &link.config_field)
                        .await?
                }
                Target::DefaultRuntime => {
                    lookup
                        .flagged(
                            "KubernetesRuntimeInstance",
                            "default_runtime",
                            &link.config_field,
                        )
                        .await?
                }
            };
            spec.insert(link.field.to_owned(), Value::String(id.to_string()));
        }
        resolved.push(Resolved {
            object: BatchObject {
                kind: part.kind.to_owned(),
                id: Some(*id),
                name: part.name.clone(),
                labels: part.labels.clone(),
                owners: part
                    .owner
                    .map(|owner| ObjectRef::new(expansion.parts[owner].kind, ids[owner]))
                    .into_iter()
                    .collect(),
                spec: Value::Object(spec),
            },
            existing,
        });
    }
    Ok(resolved)
}

/// Whether every field `wanted` sets has that value in `current` (which also holds the
/// server's defaults).
fn unchanged(wanted: &Value, current: &Value) -> bool {
    match (wanted, current) {
        (Value::Object(wanted), Value::Object(current)) => wanted
            .iter()
            .all(|(key, value)| current.get(key).is_some_and(|c| unchanged(value, c))),
        // Items the server filled defaults into (a gateway's ports) compare item by item.
        (Value::Array(wanted), Value::Array(current)) => {
            wanted.len() == current.len()
                && wanted.iter().zip(current).all(|(w, c)| unchanged(w, c))
        }
        (wanted, current) => wanted == current,
    }
}

/// What a create or apply did to each part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Created.
    Created,
    /// Replaced with the new spec.
    Updated,
    /// Already as asked.
    Unchanged,
}

/// Creates every part in one batch; with `apply`, parts that exist are replaced if they
/// differ instead. Returns each part's object and what happened to it.
pub async fn execute(
    objects: &dyn Objects,
    parts: Vec<Resolved>,
    secret_notes: &mut Vec<String>,
) -> Result<Vec<(RawObject, Outcome)>, ConfigError> {
    let new: Vec<BatchObject> = parts
        .iter()
        .filter(|p| p.existing.is_none())
        .map(|p| p.object.clone())
        .collect();
    let mut created = if new.is_empty() {
        Vec::new()
    } else {
        objects
            .create_batch(&new)
            .await
            .map_err(|e| batch_error(e, &new))?
    }
    .into_iter();
    let mut done = Vec::with_capacity(parts.len());
    for part in parts {
        match part.existing {
            None => done.push((created.next().expect("one per new part"), Outcome::Created)),
            Some(current) => {
                let mut spec = part.object.spec.clone();
                if let Some(data) = spec.as_object_mut().and_then(|s| s.remove("data"))
                    && part.object.kind == "SecretDefinition"
                    && !data.is_null()
                {
                    secret_notes.push(format!(
                        "SecretDefinition/{}: its values are not changed by apply (they are \
                         never stored by threeport): delete and create it to change them",
                        part.object.name
                    ));
                }
                let label = format!("{}/{}", part.object.kind, part.object.name);
                done.push(
                    replace(objects, current, &part.object.labels, &spec)
                        .await
                        .map_err(|e| e.context(label))?,
                );
            }
        }
    }
    Ok(done)
}

/// Replaces `current`'s spec and labels unless they are already so. Its controller writes
/// status too (each write moves the version `If-Match` compares): on a conflict, read it again
/// and retry, a few times.
async fn replace(
    objects: &dyn Objects,
    mut current: RawObject,
    labels: &Labels,
    spec: &Value,
) -> Result<(RawObject, Outcome), ConfigError> {
    for _ in 0..5 {
        if unchanged(spec, &current.spec) && *labels == current.meta.labels {
            return Ok((current, Outcome::Unchanged));
        }
        match objects.replace(&current, labels, spec).await? {
            Some(updated) => return Ok((updated, Outcome::Updated)),
            None => current = objects.get(&current.meta.kind, current.meta.id).await?,
        }
    }
    Err(ConfigError::new(
        "it kept changing while being replaced (5 conflicts in a row): try again",
    ))
}

/// What `tptctl create` (`apply: false`) and `apply` do with a config's expansion: resolve
/// its links; for a create, refuse if its first part exists already; then [`execute`].
/// Returns each part's object and outcome, and notes for the user.
pub async fn write(
    objects: &dyn Objects,
    expansion: &Expansion,
    apply: bool,
) -> Result<(Vec<(RawObject, Outcome)>, Vec<String>), ConfigError> {
    let mut lookup = Lookup::new(objects);
    let resolved = resolve(expansion, &mut lookup, apply).await?;
    if !apply
        && let Some(first) = expansion.parts.first()
        && let Some(existing) = lookup.find(first.kind, &first.name).await?
    {
        return Err(ConfigError::new(format!(
            "{}/{} exists already: apply the config to change it",
            existing.meta.kind, existing.meta.name
        ))
        .of_kind(threeport_core::ErrorKind::AlreadyExists));
    }
    let mut notes = expansion.notes.clone();
    let done = execute(objects, resolved, &mut notes).await?;
    Ok((done, notes))
}

/// A batch error, with `objects[i]` replaced by the object's kind and name.
fn batch_error(err: ConfigError, objects: &[BatchObject]) -> ConfigError {
    let mut message = err.message.clone();
    if let Some(start) = message.find("objects[")
        && let Some(len) = message[start..].find(']')
        && let Ok(index) = message[start + 8..start + len].parse::<usize>()
        && let Some(object) = objects.get(index)
    {
        message.replace_range(
            start..start + len + 1,
            &format!("{}/{}", object.kind, object.name),
        );
    }
    let mut error = ConfigError::new(message);
    error.causes = err.causes;
    error.kind = err.kind;
    error
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::ConfigFile;
    use serde_json::json;

    /// Objects in a vector: what a create or apply reads and writes.
    #[derive(Default)]
    struct Stored {
        stored: Mutex<Vec<RawObject>>,
    }

    fn raw(kind: &str, id: ObjectId, name: &str, spec: Value) -> RawObject {
        serde_json::from_value(json!({
            "id": id, "kind": kind, "name": name, "version": 1, "generation": 1,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "spec": spec, "status": {}
        }))
        .unwrap()
    }

    #[async_trait]
    impl Objects for Stored {
        async fn named(&self, kind: &str, name: &str) -> Result<Option<RawObject>, ConfigError> {
            let stored = self.stored.lock().unwrap();
            Ok(stored
                .iter()
                .find(|o| o.meta.kind == kind && o.meta.name == name)
                .cloned())
        }
        async fn all(&self, kind: &str) -> Result<Vec<RawObject>, ConfigError> {
            let stored = self.stored.lock().unwrap();
            Ok(stored
                .iter()
                .filter(|o| o.meta.kind == kind)
                .cloned()
                .collect())
        }
        async fn get(&self, kind: &str, id: ObjectId) -> Result<RawObject, ConfigError> {
            let stored = self.stored.lock().unwrap();
            let found = stored
                .iter()
                .find(|o| o.meta.kind == kind && o.meta.id == id);
            found.cloned().ok_or_else(|| ConfigError::new("not found"))
        }
        async fn create_batch(
            &self,
            objects: &[BatchObject],
        ) -> Result<Vec<RawObject>, ConfigError> {
            let made: Vec<RawObject> = objects
                .iter()
                .map(|o| raw(&o.kind, o.id.unwrap(), &o.name, o.spec.clone()))
                .collect();
            self.stored.lock().unwrap().extend(made.clone());
            Ok(made)
        }
        async fn replace(
            &self,
            current: &RawObject,
            _labels: &Labels,
            spec: &Value,
        ) -> Result<Option<RawObject>, ConfigError> {
            let mut stored = self.stored.lock().unwrap();
            let at = stored
                .iter_mut()
                .find(|o| o.meta.id == current.meta.id)
                .unwrap();
            at.spec = spec.clone();
            at.meta.version += 1;
            Ok(Some(at.clone()))
        }
    }

    #[tokio::test]
    async fn a_create_finds_what_exists_and_an_apply_changes_it() {
        let objects = Stored::default();
        let text = |yaml: &str| {
            let config = format!("WorkloadDefinition:\n  Name: web\n  YAML: \"{yaml}\"\n");
            ConfigFile::from_text("config", config)
                .unwrap()
                .expand()
                .unwrap()
        };
        let (done, _) = write(&objects, &text("a: 1"), false).await.unwrap();
        assert_eq!(done[0].1, Outcome::Created);
        let err = write(&objects, &text("a: 1"), false).await.err().unwrap();
        assert_eq!(err.kind, Some(threeport_core::ErrorKind::AlreadyExists));
        assert!(
            err.message
                .contains("WorkloadDefinition/web exists already"),
            "{err}"
        );
        let (done, _) = write(&objects, &text("a: 1"), true).await.unwrap();
        assert_eq!(done[0].1, Outcome::Unchanged);
        let (done, _) = write(&objects, &text("a: 2"), true).await.unwrap();
        assert_eq!(done[0].1, Outcome::Updated);
        assert_eq!(done[0].0.spec["yaml_document"], "a: 2");
    }

    #[test]
    fn unchanged_ignores_what_the_server_added() {
        let current = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": "default"});
        assert!(unchanged(&json!({"a": 1, "b": {"c": 2}}), &current));
        assert!(!unchanged(&json!({"a": 2}), &current));
        assert!(!unchanged(&json!({"x": 1}), &current));
        let ports = json!({"ports": [{"port": 443, "service_port": null, "tls": false}]});
        assert!(unchanged(&json!({"ports": [{"port": 443}]}), &ports));
        assert!(!unchanged(&json!({"ports": [{"port": 80}]}), &ports));
        assert!(!unchanged(&json!({"ports": []}), &ports));
    }
}
