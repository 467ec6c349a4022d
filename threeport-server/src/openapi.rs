//! The OpenAPI 3.1 document of the API (`/openapi.json`) and a docs page (`/docs`), generated
//! from the kind registry: every kind's routes, with its spec schema from the Rust type
//! (`#[derive(utoipa::ToSchema)]`).

use std::sync::Arc;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::KindRegistry;

/// `/openapi.json` and `/docs` for `kinds`.
pub fn routes(kinds: &KindRegistry) -> Router {
    let document = Arc::new(document(kinds));
    let page = Html(docs_page(kinds));
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { axum::Json((*document).clone()) }
            }),
        )
        .route("/docs", get(move || async move { page.clone() }))
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_content(schema: Value) -> Value {
    json!({ "content": { "application/json": { "schema": schema } } })
}

fn error_responses(codes: &[&str]) -> Map<String, Value> {
    let describe = |code: &str| match code {
        "400" => "invalid input; `field` names it",
        "401" => "no valid credentials",
        "404" => "no such object",
        "409" => "version mismatch, name taken, or still referenced",
        _ => "error",
    };
    codes
        .iter()
        .map(|code| {
            let mut response = json_content(reference("Error"));
            response["description"] = json!(describe(code));
            ((*code).to_owned(), response)
        })
        .collect()
}

fn responses(ok: &str, description: &str, schema: Value, errors: &[&str]) -> Value {
    let mut all = error_responses(errors);
    let mut response = json_content(schema);
    response["description"] = json!(description);
    all.insert(ok.to_owned(), response);
    Value::Object(all)
}

fn if_match() -> Value {
    json!({"name": "If-Match", "in": "header", "required": false,
           "description": "expected object version; 409 if it is not the stored one",
           "schema": {"type": "string"}})
}

/// The OpenAPI document for `kinds`.
pub fn document(kinds: &KindRegistry) -> Value {
    let mut schemas: Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)> = Vec::new();
    let mut paths = Map::new();
    let mut components = Map::new();
    components.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string", "enum": ["not_found", "already_exists", "conflict", "invalid", "unavailable", "unauthorized", "internal"]},
            "message": {"type": "string"},
            "field": {"type": "string", "description": "the offending field, for `invalid`"}}}),
    );
    components.insert(
        "Envelope".into(),
        json!({"type": "object", "description": "What every object has besides its spec",
               "properties": {
            "id": {"type": "string", "format": "uuid"}, "kind": {"type": "string"},
            "name": {"type": "string"}, "version": {"type": "integer", "minimum": 1},
            "generation": {"type": "integer"}, "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "deletion_scheduled_at": {"type": ["string", "null"], "format": "date-time"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "references": {"type": "array", "items": {"type": "object"}},
            "status": {"type": "object", "description": "lifecycle state, observed generation, conditions, events and the controller's details"}}}),
    );
    for entry in kinds.entries() {
        let kind = entry.kind;
        let spec = match entry.spec_schema(&mut schemas) {
            Some(name) => reference(&name),
            None => json!({"type": "object"}),
        };
        let object = format!("{kind}Object");
        components.insert(
            object.clone(),
            json!({"allOf": [reference("Envelope"), {"type": "object", "properties": {"spec": spec}}]}),
        );
        let mut create_spec = spec.clone();
        if let Some(field) = entry.secret_field {
            create_spec = json!({"allOf": [spec, {"type": "object", "properties": {field: {
                "type": "object", "additionalProperties": {"type": "string"},
                "description": "secret values: handed to the controller in memory, never stored"}}}]});
        }
        let create_body = json_content(json!({"type": "object", "required": ["name", "spec"],
            "additionalProperties": false, "properties": {
                "name": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "spec": create_spec}}));
        let replace_body = json_content(json!({"type": "object", "required": ["spec"],
            "additionalProperties": false, "properties": {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "spec": spec, "version": {"type": "integer"}}}));
        let patch_body = json!({"content": {"application/merge-patch+json": {"schema": {"type": "object"}},
                                            "application/json": {"schema": {"type": "object"}}}});
        let page = json!({"type": "object", "properties": {
            "items": {"type": "array", "items": reference(&object)},
            "next": {"type": ["string", "null"], "format": "uuid"}}});
        let query = |name: &str, description: &str| json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}});
        let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}});
        let collection = format!("/v0/{}", entry.plural);
        paths.insert(collection, json!({
            "post": {"tags": [kind], "summary": format!("Create a {kind}"), "requestBody": create_body,
                     "responses": responses("201", "created", reference(&object), &["400", "401", "409"])},
            "get": {"tags": [kind], "summary": format!("List {kind} objects"),
                    "parameters": [query("name", "exact name"), query("label", "key=value, repeatable"),
                                   query("ref", "field=id, repeatable"), query("after", "cursor: the previous page's next"),
                                   query("limit", "page size, 1-1000")],
                    "responses": responses("200", "a page", page, &["400", "401"])}
        }));
        paths.insert(format!("/v0/{}/{{id}}", entry.plural), json!({
            "parameters": [id],
            "get": {"tags": [kind], "summary": format!("Read a {kind}"),
                    "responses": responses("200", "the object", reference(&object), &["401", "404"])},
            "put": {"tags": [kind], "summary": format!("Replace a {kind}'s spec and labels"), "parameters": [if_match()],
                    "requestBody": replace_body, "responses": responses("200", "replaced", reference(&object), &["400", "401", "404", "409"])},
            "patch": {"tags": [kind], "summary": format!("Merge-patch a {kind} (RFC 7396)"), "parameters": [if_match()],
                      "requestBody": patch_body, "responses": responses("200", "patched", reference(&object), &["400", "401", "404", "409"])},
            "delete": {"tags": [kind], "summary": format!("Schedule a {kind}'s deletion"), "parameters": [if_match()],
                       "responses": responses("202", "deletion scheduled", reference(&object), &["401", "404", "409"])}
        }));
    }
    paths.insert("/v0/workloads".into(), json!({"post": {
        "tags": ["Workload"], "summary": "Create a workload with its database, bucket, domain name, gateway and secret in one transaction",
        "requestBody": json_content(json!({"type": "object", "required": ["name", "definition"], "properties": {
            "name": {"type": "string"}, "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "definition": {"type": "object"}, "instance": {"type": "object"}, "database": {"type": "object"},
            "bucket": {"type": "object"}, "domain_name": {"type": "object"}, "gateway": {"type": "object"},
            "secret": {"type": "object"}}})),
        "responses": responses("201", "the created objects by kind", json!({"type": "object"}), &["400", "401", "409"])}}));
    for (path, summary) in [
        ("/healthz", "The process serves"),
        ("/readyz", "The store and the bus answer"),
        ("/metrics", "Prometheus metrics"),
    ] {
        paths.insert(
            path.into(),
            json!({"get": {"tags": ["Operations"], "summary": summary, "security": [],
            "responses": {"200": {"description": "ok"}}}}),
        );
    }
    for (name, schema) in schemas {
        let mut schema = serde_json::to_value(schema).unwrap_or(Value::Null);
        plain_descriptions(&mut schema);
        components.insert(name, schema);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "threeport control plane", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Desired state of workloads and everything they depend on."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}]
    })
}

