use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ferry::admin_credential::AdminKey;
use ferry::api::ModelDeployment;
use ferry::config::OperatorConfig;
use ferry::controller::{self, RunOptions};
use ferry::metrics::Metrics;
use ferry::plugin;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};

/// Ferry: roll ML model versions out without downtime. Installed as `kubectl-ferry`, it is the kubectl plugin.
#[derive(Parser)]
#[command(name = "ferry", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions, or write them into directories.
    Crd {
        /// Write one file per CRD into this directory instead of printing them (repeatable).
        #[arg(long)]
        output_dir: Vec<PathBuf>,
    },
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Show a ModelDeployment's versions, traffic, conditions and every pod (phase, SHA-256, load progress).
    Status {
        #[command(flatten)]
        target: Target,
        /// Keep showing it, redrawn in place as it changes.
        #[arg(long, short)]
        watch: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Point a ModelDeployment at a new model version (for CI pipelines; GitOps users commit the change instead).
    Set {
        #[command(flatten)]
        target: Target,
        /// New model URI (default: unchanged).
        #[arg(long)]
        uri: Option<String>,
        /// New model version.
        #[arg(long)]
        version: String,
        /// Expected SHA-256 of the new file; without it any pin of the previous version is removed.
        #[arg(long)]
        sha256: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Show a ModelDeployment's rollout history.
    History(Target),
    /// Promote the ready candidate (when spec.rollout.autoPromote is false).
    Promote(Target),
    /// Abort the candidate; traffic stays where it is.
    Abort(Target),
    /// Rotate the admin credential of the serving pods: a new Secret, picked up by running pods without a restart.
    Rotate(Target),
    /// Resume spec.model.refresh after a rollback paused it: the newest object at the URI rolls out.
    Resume(Target),
    /// Roll back to the previous version, or to the one given with --to (with spec.model.refresh: to an
    /// earlier object, and refresh pauses until `resume`).
    Rollback {
        #[command(flatten)]
        target: Target,
        /// A version, revision or object from `kubectl ferry history`.
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(clap::Args)]
struct Wait {
    /// Follow the rollout until it is promoted (exit 0), aborted (exit 1) or the timeout passes (exit 2).
    #[arg(long)]
    wait: bool,
    /// With --wait: the longest wait, in seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

/// Exit code of a `--wait` whose rollout was aborted.
const EXIT_ABORTED: u8 = 1;
/// Exit code of a `--wait` that timed out.
const EXIT_TIMED_OUT: u8 = 2;

#[derive(clap::Args)]
struct Target {
    /// Name of the ModelDeployment.
    name: String,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    namespace: Option<String>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Serving image used when spec.server.image is empty.
    #[arg(long, env = "FERRY_SERVER_IMAGE", default_value = "ferry-server:0.1.0")]
    server_image: String,
    /// Pull policy of the serving image.
    #[arg(
        long,
        env = "FERRY_SERVER_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    server_image_pull_policy: String,
    /// Default resources of the serving container, as JSON (a ResourceRequirements).
    #[arg(long, env = "FERRY_SERVER_RESOURCES")]
    server_resources: Option<String>,
    /// Model formats the default serving image runs, comma-separated (used while no ModelRuntime exists).
    #[arg(
        long,
        env = "FERRY_SERVER_FORMATS",
        default_value = "onnx",
        value_delimiter = ','
    )]
    server_formats: Vec<String>,
    /// Label selector of the ModelRuntimes to choose from (default: all of them), e.g. for two controllers
    /// with catalogues of their own in one cluster.
    #[arg(long, env = "FERRY_RUNTIME_SELECTOR")]
    runtime_selector: Option<String>,
    /// Watch only these namespaces, comma-separated (default: all namespaces).
    #[arg(long, env = "FERRY_WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// ModelDeployments reconciled concurrently.
    #[arg(long, env = "FERRY_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Address of the metrics and health endpoints.
    #[arg(long, env = "FERRY_METRICS_ADDRESS", default_value = "0.0.0.0:9090")]
    metrics_address: SocketAddr,
    /// Cluster DNS domain, for status.endpoint.
    #[arg(long, env = "FERRY_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Run only while holding the leader Lease (for more than one replica).
    #[arg(long, env = "FERRY_LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    /// Namespace of the leader Lease (default: POD_NAMESPACE).
    #[arg(long, env = "FERRY_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "FERRY_LEADER_ELECTION_LEASE_NAME",
        default_value = "ferry-controller"
    )]
    leader_election_lease_name: String,
    /// Identity in the leader election (default: POD_NAME, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    leader_election_identity: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "FERRY_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// File holding the key (at least 32 bytes) the serving pods' admin credentials are derived from. Every
    /// replica needs the same key; the chart mounts it from a Secret it creates.
    #[arg(long, env = "FERRY_ADMIN_KEY_FILE")]
    admin_key_file: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ferry: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ferry: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Status {
            target,
            watch,
            wait,
        } => {
            let (api, _) = target_api(&target).await?;
            if wait.wait {
                let generation = api
                    .get(&target.name)
                    .await?
                    .metadata
                    .generation
                    .unwrap_or_default();
                return follow_until(&api, &target.name, generation, &wait).await;
            }
            if watch {
                plugin::follow(&api, &target.name, None, Duration::MAX).await?;
                return Ok(ExitCode::SUCCESS);
            }
            let md = api.get(&target.name).await?;
            print!("{}", plugin::render_status(&md));
            if let Some(status) = &md.status {
                print!("{}", plugin::render_pods(status, Timestamp::now()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Set {
            target,
            uri,
            version,
            sha256,
            wait,
        } => {
            let (api, _) = target_api(&target).await?;
            let (generation, message) = plugin::set(
                &api,
                &target.name,
                uri.as_deref(),
                &version,
                sha256.as_deref(),
            )
            .await?;
            println!("{message}");
            if wait.wait {
                return follow_until(&api, &target.name, generation, &wait).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd { output_dir } => write_crds(output_dir).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run(*args).await.map(|()| ExitCode::SUCCESS),
        Command::History(target) => {
            let (api, _) = target_api(&target).await?;
            print!("{}", plugin::render_history(&api.get(&target.name).await?));
            Ok(ExitCode::SUCCESS)
        }
        Command::Promote(target) => {
            let (api, _) = target_api(&target).await?;
            println!("{}", plugin::promote(&api, &target.name).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Abort(target) => {
            let (api, _) = target_api(&target).await?;
            println!("{}", plugin::abort(&api, &target.name).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Rotate(target) => {
            let (api, namespace) = target_api(&target).await?;
            let client = Client::try_default().await?;
            println!(
                "{}",
                plugin::rotate(client, &api, &namespace, &target.name).await?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume(target) => {
            let (api, _) = target_api(&target).await?;
            println!("{}", plugin::resume(&api, &target.name).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback { target, to } => {
            let (_, namespace) = target_api(&target).await?;
            let client = Client::try_default().await?;
            println!(
                "{}",
                plugin::rollback(client, &namespace, &target.name, to.as_deref()).await?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Follows `generation` with the progress display until its rollout ends; the exit code says how.
async fn follow_until(
    api: &Api<ModelDeployment>,
    name: &str,
    generation: i64,
    wait: &Wait,
) -> anyhow::Result<ExitCode> {
    let ending = plugin::follow(
        api,
        name,
        Some(generation),
        Duration::from_secs(wait.timeout),
    )
    .await?;
    Ok(match ending {
        Some(plugin::Ending::Promoted(message)) => {
            println!("{name}: promoted: {message}");
            ExitCode::SUCCESS
        }
        Some(plugin::Ending::Aborted(message)) => {
            eprintln!("{name}: aborted: {message}");
            ExitCode::from(EXIT_ABORTED)
        }
        Some(plugin::Ending::TimedOut(message)) => {
            eprintln!("{name}: timed out: {message}");
            ExitCode::from(EXIT_TIMED_OUT)
        }
        None => anyhow::bail!("stopped following {name} before its rollout ended"),
    })
}

async fn target_api(target: &Target) -> anyhow::Result<(Api<ModelDeployment>, String)> {
    let client = Client::try_default().await?;
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    Ok((Api::namespaced(client, &namespace), namespace))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| "info".into());
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_format == "json" {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    let server_resources = args
        .server_resources
        .as_deref()
        .filter(|json| !json.trim().is_empty())
        .map(serde_json::from_str)
        .transpose()
        .map_err(|error| anyhow::anyhow!("--server-resources (FERRY_SERVER_RESOURCES) is not a ResourceRequirements: {error}"))?;
    let config = OperatorConfig {
        server_image: args.server_image,
        server_image_pull_policy: args.server_image_pull_policy,
        server_resources,
        server_formats: args.server_formats,
        cluster_domain: args.cluster_domain,
        admin_key: AdminKey::from_file(&args.admin_key_file)
            .map_err(|error| anyhow::anyhow!("--admin-key-file (FERRY_ADMIN_KEY_FILE): {error}"))?,
    };
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(ferry::metrics::serve(
        args.metrics_address,
        metrics.clone(),
        stopped(stop_rx.clone()),
    ));
    let options = RunOptions {
        namespaces: args
            .watch_namespaces
            .into_iter()
            .filter(|ns| !ns.is_empty())
            .collect(),
        concurrency: args.concurrency,
        runtime_selector: args.runtime_selector.filter(|s| !s.trim().is_empty()),
    };
    let run_controller = {
        let client = client.clone();
        let stop_rx = stop_rx.clone();
        move || controller::run(client, config, options, metrics, stopped(stop_rx))
    };
    if args.leader_election {
        let namespace = args
            .leader_election_namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .ok_or_else(|| anyhow::anyhow!("--leader-election needs --leader-election-namespace (FERRY_LEADER_ELECTION_NAMESPACE) or POD_NAMESPACE"))?;
        let identity = args.leader_election_identity.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        let election = ferry::leader::LeaderElection {
            namespace,
            lease_name: args.leader_election_lease_name,
            identity,
        };
        ferry::leader::run_while_leader(client, election, stopped(stop_rx), run_controller).await?;
    } else {
        run_controller().await?;
    }
    server.await??;
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}

fn write_crds(output_dirs: Vec<PathBuf>) -> anyhow::Result<()> {
    let files = ferry::crd::files()?;
    if output_dirs.is_empty() {
        for file in &files {
            print!("---\n{}", file.yaml);
        }
    }
    for dir in output_dirs {
        std::fs::create_dir_all(&dir)?;
        for file in &files {
            let path = dir.join(&file.file_name);
            std::fs::write(&path, &file.yaml)?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
