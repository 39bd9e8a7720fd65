//! Readiness, shutdown and hot swap: the server is ready only with a warmed-up model, stays live while it
//! downloads, drains on SIGTERM, and swaps versions under load without a failed or mixed response.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::http_store::{Behavior, HttpStore};
use crate::support::server::{ready_server, Server, ServerBuilder};
use crate::support::{
    assert_model_info, expectation, file_uri, model_bytes, model_path, rows_telling_apart,
    sha256_hex,
};

async fn timed_get(server: &Server, base: &str, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let response = server
        .client
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_download_keeps_liveness_fast_and_readiness_false_until_warm() {
    let bytes = model_bytes("gb_multiclass.onnx");
    let store = HttpStore::start(vec![(
        "/slow.onnx",
        Behavior::slow(bytes.clone(), 1024, 40),
    )])
    .await;
    let mut server = ServerBuilder::new("m", &store.uri("/slow.onnx"), "1")
        .sha256(&sha256_hex(&bytes))
        .start();
    let mut saw_download = false;
    let mut max_live = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for base in [&server.inference, &server.admin] {
            let (code, took) = timed_get(&server, base, "/v2/health/live").await;
            assert_eq!(code, 200);
            max_live = max_live.max(took);
        }
        // Probes first, status second: readiness only ever turns on, so a status that is still not ready
        // means every probe before it must have been refused.
        let (ready, _) = timed_get(&server, &server.admin, "/v2/health/ready").await;
        let (model_ready, _) = timed_get(&server, &server.inference, "/v2/models/m/ready").await;
        let (metadata, _) = timed_get(&server, &server.inference, "/v2/models/m").await;
        let (infer, infer_body) = server
            .post(
                "/v2/models/m/infer",
                &expectation("gb_multiclass").request(&[0], "early"),
            )
            .await;
        let status = server.status().await;
        if status["ready"] == true {
            // Ready implies the warm-up ran.
            assert_eq!(status["phase"], "ready", "{status}");
            assert!(
                status["load"]["timings"]["warmup_seconds"].is_number(),
                "{status}"
            );
            break;
        }
        assert_eq!(ready, 503, "{status}");
        assert_eq!(model_ready, 503, "{status}");
        assert_eq!(metadata, 503, "{status}");
        assert_eq!(infer, 503, "{status}");
        assert!(infer_body["error"].is_string(), "{infer_body}");
        assert_eq!(infer_body["code"], "Unavailable", "{infer_body}");
        if status["phase"] == "downloading" && status["bytes_done"].as_u64().unwrap() > 0 {
            saw_download = true;
            assert_eq!(status["bytes_total"], bytes.len(), "{status}");
            assert!(status["load"]["timings"]["warmup_seconds"].is_null());
        }
        assert!(Instant::now() < deadline, "never ready: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_download, "the download was observed in progress");
    assert!(
        max_live < Duration::from_millis(250),
        "liveness took {max_live:?}"
    );
    server.wait_ready(Duration::from_secs(1)).await;
    let leftovers: Vec<_> = std::fs::read_dir(server.work_dir()).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "the download is deleted once loaded: {leftovers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_download_exits_promptly() {
    let store = HttpStore::start(vec![(
        "/endless.onnx",
        Behavior::slow(vec![0u8; 1 << 20], 1024, 100),
    )])
    .await;
    let mut server = ServerBuilder::new("m", &store.uri("/endless.onnx"), "1").start();
    server
        .wait_status(Duration::from_secs(10), |s| {
            s["bytes_done"].as_u64() > Some(0)
        })
        .await;
    let started = Instant::now();
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        server.termination().is_none(),
        "a requested stop is not a failure"
    );
}

/// A serving pod leaves its Services' endpoints when its deletion starts, and kube-proxy follows a moment later:
/// the server answers unready at once but keeps answering requests for a while before it closes its ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_serving_turns_unready_at_once_and_keeps_answering_while_endpoints_catch_up()
{
    let mut server = ready_server(ServerBuilder::new(
        "m",
        &file_uri(&model_path("mlp.onnx")),
        "1",
    ))
    .await;
    let expected = expectation("mlp");
    let url = format!("{}/v2/models/m/infer", server.inference);
    let body = expected.request(&[0, 1], "r").to_string();
    server.sigterm();
    let started = Instant::now();
    // Readiness goes at once; requests keep being answered, on new connections too, for the whole window.
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        let (ready, _) = server.admin_get("/v2/health/ready").await;
        assert_eq!(ready.as_u16(), 503, "unready once SIGTERM is in");
        let response = server
            .client
            .post(&url)
            .header("content-type", "application/json")
            .header("connection", "close")
            .body(body.clone())
            .send()
            .await
            .expect("the port still accepts connections");
        assert_eq!(response.status().as_u16(), 200);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered > 10, "{answered} requests answered");
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_off_and_lets_in_flight_requests_finish() {
    let mut server = ready_server(ServerBuilder::new(
        "m",
        &file_uri(&model_path("mlp.onnx")),
        "1",
    ))
    .await;
    let expected = expectation("mlp");
    // Big batches keep requests in flight for a while.
    let rows: Vec<usize> = (0..100_000).map(|i| i % expected.rows.len()).collect();
    let request = Arc::new(expected.request(&rows, "big").to_string());
    let url = format!("{}/v2/models/m/infer", server.inference);
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let client = server.client.clone();
            let (url, request) = (url.clone(), request.clone());
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body((*request).clone())
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    // SIGTERM once the server holds all four.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = server.admin_get("/metrics").await;
        if metrics
            .as_str()
            .unwrap()
            .contains("ferry_requests_in_flight 4")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the requests never got in flight: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.sigterm();
    let started = Instant::now();
    for request in in_flight {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let labels = body["outputs"][0]["data"].as_array().unwrap();
        assert_eq!(labels.len(), rows.len());
        for (label, &row) in labels.iter().zip(&rows) {
            assert_eq!(label.as_i64(), Some(expected.labels[row]));
        }
    }
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(12));
    let refused = server
        .client
        .get(format!("{}/v2/health/ready", server.admin))
        .send()
        .await;
    assert!(refused.is_err(), "nothing answers after exit");
}

