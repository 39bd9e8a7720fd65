//! Standard Open Inference Protocol clients work unchanged, every option at its default: tritonclient's HTTP
//! client (binary tensor data extension) and its gRPC client (from the test venv).

use std::process::Command;

use crate::support::server::{ready_server, Server, ServerBuilder};
use crate::support::{cache_dir, file_uri, model_path, testdata, SETUP};

/// Runs `tests/clients/{script}` against `address` for the logreg model served as `iris`; returns its stdout.
async fn run_client(script: &str, address: String) -> String {
    let python = cache_dir().join("venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing (run `{SETUP}`)",
        python.display()
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let expected = testdata().join("expected.json");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([&address, "iris", expected.to_str().unwrap(), "logreg"])
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tritonclient failed (is tritonclient[http,grpc] in the venv? run `{SETUP}`):\n{stdout}\n{stderr}"
    );
    stdout
}

async fn iris() -> Server {
    ready_server(ServerBuilder::new(
        "iris",
        &file_uri(&model_path("logreg.onnx")),
        "1",
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_http_with_its_defaults_predicts_what_scikit_learn_predicts() {
    let server = iris().await;
    let address = server.inference.trim_start_matches("http://").to_owned();
    let stdout = run_client("tritonclient_http.py", address).await;
    assert!(stdout.contains("match scikit-learn"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_grpc_with_its_defaults_predicts_what_scikit_learn_predicts() {
    let server = iris().await;
    let address = server.grpc.trim_start_matches("http://").to_owned();
    let stdout = run_client("tritonclient_grpc.py", address).await;
    assert!(stdout.contains("match scikit-learn"), "{stdout}");
}
