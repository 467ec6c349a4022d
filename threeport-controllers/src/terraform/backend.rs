//! Terraform's HTTP state backend, served on loopback by each controller process that runs
//! Terraform, over the [`StateStore`]: `GET`/`POST`/`DELETE` for the state, `LOCK`/`UNLOCK`
//! with Terraform's semantics (a refused lock is answered `423 Locked` with the holder's
//! lock information). Addresses carry the instance and the run (`/<instance>/<run>`), so a
//! run's lock can be renewed while it works and lapses if it dies. Requests must carry the
//! process's random password (HTTP basic auth): other local users cannot reach the state.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::Value;
use threeport_core::{Error, ObjectId, Result};
use tokio_util::sync::CancellationToken;

use super::state::{StateRefusal, StateStore};

/// User name of the backend's basic auth.
const USER: &str = "threeport";

/// A running backend.
#[derive(Debug, Clone)]
pub struct StateBackend {
    addr: SocketAddr,
    password: String,
    states: StateStore,
}

#[derive(Clone)]
struct Shared {
    states: StateStore,
    authorization: String,
}

impl StateBackend {
    /// Serves `states` on a free loopback port until `shutdown`.
    pub async fn start(states: StateStore, shutdown: CancellationToken) -> Result<StateBackend> {
        use base64::Engine;
        let password = random_hex()?;
        let authorization = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"))
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::unavailable(format!("Terraform state backend: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::unavailable(format!("Terraform state backend: {e}")))?;
        let app = Router::new()
            .route("/{instance}/{run}", any(handle))
            .with_state(Shared {
                states: states.clone(),
                authorization,
            });
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "Terraform state backend stopped");
            }
        });
        Ok(StateBackend {
            addr,
            password,
            states,
        })
    }

    /// The states it serves.
    pub fn states(&self) -> &StateStore {
        &self.states
    }

    /// The environment that points Terraform's `http` backend at `instance`'s state for run
    /// `run` (`TF_HTTP_*`).
    pub fn environment(&self, instance: ObjectId, run: &str) -> Vec<(String, String)> {
        let address = format!("http://{}/{instance}/{run}", self.addr);
        vec![
            ("TF_HTTP_ADDRESS".into(), address.clone()),
            ("TF_HTTP_LOCK_ADDRESS".into(), address.clone()),
            ("TF_HTTP_UNLOCK_ADDRESS".into(), address),
            ("TF_HTTP_LOCK_METHOD".into(), "LOCK".into()),
            ("TF_HTTP_UNLOCK_METHOD".into(), "UNLOCK".into()),
            ("TF_HTTP_USERNAME".into(), USER.into()),
            ("TF_HTTP_PASSWORD".into(), self.password.clone()),
        ]
    }
}

pub(crate) fn random_hex() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::unavailable("the system random generator failed"))?;
    Ok(hex::encode(bytes))
}

#[derive(serde::Deserialize)]
struct LockQuery {
    #[serde(rename = "ID")]
    id: Option<String>,
}

async fn handle(
    State(shared): State<Shared>,
    Path((instance, run)): Path<(String, String)>,
    Query(query): Query<LockQuery>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorized = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        // Digests compared, so the comparison's time says nothing about the password.
        .is_some_and(|value| {
            let digest = |v: &str| ring::digest::digest(&ring::digest::SHA256, v.as_bytes());
            digest(value).as_ref() == digest(&shared.authorization).as_ref()
        });
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
    }
    let Ok(instance) = instance.parse::<uuid::Uuid>().map(ObjectId) else {
        return (StatusCode::NOT_FOUND, "no such instance").into_response();
    };
    let states = &shared.states;
    let lock_id = query.id.as_deref();
    let outcome = match method.as_str() {
        "GET" => match states.read(instance).await {
            Ok(Some(state)) => return (StatusCode::OK, state).into_response(),
            Ok(None) => return StatusCode::NO_CONTENT.into_response(),
            Err(err) => Err(StateRefusal::Failed(err)),
        },
        "POST" => match std::str::from_utf8(&body) {
            Ok(state) => states.write(instance, lock_id, state).await,
            Err(_) => return (StatusCode::BAD_REQUEST, "state is not UTF-8").into_response(),
        },
        "DELETE" => states.clear(instance, lock_id).await,
        "LOCK" | "UNLOCK" => {
            let Ok(info) = serde_json::from_slice::<Value>(&body) else {
                return (StatusCode::BAD_REQUEST, "lock information is not JSON").into_response();
            };
            if method.as_str() == "LOCK" {
                states.lock(instance, &run, info).await
            } else {
                let id = info.get("ID").and_then(Value::as_str).unwrap_or_default();
                states.unlock(instance, id).await
            }
        }
        _ => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
    };
    match outcome {
        Ok(()) => StatusCode::OK.into_response(),
        Err(StateRefusal::Locked(info)) => {
            // Terraform reads the holder's lock information from a 423's body.
            (StatusCode::LOCKED, axum::Json(info)).into_response()
        }
        Err(StateRefusal::Failed(err)) => {
            tracing::warn!(%instance, error = %err, "Terraform state backend");
            (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response()
        }
    }
}
