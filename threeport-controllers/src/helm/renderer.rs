//! Rendering charts: the [`ChartRenderer`] trait and its default implementation on the Helm
//! command line, [`HelmCli`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::Value;
use threeport_core::ReconcileError;

/// Where a chart comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChartSource {
    /// A chart in an HTTP(S) chart repository (an `index.yaml` and archives).
    Repository {
        /// The repository's URL.
        url: String,
        /// The chart's name in it.
        chart: String,
        /// Version or semver constraint; `None`: the latest.
        version: Option<String>,
    },
    /// A chart in an OCI registry.
    Oci {
        /// `oci://host/path/chart`.
        reference: String,
        /// Version or semver constraint; `None`: the latest.
        version: Option<String>,
    },
    /// A packaged chart (`.tgz`) in hand.
    Archive(Vec<u8>),
}

/// What to render: a chart, the release's name and namespace, and values files in the order
/// Helm merges them (later ones win, maps merged key by key).
#[derive(Debug, Clone)]
pub struct RenderRequest<'a> {
    /// The chart.
    pub source: &'a ChartSource,
    /// Release name (a DNS label of at most 53 characters).
    pub release: &'a str,
    /// Release namespace.
    pub namespace: &'a str,
    /// Values documents (YAML), merged in order over the chart's defaults.
    pub values: &'a [&'a str],
}

/// A rendered chart.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedChart {
    /// The chart's name.
    pub name: String,
    /// The chart's version (what a constraint resolved to).
    pub version: String,
    /// The chart archive's digest, `sha256:<hex>`.
    pub digest: String,
    /// Every object rendered, CRDs from `crds/` and hooks included, in Helm's output order.
    pub manifests: Vec<Value>,
}

/// Why a chart could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The chart, its values or the renderer are wrong (a missing binary, a chart that is not
    /// there, a template error, values failing the chart's schema): trying again will not
    /// help until something changes. The message is Helm's.
    #[error("{0}")]
    Chart(String),
    /// The repository could not be reached: worth trying again.
    #[error("{0}")]
    Unreachable(String),
}

impl From<RenderError> for ReconcileError {
    fn from(err: RenderError) -> Self {
        match err {
            RenderError::Chart(message) => ReconcileError::Terminal(message),
            RenderError::Unreachable(message) => ReconcileError::Retryable(message),
        }
    }
}

/// Renders charts with Helm's engine. Implementations must be usable from many reconciles at
/// once.
#[async_trait]
pub trait ChartRenderer: Send + Sync + std::fmt::Debug + 'static {
    /// Fetches (or takes from its cache) and renders the chart `request` names.
    async fn render(&self, request: &RenderRequest<'_>) -> Result<RenderedChart, RenderError>;

    /// What renders, for the logs at start (`helm v3.14.0 at /usr/local/bin/helm`); an error
    /// when it cannot (a missing binary), so an operator learns before the first release.
    async fn describe(&self) -> Result<String, RenderError> {
        Ok(format!("{self:?}"))
    }
}

/// The Helm command line as a [`ChartRenderer`]: Helm 3.8+ or 4, found on `PATH` or given.
///
/// It runs `helm pull <chart> --repo <url> [--version <v>] --destination <dir>` (or
/// `helm pull oci://… [--version <v>]`) to fetch a chart, `helm show chart <archive>` to
/// read an uploaded archive's name and version, and
/// `helm template <release> <archive> --namespace <ns> --include-crds -f <values>…` to render.
/// Fetched archives are kept in a cache directory under their sha256 digest; a chart asked
/// for by exact version is fetched once per process.
#[derive(Debug)]
pub struct HelmCli {
    binary: PathBuf,
    cache: PathBuf,
    /// `(source, exact version)` → cached archive digest.
    fetched: Mutex<HashMap<String, String>>,
}

