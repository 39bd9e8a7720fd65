//! The InPlace side of the model repository: a version staged beside the serving one answers only requests that
//! name it, a switch moves every unversioned request at once and keeps the old version loaded, a switch back is a
//! rollback without a download, unload frees what does not serve, a failed stage changes nothing, and a server
//! started from `FERRY_MODEL_FILE` serves the version that file names.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_server::contract::paths;
use ferry_server::grpc::proto::{ModelMetadataRequest, ModelReadyRequest};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::Code;

use crate::grpc::{answered_by, infer_request};
use crate::support::http_store::{Behavior, HttpStore};
use crate::support::s3::S3Server;
use crate::support::server::{random_hex, ready_server, serve_model, Server, ServerBuilder};
use crate::support::{
    assert_model_info, expectation, file_uri, model_bytes, model_path, rows_telling_apart,
    sha256_hex,
};

fn repository(route: &str) -> String {
    route.replace("{name}", "iris")
}

/// A load with `stage: true` and `parameters` (uri, version, ...).
async fn stage(server: &Server, mut parameters: Value) -> (StatusCode, Value) {
    parameters["stage"] = json!(true);
    server
        .admin_post(
            &repository(paths::REPOSITORY_LOAD),
            &json!({ "parameters": parameters }),
        )
        .await
}

/// A switch or unload (`route`) of `version`.
async fn version_call(server: &Server, route: &str, version: &str) -> (StatusCode, Value) {
    server
        .admin_post(
            &repository(route),
            &json!({"parameters": {"version": version}}),
        )
        .await
}

async fn switch(server: &Server, version: &str) -> (StatusCode, Value) {
    version_call(server, paths::REPOSITORY_SWITCH, version).await
}

async fn unload(server: &Server, version: &str) -> (StatusCode, Value) {
    version_call(server, paths::REPOSITORY_UNLOAD, version).await
}

/// Row `row` of logreg's inputs sent to the serving version (`None`) or to `version`.
async fn infer(server: &Server, version: Option<&str>, row: usize) -> (StatusCode, Value) {
    let path = match version {
        Some(v) => format!("/v2/models/iris/versions/{v}/infer"),
        None => "/v2/models/iris/infer".to_owned(),
    };
    server
        .post(&path, &expectation("logreg").request(&[row], "inplace"))
        .await
}

/// Which version answered row `row` ("1": logreg, "2": mlp), checked against that version's predictions.
fn answered(body: &Value, row: usize) -> Result<&'static str, String> {
    let (version, model) = match body["model_version"].as_str() {
        Some("1") => ("1", "logreg"),
        Some("2") => ("2", "mlp"),
        _ => return Err(format!("unexpected answer {body}")),
    };
    expectation(model).matches(&[row], body)?;
    Ok(version)
}

/// `2026-12-02T10:21:14.123Z`: RFC 3339, UTC, milliseconds.
fn assert_timestamp(text: &Value) {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("{text} is no string"));
    let shape: String = text
        .chars()
        .map(|c| if c.is_ascii_digit() { 'D' } else { c })
        .collect();
    assert_eq!(shape, "DDDD-DD-DDTDD:DD:DD.DDDZ", "{text}");
}