/// Descriptions come from Rust doc comments: their intra-doc links (``[`Kind`]``,
/// ``[`Kind`](path)``) become plain code spans, which mean something to readers outside Rust.
fn plain_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                match item {
                    Value::String(text) if key == "description" => *text = without_doc_links(text),
                    other => plain_descriptions(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(plain_descriptions),
        _ => {}
    }
}

/// ``[`X`]`` and ``[`X`](target)`` → `` `X` ``.
fn without_doc_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("[`") {
        let Some(len) = rest[start + 2..].find("`]") else {
            break;
        };
        let code = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        out.push('`');
        out.push_str(code);
        out.push('`');
        rest = &rest[start + 2 + len + 2..];
        if rest.starts_with('(')
            && let Some(close) = rest.find(')')
        {
            rest = &rest[close + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// A self-contained page listing every route (no scripts, nothing fetched from elsewhere).
fn docs_page(kinds: &KindRegistry) -> String {
    let mut rows = String::new();
    for entry in kinds.entries() {
        rows.push_str(&format!(
            "<tr><td>{}</td><td><code>/v0/{}</code></td><td>POST, GET</td><td><code>/v0/{}/{{id}}</code></td><td>GET, PUT, PATCH, DELETE</td></tr>\n",
            entry.kind, entry.plural, entry.plural
        ));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>threeport API</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}</style></head>\
         <body><h1>threeport control plane API</h1>\
         <p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1). \
         Authenticate with <code>Authorization: Bearer &lt;token&gt;</code>.</p>\
         <p><code>POST /v0/workloads</code> creates a workload with its services in one transaction.</p>\
         <table><tr><th>kind</th><th>collection</th><th></th><th>object</th><th></th></tr>\n{rows}</table></body></html>"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rust_doc_links_become_code_spans() {
        assert_eq!(
            super::without_doc_links(
                "A release of a [`HelmWorkloadDefinition`] (see [`LABEL`](crate::LABEL)), `x`."
            ),
            "A release of a `HelmWorkloadDefinition` (see `LABEL`), `x`."
        );
        assert_eq!(
            super::without_doc_links("no links [here]"),
            "no links [here]"
        );
    }
}
