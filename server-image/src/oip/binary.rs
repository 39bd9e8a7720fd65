//! The binary tensor data extension (Triton's `binary_tensor_data`, what `tritonclient.http` sends by default).
//!
//! ```text
//!   body:  [ JSON header: Inference-Header-Content-Length bytes ][ input 1 bytes ][ input 2 bytes ] ...
//!           inputs with parameters.binary_data_size take their bytes from the tail, in request order
//! ```
//!
//! Elements are little-endian in row-major order; BOOL is one byte (0 or 1); each BYTES element is a 4-byte
//! little-endian length followed by that many bytes. Responses use the same layout for the outputs asked for with
//! `binary_data` (or all of them with `binary_data_output`). The same raw form is gRPC's `raw_input_contents` and
//! `raw_output_contents`.

use serde_json::{Map, Value};

use crate::runtime::{DataType, TensorData};

/// Request and response header: the length of the JSON part of the body.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";
/// Input (and response output) parameter: the number of raw bytes of this tensor.
pub const BINARY_DATA_SIZE: &str = "binary_data_size";
/// Output parameter: return this output as raw bytes.
pub const BINARY_DATA: &str = "binary_data";
/// Request parameter: return every output as raw bytes unless the output says otherwise.
pub const BINARY_DATA_OUTPUT: &str = "binary_data_output";

/// Splits a body into its JSON header and binary tail, given the `Inference-Header-Content-Length` value.
pub fn split<'a>(body: &'a [u8], header: &[u8]) -> Result<(&'a [u8], &'a [u8]), String> {
    let length: usize = std::str::from_utf8(header)
        .ok()
        .and_then(|h| h.trim().parse().ok())
        .ok_or_else(|| {
            format!(
                "Inference-Header-Content-Length must be a byte count, not {:?}",
                String::from_utf8_lossy(header)
            )
        })?;
    if length > body.len() {
        return Err(format!(
            "Inference-Header-Content-Length is {length} but the body has only {} bytes",
            body.len()
        ));
    }
    Ok(body.split_at(length))
}

/// An input's `binary_data_size`, if it has one.
pub fn size_parameter(
    input: &str,
    parameters: Option<&Map<String, Value>>,
) -> Result<Option<usize>, String> {
    let Some(value) = parameters.and_then(|p| p.get(BINARY_DATA_SIZE)) else {
        return Ok(None);
    };
    value
        .as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| {
            format!("input {input:?}: {BINARY_DATA_SIZE} must be a byte count, not {value}")
        })
}

/// A boolean parameter (`binary_data`, `binary_data_output`) of `owner`, if given.
pub fn flag_parameter(
    owner: &str,
    parameters: Option<&Map<String, Value>>,
    key: &str,
) -> Result<Option<bool>, String> {
    match parameters.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(other) => Err(format!(
            "{owner}: parameter {key} must be true or false, not {other}"
        )),
    }
}

/// The next `size` bytes of the binary tail for `input`.
pub fn take<'a>(input: &str, rest: &mut Option<&'a [u8]>, size: usize) -> Result<&'a [u8], String> {
    let Some(tail) = rest else {
        return Err(format!(
            "input {input:?} has {BINARY_DATA_SIZE} but the request has no Inference-Header-Content-Length header"
        ));
    };
    if size > tail.len() {
        return Err(format!(
            "input {input:?}: {BINARY_DATA_SIZE} is {size} but only {} bytes of binary data are left",
            tail.len()
        ));
    }
    let (mine, left) = tail.split_at(size);
    *rest = Some(left);
    Ok(mine)
}

