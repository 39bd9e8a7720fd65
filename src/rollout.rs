//! The rollout decision: a pure function from what the controller observed to what should exist.
//!
//! ```text
//!   ModelDeployment spec + previous status ─┐                 strategy (blue_green, ...)
//!   revisions (Deployments + their pods) ───┼──▶ decide() ──▶   └─▶ Summary: the active revision, the candidate's
//!   active Service's target, requests, now ─┘                         state, marks, requeue
//!                                                              shared: replicas ─▶ status ─▶ history + events ─▶ Plan
//! ```
//!
//! `decide` asks the strategy of `spec.rollout.strategy` where the rollout stands and gets back facts, not
//! writes; the shared modules turn those facts into replicas and pruning (`replicas`), revision statuses,
//! conditions and phase (`status`), and history entries and events (`history`). A new strategy is one module that
//! returns a [`Summary`].
//!
//! Nothing here talks to the API server, so every transition is unit-tested without a cluster. The state that
//! must survive a controller restart lives in the cluster itself: which revision is active is the active Service's
//! selector, and each revision's Deployment carries its marks (when it was promoted, when its rollout started,
//! why it was aborted). Events and history entries are derived by comparing the new status with the previous
//! one, so a reconcile that is repeated (after a failed status write, a restart) reports each transition once.
//!
//! Words, used the same way in code, status, events and `kubectl ferry`:
//! - **revision**: one pod template (model, server settings), named by its hash; one Deployment each.
//! - **desired** revision: the one the current spec makes.
//! - **active** revision: the one the active Service sends traffic to (`status.active`).
//! - **candidate**: the desired revision while it is not active: loading, waiting for promotion, or aborted
//!   (`status.candidate`); the preview Service selects it while it runs.
//! - **previous** revisions: formerly active ones kept warm for an instant rollback (`status.previous`).
//! - **promote**: make the candidate active; a **rollback** is a promotion of a warm previous revision.
//! - **abort**: stop a candidate for good (until the spec changes); traffic stays where it is.
//! - **pod set** (InPlace): the revision of the pods themselves, whose template names no model; while it is
//!   active, each model is a **model revision** inside its pods, and `in_place` makes the same decision over
//!   those (stage for "run", switch for "promote", unload for "scale to zero").

mod blue_green;
mod history;
pub mod in_place;
pub mod refresh;
mod replicas;
mod signature;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::{
    LoadedState, ModelDeploymentSpec, ModelDeploymentStatus, ModelInfo, ModelSignature, PodPhase,
    RolloutStrategy, ValidationResult,
};
use crate::conditions::reasons;

/// What a revision serves, as shown in the status.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ModelIdentity {
    pub version: String,
    pub uri: String,
    pub sha256: Option<String>,
    /// The object the revision is pinned to (spec.model.refresh), as a token.
    pub object: Option<String>,
    /// When that object was detected as new.
    pub detected_at: Option<Timestamp>,
}

/// Why a candidate was aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortReason {
    /// ferry-server reported that the model cannot be served.
    ModelLoadFailed,
    /// The model did not reproduce its golden set (spec.model.validation).
    ValidationFailed,
    /// Not available within `spec.rollout.loadTimeoutSeconds`.
    ProgressDeadlineExceeded,
    /// `kubectl ferry abort`.
    AbortedByUser,
    /// A pod ran out of memory staging the version beside the one it serves (strategy InPlace).
    OutOfMemory,
    /// The stored mark names a reason this build does not know (written by another version of Ferry); it is
    /// shown as such, never as one of the others.
    Unrecognized,
}

impl AbortReason {
    /// The condition reason.
    pub fn as_str(self) -> &'static str {
        match self {
            AbortReason::ModelLoadFailed => reasons::MODEL_LOAD_FAILED,
            AbortReason::ValidationFailed => reasons::VALIDATION_FAILED,
            AbortReason::ProgressDeadlineExceeded => reasons::PROGRESS_DEADLINE_EXCEEDED,
            AbortReason::AbortedByUser => reasons::ABORTED_BY_USER,
            AbortReason::OutOfMemory => reasons::OUT_OF_MEMORY,
            AbortReason::Unrecognized => reasons::UNRECOGNIZED_ABORT,
        }
    }
}

/// Why a revision was aborted; sticky until the spec changes (a new generation retries it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbortMark {
    pub reason: AbortReason,
    pub message: String,
    /// The ModelDeployment generation it was aborted at.
    pub generation: i64,
}

/// Controller state kept on a revision's Deployment (as annotations).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RevisionMarks {
    /// When the revision last became active.
    pub promoted_at: Option<Timestamp>,
    /// When its current rollout attempt started (creation, or a retry after an abort).
    pub rollout_started_at: Option<Timestamp>,
    pub aborted: Option<AbortMark>,
}

