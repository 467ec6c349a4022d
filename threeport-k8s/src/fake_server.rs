//! [`FakeApiServer`]: a [`MemoryCluster`] behind the Kubernetes HTTP API, on loopback, for
//! testing Kubernetes clients (ours is `KubeCluster`) over the wire.
//!
//! It serves discovery (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`), and for every
//! served kind get, list, watch (`?watch=true`, newline-delimited events), create (POST),
//! server-side apply (`PATCH` with `application/apply-patch+yaml` and `fieldManager`), JSON
//! merge patch (of the object, or of its `/status` subresource) and delete; errors are
//! Kubernetes `Status` bodies (404, 409, 422). Lists and watches take `labelSelector`; watches
//! resume from `resourceVersion`, send bookmarks when asked (`allowWatchBookmarks`), and
//! answer a forgotten version with an `ERROR` event carrying 410 Gone, as the real one does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::StreamExt;
use serde_json::{Value, json};
use threeport_core::{Error, ErrorKind};
use tokio::task::JoinHandle;

use crate::memory::{KindInfo, MemoryCluster};
use crate::{ResourceRef, Selector, WatchEvent};

/// A running fake API server. Stops when dropped.
#[derive(Debug)]
pub struct FakeApiServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The cluster it serves; inspect or change it directly in tests.
    pub cluster: MemoryCluster,
    available: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Served {
    cluster: MemoryCluster,
    token: Option<String>,
    available: Arc<AtomicBool>,
}

impl FakeApiServer {
    /// Serves `cluster` on a free loopback port; any request is accepted.
    pub async fn start(cluster: MemoryCluster) -> std::io::Result<Self> {
        Self::serve(cluster, None).await
    }

    /// Like [`start`](Self::start), but requests must carry `Authorization: Bearer <token>`.
    pub async fn start_with_token(cluster: MemoryCluster, token: &str) -> std::io::Result<Self> {
        Self::serve(cluster, Some(token.to_owned())).await
    }

    async fn serve(cluster: MemoryCluster, token: Option<String>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let available = Arc::new(AtomicBool::new(true));
        let app = Router::new()
            .route("/api", get(core_versions))
            .route("/apis", get(groups))
            .route("/api/{*rest}", any(core))
            .route("/apis/{*rest}", any(grouped))
            .with_state(Served {
                cluster: cluster.clone(),
                token,
                available: available.clone(),
            });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeApiServer {
            url,
            cluster,
            available,
            task,
        })
    }

    /// Makes the server answer every request with 503 and drops its watches (`false`), as an
    /// API server that is down or being upgraded; or serve again (`true`).
    pub fn set_available(&self, available: bool) {
        self.available.store(available, Ordering::SeqCst);
        if !available {
            self.cluster.close_watches();
        }
    }
}

/// A Kubernetes `Status` error body.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

fn from_error(err: &Error) -> Response {
    match err.kind() {
        ErrorKind::NotFound => status(StatusCode::NOT_FOUND, "NotFound", &err.to_string()),
        ErrorKind::AlreadyExists => status(StatusCode::CONFLICT, "AlreadyExists", &err.to_string()),
        ErrorKind::Conflict => status(StatusCode::CONFLICT, "Conflict", &err.to_string()),
        ErrorKind::Invalid => status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &err.to_string(),
        ),
        _ => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &err.to_string(),
        ),
    }
}

fn not_served() -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// The answer to a request the server will not serve: 503 while it plays unavailable, 401
/// without its token.
fn refused(served: &Served, headers: &HeaderMap) -> Option<Response> {
    if !served.available.load(Ordering::SeqCst) {
        return Some(status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the API server is unavailable",
        ));
    }
    (!authorized(served, headers)).then(unauthorized)
}

/// Whether the request carries the server's token (if it wants one).
fn authorized(served: &Served, headers: &HeaderMap) -> bool {
    let Some(token) = &served.token else {
        return true;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    presented == Some(token.as_str())
}

fn unauthorized() -> Response {
    status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
}

async fn core_versions(State(served): State<Served>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refused(&served, &headers) {
        return refusal;
    }
    axum::Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}))
        .into_response()
}

