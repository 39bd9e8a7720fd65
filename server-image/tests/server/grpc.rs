//! The gRPC Open Inference Protocol (`inference.GRPCInferenceService`) on its own port: the same readiness, model
//! resolution, checks, messages and hot swap as REST; typed `contents` and `raw_input_contents` in, and
//! `raw_output_contents` out, predicting what scikit-learn predicts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_server::grpc::proto::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use ferry_server::grpc::proto::*;
use serde_json::{json, Value};
use tonic::Code;

use crate::support::http_store::{Behavior, HttpStore};
use crate::support::server::{ready_server, serve_model, GrpcClient, ServerBuilder};
use crate::support::{
    expectation, expectations, file_uri, model_bytes, model_path, raw_to_json, sha256_hex, Expected,
};

/// `rows` of an expectation as one FP32 input, typed (`fp32_contents`) or raw (`raw_input_contents`).
pub fn infer_request(expected: &Expected, rows: &[usize], raw: bool) -> ModelInferRequest {
    let values: Vec<f32> = rows
        .iter()
        .flat_map(|&r| expected.rows[r].iter().map(|&v| v as f32))
        .collect();
    let mut request = ModelInferRequest {
        model_name: "model".into(),
        id: "grpc".into(),
        inputs: vec![InferInputTensor {
            name: expected.input.clone(),
            datatype: "FP32".into(),
            shape: vec![rows.len() as i64, expected.rows[0].len() as i64],
            ..Default::default()
        }],
        ..Default::default()
    };
    if raw {
        request.raw_input_contents = vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()];
    } else {
        request.inputs[0].contents = Some(InferTensorContents {
            fp32_contents: values,
            ..Default::default()
        });
    }
    request
}

