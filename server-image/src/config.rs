//! The command line: flags and environment variables (a flag wins over its variable), and the `golden` subcommand.
//!
//! Parsing is clap's job; this module checks what clap cannot (the model's fields through `model`, distinct ports,
//! bounds, a writable work directory) and reports the first problem as an `InvalidConfig` failure that names the
//! environment variable, so an operator reading `kubectl describe pod` knows what to fix.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use url::Url;

use crate::auth::{self, AdminAuth};
use crate::contract::{self, env};
use crate::failure::Failure;
use crate::model::{
    model_from_file, ModelSpec, StoreSettings, ValidationSpec, ENV_FIELD_NAMES,
    ENV_VALIDATION_NAMES,
};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ferry-server",
    version,
    about = "Serves one ONNX model over the Open Inference Protocol",
    args_override_self = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Print the formats, ONNX opsets and datatypes this build serves, as JSON, and exit.
    #[arg(long)]
    pub print_capabilities: bool,

    #[arg(long, env = env::MODEL_NAME, value_name = env::MODEL_NAME)]
    pub model_name: Option<String>,
    #[arg(long, env = env::MODEL_URI, value_name = env::MODEL_URI)]
    pub model_uri: Option<String>,
    #[arg(long, env = env::MODEL_VERSION, value_name = env::MODEL_VERSION)]
    pub model_version: Option<String>,
    #[arg(long, env = env::MODEL_SHA256, value_name = env::MODEL_SHA256)]
    pub model_sha256: Option<String>,
    #[arg(long, env = env::MODEL_FORMAT, value_name = env::MODEL_FORMAT, default_value = contract::DEFAULT_MODEL_FORMAT)]
    pub model_format: String,
    /// JSON file `{"uri", "version", "sha256"?, "format"?}` with the model to load at start; wins over the
    /// FERRY_MODEL_URI/VERSION/SHA256/FORMAT settings.
    #[arg(long, env = env::MODEL_FILE, value_name = env::MODEL_FILE)]
    pub model_file: Option<PathBuf>,
    /// Most model versions loaded at once, the serving one included.
    #[arg(long, env = env::MAX_LOADED_VERSIONS, value_name = env::MAX_LOADED_VERSIONS, default_value_t = contract::DEFAULT_MAX_LOADED_VERSIONS)]
    pub max_loaded_versions: usize,
    /// Golden set the model must reproduce before it reports ready (JSON, see `ferry-server golden`).
    #[arg(long, env = env::VALIDATION_URI, value_name = env::VALIDATION_URI)]
    pub validation_uri: Option<String>,
    #[arg(long, env = env::VALIDATION_SHA256, value_name = env::VALIDATION_SHA256)]
    pub validation_sha256: Option<String>,

    #[arg(long, env = env::LISTEN_ADDRESS, value_name = env::LISTEN_ADDRESS, default_value = contract::DEFAULT_LISTEN_ADDRESS)]
    pub listen_address: IpAddr,
    /// Inference port; 0 picks a free port (the log reports it).
    #[arg(long, env = env::HTTP_PORT, value_name = env::HTTP_PORT, default_value_t = contract::DEFAULT_HTTP_PORT)]
    pub http_port: u16,
    /// Admin port; 0 picks a free port (the log reports it).
    #[arg(long, env = env::ADMIN_PORT, value_name = env::ADMIN_PORT, default_value_t = contract::DEFAULT_ADMIN_PORT)]
    pub admin_port: u16,
    /// gRPC inference port; 0 picks a free port (the log reports it).
    #[arg(long, env = env::GRPC_PORT, value_name = env::GRPC_PORT, default_value_t = contract::DEFAULT_GRPC_PORT)]
    pub grpc_port: u16,

    #[arg(long, env = env::WORK_DIR, value_name = env::WORK_DIR, default_value = contract::DEFAULT_WORK_DIR)]
    pub work_dir: PathBuf,
    #[arg(long, env = env::MAX_MODEL_BYTES, value_name = env::MAX_MODEL_BYTES, default_value_t = contract::DEFAULT_MAX_MODEL_BYTES)]
    pub max_model_bytes: u64,
    #[arg(long, env = env::DOWNLOAD_TIMEOUT_SECONDS, value_name = env::DOWNLOAD_TIMEOUT_SECONDS, default_value_t = contract::DEFAULT_DOWNLOAD_TIMEOUT_SECONDS)]
    pub download_timeout_seconds: u64,
    #[arg(long, env = env::DOWNLOAD_CONCURRENCY, value_name = env::DOWNLOAD_CONCURRENCY, default_value_t = contract::DEFAULT_DOWNLOAD_CONCURRENCY)]
    pub download_concurrency: usize,
    #[arg(long, env = env::DOWNLOAD_PART_BYTES, value_name = env::DOWNLOAD_PART_BYTES, default_value_t = contract::DEFAULT_DOWNLOAD_PART_BYTES)]
    pub download_part_bytes: u64,
    #[arg(long, env = env::TERMINATION_MESSAGE_PATH, value_name = env::TERMINATION_MESSAGE_PATH, default_value = contract::DEFAULT_TERMINATION_MESSAGE_PATH)]
    pub termination_message_path: PathBuf,

    #[arg(long, env = env::S3_ENDPOINT, value_name = env::S3_ENDPOINT)]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = env::S3_REGION, value_name = env::S3_REGION)]
    pub s3_region: Option<String>,
    #[arg(long, env = env::S3_ALLOW_HTTP, value_name = env::S3_ALLOW_HTTP, default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_allow_http: bool,

    #[arg(long, env = env::ONNXRUNTIME_LIBRARY, value_name = env::ONNXRUNTIME_LIBRARY, default_value = contract::DEFAULT_ONNXRUNTIME_LIBRARY)]
    pub onnxruntime_library: PathBuf,
    #[arg(long, env = env::PYTHON, value_name = env::PYTHON)]
    pub python: Option<PathBuf>,
    #[arg(long, env = env::PYTHON_WORKERS, value_name = env::PYTHON_WORKERS)]
    pub python_workers: Option<usize>,
    #[arg(long, env = env::PYTHON_REQUEST_TIMEOUT_SECONDS, value_name = env::PYTHON_REQUEST_TIMEOUT_SECONDS, default_value_t = 30)]
    pub python_request_timeout_seconds: u64,
    #[arg(long, env = env::PYTHON_WORKER_MAX_RSS_BYTES, value_name = env::PYTHON_WORKER_MAX_RSS_BYTES)]
    pub python_worker_max_rss_bytes: Option<u64>,
    #[arg(long, env = env::PYTHON_ALLOWED_GLOBALS, value_name = env::PYTHON_ALLOWED_GLOBALS, value_delimiter = ',')]
    pub python_allowed_globals: Vec<String>,
    #[arg(long, env = env::MAX_UNPACKED_BYTES, value_name = env::MAX_UNPACKED_BYTES)]
    pub max_unpacked_bytes: Option<u64>,
    #[arg(long, env = env::SESSION_POOL_SIZE, value_name = env::SESSION_POOL_SIZE)]
    pub session_pool_size: Option<usize>,
    #[arg(long, env = env::INTRA_OP_THREADS, value_name = env::INTRA_OP_THREADS)]
    pub intra_op_threads: Option<usize>,
    #[arg(long, env = env::MAX_REQUEST_BYTES, value_name = env::MAX_REQUEST_BYTES, default_value_t = contract::DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    #[arg(long, env = env::SHUTDOWN_TIMEOUT_SECONDS, value_name = env::SHUTDOWN_TIMEOUT_SECONDS, default_value_t = contract::DEFAULT_SHUTDOWN_TIMEOUT_SECONDS)]
    pub shutdown_timeout_seconds: u64,
    #[arg(long, env = env::LOG, value_name = env::LOG, default_value = "info")]
    pub log: String,
    #[arg(long, env = env::ADMIN_TOKEN_FILE, value_name = env::ADMIN_TOKEN_FILE)]
    pub admin_token_file: Option<PathBuf>,
    #[arg(long, env = env::INSECURE_OPEN_ADMIN, value_name = env::INSECURE_OPEN_ADMIN, default_value_t = false, action = clap::ArgAction::Set)]
    pub insecure_open_admin: bool,
    /// Token of the object to download (`etag:…`, `version:…`, `modified:…;size:…`); another object at the URI
    /// fails the load with ObjectChanged.
    #[arg(long, env = env::MODEL_OBJECT, value_name = env::MODEL_OBJECT)]
    pub model_object: Option<String>,
    /// Seconds between checks of the serving model's URI for a new object (0: off; else 10 to 86400).
    #[arg(long, env = env::REFRESH_INTERVAL_SECONDS, value_name = env::REFRESH_INTERVAL_SECONDS, default_value_t = 0)]
    pub refresh_interval_seconds: u64,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Runs a model on requests and writes a golden set (validation file) of its answers.
    Golden(crate::golden::GoldenArgs),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub model: ModelSpec,
    pub listen_address: IpAddr,
    pub http_port: u16,
    pub admin_port: u16,
    pub grpc_port: u16,
    pub work_dir: PathBuf,
    pub max_model_bytes: u64,
    pub download_timeout: Duration,
    pub download_concurrency: usize,
    pub download_part_bytes: u64,
    pub termination_message_path: PathBuf,
    pub store: StoreSettings,
    pub runtimes: RuntimeSettings,
    pub max_request_bytes: usize,
    pub shutdown_timeout: Duration,
    pub log: String,
    pub admin: AdminAuth,
    pub max_loaded_versions: usize,
    /// `FERRY_REFRESH_INTERVAL_SECONDS`; `None` when off.
    pub refresh_interval: Option<Duration>,
}

