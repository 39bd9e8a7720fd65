//! The gates before traffic: a model must reproduce its golden set (made with `ferry-server golden`) before it is
//! ready, at start and on a hot swap; the signature and the model's own header are in `/status`; a model newer
//! than the runtime is refused from its header.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::http_store::{Behavior, HttpStore};
use crate::support::s3::S3Server;
use crate::support::server::{ready_server, Exited, ServerBuilder};
use crate::support::{expectation, file_uri, model_path, onnxruntime_library, sha256_hex};

const BINARY: &str = env!("CARGO_BIN_EXE_ferry-server");

/// One request per row of `rows`, named `row-N`, for a model whose input is `input`.
fn row_requests(input: &str, rows: &[Vec<f64>]) -> Value {
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            json!({"id": format!("row-{i}"), "inputs": [
                {"name": input, "shape": [1, row.len()], "datatype": "FP32", "data": [row]}
            ]})
        })
        .collect()
}

/// Runs `ferry-server golden` on a committed model and returns the validation file it wrote.
fn golden(dir: &Path, model: &str, requests: &Value, extra: &[&str]) -> PathBuf {
    let requests_path = dir.join(format!("{model}.requests.json"));
    std::fs::write(&requests_path, requests.to_string()).unwrap();
    let out = dir.join(format!("{model}.golden.json"));
    let output = Command::new(BINARY)
        .arg("golden")
        .arg("--model")
        .arg(model_path(model))
        .arg("--requests")
        .arg(&requests_path)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .env("FERRY_ONNXRUNTIME_LIBRARY", onnxruntime_library())
        .output()
        .expect("ferry-server golden runs");
    assert!(
        output.status.success(),
        "ferry-server golden failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// The golden set of logreg.onnx on scikit-learn's 16 test rows.
fn logreg_golden(dir: &Path, extra: &[&str]) -> PathBuf {
    let logreg = expectation("logreg");
    golden(
        dir,
        "logreg.onnx",
        &row_requests(&logreg.input, &logreg.rows),
        extra,
    )
}

fn with_validation(model: &str, version: &str, golden: &Path) -> ServerBuilder {
    ServerBuilder::new("iris", &file_uri(&model_path(model)), version)
        .env("FERRY_VALIDATION_URI", &file_uri(golden))
}

async fn exit_of(builder: ServerBuilder) -> Exited {
    tokio::task::spawn_blocking(move || builder.run_to_exit(Duration::from_secs(60)))
        .await
        .unwrap()
}

/// Runs `builder` to its exit 1 and returns the termination message, checking its reason.
async fn refused(builder: ServerBuilder, reason: &str) -> Value {
    let exited = exit_of(builder).await;
    let termination = exited
        .termination
        .unwrap_or_else(|| panic!("no termination message:\n{}", exited.log));
    assert_eq!(
        termination["reason"], reason,
        "{termination}\n{}",
        exited.log
    );
    assert_eq!(exited.status.code(), Some(1), "{}", exited.log);
    termination
}

fn message(termination: &Value) -> &str {
    termination["message"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_reproduces_its_cases_is_ready_and_another_is_refused_with_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let golden = logreg_golden(dir.path(), &[]);

    let server = ready_server(with_validation("logreg.onnx", "1", &golden)).await;
    let status = server.status().await;
    let validation = &status["validation"];
    assert_eq!(validation["cases"], 16, "{status}");
    assert_eq!(validation["passed"], 16, "{status}");
    assert_eq!(validation["max_error"], 0.0, "{status}");
    assert!(validation["seconds"].as_f64().unwrap() > 0.0, "{status}");
    assert_eq!(status["load"]["validation"], *validation);
    assert!(
        status["load"]["timings"]["validation_seconds"]
            .as_f64()
            .is_some_and(|s| s > 0.0),
        "{status}"
    );
    let text = server.metrics().await;
    assert!(
        text.contains(r#"ferry_validation_runs_total{model="iris",result="passed"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"ferry_model_load_duration_seconds_count{model="iris",phase="validation"} 1"#
        ),
        "{text}"
    );
    // The golden set's requests are what a client sends: the server answers them as the file says.
    let logreg = expectation("logreg");
    let (code, answer) = server
        .post("/v2/models/iris/infer", &logreg.request(&[0], "r"))
        .await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    logreg.matches(&[0], &answer).unwrap();

    // A model trained otherwise (an MLP on the same features) answers differently and is refused.
    let termination = refused(
        with_validation("mlp.onnx", "2", &golden),
        "ValidationFailed",
    )
    .await;
    let text = message(&termination);
    assert!(
        text.contains(" of 16 cases passed (required 100%); worst: case row-"),
        "{text}"
    );
    assert!(text.contains("got ") && text.contains(", want "), "{text}");
    assert_eq!(termination["version"], "2");
}

/// The golden set of logreg with the first probability of row 0 moved by `delta`, tolerance absolute 1e-4.
fn perturbed(dir: &Path, golden: &Path, delta: f64, min_pass_rate: f64) -> PathBuf {
    let mut file: Value = serde_json::from_slice(&std::fs::read(golden).unwrap()).unwrap();
    file["tolerance"] = json!({"absolute": 1e-4, "relative": 0.0});
    file["min_pass_rate"] = json!(min_pass_rate);
    let outputs = file["cases"][0]["expected"]["outputs"]
        .as_array_mut()
        .unwrap();
    let probabilities = outputs
        .iter_mut()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    let value = probabilities["data"][0].as_f64().unwrap();
    probabilities["data"][0] = json!(value + delta);
    let path = dir.join(format!("perturbed-{delta}-{min_pass_rate}.json"));
    std::fs::write(&path, file.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tolerances_are_honoured_and_a_lower_pass_rate_lets_a_partial_set_pass() {
    let dir = tempfile::tempdir().unwrap();
    let golden = logreg_golden(dir.path(), &[]);
    let within = perturbed(dir.path(), &golden, 5e-5, 1.0);
    let beyond = perturbed(dir.path(), &golden, 3e-4, 1.0);
    let beyond_but_enough = perturbed(dir.path(), &golden, 3e-4, 0.9);

    let server = ready_server(with_validation("logreg.onnx", "1", &within)).await;
    let validation = server.status().await["validation"].clone();
    assert_eq!(validation["passed"], 16, "{validation}");
    let max_error = validation["max_error"].as_f64().unwrap();
    assert!((4e-5..1e-4).contains(&max_error), "{validation}");
    assert!(
        validation["worst"]
            .as_str()
            .unwrap()
            .starts_with("case row-0, output probabilities, element 0: got "),
        "{validation}"
    );
    drop(server);

    let termination = refused(
        with_validation("logreg.onnx", "1", &beyond),
        "ValidationFailed",
    )
    .await;
    let text = message(&termination);
    assert!(
        text.starts_with(
            "15 of 16 cases passed (required 100%); worst: case row-0, output probabilities, element 0: got "
        ),
        "{text}"
    );
    assert!(text.contains("(error 3.0"), "{text}");

    let server = ready_server(with_validation("logreg.onnx", "1", &beyond_but_enough)).await;
    let validation = server.status().await["validation"].clone();
    assert_eq!(
        (validation["cases"].as_u64(), validation["passed"].as_u64()),
        (Some(16), Some(15))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_missing_and_mismatched_validation_files_each_have_their_own_reason() {
    let dir = tempfile::tempdir().unwrap();
    let golden = logreg_golden(dir.path(), &[]);
    let golden_bytes = std::fs::read(&golden).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let malformed = write("malformed.json", b"{\"cases\": [{\"name\": ");
    let empty = write("empty.json", br#"{"cases": []}"#);
    let mut renamed: Value = serde_json::from_slice(&golden_bytes).unwrap();
    renamed["cases"][3]["request"]["inputs"][0]["name"] = json!("features");
    let refused_case = write("renamed.json", renamed.to_string().as_bytes());

    let s3 = S3Server::start();
    let store = HttpStore::start(vec![("/private.json", Behavior::Status(403))]).await;
    let logreg_uri = file_uri(&model_path("logreg.onnx"));
    let from =
        |uri: &str| ServerBuilder::new("iris", &logreg_uri, "1").env("FERRY_VALIDATION_URI", uri);
    let wrong_digest = "0".repeat(64);
    let scenarios: Vec<(ServerBuilder, &str, Vec<String>)> = vec![
        (
            from(&file_uri(&malformed)),
            "InvalidValidationFile",
            vec!["is not a golden set".into()],
        ),
        (
            from(&file_uri(&empty)),
            "InvalidValidationFile",
            vec!["has no cases".into()],
        ),
        (
            from(&file_uri(&refused_case)),
            "InvalidValidationFile",
            vec![
                "validation case row-3: the model refuses its request: unknown input \"features\""
                    .into(),
            ],
        ),
        (
            from(&file_uri(&dir.path().join("absent.json"))),
            "NotFound",
            vec!["validation file file://".into()],
        ),
        (
            from(&store.uri("/absent.json")),
            "NotFound",
            vec!["validation file http://".into()],
        ),
        (
            s3.configure(from("s3://models/iris/absent.json")),
            "NotFound",
            vec!["validation file s3://models/iris/absent.json".into()],
        ),
        (
            from(&store.uri("/private.json")),
            "AccessDenied",
            vec!["validation file http://".into()],
        ),
        (
            from(&file_uri(&golden)).env("FERRY_VALIDATION_SHA256", &wrong_digest),
            "ChecksumMismatch",
            vec![
                "validation file file://".into(),
                sha256_hex(&golden_bytes),
                format!("FERRY_VALIDATION_SHA256 expects {wrong_digest}"),
            ],
        ),
    ];
    let runs = scenarios
        .into_iter()
        .map(|(builder, reason, texts)| async move {
            let termination = refused(builder, reason).await;
            let text = message(&termination);
            for expected in &texts {
                assert!(text.contains(expected.as_str()), "{reason}: {text}");
            }
            if reason != "InvalidValidationFile" {
                assert!(text.starts_with("validation file "), "{text}");
            }
        });
    futures::future::join_all(runs).await;

    // The same file with its own digest, from S3 with the model's credentials, passes.
    let model = s3.put(
        "models",
        "iris/logreg.onnx",
        &crate::support::model_bytes("logreg.onnx"),
    );
    let cases = s3.put("models", "iris/cases.json", &golden_bytes);
    let server = ready_server(
        s3.configure(ServerBuilder::new("iris", &model, "1"))
            .env("FERRY_VALIDATION_URI", &cases)
            .env("FERRY_VALIDATION_SHA256", &sha256_hex(&golden_bytes)),
    )
    .await;
    assert_eq!(server.status().await["validation"]["passed"], 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_swap_whose_candidate_fails_validation_leaves_the_old_version_serving() {
    let dir = tempfile::tempdir().unwrap();
    let golden = logreg_golden(dir.path(), &[]);
    let server = ready_server(with_validation("logreg.onnx", "1", &golden)).await;
    let load = |model: &str, version: &str| {
        json!({"parameters": {
            "uri": file_uri(&model_path(model)), "version": version, "wait": true,
            "validation_uri": file_uri(&golden),
        }})
    };

    let (code, answer) = server
        .admin_post("/v2/repository/models/iris/load", &load("mlp.onnx", "2"))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["reason"], "ValidationFailed", "{answer}");
    let status = server.status().await;
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["version"], "1", "{status}");
    assert_eq!(status["reason"], "ValidationFailed", "{status}");
    assert_eq!(status["load"]["phase"], "failed", "{status}");
    assert_eq!(status["load"]["version"], "2", "{status}");
    let attempted = &status["load"]["validation"];
    assert_eq!(attempted["cases"], 16, "{status}");
    assert!(attempted["passed"].as_u64().unwrap() < 16, "{status}");
    // What serves is still version 1 with its own result.
    assert_eq!(status["validation"]["passed"], 16, "{status}");
    let logreg = expectation("logreg");
    let (_, answer) = server
        .post("/v2/models/iris/infer", &logreg.request(&[0, 1], "r"))
        .await;
    assert_eq!(answer["model_version"], "1", "{answer}");
    logreg.matches(&[0, 1], &answer).unwrap();

    // A digest without a file is a bad request; a candidate that reproduces the set swaps in.
    let mut digest_only = load("logreg.onnx", "3");
    digest_only["parameters"]
        .as_object_mut()
        .unwrap()
        .remove("validation_uri");
    digest_only["parameters"]["validation_sha256"] = json!("a".repeat(64));
    let (code, answer) = server
        .admin_post("/v2/repository/models/iris/load", &digest_only)
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("parameters.validation_sha256"),
        "{answer}"
    );
    let (code, answer) = server
        .admin_post("/v2/repository/models/iris/load", &load("logreg.onnx", "3"))
        .await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    let status = server.status().await;
    assert_eq!(status["version"], "3", "{status}");
    assert_eq!(status["validation"]["passed"], 16, "{status}");
    // A hot swap whose golden set is missing or unusable fails with the same reasons as at start.
    let missing = json!({"parameters": {
        "uri": file_uri(&model_path("logreg.onnx")), "version": "4", "wait": true,
        "validation_uri": file_uri(&dir.path().join("absent.json")),
    }});
    let (code, answer) = server
        .admin_post("/v2/repository/models/iris/load", &missing)
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["reason"], "NotFound", "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("NotFound: validation file file://"),
        "{answer}"
    );
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"cases": []}"#).unwrap();
    let mut invalid = missing.clone();
    invalid["parameters"]["validation_uri"] = json!(file_uri(&empty));
    let (code, answer) = server
        .admin_post("/v2/repository/models/iris/load", &invalid)
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["reason"], "InvalidValidationFile", "{answer}");
    assert_eq!(server.status().await["version"], "3");

    let text = server.metrics().await;
    for (result, count) in [("passed", 2), ("failed", 1), ("error", 1), ("invalid", 1)] {
        let line =
            format!(r#"ferry_validation_runs_total{{model="iris",result="{result}"}} {count}"#);
        assert!(text.contains(&line), "{line}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_golden_set_of_a_thousand_rows_validates_well_under_a_second() {
    let dir = tempfile::tempdir().unwrap();
    for model in ["logreg", "gb_multiclass"] {
        let expected = expectation(model);
        // 1,000 rows around scikit-learn's test rows, deterministic.
        let rows: Vec<Vec<f64>> = (0..1000)
            .map(|i| {
                let base = &expected.rows[i % expected.rows.len()];
                base.iter()
                    .enumerate()
                    .map(|(j, v)| v + ((i * 7 + j * 13) % 17) as f64 / 17.0 - 0.5)
                    .collect()
            })
            .collect();
        let file = format!("{model}.onnx");
        let golden = golden(
            dir.path(),
            &file,
            &row_requests(&expected.input, &rows),
            &[],
        );
        let bytes = std::fs::metadata(&golden).unwrap().len();
        let server = ready_server(with_validation(&file, "1", &golden)).await;
        let status = server.status().await;
        assert_eq!(status["validation"]["passed"], 1000, "{status}");
        let seconds = status["load"]["timings"]["validation_seconds"]
            .as_f64()
            .unwrap();
        println!(
            "figure: golden set of 1000 rows ({bytes} bytes) on {file}: validation {seconds:.3} s, total load {:.3} s",
            status["load"]["timings"]["total_seconds"].as_f64().unwrap()
        );
        // Well under a second in a release build; a debug build on a busy machine gets some slack.
        assert!(seconds < 5.0, "{seconds} s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signature_and_the_model_header_are_in_the_status() {
    let server = ready_server(ServerBuilder::new(
        "m",
        &file_uri(&model_path("described.onnx")),
        "1",
    ))
    .await;
    let status = server.status().await;
    let signature = json!({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
    });
    assert_eq!(status["signature"], signature, "{status}");
    assert_eq!(status["load"]["signature"], signature, "{status}");
    assert_eq!(
        status["model_metadata"],
        json!({
            "producer_name": "ferry-testdata",
            "producer_version": "1.2.3",
            "model_version": 42,
            "domain": "dev.ferry.example",
            "description": "Identity on four features, with metadata.",
            "metadata_props": {"git_sha": "abc123", "trained_on": "iris"},
            "ir_version": 8,
            "opsets": {"ai.onnx": 17, "ai.onnx.ml": 3},
        }),
        "{status}"
    );
    assert_eq!(status["load"]["model_metadata"], status["model_metadata"]);
    // No golden set: no validation, and no validation timing.
    assert_eq!(status["validation"], Value::Null, "{status}");
    assert_eq!(status["load"]["timings"]["validation_seconds"], Value::Null);

    // A scikit-learn export: what skl2onnx writes, and the signature clients call.
    let server = ready_server(ServerBuilder::new(
        "iris",
        &file_uri(&model_path("logreg.onnx")),
        "1",
    ))
    .await;
    let status = server.status().await;
    assert_eq!(
        status["model_metadata"]["producer_name"], "skl2onnx",
        "{status}"
    );
    assert!(
        status["model_metadata"]["opsets"]["ai.onnx.ml"].is_i64(),
        "{status}"
    );
    assert_eq!(
        status["signature"]["inputs"],
        json!([{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}])
    );
    let outputs = status["signature"]["outputs"].as_array().unwrap();
    let names: Vec<&str> = outputs
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["label", "probabilities"], "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opset_newer_than_the_runtime_is_refused_from_the_header_naming_the_limit() {
    let exited = exit_of(ServerBuilder::new(
        "m",
        &file_uri(&model_path("future_opset.onnx")),
        "1",
    ))
    .await;
    let termination = exited.termination.expect("termination message");
    assert_eq!(termination["reason"], "UnsupportedFormat", "{termination}");
    assert_eq!(exited.status.code(), Some(1));
    let text = message(&termination);
    assert!(
        text.contains("opset 30 of domain ai.onnx")
            && text.contains("highest supported opset 26 of ai.onnx")
            && text.contains("IR version 13"),
        "{text}"
    );
    // Refused from the header: no ONNX Runtime session was built for it.
    assert!(
        !exited.log.contains("ONNX Runtime sessions created"),
        "{}",
        exited.log
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_reads_a_model_from_a_store_and_refuses_requests_the_model_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let logreg = expectation("logreg");
    let store = HttpStore::start(vec![(
        "/models/logreg.onnx",
        Behavior::Serve(crate::support::model_bytes("logreg.onnx").into()),
    )])
    .await;
    let work = dir.path().to_path_buf();
    let run = move |model: String, requests: Value| {
        let requests_path = work.join("requests.json");
        std::fs::write(&requests_path, requests.to_string()).unwrap();
        let out = work.join("cases.json");
        let _ = std::fs::remove_file(&out);
        let output = Command::new(BINARY)
            .args(["golden", "--model", &model, "--min-pass-rate", "0.5"])
            .arg("--requests")
            .arg(&requests_path)
            .arg("--out")
            .arg(&out)
            .env("FERRY_ONNXRUNTIME_LIBRARY", onnxruntime_library())
            .output()
            .unwrap();
        let written = std::fs::read(&out)
            .ok()
            .map(|b| serde_json::from_slice::<Value>(&b).unwrap());
        (output, written)
    };
    // One request (not an array) with two rows, from an HTTP store, asking for one output.
    let mut request = logreg.request(&[0, 1], "two-rows");
    request["outputs"] = json!([{"name": "label"}]);
    let uri = store.uri("/models/logreg.onnx");
    let (output, written) = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(uri, request)
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file = written.unwrap();
    assert_eq!(file["min_pass_rate"], 0.5);
    assert_eq!(file["cases"][0]["name"], "two-rows");
    assert_eq!(
        file["cases"][0]["expected"],
        json!({"outputs": [{"name": "label", "datatype": "INT64", "shape": [2],
                            "data": [logreg.labels[0], logreg.labels[1]]}]})
    );

    // A request the model refuses is named, and nothing is written.
    let mut wrong = logreg.request(&[0], "bad");
    wrong["inputs"][0]["shape"] = json!([1, 5]);
    let requests = json!([logreg.request(&[1], "good"), wrong]);
    let model = model_path("logreg.onnx").display().to_string();
    let (output, written) = tokio::task::spawn_blocking(move || run(model, requests))
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("request 1 (bad): input \"float_input\" has shape [1, 5]"),
        "{stderr}"
    );
    assert!(written.is_none());
}