/// One revision as observed: its Deployment and the state of its pods.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedRevision {
    pub revision: String,
    pub model: ModelIdentity,
    pub created_at: Timestamp,
    /// The Deployment's spec.replicas.
    pub replicas: i32,
    /// The Deployment's available replicas (ready for at least minReadySeconds).
    pub available_replicas: i32,
    /// The Deployment controller has observed the current spec and every replica is updated and available.
    pub rolled_out: bool,
    pub marks: RevisionMarks,
    /// The load failure a pod reported, through its termination message or its server's `/status`, e.g.
    /// "ChecksumMismatch: ...".
    pub load_failure: Option<String>,
    /// Its pods, as their servers last reported them.
    pub pods: Vec<ObservedPod>,
}

/// One pod of a revision, as its server last reported it (`crate::pod_state`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ObservedPod {
    pub name: String,
    pub phase: PodPhase,
    /// SHA-256 of the model the pod serves or loads, once known.
    pub sha256: Option<String>,
    /// Bytes downloaded (in steps of 5 percent) and the total, while it loads.
    pub bytes: Option<(u64, Option<u64>)>,
    pub load_started_at: Option<Timestamp>,
    /// The failure of its latest load, as (reason, message).
    pub failure: Option<(String, String)>,
    /// When it last made load progress; None while unknown (before the controller saw any).
    pub last_progress_at: Option<Timestamp>,
    /// When it last made progress the status shows (a phase, a step of 5 percent).
    pub last_shown_progress_at: Option<Timestamp>,
    /// A pod from before a controller restart that has not been read twice yet: whether it moves is not known.
    pub progress_unknown: bool,
    /// Where its load stands, in words ("downloading at 1.2 GiB of 20.0 GiB").
    pub stands: String,
    /// Ready, with a server the controller reads, but not read as ready yet: what it reports of its model is
    /// not known yet.
    pub report_pending: bool,
    /// What its server reports of the model it serves (or of its latest load once loaded).
    pub model: Option<Arc<ReportedModel>>,
    /// The object its serving file was downloaded from, as a token.
    pub serving_object: Option<String>,
    /// A new object its server found at the URI (spec.model.refresh), as a token.
    pub new_object: Option<String>,
    /// Its server's latest check found the object it serves at the URI.
    pub object_unchanged: bool,
    /// What the strategy InPlace needs of the pod: where to reach its server, which versions it holds.
    pub in_place: InPlacePod,
}

/// A pod as the strategy InPlace drives it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct InPlacePod {
    pub uid: String,
    /// Its server's address, while its container runs.
    pub address: Option<std::net::IpAddr>,
    /// The public id of the admin credential its server holds.
    pub credential_id: Option<String>,
    pub versions: Vec<LoadedVersion>,
    pub staging: Option<Staging>,
    pub last_switch: Option<Switch>,
    /// When its server was last killed for running out of memory.
    pub oom_killed_at: Option<Timestamp>,
    /// The version of the latest stage seen and its model file's size (known after a restart too).
    pub staged_size: Option<(String, u64)>,
    /// A stage the server refused: the version, its answer, when.
    pub refused: Option<(String, String, Timestamp)>,
}

impl InPlacePod {
    pub fn serving(&self) -> Option<&str> {
        self.versions
            .iter()
            .find(|v| v.state == LoadedState::Serving)
            .map(|v| v.version.as_str())
    }

    pub fn holds(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v.version == version)
    }
}

/// A model version loaded in a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedVersion {
    pub version: String,
    pub state: LoadedState,
    pub sha256: String,
}

/// A load beside the serving version (a stage).
#[derive(Clone, Debug, PartialEq)]
pub struct Staging {
    pub version: String,
    /// Downloading .. Validating while it runs, Ready once staged, Failed.
    pub phase: PodPhase,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    pub failure: Option<(String, String)>,
    pub model: Option<Arc<ReportedModel>>,
    /// When the controller first saw it failed.
    pub failed_at: Option<Timestamp>,
}

/// A pod's latest switch, by its own clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    pub from: Option<String>,
    pub to: String,
    pub at: Timestamp,
}

/// What a server reports of its model beyond the load: kept once per pod and shared, not copied, by every
/// reconcile that looks at it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ReportedModel {
    pub signature: Option<ModelSignature>,
    pub validation: Option<ValidationResult>,
    pub model_info: Option<ModelInfo>,
}

impl ObservedPod {
    fn signature(&self) -> Option<&ModelSignature> {
        self.model.as_deref()?.signature.as_ref()
    }
}

