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
pub mod load;
pub mod metrics;
pub mod oip;
pub mod repository;
pub mod runtime;
pub mod shutdown;
pub mod source;
pub mod validation;
pub mod verify;
pub mod versions;

use std::future::IntoFuture;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
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
use load::Loader;
use metrics::Metrics;
use repository::Repository;
use runtime::onnx::{OnnxRuntime, PoolSettings};

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
        let store = config::StoreSettings {
            s3_endpoint: args.s3_endpoint,
            s3_region: args.s3_region,
            s3_allow_http: args.s3_allow_http,
        };
        return golden::main(golden_args, store);
    }
    if args.print_capabilities {
        println!("{}", contract::capabilities_json());
        return ExitCode::SUCCESS;
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

/// `ferry_source_checks_total{model, result}`, one counter per result.
fn source_check_counters(metrics: &Metrics, model: &str) -> source::CheckCounters {
    let counter = |result: &str| {
        metrics
            .source_checks
            .get_or_create_owned(&metrics::CheckLabels {
                model: model.to_owned(),
                result: result.to_owned(),
            })
    };
    source::CheckCounters {
        same: counter("same"),
        changed: counter("changed"),
        error: counter("error"),
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
    let runtime = OnnxRuntime::new(
        &config.onnxruntime_library,
        PoolSettings {
            sessions: config.session_pool_size,
            intra_op_threads: config.intra_op_threads,
        },
    )?;
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
    let result = tokio.block_on(serve(config, runtime));
    // In-flight ONNX Runtime calls are bounded; do not let one keep a stopping process alive.
    tokio.shutdown_timeout(Duration::from_secs(1));
    result
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

async fn serve(config: &Config, runtime: OnnxRuntime) -> Result<(), Failure> {
    let mut signals = shutdown::Signals::install();
    let metrics = Arc::new(Metrics::new());
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
        runtime: Arc::new(runtime),
        metrics: metrics.clone(),
    };
    let repository = Arc::new(Repository::new(
        config.model.name.clone(),
        loader,
        config.max_loaded_versions,
    ));
    let state_metrics = metrics.clone();
    let state = AppState {
        repository: repository.clone(),
        metrics,
        admin: Arc::new(config.admin.clone()),
    };

    let inference = bind(config, config.http_port, env::HTTP_PORT).await?;
    let admin = bind(config, config.admin_port, env::ADMIN_PORT).await?;
    let grpc = bind(config, config.grpc_port, env::GRPC_PORT).await?;
    let address = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
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
        state.metrics.clone(),
        config.max_request_bytes,
    );
    let grpc_stopped = until_stopped(stopped.clone());
    let servers = [
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(grpc_service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                    grpc_stopped,
                )
                .await
                .map_err(std::io::Error::other)
        }),
        tokio::spawn(
            axum::serve(
                inference,
                http::inference_router(state.clone(), config.max_request_bytes),
            )
            .with_graceful_shutdown(until_stopped(stopped.clone()))
            .into_future(),
        ),
        tokio::spawn(
            axum::serve(admin, http::admin_router(state))
                .with_graceful_shutdown(until_stopped(stopped))
                .into_future(),
        ),
    ];

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
    tokio::select! {
        loaded = initial_load => match loaded {
            Ok(Ok(())) => {
                let _checks = config.refresh_interval.map(|interval| {
                    repository.enable_source_checks();
                    tokio::spawn(source::run_checks(
                        repository.clone(),
                        fetcher,
                        interval,
                        source_check_counters(&state_metrics, &config.model.name),
                    ))
                });
                signals.received().await
            }
            Ok(Err(failure)) => return Err(failure),
            Err(e) => return Err(Failure::new(Reason::CorruptModel, format!("the model load stopped: {e}"))),
        },
        _ = signals.received() => {}
    }

    repository.begin_shutdown();
    let _ = stop.send(true);
    let drained =
        tokio::time::timeout(config.shutdown_timeout, futures::future::join_all(servers)).await;
    if drained.is_err() {
        tracing::warn!(timeout = ?config.shutdown_timeout, "requests still running at the shutdown timeout; exiting");
    }
    Ok(())
}
