//! The entry points shared by the fuzz targets (`server-image/fuzz`) and by the test that replays their corpus
//! (`tests/fuzz_corpus.rs`): each feeds bytes from a request through the code that request reaches, against a
//! model with an input of every datatype, and returns instead of panicking, whatever the bytes.

use prost::Message;

use crate::grpc::proto::ModelInferRequest;
use crate::oip::{self, Decoded};
use crate::runtime::{DataType, Signature, Tensor, TensorSpec};

/// A model with one input of each datatype, fixed and dynamic dimensions, and one output.
pub fn signature() -> Signature {
    let spec = |name: &str, datatype, shape: &[i64]| TensorSpec {
        name: name.to_owned(),
        datatype,
        shape: shape.to_vec(),
    };
    Signature {
        inputs: vec![
            spec("x", DataType::Fp32, &[-1, 4]),
            spec("flag", DataType::Bool, &[-1]),
            spec("text", DataType::Bytes, &[-1]),
            spec("count", DataType::Int32, &[2, -1]),
            spec("id", DataType::Int64, &[-1]),
            spec("weight", DataType::Fp64, &[-1, 1]),
        ],
        outputs: vec![spec("y", DataType::Fp32, &[-1])],
    }
}

/// A REST body of JSON tensors.
pub fn json_request(data: &[u8]) -> Result<Decoded, String> {
    oip::decode(data, &signature()).map(echo)
}

/// A REST body with the binary extension: `data` is the `Inference-Header-Content-Length` value, a newline, and
/// the body (no newline: no header).
pub fn binary_request(data: &[u8]) -> Result<Decoded, String> {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        None => (None, data),
        Some(newline) => (Some(&data[..newline]), &data[newline + 1..]),
    };
    oip::decode_body(body, header, &signature()).map(echo)
}

/// A serialized gRPC `ModelInferRequest`.
pub fn grpc_request(data: &[u8]) -> Result<Decoded, String> {
    let request = ModelInferRequest::decode(data).map_err(|e| e.to_string())?;
    crate::grpc::decode(&request, &signature()).map(echo)
}

/// Encodes the decoded inputs as if the model returned them, every output raw, so the response encoding is
/// exercised with whatever tensors a request can produce.
fn echo(decoded: Decoded) -> Decoded {
    let tensors: Vec<Tensor> = decoded.inputs.clone();
    let response = oip::encode("fuzz", "1", decoded.id.clone(), tensors, None, true);
    let _ = oip::response_body(response);
    decoded
}
