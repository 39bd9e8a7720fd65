//! The binary tensor data extension over REST: raw inputs and outputs after a JSON header, mixed with JSON tensors,
//! predicting what scikit-learn predicts; every malformed body is a 400 with a JSON error.

use serde_json::{json, Value};

use crate::support::expectation;
use crate::support::raw_to_json;
use crate::support::server::{serve_model, Server};

/// A binary-extension body: `header` as JSON, then `tail`.
fn body(header: &Value, tail: &[u8]) -> (Vec<u8>, usize) {
    let mut body = header.to_string().into_bytes();
    let length = body.len();
    body.extend_from_slice(tail);
    (body, length)
}

/// Sends a body with `Inference-Header-Content-Length: length`; returns the status, the response's JSON header and
/// its binary tail.
async fn post_binary(
    server: &Server,
    path: &str,
    body: Vec<u8>,
    length: &str,
) -> (u16, Value, Vec<u8>) {
    let response = server
        .client
        .post(format!("{}{path}", server.inference))
        .header("inference-header-content-length", length)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("request reaches ferry-server");
    let status = response.status().as_u16();
    let header = response
        .headers()
        .get("inference-header-content-length")
        .map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
    let bytes = response.bytes().await.unwrap().to_vec();
    let split = header.unwrap_or(bytes.len());
    let json = serde_json::from_slice(&bytes[..split])
        .unwrap_or_else(|e| panic!("{:?} is not JSON: {e}", String::from_utf8_lossy(&bytes)));
    (status, json, bytes[split..].to_vec())
}

/// Replaces every binary output of a response by its decoded `data`, so it reads as a JSON response.
fn inline_binary_outputs(mut response: Value, mut tail: &[u8]) -> Value {
    for output in response["outputs"].as_array_mut().unwrap() {
        let Some(size) = output["parameters"]["binary_data_size"].as_u64() else {
            continue;
        };
        let (raw, rest) = tail.split_at(size as usize);
        tail = rest;
        let data = raw_to_json(output["datatype"].as_str().unwrap(), raw);
        output["data"] = Value::Array(data);
    }
    assert!(
        tail.is_empty(),
        "{} bytes after the last output",
        tail.len()
    );
    response
}

