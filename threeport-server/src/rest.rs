//! The generic REST routes: create, list, get, replace, patch and delete for every kind in a
//! [`KindRegistry`], over any [`Store`].
//!
//! | method | path | does |
//! |---|---|---|
//! | `POST` | `/v0/<plural>` | create from `{"name", "labels"?, "spec"}` → 201 |
//! | `GET` | `/v0/<plural>?name=&label=k=v&ref=field=id&after=&limit=` | one page, `next` cursor |
//! | `GET` | `/v0/<plural>/<id>` | one object |
//! | `PUT` | `/v0/<plural>/<id>` | replace `{"labels"?, "spec", "version"?}` |
//! | `PATCH` | `/v0/<plural>/<id>` | JSON merge patch (RFC 7396) of `{"labels", "spec"}` |
//! | `DELETE` | `/v0/<plural>/<id>` | schedule deletion (two-phase) → 202 |
//! | `POST` | `/v0/<plural>/<id>/retry` | reconcile a failed or interrupted object again → 200 |
//!
//! Writes take the expected version from `If-Match` or a `version` field; a mismatch is 409.
//! Every desired-state change notifies controllers through the store's outbox.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use threeport_core::object::{EventType, LifecycleState};
use threeport_core::object::{Labels, NewObject, ObjectId, ObjectRef, RawObject};
use threeport_core::store::{ListQuery, MAX_FILTERS, MAX_PAGE_SIZE, SpecUpdate, StatusWrite};
use threeport_core::{
    Bus, Error, ErrorKind, IdempotencyKey, Notification, Once, Operation, Propagation,
    SecretValues, Store,
};

use crate::registry::{CheckedSpec, KindEntry, KindRegistry};
use crate::seal::Sealer;

/// Fields of an object that only the server writes.
const READ_ONLY: &[&str] = &[
    "id",
    "kind",
    "version",
    "generation",
    "created_at",
    "updated_at",
    "deletion_scheduled_at",
    "references",
    "owners",
    "status",
];

/// What the routes share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Where objects live.
    pub store: Arc<dyn Store>,
    /// Where secret values go (everything else is notified through the store's outbox).
    pub bus: Arc<dyn Bus>,
    /// The controllers' object leases: what reports written outside a reconcile (agents'
    /// health reports) take, so they never race one.
    pub locker: Arc<dyn threeport_core::Locker>,
    /// The kinds served.
    pub kinds: Arc<KindRegistry>,
    /// Encrypts the kinds' sealed fields before they are stored.
    pub sealer: Arc<Sealer>,
}

/// The `/v0` routes for every registered kind.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v0/{plural}", get(list).post(create))
        .route(
            "/v0/{plural}/{id}",
            get(read).put(replace).patch(patch).delete(delete),
        )
        .route("/v0/{plural}/{id}/retry", axum::routing::post(retry))
        .with_state(state)
}

/// An error as the API reports it: status code and `{"error", "message", "field"?}`.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        ApiError(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let err = self.0;
        let (status, code) = match err.kind() {
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let mut body = json!({ "error": code, "message": err.to_string() });
        if let Error::Invalid { field, .. } = &err {
            body["field"] = Value::String(field.clone());
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // A backend is restarting or unreachable: worth a retry soon (creates carry an
            // Idempotency-Key, so a retry cannot create twice).
            tracing::warn!(error = %err, "request failed: backend unavailable");
            return (status, [(header::RETRY_AFTER, "1")], axum::Json(body)).into_response();
        }
        if status.is_server_error() {
            tracing::error!(error = %err, "request failed");
        }
        (status, axum::Json(body)).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// The kind served at `/v0/{plural}`: built in, or of one's own (a `KindDefinition`).
async fn entry(state: &ApiState, plural: &str) -> ApiResult<Arc<KindEntry>> {
    state
        .kinds
        .lookup(&state.store, plural)
        .await?
        .ok_or_else(|| ApiError(Error::not_found("object kind", format!("/v0/{plural}"))))
}

fn parse_id(id: &str) -> ApiResult<ObjectId> {
    id.parse()
        .map_err(|_| ApiError(Error::invalid("id", format!("{id:?} is not an object id"))))
}

/// What a body may carry besides the writable fields: writes to an existing object their
/// expected `version`, creations their `owners` (fixed afterwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    Create,
    Change,
}

