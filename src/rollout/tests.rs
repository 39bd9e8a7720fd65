//! Every rollout transition, without a cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::api::{
    ModelDeploymentSpec, ModelSignature, ModelSource, Outcome, Phase, PodCounts, PodPhase,
    RevisionStatus, RolloutPolicy, ServerTemplate,
};
use crate::conditions::{events, reasons, types};
use crate::server_contract::{FailureReason, LoadFailure, Reason};

const T0: i64 = 1_800_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(T0 + seconds).unwrap()
}

fn spec(replicas: i32) -> ModelDeploymentSpec {
    ModelDeploymentSpec {
        model: ModelSource {
            name: None,
            uri: "s3://models/iris.onnx".into(),
            version: "v".into(),
            sha256: None,
            format: "onnx".into(),
            credentials_secret_ref: None,
            storage: None,
            validation: None,
            refresh: None,
            framework_version: None,
        },
        replicas,
        server: ServerTemplate::default(),
        runtime: None,
        // The table tests below are about the hard deadline; the progress deadline has tests of its own.
        rollout: RolloutPolicy {
            load_timeout_seconds: 600,
            progress_deadline_seconds: 86400,
            ..RolloutPolicy::default()
        },
        revision_history_limit: 10,
    }
}

fn model(revision: &str) -> ModelIdentity {
    ModelIdentity {
        version: format!("version-{revision}"),
        uri: format!("s3://models/{revision}.onnx"),
        sha256: None,
        object: None,
        detected_at: None,
    }
}

/// A revision that has been created at `created` seconds and is loading.
fn revision(name: &str, created: i64, replicas: i32) -> ObservedRevision {
    ObservedRevision {
        revision: name.into(),
        model: model(name),
        created_at: at(created),
        replicas,
        available_replicas: 0,
        rolled_out: false,
        marks: RevisionMarks {
            rollout_started_at: Some(at(created)),
            ..Default::default()
        },
        unreadable_marks: None,
        pod_set: false,
        load_failure: None,
        pods: Vec::new(),
        runtime: None,
    }
}

fn ready(mut r: ObservedRevision) -> ObservedRevision {
    r.available_replicas = r.replicas;
    r.rolled_out = true;
    r
}

fn promoted(mut r: ObservedRevision, when: i64) -> ObservedRevision {
    r.marks.promoted_at = Some(at(when));
    r.marks.rollout_started_at = None;
    r
}

struct Scenario {
    spec: ModelDeploymentSpec,
    generation: i64,
    status: ModelDeploymentStatus,
    desired: &'static str,
    revisions: Vec<ObservedRevision>,
    active: Option<&'static str>,
    promote: Option<&'static str>,
    abort: Option<&'static str>,
    /// Why no runtime serves the spec; None: the desired revision runs on `runtime`.
    no_runtime: Option<NoRuntime>,
    runtime: Option<RevisionRuntime>,
    refresh: refresh::Refresh,
    /// The revision the preview Service selects.
    preview: Option<&'static str>,
    lost: Vec<LostState>,
    now: i64,
}

impl Scenario {
    fn new(desired: &'static str) -> Self {
        Scenario {
            spec: spec(2),
            generation: 1,
            status: ModelDeploymentStatus::default(),
            desired,
            revisions: Vec::new(),
            active: None,
            promote: None,
            abort: None,
            no_runtime: None,
            runtime: None,
            refresh: refresh::Refresh::default(),
            preview: None,
            lost: Vec::new(),
            now: 100,
        }
    }
    fn with(mut self, r: ObservedRevision) -> Self {
        self.revisions.push(r);
        self
    }
    /// The active Service selects `r`, and the previous reconcile reported it active.
    fn active(mut self, r: &'static str) -> Self {
        self.active = Some(r);
        self.status.active = Some(Box::new(RevisionStatus {
            revision: r.into(),
            version: model(r).version,
            uri: model(r).uri,
            ..Default::default()
        }));
        self
    }
    fn decide(&self) -> Plan {
        decide(&self.observed()).plan
    }
}

fn event_reasons(plan: &Plan) -> Vec<&'static str> {
    plan.events.iter().map(|e| e.reason).collect()
}

fn condition<'a>(
    plan: &'a Plan,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    plan.status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition present")
}

#[test]
fn first_deploy_creates_the_revision_without_traffic() {
    let plan = Scenario::new("a").decide();
    assert_eq!(plan.desired_replicas, Some(2));
    assert_eq!(plan.active, None, "nothing is available yet");
    assert_eq!(plan.preview.as_deref(), Some("a"));
    assert_eq!(plan.marks["a"].rollout_started_at, Some(at(100)));
    assert_eq!(plan.status.phase, Some(Phase::Progressing));
    assert_eq!(condition(&plan, types::READY).status, "False");
    assert_eq!(
        condition(&plan, types::READY).reason,
        reasons::NOTHING_SERVING
    );
    assert_eq!(condition(&plan, types::PROGRESSING).status, "True");
    assert_eq!(event_reasons(&plan), [events::ROLLOUT_STARTED]);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(600)));
    assert_eq!(condition(&plan, types::RECONCILING).status, "True");
    assert_eq!(condition(&plan, types::STALLED).status, "False");
}

#[test]
fn first_deploy_is_promoted_once_every_replica_is_ready() {
    let half = Scenario::new("a").with({
        let mut r = revision("a", 0, 2);
        r.available_replicas = 1;
        r
    });
    assert_eq!(half.decide().active, None);

    let plan = Scenario::new("a").with(ready(revision("a", 0, 2))).decide();
    assert_eq!(plan.active.as_deref(), Some("a"));
    assert_eq!(plan.preview, None);
    assert_eq!(plan.status.phase, Some(Phase::Available));
    assert_eq!(plan.status.active.as_ref().unwrap().revision, "a");
    assert_eq!(
        plan.status.selector.as_deref(),
        Some("ferry.dev/model-deployment=iris,ferry.dev/revision=a")
    );
    assert_eq!(plan.status.replicas, Some(2));
    assert_eq!(plan.status.ready_replicas, Some(2));
    assert_eq!(plan.marks["a"].promoted_at, Some(at(100)));
    assert_eq!(plan.status.history[0].outcome, Outcome::Promoted);
    assert_eq!(event_reasons(&plan), [events::PROMOTED]);
    assert_eq!(condition(&plan, types::READY).status, "True");
    assert_eq!(condition(&plan, types::PROGRESSING).status, "False");
    assert_eq!(condition(&plan, types::DEGRADED).status, "False");
}

#[test]
fn a_deployment_not_yet_observed_by_its_controller_is_not_promoted() {
    let mut r = ready(revision("a", 0, 2));
    r.rolled_out = false;
    assert_eq!(Scenario::new("a").with(r).decide().active, None);
}

#[test]
fn a_version_bump_keeps_traffic_on_the_active_revision_while_loading() {
    let plan = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(revision("b", 90, 2))
        .active("a")
        .decide();
    assert_eq!(plan.active.as_deref(), Some("a"));
    assert_eq!(plan.preview.as_deref(), Some("b"));
    assert_eq!(plan.desired_replicas, Some(2));
    assert!(plan.scale.is_empty(), "{:?}", plan.scale);
    assert_eq!(plan.status.phase, Some(Phase::Progressing));
    assert_eq!(plan.status.candidate.as_ref().unwrap().revision, "b");
    assert_eq!(
        condition(&plan, types::READY).status,
        "True",
        "the old version still serves"
    );
}

