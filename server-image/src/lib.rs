//! ferry-server: the serving image of Ferry. It fetches one model, verifies it, loads it on ONNX Runtime, warms it
//! up, and only then reports ready; it serves the Open Inference Protocol v2, can swap to another version without
//! dropping a request, and can stage versions beside the serving one to switch between them at once. The contract with the operator (settings, ports, paths, termination message) is in
//! `contract` and `server-image/README.md`.

#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub use ferry_contract as contract;
pub mod failure;
pub mod fetch;
pub mod fuzzing;
pub mod golden;
pub mod grpc;
pub mod http;
pub mod inference;
pub mod listeners;
pub mod load;
pub mod metrics;
pub mod model;
pub mod oip;
pub mod repository;
pub mod runtime;
pub mod shutdown;
pub mod source;
pub mod source_checks;
pub mod validation;
pub mod verify;
pub mod versions;

use std::future::IntoFuture;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;

use config::{Args, Config};
use contract::{env, exit_code, Reason};
use failure::{write_termination_message, Failure};
use fetch::Fetcher;
use http::AppState;
use listeners::Listeners;
use load::Loader;
use metrics::Metrics;
use repository::Repository;
use runtime::onnx::{OnnxRuntime, PoolSettings};
use runtime::python::{Format, PythonRuntime};
use runtime::Runtimes;
use source_checks::{CheckCounters, SourceWatch};

/// How long a server that was serving keeps accepting connections after SIGTERM, unready: the pod leaves its
/// Services' endpoints when its deletion starts, but each node's kube-proxy takes a moment to follow, and a
/// listener closed before then refuses the connections still routed to it.
const ENDPOINTS_CATCH_UP: Duration = Duration::from_secs(3);

/// Parses the configuration, serves until SIGTERM, and maps failures to the exit code and termination message.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let failure = config::clap_failure(&error);
            let _ = error.print();
            terminate(&termination_path_from_env(), &failure, None);
            return ExitCode::from(exit_code::INVALID_CONFIG);
        }
    };
    if let Some(config::Command::Golden(golden_args)) = args.command.clone() {
        let store = model::StoreSettings {
            s3_endpoint: args.s3_endpoint,
            s3_region: args.s3_region,
            s3_allow_http: args.s3_allow_http,
        };
        return golden::main(golden_args, store);
    }
    if args.print_capabilities {
        return print_capabilities(args);
    }
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(failure) => {
            eprintln!("ferry-server: {failure}");
            terminate(&termination_path_from_env(), &failure, None);
            return ExitCode::from(exit_code::INVALID_CONFIG);
        }
    };
    match start(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            tracing::error!(%failure, "ferry-server stops");
            eprintln!("ferry-server: {failure}");
            terminate(&config.termination_message_path, &failure, Some(&config));
            let code = if failure.reason == Reason::InvalidConfig {
                exit_code::INVALID_CONFIG
            } else {
                exit_code::MODEL_FAILED
            };
            ExitCode::from(code)
        }
    }
}

fn termination_path_from_env() -> PathBuf {
    std::env::var_os(env::TERMINATION_MESSAGE_PATH)
        .filter(|p| !p.is_empty())
        .map_or_else(
            || PathBuf::from(contract::DEFAULT_TERMINATION_MESSAGE_PATH),
            PathBuf::from,
        )
}

fn terminate(path: &std::path::Path, failure: &Failure, config: Option<&Config>) {
    let message = failure.termination_message(
        config.map(|c| c.model.name.as_str()),
        config.map(|c| c.model.version.as_str()),
    );
    if let Err(e) = write_termination_message(path, &message) {
        eprintln!(
            "ferry-server: cannot write the termination message to {}: {e}",
            path.display()
        );
    }
}

