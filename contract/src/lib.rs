//! The contract between ferry-server and the Ferry operator, in one crate both depend on.
//!
//! The operator builds every serving Pod from these names: the environment variables it sets, the ports it
//! exposes, the paths the kubelet probes, the admin credential it mounts, and the termination message it reads
//! back when a Pod fails. The admin API's JSON (`/status`, the repository index, the load, switch and unload
//! requests and answers, the desired-model file) is typed here too, so a change on one side that the other does not follow fails to compile.
//! `server-image/README.md` documents the same table; keep the two in step.
//!
//! [`pep440`] is how both sides read Python versions and ranges: the operator to match a ModelDeployment's
//! framework version with a ModelRuntime's range, ferry-server to match a model's recorded versions with its own.

#![forbid(unsafe_code)]

pub mod pep440;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Environment variables read by ferry-server. Every one also has a command-line flag; a flag wins over its variable.
pub mod env {
    /// Name the model is served under (`/v2/models/{name}`). Required.
    pub const MODEL_NAME: &str = "FERRY_MODEL_NAME";
    /// Location of the model file: `file://`, `http(s)://`, `s3://`, `gs://` or `az://`. Required (unless
    /// `FERRY_MODEL_FILE` is set).
    pub const MODEL_URI: &str = "FERRY_MODEL_URI";
    /// Version label reported in responses, status and metrics. Required (unless `FERRY_MODEL_FILE` is set).
    pub const MODEL_VERSION: &str = "FERRY_MODEL_VERSION";
    /// Expected SHA-256 of the model file (64 hex digits). Optional; when set, any other digest is refused.
    pub const MODEL_SHA256: &str = "FERRY_MODEL_SHA256";
    /// Format of the model file. Default `onnx`, the only format this server supports.
    pub const MODEL_FORMAT: &str = "FERRY_MODEL_FORMAT";
    /// Path of a JSON file holding the model to load at start (a [`DesiredModel`](crate::DesiredModel):
    /// `{"uri", "version", "sha256"?, "format"?, "object"?}`). When set it wins over `FERRY_MODEL_URI`,
    /// `FERRY_MODEL_VERSION`, `FERRY_MODEL_SHA256`, `FERRY_MODEL_FORMAT` and `FERRY_MODEL_OBJECT`, which are then
    /// optional (and ignored). The operator mounts it from a
    /// ConfigMap it rewrites on every switch, so a restarted or new pod starts on the version last switched to.
    /// Read once at start (no watching); missing, unreadable or invalid exits 2 (`InvalidConfig`, this setting).
    pub const MODEL_FILE: &str = "FERRY_MODEL_FILE";
    /// Most model versions loaded at once, the serving one included (at least 1). Default 3. A stage that would
    /// exceed it is refused (409); nothing is ever evicted to make room.
    pub const MAX_LOADED_VERSIONS: &str = "FERRY_MAX_LOADED_VERSIONS";
    /// Address both listeners bind to. Default `0.0.0.0`.
    pub const LISTEN_ADDRESS: &str = "FERRY_LISTEN_ADDRESS";
    /// Inference port (Open Inference Protocol, health). Default 8080.
    pub const HTTP_PORT: &str = "FERRY_HTTP_PORT";
    /// Admin port (health, status, metrics, model repository). Default 8081.
    pub const ADMIN_PORT: &str = "FERRY_ADMIN_PORT";
    /// gRPC inference port (Open Inference Protocol, `inference.GRPCInferenceService`). Default 8082.
    pub const GRPC_PORT: &str = "FERRY_GRPC_PORT";
    /// Writable directory for downloads; the only place the server writes besides the termination message.
    pub const WORK_DIR: &str = "FERRY_WORK_DIR";
    /// Largest model file accepted, in bytes. Default 2 GiB (the protobuf limit of a single-file ONNX model).
    pub const MAX_MODEL_BYTES: &str = "FERRY_MAX_MODEL_BYTES";
    /// Time allowed for the whole download, retries included. Default 600.
    pub const DOWNLOAD_TIMEOUT_SECONDS: &str = "FERRY_DOWNLOAD_TIMEOUT_SECONDS";
    /// Range requests in flight for a large object on `s3://`, `gs://` or `az://` (and `file://`). Default 4;
    /// 1 downloads every object in one stream. `http(s)://` always uses one stream (servers need not support
    /// ranges).
    pub const DOWNLOAD_CONCURRENCY: &str = "FERRY_DOWNLOAD_CONCURRENCY";
    /// Size of each of those range requests, in bytes; objects up to this size take one request. Default 16 MiB,
    /// at least 4096.
    pub const DOWNLOAD_PART_BYTES: &str = "FERRY_DOWNLOAD_PART_BYTES";
    /// Where the failure reason is written before a non-zero exit. Default `/dev/termination-log`.
    pub const TERMINATION_MESSAGE_PATH: &str = "FERRY_TERMINATION_MESSAGE_PATH";
    /// Endpoint of an S3-compatible store (MinIO, Ceph, ...). Only for `s3://` URIs.
    pub const S3_ENDPOINT: &str = "FERRY_S3_ENDPOINT";
    /// Region of the S3 bucket. Default: `AWS_REGION`, else `us-east-1`.
    pub const S3_REGION: &str = "FERRY_S3_REGION";
    /// Allow an `http://` S3 endpoint. Default false.
    pub const S3_ALLOW_HTTP: &str = "FERRY_S3_ALLOW_HTTP";
    /// Path of the ONNX Runtime shared library (1.31.x or a later 1.x).
    pub const ONNXRUNTIME_LIBRARY: &str = "FERRY_ONNXRUNTIME_LIBRARY";
    /// Python interpreter with the frameworks installed, for the formats `sklearn`, `xgboost`, `lightgbm`,
    /// `mlflow` and `python`. Unset: those formats are not served (`UnsupportedFormat`).
    pub const PYTHON: &str = "FERRY_PYTHON";
    /// Python worker processes per loaded version. Default: one per CPU.
    pub const PYTHON_WORKERS: &str = "FERRY_PYTHON_WORKERS";
    /// Longest one inference may take in a Python worker before the worker is stopped and replaced. Default 30.
    pub const PYTHON_REQUEST_TIMEOUT_SECONDS: &str = "FERRY_PYTHON_REQUEST_TIMEOUT_SECONDS";
    /// A Python worker whose resident memory exceeds this many bytes is replaced between requests. Default: no
    /// limit.
    pub const PYTHON_WORKER_MAX_RSS_BYTES: &str = "FERRY_PYTHON_WORKER_MAX_RSS_BYTES";
    /// Comma-separated globals a pickle may import beyond the built-in allow-list: `module.name`, or `module.*`
    /// for a module and its submodules (a ModelRuntime's `allowedGlobals`).
    pub const PYTHON_ALLOWED_GLOBALS: &str = "FERRY_PYTHON_ALLOWED_GLOBALS";
    /// Largest total a model archive (MLflow, custom Python) may unpack to, in bytes. Default: 4 times
    /// `FERRY_MAX_MODEL_BYTES`.
    pub const MAX_UNPACKED_BYTES: &str = "FERRY_MAX_UNPACKED_BYTES";
    /// Number of ONNX Runtime sessions serving requests in parallel. Default: derived from CPUs and model size.
    pub const SESSION_POOL_SIZE: &str = "FERRY_SESSION_POOL_SIZE";
    /// Intra-op threads per session. Default: the Pod's CPUs divided by the session pool size.
    pub const INTRA_OP_THREADS: &str = "FERRY_INTRA_OP_THREADS";
    /// Largest request body accepted, in bytes. Default 32 MiB.
    pub const MAX_REQUEST_BYTES: &str = "FERRY_MAX_REQUEST_BYTES";
    /// Upper bound for draining in-flight requests after SIGTERM. Default 20.
    pub const SHUTDOWN_TIMEOUT_SECONDS: &str = "FERRY_SHUTDOWN_TIMEOUT_SECONDS";
    /// Log filter in `tracing` syntax. Default `info`.
    pub const LOG: &str = "FERRY_LOG";
    /// File holding the admin credential (`ID.SECRET`) that every mutating admin call must present as
    /// `Authorization: Bearer`. Re-read on every such call, so a rotated Secret takes effect without a restart.
    /// Without it, mutating admin calls are refused.
    pub const ADMIN_TOKEN_FILE: &str = "FERRY_ADMIN_TOKEN_FILE";
    /// `true` accepts mutating admin calls without a credential, for local tests and benchmarks only. Ignored
    /// when `FERRY_ADMIN_TOKEN_FILE` is set. Default false.
    pub const INSECURE_OPEN_ADMIN: &str = "FERRY_INSECURE_OPEN_ADMIN";
    /// Location of the golden set (`ValidationFile`, JSON) the model must reproduce before it reports ready: same
    /// schemes and credentials as `FERRY_MODEL_URI`. Optional; without it no validation runs.
    pub const VALIDATION_URI: &str = "FERRY_VALIDATION_URI";
    /// Expected SHA-256 of the validation file (64 hex digits). Optional; needs `FERRY_VALIDATION_URI`.
    pub const VALIDATION_SHA256: &str = "FERRY_VALIDATION_SHA256";
    /// The object the model must be downloaded from: a token of its identity ([`ObjectIdentity::token`](crate::ObjectIdentity::token),
    /// e.g. `etag:"5d41…"`). The download is conditional on it (If-Match, the version, or If-Unmodified-Since);
    /// when the object at the URI is another one, the load fails with `ObjectChanged`. Invalid exits 2. With
    /// `FERRY_MODEL_FILE`, that file's `object` is used instead (like the other model settings).
    pub const MODEL_OBJECT: &str = "FERRY_MODEL_OBJECT";
    /// Seconds between checks of the serving model's URI for a new object (one HEAD request each, never a
    /// download; `source` in `/status`). Unset or 0: no checks. Otherwise 10 to 86400; the first check comes one
    /// interval after the model serves, each interval jittered by ±10 %.
    pub const REFRESH_INTERVAL_SECONDS: &str = "FERRY_REFRESH_INTERVAL_SECONDS";
}

