//! `tptctl up` / `tptctl down`: a control plane on this machine (the embedded default:
//! `threeport-server serve`, SQLite and the bus in a data directory under the user's data dir),
//! recorded as context `local`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::contexts::{Context, Contexts};
use crate::error::CliError;

/// The `threeport-server` binary: `explicit`, else `$THREEPORT_SERVER_BIN`, else the one
/// beside `tptctl` (how `cargo install` and the release archives lay them out), else PATH's.
pub fn server_binary(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_owned();
    }
    if let Some(path) = std::env::var_os("THREEPORT_SERVER_BIN") {
        return PathBuf::from(path);
    }
    if let Ok(me) = std::env::current_exe() {
        let beside = me.with_file_name("threeport-server");
        if beside.is_file() {
            return beside;
        }
    }
    PathBuf::from("threeport-server")
}

/// The local control plane's directory: `explicit`, else `<data dir>/tptctl/local`.
pub fn data_dir(explicit: Option<&Path>) -> PathBuf {
    explicit.map(Path::to_path_buf).unwrap_or_else(|| {
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("tptctl")
            .join("local")
    })
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("server.pid")
}

/// Whether process `pid` is alive (signal 0).
fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn running(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file(dir))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .filter(|pid| alive(*pid))
}

/// The last lines of the server's log, to explain a failed start.
fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// What `up` needs.
pub struct Up<'a> {
    /// The server binary.
    pub server: PathBuf,
    /// Its data directory.
    pub dir: PathBuf,
    /// Where it listens (`127.0.0.1:0`: a free port).
    pub listen: String,
    /// The contexts file to record it in.
    pub contexts_file: &'a Path,
    /// The context's name.
    pub context: &'a str,
}

/// Starts the local control plane (unless it runs), waits until it is ready, and records and
/// selects its context. Returns its URL.
pub async fn up(up: Up<'_>) -> Result<String, CliError> {
    let mut contexts = Contexts::load(up.contexts_file)?;
    if let Some(pid) = running(&up.dir) {
        // One server per data directory: a second would share its SQLite files.
        let Some(context) = contexts.contexts.get(up.context) else {
            return Err(CliError::new(format!(
                "a control plane (pid {pid}) already runs on {}, but no context {:?} records \
                 it: stop it with `tptctl down` first",
                up.dir.display(),
                up.context
            )));
        };
        let url = context.url.clone();
        contexts.current = Some(up.context.to_owned());
        contexts.save(up.contexts_file)?;
        eprintln!("already running (pid {pid})");
        return Ok(url);
    }
    std::fs::create_dir_all(&up.dir)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", up.dir.display())))?;
    let spawn_error = |e: std::io::Error| {
        CliError::new(format!(
            "cannot run {}: {e} (install it, or name it with --server-bin)",
            up.server.display()
        ))
    };
    // A token of our own, added to the server's token file before it starts.
    let minted = Command::new(&up.server)
        .arg("token")
        .arg("--add-to")
        .arg(up.dir.join("tokens"))
        .output()
        .map_err(spawn_error)?;
    let token = String::from_utf8_lossy(&minted.stdout)
        .split_whitespace()
        .find(|word| word.starts_with("tp_"))
        .map(str::to_owned)
        .ok_or_else(|| {
            CliError::new(format!(
                "{} token printed no token: {}",
                up.server.display(),
                String::from_utf8_lossy(&minted.stderr).trim()
            ))
        })?;
    let log_path = up.dir.join("server.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", log_path.display())))?;
    let mut command = Command::new(&up.server);
    command
        .arg("serve")
        .arg("--listen")
        .arg(&up.listen)
        .arg("--data-dir")
        .arg(&up.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(spawn_error)?)
        .stderr(log);
    // Its own process group: a Ctrl-C in this terminal later must not stop it.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().map_err(spawn_error)?;
    let pid = child.id();
    std::fs::write(pid_file(&up.dir), pid.to_string())
        .map_err(|e| CliError::new(format!("cannot write the pid file: {e}")))?;
    // The banner names the address (the port may have been chosen by the system).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let url = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(url) = text
            .lines()
            .find_map(|l| l.strip_prefix("threeport control plane on "))
            .and_then(|rest| rest.split_whitespace().next())
        {
            break url.to_owned();
        }
        if exited(&mut child) || tokio::time::Instant::now() >= deadline {
            return Err(CliError::new(format!(
                "the control plane did not start: {}",
                log_tail(&up.dir)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    loop {
        if ready(&url).await {
            break;
        }
        if exited(&mut child) || tokio::time::Instant::now() >= deadline {
            return Err(CliError::new(format!(
                "the control plane at {url} did not get ready: {}",
                log_tail(&up.dir)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    contexts.contexts.insert(
        up.context.to_owned(),
        Context {
            url: url.clone(),
            token: Some(token),
            ..Context::default()
        },
    );
    contexts.current = Some(up.context.to_owned());
    contexts.save(up.contexts_file)?;
    Ok(url)
}

/// Whether our child has exited (a zombie still answers `kill -0`).
fn exited(child: &mut std::process::Child) -> bool {
    !matches!(child.try_wait(), Ok(None))
}

/// Whether `<url>/readyz` answers 200.
async fn ready(url: &str) -> bool {
    let Ok(client) = threeport_api::Client::builder(url)
        .retry(threeport_api::Retry::none())
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return false;
    };
    client.ready().await.is_ok()
}

/// Stops the local control plane, if it runs; returns its pid.
pub async fn down(dir: &Path) -> Result<Option<u32>, CliError> {
    let Some(pid) = running(dir) else {
        let _ = std::fs::remove_file(pid_file(dir));
        return Ok(None);
    };
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::new(format!(
                "the control plane (pid {pid}) did not stop within 20s of SIGTERM"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(pid_file(dir));
    Ok(Some(pid))
}
