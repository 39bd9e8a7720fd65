//! Chaos: many rollouts at once while the controller is killed with SIGKILL at random moments and restarted.
//!
//! N ModelDeployments each play one scenario (promotions, a load failure, a load timeout, a progress deadline,
//! a rollback to a warm version, a supersede mid-rollout, a gated promote, an abort request, pruning, a delete
//! mid-rollout; with strategy InPlace: promotions, a gated promote, a rollback) against the local control plane, while `ferry run` runs as its own process that a monkey
//! SIGKILLs at random moments (seeded) and starts again. At the end every ModelDeployment is in the state its
//! spec asks for, its history lists each transition exactly once, no Deployment, Service or Secret is orphaned
//! or kept beyond `revisionHistoryLimit`, and a checker that sampled every active Service throughout saw no
//! moment where it selected a revision without an available Deployment and a Ready pod.
//!
//! Settings (environment):
//! - `FERRY_CHAOS_MODELS`: ModelDeployments (default 10, one per scenario);
//! - `FERRY_CHAOS_SEED`: the seed of every random choice (default: a random one, printed);
//! - `FERRY_CHAOS_KILLS`: the most kills (default: no limit);
//! - `FERRY_CHAOS_KILL_INTERVAL_MS`: how long each controller lives, from its first reconcile, before its kill,
//!   `MIN-MAX` (default `500-3000`);
//! - `FERRY_CHAOS_WAIT_SECONDS`: the longest wait for one step of a scenario (default 180);
//! - `FERRY_CHAOS_LOGS`: a directory that keeps the journal (every change seen, every kill) and the log of every
//!   `ferry run` (default: a temporary one, kept only when the test fails).
//!
//! The local control plane has no kubelet: a kubelet loop marks the pods of the revisions a scenario lets start
//! Ready as they appear, and makes those of a revision whose model is broken exit with ferry-server's termination
//! message, every one of them, as the server would. Beside the active Services, the observer checks that a
//! revision scaled to zero (aborted, superseded, pruned) is never scaled up again without a spec change: an abort
//! is sticky, a restart must not undo it.
//!
//! Strategy InPlace: the kubelet loop starts each InPlace pod with a small server of its own that plays
//! ferry-server's admin side (`in_place` below); some kills are aimed at a stage under way or at the moment after
//! one pod switched, and the ConfigMaps `<name>-ferry-model` are deleted at random while the scenarios run. On
//! every sample the checker asserts that a version serves only if it was promoted (automatically, or by the
//! test's promote request) and only while every pod that answers holds it loaded.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry::api::{ModelDeployment, Outcome, Phase};
use ferry::children::pod::load_failure;
use ferry::children::service::selected_revision;
use ferry::labels;
use ferry::server_contract::{Reason, TerminationMessage};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::kubelet::{failed_pod_status, ready_pod_status, running_pod_status_at};
use support::{control_plane, FerryRun, TestNamespace};
use tokio::sync::watch;

/// What the environment asks of this run.
#[derive(Clone, Debug)]
struct Settings {
    models: usize,
    seed: u64,
    max_kills: Option<u32>,
    /// How long each controller lives, from its first reconcile, before it is killed, in milliseconds.
    uptime_ms: (u64, u64),
    /// The longest wait for one step of a scenario.
    wait: Duration,
}

impl Settings {
    fn from_env() -> Self {
        fn number<T: std::str::FromStr>(name: &str) -> Option<T> {
            let value = std::env::var(name).ok()?;
            Some(
                value
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
            )
        }
        let uptime_ms = match std::env::var("FERRY_CHAOS_KILL_INTERVAL_MS") {
            Ok(value) => value
                .split_once('-')
                .and_then(|(min, max)| Some((min.trim().parse().ok()?, max.trim().parse().ok()?)))
                .filter(|(min, max)| 0 < *min && min <= max)
                .unwrap_or_else(|| {
                    panic!(
                        "FERRY_CHAOS_KILL_INTERVAL_MS={value:?} is not MIN-MAX milliseconds (e.g. 500-3000)"
                    )
                }),
            Err(_) => (500, 3000),
        };
        Settings {
            models: number("FERRY_CHAOS_MODELS").unwrap_or(Scenario::ALL.len()),
            seed: number("FERRY_CHAOS_SEED").unwrap_or_else(rand::random),
            max_kills: number("FERRY_CHAOS_KILLS"),
            uptime_ms,
            wait: Duration::from_secs(number("FERRY_CHAOS_WAIT_SECONDS").unwrap_or(180)),
        }
    }
}

/// What one ModelDeployment goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// 1 → 2 → 3, each promoted once ready.
    Promotions,
    /// 2 fails to load (the server's checksum check) and is aborted.
    LoadFailure,
    /// 2, with `loadTimeoutSeconds: 2`, never gets ready and is aborted.
    LoadTimeout,
    /// 2, with `progressDeadlineSeconds: 10`, never makes progress and is aborted.
    ProgressDeadline,
    /// 1 → 2, then the spec goes back to 1, still warm.
    Rollback,
    /// 2 is replaced by 3 while it loads; 3 is promoted.
    Supersede,
    /// `autoPromote: false`: a ready 2 waits for the promote request.
    GatedPromote,
    /// 2 is aborted by request while it loads.
    AbortRequest,
    /// `revisionHistoryLimit: 2`: 1 → 2 → 3 → 4 leaves the Deployments of 2, 3 and 4.
    Pruning,
    /// The ModelDeployment is deleted while 2 loads.
    DeletedMidRollout,
    /// InPlace: 1 → 2 → 3 staged in every pod and switched, each promoted once staged everywhere.
    InPlacePromotions,
    /// InPlace, `autoPromote: false`: 2 is staged, waits a random while for the promote request (its ConfigMap
    /// deleted meanwhile, maybe), then serves.
    InPlaceGated,
    /// InPlace: 1 → 2, then the spec goes back to 1, still loaded in every pod.
    InPlaceRollback,
}

impl Scenario {
    const ALL: [Scenario; 13] = [
        Scenario::Promotions,
        Scenario::LoadFailure,
        Scenario::LoadTimeout,
        Scenario::ProgressDeadline,
        Scenario::Rollback,
        Scenario::Supersede,
        Scenario::GatedPromote,
        Scenario::AbortRequest,
        Scenario::Pruning,
        Scenario::DeletedMidRollout,
        Scenario::InPlacePromotions,
        Scenario::InPlaceGated,
        Scenario::InPlaceRollback,
    ];

    fn in_place(self) -> bool {
        matches!(
            self,
            Scenario::InPlacePromotions | Scenario::InPlaceGated | Scenario::InPlaceRollback
        )
    }