pub const DEFAULT_HTTP_PORT: u16 = 8080;
pub const DEFAULT_ADMIN_PORT: u16 = 8081;
pub const DEFAULT_GRPC_PORT: u16 = 8082;
/// Name of the gRPC port on the serving container and on the stable and preview Services.
pub const GRPC_PORT_NAME: &str = "grpc";
/// `appProtocol` of that port: gRPC is HTTP/2 without TLS (the Kubernetes-defined name, which meshes and Gateway
/// API implementations read to speak HTTP/2 to the pod).
pub const GRPC_APP_PROTOCOL: &str = "kubernetes.io/h2c";
/// The gRPC service served on `DEFAULT_GRPC_PORT` (KServe's `grpc_predict_v2.proto`).
pub const GRPC_SERVICE: &str = "inference.GRPCInferenceService";
pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0";
pub const DEFAULT_WORK_DIR: &str = "/var/lib/ferry";
pub const DEFAULT_MODEL_FORMAT: &str = "onnx";
pub const DEFAULT_MAX_MODEL_BYTES: u64 = 2 << 30;
pub const DEFAULT_DOWNLOAD_TIMEOUT_SECONDS: u64 = 600;
pub const DEFAULT_DOWNLOAD_CONCURRENCY: usize = 4;
pub const MAX_DOWNLOAD_CONCURRENCY: usize = 64;
pub const DEFAULT_DOWNLOAD_PART_BYTES: u64 = 16 << 20;
pub const MIN_DOWNLOAD_PART_BYTES: u64 = 4096;
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
pub const DEFAULT_ONNXRUNTIME_LIBRARY: &str = "/usr/lib/ferry/libonnxruntime.so.1.31.1";
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 32 << 20;
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECONDS: u64 = 20;
pub const DEFAULT_MAX_LOADED_VERSIONS: usize = 3;
/// Largest validation file accepted, in bytes (64 MiB).
pub const MAX_VALIDATION_FILE_BYTES: u64 = 64 << 20;
/// Bounds of `FERRY_REFRESH_INTERVAL_SECONDS` when it is not 0 (off).
pub const MIN_REFRESH_INTERVAL_SECONDS: u64 = 10;
pub const MAX_REFRESH_INTERVAL_SECONDS: u64 = 86_400;

/// HTTP paths. Health paths answer on both ports; the kubelet probes the admin port.
pub mod paths {
    pub const LIVE: &str = "/v2/health/live";
    pub const READY: &str = "/v2/health/ready";
    /// JSON status: phase, bytes, version, sha256, failure reason, capabilities. Admin port.
    pub const STATUS: &str = "/status";
    /// Prometheus metrics. Admin port.
    pub const METRICS: &str = "/metrics";
    /// Model repository extension (hot swap). Admin port; load needs the admin credential.
    pub const REPOSITORY_INDEX: &str = "/v2/repository/index";
    /// Loads a version ([`LoadRequest`](crate::LoadRequest)): replaces the serving one, or with `stage: true`
    /// loads it beside it.
    pub const REPOSITORY_LOAD: &str = "/v2/repository/models/{name}/load";
    /// Makes an already-loaded version the serving one, atomically ([`SwitchRequest`](crate::SwitchRequest),
    /// answer [`Switched`](crate::Switched)).
    pub const REPOSITORY_SWITCH: &str = "/v2/repository/models/{name}/switch";
    /// Drops a loaded version that does not serve ([`UnloadRequest`](crate::UnloadRequest), answer
    /// [`Unloaded`](crate::Unloaded)).
    pub const REPOSITORY_UNLOAD: &str = "/v2/repository/models/{name}/unload";
    /// Every admin route that changes what is served; each needs the admin credential.
    pub const MUTATING: &[&str] = &[REPOSITORY_LOAD, REPOSITORY_SWITCH, REPOSITORY_UNLOAD];
}

/// How the operator lays out a serving pod: where the admin credential is mounted, and its key in the Secret.
pub mod pod {
    /// Directory of the admin-credential Secret volume; `FERRY_ADMIN_TOKEN_FILE` is `ADMIN_CREDENTIAL_DIR/KEY`.
    pub const ADMIN_CREDENTIAL_DIR: &str = "/var/run/ferry/admin";
    /// The Secret's key (and so the file name) holding the credential.
    pub const ADMIN_CREDENTIAL_KEY: &str = "token";
    /// Directory of the desired-model ConfigMap volume; `FERRY_MODEL_FILE` is `DESIRED_MODEL_DIR/KEY`.
    pub const DESIRED_MODEL_DIR: &str = "/var/run/ferry/model";
    /// The ConfigMap's key (and so the file name) holding the [`DesiredModel`](crate::DesiredModel) JSON.
    pub const DESIRED_MODEL_KEY: &str = "model.json";
}

/// Exit codes: 0 after a clean shutdown, 1 when the model cannot be served, 2 for invalid configuration.
pub mod exit_code {
    pub const MODEL_FAILED: u8 = 1;
    pub const INVALID_CONFIG: u8 = 2;
}

/// What this build can serve, printed by `ferry-server --print-capabilities` and included in the status.
pub mod capabilities {
    /// Model formats (the `FERRY_MODEL_FORMAT` values) this server accepts.
    pub const FORMATS: &[&str] = &["onnx"];
    /// The ONNX Runtime release the server is built and tested against.
    pub const ONNXRUNTIME_VERSION: &str = "1.31.1";
    /// Opset range per ONNX domain that ONNX Runtime 1.31 loads (measured against the 1.31.1 library).
    pub const ONNX_OPSETS: &[(&str, u32, u32)] = &[("ai.onnx", 7, 26), ("ai.onnx.ml", 1, 5)];
    /// Newest ONNX IR version ONNX Runtime 1.31 loads.
    pub const ONNX_MAX_IR_VERSION: u32 = 13;
    /// Open Inference Protocol extensions, listed in the server metadata: the model repository (admin port) and
    /// Triton's binary tensor data extension (raw tensors after a JSON header over REST).
    pub const EXTENSIONS: &[&str] = &["model_repository", "binary_tensor_data"];
    /// Protocols of the inference ports.
    pub const PROTOCOLS: &[&str] = &["rest", "grpc"];
    /// Open Inference Protocol datatypes accepted and returned.
    pub const DATATYPES: &[&str] = &["BOOL", "INT32", "INT64", "FP32", "FP64", "BYTES"];
    /// URI schemes the fetcher understands.
    pub const URI_SCHEMES: &[&str] = &["file", "http", "https", "s3", "gs", "az"];
}

