//! Test support: a moto server (AWS API mock) on a free loopback port.

#![allow(dead_code)] // each test binary uses its own subset

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A moto server on a free loopback port. The binary is `THREEPORT_MOTO_SERVER`, else
/// `moto_server` on PATH (`./scripts/test` installs moto).
pub struct Moto {
    _child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

/// Starts moto; panics (never skips) if it is not installed.
pub async fn moto() -> Moto {
    start(&[]).await
}

/// Starts moto checking credentials as AWS does: only keys of IAM users it made are accepted.
pub async fn moto_checking_credentials() -> Moto {
    start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).await
}

async fn start(env: &[(&str, &str)]) -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binary =
        std::env::var("THREEPORT_MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
    let child = Command::new(&binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        // The AWS managed policies (AmazonEKSClusterPolicy, …) exist, as in AWS.
        .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("moto is required ({binary}; ./scripts/test installs it): {e}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "moto did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Moto {
        _child: child,
        url: format!("http://127.0.0.1:{port}"),
    }
}
