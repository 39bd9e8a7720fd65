//! The controller against a real kube-apiserver + kube-controller-manager.
//!
//! There is no kubelet: the tests play it by writing Pod status (ready, or terminated with ferry-server's
//! termination message), and the real ReplicaSet and Deployment controllers turn that into Deployment status.
//! A background checker samples the active Service throughout every scenario and fails the test if it ever
//! selects a revision without an available pod.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::api::{ModelDeployment, Outcome, Phase};
use ferry::config::OperatorConfig;
use ferry::metrics::Metrics;
use ferry::server_contract::Reason;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, ResourceQuota, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use support::{
    control_plane, eventually, FerryRun, InProcess, Kubelet, TestNamespace, TestRuntime,
};
use tokio::task::JoinHandle;

/// One scenario's world: a namespace, a running controller watching it, and the invariant checker.
struct World {
    ns: TestNamespace,
    client: Client,
    /// The tests play the kubelet.
    kubelet: Kubelet,
    controller: Option<InProcess>,
    checker_stop: Arc<AtomicBool>,
    checker: Option<JoinHandle<()>>,
    violations: Arc<Mutex<Vec<String>>>,
    metrics: Arc<Metrics>,
    /// The controller's configuration, kept across restarts (its admin key above all).
    config: OperatorConfig,
}

impl World {
    async fn new() -> Self {
        let ns = TestNamespace::create();
        let client = control_plane().client().await;
        let mut world = World {
            kubelet: Kubelet::new(&client, &ns.name),
            ns,
            client,
            controller: None,
            checker_stop: Arc::new(AtomicBool::new(false)),
            checker: None,
            violations: Arc::default(),
            metrics: Arc::new(Metrics::default()),
            config: OperatorConfig::default(),
        };
        world.start_controller().await;
        world.start_checker();
        world
    }

    async fn start_controller(&mut self) {
        let controller = InProcess::watching(&[&self.ns.name])
            .client(self.client.clone())
            .config(self.config.clone())
            .metrics(self.metrics.clone())
            .start()
            .await;
        self.controller = Some(controller);
    }

    /// Kills the controller abruptly, as a crash would.
    async fn kill_controller(&mut self) {
        if let Some(controller) = self.controller.take() {
            controller.kill().await;
        }
    }

