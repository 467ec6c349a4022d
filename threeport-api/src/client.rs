//! [`Client`]: typed access to a threeport control plane over HTTP(S).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use threeport_core::object::{Labels, RawObject};
use threeport_core::relation::DeletionPlan;
use threeport_core::{ApiObject, Object, ObjectId, ObjectRef, Propagation, SecretValues};

use crate::model::{
    AwsObjectStorageBucketDefinition, AwsRelationalDatabaseDefinition, DomainNameDefinition,
    GatewayDefinition, SecretDefinition, WorkloadDefinition,
};
use crate::plural_path;

/// What went wrong talking to the API, by what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// 404: no such object (or kind).
    NotFound {
        /// The server's message.
        message: String,
    },
    /// 409: a version mismatch, a taken name, or a deletion blocked by references.
    Conflict {
        /// The server's message.
        message: String,
    },
    /// 400: the request is invalid; `field` names the culprit.
    Invalid {
        /// The offending field (`spec.storage_gb`).
        field: String,
        /// Why.
        message: String,
    },
    /// 401: no valid credentials.
    Unauthorized {
        /// The server's message.
        message: String,
    },
    /// The server cannot be reached or is not ready (503, connection errors, timeouts).
    Unavailable {
        /// What happened.
        message: String,
    },
    /// Anything else: a 5xx, or an answer that does not decode.
    Server {
        /// HTTP status, if there was an answer.
        status: Option<u16>,
        /// What happened.
        message: String,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotFound { message } => write!(f, "not found: {message}"),
            ClientError::Conflict { message } => write!(f, "conflict: {message}"),
            ClientError::Invalid { field, message } => write!(f, "invalid {field}: {message}"),
            ClientError::Unauthorized { message } => write!(f, "unauthorized: {message}"),
            ClientError::Unavailable { message } => write!(f, "unavailable: {message}"),
            ClientError::Server { status, message } => match status {
                Some(status) => write!(f, "server error {status}: {message}"),
                None => write!(f, "server error: {message}"),
            },
        }
    }
}

impl std::error::Error for ClientError {}

impl From<reqwest::Error> for ClientError {
    fn from(err: reqwest::Error) -> Self {
        if err.is_connect() || err.is_timeout() || err.is_request() {
            ClientError::Unavailable {
                message: err.to_string(),
            }
        } else {
            ClientError::Server {
                status: err.status().map(|s| s.as_u16()),
                message: err.to_string(),
            }
        }
    }
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    token: Option<String>,
    ca_pem: Option<Vec<u8>>,
    identity_pem: Option<Vec<u8>>,
    timeout: Duration,
    retry: Retry,
}

/// How a [`Client`] retries requests the control plane could not answer (503, connection
/// refused or reset, timeouts), with exponential backoff and jitter, honouring `Retry-After`.
///
/// Only requests that are safe to repeat are retried: reads, deletes, merge patches, and
/// creates, which carry an `Idempotency-Key` header (a new key per call, the same for its
/// retries): a create whose answer was lost after the server committed it is answered with
/// the object it created, not a conflict. A replace with `If-Match` is retried only if it never
/// reached the server (its repetition would find the version moved on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts after the first (0: no retries).
    pub retries: u32,
    /// Wait before the first retry; it doubles for each next one.
    pub initial: Duration,
    /// Longest wait between two attempts.
    pub max: Duration,
}

