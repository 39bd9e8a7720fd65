//! ONNX models on ONNX Runtime, through `ort` with the library loaded at run time.
//!
//! `ort::Session::run` takes `&mut self`, so requests share a small pool of sessions: each request borrows one for
//! the duration of a run. Every session holds its own copy of the weights, so the pool shrinks for large models
//! (at most `SESSION_MEMORY_BUDGET` of weight copies), and intra-op threads divide the Pod's CPUs between sessions.

pub mod header;

use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{DynValue, TensorElementType, ValueType};
use ort::ErrorCode;

use super::{
    synthetic_inputs, DataType, InferError, Model, Runtime, Signature, Tensor, TensorData,
    TensorSpec,
};
use crate::contract::{env, ModelMetadataView, Reason};
use crate::failure::Failure;

/// Weight copies the session pool may hold: a 100 MiB model gets up to 10 sessions, a 1 GiB model one.
const SESSION_MEMORY_BUDGET: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, Default)]
pub struct PoolSettings {
    /// Sessions; `None` derives it from the CPUs and the model size.
    pub sessions: Option<usize>,
    /// Intra-op threads per session; `None` divides the CPUs between sessions.
    pub intra_op_threads: Option<usize>,
}

impl PoolSettings {
    /// Pool size and threads per session for a model of `model_bytes` on `cpus` CPUs.
    pub fn resolve(self, cpus: usize, model_bytes: u64) -> (usize, usize) {
        let by_memory = (SESSION_MEMORY_BUDGET / model_bytes.max(1)).max(1);
        let sessions = self
            .sessions
            .unwrap_or_else(|| cpus.min(usize::try_from(by_memory).unwrap_or(usize::MAX)))
            .max(1);
        let threads = self.intra_op_threads.unwrap_or((cpus / sessions).max(1));
        (sessions, threads)
    }
}

pub struct OnnxRuntime {
    environment: Environment,
    pool: PoolSettings,
    cpus: usize,
}

impl OnnxRuntime {
    /// Loads the ONNX Runtime library. A missing file, a file that is not ONNX Runtime, or a release older than
    /// the API this build needs is an `InvalidConfig` failure naming `FERRY_ONNXRUNTIME_LIBRARY`.
    pub fn new(library: &Path, pool: PoolSettings) -> Result<OnnxRuntime, Failure> {
        let library_failure = |message: String| {
            Failure::invalid_config(
                env::ONNXRUNTIME_LIBRARY,
                format!(
                    "{}: {message} (needs ONNX Runtime 1.{}.x or a later 1.x)",
                    library.display(),
                    ort::MINOR_VERSION
                ),
            )
        };
        if !library.is_file() {
            return Err(library_failure("no such file".to_owned()));
        }
        let environment = ort::init_from(library)
            .map_err(|e| library_failure(e.to_string()))?
            .with_name("ferry-server")
            .with_telemetry(false)
            .build()
            .map_err(|e| library_failure(e.to_string()))?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(OnnxRuntime {
            environment,
            pool,
            cpus,
        })
    }

    fn session(&self, path: &Path, threads: usize) -> ort::Result<Session> {
        Session::builder(&self.environment)?
            .with_intra_threads(threads)?
            .with_inter_threads(1)?
            .commit_from_file(path)
    }
}

impl Runtime for OnnxRuntime {
    fn load(&self, path: &Path, size: u64) -> Result<Box<dyn Model>, Failure> {
        // The header first: a model newer than this runtime is refused by name before a session is built.
        let metadata = header::read(path)?;
        header::check_supported(&metadata)?;
        let (pool_size, threads) = self.pool.resolve(self.cpus, size);
        let first = self
            .session(path, threads)
            .map_err(|e| classify_load_error(e.code(), e.message()))?;
        let signature = signature(&first)?;
        let mut sessions = vec![first];
        for _ in 1..pool_size {
            sessions.push(
                self.session(path, threads)
                    .map_err(|e| classify_load_error(e.code(), e.message()))?,
            );
        }
        tracing::info!(
            sessions = pool_size,
            intra_op_threads = threads,
            "ONNX Runtime sessions created"
        );
        Ok(Box::new(OnnxModel {
            signature,
            metadata,
            pool_size,
            idle: Mutex::new(sessions),
            returned: Condvar::new(),
        }))
    }
}

struct OnnxModel {
    signature: Signature,
    metadata: ModelMetadataView,
    pool_size: usize,
    idle: Mutex<Vec<Session>>,
    returned: Condvar,
}

/// A session borrowed from the pool; it goes back on drop, even when the run panics.
struct Borrowed<'a> {
    model: &'a OnnxModel,
    session: Option<Session>,
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.model.idle_sessions().push(session);
            self.model.returned.notify_one();
        }
    }
}