fn start(config: &Config) -> Result<(), Failure> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).map_err(|e| {
        Failure::invalid_config(
            env::LOG,
            format!("{:?} is not a log filter: {e}", config.log),
        )
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // TLS for https, s3, gs and az stores; an error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    config.prepare_work_dir()?;
    let metrics = Arc::new(Metrics::new());
    let runtimes = runtimes(&config.runtimes, &metrics)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry-server")
        .build()
        .map_err(|e| {
            Failure::new(
                Reason::InvalidConfig,
                format!("cannot start the async runtime: {e}"),
            )
        })?;
    let result = tokio.block_on(serve(config, runtimes, metrics));
    // In-flight ONNX Runtime calls are bounded; do not let one keep a stopping process alive.
    tokio.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The runtimes of this image, and the capabilities they report: the formats really served and, for Python,
/// the package versions really installed.
fn runtimes(
    config: &config::RuntimeSettings,
    metrics: &Metrics,
) -> Result<(Runtimes, serde_json::Value), Failure> {
    let mut runtimes = Runtimes::default();
    let onnx = serves_onnx(config);
    if onnx {
        let runtime = OnnxRuntime::new(
            &config.onnxruntime_library,
            PoolSettings {
                sessions: config.session_pool_size,
                intra_op_threads: config.intra_op_threads,
            },
        )?;
        runtimes = runtimes.with("onnx", Arc::new(runtime));
    }
    let python = match &config.python {
        Some(settings) => Some(Arc::new(PythonRuntime::new(
            settings.clone(),
            metrics.python_workers_replaced.clone(),
        )?)),
        None => None,
    };
    if let Some(python) = &python {
        for name in runtime::python::FORMATS {
            if let Some(format) = Format::from_name(name) {
                runtimes = runtimes.with(name, python.for_format(format));
            }
        }
    }
    let capabilities = capabilities(onnx, python.as_deref());
    Ok((runtimes, capabilities))
}

/// Whether this image serves ONNX: an image with Python only has no ONNX Runtime at the default path, which leaves
/// ONNX unserved; a path that was set must work (the start fails otherwise).
fn serves_onnx(config: &config::RuntimeSettings) -> bool {
    config.onnxruntime_library_set
        || config.python.is_none()
        || config.onnxruntime_library.is_file()
}

/// What this server serves: the build's ONNX capabilities when it serves ONNX, and the Python formats with the
/// package versions the interpreter reported.
fn capabilities(onnx: bool, python: Option<&PythonRuntime>) -> serde_json::Value {
    let mut capabilities = contract::capabilities_json();
    let mut formats: Vec<&str> = Vec::new();
    if onnx {
        formats.push("onnx");
    } else if let Some(fields) = capabilities.as_object_mut() {
        fields.remove("runtime");
        fields.remove("onnx");
    }
    if let Some(python) = python {
        formats.extend(runtime::python::FORMATS);
        capabilities["python"] = serde_json::json!({ "versions": python.installed() });
    }
    capabilities["formats"] = serde_json::json!(formats);
    capabilities
}

/// `--print-capabilities`: what this image serves, with the Python packages it really has when `FERRY_PYTHON`
/// is set (asked of the interpreter, never taken from a table).
fn print_capabilities(args: Args) -> ExitCode {
    let work = match tempfile::tempdir() {
        Ok(work) => work,
        Err(e) => {
            eprintln!("ferry-server: cannot create a temporary directory: {e}");
            return ExitCode::from(exit_code::INVALID_CONFIG);
        }
    };
    let args = Args {
        work_dir: work.path().to_path_buf(),
        ..args
    };
    // The ONNX Runtime library is loaded at start, not here: its capabilities are the build's. The Python
    // interpreter is asked.
    let settings = args.runtime_settings();
    let result = match &settings.python {
        Some(python) => PythonRuntime::new(
            python.clone(),
            Metrics::new().python_workers_replaced.clone(),
        )
        .map(|python| capabilities(serves_onnx(&settings), Some(&python))),
        None => Ok(capabilities(serves_onnx(&settings), None)),
    };
    match result {
        Ok(capabilities) => {
            println!("{capabilities}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("ferry-server: {failure}");
            ExitCode::from(exit_code::INVALID_CONFIG)
        }
    }
}

async fn bind(config: &Config, port: u16, setting: &str) -> Result<TcpListener, Failure> {
    TcpListener::bind((config.listen_address, port))
        .await
        .map_err(|e| {
            Failure::invalid_config(
                setting,
                format!("cannot listen on {}:{port}: {e}", config.listen_address),
            )
        })
}

async fn serve(
    config: &Config,
    (runtimes, capabilities): (Runtimes, serde_json::Value),
    metrics: Arc<Metrics>,
) -> Result<(), Failure> {
    let mut signals = shutdown::Signals::install();
    let fetcher = Fetcher {
        store: config.store.clone(),
        work_dir: config.work_dir.clone(),
        max_bytes: config.max_model_bytes,
        timeout: config.download_timeout,
        concurrency: config.download_concurrency,
        part_bytes: config.download_part_bytes,
    };
    let loader = Loader {
        fetcher: fetcher.clone(),
        runtimes,
        capabilities,
        metrics: metrics.clone(),
    };
    let repository = Arc::new(Repository::new(
        config.model.name.clone(),
        loader,
        config.max_loaded_versions,
    ));
    let source = Arc::new(SourceWatch::default());
    let state = AppState {
        repository: repository.clone(),
        metrics: metrics.clone(),
        admin: Arc::new(config.admin.clone()),
        source: source.clone(),
    };

    let mut listeners = Listeners::default();
    let inference = listeners.watch(
        "inference",
        bind(config, config.http_port, env::HTTP_PORT).await?,
        false,
    );
    let admin = listeners.watch(
        "admin",
        bind(config, config.admin_port, env::ADMIN_PORT).await?,
        false,
    );
    let grpc = listeners.watch(
        "gRPC",
        bind(config, config.grpc_port, env::GRPC_PORT).await?,
        true,
    );
    let address =
        |l: &listeners::Listener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(inference = %address(&inference), admin = %address(&admin), grpc = %address(&grpc), "listening");
    if config.admin == auth::AdminAuth::InsecureOpen {
        tracing::warn!(
            "{}=true: anyone who reaches the admin port can change the served model",
            env::INSECURE_OPEN_ADMIN
        );
    }

    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let grpc_service = grpc::service(
        repository.clone(),
        metrics.clone(),
        config.max_request_bytes,
    );
    listeners.spawn(
        "gRPC",
        tonic::transport::Server::builder()
            .add_service(grpc_service)
            .serve_with_incoming_shutdown(grpc.incoming(), until_stopped(stopped.clone())),
    );
    listeners.spawn(
        "inference",
        axum::serve(
            inference,
            http::inference_router(state.clone(), config.max_request_bytes),
        )
        .with_graceful_shutdown(until_stopped(stopped.clone()))
        .into_future(),
    );
    listeners.spawn(
        "admin",
        axum::serve(admin, http::admin_router(state))
            .with_graceful_shutdown(until_stopped(stopped))
            .into_future(),
    );

    let attempt = match repository.begin_load(config.model.clone(), false) {
        Ok(repository::Begun::Started(attempt)) => attempt,
        _ => {
            return Err(Failure::new(
                Reason::InvalidConfig,
                "a load was running before start-up",
            ))
        }
    };
    let initial_load = tokio::spawn(repository.clone().run_load(attempt));
    let serving = AtomicBool::new(false);
    // Serves until a signal, or until the initial load or a listener fails.
    let load_then_serve = async {
        match initial_load.await {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => return failure,
            Err(e) => return Failure::stopped("the model load", e),
        }
        serving.store(true, Ordering::Release);
        if let Some(interval) = config.refresh_interval {
            source.start();
            tokio::spawn(source_checks::run(
                repository.clone(),
                source,
                fetcher,
                interval,
                CheckCounters::new(&metrics, &config.model.name),
            ));
        }
        std::future::pending().await
    };
    let outcome = tokio::select! {
        // A model that cannot be served exits at once.
        failure = load_then_serve => return Err(failure),
        () = signals.received() => {
            repository.begin_shutdown();
            if serving.load(Ordering::Acquire) {
                tokio::time::sleep(ENDPOINTS_CATCH_UP).await;
            }
            Ok(())
        }
        failure = listeners.failed() => {
            tracing::error!(%failure, "a listener failed; no longer ready");
            repository.stop_serving(failure.to_string());
            Err(failure)
        }
    };

    let _ = stop.send(true);
    if !listeners.drain(config.shutdown_timeout).await {
        tracing::warn!(timeout = ?config.shutdown_timeout, "requests still running at the shutdown timeout; exiting");
    }
    outcome
}
