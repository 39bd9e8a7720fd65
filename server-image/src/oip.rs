//! Open Inference Protocol v2: decoding requests against the model's signature and encoding responses, for REST
//! (JSON tensors, and raw tensors through the binary tensor data extension in `binary`) and for gRPC (`grpc`
//! builds the same `InputTensor`s). Pure functions; every rejection is a message for a 400 (INVALID_ARGUMENT).

pub mod binary;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runtime::{DataType, Signature, Tensor, TensorData, TensorSpec};

#[derive(Debug, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
    pub inputs: Vec<RequestInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

#[derive(Debug, Deserialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

/// An input as a request carries it, before it is checked against the model.
pub struct InputTensor<'a> {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub elements: Option<Elements<'a>>,
}

/// Where an input's elements are: JSON values, raw little-endian bytes (binary extension, gRPC
/// `raw_input_contents`), or typed values (gRPC `contents`), read only once datatype and shape are checked, so
/// each protocol reports the same first mistake.
pub enum Elements<'a> {
    Json(Value),
    Raw(&'a [u8]),
    Typed(Box<dyn FnOnce(DataType) -> Result<TensorData, String> + 'a>),
}

/// An output the request asks for; `binary` when it wants the raw bytes (binary extension) instead of JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedOutput {
    pub name: String,
    pub binary: bool,
}

/// A request checked against the model: inputs in the model's order, the outputs asked for (all if `None`), and
/// whether outputs not named are returned as raw bytes.
#[derive(Debug)]
pub struct Decoded {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    pub outputs: Option<Vec<RequestedOutput>>,
    pub binary_outputs: bool,
}

#[derive(Debug, Serialize)]
pub struct InferResponse<'a> {
    pub model_name: &'a str,
    pub model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<ResponseOutput>,
}

#[derive(Debug, Serialize)]
pub struct ResponseOutput {
    pub name: String,
    pub shape: Vec<usize>,
    pub datatype: DataType,
    /// `{"binary_data_size": n}` when the data follows the JSON as raw bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<TensorData>,
    #[serde(skip)]
    pub binary: bool,
}

#[derive(Debug, Serialize)]
pub struct ModelMetadata<'a> {
    pub name: &'a str,
    pub versions: Vec<&'a str>,
    pub platform: &'a str,
    pub inputs: &'a [TensorSpec],
    pub outputs: &'a [TensorSpec],
}

/// A REST request body: JSON, or with `header` (the `Inference-Header-Content-Length` value) the binary tensor
/// data extension's JSON header and binary tail.
pub fn decode_body(
    body: &[u8],
    header: Option<&[u8]>,
    signature: &Signature,
) -> Result<Decoded, String> {
    match header {
        None => decode(body, signature),
        Some(header) => binary::split(body, header)
            .and_then(|(json, tail)| decode_with_binary(json, Some(tail), signature)),
    }
}

/// A JSON request without binary data.
pub fn decode(body: &[u8], signature: &Signature) -> Result<Decoded, String> {
    decode_with_binary(body, None, signature)
}