#[test]
fn promotion_switches_traffic_and_keeps_the_old_revision_warm() {
    let mut scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(ready(revision("b", 90, 2)))
        .active("a");
    scenario.spec.rollout.previous_replicas = Some(1);
    let plan = scenario.decide();
    assert_eq!(plan.active.as_deref(), Some("b"));
    assert_eq!(
        plan.scale.get("a"),
        Some(&1),
        "previous revision scaled to previousReplicas"
    );
    assert_eq!(plan.status.previous.len(), 1);
    assert_eq!(plan.status.previous[0].revision, "a");
    assert_eq!(event_reasons(&plan), [events::PROMOTED]);
}

#[test]
fn each_load_failure_reason_aborts_with_its_condition_reason_and_reads_as_before() {
    let cases = [
        (
            FailureReason::Server(Reason::ValidationFailed),
            reasons::VALIDATION_FAILED,
        ),
        (FailureReason::OutOfMemory, reasons::OUT_OF_MEMORY),
        (
            FailureReason::Server(Reason::InvalidValidationFile),
            reasons::MODEL_LOAD_FAILED,
        ),
        (
            FailureReason::Server(Reason::CorruptModel),
            reasons::MODEL_LOAD_FAILED,
        ),
        // The Python runtimes' refusals are load failures like the others, with the server's reason in the message.
        (
            FailureReason::Server(Reason::IncompatibleRuntime),
            reasons::MODEL_LOAD_FAILED,
        ),
        (
            FailureReason::Server(Reason::UnsafeModel),
            reasons::MODEL_LOAD_FAILED,
        ),
        (
            FailureReason::Server(Reason::UnsafeArchive),
            reasons::MODEL_LOAD_FAILED,
        ),
        (
            FailureReason::Server(Reason::WorkerFailed),
            reasons::MODEL_LOAD_FAILED,
        ),
        (FailureReason::ServerExited, reasons::MODEL_LOAD_FAILED),
        (FailureReason::StageRefused, reasons::MODEL_LOAD_FAILED),
        (FailureReason::Unreachable, reasons::MODEL_LOAD_FAILED),
    ];
    for (reason, expected) in cases {
        let mut failing = revision("b", 90, 2);
        failing.load_failure = Some(LoadFailure::new(reason, "pod iris-b-1: it failed"));
        let plan = Scenario::new("b")
            .with(promoted(ready(revision("a", 0, 2)), 10))
            .with(failing)
            .active("a")
            .decide();
        let candidate = plan.status.candidate.as_ref().unwrap();
        assert_eq!(candidate.reason.as_deref(), Some(expected), "{reason}");
        assert_eq!(
            candidate.message.clone().unwrap(),
            format!("{}: pod iris-b-1: it failed", reason.as_str())
        );
    }
    // The reason named in the status is the one the condition vocabulary has.
    assert_eq!(FailureReason::OutOfMemory.as_str(), reasons::OUT_OF_MEMORY);
}

#[test]
fn a_load_failure_aborts_the_candidate_and_traffic_stays() {
    let mut failing = revision("b", 90, 2);
    failing.load_failure = Some(LoadFailure::new(
        Reason::ChecksumMismatch,
        "expected 00aa, got 11bb",
    ));
    let plan = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(failing)
        .active("a")
        .decide();
    assert_eq!(plan.active.as_deref(), Some("a"));
    assert_eq!(plan.preview, None);
    assert_eq!(
        plan.desired_replicas,
        Some(0),
        "aborted candidate scaled to zero, kept for inspection"
    );
    let degraded = condition(&plan, types::DEGRADED);
    assert_eq!(degraded.status, "True");
    assert_eq!(degraded.reason, reasons::MODEL_LOAD_FAILED);
    assert!(
        degraded.message.contains("ChecksumMismatch"),
        "{}",
        degraded.message
    );
    assert_eq!(plan.status.phase, Some(Phase::Degraded));
    assert_eq!(plan.status.history[0].outcome, Outcome::Aborted);
    assert_eq!(event_reasons(&plan), [events::ROLLOUT_ABORTED]);
    assert!(plan.events[0].warning);
    assert_eq!(
        plan.marks["b"].aborted.as_ref().unwrap().reason,
        AbortReason::ModelLoadFailed
    );
}

#[test]
fn a_candidate_past_its_deadline_is_aborted() {
    let mut scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(revision("b", 90, 2))
        .active("a");
    scenario.spec.rollout.load_timeout_seconds = 30;
    scenario.now = 119;
    let plan = scenario.decide();
    assert_eq!(
        plan.requeue_after,
        Some(Duration::from_secs(1)),
        "requeued at the deadline, not polled"
    );
    assert_eq!(plan.desired_replicas, Some(2));
    scenario.now = 120;
    let plan = scenario.decide();
    assert_eq!(plan.desired_replicas, Some(0));
    assert_eq!(
        condition(&plan, types::DEGRADED).reason,
        reasons::PROGRESS_DEADLINE_EXCEEDED
    );
    assert_eq!(plan.active.as_deref(), Some("a"));
}

fn loading_pod(name: &str, phase: PodPhase, bytes: (u64, u64), last_progress: i64) -> ObservedPod {
    ObservedPod {
        name: name.into(),
        phase,
        bytes: Some(bytes.0).map(|done| (done, Some(bytes.1))),
        last_progress_at: Some(at(last_progress)),
        stands: format!(
            "{} at {} of {}",
            format!("{phase:?}").to_lowercase(),
            crate::observed::units::human_bytes(bytes.0),
            crate::observed::units::human_bytes(bytes.1)
        ),
        ..Default::default()
    }
}

#[test]
fn a_load_that_keeps_moving_outlives_the_progress_deadline_and_a_stalled_one_does_not() {
    let mut b = revision("b", 90, 2);
    b.pods = vec![
        loading_pod("iris-b-1", PodPhase::Downloading, (6 << 30, 20 << 30), 150),
        loading_pod("iris-b-2", PodPhase::Downloading, (5 << 30, 20 << 30), 140),
    ];
    let mut scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(b)
        .active("a");
    scenario.spec.rollout.load_timeout_seconds = 3600;
    scenario.spec.rollout.progress_deadline_seconds = 60;
    // 100 s after the rollout started, longer than the progress deadline, but a pod moved 50 s ago.
    scenario.now = 200;
    let plan = scenario.decide();
    assert_eq!(
        plan.status.candidate.as_ref().unwrap().reason.as_deref(),
        Some(reasons::LOADING)
    );
    assert_eq!(
        plan.requeue_after,
        Some(Duration::from_secs(10)),
        "looks again when the progress deadline would pass"
    );
    let progress = plan
        .status
        .candidate
        .as_ref()
        .unwrap()
        .progress
        .clone()
        .unwrap();
    assert_eq!(progress.phase, PodPhase::Downloading);
    assert_eq!(progress.bytes_total, Some(40 << 30));
    assert_eq!(progress.percent, Some(25), "11 of 40 GiB, in steps of 5");

    scenario.now = 210;
    let plan = scenario.decide();
    assert_eq!(plan.active.as_deref(), Some("a"), "traffic stays");
    assert_eq!(plan.desired_replicas, Some(0));
    let degraded = condition(&plan, types::DEGRADED);
    assert_eq!(degraded.reason, reasons::PROGRESS_DEADLINE_EXCEEDED);
    assert!(
        degraded.message.contains("no load progress for 60s")
            && degraded
                .message
                .contains("pod iris-b-1 is downloading at 6.0 GiB of 20.0 GiB"),
        "{}",
        degraded.message
    );
}

