//! scikit-learn, XGBoost, LightGBM, MLflow and custom Python models, served by supervised Python workers.
//!
//! Everything about a model file is read in Rust before any Python sees it: the framework version it records
//! (`files`), checked against the versions really installed under the policy of `policy`; for a pickle, every
//! global it imports (`pickle`), checked against the allow-list; for an archive, every member's path
//! (`archive`). Only then does a pool of worker processes (`worker`) load the file, one per core, and serve it.
//! ferry-server keeps the front: protocol, admin, readiness; the workers only load and predict.

pub mod archive;
pub mod files;
pub mod pickle;
pub mod policy;
pub mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{DataType, InferError, Model, Runtime, Signature, Tensor, TensorData, TensorSpec};
use crate::contract::{env, ModelMetadataView, Reason};
use crate::failure::Failure;
use files::{DeclaredSignature, MlflowFlavor};
use pickle::AllowList;
use policy::Installed;
use worker::{CallError, Launch, Pool, PoolSettings, Replaced, Worker};

/// The worker's source, written next to the models at start-up: the front and the worker always come from the
/// same build.
const WORKER_SOURCE: &str = include_str!("../../../python/ferry_worker.py");

/// Model formats the Python runtime serves (`FERRY_MODEL_FORMAT`).
pub const FORMATS: &[&str] = &["sklearn", "xgboost", "lightgbm", "mlflow", "python"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sklearn,
    Xgboost,
    Lightgbm,
    Mlflow,
    Python,
}

impl Format {
    pub fn from_name(name: &str) -> Option<Format> {
        Some(match name {
            "sklearn" => Format::Sklearn,
            "xgboost" => Format::Xgboost,
            "lightgbm" => Format::Lightgbm,
            "mlflow" => Format::Mlflow,
            "python" => Format::Python,
            _ => return None,
        })
    }
}

/// Settings of the Python runtime.
#[derive(Debug, Clone)]
pub struct PythonSettings {
    /// The interpreter with the frameworks installed (`FERRY_PYTHON`).
    pub python: PathBuf,
    /// Where models are unpacked and linked; the worker script is written here too.
    pub work_dir: PathBuf,
    /// Workers per loaded version; `None` is one per CPU.
    pub workers: Option<usize>,
    pub request_timeout: Duration,
    pub load_timeout: Duration,
    pub max_worker_rss_bytes: Option<u64>,
    /// Bound on an archive's unpacked size.
    pub max_unpacked_bytes: u64,
    /// Globals a pickle may import beyond the built-in list (`module.name` or `module.*`).
    pub extra_globals: Vec<String>,
}

pub struct PythonRuntime {
    settings: PythonSettings,
    launch: Launch,
    installed: Installed,
    allow: AllowList,
    workers: usize,
    next_model: AtomicU64,
    replaced: Replaced,
}

