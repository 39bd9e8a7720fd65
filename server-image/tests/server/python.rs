//! The Python runtime end to end: scikit-learn, XGBoost, LightGBM, MLflow and custom models made by the pinned
//! frameworks answer over REST, binary and gRPC exactly as the framework's own `predict`; what the file records is
//! checked before anything runs (IncompatibleRuntime, UnsafeModel, UnsafeArchive); a worker that crashes or hangs
//! ends in a clear error while the front stays up; a stage and switch between two versions fails no request.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_server::contract::paths;
use ferry_server::grpc::proto::model_infer_request::InferInputTensor;
use ferry_server::grpc::proto::ModelInferRequest;
use serde_json::{json, Value};

use crate::grpc::as_json;
use crate::support::python::{
    builder, builder_for, expectation, expectations, interpreter, model_path, system_pickle,
    write_archive,
};
use crate::support::server::ready_server;
use crate::support::{file_uri, sha256_hex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_python_model_answers_as_its_framework_predicts_over_rest_binary_and_grpc() {
    for expected in expectations() {
        let server = ready_server(builder(&expected.file, &expected.format)).await;
        let all: Vec<usize> = (0..expected.rows.len()).collect();

        // REST, JSON: every row in one batch, then each row alone.
        let (status, body) = server
            .post("/v2/models/model/infer", &expected.request(&all, "batch"))
            .await;
        assert_eq!(status, 200, "{}: {body}", expected.name);
        expected
            .matches(&all, &body)
            .unwrap_or_else(|e| panic!("{e}"));
        for row in [0, 7, 15] {
            let (status, body) = server
                .post("/v2/models/model/infer", &expected.request(&[row], "one"))
                .await;
            assert_eq!(status, 200, "{}: {body}", expected.name);
            expected
                .matches(&[row], &body)
                .unwrap_or_else(|e| panic!("{e}"));
        }

        // REST with the binary tensor extension: raw input, raw outputs.
        let header = json!({
            "inputs": [{
                "name": expected.input, "datatype": expected.datatype,
                "shape": [all.len(), expected.rows[0].len()],
                "parameters": {"binary_data_size": expected.raw(&all).len()},
            }],
            "parameters": {"binary_data_output": true},
        });
        let mut body = header.to_string().into_bytes();
        let length = body.len();
        body.extend_from_slice(&expected.raw(&all));
        let response = server
            .client
            .post(format!("{}/v2/models/model/infer", server.inference))
            .header("inference-header-content-length", length.to_string())
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", expected.name);
        let split: usize = response.headers()["inference-header-content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = response.bytes().await.unwrap();
        let mut json: Value = serde_json::from_slice(&bytes[..split]).unwrap();
        let mut tail = &bytes[split..];
        for output in json["outputs"].as_array_mut().unwrap() {
            let size = output["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
            let (raw, rest) = tail.split_at(size);
            tail = rest;
            output["data"] = Value::Array(crate::support::raw_to_json(
                output["datatype"].as_str().unwrap(),
                raw,
            ));
        }
        expected
            .matches(&all, &json)
            .unwrap_or_else(|e| panic!("binary {e}"));

        // gRPC with raw input contents.
        let mut client = server.grpc_client().await;
        let request = ModelInferRequest {
            model_name: "model".into(),
            id: "grpc".into(),
            inputs: vec![InferInputTensor {
                name: expected.input.clone(),
                datatype: expected.datatype.clone(),
                shape: vec![all.len() as i64, expected.rows[0].len() as i64],
                ..Default::default()
            }],
            raw_input_contents: vec![expected.raw(&all)],
            ..Default::default()
        };
        let response = client
            .model_infer(request)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", expected.name));
        expected
            .matches(&all, &as_json(response.get_ref()))
            .unwrap_or_else(|e| panic!("gRPC {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metadata_name_the_framework_the_file_records_and_the_one_installed() {
    let versions = crate::support::python::expected_file()["versions"].clone();
    let server = ready_server(builder("sklearn_forest.joblib", "sklearn")).await;
    let status = server.status().await;
    let metadata = &status["model_metadata"];
    assert_eq!(metadata["producer_name"], "scikit-learn", "{status}");
    assert_eq!(
        metadata["producer_version"], versions["scikit-learn"],
        "{status}"
    );
    assert_eq!(
        metadata["metadata_props"]["runtime_version"], versions["scikit-learn"],
        "{status}"
    );
    assert_eq!(
        status["capabilities"]["python"]["versions"]["xgboost"], versions["xgboost"],
        "{status}"
    );
    let formats = status["capabilities"]["formats"].as_array().unwrap();
    for format in ["onnx", "sklearn", "xgboost", "lightgbm", "mlflow", "python"] {
        assert!(formats.contains(&json!(format)), "{formats:?}");
    }
    let (status, body) = server.get("/v2/models/model").await;
    assert_eq!(status, 200);
    assert_eq!(body["platform"], "sklearn", "{body}");
    assert_eq!(
        body["inputs"][0],
        json!({"name": "input", "datatype": "FP64", "shape": [-1, 6]}),
        "{body}"
    );
    assert_eq!(
        body["outputs"][1],
        json!({"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}),
        "{body}"
    );
}

#[test]
fn print_capabilities_reports_the_versions_the_interpreter_really_has() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferry-server"))
        .arg("--print-capabilities")
        .env("FERRY_PYTHON", interpreter())
        .env(
            "FERRY_ONNXRUNTIME_LIBRARY",
            crate::support::onnxruntime_library(),
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let capabilities: Value = serde_json::from_slice(&output.stdout).unwrap();
    let versions = crate::support::python::expected_file()["versions"].clone();
    for package in ["scikit-learn", "xgboost", "lightgbm", "numpy"] {
        assert_eq!(
            capabilities["python"]["versions"][package], versions[package],
            "{capabilities}"
        );
    }
}

/// Starts a server that must fail to load, and returns its termination message.
fn load_failure(builder: crate::support::server::ServerBuilder) -> Value {
    let exited = builder.run_to_exit(Duration::from_secs(60));
    assert_eq!(exited.status.code(), Some(1), "{}", exited.log);
    exited
        .termination
        .unwrap_or_else(|| panic!("no termination message: {}", exited.log))
}

#[test]
fn a_pickle_from_another_scikit_learn_minor_is_incompatible_and_never_loads() {
    let termination = load_failure(builder("sklearn_old.joblib", "sklearn"));
    assert_eq!(
        termination["reason"], "IncompatibleRuntime",
        "{termination}"
    );
    let installed = crate::support::python::expected_file()["versions"]["scikit-learn"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = termination["message"].as_str().unwrap();
    assert!(
        message.contains("pickled with scikit-learn 1.5.2")
            && message.contains(&installed)
            && message.contains("same minor"),
        "{message}"
    );
}

#[test]
fn a_pickle_that_calls_os_system_is_refused_before_a_byte_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("owned");
    let model = dir.path().join("model.pkl");
    std::fs::write(
        &model,
        system_pickle(&format!("touch {}", marker.display())),
    )
    .unwrap();

    // The file is really malicious: Python's own unpickler runs the command.
    let status = std::process::Command::new(interpreter())
        .args([
            "-c",
            "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))",
        ])
        .arg(&model)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(marker.exists(), "unpickling in Python creates the marker");
    std::fs::remove_file(&marker).unwrap();

    let termination = load_failure(builder_for(&model, "sklearn"));
    assert_eq!(termination["reason"], "UnsafeModel", "{termination}");
    assert!(
        termination["message"]
            .as_str()
            .unwrap()
            .contains("os.system"),
        "{termination}"
    );
    assert!(!marker.exists(), "ferry-server ran the pickle");
}

#[test]
fn an_archive_whose_member_climbs_out_is_refused_and_writes_nothing_outside() {
    for file in ["zip_slip.tar.gz", "zip_slip.zip"] {
        // A work directory of the test's own, so what the server left there can be read after it exits.
        let work = tempfile::tempdir().unwrap();
        let termination = load_failure(
            builder(file, "python").env("FERRY_WORK_DIR", work.path().to_str().unwrap()),
        );
        assert_eq!(
            termination["reason"], "UnsafeArchive",
            "{file}: {termination}"
        );
        assert!(
            termination["message"]
                .as_str()
                .unwrap()
                .contains("escaped.txt"),
            "{termination}"
        );
        let escaped: Vec<_> = walk(work.path())
            .into_iter()
            .filter(|p| p.ends_with("escaped.txt"))
            .collect();
        assert!(escaped.is_empty(), "{escaped:?}");
    }
    let termination = load_failure(builder("link_out.tar.gz", "python"));
    assert_eq!(termination["reason"], "UnsafeArchive", "{termination}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// A custom model whose predict crashes the process on 666 and hangs on 777.
fn misbehaving_model(dir: &Path) -> std::path::PathBuf {
    let archive = dir.join("misbehaving.tar.gz");
    write_archive(
        &archive,
        &[
            (
                "model.py",
                b"import os, signal, time\n\
                  class Model:\n\
                  \x20   def load(self, path):\n\
                  \x20       pass\n\
                  \x20   def predict(self, inputs):\n\
                  \x20       x = inputs['input']\n\
                  \x20       if x[0, 0] == 666:\n\
                  \x20           os.kill(os.getpid(), signal.SIGSEGV)\n\
                  \x20       if x[0, 0] == 777:\n\
                  \x20           time.sleep(3600)\n\
                  \x20       return {'score': x.sum(axis=1)}\n",
            ),
            (
                "signature.json",
                br#"{"inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 2]}],
                     "outputs": [{"name": "score", "datatype": "FP64", "shape": [-1]}]}"#,
            ),
        ],
    );
    archive
}

fn row(value: f64) -> Value {
    json!({"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 2], "data": [value, 1.0]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_crashes_or_hangs_fails_its_request_clearly_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let archive = misbehaving_model(dir.path());
    let server = ready_server(
        builder_for(&archive, "python").env("FERRY_PYTHON_REQUEST_TIMEOUT_SECONDS", "2"),
    )
    .await;

    let (status, body) = server.post("/v2/models/model/infer", &row(666.0)).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("killed by signal 11 (SIGSEGV)"),
        "{body}"
    );

    let started = Instant::now();
    let (status, body) = server.post("/v2/models/model/infer", &row(777.0)).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within 2 s"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let metrics = server.metrics().await;
    for reason in ["signalled", "timed_out"] {
        let line = format!("ferry_python_workers_replaced_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    }

    // The front never went down: health, readiness and answers from the replaced workers.
    let (status, _) = server.get("/v2/health/ready").await;
    assert_eq!(status, 200);
    for _ in 0..20 {
        let (status, body) = server.post("/v2/models/model/infer", &row(2.0)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outputs"][0]["data"], json!([3.0]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_and_switch_between_two_scikit_learn_versions_under_load_fails_no_request() {
    let v1 = expectation("sklearn_logreg");
    let v2 = expectation("sklearn_logreg_v2");
    let server = Arc::new(ready_server(builder(&v1.file, "sklearn")).await);
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for client in 0..2 {
        let (server, stop, answers, v1, v2) = (
            server.clone(),
            stop.clone(),
            answers.clone(),
            v1.clone(),
            v2.clone(),
        );
        loops.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut row = client;
            while !stop.load(Ordering::SeqCst) {
                row = (row + 1) % v1.rows.len();
                let (status, body) = server
                    .post("/v2/models/model/infer", &v1.request(&[row], "loop"))
                    .await;
                assert_eq!(status, 200, "{body}");
                let version = body["model_version"].as_str().unwrap().to_owned();
                let expected = if version == "1" { &v1 } else { &v2 };
                expected
                    .matches(&[row], &body)
                    .unwrap_or_else(|e| panic!("version {version}: {e}"));
                if seen.last() != Some(&version) {
                    seen.push(version);
                }
                answers.fetch_add(1, Ordering::SeqCst);
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let uri = file_uri(&model_path(&v2.file));
    let sha256 = sha256_hex(&std::fs::read(model_path(&v2.file)).unwrap());
    let (status, body) = server
        .admin_post(
            &paths::REPOSITORY_LOAD.replace("{name}", "model"),
            &json!({"parameters": {"uri": uri, "version": "2", "sha256": sha256, "format": "sklearn", "stage": true, "wait": true}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = server
        .admin_post(
            &paths::REPOSITORY_SWITCH.replace("{name}", "model"),
            &json!({"parameters": {"version": "2"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for handle in loops {
        let seen = handle.await.expect("no request failed");
        assert_eq!(
            seen,
            vec!["1".to_owned(), "2".to_owned()],
            "each client moved once, from 1 to 2"
        );
    }
    assert!(
        answers.load(Ordering::SeqCst) > 50,
        "{} answers",
        answers.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_above_the_memory_limit_are_replaced_between_requests_and_no_request_fails() {
    let expected = expectation("sklearn_logreg");
    // Every worker is above one byte: each is replaced after its memory check, every 32nd request it serves.
    let server = ready_server(
        builder(&expected.file, "sklearn").env("FERRY_PYTHON_WORKER_MAX_RSS_BYTES", "1"),
    )
    .await;
    for i in 0..160 {
        let row = i % expected.rows.len();
        let (status, body) = server
            .post("/v2/models/model/infer", &expected.request(&[row], "leak"))
            .await;
        assert_eq!(status, 200, "request {i}: {body}");
        expected
            .matches(&[row], &body)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let metrics = server.metrics().await;
    let replaced: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferry_python_workers_replaced_total{reason=\"memory\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no memory replacements in\n{metrics}"));
    assert!(replaced >= 2.0, "{replaced} workers replaced");
}

/// A golden set of scikit-learn's own answers for `expected`'s rows, one case per row.
fn golden_of(expected: &crate::support::python::PyExpected) -> Value {
    let cases: Vec<Value> = (0..expected.rows.len())
        .map(|row| {
            let outputs: Vec<Value> = expected
                .outputs
                .iter()
                .map(|(name, datatype, shape, data)| {
                    let per_row: usize = shape[1..].iter().product();
                    let mut one = vec![1];
                    one.extend_from_slice(&shape[1..]);
                    json!({"name": name, "datatype": datatype, "shape": one,
                           "data": data[row * per_row..(row + 1) * per_row]})
                })
                .collect();
            json!({"name": format!("row-{row}"), "request": expected.request(&[row], "golden"),
                   "expected": {"outputs": outputs}})
        })
        .collect();
    json!({"cases": cases})
}

#[test]
fn a_golden_set_of_scikit_learn_answers_passes_and_one_of_another_model_fails_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let model = expectation("sklearn_logreg");
    let file = dir.path().join("golden.json");

    std::fs::write(&file, golden_of(&model).to_string()).unwrap();
    let server = builder(&model.file, "sklearn").env("FERRY_VALIDATION_URI", &file_uri(&file));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = ready_server(server).await;
        let status = server.status().await;
        assert_eq!(status["validation"]["cases"], 16, "{status}");
        assert_eq!(status["validation"]["passed"], 16, "{status}");
    });

    // The retrained model's answers are not this model's: the load fails before it would serve.
    std::fs::write(
        &file,
        golden_of(&expectation("sklearn_logreg_v2")).to_string(),
    )
    .unwrap();
    let termination =
        load_failure(builder(&model.file, "sklearn").env("FERRY_VALIDATION_URI", &file_uri(&file)));
    assert_eq!(termination["reason"], "ValidationFailed", "{termination}");
}

#[test]
fn an_mlflow_model_whose_flavor_records_another_scikit_learn_minor_is_incompatible() {
    // The committed MLflow model, with the flavor's sklearn_version in MLmodel changed to 1.5.2.
    let file = std::fs::File::open(model_path("mlflow_sklearn.tar.gz")).unwrap();
    let mut members = Vec::new();
    for entry in tar::Archive::new(flate2::read::GzDecoder::new(file))
        .entries()
        .unwrap()
    {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        if name == "MLmodel" {
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.contains("sklearn_version: 1.9.1"), "{text}");
            bytes = text
                .replace("sklearn_version: 1.9.1", "sklearn_version: 1.5.2")
                .into_bytes();
        }
        members.push((name, bytes));
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("mlflow_old.tar.gz");
    let files: Vec<(&str, &[u8])> = members
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    write_archive(&archive, &files);

    let termination = load_failure(builder_for(&archive, "mlflow"));
    assert_eq!(
        termination["reason"], "IncompatibleRuntime",
        "{termination}"
    );
    let message = termination["message"].as_str().unwrap();
    assert!(
        message.starts_with("MLmodel: pickled with scikit-learn 1.5.2"),
        "{message}"
    );
}