impl ObservedRevision {
    /// When a pod of this revision last made load progress.
    fn last_progress_at(&self) -> Option<Timestamp> {
        self.pods.iter().filter_map(|p| p.last_progress_at).max()
    }

    /// When a pod of this revision last made progress that the status shows.
    fn last_shown_progress_at(&self) -> Option<Timestamp> {
        self.pods
            .iter()
            .filter_map(|p| p.last_shown_progress_at)
            .max()
    }

    /// Where the load stalled: the pod that moved last, and where it stands.
    fn stall(&self) -> String {
        match self.pods.iter().max_by_key(|p| p.last_progress_at) {
            Some(pod) => format!("pod {} is {}", pod.name, pod.stands),
            None => "no pod was created".into(),
        }
    }

    /// What the pods of this revision report of its model: a ready pod's report first, else any pod's.
    fn reported<T>(&self, field: impl Fn(&ObservedPod) -> Option<&T>) -> Option<&T> {
        let ready = self.pods.iter().filter(|p| p.phase == PodPhase::Ready);
        ready
            .clone()
            .find_map(&field)
            .or_else(|| self.pods.iter().find_map(&field))
    }

    /// The signature its pods report (a pod knows it once its model is loaded, before it is ready);
    /// `Unknown` while a ready pod has not been read yet.
    fn signature(&self) -> Reported<&ModelSignature> {
        match self.pods.iter().find_map(ObservedPod::signature) {
            Some(signature) => Reported::Known(signature),
            None if self
                .pods
                .iter()
                .any(|p| p.phase == PodPhase::Ready && p.report_pending) =>
            {
                Reported::Unknown
            }
            // Every ready pod answered without one (a server that does not report it), or none is ready.
            None => Reported::NotReported,
        }
    }

    fn fully_available(&self, replicas: i32) -> bool {
        self.rolled_out && self.replicas == replicas && self.available_replicas >= replicas
    }

    /// Warm: running, every current replica available, and it has been active before. Traffic may switch to
    /// it at once.
    fn warm(&self) -> bool {
        self.marks.promoted_at.is_some()
            && self.rolled_out
            && self.replicas > 0
            && self.available_replicas >= self.replicas
    }
}

/// Something a revision's pods report, once read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reported<T> {
    Known(T),
    /// A pod that would report it has not been read yet.
    Unknown,
    /// Its pods do not report it (an older server, or no pod ready).
    NotReported,
}

/// The revision the current spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredRevision {
    pub revision: String,
    pub model: ModelIdentity,
}

/// Requests a user made through annotations (`kubectl ferry promote` / `abort`), each naming a revision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests<'a> {
    pub promote: Option<&'a str>,
    pub abort: Option<&'a str>,
}

/// Everything the decision depends on.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// metadata.name of the ModelDeployment.
    pub name: &'a str,
    pub generation: i64,
    pub spec: &'a ModelDeploymentSpec,
    pub previous_status: &'a ModelDeploymentStatus,
    pub desired: DesiredRevision,
    /// Why the spec cannot be run by the serving image, if it cannot.
    pub invalid_spec: Option<String>,
    pub revisions: &'a [ObservedRevision],
    /// The revision the active Service selects.
    pub active_service_target: Option<&'a str>,
    pub requests: Requests<'a>,
    /// Which object the desired revision is pinned to (spec.model.refresh), with its status and events.
    pub refresh: refresh::Refresh,
    /// In-cluster URL of the active Service.
    pub endpoint: String,
    /// In-cluster `host:port` of the active Service's gRPC port.
    pub grpc_endpoint: String,
    pub now: Timestamp,
}

impl Observed<'_> {
    fn find(&self, revision: &str) -> Option<&ObservedRevision> {
        self.revisions.iter().find(|r| r.revision == revision)
    }

    /// The last load progress of `revision` that the previous status recorded (what a restarted controller
    /// knows of the time before it).
    fn recorded_progress(&self, revision: &str) -> Option<Timestamp> {
        let candidate = self.previous_status.candidate.as_ref()?;
        (candidate.revision == revision)
            .then(|| {
                candidate
                    .progress
                    .as_ref()?
                    .last_progress_at
                    .as_ref()
                    .map(|t| t.0)
            })
            .flatten()
    }
}

/// An Event to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    /// The revision the event is about (its Deployment becomes the event's related object), if any.
    pub revision: Option<String>,
    pub reason: &'static str,
    pub note: String,
}