async fn load(server: &Server, name: &str, parameters: Value) -> (u16, Value) {
    let (code, body) = server
        .admin_post(
            &format!("/v2/repository/models/{name}/load"),
            &json!({ "parameters": parameters }),
        )
        .await;
    (code.as_u16(), body)
}

/// The version and the matching expectation of a response, or why it matches neither.
fn served_version(body: &Value, row: usize) -> Result<&'static str, String> {
    let version = body["model_version"]
        .as_str()
        .ok_or_else(|| format!("no version: {body}"))?;
    let (name, other) = match version {
        "1" => ("logreg", "mlp"),
        "2" => ("mlp", "logreg"),
        v => return Err(format!("unexpected version {v}")),
    };
    expectation(name).matches(&[row], body)?;
    if expectation(other).matches(&[row], body).is_ok() {
        return Err(format!("row {row} cannot tell the versions apart"));
    }
    Ok(if version == "1" { "1" } else { "2" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_swap_under_concurrent_load_fails_no_request_and_never_mixes_versions() {
    let v1 = expectation("logreg");
    let v2_bytes = model_bytes("mlp.onnx");
    // The new version arrives slowly so the swap happens while clients are busy.
    let store = HttpStore::start(vec![(
        "/mlp.onnx",
        Behavior::slow(v2_bytes.clone(), 64, 20),
    )])
    .await;
    let server = Arc::new(
        ready_server(ServerBuilder::new(
            "iris",
            &file_uri(&model_path(&v1.file)),
            "1",
        ))
        .await,
    );
    let v2 = expectation("mlp");
    // Rows on which the two versions disagree, so every response shows which version answered.
    let rows = rows_telling_apart(&v1, &v2);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (server, stop, v1) = (server.clone(), stop.clone(), v1.clone());
            let rows = rows.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut i = client;
                while !stop.load(Ordering::Relaxed) {
                    let row = rows[i % rows.len()];
                    i += 1;
                    let (code, body) = server
                        .post("/v2/models/iris/infer", &v1.request(&[row], "swap"))
                        .await;
                    assert_eq!(code, 200, "client {client}: {body}");
                    let version = served_version(&body, row)
                        .unwrap_or_else(|e| panic!("client {client}: {e}"));
                    seen.push(version);
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, body) = load(
        &server,
        "iris",
        json!({"uri": store.uri("/mlp.onnx"), "version": "2", "sha256": sha256_hex(&v2_bytes)}),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    // The load is registered before the 202; its download takes about half a second.
    let during = server.status().await;
    assert_eq!(during["load"]["version"], "2", "{during}");
    assert_eq!(during["load"]["phase"], "downloading", "{during}");
    assert_eq!(
        during["ready"], true,
        "the old version keeps serving: {during}"
    );
    assert_eq!(during["version"], "1");
    server
        .wait_status(Duration::from_secs(30), |s| s["version"] == "2")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await.unwrap());
    }
    let first_v2 = all
        .iter()
        .position(|v| *v == "2")
        .expect("version 2 served");
    assert!(all.contains(&"1"), "version 1 served before the swap");
    assert!(all.len() > 100, "only {} requests", all.len());
    let (_, index) = server.admin_post("/v2/repository/index", &json!({})).await;
    assert_eq!(
        index,
        json!([{"name": "iris", "version": "2", "state": "READY", "reason": ""}])
    );
    let (_, metrics) = server.admin_get("/metrics").await;
    assert_model_info(
        metrics.as_str().unwrap(),
        ("2", &sha256_hex(&v2_bytes)),
        "1",
    );
    eprintln!("{} requests, first version 2 at #{first_v2}", all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_hot_swap_leaves_the_old_version_serving_and_reports_why() {
    let v1 = expectation("logreg");
    let server = ready_server(ServerBuilder::new(
        "iris",
        &file_uri(&model_path(&v1.file)),
        "1",
    ))
    .await;
    let mlp = file_uri(&model_path("mlp.onnx"));

    let (code, body) = load(
        &server,
        "iris",
        json!({"uri": mlp, "version": "2", "sha256": "0".repeat(64), "wait": true}),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "ChecksumMismatch", "{body}");
    assert_eq!(body["code"], "LoadFailed", "{body}");
    let status = server.status().await;
    assert_eq!(status["ready"], true);
    assert_eq!(status["version"], "1");
    assert_eq!(status["reason"], "ChecksumMismatch");
    assert_eq!(status["load"]["phase"], "failed");
    let (_, index) = server.admin_post("/v2/repository/index", &json!({})).await;
    assert_eq!(
        index[0],
        json!({"name": "iris", "version": "1", "state": "READY", "reason": ""})
    );
    assert_eq!(index[1]["state"], "UNAVAILABLE");
    assert!(index[1]["reason"]
        .as_str()
        .unwrap()
        .starts_with("ChecksumMismatch"));

    let (code, body) = load(&server, "iris", json!({"uri": file_uri(&model_path("unsupported_operator.onnx")), "version": "3", "wait": true})).await;
    assert_eq!(code, 422);
    assert_eq!(body["operator"], "ferry.example:Frobnicate");

    let (code, body) = server
        .post("/v2/models/iris/infer", &v1.request(&[0, 1], "still"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["model_version"], "1");
    v1.matches(&[0, 1], &body).unwrap();

    // A later good load still works and clears the reason.
    let (code, body) = load(
        &server,
        "iris",
        json!({"uri": mlp, "version": "2", "wait": true}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let status = server.status().await;
    assert_eq!(status["version"], "2");
    assert!(status["reason"].is_null(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_load_at_a_time_and_bad_load_requests_are_rejected() {
    let store = HttpStore::start(vec![(
        "/slow.onnx",
        Behavior::slow(model_bytes("mlp.onnx"), 128, 50),
    )])
    .await;
    let server = ready_server(ServerBuilder::new(
        "iris",
        &file_uri(&model_path("logreg.onnx")),
        "1",
    ))
    .await;
    let (code, _) = load(
        &server,
        "iris",
        json!({"uri": store.uri("/slow.onnx"), "version": "2"}),
    )
    .await;
    assert_eq!(code, 202);
    let (code, body) = load(
        &server,
        "iris",
        json!({"uri": store.uri("/slow.onnx"), "version": "3"}),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].is_string());
    let (_, index) = server.admin_post("/v2/repository/index", &json!({})).await;
    assert_eq!(index[1]["state"], "LOADING", "{index}");

    let cases = [
        (
            "other",
            json!({"uri": "file:///m.onnx", "version": "2"}),
            404,
        ),
        ("iris", json!({"version": "2"}), 400),
        (
            "iris",
            json!({"uri": "gopher://x/m.onnx", "version": "2"}),
            400,
        ),
        ("iris", json!({"uri": "file:///m.onnx"}), 400),
        (
            "iris",
            json!({"uri": "file:///m.onnx", "version": "2", "sha256": "12"}),
            400,
        ),
        ("iris", json!({"uri": "file:///m.onnx", "version": 2}), 400),
    ];
    for (name, parameters, expected) in cases {
        let (code, body) = load(&server, name, parameters.clone()).await;
        assert_eq!(code, expected, "{parameters}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (code, body) = server
        .admin_post("/v2/repository/models/iris/load", &json!("not an object"))
        .await;
    assert_eq!(code, 400, "{body}");
    // The inference port does not expose the repository.
    let (code, _) = server.post("/v2/repository/index", &json!({})).await;
    assert_eq!(code, 404);
}
