//! `threeport-server`: the threeport control plane.
//!
//! - `serve`: the API, every available controller and the outbox relay in one process. With
//!   no flags: SQLite in `./threeport-data` (objects and the durable bus), on 127.0.0.1:1323.
//! - `api`: the API and the outbox relay only (run any number behind a load balancer).
//! - `controller <name>…`: one or more controllers (`workload-definition`,
//!   `workload-instance`, `kubernetes-runtime`, `aws-bucket`, `aws-database`, `aws-secret`),
//!   any number of replicas, each with an outbox relay for what its controllers write.
//! - `token`: mints an API token and prints it (its hash can be appended to a token file).
//!
//! Every flag has an environment variable (`THREEPORT_…`); `--help` lists them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Args, Parser, Subcommand, ValueEnum};
use threeport_core::{Backends, ControllerConfig};
use threeport_core::{OutboxRelay, RelayConfig};
use threeport_server::auth::{TokenSet, mint_token};
use threeport_server::controllers::helm::HelmCli;
use threeport_server::controllers::support::{SupportChart, SupportCharts};
use threeport_server::controllers::{KubeClusters, Providers, SdkAws};
use threeport_server::model::SupportService;
use threeport_server::plane::{self, PlaneConfig};
use threeport_server::tls::{TlsFiles, serve_tls, server_config};
use threeport_server::watch::ChangeFeed;
use threeport_server::{ApiState, Ops, Sealer, app, controllers, model, ops};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "threeport-server",
    version,
    about = "The threeport control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, env = "THREEPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Threads that run this process's work (default: one per core). Processes that share a
    /// machine's few cores (an `api` and controllers beside their database) do better with
    /// one each: every hand-over between threads is a wake-up the kernel charges for (on
    /// the e2e bench's two cores, one thread per process made the distributed path 10–20%
    /// faster).
    #[arg(long, env = "THREEPORT_WORKER_THREADS", global = true,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// API, controllers and outbox relay in one process.
    Serve(ServeArgs),
    /// API and outbox relay only.
    Api(ServeArgs),
    /// One or more controllers.
    Controller {
        /// Which controllers (`workload-definition`, `workload-instance`, `kubernetes-runtime`).
        #[arg(required = true, num_args = 1..)]
        names: Vec<String>,
        #[command(flatten)]
        plane: PlaneArgs,
        /// Serve /healthz, /readyz and /metrics here.
        #[arg(long, env = "THREEPORT_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
    },
    /// Watches the cluster it runs in and reports workload health and events to the API:
    /// for clusters the control plane cannot reach (a runtime with `agent: true`).
    Agent(AgentArgs),
    /// Asks a threeport endpoint (`…/readyz`) whether it is ready; exits 0 on a 2xx answer.
    /// For `helm test` and checks in images that carry no HTTP client.
    Probe {
        /// The URL (`http://threeport-api.threeport.svc:443/readyz`).
        url: String,
        /// Accept any server certificate (a check inside the cluster against a private CA).
        #[arg(long)]
        insecure: bool,
    },
    /// Mints an API token and prints it once.
    Token {
        /// Append the token's hash to this token file (created if missing).
        #[arg(long)]
        add_to: Option<PathBuf>,
        /// Limit the token to reconciling these kinds (comma-separated): it reads the API and
        /// writes only their objects, status and leases, through `/v0/engine`.
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
    },
}