/// Which runtimes to start, with their settings.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub onnxruntime_library: PathBuf,
    /// Whether `onnxruntime_library` was set rather than defaulted: a default path that is missing in an image
    /// with Python only leaves ONNX unserved instead of failing the start.
    pub onnxruntime_library_set: bool,
    pub session_pool_size: Option<usize>,
    pub intra_op_threads: Option<usize>,
    pub python: Option<crate::runtime::python::PythonSettings>,
}

impl Args {
    pub fn runtime_settings(&self) -> RuntimeSettings {
        let python = self
            .python
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|python| crate::runtime::python::PythonSettings {
                python,
                work_dir: self.work_dir.clone(),
                workers: self.python_workers.filter(|&n| n > 0),
                request_timeout: Duration::from_secs(self.python_request_timeout_seconds.max(1)),
                load_timeout: PYTHON_LOAD_TIMEOUT,
                max_worker_rss_bytes: self.python_worker_max_rss_bytes.filter(|&n| n > 0),
                max_unpacked_bytes: self
                    .max_unpacked_bytes
                    .unwrap_or(self.max_model_bytes.saturating_mul(4)),
                extra_globals: self
                    .python_allowed_globals
                    .iter()
                    .map(|g| g.trim().to_owned())
                    .filter(|g| !g.is_empty())
                    .collect(),
            });
        RuntimeSettings {
            onnxruntime_library: self.onnxruntime_library.clone(),
            onnxruntime_library_set: self.onnxruntime_library.as_path()
                != std::path::Path::new(contract::DEFAULT_ONNXRUNTIME_LIBRARY),
            session_pool_size: self.session_pool_size,
            intra_op_threads: self.intra_op_threads,
            python,
        }
    }
}

