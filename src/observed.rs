//! What the controller observed, as the rollout decision reads it: revisions and their pods, the marks and the
//! in-place state Ferry keeps in the cluster (in the forms they are stored in), and the units progress is shown in.
//!
//! A leaf: it imports the API types and the vocabulary, nothing that observes or decides, so the decision core
//! (`rollout`), the observation layer (`pod_state`, `children`) and the controller all build on it without
//! importing each other.

pub mod units;

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::{
    LoadedState, ModelInfo, ModelSignature, PodPhase, RevisionRuntime, ValidationResult,
};
use crate::conditions::reasons;
use crate::server_contract::{DesiredModel, LoadFailure};

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
    /// The reason whose condition reason (as the status shows it) is `reason`.
    pub fn from_condition_reason(reason: &str) -> Option<AbortReason> {
        [
            AbortReason::ModelLoadFailed,
            AbortReason::ValidationFailed,
            AbortReason::ProgressDeadlineExceeded,
            AbortReason::AbortedByUser,
            AbortReason::OutOfMemory,
            AbortReason::Unrecognized,
        ]
        .into_iter()
        .find(|r| r.as_str() == reason)
    }

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
    /// A mark annotation that is there but cannot be read; `marks` then lacks it, so nothing may be decided on
    /// them.
    pub unreadable_marks: Option<LostState>,
    /// An InPlace pod set: its pods load the model the ModelDeployment's ConfigMap names, not one of their own.
    pub pod_set: bool,
    /// The load failure a pod reported, through its termination message or its server's `/status`.
    pub load_failure: Option<LoadFailure>,
    /// Its pods, as their servers last reported them.
    pub pods: Vec<ObservedPod>,
    /// The runtime its Deployment records it was made with (none for Deployments made before runtimes were
    /// recorded).
    pub runtime: Option<RevisionRuntime>,
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
    /// The failure of its latest load (or why its server cannot be reached).
    pub failure: Option<LoadFailure>,
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
    /// Its server runs, but this controller has not read it once yet (it just started): what the pod holds,
    /// stages or serves is not known.
    pub unread: bool,
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
    /// Where it was loaded from: with the version, what lets the in-place state be rebuilt from the pods.
    pub uri: String,
}

/// A load beside the serving version (a stage).
#[derive(Clone, Debug, PartialEq)]
pub struct Staging {
    pub version: String,
    /// Downloading .. Validating while it runs, Ready once staged, Failed.
    pub phase: PodPhase,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    pub failure: Option<LoadFailure>,
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
    pub(crate) fn signature(&self) -> Option<&ModelSignature> {
        self.model.as_deref()?.signature.as_ref()
    }
}

impl ObservedRevision {
    /// When a pod of this revision last made load progress.
    pub(crate) fn last_progress_at(&self) -> Option<Timestamp> {
        self.pods.iter().filter_map(|p| p.last_progress_at).max()
    }

    /// When a pod of this revision last made progress that the status shows.
    pub(crate) fn last_shown_progress_at(&self) -> Option<Timestamp> {
        self.pods
            .iter()
            .filter_map(|p| p.last_shown_progress_at)
            .max()
    }

    /// Where the load stalled: the pod that moved last, and where it stands.
    pub(crate) fn stall(&self) -> String {
        match self.pods.iter().max_by_key(|p| p.last_progress_at) {
            Some(pod) => format!("pod {} is {}", pod.name, pod.stands),
            None => "no pod was created".into(),
        }
    }

    /// What the pods of this revision report of its model: a ready pod's report first, else any pod's.
    pub(crate) fn reported<T>(&self, field: impl Fn(&ObservedPod) -> Option<&T>) -> Option<&T> {
        let ready = self.pods.iter().filter(|p| p.phase == PodPhase::Ready);
        ready
            .clone()
            .find_map(&field)
            .or_else(|| self.pods.iter().find_map(&field))
    }

    /// The signature its pods report (a pod knows it once its model is loaded, before it is ready);
    /// `Unknown` while a ready pod has not been read yet.
    pub(crate) fn signature(&self) -> Reported<&ModelSignature> {
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

    pub(crate) fn fully_available(&self, replicas: i32) -> bool {
        self.rolled_out && self.replicas == replicas && self.available_replicas >= replicas
    }

    /// Warm: running, every current replica available, and it has been active before. Traffic may switch to
    /// it at once.
    pub(crate) fn warm(&self) -> bool {
        self.marks.promoted_at.is_some()
            && self.rolled_out
            && self.replicas > 0
            && self.available_replicas >= self.replicas
    }
}

/// State Ferry keeps in the cluster outside the spec, as read back.
#[derive(Clone, Debug, PartialEq)]
pub enum Persisted<T> {
    Read(T),
    /// The object that holds it is gone.
    Missing,
    /// The object is there, but what it holds cannot be read: garbled, or in a form this build does not know.
    Unreadable(String),
}

/// Persisted state that is missing or cannot be read: what the controller must not decide without.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostState {
    /// The object, as `Kind/name`.
    pub object: String,
    /// The part of it that holds the state (an annotation), when not the object as a whole.
    pub field: Option<&'static str>,
    /// Why it cannot be read; None when it is missing.
    pub unreadable: Option<String>,
    /// Why it was not rebuilt from what else the cluster shows, where that was tried.
    pub not_rebuilt: Option<String>,
}