/// A JSON request whose inputs with a `binary_data_size` parameter take their bytes, in order, from `binary`
/// (the body after `Inference-Header-Content-Length` bytes of JSON; `None` without that header).
pub fn decode_with_binary(
    json: &[u8],
    binary: Option<&[u8]>,
    signature: &Signature,
) -> Result<Decoded, String> {
    let request: InferRequest =
        serde_json::from_slice(json).map_err(|e| format!("invalid inference request: {e}"))?;
    let mut rest = binary;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        let size = binary::size_parameter(&input.name, input.parameters.as_ref())?;
        let elements = match (size, input.data) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "input {:?} has both data and a binary_data_size parameter",
                    input.name
                ))
            }
            (Some(size), None) => Some(Elements::Raw(binary::take(&input.name, &mut rest, size)?)),
            (None, data) => data.map(Elements::Json),
        };
        inputs.push(InputTensor {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            elements,
        });
    }
    if let Some(left) = rest.filter(|r| !r.is_empty()) {
        return Err(format!(
            "{} bytes of binary data follow the JSON header but no binary_data_size covers them",
            left.len()
        ));
    }
    let request_parameters = request.parameters.as_ref();
    let binary_outputs =
        binary::flag_parameter("request", request_parameters, binary::BINARY_DATA_OUTPUT)?
            .unwrap_or(false);
    let outputs = request
        .outputs
        .map(|outputs| {
            outputs
                .into_iter()
                .map(|o| {
                    let binary = binary::flag_parameter(
                        &format!("output {:?}", o.name),
                        o.parameters.as_ref(),
                        binary::BINARY_DATA,
                    )?
                    .unwrap_or(binary_outputs);
                    Ok(RequestedOutput {
                        name: o.name,
                        binary,
                    })
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .transpose()?;
    Ok(Decoded {
        id: request.id,
        inputs: assemble(inputs, signature)?,
        outputs: outputs
            .map(|outputs| check_outputs(outputs, signature))
            .transpose()?,
        binary_outputs,
    })
}

/// Checks every input against the model and puts them in the model's order.
pub fn assemble(inputs: Vec<InputTensor>, signature: &Signature) -> Result<Vec<Tensor>, String> {
    if inputs.is_empty() {
        return Err("the request has no inputs".to_owned());
    }
    let mut slots: Vec<Option<Tensor>> = vec![None; signature.inputs.len()];
    for input in inputs {
        let position = signature
            .inputs
            .iter()
            .position(|spec| spec.name == input.name)
            .ok_or_else(|| {
                format!(
                    "unknown input {:?}; the model's inputs are {}",
                    input.name,
                    names(&signature.inputs)
                )
            })?;
        if slots[position].is_some() {
            return Err(format!("input {:?} is given twice", input.name));
        }
        slots[position] = Some(decode_input(input, &signature.inputs[position])?);
    }
    slots
        .into_iter()
        .zip(&signature.inputs)
        .map(|(slot, spec)| slot.ok_or_else(|| format!("input {:?} is missing", spec.name)))
        .collect()
}

/// Every requested output must be one the model has.
pub fn check_outputs(
    outputs: Vec<RequestedOutput>,
    signature: &Signature,
) -> Result<Vec<RequestedOutput>, String> {
    for output in &outputs {
        if !signature
            .outputs
            .iter()
            .any(|spec| spec.name == output.name)
        {
            return Err(format!(
                "unknown output {:?}; the model's outputs are {}",
                output.name,
                names(&signature.outputs)
            ));
        }
    }
    Ok(outputs)
}

fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{:?}", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn decode_input(input: InputTensor, spec: &TensorSpec) -> Result<Tensor, String> {
    let name = &input.name;
    let datatype = DataType::from_name(&input.datatype).ok_or_else(|| {
        format!(
            "input {name:?}: datatype {:?} is not supported (use {})",
            input.datatype,
            crate::contract::capabilities::DATATYPES.join(", ")
        )
    })?;
    if datatype != spec.datatype {
        return Err(format!(
            "input {name:?} has datatype {}, the model expects {}",
            datatype.as_str(),
            spec.datatype.as_str()
        ));
    }
    let shape = check_shape(name, &input.shape, &spec.shape)?;
    let expected: usize = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("input {name:?}: shape {:?} is too large", input.shape))?;
    let data = match input.elements {
        None => {
            return Err(format!(
                "input {name:?} has no data (neither data nor binary data)"
            ))
        }
        Some(Elements::Json(data)) => json_elements(name, &input.shape, datatype, &data, expected)?,
        Some(Elements::Raw(bytes)) => binary::from_raw(name, datatype, bytes, expected)?,
        Some(Elements::Typed(read)) => read(datatype)?,
    };
    if data.len() != expected {
        return Err(count_mismatch(name, &input.shape, expected, data.len()));
    }
    Ok(Tensor {
        name: input.name,
        shape,
        data,
    })
}

fn count_mismatch(name: &str, shape: &[i64], expected: usize, got: usize) -> String {
    format!("input {name:?}: shape {shape:?} needs {expected} elements, the data has {got}")
}

fn json_elements(
    name: &str,
    shape: &[i64],
    datatype: DataType,
    data: &Value,
    expected: usize,
) -> Result<TensorData, String> {
    let mut elements = Vec::with_capacity(expected.min(1 << 20));
    flatten(data, &mut elements);
    if elements.len() != expected {
        return Err(count_mismatch(name, shape, expected, elements.len()));
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(convert(name, datatype, &elements, Value::as_bool)?),
        DataType::Int32 => TensorData::Int32(convert(name, datatype, &elements, |v| {
            v.as_i64().and_then(|i| i32::try_from(i).ok())
        })?),
        DataType::Int64 => TensorData::Int64(convert(name, datatype, &elements, Value::as_i64)?),
        DataType::Fp32 => TensorData::Fp32(convert(name, datatype, &elements, |v| {
            v.as_f64().map(|f| f as f32).filter(|f| f.is_finite())
        })?),
        DataType::Fp64 => TensorData::Fp64(convert(name, datatype, &elements, Value::as_f64)?),
        DataType::Bytes => TensorData::Bytes(convert(name, datatype, &elements, |v| {
            v.as_str().map(str::to_owned)
        })?),
    })
}

