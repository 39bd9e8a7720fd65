//! The rollout decision: a pure function from what the controller observed to what should exist.
//!
//! ```text
//!   ModelDeployment spec + previous status ─┐
//!   revisions (Deployments + their pods) ───┼──▶ decide() ──▶ Plan: traffic targets, replicas per revision,
//!   stable Service's target, requests, now ─┘                    marks, deletions, status, events, requeue
//! ```
//!
//! Nothing here talks to the API server, so every transition is unit-tested without a cluster. The state that
//! must survive a controller restart lives in the cluster itself: which revision serves is the stable Service's
//! selector, and each revision's Deployment carries its marks (when it was promoted, when its rollout started,
//! why it was aborted). Events and history entries are derived by comparing the new status with the previous
//! one, so a reconcile that is repeated (after a failed status write, a restart) reports each transition once.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{
    HistoryEntry, ModelDeploymentSpec, ModelDeploymentStatus, Outcome, Phase, RevisionStatus,
};
use crate::conditions::{events, reasons, settle, types, DesiredCondition};

/// What a revision serves, as shown in the status.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ModelIdentity {
    pub version: String,
    pub uri: String,
    pub sha256: Option<String>,
}

/// Why a revision was aborted; sticky until the spec changes (a new generation retries it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbortMark {
    /// A reason from [`reasons`]: ModelLoadFailed, ProgressDeadlineExceeded, AbortedByUser.
    pub reason: String,
    pub message: String,
    /// The ModelDeployment generation it was aborted at.
    pub generation: i64,
}

/// Controller state kept on a revision's Deployment (as annotations).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RevisionMarks {
    /// When the revision last became the one receiving traffic.
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
    pub ready_replicas: i32,
    /// The Deployment controller has observed the current spec and every replica is updated and available.
    pub rolled_out: bool,
    pub marks: RevisionMarks,
    /// The load failure a pod reported through its termination message, e.g. "ChecksumMismatch: ...".
    pub load_failure: Option<String>,
}

impl ObservedRevision {
    fn fully_available(&self, replicas: i32) -> bool {
        self.rolled_out && self.replicas == replicas && self.ready_replicas >= replicas
    }

    /// Warm: running, every current replica ready, and it has served before. Traffic may switch to it at once.
    fn warm(&self) -> bool {
        self.marks.promoted_at.is_some()
            && self.rolled_out
            && self.replicas > 0
            && self.ready_replicas >= self.replicas
    }
}

/// The revision the current spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredRevision {
    pub revision: String,
    pub model: ModelIdentity,
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
    /// The revision the stable Service selects.
    pub stable: Option<&'a str>,
    /// Revision named by `kubectl ferry promote`.
    pub promote_request: Option<&'a str>,
    /// Revision named by `kubectl ferry abort`.
    pub abort_request: Option<&'a str>,
    /// In-cluster URL of the stable Service.
    pub endpoint: String,
    pub now: Timestamp,
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
    /// Revision the stable Service selects; None selects no pods.
    pub stable: Option<String>,
    /// Revision the preview Service selects; None selects no pods.
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

/// Where the desired revision stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CandidateState {
    /// The desired revision already receives traffic.
    None,
    Loading,
    WaitingForPromotion,
    Promote {
        rollback: bool,
    },
    Aborted(AbortMark),
    Invalid(String),
}

fn find<'a>(revisions: &'a [ObservedRevision], revision: &str) -> Option<&'a ObservedRevision> {
    revisions.iter().find(|r| r.revision == revision)
}

fn to_time(timestamp: Timestamp) -> Time {
    Time(timestamp)
}