impl LostState {
    pub fn missing(object: String, field: Option<&'static str>) -> LostState {
        LostState {
            object,
            field,
            unreadable: None,
            not_rebuilt: None,
        }
    }

    pub fn unreadable(object: String, field: Option<&'static str>, why: String) -> LostState {
        LostState {
            object,
            field,
            unreadable: Some(why),
            not_rebuilt: None,
        }
    }

    /// The condition reason: StateMissing or StateUnreadable.
    pub fn reason(&self) -> &'static str {
        match self.unreadable {
            None => reasons::STATE_MISSING,
            Some(_) => reasons::STATE_UNREADABLE,
        }
    }

    /// "ConfigMap/iris-ferry-model is missing", "annotation ferry.dev/aborted of Deployment/iris-1a2b cannot be
    /// read: ...".
    pub fn describe(&self) -> String {
        let what = match self.field {
            Some(field) => format!("annotation {field} of {}", self.object),
            None => self.object.clone(),
        };
        let lost = match &self.unreadable {
            None => format!("{what} is missing"),
            Some(why) => format!("{what} cannot be read: {why}"),
        };
        match &self.not_rebuilt {
            None => lost,
            Some(why) => format!("{lost}; not rebuilt from the pods: {why}"),
        }
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

/// How an abort mark is stored in its annotation. The reason is read as text first, so that one this version
/// does not know is reported as unrecognized (with what it said), not dropped or taken for another.
#[derive(Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct StoredAbort {
    reason: serde_json::Value,
    message: String,
    generation: i64,
}

impl StoredAbort {
    pub fn from_mark(mark: &AbortMark) -> StoredAbort {
        StoredAbort {
            reason: serde_json::to_value(mark.reason).expect("a reason serializes"),
            message: mark.message.clone(),
            generation: mark.generation,
        }
    }

    pub fn into_mark(self) -> AbortMark {
        match serde_json::from_value::<AbortReason>(self.reason.clone()) {
            Ok(reason) => AbortMark {
                reason,
                message: self.message,
                generation: self.generation,
            },
            Err(_) => AbortMark {
                reason: AbortReason::Unrecognized,
                message: format!("{} (stored reason {})", self.message, self.reason),
                generation: self.generation,
            },
        }
    }
}

/// The in-place state of one pod set (the Deployment whose pods switch between model revisions).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceState {
    /// The pod set's revision (its Deployment is `<name>-<podSet>`).
    pub pod_set: String,
    /// The model revision that serves: the one switched to last.
    pub active: String,
    /// Model revisions known on this pod set, newest last.
    pub revisions: Vec<ModelRecord>,
}

/// One model revision: a model the pods of the pod set load, serve or once served.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelRecord {
    pub revision: String,
    pub model: DesiredModel,
    pub created_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<StoredAbort>,
}

impl ModelRecord {
    pub fn new(revision: String, model: DesiredModel, now: Timestamp) -> ModelRecord {
        ModelRecord {
            revision,
            model,
            created_at: Time(now),
            promoted_at: None,
            rollout_started_at: None,
            aborted: None,
        }
    }

    pub fn marks(&self) -> RevisionMarks {
        RevisionMarks {
            promoted_at: self.promoted_at.as_ref().map(|t| t.0),
            rollout_started_at: self.rollout_started_at.as_ref().map(|t| t.0),
            aborted: self.aborted.clone().map(StoredAbort::into_mark),
        }
    }

    pub fn set_marks(&mut self, marks: &RevisionMarks) {
        self.promoted_at = marks.promoted_at.map(Time);
        self.rollout_started_at = marks.rollout_started_at.map(Time);
        self.aborted = marks.aborted.as_ref().map(StoredAbort::from_mark);
    }

    pub fn identity(&self) -> ModelIdentity {
        ModelIdentity {
            version: self.model.version.clone(),
            uri: self.model.uri.clone(),
            sha256: self.model.sha256.clone(),
            object: self.model.object.clone(),
            detected_at: None,
        }
    }
}

/// The name of the ConfigMap that holds a ModelDeployment's [`InPlaceState`].
pub fn in_place_config_map(md_name: &str) -> String {
    format!("{md_name}-ferry-model")
}

impl InPlaceState {
    pub fn find(&self, revision: &str) -> Option<&ModelRecord> {
        self.revisions.iter().find(|r| r.revision == revision)
    }

    /// The model that serves, which new pods load.
    pub fn active_model(&self) -> Option<&DesiredModel> {
        self.find(&self.active).map(|r| &r.model)
    }
}
