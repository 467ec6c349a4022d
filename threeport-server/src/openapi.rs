//! The OpenAPI 3.1 document of the API (`/openapi.json`) and a docs page (`/docs`), generated
//! from the kind registry: every kind's routes, with its spec schema from the Rust type
//! (`#[derive(utoipa::ToSchema)]`).

use std::sync::Arc;

use axum::Router;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use serde_json::{Map, Value, json};

use threeport_core::object::{MAX_NAME_LEN, MAX_OWNERS};
use threeport_core::store::{MAX_FILTERS, MAX_PAGE_SIZE};

use threeport_core::Store;

use crate::KindRegistry;

/// `/openapi.json` and `/docs` for `kinds`, with the kinds of one's own registered in `store`
/// (as they are at each request).
pub fn routes(kinds: &KindRegistry, store: Arc<dyn Store>) -> Router {
    let built_in = Arc::new(document(kinds));
    let page = Html(docs_page(kinds));
    let kinds = kinds.clone();
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let (built_in, kinds, store) = (built_in.clone(), kinds.clone(), store.clone());
                async move {
                    match kinds.custom_entries(&store).await {
                        Ok(custom) if !custom.is_empty() => {
                            axum::Json(document_with(&kinds, &custom)).into_response()
                        }
                        Ok(_) => axum::Json((*built_in).clone()).into_response(),
                        Err(err) => crate::rest::ApiError(err).into_response(),
                    }
                }
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

/// A required JSON request body.
fn json_body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

/// What the API accepts as an object id: a UUID, hyphenated.
const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Characters no name or label key may have: Rust's whitespace and control characters (what
/// `validate_name` refuses), as a regular expression character class body.
const NOT_IN_NAMES: &str =
    "\u{0}-\u{20}\u{7f}-\u{a0}\u{1680}\u{2000}-\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}";
/// Control characters, which no label value may have.
const CONTROL: &str = "\u{0}-\u{1f}\u{7f}-\u{9f}";

fn uuid_schema() -> Value {
    json!({"type": "string", "format": "uuid", "pattern": UUID_PATTERN})
}

/// A name or label key: 1 to `MAX_NAME_LEN` characters, no whitespace or control characters.
fn name_schema() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_NAME_LEN,
           "pattern": format!("^[^{NOT_IN_NAMES}]+$")})
}

fn labels_schema() -> Value {
    json!({"type": "object", "propertyNames": name_schema(),
           "additionalProperties": {"type": "string", "maxLength": MAX_NAME_LEN,
                                    "pattern": format!("^[^{CONTROL}]*$")}})
}