    fn expected(self) -> Expected {
        use Outcome::*;
        let serving = |active, candidate, history: &[(Outcome, &'static str)]| Serving {
            active,
            candidate,
            history: history.to_vec(),
            versions: None,
            revision_history_limit: 10,
            in_place: false,
        };
        let in_place = |serving: Serving| Serving {
            in_place: true,
            ..serving
        };
        Expected::Serving(match self {
            Scenario::Promotions => serving(
                "3",
                None,
                &[(Promoted, "3"), (Promoted, "2"), (Promoted, "1")],
            ),
            Scenario::LoadFailure => serving(
                "1",
                Some(("2", "ModelLoadFailed")),
                &[(Aborted, "2"), (Promoted, "1")],
            ),
            Scenario::LoadTimeout | Scenario::ProgressDeadline => serving(
                "1",
                Some(("2", "ProgressDeadlineExceeded")),
                &[(Aborted, "2"), (Promoted, "1")],
            ),
            Scenario::Rollback => Serving {
                versions: Some(&["1", "2"]),
                ..serving(
                    "1",
                    None,
                    &[(RolledBack, "1"), (Promoted, "2"), (Promoted, "1")],
                )
            },
            Scenario::Supersede => serving(
                "3",
                None,
                &[(Promoted, "3"), (Superseded, "2"), (Promoted, "1")],
            ),
            Scenario::GatedPromote => serving("2", None, &[(Promoted, "2"), (Promoted, "1")]),
            Scenario::AbortRequest => serving(
                "1",
                Some(("2", "AbortedByUser")),
                &[(Aborted, "2"), (Promoted, "1")],
            ),
            // The history is bounded by the limit too: the two newest entries.
            Scenario::Pruning => Serving {
                versions: Some(&["2", "3", "4"]),
                revision_history_limit: 2,
                ..serving("4", None, &[(Promoted, "4"), (Promoted, "3")])
            },
            Scenario::DeletedMidRollout => return Expected::Gone,
            Scenario::InPlacePromotions => in_place(serving(
                "3",
                None,
                &[(Promoted, "3"), (Promoted, "2"), (Promoted, "1")],
            )),
            Scenario::InPlaceGated => {
                in_place(serving("2", None, &[(Promoted, "2"), (Promoted, "1")]))
            }
            Scenario::InPlaceRollback => in_place(serving(
                "1",
                None,
                &[(RolledBack, "1"), (Promoted, "2"), (Promoted, "1")],
            )),
        })
    }
}

/// Where a ModelDeployment must end.
#[derive(Clone, Debug)]
enum Expected {
    Serving(Serving),
    /// Deleted, with all of its children.
    Gone,
}

/// A ModelDeployment that serves at the end.
#[derive(Clone, Debug)]
struct Serving {
    /// The version the active Service sends traffic to.
    active: &'static str,
    /// The aborted candidate: its version and reason.
    candidate: Option<(&'static str, &'static str)>,
    /// Outcome and version of each history entry, newest first.
    history: Vec<(Outcome, &'static str)>,
    /// The versions whose Deployments are left, when the scenario pins them.
    versions: Option<&'static [&'static str]>,
    revision_history_limit: i32,
    /// Strategy InPlace: one pod set (one Deployment) whose pods all serve the active version.
    in_place: bool,
}

/// One sample of the namespace, taken by the observer loop.
#[derive(Default)]
struct Snapshot {
    mds: BTreeMap<String, ModelDeployment>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    pods: Vec<Pod>,
    secrets: Vec<Secret>,
    config_maps: Vec<ConfigMap>,
    /// What each running InPlace pod's server holds, by pod name.
    servers: BTreeMap<String, ServerView>,
}

/// One InPlace pod's server at a sample: its ModelDeployment, the version it serves, the versions it holds.
type ServerView = (String, String, Vec<String>);

impl Snapshot {
    fn md(&self, name: &str) -> Option<&ModelDeployment> {
        self.mds.get(name)
    }

    fn status(&self, name: &str) -> Option<&ferry::api::ModelDeploymentStatus> {
        self.md(name)?.status.as_ref()
    }

    fn deployments_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Deployment> + 'a {
        self.deployments.iter().filter(move |d| {
            d.metadata.deletion_timestamp.is_none()
                && d.labels().get(labels::MODEL_DEPLOYMENT).map(String::as_str) == Some(name)
        })
    }

    /// The revision of `name` that serves `version`, once its Deployment exists.
    fn revision_of(&self, name: &str, version: &str) -> Option<String> {
        self.deployments_of(name)
            .find(|d| {
                d.annotations()
                    .get(labels::annotations::VERSION)
                    .map(String::as_str)
                    == Some(version)
            })
            .and_then(|d| d.labels().get(labels::REVISION).cloned())
    }

    /// The revision the active Service `<name>` selects.
    fn active_service_revision(&self, name: &str) -> Option<String> {
        let service = self.services.iter().find(|s| s.name_any() == name)?;
        selected_revision(service)
    }

    fn active_version(&self, name: &str) -> Option<&str> {
        Some(self.status(name)?.active.as_ref()?.version.as_str())
    }

    /// The versions the servers of `name`'s pods serve, by pod.
    fn served_by(&self, name: &str) -> BTreeMap<&str, &str> {
        self.servers
            .iter()
            .filter(|(_, (md, _, _))| md == name)
            .map(|(pod, (_, serving, _))| (pod.as_str(), serving.as_str()))
            .collect()
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What becomes of the pods of a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PodFate {
    /// Running and Ready as they appear.
    Ready,
    /// Each exits with ferry-server's termination message, as the server fails every pod of a model whose
    /// checksum does not match.
    FailToLoad,
}

/// The world the scenarios share: the namespace, what the kubelet loop does to which pods, and the latest sample
/// of everything in the namespace.
struct Chaos {
    namespace: String,
    client: Client,
    /// What the kubelet loop does to the pods of each (ModelDeployment, revision); the pods of others stay
    /// Pending.
    pods: Mutex<BTreeMap<(String, String), PodFate>>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    wait: Duration,
    journal: Arc<Journal>,
    /// The ModelDeployments of strategy InPlace, whose pods the kubelet loop starts with a server each.
    in_place: Mutex<BTreeSet<String>>,
    servers: in_place::Servers,
    activity: Arc<in_place::Activity>,
    /// By InPlace ModelDeployment: the versions allowed to serve, each added before the test asks for it (the
    /// first version, a spec change under `autoPromote`, a promote request).
    allowed: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl Chaos {
    fn mds(&self) -> Api<ModelDeployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Waits until `check` finds what it looks for in a sample.
    async fn wait_for<T>(
        &self,
        what: &str,
        mut check: impl FnMut(&Snapshot) -> Option<T>,
    ) -> Result<T, String> {
        let mut samples = self.snapshot.clone();
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let snapshot = samples.borrow_and_update().clone();
            if let Some(found) = check(&snapshot) {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, samples.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(format!("the observer stopped while waiting for {what}")),
                Err(_) => {
                    return Err(format!(
                        "timed out after {:?} waiting for {what}",
                        self.wait
                    ))
                }
            }
        }
    }

    async fn create(&self, name: &str, replicas: i32, extra: Value) -> Result<(), String> {
        let mut object = json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {"model": model("1", name), "replicas": replicas},
        });
        extend(&mut object["spec"], extra);
        let md: ModelDeployment = serde_json::from_value(object).map_err(|e| e.to_string())?;
        self.mds()
            .create(&PostParams::default(), &md)
            .await
            .map(|_| ())
            .map_err(|e| format!("create: {e}"))
    }

    /// Points the spec at `version` (and whatever else `extra` changes).
    async fn set(&self, name: &str, version: &str, extra: Value) -> Result<(), String> {
        let mut spec = json!({"model": model(version, name)});
        extend(&mut spec, extra);
        self.journal.write(&format!("test: {name} spec {spec}"));
        self.mds()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("set version {version}: {e}"))
    }

    /// A request annotation (`kubectl ferry promote` / `abort`) naming `revision`.
    async fn request(&self, name: &str, key: &str, revision: &str) -> Result<(), String> {
        let body = json!({"metadata": {"annotations": {key: revision}}});
        self.journal
            .write(&format!("test: {name} {key}={revision}"));
        self.mds()
            .patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map(|_| ())
            .map_err(|e| format!("request {key}={revision}: {e}"))
    }

    async fn revision_of(&self, name: &str, version: &str) -> Result<String, String> {
        self.wait_for(
            &format!("the Deployment of {name} version {version}"),
            |s| s.revision_of(name, version),
        )
        .await
    }

    /// What the kubelet loop does to the pods of `revision` from now on.
    fn run_pods_of(&self, name: &str, revision: &str, fate: PodFate) {
        self.journal
            .write(&format!("test: {name} pods of {revision}: {fate:?}"));
        self.pods
            .lock()
            .unwrap()
            .insert((name.to_owned(), revision.to_owned()), fate);
    }

    /// Waits until `version` is active and the active Service selects its revision.
    async fn wait_active(&self, name: &str, version: &str) -> Result<(), String> {
        self.wait_for(&format!("{name} version {version} active"), |s| {
            let revision = s.revision_of(name, version)?;
            (s.active_version(name) == Some(version)
                && s.active_service_revision(name) == Some(revision))
            .then_some(())
        })
        .await
    }

    async fn wait_candidate(
        &self,
        name: &str,
        version: &str,
        reason: Option<&str>,
    ) -> Result<(), String> {
        let what = format!(
            "{name} version {version} as the candidate ({})",
            reason.unwrap_or("any reason")
        );
        self.wait_for(&what, |s| {
            let candidate = s.status(name)?.candidate.as_ref()?;
            (candidate.version == version
                && reason.is_none_or(|r| candidate.reason.as_deref() == Some(r)))
            .then_some(())
        })
        .await
    }

    /// Creates `name` at version 1 and waits until it serves.
    async fn serve_first(&self, name: &str, replicas: i32, extra: Value) -> Result<(), String> {
        self.create(name, replicas, extra).await?;
        let first = self.revision_of(name, "1").await?;
        self.run_pods_of(name, &first, PodFate::Ready);
        self.wait_active(name, "1").await
    }

    /// Rolls `version` out (the spec already asks for it) and waits until it is active.
    async fn roll(&self, name: &str, version: &str, rng: &mut StdRng) -> Result<(), String> {
        let revision = self.revision_of(name, version).await?;
        pause(rng, 1000).await;
        self.run_pods_of(name, &revision, PodFate::Ready);
        self.wait_active(name, version).await
    }
}

