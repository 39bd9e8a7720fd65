//! InPlace: a new model version is loaded inside the running pods beside the one they serve, at most
//! `maxConcurrentLoads` pods at a time, and once every pod holds it they all switch to it together.
//!
//! The pods themselves are one revision of their own, the **pod set**: a Deployment whose template has no model
//! in it (each pod loads the model its ConfigMap names when it starts), rolled out blue/green like any revision
//! when the server template changes. While the pod set is active, each model is a **model revision** living
//! inside its pods, and the same decision as blue/green runs over them: a model revision is "available" on the
//! pods that hold it loaded, "warm" when every pod does (a rollback is then a switch), "active" when it is the
//! one switched to. What blue/green would do with Deployments and Services becomes calls to each pod's admin
//! API:
//!
//! - the candidate running          → stage it on the pods that lack it, `maxConcurrentLoads` at a time;
//! - the candidate promoted         → write the ConfigMap (new pods start on it), then switch every pod;
//! - a pod not serving the active   → switch it (or stage, then switch: a pod that started before the switch);
//! - a revision scaled to zero      → unload it from every pod (an aborted candidate, or beyond `keepPrevious`);
//! - a revision deleted             → forget it.
//!
//! The status, history and events come from the shared modules, so InPlace speaks the same words as
//! blue/green: active, candidate, previous, promoted, aborted, rolled back.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::{
    hold, Decision, DesiredRevision, InPlaceInput, ModelIdentity, Observed, ObservedPod,
    ObservedRevision, Plan, PlannedEvent,
};
use crate::api::{LoadedState, PodPhase, RevisionRuntime, SwitchStatus};
use crate::conditions::events;
use crate::observed::{
    AbortMark, AbortReason, InPlaceState, LostState, ModelRecord, Persisted, StoredAbort,
};
use crate::server_contract::{DesiredModel, FailureReason, LoadFailure, LoadParameters};

/// How soon to look again while a switch or a stage is under way (the pods' reports trigger reconciles too).
const FOLLOW: Duration = Duration::from_secs(2);

/// A call to one pod's admin API.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminCall {
    pub pod: String,
    pub uid: String,
    pub address: std::net::IpAddr,
    /// The credential id the pod reported, which the controller derives the credential from.
    pub credential_id: String,
    pub action: AdminAction,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AdminAction {
    /// Load this model beside the serving one.
    Stage(Box<LoadParameters>),
    /// Serve this loaded version.
    Switch(String),
    /// Drop this loaded version.
    Unload(String),
}

impl AdminAction {
    pub fn version(&self) -> &str {
        match self {
            AdminAction::Stage(parameters) => parameters.version.as_deref().unwrap_or_default(),
            AdminAction::Switch(version) | AdminAction::Unload(version) => version,
        }
    }

    pub fn verb(&self) -> &'static str {
        match self {
            AdminAction::Stage(_) => "stage",
            AdminAction::Switch(_) => "switch",
            AdminAction::Unload(_) => "unload",
        }
    }
}