/// Why a model cannot be served: the `reason` of the termination message, of the status and of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// A setting is missing or malformed; the message names it.
    InvalidConfig,
    /// The model URI points at nothing.
    NotFound,
    /// The store refused the credentials (HTTP 401/403).
    AccessDenied,
    /// The file's SHA-256 differs from `FERRY_MODEL_SHA256`.
    ChecksumMismatch,
    /// The file is larger than `FERRY_MAX_MODEL_BYTES`.
    TooLarge,
    /// The download did not finish within `FERRY_DOWNLOAD_TIMEOUT_SECONDS`.
    Timeout,
    /// The store kept failing (5xx, connection errors) after retries.
    FetchFailed,
    /// The format is not one this server serves, or the ONNX IR/opset version is outside the supported range.
    UnsupportedFormat,
    /// The file is not a loadable model (truncated, not protobuf, invalid graph).
    CorruptModel,
    /// The graph uses an operator ONNX Runtime does not implement; `operator` names it.
    UnsupportedOperator,
    /// The model loaded but an inference on a synthetic input of its own shape failed.
    WarmupFailed,
    /// The model ran the golden set (`FERRY_VALIDATION_URI`) but reproduced fewer cases than required; the message
    /// gives the counts and the worst case.
    ValidationFailed,
    /// The golden set cannot be used: malformed JSON, no cases, or a case whose request the model refuses (the
    /// message names the case and why).
    InvalidValidationFile,
    /// The load was pinned to an object (`FERRY_MODEL_OBJECT`, `parameters.object`) and the object at the URI is
    /// another one now; the message names both.
    ObjectChanged,
    /// The load stopped on a bug of the server or the runtime (a panic), not on the file; the message says where.
    LoadPanicked,
    /// A listener (inference, gRPC or admin) stopped while the server ran; the message names it and the error. The
    /// server exits rather than stay up with a port that no longer answers.
    ListenerFailed,
    /// The model file records a framework version (or a requirement) outside what this runtime's installed
    /// packages allow under the documented policy; the message names both versions and the policy.
    IncompatibleRuntime,
    /// A pickle imports or would call a global outside the allow-list; the message names it. Nothing of the file
    /// ran.
    UnsafeModel,
    /// A model archive has a member that would land outside its directory (`..`, an absolute path, a link that
    /// points out), a kind of member other than files, directories and inside links, or unpacks larger than the
    /// limit; the message names the member.
    UnsafeArchive,
    /// The Python worker that loads the model died or stopped answering while loading; the message says how
    /// (exit code, signal, timeout).
    WorkerFailed,
}

impl Reason {
    pub const ALL: [Reason; 20] = [
        Reason::InvalidConfig,
        Reason::NotFound,
        Reason::AccessDenied,
        Reason::ChecksumMismatch,
        Reason::TooLarge,
        Reason::Timeout,
        Reason::FetchFailed,
        Reason::UnsupportedFormat,
        Reason::CorruptModel,
        Reason::UnsupportedOperator,
        Reason::WarmupFailed,
        Reason::ValidationFailed,
        Reason::InvalidValidationFile,
        Reason::ObjectChanged,
        Reason::LoadPanicked,
        Reason::ListenerFailed,
        Reason::IncompatibleRuntime,
        Reason::UnsafeModel,
        Reason::UnsafeArchive,
        Reason::WorkerFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidConfig => "InvalidConfig",
            Reason::NotFound => "NotFound",
            Reason::AccessDenied => "AccessDenied",
            Reason::ChecksumMismatch => "ChecksumMismatch",
            Reason::TooLarge => "TooLarge",
            Reason::Timeout => "Timeout",
            Reason::FetchFailed => "FetchFailed",
            Reason::UnsupportedFormat => "UnsupportedFormat",
            Reason::CorruptModel => "CorruptModel",
            Reason::UnsupportedOperator => "UnsupportedOperator",
            Reason::WarmupFailed => "WarmupFailed",
            Reason::ValidationFailed => "ValidationFailed",
            Reason::InvalidValidationFile => "InvalidValidationFile",
            Reason::ObjectChanged => "ObjectChanged",
            Reason::LoadPanicked => "LoadPanicked",
            Reason::ListenerFailed => "ListenerFailed",
            Reason::IncompatibleRuntime => "IncompatibleRuntime",
            Reason::UnsafeModel => "UnsafeModel",
            Reason::UnsafeArchive => "UnsafeArchive",
            Reason::WorkerFailed => "WorkerFailed",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the operator sees a model fail to load: ferry-server's own [`Reason`], or a way the operator sees a load
/// fail without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The server said why (its termination message or its `/status`).
    Server(Reason),
    /// The server exited with an error but left no termination message Ferry reads (a crash, a kill, a foreign
    /// image, a reason this build does not know); the message says what there is.
    ServerExited,
    /// A pod was killed for running out of memory while it staged a version beside the one it serves.
    OutOfMemory,
    /// The server refused to stage the version (strategy InPlace); the message is its answer.
    StageRefused,
    /// The controller cannot reach the server; the message is the error.
    Unreachable,
}

impl FailureReason {
    /// The name the status, events and `kubectl ferry` show.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Server(reason) => reason.as_str(),
            FailureReason::ServerExited => "ServerExited",
            FailureReason::OutOfMemory => "OutOfMemory",
            FailureReason::StageRefused => "StageRefused",
            FailureReason::Unreachable => "Unreachable",
        }
    }
}

impl From<Reason> for FailureReason {
    fn from(reason: Reason) -> FailureReason {
        FailureReason::Server(reason)
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A load that failed, as the operator observed it: why, and the details. Shown as `Reason: message`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoadFailure {
    pub reason: FailureReason,
    pub message: String,
}

impl LoadFailure {
    pub fn new(reason: impl Into<FailureReason>, message: impl Into<String>) -> LoadFailure {
        LoadFailure {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// The termination message: one line of JSON written to `FERRY_TERMINATION_MESSAGE_PATH` before a non-zero exit,
/// e.g. `{"reason":"UnsupportedOperator","message":"...","operator":"ferry.example:Frobnicate","model":"iris","version":"2"}`.
/// Kubernetes keeps at most 4096 bytes of it; the message is cut well below that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminationMessage {
    pub reason: Reason,
    pub message: String,
    /// The unsupported operator, `domain:OpType` (domain omitted for the default ONNX domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The setting at fault, for `InvalidConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The capabilities as JSON, e.g.
/// `{"formats":["onnx"],"runtime":{"name":"onnxruntime","version":"1.31.1"},"onnx":{"opsets":{"ai.onnx":{"min":7,"max":26},...},"max_ir_version":13},...}`.
pub fn capabilities_json() -> serde_json::Value {
    let opsets: serde_json::Map<String, serde_json::Value> = capabilities::ONNX_OPSETS
        .iter()
        .map(|(domain, min, max)| {
            (
                domain.to_string(),
                serde_json::json!({ "min": min, "max": max }),
            )
        })
        .collect();
    serde_json::json!({
        "server": { "name": "ferry-server", "version": env!("CARGO_PKG_VERSION") },
        "protocol": "open-inference-protocol-v2",
        "protocols": capabilities::PROTOCOLS,
        "extensions": capabilities::EXTENSIONS,
        "formats": capabilities::FORMATS,
        "runtime": { "name": "onnxruntime", "version": capabilities::ONNXRUNTIME_VERSION },
        "onnx": { "opsets": opsets, "max_ir_version": capabilities::ONNX_MAX_IR_VERSION },
        "datatypes": capabilities::DATATYPES,
        "uri_schemes": capabilities::URI_SCHEMES,
    })
}

/// Where a load stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadPhase {
    Downloading,
    Verifying,
    Loading,
    Warming,
    /// Running the golden set, after the warm-up and before ready.
    Validating,
    Ready,
    Failed,
}

impl LoadPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadPhase::Downloading => "downloading",
            LoadPhase::Verifying => "verifying",
            LoadPhase::Loading => "loading",
            LoadPhase::Warming => "warming",
            LoadPhase::Validating => "validating",
            LoadPhase::Ready => "ready",
            LoadPhase::Failed => "failed",
        }
    }
}

/// Seconds spent in each phase of a load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub fetch_seconds: Option<f64>,
    pub verify_seconds: Option<f64>,
    pub load_seconds: Option<f64>,
    pub warmup_seconds: Option<f64>,
    pub total_seconds: Option<f64>,
    /// Running the golden set's cases; `None` without one.
    #[serde(default)]
    pub validation_seconds: Option<f64>,
}

/// The version that serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServingView {
    pub version: String,
    pub uri: String,
    pub sha256: String,
    pub bytes: u64,
    /// The runtime's platform name, e.g. `onnxruntime_onnx`.
    pub platform: String,
    /// The object the file was downloaded from, as the store described it; `None` when it gave no ETag,
    /// version or modification time (and from servers before refresh).
    #[serde(default)]
    pub identity: Option<ObjectIdentity>,
}

/// The latest load (the initial one, a hot swap or a stage), running or finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptView {
    pub version: String,
    /// `true` for a stage (loaded beside the serving version, no switch).
    #[serde(default)]
    pub stage: bool,
    pub uri: String,
    pub phase: LoadPhase,
    pub bytes_done: u64,
    /// `None` until the store reports the size.
    pub bytes_total: Option<u64>,
    pub sha256: Option<String>,
    pub reason: Option<Reason>,
    pub message: Option<String>,
    pub operator: Option<String>,
    pub timings: Timings,
    /// The golden set's result, once it has run (passed or failed).
    #[serde(default)]
    pub validation: Option<ValidationView>,
    /// The model's inputs and outputs, once it has loaded.
    #[serde(default)]
    pub signature: Option<Signature>,
    /// What the model file says about itself, once its header has been read.
    #[serde(default)]
    pub model_metadata: Option<ModelMetadataView>,
}