impl OnnxModel {
    fn idle_sessions(&self) -> MutexGuard<'_, Vec<Session>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn borrow(&self) -> Borrowed<'_> {
        let mut idle = self.idle_sessions();
        loop {
            if let Some(session) = idle.pop() {
                return Borrowed {
                    model: self,
                    session: Some(session),
                };
            }
            idle = self
                .returned
                .wait(idle)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn run(&self, session: &mut Session, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        let values = inputs
            .into_iter()
            .map(|t| Ok((t.name.clone(), to_value(t)?)))
            .collect::<Result<Vec<(String, DynValue)>, InferError>>()?;
        let outputs = session.run(values).map_err(|e| run_error(&e))?;
        self.signature
            .outputs
            .iter()
            .map(|spec| {
                let value = outputs.get(&spec.name).ok_or_else(|| {
                    InferError::Internal(format!("output {} missing from the run", spec.name))
                })?;
                from_value(spec, value)
            })
            .collect()
    }
}

impl Model for OnnxModel {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn concurrency(&self) -> usize {
        self.pool_size
    }

    fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        let mut borrowed = self.borrow();
        let session = borrowed
            .session
            .as_mut()
            .expect("a borrowed session is present until drop");
        self.run(session, inputs)
    }

    fn warm_up(&self) -> Result<(), InferError> {
        let mut sessions = self.idle_sessions();
        for session in sessions.iter_mut() {
            self.run(session, synthetic_inputs(&self.signature))?;
        }
        Ok(())
    }

    fn platform(&self) -> &'static str {
        "onnxruntime_onnx"
    }

    fn metadata(&self) -> Option<&ModelMetadataView> {
        Some(&self.metadata)
    }
}

fn signature(session: &Session) -> Result<Signature, Failure> {
    let specs = |outlets: &[ort::value::Outlet], kind: &str| {
        outlets
            .iter()
            .map(|outlet| tensor_spec(outlet.name(), outlet.dtype(), kind))
            .collect::<Result<Vec<_>, Failure>>()
    };
    Ok(Signature {
        inputs: specs(session.inputs(), "input")?,
        outputs: specs(session.outputs(), "output")?,
    })
}

fn tensor_spec(name: &str, dtype: &ValueType, kind: &str) -> Result<TensorSpec, Failure> {
    let unsupported = |what: String| {
        Failure::new(
            Reason::UnsupportedFormat,
            format!(
                "{kind} {name} is {what}; ferry-server serves tensors of {}",
                crate::contract::capabilities::DATATYPES.join(", ")
            ),
        )
    };
    match dtype {
        ValueType::Tensor { ty, shape, .. } => {
            let datatype = match ty {
                TensorElementType::Bool => DataType::Bool,
                TensorElementType::Int32 => DataType::Int32,
                TensorElementType::Int64 => DataType::Int64,
                TensorElementType::Float32 => DataType::Fp32,
                TensorElementType::Float64 => DataType::Fp64,
                TensorElementType::String => DataType::Bytes,
                other => return Err(unsupported(format!("a tensor of {other:?}"))),
            };
            Ok(TensorSpec {
                name: name.to_owned(),
                datatype,
                shape: shape.iter().copied().collect(),
            })
        }
        ValueType::Sequence(_) | ValueType::Map { .. } => Err(unsupported(format!(
            "{dtype} (for scikit-learn classifiers, export with the zipmap option disabled)"
        ))),
        other => Err(unsupported(format!("{other}"))),
    }
}

fn to_value(tensor: Tensor) -> Result<DynValue, InferError> {
    let shape: Vec<i64> = tensor.shape.iter().map(|&d| d as i64).collect();
    let value = match tensor.data {
        TensorData::Bool(v) => ort::value::Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
        TensorData::Int32(v) => ort::value::Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
        TensorData::Int64(v) => ort::value::Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
        TensorData::Fp32(v) => ort::value::Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
        TensorData::Fp64(v) => ort::value::Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
        TensorData::Bytes(v) => {
            ort::value::Tensor::from_string_array((shape, &v[..])).map(|t| t.into_dyn())
        }
    };
    value.map_err(|e| InferError::BadInput(format!("input {}: {e}", tensor.name)))
}

fn from_value(spec: &TensorSpec, value: &DynValue) -> Result<Tensor, InferError> {
    fn extract<T: ort::value::PrimitiveTensorElementType + Clone>(
        value: &DynValue,
    ) -> ort::Result<(Vec<i64>, Vec<T>)> {
        value
            .try_extract_tensor::<T>()
            .map(|(shape, data)| (shape.to_vec(), data.to_vec()))
    }
    let extracted = match spec.datatype {
        DataType::Bool => extract(value).map(|(s, d)| (s, TensorData::Bool(d))),
        DataType::Int32 => extract(value).map(|(s, d)| (s, TensorData::Int32(d))),
        DataType::Int64 => extract(value).map(|(s, d)| (s, TensorData::Int64(d))),
        DataType::Fp32 => extract(value).map(|(s, d)| (s, TensorData::Fp32(d))),
        DataType::Fp64 => extract(value).map(|(s, d)| (s, TensorData::Fp64(d))),
        DataType::Bytes => value
            .try_extract_strings()
            .map(|(shape, data)| (shape.to_vec(), TensorData::Bytes(data))),
    };
    let (shape, data) =
        extracted.map_err(|e| InferError::Internal(format!("output {}: {e}", spec.name)))?;
    Ok(Tensor {
        name: spec.name.clone(),
        shape: shape
            .into_iter()
            .map(|d| usize::try_from(d).unwrap_or(0))
            .collect(),
        data,
    })
}