/// Parses a JSON object body, refusing read-only fields by name.
pub(crate) fn body_object(body: &Bytes, write: Write) -> ApiResult<Map<String, Value>> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError(Error::invalid("body", format!("not valid JSON: {e}"))))?;
    integral_numbers_as_integers(&mut value);
    let Value::Object(map) = value else {
        return Err(ApiError(Error::invalid("body", "must be a JSON object")));
    };
    let allowed = match write {
        Write::Create => "owners",
        Write::Change => "version",
    };
    if let Some(field) = READ_ONLY
        .iter()
        .find(|f| map.contains_key(**f) && **f != allowed)
    {
        return Err(ApiError(Error::invalid(
            *field,
            "is read-only: the server sets it",
        )));
    }
    Ok(map)
}

/// JSON has one number type, and JSON Schema counts `3.0` as an integer: so does the API. Whole
/// floats become integers before typed decoding (which takes integers for float fields too).
fn integral_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Within ±2^63, where an f64 holds whole numbers exactly and i64/u64 reach.
            if f.fract() == 0.0 && f.abs() < 9.2e18 {
                *value = if f < 0.0 {
                    Value::from(f as i64)
                } else {
                    Value::from(f as u64)
                };
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// Decodes a body object into `T`, naming the field at fault.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(map: Map<String, Value>) -> ApiResult<T> {
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        // Unknown top-level fields come back with the root path: name them from the message.
        let field = if path == "." {
            message
                .split('`')
                .nth(1)
                .map_or_else(|| "body".to_owned(), str::to_owned)
        } else {
            path
        };
        ApiError(Error::invalid(field, message))
    })
}

/// What an `If-Match` header asks for (RFC 9110 §13.1.1). Entity tags are object versions
/// (`"3"`; a bare `3` is accepted too).
#[derive(Debug, Clone, PartialEq, Eq)]
enum IfMatch {
    /// No header.
    Absent,
    /// `*`: any current version (the object must exist).
    Any,
    /// One of these versions. Weak tags (`W/"3"`) never match under the strong comparison
    /// `If-Match` uses, so they are left out: only weak tags leave the list empty.
    Versions(Vec<u64>),
}

fn if_match(headers: &HeaderMap) -> ApiResult<IfMatch> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(IfMatch::Absent);
    };
    let invalid = |why: &str| ApiError(Error::invalid("If-Match", why.to_owned()));
    let text = value
        .to_str()
        .map_err(|_| invalid("must be ASCII: \"*\" or entity tags such as \"3\""))?
        .trim();
    if text == "*" {
        return Ok(IfMatch::Any);
    }
    if text.is_empty() {
        return Err(invalid(
            "is empty: send \"*\" or the object version from ETag (\"3\")",
        ));
    }
    let mut versions = Vec::new();
    for tag in text.split(',').map(|t| t.trim_matches([' ', '\t'])) {
        let (weak, opaque) = match tag.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        // `"3"` as ETag gives it, or a bare `3`; at most 19 digits.
        let digits = match opaque.strip_prefix('"') {
            Some(quoted) => quoted.strip_suffix('"'),
            None => Some(opaque),
        };
        let version = digits
            .filter(|d| (1..=19).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or_else(|| {
                invalid(&format!(
                    "{tag:?} is not an entity tag of this API: send \"*\" or object versions \
                     in quotes, as ETag gives them (\"3\")"
                ))
            })?;
        if !weak {
            versions.push(version);
        }
    }
    Ok(IfMatch::Versions(versions))
}

