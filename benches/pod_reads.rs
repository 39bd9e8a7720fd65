//! The cost of reading inside every serving pod, on the local control plane: N ModelDeployments with 2 settled
//! (ready) pods each, every pod's ferry-server played by a small HTTP server on a loopback address of its own
//! (127.x.y.z:8081) that answers `/status` as a serving ferry-server does. The `ferry` binary Cargo built for
//! this target runs as its own process; the test plays the kubelet (pod IP, container running and ready).
//!
//! Once every ModelDeployment shows both pods ready with their SHA-256, the benchmark lets the reads settle and
//! then measures over a window: reads per second (the controller's `ferry_pod_status_reads_total`) against the
//! schedule's own rate (2N pods every [`SETTLED_PERIOD`], the physical floor of a reader that reads every
//! settled pod once a period), the controller's API writes (0 expected: nothing visible changes), and its peak
//! and current resident memory.
//!
//! `cargo bench --bench pod_reads`; settings: `FERRY_BENCH_MODELS` (default 1000),
//! `FERRY_BENCH_WINDOW_SECONDS` (default 60), `FERRY_BENCH_TIMEOUT_SECONDS` (default 600).

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use ferry::api::ModelDeployment;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use support::kubelet::running_pod_status_at;
use support::{control_plane, FerryRun, TestNamespace};

/// The controller's period for settled pods (`controller::pod_reader::SETTLED_PERIOD`).
const SETTLED_PERIOD: Duration = Duration::from_secs(30);
const SHA: &str = "3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8552";

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}

/// The `/status` of a ferry-server serving the model.
fn serving_status() -> String {
    json!({"model": "iris", "phase": "ready", "ready": true, "shutting_down": false, "version": "1",
        "sha256": SHA, "bytes_done": 33562, "bytes_total": 33562, "reason": null, "message": null,
        "operator": null, "serving": {"version": "1", "uri": "s3://models/iris.onnx", "sha256": SHA,
        "bytes": 33562, "platform": "onnxruntime_onnx"}, "load": null, "capabilities": {},
        "admin": {"mode": "token", "credential_id": "0011223344556677"}})
    .to_string()
}

/// Loopback address number `i` (127.20.0.1 onwards).
fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        20 + (i / 65_000) as u8,
        ((i % 65_000) / 250) as u8,
        (i % 250 + 1) as u8,
    )
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn run() {
    let models = setting("FERRY_BENCH_MODELS", 1000) as usize;
    let window = Duration::from_secs(setting("FERRY_BENCH_WINDOW_SECONDS", 60));
    let timeout = Duration::from_secs(setting("FERRY_BENCH_TIMEOUT_SECONDS", 600));
    let pods_wanted = 2 * models;
    let plane = control_plane();
    let client = plane.client().await;
    let ns = TestNamespace::create();
    println!(
        "pod reads: {models} ModelDeployments x 2 settled pods, namespace {}",
        ns.name
    );

    // One fake ferry-server per pod.
    let body = Arc::new(serving_status());
    for i in 0..pods_wanted {
        let listener = tokio::net::TcpListener::bind((address(i), 8081))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "bind {}:8081: {e} (is something listening on 0.0.0.0:8081?)",
                    address(i)
                )
            });
        let body = body.clone();
        let app = Router::new().route(
            "/status",
            get(move || {
                let body = body.clone();
                async move { ([("content-type", "application/json")], (*body).clone()) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    futures::stream::iter(0..models)
        .for_each_concurrent(32, |i| {
            let mds = mds.clone();
            async move {
                let md: ModelDeployment = serde_json::from_value(json!({
                    "apiVersion": "ferry.dev/v1alpha1", "kind": "ModelDeployment",
                    "metadata": {"name": format!("m{i:05}")},
                    "spec": {"replicas": 2, "model": {"uri": "s3://models/iris.onnx", "version": "1", "sha256": SHA}}
                }))
                .unwrap();
                mds.create(&PostParams::default(), &md).await.expect("create");
            }
        })
        .await;
    let controller = FerryRun::watching(&[&ns.name]).start();
    let started = Instant::now();

    // The kubelet: every new pod gets an address of its own, running and ready.
    let mut assigned = 0usize;
    let mut known = std::collections::HashSet::new();
    while assigned < pods_wanted {
        assert!(
            started.elapsed() < timeout,
            "only {assigned} of {pods_wanted} pods appeared"
        );
        let list = pods.list(&ListParams::default()).await.expect("list pods");
        let new: Vec<String> = list
            .items
            .iter()
            .map(|p| p.name_any())
            .filter(|n| !known.contains(n))
            .collect();
        let patches: Vec<(String, String)> = new
            .into_iter()
            .map(|name| {
                let ip = address(assigned).to_string();
                assigned += 1;
                known.insert(name.clone());
                (name, ip)
            })
            .collect();
        futures::stream::iter(patches)
            .for_each_concurrent(32, |(name, ip)| {
                let pods = pods.clone();
                async move {
                    let status = running_pod_status_at(&ip, true);
                    let _ = pods
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await;
                }
            })
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Converged: every ModelDeployment shows both pods ready, serving the pinned file.
    loop {
        let list = mds.list(&ListParams::default()).await.expect("list");
        let done = list
            .items
            .iter()
            .filter(|md| {
                md.status
                    .as_ref()
                    .and_then(|s| s.active.as_ref())
                    .is_some_and(|a| {
                        a.served_sha256 == [SHA] && a.pod_counts.is_some_and(|c| c.ready == 2)
                    })
            })
            .count();
        if done == models {
            break;
        }
        assert!(
            started.elapsed() < timeout,
            "{done} of {models} converged after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let converged = started.elapsed();
    println!("converged (every pod read, ready and its SHA-256 in the status) in {converged:.1?}");

    // Settle one period, then measure.
    tokio::time::sleep(SETTLED_PERIOD + Duration::from_secs(5)).await;
    let before = controller.metrics();
    let window_started = Instant::now();
    tokio::time::sleep(window).await;
    let after = controller.metrics();
    let seconds = window_started.elapsed().as_secs_f64();
    let reads = metric(&after, "ferry_pod_status_reads_total")
        - metric(&before, "ferry_pod_status_reads_total");
    let unreachable = metric(
        &after,
        "ferry_pod_status_reads_total{result=\"unreachable\"}",
    ) - metric(
        &before,
        "ferry_pod_status_reads_total{result=\"unreachable\"}",
    );
    let writes =
        metric(&after, "ferry_api_writes_total") - metric(&before, "ferry_api_writes_total");
    let reconciles =
        metric(&after, "ferry_reconciles_total") - metric(&before, "ferry_reconciles_total");
    let floor = pods_wanted as f64 / SETTLED_PERIOD.as_secs_f64();
    let rate = reads / seconds;
    let pid = controller.pid();
    println!("window {seconds:.0} s, load average {}", load_average());
    println!(
        "reads: {rate:.1}/s ({reads:.0}, {unreachable:.0} unreachable) = {:.2}x the schedule's floor of {floor:.1}/s (2N pods every {}s)",
        rate / floor,
        SETTLED_PERIOD.as_secs()
    );
    println!("API writes while settled: {writes:.0} (target 0); reconciles: {reconciles:.0}");
    println!(
        "controller RSS: peak {:.1} MB, now {:.1} MB (budget 150 MB)",
        proc_status_kb(pid, "VmHWM") as f64 / 1024.0,
        proc_status_kb(pid, "VmRSS") as f64 / 1024.0
    );
    controller.terminate(Duration::from_secs(10));
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}