fn run_error(error: &ort::Error) -> InferError {
    match error.code() {
        ErrorCode::InvalidArgument => InferError::BadInput(error.message().to_owned()),
        _ => InferError::Internal(error.message().to_owned()),
    }
}

/// Maps an ONNX Runtime load error to a failure reason. ONNX Runtime reports a missing operator in three shapes:
/// an unknown domain ("Fatal error: domain:Op(-1) is not a registered function/op"), an unknown operator of a known
/// domain ("No Op registered for Op with domain_version of N"), and an operator without a kernel for the opset
/// ("Could not find an implementation for Op(N) node with name ...").
pub fn classify_load_error(code: ErrorCode, message: &str) -> Failure {
    if let Some(operator) = between(message, "Fatal error: ", " is not a registered function/op") {
        let operator = operator.split('(').next().unwrap_or(operator);
        return Failure::unsupported_operator(
            operator,
            format!("operator {operator} is not implemented by ONNX Runtime: {message}"),
        );
    }
    if let Some(operator) = between(message, "No Op registered for ", " with domain_version") {
        return Failure::unsupported_operator(
            operator,
            format!("operator {operator} is not implemented by ONNX Runtime: {message}"),
        );
    }
    if let Some(operator) = between(message, "Could not find an implementation for ", " node") {
        let name = operator.split('(').next().unwrap_or(operator);
        return Failure::unsupported_operator(
            name,
            format!("operator {operator} has no ONNX Runtime kernel: {message}"),
        );
    }
    let format_markers = [
        "Unsupported model IR version",
        "official released onnx opset versions",
        "is under development",
    ];
    if format_markers.iter().any(|m| message.contains(m)) {
        return Failure::new(
            Reason::UnsupportedFormat,
            format!("model version not supported: {message}"),
        );
    }
    Failure::new(
        Reason::CorruptModel,
        format!("cannot load the model ({code:?}): {message}"),
    )
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = from + text[from..].find(end)?;
    let found = text[from..to].trim();
    (!found.is_empty() && !found.contains(' ')).then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shape_of_missing_operator_names_it() {
        let cases = [
            (
                ErrorCode::GenericFailure,
                "Fatal error: ferry.example:Frobnicate(-1) is not a registered function/op",
                "ferry.example:Frobnicate",
            ),
            (
                ErrorCode::InvalidGraph,
                r#"This is an invalid model. In Node, ("", NotARealOp, "", -1) : ("x": tensor(float),) -> ("y": tensor(float),) , Error No Op registered for NotARealOp with domain_version of 17"#,
                "NotARealOp",
            ),
            (
                ErrorCode::NotImplemented,
                "Could not find an implementation for Relu(1) node with name ''",
                "Relu",
            ),
        ];
        for (code, message, operator) in cases {
            let f = classify_load_error(code, message);
            assert_eq!(f.reason, Reason::UnsupportedOperator, "{message}");
            assert_eq!(f.operator.as_deref(), Some(operator), "{message}");
            assert!(f.message.contains(message), "{f}");
        }
    }

    #[test]
    fn too_new_ir_or_opset_is_an_unsupported_format() {
        for message in [
            "model.cc:256 Unsupported model IR version: 99, max supported IR version: 13",
            "ONNX Runtime only *guarantees* support for models stamped with official released onnx opset versions. Opset 27 is under development",
        ] {
            assert_eq!(classify_load_error(ErrorCode::GenericFailure, message).reason, Reason::UnsupportedFormat);
        }
    }

    #[test]
    fn anything_else_is_a_corrupt_model() {
        let f = classify_load_error(
            ErrorCode::InvalidProtobuf,
            "Failed to load model because protobuf parsing failed.",
        );
        assert_eq!(f.reason, Reason::CorruptModel);
        assert_eq!(f.operator, None);
    }

    #[test]
    fn pool_is_sized_by_cpus_and_capped_by_model_size() {
        let auto = PoolSettings::default();
        assert_eq!(auto.resolve(4, 1_000), (4, 1));
        assert_eq!(auto.resolve(4, 1 << 30), (1, 4));
        assert_eq!(auto.resolve(8, 300 << 20), (3, 2));
        assert_eq!(auto.resolve(1, 0), (1, 1));
        let fixed = PoolSettings {
            sessions: Some(2),
            intra_op_threads: Some(3),
        };
        assert_eq!(fixed.resolve(16, 1_000), (2, 3));
    }
}