impl PythonRuntime {
    /// Writes the worker script and asks the interpreter which packages it really has. An interpreter that does
    /// not start is an `InvalidConfig` failure naming `FERRY_PYTHON`.
    /// `replaced` counts the workers stopped and replaced (`ferry_python_workers_replaced_total`).
    pub fn new(settings: PythonSettings, replaced: Replaced) -> Result<PythonRuntime, Failure> {
        let config = |message: String| Failure::invalid_config(env::PYTHON, message);
        let dir = settings.work_dir.join("python");
        std::fs::create_dir_all(&dir)
            .map_err(|e| config(format!("cannot create {}: {e}", dir.display())))?;
        let script = dir.join("ferry_worker.py");
        std::fs::write(&script, WORKER_SOURCE)
            .map_err(|e| config(format!("cannot write {}: {e}", script.display())))?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = settings.workers.unwrap_or(cpus).max(1);
        let launch = Launch {
            python: settings.python.clone(),
            script,
            env: worker_env(),
            cwd: dir,
        };
        let mut worker = Worker::spawn(&launch)
            .map_err(|e| config(format!("{}: {e}", settings.python.display())))?;
        let (versions, _) = worker
            .call(&json!({"op": "versions"}), &[], settings.load_timeout)
            .map_err(|e| config(format!("{}: {e}", settings.python.display())))?;
        drop(worker);
        let installed = Installed {
            versions: versions
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let allow = AllowList::builtin().with_extra(&settings.extra_globals);
        Ok(PythonRuntime {
            settings,
            launch,
            installed,
            allow,
            workers,
            next_model: AtomicU64::new(0),
            replaced,
        })
    }

    /// The versions the interpreter reports (`python`, `scikit-learn`, `xgboost`, `lightgbm`, `numpy`, ...).
    pub fn installed(&self) -> &BTreeMap<String, String> {
        &self.installed.versions
    }

    /// The runtime for one format, as the loader wants it.
    pub fn for_format(self: &Arc<Self>, format: Format) -> Arc<dyn Runtime> {
        Arc::new(FormatRuntime {
            runtime: self.clone(),
            format,
        })
    }

    fn load(&self, format: Format, path: &Path) -> Result<Box<dyn Model>, Failure> {
        let n = self.next_model.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .settings
            .work_dir
            .join("python")
            .join(format!("model-{n}"));
        let prepared = self.prepare(format, path, &dir);
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(failure) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(failure);
            }
        };
        let mut load = prepared.load.clone();
        load["op"] = json!("load");
        let settings = PoolSettings {
            launch: Launch {
                cwd: dir.clone(),
                ..self.launch.clone()
            },
            load,
            size: self.workers,
            load_timeout: self.settings.load_timeout,
            request_timeout: self.settings.request_timeout,
            max_rss_bytes: self.settings.max_worker_rss_bytes,
        };
        let (pool, reply) = match Pool::start(settings, self.replaced.clone()) {
            Ok(started) => started,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(load_failure(error));
            }
        };
        let signature = match signature_of(&reply) {
            Ok(signature) => signature,
            Err(m) => {
                drop(pool);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Failure::new(
                    Reason::CorruptModel,
                    format!("the worker described the model badly: {m}"),
                ));
            }
        };
        let mut metadata = prepared.metadata;
        if let Some(info) = reply["info"].as_object() {
            for (key, value) in info {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Array(a) if a.is_empty() => continue,
                    other => other.to_string(),
                };
                metadata.metadata_props.insert(key.clone(), text);
            }
        }
        Ok(Box::new(PythonModel {
            pool,
            signature,
            platform: prepared.platform,
            metadata,
            dir,
        }))
    }

    /// Reads and checks the file, and says how the workers load it.
    fn prepare(&self, format: Format, path: &Path, dir: &Path) -> Result<Prepared, Failure> {
        std::fs::create_dir_all(dir).map_err(|e| io_failure(dir, e))?;
        match format {
            Format::Sklearn => self.sklearn(link(path, dir, "model.pkl")?, "sklearn"),
            Format::Xgboost => {
                let extension = if looks_like_json(path)? {
                    "json"
                } else {
                    "ubj"
                };
                self.xgboost(link(path, dir, &format!("model.{extension}"))?, "xgboost")
            }
            Format::Lightgbm => self.lightgbm(link(path, dir, "model.txt")?, "lightgbm"),
            Format::Mlflow => {
                let root = dir.join("model");
                self.unpack(path, &root)?;
                let model = files::mlflow(&root).map_err(file_failure)?;
                // The flavor's version in MLmodel, under its framework's policy, then requirements.txt.
                let package = model.flavor.package();
                if let (Some(version), Some(check)) =
                    (&model.flavor_version, policy::framework_policy(package))
                {
                    check(version, &self.installed).map_err(|e| {
                        Failure::new(
                            Reason::IncompatibleRuntime,
                            format!("MLmodel: {}", e.message),
                        )
                    })?;
                }
                policy::check_requirements(&model.requirements, &self.installed)
                    .map_err(incompatible)?;
                let mut prepared = match model.flavor {
                    MlflowFlavor::Sklearn => self.sklearn(model.model_file.clone(), "mlflow")?,
                    MlflowFlavor::Xgboost => self.xgboost(model.model_file.clone(), "mlflow")?,
                    MlflowFlavor::Lightgbm => self.lightgbm(model.model_file.clone(), "mlflow")?,
                };
                if let Some(version) = &model.mlflow_version {
                    prepared
                        .metadata
                        .metadata_props
                        .insert("mlflow_version".into(), version.clone());
                }
                if let Some(signature) = &model.signature {
                    prepared
                        .metadata
                        .metadata_props
                        .insert("mlflow_signature".into(), declared_text(signature));
                }
                Ok(prepared)
            }
            Format::Python => {
                let root = dir.join("model");
                self.unpack(path, &root)?;
                if !root.join("model.py").is_file() {
                    return Err(Failure::new(
                        Reason::CorruptModel,
                        "the archive has no model.py at its root".to_owned(),
                    ));
                }
                let signature = read_declared(&root.join("signature.json"))?;
                if let Ok(text) = std::fs::read_to_string(root.join("requirements.txt")) {
                    let requirements = files::requirements(&text).map_err(file_failure)?;
                    policy::check_requirements(&requirements, &self.installed)
                        .map_err(incompatible)?;
                }
                Ok(Prepared {
                    load: json!({"format": "python", "path": root, "signature": signature}),
                    platform: "python",
                    metadata: ModelMetadataView {
                        producer_name: "python".into(),
                        producer_version: self
                            .installed
                            .versions
                            .get("python")
                            .cloned()
                            .unwrap_or_default(),
                        ..Default::default()
                    },
                })
            }
        }
    }

    fn unpack(&self, archive_path: &Path, into: &Path) -> Result<(), Failure> {
        archive::unpack(archive_path, into, self.settings.max_unpacked_bytes).map_err(|e| match e {
            archive::ArchiveError::Unsafe(m) => Failure::new(Reason::UnsafeArchive, m),
            archive::ArchiveError::Corrupt(m) => Failure::new(Reason::CorruptModel, m),
            archive::ArchiveError::Io(m) => Failure::new(Reason::FetchFailed, m),
        })
    }

    fn sklearn(&self, file: PathBuf, platform: &'static str) -> Result<Prepared, Failure> {
        let scan = pickle::scan_file(&file).map_err(|e| match e {
            pickle::PickleError::Unsupported(m) => Failure::new(Reason::UnsupportedFormat, m),
            pickle::PickleError::Io(m) => Failure::new(Reason::FetchFailed, m),
            other => Failure::new(Reason::CorruptModel, other.to_string()),
        })?;
        self.allow.check(&scan).map_err(|refusal| {
            Failure::new(
                Reason::UnsafeModel,
                format!("refused before loading: {refusal}"),
            )
        })?;
        let recorded = scan.sklearn_versions.first().cloned();
        for version in &scan.sklearn_versions {
            policy::check_sklearn(version, &self.installed).map_err(incompatible)?;
        }
        let approved: Vec<[&str; 2]> = scan
            .globals
            .iter()
            .map(|(g, _)| [g.module.as_str(), g.name.as_str()])
            .collect();
        Ok(Prepared {
            load: json!({
                "format": "sklearn",
                "path": file,
                "joblib": scan.joblib || scan.compression.is_some(),
                "approved_globals": approved,
                "model_roots": self.model_roots(),
            }),
            platform,
            metadata: self.framework_metadata("scikit-learn", recorded),
        })
    }

    /// The top-level packages a pickled model's class may come from: the frameworks, and the modules of the
    /// extra globals the runtime allows (a team's own estimators).
    fn model_roots(&self) -> Vec<String> {
        let mut roots: Vec<String> = ["sklearn", "xgboost", "lightgbm"]
            .map(String::from)
            .to_vec();
        for extra in &self.settings.extra_globals {
            if let Some(root) = extra.split('.').next().filter(|r| !r.is_empty()) {
                if !roots.iter().any(|r| r == root) {
                    roots.push(root.to_owned());
                }
            }
        }
        roots
    }

    fn xgboost(&self, file: PathBuf, platform: &'static str) -> Result<Prepared, Failure> {
        let model = files::xgboost(&file).map_err(file_failure)?;
        policy::check_xgboost(&model.version, &self.installed).map_err(incompatible)?;
        Ok(Prepared {
            load: json!({"format": "xgboost", "path": file}),
            platform,
            metadata: self.framework_metadata("xgboost", Some(model.version)),
        })
    }

    fn lightgbm(&self, file: PathBuf, platform: &'static str) -> Result<Prepared, Failure> {
        let model = files::lightgbm(&file).map_err(file_failure)?;
        policy::check_lightgbm_format(&model.format_version, &self.installed)
            .map_err(incompatible)?;
        Ok(Prepared {
            load: json!({"format": "lightgbm", "path": file}),
            platform,
            metadata: self.framework_metadata("lightgbm", Some(model.format_version)),
        })
    }

    /// The model's framework as `/status` shows it: the version the file records (the producer) and the
    /// version installed here.
    fn framework_metadata(&self, package: &str, recorded: Option<String>) -> ModelMetadataView {
        let mut props = BTreeMap::new();
        if let Some(installed) = self.installed.versions.get(package) {
            props.insert("runtime_version".to_owned(), installed.clone());
        }
        ModelMetadataView {
            producer_name: package.to_owned(),
            producer_version: recorded.unwrap_or_default(),
            metadata_props: props,
            ..Default::default()
        }
    }
}

