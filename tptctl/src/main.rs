//! `tptctl`: the threeport command-line client.
//!
//! It reads Threeport's YAML config files as they are (`tptctl create workload -c
//! wordpress.yaml`), creates abstractions in one server-side transaction, updates with
//! `apply`, waits with `--wait`, lists and describes every kind, keeps control-plane contexts,
//! and starts a local control plane (`tptctl up`). Exit status: 0 success, 1 error, 2 usage.

mod contexts;
mod custom;
mod error;
mod local;
mod output;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use threeport_api::{Client, ListParams};
use threeport_core::object::RawObject;
use threeport_core::relation::DeletionPlan;
use threeport_core::{ObjectRef, Propagation};

use crate::contexts::{Context, Contexts, Overrides};
use crate::error::CliError;
use crate::output::Format;
use crate::wait::Goal;
use threeport_api::config::plan::{self, Lookup, Outcome};
use threeport_api::config::{
    self as config_file, ConfigFile, is_abstraction, key_of_word, root_kind,
};
use threeport_api::kebab_case;

#[derive(Parser)]
#[command(
    name = "tptctl",
    version,
    about = "The threeport command-line client",
    after_help = "Objects: every key of Threeport's config files, in kebab case: workload, \
                  workload-definition, workload-instance, helm-workload, kubernetes-runtime, \
                  aws-account, aws-eks-kubernetes-runtime, aws-relational-database, \
                  aws-object-storage-bucket, gateway, domain-name, secret, terraform, \
                  observability-stack, control-plane (each abstraction also with -definition \
                  and -instance)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connection: Connection,
    /// Print the causes of an error, not just its line.
    #[arg(long, short, global = true)]
    verbose: bool,
}

#[derive(Args)]
struct Connection {
    /// Control plane URL (overrides the context's).
    #[arg(long, env = "THREEPORT_URL", global = true)]
    url: Option<String>,
    /// API token (overrides the context's).
    #[arg(long, env = "THREEPORT_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Context to use instead of the current one.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Contexts file (default: `<config dir>/tptctl/config.yaml`, or $TPTCTL_CONFIG).
    #[arg(long, global = true)]
    config_file: Option<PathBuf>,
}