#[derive(Args)]
struct AgentArgs {
    /// The control plane's API (`https://threeport.example.com`).
    #[arg(long, env = "THREEPORT_API_URL")]
    api_url: String,
    /// The agent's API token.
    #[arg(long, env = "THREEPORT_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// PEM file of the CA that signs the API's certificate (default: the system's roots).
    #[arg(long, env = "THREEPORT_API_CA")]
    api_ca: Option<PathBuf>,
    /// A kubeconfig file to reach the cluster with, instead of the pod's service account.
    #[arg(long, env = "THREEPORT_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The Kubernetes API server's URL, instead of the pod's service account (with
    /// `--kube-token`, if it wants one).
    #[arg(long, env = "THREEPORT_KUBE_URL", conflicts_with = "kubeconfig")]
    kube_url: Option<String>,
    /// Bearer token for `--kube-url`.
    #[arg(
        long,
        env = "THREEPORT_KUBE_TOKEN",
        hide_env_values = true,
        requires = "kube_url"
    )]
    kube_token: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "THREEPORT_LISTEN", default_value = "127.0.0.1:1323")]
    listen: SocketAddr,
    #[command(flatten)]
    plane: PlaneArgs,
    /// File of accepted token hashes (one SHA-256 hex per line). Default: `<data-dir>/tokens`,
    /// where a first token is minted and printed if the file does not exist.
    #[arg(long, env = "THREEPORT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Development mode: no authentication at all.
    #[arg(long, env = "THREEPORT_DEV")]
    dev: bool,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "THREEPORT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "THREEPORT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: client certificates this PEM CA signed authenticate requests (clients
    /// without one use a bearer token).
    #[arg(long, env = "THREEPORT_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
}

impl ServeArgs {
    /// The TLS configuration, if HTTPS was asked for.
    fn tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let files = TlsFiles {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: self.client_ca.as_ref().map(read).transpose()?,
        };
        server_config(&files).map(Some).map_err(|e| e.to_string())
    }
}

#[derive(Args)]
struct PlaneArgs {
    /// Directory of the embedded SQLite database and the default token file.
    #[arg(long, env = "THREEPORT_DATA_DIR", default_value = "threeport-data")]
    data_dir: PathBuf,
    /// PostgreSQL/CockroachDB URL; without it, SQLite in the data directory.
    #[arg(long, env = "THREEPORT_DATABASE_URL")]
    database_url: Option<String>,
    /// NATS URL; without it, the durable bus in the database (secret values then reach only
    /// controllers in the process that received them: use `serve`).
    #[arg(long, env = "THREEPORT_NATS_URL")]
    nats_url: Option<String>,
    /// File holding the key (64 hex digits) that encrypts secret fields at rest; created if
    /// missing. Default: `<data-dir>/encryption.key` for the embedded default. Every API
    /// replica and controller of a control plane must share it.
    #[arg(long, env = "THREEPORT_ENCRYPTION_KEY_FILE")]
    encryption_key_file: Option<PathBuf>,
    /// Send AWS API calls here instead of AWS (a local mock such as moto, for testing).
    #[arg(long, env = "THREEPORT_AWS_ENDPOINT")]
    aws_endpoint: Option<String>,
    /// Seconds between two looks of each controller at every object of its kind, to
    /// reconcile those a lost notification left waiting (it also looks once at start);
    /// 0: only at start.
    #[arg(long, env = "THREEPORT_RESYNC_PERIOD", default_value_t = 300)]
    resync_period: u64,
    /// Reconciles each controller runs at once in this process. Reconciles mostly wait on
    /// the database and the clusters: more than the cores is normal.
    #[arg(long, env = "THREEPORT_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Most connections this process opens to PostgreSQL/CockroachDB (shared by the API and
    /// the controllers in it).
    #[arg(long, env = "THREEPORT_DATABASE_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    database_max_connections: u32,
    /// How often (milliseconds) the workload-instance controller looks for runtimes to
    /// watch the health of, and renews its hold on the ones it watches.
    #[arg(long, env = "THREEPORT_HEALTH_POLL_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(50..=600_000))]
    health_poll_ms: u64,
    /// The `helm` command line the Helm-workload controller renders charts with (Helm 3.8+
    /// or 4): a path, or a name looked up on PATH.
    #[arg(long, env = "THREEPORT_HELM_BIN", default_value = "helm")]
    helm_bin: PathBuf,
    /// Where fetched charts are cached (by digest). Default: `<data-dir>/charts`.
    #[arg(long, env = "THREEPORT_CHART_CACHE")]
    chart_cache: Option<PathBuf>,
    /// A support service's chart instead of the pinned one, as
    /// `<service>=<repo URL>/<chart>@<version>` (repeatable; services: envoy-gateway,
    /// cert-manager, external-dns, external-secrets, cluster-autoscaler).
    #[arg(long = "support-chart", value_parser = parse_support_chart)]
    support_charts: Vec<(SupportService, SupportChart)>,
    /// This control plane's API as others reach it (`https://threeport.example.com`): the
    /// control planes it makes are told it as their parent.
    #[arg(long, env = "THREEPORT_PUBLIC_URL")]
    public_url: Option<String>,
    /// The `terraform` command line (1.6+) the Terraform controller runs: a path, or a name
    /// looked up on PATH.
    #[arg(long, env = "THREEPORT_TERRAFORM_BIN", default_value = "terraform")]
    terraform_bin: PathBuf,
    /// Where Terraform runs' private working directories are made (each removed after its
    /// run). Default: `<data-dir>/terraform`.
    #[arg(long, env = "THREEPORT_TERRAFORM_WORK_DIR")]
    terraform_work_dir: Option<PathBuf>,
    /// Seconds a Terraform state lock outlives a run that stopped renewing it (a controller
    /// that died mid-apply): then another replica takes the instance over.
    #[arg(long, env = "THREEPORT_TERRAFORM_LOCK_LEASE", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    terraform_lock_lease: u64,
}