#[test]
fn without_any_pod_the_progress_deadline_counts_from_the_start_of_the_rollout() {
    let mut scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(revision("b", 90, 2))
        .active("a");
    scenario.spec.rollout.progress_deadline_seconds = 60;
    scenario.now = 150;
    let plan = scenario.decide();
    let degraded = condition(&plan, types::DEGRADED);
    assert_eq!(degraded.reason, reasons::PROGRESS_DEADLINE_EXCEEDED);
    assert!(
        degraded.message.contains("no pod was created"),
        "{}",
        degraded.message
    );
}

#[test]
fn a_load_that_fails_inside_a_running_pod_aborts_with_the_servers_reason() {
    let mut b = revision("b", 90, 2);
    let failure = LoadFailure::new(Reason::ChecksumMismatch, "expected 00aa, got 11bb");
    b.load_failure = Some(failure.clone());
    b.pods = vec![ObservedPod {
        name: "iris-b-1".into(),
        phase: PodPhase::Failed,
        failure: Some(failure),
        ..Default::default()
    }];
    let plan = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(b)
        .active("a")
        .decide();
    let candidate = plan.status.candidate.as_ref().unwrap();
    assert_eq!(
        candidate.reason.as_deref(),
        Some(reasons::MODEL_LOAD_FAILED)
    );
    assert_eq!(candidate.pod_counts.unwrap().failed, 1);
    assert_eq!(
        candidate.pods[0].reason.as_deref(),
        Some("ChecksumMismatch")
    );
}

#[test]
fn the_status_shows_each_pods_state_and_a_served_checksum_that_is_not_the_pinned_one() {
    let ready_pod = |name: &str, sha: &str| ObservedPod {
        name: name.into(),
        phase: PodPhase::Ready,
        sha256: Some(sha.into()),
        ..Default::default()
    };
    let mut a = promoted(ready(revision("a", 0, 2)), 10);
    a.model.sha256 = Some("aa".repeat(32));
    a.pods = vec![
        ready_pod("iris-a-1", &"aa".repeat(32)),
        ready_pod("iris-a-2", &"aa".repeat(32)),
    ];
    let mut scenario = Scenario::new("a").with(a).active("a");
    let plan = scenario.decide();
    let active = plan.status.active.as_ref().unwrap();
    assert_eq!(active.served_sha256, vec!["aa".repeat(32)]);
    assert_eq!(active.pod_counts.unwrap().ready, 2);
    assert_eq!(active.pods.len(), 2);
    assert_eq!(condition(&plan, types::DEGRADED).status, "False");

    scenario.revisions[0].pods[1].sha256 = Some("bb".repeat(32));
    let plan = scenario.decide();
    let degraded = condition(&plan, types::DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", reasons::SERVED_CHECKSUM_MISMATCH)
    );
    assert!(
        degraded.message.contains(&"bb".repeat(32)),
        "{}",
        degraded.message
    );

    scenario.revisions[0].pods[1] = ObservedPod {
        name: "iris-a-2".into(),
        phase: PodPhase::Unreachable,
        failure: Some(LoadFailure::new(
            FailureReason::Unreachable,
            "connection refused",
        )),
        ..Default::default()
    };
    let plan = scenario.decide();
    let active = plan.status.active.as_ref().unwrap();
    assert_eq!(
        active.pod_counts.unwrap(),
        PodCounts {
            ready: 1,
            unreachable: 1,
            ..Default::default()
        },
        "unreachable, never failed"
    );
    assert_eq!(
        active.pods[0].name, "iris-a-2",
        "the pods that need a look come first"
    );
    assert_eq!(
        condition(&plan, types::READY).status,
        "True",
        "the kubelet says ready"
    );
}

#[test]
fn an_abort_is_sticky_until_the_spec_changes() {
    let mut aborted = revision("b", 90, 0);
    aborted.marks.aborted = Some(AbortMark {
        reason: AbortReason::ModelLoadFailed,
        message: "CorruptModel".into(),
        generation: 2,
    });
    let mut scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(aborted)
        .active("a");
    scenario.generation = 2;
    let plan = scenario.decide();
    assert_eq!(plan.desired_replicas, Some(0));
    assert!(plan.marks.is_empty(), "nothing to write: {:?}", plan.marks);

    scenario.generation = 3;
    let plan = scenario.decide();
    assert_eq!(plan.desired_replicas, Some(2), "a new generation retries");
    assert_eq!(plan.marks["b"].aborted, None);
    assert_eq!(plan.marks["b"].rollout_started_at, Some(at(100)));
}

#[test]
fn rollback_to_a_warm_revision_switches_at_once() {
    let plan = Scenario::new("a")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(promoted(ready(revision("b", 50, 2)), 60))
        .active("b")
        .decide();
    assert_eq!(plan.active.as_deref(), Some("a"));
    assert_eq!(plan.desired_replicas, Some(2));
    assert_eq!(plan.status.history[0].outcome, Outcome::RolledBack);
    assert_eq!(event_reasons(&plan), [events::ROLLED_BACK]);
    assert_eq!(
        plan.status.previous[0].revision, "b",
        "the version rolled back from stays warm"
    );
}

#[test]
fn a_rollback_whose_service_switched_before_a_restart_is_still_recorded_as_a_rollback() {
    let mut scenario = Scenario::new("a")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(promoted(ready(revision("b", 50, 2)), 60))
        .active("b");
    scenario.status.previous = vec![RevisionStatus {
        revision: "a".into(),
        version: model("a").version,
        ..Default::default()
    }];
    // The last process switched the Service to a and was killed before it wrote the status.
    scenario.active = Some("a");
    let plan = scenario.decide();
    assert_eq!(plan.active.as_deref(), Some("a"));
    assert_eq!(plan.status.history[0].outcome, Outcome::RolledBack);
    assert_eq!(event_reasons(&plan), [events::ROLLED_BACK]);
}

#[test]
fn after_a_restart_the_progress_deadline_counts_from_the_recorded_progress_once_the_pods_are_read_twice(
) {
    let mut b = revision("b", 90, 1);
    b.pods = vec![ObservedPod {
        name: "iris-b-1".into(),
        phase: PodPhase::Downloading,
        bytes: Some((300, Some(1000))),
        progress_unknown: true,
        stands: "downloading at 300 B of 1000 B".into(),
        ..Default::default()
    }];
    let mut scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 1)), 10))
        .with(b)
        .active("a");
    scenario.spec.rollout.progress_deadline_seconds = 60;
    scenario.status.candidate = Some(Box::new(RevisionStatus {
        revision: "b".into(),
        progress: Some(crate::api::LoadProgress {
            last_progress_at: Some(Time(at(100))),
            ..Default::default()
        }),
        ..Default::default()
    }));
    scenario.now = 200;
    let plan = scenario.decide();
    let candidate = plan.status.candidate.as_ref().unwrap();
    assert_eq!(
        candidate.reason.as_deref(),
        Some(reasons::LOADING),
        "the pod gets a second read"
    );
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(3)));
    assert_eq!(
        candidate.progress.as_ref().unwrap().last_progress_at,
        Some(Time(at(100))),
        "the record is kept"
    );

    scenario.revisions[1].pods[0].progress_unknown = false;
    let plan = scenario.decide();
    let degraded = condition(&plan, types::DEGRADED);
    assert_eq!(degraded.reason, reasons::PROGRESS_DEADLINE_EXCEEDED);
    assert!(
        degraded.message.contains("no load progress for 100s"),
        "{}",
        degraded.message
    );
}