/// Longest a Python worker may take to load a model.
const PYTHON_LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// `FERRY_REFRESH_INTERVAL_SECONDS`: 0 is off, else 10 to 86400.
fn refresh_interval(seconds: u64) -> Result<Option<Duration>, Failure> {
    if seconds == 0 {
        return Ok(None);
    }
    let bounds = contract::MIN_REFRESH_INTERVAL_SECONDS..=contract::MAX_REFRESH_INTERVAL_SECONDS;
    if !bounds.contains(&seconds) {
        return Err(Failure::invalid_config(
            env::REFRESH_INTERVAL_SECONDS,
            format!(
                "must be 0 (off) or from {} to {} (got {seconds})",
                bounds.start(),
                bounds.end()
            ),
        ));
    }
    Ok(Some(Duration::from_secs(seconds)))
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, Failure> {
        let mut model = match &args.model_file {
            Some(path) => model_from_file(path, args.model_name.as_deref(), &args.model_format)?,
            None => ModelSpec::parse(
                &ENV_FIELD_NAMES,
                args.model_name.as_deref(),
                args.model_uri.as_deref(),
                args.model_version.as_deref(),
                args.model_sha256.as_deref(),
                &args.model_format,
            )?
            .pinned(env::MODEL_OBJECT, args.model_object.as_deref())?,
        };
        let refresh_interval = refresh_interval(args.refresh_interval_seconds)?;
        positive(env::MAX_LOADED_VERSIONS, args.max_loaded_versions as u64)?;
        model.validation = ValidationSpec::parse(
            ENV_VALIDATION_NAMES,
            args.validation_uri.as_deref(),
            args.validation_sha256.as_deref(),
        )?;
        let ports = [
            (env::HTTP_PORT, args.http_port),
            (env::ADMIN_PORT, args.admin_port),
            (env::GRPC_PORT, args.grpc_port),
        ];
        for (i, &(setting, port)) in ports.iter().enumerate() {
            if let Some((other, _)) = ports[..i].iter().find(|&&(_, p)| p != 0 && p == port) {
                return Err(Failure::invalid_config(
                    setting,
                    format!("must differ from {other} (both are {port})"),
                ));
            }
        }
        positive(env::MAX_MODEL_BYTES, args.max_model_bytes)?;
        positive(env::DOWNLOAD_TIMEOUT_SECONDS, args.download_timeout_seconds)?;
        if !(1..=contract::MAX_DOWNLOAD_CONCURRENCY).contains(&args.download_concurrency) {
            return Err(Failure::invalid_config(
                env::DOWNLOAD_CONCURRENCY,
                format!(
                    "must be from 1 to {} (got {})",
                    contract::MAX_DOWNLOAD_CONCURRENCY,
                    args.download_concurrency
                ),
            ));
        }
        if args.download_part_bytes < contract::MIN_DOWNLOAD_PART_BYTES {
            return Err(Failure::invalid_config(
                env::DOWNLOAD_PART_BYTES,
                format!(
                    "must be at least {} (got {})",
                    contract::MIN_DOWNLOAD_PART_BYTES,
                    args.download_part_bytes
                ),
            ));
        }
        positive(env::MAX_REQUEST_BYTES, args.max_request_bytes as u64)?;
        if let Some(size) = args.session_pool_size {
            positive(env::SESSION_POOL_SIZE, size as u64)?;
        }
        if let Some(threads) = args.intra_op_threads {
            positive(env::INTRA_OP_THREADS, threads as u64)?;
        }
        if let Some(endpoint) = &args.s3_endpoint {
            check_s3_endpoint(endpoint, args.s3_allow_http)?;
        }
        if args.s3_region.as_deref() == Some("") {
            return Err(Failure::invalid_config(env::S3_REGION, "must not be empty"));
        }
        if args.termination_message_path.as_os_str().is_empty() {
            return Err(Failure::invalid_config(
                env::TERMINATION_MESSAGE_PATH,
                "must not be empty",
            ));
        }
        if let Some(path) = &args.admin_token_file {
            // A pod whose credential did not mount is misconfigured; never fall back to refusing (or opening).
            if auth::read_credential(path).is_none() {
                return Err(Failure::invalid_config(
                    env::ADMIN_TOKEN_FILE,
                    format!("{} is missing, unreadable or empty", path.display()),
                ));
            }
        }
        let runtimes = args.runtime_settings();
        Ok(Config {
            model,
            listen_address: args.listen_address,
            http_port: args.http_port,
            admin_port: args.admin_port,
            grpc_port: args.grpc_port,
            work_dir: args.work_dir,
            max_model_bytes: args.max_model_bytes,
            download_timeout: Duration::from_secs(args.download_timeout_seconds),
            download_concurrency: args.download_concurrency,
            download_part_bytes: args.download_part_bytes,
            termination_message_path: args.termination_message_path,
            store: StoreSettings {
                s3_endpoint: args.s3_endpoint,
                s3_region: args.s3_region,
                s3_allow_http: args.s3_allow_http,
            },
            runtimes,
            max_request_bytes: args.max_request_bytes,
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout_seconds),
            admin: AdminAuth::from_settings(args.admin_token_file, args.insecure_open_admin),
            log: args.log,
            max_loaded_versions: args.max_loaded_versions,
            refresh_interval,
        })
    }

    /// Creates the work directory if needed and proves it writable, so a read-only mount fails at start-up.
    pub fn prepare_work_dir(&self) -> Result<(), Failure> {
        let fail = |e: std::io::Error| {
            Failure::invalid_config(
                env::WORK_DIR,
                format!(
                    "{} is not a writable directory: {e}",
                    self.work_dir.display()
                ),
            )
        };
        std::fs::create_dir_all(&self.work_dir).map_err(fail)?;
        tempfile::tempfile_in(&self.work_dir).map_err(fail)?;
        Ok(())
    }
}