#[derive(Args)]
struct FromFile {
    /// The object (`workload`, `aws-account`, …).
    object: String,
    /// Threeport config file.
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Args)]
struct WaitArgs {
    /// Wait until every part is reconciled (deleted, for delete), showing progress.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long (`90s`, `5m`, `1h`).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Args)]
struct Target {
    /// The object (`workload`, `aws-account`, …).
    object: String,
    /// Threeport config file naming it.
    #[arg(
        short = 'c',
        long = "config",
        conflicts_with = "name",
        required_unless_present = "name"
    )]
    config: Option<PathBuf>,
    /// Its name.
    #[arg(short = 'n', long)]
    name: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the object a config file describes (abstractions: all their parts, at once).
    Create(FromFile),
    /// Creates the object, or updates it to what the config file says.
    Apply(FromFile),
    /// Deletes an object; an abstraction with every part.
    Delete {
        #[command(flatten)]
        target: Target,
        /// Keep what the object owns instead of deleting it.
        #[arg(long)]
        orphan: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Shows an object (an abstraction: each part): spec, state, conditions, events.
    Describe {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Applies the plan a Terraform instance (`terraform-instance`, or `terraform`) waits on
    /// (manual approval): shows it, then approves exactly it.
    Approve {
        #[command(flatten)]
        target: Target,
        /// The plan's id, as `describe` shows it: refused if another plan replaced it.
        /// Default: the plan awaiting approval now.
        #[arg(long)]
        plan: Option<String>,
    },
    /// Lists objects (`workloads`, `workload-instances`, `aws-accounts`, …).
    Get {
        /// What to list.
        what: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// Only objects with this label (`key=value`; repeat for several).
        #[arg(short = 'l', long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Control-plane contexts.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Starts a control plane on this machine (the embedded default) and selects it.
    Up {
        /// Address it listens on.
        #[arg(long, default_value = "127.0.0.1:1323")]
        listen: String,
        /// Its data directory (default: `<data dir>/tptctl/local`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The `threeport-server` binary (default: beside tptctl, else on PATH).
        #[arg(long, env = "THREEPORT_SERVER_BIN")]
        server_bin: Option<PathBuf>,
    },
    /// Stops the control plane `up` started.
    Down {
        /// Its data directory (default: `<data dir>/tptctl/local`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Client and server versions.
    Version,
    /// Shell completions (`tptctl completion bash > /etc/bash_completion.d/tptctl`).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Adds or changes a context.
    SetContext {
        /// Its name.
        name: String,
        /// Control plane URL.
        #[arg(long)]
        url: String,
        /// API token.
        #[arg(long)]
        token: Option<String>,
        /// PEM CA bundle that signs the server's certificate.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// PEM client certificate (mutual TLS).
        #[arg(long, requires = "client_key_file")]
        client_cert_file: Option<PathBuf>,
        /// Its PEM key.
        #[arg(long, requires = "client_cert_file")]
        client_key_file: Option<PathBuf>,
    },
    /// Makes a context the current one.
    Use {
        /// Its name.
        name: String,
    },
    /// Prints the current context's name.
    Current,
    /// Lists the contexts.
    List,
    /// Removes a context.
    Delete {
        /// Its name.
        name: String,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 5m or 1h"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?} is not a duration like 90s, 5m or 1h")),
    };
    Ok(Duration::from_secs(seconds))
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let verbose = cli.verbose;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", err.message);
            if verbose {
                for cause in &err.causes {
                    eprintln!("  caused by: {cause}");
                }
            }
            ExitCode::from(err.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let overrides = Overrides {
        url: cli.connection.url,
        token: cli.connection.token,
        context: cli.connection.context,
        config_file: cli.connection.config_file,
    };
    let contexts_file = contexts::path(overrides.config_file.as_deref());
    match cli.command {
        Command::Create(args) => write(&overrides, args, false).await,
        Command::Apply(args) => write(&overrides, args, true).await,
        Command::Delete {
            target,
            orphan,
            wait,
        } => delete(&overrides, target, orphan, wait).await,
        Command::Describe { target, output } => describe(&overrides, target, output).await,
        Command::Approve { target, plan } => approve(&overrides, target, plan).await,
        Command::Get {
            what,
            output,
            labels,
        } => get(&overrides, &what, output, labels).await,
        Command::Config(command) => config(&contexts_file, command),
        Command::Up {
            listen,
            data_dir,
            server_bin,
        } => {
            let url = local::up(local::Up {
                server: local::server_binary(server_bin.as_deref()),
                dir: local::data_dir(data_dir.as_deref()),
                listen,
                contexts_file: &contexts_file,
                context: "local",
            })
            .await?;
            println!("threeport control plane on {url}; context \"local\" selected");
            Ok(())
        }
        Command::Down { data_dir } => {
            match local::down(&local::data_dir(data_dir.as_deref())).await? {
                Some(pid) => println!("stopped the local control plane (pid {pid})"),
                None => println!("the local control plane is not running"),
            }
            Ok(())
        }
        Command::Version => {
            println!("tptctl {}", env!("CARGO_PKG_VERSION"));
            let client = contexts::client(&overrides)?;
            let version = client.server_version().await?;
            println!("server {version} at {}", client.base_url());
            Ok(())
        }
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "tptctl", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// The config key `object` names; a usage error listing them otherwise.
fn key_of(object: &str) -> Result<&'static str, CliError> {
    key_of_word(object).ok_or_else(|| {
        CliError::usage(format!(
            "unknown object {object:?}; one of: {}",
            config_file::keys()
                .map(kebab_case)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Reads a config file for `object`, which must be what the file holds.
fn read_config(object: &str, path: &std::path::Path) -> Result<ConfigFile, CliError> {
    ConfigFile::read_as(path, Some(key_of(object)?))
}

async fn write(overrides: &Overrides, args: FromFile, apply: bool) -> Result<(), CliError> {
    if key_of_word(&args.object).is_none() {
        let client = contexts::client(overrides)?;
        if let Some(kind) = custom::find(&client, &args.object).await? {
            let config = custom::read(&args.config, &kind)?;
            let (object, verb) = match custom::write(&client, &kind, &config, apply).await? {
                custom::Written::Created(object) => (object, "created"),
                custom::Written::Updated(object) => (object, "updated"),
                custom::Written::Unchanged(object) => (object, "unchanged"),
            };
            println!("{}/{} {verb}", object.meta.kind, object.meta.name);
            if args.wait.wait {
                let parts = wait::labelled([(
                    object.meta.kind.clone(),
                    object.meta.id,
                    object.meta.name.clone(),
                )]);
                wait::wait(&client, &parts, Goal::Reconciled, args.wait.timeout).await?;
            }
            return Ok(());
        }
    }
    let file = read_config(&args.object, &args.config)?;
    let expansion = file.expand()?;
    let client = contexts::client(overrides)?;
    let (done, notes) = plan::write(&client, &expansion, apply)
        .await
        .map_err(|mut err| {
            if err.kind == Some(threeport_core::ErrorKind::AlreadyExists) {
                err.message = err
                    .message
                    .replace("apply the config", "use `tptctl apply`");
            }
            err
        })?;
    for note in notes {
        eprintln!("note: {note}");
    }
    for (object, outcome) in &done {
        let verb = match outcome {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
        };
        println!("{}/{} {verb}", object.meta.kind, object.meta.name);
    }
    if apply && is_abstraction(expansion.key) {
        dropped_parts(&client, &expansion, &done).await?;
    }
    if args.wait.wait {
        let parts = wait::labelled(
            done.iter()
                .map(|(o, _)| (o.meta.kind.clone(), o.meta.id, o.meta.name.clone())),
        );
        wait::wait(&client, &parts, Goal::Reconciled, args.wait.timeout).await?;
    }
    Ok(())
}

/// Notes the parts an abstraction's root owns that its config no longer has (a database
/// taken out of a `Workload`): `apply` does not delete them by itself.
async fn dropped_parts(
    client: &Client,
    expansion: &config_file::Expansion,
    done: &[(RawObject, Outcome)],
) -> Result<(), CliError> {
    let Some((root, _)) = done.first() else {
        return Ok(());
    };
    for part in parts_of(client, root).await? {
        let kept = expansion
            .parts
            .iter()
            .any(|p| p.kind == part.meta.kind && p.name == part.meta.name);
        // The config's parts are the root's own; controllers' records of their work (resource
        // records, an EKS cluster a runtime made) are not the config's business.
        let direct = part.meta.owners.iter().any(|o| o.id == root.meta.id);
        if !kept && direct && !part.meta.kind.starts_with("WorkloadResource") {
            eprintln!(
                "note: {}/{} is no longer in {}'s config and was left in place: `tptctl delete {} -n {}` removes it",
                part.meta.kind,
                part.meta.name,
                root.meta.name,
                kebab_case(&part.meta.kind),
                part.meta.name
            );
        }
    }
    Ok(())
}

/// The object a target names: the root of an abstraction, or the object itself; with the
/// config key it was found by (`None` for a kind of one's own).
async fn find_target(
    client: &Client,
    target: &Target,
) -> Result<(Option<&'static str>, RawObject), CliError> {
    if key_of_word(&target.object).is_none()
        && let Some(kind) = custom::find(client, &target.object).await?
    {
        // A kind of one's own: described and deleted as a plain object.
        let name = match (&target.config, &target.name) {
            (Some(path), _) => custom::read(path, &kind)?.name,
            (None, Some(name)) => name.clone(),
            (None, None) => return Err(CliError::usage("give -c <config file> or -n <name>")),
        };
        return Ok((None, custom::named(client, &kind, &name).await?));
    }
    let (key, name) = match (&target.config, &target.name) {
        (Some(path), _) => {
            let file = read_config(&target.object, path)?;
            (file.key, file.name()?)
        }
        (None, Some(name)) => (key_of(&target.object)?, name.clone()),
        (None, None) => return Err(CliError::usage("give -c <config file> or -n <name>")),
    };
    let kind = root_kind(key);
    let object = Lookup::new(client)
        .find(kind, &name)
        .await?
        .ok_or_else(|| CliError::new(format!("no {} named {name:?}", kebab_case(key))))?;
    Ok((Some(key), object))
}

/// The objects deleting `root` would delete, root first.
async fn parts_of(client: &Client, root: &RawObject) -> Result<Vec<RawObject>, CliError> {
    let plan: DeletionPlan = client
        .kind(&root.meta.kind)
        .deletion_plan(root.meta.id, Propagation::Foreground)
        .await?;
    let mut parts = vec![root.clone()];
    for part in plan.deletes.iter().filter(|p| p.id != root.meta.id) {
        if let Ok(object) = client.kind(&part.kind).get::<RawObject>(part.id).await {
            parts.push(object);
        }
    }
    Ok(parts)
}

async fn delete(
    overrides: &Overrides,
    target: Target,
    orphan: bool,
    wait_args: WaitArgs,
) -> Result<(), CliError> {
    let client = contexts::client(overrides)?;
    let (_, root) = find_target(&client, &target).await?;
    let propagation = if orphan {
        Propagation::Orphan
    } else {
        Propagation::Foreground
    };
    let plan: DeletionPlan = client
        .kind(&root.meta.kind)
        .deletion_plan(root.meta.id, propagation)
        .await?;
    let mut names = output::Names::new(&client);
    let mut labelled = Vec::new();
    for part in &plan.deletes {
        let name = names.of(&part.kind, part.id).await;
        labelled.push((
            ObjectRef::new(part.kind.clone(), part.id),
            format!("{}/{name}", part.kind),
        ));
    }
    let _: RawObject = client
        .kind(&root.meta.kind)
        .delete_with(root.meta.id, propagation)
        .await?;
    for (_, label) in &labelled {
        println!("{label} deleting");
    }
    if wait_args.wait {
        wait::wait(&client, &labelled, Goal::Gone, wait_args.timeout).await?;
    }
    Ok(())
}

async fn describe(overrides: &Overrides, target: Target, format: Format) -> Result<(), CliError> {
    let client = contexts::client(overrides)?;
    let (key, root) = find_target(&client, &target).await?;
    let parts = if key.is_some_and(is_abstraction) {
        parts_of(&client, &root).await?
    } else {
        vec![root]
    };
    match format {
        Format::Table => {
            let mut texts = Vec::new();
            for part in &parts {
                texts.push(output::describe(&client, part).await);
            }
            print!("{}", texts.join("\n"));
        }
        format => print!("{}", output::print_list(&client, &parts, format).await?),
    }
    Ok(())
}

async fn approve(
    overrides: &Overrides,
    target: Target,
    plan: Option<String>,
) -> Result<(), CliError> {
    let client = contexts::client(overrides)?;
    let name = match (&target.config, &target.name) {
        (Some(path), _) => read_config(&target.object, path)?.name()?,
        (None, Some(name)) => name.clone(),
        (None, None) => return Err(CliError::usage("give -c <config file> or -n <name>")),
    };
    if !matches!(target.object.as_str(), "terraform" | "terraform-instance") {
        return Err(CliError::usage(
            "only Terraform plans are approved: tptctl approve terraform-instance -n <name>",
        ));
    }
    let instance = Lookup::new(&client)
        .find("TerraformInstance", &name)
        .await?
        .ok_or_else(|| CliError::new(format!("no terraform-instance named {name:?}")))?;
    let waiting = &instance.status.details["plan"];
    if waiting["awaiting_approval"] != true {
        return Err(CliError::new(format!(
            "terraform-instance {name} has no plan awaiting approval"
        )));
    }
    let plan = plan.unwrap_or_else(|| waiting["id"].as_str().unwrap_or_default().to_owned());
    print!("{}", output::describe(&client, &instance).await);
    client
        .approve_terraform_plan(instance.meta.id, &plan)
        .await?;
    println!("approved plan {plan} of terraform-instance {name}: it is being applied");
    Ok(())
}

/// The kind `what` lists: a kind's plural or singular (`workload-instances`), or an
/// abstraction's (`workloads`: its instances).
fn kind_to_list(what: &str) -> Result<&'static str, CliError> {
    let extra = [
        "Event",
        "WorkloadResourceDefinition",
        "WorkloadResourceInstance",
    ];
    for key in config_file::keys().chain(extra) {
        let singular = kebab_case(key);
        if what == singular || what == threeport_api::plural_path(key) {
            return Ok(if is_abstraction(key) && !extra.contains(&key) {
                config_file::instance_kind(key)
            } else {
                key
            });
        }
    }
    Err(CliError::usage(format!(
        "cannot list {what:?}; try workloads, workload-instances, kubernetes-runtimes, aws-accounts, …"
    )))
}

async fn get(
    overrides: &Overrides,
    what: &str,
    format: Format,
    labels: Vec<(String, String)>,
) -> Result<(), CliError> {
    let client = contexts::client(overrides)?;
    let params = ListParams {
        labels: labels.into_iter().collect(),
        ..ListParams::default()
    };
    let objects: Vec<RawObject> = match kind_to_list(what) {
        Ok(kind) => client.kind(kind).list_all(&params).await?,
        // A kind of one's own, if one is registered by that name.
        Err(unknown) => match custom::find(&client, what).await? {
            Some(kind) => kind.resource(&client).list_all(&params).await?,
            None => return Err(unknown),
        },
    };
    if objects.is_empty() && format == Format::Table {
        println!("no {what}");
        return Ok(());
    }
    print!("{}", output::print_list(&client, &objects, format).await?);
    Ok(())
}

fn config(path: &std::path::Path, command: ConfigCommand) -> Result<(), CliError> {
    let mut contexts = Contexts::load(path)?;
    match command {
        ConfigCommand::SetContext {
            name,
            url,
            token,
            ca_file,
            client_cert_file,
            client_key_file,
        } => {
            threeport_api::Client::builder(&url).build()?;
            let first = contexts.contexts.is_empty();
            contexts.contexts.insert(
                name.clone(),
                Context {
                    url,
                    token,
                    ca_file,
                    client_cert_file,
                    client_key_file,
                },
            );
            if first {
                contexts.current = Some(name.clone());
            }
            contexts.save(path)?;
            println!(
                "context {name:?} set{}",
                if first { " and selected" } else { "" }
            );
        }
        ConfigCommand::Use { name } => {
            contexts.pick(Some(&name))?;
            contexts.current = Some(name.clone());
            contexts.save(path)?;
            println!("using context {name:?}");
        }
        ConfigCommand::Current => match &contexts.current {
            Some(name) => println!("{name}"),
            None => return Err(CliError::new("no current context")),
        },
        ConfigCommand::List => {
            let rows: Vec<Vec<String>> = contexts
                .contexts
                .iter()
                .map(|(name, c)| {
                    let current = if contexts.current.as_deref() == Some(name) {
                        "*"
                    } else {
                        ""
                    };
                    vec![current.to_owned(), name.clone(), c.url.clone()]
                })
                .collect();
            print!("{}", output::table(&["CURRENT", "NAME", "URL"], &rows));
        }
        ConfigCommand::Delete { name } => {
            if contexts.contexts.remove(&name).is_none() {
                return Err(CliError::new(format!("no context {name:?}")));
            }
            if contexts.current.as_deref() == Some(&name) {
                contexts.current = None;
            }
            contexts.save(path)?;
            println!("context {name:?} deleted");
        }
    }
    Ok(())
}
