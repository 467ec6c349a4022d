//! Kinds of one's own (registered by a `KindDefinition`): a config file whose top-level key is
//! the kind, with `Name`, optional `Labels`, and the spec's fields as the kind's schema names
//! them. `create`, `apply`, `get`, `describe` and `delete` take them by the kind's name in kebab
//! case (`certificate`) or its plural. `KindDefinition` itself goes the same way: its config's
//! fields are the definition's (`kind`, `plural`, `schema`, `references`, `sealed_fields`,
//! `secret_field`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use threeport_api::{Client, ListParams, RawResource, kebab_case, plural_path};
use threeport_core::object::RawObject;

use crate::error::CliError;

/// A kind a `KindDefinition` registers.
#[derive(Debug, Clone)]
pub struct CustomKind {
    /// Its name (`Certificate`).
    pub kind: String,
    /// Where it is served (`certificates`).
    pub plural: String,
}

impl CustomKind {
    /// Its objects.
    pub fn resource(&self, client: &Client) -> RawResource {
        client.kind_at(&self.kind, &self.plural)
    }
}

/// The registered kind `word` names (`certificate`, `certificates`, `Certificate`), if any;
/// `KindDefinition` (`kind-definition`, `kind-definitions`) itself too.
pub async fn find(client: &Client, word: &str) -> Result<Option<CustomKind>, CliError> {
    const DEFINITION: &str = "KindDefinition";
    if word == DEFINITION || kebab_case(DEFINITION) == word || plural_path(DEFINITION) == word {
        return Ok(Some(CustomKind {
            kind: DEFINITION.to_owned(),
            plural: plural_path(DEFINITION),
        }));
    }
    let definitions: Vec<RawObject> = client
        .kind("KindDefinition")
        .list_all(&ListParams::default())
        .await?;
    for definition in definitions {
        let kind = definition.spec["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let plural = definition.spec["plural"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| plural_path(&kind));
        if kind == word || kebab_case(&kind) == word || plural == word {
            return Ok(Some(CustomKind { kind, plural }));
        }
    }
    Ok(None)
}

/// An object of a custom kind, as a config file gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomConfig {
    /// `Name`.
    pub name: String,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// Every other field, as given.
    pub spec: Value,
}

/// Reads the config of a `kind` object at `path`.
pub fn read(path: &Path, kind: &CustomKind) -> Result<CustomConfig, CliError> {
    let at = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::new(format!("cannot read {at}: {e}")))?;
    let value: serde_yaml::Value = serde_yaml::from_str(&text)
        .map_err(|e| CliError::new(format!("{at}: not valid YAML: {e}")))?;
    let value: Value = serde_json::to_value(value)
        .map_err(|e| CliError::new(format!("{at}: not a config: {e}")))?;
    let Some(top) = value.as_object().filter(|top| top.len() == 1) else {
        return Err(CliError::new(format!(
            "{at}: a config holds one object under one key ({}:)",
            kind.kind
        )));
    };
    let Some(Value::Object(body)) = top.get(&kind.kind) else {
        let found = top.keys().next().cloned().unwrap_or_default();
        return Err(CliError::usage(format!(
            "{at} holds a {found}, not a {}",
            kind.kind
        )));
    };
    let mut spec = body.clone();
    let name = match spec.remove("Name") {
        Some(Value::String(name)) => name,
        _ => {
            return Err(CliError::new(format!(
                "{at}: {}.Name: a name is required",
                kind.kind
            )));
        }
    };
    let labels = match spec.remove("Labels") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(labels) => serde_json::from_value(labels).map_err(|_| {
            CliError::new(format!(
                "{at}: {}.Labels: must map names to strings",
                kind.kind
            ))
        })?,
    };
    Ok(CustomConfig {
        name,
        labels,
        spec: Value::Object(spec),
    })
}

/// What writing a config did.
pub enum Written {
    /// Made now.
    Created(RawObject),
    /// Changed.
    Updated(RawObject),
    /// Already as the config says.
    Unchanged(RawObject),
}

/// Creates the object of `config` (`apply`: or makes the existing one what it says).
pub async fn write(
    client: &Client,
    kind: &CustomKind,
    config: &CustomConfig,
    apply: bool,
) -> Result<Written, CliError> {
    let objects = kind.resource(client);
    let params = ListParams {
        name: Some(config.name.clone()),
        ..ListParams::default()
    };
    let existing: Vec<RawObject> = objects.list_all(&params).await?;
    let Some(existing) = existing.into_iter().next() else {
        let created = objects
            .create(&config.name, &config.labels, &config.spec)
            .await?;
        return Ok(Written::Created(created));
    };
    if !apply {
        return Err(CliError::new(format!(
            "{}/{} exists already: use `tptctl apply` to change it",
            kind.kind, config.name
        )));
    }
    if existing.spec == config.spec && existing.meta.labels == config.labels {
        return Ok(Written::Unchanged(existing));
    }
    let updated = objects
        .replace(
            existing.meta.id,
            existing.meta.version,
            &config.labels,
            &config.spec,
        )
        .await?;
    Ok(Written::Updated(updated))
}

/// The object of `kind` named `name`.
pub async fn named(client: &Client, kind: &CustomKind, name: &str) -> Result<RawObject, CliError> {
    let params = ListParams {
        name: Some(name.to_owned()),
        ..ListParams::default()
    };
    let found: Vec<RawObject> = kind.resource(client).list_all(&params).await?;
    found
        .into_iter()
        .next()
        .ok_or_else(|| CliError::new(format!("no {} named {name:?}", kebab_case(&kind.kind))))
}