impl Chaos {
    /// Lets `version` of `name` serve from now on: the test is about to ask for it.
    fn allow(&self, name: &str, version: &str) {
        self.allowed
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
            .insert(version.to_owned());
    }

    /// Creates `name` with strategy InPlace at version 1 and waits until every pod serves it.
    async fn serve_first_in_place(
        &self,
        name: &str,
        replicas: i32,
        rollout: Value,
    ) -> Result<(), String> {
        self.in_place.lock().unwrap().insert(name.to_owned());
        self.allow(name, "1");
        let mut rollout_spec = json!({"strategy": "InPlace"});
        extend(&mut rollout_spec, rollout);
        self.create(name, replicas, json!({ "rollout": rollout_spec }))
            .await?;
        self.wait_in_place(name, "1", replicas).await
    }

    /// Waits until `version` is active and the server of each of the `replicas` pods serves it.
    async fn wait_in_place(&self, name: &str, version: &str, replicas: i32) -> Result<(), String> {
        self.wait_for(
            &format!("{name} version {version} active in all {replicas} pods"),
            |s| {
                let served = s.served_by(name);
                (s.active_version(name) == Some(version)
                    && served.len() == replicas as usize
                    && served.values().all(|v| *v == version))
                .then_some(())
            },
        )
        .await
    }
}

fn model(version: &str, name: &str) -> Value {
    json!({"uri": format!("s3://models/{name}/{version}.onnx"), "version": version})
}

/// Adds the fields of `extra` to the object `target` (the API server merges a patch deeper).
fn extend(target: &mut Value, extra: Value) {
    if let (Some(target), Value::Object(extra)) = (target.as_object_mut(), extra) {
        target.extend(extra);
    }
}

/// A random pause of up to `max_ms`, so that kills land at different steps of each scenario.
async fn pause(rng: &mut StdRng, max_ms: u64) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..=max_ms))).await;
}

/// Plays `scenario` on ModelDeployment `name`.
async fn drive(
    chaos: &Chaos,
    name: &str,
    scenario: Scenario,
    mut rng: StdRng,
) -> Result<(), String> {
    let rng = &mut rng;
    let replicas = rng.random_range(1..=2);
    pause(rng, 2000).await;
    match scenario {
        Scenario::Promotions => {
            chaos.serve_first(name, replicas, json!({})).await?;
            for version in ["2", "3"] {
                chaos.set(name, version, json!({})).await?;
                chaos.roll(name, version, rng).await?;
            }
        }
        Scenario::LoadFailure => {
            chaos.serve_first(name, replicas, json!({})).await?;
            chaos.set(name, "2", json!({})).await?;
            let second = chaos.revision_of(name, "2").await?;
            pause(rng, 1000).await;
            chaos.run_pods_of(name, &second, PodFate::FailToLoad);
            chaos
                .wait_candidate(name, "2", Some("ModelLoadFailed"))
                .await?;
        }
        Scenario::LoadTimeout | Scenario::ProgressDeadline => {
            let deadline = if scenario == Scenario::LoadTimeout {
                json!({"loadTimeoutSeconds": 2})
            } else {
                json!({"progressDeadlineSeconds": 10})
            };
            chaos.serve_first(name, replicas, json!({})).await?;
            chaos.set(name, "2", json!({ "rollout": deadline })).await?;
            chaos
                .wait_candidate(name, "2", Some("ProgressDeadlineExceeded"))
                .await?;
        }
        Scenario::Rollback => {
            chaos.serve_first(name, replicas, json!({})).await?;
            chaos.set(name, "2", json!({})).await?;
            chaos.roll(name, "2", rng).await?;
            pause(rng, 1000).await;
            chaos.set(name, "1", json!({})).await?;
            chaos.wait_active(name, "1").await?;
        }
        Scenario::Supersede => {
            chaos.serve_first(name, replicas, json!({})).await?;
            chaos.set(name, "2", json!({})).await?;
            chaos.wait_candidate(name, "2", None).await?;
            pause(rng, 1000).await;
            chaos.set(name, "3", json!({})).await?;
            chaos.roll(name, "3", rng).await?;
        }
        Scenario::GatedPromote => {
            let first =
                chaos.serve_first(name, replicas, json!({"rollout": {"autoPromote": false}}));
            first.await?;
            chaos.set(name, "2", json!({})).await?;
            let second = chaos.revision_of(name, "2").await?;
            chaos.run_pods_of(name, &second, PodFate::Ready);
            chaos
                .wait_candidate(name, "2", Some("WaitingForPromotion"))
                .await?;
            pause(rng, 1000).await;
            let before = chaos
                .wait_for("a sample", |s| Some(s.active_service_revision(name)))
                .await?;
            if before.as_deref() == Some(second.as_str()) {
                return Err(format!(
                    "the active Service selected {second} before it was promoted"
                ));
            }
            chaos
                .request(name, labels::requests::PROMOTE, &second)
                .await?;
            chaos.wait_active(name, "2").await?;
        }
        Scenario::AbortRequest => {
            chaos.serve_first(name, replicas, json!({})).await?;
            chaos.set(name, "2", json!({})).await?;
            let second = chaos.revision_of(name, "2").await?;
            chaos.wait_candidate(name, "2", None).await?;
            pause(rng, 1000).await;
            chaos
                .request(name, labels::requests::ABORT, &second)
                .await?;
            chaos
                .wait_candidate(name, "2", Some("AbortedByUser"))
                .await?;
        }
        Scenario::Pruning => {
            let limits = json!({"revisionHistoryLimit": 2, "rollout": {"keepPrevious": 1}});
            chaos.serve_first(name, replicas, limits).await?;
            for version in ["2", "3", "4"] {
                chaos.set(name, version, json!({})).await?;
                chaos.roll(name, version, rng).await?;
            }
        }
        Scenario::InPlacePromotions => {
            chaos
                .serve_first_in_place(name, replicas, json!({}))
                .await?;
            for version in ["2", "3"] {
                pause(rng, 1000).await;
                chaos.allow(name, version);
                chaos.set(name, version, json!({})).await?;
                chaos.wait_in_place(name, version, replicas).await?;
            }
        }
        Scenario::InPlaceGated => {
            let gated = json!({"autoPromote": false});
            chaos.serve_first_in_place(name, replicas, gated).await?;
            chaos.set(name, "2", json!({})).await?;
            chaos
                .wait_candidate(name, "2", Some("WaitingForPromotion"))
                .await?;
            // Held for a while: ConfigMap deletions and kills land while the candidate waits.
            pause(rng, 6000).await;
            let candidate = chaos
                .wait_for("the candidate's revision", |s| {
                    let candidate = s.status(name)?.candidate.as_ref()?;
                    (candidate.version == "2").then(|| candidate.revision.clone())
                })
                .await?;
            chaos.allow(name, "2");
            chaos
                .request(name, labels::requests::PROMOTE, &candidate)
                .await?;
            chaos.wait_in_place(name, "2", replicas).await?;
        }
        Scenario::InPlaceRollback => {
            chaos
                .serve_first_in_place(name, replicas, json!({}))
                .await?;
            chaos.allow(name, "2");
            chaos.set(name, "2", json!({})).await?;
            chaos.wait_in_place(name, "2", replicas).await?;
            pause(rng, 1000).await;
            chaos.set(name, "1", json!({})).await?;
            chaos.wait_in_place(name, "1", replicas).await?;
        }
        Scenario::DeletedMidRollout => {
            chaos.serve_first(name, replicas, json!({})).await?;
            chaos.set(name, "2", json!({})).await?;
            chaos.revision_of(name, "2").await?;
            pause(rng, 1000).await;
            chaos.journal.write(&format!("test: {name} deleted"));
            chaos
                .mds()
                .delete(name, &DeleteParams::background())
                .await
                .map_err(|e| format!("delete: {e}"))?;
        }
    }
    Ok(())
}

/// A timeline of the run for whoever reads a failure: every change the observer saw in the namespace (objects
/// appearing, changing what matters, disappearing) and every kill, with the seconds since the start.
struct Journal {
    file: Mutex<std::fs::File>,
    started: Instant,
}