/// One `--support-chart` override.
fn parse_support_chart(text: &str) -> Result<(SupportService, SupportChart), String> {
    SupportCharts::parse_override(text).map_err(|e| e.to_string())
}

impl PlaneArgs {
    /// What the controllers reach clusters and AWS through.
    fn providers(&self, sealer: Arc<Sealer>) -> Providers {
        Providers {
            clusters: Arc::new(KubeClusters::new(sealer.clone())),
            aws: Arc::new(SdkAws::new(sealer.clone(), self.aws_endpoint.clone())),
            sealer,
            health: controllers::HealthConfig {
                poll: std::time::Duration::from_millis(self.health_poll_ms),
                ..Default::default()
            },
            charts: Arc::new(HelmCli::new(
                self.helm_bin.clone(),
                self.chart_cache
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("charts")),
            )),
            public_url: self.public_url.clone(),
            terraform: controllers::terraform::TerraformConfig {
                bin: self.terraform_bin.clone(),
                work_root: self
                    .terraform_work_dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("terraform")),
                lock_lease: std::time::Duration::from_secs(self.terraform_lock_lease),
            },
            support_charts: self
                .support_charts
                .iter()
                .fold(SupportCharts::default(), |charts, (service, chart)| {
                    charts.with(*service, chart.clone())
                }),
        }
    }

    /// The sealer of secret fields.
    fn sealer(&self) -> Result<Sealer, String> {
        if let Ok(hex_key) = std::env::var("THREEPORT_ENCRYPTION_KEY") {
            return Sealer::from_hex(&hex_key).map_err(|e| e.to_string());
        }
        let path = match (&self.encryption_key_file, &self.database_url) {
            (Some(path), _) => path.clone(),
            (None, None) => {
                std::fs::create_dir_all(&self.data_dir)
                    .map_err(|e| format!("cannot create {}: {e}", self.data_dir.display()))?;
                self.data_dir.join("encryption.key")
            }
            (None, Some(_)) => {
                return Err("a shared database needs a shared encryption key: set \
                     THREEPORT_ENCRYPTION_KEY (64 hex digits) or --encryption-key-file"
                    .to_owned());
            }
        };
        Sealer::from_file_or_create(&path).map_err(|e| e.to_string())
    }

    /// How the controllers run.
    fn tuning(&self) -> ControllerConfig {
        ControllerConfig {
            resync_period: (self.resync_period > 0)
                .then(|| std::time::Duration::from_secs(self.resync_period)),
            concurrency: self.concurrency as usize,
            ..ControllerConfig::default()
        }
    }

    fn config(&self) -> PlaneConfig {
        PlaneConfig {
            database_url: self.database_url.clone(),
            data_dir: self.data_dir.clone(),
            nats_url: self.nats_url.clone(),
            max_connections: self.database_max_connections,
        }
    }
}