/// What a loaded version is to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    /// Answers unversioned requests. Exactly one loaded version serves once the server is ready.
    Serving,
    /// Loaded by a stage and never served since: a switch makes it serve.
    Staged,
    /// Served before a switch moved traffic elsewhere: a switch back is a rollback without a download.
    Previous,
}

impl VersionState {
    pub const ALL: [VersionState; 3] = [
        VersionState::Serving,
        VersionState::Staged,
        VersionState::Previous,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Serving => "serving",
            VersionState::Staged => "staged",
            VersionState::Previous => "previous",
        }
    }
}

/// One loaded version in `/status` (`versions`). Every loaded version answers requests that name it
/// (`/v2/models/{name}/versions/{version}/infer`, gRPC `model_version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionView {
    pub version: String,
    pub uri: String,
    pub sha256: String,
    /// Size of the model file.
    pub bytes: u64,
    pub state: VersionState,
    /// When its load finished (RFC 3339 UTC with milliseconds, server clock).
    pub loaded_at: String,
    /// The object it was downloaded from, as in [`ServingView::identity`].
    #[serde(default)]
    pub identity: Option<ObjectIdentity>,
}

/// The latest switch (`/status` `last_switch`): a `switch` call that changed the serving version. A hot swap by
/// `load` without `stage` is not a switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchView {
    /// The version that served before; `None` if none did.
    pub from: Option<String>,
    pub to: String,
    /// The moment of the swap, RFC 3339 UTC with milliseconds, server clock. Over the pods of one rollout,
    /// max(at) − min(at) is the switch window.
    pub at: String,
}

/// How the admin API is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminMode {
    /// Mutating calls need the credential of `FERRY_ADMIN_TOKEN_FILE`.
    Token,
    /// Every call is accepted (`FERRY_INSECURE_OPEN_ADMIN=true`).
    InsecureOpen,
    /// No credential is configured: every mutating call is refused.
    Refuse,
}

/// The admin API's guard as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminView {
    pub mode: AdminMode,
    /// The public `ID` of the `ID.SECRET` credential in force, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
}

/// `GET /status` on the admin port. Top-level fields describe the model that serves, or, before one does, the
/// load in progress; `reason` is the failure of the latest load (a failed hot swap leaves `ready` true).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub model: String,
    pub phase: LoadPhase,
    pub ready: bool,
    pub shutting_down: bool,
    pub version: Option<String>,
    pub sha256: Option<String>,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    pub reason: Option<Reason>,
    pub message: Option<String>,
    pub operator: Option<String>,
    pub serving: Option<ServingView>,
    pub load: Option<AttemptView>,
    pub capabilities: serde_json::Value,
    pub admin: AdminView,
    /// Every loaded version (serving, staged, previous), in the order they were loaded. Empty before the first
    /// load has finished.
    #[serde(default)]
    pub versions: Vec<VersionView>,
    /// The latest switch, if any since start.
    #[serde(default)]
    pub last_switch: Option<SwitchView>,
    /// The golden set's result for the version that serves (`None`: it was loaded without one).
    #[serde(default)]
    pub validation: Option<ValidationView>,
    /// Inputs and outputs of the version that serves.
    #[serde(default)]
    pub signature: Option<Signature>,
    /// The header of the version that serves: producer, version, `metadata_props`, opsets.
    #[serde(default)]
    pub model_metadata: Option<ModelMetadataView>,
    /// The scheduled checks of the serving model's URI (`FERRY_REFRESH_INTERVAL_SECONDS`); `None` when they are
    /// off, and before the first load has finished.
    #[serde(default)]
    pub source: Option<SourceView>,
}

/// What the latest scheduled check found at the serving version's URI (`/status` `source`). A check is one HEAD
/// request; it never downloads and never changes what serves: the operator decides what to do with a change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceView {
    /// The object at the URI at the latest successful check; kept when a later check fails. `None` before the
    /// first check succeeded.
    #[serde(default)]
    pub identity: Option<ObjectIdentity>,
    /// When the latest check ran (successful or not), RFC 3339 UTC with milliseconds, server clock.
    #[serde(default)]
    pub checked_at: Option<String>,
    /// Why the latest check failed (at most 512 bytes); `None` when it succeeded.
    #[serde(default)]
    pub error: Option<String>,
    /// `identity` is not the object the serving version was downloaded from
    /// ([`ObjectIdentity::same_object`]). Recomputed against the version that serves now, so it turns false as
    /// soon as a version loaded from the new object serves.
    #[serde(default)]
    pub changed: bool,
}

/// The identity of an object in a store, from its metadata (object_store's `ObjectMeta`): S3, GCS and Azure
/// give an ETag (and a version id or generation when the bucket keeps versions), `file://` an ETag derived from
/// the inode, size and modification time, and an http(s) server its `ETag` or only `Last-Modified`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Version id (S3, Azure) or generation (GCS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// Bytes; 0 when unknown (a token of an ETag or a version carries no size).
    #[serde(default)]
    pub size: u64,
}

/// Why a string is not an object token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidToken(pub String);

impl std::fmt::Display for InvalidToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidToken {}

impl ObjectIdentity {
    /// Whether it names an object at all: an ETag, a version or a modification time.
    pub fn is_identified(&self) -> bool {
        self.etag.is_some() || self.version.is_some() || self.last_modified.is_some()
    }

    /// Whether `self` and `other` are the same object: by ETag when both have one, else by version when both
    /// have one, else by modification time and size when both have a modification time. Identities with nothing
    /// in common to compare are not the same.
    pub fn same_object(&self, other: &ObjectIdentity) -> bool {
        if let (Some(a), Some(b)) = (&self.etag, &other.etag) {
            return a == b;
        }
        if let (Some(a), Some(b)) = (&self.version, &other.version) {
            return a == b;
        }
        if let (Some(a), Some(b)) = (&self.last_modified, &other.last_modified) {
            return a == b && self.size == other.size;
        }
        false
    }

    /// A short, stable text naming this object, for an environment variable (`FERRY_MODEL_OBJECT`), a load
    /// parameter (`object`) and a status: `etag:<ETag as the store sends it, quotes included>` when there is an
    /// ETag, else `version:<id>`, else `modified:<RFC 3339>;size:<bytes>`, else (nothing identifies it)
    /// `size:<bytes>`, which [`parse_token`](Self::parse_token) refuses.
    pub fn token(&self) -> String {
        if let Some(etag) = &self.etag {
            format!("etag:{etag}")
        } else if let Some(version) = &self.version {
            format!("version:{version}")
        } else if let Some(modified) = &self.last_modified {
            format!("modified:{modified};size:{}", self.size)
        } else {
            format!("size:{}", self.size)
        }
    }

    /// The identity a [`token`](Self::token) names (only the fields the token holds). Refuses anything else,
    /// including a token that identifies nothing (`size:…`).
    pub fn parse_token(token: &str) -> Result<ObjectIdentity, InvalidToken> {
        let invalid = |why: &str| {
            InvalidToken(format!(
                "{token:?} is not an object token ({why}; expected etag:<etag>, version:<id> or \
                 modified:<RFC 3339>;size:<bytes>)"
            ))
        };
        if token.len() > 1024 || token.chars().any(char::is_control) {
            return Err(invalid("too long or has control characters"));
        }
        let (kind, value) = token.split_once(':').ok_or_else(|| invalid("no kind"))?;
        let nonempty = |v: &str| {
            if v.is_empty() || v.trim() != v {
                Err(invalid("empty value or surrounding whitespace"))
            } else {
                Ok(v.to_owned())
            }
        };
        match kind {
            "etag" => Ok(ObjectIdentity {
                etag: Some(nonempty(value)?),
                ..ObjectIdentity::default()
            }),
            "version" => Ok(ObjectIdentity {
                version: Some(nonempty(value)?),
                ..ObjectIdentity::default()
            }),
            "modified" => {
                let (modified, size) = value
                    .rsplit_once(";size:")
                    .ok_or_else(|| invalid("no ;size:"))?;
                let size = size
                    .parse::<u64>()
                    .map_err(|_| invalid("the size is not a number"))?;
                if !looks_like_rfc3339(modified) {
                    return Err(invalid("the modification time is not RFC 3339"));
                }
                Ok(ObjectIdentity {
                    last_modified: Some(modified.to_owned()),
                    size,
                    ..ObjectIdentity::default()
                })
            }
            "size" => Err(invalid("a size alone identifies no object")),
            _ => Err(invalid("unknown kind")),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, checked by shape only.
fn looks_like_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    if !(digits(0..4)
        && bytes.get(4) == Some(&b'-')
        && digits(5..7)
        && bytes.get(7) == Some(&b'-')
        && digits(8..10)
        && matches!(bytes.get(10), Some(b'T' | b't'))
        && digits(11..13)
        && bytes.get(13) == Some(&b':')
        && digits(14..16)
        && bytes.get(16) == Some(&b':')
        && digits(17..19))
    {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 {
            return false;
        }
        rest = &fraction[end..];
    }
    match rest {
        "Z" | "z" => true,
        offset => {
            let b = offset.as_bytes();
            b.len() == 6
                && matches!(b[0], b'+' | b'-')
                && b[1..3].iter().all(u8::is_ascii_digit)
                && b[3] == b':'
                && b[4..6].iter().all(u8::is_ascii_digit)
        }
    }
}

/// State of a model version in the repository index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum IndexState {
    Ready,
    Loading,
    Unavailable,
}

/// One entry of `POST /v2/repository/index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    pub state: IndexState,
    /// `Reason: message` of a failed load; empty otherwise.
    pub reason: String,
}

