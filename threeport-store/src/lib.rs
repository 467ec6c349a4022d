//! # threeport-store
//!
//! SQL implementations of `threeport-core`'s [`Store`], [`Outbox`], [`Locker`] and [`Bus`]:
//!
//! - [`PgStore`] for PostgreSQL and CockroachDB (production): JSONB columns with inverted (GIN)
//!   indexes for label and reference filters, a unique `(kind, name)` index, cursor pagination
//!   on `(kind, id)`, link checks and deletions on row locks (serialization failures and
//!   deadlocks retried), lease deadlines on the
//!   database clock, tokens from a sequence;
//! - [`SqliteStore`] for the embedded default: one file (or memory), no server.
//!
//! Both apply their embedded migrations at connect, write each desired-state change and its
//! notification in one transaction (the outbox), and pass the core conformance suites.
//!
//! [`SqlBus`] is a durable bus in the same database, for control planes without NATS: a
//! notification stays in the database until the reconcile it caused is acked.
//!
//! ```no_run
//! # async fn demo() -> threeport_core::Result<()> {
//! use threeport_store::{connect, ConnectOptions};
//!
//! let backends = connect("sqlite://threeport.db", &ConnectOptions::default()).await?;
//! // backends.store / backends.outbox / backends.locker / backends.bus are ready for the runtime.
//! # Ok(()) }
//! ```
//!
//! TLS to PostgreSQL (rustls) is configured in the URL:
//! `postgres://user@db.example.com/threeport?sslmode=verify-full&sslrootcert=/etc/ca.pem`.

mod bus;
mod coalesce;
mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

pub use bus::{SqlBus, SqlBusConfig};
pub use postgres::{PgStore, batched_writes};
pub use sql::transaction_retries;
pub use sqlite::SqliteStore;
use threeport_core::{Bus, Error, Locker, Outbox, Result, Store};

/// Pool settings shared by both backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long to wait for a connection (at start: for the server to answer).
    pub connect_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A connected SQL backend as the trait objects the runtime and the API use.
#[derive(Debug, Clone)]
pub struct SqlBackends {
    /// Objects.
    pub store: Arc<dyn Store>,
    /// Notifications committed with the objects.
    pub outbox: Arc<dyn Outbox>,
    /// Leases.
    pub locker: Arc<dyn Locker>,
    /// The durable bus in the same database ([`SqlBus`]), for deployments without NATS.
    pub bus: Arc<dyn Bus>,
}

/// Connects by URL scheme: `postgres://` / `postgresql://` (PostgreSQL or CockroachDB) or
/// `sqlite://path` / `sqlite::memory:`. Applies migrations.
///
/// Errors: `Invalid` (field `database_url`) for an unknown scheme or malformed URL,
/// `Unavailable` when the server does not answer, `Invalid` (field `database`) when the schema
/// is newer than this binary.
pub async fn connect(url: &str, options: &ConnectOptions) -> Result<SqlBackends> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = Arc::new(PgStore::connect(url, options).await?);
        Ok(SqlBackends {
            bus: Arc::new(SqlBus::postgres(&store)),
            store: store.clone(),
            outbox: store.clone(),
            locker: store,
        })
    } else if url.starts_with("sqlite:") {
        let store = Arc::new(SqliteStore::connect(url, options).await?);
        Ok(SqlBackends {
            bus: Arc::new(SqlBus::sqlite(&store)),
            store: store.clone(),
            outbox: store.clone(),
            locker: store,
        })
    } else {
        let scheme = url.split(':').next().unwrap_or_default();
        Err(Error::invalid(
            "database_url",
            format!(
                "unsupported scheme {scheme:?}: expected postgres://, postgresql:// or sqlite:"
            ),
        ))
    }
}

/// Maps a migration failure to a clear error; a schema newer than this binary is named so.
fn migrate_error(err: sqlx::migrate::MigrateError, migrator: &sqlx::migrate::Migrator) -> Error {
    match err {
        sqlx::migrate::MigrateError::VersionMissing(version) => {
            let known = migrator.iter().map(|m| m.version).max().unwrap_or_default();
            Error::invalid(
                "database",
                format!(
                    "the database schema has migration {version}, newer than this binary knows \
                     (up to {known}): upgrade threeport, or point it at another database"
                ),
            )
        }
        other => Error::backend(format!("applying migrations: {other}")),
    }
}