impl Default for Retry {
    /// 6 retries from 100 ms to 5 s: rides out about 10 s of a restarting database or server.
    fn default() -> Self {
        Retry {
            retries: 6,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Retry {
    /// No retries: every failure is the caller's.
    pub fn none() -> Self {
        Retry {
            retries: 0,
            ..Retry::default()
        }
    }

    fn delay(&self, retry: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(2u32.saturating_pow(retry.min(16)))
            .min(self.max);
        base.mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

impl ClientBuilder {
    /// Sends `Authorization: Bearer <token>`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Trusts only this PEM CA bundle for `https://` (default: the public web PKI roots).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Presents this client certificate (PEM certificate chain followed by its private key)
    /// for mutual TLS.
    pub fn identity_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.identity_pem = Some(pem.into());
        self
    }

    /// Per-request timeout (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How unanswered requests are retried (default: [`Retry::default`]).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// The client. TLS uses rustls with the `ring` provider.
    pub fn build(self) -> Result<Client, ClientError> {
        let invalid = |field: &str, message: String| ClientError::Invalid {
            field: field.to_owned(),
            message,
        };
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_pem {
            Some(pem) => {
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| invalid("ca_pem", e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| invalid("ca_pem", e.to_string()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("tls", e.to_string()))?
            .with_root_certificates(roots);
        let tls = match &self.identity_pem {
            None => tls.with_no_client_auth(),
            Some(pem) => {
                let chain = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid("identity_pem", e.to_string()))?;
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem)
                    .map_err(|e| invalid("identity_pem", e.to_string()))?;
                tls.with_client_auth_cert(chain, key)
                    .map_err(|e| invalid("identity_pem", e.to_string()))?
            }
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(self.timeout)
            .build()
            .map_err(|e| invalid("url", e.to_string()))?;
        let base = self.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(invalid(
                "url",
                format!("{base:?} must be an http:// or https:// URL"),
            ));
        }
        Ok(Client {
            http,
            base,
            token: self.token,
            retry: self.retry,
        })
    }
}

use rustls::pki_types::pem::PemObject;

/// A typed client for the control plane API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    retry: Retry,
}

/// Filters and a cursor for [`Resource::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// Only the object with this name.
    pub name: Option<String>,
    /// Only objects with all these labels.
    pub labels: Labels,
    /// Only objects whose reference `field` points at the id.
    pub references: Vec<(String, ObjectId)>,
    /// Start after this id (the previous page's `next`).
    pub after: Option<ObjectId>,
    /// Page size (the server's default if `None`).
    pub limit: Option<usize>,
}

/// One page of objects.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(bound = "T: ApiObject")]
pub struct Page<T: ApiObject> {
    /// The objects.
    pub items: Vec<Object<T>>,
    /// Cursor of the next page, if there is one.
    pub next: Option<ObjectId>,
}

/// A workload and the services it depends on, for [`Client::create_workload`]. Links between
/// the parts are filled in by the server.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadRequest {
    /// Name of every object created.
    pub name: String,
    /// Labels of every object created.
    pub labels: Labels,
    /// The manifests.
    pub definition: WorkloadDefinition,
    /// Runtime of the instance (`None`: the default runtime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<ObjectId>,
    /// A database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<AwsRelationalDatabaseDefinition>,
    /// A bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<AwsObjectStorageBucketDefinition>,
    /// A domain name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<DomainNameDefinition>,
    /// A gateway (its `domain_name` is set to the domain above, if any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayDefinition>,
    /// A secret and its values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<(SecretDefinition, SecretValues)>,
}

/// One object of a [`Client::create_batch`]: what `POST /v0/<plural>` takes, plus its kind and
/// optionally the id it is to have (so later objects of the batch can reference it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchObject {
    /// Kind name (`WorkloadDefinition`).
    pub kind: String,
    /// The id to create it with (a fresh UUID v7 the caller chose); `None`: the server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<ObjectId>,
    /// Name, unique per kind.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Objects it is made on behalf of (existing ones, or earlier ones of the batch).
    pub owners: Vec<ObjectRef>,
    /// Desired state, as JSON.
    pub spec: Value,
}

impl Client {
    /// A builder for the API at `url` (`http://127.0.0.1:1323`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            token: None,
            ca_pem: None,
            identity_pem: None,
            timeout: Duration::from_secs(30),
            retry: Retry::default(),
        }
    }

    /// The HTTP client, the base URL and the token, for the remote engine backends.
    pub(crate) fn parts(&self) -> (&reqwest::Client, &str, Option<&str>) {
        (&self.http, &self.base, self.token.as_deref())
    }

    /// The objects of kind `T`.
    pub fn api<T: ApiObject>(&self) -> Resource<T> {
        Resource {
            raw: self.kind(T::KIND),
            kind: PhantomData,
        }
    }

    /// The objects of the kind named `kind` (`WorkloadDefinition`), untyped.
    pub fn kind(&self, kind: &str) -> RawResource {
        RawResource {
            client: self.clone(),
            kind: kind.to_owned(),
            path: format!("{}/v0/{}", self.base, plural_path(kind)),
        }
    }

    /// The objects of `kind` served at `/v0/{plural}`: a kind of one's own (a
    /// `KindDefinition`) whose plural is not the default.
    pub fn kind_at(&self, kind: &str, plural: &str) -> RawResource {
        RawResource {
            client: self.clone(),
            kind: kind.to_owned(),
            path: format!("{}/v0/{plural}", self.base),
        }
    }

    /// Creates a workload and its services in one transaction; returns the created objects by
    /// kind.
    pub async fn create_workload(
        &self,
        request: &WorkloadRequest,
    ) -> Result<BTreeMap<String, RawObject>, ClientError> {
        let mut body = serde_json::json!({
            "name": request.name,
            "labels": request.labels,
            "definition": request.definition,
        });
        if let Some(runtime) = request.runtime {
            body["instance"] = serde_json::json!({ "runtime": runtime });
        }
        let parts = [
            ("database", serde_json::to_value(&request.database)),
            ("bucket", serde_json::to_value(&request.bucket)),
            ("domain_name", serde_json::to_value(&request.domain_name)),
            ("gateway", serde_json::to_value(&request.gateway)),
        ];
        for (name, part) in parts {
            let part = part.map_err(decode_error)?;
            if !part.is_null() {
                body[name] = part;
            }
        }
        if let Some((definition, values)) = &request.secret {
            let mut part = serde_json::to_value(definition).map_err(decode_error)?;
            part["data"] = serde_json::to_value(values).map_err(decode_error)?;
            body["secret"] = part;
        }
        self.create_workload_json(&body).await
    }

    /// [`create_workload`](Self::create_workload) with the request body as JSON (`name`,
    /// `labels`, `definition`, `instance`, `database`, `bucket`, `domain_name`, `gateway`,
    /// `secret`), for callers without the typed parts.
    pub async fn create_workload_json(
        &self,
        body: &Value,
    ) -> Result<BTreeMap<String, RawObject>, ClientError> {
        let request = self.request(Method::POST, &format!("{}/v0/workloads", self.base));
        self.send(request.json(body), Repeat::Safe).await
    }

    /// Creates `objects` in one transaction, all or none (`POST /v0/batch`); answers them in
    /// the same order. An invalid object is named by its index (`objects[1].spec.location`).
    pub async fn create_batch(
        &self,
        objects: &[BatchObject],
    ) -> Result<Vec<RawObject>, ClientError> {
        #[derive(Deserialize)]
        struct Created {
            items: Vec<RawObject>,
        }
        let body = serde_json::json!({ "objects": objects });
        let request = self.request(Method::POST, &format!("{}/v0/batch", self.base));
        let created: Created = self.send(request.json(&body), Repeat::Safe).await?;
        Ok(created.items)
    }

    /// Reports what a cluster watcher saw of workload instance `instance`
    /// (`PUT /v0/workload-instances/{id}/health`), as the in-cluster agent does. Safe to
    /// repeat: a report is the whole current picture, and events are kept once per UID.
    /// `Unavailable` while a reconcile holds the instance (after the client's retries).
    pub async fn report_health(
        &self,
        instance: ObjectId,
        report: &crate::model::HealthReport,
    ) -> Result<(), ClientError> {
        let url = format!("{}/v0/workload-instances/{instance}/health", self.base);
        let request = self.request(Method::PUT, &url).json(report);
        let _: Value = self.send(request, Repeat::Safe).await?;
        Ok(())
    }

    /// Approves plan `plan` of Terraform instance `instance`
    /// (`POST /v0/terraform-instances/{id}/approve`): the controller applies exactly that plan.
    /// `Conflict` when no plan awaits approval, another replaced it, or it is stale.
    pub async fn approve_terraform_plan(
        &self,
        instance: ObjectId,
        plan: &str,
    ) -> Result<threeport_core::Object<crate::model::TerraformInstance>, ClientError> {
        let url = format!("{}/v0/terraform-instances/{instance}/approve", self.base);
        let request = self
            .request(Method::POST, &url)
            .json(&serde_json::json!({ "plan": plan }));
        // Approving the same plan twice is refused, never applied twice.
        self.send(request, Repeat::Safe).await
    }

    /// The outputs of Terraform instance `instance`'s last apply, name → `{sensitive, value}`;
    /// sensitive values only with `sensitive` (`GET /v0/terraform-instances/{id}/outputs`).
    pub async fn terraform_outputs(
        &self,
        instance: ObjectId,
        sensitive: bool,
    ) -> Result<Value, ClientError> {
        let url = format!(
            "{}/v0/terraform-instances/{instance}/outputs?sensitive={sensitive}",
            self.base
        );
        self.send(self.request(Method::GET, &url), Repeat::Safe)
            .await
    }

    /// The server's release (`GET /version`).
    pub async fn server_version(&self) -> Result<String, ClientError> {
        let request = self.request(Method::GET, &format!("{}/version", self.base));
        let answer: Value = self.send(request, Repeat::Safe).await?;
        answer["version"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Server {
                status: None,
                message: format!("/version answered without a version: {answer}"),
            })
    }

    /// Whether the control plane is ready to serve (`GET /readyz` answers 200).
    pub async fn ready(&self) -> Result<(), ClientError> {
        let response = self
            .request(Method::GET, &format!("{}/readyz", self.base))
            .send()
            .await?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(ClientError::Unavailable {
                message: format!(
                    "/readyz answered {status}: {}",
                    response.text().await.unwrap_or_default().trim()
                ),
            })
        }
    }

    /// The base URL requests go to (`http://127.0.0.1:1323`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Deletes the workload `name` and every part its composite create made (they are owned
    /// by its definition); `dry_run`: only says what would go. Answers the deletion plan.
    pub async fn delete_workload(
        &self,
        name: &str,
        propagation: Propagation,
        dry_run: bool,
    ) -> Result<DeletionPlan, ClientError> {
        let name = utf8_percent_encode_segment(name);
        let mut query = vec![("propagation", propagation_name(propagation))];
        if dry_run {
            query.push(("dry_run", "true"));
        }
        let request = self
            .request(
                Method::DELETE,
                &format!("{}/v0/workloads/{name}", self.base),
            )
            .query(&query);
        self.send(request, Repeat::Safe).await
    }

    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let mut request = self.http.request(method.clone(), url);
        if method == Method::POST {
            // Creates are made safe to repeat: the server answers a repeat with the first
            // answer's objects.
            request = request.header(IDEMPOTENCY_KEY, uuid::Uuid::now_v7().to_string());
        }
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`, retrying as [`Retry`] says when the answer is unavailable.
    async fn send<R: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        repeat: Repeat,
    ) -> Result<R, ClientError> {
        let mut retry = 0;
        loop {
            let attempt = request.try_clone().ok_or_else(|| ClientError::Server {
                status: None,
                message: "the request cannot be sent twice".into(),
            })?;
            match send_once(attempt).await {
                Ok(answer) => return Ok(answer),
                Err(Failure {
                    retry: Some(hint), ..
                }) if retry < self.retry.retries && (repeat == Repeat::Safe || !hint.reached) => {
                    let wait = hint.wait.unwrap_or_else(|| self.retry.delay(retry));
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                Err(failure) => return Err(failure.error),
            }
        }
    }
}

/// The header that makes a create safe to repeat (IETF draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Whether a request may be sent again after an unavailable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Repeating does what doing once does (reads, deletes, merge patches, keyed creates).
    Safe,
    /// Only if it never reached the server (a replace with `If-Match`).
    IfUnsent,
}

/// A failed attempt, and whether trying again may help.
struct Failure {
    error: ClientError,
    retry: Option<RetryHint>,
}

/// An unavailable answer: whether the server may have acted on the request, and how long it
/// asked the client to wait (`Retry-After`).
struct RetryHint {
    reached: bool,
    wait: Option<Duration>,
}

impl From<ClientError> for Failure {
    /// A final answer: not retried.
    fn from(error: ClientError) -> Self {
        Failure { error, retry: None }
    }
}

fn decode_error(err: serde_json::Error) -> ClientError {
    ClientError::Server {
        status: None,
        message: format!("cannot encode or decode: {err}"),
    }
}

/// Sends a request once; decodes a success as `R`, an error body into a [`ClientError`]. An
/// unavailable answer says whether trying again may help.
async fn send_once<R: DeserializeOwned>(request: RequestBuilder) -> Result<R, Failure> {
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            // A refused connection never reached the server; a timeout or a reset may have.
            let reached = !err.is_connect();
            let error = ClientError::from(err);
            let retry = matches!(error, ClientError::Unavailable { .. }).then_some(RetryHint {
                reached,
                wait: None,
            });
            return Err(Failure { error, retry });
        }
    };
    let status = response.status();
    let wait = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds.min(60)));
    let bytes = response
        .bytes()
        .await
        .map_err(|err| Failure::from(ClientError::from(err)))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|err| decode_error(err).into());
    }
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let message = body["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    let error = match status {
        StatusCode::NOT_FOUND => ClientError::NotFound { message },
        StatusCode::CONFLICT => ClientError::Conflict { message },
        StatusCode::BAD_REQUEST => ClientError::Invalid {
            field: body["field"].as_str().unwrap_or("request").to_owned(),
            message,
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ClientError::Unauthorized { message },
        StatusCode::SERVICE_UNAVAILABLE => {
            return Err(Failure {
                error: ClientError::Unavailable { message },
                retry: Some(RetryHint {
                    reached: true,
                    wait,
                }),
            });
        }
        other => ClientError::Server {
            status: Some(other.as_u16()),
            message,
        },
    };
    Err(error.into())
}

/// The objects of one kind, untyped (specs and statuses as JSON), from [`Client::kind`]: for
/// kinds known only at run time and for language bindings. [`Resource`] is its typed face.
#[derive(Debug, Clone)]
pub struct RawResource {
    client: Client,
    kind: String,
    path: String,
}

impl RawResource {
    /// The kind's name.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Creates an object; decodes the answer as `R` (`RawObject`, `Object<T>`, `Value`).
    pub async fn create<R: DeserializeOwned>(
        &self,
        name: &str,
        labels: &Labels,
        spec: &impl Serialize,
    ) -> Result<R, ClientError> {
        let body = serde_json::json!({ "name": name, "labels": labels, "spec": spec });
        self.client
            .send(
                self.client.request(Method::POST, &self.path).json(&body),
                Repeat::Safe,
            )
            .await
    }

    /// Reads an object.
    pub async fn get<R: DeserializeOwned>(&self, id: ObjectId) -> Result<R, ClientError> {
        let request = self
            .client
            .request(Method::GET, &format!("{}/{id}", self.path));
        self.client.send(request, Repeat::Safe).await
    }

    /// One page of objects: the items and the cursor of the next page.
    pub async fn list<R: DeserializeOwned>(
        &self,
        params: &ListParams,
    ) -> Result<(Vec<R>, Option<ObjectId>), ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(name) = &params.name {
            query.push(("name", name.clone()));
        }
        for (key, value) in &params.labels {
            query.push(("label", format!("{key}={value}")));
        }
        for (field, id) in &params.references {
            query.push(("ref", format!("{field}={id}")));
        }
        if let Some(after) = params.after {
            query.push(("after", after.to_string()));
        }
        if let Some(limit) = params.limit {
            query.push(("limit", limit.to_string()));
        }
        #[derive(Deserialize)]
        struct RawPage<R> {
            items: Vec<R>,
            next: Option<ObjectId>,
        }
        let request = self.client.request(Method::GET, &self.path).query(&query);
        let page: RawPage<R> = self.client.send(request, Repeat::Safe).await?;
        Ok((page.items, page.next))
    }

    /// Every object matching the filters, following the cursor to the end.
    pub async fn list_all<R: DeserializeOwned>(
        &self,
        params: &ListParams,
    ) -> Result<Vec<R>, ClientError> {
        let mut params = params.clone();
        let mut all = Vec::new();
        loop {
            let (items, next) = self.list(&params).await?;
            all.extend(items);
            match next {
                Some(next) => params.after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Replaces an object's spec and labels, if its version is still `version`.
    pub async fn replace<R: DeserializeOwned>(
        &self,
        id: ObjectId,
        version: u64,
        labels: &Labels,
        spec: &impl Serialize,
    ) -> Result<R, ClientError> {
        let body = serde_json::json!({ "labels": labels, "spec": spec });
        let request = self
            .client
            .request(Method::PUT, &format!("{}/{id}", self.path))
            .header("If-Match", format!("\"{version}\""));
        self.client
            .send(request.json(&body), Repeat::IfUnsent)
            .await
    }

    /// Applies a JSON merge patch (`{"spec": {…}, "labels": {…}}`).
    pub async fn patch<R: DeserializeOwned>(
        &self,
        id: ObjectId,
        patch: &Value,
    ) -> Result<R, ClientError> {
        let request = self
            .client
            .request(Method::PATCH, &format!("{}/{id}", self.path));
        self.client.send(request.json(patch), Repeat::Safe).await
    }

    /// Schedules deletion; the object goes once its controller has cleaned up.
    pub async fn delete<R: DeserializeOwned>(&self, id: ObjectId) -> Result<R, ClientError> {
        self.delete_with(id, Propagation::Foreground).await
    }

    /// Schedules deletion, with `propagation` for the objects it owns.
    pub async fn delete_with<R: DeserializeOwned>(
        &self,
        id: ObjectId,
        propagation: Propagation,
    ) -> Result<R, ClientError> {
        let request = self
            .client
            .request(Method::DELETE, &format!("{}/{id}", self.path))
            .query(&[("propagation", propagation_name(propagation))]);
        self.client.send(request, Repeat::Safe).await
    }

    /// What deleting the object with `propagation` would delete and orphan; deletes nothing.
    pub async fn deletion_plan(
        &self,
        id: ObjectId,
        propagation: Propagation,
    ) -> Result<DeletionPlan, ClientError> {
        let request = self
            .client
            .request(Method::DELETE, &format!("{}/{id}", self.path))
            .query(&[
                ("propagation", propagation_name(propagation)),
                ("dry_run", "true"),
            ]);
        self.client.send(request, Repeat::Safe).await
    }

    /// Creates an object owned by `owners` (fixed afterwards): deleting one of them deletes it
    /// first.
    pub async fn create_owned<R: DeserializeOwned>(
        &self,
        name: &str,
        labels: &Labels,
        owners: &[ObjectRef],
        spec: &impl Serialize,
    ) -> Result<R, ClientError> {
        let body =
            serde_json::json!({ "name": name, "labels": labels, "owners": owners, "spec": spec });
        self.client
            .send(
                self.client.request(Method::POST, &self.path).json(&body),
                Repeat::Safe,
            )
            .await
    }
}

/// `name` as one URL path segment.
fn utf8_percent_encode_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The `propagation` query value.
fn propagation_name(propagation: Propagation) -> &'static str {
    match propagation {
        Propagation::Foreground => "foreground",
        Propagation::Orphan => "orphan",
    }
}

/// The objects of one kind, from [`Client::api`].
#[derive(Debug, Clone)]
pub struct Resource<T> {
    raw: RawResource,
    kind: PhantomData<fn() -> T>,
}

impl<T: ApiObject> Resource<T> {
    /// Creates an object.
    pub async fn create(&self, name: &str, spec: &T) -> Result<Object<T>, ClientError> {
        self.create_labelled(name, &Labels::new(), spec).await
    }

    /// Creates an object with labels.
    pub async fn create_labelled(
        &self,
        name: &str,
        labels: &Labels,
        spec: &T,
    ) -> Result<Object<T>, ClientError> {
        self.raw.create(name, labels, spec).await
    }

    /// Reads an object.
    pub async fn get(&self, id: ObjectId) -> Result<Object<T>, ClientError> {
        self.raw.get(id).await
    }

    /// One page of objects.
    pub async fn list(&self, params: &ListParams) -> Result<Page<T>, ClientError> {
        let (items, next) = self.raw.list(params).await?;
        Ok(Page { items, next })
    }

    /// Every object matching the filters, following the cursor to the end.
    pub async fn list_all(&self, params: &ListParams) -> Result<Vec<Object<T>>, ClientError> {
        self.raw.list_all(params).await
    }

    /// Replaces the object's spec and labels, if its version is still `obj.meta.version`.
    pub async fn replace(&self, obj: &Object<T>) -> Result<Object<T>, ClientError> {
        self.raw
            .replace(obj.meta.id, obj.meta.version, &obj.meta.labels, &obj.spec)
            .await
    }

    /// Applies a JSON merge patch (`{"spec": {…}, "labels": {…}}`).
    pub async fn patch(&self, id: ObjectId, patch: &Value) -> Result<Object<T>, ClientError> {
        self.raw.patch(id, patch).await
    }

    /// Schedules deletion; the object goes once its controller has cleaned up, after the
    /// objects it owns (foreground propagation).
    pub async fn delete(&self, id: ObjectId) -> Result<Object<T>, ClientError> {
        self.raw.delete(id).await
    }

    /// Schedules deletion with `propagation` for the objects it owns (`Orphan` keeps them).
    pub async fn delete_with(
        &self,
        id: ObjectId,
        propagation: Propagation,
    ) -> Result<Object<T>, ClientError> {
        self.raw.delete_with(id, propagation).await
    }

    /// What deleting the object would delete and orphan; deletes nothing.
    pub async fn deletion_plan(
        &self,
        id: ObjectId,
        propagation: Propagation,
    ) -> Result<DeletionPlan, ClientError> {
        self.raw.deletion_plan(id, propagation).await
    }

    /// Creates an object owned by `owners` (see [`ObjectRef`]).
    pub async fn create_owned(
        &self,
        name: &str,
        owners: &[ObjectRef],
        spec: &T,
    ) -> Result<Object<T>, ClientError> {
        self.raw
            .create_owned(name, &Labels::new(), owners, spec)
            .await
    }

    /// Polls the object until `done` holds (e.g. `Object::is_reconciled`), at most `timeout`.
    pub async fn wait_until(
        &self,
        id: ObjectId,
        timeout: Duration,
        mut done: impl FnMut(&Object<T>) -> bool,
    ) -> Result<Object<T>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let obj = self.get(id).await?;
            if done(&obj) {
                return Ok(obj);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Unavailable {
                    message: format!("{} {id} did not get there within {timeout:?}", T::KIND),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