/// The version a write to `id` must find, from `If-Match` and/or a `version` in the body
/// (they must agree); `None`: any. Several tags in `If-Match` resolve against the stored
/// version.
async fn expected_version(
    state: &ApiState,
    entry: &KindEntry,
    id: ObjectId,
    headers: &HeaderMap,
    body: Option<u64>,
) -> ApiResult<Option<u64>> {
    let versions = match if_match(headers)? {
        IfMatch::Absent | IfMatch::Any => return Ok(body),
        IfMatch::Versions(versions) => versions,
    };
    if let Some(b) = body {
        if !versions.contains(&b) {
            return Err(ApiError(Error::invalid(
                "version",
                format!("the body says {b} and If-Match says otherwise ({versions:?})"),
            )));
        }
        return Ok(Some(b));
    }
    match versions.as_slice() {
        [] => Err(ApiError(Error::conflict(
            "If-Match has only weak entity tags, which never match: If-Match compares \
             strongly (RFC 9110 §13.1.1); send the ETag as given (\"3\")",
        ))),
        [one] => Ok(Some(*one)),
        many => {
            let current = state.store.get(entry.kind, id).await?.meta.version;
            if many.contains(&current) {
                Ok(Some(current))
            } else {
                Err(ApiError(Error::conflict(format!(
                    "{} {id} is at version {current}, none of {many:?}",
                    entry.kind
                ))))
            }
        }
    }
}

fn with_etag(status: StatusCode, obj: RawObject) -> Response {
    let etag = format!("\"{}\"", obj.meta.version);
    (status, [(header::ETAG, etag)], axum::Json(obj)).into_response()
}

/// Seals the kind's sealed fields in `spec` that are still plain text.
pub(crate) fn seal_fields(state: &ApiState, entry: &KindEntry, spec: &mut Value) -> ApiResult<()> {
    for path in &entry.sealed_fields {
        let mut at = Some(&mut *spec);
        for part in path.split('.') {
            at = at.and_then(|v| v.get_mut(part));
        }
        if let Some(Value::String(value)) = at
            && !Sealer::is_sealed(value)
        {
            *value = state.sealer.seal(&format!("spec.{path}"), value)?;
        }
    }
    Ok(())
}

/// A new spec as it is stored: the kind's defaults filled in (the default runtime, say), its
/// sealed fields sealed, then decoded and validated, with the references it holds.
pub(crate) async fn prepare(
    state: &ApiState,
    entry: &KindEntry,
    spec: Value,
) -> ApiResult<CheckedSpec> {
    let mut spec = entry.fill_defaults(&state.store, spec).await?;
    seal_fields(state, entry, &mut spec)?;
    Ok(entry.check(&spec)?)
}

/// `err` about a spec, with its field named from `part` of a larger request (`spec.port` in
/// part `gateway` → `gateway.port`).
pub(crate) fn within(part: &str, ApiError(err): ApiError) -> ApiError {
    match err {
        Error::Invalid { field, message } => {
            let field = field.strip_prefix("spec").unwrap_or(&field);
            ApiError(Error::invalid(format!("{part}{field}"), message))
        }
        other => ApiError(other),
    }
}

/// Publishes secret values for a just-created object: in memory, never stored.
pub(crate) async fn hand_over_secret(
    state: &ApiState,
    created: &RawObject,
    secret: SecretValues,
) -> ApiResult<()> {
    let meta = &created.meta;
    let notification = Notification::new(&meta.kind, meta.id, Operation::Created, meta.version)
        .with_secret(secret);
    // The object exists either way; if the values cannot be handed over, say so: the client
    // must send them again (they were not stored anywhere).
    state.bus.publish(notification).await.map_err(|err| {
        ApiError(Error::unavailable(format!(
            "{} {} was created, but its secret values could not be handed to the controllers \
             ({err}); send them again",
            meta.kind, meta.id
        )))
    })
}

