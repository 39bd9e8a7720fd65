//! A stand-in for one pod's ferry-server as the strategy InPlace drives it: `/status` lists the loaded versions,
//! the latest load and the latest switch, and `load` (a stage), `switch` and `unload` change them at once. It
//! answers in the JSON ferry-server 0.1.0 writes, and keeps every mutating call it received, so a test can tell
//! that a controller switched, staged or unloaded nothing.
//!
//! It listens on a loopback address of its own (127.x.y.z) at the admin port, which the test gives its pod as
//! pod IP. `tests/fixtures/previous-release/generate.rs` uses it too (in a checkout of the previous release).
#![allow(dead_code)] // the upgrade test starts servers from recorded statuses; the generator starts them fresh

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The credential id every stand-in reports; it ignores credentials.
const CREDENTIAL_ID: &str = "0011223344556677";
const MODEL_BYTES: u64 = 33562;

#[derive(Clone)]
pub struct InPlaceServer {
    pub address: Ipv4Addr,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    status: Mutex<Value>,
    calls: Mutex<Vec<String>>,
}

impl InPlaceServer {
    /// A server that started on `version` (from `uri`, with `sha256`) and serves it.
    pub async fn serving(model: &str, version: &str, uri: &str, sha256: &str) -> InPlaceServer {
        let now = now();
        let status = json!({
            "model": model, "phase": "ready", "ready": true, "shutting_down": false,
            "version": version, "sha256": sha256, "bytes_done": MODEL_BYTES, "bytes_total": MODEL_BYTES,
            "reason": null, "message": null, "operator": null,
            "serving": {"version": version, "uri": uri, "sha256": sha256, "bytes": MODEL_BYTES,
                        "platform": "onnxruntime_onnx"},
            "load": attempt(version, uri, sha256, false),
            "capabilities": {},
            "admin": {"mode": "token", "credential_id": CREDENTIAL_ID},
            "versions": [{"version": version, "uri": uri, "sha256": sha256, "bytes": MODEL_BYTES,
                          "state": "serving", "loaded_at": now}],
            "last_switch": null,
        });
        InPlaceServer::from_status(status).await
    }

    /// A server answering `status` (as recorded from another one) until a call changes it.
    pub async fn from_status(status: Value) -> InPlaceServer {
        let shared = Arc::new(Shared {
            status: Mutex::new(status),
            calls: Mutex::default(),
        });
        for _ in 0..50 {
            let address = Ipv4Addr::new(
                127,
                rand::random_range(1..=254),
                rand::random(),
                rand::random_range(1..=254),
            );
            let Ok(listener) = tokio::net::TcpListener::bind((address, 8081)).await else {
                continue;
            };
            let app = Router::new()
                .route("/status", get(status_of))
                .route("/v2/repository/models/{name}/load", post(load))
                .route("/v2/repository/models/{name}/switch", post(switch))
                .route("/v2/repository/models/{name}/unload", post(unload))
                .with_state(shared.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            return InPlaceServer { address, shared };
        }
        panic!("no free loopback address for port 8081 (is something listening on 0.0.0.0:8081?)");
    }

    /// What it answers on `/status` now.
    pub fn status(&self) -> Value {
        self.shared.status.lock().unwrap().clone()
    }

    /// The mutating calls it received, as "stage 2", "switch 2", "unload 1".
    pub fn calls(&self) -> Vec<String> {
        self.shared.calls.lock().unwrap().clone()
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Millisecond)
        .expect("a timestamp rounds")
        .to_string()
}

/// A finished load of `version`.
fn attempt(version: &str, uri: &str, sha256: &str, stage: bool) -> Value {
    json!({"version": version, "stage": stage, "uri": uri, "phase": "ready",
           "bytes_done": MODEL_BYTES, "bytes_total": MODEL_BYTES, "sha256": sha256,
           "reason": null, "message": null, "operator": null,
           "timings": {"fetch_seconds": 0.1, "verify_seconds": 0.01, "load_seconds": 0.05,
                       "warmup_seconds": 0.01, "total_seconds": 0.17}})
}

async fn status_of(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(shared.status.lock().unwrap().clone())
}

fn parameter<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body["parameters"][key].as_str()
}

/// Keeps the call (`verb` and the version it names); returns the version.
fn record(shared: &Shared, verb: &str, body: &Value) -> String {
    let version = parameter(body, "version").unwrap_or_default().to_owned();
    shared
        .calls
        .lock()
        .unwrap()
        .push(format!("{verb} {version}"));
    version
}

/// A stage loads at once; a load that is not a stage is not what InPlace sends.
async fn load(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let version = record(&shared, "stage", &body);
    let uri = parameter(&body, "uri").unwrap_or_default().to_owned();
    let sha256 = parameter(&body, "sha256")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:0>64}", version));
    if body["parameters"]["stage"] != json!(true) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "this stand-in only stages"})),
        );
    }
    let mut status = shared.status.lock().unwrap();
    let versions = status["versions"].as_array_mut().expect("a version list");
    if !versions.iter().any(|v| v["version"] == json!(version)) {
        versions.push(
            json!({"version": version, "uri": uri, "sha256": sha256, "bytes": MODEL_BYTES,
                             "state": "staged", "loaded_at": now()}),
        );
    }
    status["load"] = attempt(&version, &uri, &sha256, true);
    (
        StatusCode::ACCEPTED,
        Json(json!({"name": name, "version": version, "state": "LOADING"})),
    )
}

async fn switch(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let version = record(&shared, "switch", &body);
    let mut status = shared.status.lock().unwrap();
    let serving = status["serving"]["version"].as_str().map(str::to_owned);
    let Some(target) = status["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["version"] == json!(version)))
        .cloned()
    else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("version {version} is not loaded")})),
        );
    };
    let at = now();
    if serving.as_deref() != Some(version.as_str()) {
        for v in status["versions"].as_array_mut().expect("a version list") {
            if v["version"] == json!(version) {
                v["state"] = json!("serving");
            } else if v["state"] == json!("serving") {
                v["state"] = json!("previous");
            }
        }
        status["version"] = target["version"].clone();
        status["sha256"] = target["sha256"].clone();
        status["serving"] = json!({"version": version, "uri": target["uri"], "sha256": target["sha256"],
                                   "bytes": MODEL_BYTES, "platform": "onnxruntime_onnx"});
        status["last_switch"] = json!({"from": serving, "to": version, "at": at});
    }
    (
        StatusCode::OK,
        Json(json!({"name": name, "version": version, "previous": serving, "switched_at": at})),
    )
}

async fn unload(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let version = record(&shared, "unload", &body);
    let mut status = shared.status.lock().unwrap();
    if status["serving"]["version"] == json!(version) {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "the serving version cannot be unloaded"})),
        );
    }
    let versions = status["versions"].as_array_mut().expect("a version list");
    let before = versions.len();
    versions.retain(|v| v["version"] != json!(version));
    let unloaded = versions.len() < before;
    (
        StatusCode::OK,
        Json(json!({"name": name, "version": version, "unloaded": unloaded})),
    )
}
