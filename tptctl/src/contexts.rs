//! Control-plane contexts: where `tptctl` sends requests and with which credentials, kept in
//! `<config dir>/tptctl/config.yaml` (`$TPTCTL_CONFIG` or `--config-file` elsewhere), written
//! readable by its owner only since it holds tokens.
//!
//! ```yaml
//! current: local
//! contexts:
//!   local: {url: "http://127.0.0.1:1323", token: "tp_…"}
//!   prod: {url: "https://threeport.example.com", token: "tp_…", ca_file: /etc/tp/ca.pem}
//! ```
//!
//! `THREEPORT_URL` and `THREEPORT_TOKEN` (or `--url`, `--token`) override the context's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use threeport_api::Client;

use crate::error::CliError;

/// One control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// `http(s)://host:port` of its API.
    pub url: String,
    /// API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// PEM CA bundle the server's certificate is checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS (with `client_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM key of `client_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
}

/// The contexts file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contexts {
    /// The context used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Every context, by name.
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// Where the contexts file is: `explicit`, else `$TPTCTL_CONFIG`, else the user's config dir.
pub fn path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_owned();
    }
    if let Some(path) = std::env::var_os("TPTCTL_CONFIG") {
        return PathBuf::from(path);
    }
    dirs::config_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("tptctl")
        .join("config.yaml")
}

impl Contexts {
    /// Reads the file at `path`; a missing file is no contexts.
    pub fn load(path: &Path) -> Result<Contexts, CliError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml::from_str(&text)
                .map_err(|e| CliError::new(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contexts::default()),
            Err(e) => Err(CliError::new(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Writes the file at `path` (mode 0600), creating its directory.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let fail =
            |e: std::io::Error| CliError::new(format!("cannot write {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let text = serde_yaml::to_string(self).map_err(|e| CliError::new(e.to_string()))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        use std::io::Write;
        options
            .open(path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(fail)
    }

    /// The context to use: `name`, else the current one.
    pub fn pick(&self, name: Option<&str>) -> Result<Option<(String, Context)>, CliError> {
        match name.or(self.current.as_deref()) {
            None => Ok(None),
            Some(name) => self
                .contexts
                .get(name)
                .map(|context| Some((name.to_owned(), context.clone())))
                .ok_or_else(|| {
                    CliError::new(format!(
                        "no context {name:?} (known: {})",
                        self.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                }),
        }
    }
}

/// What the command line and environment say about the connection.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--url` / `THREEPORT_URL`.
    pub url: Option<String>,
    /// `--token` / `THREEPORT_TOKEN`.
    pub token: Option<String>,
    /// `--context`.
    pub context: Option<String>,
    /// `--config-file`.
    pub config_file: Option<PathBuf>,
}

/// A client for the chosen control plane.
pub fn client(overrides: &Overrides) -> Result<Client, CliError> {
    let contexts = Contexts::load(&path(overrides.config_file.as_deref()))?;
    let mut context = contexts
        .pick(overrides.context.as_deref())?
        .map(|(_, context)| context)
        .unwrap_or_default();
    if let Some(url) = &overrides.url {
        context.url = url.clone();
    }
    if let Some(token) = &overrides.token {
        context.token = Some(token.clone());
    }
    if context.url.is_empty() {
        return Err(CliError::new(
            "no control plane: run `tptctl up`, add one with `tptctl config set-context`, or set THREEPORT_URL",
        ));
    }
    let read = |path: &PathBuf| {
        std::fs::read(path)
            .map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))
    };
    let mut builder = Client::builder(&context.url);
    if let Some(token) = &context.token {
        builder = builder.token(token);
    }
    if let Some(ca) = &context.ca_file {
        builder = builder.ca_pem(read(ca)?);
    }
    match (&context.client_cert_file, &context.client_key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            builder = builder.identity_pem(pem);
        }
        (None, None) => {}
        _ => {
            return Err(CliError::new(
                "a client certificate and its key go together (client_cert_file, client_key_file)",
            ));
        }
    }
    Ok(builder.build()?)
}