/// Takes the kind's secret field out of `spec`, if it has one and the field is set.
pub(crate) fn take_secret(entry: &KindEntry, spec: &mut Value) -> ApiResult<Option<SecretValues>> {
    let Some(field) = entry.secret_field else {
        return Ok(None);
    };
    let Some(values) = spec.as_object_mut().and_then(|s| s.remove(field)) else {
        return Ok(None);
    };
    let values: SecretValues = serde_json::from_value(values).map_err(|_| {
        ApiError(Error::invalid(
            format!("spec.{field}"),
            "must be an object of string values",
        ))
    })?;
    Ok(Some(values))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    labels: Labels,
    /// What the object is made on behalf of: deleting one of them deletes it first.
    #[serde(default)]
    owners: Vec<ObjectRef>,
    spec: Value,
}

async fn create(
    State(state): State<ApiState>,
    Path(plural): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult<Response> {
    let entry = &*entry(&state, &plural).await?;
    let mut body: CreateBody = decode(body_object(&raw, Write::Create)?)?;
    let secret = take_secret(entry, &mut body.spec)?;
    let checked = prepare(&state, entry, body.spec).await?;
    let new = NewObject {
        kind: entry.kind.to_owned(),
        name: body.name,
        labels: body.labels,
        references: checked.references,
        owners: body.owners,
        spec: checked.spec,
    };
    let route = format!("POST /v0/{plural}");
    let (mut created, replayed) =
        create_once(&state, &headers, &route, &raw, vec![(ObjectId::new(), new)]).await?;
    let created = created.pop().expect("one object created");
    if let Some(secret) = secret {
        // Also on a replay: the first request may have stopped before handing them over.
        hand_over_secret(&state, &created, secret).await?;
    }
    let mut response = with_etag(StatusCode::CREATED, created);
    if replayed {
        mark_replayed(&mut response);
    }
    Ok(response)
}

/// The request header that makes a create safe to repeat: a create retried with the same
/// key answers what the first one created.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Creates `objects` (all or none), once per `Idempotency-Key` if the request has one (IETF
/// draft-ietf-httpapi-idempotency-key-header; Stripe's API): the same request repeated within
/// a day gets what the first one created, as it was then (`true`: replayed), instead of a
/// conflict or a duplicate; the key sent with another request (method, path or body) is a
/// 400 naming `Idempotency-Key`.
pub(crate) async fn create_once(
    state: &ApiState,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
    objects: Vec<(ObjectId, NewObject)>,
) -> ApiResult<(Vec<RawObject>, bool)> {
    let Some(key) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok((state.store.create_all(objects).await?, false));
    };
    let key = key.to_str().map_err(|_| {
        ApiError(Error::invalid(
            IDEMPOTENCY_KEY,
            "must be visible ASCII (a UUID, say)",
        ))
    })?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(route.as_bytes());
    digest.update(b"\n");
    digest.update(body);
    let key = IdempotencyKey {
        key: key.to_owned(),
        fingerprint: hex::encode(digest.finish()),
    };
    match state.store.create_all_once(&key, objects).await? {
        Once::Created(created) => Ok((created, false)),
        Once::Replayed {
            fingerprint,
            objects,
        } if fingerprint == key.fingerprint => Ok((objects, true)),
        Once::Replayed { .. } => Err(ApiError(Error::invalid(
            IDEMPOTENCY_KEY,
            format!(
                "{:?} was used within the last day for another request (another path or \
                 body): use a new key for a new request",
                key.key
            ),
        ))),
    }
}

/// Marks an answer as the replay of an earlier request with the same `Idempotency-Key`.
pub(crate) fn mark_replayed(response: &mut Response) {
    response.headers_mut().insert(
        "idempotent-replayed",
        axum::http::HeaderValue::from_static("true"),
    );
}