/// `POST /v2/repository/models/{name}/load`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadRequest {
    #[serde(default)]
    pub parameters: LoadParameters,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadParameters {
    pub uri: Option<String>,
    pub version: Option<String>,
    pub sha256: Option<String>,
    pub format: Option<String>,
    /// Golden set the new version must reproduce before it serves (like `FERRY_VALIDATION_URI`).
    #[serde(default)]
    pub validation_uri: Option<String>,
    /// Expected SHA-256 of that file (like `FERRY_VALIDATION_SHA256`); needs `validation_uri`.
    #[serde(default)]
    pub validation_sha256: Option<String>,
    /// Answer only when the load has finished (200, or 422 with the reason) instead of at once (202).
    #[serde(default)]
    pub wait: bool,
    /// Load the version beside the serving one (download, verify, load, warm up) without switching to it; a
    /// `switch` makes it serve. `false` (the default): replace the serving version once loaded and drop it.
    /// Staging a version that is already loaded from the same URI (and digest) answers 200 at once; from another
    /// URI or digest, 409. A stage beyond `FERRY_MAX_LOADED_VERSIONS` loaded versions is 409.
    #[serde(default)]
    pub stage: bool,
    /// Load exactly this object ([`ObjectIdentity::token`], as `FERRY_MODEL_OBJECT`): the download is
    /// conditional on it, and when the object at `uri` is another one the load fails with `ObjectChanged` (422
    /// with `wait`). `None`: whatever object is at `uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

/// The answer to a load that was accepted (202, `LOADING`) or finished (200, `READY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadAccepted {
    pub name: String,
    pub version: String,
    pub state: IndexState,
}

/// The answer to a load that failed (422).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFailed {
    pub error: String,
    pub reason: Reason,
    pub operator: Option<String>,
    /// [`ErrorCode::LoadFailed`], as in every error answer; `None` from a server older than the codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

/// The parameters of a switch or an unload: the version it applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionParameters {
    pub version: String,
}

/// `POST /v2/repository/models/{name}/switch`: make `parameters.version`, already loaded (staged or previous),
/// the serving version, atomically; the version that served stays loaded as `previous`. 200 [`Switched`]; the
/// version that already serves is 200 and changes nothing; a version not loaded is 404 naming the loaded
/// versions; 503 while shutting down.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchRequest {
    pub parameters: VersionParameters,
}

/// The answer to a switch (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switched {
    pub name: String,
    /// The version that serves now.
    pub version: String,
    /// The version that served before the switch, now `previous`.
    pub previous: Option<String>,
    /// The moment of the swap (RFC 3339 UTC, milliseconds, server clock), as in `last_switch.at`. For a switch to
    /// the version that already serves: the switch that made it serve, or, if none did, when it started serving
    /// (with `previous` null).
    pub switched_at: String,
}

/// `POST /v2/repository/models/{name}/unload` (the model repository extension's name): drop a loaded version
/// that does not serve, freeing its memory once the requests running on it have finished. 200 [`Unloaded`]
/// (also for a version not loaded); 409 for the serving version or a version whose load is running.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnloadRequest {
    pub parameters: VersionParameters,
}

/// The answer to an unload (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unloaded {
    pub name: String,
    pub version: String,
    /// `true` if this call dropped it, `false` if it was not loaded.
    pub unloaded: bool,
}

/// The model to load at start, from the file `FERRY_MODEL_FILE` names, e.g.
/// `{"uri": "s3://models/iris/2.onnx", "version": "2", "sha256": "3b1f…"}`. The fields mean what
/// `FERRY_MODEL_URI`, `FERRY_MODEL_VERSION`, `FERRY_MODEL_SHA256` and `FERRY_MODEL_FORMAT` mean.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredModel {
    pub uri: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The object to load, as `FERRY_MODEL_OBJECT` ([`ObjectIdentity::token`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

/// Every error answer of both ports: `{"error": "...", "code": "Busy"}`. `error` is for people; `code` is what a
/// client decides on. `code` is `None` only from a server older than the codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

/// What an error answer means, one HTTP status per code ([`ErrorCode::http_status`]). For the admin calls:
/// `Busy`, `NotLoaded` and `ShuttingDown` may pass on a later try; `Full`, `Conflict` and `InUse` hold until the
/// server's versions change; `BadRequest`, `NotFound` and `LoadFailed` hold for that request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request is malformed or names an invalid parameter (400).
    BadRequest,
    /// A mutating admin call without the server's credential (401).
    Unauthorized,
    /// Another model name, an unknown route, or (inference) a version not loaded (404).
    NotFound,
    /// A switch to a version that is not loaded; the message names the loaded ones (404).
    NotLoaded,
    /// The route exists, the method does not (405).
    MethodNotAllowed,
    /// Another load is running; retry when it has finished (409).
    Busy,
    /// A stage would load more than `FERRY_MAX_LOADED_VERSIONS` versions (409).
    Full,
    /// A stage of a version that is loaded from another file or digest (409).
    Conflict,
    /// An unload of the version that serves, or of one whose load is running (409).
    InUse,
    /// The request body is too large (413).
    TooLarge,
    /// A load with `wait` failed; [`LoadFailed::reason`] says why (422).
    LoadFailed,
    /// The server failed on a valid request (500).
    Internal,
    /// No model is ready yet (503).
    Unavailable,
    /// The server is shutting down; the serving version no longer changes (503).
    ShuttingDown,
    /// A code this build does not know, from a newer server.
    #[serde(other)]
    Other,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound | ErrorCode::NotLoaded => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Busy | ErrorCode::Full | ErrorCode::Conflict | ErrorCode::InUse => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::LoadFailed => 422,
            ErrorCode::Internal | ErrorCode::Other => 500,
            ErrorCode::Unavailable | ErrorCode::ShuttingDown => 503,
        }
    }
}

/// The golden set's result as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationView {
    /// Cases in the file.
    pub cases: u64,
    /// Cases the model reproduced within the tolerances.
    pub passed: u64,
    /// The largest absolute difference seen in a numeric output (floats and integers), over every case.
    #[serde(default)]
    pub max_error: Option<f64>,
    /// The element furthest beyond (or nearest to) its tolerance: `case C, output O, element I: got X, want Y
    /// (error E)`, or a case that failed for another reason (missing output, wrong shape, inference error).
    #[serde(default)]
    pub worst: Option<String>,
    /// Time spent running the cases.
    pub seconds: f64,
}

/// One input or output of a model: Open Inference Protocol datatype (`FP32`, `INT64`, `BYTES`, ...) and shape,
/// `-1` for a dynamic dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// What clients call: the model's inputs and outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// The model file's own description of itself (the ONNX `ModelProto` header).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelMetadataView {
    /// E.g. `skl2onnx`, `pytorch`.
    #[serde(default)]
    pub producer_name: String,
    #[serde(default)]
    pub producer_version: String,
    #[serde(default)]
    pub model_version: i64,
    #[serde(default)]
    pub domain: String,
    /// The model's `doc_string`.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub metadata_props: BTreeMap<String, String>,
    #[serde(default)]
    pub ir_version: i64,
    /// Opset version per domain (`ai.onnx` for the default domain).
    #[serde(default)]
    pub opsets: BTreeMap<String, i64>,
}

/// How a candidate's signature differs from the serving one's, as human-readable items.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureDiff {
    /// Changes a client of the serving version would trip over: an input or output renamed or removed, a datatype
    /// changed, a fixed dimension changed, the rank changed, a dynamic dimension made fixed, a new input.
    pub breaking: Vec<String>,
    /// Changes every existing client survives: an output added, a fixed dimension made dynamic.
    pub compatible: Vec<String>,
}

impl SignatureDiff {
    /// No difference at all.
    pub fn is_empty(&self) -> bool {
        self.breaking.is_empty() && self.compatible.is_empty()
    }
}

fn shape_text(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(|&d| d.max(-1).to_string()).collect();
    format!("[{}]", dims.join(","))
}

