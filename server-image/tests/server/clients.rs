//! Standard Open Inference Protocol clients work unchanged: tritonclient's HTTP client (from the test venv).

use std::process::Command;

use crate::support::server::{ready_server, ServerBuilder};
use crate::support::{cache_dir, file_uri, model_path, testdata, SETUP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_http_reads_metadata_and_predicts_what_scikit_learn_predicts() {
    let python = cache_dir().join("venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing (run `{SETUP}`)",
        python.display()
    );
    let server = ready_server(ServerBuilder::new(
        "iris",
        &file_uri(&model_path("logreg.onnx")),
        "1",
    ))
    .await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/tritonclient_http.py");
    let expected = testdata().join("expected.json");
    let address = server.inference.trim_start_matches("http://").to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([&address, "iris", expected.to_str().unwrap(), "logreg"])
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tritonclient failed (is tritonclient in the venv? run `{SETUP}`):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("match scikit-learn"), "{stdout}");
}
