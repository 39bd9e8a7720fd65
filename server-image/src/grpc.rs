//! The gRPC surface: the Open Inference Protocol's `inference.GRPCInferenceService` (KServe's
//! `grpc_predict_v2.proto`, vendored in `proto/`) on its own port.
//!
//! Every call goes through the same path as REST (`inference`): the same model resolution, the same session
//! permits, the same decoding checks (`oip::assemble`), the same metrics. A rejection keeps its REST message and
//! maps to the gRPC code of its kind. Inputs come as typed `contents` or as `raw_input_contents` (the binary
//! extension's layout); outputs always go back as `raw_output_contents`, as Triton sends them.

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use crate::contract::capabilities;
use crate::inference::{self, Kind, Rejection};
use crate::load::Served;
use crate::metrics::Metrics;
use crate::oip::{self, binary, Elements, InputTensor, RequestedOutput};
use crate::repository::Repository;
use crate::runtime::{DataType, Signature, TensorData, TensorSpec};

/// The code generated from `proto/grpc_predict_v2.proto`.
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::model_infer_response::InferOutputTensor;
use proto::model_metadata_response::TensorMetadata;
use proto::*;

impl From<Rejection> for Status {
    fn from(rejection: Rejection) -> Status {
        let code = match rejection.kind {
            Kind::BadRequest => Code::InvalidArgument,
            Kind::NotFound => Code::NotFound,
            Kind::Unavailable => Code::Unavailable,
            Kind::TooLarge => Code::ResourceExhausted,
            Kind::Internal => Code::Internal,
        };
        Status::new(code, rejection.message)
    }
}

pub struct InferenceService {
    pub repository: Arc<Repository>,
    pub metrics: Arc<Metrics>,
}

/// The service, accepting requests up to `max_request_bytes` like the REST port.
pub fn service(
    repository: Arc<Repository>,
    metrics: Arc<Metrics>,
    max_request_bytes: usize,
) -> GrpcInferenceServiceServer<InferenceService> {
    GrpcInferenceServiceServer::new(InferenceService {
        repository,
        metrics,
    })
    .max_decoding_message_size(max_request_bytes)
    .max_encoding_message_size(usize::MAX)
}

/// An empty version field means "whichever version serves", as a missing `/versions/{v}` does over REST.
fn version(version: &str) -> Option<&str> {
    Some(version).filter(|v| !v.is_empty())
}