/// The error statuses the API answers, what they mean, and their body.
fn error_response(code: u16) -> Value {
    let description = match code {
        400 => "invalid input; `field` names it (a spec field, a query parameter, a header)",
        401 => "no valid credentials",
        404 => "no such object",
        409 => "version mismatch, name taken, still referenced, or being deleted",
        413 => "the body is larger than 2 MiB",
        503 => "a backend (database, bus) is unavailable: retry after the `Retry-After` seconds",
        _ => "error",
    };
    if code == 413 {
        return json!({"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}});
    }
    let mut response = json_content(reference("Error"));
    response["description"] = json!(description);
    if code == 503 {
        response["headers"] = json!({"Retry-After": {"description": "seconds to wait",
                                                      "schema": {"type": "string"}}});
    }
    response
}

/// A success answer and the operation's error answers.
fn responses(ok: u16, description: &str, schema: Value, errors: &[u16], etag: bool) -> Value {
    let mut all: Map<String, Value> = errors
        .iter()
        .map(|code| (code.to_string(), error_response(*code)))
        .collect();
    let mut response = json_content(schema);
    response["description"] = json!(description);
    if etag {
        response["headers"] = json!({"ETag": {"description": "the object's version, quoted",
                                              "schema": {"type": "string"}}});
    }
    all.insert(ok.to_string(), response);
    Value::Object(all)
}

/// A DELETE's answers: 202 with the object (scheduled), 200 with the plan (`dry_run`).
fn deletion_responses(object: Value) -> Value {
    let mut answers = responses(
        202,
        "deletion scheduled",
        object,
        &[400, 401, 404, 409, 503],
        true,
    );
    let mut plan = json_content(reference("DeletionPlan"));
    plan["description"] = json!("dry run: what would be deleted");
    answers["200"] = plan;
    answers
}

fn if_match() -> Value {
    json!({"name": "If-Match", "in": "header", "required": false,
           "description": "RFC 9110: `*` (the object must exist) or entity tags from `ETag` (`\"3\"`, a list of them); \
                           weak tags never match; 409 if none is the stored version",
           "schema": {"type": "string",
                      "pattern": "^[ \t]*(\\*|(W/)?(\"[0-9]{1,19}\"|[0-9]{1,19})([ \t]*,[ \t]*(W/)?(\"[0-9]{1,19}\"|[0-9]{1,19}))*)[ \t]*$"}})
}

fn idempotency_key() -> Value {
    json!({"name": crate::rest::IDEMPOTENCY_KEY, "in": "header", "required": false,
           "description": "makes the create safe to repeat for a day (IETF httpapi draft): a repeat gets the first \
                           answer (`Idempotent-Replayed: true`); the key with another request is a 400",
           "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"}})
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

/// A repeatable query parameter (`label=a=b&label=c=d`).
fn repeated_query(name: &str, description: &str, item: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description,
           "style": "form", "explode": true,
           "schema": {"type": "array", "maxItems": MAX_FILTERS, "items": item}})
}

/// The OpenAPI document for `kinds`: it describes what the server accepts and answers, checked
/// by a property-based test (schemathesis) in the suite. Rules JSON Schema cannot state (a
/// reference must name an existing object; YAML must parse; some fields depend on others) are
/// 400s naming the field.
pub fn document(kinds: &KindRegistry) -> Value {
    document_with(kinds, &[])
}