impl HelmCli {
    /// Runs `binary` (a path, or a name looked up on `PATH`), caching charts in `cache`.
    pub fn new(binary: impl Into<PathBuf>, cache: impl Into<PathBuf>) -> Self {
        HelmCli {
            binary: binary.into(),
            cache: cache.into(),
            fetched: Mutex::new(HashMap::new()),
        }
    }

    /// `helm` from `PATH`, caching charts under the system's temporary directory.
    pub fn from_path() -> Self {
        Self::new("helm", std::env::temp_dir().join("threeport-charts"))
    }

    /// Runs helm with `args`; its standard output, or its error message.
    async fn run(&self, args: &[OsString]) -> Result<Vec<u8>, RenderError> {
        let output = tokio::process::Command::new(&self.binary)
            .args(args)
            .env("HELM_NO_PLUGINS", "1")
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|err| {
                RenderError::Chart(if err.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "the Helm binary {} was not found: install helm (3.8 or later) on the \
                         controller's PATH or pass --helm-bin",
                        self.binary.display()
                    )
                } else {
                    format!("running {}: {err}", self.binary.display())
                })
            })?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("WARNING"))
            .collect::<Vec<_>>()
            .join("\n");
        let message = message
            .strip_prefix("Error: ")
            .unwrap_or(&message)
            .to_owned();
        let message = if message.is_empty() {
            format!("helm exited with {}", output.status)
        } else {
            message
        };
        let unreachable = [
            "connection refused",
            "i/o timeout",
            "no such host",
            "connection reset",
            "TLS handshake timeout",
            "503 Service Unavailable",
            "502 Bad Gateway",
        ]
        .iter()
        .any(|pattern| message.contains(pattern));
        Err(if unreachable {
            RenderError::Unreachable(message)
        } else {
            RenderError::Chart(message)
        })
    }

    /// A fresh private directory for one render's files.
    async fn scratch(&self) -> Result<PathBuf, RenderError> {
        let dir = self
            .cache
            .join("work")
            .join(uuid::Uuid::now_v7().simple().to_string());
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| RenderError::Chart(format!("chart cache {}: {e}", dir.display())))?;
        Ok(dir)
    }

    /// Stores `bytes` in the cache under their digest; returns the digest and the path.
    async fn keep(&self, bytes: &[u8]) -> Result<(String, PathBuf), RenderError> {
        let hex = hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes));
        let path = self.cache.join(format!("sha256-{hex}.tgz"));
        if tokio::fs::metadata(&path).await.is_err() {
            // Written beside and renamed, so a reader never sees half an archive.
            let partial = self
                .cache
                .join(format!(".{hex}.{}", uuid::Uuid::now_v7().simple()));
            let io = |e: std::io::Error| RenderError::Chart(format!("chart cache: {e}"));
            tokio::fs::write(&partial, bytes).await.map_err(io)?;
            tokio::fs::rename(&partial, &path).await.map_err(io)?;
        }
        Ok((format!("sha256:{hex}"), path))
    }

    /// The archive of a chart from a repository or registry: from the cache when it was
    /// fetched before by exact version, else pulled. Returns its name, version, digest, path.
    async fn pull(
        &self,
        source: &ChartSource,
        scratch: &Path,
    ) -> Result<(String, String, String, PathBuf), RenderError> {
        let (reference, repo, version) = match source {
            ChartSource::Repository {
                url,
                chart,
                version,
            } => (chart.clone(), Some(url.as_str()), version.as_deref()),
            ChartSource::Oci { reference, version } => {
                (reference.clone(), None, version.as_deref())
            }
            ChartSource::Archive(_) => unreachable!("archives are not pulled"),
        };
        let name = reference
            .rsplit('/')
            .next()
            .unwrap_or(&reference)
            .to_owned();
        let exact = version.filter(|v| is_exact_version(v));
        let key = format!("{}|{reference}|{}", repo.unwrap_or(""), exact.unwrap_or(""));
        if let Some(version) = exact {
            let known = self.fetched.lock().unwrap().get(&key).cloned();
            if let Some(digest) = known {
                let path = self.cache.join(format!("{}.tgz", digest.replace(':', "-")));
                if tokio::fs::metadata(&path).await.is_ok() {
                    return Ok((
                        name,
                        version.trim_start_matches('v').to_owned(),
                        digest,
                        path,
                    ));
                }
            }
        }
        let destination = scratch.join("pulled");
        let _ = tokio::fs::create_dir_all(&destination).await;
        let mut args: Vec<OsString> = vec!["pull".into(), reference.clone().into()];
        if let Some(repo) = repo {
            args.extend(["--repo".into(), repo.into()]);
        }
        if let Some(version) = version {
            args.extend(["--version".into(), version.into()]);
        }
        args.extend(["--destination".into(), destination.clone().into()]);
        self.run(&args).await?;
        let pulled = first_archive(&destination).await?;
        let file = pulled
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default()
            .to_owned();
        let version = file
            .strip_suffix(".tgz")
            .and_then(|f| f.strip_prefix(&format!("{name}-")))
            .unwrap_or_default()
            .to_owned();
        let bytes = tokio::fs::read(&pulled)
            .await
            .map_err(|e| RenderError::Chart(format!("reading the pulled chart: {e}")))?;
        let (digest, path) = self.keep(&bytes).await?;
        if exact.is_some() {
            self.fetched.lock().unwrap().insert(key, digest.clone());
        }
        Ok((name, version, digest, path))
    }

    /// An uploaded archive, cached; its name and version from `helm show chart`.
    async fn archive(
        &self,
        bytes: &[u8],
    ) -> Result<(String, String, String, PathBuf), RenderError> {
        let (digest, path) = self.keep(bytes).await?;
        let shown = self
            .run(&["show".into(), "chart".into(), path.clone().into()])
            .await?;
        let metadata: serde_yaml::Value = serde_yaml::from_slice(&shown)
            .map_err(|e| RenderError::Chart(format!("the archive's Chart.yaml: {e}")))?;
        let field = |key: &str| {
            metadata
                .get(key)
                .and_then(serde_yaml::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| RenderError::Chart(format!("the archive's Chart.yaml has no {key}")))
        };
        Ok((field("name")?, field("version")?, digest, path))
    }

    async fn render_in(
        &self,
        request: &RenderRequest<'_>,
        scratch: &Path,
    ) -> Result<RenderedChart, RenderError> {
        let (name, version, digest, archive) = match request.source {
            ChartSource::Archive(bytes) => self.archive(bytes).await?,
            source => self.pull(source, scratch).await?,
        };
        let mut files = Vec::new();
        for (index, values) in request.values.iter().enumerate() {
            let path = scratch.join(format!("values-{index}.yaml"));
            tokio::fs::write(&path, values)
                .await
                .map_err(|e| RenderError::Chart(format!("writing values: {e}")))?;
            files.push(path);
        }
        let mut args: Vec<OsString> = vec![
            "template".into(),
            request.release.into(),
            archive.into(),
            "--namespace".into(),
            request.namespace.into(),
            "--include-crds".into(),
        ];
        for file in files {
            args.extend(["--values".into(), file.into()]);
        }
        let rendered = self.run(&args).await?;
        let text = String::from_utf8_lossy(&rendered);
        let manifests = parse_rendered(&text).map_err(RenderError::Chart)?;
        Ok(RenderedChart {
            name,
            version,
            digest,
            manifests,
        })
    }
}