/// The query string's `name=value` pairs, percent-decoded (`+` is a space); a parameter that is
/// not UTF-8 once decoded is an error naming it.
pub(crate) fn query_pairs(raw: Option<&str>) -> ApiResult<Vec<(String, String)>> {
    let decode = |part: &str, field: &str| -> ApiResult<String> {
        let spaced = part.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| {
                ApiError(Error::invalid(
                    field,
                    "is not UTF-8 text once percent-decoded",
                ))
            })
    };
    let mut pairs = Vec::new();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key, "query")?;
        let value = decode(value, &key)?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

async fn list(
    State(state): State<ApiState>,
    Path(plural): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let entry = &*entry(&state, &plural).await?;
    let mut query = ListQuery::default();
    // Counted as sent: repeating a key still counts against the limit.
    let mut labels = 0;
    for (key, value) in query_pairs(raw.as_deref())? {
        match key.as_str() {
            "name" => query.name = Some(value),
            "label" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| ApiError(Error::invalid("label", "must be key=value")))?;
                labels += 1;
                query.labels.insert(k.to_owned(), v.to_owned());
            }
            "ref" => {
                let (field, id) = value
                    .split_once('=')
                    .ok_or_else(|| ApiError(Error::invalid("ref", "must be field=id")))?;
                let id = id.parse().map_err(|_| {
                    ApiError(Error::invalid("ref", format!("{id:?} is not an object id")))
                })?;
                query.references.push((field.to_owned(), id));
            }
            "after" => {
                query.after = Some(value.parse().map_err(|_| {
                    ApiError(Error::invalid(
                        "after",
                        format!("{value:?} is not an object id"),
                    ))
                })?)
            }
            "limit" => {
                query.limit = value.parse().map_err(|_| {
                    ApiError(Error::invalid(
                        "limit",
                        format!("must be a number from 1 to {MAX_PAGE_SIZE}"),
                    ))
                })?
            }
            other => {
                return Err(ApiError(Error::invalid(
                    other,
                    "unknown query parameter (name, label, ref, after, limit)",
                )));
            }
        }
    }
    // Bad filters are the client's to fix, before any backend sees them.
    if labels > MAX_FILTERS {
        return Err(ApiError(Error::invalid(
            "label",
            format!("at most {MAX_FILTERS} label filters"),
        )));
    }
    query.validate()?;
    let page = state.store.list(entry.kind, &query).await?;
    // Serialized straight from the page (through `json!` it was copied into a value first).
    Ok(axum::Json(page).into_response())
}