/// What should exist after this reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Revision the active Service selects (the active one); None selects no pods.
    pub active: Option<String>,
    /// Revision the preview Service selects (a running candidate); None selects no pods.
    pub preview: Option<String>,
    /// Replicas of the desired revision's Deployment, applied in full; None deploys nothing (invalid spec).
    pub desired_replicas: Option<i32>,
    /// New replica counts of other existing revisions.
    pub scale: BTreeMap<String, i32>,
    /// New marks of revisions whose marks change (including the desired one).
    pub marks: BTreeMap<String, RevisionMarks>,
    /// Revisions to delete.
    pub delete: Vec<String>,
    pub status: ModelDeploymentStatus,
    pub events: Vec<PlannedEvent>,
    pub requeue_after: Option<Duration>,
}

/// Where the desired revision stands, as a strategy reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CandidateState {
    /// The desired revision is already active: no rollout.
    Active,
    /// Its pods are starting (downloading, verifying, loading, warming up).
    Loading,
    /// Ready, and held for `kubectl ferry promote`.
    WaitingForPromotion,
    /// Ready, but it changes the signature clients call and the spec does not allow that; the changes are in
    /// [`Summary::signature_changes`].
    SignatureChanged,
    /// Traffic switches to it in this reconcile; `rollback` when it is a warm previous revision.
    Promote {
        rollback: bool,
    },
    Aborted(AbortMark),
    /// The spec cannot be run; nothing is deployed.
    Invalid(String),
}

impl CandidateState {
    /// A candidate whose pods run (and which the preview Service selects).
    fn running(&self) -> bool {
        matches!(
            self,
            CandidateState::Loading
                | CandidateState::WaitingForPromotion
                | CandidateState::SignatureChanged
        )
    }
}

/// A strategy's answer: strategy-neutral facts the shared modules turn into a [`Plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The revision active after this reconcile.
    pub active: Option<String>,
    pub candidate: CandidateState,
    /// Marks to write, by revision.
    pub marks: BTreeMap<String, RevisionMarks>,
    /// When to look again although nothing changed (a deadline).
    pub requeue_after: Option<Duration>,
    /// How the candidate's signature differs from the active revision's: the breaking changes that hold it
    /// (`SignatureChanged`), else the compatible ones, noted when it is promoted.
    pub signature_changes: Vec<String>,
}

impl Summary {
    /// The candidate revision, when there is one (the desired revision while it is not active).
    fn candidate_revision<'a>(&self, observed: &'a Observed) -> Option<&'a str> {
        match self.candidate {
            CandidateState::Active
            | CandidateState::Promote { .. }
            | CandidateState::Invalid(_) => None,
            _ => Some(observed.desired.revision.as_str()),
        }
    }

    /// The marks of `revision` after this reconcile.
    fn marks_of<'a>(&'a self, revision: &'a ObservedRevision) -> &'a RevisionMarks {
        self.marks
            .get(&revision.revision)
            .unwrap_or(&revision.marks)
    }
}

fn to_time(timestamp: Timestamp) -> Time {
    Time(timestamp)
}

pub fn decide(observed: &Observed) -> Plan {
    // InPlace decides over pod sets here, and over the model revisions inside the active pod set in `in_place`,
    // both the blue/green way.
    let mut summary = match observed.spec.rollout.strategy {
        RolloutStrategy::BlueGreen | RolloutStrategy::InPlace => blue_green::decide(observed),
    };
    repair_active_mark(observed, &mut summary);
    let replicas = replicas::plan(observed, &summary);
    let built = status::build(observed, &summary, &replicas);
    let (history, mut events) = history::record(observed, &summary, &built);
    let status = built.into_status(observed, &summary, &replicas, history);
    events.splice(0..0, observed.refresh.events.iter().cloned());
    Plan {
        preview: summary
            .candidate_revision(observed)
            .filter(|_| summary.candidate.running())
            .map(str::to_owned),
        active: summary.active,
        desired_replicas: replicas.desired,
        scale: replicas.scale,
        marks: summary.marks,
        delete: replicas.delete,
        status,
        events,
        requeue_after: summary.requeue_after,
    }
}

/// An active revision must carry its promotion mark, or it would not be kept warm once replaced; the mark can be
/// missing when the controller stopped between switching traffic and writing the mark.
fn repair_active_mark(observed: &Observed, summary: &mut Summary) {
    let Some(active) = summary.active.as_deref().and_then(|r| observed.find(r)) else {
        return;
    };
    if active.marks.promoted_at.is_none() && !summary.marks.contains_key(&active.revision) {
        let mut repaired = active.marks.clone();
        repaired.promoted_at = Some(observed.now);
        repaired.rollout_started_at = None;
        summary.marks.insert(active.revision.clone(), repaired);
    }
}

#[cfg(test)]
mod tests;
