//! A control plane for a bench: the embedded default or the distributed one (PostgreSQL,
//! NATS, an `api` and `controller` processes), started from the built binary, measured and
//! cleaned up. Benches include it with `process` and `nats` beside it.

use std::path::PathBuf;

use sqlx::Connection;

use crate::{nats, process};

/// Peak resident memory of process `pid` in MB, from `/proc/<pid>/status` (`VmHWM`).
pub fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A control plane started for one run, and what to clean up after it.
pub struct Plane {
    /// `http://127.0.0.1:<port>` of the API.
    pub base: String,
    /// A token the API accepts.
    pub token: String,
    /// The processes by role (`serve`, `api`, `controller-<n>`).
    pub processes: Vec<(String, process::Server)>,
    /// The `/metrics` base URL of each controller process, in start order.
    pub controller_metrics: Vec<String>,
    /// The PostgreSQL database of a distributed plane.
    pub database_url: Option<String>,
    data: PathBuf,
    database: Option<(sqlx::PgConnection, String)>,
    nats: Option<nats::NatsServer>,
}

impl Plane {
    /// `threeport-server serve` on SQLite in a new data directory.
    pub async fn embedded() -> Plane {
        let data = process::temp_dir();
        let server = process::serve(&data, &[]).await;
        Plane {
            base: server.base.clone(),
            token: server.token.clone().expect("a first start mints a token"),
            processes: vec![("serve".to_owned(), server)],
            controller_metrics: Vec::new(),
            database_url: None,
            data,
            database: None,
            nats: None,
        }
    }

    /// An `api` and one `controller` process per entry of `controllers` (the controller
    /// names it runs), on a new PostgreSQL database and a nats-server of its own; `flags`
    /// go to every process.
    pub async fn distributed(controllers: &[&[&str]], flags: &[&str]) -> Plane {
        let admin_url = std::env::var("THREEPORT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let database = format!("threeport_bench_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        let url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{database}"),
            None => panic!("{admin_url} names no database"),
        };
        let nats = nats::NatsServer::start().await;
        let data = process::temp_dir();
        let (api, plane) = process::distributed_api(&data, &url, &nats.url, flags).await;
        let token = api.token.clone().expect("the api's token");
        let mut processes = vec![("api".to_owned(), api)];
        let mut controller_metrics = Vec::new();
        for (n, names) in controllers.iter().enumerate() {
            let (controller, metrics) = process::controllers(names, &plane).await;
            processes.push((format!("controller-{}", n + 1), controller));
            controller_metrics.push(metrics.trim_end_matches("/metrics").to_owned());
        }
        Plane {
            base: processes[0].1.base.clone(),
            token,
            processes,
            controller_metrics,
            database_url: Some(url),
            data,
            database: Some((admin, database)),
            nats: Some(nats),
        }
    }

    /// The nats-server of a distributed plane.
    pub fn nats_url(&self) -> Option<String> {
        self.nats.as_ref().map(|nats| nats.url.clone())
    }

    /// Peak resident memory (`VmHWM`, MB) of each process, by role.
    pub fn peak_rss(&self) -> Vec<(String, f64)> {
        self.processes
            .iter()
            .map(|(name, server)| (name.clone(), peak_rss_mb(server.child.id().expect("pid"))))
            .collect()
    }

    /// Stops every process and removes what the plane made (database, data directory).
    pub async fn stop(self) {
        for (_, server) in self.processes {
            let _ = server.terminate().await;
        }
        drop(self.nats);
        if let Some((mut admin, database)) = self.database {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {database} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
