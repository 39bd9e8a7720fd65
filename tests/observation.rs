//! The controller's view inside each serving pod, against a real kube-apiserver + kube-controller-manager.
//!
//! The tests play the kubelet (pod IP, container running) and each pod's ferry-server: a small HTTP server on a
//! loopback address of its own (127.x.y.z, port 8081) answers `/status` with what the test sets. The controller
//! runs in this process and reads those servers as it reads real pods.

mod support;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use ferry::api::{ModelDeployment, PodPhase};
use ferry::metrics::Metrics;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use support::kubelet::running_pod_status_at;
use support::{control_plane, eventually, InProcess, TestNamespace};

const SHA: &str = "3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8552";

/// What one fake ferry-server answers on `/status`.
#[derive(Clone)]
struct FakeServer {
    status: Arc<Mutex<Value>>,
    address: Ipv4Addr,
}

impl FakeServer {
    /// Listens on a loopback address of its own, port 8081 (the admin port the controller reads).
    async fn start() -> FakeServer {
        let status = Arc::new(Mutex::new(loading("downloading", 0, 1000)));
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
            let shared = status.clone();
            let app = Router::new().route(
                "/status",
                get(move || {
                    let shared = shared.clone();
                    async move {
                        let body = shared.lock().unwrap().to_string();
                        ([("content-type", "application/json")], body)
                    }
                }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await });
            return FakeServer { status, address };
        }
        panic!("no free loopback address for port 8081 (is something listening on 0.0.0.0:8081?)");
    }

    fn set(&self, status: Value) {
        *self.status.lock().unwrap() = status;
    }
}

/// ferry-server's `/status` while it loads.
fn loading(phase: &str, done: u64, total: u64) -> Value {
    json!({"model": "iris", "phase": phase, "ready": false, "shutting_down": false, "version": null,
        "sha256": null, "bytes_done": done, "bytes_total": total, "reason": null, "message": null,
        "operator": null, "serving": null, "load": null, "capabilities": {},
        "admin": {"mode": "token", "credential_id": "0011223344556677"}})
}

/// ferry-server's `/status` once it serves `sha256`.
fn serving(sha256: &str) -> Value {
    let mut status = loading("ready", 33562, 33562);
    status["ready"] = json!(true);
    status["version"] = json!("1");
    status["sha256"] = json!(sha256);
    status["serving"] = json!({"version": "1", "uri": "s3://models/iris.onnx", "sha256": sha256,
        "bytes": 33562, "platform": "onnxruntime_onnx"});
    status
}

struct World {
    ns: TestNamespace,
    client: Client,
    controller: Option<InProcess>,
    metrics: Arc<Metrics>,
}

impl World {
    async fn new() -> World {
        let ns = TestNamespace::create();
        let client = control_plane().client().await;
        let metrics = Arc::new(Metrics::default());
        let controller = InProcess::watching(&[&ns.name])
            .client(client.clone())
            .metrics(metrics.clone())
            .start()
            .await;
        World {
            ns,
            client,
            controller: Some(controller),
            metrics,
        }
    }

    fn mds(&self) -> Api<ModelDeployment> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    async fn create(&self, name: &str, replicas: i32, rollout: Value) {
        let md: ModelDeployment = serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "model": {"uri": "s3://models/iris.onnx", "version": "1", "sha256": SHA},
                     "rollout": rollout}
        }))
        .unwrap();
        self.mds()
            .create(&PostParams::default(), &md)
            .await
            .unwrap();
    }

    async fn get(&self, name: &str) -> ModelDeployment {
        self.mds().get(name).await.unwrap()
    }

    /// Plays the kubelet for `count` pods of `name`: each gets a fake server's address and a running container.
    async fn start_pods(&self, name: &str, servers: &[FakeServer]) -> Vec<String> {
        let pods = eventually(&format!("{} pods of {name}", servers.len()), || async {
            let list = self
                .pods()
                .list(&ListParams::default().labels(&format!("ferry.dev/model-deployment={name}")))
                .await
                .ok()?;
            (list.items.len() == servers.len()).then_some(list.items)
        })
        .await;
        let mut names = Vec::new();
        for (pod, server) in pods.iter().zip(servers) {
            self.set_pod(&pod.name_any(), server.address, false).await;
            names.push(pod.name_any());
        }
        names
    }

    async fn set_pod(&self, pod: &str, ip: Ipv4Addr, ready: bool) {
        self.pods()
            .patch_status(
                pod,
                &PatchParams::default(),
                &Patch::Merge(&running_pod_status_at(&ip.to_string(), ready)),
            )
            .await
            .unwrap();
    }

    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&ModelDeployment) -> bool,
    ) -> ModelDeployment {
        eventually(what, || async {
            let md = self.mds().get(name).await.ok()?;
            check(&md).then_some(md)
        })
        .await
    }

    async fn finish(mut self) {
        if let Some(controller) = self.controller.take() {
            controller
                .stop()
                .await
                .expect("the controller stops cleanly");
        }
    }
}