/// The OpenAPI document for `kinds` and the kinds of one's own `custom` (their spec schema
/// is their definition's JSON Schema).
pub fn document_with(kinds: &KindRegistry, custom: &[Arc<crate::KindEntry>]) -> Value {
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
               "required": ["id", "kind", "name", "version", "generation", "created_at", "updated_at", "labels", "status"],
               "properties": {
            "id": uuid_schema(), "kind": {"type": "string"},
            "name": {"type": "string"}, "version": {"type": "integer", "minimum": 1},
            "generation": {"type": "integer"}, "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "deletion_scheduled_at": {"type": ["string", "null"], "format": "date-time"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "references": {"type": "array", "items": {"type": "object"}},
            "owners": {"type": "array", "items": reference("ObjectRef"),
                       "description": "what the object was made on behalf of (set at creation, fixed after): deleting an owner deletes it first"},
            "status": {"type": "object", "description": "lifecycle state, observed generation, conditions, events and the controller's details"}}}),
    );
    components.insert(
        "ObjectRef".into(),
        json!({"type": "object", "required": ["kind", "id"], "additionalProperties": false,
               "properties": {"kind": {"type": "string"}, "id": uuid_schema()}}),
    );
    components.insert(
        "DeletionPlan".into(),
        json!({"type": "object", "required": ["propagation", "deletes", "orphans"], "properties": {
            "propagation": {"type": "string", "enum": ["foreground", "orphan"]},
            "deletes": {"type": "array", "items": reference("ObjectRef"),
                        "description": "what would be deleted: the object, then what it owns"},
            "orphans": {"type": "array", "items": reference("ObjectRef"),
                        "description": "what would lose it as an owner and stay"}}}),
    );
    components.insert(
        "Summary".into(),
        json!({"type": "object", "required": ["kind", "plural", "id", "name", "state", "failures", "conditions", "deleting"],
               "properties": {"kind": {"type": "string"}, "plural": {"type": "string"}, "id": uuid_schema(),
                   "name": {"type": "string"}, "state": {"type": "string"}, "reason": {"type": "string"},
                   "failures": {"type": "integer"}, "health": {"type": "object"},
                   "conditions": {"type": "array", "items": {"type": "string"}, "description": "`type=status`"},
                   "deleting": {"type": "boolean"},
                   "field": {"type": "string", "description": "the spec field of the reference (in `related`)"}}}),
    );
    components.insert(
        "Related".into(),
        json!({"type": "object", "required": ["references", "owners", "owns", "referenced_by"], "properties": {
            "references": {"type": "array", "items": reference("Summary")},
            "owners": {"type": "array", "items": reference("Summary")},
            "owns": {"type": "array", "items": reference("Summary")},
            "referenced_by": {"type": "array", "items": reference("Summary")}}}),
    );
    let delete_parameters = json!([
        if_match(),
        query(
            "propagation",
            "what happens to the objects it owns: `foreground` (deleted first; the default) or `orphan` (kept)",
            json!({"type": "string", "enum": ["foreground", "orphan"]})
        ),
        query(
            "dry_run",
            "`true`: only answer what would be deleted",
            json!({"type": "string", "enum": ["true", "false"]})
        ),
    ]);
    let label_item = json!({"type": "string",
        "pattern": format!("^[^={NOT_IN_NAMES}]{{1,{MAX_NAME_LEN}}}=[^{CONTROL}]{{0,{MAX_NAME_LEN}}}$")});
    let ref_item = json!({"type": "string",
        "pattern": format!("^[A-Za-z0-9_.]{{1,128}}={}", &UUID_PATTERN[1..])});
    let list_parameters = json!([
        query("name", "exact name", name_schema()),
        repeated_query(
            "label",
            "key=value: objects with this label (all of them, if repeated)",
            label_item
        ),
        repeated_query(
            "ref",
            "field=id: objects whose spec field references the id",
            ref_item
        ),
        query("after", "cursor: the previous page's `next`", uuid_schema()),
        query(
            "limit",
            "page size",
            json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE})
        ),
    ]);
    for entry in kinds.entries().chain(custom.iter().map(|entry| &**entry)) {
        let kind = entry.kind;
        let spec = match (entry.spec_schema(&mut schemas), entry.custom_schema()) {
            (Some(name), _) => reference(&name),
            (None, Some(schema)) => schema.clone(),
            (None, None) => json!({"type": "object"}),
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
        let create_body = json_body(json!({"type": "object", "required": ["name", "spec"],
            "additionalProperties": false, "properties": {
                "name": name_schema(), "labels": labels_schema(),
                "owners": {"type": "array", "items": reference("ObjectRef"), "maxItems": MAX_OWNERS,
                           "description": "existing objects this one is made on behalf of"},
                "spec": create_spec}}));
        let replace_body = json_body(json!({"type": "object", "required": ["spec"],
            "additionalProperties": false, "properties": {
                "labels": labels_schema(), "spec": spec,
                "version": {"type": ["integer", "null"], "minimum": 0, "maximum": u64::MAX, "description": "as If-Match"}}}));
        let patch_schema = json!({"type": "object", "additionalProperties": false, "properties": {
            "labels": {"type": "object", "description": "merged into the labels; null removes one",
                       "propertyNames": name_schema(),
                       "additionalProperties": {"type": ["string", "null"], "maxLength": MAX_NAME_LEN,
                                                "pattern": format!("^[^{CONTROL}]*$")}},
            "spec": {"type": "object", "description": "merged into the spec (RFC 7396)"},
            "version": {"type": ["integer", "null"], "minimum": 0, "maximum": u64::MAX, "description": "as If-Match"}}});
        let patch_body = json!({"required": true, "content": {"application/merge-patch+json": {"schema": patch_schema.clone()},
                                            "application/json": {"schema": patch_schema}}});
        let page = json!({"type": "object", "required": ["items"], "properties": {
            "items": {"type": "array", "items": reference(&object)},
            "next": {"type": ["string", "null"], "format": "uuid"}}});
        let id = json!({"name": "id", "in": "path", "required": true, "schema": uuid_schema()});
        let mut created = responses(
            201,
            "created (or, for a repeated Idempotency-Key, what the first request created)",
            reference(&object),
            &[400, 401, 409, 413, 503],
            true,
        );
        created["201"]["headers"]["Idempotent-Replayed"] = json!({"description": "`true` when this answers a repeat", "schema": {"type": "string"}});
        let collection = format!("/v0/{}", entry.plural);
        paths.insert(collection, json!({
            "post": {"tags": [kind], "summary": format!("Create a {kind}"), "requestBody": create_body,
                     "parameters": [idempotency_key()], "responses": created},
            "get": {"tags": [kind], "summary": format!("List {kind} objects"),
                    "parameters": list_parameters,
                    "responses": responses(200, "a page", page, &[400, 401, 503], false)}
        }));
        paths.insert(format!("/v0/{}/{{id}}", entry.plural), json!({
            "parameters": [id],
            "get": {"tags": [kind], "summary": format!("Read a {kind}"),
                    "responses": responses(200, "the object", reference(&object), &[400, 401, 404, 503], true)},
            "put": {"tags": [kind], "summary": format!("Replace a {kind}'s spec and labels"), "parameters": [if_match()],
                    "requestBody": replace_body,
                    "responses": responses(200, "replaced", reference(&object), &[400, 401, 404, 409, 413, 503], true)},
            "patch": {"tags": [kind], "summary": format!("Merge-patch a {kind} (RFC 7396)"), "parameters": [if_match()],
                      "requestBody": patch_body,
                      "responses": responses(200, "patched", reference(&object), &[400, 401, 404, 409, 413, 503], true)},
            "delete": {"tags": [kind], "summary": format!("Schedule a {kind}'s deletion, and of what it owns"), "parameters": delete_parameters.clone(),
                       "responses": deletion_responses(reference(&object))}
        }));
        paths.insert(format!("/v0/{}/{{id}}/retry", entry.plural), json!({"post": {
            "tags": [kind], "summary": format!("Reconcile a failed or interrupted {kind} again (409 in any other state)"),
            "parameters": [id, if_match()],
            "requestBody": {"required": false, "content": {"application/json": {"schema":
                {"type": "object", "additionalProperties": false,
                 "properties": {"version": {"type": "integer", "minimum": 0}}}}}},
            "responses": responses(200, "its desired state written anew: its controller takes it up", reference(&object), &[400, 401, 404, 409, 503], true)}}));
        paths.insert(format!("/v0/{}/{{id}}/related", entry.plural), json!({"get": {
            "tags": [kind], "summary": format!("What a {kind} references, who owns it, what it owns, what references it"),
            "parameters": [id],
            "responses": responses(200, "related objects", reference("Related"), &[400, 401, 404, 503], false)}}));
    }
    paths.insert("/v0/overview".into(), json!({"get": {
        "tags": ["Views"], "summary": "Every kind's count by state; what needs attention (interrupted, failed, unhealthy, retrying), worst first; runtimes; workload instances",
        "responses": responses(200, "the overview", json!({"type": "object", "required": ["kinds", "attention", "runtimes", "workloads"],
            "properties": {"kinds": {"type": "array", "items": {"type": "object"}},
                "attention": {"type": "array", "items": reference("Summary")},
                "runtimes": {"type": "array", "items": reference("Summary")},
                "workloads": {"type": "array", "items": reference("Summary")}}}), &[401, 503], false)}}));
    paths.insert("/v0/configs".into(), json!({"post": {
        "tags": ["Views"], "summary": "Create (or with apply=true, apply) a Threeport config as tptctl reads it, sent as text; file fields are refused",
        "parameters": [{"name": "apply", "in": "query", "required": false, "schema": {"type": "boolean"}}],
        "requestBody": {"required": true, "content": {"application/yaml": {"schema": {"type": "string"}}}},
        "responses": responses(200, "each part and what happened to it", json!({"type": "object",
            "properties": {"items": {"type": "array", "items": {"type": "object"}},
                           "notes": {"type": "array", "items": {"type": "string"}}}}), &[400, 401, 409, 503], false)}}));
    let mut created = responses(
        201,
        "the created objects by kind",
        json!({"type": "object"}),
        &[400, 401, 409, 413, 503],
        false,
    );
    created["201"]["headers"] = json!({"Idempotent-Replayed": {"description": "`true` when this answers a repeat",
                                                               "schema": {"type": "string"}}});
    paths.insert("/v0/workloads".into(), json!({"post": {
        "tags": ["Workload"], "summary": "Create a workload with its database, bucket, domain name, gateway and secret in one transaction (or a Helm workload, `helm_definition`, with its secret)",
        "parameters": [idempotency_key()],
        "requestBody": json_body(json!({"type": "object", "required": ["name"],
            "additionalProperties": false, "properties": {
            "name": name_schema(), "labels": labels_schema(),
            "definition": {"type": ["object", "null"]}, "helm_definition": {"type": ["object", "null"]},
            "instance": {"type": ["object", "null"]},
            "database": {"type": ["object", "null"]}, "bucket": {"type": ["object", "null"]},
            "domain_name": {"type": ["object", "null"]}, "gateway": {"type": ["object", "null"]},
            "secret": {"type": ["object", "null"]}}})),
        "responses": created}}));
    let mut batch_created = responses(
        201,
        "the created objects, in request order",
        json!({"type": "object", "required": ["items"], "properties": {
            "items": {"type": "array", "items": {"type": "object"}}}}),
        &[400, 401, 409, 413, 503],
        false,
    );
    batch_created["201"]["headers"] = created["201"]["headers"].clone();
    paths.insert("/v0/batch".into(), json!({"post": {
        "tags": ["Batch"],
        "summary": "Create objects of any kinds in one transaction, all or none (how clients create Threeport's abstractions)",
        "parameters": [idempotency_key()],
        "requestBody": json_body(json!({"type": "object", "required": ["objects"],
            "additionalProperties": false, "properties": {
            "objects": {"type": "array", "minItems": 1, "maxItems": crate::batch::MAX_BATCH,
                "items": {"type": "object", "required": ["kind", "name", "spec"],
                    "additionalProperties": false, "properties": {
                    "kind": {"type": "string"},
                    "id": {"type": "string", "format": "uuid",
                           "description": "The id to create it with, so later objects of the batch can reference it"},
                    "name": name_schema(), "labels": labels_schema(),
                    "owners": {"type": "array", "items": reference("ObjectRef"), "maxItems": MAX_OWNERS},
                    "spec": {"type": "object"}}}}}})),
        "responses": batch_created}}));
    let health = json!({"type": "object", "required": ["status"], "additionalProperties": false,
        "properties": {"status": {"enum": ["healthy", "progressing", "degraded", "down", "suspended", "unknown"]},
                       "reason": {"type": "string"}}});
    let optional_string = json!({"type": ["string", "null"]});
    paths.insert("/v0/workload-instances/{id}/health".into(), json!({"put": {
        "tags": ["WorkloadInstance"],
        "summary": "Report what a cluster watcher sees of a workload instance (the in-cluster agent): health, each resource's health, Kubernetes events (kept once per UID)",
        "parameters": [{"name": "id", "in": "path", "required": true,
                        "schema": {"type": "string", "format": "uuid"}}],
        "requestBody": json_body(json!({"type": "object", "required": ["health"],
            "additionalProperties": false, "properties": {
            "health": health,
            "resources": {"type": "array", "items": {"type": "object",
                "required": ["api_version", "kind", "name", "health"], "additionalProperties": false,
                "properties": {"api_version": {"type": "string"}, "kind": {"type": "string"},
                               "namespace": optional_string, "name": {"type": "string"},
                               "health": health}}},
            "events": {"type": "array", "items": {"type": "object",
                "required": ["type", "reason", "message", "count", "first_seen", "last_seen"],
                "properties": {"type": {"enum": ["Normal", "Warning"]}, "reason": {"type": "string"},
                               "message": {"type": "string"},
                               "count": {"type": "integer", "minimum": 0, "maximum": u32::MAX},
                               "first_seen": {"type": "string", "format": "date-time"},
                               "last_seen": {"type": "string", "format": "date-time"},
                               "uid": optional_string, "about": optional_string}}},
            "watched_kinds": {"type": "array", "items": {"type": "string"}}}})),
        "responses": responses(200, "recorded",
            json!({"type": "object", "properties": {"recorded": {"type": "boolean"}}}),
            &[400, 401, 404, 503], false)}}));
    let id_parameter = json!({"name": "id", "in": "path", "required": true,
                              "schema": {"type": "string", "format": "uuid"}});
    paths.insert("/v0/terraform-instances/{id}/approve".into(), json!({"post": {
        "tags": ["TerraformInstance"],
        "summary": "Apply the plan awaiting approval (manual approval): exactly that plan; 409 if no plan waits, another replaced it, or it is stale",
        "parameters": [id_parameter.clone()],
        "requestBody": json_body(json!({"type": "object", "required": ["plan"],
            "additionalProperties": false,
            "properties": {"plan": {"type": "string", "description": "status.details.plan.id"}}})),
        "responses": responses(202, "approved: the controller applies it",
            reference("TerraformInstanceObject"), &[400, 401, 404, 409], false)}}));
    paths.insert(
        "/v0/terraform-instances/{id}/outputs".into(),
        json!({"get": {
        "tags": ["TerraformInstance"],
        "summary": "The outputs of the last apply; sensitive values only with sensitive=true",
        "parameters": [id_parameter,
            {"name": "sensitive", "in": "query", "required": false, "schema": {"type": "boolean"}}],
        "responses": responses(200, "name → {sensitive, value}",
            json!({"type": "object", "additionalProperties": {"type": "object",
                "properties": {"sensitive": {"type": "boolean"}, "value": {}}}}),
            &[400, 401, 404], false)}}),
    );
    let mut workload_deleted = deletion_responses(reference("DeletionPlan"));
    workload_deleted["202"]["description"] = json!("deletion scheduled: what goes, and what stays");
    if let Some(headers) = workload_deleted["202"].as_object_mut() {
        headers.remove("headers");
    }
    paths.insert("/v0/workloads/{name}".into(), json!({"delete": {
        "tags": ["Workload"],
        "summary": "Delete a workload (or Helm workload): its definition and every part the composite create made (they are owned by it)",
        "parameters": [
            {"name": "name", "in": "path", "required": true, "schema": name_schema()},
            delete_parameters[1].clone(), delete_parameters[2].clone()],
        "responses": workload_deleted}}));
    for (path, summary, codes) in [
        ("/healthz", "The process serves", &[200][..]),
        (
            "/readyz",
            "The store and the bus answer (within a second)",
            &[200, 503][..],
        ),
        ("/metrics", "Prometheus metrics", &[200][..]),
        ("/version", "The server's release", &[200][..]),
    ] {
        let responses: Map<String, Value> = codes
            .iter()
            .map(|code| {
                let description = if *code == 200 {
                    "ok"
                } else {
                    "not ready: a backend does not answer"
                };
                (code.to_string(), json!({"description": description}))
            })
            .collect();
        paths.insert(
            path.into(),
            json!({"get": {"tags": ["Operations"], "summary": summary, "security": [],
            "responses": responses}}),
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