pub fn decide(observed: &Observed) -> Plan {
    let spec = observed.spec;
    let now = observed.now;
    let desired = &observed.desired.revision;
    let desired_rev = find(observed.revisions, desired);
    // Only a revision whose Deployment exists can be serving.
    let active_before = observed
        .stable
        .filter(|r| find(observed.revisions, r).is_some())
        .map(str::to_owned);

    let mut marks: BTreeMap<String, RevisionMarks> = BTreeMap::new();
    let mut requeue_after = None;

    let state = if let Some(message) = &observed.invalid_spec {
        CandidateState::Invalid(message.clone())
    } else if active_before.as_deref() == Some(desired.as_str()) {
        CandidateState::None
    } else {
        let current_marks = desired_rev.map(|r| r.marks.clone()).unwrap_or_default();
        let mut new_marks = current_marks.clone();
        // A new generation retries a revision aborted at an older one.
        if let Some(abort) = &current_marks.aborted {
            if abort.generation < observed.generation {
                new_marks.aborted = None;
                new_marks.rollout_started_at = Some(now);
            }
        }
        if new_marks.rollout_started_at.is_none() {
            new_marks.rollout_started_at = Some(desired_rev.map_or(now, |r| r.created_at));
        }
        let started = new_marks.rollout_started_at.unwrap_or(now);
        let deadline =
            started + Duration::from_secs(spec.rollout.load_timeout_seconds.max(1) as u64);

        let state = match (&new_marks.aborted, desired_rev) {
            (Some(abort), _) => CandidateState::Aborted(abort.clone()),
            (None, Some(rev)) if rev.warm() => CandidateState::Promote { rollback: true },
            (None, Some(rev)) if observed.abort_request == Some(desired.as_str()) => {
                CandidateState::Aborted(AbortMark {
                    reason: reasons::ABORTED_BY_USER.into(),
                    message: format!("rollout of revision {} aborted by request", rev.revision),
                    generation: observed.generation,
                })
            }
            (None, Some(rev)) if rev.load_failure.is_some() => CandidateState::Aborted(AbortMark {
                reason: reasons::MODEL_LOAD_FAILED.into(),
                message: rev.load_failure.clone().unwrap_or_default(),
                generation: observed.generation,
            }),
            (None, Some(rev)) if rev.fully_available(spec.replicas) => {
                // Holding the very first version back would only delay the first traffic: nothing to compare with.
                if spec.rollout.auto_promote
                    || active_before.is_none()
                    || observed.promote_request == Some(desired.as_str())
                {
                    CandidateState::Promote { rollback: false }
                } else {
                    CandidateState::WaitingForPromotion
                }
            }
            (None, _) if now >= deadline => CandidateState::Aborted(AbortMark {
                reason: reasons::PROGRESS_DEADLINE_EXCEEDED.into(),
                message: format!(
                    "not available within spec.rollout.loadTimeoutSeconds ({}s)",
                    spec.rollout.load_timeout_seconds
                ),
                generation: observed.generation,
            }),
            (None, _) => {
                requeue_after = Some(Duration::from_millis(
                    (deadline.as_millisecond() - now.as_millisecond()).max(0) as u64,
                ));
                CandidateState::Loading
            }
        };
        if let CandidateState::Aborted(abort) = &state {
            new_marks.aborted = Some(abort.clone());
        }
        if let CandidateState::Promote { .. } = state {
            new_marks.promoted_at = Some(now);
            new_marks.rollout_started_at = None;
        }
        if desired_rev.is_none() || new_marks != current_marks {
            marks.insert(desired.clone(), new_marks);
        }
        state
    };

    let promoting = matches!(state, CandidateState::Promote { .. });
    let active = if promoting {
        Some(desired.clone())
    } else {
        active_before.clone()
    };
    // A revision that serves must carry its promotion mark, or it would not be kept warm once replaced; the
    // mark can be missing when the controller stopped between switching traffic and writing the mark.
    if let Some(serving) = active.as_deref().and_then(|r| find(observed.revisions, r)) {
        if serving.marks.promoted_at.is_none() && !marks.contains_key(&serving.revision) {
            let mut repaired = serving.marks.clone();
            repaired.promoted_at = Some(now);
            repaired.rollout_started_at = None;
            marks.insert(serving.revision.clone(), repaired);
        }
    }
    let candidate = match state {
        CandidateState::None | CandidateState::Promote { .. } | CandidateState::Invalid(_) => None,
        _ => Some(desired.clone()),
    };
    let candidate_running = matches!(
        state,
        CandidateState::Loading | CandidateState::WaitingForPromotion
    );

    // Replicas: the active revision and a running candidate at spec.replicas, the newest keepPrevious
    // previously-promoted revisions warm, everything else at zero (kept for inspection and rollback).
    let previous_replicas = spec.rollout.previous_replicas.unwrap_or(spec.replicas);
    let promoted_at = |r: &ObservedRevision| -> Option<Timestamp> {
        marks
            .get(&r.revision)
            .map_or(r.marks.promoted_at, |m| m.promoted_at)
    };
    let mut others: Vec<&ObservedRevision> = observed
        .revisions
        .iter()
        .filter(|r| Some(&r.revision) != active.as_ref() && Some(&r.revision) != candidate.as_ref())
        .filter(|r| r.revision != *desired || matches!(state, CandidateState::Invalid(_)))
        .collect();
    // Newest first: by last promotion, then by creation.
    others.sort_by_key(|r| std::cmp::Reverse((promoted_at(r), r.created_at)));
    let previous: Vec<&ObservedRevision> = others
        .iter()
        .copied()
        .filter(|r| promoted_at(r).is_some())
        .take(spec.rollout.keep_previous.max(0) as usize)
        .collect();

    let mut wanted: BTreeMap<String, i32> = BTreeMap::new();
    for r in observed.revisions {
        let replicas = if Some(&r.revision) == active.as_ref()
            || (candidate_running && r.revision == *desired)
        {
            spec.replicas
        } else if previous.iter().any(|p| p.revision == r.revision) {
            previous_replicas
        } else {
            0
        };
        wanted.insert(r.revision.clone(), replicas);
    }
    let desired_replicas = match state {
        CandidateState::Invalid(_) => None,
        CandidateState::Aborted(_) => Some(0),
        _ => Some(spec.replicas),
    };
    let scale: BTreeMap<String, i32> = observed
        .revisions
        .iter()
        .filter(|r| r.revision != *desired || desired_replicas.is_none())
        .filter(|r| wanted.get(&r.revision) != Some(&r.replicas))
        .map(|r| (r.revision.clone(), wanted[&r.revision]))
        .collect();

    let delete: Vec<String> = others
        .iter()
        .skip(spec.revision_history_limit.max(0) as usize)
        .filter(|r| !previous.iter().any(|p| p.revision == r.revision))
        .map(|r| r.revision.clone())
        .collect();

    // Status.
    let revision_status =
        |revision: &str, since: Option<Timestamp>, reason: Option<String>| -> RevisionStatus {
            let observed_rev = find(observed.revisions, revision);
            let model =
                observed_rev.map_or_else(|| observed.desired.model.clone(), |r| r.model.clone());
            RevisionStatus {
                revision: revision.to_owned(),
                version: model.version,
                uri: model.uri,
                sha256: model.sha256,
                ready_replicas: observed_rev.map_or(0, |r| r.ready_replicas),
                since: since.map(to_time),
                reason,
            }
        };
    let active_status = active.as_deref().map(|r| {
        let since = marks
            .get(r)
            .and_then(|m| m.promoted_at)
            .or_else(|| find(observed.revisions, r).and_then(|o| o.marks.promoted_at));
        revision_status(r, since, None)
    });
    let candidate_status = candidate.as_deref().map(|r| {
        let since = marks
            .get(r)
            .and_then(|m| m.rollout_started_at)
            .or_else(|| find(observed.revisions, r).and_then(|o| o.marks.rollout_started_at));
        let reason = match &state {
            CandidateState::Loading => match desired_rev {
                None => "Deploying".to_owned(),
                Some(rev) => format!("Loading: {}/{} ready", rev.ready_replicas, spec.replicas),
            },
            CandidateState::WaitingForPromotion => reasons::WAITING_FOR_PROMOTION.to_owned(),
            CandidateState::Aborted(abort) => format!("{}: {}", abort.reason, abort.message),
            _ => String::new(),
        };
        revision_status(r, since, Some(reason))
    });
    let previous_status: Vec<RevisionStatus> = previous
        .iter()
        .map(|r| revision_status(&r.revision, promoted_at(r), None))
        .collect();

    let active_ready = active_status.as_ref().map_or(0, |a| a.ready_replicas);
    let (ready, ready_reason, ready_message) = match &active_status {
        None => (
            false,
            reasons::NOTHING_SERVING,
            "no version has been promoted yet".to_owned(),
        ),
        Some(a) if a.ready_replicas >= spec.replicas => (
            true,
            reasons::AVAILABLE,
            format!(
                "version {} serves with {}/{} replicas ready",
                a.version, a.ready_replicas, spec.replicas
            ),
        ),
        Some(a) => (
            false,
            reasons::REPLICAS_UNAVAILABLE,
            format!(
                "version {} has {}/{} replicas ready",
                a.version, a.ready_replicas, spec.replicas
            ),
        ),
    };
    let (progressing, progressing_reason, progressing_message) = match &state {
        CandidateState::Loading => (
            true,
            reasons::ROLLOUT_IN_PROGRESS,
            format!("rolling out version {}", observed.desired.model.version),
        ),
        CandidateState::WaitingForPromotion => (
            true,
            reasons::WAITING_FOR_PROMOTION,
            format!(
                "version {} is ready; promote it with `kubectl ferry promote`",
                observed.desired.model.version
            ),
        ),
        CandidateState::Aborted(abort) => (
            false,
            reasons_static(&abort.reason),
            format!(
                "rollout of version {} aborted: {}",
                observed.desired.model.version, abort.message
            ),
        ),
        CandidateState::Invalid(message) => (false, reasons::INVALID_SPEC, message.clone()),
        CandidateState::None | CandidateState::Promote { .. } => (
            false,
            reasons::ROLLOUT_COMPLETE,
            "no rollout in progress".to_owned(),
        ),
    };
    let (degraded, degraded_reason, degraded_message) = match &state {
        CandidateState::Aborted(abort) => (
            true,
            reasons_static(&abort.reason),
            progressing_message.clone(),
        ),
        CandidateState::Invalid(message) => (true, reasons::INVALID_SPEC, message.clone()),
        _ if active.is_some() && !ready => {
            (true, reasons::REPLICAS_UNAVAILABLE, ready_message.clone())
        }
        _ => (false, reasons::HEALTHY, String::new()),
    };
    let phase = if degraded {
        Phase::Degraded
    } else if progressing {
        Phase::Progressing
    } else if ready {
        Phase::Available
    } else {
        Phase::Pending
    };
    let now_time = to_time(now);
    let conditions = settle(
        &observed.previous_status.conditions,
        vec![
            DesiredCondition::new(types::READY, ready, ready_reason, ready_message),
            DesiredCondition::new(
                types::PROGRESSING,
                progressing,
                progressing_reason,
                progressing_message.clone(),
            ),
            DesiredCondition::new(
                types::DEGRADED,
                degraded,
                degraded_reason,
                degraded_message.clone(),
            ),
            DesiredCondition::new(
                types::RECONCILING,
                state == CandidateState::Loading,
                progressing_reason,
                progressing_message,
            ),
            DesiredCondition::new(
                types::STALLED,
                matches!(
                    state,
                    CandidateState::Aborted(_) | CandidateState::Invalid(_)
                ),
                degraded_reason,
                degraded_message,
            ),
        ],
        Some(observed.generation),
        &now_time,
    );

    let mut plan_events = Vec::new();
    let mut history = observed.previous_status.history.clone();
    let before = observed.previous_status;
    let before_candidate = before.candidate.as_ref();
    let before_active = before.active.as_ref().map(|a| a.revision.as_str());
    let was_aborted = |r: &RevisionStatus| {
        r.reason.as_deref().is_some_and(|reason| {
            [
                reasons::MODEL_LOAD_FAILED,
                reasons::PROGRESS_DEADLINE_EXCEEDED,
                reasons::ABORTED_BY_USER,
            ]
            .iter()
            .any(|prefix| reason.starts_with(prefix))
        })
    };
    let history_entry = |status: &RevisionStatus,
                         outcome: Outcome,
                         started: Option<Time>,
                         message: Option<String>| HistoryEntry {
        revision: status.revision.clone(),
        version: status.version.clone(),
        uri: status.uri.clone(),
        sha256: status.sha256.clone(),
        started_at: started,
        finished_at: Some(now_time.clone()),
        outcome,
        message,
    };

    // A candidate that is gone without having been promoted or aborted was superseded.
    if let Some(old) = before_candidate {
        let still_candidate = candidate.as_deref() == Some(old.revision.as_str());
        let now_active = active.as_deref() == Some(old.revision.as_str());
        if !still_candidate && !now_active && !was_aborted(old) {
            history.insert(
                0,
                history_entry(old, Outcome::Superseded, old.since.clone(), None),
            );
            plan_events.push(PlannedEvent {
                warning: false,
                revision: Some(old.revision.clone()),
                reason: events::SUPERSEDED,
                note: format!(
                    "rollout of version {} superseded by a newer spec",
                    old.version
                ),
            });
        }
    }
    if let Some(a) = &active_status {
        if before_active != Some(a.revision.as_str()) {
            let rollback = matches!(state, CandidateState::Promote { rollback: true });
            let started = before_candidate
                .filter(|c| c.revision == a.revision)
                .and_then(|c| c.since.clone())
                .or_else(|| Some(now_time.clone()));
            let (outcome, reason) = if rollback {
                (Outcome::RolledBack, events::ROLLED_BACK)
            } else {
                (Outcome::Promoted, events::PROMOTED)
            };
            history.insert(0, history_entry(a, outcome, started, None));
            let from = before
                .active
                .as_ref()
                .map_or(String::new(), |b| format!(" from version {}", b.version));
            plan_events.push(PlannedEvent {
                warning: false,
                revision: Some(a.revision.clone()),
                reason,
                note: format!(
                    "traffic switched{from} to version {} (revision {})",
                    a.version, a.revision
                ),
            });
        }
    }
    if let Some(c) = &candidate_status {
        let same_before = before_candidate.filter(|b| b.revision == c.revision);
        match &state {
            CandidateState::Aborted(abort) if same_before.is_none_or(|b| !was_aborted(b)) => {
                history.insert(
                    0,
                    history_entry(
                        c,
                        Outcome::Aborted,
                        c.since.clone(),
                        Some(c.reason.clone().unwrap_or_default()),
                    ),
                );
                plan_events.push(PlannedEvent {
                    warning: true,
                    revision: Some(c.revision.clone()),
                    reason: events::ROLLOUT_ABORTED,
                    note: format!(
                        "version {} aborted ({}): {}",
                        c.version, abort.reason, abort.message
                    ),
                });
            }
            CandidateState::Loading | CandidateState::WaitingForPromotion
                if same_before.is_none_or(was_aborted) =>
            {
                plan_events.push(PlannedEvent {
                    warning: false,
                    revision: Some(c.revision.clone()),
                    reason: events::ROLLOUT_STARTED,
                    note: format!(
                        "rolling out version {} (revision {})",
                        c.version, c.revision
                    ),
                });
            }
            _ => {}
        }
        if state == CandidateState::WaitingForPromotion
            && same_before.and_then(|b| b.reason.as_deref()) != Some(reasons::WAITING_FOR_PROMOTION)
        {
            plan_events.push(PlannedEvent {
                warning: false,
                revision: Some(c.revision.clone()),
                reason: events::CANDIDATE_READY,
                note: format!(
                    "version {} is ready and waits for `kubectl ferry promote`",
                    c.version
                ),
            });
        }
    }
    if let CandidateState::Invalid(message) = &state {
        let was_invalid = before.conditions.iter().any(|c| {
            c.type_ == types::DEGRADED && c.reason == reasons::INVALID_SPEC && c.message == *message
        });
        if !was_invalid {
            plan_events.push(PlannedEvent {
                warning: true,
                revision: None,
                reason: events::INVALID_SPEC,
                note: message.clone(),
            });
        }
    }
    history.truncate(spec.revision_history_limit.max(0) as usize);

    let selector = active
        .as_deref()
        .map(|r| crate::labels::selector_string(observed.name, r));
    let status = ModelDeploymentStatus {
        observed_generation: Some(observed.generation),
        phase: Some(phase),
        replicas: Some(
            active
                .as_deref()
                .and_then(|r| wanted.get(r).copied())
                .unwrap_or(0),
        ),
        ready_replicas: Some(active_ready),
        selector,
        active: active_status,
        candidate: candidate_status,
        previous: previous_status,
        history,
        endpoint: Some(observed.endpoint.clone()),
        conditions,
    };

    Plan {
        stable: active,
        preview: candidate.filter(|_| candidate_running),
        desired_replicas,
        scale,
        marks,
        delete,
        status,
        events: plan_events,
        requeue_after,
    }
}

/// Maps a stored abort reason back to the constant, so conditions carry a `&'static str`.
fn reasons_static(reason: &str) -> &'static str {
    match reason {
        reasons::MODEL_LOAD_FAILED => reasons::MODEL_LOAD_FAILED,
        reasons::ABORTED_BY_USER => reasons::ABORTED_BY_USER,
        _ => reasons::PROGRESS_DEADLINE_EXCEEDED,
    }
}

#[cfg(test)]
mod tests;