impl Journal {
    fn write(&self, line: &str) {
        use std::io::Write;
        let _ = writeln!(
            self.file.lock().unwrap(),
            "{:8.2}s {line}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Writes what changed since `facts` (what matters of each object, by kind and name), and updates them.
    fn changes(&self, facts: &mut BTreeMap<String, String>, snapshot: &Snapshot) {
        let mut now = BTreeMap::new();
        for (name, md) in &snapshot.mds {
            let status = md.status.clone().unwrap_or_default();
            let history: Vec<String> = status
                .history
                .iter()
                .map(|h| format!("{:?} {}", h.outcome, h.version))
                .collect();
            let conditions: Vec<String> = status
                .conditions
                .iter()
                .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
                .collect();
            now.insert(
                format!("ModelDeployment {name}"),
                format!(
                    "generation {:?} observed {:?} {:?} active {:?} candidate {:?} history {history:?} conditions {conditions:?}",
                    md.metadata.generation,
                    status.observed_generation,
                    status.phase,
                    status.active.map(|a| a.version),
                    status.candidate.map(|c| (c.version, c.reason)),
                ),
            );
        }
        for deployment in &snapshot.deployments {
            let available = deployment
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            let marks: Vec<&str> = [
                labels::annotations::PROMOTED_AT,
                labels::annotations::ROLLOUT_STARTED_AT,
                labels::annotations::ABORTED,
            ]
            .into_iter()
            .filter(|key| deployment.annotations().contains_key(*key))
            .collect();
            now.insert(
                format!("Deployment {}", deployment.name_any()),
                format!(
                    "uid {} version {:?} replicas {:?} available {available} marks {marks:?}{}",
                    deployment.uid().unwrap_or_default(),
                    deployment.annotations().get(labels::annotations::VERSION),
                    deployment.spec.as_ref().and_then(|s| s.replicas),
                    deleting(&deployment.metadata),
                ),
            );
        }
        for pod in &snapshot.pods {
            now.insert(
                format!("Pod {}", pod.name_any()),
                format!(
                    "revision {:?} ready {} load failure {:?}{}",
                    pod.labels().get(labels::REVISION),
                    pod_ready(pod),
                    load_failure(pod),
                    deleting(&pod.metadata),
                ),
            );
        }
        for service in &snapshot.services {
            now.insert(
                format!("Service {}", service.name_any()),
                format!("selects {:?}", selected_revision(service)),
            );
        }
        for (key, fact) in &now {
            if facts.get(key) != Some(fact) {
                self.write(&format!("{key}: {fact}"));
            }
        }
        for key in facts.keys().filter(|k| !now.contains_key(*k)) {
            self.write(&format!("{key}: gone"));
        }
        *facts = now;
    }
}

fn deleting(meta: &ObjectMeta) -> &'static str {
    if meta.deletion_timestamp.is_some() {
        " deleting"
    } else {
        ""
    }
}

/// What the checker of the active Services counted.
#[derive(Default)]
struct Checks {
    samples: AtomicU64,
    /// Active Services checked, over all samples.
    services: AtomicU64,
    violations: Mutex<Vec<String>>,
    /// Revisions scaled up from zero without a spec change.
    revived: Mutex<Vec<String>>,
    /// InPlace ModelDeployments checked, over all samples.
    in_place: AtomicU64,
    /// Versions that served unpromoted, or not loaded in every pod: when first seen.
    in_place_violations: Mutex<Vec<String>>,
    in_place_seen: Mutex<BTreeSet<String>>,
}

/// Samples the namespace in a loop: checks that every active Service selects an available revision, marks the
/// pods the way the scenarios ask (the kubelet), and publishes the sample for the scenarios.
async fn observe(
    client: Client,
    namespace: String,
    chaos: Arc<Chaos>,
    publish: watch::Sender<Arc<Snapshot>>,
    checks: Arc<Checks>,
    stop: Arc<AtomicBool>,
    journal: Arc<Journal>,
) {
    let mut facts = BTreeMap::new();
    let mut zeroed = BTreeMap::new();
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let all = ListParams::default();
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        // Services before and after the rest: a Service whose resourceVersion did not move selected the same
        // revision the whole time its Deployment and pods were read.
        let sample = async {
            let before = services.list(&all).await?.items;
            let deployments = deployments.list(&all).await?.items;
            let pods = pods.list(&all).await?.items;
            let mds = mds.list(&all).await?.items;
            let secrets = secrets.list(&all).await?.items;
            let config_maps = config_maps.list(&all).await?.items;
            let after = services.list(&all).await?.items;
            Ok::<_, kube::Error>((
                before,
                Snapshot {
                    mds: mds.into_iter().map(|md| (md.name_any(), md)).collect(),
                    deployments,
                    services: after,
                    pods,
                    secrets,
                    config_maps,
                    servers: BTreeMap::new(),
                },
            ))
        };
        let Ok((before, mut snapshot)) = sample.await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // The servers right after the objects: all of them at one moment, each under its own lock.
        snapshot.servers = chaos
            .servers
            .by_pod
            .lock()
            .unwrap()
            .iter()
            .map(|(pod, (md, server))| {
                let state = server.state.lock().unwrap();
                let versions = state.versions.iter().map(|v| v.version.clone()).collect();
                (pod.clone(), (md.clone(), state.serving.clone(), versions))
            })
            .collect();
        check_in_place(&snapshot, &chaos, &checks, journal.started);
        check_active_services(&before, &snapshot, &checks, journal.started);
        check_zeroed_stay_down(&mut zeroed, &snapshot, &checks, journal.started);
        journal.changes(&mut facts, &snapshot);
        run_pods(&pods, &snapshot, &chaos).await;
        run_in_place_pods(&pods, &snapshot, &chaos, &journal).await;
        checks.samples.fetch_add(1, Ordering::Relaxed);
        publish.send_replace(Arc::new(snapshot));
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(round.elapsed())).await;
    }
}

fn check_active_services(
    before: &[Service],
    snapshot: &Snapshot,
    checks: &Checks,
    started: Instant,
) {
    for service in before {
        let name = service.name_any();
        // The active Service is named after its ModelDeployment; the preview one is not checked.
        if service.labels().get(labels::MODEL_DEPLOYMENT) != Some(&name) {
            continue;
        }
        let Some(revision) = selected_revision(service) else {
            continue;
        };
        let revision = revision.as_str();
        let unchanged = snapshot
            .services
            .iter()
            .any(|s| s.name_any() == name && s.resource_version() == service.resource_version());
        // Deleting a ModelDeployment takes its pods and Services down together.
        let alive = snapshot
            .md(&name)
            .is_some_and(|md| md.metadata.deletion_timestamp.is_none());
        if !unchanged || !alive {
            continue;
        }
        checks.services.fetch_add(1, Ordering::Relaxed);
        let deployment_name = format!("{name}-{revision}");
        let available = snapshot
            .deployments
            .iter()
            .find(|d| d.name_any() == deployment_name)
            .map(|d| {
                d.status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0)
            });
        let ready_pods = snapshot
            .pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.labels().get(labels::MODEL_DEPLOYMENT) == Some(&name)
                    && p.labels().get(labels::REVISION).map(String::as_str) == Some(revision)
                    && pod_ready(p)
            })
            .count();
        if available.unwrap_or(0) < 1 || ready_pods < 1 {
            checks.violations.lock().unwrap().push(format!(
                "at {:.1}s the active Service {name} selected revision {revision}: Deployment {}, {ready_pods} Ready pods",
                started.elapsed().as_secs_f64(),
                match available {
                    Some(n) => format!("with {n} available replicas"),
                    None => "missing".to_owned(),
                },
            ));
        }
    }
}