#[test]
fn a_cold_old_revision_is_rolled_out_like_a_new_one() {
    let plan = Scenario::new("a")
        .with(promoted(revision("a", 0, 0), 10))
        .with(promoted(ready(revision("b", 50, 2)), 60))
        .active("b")
        .decide();
    assert_eq!(plan.active.as_deref(), Some("b"));
    assert_eq!(plan.desired_replicas, Some(2));
    assert_eq!(plan.preview.as_deref(), Some("a"));
}

#[test]
fn a_spec_change_mid_rollout_supersedes_the_candidate() {
    let mut scenario = Scenario::new("c")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(revision("b", 50, 2))
        .active("a");
    scenario.status = scenario.decide_status_with_candidate("b");
    let plan = scenario.decide();
    assert_eq!(plan.scale.get("b"), Some(&0));
    assert_eq!(plan.preview.as_deref(), Some("c"));
    assert_eq!(plan.status.history[0].outcome, Outcome::Superseded);
    assert_eq!(plan.status.history[0].revision, "b");
    assert_eq!(
        event_reasons(&plan),
        [events::SUPERSEDED, events::ROLLOUT_STARTED]
    );
}

impl Scenario {
    /// The status a previous reconcile wrote while `candidate` was still loading.
    fn decide_status_with_candidate(&self, candidate: &'static str) -> ModelDeploymentStatus {
        let mut earlier = Scenario::new(candidate);
        earlier.revisions = self.revisions.clone();
        for r in &mut earlier.revisions {
            if r.revision == candidate {
                r.available_replicas = 0;
                r.rolled_out = false;
            }
        }
        earlier.active = self.active;
        earlier.status = self.status.clone();
        earlier.spec = self.spec.clone();
        earlier.decide().status
    }
}

#[test]
fn without_auto_promote_a_ready_candidate_waits_for_promote() {
    let mut scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(ready(revision("b", 90, 2)))
        .active("a");
    scenario.spec.rollout.auto_promote = false;
    scenario.status = scenario.decide_status_with_candidate("b");
    let waiting = scenario.decide();
    assert_eq!(waiting.active.as_deref(), Some("a"));
    assert_eq!(
        condition(&waiting, types::PROGRESSING).reason,
        reasons::WAITING_FOR_PROMOTION
    );
    assert_eq!(event_reasons(&waiting), [events::CANDIDATE_READY]);
    assert_eq!(
        condition(&waiting, types::RECONCILING).status,
        "False",
        "kstatus tools need not wait for a human"
    );
    assert_eq!(
        waiting.requeue_after, None,
        "a ready candidate has no deadline"
    );

    scenario.promote = Some("a");
    assert_eq!(
        scenario.decide().active.as_deref(),
        Some("a"),
        "a promote naming another revision is ignored"
    );
    scenario.promote = Some("b");
    assert_eq!(scenario.decide().active.as_deref(), Some("b"));
}

#[test]
fn the_first_version_is_promoted_even_without_auto_promote() {
    let mut scenario = Scenario::new("a").with(ready(revision("a", 0, 2)));
    scenario.spec.rollout.auto_promote = false;
    assert_eq!(scenario.decide().active.as_deref(), Some("a"));
}

#[test]
fn a_serving_revision_without_its_promotion_mark_gets_it() {
    // The controller stopped after switching traffic to "b" and before marking it promoted.
    let plan = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(ready(revision("b", 50, 2)))
        .active("b")
        .decide();
    assert_eq!(plan.marks["b"].promoted_at, Some(at(100)));
    assert_eq!(plan.marks["b"].rollout_started_at, None);
    assert_eq!(plan.active.as_deref(), Some("b"));
}

#[test]
fn abort_request_aborts_the_named_candidate() {
    let mut scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(revision("b", 90, 2))
        .active("a");
    scenario.abort = Some("b");
    let plan = scenario.decide();
    assert_eq!(plan.desired_replicas, Some(0));
    assert_eq!(
        condition(&plan, types::DEGRADED).reason,
        reasons::ABORTED_BY_USER
    );
}

#[test]
fn scaling_resizes_the_active_revision_and_a_candidate() {
    let mut scenario = Scenario::new("a")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .active("a");
    scenario.spec.replicas = 5;
    let plan = scenario.decide();
    assert_eq!(plan.desired_replicas, Some(5));
    assert_eq!(plan.status.replicas, Some(5));
    assert_eq!(condition(&plan, types::READY).status, "False");
    assert_eq!(
        condition(&plan, types::DEGRADED).reason,
        reasons::REPLICAS_UNAVAILABLE
    );

    let mut bump = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(revision("b", 90, 2))
        .active("a");
    bump.spec.replicas = 4;
    let plan = bump.decide();
    assert_eq!(plan.desired_replicas, Some(4));
    assert_eq!(plan.scale.get("a"), Some(&4));
}

#[test]
fn pruning_keeps_warm_previous_and_deletes_beyond_the_history_limit() {
    let mut scenario = Scenario::new("f").active("f");
    for (i, name) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        let t = i as i64 * 10;
        scenario = scenario.with(promoted(ready(revision(name, t, 2)), t + 1));
    }
    scenario = scenario.with(promoted(ready(revision("f", 60, 2)), 61));
    scenario.spec.rollout.keep_previous = 1;
    scenario.spec.revision_history_limit = 2;
    let plan = scenario.decide();
    assert_eq!(
        plan.status
            .previous
            .iter()
            .map(|p| p.revision.as_str())
            .collect::<Vec<_>>(),
        ["e"]
    );
    assert_eq!(
        plan.scale.get("e"),
        None,
        "warm previous keeps its replicas"
    );
    for cold in ["a", "b", "c", "d"] {
        assert_eq!(plan.scale.get(cold), Some(&0), "{cold} scaled to zero");
    }
    let mut deleted = plan.delete.clone();
    deleted.sort();
    assert_eq!(
        deleted,
        ["a", "b", "c"],
        "history limit 2 keeps e (warm) and d"
    );
}

fn no_runtime(runtimes: &[&str]) -> NoRuntime {
    NoRuntime {
        format: "sklearn".into(),
        declared: Some("1.5.2".into()),
        explicit: None,
        runtimes: runtimes.iter().map(|r| (*r).to_owned()).collect(),
        configured: None,
    }
}

#[test]
fn a_spec_no_runtime_serves_deploys_nothing_and_traffic_stays() {
    let mut scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .active("a");
    scenario.no_runtime = Some(no_runtime(&["ferry-onnx (onnx)"]));
    let plan = scenario.decide();
    assert_eq!(plan.desired_replicas, None);
    assert!(plan.scale.is_empty(), "{:?}", plan.scale);
    assert!(plan.marks.is_empty() && plan.delete.is_empty());
    assert_eq!(plan.active.as_deref(), Some("a"));
    assert_eq!(plan.preview, None);
    assert_eq!(plan.status.candidate, None);
    let degraded = condition(&plan, types::DEGRADED);
    assert_eq!(degraded.reason, reasons::NO_RUNTIME);
    assert_eq!(
        degraded.message,
        "no ModelRuntime serves format sklearn (declared scikit-learn 1.5.2); runtimes: ferry-onnx (onnx)"
    );
    assert_eq!(condition(&plan, types::STALLED).status, "True");
    assert_eq!(
        condition(&plan, types::READY).status,
        "True",
        "a still serves"
    );
    assert_eq!(event_reasons(&plan), [events::NO_RUNTIME]);
    assert_eq!(plan.events[0].note, degraded.message);

    scenario.status = plan.status;
    assert!(
        scenario.decide().events.is_empty(),
        "the same spec without a runtime is reported once"
    );
    scenario.no_runtime = Some(no_runtime(&["ferry-onnx (onnx)", "other (xgboost)"]));
    let changed_catalogue = scenario.decide();
    assert!(
        changed_catalogue.events.is_empty(),
        "a new runtime that does not serve it is no transition"
    );
    assert!(condition(&changed_catalogue, types::DEGRADED)
        .message
        .ends_with("other (xgboost)"));
    scenario.generation = 2;
    assert_eq!(
        event_reasons(&scenario.decide()),
        [events::NO_RUNTIME],
        "a new spec that no runtime serves either"
    );
}

