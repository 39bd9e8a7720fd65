//! Invalid configuration exits at once (code 2) naming the setting; flags win over environment variables.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::server::{ready_server, ServerBuilder};
use crate::support::{file_uri, model_path};

fn logreg() -> String {
    file_uri(&model_path("logreg.onnx"))
}

/// Runs to exit and checks: fast, exit code 2, the setting named in the log and in the termination message.
fn rejects(builder: ServerBuilder, setting: &str) -> String {
    let started = Instant::now();
    let exited = builder.run_to_exit(Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(exited.status.code(), Some(2), "{}", exited.log);
    assert!(
        exited.log.contains(setting),
        "{setting} not named in:\n{}",
        exited.log
    );
    let termination = exited.termination.expect("termination message");
    assert_eq!(termination["reason"], "InvalidConfig");
    assert_eq!(termination["setting"], setting, "{termination}");
    assert!(
        termination["message"].as_str().unwrap().contains(setting),
        "{termination}"
    );
    exited.log
}

#[test]
fn invalid_settings_exit_at_once_naming_the_setting() {
    let cases = [
        (
            ServerBuilder::new("m", &logreg(), "1").without("FERRY_MODEL_URI"),
            "FERRY_MODEL_URI",
        ),
        (
            ServerBuilder::new("m", "ftp://example/m.onnx", "1"),
            "FERRY_MODEL_URI",
        ),
        (ServerBuilder::new("-m", &logreg(), "1"), "FERRY_MODEL_NAME"),
        (
            ServerBuilder::new("m", &logreg(), "").without("FERRY_MODEL_VERSION"),
            "FERRY_MODEL_VERSION",
        ),
        (
            ServerBuilder::new("m", &logreg(), "1").sha256("xyz"),
            "FERRY_MODEL_SHA256",
        ),
        (
            ServerBuilder::new("m", &logreg(), "1").env("FERRY_HTTP_PORT", "99999"),
            "FERRY_HTTP_PORT",
        ),
        (
            ServerBuilder::new("m", &logreg(), "1").env("FERRY_DOWNLOAD_TIMEOUT_SECONDS", "0"),
            "FERRY_DOWNLOAD_TIMEOUT_SECONDS",
        ),
        (
            ServerBuilder::new("m", &logreg(), "1").env("FERRY_MAX_MODEL_BYTES", "-5"),
            "FERRY_MAX_MODEL_BYTES",
        ),
        (
            ServerBuilder::new("m", &logreg(), "1").env("FERRY_S3_ENDPOINT", "http://127.0.0.1:9"),
            "FERRY_S3_ENDPOINT",
        ),
        (
            ServerBuilder::new("m", &logreg(), "1").env("FERRY_S3_ALLOW_HTTP", "maybe"),
            "FERRY_S3_ALLOW_HTTP",
        ),
        (
            ServerBuilder::new("m", &logreg(), "1").env("FERRY_LOG", "=[{"),
            "FERRY_LOG",
        ),
        (
            ServerBuilder::new("m", &logreg(), "1").env("FERRY_WORK_DIR", "/dev/null/work"),
            "FERRY_WORK_DIR",
        ),
    ];
    for (builder, setting) in cases {
        rejects(builder, setting);
    }
}

#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    rejects(
        ServerBuilder::new("m", &logreg(), "1").env("FERRY_ADMIN_PORT", &port),
        "FERRY_ADMIN_PORT",
    );
}

#[test]
fn a_missing_or_foreign_onnx_runtime_library_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_library = dir.path().join("libonnxruntime.so");
    std::fs::write(&not_a_library, "not a shared library").unwrap();
    for library in [dir.path().join("absent.so"), not_a_library] {
        rejects(
            ServerBuilder::new("m", &logreg(), "1")
                .env("FERRY_ONNXRUNTIME_LIBRARY", library.to_str().unwrap()),
            "FERRY_ONNXRUNTIME_LIBRARY",
        );
    }
}

/// A library that answers `OrtGetApiBase` like ONNX Runtime 1.20 does, built with the system C compiler.
fn old_onnx_runtime(dir: &Path) -> std::path::PathBuf {
    let source = dir.join("old_ort.c");
    std::fs::write(
        &source,
        r#"
        typedef struct { const void *(*get_api)(unsigned); const char *(*get_version_string)(void); } api_base;
        static const void *get_api(unsigned version) { (void)version; return 0; }
        static const char *get_version_string(void) { return "1.20.0"; }
        static const api_base base = { get_api, get_version_string };
        const api_base *OrtGetApiBase(void) { return &base; }
        "#,
    )
    .unwrap();
    let library = dir.join("libonnxruntime.so.1.20.0");
    let compiled = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| {
            panic!("this test needs a C compiler (`cc`, e.g. apt-get install gcc): {e}")
        });
    assert!(
        compiled.success(),
        "cc failed to build the stand-in library"
    );
    library
}

#[test]
fn an_onnx_runtime_older_than_1_31_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let library = old_onnx_runtime(dir.path());
    let log = rejects(
        ServerBuilder::new("m", &logreg(), "1")
            .env("FERRY_ONNXRUNTIME_LIBRARY", library.to_str().unwrap()),
        "FERRY_ONNXRUNTIME_LIBRARY",
    );
    assert!(log.contains("1.20.0"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_win_over_environment_variables() {
    let server = ready_server(
        ServerBuilder::new("from-env", &logreg(), "env-version")
            .arg("--model-version")
            .arg("flag-version")
            .arg("--model-name")
            .arg("from-flag"),
    )
    .await;
    let status = server.status().await;
    assert_eq!(status["version"], "flag-version", "{status}");
    assert_eq!(status["model"], "from-flag", "{status}");
    let (code, _) = server.get("/v2/models/from-flag/ready").await;
    assert_eq!(code, 200);
    let (code, _) = server.get("/v2/models/from-env/ready").await;
    assert_eq!(code, 404);
}

#[test]
fn print_capabilities_declares_formats_and_opsets() {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry-server"))
        .arg("--print-capabilities")
        .env_remove("FERRY_MODEL_NAME")
        .output()
        .unwrap();
    assert!(output.status.success());
    let capabilities: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(capabilities["formats"], serde_json::json!(["onnx"]));
    assert_eq!(capabilities["onnx"]["opsets"]["ai.onnx"]["min"], 7);
    assert!(
        capabilities["onnx"]["opsets"]["ai.onnx"]["max"]
            .as_u64()
            .unwrap()
            >= 17
    );
    assert_eq!(capabilities["runtime"]["version"], "1.31.1");
    assert_eq!(
        capabilities["protocols"],
        serde_json::json!(["rest", "grpc"])
    );
    assert_eq!(
        capabilities["extensions"],
        serde_json::json!(["model_repository", "binary_tensor_data"])
    );
}
