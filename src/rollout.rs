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
mod hold;
pub mod in_place;
pub mod refresh;
mod replicas;
mod signature;
mod status;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{ModelDeploymentSpec, ModelDeploymentStatus, RevisionRuntime, RolloutStrategy};
use crate::catalogue::NoRuntime;
pub use crate::observed::{
    AbortMark, AbortReason, InPlacePod, LoadedVersion, ModelIdentity, ObservedPod,
    ObservedRevision, Reported, ReportedModel, RevisionMarks, Staging, Switch,
};
use crate::observed::{InPlaceState, LostState, Persisted};
use crate::server_contract::DesiredModel;

/// The revision the current spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredRevision {
    pub revision: String,
    pub model: ModelIdentity,
    /// The runtime its pods run (None while no runtime serves the spec).
    pub runtime: Option<RevisionRuntime>,
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
    /// Why no runtime serves the spec, when none does (`crate::catalogue`): nothing of it is deployed.
    pub no_runtime: Option<NoRuntime>,
    pub revisions: &'a [ObservedRevision],
    /// The revision the active Service selects.
    pub active_service_target: Option<&'a str>,
    /// The revision the preview Service selects.
    pub preview_service_target: Option<&'a str>,
    pub requests: Requests<'a>,
    /// Persisted state outside the revisions that could not be read (the refresh pin); the revisions' own is
    /// in [`ObservedRevision::unreadable_marks`].
    pub lost: Vec<LostState>,
    /// Strategy InPlace: what its ConfigMap holds, and the model the spec asks for.
    pub in_place: Option<InPlaceInput<'a>>,
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

/// What strategy InPlace reads besides the revisions.
#[derive(Clone, Debug)]
pub struct InPlaceInput<'a> {
    /// The state in the ModelDeployment's ConfigMap.
    pub state: &'a Persisted<InPlaceState>,
    /// The model of the current spec, as the pods are asked to load it.
    pub desired_model: DesiredModel,
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
    /// Replicas of the desired revision's Deployment, applied in full; None deploys nothing (no runtime).
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
    /// No runtime serves the spec; nothing of it is deployed.
    NoRuntime(NoRuntime),
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
            | CandidateState::NoRuntime(_) => None,
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

/// The one decision of a reconcile: what should exist, the InPlace state to keep, the calls to the pods.
#[derive(Clone, Debug)]
pub struct Decision {
    pub plan: Plan,
    /// The InPlace state to write to the ConfigMap, first of all writes, when it changes.
    pub in_place_state: Option<InPlaceState>,
    /// Calls to the pods' admin API (strategy InPlace), made after the plan is applied.
    pub calls: Vec<in_place::AdminCall>,
}

impl From<Plan> for Decision {
    fn from(plan: Plan) -> Decision {
        Decision {
            plan,
            in_place_state: None,
            calls: Vec::new(),
        }
    }
}

/// Dispatches to the strategy. State that cannot be read holds the rollout first: a decision made without it
/// could switch, promote or delete on a guess.
pub fn decide(observed: &Observed) -> Decision {
    let lost: Vec<LostState> = observed
        .lost
        .iter()
        .chain(
            observed
                .revisions
                .iter()
                .filter_map(|r| r.unreadable_marks.as_ref()),
        )
        .cloned()
        .collect();
    if !lost.is_empty() {
        return hold::plan(observed, &lost).into();
    }
    match (observed.spec.rollout.strategy, observed.in_place.as_ref()) {
        (RolloutStrategy::InPlace, Some(input)) => in_place::decide(observed, input),
        _ => plan(observed, blue_green::decide(observed)).into(),
    }
}

/// Turns a strategy's facts into a plan: replicas and pruning, statuses, history and events.
fn plan(observed: &Observed, mut summary: Summary) -> Plan {
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

/// The annotations through which users make requests that Ferry keeps as state, when one cannot be read: an
/// abort request that names no revision (it would be dropped, and the candidate go on), a refresh pin that
/// cannot be followed (`refresh::lost_pin`).
pub fn unreadable_requests(
    name: &str,
    abort: Option<&str>,
    pin: Option<&str>,
    policy: Option<&crate::api::RefreshPolicy>,
    revisions: &[ObservedRevision],
    previous_refresh: Option<&crate::api::RefreshStatus>,
) -> Vec<LostState> {
    let object = || format!("ModelDeployment/{name}");
    let abort = abort.filter(|value| !is_revision_name(value)).map(|value| {
        LostState::unreadable(
            object(),
            Some(crate::labels::requests::ABORT),
            format!("{value:?} is not a revision name (10 hexadecimal digits, as `kubectl ferry abort` writes)"),
        )
    });
    let pin = pin.and_then(|value| {
        refresh::lost_pin(value, policy, revisions, previous_refresh).map(|why| {
            LostState::unreadable(object(), Some(crate::labels::requests::REFRESH_PIN), why)
        })
    });
    abort.into_iter().chain(pin).collect()
}

/// Whether `value` has the form of a revision name: 10 lowercase hexadecimal digits.
pub fn is_revision_name(value: &str) -> bool {
    value.len() == 10
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