fn candidate(md: &ModelDeployment) -> Option<&ferry::api::RevisionStatus> {
    md.status.as_ref()?.candidate.as_deref()
}

fn degraded(md: &ModelDeployment) -> Option<(String, String)> {
    let condition = md
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")?;
    (condition.status == "True").then(|| (condition.reason.clone(), condition.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pods_phase_progress_and_sha256_reach_the_status_written_only_on_visible_steps() {
    let world = World::new().await;
    world.create("iris", 2, json!({})).await;
    let servers = [FakeServer::start().await, FakeServer::start().await];
    let pods = world.start_pods("iris", &servers).await;

    let md = world
        .wait_for("iris", "both pods reported downloading", |md| {
            candidate(md)
                .and_then(|c| c.pod_counts)
                .is_some_and(|c| c.loading == 2)
                && candidate(md)
                    .is_some_and(|c| c.pods.iter().all(|p| p.phase == PodPhase::Downloading))
        })
        .await;
    let progress = candidate(&md)
        .unwrap()
        .progress
        .clone()
        .expect("progress while loading");
    assert_eq!(
        (progress.phase, progress.percent, progress.bytes_total),
        (PodPhase::Downloading, Some(0), Some(2000))
    );

    // Bytes that move within a step of 5 percent are progress, but nothing to write.
    let version = world.get("iris").await.metadata.resource_version;
    let started = Instant::now();
    let mut done = 0;
    while started.elapsed() < Duration::from_secs(6) {
        done += 1;
        for server in &servers {
            server.set(loading("downloading", done, 1000));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(done < 50, "stayed within the first step");
    assert_eq!(
        world.get("iris").await.metadata.resource_version,
        version,
        "no status write without a visible change"
    );

    // Steps of 5 percent every 300 ms: shown, but written at most every 5 s.
    let writes = Arc::new(Mutex::new(0));
    let watcher = {
        let mds = world.mds();
        let writes = writes.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                if let Ok(md) = mds.get("iris").await {
                    if last.as_ref() != Some(&md.metadata.resource_version) {
                        if last.is_some() {
                            *writes.lock().unwrap() += 1;
                        }
                        last = Some(md.metadata.resource_version.clone());
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    for percent in (10..=95).step_by(5) {
        for server in &servers {
            server.set(loading("downloading", percent * 10, 1000));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let elapsed = started.elapsed();
    let md = world
        .wait_for("iris", "95 percent shown", |md| {
            candidate(md)
                .and_then(|c| c.progress.as_ref())
                .and_then(|p| p.percent)
                == Some(95)
        })
        .await;
    watcher.abort();
    let writes = *writes.lock().unwrap();
    let budget = elapsed.as_secs() / 5 + 2;
    assert!(
        (1..=budget).contains(&writes),
        "{writes} status writes for 18 steps in {elapsed:?} (budget {budget})"
    );
    assert!(world
        .metrics
        .render()
        .contains("ferry_status_writes_deferred_total"));
    let pod = &candidate(&md).unwrap().pods[0];
    assert_eq!((pod.bytes_done, pod.bytes_total), (Some(950), Some(1000)));
    assert!(pod.load_started_at.is_some(), "for the rate and time left");

    // Served: the kubelet marks the pods ready, the servers report what they serve.
    for (pod, server) in pods.iter().zip(&servers) {
        server.set(serving(SHA));
        world.set_pod(pod, server.address, true).await;
    }
    let md = world
        .wait_for(
            "iris",
            "the active revision serving the pinned SHA-256",
            |md| {
                md.status
                    .as_ref()
                    .and_then(|s| s.active.as_ref())
                    .is_some_and(|a| {
                        a.served_sha256 == [SHA] && a.pod_counts.is_some_and(|c| c.ready == 2)
                    })
            },
        )
        .await;
    assert_eq!(degraded(&md), None);

    // A pod that serves another file than the pinned one is surfaced, not hidden.
    servers[1].set(serving(&"ab".repeat(32)));
    let md = world
        .wait_for("iris", "the mismatch reported", |md| {
            degraded(md).is_some_and(|(reason, _)| reason == "ServedChecksumMismatch")
        })
        .await;
    let (_, message) = degraded(&md).unwrap();
    assert!(message.contains(&"ab".repeat(32)), "{message}");
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_does_not_answer_is_unreachable_never_failed() {
    let world = World::new().await;
    world.create("quiet", 1, json!({})).await;
    // An address nothing listens on: connection refused.
    let silent = Ipv4Addr::new(127, 201, rand::random(), rand::random_range(1..=254));
    let pod = eventually("the pod", || async {
        let list = world
            .pods()
            .list(&ListParams::default().labels("ferry.dev/model-deployment=quiet"))
            .await
            .ok()?;
        list.items.first().map(|p| p.name_any())
    })
    .await;
    world.set_pod(&pod, silent, false).await;
    let md = world
        .wait_for("quiet", "the pod reported unreachable", |md| {
            candidate(md)
                .and_then(|c| c.pod_counts)
                .is_some_and(|c| c.unreachable == 1)
        })
        .await;
    let candidate = candidate(&md).unwrap();
    assert_eq!(candidate.reason.as_deref(), Some("Loading"), "not aborted");
    assert_eq!(candidate.pod_counts.unwrap().failed, 0);
    assert_eq!(candidate.pods[0].phase, PodPhase::Unreachable);
    assert_eq!(candidate.pods[0].reason.as_deref(), Some("Unreachable"));
    assert!(
        candidate.pods[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("refused")),
        "{:?}",
        candidate.pods[0].message
    );
    assert!(world
        .metrics
        .render()
        .contains("ferry_pod_status_reads_total{result=\"unreachable\"}"));
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_stops_moving_is_aborted_at_the_progress_deadline_and_one_that_moves_is_not() {
    let world = World::new().await;
    world
        .create("moving", 1, json!({"progressDeadlineSeconds": 10}))
        .await;
    world
        .create("stuck", 1, json!({"progressDeadlineSeconds": 10}))
        .await;
    let moving = FakeServer::start().await;
    let stuck = FakeServer::start().await;
    world
        .start_pods("moving", std::slice::from_ref(&moving))
        .await;
    world
        .start_pods("stuck", std::slice::from_ref(&stuck))
        .await;
    stuck.set(loading("downloading", 300, 1000));
    let started = Instant::now();
    let mut done = 0;
    let mut aborted_after = None;
    // The moving load takes longer than the deadline, a little at a time.
    while started.elapsed() < Duration::from_secs(18) {
        done += 20;
        moving.set(loading("downloading", done, 1000));
        if aborted_after.is_none() && degraded(&world.get("stuck").await).is_some() {
            aborted_after = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let aborted_after = aborted_after.expect("the stuck load was aborted");
    assert!(
        aborted_after <= Duration::from_secs(10 + 2 + 2),
        "aborted {aborted_after:?} after the last progress: the deadline plus about one read period"
    );
    let (reason, message) = degraded(&world.get("stuck").await).unwrap();
    assert_eq!(reason, "ProgressDeadlineExceeded");
    assert!(
        message.contains("no load progress for")
            && message.contains("downloading at 300 B of 1000 B"),
        "{message}"
    );
    assert_eq!(
        degraded(&world.get("moving").await),
        None,
        "a load that moves is not aborted"
    );
    assert_eq!(
        candidate(&world.get("moving").await)
            .unwrap()
            .reason
            .as_deref(),
        Some("Loading")
    );
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_fails_inside_a_running_pod_reaches_the_status_with_the_servers_reason() {
    let world = World::new().await;
    world.create("broken", 1, json!({})).await;
    let server = FakeServer::start().await;
    world
        .start_pods("broken", std::slice::from_ref(&server))
        .await;
    // The server is still running (no termination message): only its /status says the load failed.
    let mut failed = loading("failed", 33562, 33562);
    failed["reason"] = json!("ChecksumMismatch");
    failed["message"] = json!(format!("expected {SHA}, got {}", "cd".repeat(32)));
    server.set(failed);
    let md = world
        .wait_for("broken", "the candidate aborted", |md| {
            degraded(md).is_some()
        })
        .await;
    let (reason, message) = degraded(&md).unwrap();
    assert_eq!(reason, "ModelLoadFailed");
    assert!(
        message.contains("ChecksumMismatch") && message.contains(&"cd".repeat(32)),
        "{message}"
    );
    let status = md.status.unwrap();
    let history = &status.history[0];
    assert_eq!(history.outcome, ferry::api::Outcome::Aborted);
    world.finish().await;
}