/// The InPlace invariant, on every sample: a version serves (in any pod that answers) only if it was promoted,
/// automatically or by request (the test allowed it before asking), and only while every pod that answers holds
/// it loaded.
fn check_in_place(snapshot: &Snapshot, chaos: &Chaos, checks: &Checks, started: Instant) {
    let allowed = chaos.allowed.lock().unwrap().clone();
    for name in chaos.in_place.lock().unwrap().iter() {
        let alive = snapshot
            .md(name)
            .is_some_and(|md| md.metadata.deletion_timestamp.is_none());
        let servers: Vec<(&String, &ServerView)> = snapshot
            .servers
            .iter()
            .filter(|(_, (md, _, _))| md == name)
            .collect();
        if !alive || servers.is_empty() {
            continue;
        }
        checks.in_place.fetch_add(1, Ordering::Relaxed);
        let mut problems = Vec::new();
        for (pod, (_, serving, _)) in &servers {
            if !allowed.get(name).is_some_and(|a| a.contains(serving)) {
                problems.push(format!(
                    "pod {pod} serves version {serving}, which was never promoted"
                ));
            }
            for (other, (_, _, loaded)) in &servers {
                if !loaded.contains(serving) {
                    problems.push(format!(
                        "pod {pod} serves version {serving}, which pod {other} has not loaded ({loaded:?})"
                    ));
                }
            }
        }
        for problem in problems {
            // Each once, when first seen: a version that serves wrongly does so for many samples.
            if !checks
                .in_place_seen
                .lock()
                .unwrap()
                .insert(format!("{name}: {problem}"))
            {
                continue;
            }
            let line = format!(
                "at {:.1}s {name}: {problem}",
                started.elapsed().as_secs_f64()
            );
            chaos.journal.write(&format!("VIOLATION {line}"));
            checks.in_place_violations.lock().unwrap().push(line);
        }
    }
}

/// The kubelet of InPlace pods: a pod starts once the volumes it mounts exist (its ModelDeployment's ConfigMap
/// and admin-credential Secret), with a server that serves the model the ConfigMap names; a pod gone takes its
/// server with it.
async fn run_in_place_pods(pods: &Api<Pod>, snapshot: &Snapshot, chaos: &Chaos, journal: &Journal) {
    let in_place = chaos.in_place.lock().unwrap().clone();
    let running: BTreeSet<String> = snapshot
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    chaos
        .servers
        .by_pod
        .lock()
        .unwrap()
        .retain(|pod, _| running.contains(pod));
    for pod in &snapshot.pods {
        let name = pod.name_any();
        let Some(owner) = pod.labels().get(labels::MODEL_DEPLOYMENT) else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some()
            || !in_place.contains(owner)
            || chaos.servers.by_pod.lock().unwrap().contains_key(&name)
        {
            continue;
        }
        let config_map = snapshot
            .config_maps
            .iter()
            .find(|c| c.name_any() == format!("{owner}-ferry-model"));
        let secret = snapshot
            .secrets
            .iter()
            .find(|s| s.name_any() == format!("{owner}-ferry-admin"));
        let model = config_map
            .and_then(|c| {
                c.data
                    .as_ref()?
                    .get(ferry::server_contract::pod::DESIRED_MODEL_KEY)
            })
            .and_then(|json| {
                serde_json::from_str::<ferry::server_contract::DesiredModel>(json).ok()
            });
        let credential = secret
            .and_then(|s| {
                s.data
                    .as_ref()?
                    .get(ferry::server_contract::pod::ADMIN_CREDENTIAL_KEY)
            })
            .map(|b| String::from_utf8_lossy(&b.0).into_owned());
        let (Some(model), Some(credential)) = (model, credential) else {
            continue;
        };
        let server = in_place::Server::start(&model, &credential, chaos.activity.clone()).await;
        let status = running_pod_status_at(&server.address.to_string(), true);
        if pods
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .is_ok()
        {
            journal.write(&format!(
                "kubelet: pod {name} of {owner} started on {} at {}",
                model.version, server.address
            ));
            chaos
                .servers
                .by_pod
                .lock()
                .unwrap()
                .insert(name, (owner.clone(), Arc::new(server)));
        }
    }
}

/// Deletes the ConfigMap of a random InPlace ModelDeployment now and then, until `stop`.
async fn delete_config_maps(chaos: Arc<Chaos>, mut rng: StdRng, stop: Arc<AtomicBool>) -> u32 {
    let config_maps: Api<ConfigMap> = Api::namespaced(chaos.client.clone(), &chaos.namespace);
    let mut deleted = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..=4000))).await;
        let names: Vec<String> = chaos.in_place.lock().unwrap().iter().cloned().collect();
        if names.is_empty() || stop.load(Ordering::Relaxed) {
            continue;
        }
        let name = &names[rng.random_range(0..names.len())];
        let config_map = format!("{name}-ferry-model");
        if config_maps
            .delete(&config_map, &DeleteParams::default())
            .await
            .is_ok()
        {
            deleted += 1;
            chaos
                .journal
                .write(&format!("test: deleted ConfigMap {config_map}"));
        }
    }
    deleted
}

/// A Deployment at zero replicas stays there until its ModelDeployment's spec changes: `zeroed` holds, by
/// Deployment uid, the generation it was first seen at zero at.
fn check_zeroed_stay_down(
    zeroed: &mut BTreeMap<String, i64>,
    snapshot: &Snapshot,
    checks: &Checks,
    started: Instant,
) {
    for deployment in &snapshot.deployments {
        let owner = deployment
            .labels()
            .get(labels::MODEL_DEPLOYMENT)
            .cloned()
            .unwrap_or_default();
        let (Some(uid), Some(generation)) = (
            deployment.uid(),
            snapshot.md(&owner).and_then(|md| md.metadata.generation),
        ) else {
            continue;
        };
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        match zeroed.get(&uid) {
            None if replicas == 0 => {
                zeroed.insert(uid, generation);
            }
            Some(at) if replicas > 0 => {
                if *at == generation {
                    checks.revived.lock().unwrap().push(format!(
                        "at {:.1}s Deployment {} went from 0 back to {replicas} replicas at generation {generation} of {owner}",
                        started.elapsed().as_secs_f64(),
                        deployment.name_any(),
                    ));
                }
                zeroed.remove(&uid);
            }
            _ => {}
        }
    }
}

/// The kubelet: pods become Running and Ready, or exit with ferry-server's termination message, as their
/// revision's fate says.
async fn run_pods(pods: &Api<Pod>, snapshot: &Snapshot, chaos: &Chaos) {
    let fates = chaos.pods.lock().unwrap().clone();
    let termination = serde_json::to_string(&TerminationMessage {
        reason: Reason::ChecksumMismatch,
        message: "expected sha256 00aa..., got 11bb...".into(),
        operator: None,
        setting: None,
        model: None,
        version: None,
    })
    .expect("serializable");
    let patches = snapshot
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let of = |key| p.labels().get(key).cloned().unwrap_or_default();
            let revision = (of(labels::MODEL_DEPLOYMENT), of(labels::REVISION));
            let fate = fates.get(&revision);
            if fate == Some(&PodFate::Ready) && !pod_ready(p) {
                Some((p.name_any(), ready_pod_status()))
            } else if fate == Some(&PodFate::FailToLoad) && load_failure(p).is_none() {
                Some((p.name_any(), failed_pod_status(&termination)))
            } else {
                None
            }
        })
        .map(|(name, status)| async move {
            let _ = pods
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await;
        });
    futures::future::join_all(patches).await;
}

/// Kills `ferry run` with SIGKILL at random moments and starts it again.
struct Monkey {
    namespace: String,
    logs: PathBuf,
    rng: StdRng,
    uptime_ms: (u64, u64),
    max_kills: Option<u32>,
    /// Seconds since the start of the run at each kill.
    kills: Vec<f64>,
    /// Controllers that ended by themselves.
    crashes: Vec<String>,
    journal: Arc<Journal>,
    /// What the InPlace servers do: some kills are aimed at a stage under way or a switch just made.
    activity: Arc<in_place::Activity>,
    /// Kills while an InPlace stage ran, and right after a switch of one pod (its other pods maybe not yet).
    kills_mid_stage: u32,
    kills_mid_switch: u32,
}

impl Monkey {
    fn start(&self) -> FerryRun {
        let log = self
            .logs
            .join(format!("ferry-run-{}.log", self.kills.len()));
        self.journal.write(&format!("start {}", log.display()));
        FerryRun::watching(&[&self.namespace]).log_to(&log).start()
    }