/// glibc gives every thread that allocates at once an arena of its own (up to 8 per core) and
/// seldom hands their free space back, so a control plane's JSON churn across tokio's workers
/// held tens of MB it did not use (the health bench: 76 MB peak with glibc's defaults, 59 with
/// two arenas, at the same speed; mimalloc instead: 118). `MALLOC_ARENA_MAX` in the
/// environment still decides, if set.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only tunes the allocator; it is called first thing in main, before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.worker_threads {
        builder.worker_threads(threads.into());
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("threeport-server: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                let all: Vec<&str> = controllers::available().collect();
                serve(args, &all).await
            }
            Command::Api(args) => serve(args, &[]).await,
            Command::Controller {
                names,
                plane,
                metrics_listen,
            } => controller(&names, &plane, metrics_listen).await,
            Command::Agent(args) => agent(args).await,
            Command::Token { add_to, kinds } => token(add_to.as_deref(), &kinds),
            Command::Probe { url, insecure } => probe(&url, insecure).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("threeport-server: {message}");
            ExitCode::from(2)
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("THREEPORT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn token(add_to: Option<&Path>, kinds: &[String]) -> Result<(), String> {
    for kind in kinds {
        threeport_core::object::validate_kind(kind).map_err(|e| format!("--kinds: {e}"))?;
    }
    let minted = mint_token().map_err(|e| e.to_string())?;
    if let Some(path) = add_to {
        let line = if kinds.is_empty() {
            minted.hash.clone()
        } else {
            format!("{} kinds={}", minted.hash, kinds.join(","))
        };
        append_hash(path, &line)?;
    } else if !kinds.is_empty() {
        return Err("--kinds needs --add-to: the limit is kept in the token file".into());
    }
    println!("{}", minted.token);
    Ok(())
}

fn append_hash(path: &Path, hash: &str) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    writeln!(file, "{hash}").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The tokens the API accepts, and the line to print about them.
fn tokens(args: &ServeArgs) -> Result<(Option<Arc<TokenSet>>, String), String> {
    if args.dev {
        tracing::warn!(
            "DEVELOPMENT MODE: authentication is OFF; anyone who reaches the port has full access"
        );
        return Ok((None, "auth: OFF (--dev)".to_owned()));
    }
    let path = args
        .token_file
        .clone()
        .unwrap_or_else(|| args.plane.data_dir.join("tokens"));
    let mut line = format!("auth: bearer tokens whose hashes are in {}", path.display());
    if args.token_file.is_none() && !path.exists() {
        std::fs::create_dir_all(&args.plane.data_dir)
            .map_err(|e| format!("cannot create {}: {e}", args.plane.data_dir.display()))?;
        let minted = mint_token().map_err(|e| e.to_string())?;
        append_hash(&path, &minted.hash)?;
        line = format!(
            "{line}\ntoken (shown once, only its hash is kept): {}",
            minted.token
        );
    }
    let set = TokenSet::load(&path).map_err(|e| e.to_string())?;
    if set.is_empty() {
        return Err(format!(
            "{} accepts no token; add one with `threeport-server token --add-to {}`",
            path.display(),
            path.display()
        ));
    }
    Ok((Some(Arc::new(set)), line))
}