/// Compares `spec` of the serving version with `candidate` of the same name (`kind`: `input` or `output`).
fn compare_tensor(kind: &str, spec: &TensorSpec, candidate: &TensorSpec, diff: &mut SignatureDiff) {
    let name = &spec.name;
    if spec.datatype != candidate.datatype {
        diff.breaking.push(format!(
            "{kind} '{name}' datatype {} -> {}",
            spec.datatype, candidate.datatype
        ));
    }
    let (from, to) = (&spec.shape, &candidate.shape);
    let shape_change = format!(
        "{kind} '{name}' shape {} -> {}",
        shape_text(from),
        shape_text(to)
    );
    if from.len() != to.len() {
        diff.breaking.push(shape_change);
        return;
    }
    let mut fixed_changed = false;
    for (i, (&a, &b)) in from.iter().zip(to).enumerate() {
        match (a < 0, b < 0) {
            (false, false) if a != b => fixed_changed = true,
            (true, false) => diff.breaking.push(format!(
                "{kind} '{name}' dimension {i} made fixed ({b}): shape {} -> {}",
                shape_text(from),
                shape_text(to)
            )),
            (false, true) => diff
                .compatible
                .push(format!("{kind} '{name}' dimension {i} made dynamic")),
            _ => {}
        }
    }
    if fixed_changed {
        diff.breaking.push(shape_change);
    }
}

/// What changes for clients when `candidate` replaces `serving`. Inputs and outputs are matched by name (their
/// order does not matter to the Open Inference Protocol). Breaking: an input or output renamed or removed, a
/// datatype changed, a fixed dimension changed or the rank changed, a dynamic dimension made fixed, a new input
/// (every input a model lists is required). Compatible: an output added, a fixed dimension made dynamic.
pub fn compare_signatures(serving: &Signature, candidate: &Signature) -> SignatureDiff {
    let mut diff = SignatureDiff::default();
    compare_side("input", &serving.inputs, &candidate.inputs, &mut diff);
    compare_side("output", &serving.outputs, &candidate.outputs, &mut diff);
    diff
}

/// Compares the inputs (`kind` "input") or the outputs of two signatures.
fn compare_side(
    kind: &str,
    serving: &[TensorSpec],
    candidate: &[TensorSpec],
    diff: &mut SignatureDiff,
) {
    let find = |specs: &[TensorSpec], name: &str| specs.iter().position(|s| s.name == name);
    for spec in serving {
        match find(candidate, &spec.name) {
            Some(i) => compare_tensor(kind, spec, &candidate[i], diff),
            None if kind == "input" => diff
                .breaking
                .push(format!("input '{}' renamed or removed", spec.name)),
            None => diff
                .breaking
                .push(format!("{kind} '{}' removed", spec.name)),
        }
    }
    for spec in candidate
        .iter()
        .filter(|s| find(serving, &s.name).is_none())
    {
        if kind == "input" {
            diff.breaking.push(format!(
                "input '{}' added (required; clients of the serving version do not send it)",
                spec.name
            ));
        } else {
            diff.compatible
                .push(format!("{kind} '{}' added", spec.name));
        }
    }
}

/// The golden set (`FERRY_VALIDATION_URI`): Open Inference Protocol requests and the outputs expected for each,
/// e.g. `{"tolerance": {"absolute": 1e-6, "relative": 1e-5}, "min_pass_rate": 1.0, "cases": [{"name": "row-0",
/// "request": {"inputs": [...]}, "expected": {"outputs": [{"name": "label", "datatype": "INT64", "shape": [1],
/// "data": [2]}]}}]}`. `ferry-server golden` writes one from a model and requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationFile {
    #[serde(default)]
    pub tolerance: Tolerance,
    /// Share of cases that must pass, 0 to 1. Default 1: every case.
    #[serde(default = "default_min_pass_rate")]
    pub min_pass_rate: f64,
    pub cases: Vec<ValidationCase>,
}

fn default_min_pass_rate() -> f64 {
    1.0
}

/// How far a float output may be from the expected value: `|got - want| <= absolute + relative * |want|`.
/// Integers, `BOOL` and `BYTES` must match exactly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    #[serde(default = "default_absolute")]
    pub absolute: f64,
    #[serde(default = "default_relative")]
    pub relative: f64,
}

pub const DEFAULT_ABSOLUTE_TOLERANCE: f64 = 1e-6;
pub const DEFAULT_RELATIVE_TOLERANCE: f64 = 1e-5;

fn default_absolute() -> f64 {
    DEFAULT_ABSOLUTE_TOLERANCE
}

fn default_relative() -> f64 {
    DEFAULT_RELATIVE_TOLERANCE
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            absolute: DEFAULT_ABSOLUTE_TOLERANCE,
            relative: DEFAULT_RELATIVE_TOLERANCE,
        }
    }
}

/// One case: a request exactly as a client sends it to `/v2/models/{name}/infer`, and the outputs expected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationCase {
    pub name: String,
    /// An Open Inference Protocol inference request (JSON tensors).
    pub request: serde_json::Value,
    pub expected: ExpectedOutputs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedOutputs {
    /// The outputs compared; outputs of the model not listed here are not checked.
    pub outputs: Vec<ExpectedOutput>,
}

