//! A throwaway PostgreSQL cluster a test owns: `initdb` in a temporary directory, a server on
//! a free loopback port, stopped and started again on demand (`pg_ctl stop -m fast` as systemd
//! and failover tools do, or `-m immediate`, a crash). PostgreSQL refuses to run as root: as
//! root, its commands run as the `postgres` user.

use std::path::PathBuf;
use std::process::Command;

/// A private PostgreSQL server.
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// How `pg_ctl stop` stops the server.
#[derive(Debug, Clone, Copy)]
pub enum StopMode {
    /// Sessions are terminated (SQLSTATE 57P01), then a clean shutdown.
    Fast,
    /// No shutdown at all: crash recovery at the next start.
    Immediate,
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PgCluster {
    /// Initialises and starts a cluster (trust authentication, user `postgres`). Panics with
    /// the reason if PostgreSQL is not installed: `./scripts/test` makes sure it is.
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect(
                "PostgreSQL is installed under /usr/lib/postgresql (./scripts/test installs it)",
            )
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir =
            std::env::temp_dir().join(format!("threeport-pg-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = PgCluster { bin, dir, port };
        if running_as_root() {
            Command::new("chown")
                .arg("postgres")
                .arg(&cluster.dir)
                .status()
                .unwrap();
        }
        cluster.run(
            "initdb",
            &[
                "-D",
                cluster.data().to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        cluster.start_again();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let output = if running_as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        }
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }

    /// Stops the server.
    pub fn stop(&self, mode: StopMode) {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                mode,
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.stop(StopMode::Immediate)
        }));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