/// The loaded versions of the status as (version, state).
fn versions(status: &Value) -> Vec<(String, String)> {
    status["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("no versions in {status}"))
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_owned(),
                v["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(v, s)| ((*v).to_owned(), (*s).to_owned()))
        .collect()
}

async fn metrics(server: &Server) -> String {
    let (_, text) = server.admin_get("/metrics").await;
    text.as_str().unwrap().to_owned()
}

fn metric(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(line_prefix))
        .map(|n| n.trim().parse().unwrap())
}

/// One answer a client got: when it sent and received it, and which version answered.
struct Answer {
    sent: Instant,
    received: Instant,
    version: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_staged_version_answers_by_version_only_until_the_switch_moves_every_request_at_once() {
    let (v1_bytes, v2_bytes) = (model_bytes("logreg.onnx"), model_bytes("mlp.onnx"));
    // Version 2 arrives slowly, so the stage runs while the clients are busy.
    let store = HttpStore::start(vec![
        ("/logreg.onnx", Behavior::Serve(v1_bytes.clone().into())),
        ("/mlp.onnx", Behavior::slow(v2_bytes.clone(), 64, 15)),
    ])
    .await;
    let server = Arc::new(
        ready_server(
            ServerBuilder::new("iris", &store.uri("/logreg.onnx"), "1")
                .sha256(&sha256_hex(&v1_bytes)),
        )
        .await,
    );
    let rows = rows_telling_apart(&expectation("logreg"), &expectation("mlp"));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|client| {
            let (server, stop, rows) = (server.clone(), stop.clone(), rows.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut i = client;
                while !stop.load(Ordering::Relaxed) {
                    let row = rows[i % rows.len()];
                    i += 1;
                    let sent = Instant::now();
                    let (code, body) = infer(&server, None, row).await;
                    let received = Instant::now();
                    assert_eq!(code, StatusCode::OK, "client {client}: {body}");
                    let version =
                        answered(&body, row).unwrap_or_else(|e| panic!("client {client}: {e}"));
                    answers.push(Answer {
                        sent,
                        received,
                        version,
                    });
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (code, body) = stage(
        &server,
        json!({"uri": store.uri("/mlp.onnx"), "version": "2", "sha256": sha256_hex(&v2_bytes)}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body,
        json!({"name": "iris", "version": "2", "state": "LOADING"})
    );
    let during = server.status().await;
    assert_eq!(during["load"]["version"], "2", "{during}");
    assert_eq!(during["load"]["stage"], true, "{during}");
    assert_eq!(during["load"]["phase"], "downloading", "{during}");
    assert_eq!(versions(&during), pairs(&[("1", "serving")]));
    let staged = server
        .wait_status(Duration::from_secs(30), |s| {
            s["versions"].as_array().is_some_and(|v| v.len() == 2)
        })
        .await;
    assert_eq!(
        versions(&staged),
        pairs(&[("1", "serving"), ("2", "staged")])
    );
    assert_eq!(staged["version"], "1", "{staged}");
    assert_eq!(staged["ready"], true, "{staged}");
    assert_eq!(staged["load"]["phase"], "ready", "{staged}");
    assert!(staged["last_switch"].is_null(), "{staged}");
    let v2_view = &staged["versions"][1];
    assert_eq!(v2_view["uri"], store.uri("/mlp.onnx"));
    assert_eq!(v2_view["sha256"], sha256_hex(&v2_bytes));
    assert_eq!(v2_view["bytes"], v2_bytes.len());
    assert_timestamp(&v2_view["loaded_at"]);

    // The candidate answers requests that name it, with its own predictions; unversioned ones stay on 1.
    for &row in &rows[..4] {
        let (code, body) = infer(&server, Some("2"), row).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(answered(&body, row), Ok("2"));
        let (_, body) = infer(&server, Some("1"), row).await;
        assert_eq!(answered(&body, row), Ok("1"));
    }
    let (code, metadata) = server.get("/v2/models/iris/versions/2").await;
    assert_eq!(code, StatusCode::OK, "{metadata}");
    assert_eq!(metadata["versions"], json!(["2"]));
    let (code, ready) = server.get("/v2/models/iris/versions/2/ready").await;
    assert_eq!(code, StatusCode::OK, "{ready}");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let before_switch = Instant::now();
    let (code, switched) = switch(&server, "2").await;
    let after_switch = Instant::now();
    assert_eq!(code, StatusCode::OK, "{switched}");
    assert_eq!(switched["name"], "iris");
    assert_eq!(switched["version"], "2");
    assert_eq!(switched["previous"], "1");
    assert_timestamp(&switched["switched_at"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = (0, 0);
    for client in clients {
        let answers = client.await.unwrap();
        // Each client: 1, 1, ..., 2, 2: never back to 1 once 2 answered.
        let first_v2 = answers
            .iter()
            .position(|a| a.version == "2")
            .unwrap_or(answers.len());
        assert!(answers[first_v2..].iter().all(|a| a.version == "2"));
        for answer in &answers {
            if answer.received < before_switch {
                assert_eq!(answer.version, "1", "answered before the switch");
            }
            if answer.sent > after_switch {
                assert_eq!(answer.version, "2", "sent after the switch");
            }
        }
        total.0 += first_v2;
        total.1 += answers.len() - first_v2;
    }
    assert!(
        total.0 > 20 && total.1 > 20,
        "answers by version: {total:?}"
    );
    eprintln!("answers by version 1 and 2: {total:?}");

    let switched_status = server.status().await;
    assert_eq!(switched_status["version"], "2");
    assert_eq!(
        versions(&switched_status),
        pairs(&[("1", "previous"), ("2", "serving")])
    );
    assert_eq!(
        switched_status["last_switch"],
        json!({"from": "1", "to": "2", "at": switched["switched_at"]})
    );
    assert!(
        switched["switched_at"].as_str() >= v2_view["loaded_at"].as_str(),
        "{switched} {v2_view}"
    );

    // Rollback from memory: a switch back, without a request to the store.
    let downloads = (
        store.requests("/logreg.onnx").len(),
        store.requests("/mlp.onnx").len(),
    );
    let (code, back) = switch(&server, "1").await;
    assert_eq!(code, StatusCode::OK, "{back}");
    assert_eq!(back["previous"], "2");
    for &row in &rows[..4] {
        let (_, body) = infer(&server, None, row).await;
        assert_eq!(answered(&body, row), Ok("1"));
    }
    // A retried switch changes nothing and answers as the switch it repeats.
    let (code, again) = switch(&server, "1").await;
    assert_eq!(code, StatusCode::OK, "{again}");
    assert_eq!(again, back);
    assert_eq!(
        (
            store.requests("/logreg.onnx").len(),
            store.requests("/mlp.onnx").len()
        ),
        downloads,
        "a rollback downloads nothing"
    );
    let rolled_back = server.status().await;
    assert_eq!(
        versions(&rolled_back),
        pairs(&[("1", "serving"), ("2", "previous")])
    );
    assert_eq!(rolled_back["last_switch"]["at"], back["switched_at"]);
    assert_eq!(
        rolled_back["load"]["version"], "2",
        "no load since the stage"
    );

    let text = metrics(&server).await;
    assert_eq!(
        metric(&text, r#"ferry_model_switches_total{model="iris"} "#),
        Some(2.0),
        "{text}"
    );
    assert_model_info(&text, ("1", &sha256_hex(&v1_bytes)), "2");
    for (state, count) in [("serving", 1.0), ("staged", 0.0), ("previous", 1.0)] {
        let prefix = format!(r#"ferry_model_loaded_versions{{model="iris",state="{state}"}} "#);
        assert_eq!(metric(&text, &prefix), Some(count), "{state}: {text}");
    }
    let (_, index) = server.admin_post("/v2/repository/index", &json!({})).await;
    assert_eq!(
        index,
        json!([
            {"name": "iris", "version": "1", "state": "READY", "reason": ""},
            {"name": "iris", "version": "2", "state": "READY", "reason": ""}
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_frees_a_version_that_does_not_serve_and_never_the_serving_one() {
    let server = serve_model("logreg.onnx", "iris", "1").await;
    let mlp = file_uri(&model_path("mlp.onnx"));
    let (code, body) = stage(&server, json!({"uri": mlp, "version": "2", "wait": true})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "READY");

    let (code, body) = unload(&server, "2").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"name": "iris", "version": "2", "unloaded": true})
    );
    assert_eq!(versions(&server.status().await), pairs(&[("1", "serving")]));
    let (code, body) = infer(&server, Some("2"), 0).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        body["error"],
        r#"model "iris" has no version "2" loaded (loaded: "1" (serving))"#
    );
    let (code, _) = server.get("/v2/models/iris/versions/2").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // Idempotent: a version not loaded is already unloaded.
    for version in ["2", "never-loaded"] {
        let (code, body) = unload(&server, version).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["unloaded"], false, "{body}");
    }

    let (code, body) = stage(&server, json!({"uri": mlp, "version": "2", "wait": true})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = switch(&server, "2").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = unload(&server, "1").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["unloaded"], true);
    let (code, body) = infer(&server, Some("1"), 0).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let (code, body) = infer(&server, None, 0).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(answered(&body, 0), Ok("2"));

    let (code, body) = unload(&server, "2").await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "InUse", "{body}");
    assert!(body["error"].as_str().unwrap().contains("serves"), "{body}");
    let (code, body) = switch(&server, "1").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "NotLoaded", "{body}");
    assert_eq!(
        body["error"],
        r#"model "iris" has no version "1" loaded (loaded: "2" (serving))"#
    );
    let status = server.status().await;
    assert_eq!(versions(&status), pairs(&[("2", "serving")]));
    assert_eq!(status["version"], "2");
    assert_eq!(status["last_switch"]["to"], "2", "{status}");

    // Malformed calls and another model's name.
    for (path, body, expected) in [
        (repository(paths::REPOSITORY_SWITCH), json!({}), 400),
        (
            repository(paths::REPOSITORY_SWITCH),
            json!({"parameters": {}}),
            400,
        ),
        (
            repository(paths::REPOSITORY_SWITCH),
            json!({"parameters": {"version": ""}}),
            400,
        ),
        (
            repository(paths::REPOSITORY_UNLOAD),
            json!("not an object"),
            400,
        ),
        (
            repository(paths::REPOSITORY_UNLOAD),
            json!({"parameters": {"version": 2}}),
            400,
        ),
        (
            paths::REPOSITORY_SWITCH.replace("{name}", "other"),
            json!({"parameters": {"version": "2"}}),
            404,
        ),
        (
            paths::REPOSITORY_UNLOAD.replace("{name}", "other"),
            json!({"parameters": {"version": "2"}}),
            404,
        ),
    ] {
        let (code, answer) = server.admin_post(&path, &body).await;
        assert_eq!(code.as_u16(), expected, "{path} {body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
        let code = if expected == 400 {
            "BadRequest"
        } else {
            "NotFound"
        };
        assert_eq!(answer["code"], code, "{path} {body}: {answer}");
    }
    // The inference port does not expose them.
    let (code, _) = server
        .post(
            &repository(paths::REPOSITORY_SWITCH),
            &json!({"parameters": {"version": "2"}}),
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let text = metrics(&server).await;
    for (state, count) in [("serving", 1.0), ("staged", 0.0), ("previous", 0.0)] {
        let prefix = format!(r#"ferry_model_loaded_versions{{model="iris",state="{state}"}} "#);
        assert_eq!(metric(&text, &prefix), Some(count), "{state}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stage_changes_nothing_that_serves_and_says_why() {
    let s3 = S3Server::start();
    let v1_uri = s3.put("models", "iris/1.onnx", &model_bytes("logreg.onnx"));
    let mlp_bytes = model_bytes("mlp.onnx");
    let v2_uri = s3.put("models", "iris/2.onnx", &mlp_bytes);
    let corrupt_uri = s3.put(
        "models",
        "iris/corrupt.onnx",
        &mlp_bytes[..mlp_bytes.len() / 2],
    );
    let server = ready_server(s3.configure(ServerBuilder::new("iris", &v1_uri, "1"))).await;
    let before = server.status().await;
    assert_eq!(versions(&before), pairs(&[("1", "serving")]));

    for (parameters, reason) in [
        (
            json!({"uri": v2_uri, "version": "2", "sha256": "0".repeat(64)}),
            "ChecksumMismatch",
        ),
        (json!({"uri": corrupt_uri, "version": "2"}), "CorruptModel"),
        (
            json!({"uri": "s3://models/iris/none.onnx", "version": "2"}),
            "NotFound",
        ),
    ] {
        let mut parameters = parameters;
        parameters["wait"] = json!(true);
        let (code, body) = stage(&server, parameters.clone()).await;
        assert_eq!(
            code,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{parameters}: {body}"
        );
        assert_eq!(body["reason"], reason, "{body}");
        let status = server.status().await;
        assert_eq!(status["ready"], true, "{status}");
        assert_eq!(status["version"], "1", "{status}");
        assert_eq!(status["versions"], before["versions"], "{status}");
        assert!(status["last_switch"].is_null(), "{status}");
        assert_eq!(status["load"]["stage"], true, "{status}");
        assert_eq!(status["load"]["phase"], "failed", "{status}");
        assert_eq!(status["load"]["reason"], reason, "{status}");
        assert!(status["load"]["message"].is_string(), "{status}");
        let (code, body) = infer(&server, None, 0).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(answered(&body, 0), Ok("1"));
        let (code, body) = switch(&server, "2").await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    }
    // The store and the server are fine: a good stage of the same version then works.
    let (code, body) = stage(
        &server,
        json!({"uri": v2_uri, "version": "2", "sha256": sha256_hex(&mlp_bytes), "wait": true}),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let status = server.status().await;
    assert_eq!(
        versions(&status),
        pairs(&[("1", "serving"), ("2", "staged")])
    );
    assert!(status["reason"].is_null(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_beyond_the_loaded_version_limit_is_refused_and_a_repeated_stage_downloads_nothing()
{
    let mlp_bytes = model_bytes("mlp.onnx");
    // A slow download (about half a second), so calls can arrive while the stage runs.
    let store = HttpStore::start(vec![(
        "/mlp.onnx",
        Behavior::slow(mlp_bytes.clone(), 64, 20),
    )])
    .await;
    let server = ready_server(
        ServerBuilder::new("iris", &file_uri(&model_path("logreg.onnx")), "1")
            .env("FERRY_MAX_LOADED_VERSIONS", "2"),
    )
    .await;
    let v2 =
        json!({"uri": store.uri("/mlp.onnx"), "version": "2", "sha256": sha256_hex(&mlp_bytes)});
    let (code, body) = stage(&server, v2.clone()).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    // While it runs: another load is refused, the version cannot be unloaded or switched to yet.
    let (code, body) = stage(&server, v2.clone()).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "Busy", "{body}");
    let (code, body) = unload(&server, "2").await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "InUse", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("being loaded"),
        "{body}"
    );
    let (code, body) = switch(&server, "2").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("its load is running"),
        "{body}"
    );
    server
        .wait_status(Duration::from_secs(30), |s| s["load"]["phase"] == "ready")
        .await;
    assert_eq!(store.requests("/mlp.onnx").len(), 1);

    let gb = file_uri(&model_path("gb_multiclass.onnx"));
    let (code, body) = stage(&server, json!({"uri": gb, "version": "3", "wait": true})).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "Full", "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("FERRY_MAX_LOADED_VERSIONS=2") && message.contains("unload"),
        "{message}"
    );
    let status = server.status().await;
    assert_eq!(
        versions(&status),
        pairs(&[("1", "serving"), ("2", "staged")])
    );
    assert_eq!(
        status["load"]["version"], "2",
        "the refused stage left no trace"
    );

    // The operator retries: the same stage again is done at once, without a download.
    let (code, body) = stage(&server, v2.clone()).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"name": "iris", "version": "2", "state": "READY"})
    );
    assert_eq!(store.requests("/mlp.onnx").len(), 1);
    // Another file under a loaded version is a conflict, for the serving version too.
    for (version, uri) in [("2", gb.as_str()), ("1", gb.as_str())] {
        let (code, body) = stage(&server, json!({"uri": uri, "version": version})).await;
        assert_eq!(code, StatusCode::CONFLICT, "{version}: {body}");
        assert_eq!(body["code"], "Conflict", "{body}");
        assert!(body["error"].as_str().unwrap().contains("unload"), "{body}");
    }
    let (code, body) = stage(
        &server,
        json!({"uri": store.uri("/mlp.onnx"), "version": "2", "sha256": "1".repeat(64)}),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");

    let (code, _) = unload(&server, "2").await;
    assert_eq!(code, StatusCode::OK);
    let (code, body) = stage(&server, json!({"uri": gb, "version": "3", "wait": true})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = server
        .post(
            "/v2/models/iris/versions/3/infer",
            &expectation("gb_multiclass").request(&[0, 1], "three"),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    expectation("gb_multiclass")
        .matches(&[0, 1], &body)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_and_unload_obey_only_the_credential() {
    let builder = ServerBuilder::new("iris", &file_uri(&model_path("logreg.onnx")), "1");
    let token = builder.admin_token().unwrap().to_owned();
    let server = ready_server(builder).await;
    let (code, body) = stage(
        &server,
        json!({"uri": file_uri(&model_path("mlp.onnx")), "version": "2", "wait": true}),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let wrong = format!("{}x", token);
    let other = format!("other.{}", random_hex(32));
    for route in [paths::REPOSITORY_SWITCH, paths::REPOSITORY_UNLOAD] {
        let body = json!({"parameters": {"version": "2"}});
        for credential in [None, Some(wrong.as_str()), Some(other.as_str())] {
            let (code, answer) = server
                .admin_post_as(credential, &repository(route), &body)
                .await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{route}: {answer}");
            assert!(answer["error"].is_string(), "{answer}");
            assert_eq!(answer["code"], "Unauthorized", "{answer}");
        }
        let status = server.status().await;
        assert_eq!(
            versions(&status),
            pairs(&[("1", "serving"), ("2", "staged")])
        );
        assert_eq!(status["version"], "1");
    }
    let (code, body) = switch(&server, "2").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = unload(&server, "1").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let text = metrics(&server).await;
    assert_eq!(
        metric(&text, r#"ferry_admin_refused_total{reason="missing"} "#),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, r#"ferry_admin_refused_total{reason="wrong"} "#),
        Some(4.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reaches_a_staged_version_by_model_version() {
    let server = serve_model("logreg.onnx", "iris", "1").await;
    let (code, body) = stage(
        &server,
        json!({"uri": file_uri(&model_path("mlp.onnx")), "version": "2", "wait": true}),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let mut client = server.grpc_client().await;
    let rows: Vec<usize> = (0..expectation("logreg").rows.len()).collect();
    for (version, expected) in [("2", "2"), ("1", "1"), ("", "1")] {
        let mut request = infer_request(&expectation("logreg"), &rows, version == "2");
        request.model_name = "iris".into();
        request.model_version = version.into();
        let response = client
            .model_infer(request)
            .await
            .unwrap_or_else(|e| panic!("version {version:?}: {e}"))
            .into_inner();
        assert_eq!(response.model_version, expected);
        assert_eq!(answered_by(&response, &rows), Ok(expected));
    }
    let ready = client
        .model_ready(ModelReadyRequest {
            name: "iris".into(),
            version: "2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ready.ready);
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: "iris".into(),
            version: "2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.versions, ["2"]);

    let (code, body) = unload(&server, "2").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let mut request = infer_request(&expectation("logreg"), &[0], false);
    request.model_name = "iris".into();
    request.model_version = "2".into();
    let status = client.model_infer(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let (_, rest) = infer(&server, Some("2"), 0).await;
    assert_eq!(
        status.message(),
        rest["error"],
        "gRPC and REST say the same"
    );
}

/// A server whose `FERRY_MODEL_FILE` holds `content`, the other model settings as `builder` has them.
fn with_model_file(
    builder: ServerBuilder,
    dir: &tempfile::TempDir,
    content: &str,
) -> ServerBuilder {
    let path = dir.path().join("model.json");
    std::fs::write(&path, content).unwrap();
    builder.env("FERRY_MODEL_FILE", path.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_starts_on_the_version_its_model_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let mlp_bytes = model_bytes("mlp.onnx");
    let desired = json!({
        "uri": file_uri(&model_path("mlp.onnx")), "version": "2", "sha256": sha256_hex(&mlp_bytes)
    })
    .to_string();
    let logreg = file_uri(&model_path("logreg.onnx"));
    // With the pod template's settings still there (the file wins), and without them.
    for keep_env in [true, false] {
        let mut builder = ServerBuilder::new("iris", &logreg, "1");
        if !keep_env {
            builder = builder
                .without("FERRY_MODEL_URI")
                .without("FERRY_MODEL_VERSION");
        }
        let server = ready_server(with_model_file(builder, &dir, &desired)).await;
        let status = server.status().await;
        assert_eq!(status["version"], "2", "{status}");
        assert_eq!(status["sha256"], sha256_hex(&mlp_bytes), "{status}");
        assert_eq!(versions(&status), pairs(&[("2", "serving")]));
        let (code, body) = infer(&server, None, 0).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(answered(&body, 0), Ok("2"));
    }
}

#[test]
fn an_invalid_model_file_exits_2_naming_it() {
    let logreg = file_uri(&model_path("logreg.onnx"));
    let cases = [
        None,
        Some("{"),
        Some(r#"{"uri": "file:///m.onnx"}"#),
        Some(r#"{"uri": "gopher://x/m.onnx", "version": "2"}"#),
        Some(r#"{"uri": "file:///m.onnx", "version": "2", "sha256": "12"}"#),
    ];
    for content in cases {
        let dir = tempfile::tempdir().unwrap();
        let builder = ServerBuilder::new("iris", &logreg, "1");
        let builder = match content {
            Some(text) => with_model_file(builder, &dir, text),
            None => builder.env(
                "FERRY_MODEL_FILE",
                dir.path().join("missing.json").to_str().unwrap(),
            ),
        };
        let started = Instant::now();
        let exited = builder.run_to_exit(Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5), "{content:?}");
        assert_eq!(exited.status.code(), Some(2), "{content:?}: {}", exited.log);
        let termination = exited.termination.expect("termination message");
        assert_eq!(termination["reason"], "InvalidConfig", "{termination}");
        assert_eq!(termination["setting"], "FERRY_MODEL_FILE", "{termination}");
        assert!(
            termination["message"]
                .as_str()
                .unwrap()
                .starts_with("FERRY_MODEL_FILE"),
            "{termination}"
        );
    }
}