async fn read(
    State(state): State<ApiState>,
    Path((plural, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let entry = &*entry(&state, &plural).await?;
    let obj = state.store.get(entry.kind, parse_id(&id)?).await?;
    Ok(with_etag(StatusCode::OK, obj))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceBody {
    #[serde(default)]
    labels: Labels,
    spec: Value,
    #[serde(default)]
    version: Option<u64>,
}

async fn replace(
    State(state): State<ApiState>,
    Path((plural, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let entry = &*entry(&state, &plural).await?;
    let id = parse_id(&id)?;
    let body: ReplaceBody = decode(body_object(&body, Write::Change)?)?;
    let expected_version = expected_version(&state, entry, id, &headers, body.version).await?;
    write_spec(&state, entry, id, expected_version, body.labels, body.spec).await
}

/// Checks a new spec and writes it with its labels over object `id`.
async fn write_spec(
    state: &ApiState,
    entry: &KindEntry,
    id: ObjectId,
    expected_version: Option<u64>,
    labels: Labels,
    spec: Value,
) -> ApiResult<Response> {
    let updated = replace_spec(state, entry, id, expected_version, labels, spec).await?;
    Ok(with_etag(StatusCode::OK, updated))
}

/// What `PUT /v0/<plural>/<id>` does once the request is read: the spec checked (defaults,
/// sealing, validation), then written with `labels` if the object is at `expected_version`.
pub(crate) async fn replace_spec(
    state: &ApiState,
    entry: &KindEntry,
    id: ObjectId,
    expected_version: Option<u64>,
    labels: Labels,
    spec: Value,
) -> ApiResult<RawObject> {
    let checked = prepare(state, entry, spec).await?;
    let updated = state
        .store
        .update(
            entry.kind,
            id,
            SpecUpdate {
                expected_version,
                labels,
                references: checked.references,
                spec: checked.spec,
            },
        )
        .await?;
    Ok(updated)
}

/// A body's `version` field: absent or `null` (any version), else an object version.
fn version_field(value: Option<Value>) -> ApiResult<Option<u64>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ApiError(Error::invalid(
                "version",
                "must be an object version number",
            ))
        }),
    }
}

/// Reconciles a stopped object (`CreationFailed`, `Interrupted`) again: its desired state is
/// written anew, unchanged, which moves its generation on, so its controller takes it up as
/// it would a change; one whose cleanup stopped (being deleted) goes back to
/// `DeletionScheduled` and its controller is notified, so the cleanup runs again. Any other
/// state: 409 naming it (a running object needs no retry). `If-Match` or `{"version"}` guard
/// as for writes.
async fn retry(
    State(state): State<ApiState>,
    Path((plural, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let entry = &*entry(&state, &plural).await?;
    let id = parse_id(&id)?;
    let body_version = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let mut fields = body_object(&body, Write::Change)?;
        if let Some(field) = fields.keys().find(|k| *k != "version") {
            return Err(ApiError(Error::invalid(
                field.as_str(),
                "unknown field: a retry takes only version",
            )));
        }
        version_field(fields.remove("version"))?
    };
    let expected = expected_version(&state, entry, id, &headers, body_version).await?;
    let current = state.store.get(entry.kind, id).await?;
    if !current.status.state.is_stopped() {
        return Err(ApiError(Error::conflict(format!(
            "{} {} is {:?}: only a failed or interrupted object is retried",
            entry.kind, current.meta.name, current.status.state
        ))));
    }
    let expected_version = Some(expected.unwrap_or(current.meta.version));
    if current.meta.deletion_scheduled_at.is_some() {
        // Its cleanup stopped: its desired state (deletion) cannot be written again, so its
        // status goes back to "deletion scheduled" and its controller is told to look again.
        let mut status = current.status;
        status.state = LifecycleState::DeletionScheduled;
        status.reason = None;
        status.failures = 0;
        status.record_event(
            EventType::Normal,
            "RetryRequested",
            "cleanup retried by request",
        );
        let write = StatusWrite {
            expected_version,
            fence: None,
            status,
        };
        let written = state.store.update_status(entry.kind, id, write).await?;
        let notification =
            Notification::new(entry.kind, id, Operation::Deleted, written.meta.version);
        state.bus.publish(notification).await?;
        return Ok(with_etag(StatusCode::OK, written));
    }
    let updated = state
        .store
        .update(
            entry.kind,
            id,
            SpecUpdate {
                expected_version,
                labels: current.meta.labels,
                references: current.meta.references,
                spec: current.spec,
            },
        )
        .await?;
    Ok(with_etag(StatusCode::OK, updated))
}

async fn patch(
    State(state): State<ApiState>,
    Path((plural, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let entry = &*entry(&state, &plural).await?;
    let id = parse_id(&id)?;
    let mut patch = body_object(&body, Write::Change)?;
    let body_version = version_field(patch.remove("version"))?;
    if let Some(field) = patch.keys().find(|k| *k != "labels" && *k != "spec") {
        return Err(ApiError(Error::invalid(
            field.as_str(),
            "unknown field: a patch may change labels and spec",
        )));
    }
    let asked = expected_version(&state, entry, id, &headers, body_version).await?;
    // Without a version from the client, patch the version just read, and read again if
    // something (a controller's status write, say) got in between: the patch applies to the
    // latest object and never overwrites a change it did not see.
    let mut attempts = 0;
    loop {
        let current = state.store.get(entry.kind, id).await?;
        let mut spec = current.spec;
        if let Some(spec_patch) = patch.get("spec") {
            merge_patch(&mut spec, spec_patch.clone());
        }
        let mut labels = serde_json::to_value(&current.meta.labels).map_err(Error::from)?;
        if let Some(labels_patch) = patch.get("labels") {
            merge_patch(&mut labels, labels_patch.clone());
        }
        let labels: Labels = serde_json::from_value(labels)
            .map_err(|e| ApiError(Error::invalid("labels", e.to_string())))?;
        let expected = asked.unwrap_or(current.meta.version);
        match write_spec(&state, entry, id, Some(expected), labels, spec).await {
            Err(ApiError(err))
                if asked.is_none() && err.kind() == ErrorKind::Conflict && attempts < 10 =>
            {
                attempts += 1;
                // Deletion scheduled is a conflict too, and stays one: the next read says so.
            }
            result => return result,
        }
    }
}

/// RFC 7396: objects merge key by key, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(&key);
        } else {
            merge_patch(target.entry(key).or_insert(Value::Null), value);
        }
    }
}

/// How a DELETE goes: `propagation` (what happens to what the object owns) and `dry_run`
/// (only say what would be deleted).
pub(crate) fn delete_options(raw: Option<&str>) -> ApiResult<(Propagation, bool)> {
    let mut propagation = Propagation::Foreground;
    let mut dry_run = false;
    for (key, value) in query_pairs(raw)? {
        match key.as_str() {
            "propagation" => propagation = value.parse()?,
            "dry_run" => {
                dry_run = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError(Error::invalid("dry_run", "must be true or false")));
                    }
                }
            }
            other => {
                return Err(ApiError(Error::invalid(
                    other,
                    "unknown parameter: a DELETE takes propagation and dry_run",
                )));
            }
        }
    }
    Ok((propagation, dry_run))
}