/// The environment of every worker: one thread per library (the pool is the parallelism), nothing else.
fn worker_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), "1".to_owned()))
    .collect();
    env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    env.push(("PYTHONUNBUFFERED".into(), "1".into()));
    if let Ok(path) = std::env::var("PATH") {
        env.push(("PATH".into(), path));
    }
    env
}

struct Prepared {
    load: Value,
    platform: &'static str,
    metadata: ModelMetadataView,
}

struct FormatRuntime {
    runtime: Arc<PythonRuntime>,
    format: Format,
}

impl Runtime for FormatRuntime {
    fn load(&self, path: &Path, _size: u64) -> Result<Box<dyn Model>, Failure> {
        self.runtime.load(self.format, path)
    }
}

/// The downloaded file, linked (or copied) into the model's own directory under `name`: workers that restart
/// later load it from there after the download is gone.
fn link(path: &Path, dir: &Path, name: &str) -> Result<PathBuf, Failure> {
    let target = dir.join(name);
    if std::fs::hard_link(path, &target).is_err() {
        std::fs::copy(path, &target).map_err(|e| io_failure(&target, e))?;
    }
    Ok(target)
}

fn looks_like_json(path: &Path) -> Result<bool, Failure> {
    use std::io::Read;
    let mut head = [0u8; 64];
    let mut file = std::fs::File::open(path).map_err(|e| io_failure(path, e))?;
    let n = file.read(&mut head).map_err(|e| io_failure(path, e))?;
    // UBJSON objects start with '{' too, then a length marker; JSON goes on with whitespace, a quote or '}'.
    let rest = head[..n]
        .iter()
        .skip_while(|b| **b != b'{')
        .skip(1)
        .find(|b| !b.is_ascii_whitespace());
    Ok(matches!(rest, Some(b'"') | Some(b'}'))
        || head[..n].first().is_some_and(|b| b.is_ascii_whitespace()))
}

