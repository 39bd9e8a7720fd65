//! A model that cannot be served never becomes ready: the server writes a named reason to the termination-message
//! file and exits 1. Each case uses a real store and a real file.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde_json::Value;

use crate::support::http_store::{Behavior, HttpStore};
use crate::support::python;
use crate::support::s3::S3Server;
use crate::support::server::ServerBuilder;
use crate::support::{file_uri, model_bytes, model_path, sha256_hex};

/// Runs `builder` to its exit and checks the exit code and the termination message's reason.
pub(crate) async fn fails_with(builder: ServerBuilder, reason: &str) -> Value {
    let exited = tokio::task::spawn_blocking(move || builder.run_to_exit(Duration::from_secs(60)))
        .await
        .unwrap();
    let termination = exited
        .termination
        .unwrap_or_else(|| panic!("no termination message; log:\n{}", exited.log));
    assert_eq!(
        termination["reason"], reason,
        "{termination}\n{}",
        exited.log
    );
    let expected_code = if reason == "InvalidConfig" { 2 } else { 1 };
    assert_eq!(exited.status.code(), Some(expected_code), "{}", exited.log);
    assert!(
        termination["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{termination}"
    );
    termination
}

/// Fails with `reason` within ten seconds, naming `setting` in the message.
async fn fails_promptly_naming(builder: ServerBuilder, reason: &str, setting: &str) {
    let started = Instant::now();
    let termination = fails_with(builder, reason).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let message = termination["message"].as_str().unwrap();
    assert!(message.contains(setting), "{message}");
}

/// Serving `path` from `store` fails with `reason` after exactly `requests` requests.
async fn fails_after_requests(store: &HttpStore, path: &str, reason: &str, requests: usize) {
    fails_with(ServerBuilder::new("m", &store.uri(path), "1"), reason).await;
    let seen = store.requests(path);
    assert_eq!(seen.len(), requests, "{path}: {seen:?}");
}

fn scratch_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let uri = file_uri(&path);
    (dir, uri)
}