async fn groups(State(served): State<Served>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refused(&served, &headers) {
        return refusal;
    }
    let mut by_group: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for kind in served.cluster.kinds() {
        if let Some((group, version)) = kind.api_version.split_once('/') {
            let versions = by_group.entry(group.to_owned()).or_default();
            if !versions.contains(&version.to_owned()) {
                versions.push(version.to_owned());
            }
        }
    }
    let groups: Vec<Value> = by_group
        .into_iter()
        .map(|(name, versions)| {
            let list: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                .collect();
            json!({"name": name, "versions": list, "preferredVersion": list[0]})
        })
        .collect();
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        .into_response()
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Params {
    #[serde(default)]
    watch: Option<String>,
    #[serde(default)]
    field_manager: Option<String>,
    #[serde(default)]
    label_selector: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    allow_watch_bookmarks: Option<String>,
}

async fn core(
    State(served): State<Served>,
    Path(rest): Path<String>,
    method: Method,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // `/api/v1/...`: the core group.
    let Some((version, rest)) = split_first(&rest) else {
        return not_served();
    };
    resource_request(
        served,
        version.to_owned(),
        rest,
        method,
        params,
        headers,
        body,
    )
    .await
}

async fn grouped(
    State(served): State<Served>,
    Path(rest): Path<String>,
    method: Method,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((group, rest)) = split_first(&rest) else {
        return not_served();
    };
    let Some((version, rest)) = split_first(rest) else {
        return not_served();
    };
    resource_request(
        served,
        format!("{group}/{version}"),
        rest,
        method,
        params,
        headers,
        body,
    )
    .await
}

fn split_first(path: &str) -> Option<(&str, &str)> {
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        return None;
    }
    Some(path.split_once('/').unwrap_or((path, "")))
}

fn resource_list(served: &Served, api_version: &str) -> Response {
    let resources: Vec<Value> = served
        .cluster
        .kinds()
        .into_iter()
        .filter(|k| k.api_version == api_version)
        .map(|k| {
            json!({"name": k.plural, "singularName": k.kind.to_ascii_lowercase(), "namespaced": k.namespaced,
                   "kind": k.kind, "verbs": ["create", "delete", "get", "list", "patch", "watch"]})
        })
        .collect();
    if resources.is_empty() {
        return not_served();
    }
    axum::Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": resources}))
        .into_response()
}