/// A response as the JSON the REST tests check: every output with its raw contents decoded into `data`.
pub fn as_json(response: &ModelInferResponse) -> Value {
    assert_eq!(response.outputs.len(), response.raw_output_contents.len());
    let outputs: Vec<Value> = response
        .outputs
        .iter()
        .zip(&response.raw_output_contents)
        .map(|(output, raw)| {
            let data = raw_to_json(&output.datatype, raw);
            json!({"name": output.name, "shape": output.shape, "datatype": output.datatype, "data": data})
        })
        .collect();
    json!({"model_name": response.model_name, "model_version": response.model_version, "id": response.id, "outputs": outputs})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_and_raw_inputs_predict_what_scikit_learn_predicts_for_every_model() {
    for expected in expectations() {
        let server = serve_model(&expected.file, "model", "1").await;
        let mut client = server.grpc_client().await;
        let all: Vec<usize> = (0..expected.rows.len()).collect();
        for raw in [false, true] {
            let response = client
                .model_infer(infer_request(&expected, &all, raw))
                .await
                .unwrap_or_else(|e| panic!("{} raw={raw}: {e}", expected.name))
                .into_inner();
            assert_eq!(response.id, "grpc");
            assert_eq!(response.model_name, "model");
            assert_eq!(response.model_version, "1");
            expected
                .matches(&all, &as_json(&response))
                .unwrap_or_else(|e| panic!("raw={raw}: {e}"));
        }
        let response = client
            .model_infer(infer_request(&expected, &[3], true))
            .await
            .unwrap()
            .into_inner();
        expected.matches(&[3], &as_json(&response)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metadata_answer_as_rest_does() {
    let server = serve_model("logreg.onnx", "iris", "2024-05-01").await;
    let mut client = server.grpc_client().await;
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    for version in ["", "2024-05-01"] {
        let ready = client
            .model_ready(ModelReadyRequest {
                name: "iris".into(),
                version: version.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(ready.ready, "version {version:?}");
    }
    let metadata = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.name, "ferry-server");
    assert_eq!(
        metadata.extensions,
        ["model_repository", "binary_tensor_data"]
    );

    let model = client
        .model_metadata(ModelMetadataRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let (_, rest) = server.get("/v2/models/iris").await;
    let tensors = |list: &[model_metadata_response::TensorMetadata]| {
        list.iter()
            .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        json!({"name": model.name, "versions": model.versions, "platform": model.platform,
               "inputs": tensors(&model.inputs), "outputs": tensors(&model.outputs)}),
        rest
    );

    // Another model or version: NOT_FOUND with REST's 404 message.
    for (name, version, path) in [
        ("other", "", "/v2/models/other"),
        ("iris", "1", "/v2/models/iris/versions/1"),
    ] {
        let (code, body) = server.get(path).await;
        assert_eq!(code, 404);
        let status = client
            .model_metadata(ModelMetadataRequest {
                name: name.into(),
                version: version.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), body["error"], "{path}");
        let status = client
            .model_ready(ModelReadyRequest {
                name: name.into(),
                version: version.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        let mut request = infer_request(&expectation("logreg"), &[0], false);
        request.model_name = name.into();
        request.model_version = version.into();
        let status = client.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), body["error"], "{path}");
    }
    // Loading is the admin port's business.
    let status = client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "iris".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datatype_travels_typed_and_raw_and_outputs_can_be_selected() {
    let server = serve_model("dtypes.onnx", "dtypes", "1").await;
    let mut client = server.grpc_client().await;
    let input = |name: &str, datatype: &str, contents: InferTensorContents| InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: vec![2, 2],
        contents: Some(contents),
        ..Default::default()
    };
    let typed = ModelInferRequest {
        model_name: "dtypes".into(),
        inputs: vec![
            input(
                "x_fp64",
                "FP64",
                InferTensorContents {
                    fp64_contents: vec![0.1, -2.5, 1e300, 4.0],
                    ..Default::default()
                },
            ),
            input(
                "x_int32",
                "INT32",
                InferTensorContents {
                    int_contents: vec![1, -2, 2147483646, 0],
                    ..Default::default()
                },
            ),
            input(
                "x_int64",
                "INT64",
                InferTensorContents {
                    int64_contents: vec![9007199254740993, -1, 0, 5],
                    ..Default::default()
                },
            ),
            input(
                "x_bool",
                "BOOL",
                InferTensorContents {
                    bool_contents: vec![true, false, false, true],
                    ..Default::default()
                },
            ),
        ],
        outputs: ["y_bool", "y_fp64", "y_int32", "y_int64"]
            .iter()
            .map(|n| InferRequestedOutputTensor {
                name: (*n).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut raw = typed.clone();
    raw.raw_input_contents = vec![
        [0.1f64, -2.5, 1e300, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        [1i32, -2, 2147483646, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        [9007199254740993i64, -1, 0, 5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        vec![1, 0, 0, 1],
    ];
    raw.inputs.iter_mut().for_each(|i| i.contents = None);
    raw.outputs.truncate(1);
    for (request, outputs) in [(typed, 4), (raw, 1)] {
        let body = as_json(&client.model_infer(request).await.unwrap().into_inner());
        let data = |name: &str| {
            body["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == name)
                .map(|o| o["data"].clone())
        };
        assert_eq!(body["outputs"].as_array().unwrap().len(), outputs, "{body}");
        assert_eq!(data("y_bool"), Some(json!([false, true, true, false])));
        if outputs == 4 {
            assert_eq!(data("y_fp64"), Some(json!([1.1, -1.5, 1e300, 5.0])));
            assert_eq!(data("y_int32"), Some(json!([2, -1, 2147483647, 1])));
            assert_eq!(data("y_int64"), Some(json!([9007199254740994i64, 0, 1, 6])));
        }
    }

    let strings = serve_model("strings.onnx", "strings", "1").await;
    let mut client = strings.grpc_client().await;
    let request = ModelInferRequest {
        model_name: "strings".into(),
        inputs: vec![InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![2],
            contents: Some(InferTensorContents {
                bytes_contents: vec![b"ferry".to_vec(), "fähre".as_bytes().to_vec()],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let body = as_json(&client.model_infer(request).await.unwrap().into_inner());
    assert_eq!(body["outputs"][0]["data"], json!(["ferry", "fähre"]));
    assert_eq!(body["outputs"][1]["data"], json!([true, false]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_argument_with_the_rest_message_and_the_server_keeps_serving(
) {
    let server = ready_server(
        ServerBuilder::new("iris", &file_uri(&model_path("logreg.onnx")), "1")
            .env("FERRY_MAX_REQUEST_BYTES", "65536"),
    )
    .await;
    let mut client = server.grpc_client().await;
    let expected = expectation("logreg");
    let base = || {
        let mut request = infer_request(&expected, &[0], false);
        request.model_name = "iris".into();
        request
    };
    // Requests with a JSON twin must get REST's message word for word.
    let with = |f: &dyn Fn(&mut ModelInferRequest)| {
        let mut request = base();
        f(&mut request);
        request
    };
    let row = json!([[1.0, 2.0, 3.0, 4.0]]);
    let twins: Vec<(&str, ModelInferRequest, Value)> = vec![
        (
            "unknown input",
            with(&|r| r.inputs[0].name = "x".into()),
            json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": row}]}),
        ),
        (
            "wrong datatype",
            with(&|r| r.inputs[0].datatype = "FP64".into()),
            json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP64", "data": row}]}),
        ),
        (
            "unsupported datatype",
            with(&|r| r.inputs[0].datatype = "FP16".into()),
            json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP16", "data": row}]}),
        ),
        (
            "wrong rank",
            with(&|r| r.inputs[0].shape = vec![4]),
            json!({"inputs": [{"name": "float_input", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
        ),
        (
            "zero dimension",
            with(&|r| r.inputs[0].shape = vec![0, 4]),
            json!({"inputs": [{"name": "float_input", "shape": [0, 4], "datatype": "FP32", "data": []}]}),
        ),
        (
            "too few elements",
            with(&|r| r.inputs[0].shape = vec![2, 4]),
            json!({"inputs": [{"name": "float_input", "shape": [2, 4], "datatype": "FP32", "data": row}]}),
        ),
        (
            "no inputs",
            with(&|r| r.inputs.clear()),
            json!({"inputs": []}),
        ),
        (
            "input twice",
            with(&|r| r.inputs.push(r.inputs[0].clone())),
            json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": row},
                           {"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": row}]}),
        ),
        (
            "unknown output",
            with(&|r| {
                r.outputs = vec![InferRequestedOutputTensor {
                    name: "scores".into(),
                    ..Default::default()
                }]
            }),
            json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": row}], "outputs": [{"name": "scores"}]}),
        ),
    ];
    for (what, request, json) in twins {
        let status = client.model_infer(request).await.unwrap_err();
        let (code, body) = server.post("/v2/models/iris/infer", &json).await;
        assert_eq!(code, 400, "{what}: {body}");
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(status.message(), body["error"], "{what}");
    }
    // gRPC's own ways to be wrong.
    let only_grpc: Vec<(&str, ModelInferRequest, &str)> = vec![
        (
            "no contents",
            with(&|r| r.inputs[0].contents = None),
            "has no data",
        ),
        (
            "contents in the wrong field",
            with(&|r| {
                r.inputs[0].contents = Some(InferTensorContents {
                    fp64_contents: vec![1.0; 4],
                    ..Default::default()
                })
            }),
            "goes in fp32_contents, not fp64_contents",
        ),
        (
            "two content fields",
            with(&|r| r.inputs[0].contents.as_mut().unwrap().int_contents = vec![1]),
            "not int_contents",
        ),
        (
            "raw and typed",
            with(&|r| r.raw_input_contents = vec![vec![0; 16]]),
            "uses raw_input_contents",
        ),
        (
            "raw count",
            with(&|r| {
                r.inputs[0].contents = None;
                r.raw_input_contents = vec![vec![0; 16], vec![0; 16]]
            }),
            "2 entries for 1 inputs",
        ),
        (
            "raw size",
            with(&|r| {
                r.inputs[0].contents = None;
                r.raw_input_contents = vec![vec![0; 12]]
            }),
            "4 FP32 elements are 16 bytes",
        ),
        (
            "BYTES not UTF-8",
            with(&|r| {
                r.inputs[0].datatype = "BYTES".into();
                r.inputs[0].contents = Some(InferTensorContents {
                    bytes_contents: vec![vec![0xff]],
                    ..Default::default()
                })
            }),
            "the model expects FP32",
        ),
    ];
    for (what, request, message) in only_grpc {
        let status = client.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(status.message().contains(message), "{what}: {status:?}");
    }
    // Over FERRY_MAX_REQUEST_BYTES, as REST's 413.
    let big = with(&|r| {
        r.inputs[0].shape = vec![10_000, 4];
        r.inputs[0].contents = Some(InferTensorContents {
            fp32_contents: vec![1.0; 40_000],
            ..Default::default()
        });
    });
    let status = client.model_infer(big).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{status:?}"
    );

    let response = client.model_infer(base()).await.unwrap().into_inner();
    expected.matches(&[0], &as_json(&response)).unwrap();
    let (_, metrics) = server.admin_get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains(r#"ferry_requests_total{model="iris",version="1",status="400"}"#),
        "{metrics}"
    );
}

/// The version a response reports, checked against that version's predictions for `rows`.
pub fn answered_by(response: &ModelInferResponse, rows: &[usize]) -> Result<&'static str, String> {
    let body = as_json(response);
    let (version, name) = match response.model_version.as_str() {
        "1" => ("1", "logreg"),
        "2" => ("2", "mlp"),
        other => return Err(format!("unexpected version {other}")),
    };
    expectation(name).matches(rows, &body)?;
    Ok(version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_swap_under_grpc_load_fails_no_request_and_each_finishes_on_its_version() {
    let v1 = expectation("logreg");
    let v2_bytes = model_bytes("mlp.onnx");
    let store = HttpStore::start(vec![(
        "/mlp.onnx",
        Behavior::slow(v2_bytes.clone(), 64, 20),
    )])
    .await;
    let server = Arc::new(serve_model(&v1.file, "iris", "1").await);
    let all: Vec<usize> = (0..v1.rows.len()).collect();
    // Whole batches: every row has to come from the same version as the response says.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|client| {
            let (server, stop, v1, all) = (server.clone(), stop.clone(), v1.clone(), all.clone());
            tokio::spawn(async move {
                let mut grpc: GrpcClient = server.grpc_client().await;
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let mut request = infer_request(&v1, &all, client % 2 == 0);
                    request.model_name = "iris".into();
                    let response = grpc
                        .model_infer(request)
                        .await
                        .unwrap_or_else(|e| panic!("client {client}: {e:?}"))
                        .into_inner();
                    seen.push(
                        answered_by(&response, &all)
                            .unwrap_or_else(|e| panic!("client {client}: {e}")),
                    );
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, body) = server
        .admin_post(
            "/v2/repository/models/iris/load",
            &json!({"parameters": {"uri": store.uri("/mlp.onnx"), "version": "2", "sha256": sha256_hex(&v2_bytes)}}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    server
        .wait_status(Duration::from_secs(30), |s| s["version"] == "2")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for client in clients {
        seen.extend(client.await.unwrap());
    }
    let first_v2 = seen
        .iter()
        .position(|v| *v == "2")
        .expect("version 2 answered");
    assert!(seen[..first_v2].iter().all(|v| *v == "1"));
    assert!(seen.contains(&"1"), "version 1 answered before the swap");
    assert!(seen.len() > 50, "only {} requests", seen.len());
    let mut client = server.grpc_client().await;
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: "iris".into(),
            version: "1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(metadata.code(), Code::NotFound, "version 1 is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_the_model_is_warm_grpc_is_live_not_ready_and_unavailable() {
    let bytes = model_bytes("gb_multiclass.onnx");
    let store = HttpStore::start(vec![(
        "/slow.onnx",
        Behavior::slow(bytes.clone(), 1024, 40),
    )])
    .await;
    let mut server = ServerBuilder::new("m", &store.uri("/slow.onnx"), "1")
        .sha256(&sha256_hex(&bytes))
        .start();
    let mut client = server.grpc_client().await;
    let expected = expectation("gb_multiclass");
    let request = || {
        let mut request = infer_request(&expected, &[0], true);
        request.model_name = "m".into();
        request
    };
    let mut refused = 0;
    loop {
        assert!(
            client
                .server_live(ServerLiveRequest {})
                .await
                .unwrap()
                .into_inner()
                .live
        );
        // gRPC first, REST second: readiness only turns on, so a REST 503 after them means gRPC was not ready.
        let server_ready = client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready;
        let model_ready = client
            .model_ready(ModelReadyRequest {
                name: "m".into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .ready;
        let infer = client.model_infer(request()).await;
        let (code, body) = server
            .post("/v2/models/m/infer", &expected.request(&[0], "early"))
            .await;
        if code == 200 {
            break;
        }
        assert_eq!(code, 503, "{body}");
        assert!(!server_ready && !model_ready);
        let status = infer.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().starts_with("model m is not ready yet"),
            "{status:?}"
        );
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("model m is not ready yet"),
            "{body}"
        );
        refused += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused > 0, "the load was observed in progress");
    server.wait_ready(Duration::from_secs(1)).await;
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let response = client.model_infer(request()).await.unwrap().into_inner();
    expected.matches(&[0], &as_json(&response)).unwrap();
}