#[async_trait]
impl ChartRenderer for HelmCli {
    async fn render(&self, request: &RenderRequest<'_>) -> Result<RenderedChart, RenderError> {
        let scratch = self.scratch().await?;
        let rendered = self.render_in(request, &scratch).await;
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        rendered
    }

    async fn describe(&self) -> Result<String, RenderError> {
        let version = self.run(&["version".into(), "--short".into()]).await?;
        Ok(format!(
            "helm {} ({}), charts cached in {}",
            String::from_utf8_lossy(&version).trim(),
            self.binary.display(),
            self.cache.display()
        ))
    }
}

/// A version, not a constraint: `1.2.3`, `v1.2.3-rc.1`.
fn is_exact_version(version: &str) -> bool {
    semver::Version::parse(version.trim().trim_start_matches('v')).is_ok()
}

/// The one `.tgz` helm pulled into `dir`.
async fn first_archive(dir: &Path) -> Result<PathBuf, RenderError> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| RenderError::Chart(format!("reading pulled charts: {e}")))?;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "tgz") {
            return Ok(path);
        }
    }
    Err(RenderError::Chart(
        "helm pull left no chart archive".to_owned(),
    ))
}

/// The objects in `helm template`'s output: every non-empty document, `List`s expanded.
fn parse_rendered(text: &str) -> Result<Vec<Value>, String> {
    let mut manifests = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(document)
            .map_err(|e| format!("the chart rendered document {index} that is not YAML: {e}"))?;
        let value = serde_json::to_value(value)
            .map_err(|e| format!("the chart rendered document {index} not JSON-shaped: {e}"))?;
        if value.is_null() {
            continue;
        }
        let is_list = value["kind"].as_str().is_some_and(|k| k.ends_with("List"))
            && value["items"].is_array();
        let objects = if is_list {
            value["items"].as_array().cloned().unwrap_or_default()
        } else {
            vec![value]
        };
        for object in objects {
            if !object["apiVersion"].is_string()
                || !object["kind"].is_string()
                || !object["metadata"]["name"].is_string()
            {
                return Err(format!(
                    "the chart rendered document {index} without apiVersion, kind or metadata.name"
                ));
            }
            manifests.push(object);
        }
    }
    Ok(manifests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_versions_are_told_from_constraints() {
        for exact in ["1.2.3", "v1.2.3", "1.0.0-rc.1", "1.0.0+build"] {
            assert!(is_exact_version(exact), "{exact}");
        }
        for constraint in ["^1.2", "~1.2.3", ">=1.0 <2", "1.x", "1.2", "*"] {
            assert!(!is_exact_version(constraint), "{constraint}");
        }
    }

    #[test]
    fn rendered_output_splits_into_objects() {
        let text = "---\n# Source: c/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# Source: c/templates/empty.yaml\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: b}\n";
        let objects = parse_rendered(text).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[1]["kind"], "Secret");
        assert!(
            parse_rendered("kind: Pod\n")
                .unwrap_err()
                .contains("document 0")
        );
    }

    /// A `helm` that logs its arguments and answers like the real one: the renderer's
    /// contract with the command line.
    fn scripted_helm(dir: &Path) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let log = dir.join("calls.log");
        let script = dir.join("helm");
        let text = format!(
            r#"#!/bin/sh
echo "$@" >> "{log}"
case "$1" in
  pull)
    while [ $# -gt 0 ]; do
      if [ "$1" = "--destination" ]; then dest=$2; fi
      if [ "$1" = "--repo" ] && [ "$2" = "http://127.0.0.1:9" ]; then
        echo "Error: looks like "$2" is not a valid chart repository: dial tcp 127.0.0.1:9: connect: connection refused" >&2
        exit 1
      fi
      shift
    done
    printf 'archive' > "$dest/web-1.2.3.tgz" ;;
  show) printf 'name: uploaded
