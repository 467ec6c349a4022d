//! The API as the benches' clients use it: creates that must succeed, workload-instance pages,
//! and the fake cluster registered as the default runtime.

use serde_json::{Value, json};

use crate::plane::Plane;

/// A client of a bench's control plane.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// A client of `plane`'s API, with its token.
    pub fn of(plane: &Plane) -> Self {
        Api {
            http: reqwest::Client::new(),
            base: plane.base.clone(),
            token: plane.token.clone(),
        }
    }

    /// POSTs `body` to `/v0/<plural>`; asserts it was created; returns the new object's id.
    pub async fn post(&self, plural: &str, body: Value) -> String {
        let response = self
            .http
            .post(format!("{}/v0/{plural}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = response.status();
        let created: Value = response.json().await.expect("body");
        assert_eq!(status, reqwest::StatusCode::CREATED, "{plural}: {created}");
        created["id"].as_str().expect("id").to_owned()
    }

    /// One page of workload instances (`query`: `limit=…&after=…`).
    pub async fn page(&self, query: &str) -> Value {
        self.http
            .get(format!("{}/v0/workload-instances?{query}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("page")
    }

    /// Registers the fake API server at `kube_url` (token `bench`) as the default runtime.
    pub async fn register_runtime(&self, kube_url: &str) {
        let definition = self
            .post(
                "kubernetes-runtime-definitions",
                json!({"name": "existing", "spec": {"infra_provider": "existing"}}),
            )
            .await;
        self.post(
            "kubernetes-runtime-instances",
            json!({"name": "local", "spec": {
                "definition": definition, "location": "Europe:Paris", "default_runtime": true,
                "connection": {"api_endpoint": kube_url, "token": "bench"}}}),
        )
        .await;
    }
}