/// Runs the API and the outbox relay, and the `controllers` named, until a stop signal.
async fn serve(args: ServeArgs, controllers: &[&str]) -> Result<(), String> {
    let (tokens, auth_line) = tokens(&args)?;
    let tls = args.tls()?;
    let sealer = Arc::new(args.plane.sealer()?);
    let mut plane = plane::open(&args.plane.config())
        .await
        .map_err(|e| e.to_string())?;
    // Watchers (the console) see every write made through this process at once; controllers
    // running elsewhere write status this process does not see: watchers look again sooner.
    let changes = ChangeFeed::new(if controllers.is_empty() {
        std::time::Duration::from_secs(5)
    } else {
        std::time::Duration::from_secs(30)
    });
    plane.store = changes.observe(plane.store);
    let shutdown = CancellationToken::new();
    let state = ApiState {
        store: plane.store.clone(),
        bus: plane.bus.clone(),
        locker: plane.locker.clone(),
        kinds: Arc::new(model::registry()),
        sealer: sealer.clone(),
    };
    let ops = Ops {
        probes: plane.probes.clone(),
        metrics: Arc::new(Mutex::new(prometheus_client::registry::Registry::default())),
        stopping: CancellationToken::new(),
        changes,
    };
    let relay = spawn_relay(&plane, &ops, &shutdown);
    let providers = args.plane.providers(sealer.clone());
    let tuning = args.plane.tuning();
    let running = spawn_controllers(controllers, &plane, &providers, &ops, &tuning, &shutdown)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "threeport control plane on {scheme}://{address} ({})",
        plane.description
    );
    if args.client_ca.is_some() {
        println!("mutual TLS: client certificates signed by the client CA authenticate");
    }
    println!("{auth_line}");
    println!(
        "try: curl -H 'Authorization: Bearer <token>' {scheme}://{address}/v0/workload-definitions"
    );
    tracing::info!(%address, backends = %plane.description, "serving");
    let stopping = ops.stopping.clone();
    let stop = async move {
        stop_signal().await;
        stopping.cancel();
    };
    let app = app(state, tokens, ops);
    match tls {
        Some(config) => serve_tls(listener, config, app, stop).await,
        None => axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .map_err(|e| format!("serving failed: {e}"))?,
    }
    tracing::info!("stopping");
    shutdown.cancel();
    for controller in running {
        let _ = controller.await;
    }
    let _ = relay.await;
    Ok(())
}

/// Runs controllers until a stop signal, with their operational endpoints if asked.
async fn controller(
    names: &[String],
    plane_args: &PlaneArgs,
    metrics_listen: Option<SocketAddr>,
) -> Result<(), String> {
    if let Some(unknown) = names
        .iter()
        .find(|name| !controllers::available().any(|known| known == name.as_str()))
    {
        return Err(format!(
            "no controller named {unknown:?}; available: {}",
            controllers::available().collect::<Vec<_>>().join(", ")
        ));
    }
    let plane = plane::open(&plane_args.config())
        .await
        .map_err(|e| e.to_string())?;
    let ops = Ops {
        probes: plane.probes.clone(),
        metrics: Arc::new(Mutex::new(prometheus_client::registry::Registry::default())),
        stopping: CancellationToken::new(),
        changes: ChangeFeed::default(),
    };
    let shutdown = CancellationToken::new();
    // Controllers write too (objects they own, follow-up notifications): relaying those here,
    // woken by the write, saves waiting for an API process's next outbox poll.
    let relay = spawn_relay(&plane, &ops, &shutdown);
    let providers = plane_args.providers(Arc::new(plane_args.sealer()?));
    let running = spawn_controllers(
        names,
        &plane,
        &providers,
        &ops,
        &plane_args.tuning(),
        &shutdown,
    )?;
    println!(
        "threeport controllers {} running ({})",
        names.join(", "),
        plane.description
    );
    let endpoints = match metrics_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| format!("cannot listen on {address}: {e}"))?;
            let address = listener.local_addr().map_err(|e| e.to_string())?;
            println!("metrics on http://{address}/metrics");
            let routes = ops::routes(ops);
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, routes)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }))
        }
        None => None,
    };
    println!("ready");
    stop_signal().await;
    tracing::info!("stopping");
    shutdown.cancel();
    for controller in running {
        let _ = controller.await;
    }
    if let Some(endpoints) = endpoints {
        let _ = endpoints.await;
    }
    let _ = relay.await;
    Ok(())
}