/// An expected output tensor, as an inference response carries it (flat or nested `data`, row-major).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectedOutput {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_round_trips_and_reads_the_documented_example() {
        let text = r#"{"model": "iris", "phase": "ready", "ready": true, "shutting_down": false,
            "version": "2", "sha256": "3b1f", "bytes_done": 33562, "bytes_total": 33562,
            "reason": null, "message": null, "operator": null,
            "serving": {"version": "2", "uri": "s3://models/iris/2.onnx", "sha256": "3b1f", "bytes": 33562,
                        "platform": "onnxruntime_onnx"},
            "load": {"version": "2", "uri": "s3://models/iris/2.onnx", "phase": "ready", "bytes_done": 33562,
                     "bytes_total": 33562, "sha256": "3b1f", "reason": null, "message": null, "operator": null,
                     "timings": {"fetch_seconds": 0.004, "verify_seconds": 0.0, "load_seconds": 0.012,
                                 "warmup_seconds": 0.0004, "total_seconds": 0.017}},
            "capabilities": {},
            "admin": {"mode": "token", "credential_id": "1f2e3d4c5b6a7988"}}"#;
        let status: ServerStatus = serde_json::from_str(text).unwrap();
        // A server from before staging: no versions, no switch, the load was not a stage.
        assert!(status.versions.is_empty());
        assert_eq!(status.last_switch, None);
        assert!(!status.load.as_ref().unwrap().stage);
        assert_eq!(status.phase, LoadPhase::Ready);
        assert_eq!(status.admin.mode, AdminMode::Token);
        assert_eq!(status.serving.as_ref().unwrap().bytes, 33562);
        let again: ServerStatus =
            serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
        assert_eq!(again, status);
        assert_eq!(
            serde_json::to_value(AdminMode::InsecureOpen).unwrap(),
            "insecure-open"
        );
        assert_eq!(
            serde_json::to_value(IndexState::Unavailable).unwrap(),
            "UNAVAILABLE"
        );
    }

    #[test]
    fn the_status_with_versions_and_a_switch_round_trips() {
        let text = r#"{"model": "iris", "phase": "ready", "ready": true, "shutting_down": false,
            "version": "2", "sha256": "bb", "bytes_done": 10, "bytes_total": 10,
            "reason": null, "message": null, "operator": null, "serving": null,
            "load": {"version": "3", "stage": true, "uri": "s3://m/3.onnx", "phase": "downloading",
                     "bytes_done": 5, "bytes_total": null, "sha256": null, "reason": null, "message": null,
                     "operator": null, "timings": {"fetch_seconds": null, "verify_seconds": null,
                     "load_seconds": null, "warmup_seconds": null, "total_seconds": null}},
            "capabilities": {}, "admin": {"mode": "refuse"},
            "versions": [
              {"version": "1", "uri": "s3://m/1.onnx", "sha256": "aa", "bytes": 9, "state": "previous",
               "loaded_at": "2026-12-02T10:00:00.000Z"},
              {"version": "2", "uri": "s3://m/2.onnx", "sha256": "bb", "bytes": 10, "state": "serving",
               "loaded_at": "2026-12-02T10:01:00.250Z"}],
            "last_switch": {"from": "1", "to": "2", "at": "2026-12-02T10:02:00.125Z"}}"#;
        let status: ServerStatus = serde_json::from_str(text).unwrap();
        assert!(status.load.as_ref().unwrap().stage);
        assert_eq!(status.versions[0].state, VersionState::Previous);
        assert_eq!(status.versions[1].state, VersionState::Serving);
        assert_eq!(status.last_switch.as_ref().unwrap().to, "2");
        let again: ServerStatus =
            serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
        assert_eq!(again, status);
        for state in VersionState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    #[test]
    fn requests_and_answers_of_the_repository_read_as_documented() {
        // A load from before staging is not a stage.
        let load: LoadRequest =
            serde_json::from_str(r#"{"parameters": {"uri": "s3://m/2.onnx", "version": "2"}}"#)
                .unwrap();
        assert!(!load.parameters.stage && !load.parameters.wait);
        let stage: LoadRequest = serde_json::from_str(
            r#"{"parameters": {"uri": "s3://m/2.onnx", "version": "2", "stage": true}}"#,
        )
        .unwrap();
        assert!(stage.parameters.stage);
        let switch: SwitchRequest =
            serde_json::from_str(r#"{"parameters": {"version": "2"}}"#).unwrap();
        assert_eq!(switch.parameters.version, "2");
        let unload: UnloadRequest =
            serde_json::from_str(r#"{"parameters": {"version": "1"}}"#).unwrap();
        assert_eq!(unload.parameters.version, "1");
        let switched = Switched {
            name: "iris".into(),
            version: "2".into(),
            previous: Some("1".into()),
            switched_at: "2026-12-02T10:02:00.125Z".into(),
        };
        assert_eq!(
            serde_json::to_value(&switched).unwrap(),
            serde_json::json!({"name": "iris", "version": "2", "previous": "1",
                               "switched_at": "2026-12-02T10:02:00.125Z"})
        );
        let desired: DesiredModel =
            serde_json::from_str(r#"{"uri": "s3://m/2.onnx", "version": "2"}"#).unwrap();
        assert_eq!(desired.sha256, None);
        assert_eq!(
            serde_json::to_string(&desired).unwrap(),
            r#"{"uri":"s3://m/2.onnx","version":"2"}"#
        );
        assert!(serde_json::from_str::<DesiredModel>(r#"{"version": "2"}"#).is_err());
        assert!(paths::MUTATING.contains(&paths::REPOSITORY_SWITCH));
        assert!(paths::MUTATING.contains(&paths::REPOSITORY_UNLOAD));
    }

    #[test]
    fn an_error_body_carries_its_code_and_reads_without_one_or_with_an_unknown_one() {
        let busy = ErrorBody {
            error: "another load is in progress".into(),
            code: Some(ErrorCode::Busy),
        };
        let json = serde_json::to_value(&busy).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": "another load is in progress", "code": "Busy"})
        );
        assert_eq!(serde_json::from_value::<ErrorBody>(json).unwrap(), busy);
        // A server older than the codes.
        let old: ErrorBody = serde_json::from_str(r#"{"error": "no such route"}"#).unwrap();
        assert_eq!(old.code, None);
        // A newer server's code still reads, as Other.
        let newer: ErrorBody =
            serde_json::from_str(r#"{"error": "x", "code": "SomethingNew"}"#).unwrap();
        assert_eq!(newer.code, Some(ErrorCode::Other));
        let failed: LoadFailed = serde_json::from_str(
            r#"{"error": "CorruptModel: m", "reason": "CorruptModel", "operator": null, "code": "LoadFailed"}"#,
        )
        .unwrap();
        assert_eq!(failed.code, Some(ErrorCode::LoadFailed));
        assert_eq!(ErrorCode::LoadFailed.http_status(), 422);
        assert_eq!(ErrorCode::Busy.http_status(), 409);
    }

    #[test]
    fn every_reason_reads_back_as_itself() {
        for reason in Reason::ALL {
            let json = serde_json::to_value(reason).unwrap();
            assert_eq!(json, reason.as_str());
            assert_eq!(serde_json::from_value::<Reason>(json).unwrap(), reason);
        }
    }

    #[test]
    fn a_load_failure_reads_as_its_reason_then_its_message() {
        let failure = LoadFailure::new(Reason::ChecksumMismatch, "expected 00aa, got 11bb");
        assert_eq!(
            failure.to_string(),
            "ChecksumMismatch: expected 00aa, got 11bb"
        );
        let operator_side = [
            FailureReason::ServerExited,
            FailureReason::OutOfMemory,
            FailureReason::StageRefused,
            FailureReason::Unreachable,
        ];
        let names: Vec<&str> = operator_side.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            ["ServerExited", "OutOfMemory", "StageRefused", "Unreachable"]
        );
        // No name stands for two reasons: what the status shows names one of them.
        for reason in operator_side {
            assert!(Reason::ALL.iter().all(|r| r.as_str() != reason.as_str()));
        }
        for reason in Reason::ALL {
            assert_eq!(FailureReason::from(reason).as_str(), reason.as_str());
        }
    }

    fn spec(name: &str, datatype: &str, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.to_owned(),
            datatype: datatype.to_owned(),
            shape: shape.to_vec(),
        }
    }

    fn iris() -> Signature {
        Signature {
            inputs: vec![spec("x", "FP32", &[-1, 4])],
            outputs: vec![
                spec("label", "INT64", &[-1]),
                spec("probabilities", "FP32", &[-1, 3]),
            ],
        }
    }

    #[test]
    fn an_identical_signature_differs_in_nothing_whatever_the_order() {
        assert!(compare_signatures(&iris(), &iris()).is_empty());
        let mut reordered = iris();
        reordered.outputs.reverse();
        assert!(compare_signatures(&iris(), &reordered).is_empty());
    }

    #[test]
    fn a_renamed_or_removed_input_is_breaking_and_the_new_name_a_new_required_input() {
        let mut candidate = iris();
        candidate.inputs[0].name = "features".into();
        let diff = compare_signatures(&iris(), &candidate);
        assert_eq!(
            diff.breaking,
            vec![
                "input 'x' renamed or removed".to_owned(),
                "input 'features' added (required; clients of the serving version do not send it)"
                    .to_owned()
            ]
        );
        assert!(diff.compatible.is_empty());
        candidate.inputs.clear();
        assert_eq!(
            compare_signatures(&iris(), &candidate).breaking,
            vec!["input 'x' renamed or removed"]
        );
    }

    #[test]
    fn a_new_input_is_breaking() {
        let mut candidate = iris();
        candidate.inputs.push(spec("mask", "BOOL", &[-1]));
        let diff = compare_signatures(&iris(), &candidate);
        assert_eq!(diff.breaking.len(), 1, "{diff:?}");
        assert!(
            diff.breaking[0].starts_with("input 'mask' added"),
            "{diff:?}"
        );
    }

    #[test]
    fn a_datatype_change_is_breaking_for_inputs_and_outputs() {
        let mut candidate = iris();
        candidate.inputs[0].datatype = "FP64".into();
        candidate.outputs[0].datatype = "INT32".into();
        let diff = compare_signatures(&iris(), &candidate);
        assert_eq!(
            diff.breaking,
            vec![
                "input 'x' datatype FP32 -> FP64",
                "output 'label' datatype INT64 -> INT32"
            ]
        );
        assert!(diff.compatible.is_empty());
    }

    #[test]
    fn a_changed_fixed_dimension_or_rank_is_breaking() {
        let mut candidate = iris();
        candidate.inputs[0].shape = vec![-1, 5];
        assert_eq!(
            compare_signatures(&iris(), &candidate).breaking,
            vec!["input 'x' shape [-1,4] -> [-1,5]"]
        );
        candidate.inputs[0].shape = vec![-1, 4, 1];
        assert_eq!(
            compare_signatures(&iris(), &candidate).breaking,
            vec!["input 'x' shape [-1,4] -> [-1,4,1]"]
        );
        candidate.inputs[0].shape = vec![-1, 4];
        candidate.outputs[1].shape = vec![-1, 2];
        assert_eq!(
            compare_signatures(&iris(), &candidate).breaking,
            vec!["output 'probabilities' shape [-1,3] -> [-1,2]"]
        );
    }

    #[test]
    fn a_dynamic_dimension_made_fixed_is_breaking_and_a_fixed_one_made_dynamic_compatible() {
        let mut candidate = iris();
        candidate.inputs[0].shape = vec![8, -1];
        let diff = compare_signatures(&iris(), &candidate);
        assert_eq!(
            diff.breaking,
            vec!["input 'x' dimension 0 made fixed (8): shape [-1,4] -> [8,-1]"]
        );
        assert_eq!(diff.compatible, vec!["input 'x' dimension 1 made dynamic"]);
        candidate.inputs[0].shape = vec![-1, -1];
        let diff = compare_signatures(&iris(), &candidate);
        assert!(diff.breaking.is_empty(), "{diff:?}");
        assert_eq!(diff.compatible, vec!["input 'x' dimension 1 made dynamic"]);
    }

    #[test]
    fn a_removed_output_is_breaking_and_an_added_one_compatible() {
        let mut candidate = iris();
        candidate.outputs.remove(1);
        candidate.outputs.push(spec("scores", "FP32", &[-1, 3]));
        let diff = compare_signatures(&iris(), &candidate);
        assert_eq!(diff.breaking, vec!["output 'probabilities' removed"]);
        assert_eq!(diff.compatible, vec!["output 'scores' added"]);
    }

    #[test]
    fn symbolic_dimensions_below_minus_one_count_as_dynamic() {
        let mut serving = iris();
        serving.inputs[0].shape = vec![-7, 4];
        let diff = compare_signatures(&serving, &iris());
        assert!(diff.is_empty(), "{diff:?}");
    }

    #[test]
    fn a_validation_file_reads_with_defaults_and_refuses_unknown_fields() {
        let text = r#"{"cases": [{"name": "row-0",
            "request": {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
            "expected": {"outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [2]}]}}]}"#;
        let file: ValidationFile = serde_json::from_str(text).unwrap();
        assert_eq!(file.min_pass_rate, 1.0);
        assert_eq!(file.tolerance, Tolerance::default());
        assert_eq!(file.cases[0].expected.outputs[0].shape, vec![1]);
        let partial: ValidationFile =
            serde_json::from_str(r#"{"tolerance": {"absolute": 0.1}, "cases": []}"#).unwrap();
        assert_eq!(partial.tolerance.absolute, 0.1);
        assert_eq!(partial.tolerance.relative, DEFAULT_RELATIVE_TOLERANCE);
        assert!(
            serde_json::from_str::<ValidationFile>(r#"{"min_passrate": 1, "cases": []}"#).is_err()
        );
    }

    #[test]
    fn status_with_validation_signature_and_metadata_round_trips() {
        let status = ServerStatus {
            model: "iris".into(),
            phase: LoadPhase::Validating,
            ready: false,
            shutting_down: false,
            version: Some("2".into()),
            sha256: None,
            bytes_done: 1,
            bytes_total: Some(1),
            reason: Some(Reason::ValidationFailed),
            message: Some("m".into()),
            operator: None,
            serving: None,
            load: None,
            capabilities: serde_json::json!({}),
            admin: AdminView {
                mode: AdminMode::Refuse,
                credential_id: None,
            },
            versions: Vec::new(),
            last_switch: None,
            source: None,
            validation: Some(ValidationView {
                cases: 10,
                passed: 9,
                max_error: Some(0.5),
                worst: Some("case row-3".into()),
                seconds: 0.01,
            }),
            signature: Some(iris()),
            model_metadata: Some(ModelMetadataView {
                producer_name: "skl2onnx".into(),
                opsets: [("ai.onnx".to_owned(), 17)].into(),
                ..ModelMetadataView::default()
            }),
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["phase"], "validating");
        assert_eq!(json["reason"], "ValidationFailed");
        assert_eq!(json["validation"]["passed"], 9);
        assert_eq!(
            json["signature"]["inputs"][0]["shape"],
            serde_json::json!([-1, 4])
        );
        assert_eq!(
            serde_json::from_value::<ServerStatus>(json).unwrap(),
            status
        );
    }

    #[test]
    fn object_tokens_round_trip_and_say_what_is_compared() {
        let etag = ObjectIdentity {
            etag: Some("\"5d41402abc4b2a76\"".into()),
            version: Some("3".into()),
            last_modified: Some("2026-12-02T10:00:00Z".into()),
            size: 123,
        };
        assert_eq!(etag.token(), "etag:\"5d41402abc4b2a76\"");
        let versioned = ObjectIdentity {
            etag: None,
            ..etag.clone()
        };
        assert_eq!(versioned.token(), "version:3");
        let modified = ObjectIdentity {
            version: None,
            ..versioned.clone()
        };
        assert_eq!(modified.token(), "modified:2026-12-02T10:00:00Z;size:123");
        let bare = ObjectIdentity {
            last_modified: None,
            ..modified.clone()
        };
        assert!(!bare.is_identified());
        assert_eq!(bare.token(), "size:123");
        assert!(ObjectIdentity::parse_token(&bare.token()).is_err());

        for identity in [&etag, &versioned, &modified] {
            let parsed = ObjectIdentity::parse_token(&identity.token()).unwrap();
            assert!(parsed.is_identified());
            assert_eq!(parsed.token(), identity.token());
            assert!(parsed.same_object(identity), "{}", identity.token());
            assert!(identity.same_object(&parsed), "{}", identity.token());
        }
        // Only what the token holds.
        assert_eq!(
            ObjectIdentity::parse_token("etag:W/\"x;size:1\"").unwrap(),
            ObjectIdentity {
                etag: Some("W/\"x;size:1\"".into()),
                ..ObjectIdentity::default()
            }
        );
        assert_eq!(
            ObjectIdentity::parse_token("modified:2026-12-02T10:00:00.25+01:00;size:7")
                .unwrap()
                .size,
            7
        );
        for bad in [
            "",
            "etag",
            "etag:",
            "etag: x",
            "sha:abc",
            "version:",
            "modified:2026-12-02T10:00:00Z",
            "modified:2026-12-02;size:1",
            "modified:2026-12-02T10:00:00Z;size:-1",
            "modified:2026-12-02T10:00:00.Z;size:1",
            "size:12",
            "etag:\"a\nb\"",
        ] {
            let error = ObjectIdentity::parse_token(bad).unwrap_err();
            assert!(error.to_string().contains("not an object token"), "{bad}");
        }
    }

    #[test]
    fn same_object_compares_etags_then_versions_then_modification_and_size() {
        let id = |etag: Option<&str>, version: Option<&str>, modified: Option<&str>, size| {
            ObjectIdentity {
                etag: etag.map(str::to_owned),
                version: version.map(str::to_owned),
                last_modified: modified.map(str::to_owned),
                size,
            }
        };
        let t1 = Some("2026-12-02T10:00:00Z");
        let t2 = Some("2026-12-02T11:00:00Z");
        // The ETag decides when both have one, whatever else differs.
        assert!(id(Some("a"), Some("1"), t1, 1).same_object(&id(Some("a"), Some("2"), t2, 2)));
        assert!(!id(Some("a"), Some("1"), t1, 1).same_object(&id(Some("b"), Some("1"), t1, 1)));
        // Else the version.
        assert!(id(Some("a"), Some("1"), t1, 1).same_object(&id(None, Some("1"), t2, 2)));
        assert!(!id(None, Some("1"), t1, 1).same_object(&id(Some("a"), Some("2"), t1, 1)));
        // Else modification time and size together.
        assert!(id(Some("a"), None, t1, 5).same_object(&id(None, None, t1, 5)));
        assert!(!id(None, None, t1, 5).same_object(&id(None, None, t1, 6)));
        assert!(!id(None, None, t1, 5).same_object(&id(None, None, t2, 5)));
        // Nothing in common: not the same.
        assert!(!id(Some("a"), None, None, 5).same_object(&id(None, Some("1"), None, 5)));
        assert!(!id(None, None, None, 5).same_object(&id(None, None, None, 5)));
    }

    #[test]
    fn the_status_carries_identities_and_the_source_check() {
        let text = r#"{"model": "iris", "phase": "ready", "ready": true, "shutting_down": false,
            "version": "2", "sha256": "bb", "bytes_done": 10, "bytes_total": 10,
            "reason": null, "message": null, "operator": null,
            "serving": {"version": "2", "uri": "s3://m/latest.onnx", "sha256": "bb", "bytes": 10,
                        "platform": "onnxruntime_onnx",
                        "identity": {"etag": "\"e1\"", "last_modified": "2026-12-02T10:00:00Z", "size": 10}},
            "load": null, "capabilities": {}, "admin": {"mode": "refuse"},
            "source": {"identity": {"etag": "\"e2\"", "last_modified": "2026-12-02T11:00:00Z", "size": 12},
                       "checked_at": "2026-12-02T11:00:05.000Z", "error": null, "changed": true}}"#;
        let status: ServerStatus = serde_json::from_str(text).unwrap();
        let serving = status.serving.as_ref().unwrap().identity.as_ref().unwrap();
        let source = status.source.as_ref().unwrap();
        assert!(source.changed);
        assert!(!serving.same_object(source.identity.as_ref().unwrap()));
        assert_eq!(serving.token(), "etag:\"e1\"");
        let again: ServerStatus =
            serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
        assert_eq!(again, status);
        // A server without refresh: no source, no identities.
        let mut value: serde_json::Value = serde_json::from_str(text).unwrap();
        value.as_object_mut().unwrap().remove("source");
        value["serving"].as_object_mut().unwrap().remove("identity");
        let old: ServerStatus = serde_json::from_value(value).unwrap();
        assert_eq!(old.source, None);
        assert_eq!(old.serving.unwrap().identity, None);
        let load: LoadRequest = serde_json::from_str(
            r#"{"parameters": {"uri": "s3://m/latest.onnx", "version": "2", "object": "etag:\"e2\""}}"#,
        )
        .unwrap();
        assert_eq!(load.parameters.object.as_deref(), Some("etag:\"e2\""));
        assert_eq!(Reason::ALL.last(), Some(&Reason::WorkerFailed));
    }
}