async fn resource_request(
    served: Served,
    api_version: String,
    rest: &str,
    method: Method,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = refused(&served, &headers) {
        return refusal;
    }
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        return resource_list(&served, &api_version);
    }
    // namespaces/<ns>/<plural>[/<name>[/status]] or <plural>[/<name>[/status]] (which
    // covers namespaces/<name>).
    let (namespace, plural, name, subresource) = match segments.as_slice() {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, false),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), false),
        ["namespaces", ns, plural, name, "status"] => (Some(*ns), *plural, Some(*name), true),
        [plural] => (None, *plural, None, false),
        [plural, name] => (None, *plural, Some(*name), false),
        [plural, name, "status"] => (None, *plural, Some(*name), true),
        _ => return not_served(),
    };
    let kinds = served.cluster.kinds();
    let Some(kind) = kinds
        .iter()
        .find(|k| k.api_version == api_version && k.plural == plural)
    else {
        return not_served();
    };
    let namespace = if kind.namespaced { namespace } else { None };
    let cluster = &served.cluster;
    let reference = |name: &str| ResourceRef {
        api_version: kind.api_version.clone(),
        kind: kind.kind.clone(),
        namespace: namespace.map(str::to_owned),
        name: name.to_owned(),
    };
    let selector = Selector {
        namespace: namespace.map(str::to_owned),
        labels: params.label_selector.clone(),
        ..Selector::kind(&kind.api_version, &kind.kind)
    };
    let is_true = |flag: &Option<String>| flag.as_deref().is_some_and(|w| w == "true" || w == "1");
    let result = match (method.as_str(), name) {
        ("GET", None) if is_true(&params.watch) => {
            let from = params.resource_version.as_deref().unwrap_or_default();
            let events = match cluster.watch_sync(&selector, from) {
                Ok(events) => events,
                Err(err) => return from_error(&err),
            };
            // Looked at again now that the watch is registered: a `set_available(false)`
            // between the first look and the registration closed the watches before this one
            // existed, and it would stay open through the outage.
            if let Some(refusal) = refused(&served, &headers) {
                return refusal;
            }
            return watch(events, kind, is_true(&params.allow_watch_bookmarks));
        }
        ("GET", None) => cluster.list_selected_sync(&selector).map(|list| {
            let list = json!({"apiVersion": kind.api_version, "kind": format!("{}List", kind.kind),
                              "metadata": {"resourceVersion": list.resource_version}, "items": list.items});
            (StatusCode::OK, list)
        }),
        ("PATCH", Some(name)) if subresource => match parse_body(&body) {
            Ok(patch) => cluster
                .merge_status_sync(&reference(name), &patch)
                .map(|o| (StatusCode::OK, o)),
            Err(err) => Err(err),
        },
        (_, Some(_)) if subresource => {
            return status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "method not allowed");
        }
        ("GET", Some(name)) => match cluster.get_sync(&reference(name)) {
            Ok(Some(object)) => Ok((StatusCode::OK, object)),
            Ok(None) => Err(Error::not_found(&kind.plural, name)),
            Err(err) => Err(err),
        },
        ("POST", None) => match parse_body(&body) {
            Ok(mut manifest) => {
                if let Some(ns) = namespace {
                    manifest["metadata"]["namespace"] = json!(ns);
                }
                let manager = params.field_manager.as_deref().unwrap_or("unknown");
                cluster
                    .create_sync(&manifest, manager)
                    .map(|o| (StatusCode::CREATED, o))
            }
            Err(err) => Err(err),
        },
        ("PATCH", Some(name)) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            match parse_body(&body) {
                Err(err) => Err(err),
                Ok(mut patch) if content_type.starts_with("application/apply-patch") => {
                    match params.field_manager.as_deref() {
                        None => Err(Error::invalid("fieldManager", "is required for apply patch")),
                        Some(manager) => {
                            if let Some(ns) = namespace {
                                patch["metadata"]["namespace"] = json!(ns);
                            }
                            if patch["metadata"]["name"].as_str() != Some(name) {
                                Err(Error::invalid("metadata.name", "does not match the name in the path"))
                            } else {
                                cluster.apply_sync(&patch, manager).map(|o| (StatusCode::OK, o))
                            }
                        }
                    }
                }
                Ok(patch) if content_type.starts_with("application/merge-patch+json") => {
                    cluster
                        .merge_patch_sync(&reference(name), &patch)
                        .map(|o| (StatusCode::OK, o))
                }
                Ok(_) => {
                    return status(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        &format!("unsupported patch type {content_type:?}"),
                    );
                }
            }
        }
        ("DELETE", Some(name)) => match cluster.delete_sync(&reference(name)) {
            Ok(true) => Ok((
                StatusCode::OK,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success",
                       "details": {"name": name, "kind": kind.plural}}),
            )),
            Ok(false) => Err(Error::not_found(&kind.plural, name)),
            Err(err) => Err(err),
        },
        _ => {
            return status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "method not allowed");
        }
    };
    match result {
        Ok((code, object)) => (code, axum::Json(object)).into_response(),
        Err(err) => from_error(&err),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, Error> {
    serde_json::from_slice(body)
        .or_else(|_| {
            let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
            serde_yaml::from_str::<Value>(text).map_err(|e| e.to_string())
        })
        .map_err(|e| Error::invalid("body", format!("not JSON or YAML: {e}")))
}

/// A watch's events as Kubernetes streams them: one JSON event per line.
fn watch(
    events: impl futures::Stream<Item = Result<WatchEvent, Error>> + Send + 'static,
    kind: &KindInfo,
    bookmarks: bool,
) -> Response {
    let (api_version, kind) = (kind.api_version.clone(), kind.kind.clone());
    let lines = events.filter_map(move |event| {
        let line = match event {
            Ok(WatchEvent::Bookmark(version)) if bookmarks => Some(json!({"type": "BOOKMARK",
                "object": {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": version}}})),
            Ok(WatchEvent::Bookmark(_)) => None,
            Ok(WatchEvent::Expired) => Some(json!({"type": "ERROR", "object": {"kind": "Status",
                "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired",
                "message": "too old resource version", "code": 410}})),
            Ok(event) => serde_json::to_value(&event).ok(),
            Err(err) => Some(json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                "metadata": {}, "status": "Failure", "message": err.to_string(), "code": 500}})),
        };
        let line = line.map(|line| {
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            Ok::<_, Infallible>(Bytes::from(bytes))
        });
        async move { line }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(lines),
    )
        .into_response()
}