version: 0.3.0
' ;;
  version) echo "v3.14.0+g3fc9f4b" ;;
  template) printf -- '---
# Source: web/templates/cm.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: a
' ;;
esac
"#,
            log = log.display()
        );
        std::fs::write(&script, text).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        (script, log)
    }

    fn calls(log: &Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    async fn render(helm: &HelmCli, source: &ChartSource) -> Result<RenderedChart, RenderError> {
        helm.render(&RenderRequest {
            source,
            release: "shop",
            namespace: "shop-ns",
            values: &["a: 1\n", "b: 2\n"],
        })
        .await
    }

    #[tokio::test]
    async fn charts_are_pulled_rendered_and_cached_by_digest_through_the_command_line() {
        let dir = std::env::temp_dir().join(format!("tp-helm-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (script, log) = scripted_helm(&dir);
        let helm = HelmCli::new(&script, dir.join("cache"));
        let described = helm.describe().await.unwrap();
        assert!(
            described.starts_with("helm v3.14.0+g3fc9f4b ("),
            "{described}"
        );
        std::fs::remove_file(&log).unwrap();

        let oci = ChartSource::Oci {
            reference: "oci://127.0.0.1:5000/charts/web".into(),
            version: Some("1.2.3".into()),
        };
        let rendered = render(&helm, &oci).await.unwrap();
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, b"archive"));
        assert_eq!(
            (rendered.name.as_str(), rendered.version.as_str()),
            ("web", "1.2.3")
        );
        assert_eq!(rendered.digest, format!("sha256:{digest}"));
        assert_eq!(rendered.manifests.len(), 1);
        let made = calls(&log);
        assert_eq!(made.len(), 2, "{made:?}");
        assert!(
            made[0]
                .starts_with("pull oci://127.0.0.1:5000/charts/web --version 1.2.3 --destination "),
            "{made:?}"
        );
        let cached = dir.join("cache").join(format!("sha256-{digest}.tgz"));
        assert_eq!(
            made[1].split(" --values ").next().unwrap(),
            format!(
                "template shop {} --namespace shop-ns --include-crds",
                cached.display()
            )
        );
        assert_eq!(made[1].matches(" --values ").count(), 2, "in order, both");

        // An exact version is fetched once; a constraint is resolved again each time.
        render(&helm, &oci).await.unwrap();
        assert_eq!(calls(&log).len(), 3, "no second pull: {:?}", calls(&log));
        let ranged = ChartSource::Repository {
            url: "http://127.0.0.1:8879".into(),
            chart: "web".into(),
            version: Some("^1.2".into()),
        };
        render(&helm, &ranged).await.unwrap();
        render(&helm, &ranged).await.unwrap();
        let made = calls(&log);
        let pulls: Vec<&String> = made.iter().filter(|c| c.starts_with("pull web")).collect();
        assert_eq!(pulls.len(), 2, "{made:?}");
        assert!(pulls[0].contains("--repo http://127.0.0.1:8879 --version ^1.2"));

        // An uploaded archive: its name and version from `helm show chart`.
        let uploaded = render(&helm, &ChartSource::Archive(b"uploaded".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            (uploaded.name.as_str(), uploaded.version.as_str()),
            ("uploaded", "0.3.0")
        );

        // A repository that cannot be reached is worth retrying; the message is Helm's.
        let down = ChartSource::Repository {
            url: "http://127.0.0.1:9".into(),
            chart: "web".into(),
            version: None,
        };
        let err = render(&helm, &down).await.unwrap_err();
        assert!(
            matches!(&err, RenderError::Unreachable(m) if m.starts_with("looks like")),
            "{err:?}"
        );
        // Nothing is left of the renders but the cache.
        let work = std::fs::read_dir(dir.join("cache").join("work"))
            .unwrap()
            .count();
        assert_eq!(work, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_missing_binary_is_a_chart_error_naming_it() {
        let helm = HelmCli::new(
            "/nonexistent/helm",
            std::env::temp_dir().join("tp-helm-test"),
        );
        let source = ChartSource::Archive(vec![0x1f, 0x8b]);
        let err = helm
            .render(&RenderRequest {
                source: &source,
                release: "r",
                namespace: "n",
                values: &[],
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RenderError::Chart(m) if m.contains("/nonexistent/helm") && m.contains("--helm-bin")),
            "{err}"
        );
    }
}
