//! Opening the control plane's backends from its configuration: SQLite in a data directory
//! with the durable bus in the same database by default; PostgreSQL/CockroachDB and NATS
//! JetStream when given.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use threeport_bus::{NatsBus, NatsConfig};
use threeport_core::store::ListQuery;
use threeport_core::{Bus, Error, Locker, Outbox, Result, Store};
use threeport_store::ConnectOptions;

use crate::ops::Probe;

/// Where the control plane keeps objects and sends notifications.
#[derive(Debug, Clone, Default)]
pub struct PlaneConfig {
    /// `postgres://…` for the distributed control plane; `None`: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Holds the SQLite database (and the token file) of the embedded default.
    pub data_dir: PathBuf,
    /// `nats://…` for the distributed control plane; `None`: the durable bus in the database
    /// ([`threeport_store::SqlBus`]).
    pub nats_url: Option<String>,
    /// Most database connections of this process (see [`ConnectOptions::max_connections`]);
    /// 0: the default.
    pub max_connections: u32,
}

/// The opened backends.
#[derive(Debug, Clone)]
pub struct Plane {
    /// Objects.
    pub store: Arc<dyn Store>,
    /// Notifications written with the objects, for the relay.
    pub outbox: Arc<dyn Outbox>,
    /// Where notifications go.
    pub bus: Arc<dyn Bus>,
    /// Per-object leases for controllers.
    pub locker: Arc<dyn Locker>,
    /// Readiness checks of the backends.
    pub probes: Vec<Probe>,
    /// One line saying what was opened (secrets in URLs left out).
    pub description: String,
}

/// Opens the backends `config` names, creating the data directory if needed.
pub async fn open(config: &PlaneConfig) -> Result<Plane> {
    let mut options = ConnectOptions::default();
    if config.max_connections > 0 {
        options.max_connections = config.max_connections;
    }
    let (url, database) = match &config.database_url {
        Some(url) => (url.clone(), "PostgreSQL".to_owned()),
        None => {
            std::fs::create_dir_all(&config.data_dir).map_err(|e| {
                Error::invalid(
                    "data_dir",
                    format!("cannot create {}: {e}", config.data_dir.display()),
                )
            })?;
            let file = config.data_dir.join("threeport.db");
            (
                format!("sqlite://{}", file.display()),
                format!("SQLite at {}", file.display()),
            )
        }
    };
    let sql = threeport_store::connect(&url, &options).await?;
    let store = sql.store.clone();
    let mut probes = vec![Probe::new("store", move || {
        let store = store.clone();
        async move {
            store
                .list("Readiness", &ListQuery::default().limit(1))
                .await
                .map(drop)
        }
    })];
    let (bus, locker, bus_description): (Arc<dyn Bus>, Arc<dyn Locker>, String) =
        match &config.nats_url {
            Some(nats_url) => {
                let client = threeport_bus::connect(nats_url, Duration::from_secs(10)).await?;
                let bus = NatsBus::new(client.clone(), NatsConfig::default());
                let locker = Arc::new(bus.locker().await?);
                probes.push(Probe::new("bus", move || {
                    let state = client.connection_state();
                    async move {
                        match state {
                            async_nats::connection::State::Connected => Ok(()),
                            other => Err(Error::unavailable(format!("NATS connection is {other}"))),
                        }
                    }
                }));
                (Arc::new(bus), locker, "NATS JetStream".to_owned())
            }
            None => (
                sql.bus.clone(),
                sql.locker.clone(),
                "bus in the database".to_owned(),
            ),
        };
    Ok(Plane {
        store: sql.store,
        outbox: sql.outbox,
        bus,
        locker,
        probes,
        description: format!("{database}, {bus_description}"),
    })
}