/// A clap parse error as a failure naming the environment variable (clap shows it as the value name).
pub fn clap_failure(error: &clap::Error) -> Failure {
    let first_line = error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    let setting = match error.get(clap::error::ContextKind::InvalidArg) {
        Some(clap::error::ContextValue::String(arg)) => arg
            .split(['<', '>'])
            .find(|part| part.starts_with("FERRY_"))
            .map(str::to_owned),
        _ => None,
    };
    match setting {
        Some(setting) => Failure {
            setting: Some(setting),
            ..Failure::new(crate::contract::Reason::InvalidConfig, first_line)
        },
        None => Failure::new(crate::contract::Reason::InvalidConfig, first_line),
    }
}

fn positive(setting: &str, value: u64) -> Result<(), Failure> {
    if value == 0 {
        return Err(Failure::invalid_config(setting, "must be greater than 0"));
    }
    Ok(())
}

fn check_s3_endpoint(endpoint: &str, allow_http: bool) -> Result<(), Failure> {
    let url = Url::parse(endpoint).map_err(|e| {
        Failure::invalid_config(env::S3_ENDPOINT, format!("{endpoint:?} is not a URL: {e}"))
    })?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http => Ok(()),
        "http" => Err(Failure::invalid_config(
            env::S3_ENDPOINT,
            format!(
                "{endpoint} is plain http; set {}=true to allow it",
                env::S3_ALLOW_HTTP
            ),
        )),
        other => Err(Failure::invalid_config(
            env::S3_ENDPOINT,
            format!("scheme {other:?} is not http or https"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Reason;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let base = [
            "ferry-server",
            "--model-name",
            "iris",
            "--model-uri",
            "s3://bucket/models/iris.onnx",
            "--model-version",
            "1",
        ];
        Args::try_parse_from(base.iter().chain(extra))
    }

    fn failure(extra: &[&str]) -> Failure {
        Config::from_args(args(extra).unwrap()).unwrap_err()
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = Config::from_args(args(&[]).unwrap()).unwrap();
        assert_eq!(config.http_port, 8080);
        assert_eq!(config.admin_port, 8081);
        assert_eq!(config.grpc_port, 8082);
        assert_eq!(config.model.format, "onnx");
        assert_eq!(config.model.sha256, None);
        assert_eq!(config.download_timeout, Duration::from_secs(600));
        assert_eq!(config.download_concurrency, 4);
        assert_eq!(config.download_part_bytes, 16 << 20);
        assert_eq!(config.max_loaded_versions, 3);
        assert_eq!(config.model.object, None);
        assert_eq!(config.refresh_interval, None);
        assert_eq!(
            config.termination_message_path,
            PathBuf::from("/dev/termination-log")
        );
    }

    #[test]
    fn digests_are_normalized_to_lowercase() {
        let digest = "AB".repeat(32);
        let config = Config::from_args(args(&["--model-sha256", &digest]).unwrap()).unwrap();
        assert_eq!(
            config.model.sha256.as_deref(),
            Some("ab".repeat(32).as_str())
        );
    }

    #[test]
    fn each_invalid_setting_is_named() {
        let cases: &[(&[&str], &str)] = &[
            (&["--model-name=-bad"], env::MODEL_NAME),
            (&["--model-name", &"x".repeat(64)], env::MODEL_NAME),
            (&["--model-uri", "ftp://host/model.onnx"], env::MODEL_URI),
            (&["--model-uri", "not a uri"], env::MODEL_URI),
            (&["--model-uri", "s3://bucket/"], env::MODEL_URI),
            (&["--model-version= 1"], env::MODEL_VERSION),
            (&["--model-version", ""], env::MODEL_VERSION),
            (&["--model-sha256", "abc"], env::MODEL_SHA256),
            (&["--model-sha256", &"g".repeat(64)], env::MODEL_SHA256),
            (&["--model-format", "ONNX!"], env::MODEL_FORMAT),
            (
                &["--http-port", "9000", "--admin-port", "9000"],
                env::ADMIN_PORT,
            ),
            (&["--grpc-port", "8080"], env::GRPC_PORT),
            (
                &["--admin-port", "9000", "--grpc-port", "9000"],
                env::GRPC_PORT,
            ),
            (&["--max-model-bytes", "0"], env::MAX_MODEL_BYTES),
            (
                &["--download-timeout-seconds", "0"],
                env::DOWNLOAD_TIMEOUT_SECONDS,
            ),
            (&["--download-concurrency", "0"], env::DOWNLOAD_CONCURRENCY),
            (&["--download-concurrency", "65"], env::DOWNLOAD_CONCURRENCY),
            (&["--download-part-bytes", "4095"], env::DOWNLOAD_PART_BYTES),
            (&["--session-pool-size", "0"], env::SESSION_POOL_SIZE),
            (&["--intra-op-threads", "0"], env::INTRA_OP_THREADS),
            (&["--s3-endpoint", "http://minio:9000"], env::S3_ENDPOINT),
            (&["--s3-endpoint", "minio:9000"], env::S3_ENDPOINT),
            (&["--s3-region", ""], env::S3_REGION),
            (&["--max-loaded-versions", "0"], env::MAX_LOADED_VERSIONS),
            (
                &["--model-file", "/nonexistent/model.json"],
                env::MODEL_FILE,
            ),
            (
                &["--validation-uri", "ftp://host/cases.json"],
                env::VALIDATION_URI,
            ),
            (
                &["--validation-sha256", &"a".repeat(64)],
                env::VALIDATION_SHA256,
            ),
            (
                &[
                    "--validation-uri",
                    "s3://b/cases.json",
                    "--validation-sha256",
                    "xyz",
                ],
                env::VALIDATION_SHA256,
            ),
            (&["--model-object", "md5:abc"], env::MODEL_OBJECT),
            (&["--model-object", "size:12"], env::MODEL_OBJECT),
            (
                &["--refresh-interval-seconds", "9"],
                env::REFRESH_INTERVAL_SECONDS,
            ),
            (
                &["--refresh-interval-seconds", "86401"],
                env::REFRESH_INTERVAL_SECONDS,
            ),
        ];
        for (extra, setting) in cases {
            let failure = failure(extra);
            assert_eq!(failure.reason, Reason::InvalidConfig, "{extra:?}");
            assert_eq!(
                failure.setting.as_deref(),
                Some(*setting),
                "{extra:?}: {failure}"
            );
            assert!(failure.message.starts_with(setting), "{extra:?}: {failure}");
        }
    }

    #[test]
    fn the_model_file_wins_over_the_model_settings_and_each_problem_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.json");
        let digest = "C".repeat(64);
        std::fs::write(
            &path,
            format!(
                r#"{{"uri": "s3://bucket/iris/2.onnx", "version": "2", "sha256": "{digest}"}}"#
            ),
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let config = Config::from_args(args(&["--model-file", file]).unwrap()).unwrap();
        assert_eq!(config.model.uri.as_str(), "s3://bucket/iris/2.onnx");
        assert_eq!(config.model.version, "2");
        assert_eq!(config.model.sha256, Some("c".repeat(64)));
        assert_eq!(config.model.format, "onnx");
        assert_eq!(config.model.name, "iris");
        // Without the URI and version settings at all.
        let only_file =
            Args::try_parse_from(["ferry-server", "--model-name", "iris", "--model-file", file])
                .unwrap();
        assert_eq!(Config::from_args(only_file).unwrap().model.version, "2");

        for (content, expected) in [
            ("not json", "is not a model"),
            (r#"{"version": "2"}"#, "missing field `uri`"),
            (r#"{"uri": "ftp://x/m.onnx", "version": "2"}"#, "uri"),
            (r#"{"uri": "s3://b/m.onnx", "version": " 2"}"#, "version"),
            (
                r#"{"uri": "s3://b/m.onnx", "version": "2", "sha256": "12"}"#,
                "sha256",
            ),
            (
                r#"{"uri": "s3://b/m.onnx", "version": "2", "format": "ONNX!"}"#,
                "format",
            ),
        ] {
            std::fs::write(&path, content).unwrap();
            let failure = failure(&["--model-file", file]);
            assert_eq!(failure.reason, Reason::InvalidConfig, "{content}");
            assert_eq!(
                failure.setting.as_deref(),
                Some(env::MODEL_FILE),
                "{content}"
            );
            assert!(
                failure.message.starts_with(env::MODEL_FILE) && failure.message.contains(expected),
                "{content}: {failure}"
            );
        }
    }

    #[test]
    fn a_validation_file_is_optional_and_its_digest_normalized() {
        let config = Config::from_args(args(&[]).unwrap()).unwrap();
        assert_eq!(config.model.validation, None);
        let digest = "AB".repeat(32);
        let config = Config::from_args(
            args(&[
                "--validation-uri",
                "s3://bucket/iris/cases.json",
                "--validation-sha256",
                &digest,
            ])
            .unwrap(),
        )
        .unwrap();
        let validation = config.model.validation.unwrap();
        assert_eq!(validation.uri.as_str(), "s3://bucket/iris/cases.json");
        assert_eq!(validation.sha256, Some("ab".repeat(32)));
        assert_eq!(validation.sha256_setting, env::VALIDATION_SHA256);
    }

    #[test]
    fn a_pin_and_a_refresh_interval_are_read_and_the_model_file_carries_its_own_pin() {
        let config = Config::from_args(
            args(&[
                "--model-object",
                "etag:\"abc\"",
                "--refresh-interval-seconds",
                "300",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            config.model.object.as_ref().and_then(|o| o.etag.as_deref()),
            Some("\"abc\"")
        );
        assert_eq!(config.refresh_interval, Some(Duration::from_secs(300)));
        for (seconds, expected) in [("0", None), ("10", Some(10)), ("86400", Some(86_400))] {
            let config =
                Config::from_args(args(&["--refresh-interval-seconds", seconds]).unwrap()).unwrap();
            assert_eq!(config.refresh_interval, expected.map(Duration::from_secs));
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.json");
        let file = path.to_str().unwrap();
        std::fs::write(
            &path,
            r#"{"uri": "s3://b/latest.onnx", "version": "7", "object": "version:42"}"#,
        )
        .unwrap();
        // The file's pin wins over the setting, as the file's other fields do.
        let config = Config::from_args(
            args(&["--model-file", file, "--model-object", "etag:\"abc\""]).unwrap(),
        )
        .unwrap();
        assert_eq!(
            config.model.object.and_then(|o| o.version).as_deref(),
            Some("42")
        );
        std::fs::write(
            &path,
            r#"{"uri": "s3://b/latest.onnx", "version": "7", "object": "crc:1"}"#,
        )
        .unwrap();
        let failure = failure(&["--model-file", file]);
        assert_eq!(failure.setting.as_deref(), Some(env::MODEL_FILE));
        assert!(failure.message.contains("object"), "{failure}");
    }

    #[test]
    fn allow_http_admits_a_plain_http_endpoint() {
        let config = Config::from_args(
            args(&[
                "--s3-endpoint",
                "http://127.0.0.1:9000",
                "--s3-allow-http",
                "true",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            config.store.s3_endpoint.as_deref(),
            Some("http://127.0.0.1:9000")
        );
    }

    #[test]
    fn missing_required_settings_are_named() {
        let failure =
            Config::from_args(Args::try_parse_from(["ferry-server"]).unwrap()).unwrap_err();
        assert_eq!(failure.setting.as_deref(), Some(env::MODEL_NAME));
    }

    #[test]
    fn clap_errors_name_the_environment_variable() {
        let error = args(&["--http-port", "eighty"]).unwrap_err();
        let failure = clap_failure(&error);
        assert_eq!(failure.setting.as_deref(), Some(env::HTTP_PORT));
        assert!(failure.message.contains(env::HTTP_PORT), "{failure}");
        assert!(!failure.message.contains('\n'), "{failure}");
    }
}