#[test]
fn a_first_spec_no_runtime_serves_creates_nothing() {
    let mut scenario = Scenario::new("a");
    scenario.no_runtime = Some(no_runtime(&[]));
    let plan = scenario.decide();
    assert_eq!(plan.desired_replicas, None);
    assert_eq!(plan.active, None);
    assert!(plan.marks.is_empty());
    assert_eq!(plan.status.phase, Some(Phase::Degraded));
    assert_eq!(
        condition(&plan, types::PROGRESSING).reason,
        reasons::NO_RUNTIME
    );
}

#[test]
fn the_status_names_the_runtime_of_each_revision() {
    let python = RevisionRuntime {
        name: Some("ferry-python".into()),
        image: "ferry-server-python:0.2.0".into(),
    };
    let mut recorded = promoted(ready(revision("a", 0, 2)), 10);
    recorded.runtime = Some(RevisionRuntime {
        name: Some("ferry-onnx".into()),
        image: "ferry-server:0.1.0".into(),
    });
    let mut scenario = Scenario::new("b")
        .with(recorded.clone())
        .with(revision("b", 90, 2))
        .active("a");
    scenario.runtime = Some(python.clone());
    let status = scenario.decide().status;
    assert_eq!(status.active.unwrap().runtime, recorded.runtime);
    assert_eq!(status.candidate.unwrap().runtime, Some(python.clone()));

    // A Deployment made before runtimes were recorded: the desired revision's is the one chosen now.
    let mut settled = Scenario::new("a")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .active("a");
    settled.runtime = Some(python.clone());
    assert_eq!(
        settled.decide().status.active.unwrap().runtime,
        Some(python)
    );
}

/// Re-deciding from the status just written reports no transition again.
#[test]
fn repeated_reconciles_report_each_transition_once() {
    let scenarios = [
        Scenario::new("a"),
        Scenario::new("a").with(ready(revision("a", 0, 2))),
        Scenario::new("b")
            .with(promoted(ready(revision("a", 0, 2)), 10))
            .with(revision("b", 90, 2))
            .active("a"),
    ];
    for mut scenario in scenarios {
        let first = scenario.decide();
        scenario.status = first.status.clone();
        if let Some(active) = first.active.clone() {
            scenario.active = Some(Box::leak(active.into_boxed_str()));
        }
        for r in &mut scenario.revisions {
            if let Some(m) = first.marks.get(&r.revision) {
                r.marks = m.clone();
            }
        }
        let second = scenario.decide();
        assert!(second.events.is_empty(), "{:?}", second.events);
        assert_eq!(second.status.history, first.status.history);
        assert!(
            second.marks.is_empty() || scenario.revisions.is_empty(),
            "{:?}",
            second.marks
        );
    }
}

/// The invariant: the active Service only ever selects a revision that is available.
#[test]
fn the_active_service_never_targets_an_unavailable_revision() {
    let shapes: Vec<fn(ObservedRevision) -> ObservedRevision> = vec![
        |r| r,
        ready,
        |r| promoted(r, 5),
        |r| promoted(ready(r), 5),
        |mut r| {
            r.load_failure = Some(LoadFailure::new(Reason::CorruptModel, ""));
            r
        },
        |mut r| {
            r.available_replicas = 1;
            r.rolled_out = true;
            r
        },
    ];
    for (i, a_shape) in shapes.iter().enumerate() {
        for (j, b_shape) in shapes.iter().enumerate() {
            for active in [None, Some("a"), Some("b")] {
                for desired in ["a", "b"] {
                    let mut scenario = Scenario::new(desired)
                        .with(a_shape(revision("a", 0, 2)))
                        .with(b_shape(revision("b", 10, 2)));
                    scenario.active = active;
                    let plan = scenario.decide();
                    if plan.active.as_deref() != active {
                        let target = scenario
                            .revisions
                            .iter()
                            .find(|r| Some(r.revision.as_str()) == plan.active.as_deref())
                            .expect("the active Service targets an existing revision");
                        assert!(
                            target.rolled_out && target.available_replicas >= target.replicas && target.available_replicas > 0,
                            "case a#{i} b#{j} active {active:?} desired {desired}: switched to unavailable {target:?}"
                        );
                    }
                }
            }
        }
    }
}

// The shared parts, fed a Summary directly: what any strategy gets from them.

impl Scenario {
    fn observed(&self) -> Observed<'_> {
        Observed {
            name: "iris",
            generation: self.generation,
            spec: &self.spec,
            previous_status: &self.status,
            desired: DesiredRevision {
                revision: self.desired.into(),
                model: self
                    .revisions
                    .iter()
                    .find(|r| r.revision == self.desired)
                    .map_or_else(|| model(self.desired), |r| r.model.clone()),
                runtime: self.runtime.clone(),
            },
            no_runtime: self.no_runtime.clone(),
            refresh: self.refresh.clone(),
            revisions: &self.revisions,
            active_service_target: self.active,
            preview_service_target: self.preview,
            requests: Requests {
                promote: self.promote,
                abort: self.abort,
            },
            lost: self.lost.clone(),
            in_place: None,
            endpoint: "http://iris.ns.svc:8080".into(),
            grpc_endpoint: "iris.ns.svc:8082".into(),
            now: at(self.now),
        }
    }
}

fn summary(active: Option<&str>, candidate: CandidateState) -> Summary {
    Summary {
        active: active.map(str::to_owned),
        candidate,
        marks: BTreeMap::new(),
        requeue_after: None,
        signature_changes: Vec::new(),
    }
}

#[test]
fn replicas_keep_the_active_revision_and_a_running_candidate_full_and_the_newest_previous_warm() {
    let mut scenario = Scenario::new("d")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(promoted(ready(revision("b", 20, 2)), 30))
        .with(promoted(ready(revision("c", 40, 2)), 50))
        .with(revision("d", 60, 0));
    scenario.spec.rollout.keep_previous = 1;
    scenario.spec.rollout.previous_replicas = Some(1);
    scenario.spec.revision_history_limit = 2;
    let observed = scenario.observed();
    let loading = summary(Some("c"), CandidateState::Loading);
    let planned = replicas::plan(&observed, &loading);
    assert_eq!(planned.desired, Some(2));
    assert_eq!(planned.wanted["c"], 2, "active");
    assert_eq!(planned.wanted["d"], 2, "running candidate");
    assert_eq!(
        planned.wanted["b"], 1,
        "newest previous, warm at previousReplicas"
    );
    assert_eq!(planned.wanted["a"], 0);
    assert_eq!(
        planned.scale,
        BTreeMap::from([("a".into(), 0), ("b".into(), 1)])
    );
    // revisionHistoryLimit 2 keeps both older revisions: b warm, a at zero.
    assert!(planned.delete.is_empty(), "{:?}", planned.delete);

    scenario.spec.revision_history_limit = 0;
    let observed = scenario.observed();
    let aborted = summary(
        Some("c"),
        CandidateState::Aborted(AbortMark {
            reason: AbortReason::ProgressDeadlineExceeded,
            message: "late".into(),
            generation: 1,
        }),
    );
    let planned = replicas::plan(&observed, &aborted);
    assert_eq!(
        planned.desired,
        Some(0),
        "an aborted candidate is scaled to zero"
    );
    assert_eq!(
        planned.delete,
        ["a"],
        "beyond the history limit and not warm"
    );

    let unserved = replicas::plan(
        &observed,
        &summary(Some("c"), CandidateState::NoRuntime(no_runtime(&[]))),
    );
    assert_eq!(
        unserved.desired, None,
        "a spec no runtime serves deploys nothing"
    );
}

