//! The model runtime seam: what the HTTP layer needs from a loaded model, independent of the engine.
//!
//! A `Runtime` turns a verified file into a `Model`; a `Model` describes its inputs and outputs (taken from the
//! model itself, never configured) and runs inference on whole tensors. `infer` blocks: callers run it on the
//! blocking thread pool, at most `concurrency()` at a time.

pub mod onnx;
pub mod python;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::failure::Failure;

/// Open Inference Protocol datatypes the server accepts and returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DataType {
    #[serde(rename = "BOOL")]
    Bool,
    #[serde(rename = "INT32")]
    Int32,
    #[serde(rename = "INT64")]
    Int64,
    #[serde(rename = "FP32")]
    Fp32,
    #[serde(rename = "FP64")]
    Fp64,
    #[serde(rename = "BYTES")]
    Bytes,
}

impl DataType {
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    pub fn from_name(name: &str) -> Option<DataType> {
        [
            DataType::Bool,
            DataType::Int32,
            DataType::Int64,
            DataType::Fp32,
            DataType::Fp64,
            DataType::Bytes,
        ]
        .into_iter()
        .find(|d| d.as_str() == name)
    }
}

/// One input or output as the model declares it. A dimension of -1 accepts any size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// The signature as `/status` shows it (and as `contract::compare_signatures` compares it).
    pub fn to_contract(&self) -> crate::contract::Signature {
        let specs = |specs: &[TensorSpec]| {
            specs
                .iter()
                .map(|s| crate::contract::TensorSpec {
                    name: s.name.clone(),
                    datatype: s.datatype.as_str().to_owned(),
                    shape: s.shape.iter().map(|&d| d.max(-1)).collect(),
                })
                .collect()
        };
        crate::contract::Signature {
            inputs: specs(&self.inputs),
            outputs: specs(&self.outputs),
        }
    }
}

/// Tensor elements in row-major order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TensorData {
    Bool(Vec<bool>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<String>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::Bool(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Fp32(v) => v.len(),
            TensorData::Fp64(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    /// `len` zero (or false, or empty) elements of `datatype`.
    pub fn zeros(datatype: DataType, len: usize) -> TensorData {
        match datatype {
            DataType::Bool => TensorData::Bool(vec![false; len]),
            DataType::Int32 => TensorData::Int32(vec![0; len]),
            DataType::Int64 => TensorData::Int64(vec![0; len]),
            DataType::Fp32 => TensorData::Fp32(vec![0.0; len]),
            DataType::Fp64 => TensorData::Fp64(vec![0.0; len]),
            DataType::Bytes => TensorData::Bytes(vec![String::new(); len]),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// An inference that failed: `BadInput` when the request is at fault (HTTP 400), `Internal` otherwise (500).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferError {
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Internal(String),
}

pub trait Model: Send + Sync {
    fn signature(&self) -> &Signature;

    /// How many `infer` calls may run at once without waiting for each other.
    fn concurrency(&self) -> usize;

    /// Runs the model on inputs already checked against `signature()`; returns every output.
    fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError>;

    /// Runs every internal session once on `synthetic_inputs`, so the first real request pays no set-up cost
    /// and a model that cannot run its own shape never becomes ready.
    fn warm_up(&self) -> Result<(), InferError>;

    /// Engine-specific facts for the model metadata (e.g. platform, opsets).
    fn platform(&self) -> &'static str;

    /// What the model file says about itself (producer, version, metadata, opsets), when the format has a header.
    fn metadata(&self) -> Option<&crate::contract::ModelMetadataView> {
        None
    }
}

pub trait Runtime: Send + Sync {
    /// Loads a verified model file of `size` bytes.
    fn load(&self, path: &Path, size: u64) -> Result<Box<dyn Model>, Failure>;
}

/// The runtimes this server has, by format (`FERRY_MODEL_FORMAT`).
#[derive(Clone, Default)]
pub struct Runtimes {
    by_format: Vec<(&'static str, Arc<dyn Runtime>)>,
}

impl Runtimes {
    pub fn with(mut self, format: &'static str, runtime: Arc<dyn Runtime>) -> Runtimes {
        self.by_format.push((format, runtime));
        self
    }

    pub fn get(&self, format: &str) -> Option<Arc<dyn Runtime>> {
        self.by_format
            .iter()
            .find(|(f, _)| *f == format)
            .map(|(_, r)| r.clone())
    }

    /// The formats served, in the order they were added.
    pub fn formats(&self) -> Vec<&'static str> {
        self.by_format.iter().map(|(f, _)| *f).collect()
    }
}

/// Zeros of each input's own datatype and shape, with every dynamic dimension set to 1.
pub fn synthetic_inputs(signature: &Signature) -> Vec<Tensor> {
    signature
        .inputs
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec
                .shape
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(1).max(1))
                .collect();
            let len = shape.iter().product();
            Tensor {
                name: spec.name.clone(),
                shape,
                data: TensorData::zeros(spec.datatype, len),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_inputs_follow_the_declared_shape_with_dynamic_dimensions_as_one() {
        let signature = Signature {
            inputs: vec![
                TensorSpec {
                    name: "x".into(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, 4],
                },
                TensorSpec {
                    name: "mask".into(),
                    datatype: DataType::Bool,
                    shape: vec![2, -1, 3],
                },
            ],
            outputs: vec![],
        };
        let inputs = synthetic_inputs(&signature);
        assert_eq!(inputs[0].shape, vec![1, 4]);
        assert_eq!(inputs[0].data, TensorData::Fp32(vec![0.0; 4]));
        assert_eq!(inputs[1].shape, vec![2, 1, 3]);
        assert_eq!(inputs[1].data, TensorData::Bool(vec![false; 6]));
    }

    #[test]
    fn datatype_names_round_trip() {
        for name in crate::contract::capabilities::DATATYPES {
            assert_eq!(DataType::from_name(name).map(DataType::as_str), Some(*name));
        }
        assert_eq!(DataType::from_name("FP16"), None);
    }
}