fn f32_bytes(rows: &[Vec<f64>]) -> Vec<u8> {
    rows.iter()
        .flatten()
        .flat_map(|&v| (v as f32).to_le_bytes())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_inputs_and_outputs_predict_what_scikit_learn_predicts() {
    let server = serve_model("logreg.onnx", "iris", "1").await;
    let expected = expectation("logreg");
    let all: Vec<usize> = (0..expected.rows.len()).collect();
    let tail = f32_bytes(&expected.rows);
    let input = json!({"name": expected.input, "shape": [all.len(), 4], "datatype": "FP32",
                       "parameters": {"binary_data_size": tail.len()}});
    // As tritonclient asks by default: each output with binary_data, or all of them with binary_data_output.
    for outputs in [
        json!({"outputs": [{"name": "label", "parameters": {"binary_data": true}},
                           {"name": "probabilities", "parameters": {"binary_data": true}}]}),
        json!({"parameters": {"binary_data_output": true}}),
        json!({"outputs": [{"name": "label"}, {"name": "probabilities", "parameters": {"binary_data": true}}]}),
        json!({}),
    ] {
        let mut header = json!({"id": "raw", "inputs": [input]});
        header
            .as_object_mut()
            .unwrap()
            .extend(outputs.as_object().unwrap().clone());
        let (body, length) = body(&header, &tail);
        let (status, response, raw) =
            post_binary(&server, "/v2/models/iris/infer", body, &length.to_string()).await;
        assert_eq!(status, 200, "{header}: {response}");
        assert_eq!(response["id"], "raw");
        let binary_outputs = response["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o.get("data").is_none())
            .count();
        let wanted = match (&header["parameters"], &header["outputs"]) {
            (Value::Object(_), _) => 2,
            (_, Value::Array(o)) => o.iter().filter(|o| o["parameters"].is_object()).count(),
            _ => 0,
        };
        assert_eq!(binary_outputs, wanted, "{header}: {response}");
        expected
            .matches(&all, &inline_binary_outputs(response, &raw))
            .unwrap_or_else(|e| panic!("{header}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_raw_inputs_mix_in_one_request_for_every_datatype() {
    let server = serve_model("dtypes.onnx", "dtypes", "1").await;
    let mut tail: Vec<u8> = [0.1f64, -2.5, 1e300, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    tail.extend(
        [9007199254740993i64, -1, 0, 5]
            .iter()
            .flat_map(|v| v.to_le_bytes()),
    );
    tail.extend([1u8, 0, 0, 1]);
    let header = json!({
        "inputs": [
            {"name": "x_fp64", "shape": [2, 2], "datatype": "FP64", "parameters": {"binary_data_size": 32}},
            {"name": "x_int32", "shape": [2, 2], "datatype": "INT32", "data": [1, -2, 2147483646, 0]},
            {"name": "x_int64", "shape": [2, 2], "datatype": "INT64", "parameters": {"binary_data_size": 32}},
            {"name": "x_bool", "shape": [2, 2], "datatype": "BOOL", "parameters": {"binary_data_size": 4}}
        ],
        "parameters": {"binary_data_output": true},
        "outputs": [{"name": "y_fp64"}, {"name": "y_int32"}, {"name": "y_int64"},
                    {"name": "y_bool", "parameters": {"binary_data": false}}]
    });
    let (body, length) = body(&header, &tail);
    let (status, response, raw) = post_binary(
        &server,
        "/v2/models/dtypes/infer",
        body,
        &length.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let response = inline_binary_outputs(response, &raw);
    let data = |name: &str| {
        response["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap()["data"]
            .clone()
    };
    assert_eq!(data("y_fp64"), json!([1.1, -1.5, 1e300, 5.0]));
    assert_eq!(data("y_int32"), json!([2, -1, 2147483647, 1]));
    assert_eq!(data("y_int64"), json!([9007199254740994i64, 0, 1, 6]));
    assert_eq!(data("y_bool"), json!([false, true, true, false]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_tensors_travel_length_prefixed() {
    let server = serve_model("strings.onnx", "strings", "1").await;
    let words = ["ferry", "", "fähre"];
    let tail: Vec<u8> = words
        .iter()
        .flat_map(|w| [&(w.len() as u32).to_le_bytes()[..], w.as_bytes()].concat())
        .collect();
    let header = json!({
        "inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": tail.len()}}],
        "parameters": {"binary_data_output": true}
    });
    let (body, length) = body(&header, &tail);
    let (status, response, raw) = post_binary(
        &server,
        "/v2/models/strings/infer",
        body,
        &length.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let response = inline_binary_outputs(response, &raw);
    assert_eq!(response["outputs"][0]["data"], json!(words));
    assert_eq!(response["outputs"][1]["data"], json!([true, false, false]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_binary_bodies_get_400_json_errors_and_the_server_keeps_serving() {
    let mut server = serve_model("logreg.onnx", "iris", "1").await;
    let row = f32_bytes(&[vec![1.0, 2.0, 3.0, 4.0]]);
    let input = |size: Value| json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": size}}]});
    let infer = "/v2/models/iris/infer";
    let exact = |header: Value, tail: &[u8]| {
        let (body, length) = body(&header, tail);
        (body, length.to_string())
    };
    // (description, (body, Inference-Header-Content-Length), part of the message)
    type Case = (&'static str, (Vec<u8>, String), &'static str);
    let cases: Vec<Case> = vec![
        (
            "header length beyond the body",
            (b"{}".to_vec(), "100".into()),
            "only 2 bytes",
        ),
        (
            "header length not a number",
            (b"{}".to_vec(), "ten".into()),
            "byte count",
        ),
        (
            "header length negative",
            (b"{}".to_vec(), "-1".into()),
            "byte count",
        ),
        (
            "header length cuts the JSON",
            {
                let (b, l) = exact(input(json!(16)), &row);
                (b, (l.parse::<usize>().unwrap() - 3).to_string())
            },
            "invalid inference request",
        ),
        (
            "sizes beyond the tail",
            exact(input(json!(32)), &row),
            "only 16 bytes",
        ),
        (
            "bytes left over",
            exact(input(json!(16)), &[row.clone(), vec![0; 4]].concat()),
            "no binary_data_size covers them",
        ),
        (
            "size not shape x datatype",
            exact(input(json!(12)), &row[..12]),
            "4 FP32 elements are 16 bytes",
        ),
        (
            "size not a number",
            exact(input(json!("16")), &row),
            "byte count",
        ),
        (
            "size negative",
            exact(input(json!(-16)), &row),
            "byte count",
        ),
        (
            "data and a size",
            exact(
                json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4], "parameters": {"binary_data_size": 16}}]}),
                &row,
            ),
            "both data",
        ),
        (
            "binary_data not a bool",
            exact(
                json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}], "outputs": [{"name": "label", "parameters": {"binary_data": 1}}]}),
                &row,
            ),
            "true or false",
        ),
        (
            "tail without a binary input",
            exact(
                json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
                &row,
            ),
            "no binary_data_size covers them",
        ),
    ];
    for (what, (body, length), message) in cases {
        let (status, response, _) = post_binary(&server, infer, body, &length).await;
        assert_eq!(status, 400, "{what}: {response}");
        let error = response["error"].as_str().unwrap_or_default();
        assert!(error.contains(message), "{what}: {response}");
    }
    // A size without the header is refused the same way.
    let (status, response) = server.post(infer, &input(json!(16))).await;
    assert_eq!(status, 400, "{response}");
    assert!(response["error"]
        .as_str()
        .unwrap()
        .contains("no Inference-Header-Content-Length"));

    server.wait_ready(std::time::Duration::from_secs(1)).await;
    let expected = expectation("logreg");
    let (code, body) = server.post(infer, &expected.request(&[1], "after")).await;
    assert_eq!(code, 200, "{body}");
    expected.matches(&[1], &body).unwrap();
}
