//! What `get` and `describe` print: tables an operator reads, or the objects as JSON/YAML.

use std::collections::HashMap;

use clap::ValueEnum;
use serde_json::Value;
use threeport_api::Client;
use threeport_core::object::RawObject;
use threeport_core::{ObjectId, Timestamp};

use crate::error::CliError;

/// Output format of `get` and `describe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Columns for people.
    Table,
    /// The objects as JSON.
    Json,
    /// The objects as YAML.
    Yaml,
}

/// `5s`, `3m`, `2h`, `4d`: how long ago `at` was.
pub fn age(at: Timestamp) -> String {
    let seconds = (chrono::Utc::now() - at).num_seconds().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Prints `rows` under `header`, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Sealed values (`sealed:v1:…`) shown as `<sealed>`, anywhere in `value`.
pub fn redact(value: &mut Value) {
    match value {
        Value::String(text) if text.starts_with("sealed:") => *text = "<sealed>".to_owned(),
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::Object(fields) => fields.values_mut().for_each(redact),
        _ => {}
    }
}

/// An enum value as the API spells it (`creation_failed`, `True`, `Warning`).
pub fn wire_name(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn state(object: &RawObject) -> String {
    wire_name(&object.status.state)
}

/// The health a status reports (`healthy`, …), if it reports one.
fn health(object: &RawObject) -> String {
    let health = &object.status.details["health"];
    health
        .as_str()
        .or_else(|| health["status"].as_str())
        .unwrap_or("-")
        .to_owned()
}

/// Names of objects by id, fetched once each.
pub struct Names<'a> {
    client: &'a Client,
    known: HashMap<ObjectId, String>,
}

impl<'a> Names<'a> {
    /// Names through `client`.
    pub fn new(client: &'a Client) -> Self {
        Names {
            client,
            known: HashMap::new(),
        }
    }

    /// The name of `kind` object `id` (its id if it cannot be read).
    pub async fn of(&mut self, kind: &str, id: ObjectId) -> String {
        if let Some(name) = self.known.get(&id) {
            return name.clone();
        }
        let name = match self.client.kind(kind).get::<RawObject>(id).await {
            Ok(object) => object.meta.name,
            Err(_) => id.to_string(),
        };
        self.known.insert(id, name.clone());
        name
    }

    /// The name of the object `object` references through `field`, or `-`.
    async fn referenced(&mut self, object: &RawObject, field: &str) -> String {
        match object.meta.references.iter().find(|r| r.field == field) {
            Some(reference) => self.of(&reference.kind.clone(), reference.id).await,
            None => "-".to_owned(),
        }
    }
}

/// `objects` in `format`; tables show definition and runtime for kinds that have them.
pub async fn print_list(
    client: &Client,
    objects: &[RawObject],
    format: Format,
) -> Result<String, CliError> {
    match format {
        Format::Json | Format::Yaml => {
            let mut value =
                serde_json::to_value(objects).map_err(|e| CliError::new(e.to_string()))?;
            redact(&mut value);
            Ok(encode(&value, format))
        }
        Format::Table => {
            let has = |field: &str| {
                objects
                    .iter()
                    .any(|o| o.meta.references.iter().any(|r| r.field == field))
            };
            let (definition, runtime) = (has("definition"), has("runtime"));
            let mut header = vec!["NAME"];
            if definition {
                header.push("DEFINITION");
            }
            if runtime {
                header.push("RUNTIME");
            }
            header.extend(["STATE", "HEALTH", "AGE"]);
            let mut names = Names::new(client);
            let mut rows = Vec::with_capacity(objects.len());
            for object in objects {
                let mut row = vec![object.meta.name.clone()];
                if definition {
                    row.push(names.referenced(object, "definition").await);
                }
                if runtime {
                    row.push(names.referenced(object, "runtime").await);
                }
                row.extend([state(object), health(object), age(object.meta.created_at)]);
                rows.push(row);
            }
            Ok(table(&header, &rows))
        }
    }
}

/// `value` as JSON or YAML text.
pub fn encode(value: &Value, format: Format) -> String {
    match format {
        Format::Yaml => serde_yaml::to_string(value).unwrap_or_default(),
        _ => format!(
            "{}\n",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// What `describe` prints for one object: its envelope, spec (sealed fields redacted), status,
/// conditions and events (the latest, oldest first, as its controllers recorded them).
pub async fn describe(client: &Client, object: &RawObject) -> String {
    let meta = &object.meta;
    let status = &object.status;
    let mut out = format!("{}/{}\n", meta.kind, meta.name);
    let mut fields = vec![
        ("id", meta.id.to_string()),
        (
            "created",
            format!(
                "{} ({} ago)",
                meta.created_at.to_rfc3339(),
                age(meta.created_at)
            ),
        ),
        (
            "state",
            format!(
                "{} (generation {}, observed {})",
                state(object),
                meta.generation,
                status.observed_generation
            ),
        ),
    ];
    if let Some(reason) = &status.reason {
        fields.push(("reason", reason.clone()));
    }
    if health(object) != "-" {
        let reason = status.details["health"]["reason"]
            .as_str()
            .unwrap_or_default();
        let shown = if reason.is_empty() {
            health(object)
        } else {
            format!("{} ({reason})", health(object))
        };
        fields.push(("health", shown));
    }
    if let Some(at) = meta.deletion_scheduled_at {
        fields.push(("deleting", format!("since {} ago", age(at))));
    }
    if !meta.labels.is_empty() {
        let labels: Vec<String> = meta
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        fields.push(("labels", labels.join(",")));
    }
    let mut names = Names::new(client);
    if !meta.owners.is_empty() {
        let mut owners = Vec::new();
        for owner in &meta.owners {
            owners.push(format!(
                "{}/{}",
                owner.kind,
                names.of(&owner.kind, owner.id).await
            ));
        }
        fields.push(("owners", owners.join(", ")));
    }
    for reference in &meta.references {
        let name = names.of(&reference.kind, reference.id).await;
        fields.push((
            "references",
            format!("{} → {}/{name}", reference.field, reference.kind),
        ));
    }
    for (key, value) in fields {
        out.push_str(&format!("  {:<11} {value}\n", format!("{key}:")));
    }
    let mut spec = object.spec.clone();
    redact(&mut spec);
    out.push_str("Spec:\n");
    out.push_str(&indent(&encode(&spec, Format::Yaml)));
    if !status.details.is_null() && status.details != Value::Object(Default::default()) {
        let mut details = status.details.clone();
        redact(&mut details);
        out.push_str("Status:\n");
        out.push_str(&indent(&encode(&details, Format::Yaml)));
    }
    if let Some(resources) = status.details["resources"].as_array()
        && resources.iter().any(|r| r["kind"].is_string())
    {
        // What a workload put on its cluster, and how each is doing there.
        let rows: Vec<Vec<String>> = resources
            .iter()
            .map(|r| {
                let name = r["name"].as_str().unwrap_or_default();
                let at = match r["namespace"].as_str() {
                    Some(namespace) => format!("{namespace}/{name}"),
                    None => name.to_owned(),
                };
                let health = &r["health"];
                vec![
                    r["kind"].as_str().unwrap_or_default().to_owned(),
                    at,
                    health["status"].as_str().unwrap_or("-").to_owned(),
                    health["reason"].as_str().unwrap_or_default().to_owned(),
                ]
            })
            .collect();
        out.push_str("Resources:\n");
        out.push_str(&indent(&table(
            &["KIND", "NAME", "HEALTH", "REASON"],
            &rows,
        )));
    }
    if let Some(changes) = status.details["plan"]["changes"].as_array() {
        // A Terraform plan: what applying it changes, and whether it waits for approval.
        let plan = &status.details["plan"];
        let verdict = if plan["applied"] == true {
            "applied"
        } else if plan["awaiting_approval"] == true {
            "awaiting approval (tptctl approve terraform-instance …)"
        } else {
            "planned"
        };
        out.push_str(&format!(
            "Plan: {} ({verdict}): {} to add, {} to change, {} to destroy\n",
            plan["id"].as_str().unwrap_or_default(),
            plan["add"],
            plan["change"],
            plan["destroy"]
        ));
        let rows: Vec<Vec<String>> = changes
            .iter()
            .map(|c| {
                vec![
                    c["action"].as_str().unwrap_or_default().to_owned(),
                    c["address"].as_str().unwrap_or_default().to_owned(),
                ]
            })
            .collect();
        if !rows.is_empty() {
            out.push_str(&indent(&table(&["ACTION", "ADDRESS"], &rows)));
        }
    }
    if let Some(outputs) = status.details["outputs"].as_object()
        && object.meta.kind == "TerraformInstance"
    {
        let rows: Vec<Vec<String>> = outputs
            .iter()
            .map(|(name, output)| {
                let value = if output["sensitive"] == true {
                    "(sensitive)".to_owned()
                } else {
                    output["value"].to_string()
                };
                vec![name.clone(), value]
            })
            .collect();
        out.push_str("Outputs:\n");
        out.push_str(&indent(&table(&["NAME", "VALUE"], &rows)));
    }
    if !status.conditions.is_empty() {
        let rows: Vec<Vec<String>> = status
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    wire_name(&c.status),
                    c.reason.clone(),
                    c.message.clone(),
                    age(c.last_transition_time),
                ]
            })
            .collect();
        out.push_str("Conditions:\n");
        out.push_str(&indent(&table(
            &["TYPE", "STATUS", "REASON", "MESSAGE", "AGE"],
            &rows,
        )));
    }
    let rows: Vec<Vec<String>> = status
        .events
        .iter()
        .map(|e| {
            vec![
                wire_name(&e.type_),
                e.reason.clone(),
                e.about.clone().unwrap_or_else(|| "-".to_owned()),
                e.message.clone(),
                e.count.to_string(),
                age(e.last_seen),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("Events: none\n");
    } else {
        out.push_str("Events:\n");
        out.push_str(&indent(&table(
            &["TYPE", "REASON", "OBJECT", "MESSAGE", "COUNT", "AGE"],
            &rows,
        )));
    }
    out
}