/// Watches the cluster the agent reaches and reports to the API until a stop signal.
async fn agent(args: AgentArgs) -> Result<(), String> {
    use threeport_k8s::{ClusterConnection, KubeCluster};
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let cluster = match (&args.kubeconfig, &args.kube_url) {
        (Some(path), _) => {
            let connection = ClusterConnection {
                kubeconfig: Some(read(path)?),
                ..ClusterConnection::default()
            };
            KubeCluster::connect(&connection).await
        }
        (None, Some(url)) => {
            let connection = ClusterConnection {
                api_endpoint: url.clone(),
                token: args.kube_token.clone(),
                ..ClusterConnection::default()
            };
            KubeCluster::connect(&connection).await
        }
        (None, None) => KubeCluster::in_cluster(),
    }
    .map_err(|e| e.to_string())?;
    let mut client = threeport_api::Client::builder(args.api_url.clone());
    if let Some(token) = &args.api_token {
        client = client.token(token.clone());
    }
    if let Some(path) = &args.api_ca {
        client = client.ca_pem(read(path)?);
    }
    let client = client.build().map_err(|e| e.to_string())?;
    let sink = Arc::new(threeport_server::agent::ApiSink::new(client));
    let watcher = controllers::health::RuntimeWatcher::new(Arc::new(cluster), sink);
    println!("threeport agent reporting to {}", args.api_url);
    println!("ready");
    tokio::select! {
        () = watcher.run() => Err("the watcher stopped".to_owned()),
        () = stop_signal() => {
            tracing::info!("stopping");
            Ok(())
        }
    }
}

/// Runs an outbox relay from `plane`'s store to its bus until `shutdown`. Every process that
/// writes runs one; their claims keep them from publishing the same entry at once.
fn spawn_relay(
    plane: &plane::Plane,
    ops: &Ops,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let metrics = threeport_core::RelayMetrics::register(&mut ops.metrics.lock().unwrap());
    tokio::spawn(
        OutboxRelay::new(
            plane.outbox.clone(),
            plane.bus.clone(),
            RelayConfig::default(),
        )
        .with_metrics(metrics)
        .run(shutdown.clone()),
    )
}

/// `GET url`: `Ok` on a 2xx answer, else what came back.
async fn probe(url: &str, insecure: bool) -> Result<(), String> {
    if url.starts_with("https://") && !insecure {
        return Err("an https:// probe needs --insecure (it has no CA bundle)".to_owned());
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(insecure)
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    if status.is_success() {
        println!("{url}: {status}");
        Ok(())
    } else {
        let body = response.text().await.unwrap_or_default();
        Err(format!("{url}: {status} {body}"))
    }
}

/// Starts the named controllers on `plane`'s backends.
fn spawn_controllers(
    names: &[impl AsRef<str>],
    plane: &plane::Plane,
    providers: &Providers,
    ops: &Ops,
    tuning: &ControllerConfig,
    shutdown: &CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<threeport_core::Result<()>>>, String> {
    // One set of metric families for every controller of the process.
    let families =
        threeport_core::ControllerMetricFamilies::register(&mut ops.metrics.lock().unwrap());
    names
        .iter()
        .map(|name| {
            let backends = Backends {
                store: plane.store.clone(),
                bus: plane.bus.clone(),
                locker: plane.locker.clone(),
            };
            controllers::spawn(
                name.as_ref(),
                backends,
                providers,
                &ops.metrics,
                &families,
                tuning,
                shutdown.clone(),
            )
            .map_err(|e| e.to_string())
        })
        .collect()
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