fn tensor_metadata(specs: &[TensorSpec]) -> Vec<TensorMetadata> {
    specs
        .iter()
        .map(|spec| TensorMetadata {
            name: spec.name.clone(),
            datatype: spec.datatype.as_str().to_owned(),
            shape: spec.shape.clone(),
        })
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    /// A bool, where REST answers 503: the gRPC protocol carries readiness in the response.
    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.repository.is_ready(),
        }))
    }

    /// NOT_FOUND for another model or version (as REST's 404); `ready: false` while not ready (REST's 503).
    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let ready = match inference::model_ready(
            &self.repository,
            &request.name,
            version(&request.version),
        ) {
            Ok(()) => true,
            Err(rejection) if rejection.kind == Kind::Unavailable => false,
            Err(rejection) => return Err(rejection.into()),
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "ferry-server".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extensions: capabilities::EXTENSIONS
                .iter()
                .map(|e| (*e).to_owned())
                .collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let served =
            inference::resolve(&self.repository, &request.name, version(&request.version))?;
        let signature = served.model.signature();
        Ok(Response::new(ModelMetadataResponse {
            name: self.repository.name.clone(),
            versions: vec![served.spec.version.clone()],
            platform: served.model.platform().to_owned(),
            inputs: tensor_metadata(&signature.inputs),
            outputs: tensor_metadata(&signature.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let request = request.into_inner();
        let (name, model_version) = (request.model_name.clone(), request.model_version.clone());
        let response = inference::counted(
            &self.repository,
            &self.metrics,
            &name,
            version(&model_version),
            |served| inference::run(served, move |served| infer_grpc(served, request)),
        )
        .await?;
        Ok(Response::new(response))
    }

    /// Changing the served model is the admin port's business (it checks the admin credential); this port only
    /// serves inference.
    async fn repository_model_load(
        &self,
        _: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        Err(Status::unimplemented(
            "models are loaded through the admin port's /v2/repository/models/{name}/load",
        ))
    }

    async fn repository_model_unload(
        &self,
        _: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        Err(Status::unimplemented(
            "models are unloaded through the admin port's /v2/repository/models/{name}/unload",
        ))
    }
}

fn infer_grpc(
    served: &Served,
    request: ModelInferRequest,
) -> Result<ModelInferResponse, Rejection> {
    let decoded = decode(&request, served.model.signature()).map_err(Rejection::bad_request)?;
    let outputs = served.model.infer(decoded.inputs)?;
    let mut response = ModelInferResponse {
        model_name: served.spec.name.clone(),
        model_version: served.spec.version.clone(),
        id: request.id,
        ..ModelInferResponse::default()
    };
    for tensor in outputs {
        if decoded
            .outputs
            .as_ref()
            .is_some_and(|names| !names.iter().any(|o| o.name == tensor.name))
        {
            continue;
        }
        let mut raw = Vec::new();
        binary::to_raw(&tensor.data, &mut raw);
        response.outputs.push(InferOutputTensor {
            name: tensor.name,
            datatype: tensor.data.datatype().as_str().to_owned(),
            shape: tensor.shape.iter().map(|&d| d as i64).collect(),
            ..InferOutputTensor::default()
        });
        response.raw_output_contents.push(raw);
    }
    Ok(response)
}

/// The checked request: the inputs from `raw_input_contents` (one per input, in order) or from each input's typed
/// `contents`, never both; the outputs asked for.
pub fn decode(request: &ModelInferRequest, signature: &Signature) -> Result<oip::Decoded, String> {
    let raw = &request.raw_input_contents;
    if !raw.is_empty() {
        if raw.len() != request.inputs.len() {
            return Err(format!(
                "raw_input_contents has {} entries for {} inputs; give one per input or none",
                raw.len(),
                request.inputs.len()
            ));
        }
        if let Some(input) = request.inputs.iter().find(|i| i.contents.is_some()) {
            return Err(format!(
                "input {:?} has contents although the request uses raw_input_contents",
                input.name
            ));
        }
    }
    let inputs = request
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let elements = match raw.get(i) {
                Some(bytes) => Some(Elements::Raw(bytes)),
                None => input.contents.as_ref().map(|contents| {
                    Elements::Typed(Box::new(move |datatype| {
                        typed(&input.name, contents, datatype)
                    }))
                }),
            };
            Ok(InputTensor {
                name: input.name.clone(),
                datatype: input.datatype.clone(),
                shape: input.shape.clone(),
                elements,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let outputs = if request.outputs.is_empty() {
        None
    } else {
        let requested = request
            .outputs
            .iter()
            .map(|o| RequestedOutput {
                name: o.name.clone(),
                binary: true,
            })
            .collect();
        Some(oip::check_outputs(requested, signature)?)
    };
    Ok(oip::Decoded {
        id: Some(request.id.clone()).filter(|id| !id.is_empty()),
        inputs: oip::assemble(inputs, signature)?,
        outputs,
        binary_outputs: true,
    })
}

/// The typed contents of input `name`, from the field `datatype` uses; any other field filled is an error.
fn typed(
    name: &str,
    contents: &InferTensorContents,
    datatype: DataType,
) -> Result<TensorData, String> {
    let filled: Vec<&str> = [
        ("bool_contents", contents.bool_contents.is_empty()),
        ("int_contents", contents.int_contents.is_empty()),
        ("int64_contents", contents.int64_contents.is_empty()),
        ("uint_contents", contents.uint_contents.is_empty()),
        ("uint64_contents", contents.uint64_contents.is_empty()),
        ("fp32_contents", contents.fp32_contents.is_empty()),
        ("fp64_contents", contents.fp64_contents.is_empty()),
        ("bytes_contents", contents.bytes_contents.is_empty()),
    ]
    .into_iter()
    .filter(|(_, empty)| !empty)
    .map(|(field, _)| field)
    .collect();
    let field = match datatype {
        DataType::Bool => "bool_contents",
        DataType::Int32 => "int_contents",
        DataType::Int64 => "int64_contents",
        DataType::Fp32 => "fp32_contents",
        DataType::Fp64 => "fp64_contents",
        DataType::Bytes => "bytes_contents",
    };
    if let Some(other) = filled.iter().find(|f| **f != field) {
        return Err(format!(
            "input {name:?}: {} data goes in {field}, not {other}",
            datatype.as_str()
        ));
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(contents.bool_contents.clone()),
        DataType::Int32 => TensorData::Int32(contents.int_contents.clone()),
        DataType::Int64 => TensorData::Int64(contents.int64_contents.clone()),
        DataType::Fp32 => TensorData::Fp32(contents.fp32_contents.clone()),
        DataType::Fp64 => TensorData::Fp64(contents.fp64_contents.clone()),
        DataType::Bytes => TensorData::Bytes(
            contents
                .bytes_contents
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    String::from_utf8(b.clone())
                        .map_err(|_| format!("input {name:?}: element {i} is not valid UTF-8"))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "text".into(),
                datatype: DataType::Bytes,
                shape: vec![-1],
            }],
            outputs: vec![],
        }
    }

    fn request(contents: Option<InferTensorContents>, raw: Vec<Vec<u8>>) -> ModelInferRequest {
        ModelInferRequest {
            inputs: vec![model_infer_request::InferInputTensor {
                name: "text".into(),
                datatype: "BYTES".into(),
                shape: vec![2],
                contents,
                ..Default::default()
            }],
            raw_input_contents: raw,
            ..Default::default()
        }
    }

    #[test]
    fn bytes_come_typed_or_length_prefixed_and_must_be_utf8() {
        let typed = InferTensorContents {
            bytes_contents: vec![b"a".to_vec(), "é".as_bytes().to_vec()],
            ..Default::default()
        };
        let decoded = decode(&request(Some(typed), vec![]), &strings()).unwrap();
        assert_eq!(
            decoded.inputs[0].data,
            TensorData::Bytes(vec!["a".into(), "é".into()])
        );
        let raw = [
            &1u32.to_le_bytes()[..],
            b"a",
            &2u32.to_le_bytes(),
            "é".as_bytes(),
        ]
        .concat();
        let decoded = decode(&request(None, vec![raw]), &strings()).unwrap();
        assert_eq!(
            decoded.inputs[0].data,
            TensorData::Bytes(vec!["a".into(), "é".into()])
        );
        assert_eq!(decoded.outputs, None);
        assert_eq!(decoded.id, None);

        let invalid = InferTensorContents {
            bytes_contents: vec![b"a".to_vec(), vec![0xff]],
            ..Default::default()
        };
        let error = decode(&request(Some(invalid), vec![]), &strings()).unwrap_err();
        assert!(error.contains("element 1 is not valid UTF-8"), "{error}");
    }

    #[test]
    fn rejections_keep_their_message_and_get_the_code_of_their_kind() {
        let cases = [
            (Kind::BadRequest, Code::InvalidArgument),
            (Kind::NotFound, Code::NotFound),
            (Kind::Unavailable, Code::Unavailable),
            (Kind::TooLarge, Code::ResourceExhausted),
            (Kind::Internal, Code::Internal),
        ];
        for (kind, code) in cases {
            let status = Status::from(Rejection::new(kind, "why"));
            assert_eq!((status.code(), status.message()), (code, "why"));
        }
    }
}