    /// Until `stop`: lets each controller live a random while, then SIGKILLs it and starts the next. Returns the
    /// one running at the end.
    fn run(&mut self, stop: &AtomicBool) -> FerryRun {
        let mut controller = self.start();
        while !stop.load(Ordering::Relaxed) {
            // A controller killed before it reconciles anything proves nothing, and on a slow machine a run of
            // such kills would stop every rollout: its life is counted from its first reconcile.
            let up = Instant::now();
            while reconciles(&controller).is_none_or(|n| n == 0)
                && up.elapsed() < Duration::from_secs(60)
                && !stop.load(Ordering::Relaxed)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            self.journal.write(&format!(
                "ferry run {} reconciled after {:.1}s",
                self.kills.len(),
                up.elapsed().as_secs_f64()
            ));
            let uptime =
                Duration::from_millis(self.rng.random_range(self.uptime_ms.0..=self.uptime_ms.1));
            let until = Instant::now() + uptime;
            // One life in three ends at the first stage under way, one in three at the first switch.
            let aim = self.rng.random_range(0..3);
            let switches = self.activity.switches.load(Ordering::SeqCst);
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                let staging = self.activity.loading.load(Ordering::SeqCst) > 0;
                let switched = self.activity.switches.load(Ordering::SeqCst) > switches;
                if (aim == 1 && staging) || (aim == 2 && switched) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if self
                .max_kills
                .is_some_and(|max| self.kills.len() as u32 >= max)
            {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(exit) = controller.exited() {
                self.crashes.push(format!(
                    "ferry run ({}) ended by itself with {exit}",
                    controller.log_path().display()
                ));
            }
            let staging = self.activity.loading.load(Ordering::SeqCst) > 0;
            let switched = self.activity.switches.load(Ordering::SeqCst) > switches;
            controller.kill();
            self.kills
                .push(self.journal.started.elapsed().as_secs_f64());
            self.kills_mid_stage += u32::from(staging);
            self.kills_mid_switch += u32::from(switched);
            self.journal.write(&format!(
                "SIGKILL ferry run {}{}{}",
                self.kills.len(),
                if staging { " (a stage under way)" } else { "" },
                if switched { " (after a switch)" } else { "" },
            ));
            // Down for a moment, or back at once.
            std::thread::sleep(Duration::from_millis(self.rng.random_range(0..=500)));
            controller = self.start();
        }
        controller
    }
}

/// How many reconciles `ferry run` has run, from its metrics; None while they do not answer.
fn reconciles(controller: &FerryRun) -> Option<u64> {
    let response = controller.http_get("/metrics").ok()?;
    response
        .lines()
        .find_map(|line| line.strip_prefix("ferry_reconciles_total "))?
        .trim()
        .parse()
        .ok()
}

/// Why the namespace is not in the state the scenarios ask for; empty when it is.
fn problems(snapshot: &Snapshot, models: &[(String, Scenario)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, scenario) in models {
        let mut problem = |what: String| problems.push(format!("{name} ({scenario:?}): {what}"));
        let Expected::Serving(Serving {
            active,
            candidate,
            history,
            versions,
            revision_history_limit,
            in_place,
        }) = scenario.expected()
        else {
            if snapshot.md(name).is_some() {
                problem("still exists".into());
            }
            let left = snapshot.deployments_of(name).count();
            if left > 0 {
                problem(format!("{left} Deployments left"));
            }
            continue;
        };
        let Some(md) = snapshot.md(name) else {
            problem("missing".into());
            continue;
        };
        let status = md.status.clone().unwrap_or_default();
        if status.observed_generation != md.metadata.generation {
            problem(format!(
                "status of generation {:?}, spec at {:?}",
                status.observed_generation, md.metadata.generation
            ));
        }
        if snapshot.active_version(name) != Some(active) {
            problem(format!(
                "active version {:?}, expected {active}",
                snapshot.active_version(name)
            ));
        }
        if in_place {
            let pod_sets: Vec<String> = snapshot
                .deployments_of(name)
                .filter_map(|d| d.labels().get(labels::REVISION).cloned())
                .collect();
            if pod_sets.len() != 1
                || snapshot.active_service_revision(name).as_ref() != pod_sets.first()
            {
                problem(format!(
                    "pod sets {pod_sets:?}, the active Service selects {:?}",
                    snapshot.active_service_revision(name)
                ));
            }
            let served = snapshot.served_by(name);
            if served.is_empty() || served.values().any(|v| *v != active) {
                problem(format!("the pods serve {served:?}, expected {active}"));
            }
        }
        let active_revision = snapshot.revision_of(name, active);
        if !in_place
            && (active_revision.is_none()
                || snapshot.active_service_revision(name) != active_revision)
        {
            problem(format!(
                "the active Service selects {:?}, the revision of version {active} is {active_revision:?}",
                snapshot.active_service_revision(name)
            ));
        }
        let found_candidate = status
            .candidate
            .as_ref()
            .map(|c| (c.version.as_str(), c.reason.as_deref().unwrap_or_default()));
        if found_candidate != candidate {
            problem(format!(
                "candidate {found_candidate:?}, expected {candidate:?}"
            ));
        }
        let phase = if candidate.is_some() {
            Phase::Degraded
        } else {
            Phase::Available
        };
        if status.phase != Some(phase) {
            problem(format!("phase {:?}, expected {phase:?}", status.phase));
        }
        let found_history: Vec<(Outcome, &str)> = status
            .history
            .iter()
            .map(|h| (h.outcome, h.version.as_str()))
            .collect();
        if found_history != history {
            problem(format!("history {found_history:?}, expected {history:?}"));
        }
        let deployments: Vec<&Deployment> = snapshot.deployments_of(name).collect();
        // The active revision, the candidate, and at most revisionHistoryLimit others.
        let most = revision_history_limit as usize + 1 + usize::from(candidate.is_some());
        if deployments.len() > most {
            problem(format!(
                "{} Deployments, at most {most} expected",
                deployments.len()
            ));
        }
        if let Some(versions) = versions {
            let found: BTreeSet<&str> = deployments
                .iter()
                .filter_map(|d| {
                    d.annotations()
                        .get(labels::annotations::VERSION)
                        .map(String::as_str)
                })
                .collect();
            let expected: BTreeSet<&str> = versions.iter().copied().collect();
            if found != expected {
                problem(format!(
                    "Deployments of versions {found:?}, expected {expected:?}"
                ));
            }
        }
    }
    problems.extend(orphans(snapshot));
    problems
}

/// Children whose owner is not an existing ModelDeployment (the same uid), or that are not a child it makes.
fn orphans(snapshot: &Snapshot) -> Vec<String> {
    let owned_by_existing = |kind: &str, meta: &ObjectMeta| {
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "ModelDeployment" && o.controller == Some(true));
        match owner {
            Some(owner)
                if snapshot
                    .md(&owner.name)
                    .and_then(|md| md.metadata.uid.as_ref())
                    == Some(&owner.uid) =>
            {
                None
            }
            Some(owner) => Some(format!(
                "{kind} {} is owned by ModelDeployment {} (uid {}), which is gone",
                meta.name.as_deref().unwrap_or_default(),
                owner.name,
                owner.uid
            )),
            None => Some(format!(
                "{kind} {} has no ModelDeployment owner",
                meta.name.as_deref().unwrap_or_default()
            )),
        }
    };
    let mut orphans = Vec::new();
    for deployment in &snapshot.deployments {
        orphans.extend(owned_by_existing("Deployment", &deployment.metadata));
    }
    for service in &snapshot.services {
        orphans.extend(owned_by_existing("Service", &service.metadata));
    }
    for secret in snapshot
        .secrets
        .iter()
        .filter(|s| s.labels().contains_key(labels::MODEL_DEPLOYMENT))
    {
        orphans.extend(owned_by_existing("Secret", &secret.metadata));
    }
    orphans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_converge_while_the_controller_is_killed_at_random_moments() {
    let settings = Settings::from_env();
    println!(
        "chaos: {} ModelDeployments, seed {} (FERRY_CHAOS_SEED={} reruns the same choices), controllers live {}-{} ms, kills at most {:?}",
        settings.models, settings.seed, settings.seed, settings.uptime_ms.0, settings.uptime_ms.1, settings.max_kills
    );
    let ns = TestNamespace::create();
    let client = control_plane().client().await;
    let started = Instant::now();
    let keep_logs = std::env::var_os("FERRY_CHAOS_LOGS").map(PathBuf::from);
    let logs = keep_logs
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ferry-chaos-{}", ns.name)));
    std::fs::create_dir_all(&logs).expect("create the log directory");
    let journal = Arc::new(Journal {
        file: Mutex::new(
            std::fs::File::create(logs.join("journal.log")).expect("create the journal"),
        ),
        started,
    });
    let (publish, snapshot) = watch::channel(Arc::new(Snapshot::default()));
    let chaos = Arc::new(Chaos {
        namespace: ns.name.clone(),
        client: client.clone(),
        pods: Mutex::default(),
        snapshot,
        wait: settings.wait,
        journal: journal.clone(),
        in_place: Mutex::default(),
        servers: in_place::Servers::default(),
        activity: Arc::default(),
        allowed: Mutex::default(),
    });
    let checks = Arc::new(Checks::default());
    let stop_observer = Arc::new(AtomicBool::new(false));
    let observer = tokio::spawn(observe(
        client.clone(),
        ns.name.clone(),
        chaos.clone(),
        publish,
        checks.clone(),
        stop_observer.clone(),
        journal.clone(),
    ));

    let stop_monkey = Arc::new(AtomicBool::new(false));
    let mut monkey = Monkey {
        namespace: ns.name.clone(),
        logs: logs.clone(),
        rng: StdRng::seed_from_u64(settings.seed),
        uptime_ms: settings.uptime_ms,
        max_kills: settings.max_kills,
        kills: Vec::new(),
        crashes: Vec::new(),
        journal,
        activity: chaos.activity.clone(),
        kills_mid_stage: 0,
        kills_mid_switch: 0,
    };
    let monkey = {
        let stop = stop_monkey.clone();
        std::thread::spawn(move || {
            let controller = monkey.run(&stop);
            (monkey, controller)
        })
    };

    let stop_deleting = Arc::new(AtomicBool::new(false));
    let config_map_deleter = tokio::spawn(delete_config_maps(
        chaos.clone(),
        StdRng::seed_from_u64(settings.seed.wrapping_sub(1)),
        stop_deleting.clone(),
    ));

    // Every scenario as often as the others, in an order the seed picks.
    let offset = (settings.seed % Scenario::ALL.len() as u64) as usize;
    let models: Vec<(String, Scenario)> = (0..settings.models)
        .map(|i| {
            (
                format!("m{i:03}"),
                Scenario::ALL[(i + offset) % Scenario::ALL.len()],
            )
        })
        .collect();
    let drivers: Vec<_> = models
        .iter()
        .enumerate()
        .map(|(i, (name, scenario))| {
            let chaos = chaos.clone();
            let (name, scenario) = (name.clone(), *scenario);
            let rng = StdRng::seed_from_u64(settings.seed.wrapping_add(1 + i as u64));
            tokio::spawn(async move {
                let result = drive(&chaos, &name, scenario, rng).await;
                result.map_err(|e| format!("{name} ({scenario:?}): {e}"))
            })
        })
        .collect();
    let mut failures = Vec::new();
    for driver in futures::future::join_all(drivers).await {
        match driver {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => failures.push(failure),
            Err(panic) => failures.push(format!("a scenario panicked: {panic}")),
        }
    }
    let scenarios_took = started.elapsed();
    stop_deleting.store(true, Ordering::Relaxed);
    let config_maps_deleted = config_map_deleter.await.unwrap_or(0);

    // The last controller runs undisturbed while the namespace settles.
    stop_monkey.store(true, Ordering::Relaxed);
    let (monkey, controller) = monkey.join().expect("the monkey thread");
    let mut last = Vec::new();
    let settled = chaos
        .wait_for(
            "every ModelDeployment in the state its spec asks for",
            |s| {
                let now = problems(s, &models);
                if now != last {
                    chaos.journal.write(&format!("settling: {now:#?}"));
                    last = now;
                }
                last.is_empty().then_some(())
            },
        )
        .await;
    let settling_took = started.elapsed() - scenarios_took;
    let left: Vec<String> = match settled {
        Ok(()) => Vec::new(),
        Err(_) => problems(&chaos.snapshot.borrow(), &models),
    };
    // Once settled, the controller writes nothing more: no status flips back and forth.
    let versions = |s: &Snapshot| -> BTreeMap<String, Option<String>> {
        s.mds
            .iter()
            .map(|(n, md)| (n.clone(), md.resource_version()))
            .collect()
    };
    // A status change that only concerns pods (a pod of the aborted candidate gone) is written up to 5 s later
    // (the controller's throttle on progress writes): the quiet window starts after it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let quiet_from = versions(&chaos.snapshot.borrow());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let quiet_to = versions(&chaos.snapshot.borrow());
    let churn: Vec<&String> = quiet_from
        .iter()
        .filter(|(n, v)| quiet_to.get(*n) != Some(v))
        .map(|(n, _)| n)
        .collect();

    stop_observer.store(true, Ordering::Relaxed);
    let _ = observer.await;
    let mut crashes = monkey.crashes.clone();
    if let Some(exit) = controller.exited() {
        crashes.push(format!("the last ferry run ended by itself with {exit}"));
    }
    drop(controller);
    crashes.extend(panics_in(&logs));
    let violations = checks.violations.lock().unwrap().clone();
    let revived = checks.revived.lock().unwrap().clone();
    let in_place_violations = checks.in_place_violations.lock().unwrap().clone();
    let in_place_models = models.iter().filter(|(_, s)| s.in_place()).count();
    let total = started.elapsed();
    println!(
        "chaos: {} ModelDeployments, seed {}: {} kills (at {}), scenarios done in {:.0}s, settled {:.0}s later, {:.0}s in all; the checker took {} samples of {} active Services, {} violations",
        settings.models,
        settings.seed,
        monkey.kills.len(),
        monkey.kills.iter().map(|t| format!("{t:.1}s")).collect::<Vec<_>>().join(" "),
        scenarios_took.as_secs_f64(),
        settling_took.as_secs_f64(),
        total.as_secs_f64(),
        checks.samples.load(Ordering::Relaxed),
        checks.services.load(Ordering::Relaxed),
        violations.len(),
    );
    println!(
        "chaos: InPlace: {in_place_models} ModelDeployments checked in {} samples, {} violations; {} kills during a stage, {} right after a switch; {config_maps_deleted} ConfigMaps deleted",
        checks.in_place.load(Ordering::Relaxed),
        in_place_violations.len(),
        monkey.kills_mid_stage,
        monkey.kills_mid_switch,
    );

    let mut report = Vec::new();
    for (what, list) in [
        ("scenarios that failed", failures),
        ("not in the state the spec asks for", left),
        (
            "the active Service selected an unavailable revision",
            violations,
        ),
        (
            "revisions scaled up from zero without a spec change",
            revived,
        ),
        (
            "InPlace: a version served unpromoted or not loaded in every pod",
            in_place_violations,
        ),
        ("controllers that crashed", crashes),
    ] {
        if !list.is_empty() {
            report.push(format!("{what}:\n  {}", list.join("\n  ")));
        }
    }
    if !churn.is_empty() {
        report.push(format!("still written after settling: {churn:?}"));
    }
    if monkey.kills.is_empty() {
        report.push("the controller was never killed: lower FERRY_CHAOS_KILL_INTERVAL_MS".into());
    }
    if in_place_models > 0 && settings.max_kills.is_none() {
        if monkey.kills_mid_stage == 0 || monkey.kills_mid_switch == 0 {
            report.push(format!(
                "InPlace: {} kills during a stage and {} after a switch; both are needed",
                monkey.kills_mid_stage, monkey.kills_mid_switch
            ));
        }
        if config_maps_deleted == 0 {
            report.push("InPlace: no ConfigMap was deleted".into());
        }
        if checks.in_place.load(Ordering::Relaxed) == 0 {
            report.push("InPlace: the invariant was never checked".into());
        }
    }
    assert!(
        report.is_empty(),
        "chaos run with FERRY_CHAOS_SEED={} ({} kills; logs of every ferry run in {}):\n{}",
        settings.seed,
        monkey.kills.len(),
        logs.display(),
        report.join("\n")
    );
    if keep_logs.is_none() {
        let _ = std::fs::remove_dir_all(&logs);
    }
}

/// Panics any `ferry run` reported in its log.
fn panics_in(logs: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(logs) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let text = std::fs::read_to_string(entry.path()).ok()?;
            let line = text.lines().find(|l| l.contains("panicked"))?;
            Some(format!("{}: {line}", entry.path().display()))
        })
        .collect()
}