/// The request's shape must have the model's rank, match every fixed dimension and have no empty dimension.
fn check_shape(name: &str, shape: &[i64], expected: &[i64]) -> Result<Vec<usize>, String> {
    let mismatch = || {
        format!("input {name:?} has shape {shape:?}, the model expects {expected:?} (-1: any size)")
    };
    if shape.len() != expected.len() {
        return Err(mismatch());
    }
    shape
        .iter()
        .zip(expected)
        .map(|(&got, &want)| {
            if got < 1 {
                return Err(format!(
                    "input {name:?}: shape {shape:?} has a dimension smaller than 1"
                ));
            }
            if want >= 0 && got != want {
                return Err(mismatch());
            }
            usize::try_from(got).map_err(|_| mismatch())
        })
        .collect()
}

/// Row-major elements of flat or nested `data` (serde_json caps nesting at 128 levels, so recursion is bounded).
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other),
    }
}

fn convert<T>(
    name: &str,
    datatype: DataType,
    elements: &[&Value],
    each: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>, String> {
    elements
        .iter()
        .enumerate()
        .map(|(i, v)| {
            each(v).ok_or_else(|| {
                format!(
                    "input {name:?}: element {i} ({v}) is not a valid {}",
                    datatype.as_str()
                )
            })
        })
        .collect()
}

/// The response with the requested outputs (all when none were named), in the model's order; an output is raw
/// bytes when the request asked so for it (or for every output with `binary_data_output`).
pub fn encode<'a>(
    model_name: &'a str,
    model_version: &'a str,
    id: Option<String>,
    tensors: Vec<Tensor>,
    selected: Option<&[RequestedOutput]>,
    binary_outputs: bool,
) -> InferResponse<'a> {
    let outputs = tensors
        .into_iter()
        .filter_map(|t| {
            let binary = match selected {
                None => binary_outputs,
                Some(selected) => selected.iter().find(|o| o.name == t.name)?.binary,
            };
            Some(ResponseOutput {
                datatype: t.data.datatype(),
                name: t.name,
                shape: t.shape,
                parameters: None,
                data: Some(t.data),
                binary,
            })
        })
        .collect();
    InferResponse {
        model_name,
        model_version,
        id,
        outputs,
    }
}