fn io_failure(path: &Path, e: std::io::Error) -> Failure {
    Failure::new(Reason::FetchFailed, format!("{}: {e}", path.display()))
}

fn file_failure(e: files::FileError) -> Failure {
    match e {
        files::FileError::Unsupported(m) => Failure::new(Reason::UnsupportedFormat, m),
        files::FileError::Io(m) => Failure::new(Reason::FetchFailed, m),
        other => Failure::new(Reason::CorruptModel, other.to_string()),
    }
}

fn incompatible(e: policy::Incompatible) -> Failure {
    Failure::new(Reason::IncompatibleRuntime, e.message)
}

fn load_failure(error: CallError) -> Failure {
    match error {
        CallError::Answered { kind, message } => {
            let reason = match kind.as_str() {
                "unsafe" => Reason::UnsafeModel,
                _ => Reason::CorruptModel,
            };
            Failure::new(
                reason,
                format!("the Python worker could not load the model: {message}"),
            )
        }
        CallError::Died(how) => Failure::new(
            Reason::WorkerFailed,
            format!("the Python worker {how} while loading the model"),
        ),
    }
}

fn declared_text(signature: &DeclaredSignature) -> String {
    let side = |tensors: &[files::DeclaredTensor]| {
        tensors
            .iter()
            .map(|t| {
                format!(
                    "{}:{}{:?}",
                    t.name.as_deref().unwrap_or("-"),
                    t.datatype.as_str(),
                    t.shape
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "inputs [{}] outputs [{}]",
        side(&signature.inputs),
        side(&signature.outputs)
    )
}

/// A custom model's `signature.json`: `{"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}`.
fn read_declared(path: &Path) -> Result<Value, Failure> {
    let bad = |m: String| Failure::new(Reason::CorruptModel, format!("signature.json: {m}"));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    signature_of(&value).map_err(bad)?;
    Ok(value)
}

/// The signature a worker (or a `signature.json`) describes.
fn signature_of(value: &Value) -> Result<Signature, String> {
    let side = |key: &str| -> Result<Vec<TensorSpec>, String> {
        let list = value[key]
            .as_array()
            .ok_or_else(|| format!("no list of {key}"))?;
        if list.is_empty() {
            return Err(format!("no {key}"));
        }
        list.iter()
            .map(|t| {
                let name = t["name"].as_str().ok_or_else(|| format!("an entry of {key} has no name"))?;
                let datatype = t["datatype"]
                    .as_str()
                    .and_then(DataType::from_name)
                    .ok_or_else(|| format!("{key} {name:?}: datatype {} is not one of BOOL, INT32, INT64, FP32, FP64, BYTES", t["datatype"]))?;
                let shape = t["shape"]
                    .as_array()
                    .ok_or_else(|| format!("{key} {name:?}: no shape"))?
                    .iter()
                    .map(|d| d.as_i64().filter(|d| *d >= -1))
                    .collect::<Option<Vec<i64>>>()
                    .ok_or_else(|| format!("{key} {name:?}: a dimension is not an integer >= -1"))?;
                Ok(TensorSpec {
                    name: name.to_owned(),
                    datatype,
                    shape,
                })
            })
            .collect()
    };
    Ok(Signature {
        inputs: side("inputs")?,
        outputs: side("outputs")?,
    })
}

/// A loaded Python model: its pool of workers, and the directory its files live in.
struct PythonModel {
    pool: Pool,
    signature: Signature,
    platform: &'static str,
    metadata: ModelMetadataView,
    dir: PathBuf,
}

impl Drop for PythonModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Model for PythonModel {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn concurrency(&self) -> usize {
        self.pool.size()
    }

    fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        let (header, buffers) = encode(&inputs);
        let refs: Vec<&[u8]> = buffers.iter().map(Vec::as_slice).collect();
        let (reply, buffers) = self.pool.call(&header, &refs).map_err(infer_error)?;
        decode(&reply, buffers)
            .map_err(|m| InferError::Internal(format!("the Python worker answered badly: {m}")))
    }

    fn warm_up(&self) -> Result<(), InferError> {
        let (header, buffers) = encode(&super::synthetic_inputs(&self.signature));
        let refs: Vec<&[u8]> = buffers.iter().map(Vec::as_slice).collect();
        self.pool
            .on_every_worker(&header, &refs)
            .map_err(infer_error)
    }

    fn platform(&self) -> &'static str {
        self.platform
    }

    fn metadata(&self) -> Option<&ModelMetadataView> {
        Some(&self.metadata)
    }
}

fn infer_error(error: CallError) -> InferError {
    match error {
        CallError::Answered { kind, message } if kind == "bad_input" => {
            InferError::BadInput(format!("the model refused the input: {message}"))
        }
        CallError::Answered { message, .. } => {
            InferError::Internal(format!("the model failed: {message}"))
        }
        died @ CallError::Died(_) => InferError::Internal(died.to_string()),
    }
}

/// The infer request for the worker: each input's name, datatype and shape, and its elements as raw
/// little-endian bytes (BYTES as a JSON list of strings).
fn encode(inputs: &[Tensor]) -> (Value, Vec<Vec<u8>>) {
    let mut specs = Vec::with_capacity(inputs.len());
    let mut buffers = Vec::with_capacity(inputs.len());
    for tensor in inputs {
        specs.push(json!({
            "name": tensor.name,
            "datatype": tensor.data.datatype().as_str(),
            "shape": tensor.shape,
        }));
        buffers.push(match &tensor.data {
            TensorData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
            TensorData::Int32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::Int64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::Fp32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::Fp64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::Bytes(v) => serde_json::to_vec(v).unwrap_or_default(),
        });
    }
    (json!({"op": "infer", "inputs": specs}), buffers)
}

fn decode(reply: &Value, buffers: Vec<Vec<u8>>) -> Result<Vec<Tensor>, String> {
    let specs = reply["outputs"].as_array().ok_or("no outputs")?;
    if specs.len() != buffers.len() {
        return Err(format!(
            "{} outputs with {} buffers",
            specs.len(),
            buffers.len()
        ));
    }
    specs
        .iter()
        .zip(buffers)
        .map(|(spec, bytes)| {
            let name = spec["name"]
                .as_str()
                .ok_or("an output has no name")?
                .to_owned();
            let datatype = spec["datatype"]
                .as_str()
                .and_then(DataType::from_name)
                .ok_or_else(|| format!("output {name}: unknown datatype"))?;
            let shape: Vec<usize> = spec["shape"]
                .as_array()
                .ok_or_else(|| format!("output {name}: no shape"))?
                .iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("output {name}: bad shape"))?;
            let data =
                elements(datatype, &bytes).ok_or_else(|| format!("output {name}: bad data"))?;
            let count: usize = shape.iter().product();
            if data.len() != count {
                return Err(format!(
                    "output {name}: {} elements for shape {shape:?}",
                    data.len()
                ));
            }
            Ok(Tensor { name, shape, data })
        })
        .collect()
}

fn elements(datatype: DataType, bytes: &[u8]) -> Option<TensorData> {
    fn chunks<const N: usize, T>(bytes: &[u8], f: fn([u8; N]) -> T) -> Option<Vec<T>> {
        if !bytes.len().is_multiple_of(N) {
            return None;
        }
        Some(
            bytes
                .chunks_exact(N)
                .map(|c| f(c.try_into().expect("chunks_exact gives N bytes")))
                .collect(),
        )
    }
    Some(match datatype {
        DataType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DataType::Int32 => TensorData::Int32(chunks(bytes, i32::from_le_bytes)?),
        DataType::Int64 => TensorData::Int64(chunks(bytes, i64::from_le_bytes)?),
        DataType::Fp32 => TensorData::Fp32(chunks(bytes, f32::from_le_bytes)?),
        DataType::Fp64 => TensorData::Fp64(chunks(bytes, f64::from_le_bytes)?),
        DataType::Bytes => TensorData::Bytes(serde_json::from_slice(bytes).ok()?),
    })
}