/// Strategy InPlace: the pods of a pod set play ferry-server's admin side (stage, switch, unload, `/status`), one
/// small server per pod on a loopback address of its own, port 8081, started by the kubelet loop once the pod's
/// volumes exist (the ConfigMap `<name>-ferry-model`, whose model it starts serving, and the admin-credential
/// Secret, whose credential it asks of every mutating call). A stage takes a random 0.3-2 s, so that kills land
/// in the middle of stages; a switch is immediate, pod by pod, so that kills land between the pods of a switch.
mod in_place {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use axum::Router;
    use ferry::server_contract::DesiredModel;
    use serde_json::{json, Value};
    use sha2::{Digest, Sha256};

    /// What the servers are doing, for the monkey to aim its kills.
    #[derive(Default)]
    pub struct Activity {
        /// Stages running now, over all pods.
        pub loading: AtomicUsize,
        /// Switches answered so far, over all pods.
        pub switches: AtomicU64,
    }

    #[derive(Clone, Debug)]
    pub struct Loaded {
        pub version: String,
        pub uri: String,
        /// Served at some point (previous once it no longer serves), or only staged.
        pub served: bool,
        loaded_at: String,
    }

    #[derive(Clone, Debug)]
    struct Stage {
        version: String,
        uri: String,
        done: bool,
    }