/// What a deletion would delete, for `?dry_run=true`.
pub(crate) async fn preview(
    store: &dyn Store,
    root: &ObjectRef,
    propagation: Propagation,
) -> ApiResult<Response> {
    let plan = threeport_core::relation::deletion_plan(store, root, propagation).await?;
    Ok((StatusCode::OK, axum::Json(plan)).into_response())
}

async fn delete(
    State(state): State<ApiState>,
    Path((plural, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let entry = &*entry(&state, &plural).await?;
    let id = parse_id(&id)?;
    let (propagation, dry_run) = delete_options(raw.as_deref())?;
    let expected = expected_version(&state, entry, id, &headers, None).await?;
    if dry_run {
        let root = ObjectRef::new(entry.kind, id);
        return preview(&*state.store, &root, propagation).await;
    }
    let scheduled = state
        .store
        .schedule_deletion_with(entry.kind, id, expected, propagation)
        .await?;
    Ok(with_etag(StatusCode::ACCEPTED, scheduled))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};
    use serde_json::json;

    use super::{IfMatch, if_match, merge_patch};

    fn parse(value: &str) -> Result<IfMatch, String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
        if_match(&headers).map_err(|e| e.0.to_string())
    }

    #[test]
    fn if_match_follows_rfc_9110() {
        assert_eq!(parse("*"), Ok(IfMatch::Any));
        assert_eq!(parse("\"3\""), Ok(IfMatch::Versions(vec![3])));
        assert_eq!(parse("3"), Ok(IfMatch::Versions(vec![3])));
        assert_eq!(parse("\"3\", \"5\""), Ok(IfMatch::Versions(vec![3, 5])));
        assert_eq!(
            parse("W/\"3\""),
            Ok(IfMatch::Versions(vec![])),
            "weak never matches"
        );
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("\"x\"").unwrap_err().contains("not an entity tag"));
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
        let mut target = json!({"a": [1, 2]});
        merge_patch(&mut target, json!({"a": [3]}));
        assert_eq!(target, json!({"a": [3]}));
    }
}