fn model_uri(file: &str) -> String {
    file_uri(&model_path(file))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_names_both_digests() {
    let actual = sha256_hex(&model_bytes("logreg.onnx"));
    let pinned = "0".repeat(64);
    let termination = fails_with(
        ServerBuilder::new("iris", &model_uri("logreg.onnx"), "7").sha256(&pinned),
        "ChecksumMismatch",
    )
    .await;
    let message = termination["message"].as_str().unwrap();
    assert!(
        message.contains(&actual) && message.contains(&pinned),
        "{message}"
    );
    assert_eq!(termination["model"], "iris");
    assert_eq!(termination["version"], "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_objects_are_not_found_on_every_scheme() {
    let s3 = S3Server::start();
    s3.put("models", "present.onnx", &model_bytes("logreg.onnx"));
    let store = HttpStore::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    fails_with(
        ServerBuilder::new("m", &file_uri(&dir.path().join("absent.onnx")), "1"),
        "NotFound",
    )
    .await;
    fails_with(
        s3.configure(ServerBuilder::new("m", "s3://models/absent.onnx", "1")),
        "NotFound",
    )
    .await;
    fails_with(
        ServerBuilder::new("m", &store.uri("/absent.onnx"), "1"),
        "NotFound",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_access_denied_and_never_retried() {
    let s3 = S3Server::start();
    let uri = s3.put("models", "logreg.onnx", &model_bytes("logreg.onnx"));
    let termination = fails_with(
        s3.configure_with_secret(ServerBuilder::new("m", &uri, "1"), "wrong-secret"),
        "AccessDenied",
    )
    .await;
    assert!(termination["message"]
        .as_str()
        .unwrap()
        .contains("models/logreg.onnx"));

    let store = HttpStore::start(vec![("/private.onnx", Behavior::Status(403))]).await;
    // A 403 is permanent: one request, no retry.
    fails_after_requests(&store, "/private.onnx", "AccessDenied", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_corrupt_or_a_checksum_mismatch() {
    let whole = model_bytes("gb_binary.onnx");
    let (_dir, uri) = scratch_file("truncated.onnx", &whole[..whole.len() / 2]);
    fails_with(ServerBuilder::new("m", &uri, "1"), "CorruptModel").await;
    fails_with(
        ServerBuilder::new("m", &uri, "1").sha256(&sha256_hex(&whole)),
        "ChecksumMismatch",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_model_is_corrupt() {
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (_dir, uri) = scratch_file("noise.onnx", &noise);
    fails_with(ServerBuilder::new("m", &uri, "1"), "CorruptModel").await;
    let (_empty_dir, empty) = scratch_file("empty.onnx", b"");
    fails_with(ServerBuilder::new("m", &empty, "1"), "CorruptModel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_operator_is_named() {
    let termination = fails_with(
        ServerBuilder::new("m", &model_uri("unsupported_operator.onnx"), "1"),
        "UnsupportedOperator",
    )
    .await;
    assert_eq!(
        termination["operator"], "ferry.example:Frobnicate",
        "{termination}"
    );
    assert!(termination["message"]
        .as_str()
        .unwrap()
        .contains("Frobnicate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_over_the_size_limit_is_too_large_before_it_is_downloaded() {
    let bytes = model_bytes("gb_multiclass.onnx");
    let limit = (bytes.len() - 1).to_string();
    fails_with(
        ServerBuilder::new("m", &model_uri("gb_multiclass.onnx"), "1")
            .env("FERRY_MAX_MODEL_BYTES", &limit),
        "TooLarge",
    )
    .await;
    // Over HTTP the size is known from the response headers; the body is not read.
    let store = HttpStore::start(vec![(
        "/big.onnx",
        Behavior::slow(vec![0u8; 1 << 20], 1024, 100),
    )])
    .await;
    fails_promptly_naming(
        ServerBuilder::new("m", &store.uri("/big.onnx"), "1").env("FERRY_MAX_MODEL_BYTES", "65536"),
        "TooLarge",
        "FERRY_MAX_MODEL_BYTES",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_format_or_a_model_that_cannot_run_its_own_shape_fails() {
    let termination = fails_with(
        ServerBuilder::new("m", &model_uri("logreg.onnx"), "1")
            .env("FERRY_MODEL_FORMAT", "sklearn-pickle"),
        "UnsupportedFormat",
    )
    .await;
    assert!(termination["message"].as_str().unwrap().contains("onnx"));
    fails_with(
        ServerBuilder::new("m", &model_uri("warmup_fails.onnx"), "1"),
        "WarmupFailed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_interrupted_bodies_resumed() {
    let bytes = Bytes::from(model_bytes("rf_binary.onnx"));
    let store = HttpStore::start(vec![
        (
            "/flaky.onnx",
            Behavior::Flaky {
                bytes: bytes.clone(),
                failures: 2,
            },
        ),
        (
            "/dropped.onnx",
            Behavior::DropOnce {
                bytes: bytes.clone(),
                cut: 5000,
            },
        ),
        ("/down.onnx", Behavior::Status(503)),
    ])
    .await;
    let digest = sha256_hex(&bytes);
    for path in ["/flaky.onnx", "/dropped.onnx"] {
        let mut server = ServerBuilder::new("m", &store.uri(path), "1")
            .sha256(&digest)
            .start();
        server.wait_ready(Duration::from_secs(30)).await;
    }
    assert_eq!(
        store.requests("/flaky.onnx").len(),
        3,
        "two 503s, then success"
    );
    let dropped = store.requests("/dropped.onnx");
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert_eq!(
        dropped[1].as_deref(),
        Some("bytes=5000-"),
        "the second request resumes"
    );

    // One request and five retries with backoff.
    fails_after_requests(&store, "/down.onnx", "FetchFailed", 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_slower_than_the_timeout_fails_with_timeout() {
    let store = HttpStore::start(vec![(
        "/slow.onnx",
        Behavior::slow(model_bytes("gb_multiclass.onnx"), 512, 50),
    )])
    .await;
    fails_promptly_naming(
        ServerBuilder::new("m", &store.uri("/slow.onnx"), "1")
            .env("FERRY_DOWNLOAD_TIMEOUT_SECONDS", "1"),
        "Timeout",
        "FERRY_DOWNLOAD_TIMEOUT_SECONDS",
    )
    .await;
}

/// One scenario per reason, run side by side: every reason the contract names reaches the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_reason_reaches_the_termination_message() {
    let s3 = S3Server::start();
    let s3_uri = s3.put("models", "logreg.onnx", &model_bytes("logreg.onnx"));
    let store = HttpStore::start(vec![
        ("/slow.onnx", Behavior::slow(vec![0u8; 1 << 16], 256, 50)),
        ("/down.onnx", Behavior::Status(503)),
    ])
    .await;
    let (_corrupt_dir, corrupt) = scratch_file("corrupt.onnx", b"definitely not protobuf");
    let wrong_label = serde_json::json!({"cases": [{"name": "row-0",
        "request": {"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
        "expected": {"outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [99]}]}}]});
    let (_golden_dir, wrong_golden) =
        scratch_file("cases.json", wrong_label.to_string().as_bytes());
    let (_empty_dir, empty_golden) = scratch_file("cases.json", br#"{"cases": []}"#);
    let logreg = model_uri("logreg.onnx");
    let scratch = tempfile::tempdir().unwrap();
    let unsafe_pickle = scratch.path().join("model.pkl");
    std::fs::write(&unsafe_pickle, python::system_pickle("true")).unwrap();
    let dying = python::dying_model(scratch.path());
    let scenarios = vec![
        (
            "InvalidConfig",
            ServerBuilder::new("m", &logreg, "1").env("FERRY_HTTP_PORT", "not-a-port"),
        ),
        (
            "NotFound",
            ServerBuilder::new("m", &model_uri("absent.onnx"), "1"),
        ),
        (
            "AccessDenied",
            s3.configure_with_secret(ServerBuilder::new("m", &s3_uri, "1"), "wrong"),
        ),
        (
            "ChecksumMismatch",
            ServerBuilder::new("m", &logreg, "1").sha256(&"a".repeat(64)),
        ),
        (
            "TooLarge",
            ServerBuilder::new("m", &logreg, "1").env("FERRY_MAX_MODEL_BYTES", "10"),
        ),
        (
            "Timeout",
            ServerBuilder::new("m", &store.uri("/slow.onnx"), "1")
                .env("FERRY_DOWNLOAD_TIMEOUT_SECONDS", "1"),
        ),
        (
            "FetchFailed",
            ServerBuilder::new("m", &store.uri("/down.onnx"), "1"),
        ),
        (
            "UnsupportedFormat",
            ServerBuilder::new("m", &logreg, "1").env("FERRY_MODEL_FORMAT", "pmml"),
        ),
        ("CorruptModel", ServerBuilder::new("m", &corrupt, "1")),
        (
            "UnsupportedOperator",
            ServerBuilder::new("m", &model_uri("unsupported_operator.onnx"), "1"),
        ),
        (
            "WarmupFailed",
            ServerBuilder::new("m", &model_uri("warmup_fails.onnx"), "1"),
        ),
        (
            "ValidationFailed",
            ServerBuilder::new("m", &logreg, "1").env("FERRY_VALIDATION_URI", &wrong_golden),
        ),
        (
            "InvalidValidationFile",
            ServerBuilder::new("m", &logreg, "1").env("FERRY_VALIDATION_URI", &empty_golden),
        ),
        (
            "ObjectChanged",
            ServerBuilder::new("m", &model_uri("logreg.onnx"), "1")
                .env("FERRY_MODEL_OBJECT", "etag:\"another-object\""),
        ),
        // The Python runtime's: what a model file records, what a pickle imports, where an archive writes, and a
        // worker that dies while loading (tests/server/python.rs tests each in detail).
        (
            "IncompatibleRuntime",
            python::builder("sklearn_old.joblib", "sklearn"),
        ),
        (
            "UnsafeModel",
            python::builder_for(&unsafe_pickle, "sklearn"),
        ),
        (
            "UnsafeArchive",
            python::builder("zip_slip.tar.gz", "python"),
        ),
        ("WorkerFailed", python::builder_for(&dying, "python")),
    ];
    let reasons: BTreeSet<&str> = scenarios.iter().map(|(reason, _)| *reason).collect();
    let runs = scenarios.into_iter().map(|(reason, builder)| async move {
        fails_with(builder, reason).await["reason"].clone()
    });
    let written: BTreeSet<String> = futures::future::join_all(runs)
        .await
        .into_iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(written, reasons.iter().map(|r| r.to_string()).collect());
    // Not a model's fault, so no model brings them about: a listener that breaks (tests/server/listeners.rs) and a
    // bug that panics in a load (the unit tests of load.rs and failure.rs).
    let elsewhere = ["ListenerFailed", "LoadPanicked"];
    let contract: BTreeSet<&str> = ferry_server::contract::Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .filter(|r| !elsewhere.contains(r))
        .collect();
    assert_eq!(reasons, contract, "every reason in the contract is covered");
}