/// The model revision id of `model` on `pod_set`: the revision it already has there when the pod set knows the
/// same model (so going back to a model finds its warm revision), else a hash of both.
pub fn model_revision(state: &InPlaceState, model: &DesiredModel) -> String {
    if let Some(known) = state.revisions.iter().find(|r| r.model == *model) {
        return known.revision.clone();
    }
    let json = serde_json::to_vec(&(state.pod_set.as_str(), model)).expect("a model serializes");
    Sha256::digest(&json)
        .iter()
        .take(5)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The state of a pod set that does not serve yet, or that the pod-set layer promotes in this reconcile; None
/// keeps the ConfigMap as it is. A pod set starts with one model revision, named like the pod set itself (so the
/// status keeps naming the same revision when the model layer takes over): the desired model, or, while an
/// InPlace pod set serves from the ConfigMap, the model it serves, which the new pods load too.
fn boot_state(
    state: Option<&InPlaceState>,
    pod_set: &str,
    active_target: Option<&str>,
    promoted: Option<&str>,
    desired: &DesiredModel,
    now: Timestamp,
) -> Option<InPlaceState> {
    let fresh = |model: &DesiredModel, promoted_at: Option<Timestamp>| {
        let mut record = ModelRecord::new(pod_set.to_owned(), model.clone(), now);
        record.promoted_at = promoted_at.map(Time);
        InPlaceState {
            pod_set: pod_set.to_owned(),
            active: pod_set.to_owned(),
            revisions: vec![record],
        }
    };
    let promoted_now = promoted == Some(pod_set) && active_target != Some(pod_set);
    match state {
        None => Some(fresh(desired, None)),
        Some(state) if state.pod_set == pod_set => {
            // Not serving yet: its pods load what the spec asks for.
            (!promoted_now
                && active_target != Some(pod_set)
                && state.active_model() != Some(desired))
            .then(|| fresh(desired, None))
        }
        // Another InPlace pod set serves from the ConfigMap: the new one starts on the same model, and takes the
        // state over once it is promoted.
        Some(state) if active_target == Some(state.pod_set.as_str()) => {
            promoted_now.then(|| fresh(state.active_model().unwrap_or(desired), Some(now)))
        }
        Some(_) => Some(fresh(desired, None)),
    }
}

/// What the model layer decided.
#[derive(Clone, Debug)]
struct ModelLayer {
    /// The decision over model revisions, as blue/green makes it over Deployments: its status, events and
    /// requeue are the ModelDeployment's.
    plan: Plan,
    /// The state to keep in the ConfigMap (written when it differs from the observed one).
    state: InPlaceState,
    calls: Vec<AdminCall>,
}

/// The decision of strategy InPlace: over pod sets the blue/green way, and over the model revisions inside the
/// active pod set. The state in the ConfigMap is what the model layer decides from; when it is lost while a pod
/// set serves from it, it is rebuilt from what the pods report, or the rollout holds. It is never started afresh
/// from the spec then: that would make the desired version active without a promotion.
pub fn decide(observed: &Observed, input: &InPlaceInput) -> Decision {
    let lost = match input.state {
        Persisted::Read(state) => return decide_with(observed, state, &input.desired_model),
        Persisted::Missing => LostState::missing(config_map(observed), None),
        Persisted::Unreadable(why) => LostState::unreadable(
            config_map(observed),
            Some(crate::labels::annotations::IN_PLACE_STATE),
            why.clone(),
        ),
    };
    let serving_pod_set = observed
        .active_service_target
        .and_then(|target| observed.find(target))
        .filter(|r| r.pod_set);
    let Some(pod_set) = serving_pod_set else {
        // Nothing serves through the ConfigMap (a first rollout, or one from BlueGreen): the new pod set starts
        // on the desired model, as before any state existed.
        let plan = super::plan(observed, super::blue_green::decide(observed));
        let in_place_state = boot_state(
            None,
            &observed.desired.revision,
            observed.active_service_target,
            plan.active.as_deref(),
            &input.desired_model,
            observed.now,
        )
        .filter(|_| observed.no_runtime.is_none());
        return Decision {
            plan,
            in_place_state,
            calls: Vec::new(),
        };
    };
    if pod_set.pods.iter().any(|p| p.unread) {
        // Just started: the pods are read within a second, and the state is rebuilt from what they say then.
        return hold::unchanged(observed).into();
    }
    match rebuild(observed, pod_set, &input.desired_model) {
        Ok(state) => {
            let mut decision = decide_with(observed, &state, &input.desired_model);
            decision.in_place_state.get_or_insert(state.clone());
            decision.plan.events.insert(
                0,
                PlannedEvent {
                    warning: true,
                    revision: None,
                    reason: events::STATE_REBUILT,
                    note: format!(
                        "{}; rebuilt from what the {} pods of pod set {} report: {}",
                        lost.describe(),
                        pod_set.pods.len(),
                        pod_set.revision,
                        rebuilt_summary(&state)
                    ),
                },
            );
            decision
        }
        Err(why) => {
            let lost = LostState {
                not_rebuilt: Some(why),
                ..lost
            };
            hold::plan(observed, &[lost]).into()
        }
    }
}

fn config_map(observed: &Observed) -> String {
    format!(
        "ConfigMap/{}",
        crate::observed::in_place_config_map(observed.name)
    )
}

/// The decision on a state that was read (or rebuilt).
fn decide_with(
    observed: &Observed,
    state: &InPlaceState,
    desired_model: &DesiredModel,
) -> Decision {
    // An InPlace pod set serves the model its ConfigMap names, not the one it was created with.
    let revisions: Vec<ObservedRevision> = observed
        .revisions
        .iter()
        .map(|revision| {
            let mut revision = revision.clone();
            if revision.revision == state.pod_set || revision.revision == observed.desired.revision
            {
                if let Some(record) = state.find(&state.active) {
                    revision.model = record.identity();
                }
            }
            revision
        })
        .collect();
    let observed = &Observed {
        revisions: &revisions,
        ..observed.clone()
    };
    let pods = super::plan(observed, super::blue_green::decide(observed));
    let pod_set = observed.find(&observed.desired.revision);
    match pod_set {
        // The pod set serves: the model layer decides.
        Some(pod_set)
            if state.pod_set == pod_set.revision
                && observed.active_service_target == Some(&pod_set.revision)
                && pods.active.as_deref() == Some(&pod_set.revision) =>
        {
            if pod_set.pods.iter().any(|p| p.unread) {
                // A controller that just started has not read every pod yet: a pod not read would pass for one
                // that lacks the candidate (staged again, unloaded, past its progress deadline). Nothing moves
                // and nothing is written until each pod was read once, about a second after the start.
                return hold::unchanged(observed).into();
            }
            let models = decide_models(observed, pod_set, state, desired_model);
            Decision {
                plan: merge_model_layer(pods, models.plan, &pod_set.revision),
                in_place_state: Some(models.state).filter(|s| s != state),
                calls: models.calls,
            }
        }
        _ => {
            // No runtime: the desired pod set is not made, so nothing starts on it.
            let in_place_state = boot_state(
                Some(state),
                &observed.desired.revision,
                observed.active_service_target,
                pods.active.as_deref(),
                desired_model,
                observed.now,
            )
            .filter(|_| observed.no_runtime.is_none());
            Decision {
                plan: pods,
                in_place_state,
                calls: Vec::new(),
            }
        }
    }
}

/// The plan of an active pod set: the Deployments and Services as the pod-set layer planned them, the status
/// and events of the model layer, with the scale subresource's fields of the pod set and its warm previous pod
/// sets.
fn merge_model_layer(pods: Plan, models: Plan, pod_set: &str) -> Plan {
    let mut status = models.status;
    status.replicas = pods.status.replicas;
    status.selector = pods.status.selector;
    status.previous.extend(
        pods.status
            .previous
            .into_iter()
            .filter(|p| p.revision != pod_set),
    );
    // The pod-set layer read a status written in model revisions, so what it finds changed there (a promotion
    // of the pod set, a superseded candidate) is not a transition; with the pod set active and desired, the
    // transitions are the model layer's.
    Plan {
        status,
        events: models.events,
        requeue_after: match (pods.requeue_after, models.requeue_after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        ..pods
    }
}

/// The state of a serving pod set rebuilt from its pods: each pod reports the versions it holds (with their
/// URIs) and which serves; the status names the model revisions (their ids, marks, expected checksums). Only
/// what every pod agrees on is taken: the version every pod serves becomes the active one, a version every pod
/// holds that the status names keeps its place (a warm previous one, the candidate with its start and abort),
/// and a candidate the pods are still staging keeps its record. Nothing comes from the spec but the format,
/// which the pods do not report (every version of a pod set is loaded by the runtime the spec's format names).
fn rebuild(
    observed: &Observed,
    pod_set: &ObservedRevision,
    desired_model: &DesiredModel,
) -> Result<InPlaceState, String> {
    let pods = &pod_set.pods;
    if pods.is_empty() {
        return Err(format!("pod set {} has no pods", pod_set.revision));
    }
    if let Some(pod) = pods
        .iter()
        .find(|p| p.phase != PodPhase::Ready || p.report_pending || p.in_place.versions.is_empty())
    {
        return Err(format!(
            "pod {} has not reported the versions it holds (it is {:?})",
            pod.name, pod.phase
        ));
    }
    let status = observed.previous_status;
    let held_by_all = |version: &str, uri: &str| {
        pods.iter().all(|p| {
            p.in_place
                .versions
                .iter()
                .any(|v| v.version == version && v.uri == uri)
        })
    };
    // The status names the active version only once its promotion was decided (the ConfigMap is written first):
    // when every pod holds it, it is the active one, also where a switch to it was cut short. Otherwise, the
    // version every pod serves.
    let promoted = status
        .active
        .as_deref()
        .filter(|a| held_by_all(&a.version, &a.uri))
        .map(|a| a.version.as_str());
    let serving: Vec<(&str, Option<&str>)> = pods
        .iter()
        .map(|p| (p.name.as_str(), p.in_place.serving()))
        .collect();
    let version = match (promoted, serving[0].1) {
        (Some(version), _) => version,
        (None, Some(version)) if serving.iter().all(|(_, v)| *v == Some(version)) => version,
        _ => {
            return Err(format!(
            "its pods do not all serve one version ({}), and the status names none they all hold",
            serving
                .iter()
                .map(|(pod, v)| format!("{pod}: {}", v.unwrap_or("none")))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        }
    };
    let named: Vec<(&crate::api::RevisionStatus, Role)> = status
        .active
        .as_deref()
        .map(|r| (r, Role::Active))
        .into_iter()
        .chain(status.candidate.as_deref().map(|r| (r, Role::Candidate)))
        .chain(status.previous.iter().map(|r| (r, Role::Previous)))
        .collect();
    let mut state = InPlaceState {
        pod_set: pod_set.revision.clone(),
        active: String::new(),
        revisions: Vec::new(),
    };
    // A record made now would restart the deadlines its revision had: its times come from the status.
    let since_or_now =
        |named: &crate::api::RevisionStatus| named.since.as_ref().map_or(observed.now, |t| t.0);
    let uri_of = |version: &str| {
        pods[0]
            .in_place
            .versions
            .iter()
            .find(|v| v.version == version)
            .map(|v| v.uri.clone())
    };
    let model_of = |version: &str, uri: String, sha256: Option<String>| DesiredModel {
        uri,
        version: version.to_owned(),
        sha256,
        format: desired_model.format.clone(),
        object: None,
    };
    // The active version: under the name and checksum the status gives it, else under a name of its own.
    let uri = uri_of(version).unwrap_or_default();
    let active = match named
        .iter()
        .find(|(r, _)| r.version == version && r.uri == uri)
    {
        Some((named, _)) => {
            let mut record = ModelRecord::new(
                named.revision.clone(),
                model_of(version, uri, named.sha256.clone()),
                since_or_now(named),
            );
            record.promoted_at = Some(Time(since_or_now(named)));
            record
        }
        None => {
            let model = model_of(version, uri, None);
            let mut record = ModelRecord::new(model_revision(&state, &model), model, observed.now);
            record.promoted_at = Some(Time(observed.now));
            record
        }
    };
    state.active = active.revision.clone();
    state.revisions.push(active);
    for (named, role) in &named {
        if state.find(&named.revision).is_some() || named.version == version {
            continue;
        }
        let held_by_all = pods.iter().all(|p| {
            p.in_place
                .versions
                .iter()
                .any(|v| v.version == named.version && v.uri == named.uri)
        });
        let staging = pods.iter().any(|p| {
            p.in_place
                .staging
                .as_ref()
                .is_some_and(|s| s.version == named.version)
        });
        let model = model_of(&named.version, named.uri.clone(), named.sha256.clone());
        let mut record = ModelRecord::new(named.revision.clone(), model, since_or_now(named));
        match role {
            Role::Previous if held_by_all => {
                record.promoted_at = Some(Time(since_or_now(named)));
            }
            Role::Candidate if held_by_all || staging => {
                record.rollout_started_at = named.since.clone();
                record.aborted = named
                    .reason
                    .as_deref()
                    .and_then(AbortReason::from_condition_reason)
                    .map(|reason| {
                        StoredAbort::from_mark(&AbortMark {
                            reason,
                            message: named.message.clone().unwrap_or_default(),
                            generation: status.observed_generation.unwrap_or(observed.generation),
                        })
                    });
            }
            _ => continue,
        }
        state.revisions.push(record);
    }
    Ok(state)
}

/// Where a revision stood in the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Active,
    Candidate,
    Previous,
}

/// "version 1 serves (revision 0a1b2c3d4e); version 2 (revision 5f6a7b8c9d) is kept".
fn rebuilt_summary(state: &InPlaceState) -> String {
    state
        .revisions
        .iter()
        .map(|r| {
            let role = if r.revision == state.active {
                "serves"
            } else if r.aborted.is_some() {
                "stays aborted"
            } else if r.promoted_at.is_some() {
                "stays warm"
            } else {
                "stays the candidate"
            };
            format!(
                "version {} {role} (revision {})",
                r.model.version, r.revision
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Decides the model layer of an active pod set.
fn decide_models(
    observed: &Observed,
    pod_set: &ObservedRevision,
    state: &InPlaceState,
    desired_model: &DesiredModel,
) -> ModelLayer {
    let desired_revision = model_revision(state, desired_model);
    let memory_limit = observed
        .spec
        .server
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref()?.get("memory"))
        .map(|q| q.0.as_str());
    // Every model revision runs on the pod set: its runtime is theirs.
    let runtime = pod_set
        .runtime
        .clone()
        .or_else(|| observed.desired.runtime.clone());
    let revisions: Vec<ObservedRevision> = state
        .revisions
        .iter()
        .map(|record| model_revision_view(record, state, pod_set, memory_limit, runtime.as_ref()))
        .collect();
    let view = Observed {
        revisions: &revisions,
        active_service_target: Some(state.active.as_str()),
        desired: DesiredRevision {
            revision: desired_revision.clone(),
            model: ModelIdentity {
                version: desired_model.version.clone(),
                uri: desired_model.uri.clone(),
                sha256: desired_model.sha256.clone(),
                object: desired_model.object.clone(),
                detected_at: None,
            },
            runtime: observed.desired.runtime.clone(),
        },
        ..observed.clone()
    };
    let mut plan = super::plan(&view, super::blue_green::decide(&view));

    // The state after this reconcile: marks, the new candidate's record, forgotten revisions, the active one.
    let mut next = state.clone();
    // A model no runtime serves is not recorded: nothing of it is staged.
    if next.find(&desired_revision).is_none() && observed.no_runtime.is_none() {
        next.revisions.push(ModelRecord::new(
            desired_revision.clone(),
            desired_model.clone(),
            observed.now,
        ));
    }
    for record in &mut next.revisions {
        if let Some(marks) = plan.marks.get(&record.revision) {
            record.set_marks(marks);
        }
    }
    next.revisions
        .retain(|r| !plan.delete.contains(&r.revision) || r.revision == desired_revision);
    if let Some(active) = &plan.active {
        next.active = active.clone();
    }

    let calls = calls(observed, &plan, &next, &desired_revision, pod_set);
    plan.status.last_switch = last_switch(observed, &next, pod_set);
    if let Some(switch) = plan
        .status
        .last_switch
        .as_ref()
        .filter(|s| Some(*s) != observed.previous_status.last_switch.as_ref())
    {
        plan.events.push(PlannedEvent {
            warning: false,
            revision: Some(next.active.clone()),
            reason: events::SWITCHED,
            note: format!(
                "{} pods switched{} to version {} within {} ms",
                switch.pods,
                switch
                    .from
                    .as_ref()
                    .map_or(String::new(), |f| format!(" from version {f}")),
                switch.to,
                switch.window_milliseconds
            ),
        });
    }
    if !calls.is_empty() {
        plan.requeue_after = Some(plan.requeue_after.map_or(FOLLOW, |r| r.min(FOLLOW)));
    }
    ModelLayer {
        plan,
        state: next,
        calls,
    }
}

/// A model revision as blue/green sees a revision: its "pods" are the pod set's pods, each in the phase the
/// model has in it (ready once loaded, the stage's phase while it loads).
fn model_revision_view(
    record: &ModelRecord,
    state: &InPlaceState,
    pod_set: &ObservedRevision,
    memory_limit: Option<&str>,
    runtime: Option<&RevisionRuntime>,
) -> ObservedRevision {
    let version = record.model.version.as_str();
    let active = record.revision == state.active;
    let marks = record.marks();
    let pods: Vec<ObservedPod> = pod_set
        .pods
        .iter()
        .map(|pod| model_in_pod(pod, version, active, &marks, memory_limit))
        .collect();
    let holding = pods
        .iter()
        .filter(|p| p.phase == PodPhase::Ready || (active && p.phase.is_loading()))
        .count() as i32;
    let available = pods.iter().filter(|p| p.phase == PodPhase::Ready).count() as i32;
    let replicas = if active { pod_set.replicas } else { holding };
    // Which pod failed goes into the message: the reason stays the pod's own.
    let load_failure = pods.iter().find_map(|p| {
        let failure = p.failure.as_ref()?;
        (p.phase == PodPhase::Failed).then(|| LoadFailure {
            reason: failure.reason,
            message: format!("pod {}: {}", p.name, failure.message),
        })
    });
    ObservedRevision {
        revision: record.revision.clone(),
        model: record.identity(),
        created_at: record.created_at.0,
        replicas,
        available_replicas: available,
        rolled_out: pod_set.rolled_out
            && pods.len() as i32 == pod_set.replicas
            && available >= pod_set.replicas,
        marks,
        unreadable_marks: None,
        pod_set: false,
        load_failure: (!active).then_some(load_failure).flatten(),
        pods,
        runtime: runtime.cloned(),
    }
}

/// One pod as one model revision sees it.
fn model_in_pod(
    pod: &ObservedPod,
    version: &str,
    active: bool,
    marks: &super::RevisionMarks,
    memory_limit: Option<&str>,
) -> ObservedPod {
    let in_place = &pod.in_place;
    let holds = in_place.holds(version);
    let staging = in_place.staging.as_ref().filter(|s| s.version == version);
    let mut view = ObservedPod {
        in_place: in_place.clone(),
        ..pod.clone()
    };
    if active && in_place.versions.is_empty() {
        // A pod loading at start loads the active model (its ConfigMap's).
        return view;
    }
    if pod.phase == PodPhase::Ready && holds {
        view.phase = PodPhase::Ready;
        view.bytes = None;
        view.failure = None;
        view.sha256 = in_place
            .versions
            .iter()
            .find(|v| v.version == version)
            .map(|v| v.sha256.clone());
        if in_place.serving() != Some(version) {
            view.model = staging.and_then(|s| s.model.clone());
        }
        return view;
    }
    // Killed for its memory while staging this version (after its staging started): the stage's failure.
    let started = marks.rollout_started_at;
    if let (Some(killed), Some(started)) = (in_place.oom_killed_at, started) {
        if !active && killed >= started {
            view.phase = PodPhase::Failed;
            let size = staging.and_then(|s| s.bytes_total).or_else(|| {
                in_place
                    .staged_size
                    .as_ref()
                    .filter(|(v, _)| v == version)
                    .map(|(_, size)| *size)
            });
            view.failure = Some(LoadFailure::new(
                FailureReason::OutOfMemory,
                format!(
                    "its server was killed for running out of memory (OOMKilled) while it staged version \
                     {version}{} beside the one it serves, with a memory limit of {}; staging needs room for \
                     both models (about twice the model files, plus the server): raise \
                     spec.server.resources.limits.memory, or roll this version out with strategy BlueGreen",
                    size.map_or(String::new(), |b| format!(
                        " (a model file of {})",
                        crate::observed::units::human_bytes(b)
                    )),
                    memory_limit.unwrap_or("none in spec.server.resources (the operator's default)")
                ),
            ));
            return view;
        }
    }
    // A failure from before this attempt started (a retry at a new generation) is not this attempt's.
    let this_attempt = |at: Option<Timestamp>| match (at, started) {
        (Some(at), Some(started)) => at >= started,
        _ => true,
    };
    if let Some((refused_version, message, at)) = &in_place.refused {
        if refused_version == version && !active && this_attempt(Some(*at)) {
            view.phase = PodPhase::Failed;
            view.failure = Some(LoadFailure::new(
                FailureReason::StageRefused,
                message.clone(),
            ));
            return view;
        }
    }
    let staging = staging.filter(|s| s.phase != PodPhase::Failed || this_attempt(s.failed_at));
    match staging {
        Some(stage) if pod.phase == PodPhase::Ready => {
            view.phase = stage.phase;
            view.bytes = stage.phase.is_loading().then_some((
                crate::observed::units::stepped(stage.bytes_done, stage.bytes_total),
                stage.bytes_total,
            ));
            view.failure = stage.failure.clone();
            view.model = stage.model.clone();
            view.stands = match stage.bytes_total {
                Some(total) => format!(
                    "staging version {version}: {:?} at {} of {}",
                    stage.phase,
                    crate::observed::units::human_bytes(stage.bytes_done),
                    crate::observed::units::human_bytes(total)
                ),
                None => format!("staging version {version}: {:?}", stage.phase),
            };
        }
        _ if active => {}
        _ => {
            view.phase = PodPhase::Starting;
            view.bytes = None;
            view.failure = None;
            view.model = None;
            view.report_pending = false;
            view.stands = format!("not staging version {version} yet");
        }
    }
    view
}

/// The admin calls that move the pods towards `next`.
fn calls(
    observed: &Observed,
    plan: &Plan,
    next: &InPlaceState,
    desired_revision: &str,
    pod_set: &ObservedRevision,
) -> Vec<AdminCall> {
    let mut calls = Vec::new();
    let Some(active) = next.find(&next.active) else {
        return calls;
    };
    let active_version = active.model.version.as_str();
    let validation = observed.spec.model.validation.as_ref();
    let stage = |model: &DesiredModel| {
        AdminAction::Stage(Box::new(LoadParameters {
            uri: Some(model.uri.clone()),
            version: Some(model.version.clone()),
            sha256: model.sha256.clone(),
            format: model.format.clone(),
            validation_uri: validation.map(|v| v.uri.clone()),
            validation_sha256: validation.and_then(|v| v.sha256.clone()),
            wait: false,
            stage: true,
            object: model.object.clone(),
        }))
    };
    let call = |pod: &ObservedPod, action: AdminAction| {
        let address = pod.in_place.address?;
        let credential_id = pod.in_place.credential_id.clone()?;
        Some(AdminCall {
            pod: pod.name.clone(),
            uid: pod.in_place.uid.clone(),
            address,
            credential_id,
            action,
        })
    };
    // Pods whose server answers and has a model loaded; one still loading at start is left alone.
    let settled: Vec<&ObservedPod> = pod_set
        .pods
        .iter()
        .filter(|p| p.phase == PodPhase::Ready && !p.in_place.versions.is_empty())
        .collect();
    let loading = |pod: &ObservedPod| {
        pod.in_place
            .staging
            .as_ref()
            .is_some_and(|s| s.phase.is_loading())
    };

    // Every pod serves the active version: switch the ones that hold it, stage it on the others.
    let mut stages_in_flight = settled.iter().filter(|p| loading(p)).count();
    let budget = observed.spec.rollout.max_concurrent_loads.max(1) as usize;
    for pod in &settled {
        if pod.in_place.serving() == Some(active_version) {
            continue;
        }
        if pod.in_place.holds(active_version) {
            calls.extend(call(pod, AdminAction::Switch(active_version.into())));
        } else if !loading(pod) && stages_in_flight < budget {
            stages_in_flight += 1;
            calls.extend(call(pod, stage(&active.model)));
        }
    }
    // A running candidate is staged where it is missing, a few pods at a time.
    if plan.preview.as_deref() == Some(desired_revision) {
        if let Some(candidate) = next.find(desired_revision) {
            let version = candidate.model.version.as_str();
            let started = candidate.rollout_started_at.as_ref().map(|t| t.0);
            for pod in &settled {
                // Failed in this attempt: the candidate is being aborted. Before it: staged again.
                let failed = pod.in_place.staging.as_ref().is_some_and(|s| {
                    s.version == version
                        && s.phase == PodPhase::Failed
                        && s.failed_at
                            .zip(started)
                            .is_none_or(|(at, started)| at >= started)
                });
                if pod.in_place.holds(version) || loading(pod) || failed {
                    continue;
                }
                if stages_in_flight >= budget {
                    break;
                }
                stages_in_flight += 1;
                calls.extend(call(pod, stage(&candidate.model)));
            }
        }
    }
    // Versions no revision keeps loaded are dropped: an aborted candidate, previous ones beyond keepPrevious,
    // forgotten ones. Never the active one, nor a running candidate's.
    let running_candidate = plan
        .preview
        .as_deref()
        .and_then(|r| next.find(r))
        .map(|r| r.model.version.as_str());
    let kept: Vec<&str> = next
        .revisions
        .iter()
        .filter(|r| {
            r.revision == next.active
                || Some(r.model.version.as_str()) == running_candidate
                || plan_keeps(plan, r, pod_set)
        })
        .map(|r| r.model.version.as_str())
        .collect();
    for pod in &settled {
        for loaded in &pod.in_place.versions {
            if loaded.state != LoadedState::Serving && !kept.contains(&loaded.version.as_str()) {
                calls.extend(call(pod, AdminAction::Unload(loaded.version.clone())));
            }
        }
    }
    calls
}

/// Whether the plan keeps a (non-active) model revision loaded: a warm previous one.
fn plan_keeps(plan: &Plan, record: &ModelRecord, pod_set: &ObservedRevision) -> bool {
    if plan.delete.contains(&record.revision) {
        return false;
    }
    match plan.scale.get(&record.revision) {
        Some(replicas) => *replicas > 0,
        // Unchanged: kept when it holds pods now (a previous one counted in `keepPrevious`).
        None => {
            record.promoted_at.is_some()
                && pod_set
                    .pods
                    .iter()
                    .any(|p| p.in_place.holds(&record.model.version))
        }
    }
}

/// The latest switch to the active version, from the pods' own records: once every pod serves it, the window is
/// the time between the first and the last of them switching. Kept as it was until then.
fn last_switch(
    observed: &Observed,
    state: &InPlaceState,
    pod_set: &ObservedRevision,
) -> Option<SwitchStatus> {
    let previous = observed.previous_status.last_switch.clone();
    let Some(active) = state.find(&state.active) else {
        return previous;
    };
    let version = active.model.version.as_str();
    let serving_all = !pod_set.pods.is_empty()
        && pod_set
            .pods
            .iter()
            .all(|p| p.in_place.serving() == Some(version));
    let switches: Vec<_> = pod_set
        .pods
        .iter()
        .filter_map(|p| p.in_place.last_switch.as_ref())
        .filter(|s| s.to == version)
        .collect();
    if !serving_all || switches.is_empty() {
        return previous;
    }
    let first: Timestamp = switches.iter().map(|s| s.at).min()?;
    let last: Timestamp = switches.iter().map(|s| s.at).max()?;
    let window = last.as_millisecond() - first.as_millisecond();
    let switch = SwitchStatus {
        from: switches.iter().find_map(|s| s.from.clone()),
        to: version.to_owned(),
        at: Time(Timestamp::from_second(first.as_second()).unwrap_or(first)),
        window_milliseconds: window,
        pods: switches.len() as i32,
    };
    // A pod that started on the version later has no switch record: the earlier, complete one stands.
    match &previous {
        Some(p) if p.to == switch.to && p.at == switch.at => previous,
        _ => Some(switch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ModelDeploymentSpec, ModelDeploymentStatus, RolloutStrategy};
    use crate::conditions::reasons;
    use crate::rollout::{refresh, InPlacePod, LoadedVersion, Requests, Staging, Switch};

    const T0: i64 = 1_800_000_000;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(T0 + seconds).unwrap()
    }

    fn spec(version: &str) -> ModelDeploymentSpec {
        let mut spec: ModelDeploymentSpec = serde_json::from_value(serde_json::json!({
            "model": {"uri": format!("s3://m/{version}.onnx"), "version": version},
            "replicas": 3,
            "rollout": {"strategy": "InPlace"}
        }))
        .unwrap();
        spec.rollout.strategy = RolloutStrategy::InPlace;
        spec
    }

    fn model(version: &str) -> DesiredModel {
        DesiredModel {
            uri: format!("s3://m/{version}.onnx"),
            version: version.into(),
            format: Some("onnx".into()),
            ..Default::default()
        }
    }

    fn loaded(version: &str, state: LoadedState) -> LoadedVersion {
        LoadedVersion {
            version: version.into(),
            state,
            sha256: format!("sha-{version}"),
            uri: format!("s3://m/{version}.onnx"),
        }
    }

    fn pod(i: usize, versions: Vec<LoadedVersion>, staging: Option<Staging>) -> ObservedPod {
        ObservedPod {
            name: format!("iris-p-{i}"),
            phase: PodPhase::Ready,
            last_progress_at: Some(at(0)),
            in_place: InPlacePod {
                uid: format!("uid-{i}"),
                address: Some(format!("10.0.0.{i}").parse().unwrap()),
                credential_id: Some("id".into()),
                versions,
                staging,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn pod_set(pods: Vec<ObservedPod>) -> ObservedRevision {
        ObservedRevision {
            revision: "p".into(),
            model: Default::default(),
            created_at: at(0),
            replicas: 3,
            available_replicas: 3,
            rolled_out: true,
            marks: Default::default(),
            unreadable_marks: None,
            pod_set: true,
            load_failure: None,
            pods,
            runtime: None,
        }
    }

    fn state(active_version: &str) -> InPlaceState {
        let mut record = ModelRecord::new("p".into(), model(active_version), at(0));
        record.promoted_at = Some(Time(at(0)));
        InPlaceState {
            pod_set: "p".into(),
            active: "p".into(),
            revisions: vec![record],
        }
    }

    /// A decision, with the state after it in full.
    struct Outcome {
        plan: Plan,
        state: InPlaceState,
        calls: Vec<AdminCall>,
    }

    fn run(
        spec: &ModelDeploymentSpec,
        status: &ModelDeploymentStatus,
        pods: &ObservedRevision,
        state: &InPlaceState,
        now: i64,
    ) -> Outcome {
        let decision = run_on(spec, status, pods, &Persisted::Read(state.clone()), now);
        Outcome {
            state: decision.in_place_state.unwrap_or_else(|| state.clone()),
            plan: decision.plan,
            calls: decision.calls,
        }
    }

    /// Three pods serving version 1 start staging `spec`'s version at 10; then `pods` are observed at `now`.
    /// A stage of `version` under way: a tenth of it downloaded.
    fn downloading(version: &str) -> Staging {
        Staging {
            version: version.into(),
            phase: PodPhase::Downloading,
            bytes_done: 10,
            bytes_total: Some(100),
            failure: None,
            model: None,
            failed_at: None,
        }
    }

    fn staging_then(spec: &ModelDeploymentSpec, pods: Vec<ObservedPod>, now: i64) -> Outcome {
        let idle = pod_set((0..3).map(|i| pod(i, serving("1"), None)).collect());
        let first = run(
            spec,
            &ModelDeploymentStatus::default(),
            &idle,
            &state("1"),
            10,
        );
        run(spec, &first.plan.status, &pod_set(pods), &first.state, now)
    }

    fn run_on(
        spec: &ModelDeploymentSpec,
        status: &ModelDeploymentStatus,
        pods: &ObservedRevision,
        state: &Persisted<InPlaceState>,
        now: i64,
    ) -> Decision {
        let observed = Observed {
            name: "iris",
            generation: 2,
            spec,
            previous_status: status,
            desired: DesiredRevision {
                revision: "p".into(),
                model: Default::default(),
                runtime: None,
            },
            no_runtime: None,
            revisions: std::slice::from_ref(pods),
            active_service_target: Some("p"),
            preview_service_target: None,
            requests: Requests::default(),
            lost: Vec::new(),
            in_place: None,
            refresh: refresh::Refresh::default(),
            endpoint: "http://iris".into(),
            grpc_endpoint: "iris:8082".into(),
            now: at(now),
        };
        let input = InPlaceInput {
            state,
            desired_model: model(&spec.model.version),
        };
        decide(&observed, &input)
    }

    fn actions(decision: &Outcome) -> Vec<(String, &'static str, String)> {
        decision
            .calls
            .iter()
            .map(|c| {
                (
                    c.pod.clone(),
                    c.action.verb(),
                    c.action.version().to_owned(),
                )
            })
            .collect()
    }

    fn serving(version: &str) -> Vec<LoadedVersion> {
        vec![loaded(version, LoadedState::Serving)]
    }

    #[test]
    fn a_new_version_is_staged_one_pod_at_a_time_then_every_pod_switches_together() {
        let spec = spec("2");
        let status = ModelDeploymentStatus::default();
        let state = state("1");
        let idle = pod_set((0..3).map(|i| pod(i, serving("1"), None)).collect());

        let first = run(&spec, &status, &idle, &state, 10);
        assert_eq!(actions(&first), [("iris-p-0".into(), "stage", "2".into())]);
        let candidate = first.plan.status.candidate.as_ref().expect("a candidate");
        assert_eq!(candidate.version, "2");
        assert_eq!(candidate.reason.as_deref(), Some(reasons::LOADING));
        assert_eq!(first.plan.status.active.as_ref().unwrap().version, "1");
        assert_eq!(first.state.revisions.len(), 2, "the candidate is recorded");

        // Pod 0 stages; no second stage while it runs (maxConcurrentLoads 1).
        let staging = downloading("2");
        let loading = pod_set(vec![
            pod(0, serving("1"), Some(staging)),
            pod(1, serving("1"), None),
            pod(2, serving("1"), None),
        ]);
        let second = run(&spec, &first.plan.status, &loading, &first.state, 12);
        assert!(actions(&second).is_empty(), "{:?}", actions(&second));

        // Pod 0 holds it: pod 1 is next; then every pod holds it: all switch at once.
        let held = || {
            vec![
                loaded("1", LoadedState::Serving),
                loaded("2", LoadedState::Staged),
            ]
        };
        let one = pod_set(vec![
            pod(0, held(), None),
            pod(1, serving("1"), None),
            pod(2, serving("1"), None),
        ]);
        let third = run(&spec, &second.plan.status, &one, &second.state, 14);
        assert_eq!(actions(&third), [("iris-p-1".into(), "stage", "2".into())]);
        let all = pod_set((0..3).map(|i| pod(i, held(), None)).collect());
        let fourth = run(&spec, &third.plan.status, &all, &third.state, 20);
        assert_eq!(
            actions(&fourth),
            (0..3)
                .map(|i| (format!("iris-p-{i}"), "switch", "2".to_owned()))
                .collect::<Vec<_>>()
        );
        assert_ne!(
            fourth.state.active, "p",
            "the ConfigMap names the new model"
        );
        assert_eq!(fourth.state.active_model().unwrap().version, "2");
        assert_eq!(fourth.plan.status.active.as_ref().unwrap().version, "2");
        assert_eq!(
            fourth.plan.status.history[0].outcome,
            crate::api::Outcome::Promoted
        );

        // The pods report the switch: the window is measured from their own records, once.
        let switched = pod_set(
            (0..3)
                .map(|i| {
                    let mut p = pod(
                        i,
                        vec![
                            loaded("1", LoadedState::Previous),
                            loaded("2", LoadedState::Serving),
                        ],
                        None,
                    );
                    p.in_place.last_switch = Some(Switch {
                        from: Some("1".into()),
                        to: "2".into(),
                        at: Timestamp::from_millisecond((T0 + 21) * 1000 + 7 * i as i64).unwrap(),
                    });
                    p
                })
                .collect(),
        );
        let fifth = run(&spec, &fourth.plan.status, &switched, &fourth.state, 22);
        assert!(
            actions(&fifth).is_empty(),
            "version 1 stays loaded: keepPrevious 1"
        );
        let switch = fifth.plan.status.last_switch.as_ref().unwrap();
        assert_eq!((switch.window_milliseconds, switch.pods), (14, 3));
        assert!(fifth
            .plan
            .events
            .iter()
            .any(|e| e.reason == events::SWITCHED));
        let again = run(&spec, &fifth.plan.status, &switched, &fifth.state, 40);
        assert!(again.plan.events.is_empty(), "{:?}", again.plan.events);
        assert_eq!(again.plan.status, fifth.plan.status, "nothing to write");
        assert_eq!(again.state, fifth.state);
        assert_eq!(fifth.plan.status.previous[0].version, "1");

        // Back to version 1: warm in every pod, so a switch, not a stage.
        let back = run(
            &super::tests::spec("1"),
            &again.plan.status,
            &switched,
            &again.state,
            50,
        );
        assert_eq!(
            actions(&back),
            (0..3)
                .map(|i| (format!("iris-p-{i}"), "switch", "1".to_owned()))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            back.plan.status.history[0].outcome,
            crate::api::Outcome::RolledBack
        );
        assert_eq!(back.state.active, "p");
    }

    #[test]
    fn a_stage_that_fails_on_one_pod_aborts_and_every_pod_drops_the_candidate() {
        let failed = Staging {
            version: "2".into(),
            phase: PodPhase::Failed,
            bytes_done: 100,
            bytes_total: Some(100),
            failure: Some(LoadFailure::new(
                crate::server_contract::Reason::ChecksumMismatch,
                "expected ab, got cd",
            )),
            model: None,
            failed_at: None,
        };
        let pods = vec![
            pod(0, serving("1"), Some(failed)),
            pod(
                1,
                vec![
                    loaded("1", LoadedState::Serving),
                    loaded("2", LoadedState::Staged),
                ],
                None,
            ),
            pod(2, serving("1"), None),
        ];
        let second = staging_then(&spec("2"), pods, 12);
        let candidate = second.plan.status.candidate.as_ref().unwrap();
        assert_eq!(
            candidate.reason.as_deref(),
            Some(reasons::MODEL_LOAD_FAILED)
        );
        assert_eq!(
            candidate.message.as_deref(),
            Some("ChecksumMismatch: pod iris-p-0: expected ab, got cd"),
            "the server's reason, then which pod"
        );
        assert_eq!(
            actions(&second),
            [("iris-p-1".into(), "unload", "2".into())]
        );
        assert_eq!(second.state.active, "p", "traffic never moved");
        assert!(second
            .plan
            .events
            .iter()
            .any(|e| e.reason == events::ROLLOUT_ABORTED));
    }

    #[test]
    fn a_pod_killed_for_its_memory_while_staging_aborts_with_a_reason_that_says_so() {
        let mut spec = spec("2");
        spec.server.resources =
            serde_json::from_value(serde_json::json!({"limits": {"memory": "256Mi"}})).unwrap();
        let mut killed = pod(0, serving("1"), None);
        killed.in_place.oom_killed_at = Some(at(15));
        // Restarted: it reports nothing of the stage any more, but its size was seen before.
        killed.in_place.staged_size = Some(("2".into(), 120 << 20));
        let pods = vec![
            killed,
            pod(1, serving("1"), None),
            pod(2, serving("1"), None),
        ];
        let second = staging_then(&spec, pods, 16);
        let candidate = second.plan.status.candidate.as_ref().unwrap();
        assert_eq!(candidate.reason.as_deref(), Some(reasons::OUT_OF_MEMORY));
        let message = candidate.message.as_deref().unwrap();
        assert!(
            message.starts_with("OutOfMemory: pod iris-p-0: its server was killed")
                && message.contains("limits.memory"),
            "{message}"
        );
    }

    #[test]
    fn a_stage_the_server_refused_aborts_with_its_answer() {
        let mut refused = pod(0, serving("1"), None);
        refused.in_place.refused =
            Some(("2".into(), "3 versions loaded, at most 3".into(), at(11)));
        let pods = vec![
            refused,
            pod(1, serving("1"), None),
            pod(2, serving("1"), None),
        ];
        let second = staging_then(&spec("2"), pods, 12);
        let candidate = second.plan.status.candidate.as_ref().unwrap();
        let shown = (candidate.reason.as_deref(), candidate.message.as_deref());
        let refusal = "StageRefused: pod iris-p-0: 3 versions loaded, at most 3";
        assert_eq!(shown, (Some(reasons::MODEL_LOAD_FAILED), Some(refusal)));
        assert_eq!(second.state.active, "p", "traffic never moved");
    }

    #[test]
    fn keep_previous_zero_unloads_the_version_that_served_before() {
        let mut spec = spec("2");
        spec.rollout.keep_previous = 0;
        let mut state = state("1");
        let mut record = ModelRecord::new("two".into(), model("2"), at(5));
        record.promoted_at = Some(Time(at(20)));
        state.revisions.push(record);
        state.active = "two".into();
        let switched = pod_set(
            (0..3)
                .map(|i| {
                    pod(
                        i,
                        vec![
                            loaded("1", LoadedState::Previous),
                            loaded("2", LoadedState::Serving),
                        ],
                        None,
                    )
                })
                .collect(),
        );
        let decision = run(
            &spec,
            &ModelDeploymentStatus::default(),
            &switched,
            &state,
            30,
        );
        assert_eq!(
            actions(&decision),
            (0..3)
                .map(|i| (format!("iris-p-{i}"), "unload", "1".to_owned()))
                .collect::<Vec<_>>()
        );
        assert!(decision.plan.status.previous.is_empty());
    }

    #[test]
    fn a_pod_that_started_before_the_switch_is_moved_to_the_active_version() {
        let spec = spec("1");
        let state = state("1");
        let pods = pod_set(vec![
            pod(0, serving("1"), None),
            pod(1, serving("0"), None),
            pod(
                2,
                vec![
                    loaded("0", LoadedState::Serving),
                    loaded("1", LoadedState::Previous),
                ],
                None,
            ),
        ]);
        let decision = run(&spec, &ModelDeploymentStatus::default(), &pods, &state, 10);
        assert_eq!(
            actions(&decision),
            [
                ("iris-p-1".into(), "stage", "1".into()),
                ("iris-p-2".into(), "switch", "1".into()),
            ]
        );
    }

    #[test]
    fn a_new_pod_set_starts_on_the_model_that_serves_and_takes_the_state_over_once_promoted() {
        let now = at(5);
        let fresh = boot_state(None, "p", None, None, &model("1"), now).unwrap();
        assert_eq!((fresh.pod_set.as_str(), fresh.active.as_str()), ("p", "p"));
        assert_eq!(fresh.active_model().unwrap().version, "1");
        // Still loading, spec changed: the pods that start load the new model.
        let changed = boot_state(Some(&fresh), "p", None, None, &model("2"), now).unwrap();
        assert_eq!(changed.active_model().unwrap().version, "2");
        assert_eq!(
            boot_state(Some(&changed), "p", None, None, &model("2"), now),
            None
        );
        // A new pod set "q" while "p" serves from the ConfigMap: unchanged until q is promoted.
        assert_eq!(
            boot_state(Some(&changed), "q", Some("p"), Some("p"), &model("3"), now),
            None
        );
        let taken =
            boot_state(Some(&changed), "q", Some("p"), Some("q"), &model("3"), now).unwrap();
        assert_eq!((taken.pod_set.as_str(), taken.active.as_str()), ("q", "q"));
        assert_eq!(
            taken.active_model().unwrap().version,
            "2",
            "what its pods loaded"
        );
    }

    /// Pod `i` serving `serves` and holding `holds` beside it.
    fn holding(i: usize, serves: &str, holds: &str, state: LoadedState) -> ObservedPod {
        pod(
            i,
            vec![loaded(serves, LoadedState::Serving), loaded(holds, state)],
            None,
        )
    }

    /// Every pod serves version 1 and holds version 2 staged.
    fn staged_everywhere() -> ObservedRevision {
        pod_set(
            (0..3)
                .map(|i| holding(i, "1", "2", LoadedState::Staged))
                .collect(),
        )
    }

    /// Version 2 of `spec` first staged on one pod at 10 s, then reported staged in every pod at `times`.
    fn staged(spec: &ModelDeploymentSpec, times: &[i64]) -> Outcome {
        let idle = pod_set((0..3).map(|i| pod(i, serving("1"), None)).collect());
        let mut outcome = run(
            spec,
            &ModelDeploymentStatus::default(),
            &idle,
            &state("1"),
            10,
        );
        for now in times {
            outcome = run(
                spec,
                &outcome.plan.status,
                &staged_everywhere(),
                &outcome.state,
                *now,
            );
        }
        outcome
    }

    /// A candidate (version 2) staged in every pod and held for `kubectl ferry promote`.
    fn waiting_for_promotion() -> (ModelDeploymentSpec, Outcome) {
        let mut spec = spec("2");
        spec.rollout.auto_promote = false;
        let outcome = staged(&spec, &[12, 14, 16]);
        let candidate = outcome.plan.status.candidate.as_deref().unwrap();
        assert_eq!(
            candidate.reason.as_deref(),
            Some(reasons::WAITING_FOR_PROMOTION)
        );
        assert!(outcome.calls.is_empty());
        (spec, outcome)
    }

    #[test]
    fn a_config_map_deleted_while_a_candidate_waits_for_promotion_is_rebuilt_from_the_pods_and_nothing_switches(
    ) {
        let (spec, waiting) = waiting_for_promotion();
        let pods = staged_everywhere();
        let decision = run_on(&spec, &waiting.plan.status, &pods, &Persisted::Missing, 30);
        assert!(
            !decision
                .calls
                .iter()
                .any(|c| matches!(c.action, AdminAction::Switch(_))),
            "the candidate never serves: {:?}",
            decision.calls
        );
        let rebuilt = decision
            .in_place_state
            .clone()
            .expect("the state is written back");
        assert_eq!(
            rebuilt.active, "p",
            "the version the pods serve stays active"
        );
        assert_eq!(rebuilt.active_model().unwrap().version, "1");
        assert_eq!(
            rebuilt, waiting.state,
            "the rebuilt state is the one that was lost: same revisions, marks and models"
        );
        let status = &decision.plan.status;
        assert_eq!(status.active.as_deref().unwrap().version, "1");
        let candidate = status.candidate.as_deref().unwrap();
        assert_eq!(
            candidate.reason.as_deref(),
            Some(reasons::WAITING_FOR_PROMOTION)
        );
        let rebuilt_events: Vec<_> = decision
            .plan
            .events
            .iter()
            .filter(|e| e.reason == events::STATE_REBUILT)
            .collect();
        assert_eq!(rebuilt_events.len(), 1, "{:?}", decision.plan.events);
        assert!(rebuilt_events[0].warning);
        assert!(
            rebuilt_events[0]
                .note
                .contains("ConfigMap/iris-ferry-model is missing"),
            "{}",
            rebuilt_events[0].note
        );
        // From then on the rollout goes on from the written state: still waiting, still nothing switched.
        let next = run(&spec, status, &pods, &rebuilt, 32);
        assert!(next.calls.is_empty(), "{:?}", actions(&next));
        assert!(next.plan.events.is_empty(), "{:?}", next.plan.events);
    }

    #[test]
    fn a_config_map_deleted_mid_stage_keeps_the_candidate_staging_and_never_switches() {
        let spec = spec("2");
        let stages = || {
            vec![
                holding(0, "1", "2", LoadedState::Staged),
                pod(1, serving("1"), Some(downloading("2"))),
                pod(2, serving("1"), None),
            ]
        };
        let mid_stage = pod_set(stages());
        let second = staging_then(&spec, stages(), 12);
        let decision = run_on(
            &spec,
            &second.plan.status,
            &mid_stage,
            &Persisted::Missing,
            14,
        );
        let rebuilt = decision.in_place_state.expect("rebuilt from the pods");
        assert_eq!(rebuilt.active_model().unwrap().version, "1");
        let candidate = rebuilt
            .revisions
            .iter()
            .find(|r| r.model.version == "2")
            .expect("the candidate keeps its record");
        assert_eq!(
            candidate.rollout_started_at, second.state.revisions[1].rollout_started_at,
            "its deadline runs from its first start"
        );
        assert!(
            decision
                .calls
                .iter()
                .all(|c| matches!(c.action, AdminAction::Stage(_))),
            "staging goes on, nothing switches: {:?}",
            decision.calls
        );
        assert_eq!(decision.plan.status.active.as_deref().unwrap().version, "1");
    }

    #[test]
    fn an_unreadable_config_map_whose_pods_disagree_holds_with_a_reason_and_nothing_moves() {
        let (spec, waiting) = waiting_for_promotion();
        let garbled = Persisted::Unreadable("expected value at line 1 column 1".into());
        // Pod 0 serves the unpromoted 2.0.0 (switched by hand); every pod still holds the promoted 1.0.0, which
        // the status names active: rebuilt on it, and pod 0 switched back.
        let pods = pod_set(vec![
            holding(0, "2", "1", LoadedState::Previous),
            holding(1, "1", "2", LoadedState::Staged),
            holding(2, "1", "2", LoadedState::Staged),
        ]);
        let decision = run_on(&spec, &waiting.plan.status, &pods, &garbled, 30);
        assert_eq!(
            decision
                .in_place_state
                .unwrap()
                .active_model()
                .unwrap()
                .version,
            "1"
        );
        assert_eq!(
            actions(&Outcome {
                plan: decision.plan,
                state: waiting.state.clone(),
                calls: decision.calls
            }),
            [("iris-p-0".to_owned(), "switch", "1".to_owned())]
        );
        // Pod 0 holds 2.0.0 alone: the pods agree on nothing the status names, so it holds.
        let pods = pod_set(vec![
            pod(0, serving("2"), None),
            holding(1, "1", "2", LoadedState::Staged),
            holding(2, "1", "2", LoadedState::Staged),
        ]);
        let decision = run_on(&spec, &waiting.plan.status, &pods, &garbled, 30);
        assert!(decision.calls.is_empty(), "{:?}", decision.calls);
        assert_eq!(decision.in_place_state, None, "nothing is written over it");
        let plan = &decision.plan;
        assert_eq!(plan.active.as_deref(), Some("p"));
        assert!(plan.delete.is_empty() && plan.scale.is_empty() && plan.marks.is_empty());
        assert_eq!(plan.desired_replicas, None);
        let degraded = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == crate::conditions::types::DEGRADED)
            .unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", reasons::STATE_UNREADABLE)
        );
        for part in [
            "annotation ferry.dev/in-place of ConfigMap/iris-ferry-model cannot be read",
            "iris-p-0: 2",
            "iris-p-1: 1",
            "nothing is switched, promoted or deleted",
        ] {
            assert!(
                degraded.message.contains(part),
                "{part:?} in {}",
                degraded.message
            );
        }
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.events[0].reason, reasons::STATE_UNREADABLE);
        // Held again: no second event, the same status (nothing to write).
        let again = run_on(&spec, &plan.status, &pods, &garbled, 40);
        assert!(again.plan.events.is_empty(), "{:?}", again.plan.events);
        assert_eq!(again.plan.status, plan.status);
        assert!(again.calls.is_empty());
    }

    #[test]
    fn a_lost_config_map_while_pods_still_start_holds_until_they_report() {
        let (spec, waiting) = waiting_for_promotion();
        let mut pods = staged_everywhere();
        pods.pods[2].phase = PodPhase::Downloading;
        pods.pods[2].in_place.versions.clear();
        let decision = run_on(&spec, &waiting.plan.status, &pods, &Persisted::Missing, 30);
        assert!(decision.calls.is_empty());
        assert_eq!(decision.in_place_state, None);
        let held = &decision.plan.status.conditions;
        assert!(held.iter().any(|c| c.reason == reasons::STATE_MISSING
            && c.message.contains("pod iris-p-2 has not reported")));
    }

    #[test]
    fn a_missing_config_map_with_nothing_serving_from_it_starts_from_the_spec() {
        let spec = spec("1");
        let mut fresh = pod_set(Vec::new());
        fresh.available_replicas = 0;
        fresh.rolled_out = false;
        let observed = Observed {
            name: "iris",
            generation: 1,
            spec: &spec,
            previous_status: &ModelDeploymentStatus::default(),
            desired: DesiredRevision {
                revision: "p".into(),
                model: Default::default(),
                runtime: None,
            },
            no_runtime: None,
            revisions: std::slice::from_ref(&fresh),
            active_service_target: None,
            preview_service_target: None,
            requests: Requests::default(),
            lost: Vec::new(),
            in_place: None,
            refresh: refresh::Refresh::default(),
            endpoint: "http://iris".into(),
            grpc_endpoint: "iris:8082".into(),
            now: at(0),
        };
        let input = InPlaceInput {
            state: &Persisted::Missing,
            desired_model: model("1"),
        };
        let decision = decide(&observed, &input);
        let state = decision.in_place_state.expect("the first state");
        assert_eq!(state.active_model(), Some(&model("1")));
        assert!(decision
            .plan
            .events
            .iter()
            .all(|e| e.reason != events::STATE_REBUILT));
    }

    #[test]
    fn a_first_in_place_spec_no_runtime_serves_writes_no_state() {
        let spec = spec("1");
        let observed = Observed {
            name: "iris",
            generation: 1,
            spec: &spec,
            previous_status: &ModelDeploymentStatus::default(),
            desired: DesiredRevision {
                revision: "p".into(),
                model: Default::default(),
                runtime: None,
            },
            no_runtime: Some(crate::catalogue::NoRuntime {
                format: "sklearn".into(),
                declared: None,
                explicit: None,
                runtimes: Vec::new(),
                configured: None,
            }),
            revisions: &[],
            active_service_target: None,
            preview_service_target: None,
            requests: Requests::default(),
            lost: Vec::new(),
            in_place: None,
            refresh: refresh::Refresh::default(),
            endpoint: "http://iris".into(),
            grpc_endpoint: "iris:8082".into(),
            now: at(0),
        };
        for state in [Persisted::Missing, Persisted::Read(state("0"))] {
            let input = InPlaceInput {
                state: &state,
                desired_model: model("1"),
            };
            let decision = decide(&observed, &input);
            assert_eq!(decision.in_place_state, None);
            assert_eq!(decision.plan.desired_replicas, None);
            assert!(decision.calls.is_empty());
            assert!(decision
                .plan
                .status
                .conditions
                .iter()
                .any(|c| c.reason == reasons::NO_RUNTIME));
        }
    }

    #[test]
    fn a_controller_that_has_not_read_every_pod_yet_moves_nothing_and_writes_nothing() {
        let (spec, waiting) = waiting_for_promotion();
        let mut pods = staged_everywhere();
        // Read before the restart, not yet since: the kubelet's readiness is all this controller knows of it.
        pods.pods[1].unread = true;
        pods.pods[1].report_pending = true;
        pods.pods[1].in_place.versions.clear();
        // Long past the progress deadline of a candidate that had not staged.
        let later = 10 * 3600;
        for state in [Persisted::Read(waiting.state.clone()), Persisted::Missing] {
            let decision = run_on(&spec, &waiting.plan.status, &pods, &state, later);
            assert!(decision.calls.is_empty(), "{:?}", decision.calls);
            assert_eq!(decision.in_place_state, None);
            assert_eq!(
                decision.plan.status, waiting.plan.status,
                "nothing to write"
            );
            assert!(
                decision.plan.events.is_empty(),
                "{:?}",
                decision.plan.events
            );
            assert_eq!(decision.plan.active.as_deref(), Some("p"));
        }
        // Read: it holds the candidate, which still waits.
        let read = run(
            &spec,
            &waiting.plan.status,
            &staged_everywhere(),
            &waiting.state,
            later,
        );
        assert!(read.calls.is_empty(), "{:?}", actions(&read));
        assert_eq!(
            read.plan
                .status
                .candidate
                .as_deref()
                .unwrap()
                .reason
                .as_deref(),
            Some(reasons::WAITING_FOR_PROMOTION)
        );
    }

    #[test]
    fn a_config_map_deleted_after_a_switch_is_rebuilt_with_no_new_history_and_no_call() {
        let spec = spec("2");
        let mut outcome = staged(&spec, &[12, 14]);
        let switched = pod_set(
            (0..3)
                .map(|i| holding(i, "2", "1", LoadedState::Previous))
                .collect(),
        );
        for now in [16, 18, 20] {
            outcome = run(&spec, &outcome.plan.status, &switched, &outcome.state, now);
        }
        let status = outcome.plan.status.clone();
        assert_eq!(status.active.as_deref().unwrap().version, "2");
        let history = status.history.clone();
        for now in [30, 32, 34] {
            let decision = run_on(&spec, &status, &switched, &Persisted::Missing, now);
            assert!(decision.calls.is_empty(), "{:?}", decision.calls);
            assert_eq!(
                decision.plan.status.history, history,
                "{:#?}",
                decision.plan.status
            );
            let rebuilt = decision.in_place_state.expect("rebuilt");
            assert_eq!(rebuilt.active, outcome.state.active);
            let next = run(&spec, &decision.plan.status, &switched, &rebuilt, now + 1);
            assert_eq!(next.plan.status.history, history);
            assert!(next.calls.is_empty(), "{:?}", actions(&next));
        }
    }

    #[test]
    fn a_config_map_deleted_between_a_promotion_and_its_switch_is_rebuilt_on_the_promoted_version()
    {
        let spec = spec("2");
        let outcome = staged(&spec, &[12, 14]);
        // Promoted: the ConfigMap and the status name 2.0.0, the switch calls are made...
        let promoted = run(
            &spec,
            &outcome.plan.status,
            &staged_everywhere(),
            &outcome.state,
            16,
        );
        assert_eq!(promoted.plan.status.active.as_deref().unwrap().version, "2");
        assert!(actions(&promoted)
            .iter()
            .all(|(_, verb, v)| *verb == "switch" && v == "2"));
        let history = promoted.plan.status.history.clone();
        // ...but the controller stops before they reach the pods, and the ConfigMap is deleted.
        let decision = run_on(
            &spec,
            &promoted.plan.status,
            &staged_everywhere(),
            &Persisted::Missing,
            30,
        );
        let rebuilt = decision.in_place_state.clone().expect("rebuilt");
        assert_eq!(
            rebuilt.active, promoted.state.active,
            "the promoted version stays active"
        );
        assert_eq!(
            decision.plan.status.history, history,
            "no rollback, no second promotion"
        );
        assert_eq!(
            decision
                .calls
                .iter()
                .map(|c| (c.action.verb(), c.action.version().to_owned()))
                .collect::<Vec<_>>(),
            vec![("switch", "2".to_owned()); 3],
            "the switch is completed"
        );
    }
}