#[test]
fn history_and_events_follow_the_summary_and_are_recorded_once() {
    let mut scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(ready(revision("b", 20, 2)))
        .active("a");
    let promoted_b = summary(Some("b"), CandidateState::Promote { rollback: false });
    let observed = scenario.observed();
    let planned = replicas::plan(&observed, &promoted_b);
    let built = status::build(&observed, &promoted_b, &planned);
    let (history, events) = history::record(&observed, &promoted_b, &built);
    assert_eq!(history[0].outcome, Outcome::Promoted);
    assert_eq!(history[0].revision, "b");
    assert_eq!(
        events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        [events::PROMOTED]
    );
    assert!(
        events[0].note.contains("from version version-a"),
        "{}",
        events[0].note
    );

    // The same facts against the status they produced: nothing new.
    scenario.status = built.into_status(&observed, &promoted_b, &planned, history.clone());
    let observed = scenario.observed();
    let built = status::build(
        &observed,
        &promoted_b,
        &replicas::plan(&observed, &promoted_b),
    );
    let (again, events) = history::record(&observed, &promoted_b, &built);
    assert_eq!(again, history);
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn a_candidate_status_carries_its_reason_as_a_value_and_the_details_as_its_message() {
    let scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with({
            let mut r = revision("b", 20, 2);
            r.available_replicas = 1;
            r
        })
        .active("a");
    let candidate = scenario.decide().status.candidate.unwrap();
    assert_eq!(candidate.reason.as_deref(), Some("Loading"));
    assert_eq!(candidate.message.as_deref(), Some("1/2 ready"));

    let deploying = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .active("a")
        .decide();
    let deploying = deploying.status.candidate.unwrap();
    assert_eq!(
        (deploying.reason.as_deref(), deploying.message.as_deref()),
        (Some("Loading"), Some("0/2 ready")),
        "the reconcile that creates the Deployment says none is ready yet"
    );

    let mut failed = scenario.revisions.clone();
    failed[1].load_failure = Some(LoadFailure::new(
        Reason::ChecksumMismatch,
        "expected 00, got 11",
    ));
    let mut failing = Scenario::new("b").active("a");
    failing.revisions = failed;
    let aborted = failing.decide().status.candidate.unwrap();
    assert_eq!(aborted.reason.as_deref(), Some("ModelLoadFailed"));
    assert_eq!(
        aborted.message.as_deref(),
        Some("ChecksumMismatch: expected 00, got 11")
    );
}

fn signature(inputs: &[(&str, &str, &[i64])], outputs: &[(&str, &str, &[i64])]) -> ModelSignature {
    let tensors = |list: &[(&str, &str, &[i64])]| {
        list.iter()
            .map(|(name, datatype, shape)| crate::api::TensorSignature {
                name: (*name).into(),
                datatype: (*datatype).into(),
                shape: shape.to_vec(),
            })
            .collect()
    };
    ModelSignature {
        inputs: tensors(inputs),
        outputs: tensors(outputs),
    }
}

/// Ready pods of `r` whose servers answered with `signature`.
fn reporting(mut r: ObservedRevision, signature: &ModelSignature) -> ObservedRevision {
    r.pods = (0..r.replicas)
        .map(|i| ObservedPod {
            name: format!("iris-{}-{i}", r.revision),
            phase: PodPhase::Ready,
            model: Some(Arc::new(ReportedModel {
                signature: Some(signature.clone()),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    r
}

#[test]
fn a_candidate_that_renames_an_input_is_held_until_the_spec_allows_it() {
    let served = signature(&[("X", "FP32", &[-1, 4])], &[("label", "INT64", &[-1])]);
    let renamed = signature(
        &[("features", "FP32", &[-1, 4])],
        &[("label", "INT64", &[-1])],
    );
    let mut scenario = Scenario::new("b")
        .with(reporting(promoted(ready(revision("a", 0, 2)), 10), &served))
        .with(reporting(ready(revision("b", 90, 2)), &renamed))
        .active("a");
    scenario.status.candidate = Some(Box::new(RevisionStatus {
        revision: "b".into(),
        reason: Some(reasons::LOADING.into()),
        ..Default::default()
    }));
    let plan = scenario.decide();
    assert_eq!(plan.active.as_deref(), Some("a"), "no traffic moves");
    assert_eq!(
        plan.preview.as_deref(),
        Some("b"),
        "the held candidate keeps running"
    );
    assert_eq!(plan.desired_replicas, Some(2));
    let candidate = plan.status.candidate.as_ref().unwrap();
    assert_eq!(
        candidate.reason.as_deref(),
        Some(reasons::SIGNATURE_CHANGED)
    );
    assert!(
        candidate.signature_changes.iter().any(|c| c.contains("X")),
        "{:?}",
        candidate.signature_changes
    );
    assert_eq!(candidate.signature.as_ref(), Some(&renamed));
    let degraded = condition(&plan, types::DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", reasons::SIGNATURE_CHANGED)
    );
    assert!(
        degraded.message.contains("allowSignatureChange"),
        "{}",
        degraded.message
    );
    assert_eq!(condition(&plan, types::STALLED).status, "True");
    assert_eq!(
        condition(&plan, types::READY).status,
        "True",
        "the active version serves"
    );
    assert_eq!(plan.status.phase, Some(Phase::Degraded));
    assert_eq!(event_reasons(&plan), [events::SIGNATURE_CHANGED]);

    // Held again: no second event.
    scenario.status = plan.status.clone();
    assert!(event_reasons(&scenario.decide()).is_empty());

    // Allowed: promoted, and the history says what changed.
    scenario.spec.rollout.allow_signature_change = true;
    scenario.generation = 2;
    let plan = scenario.decide();
    assert_eq!(plan.active.as_deref(), Some("b"));
    let entry = &plan.status.history[0];
    assert_eq!(entry.outcome, Outcome::Promoted);
    assert!(
        entry
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("signature: ") && m.contains("X")),
        "{entry:?}"
    );
}

#[test]
fn a_compatible_signature_change_passes_and_is_noted_in_the_history() {
    let served = signature(&[("X", "FP32", &[-1, 4])], &[("label", "INT64", &[-1])]);
    let more = signature(
        &[("X", "FP32", &[-1, 4])],
        &[
            ("label", "INT64", &[-1]),
            ("probabilities", "FP32", &[-1, 3]),
        ],
    );
    let plan = Scenario::new("b")
        .with(reporting(promoted(ready(revision("a", 0, 2)), 10), &served))
        .with(reporting(ready(revision("b", 90, 2)), &more))
        .active("a")
        .decide();
    assert_eq!(plan.active.as_deref(), Some("b"));
    let entry = &plan.status.history[0];
    assert!(
        entry
            .message
            .as_deref()
            .is_some_and(|m| m.contains("probabilities")),
        "{entry:?}"
    );

    let same = Scenario::new("b")
        .with(reporting(promoted(ready(revision("a", 0, 2)), 10), &served))
        .with(reporting(ready(revision("b", 90, 2)), &served))
        .active("a")
        .decide();
    assert_eq!(same.active.as_deref(), Some("b"));
    assert_eq!(same.status.history[0].message, None, "nothing to note");
}

#[test]
fn a_ready_candidate_not_read_yet_waits_for_its_signature_and_one_that_reports_none_passes() {
    let served = signature(&[("X", "FP32", &[-1, 4])], &[("label", "INT64", &[-1])]);
    let mut b = ready(revision("b", 90, 2));
    b.pods = vec![ObservedPod {
        name: "iris-b-0".into(),
        phase: PodPhase::Ready,
        report_pending: true,
        ..Default::default()
    }];
    let mut scenario = Scenario::new("b")
        .with(reporting(promoted(ready(revision("a", 0, 2)), 10), &served))
        .with(b)
        .active("a");
    let plan = scenario.decide();
    assert_eq!(plan.active.as_deref(), Some("a"));
    assert_eq!(
        plan.status.candidate.as_ref().unwrap().reason.as_deref(),
        Some(reasons::LOADING)
    );
    assert!(plan
        .requeue_after
        .is_some_and(|r| r <= Duration::from_secs(2)));

    // Its server answered without a signature (an older server): nothing to compare, it passes.
    scenario.revisions[1].pods[0].report_pending = false;
    assert_eq!(scenario.decide().active.as_deref(), Some("b"));
}

#[test]
fn a_golden_set_the_candidate_does_not_reproduce_aborts_it_with_its_own_reason() {
    let mut b = revision("b", 90, 2);
    b.load_failure = Some(LoadFailure::new(
        Reason::ValidationFailed,
        "7 of 10 cases passed (required 100%); worst: case row-3, output label, element 0: got 2, want 1",
    ));
    let plan = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(b)
        .active("a")
        .decide();
    assert_eq!(plan.active.as_deref(), Some("a"));
    let candidate = plan.status.candidate.as_ref().unwrap();
    assert_eq!(
        candidate.reason.as_deref(),
        Some(reasons::VALIDATION_FAILED)
    );
    assert!(candidate.message.as_deref().unwrap().contains("7 of 10"));
    assert_eq!(plan.desired_replicas, Some(0));
    assert_eq!(plan.status.history[0].outcome, Outcome::Aborted);
    assert_eq!(event_reasons(&plan), [events::ROLLOUT_ABORTED]);
}

// spec.model.refresh: revisions pinned to an object, as the controller builds them from `refresh::decide`.

/// A revision pinned to `object`, detected at `detected` seconds.
fn pinned(mut r: ObservedRevision, object: &str, detected: i64) -> ObservedRevision {
    r.model.object = Some(object.into());
    r.model.detected_at = Some(at(detected));
    r
}

fn refreshing(object: &str, detected: i64) -> refresh::Refresh {
    let status = crate::api::RefreshStatus {
        object: Some(object.into()),
        uri: Some("s3://models/iris.onnx".into()),
        detected_at: Some(Time(at(detected))),
        paused: false,
        message: None,
    };
    refresh::Refresh {
        object: status.object.clone(),
        detected_at: Some(at(detected)),
        status: Some(status),
        events: Vec::new(),
    }
}

fn served(mut r: ObservedRevision, object: &str, sha: &str) -> ObservedRevision {
    r.pods = (0..r.replicas)
        .map(|i| ObservedPod {
            name: format!("{}-{i}", r.revision),
            phase: PodPhase::Ready,
            sha256: Some(sha.into()),
            serving_object: Some(object.into()),
            ..Default::default()
        })
        .collect();
    r
}

#[test]
fn a_detected_object_rolls_out_as_a_pinned_revision_shown_in_status_and_history() {
    let mut scenario = Scenario::new("b")
        .with(served(
            promoted(ready(revision("a", 0, 2)), 10),
            "etag:\"1\"",
            "aa",
        ))
        .active("a");
    scenario.refresh = refreshing("etag:\"2\"", 90);
    scenario.refresh.events.push(PlannedEvent {
        warning: false,
        revision: None,
        reason: events::OBJECT_CHANGED,
        note: "new object".into(),
    });
    let plan = scenario.decide();
    assert_eq!(plan.active.as_deref(), Some("a"), "traffic stays");
    assert_eq!(
        plan.desired_replicas,
        Some(2),
        "the pinned revision deploys"
    );
    assert_eq!(
        event_reasons(&plan),
        [events::OBJECT_CHANGED, events::ROLLOUT_STARTED]
    );
    let active = plan.status.active.clone().unwrap();
    assert_eq!(
        active.object.as_deref(),
        Some("etag:\"1\""),
        "an unpinned revision shows the object its pods report"
    );
    assert_eq!(plan.status.refresh, scenario.refresh.status);

    // Loaded and ready: promoted, with its object, detection time and served SHA-256 in status and history.
    scenario = scenario.with(served(
        pinned(ready(revision("b", 90, 2)), "etag:\"2\"", 90),
        "etag:\"2\"",
        "bb",
    ));
    scenario.refresh.events.clear();
    scenario.status = plan.status;
    scenario.now = 120;
    let plan = scenario.decide();
    assert_eq!(plan.active.as_deref(), Some("b"));
    assert_eq!(event_reasons(&plan), [events::PROMOTED]);
    let active = plan.status.active.clone().unwrap();
    assert_eq!(active.object.as_deref(), Some("etag:\"2\""));
    assert_eq!(active.detected_at, Some(Time(at(90))));
    assert_eq!(active.served_sha256, ["bb"]);
    let entry = &plan.status.history[0];
    assert_eq!(entry.outcome, Outcome::Promoted);
    assert_eq!(entry.object.as_deref(), Some("etag:\"2\""));
    assert_eq!(entry.detected_at, Some(Time(at(90))));
    assert_eq!(entry.served_sha256, ["bb"]);
}

#[test]
fn a_refreshed_revision_that_failed_is_not_retried_until_a_newer_object() {
    let mut failed = pinned(revision("b", 90, 2), "etag:\"2\"", 90);
    failed.marks.aborted = Some(AbortMark {
        reason: AbortReason::ModelLoadFailed,
        message: "CorruptModel: not an ONNX file".into(),
        generation: 1,
    });
    let mut scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(failed)
        .active("a");
    scenario.refresh = refreshing("etag:\"2\"", 90);
    let first = scenario.decide();
    assert_eq!(first.active.as_deref(), Some("a"), "traffic stays");
    assert_eq!(
        first.status.candidate.as_ref().unwrap().reason.as_deref(),
        Some(reasons::MODEL_LOAD_FAILED)
    );
    // The next reconciles (the same object reported again, no spec change): still aborted, nothing new.
    scenario.status = first.status.clone();
    scenario.now = 500;
    let again = scenario.decide();
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert!(again.marks.is_empty(), "{:?}", again.marks);
    assert_eq!(
        again.desired_replicas,
        Some(0),
        "the aborted revision does not run"
    );

    // A newer object is a new revision, and it rolls out.
    scenario.desired = "c";
    scenario.refresh = refreshing("etag:\"3\"", 600);
    let newer = scenario.decide();
    assert_eq!(
        newer.status.candidate.as_ref().unwrap().reason.as_deref(),
        Some(reasons::LOADING)
    );
    assert_eq!(newer.status.candidate.as_ref().unwrap().object, None);
}

#[test]
fn an_object_that_changed_during_the_load_aborts_with_the_servers_reason() {
    let mut replaced = pinned(revision("b", 90, 2), "etag:\"2\"", 90);
    replaced.load_failure = Some(LoadFailure::new(
        Reason::ObjectChanged,
        "pinned to etag:\"2\", the object is etag:\"3\" now",
    ));
    let mut scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(replaced)
        .active("a");
    scenario.refresh = refreshing("etag:\"2\"", 90);
    let plan = scenario.decide();
    assert_eq!(plan.active.as_deref(), Some("a"));
    let candidate = plan.status.candidate.unwrap();
    assert_eq!(
        candidate.reason.as_deref(),
        Some(reasons::MODEL_LOAD_FAILED)
    );
    assert!(
        candidate.message.unwrap().starts_with("ObjectChanged: "),
        "the server's reason is kept"
    );
}

#[test]
fn while_refresh_is_paused_the_pinned_active_revision_stays_and_nothing_is_written_twice() {
    // Rolled back to "a": the controller makes "a" the desired revision again (its object), so no rollout.
    let mut scenario = Scenario::new("a")
        .with(served(
            promoted(ready(revision("a", 0, 2)), 10),
            "etag:\"1\"",
            "aa",
        ))
        .with(promoted(
            ready(pinned(revision("b", 20, 2), "etag:\"2\"", 20)),
            30,
        ))
        .active("a");
    let mut paused = refreshing("etag:\"1\"", 0);
    if let Some(status) = paused.status.as_mut() {
        status.paused = true;
        status.message = Some("paused by `kubectl ferry rollback`".into());
    }
    scenario.refresh = paused;
    let first = scenario.decide();
    assert_eq!(first.active.as_deref(), Some("a"));
    assert!(first.status.candidate.is_none(), "no rollout while paused");
    assert!(first.status.refresh.as_ref().unwrap().paused);
    scenario.status = first.status.clone();
    for r in &mut scenario.revisions {
        if let Some(m) = first.marks.get(&r.revision) {
            r.marks = m.clone();
        }
    }
    scenario.now = 400;
    let second = scenario.decide();
    assert_eq!(second.status, first.status, "no change: no status write");
    assert!(second.events.is_empty());
}

#[test]
fn the_reconcile_after_a_new_revision_is_created_writes_nothing_more() {
    let first = Scenario::new("a").decide();
    let mut second = Scenario::new("a").with(revision("a", 100, 2));
    second.status = first.status.clone();
    let second = second.decide();
    assert_eq!(
        second.status, first.status,
        "the status written with the Deployment's creation already says what the next reconcile sees"
    );
    assert!(second.marks.is_empty(), "{:?}", second.marks);
    assert!(second.events.is_empty(), "{:?}", event_reasons(&second));
}

/// An aborted candidate whose abort mark cannot be read: taken for absent, the candidate would be promoted.
#[test]
fn a_garbled_abort_mark_holds_the_rollout_and_says_which_object_and_why() {
    let mut garbled = ready(revision("b", 90, 2));
    garbled.unreadable_marks = Some(LostState::unreadable(
        "Deployment/iris-b".into(),
        Some(crate::labels::annotations::ABORTED),
        "expected value at line 1 column 1".into(),
    ));
    let mut scenario = Scenario::new("b")
        .with(promoted(ready(revision("a", 0, 2)), 10))
        .with(garbled)
        .active("a");
    scenario.preview = Some("b");
    let held = scenario.decide();
    assert_eq!(held.active.as_deref(), Some("a"), "traffic stays");
    assert_eq!(held.preview.as_deref(), Some("b"), "the preview stays");
    assert_eq!(held.desired_replicas, None, "nothing is created or resized");
    assert!(held.scale.is_empty() && held.marks.is_empty() && held.delete.is_empty());
    let degraded = condition(&held, types::DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", reasons::STATE_UNREADABLE)
    );
    assert!(
        degraded.message.starts_with(
            "annotation ferry.dev/aborted of Deployment/iris-b cannot be read: expected value"
        ),
        "{}",
        degraded.message
    );
    assert_eq!(
        condition(&held, types::PROGRESSING).status,
        "False",
        "the rollout does not progress"
    );
    assert_eq!(held.status.phase, Some(Phase::Degraded));
    assert_eq!(event_reasons(&held), [reasons::STATE_UNREADABLE]);
    assert!(held.events[0].warning);

    // Held again: no second event, nothing new to write.
    scenario.status = held.status.clone();
    let again = scenario.decide();
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(again.status, held.status);

    // Readable again (the mark was fixed): the normal decision, which promotes the ready candidate.
    scenario.revisions[1].unreadable_marks = None;
    let resumed = scenario.decide();
    assert_eq!(resumed.active.as_deref(), Some("b"));
    assert_ne!(
        condition(&resumed, types::DEGRADED).reason,
        reasons::STATE_UNREADABLE
    );
}

#[test]
fn an_abort_request_or_a_refresh_pin_that_cannot_be_read_holds() {
    let revisions = [ready(revision("0a1b2c3d4e", 0, 2))];
    let policy: crate::api::RefreshPolicy = serde_json::from_value(serde_json::json!({})).unwrap();
    let read = |abort, pin, previous: Option<&crate::api::RefreshStatus>| {
        unreadable_requests("iris", abort, pin, Some(&policy), &revisions, previous)
    };
    assert!(read(Some("0a1b2c3d4e"), Some("0a1b2c3d4e"), None).is_empty());
    let garbled = read(Some("the new one"), None, None);
    assert_eq!(garbled.len(), 1);
    assert_eq!(
        garbled[0].describe(),
        "annotation ferry.dev/abort of ModelDeployment/iris cannot be read: \"the new one\" is not a revision \
         name (10 hexadecimal digits, as `kubectl ferry abort` writes)"
    );
    assert_eq!(garbled[0].reason(), reasons::STATE_UNREADABLE);
    let pin = read(None, Some("ffffffffff"), None);
    assert!(
        pin[0]
            .describe()
            .contains("names revision ffffffffff, which is gone"),
        "{}",
        pin[0].describe()
    );
    let recorded = crate::api::RefreshStatus {
        object: Some("etag:1".into()),
        ..Default::default()
    };
    assert!(
        read(None, Some("ffffffffff"), Some(&recorded)).is_empty(),
        "a gone revision whose object the status recorded stays pinned to that object"
    );
    assert!(
        unreadable_requests("iris", None, Some("x"), None, &revisions, None).is_empty(),
        "a pin means nothing without spec.model.refresh"
    );
}

/// Promotions within one second tie on their marks: the revision that served last is the one kept warm.
#[test]
fn of_two_promotions_in_the_same_second_the_one_that_served_last_stays_warm() {
    for order in [["a", "b"], ["b", "a"]] {
        let mut scenario = Scenario::new("c");
        for name in order {
            scenario = scenario.with(promoted(ready(revision(name, 0, 2)), 10));
        }
        scenario = scenario
            .with(promoted(ready(revision("c", 0, 2)), 10))
            .active("c");
        scenario.spec.rollout.keep_previous = 1;
        scenario.spec.revision_history_limit = 0;
        // "b" served before "c", "a" before "b".
        scenario.status.previous = vec![
            RevisionStatus {
                revision: "b".into(),
                ..Default::default()
            },
            RevisionStatus {
                revision: "a".into(),
                ..Default::default()
            },
        ];
        let plan = scenario.decide();
        assert_eq!(plan.delete, ["a"], "revisions in the order {order:?}");
        assert_eq!(plan.scale.get("b"), None, "b stays warm: {:?}", plan.scale);
    }
}
