//! The Open Inference Protocol surface: metadata, datatypes, batching, output selection, id echo, and a table of
//! malformed requests that must all get a 4xx JSON error (never a panic, never a dropped connection).

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::server::{ready_server, serve_model, ServerBuilder};
use crate::support::{expectation, file_uri, model_path};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_model_metadata_describe_the_model_itself() {
    let server = serve_model("logreg.onnx", "iris", "2024-05-01").await;
    let (code, body) = server.get("/v2").await;
    assert_eq!(code, 200);
    assert_eq!(body["name"], "ferry-server");
    assert_eq!(
        body["extensions"],
        json!(["model_repository", "binary_tensor_data"])
    );

    let expected = json!({
        "name": "iris",
        "versions": ["2024-05-01"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
        ]
    });
    for path in ["/v2/models/iris", "/v2/models/iris/versions/2024-05-01"] {
        let (code, body) = server.get(path).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert_eq!(body, expected, "{path}");
    }
    for path in [
        "/v2/models/iris/ready",
        "/v2/models/iris/versions/2024-05-01/ready",
        "/v2/health/ready",
        "/v2/health/live",
    ] {
        let (code, body) = server.get(path).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    for path in [
        "/v2/models/other",
        "/v2/models/iris/versions/1",
        "/v2/models/other/ready",
        "/v2/models/iris/versions/1/ready",
    ] {
        let (code, body) = server.get(path).await;
        assert_eq!(code, 404, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_can_be_selected_and_the_id_is_echoed() {
    let server = serve_model("logreg.onnx", "iris", "3").await;
    let expected = expectation("logreg");
    let mut request = expected.request(&[0, 1, 2], "trace-17");
    request["outputs"] = json!([{"name": "label"}]);
    let (code, body) = server
        .post("/v2/models/iris/versions/3/infer", &request)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["id"], "trace-17");
    assert_eq!(body["model_version"], "3");
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "{body}");
    assert_eq!(outputs[0]["name"], "label");
    assert_eq!(outputs[0]["data"], json!(expected.labels[..3]));

    let mut anonymous = expected.request(&[0], "x");
    anonymous.as_object_mut().unwrap().remove("id");
    let (code, body) = server.post("/v2/models/iris/infer", &anonymous).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.get("id").is_none(), "no id in, no id out: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fp64_int32_int64_and_bool_tensors_round_trip() {
    let server = serve_model("dtypes.onnx", "dtypes", "1").await;
    let request = json!({
        "inputs": [
            {"name": "x_fp64", "shape": [2, 2], "datatype": "FP64", "data": [[0.1, -2.5], [1e300, 4]]},
            {"name": "x_int32", "shape": [2, 2], "datatype": "INT32", "data": [1, -2, 2147483646, 0]},
            {"name": "x_int64", "shape": [2, 2], "datatype": "INT64", "data": [[9007199254740993i64, -1], [0, 5]]},
            {"name": "x_bool", "shape": [2, 2], "datatype": "BOOL", "data": [true, false, false, true]}
        ]
    });
    let (code, body) = server.post("/v2/models/dtypes/infer", &request).await;
    assert_eq!(code, 200, "{body}");
    let output = |name: &str| {
        body["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        output("y_fp64"),
        json!({"name": "y_fp64", "shape": [2, 2], "datatype": "FP64", "data": [1.1, -1.5, 1e300, 5.0]})
    );
    assert_eq!(
        output("y_int32"),
        json!({"name": "y_int32", "shape": [2, 2], "datatype": "INT32", "data": [2, -1, 2147483647, 1]})
    );
    assert_eq!(
        output("y_int64"),
        json!({"name": "y_int64", "shape": [2, 2], "datatype": "INT64", "data": [9007199254740994i64, 0, 1, 6]})
    );
    assert_eq!(
        output("y_bool"),
        json!({"name": "y_bool", "shape": [2, 2], "datatype": "BOOL", "data": [false, true, true, false]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_tensors_carry_utf8_strings() {
    let server = serve_model("strings.onnx", "strings", "1").await;
    let request = |data: Value| json!({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": data}]});
    let (code, body) = server
        .post(
            "/v2/models/strings/infer",
            &request(json!(["ferry", "boat", "fähre ⛴"])),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["outputs"],
        json!([
            {"name": "same", "shape": [3], "datatype": "BYTES", "data": ["ferry", "boat", "fähre ⛴"]},
            {"name": "is_ferry", "shape": [3], "datatype": "BOOL", "data": [true, false, false]}
        ])
    );
    let (code, body) = server
        .post(
            "/v2/models/strings/infer",
            &request(json!(["ferry", 7, "boat"])),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("BYTES"), "{body}");
    let (code, body) = server
        .post(
            "/v2/models/strings/infer",
            &request(json!(["a\u{0}b", "c", "d"])),
        )
        .await;
    assert_eq!(code, 400, "a NUL inside a string: {body}");
}

fn input(shape: Value, datatype: &str, data: Value) -> Value {
    json!({"inputs": [{"name": "float_input", "shape": shape, "datatype": datatype, "data": data}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_json_errors_and_the_server_keeps_serving() {
    let mut server = ready_server(
        ServerBuilder::new("iris", &file_uri(&model_path("logreg.onnx")), "1")
            .env("FERRY_MAX_REQUEST_BYTES", "65536"),
    )
    .await;
    let row = json!([[1.0, 2.0, 3.0, 4.0]]);
    let mut deep = json!(1.0);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let big = "1.0,".repeat(20_000);
    let raw = |body: &str| body.to_owned();
    let infer = "/v2/models/iris/infer";
    // (description, path, body, expected status)
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("not JSON", infer, raw("{"), 400),
        ("empty body", infer, raw(""), 400),
        ("JSON array", infer, raw("[]"), 400),
        ("JSON string", infer, raw("\"inputs\""), 400),
        ("no inputs field", infer, json!({}).to_string(), 400),
        ("inputs not a list", infer, json!({"inputs": 5}).to_string(), 400),
        ("empty inputs", infer, json!({"inputs": []}).to_string(), 400),
        ("unknown input", infer, json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": row}]}).to_string(), 400),
        ("missing datatype", infer, json!({"inputs": [{"name": "float_input", "shape": [1, 4], "data": row}]}).to_string(), 400),
        ("missing shape", infer, json!({"inputs": [{"name": "float_input", "datatype": "FP32", "data": row}]}).to_string(), 400),
        ("missing data", infer, json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32"}]}).to_string(), 400),
        ("unknown datatype", infer, input(json!([1, 4]), "FLOAT", row.clone()).to_string(), 400),
        ("unsupported datatype", infer, input(json!([1, 4]), "FP16", row.clone()).to_string(), 400),
        ("wrong datatype", infer, input(json!([1, 4]), "FP64", row.clone()).to_string(), 400),
        ("wrong rank", infer, input(json!([4]), "FP32", json!([1, 2, 3, 4])).to_string(), 400),
        ("wrong fixed dimension", infer, input(json!([1, 3]), "FP32", json!([1, 2, 3])).to_string(), 400),
        ("negative dimension", infer, input(json!([-1, 4]), "FP32", row.clone()).to_string(), 400),
        ("zero dimension", infer, input(json!([0, 4]), "FP32", json!([])).to_string(), 400),
        ("shape as text", infer, input(json!("1,4"), "FP32", row.clone()).to_string(), 400),
        ("too few elements", infer, input(json!([2, 4]), "FP32", row.clone()).to_string(), 400),
        ("too many elements", infer, input(json!([1, 4]), "FP32", json!([1, 2, 3, 4, 5])).to_string(), 400),
        ("enormous shape", infer, input(json!([4611686018427387904i64, 4]), "FP32", row.clone()).to_string(), 400),
        ("text element", infer, input(json!([1, 4]), "FP32", json!([1, "2", 3, 4])).to_string(), 400),
        ("null element", infer, input(json!([1, 4]), "FP32", json!([1, null, 3, 4])).to_string(), 400),
        ("object element", infer, input(json!([1, 4]), "FP32", json!([1, {"v": 2}, 3, 4])).to_string(), 400),
        ("bool element", infer, input(json!([1, 4]), "FP32", json!([1, true, 3, 4])).to_string(), 400),
        ("FP32 overflow", infer, input(json!([1, 4]), "FP32", json!([1, 1e39, 3, 4])).to_string(), 400),
        ("nesting deeper than JSON allows", infer, input(json!([1, 4]), "FP32", deep).to_string(), 400),
        ("input twice", infer, json!({"inputs": [
            {"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": row},
            {"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": row}]}).to_string(), 400),
        ("unknown output", infer, json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": row}],
            "outputs": [{"name": "scores"}]}).to_string(), 400),
        ("outputs not a list", infer, json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": row}],
            "outputs": "label"}).to_string(), 400),
        ("numeric id", infer, json!({"id": 7, "inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": row}]}).to_string(), 400),
        ("body over the limit", infer, format!("{{\"inputs\": [{{\"name\": \"float_input\", \"shape\": [1, 4], \"datatype\": \"FP32\", \"data\": [{big}1]}}]}}"), 413),
        ("unknown model", "/v2/models/other/infer", input(json!([1, 4]), "FP32", row.clone()).to_string(), 404),
        ("unknown version", "/v2/models/iris/versions/9/infer", input(json!([1, 4]), "FP32", row.clone()).to_string(), 404),
        ("unknown route", "/v2/models/iris/explain", input(json!([1, 4]), "FP32", row.clone()).to_string(), 404),
    ];
    assert!(cases.len() >= 20);
    for (what, path, body, expected) in &cases {
        let response = server
            .client
            .post(format!("{}{path}", server.inference))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: the connection failed: {e}"));
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").cloned();
        let text = response.text().await.unwrap();
        assert_eq!(status, *expected, "{what}: {text}");
        assert_eq!(content_type.unwrap(), "application/json", "{what}");
        let error: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: {text:?} is not JSON: {e}"));
        assert!(
            error["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {text}"
        );
        let code = match *expected {
            400 => "BadRequest",
            413 => "TooLarge",
            _ => "NotFound",
        };
        assert_eq!(error["code"], code, "{what}: {text}");
    }

    // Other shapes of bad request: a binary header over garbage, a wrong method.
    let binary = server
        .client
        .post(format!("{}{infer}", server.inference))
        .header("inference-header-content-length", "10")
        .body(vec![0u8; 64])
        .send()
        .await
        .unwrap();
    assert_eq!(binary.status(), 400);
    let wrong_method = server
        .client
        .delete(format!("{}{infer}", server.inference))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    let body: Value = wrong_method.json().await.unwrap();
    assert!(body["error"].is_string());
    assert_eq!(body["code"], "MethodNotAllowed", "{body}");

    // Still alive, still ready, still right.
    server.wait_ready(Duration::from_secs(1)).await;
    let expected = expectation("logreg");
    let (code, body) = server
        .post(infer, &expected.request(&[4, 5], "after"))
        .await;
    assert_eq!(code, 200, "{body}");
    expected.matches(&[4, 5], &body).unwrap();
    let (_, metrics) = server.admin_get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains(r#"ferry_requests_total{model="iris",version="1",status="400"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ferry_requests_total{model="iris",version="1",status="200"} 1"#),
        "{metrics}"
    );
}