/// `expected` elements of `datatype` from raw bytes; the size must be exactly what the shape needs.
pub fn from_raw(
    input: &str,
    datatype: DataType,
    bytes: &[u8],
    expected: usize,
) -> Result<TensorData, String> {
    let fixed = |size: usize| {
        if expected.checked_mul(size) == Some(bytes.len()) {
            return Ok(());
        }
        Err(format!(
            "input {input:?}: {expected} {} elements are {} bytes, the binary data has {}",
            datatype.as_str(),
            expected.saturating_mul(size),
            bytes.len()
        ))
    };
    fn each<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().unwrap_or([0; N])))
            .collect()
    }
    Ok(match datatype {
        DataType::Bytes => TensorData::Bytes(bytes_elements(input, bytes, expected)?),
        DataType::Bool => {
            fixed(1)?;
            TensorData::Bool(
                bytes
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| match b {
                        0 => Ok(false),
                        1 => Ok(true),
                        _ => Err(format!(
                            "input {input:?}: element {i} ({b}) is not a valid BOOL (0 or 1)"
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        DataType::Int32 => {
            fixed(4)?;
            TensorData::Int32(each(bytes, i32::from_le_bytes))
        }
        DataType::Int64 => {
            fixed(8)?;
            TensorData::Int64(each(bytes, i64::from_le_bytes))
        }
        DataType::Fp32 => {
            fixed(4)?;
            TensorData::Fp32(each(bytes, f32::from_le_bytes))
        }
        DataType::Fp64 => {
            fixed(8)?;
            TensorData::Fp64(each(bytes, f64::from_le_bytes))
        }
    })
}

/// Length-prefixed BYTES elements; each must be UTF-8 (the model's strings) and they must fill `bytes` exactly.
fn bytes_elements(input: &str, mut bytes: &[u8], expected: usize) -> Result<Vec<String>, String> {
    let mut elements = Vec::with_capacity(expected.min(bytes.len() / 4));
    while !bytes.is_empty() {
        let i = elements.len();
        let Some((prefix, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(format!(
                "input {input:?}: element {i} has a truncated 4-byte length ({} bytes left)",
                bytes.len()
            ));
        };
        let length = u32::from_le_bytes(*prefix) as usize;
        if length > rest.len() {
            return Err(format!(
                "input {input:?}: element {i} is {length} bytes long but only {} bytes are left",
                rest.len()
            ));
        }
        let (element, rest) = rest.split_at(length);
        let text = std::str::from_utf8(element)
            .map_err(|_| format!("input {input:?}: element {i} is not valid UTF-8"))?;
        if elements.len() == expected {
            return Err(format!(
                "input {input:?}: the binary data holds more than the {expected} BYTES elements of its shape"
            ));
        }
        elements.push(text.to_owned());
        bytes = rest;
    }
    Ok(elements)
}

/// Appends the raw form of `data` to `out`.
pub fn to_raw(data: &TensorData, out: &mut Vec<u8>) {
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        TensorData::Int32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Int64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Fp32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Fp64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Bytes(v) => v.iter().for_each(|s| {
            // Strings come from the model; none reaches 4 GiB (the request limit is far below).
            let length = u32::try_from(s.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&length.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oip::{decode_with_binary, encode, response_body, RequestedOutput};
    use crate::runtime::{Signature, Tensor, TensorSpec};

    /// The JSON tests' model, with a BYTES input `text` as well.
    fn signature() -> Signature {
        let mut signature = crate::oip::tests::signature();
        signature.inputs.push(TensorSpec {
            name: "text".into(),
            datatype: DataType::Bytes,
            shape: vec![-1],
        });
        signature
    }

    fn f32s(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn strings(values: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        to_raw(
            &TensorData::Bytes(values.iter().map(|s| s.to_string()).collect()),
            &mut out,
        );
        out
    }

    /// A body as tritonclient builds it: the JSON header, then the tail; decoded through `split`.
    fn request(header: Value, tail: &[u8]) -> Result<crate::oip::Decoded, String> {
        let json = header.to_string();
        let mut body = json.clone().into_bytes();
        body.extend_from_slice(tail);
        let (json, tail) = split(&body, json.len().to_string().as_bytes())?;
        decode_with_binary(json, Some(tail), &signature())
    }

    fn input(name: &str, shape: Value, datatype: &str, size: usize) -> Value {
        serde_json::json!({"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}})
    }

    #[test]
    fn binary_and_json_inputs_mix_and_decode_like_json() {
        let mut tail = f32s(&[1.0, 2.5, 3.0, 4.0]);
        tail.extend(strings(&["a", "héllo"]));
        let decoded = request(
            serde_json::json!({
                "id": "7",
                "inputs": [
                    input("x", serde_json::json!([2, 2]), "FP32", 16),
                    {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [true, false]},
                    input("text", serde_json::json!([2]), "BYTES", 4 + 1 + 4 + 6),
                ],
                "outputs": [{"name": "label", "parameters": {"binary_data": true}}, {"name": "probabilities"}],
            }),
            &tail,
        )
        .unwrap();
        assert_eq!(
            decoded.inputs[0].data,
            TensorData::Fp32(vec![1.0, 2.5, 3.0, 4.0])
        );
        assert_eq!(decoded.inputs[1].data, TensorData::Bool(vec![true, false]));
        assert_eq!(
            decoded.inputs[2].data,
            TensorData::Bytes(vec!["a".into(), "héllo".into()])
        );
        assert_eq!(
            decoded.outputs,
            Some(vec![
                RequestedOutput {
                    name: "label".into(),
                    binary: true
                },
                RequestedOutput {
                    name: "probabilities".into(),
                    binary: false
                },
            ])
        );
    }

    #[test]
    fn binary_data_output_makes_every_output_raw_unless_an_output_says_otherwise() {
        let header = |outputs: Value| {
            serde_json::json!({
                "parameters": {"binary_data_output": true},
                "inputs": [
                    {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
                    {"name": "flag", "shape": [1], "datatype": "BOOL", "data": [true]},
                    {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]},
                ],
                "outputs": outputs,
            })
        };
        let all = decode_with_binary(
            header(serde_json::json!(null)).to_string().as_bytes(),
            None,
            &signature(),
        )
        .unwrap();
        assert!(all.binary_outputs);
        assert_eq!(all.outputs, None);
        let one = decode_with_binary(
            header(serde_json::json!([{"name": "label", "parameters": {"binary_data": false}}, {"name": "probabilities"}]))
                .to_string()
                .as_bytes(),
            None,
            &signature(),
        )
        .unwrap();
        assert_eq!(
            one.outputs
                .unwrap()
                .iter()
                .map(|o| o.binary)
                .collect::<Vec<_>>(),
            vec![false, true]
        );
    }

    #[test]
    fn binary_outputs_follow_the_json_with_their_sizes() {
        let tensors = vec![
            Tensor {
                name: "label".into(),
                shape: vec![2],
                data: TensorData::Int64(vec![1, -2]),
            },
            Tensor {
                name: "probabilities".into(),
                shape: vec![2, 2],
                data: TensorData::Fp32(vec![0.25, 0.75, 0.5, 0.5]),
            },
        ];
        let selected = [
            RequestedOutput {
                name: "label".into(),
                binary: true,
            },
            RequestedOutput {
                name: "probabilities".into(),
                binary: false,
            },
        ];
        let (body, header) =
            response_body(encode("m", "1", None, tensors, Some(&selected), false)).unwrap();
        let header = header.expect("a binary output sets the header length");
        let json: Value = serde_json::from_slice(&body[..header]).unwrap();
        assert_eq!(
            json["outputs"][0],
            serde_json::json!({"name": "label", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}})
        );
        assert_eq!(
            json["outputs"][1]["data"],
            serde_json::json!([0.25, 0.75, 0.5, 0.5])
        );
        let raw: Vec<u8> = [1i64, -2].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(&body[header..], &raw[..]);

        let json_only = response_body(encode(
            "m",
            "1",
            None,
            vec![Tensor {
                name: "label".into(),
                shape: vec![1],
                data: TensorData::Int64(vec![3]),
            }],
            None,
            false,
        ))
        .unwrap();
        assert_eq!(json_only.1, None);
    }

    #[test]
    fn raw_round_trips_every_datatype() {
        let cases = [
            (DataType::Bool, TensorData::Bool(vec![true, false, true])),
            (
                DataType::Int32,
                TensorData::Int32(vec![i32::MIN, 0, i32::MAX]),
            ),
            (
                DataType::Int64,
                TensorData::Int64(vec![i64::MIN, 7, i64::MAX]),
            ),
            (DataType::Fp32, TensorData::Fp32(vec![-1.5, 0.0, f32::MAX])),
            (DataType::Fp64, TensorData::Fp64(vec![-1.5, 1e300, 2.0])),
            (
                DataType::Bytes,
                TensorData::Bytes(vec!["".into(), "ab".into(), "ü".into()]),
            ),
        ];
        for (datatype, data) in cases {
            let mut raw = Vec::new();
            to_raw(&data, &mut raw);
            assert_eq!(
                from_raw("t", datatype, &raw, 3).unwrap(),
                data,
                "{datatype:?}"
            );
        }
    }

    #[test]
    fn malformed_binary_requests_are_rejected_with_a_reason() {
        let x = |size: usize| input("x", serde_json::json!([1, 2]), "FP32", size);
        let flag =
            serde_json::json!({"name": "flag", "shape": [1], "datatype": "BOOL", "data": [true]});
        let text =
            serde_json::json!({"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]});
        let two = f32s(&[1.0, 2.0]);
        let cases: Vec<(Value, Vec<u8>, &str)> = vec![
            // Sizes that do not add up to the tail.
            (
                serde_json::json!({"inputs": [x(8), flag, text]}),
                f32s(&[1.0, 2.0, 3.0]),
                "no binary_data_size covers them",
            ),
            (
                serde_json::json!({"inputs": [x(12), flag, text]}),
                two.clone(),
                "only 8 bytes of binary data are left",
            ),
            (
                serde_json::json!({"inputs": [flag, text, {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}),
                two.clone(),
                "no binary_data_size covers them",
            ),
            // A size that does not match shape x datatype.
            (
                serde_json::json!({"inputs": [x(4), flag, text]}),
                f32s(&[1.0]),
                "2 FP32 elements are 8 bytes, the binary data has 4",
            ),
            (
                serde_json::json!({"inputs": [input("x", serde_json::json!([1, 2]), "FP32", 8), input("flag", serde_json::json!([1]), "BOOL", 1), text]}),
                [two.clone(), vec![2]].concat(),
                "not a valid BOOL",
            ),
            // BYTES framing.
            (
                serde_json::json!({"inputs": [x(8), flag, input("text", serde_json::json!([1]), "BYTES", 3)]}),
                [two.clone(), vec![1, 0, 0]].concat(),
                "truncated 4-byte length",
            ),
            (
                serde_json::json!({"inputs": [x(8), flag, input("text", serde_json::json!([1]), "BYTES", 5)]}),
                [two.clone(), vec![9, 0, 0, 0, b'a']].concat(),
                "9 bytes long but only 1",
            ),
            (
                serde_json::json!({"inputs": [x(8), flag, input("text", serde_json::json!([1]), "BYTES", 10)]}),
                [two.clone(), strings(&["a", "b"])].concat(),
                "more than the 1 BYTES elements",
            ),
            (
                serde_json::json!({"inputs": [x(8), flag, input("text", serde_json::json!([2]), "BYTES", 5)]}),
                [two.clone(), strings(&["a"])].concat(),
                "needs 2 elements, the data has 1",
            ),
            (
                serde_json::json!({"inputs": [x(8), flag, input("text", serde_json::json!([1]), "BYTES", 5)]}),
                [two.clone(), vec![1, 0, 0, 0, 0xff]].concat(),
                "not valid UTF-8",
            ),
            // Parameters of the wrong kind.
            (
                serde_json::json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": -8}}, flag, text]}),
                two.clone(),
                "must be a byte count",
            ),
            (
                serde_json::json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2], "parameters": {"binary_data_size": 8}}, flag, text]}),
                two.clone(),
                "both data and",
            ),
            (
                serde_json::json!({"inputs": [x(8), flag, text], "outputs": [{"name": "label", "parameters": {"binary_data": "yes"}}]}),
                two.clone(),
                "must be true or false",
            ),
            (
                serde_json::json!({"inputs": [x(8), flag, text], "parameters": {"binary_data_output": 1}}),
                two.clone(),
                "must be true or false",
            ),
        ];
        for (header, tail, expected) in cases {
            let error = request(header.clone(), &tail).unwrap_err();
            assert!(error.contains(expected), "{header}: {error}");
        }
    }

    #[test]
    fn the_header_length_must_be_a_count_within_the_body() {
        assert!(split(b"{}", b"3").unwrap_err().contains("only 2 bytes"));
        assert!(split(b"{}", b"-1").unwrap_err().contains("byte count"));
        assert!(split(b"{}", b"\xff").unwrap_err().contains("byte count"));
        assert_eq!(split(b"{}xy", b" 2 ").unwrap(), (&b"{}"[..], &b"xy"[..]));
        // A binary size without the header.
        let header =
            serde_json::json!({"inputs": [input("x", serde_json::json!([1, 2]), "FP32", 8)]});
        let error =
            decode_with_binary(header.to_string().as_bytes(), None, &signature()).unwrap_err();
        assert!(
            error.contains("no Inference-Header-Content-Length"),
            "{error}"
        );
        // A header length that cuts the JSON short.
        let body = br#"{"inputs": []}"#;
        let (json, tail) = split(body, b"5").unwrap();
        let error = decode_with_binary(json, Some(tail), &signature()).unwrap_err();
        assert!(error.starts_with("invalid inference request"), "{error}");
    }
}
