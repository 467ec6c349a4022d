//! A reconciler of a kind of one's own that runs anywhere: it needs only the control plane's
//! URL and a token (one limited to the kind will do: `threeport-server token --kinds
//! Certificate --add-to <data-dir>/tokens`). The store, the bus and the leases are the
//! control plane's, reached over its `/v0/engine` API, so replicas here, in the control plane
//! and in Python share the work with the same guarantees.
//!
//! Run: `THREEPORT_TOKEN=tp_… cargo run -p threeport-examples --bin remote_reconciler --
//! http://127.0.0.1:1323 Certificate`
//!
//! Environment: `THREEPORT_TOKEN`; `REPLICA` (a name recorded in each object's status);
//! `LEASE_MS` (lease TTL and ack-wait, default 30 s); `RECONCILE_LOG` (a file each reconcile
//! appends `start|end <id> <replica> <unix ns>` lines to, to check that no two overlap). A
//! spec's integer `work_ms` makes its reconcile take that long.

use std::io::Write;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use threeport_api::{Client, remote};
use threeport_core::{
    Action, Context, Controller, ControllerConfig, Dynamic, Object, ReconcileError, Reconciler,
};
use tokio_util::sync::CancellationToken;

/// Records who reconciled the object and which generation.
struct Recorder {
    kind: String,
    replica: String,
    log: Option<std::path::PathBuf>,
}

impl Recorder {
    /// One line of the reconcile log, written with one `write` call in append mode, so lines
    /// of several processes do not interleave.
    fn log(&self, event: &str, obj: &Object<Dynamic>) {
        let Some(path) = &self.log else { return };
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let line = format!("{event} {} {} {nanos}\n", obj.id(), self.replica);
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

#[async_trait]
impl Reconciler for Recorder {
    type Object = Dynamic;

    fn kind(&self) -> &str {
        &self.kind
    }

    async fn reconcile(
        &self,
        obj: &mut Object<Dynamic>,
        _ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        self.log("start", obj);
        if let Some(work) = obj.spec.0.get("work_ms").and_then(|v| v.as_u64()) {
            tokio::time::sleep(Duration::from_millis(work)).await;
        }
        obj.status.details = serde_json::json!({
            "reconciled_by": self.replica,
            "generation": obj.meta.generation,
        });
        self.log("end", obj);
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
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(kind)) = (args.next(), args.next()) else {
        return Err("usage: remote_reconciler <control plane URL> <Kind>".into());
    };
    let mut client = Client::builder(url);
    if let Ok(token) = std::env::var("THREEPORT_TOKEN") {
        client = client.token(token);
    }
    let backends = remote::backends(&client.build()?);
    let lease = std::env::var("LEASE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_millis);
    let recorder = Recorder {
        kind,
        replica: std::env::var("REPLICA").unwrap_or_else(|_| "remote".into()),
        log: std::env::var_os("RECONCILE_LOG").map(Into::into),
    };
    let controller = Controller::new(recorder, backends).with_config(ControllerConfig {
        lease_ttl: lease,
        ack_wait: lease,
        resync_grace: Duration::from_millis(500),
        ..ControllerConfig::default()
    });
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    println!("reconciling, with the control plane's backends");
    controller.run(shutdown).await?;
    Ok(())
}