/// The response body: the JSON, then the raw bytes of every binary output in order. The JSON's length is returned
/// when raw bytes follow, for the `Inference-Header-Content-Length` header.
pub fn response_body(mut response: InferResponse) -> Result<(Vec<u8>, Option<usize>), String> {
    let mut raw = Vec::new();
    for output in response.outputs.iter_mut().filter(|o| o.binary) {
        if let Some(data) = output.data.take() {
            let before = raw.len();
            binary::to_raw(&data, &mut raw);
            output.parameters =
                Some(serde_json::json!({ binary::BINARY_DATA_SIZE: raw.len() - before }));
        }
    }
    let mut body = serde_json::to_vec(&response).map_err(|e| e.to_string())?;
    if response.outputs.iter().any(|o| o.binary) {
        let header = body.len();
        body.extend_from_slice(&raw);
        Ok((body, Some(header)))
    } else {
        Ok((body, None))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An FP32 input `x` [-1, 2] and a BOOL input `flag`; outputs `label` and `probabilities`.
    pub(crate) fn signature() -> Signature {
        Signature {
            inputs: vec![
                TensorSpec {
                    name: "x".into(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, 2],
                },
                TensorSpec {
                    name: "flag".into(),
                    datatype: DataType::Bool,
                    shape: vec![-1],
                },
            ],
            outputs: vec![
                TensorSpec {
                    name: "label".into(),
                    datatype: DataType::Int64,
                    shape: vec![-1],
                },
                TensorSpec {
                    name: "probabilities".into(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, 2],
                },
            ],
        }
    }

    fn decode_json(value: Value) -> Result<Decoded, String> {
        decode(value.to_string().as_bytes(), &signature())
    }

    #[test]
    fn nested_and_flat_data_decode_to_the_same_tensor_in_model_order() {
        let nested = decode_json(serde_json::json!({
            "id": "42",
            "inputs": [
                {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [true, false]},
                {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2.5], [3, 4]]}
            ],
            "outputs": [{"name": "label"}]
        }))
        .unwrap();
        let flat = decode_json(serde_json::json!({
            "inputs": [
                {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2.5, 3, 4]},
                {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [true, false]}
            ]
        }))
        .unwrap();
        assert_eq!(nested.inputs, flat.inputs);
        assert_eq!(nested.inputs[0].name, "x");
        assert_eq!(nested.inputs[0].shape, vec![2, 2]);
        assert_eq!(
            nested.inputs[0].data,
            TensorData::Fp32(vec![1.0, 2.5, 3.0, 4.0])
        );
        assert_eq!(nested.id.as_deref(), Some("42"));
        assert_eq!(
            nested.outputs,
            Some(vec![RequestedOutput {
                name: "label".to_owned(),
                binary: false
            }])
        );
        assert_eq!(flat.outputs, None);
    }

    #[test]
    fn malformed_requests_are_rejected_with_a_reason() {
        let x = |shape: Value, datatype: &str, data: Value| serde_json::json!({"name": "x", "shape": shape, "datatype": datatype, "data": data});
        let flag =
            serde_json::json!({"name": "flag", "shape": [1], "datatype": "BOOL", "data": [true]});
        let cases = [
            (serde_json::json!({"inputs": []}), "no inputs"),
            (serde_json::json!({"inputs": [flag]}), "missing"),
            (
                serde_json::json!({"inputs": [x(serde_json::json!([1, 2]), "FP32", serde_json::json!([1, 2])), flag, flag]}),
                "twice",
            ),
            (
                serde_json::json!({"inputs": [x(serde_json::json!([1, 2]), "FP64", serde_json::json!([1, 2])), flag]}),
                "expects FP32",
            ),
            (
                serde_json::json!({"inputs": [x(serde_json::json!([1, 2]), "FP16", serde_json::json!([1, 2])), flag]}),
                "not supported",
            ),
            (
                serde_json::json!({"inputs": [x(serde_json::json!([1, 3]), "FP32", serde_json::json!([1, 2, 3])), flag]}),
                "expects [-1, 2]",
            ),
            (
                serde_json::json!({"inputs": [x(serde_json::json!([2]), "FP32", serde_json::json!([1, 2])), flag]}),
                "expects [-1, 2]",
            ),
            (
                serde_json::json!({"inputs": [x(serde_json::json!([0, 2]), "FP32", serde_json::json!([])), flag]}),
                "smaller than 1",
            ),
            (
                serde_json::json!({"inputs": [x(serde_json::json!([2, 2]), "FP32", serde_json::json!([1, 2, 3])), flag]}),
                "needs 4 elements",
            ),
            (
                serde_json::json!({"inputs": [x(serde_json::json!([1, 2]), "FP32", serde_json::json!(["a", 2])), flag]}),
                "element 0",
            ),
            (
                serde_json::json!({"inputs": [x(serde_json::json!([1, 2]), "FP32", serde_json::json!([1e300, 2])), flag]}),
                "not a valid FP32",
            ),
            (
                serde_json::json!({"inputs": [x(serde_json::json!([1, 2]), "FP32", serde_json::json!([1, 2])), flag], "outputs": [{"name": "nope"}]}),
                "unknown output",
            ),
            (
                serde_json::json!({"inputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [1]}]}),
                "unknown input",
            ),
            (
                serde_json::json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32"}, flag]}),
                "no data",
            ),
        ];
        for (request, expected) in cases {
            let error = decode_json(request.clone()).unwrap_err();
            assert!(error.contains(expected), "{request}: {error}");
        }
        assert!(decode(b"{not json", &signature())
            .unwrap_err()
            .starts_with("invalid inference request"));
    }

    #[test]
    fn integer_and_bool_elements_are_range_checked() {
        let sig = Signature {
            inputs: vec![TensorSpec {
                name: "i".into(),
                datatype: DataType::Int32,
                shape: vec![-1],
            }],
            outputs: vec![],
        };
        let request = |data: Value| {
            serde_json::json!({"inputs": [{"name": "i", "shape": [1], "datatype": "INT32", "data": data}]}).to_string()
        };
        assert!(decode(request(serde_json::json!([2147483647])).as_bytes(), &sig).is_ok());
        assert!(decode(request(serde_json::json!([2147483648i64])).as_bytes(), &sig).is_err());
        assert!(decode(request(serde_json::json!([1.5])).as_bytes(), &sig).is_err());
        assert!(decode(request(serde_json::json!([true])).as_bytes(), &sig).is_err());
    }

    #[test]
    fn responses_keep_the_selected_outputs_and_echo_the_id() {
        let tensors = vec![
            Tensor {
                name: "label".into(),
                shape: vec![1],
                data: TensorData::Int64(vec![1]),
            },
            Tensor {
                name: "probabilities".into(),
                shape: vec![1, 2],
                data: TensorData::Fp32(vec![0.25, 0.75]),
            },
        ];
        let response = encode(
            "iris",
            "3",
            Some("req-1".into()),
            tensors,
            Some(&[RequestedOutput {
                name: "probabilities".to_owned(),
                binary: false,
            }]),
            false,
        );
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            serde_json::json!({
                "model_name": "iris", "model_version": "3", "id": "req-1",
                "outputs": [{"name": "probabilities", "shape": [1, 2], "datatype": "FP32", "data": [0.25, 0.75]}]
            })
        );
    }
}