    /// One pod's server: what it holds and serves.
    #[derive(Clone, Debug)]
    pub struct ServerState {
        credential: String,
        pub versions: Vec<Loaded>,
        pub serving: String,
        stage: Option<Stage>,
        last_switch: Option<(String, String, String)>,
    }

    impl ServerState {
        pub fn holds(&self, version: &str) -> bool {
            self.versions.iter().any(|v| v.version == version)
        }
    }

    pub struct Server {
        pub address: Ipv4Addr,
        pub state: Arc<Mutex<ServerState>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    #[derive(Clone)]
    struct App {
        state: Arc<Mutex<ServerState>>,
        activity: Arc<Activity>,
    }

    fn now() -> String {
        k8s_openapi::jiff::Timestamp::now().to_string()
    }

    fn sha256(uri: &str) -> String {
        Sha256::digest(uri.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    type Answer = (StatusCode, [(&'static str, &'static str); 1], String);

    fn answer(status: StatusCode, body: Value) -> Answer {
        (
            status,
            [("content-type", "application/json")],
            body.to_string(),
        )
    }

    fn error(status: StatusCode, code: &str, message: &str) -> Answer {
        answer(status, json!({"error": message, "code": code}))
    }

    impl Server {
        /// Starts serving `model` at a free loopback address, asking `credential` of mutating calls.
        pub async fn start(
            model: &DesiredModel,
            credential: &str,
            activity: Arc<Activity>,
        ) -> Server {
            let state = Arc::new(Mutex::new(ServerState {
                credential: credential.to_owned(),
                versions: vec![Loaded {
                    version: model.version.clone(),
                    uri: model.uri.clone(),
                    served: true,
                    loaded_at: now(),
                }],
                serving: model.version.clone(),
                stage: None,
                last_switch: None,
            }));
            let app = App {
                state: state.clone(),
                activity,
            };
            let router = Router::new()
                .route("/status", get(status))
                .route("/v2/repository/models/{name}/{verb}", post(admin))
                .with_state(app);
            for _ in 0..100 {
                let address = Ipv4Addr::new(
                    127,
                    rand::random_range(1..=254),
                    rand::random(),
                    rand::random_range(1..=254),
                );
                let port = ferry::server_contract::ADMIN_PORT as u16;
                let Ok(listener) = tokio::net::TcpListener::bind((address, port)).await else {
                    continue;
                };
                let router = router.clone();
                let task = tokio::spawn(async move {
                    let _ = axum::serve(listener, router).await;
                });
                return Server {
                    address,
                    state,
                    task,
                };
            }
            panic!(
                "no free loopback address for port 8081 (is something listening on 0.0.0.0:8081?)"
            );
        }
    }

    async fn status(State(app): State<App>) -> Answer {
        let state = app.state.lock().unwrap().clone();
        let view = |uri: &str| sha256(uri);
        let serving = state
            .versions
            .iter()
            .find(|v| v.version == state.serving)
            .expect("the serving version is loaded");
        let versions: Vec<Value> = state
            .versions
            .iter()
            .map(|v| {
                let kind = if v.version == state.serving {
                    "serving"
                } else if v.served {
                    "previous"
                } else {
                    "staged"
                };
                json!({"version": v.version, "uri": v.uri, "sha256": view(&v.uri), "bytes": 100,
                       "state": kind, "loaded_at": v.loaded_at})
            })
            .collect();
        let load = state.stage.as_ref().map(|s| {
            json!({"version": s.version, "stage": true, "uri": s.uri,
                   "phase": if s.done { "ready" } else { "downloading" },
                   "bytes_done": if s.done { 100 } else { 10 }, "bytes_total": 100,
                   "sha256": s.done.then(|| view(&s.uri)), "reason": null, "message": null, "operator": null,
                   "timings": {"fetch_seconds": null, "verify_seconds": null, "load_seconds": null,
                               "warmup_seconds": null, "total_seconds": null}})
        });
        let credential_id = state.credential.split('.').next().unwrap_or_default();
        answer(
            StatusCode::OK,
            json!({
                "model": "chaos", "phase": "ready", "ready": true, "shutting_down": false,
                "version": state.serving, "sha256": view(&serving.uri), "bytes_done": 100, "bytes_total": 100,
                "reason": null, "message": null, "operator": null,
                "serving": {"version": state.serving, "uri": serving.uri, "sha256": view(&serving.uri),
                            "bytes": 100, "platform": "onnxruntime_onnx"},
                "load": load, "capabilities": {},
                "admin": {"mode": "token", "credential_id": credential_id},
                "versions": versions,
                "last_switch": state.last_switch.as_ref().map(|(from, to, at)| json!({"from": from, "to": to, "at": at})),
            }),
        )
    }

    async fn admin(
        State(app): State<App>,
        Path((_, verb)): Path<(String, String)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Answer {
        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
        let version = body["parameters"]["version"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut state = app.state.lock().unwrap();
        let expected = format!("Bearer {}", state.credential);
        if headers.get("authorization").and_then(|h| h.to_str().ok()) != Some(expected.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "not the server's credential",
            );
        }
        match verb.as_str() {
            "load" => {
                let uri = body["parameters"]["uri"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if state.stage.as_ref().is_some_and(|s| !s.done) {
                    return error(StatusCode::CONFLICT, "Busy", "another load is in progress");
                }
                if let Some(loaded) = state.versions.iter().find(|v| v.version == version) {
                    return if loaded.uri == uri {
                        answer(StatusCode::OK, json!({}))
                    } else {
                        error(StatusCode::CONFLICT, "Conflict", "loaded from another uri")
                    };
                }
                state.stage = Some(Stage {
                    version: version.clone(),
                    uri: uri.clone(),
                    done: false,
                });
                app.activity.loading.fetch_add(1, Ordering::SeqCst);
                let (shared, activity) = (app.state.clone(), app.activity.clone());
                tokio::spawn(async move {
                    let took = rand::random_range(300..=2000);
                    tokio::time::sleep(Duration::from_millis(took)).await;
                    let mut state = shared.lock().unwrap();
                    state.versions.push(Loaded {
                        version,
                        uri,
                        served: false,
                        loaded_at: now(),
                    });
                    if let Some(stage) = state.stage.as_mut() {
                        stage.done = true;
                    }
                    activity.loading.fetch_sub(1, Ordering::SeqCst);
                });
                answer(StatusCode::ACCEPTED, json!({}))
            }
            "switch" => {
                if !state.holds(&version) {
                    return error(StatusCode::NOT_FOUND, "NotLoaded", "version not loaded");
                }
                let from = std::mem::replace(&mut state.serving, version.clone());
                for loaded in &mut state.versions {
                    if loaded.version == version {
                        loaded.served = true;
                    }
                }
                state.last_switch = Some((from, version, now()));
                app.activity.switches.fetch_add(1, Ordering::SeqCst);
                answer(StatusCode::OK, json!({}))
            }
            "unload" => {
                let loading = state
                    .stage
                    .as_ref()
                    .is_some_and(|s| !s.done && s.version == version);
                if state.serving == version || loading {
                    return error(StatusCode::CONFLICT, "InUse", "serving or loading");
                }
                state.versions.retain(|v| v.version != version);
                answer(StatusCode::OK, json!({}))
            }
            _ => error(StatusCode::NOT_FOUND, "NotFound", "no such route"),
        }
    }

    /// The servers of every running InPlace pod, by pod name, with the ModelDeployment each belongs to.
    #[derive(Default)]
    pub struct Servers {
        pub by_pod: Mutex<BTreeMap<String, (String, Arc<Server>)>>,
    }
}