    fn start_checker(&mut self) {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns.name);
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns.name);
        let mds: Api<ModelDeployment> = Api::namespaced(self.client.clone(), &self.ns.name);
        let stop = self.checker_stop.clone();
        let violations = self.violations.clone();
        self.checker = Some(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(list) = services
                    .list(&ListParams::default().labels("ferry.dev/model-deployment"))
                    .await
                {
                    for service in list.items.iter().filter(|s| {
                        !s.metadata
                            .name
                            .as_deref()
                            .unwrap_or("")
                            .ends_with("-preview")
                    }) {
                        let selector = service
                            .spec
                            .as_ref()
                            .and_then(|s| s.selector.clone())
                            .unwrap_or_default();
                        let Some(revision) =
                            selector.get("ferry.dev/revision").filter(|r| *r != "none")
                        else {
                            continue;
                        };
                        // Deleting a ModelDeployment takes its pods and Services down together.
                        let owner = service.metadata.name.clone().unwrap_or_default();
                        let owner_alive = mds
                            .get_opt(&owner)
                            .await
                            .ok()
                            .flatten()
                            .is_some_and(|md| md.metadata.deletion_timestamp.is_none());
                        if !owner_alive {
                            continue;
                        }
                        let found = deployments
                            .list(
                                &ListParams::default()
                                    .labels(&format!("ferry.dev/revision={revision}")),
                            )
                            .await;
                        if let Ok(found) = found {
                            let available = found
                                .items
                                .iter()
                                .map(|d| {
                                    d.status
                                        .as_ref()
                                        .and_then(|s| s.available_replicas)
                                        .unwrap_or(0)
                                })
                                .max()
                                .unwrap_or(0);
                            if available < 1 {
                                violations.lock().unwrap().push(format!(
                                    "active Service {} selected revision {revision} with no available pod",
                                    service.metadata.name.as_deref().unwrap_or_default()
                                ));
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }));
    }

    async fn finish(mut self) {
        self.checker_stop.store(true, Ordering::Relaxed);
        if let Some(checker) = self.checker.take() {
            let _ = checker.await;
        }
        if let Some(controller) = self.controller.take() {
            controller
                .stop()
                .await
                .expect("the controller stops cleanly");
        }
        let violations = self.violations.lock().unwrap().clone();
        assert!(
            violations.is_empty(),
            "invariant violated:\n{}",
            violations.join("\n")
        );
    }

    fn mds(&self) -> Api<ModelDeployment> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }
    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    async fn create(&self, name: &str, version: &str, extra: serde_json::Value) -> ModelDeployment {
        let mut object = json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": self.ns.name},
            "spec": {"model": {"uri": format!("s3://models/{name}/{version}.onnx"), "version": version}, "replicas": 2}
        });
        merge(&mut object["spec"], extra);
        let md: ModelDeployment = serde_json::from_value(object).expect("valid ModelDeployment");
        self.mds()
            .create(&PostParams::default(), &md)
            .await
            .expect("create ModelDeployment")
    }

    async fn set_version(&self, name: &str, version: &str) {
        let body = json!({"spec": {"model": {"uri": format!("s3://models/{name}/{version}.onnx"), "version": version}}});
        self.mds()
            .patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .expect("patch spec");
    }

    async fn get(&self, name: &str) -> ModelDeployment {
        self.mds().get(name).await.expect("get ModelDeployment")
    }

    /// The revision whose Deployment serves `version`, once it exists.
    async fn revision_of(&self, name: &str, version: &str) -> String {
        support::revision_of(&self.deployments(), name, version).await
    }

    async fn active_revision(&self, name: &str) -> Option<String> {
        let service = self.services().get_opt(name).await.ok()??;
        service
            .spec?
            .selector?
            .get("ferry.dev/revision")
            .filter(|r| *r != "none")
            .cloned()
    }

    async fn wait_active(&self, name: &str, revision: &str) {
        eventually(
            &format!("the active Service of {name} to select {revision}"),
            || async {
                (self.active_revision(name).await.as_deref() == Some(revision)).then_some(())
            },
        )
        .await;
    }

    async fn deployment_count(&self, name: &str) -> usize {
        self.deployments()
            .list(&ListParams::default().labels(&format!("ferry.dev/model-deployment={name}")))
            .await
            .expect("list Deployments")
            .items
            .len()
    }

    async fn replicas_of(&self, name: &str, revision: &str) -> i32 {
        self.deployments()
            .get(&format!("{name}-{revision}"))
            .await
            .expect("get Deployment")
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(-1)
    }

    async fn wait_status<F>(&self, name: &str, what: &str, check: F) -> ModelDeployment
    where
        F: Fn(&ModelDeployment) -> bool,
    {
        eventually(what, || async {
            let md = self.mds().get(name).await.ok()?;
            check(&md).then_some(md)
        })
        .await
    }

    /// Waits for an Event with `reason` on `name` (events follow the status write of their reconcile).
    async fn wait_event(&self, name: &str, reason: &str) {
        eventually(&format!("a {reason} event on {name}"), || async {
            self.event_reasons(name)
                .await
                .iter()
                .any(|r| r == reason)
                .then_some(())
        })
        .await;
    }

    async fn event_reasons(&self, name: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns.name);
        events
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .filter_map(|e| e.reason)
            .collect()
    }

    /// A ModelRuntime of this test's catalogue, `<namespace>-<suffix>`.
    async fn runtime(&self, suffix: &str, spec: serde_json::Value) -> TestRuntime {
        TestRuntime::create(&self.client, &self.ns.name, suffix, spec).await
    }

    /// The image of the serving container of `name`'s revision `revision`.
    async fn image_of(&self, name: &str, revision: &str) -> Option<String> {
        let deployment = self
            .deployments()
            .get(&format!("{name}-{revision}"))
            .await
            .expect("get Deployment");
        deployment.spec?.template.spec?.containers[0].image.clone()
    }

    async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.mds()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": spec })),
            )
            .await
            .expect("patch spec");
    }

    /// Runs the `ferry` binary (the kubectl plugin) against the control plane.
    fn plugin(&self, args: &[&str]) -> String {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .env("KUBECONFIG", &control_plane().kubeconfig)
            .args(args)
            .args(["-n", &self.ns.name])
            .output()
            .expect("ferry runs");
        assert!(
            output.status.success(),
            "ferry {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

fn merge(target: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(target), serde_json::Value::Object(extra)) = (target.as_object_mut(), extra) {
        for (key, value) in extra {
            match target.get_mut(&key) {
                Some(existing) if existing.is_object() && value.is_object() => {
                    merge(existing, value)
                }
                _ => {
                    target.insert(key, value);
                }
            }
        }
    }
}

fn condition_reason(md: &ModelDeployment, type_: &str) -> Option<(String, String, String)> {
    md.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn is_ready(md: &ModelDeployment) -> bool {
    condition_reason(md, "Ready").is_some_and(|(status, _, _)| status == "True")
}

/// Deploys `name` at version 1 and waits until it serves; returns its revision.
async fn serving(world: &World, name: &str, extra: serde_json::Value) -> String {
    world.create(name, "1", extra).await;
    let first = world.revision_of(name, "1").await;
    assert_eq!(
        world.active_revision(name).await,
        None,
        "nothing serves before the first version is ready"
    );
    world.kubelet.make_ready(name, &first).await;
    world.wait_active(name, &first).await;
    world.wait_status(name, "Ready", is_ready).await;
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_deploy_becomes_ready_and_a_bump_is_promoted_only_once_available() {
    let world = World::new().await;
    let first = serving(&world, "iris", json!({"rollout": {"previousReplicas": 1}})).await;
    let wait = control_plane().kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "md/iris",
        "-n",
        &world.ns.name,
        "--timeout=30s",
    ]);
    assert!(wait.contains("condition met"), "{wait}");
    let md = world.get("iris").await;
    let status = md.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Available));
    assert_eq!(status.active.as_ref().unwrap().revision, first);
    assert_eq!(
        status.selector.as_deref(),
        Some(format!("ferry.dev/model-deployment=iris,ferry.dev/revision={first}").as_str())
    );
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("http://iris.{}.svc.cluster.local:8080", world.ns.name).as_str())
    );

    world.set_version("iris", "2").await;
    let second = world.revision_of("iris", "2").await;
    let progressing = world
        .wait_status("iris", "the candidate in status", |md| {
            md.status
                .as_ref()
                .and_then(|s| s.candidate.as_ref())
                .is_some_and(|c| c.revision == second)
        })
        .await;
    assert_eq!(progressing.status.unwrap().phase, Some(Phase::Progressing));
    assert_eq!(
        world.active_revision("iris").await.as_deref(),
        Some(first.as_str()),
        "traffic waits for the candidate"
    );
    let preview = world.services().get("iris-preview").await.unwrap();
    assert_eq!(
        preview.spec.unwrap().selector.unwrap()["ferry.dev/revision"],
        second
    );

    world.kubelet.make_ready("iris", &second).await;
    world.wait_active("iris", &second).await;
    let md = world
        .wait_status("iris", "version 2 active", |md| {
            md.status
                .as_ref()
                .and_then(|s| s.active.as_ref())
                .is_some_and(|a| a.version == "2")
        })
        .await;
    let status = md.status.unwrap();
    assert_eq!(status.previous[0].revision, first);
    assert_eq!(status.history[0].outcome, Outcome::Promoted);
    eventually(
        "the previous revision scaled to previousReplicas",
        || async { (world.replicas_of("iris", &first).await == 1).then_some(()) },
    )
    .await;
    for expected in ["RolloutStarted", "Promoted"] {
        eventually(&format!("one {expected} event per version"), || async {
            let reasons = world.event_reasons("iris").await;
            (reasons.iter().filter(|r| *r == expected).count() == 2).then_some(())
        })
        .await;
    }
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_fails_to_load_never_gets_traffic_and_is_aborted_with_the_servers_reason()
{
    let world = World::new().await;
    let first = serving(&world, "fraud", json!({})).await;
    world.set_version("fraud", "2").await;
    let second = world.revision_of("fraud", "2").await;
    world
        .kubelet
        .fail_load(
            &second,
            Reason::ChecksumMismatch,
            "expected sha256 00aa..., got 11bb...",
        )
        .await;
    let md = world
        .wait_status("fraud", "Degraded", |md| {
            condition_reason(md, "Degraded").is_some_and(|(status, _, _)| status == "True")
        })
        .await;
    let (_, reason, message) = condition_reason(&md, "Degraded").unwrap();
    assert_eq!(reason, "ModelLoadFailed");
    assert!(message.contains("ChecksumMismatch"), "{message}");
    let status = md.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Degraded));
    assert_eq!(status.history[0].outcome, Outcome::Aborted);
    assert_eq!(
        world.active_revision("fraud").await.as_deref(),
        Some(first.as_str())
    );
    eventually("the aborted candidate scaled to zero", || async {
        (world.replicas_of("fraud", &second).await == 0).then_some(())
    })
    .await;
    world.wait_event("fraud", "RolloutAborted").await;
    assert!(
        is_ready(&world.get("fraud").await),
        "the old version still serves"
    );
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_not_ready_by_its_deadline_is_aborted() {
    let world = World::new().await;
    let first = serving(
        &world,
        "slow",
        json!({"rollout": {"loadTimeoutSeconds": 3}}),
    )
    .await;
    world.set_version("slow", "2").await;
    let md = world
        .wait_status("slow", "ProgressDeadlineExceeded", |md| {
            condition_reason(md, "Degraded")
                .is_some_and(|(_, reason, _)| reason == "ProgressDeadlineExceeded")
        })
        .await;
    assert_eq!(md.status.unwrap().active.unwrap().revision, first);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_a_warm_revision_is_immediate_and_creates_nothing() {
    let world = World::new().await;
    let first = serving(&world, "iris", json!({})).await;
    world.set_version("iris", "2").await;
    let second = world.revision_of("iris", "2").await;
    world.kubelet.make_ready("iris", &second).await;
    world.wait_active("iris", &second).await;
    world
        .wait_status("iris", "version 2 Ready", |md| {
            is_ready(md)
                && md
                    .status
                    .as_ref()
                    .and_then(|s| s.active.as_ref())
                    .is_some_and(|a| a.version == "2")
        })
        .await;
    let count = world.deployment_count("iris").await;

    // Declarative: the spec goes back to version 1, whose pods are still warm.
    world.set_version("iris", "1").await;
    world.wait_active("iris", &first).await;
    let md = world
        .wait_status("iris", "rolled back", |md| {
            md.status.as_ref().is_some_and(|s| {
                s.history
                    .first()
                    .is_some_and(|h| h.outcome == Outcome::RolledBack)
            })
        })
        .await;
    assert_eq!(md.status.unwrap().active.unwrap().version, "1");
    assert_eq!(
        world.deployment_count("iris").await,
        count,
        "no Deployment was created"
    );

    // Imperative: `kubectl ferry rollback` patches the spec back to the previous revision.
    let out = world.plugin(&["rollback", "iris"]);
    assert!(out.contains("rolling back to version 2"), "{out}");
    world.wait_active("iris", &second).await;
    assert_eq!(world.get("iris").await.spec.model.version, "2");
    let out = world.plugin(&["rollback", "iris", "--to", "1"]);
    assert!(out.contains("version 1"), "{out}");
    world.wait_active("iris", &first).await;
    let history = world.plugin(&["history", "iris"]);
    assert!(history.contains("RolledBack"), "{history}");
    assert_eq!(world.deployment_count("iris").await, count);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_mid_rollout_supersedes_the_candidate() {
    let world = World::new().await;
    let first = serving(&world, "iris", json!({})).await;
    world.set_version("iris", "2").await;
    let second = world.revision_of("iris", "2").await;
    world
        .wait_status("iris", "version 2 as candidate", |md| {
            md.status
                .as_ref()
                .and_then(|s| s.candidate.as_ref())
                .is_some_and(|c| c.version == "2")
        })
        .await;
    world.set_version("iris", "3").await;
    let third = world.revision_of("iris", "3").await;
    let md = world
        .wait_status("iris", "version 2 superseded", |md| {
            md.status.as_ref().is_some_and(|s| {
                s.history
                    .iter()
                    .any(|h| h.outcome == Outcome::Superseded && h.version == "2")
            })
        })
        .await;
    assert_eq!(md.status.unwrap().candidate.unwrap().revision, third);
    eventually("the superseded candidate scaled to zero", || async {
        (world.replicas_of("iris", &second).await == 0).then_some(())
    })
    .await;
    assert_eq!(
        world.active_revision("iris").await.as_deref(),
        Some(first.as_str())
    );
    world.kubelet.make_ready("iris", &third).await;
    world.wait_active("iris", &third).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_promote_a_ready_candidate_waits_for_kubectl_ferry_promote() {
    let world = World::new().await;
    let first = serving(&world, "iris", json!({"rollout": {"autoPromote": false}})).await;
    world.set_version("iris", "2").await;
    let second = world.revision_of("iris", "2").await;
    world.kubelet.make_ready("iris", &second).await;
    world
        .wait_status("iris", "WaitingForPromotion", |md| {
            condition_reason(md, "Progressing")
                .is_some_and(|(_, reason, _)| reason == "WaitingForPromotion")
        })
        .await;
    assert_eq!(
        world.active_revision("iris").await.as_deref(),
        Some(first.as_str())
    );
    world.wait_event("iris", "CandidateReady").await;
    let status = world.plugin(&["status", "iris"]);
    assert!(
        status.contains("candidate:") && status.contains("WaitingForPromotion"),
        "{status}"
    );
    let out = world.plugin(&["promote", "iris"]);
    assert!(out.contains(&second), "{out}");
    world.wait_active("iris", &second).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_ferry_abort_stops_a_rollout() {
    let world = World::new().await;
    let first = serving(&world, "iris", json!({})).await;
    world.set_version("iris", "2").await;
    let second = world.revision_of("iris", "2").await;
    world
        .wait_status("iris", "version 2 as candidate", |md| {
            md.status
                .as_ref()
                .and_then(|s| s.candidate.as_ref())
                .is_some_and(|c| c.revision == second)
        })
        .await;
    world.plugin(&["abort", "iris"]);
    world
        .wait_status("iris", "AbortedByUser", |md| {
            condition_reason(md, "Degraded").is_some_and(|(_, reason, _)| reason == "AbortedByUser")
        })
        .await;
    assert_eq!(
        world.active_revision("iris").await.as_deref(),
        Some(first.as_str())
    );
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_resizes_the_active_revision_and_the_candidate() {
    let world = World::new().await;
    let first = serving(&world, "iris", json!({})).await;
    control_plane().kubectl_ok(&["scale", "md/iris", "--replicas=3", "-n", &world.ns.name]);
    eventually("the active Deployment at 3 replicas", || async {
        (world.replicas_of("iris", &first).await == 3).then_some(())
    })
    .await;
    world.set_version("iris", "2").await;
    let second = world.revision_of("iris", "2").await;
    control_plane().kubectl_ok(&["scale", "md/iris", "--replicas=4", "-n", &world.ns.name]);
    eventually("both Deployments at 4 replicas", || async {
        (world.replicas_of("iris", &first).await == 4
            && world.replicas_of("iris", &second).await == 4)
            .then_some(())
    })
    .await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_model_deployment_garbage_collects_its_children() {
    let world = World::new().await;
    serving(&world, "iris", json!({})).await;
    world
        .mds()
        .delete("iris", &DeleteParams::foreground())
        .await
        .expect("delete");
    eventually("children garbage-collected", || async {
        let deployments = world.deployment_count("iris").await;
        let services = world
            .services()
            .list(&ListParams::default().labels("ferry.dev/model-deployment=iris"))
            .await
            .ok()?
            .items
            .len();
        (deployments == 0 && services == 0).then_some(())
    })
    .await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restarted_mid_rollout_converges() {
    let mut world = World::new().await;
    serving(&world, "iris", json!({})).await;
    world.set_version("iris", "2").await;
    let second = world.revision_of("iris", "2").await;
    world.kill_controller().await;
    world.kubelet.make_ready("iris", &second).await;
    world.start_controller().await;
    world.wait_active("iris", &second).await;
    let md = world
        .wait_status("iris", "version 2 Ready", |md| {
            is_ready(md)
                && md
                    .status
                    .as_ref()
                    .and_then(|s| s.active.as_ref())
                    .is_some_and(|a| a.version == "2")
        })
        .await;
    assert_eq!(
        md.status
            .unwrap()
            .history
            .iter()
            .filter(|h| h.outcome == Outcome::Promoted && h.version == "2")
            .count(),
        1
    );
    assert_eq!(world.deployment_count("iris").await, 2);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapplying_the_same_manifest_creates_no_revision() {
    let world = World::new().await;
    let manifest = format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: iris, namespace: {}}}\nspec:\n  model: {{uri: 's3://models/iris/1.onnx', version: '1'}}\n",
        world.ns.name
    );
    let apply = [
        "apply",
        "--server-side",
        "--field-manager=gitops",
        "-f",
        "-",
    ];
    control_plane().kubectl_with_stdin(&apply, Some(&manifest));
    let first = world.revision_of("iris", "1").await;
    world.kubelet.make_ready("iris", &first).await;
    world.wait_status("iris", "Ready", is_ready).await;
    let before = world.get("iris").await;
    let output = control_plane().kubectl_with_stdin(&apply, Some(&manifest));
    assert!(output.status.success());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = world.get("iris").await;
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert_eq!(world.deployment_count("iris").await, 1);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_respects_keep_previous_and_revision_history_limit() {
    let world = World::new().await;
    let mut revisions = vec![
        serving(
            &world,
            "iris",
            json!({"revisionHistoryLimit": 1, "rollout": {"keepPrevious": 1}}),
        )
        .await,
    ];
    for version in ["2", "3", "4"] {
        world.set_version("iris", version).await;
        let revision = world.revision_of("iris", version).await;
        world.kubelet.make_ready("iris", &revision).await;
        world.wait_active("iris", &revision).await;
        revisions.push(revision);
    }
    let names: BTreeMap<String, i32> = eventually("old revisions pruned", || async {
        let list = world
            .deployments()
            .list(&ListParams::default().labels("ferry.dev/model-deployment=iris"))
            .await
            .ok()?;
        let names: BTreeMap<String, i32> = list
            .items
            .iter()
            .filter(|d| d.metadata.deletion_timestamp.is_none())
            .map(|d| {
                (
                    d.metadata.labels.clone().unwrap()["ferry.dev/revision"].clone(),
                    d.spec.as_ref().unwrap().replicas.unwrap(),
                )
            })
            .collect();
        (names.len() == 2).then_some(names)
    })
    .await;
    assert_eq!(names.get(&revisions[3]), Some(&2), "active");
    assert_eq!(names.get(&revisions[2]), Some(&2), "one warm previous");
    world.finish().await;
}

/// Every Deployment the API server reports in the namespace from now on, created or changed, by name: a window
/// watched whole, not a look after a sleep.
fn record_deployments(world: &World) -> (Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
    use futures::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let into = seen.clone();
    let stream = watcher(world.deployments(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(deployment) = event {
                into.lock()
                    .unwrap()
                    .push(deployment.metadata.name.unwrap_or_default());
            }
        }
    });
    (seen, task)
}

/// The image of the catalogue tests' Python runtimes.
const PYTHON_IMAGE: &str = "registry.example.com/ferry-server-python:1";

fn onnx_runtime() -> serde_json::Value {
    json!({"image": "registry.example.com/ferry-server:1", "formats": [{"name": "onnx"}]})
}

fn is_no_runtime(md: &ModelDeployment) -> bool {
    condition_reason(md, "Degraded")
        .is_some_and(|(status, reason, _)| status == "True" && reason == "NoRuntime")
}

/// Creates the ModelDeployment `forest` (version 1, with `extra`) and waits until it says no runtime serves it.
async fn created_without_runtime(world: &World, extra: serde_json::Value) -> ModelDeployment {
    world.create("forest", "1", extra).await;
    world
        .wait_status("forest", "NoRuntime", is_no_runtime)
        .await
}

fn degraded_message(md: &ModelDeployment) -> String {
    condition_reason(md, "Degraded").map_or_else(String::new, |(_, _, message)| message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_no_runtime_serves_deploys_nothing_until_a_runtime_serves_it() {
    let world = World::new().await;
    let ns = world.ns.name.clone();
    let _onnx = world.runtime("onnx", onnx_runtime()).await;
    let (deployments, recorder) = record_deployments(&world);
    let md = created_without_runtime(
        &world,
        json!({"model": {"format": "sklearn", "frameworkVersion": "1.9.1"}}),
    )
    .await;
    assert_eq!(
        degraded_message(&md),
        format!(
            "no ModelRuntime serves format sklearn (declared scikit-learn 1.9.1); runtimes: {ns}-onnx (onnx)"
        )
    );
    let status = md.status.clone().unwrap();
    assert!(status.active.is_none() && status.candidate.is_none());
    world.wait_event("forest", "NoRuntime").await;

    // Runtimes that do not serve it: each change of the catalogue reconciles it again, and still nothing is made.
    let _xgboost = world
        .runtime(
            "xgboost",
            json!({"image": "registry.example.com/xgb:1", "formats": [{"name": "xgboost"}]}),
        )
        .await;
    let older = json!({"image": "registry.example.com/skl:1.5", "priority": 10, "formats": [
        {"name": "sklearn", "framework": {"name": "scikit-learn", "versions": "~=1.5.0"}}]});
    let _older = world.runtime("sklearn-1-5", older).await;
    world
        .wait_status("forest", "the catalogue's new runtimes listed", |md| {
            let message = degraded_message(md);
            is_no_runtime(md)
                && message.contains(&format!("{ns}-sklearn-1-5 (sklearn scikit-learn ~=1.5.0)"))
                && message.contains(&format!("{ns}-xgboost (xgboost)"))
        })
        .await;
    assert_eq!(
        *deployments.lock().unwrap(),
        Vec::<String>::new(),
        "no Deployment while no runtime serves it"
    );

    // One that serves it: the Deployment appears on its image, with its settings.
    let python = json!({"image": PYTHON_IMAGE, "imagePullPolicy": "Always",
        "allowedGlobals": ["team_models.*"],
        "formats": [{"name": "sklearn", "framework": {"name": "scikit-learn", "versions": ">=1.9,<1.10"}}]});
    let _python = world.runtime("python", python).await;
    let revision = world.revision_of("forest", "1").await;
    let deployment = world
        .deployments()
        .get(&format!("forest-{revision}"))
        .await
        .unwrap();
    let container = &deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(container.image.as_deref(), Some(PYTHON_IMAGE));
    assert_eq!(container.image_pull_policy.as_deref(), Some("Always"));
    let env = container_env(&deployment);
    assert_eq!(env["FERRY_PYTHON_ALLOWED_GLOBALS"], "team_models.*");
    assert_eq!(env["FERRY_MODEL_FORMAT"], "sklearn");
    world.kubelet.make_ready("forest", &revision).await;
    let md = world.wait_status("forest", "Ready", is_ready).await;
    let active = md.status.unwrap().active.unwrap();
    assert_eq!(
        active.runtime,
        Some(ferry::api::RevisionRuntime {
            name: Some(format!("{ns}-python")),
            image: PYTHON_IMAGE.into(),
        })
    );

    // The runtime goes away: what serves keeps serving, untouched, and the status says why nothing new could be.
    let serving = world
        .deployments()
        .get(&format!("forest-{revision}"))
        .await
        .unwrap();
    drop(_python);
    let md = world
        .wait_status("forest", "NoRuntime while serving", |md| {
            is_no_runtime(md) && is_ready(md)
        })
        .await;
    assert_eq!(md.status.unwrap().active.unwrap().revision, revision);
    let after = world
        .deployments()
        .get(&format!("forest-{revision}"))
        .await
        .unwrap();
    assert_eq!(after.spec, serving.spec);
    assert_eq!(world.deployment_count("forest").await, 1);
    assert_eq!(world.active_revision("forest").await, Some(revision));
    recorder.abort();
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_runtime_that_lacks_the_format_deploys_nothing() {
    let world = World::new().await;
    let ns = world.ns.name.clone();
    let _onnx = world.runtime("onnx", onnx_runtime()).await;
    let python = json!({"image": PYTHON_IMAGE, "formats": [{"name": "sklearn"}]});
    let _python = world.runtime("python", python).await;
    let (deployments, recorder) = record_deployments(&world);
    let md = created_without_runtime(
        &world,
        json!({"model": {"format": "sklearn"}, "runtime": format!("{ns}-onnx")}),
    )
    .await;
    assert_eq!(
        degraded_message(&md),
        format!(
            "ModelRuntime {ns}-onnx (spec.runtime) does not serve format sklearn; runtimes: {ns}-onnx (onnx), \
             {ns}-python (sklearn)"
        )
    );
    world.wait_event("forest", "NoRuntime").await;
    // A reconcile more (a new generation of the spec, still naming the same runtime) makes nothing either.
    world.patch_spec("forest", json!({"replicas": 3})).await;
    world
        .wait_status("forest", "generation 2 observed", |md| {
            is_no_runtime(md) && md.status.as_ref().unwrap().observed_generation == Some(2)
        })
        .await;
    assert_eq!(
        *deployments.lock().unwrap(),
        Vec::<String>::new(),
        "no Deployment for a runtime that lacks the format"
    );

    // Naming the one that serves it deploys on it.
    world
        .patch_spec("forest", json!({"runtime": format!("{ns}-python")}))
        .await;
    let revision = world.revision_of("forest", "1").await;
    assert_eq!(
        world.image_of("forest", &revision).await.as_deref(),
        Some(PYTHON_IMAGE)
    );
    recorder.abort();
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_api_server_refuses_is_reported_in_the_status_until_it_goes_through() {
    let world = World::new().await;
    // A quota of zero Services: the first version's Deployment is created, its Services are refused.
    let quotas: Api<ResourceQuota> = Api::namespaced(world.client.clone(), &world.ns.name);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-services"},
        "spec": {"hard": {"services": "0"}}
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    world.create("iris", "1", json!({})).await;
    let md = world
        .wait_status("iris", "Degraded=ReconcileError", |md| {
            condition_reason(md, "Degraded")
                .is_some_and(|(status, reason, _)| status == "True" && reason == "ReconcileError")
        })
        .await;
    let (_, _, message) = condition_reason(&md, "Degraded").unwrap();
    assert!(
        message.contains("forbidden") && message.contains("services"),
        "the API server's own words name what was refused: {message}"
    );
    assert_eq!(
        condition_reason(&md, "Ready").map(|(status, reason, _)| (status, reason)),
        Some(("False".into(), "ReconcileError".into()))
    );
    assert_eq!(md.status.as_ref().unwrap().observed_generation, Some(1));
    assert!(world.services().get_opt("iris").await.unwrap().is_none());
    let written = md.metadata.resource_version.clone();
    // The failure repeats on every retry, but the status says it once.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(world.get("iris").await.metadata.resource_version, written);
    assert!(world
        .metrics
        .render()
        .contains("ferry_reconcile_errors_total{kind=\"api\"}"));

    // Once the quota is gone the retry goes through and the rollout goes on from where it was.
    quotas
        .delete("no-services", &DeleteParams::default())
        .await
        .unwrap();
    let first = world.revision_of("iris", "1").await;
    world.kubelet.make_ready("iris", &first).await;
    world.wait_active("iris", &first).await;
    let md = world.wait_status("iris", "Ready", is_ready).await;
    let (status, reason, _) = condition_reason(&md, "Degraded").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Healthy"));
    world.finish().await;
}

/// `ferry run` as its own process: metrics and health on its port, the same reconcile, and a clean exit on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_run_serves_metrics_and_stops_on_sigterm() {
    let ns = TestNamespace::create();
    let process = FerryRun::watching(&[&ns.name]).start();
    let sample =
        std::fs::read_to_string(support::repo_root().join("e2e/samples/minimal.yaml")).unwrap();
    control_plane().kubectl_with_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(&sample));
    let client = control_plane().client().await;
    let mds: Api<ModelDeployment> = Api::namespaced(client, &ns.name);
    support::eventually_explained(
        "ferry run to write a status",
        || process.log(),
        || async { mds.get("iris").await.ok()?.status.map(|_| ()) },
    )
    .await;
    let metrics = process.metrics();
    assert!(metrics.contains("ferry_reconciles_total"), "{metrics}");
    assert!(
        metrics.contains("ferry_rollout_transitions_total{outcome=\"RolloutStarted\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_reconcile_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(process
        .http_get("/healthz")
        .unwrap()
        .starts_with("HTTP/1.1 200"));

    let started = std::time::Instant::now();
    let exit = process
        .terminate(Duration::from_secs(15))
        .expect("ferry run exits on SIGTERM");
    assert!(exit.success(), "ferry run exited with {exit}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        started.elapsed()
    );
}

/// With nothing to change, a reconcile writes nothing: not the children, not the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_with_nothing_to_change_writes_nothing() {
    let world = World::new().await;
    serving(&world, "iris", json!({})).await;
    // Let the last status write (ready replicas) land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes_before = world.metrics.api_writes.get();
    let reconciles_before = world.metrics.reconciles.get();
    for i in 0..3 {
        // An annotation change wakes the controller without changing the spec.
        let body = json!({"metadata": {"annotations": {"example.com/touched": i.to_string()}}});
        world
            .mds()
            .patch("iris", &PatchParams::default(), &Patch::Merge(&body))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        world.metrics.reconciles.get() > reconciles_before,
        "the controller reconciled"
    );
    assert_eq!(
        world.metrics.api_writes.get(),
        writes_before,
        "no write without a change"
    );
    let rendered = world.metrics.render();
    assert!(
        rendered.contains("ferry_promotion_latency_seconds_count 1"),
        "the first promotion is measured:\n{rendered}"
    );
    world.finish().await;
}

/// The admin credential the Secret holds, checked against the controller's key.
async fn admin_credential(world: &World, name: &str) -> (String, String) {
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), &world.ns.name);
    let secret = eventually(&format!("the admin Secret of {name}"), || async {
        secrets.get_opt(&format!("{name}-ferry-admin")).await.ok()?
    })
    .await;
    assert_eq!(
        secret.immutable, None,
        "the kubelet refreshes only mutable Secrets"
    );
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("ModelDeployment", name, Some(true))
    );
    let data = secret.data.unwrap();
    let credential = String::from_utf8(data["token"].0.clone()).unwrap();
    let (id, _) = credential.split_once('.').expect("ID.SECRET");
    assert_eq!(
        credential,
        world.config.admin_key.credential(&world.ns.name, name, id),
        "the controller can derive what it wrote without reading it"
    );
    (id.to_owned(), credential)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_model_deployment_gets_its_own_admin_credential_kept_out_of_pod_templates_status_and_events(
) {
    let world = World::new().await;
    serving(&world, "iris", json!({})).await;
    serving(&world, "wine", json!({})).await;
    let (iris_id, iris) = admin_credential(&world, "iris").await;
    let (_, wine) = admin_credential(&world, "wine").await;
    assert_ne!(iris, wine, "one credential per ModelDeployment");

    // Never in the Deployment (pod template included), the status or an event: only the Secret's name is.
    let (_, secret_part) = iris.split_once('.').unwrap();
    let deployments = world
        .deployments()
        .list(&ListParams::default())
        .await
        .unwrap();
    let md = world.get("iris").await;
    let events: Api<Event> = Api::namespaced(world.client.clone(), &world.ns.name);
    let events = events.list(&ListParams::default()).await.unwrap();
    for (what, text) in [
        ("Deployments", serde_json::to_string(&deployments).unwrap()),
        ("the ModelDeployment", serde_json::to_string(&md).unwrap()),
        ("Events", serde_json::to_string(&events).unwrap()),
    ] {
        assert!(!text.contains(secret_part), "the credential is in {what}");
    }
    assert!(serde_json::to_string(&deployments)
        .unwrap()
        .contains("iris-ferry-admin"));
    let issued = |reasons: Vec<String>| {
        reasons
            .iter()
            .filter(|r| *r == "AdminCredentialIssued")
            .count()
    };
    assert_eq!(
        issued(world.event_reasons("iris").await),
        0,
        "the first credential is part of the first rollout"
    );

    // A restarted controller derives the same credential and issues none: the Secret is still there.
    let mut world = world;
    world.kill_controller().await;
    world.start_controller().await;
    world.set_version("iris", "2").await;
    let second = world.revision_of("iris", "2").await;
    world.kubelet.make_ready("iris", &second).await;
    world.wait_active("iris", &second).await;
    assert_eq!(admin_credential(&world, "iris").await.0, iris_id);

    // Rotation: `kubectl ferry rotate` deletes the Secret; the controller issues one with a new id.
    let out = world.plugin(&["rotate", "iris"]);
    assert!(out.contains("iris-ferry-admin"), "{out}");
    let rotated = eventually("a rotated admin credential", || async {
        let secrets: Api<Secret> = Api::namespaced(world.client.clone(), &world.ns.name);
        let secret = secrets.get_opt("iris-ferry-admin").await.ok()??;
        let token = String::from_utf8(secret.data?["token"].0.clone()).ok()?;
        (!token.starts_with(&format!("{iris_id}."))).then_some(token)
    })
    .await;
    let (new_id, _) = admin_credential(&world, "iris").await;
    assert!(rotated.starts_with(&format!("{new_id}.")));
    assert_ne!(new_id, iris_id);
    world.wait_event("iris", "AdminCredentialIssued").await;
    assert_eq!(
        issued(world.event_reasons("iris").await),
        1,
        "a re-issued one is an Event"
    );
    // Traffic never moved for it.
    assert_eq!(
        world.active_revision("iris").await.as_deref(),
        Some(second.as_str())
    );

    // A Secret deleted by hand comes back, with a new id, before the next pods need it.
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), &world.ns.name);
    secrets
        .delete("wine-ferry-admin", &DeleteParams::default())
        .await
        .unwrap();
    world.set_version("wine", "2").await;
    let (wine_new, _) = admin_credential(&world, "wine").await;
    assert_ne!(format!("{wine_new}."), wine[..17]);
    world.finish().await;
}

/// The revision whose Deployment is pinned to `object` (spec.model.refresh), once it exists.
async fn revision_pinned_to(world: &World, name: &str, object: &str) -> String {
    eventually(
        &format!("a revision of {name} pinned to {object}"),
        || async {
            let listed = world
                .deployments()
                .list(&ListParams::default().labels(&format!("ferry.dev/model-deployment={name}")))
                .await
                .ok()?;
            listed.items.into_iter().find_map(|d| {
                let annotations = d.metadata.annotations.as_ref()?;
                (annotations.get("ferry.dev/object").map(String::as_str) == Some(object))
                    .then(|| {
                        d.metadata
                            .labels
                            .as_ref()?
                            .get("ferry.dev/revision")
                            .cloned()
                    })
                    .flatten()
            })
        },
    )
    .await
}

fn container_env(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers[0].env.iter().flatten())
        .into_iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

/// The pods' reads of fake pods fail (no server answers), so the detection itself is the node test's; here the
/// controller's own record of a detection (status.refresh) is written as a detection would leave it, and the
/// rest is the controller: the pinned revision, its rollout, `kubectl ferry rollback` pausing and `resume`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_object_rolls_out_pinned_and_rollback_pauses_refresh_until_resume() {
    let world = World::new().await;
    let first = serving(
        &world,
        "fraud",
        json!({"model": {"refresh": {"intervalSeconds": 30}}}),
    )
    .await;
    let env = container_env(
        &world
            .deployments()
            .get(&format!("fraud-{first}"))
            .await
            .unwrap(),
    );
    assert_eq!(env["FERRY_REFRESH_INTERVAL_SECONDS"], "30");
    assert!(!env.contains_key("FERRY_MODEL_OBJECT"), "{env:?}");
    let md = world
        .wait_status("fraud", "the refresh status", |md| {
            md.status.as_ref().is_some_and(|s| s.refresh.is_some())
        })
        .await;
    let refresh = md.status.unwrap().refresh.unwrap();
    assert!(!refresh.paused && refresh.object.is_none(), "{refresh:?}");

    // A detection, as the controller records it: the whole status under the controller's field manager, so
    // that its next writes own every field of it as they would.
    let uri = md.spec.model.uri.clone();
    let object = "etag:\"0123abcd\"";
    let mut status = serde_json::to_value(world.get("fraud").await.status).unwrap();
    status["refresh"] = json!({"object": object, "uri": uri,
        "detectedAt": "2026-12-02T10:00:00Z", "paused": false});
    let recorded = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ModelDeployment",
        "status": status});
    world
        .mds()
        .patch_status(
            "fraud",
            &PatchParams::apply(ferry::controller::FIELD_MANAGER).force(),
            &Patch::Apply(&recorded),
        )
        .await
        .expect("patch status");
    let pinned = revision_pinned_to(&world, "fraud", object).await;
    assert_ne!(pinned, first);
    let env = container_env(
        &world
            .deployments()
            .get(&format!("fraud-{pinned}"))
            .await
            .unwrap(),
    );
    assert_eq!(
        env["FERRY_MODEL_OBJECT"], object,
        "the pods load exactly that object"
    );
    assert_eq!(
        world.get("fraud").await.spec.model.version,
        "1",
        "the spec is never written"
    );
    world.kubelet.make_ready("fraud", &pinned).await;
    world.wait_active("fraud", &pinned).await;
    let md = world
        .wait_status("fraud", "the pinned revision promoted", |md| {
            md.status.as_ref().is_some_and(|s| {
                s.active.as_ref().is_some_and(|a| a.revision == pinned)
                    && s.history
                        .first()
                        .is_some_and(|h| h.outcome == Outcome::Promoted)
            })
        })
        .await;
    let status = md.status.unwrap();
    let active = status.active.unwrap();
    assert_eq!(active.object.as_deref(), Some(object));
    assert!(active.detected_at.is_some());
    assert_eq!(status.history[0].object.as_deref(), Some(object));

    // Rollback: the first revision (still warm) serves at once, and refresh pauses there.
    let out = world.plugin(&["rollback", "fraud"]);
    assert!(out.contains("refresh is paused"), "{out}");
    world.wait_active("fraud", &first).await;
    let md = world
        .wait_status("fraud", "refresh paused", |md| {
            md.status
                .as_ref()
                .and_then(|s| s.refresh.as_ref())
                .is_some_and(|r| r.paused)
        })
        .await;
    assert_eq!(
        md.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("ferry.dev/refresh-pin")),
        Some(&first)
    );
    let refresh = md.status.as_ref().unwrap().refresh.clone().unwrap();
    assert_eq!(
        refresh.object, None,
        "pinned to the first revision's object: {refresh:?}"
    );
    assert!(
        refresh
            .message
            .as_deref()
            .is_some_and(|m| m.contains("kubectl ferry resume fraud")),
        "{refresh:?}"
    );
    world.wait_event("fraud", "RefreshPaused").await;
    let shown = world.plugin(&["status", "fraud"]);
    assert!(shown.contains("refresh:   PAUSED"), "{shown}");

    // Resume: the pin is removed and refresh follows the URI again.
    let out = world.plugin(&["resume", "fraud"]);
    assert!(out.contains("refresh resumed"), "{out}");
    world
        .wait_status("fraud", "refresh resumed", |md| {
            md.status
                .as_ref()
                .and_then(|s| s.refresh.as_ref())
                .is_some_and(|r| !r.paused)
                && md
                    .metadata
                    .annotations
                    .as_ref()
                    .is_none_or(|a| !a.contains_key("ferry.dev/refresh-pin"))
        })
        .await;
    world.wait_event("fraud", "RefreshResumed").await;

    // Refreshed revisions share their version; their object names them for `rollback --to`.
    let out = world.plugin(&["rollback", "fraud", "--to", object]);
    assert!(out.contains(&format!("revision {pinned}")), "{out}");
    world.wait_active("fraud", &pinned).await;
    world
        .wait_status("fraud", "paused on the pinned object", |md| {
            md.status
                .as_ref()
                .and_then(|s| s.refresh.as_ref())
                .is_some_and(|r| r.paused && r.object.as_deref() == Some(object))
        })
        .await;
    world.finish().await;
}
