//! Two controller replicas share the work of reconciling 100 objects of a kind defined here.
//!
//! Run: `cargo run -p threeport-examples --bin replicas`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use threeport_core::{
    Action, Api, ApiObject, Context, Controller, ControllerConfig, ListQuery, MemoryBackends,
    Object, ReconcileError, Reconciler, ValidationError,
};
use tokio_util::sync::CancellationToken;

/// A website to serve: the kind this program defines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Website {
    domain: String,
    replicas: u32,
}

/// What the controller observed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct WebsiteStatus {
    url: String,
    served_by: String,
}

impl ApiObject for Website {
    const KIND: &'static str = "Website";
    type Status = WebsiteStatus;

    fn validate(&self) -> Result<(), ValidationError> {
        if !self.domain.contains('.') {
            return Err(ValidationError::new("domain", "must be a domain name"));
        }
        Ok(())
    }
}

/// "Deploys" a website: pretends to work for a moment, then records its URL.
struct WebsiteReconciler {
    replica: &'static str,
}

#[async_trait]
impl Reconciler for WebsiteReconciler {
    type Object = Website;

    async fn reconcile(
        &self,
        site: &mut Object<Website>,
        _ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        site.status.details.url = format!("https://{}", site.spec.domain);
        site.status.details.served_by = self.replica.to_owned();
        Ok(Action::Done)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    let relay = memory.spawn_relay(shutdown.clone());
    let mut replicas = Vec::new();
    for replica in ["replica-a", "replica-b"] {
        let controller = Controller::new(WebsiteReconciler { replica }, memory.backends())
            .with_config(ControllerConfig {
                concurrency: 4,
                ..ControllerConfig::default()
            });
        replicas.push(tokio::spawn(controller.run(shutdown.clone())));
    }

    let sites = Api::<Website>::new(memory.store.clone());
    let started = Instant::now();
    for i in 0..100 {
        let spec = Website {
            domain: format!("site{i}.example.com"),
            replicas: 2,
        };
        sites.create(format!("site-{i}"), spec).await?;
    }
    let rejected = sites
        .create(
            "bad",
            Website {
                domain: "nodot".into(),
                replicas: 1,
            },
        )
        .await
        .expect_err("validation rejects a bad domain");
    println!("rejected as expected: {rejected}");

    let all = loop {
        let all = sites.list_all(&ListQuery::default()).await?;
        if all.iter().all(Object::is_reconciled) {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut per_replica = BTreeMap::<String, usize>::new();
    for site in &all {
        *per_replica
            .entry(site.status.details.served_by.clone())
            .or_default() += 1;
    }
    println!(
        "all {} websites reconciled in {:?}; work per replica: {per_replica:?}",
        all.len(),
        started.elapsed()
    );

    shutdown.cancel();
    for replica in replicas {
        replica.await??;
    }
    relay.await?;
    Ok(())
}
