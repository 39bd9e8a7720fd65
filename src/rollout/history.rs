//! History entries and events, whatever the strategy: each transition is found by comparing the new status with
//! the previous one, so a reconcile that runs again (after a failed status write, a restart) reports it once.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::status::{Built, RevisionReason};
use super::{to_time, CandidateState, Observed, PlannedEvent, Summary};
use crate::api::{HistoryEntry, Outcome, RevisionStatus};
use crate::conditions::{events, reasons, types};

pub fn record(
    observed: &Observed,
    summary: &Summary,
    built: &Built,
) -> (Vec<HistoryEntry>, Vec<PlannedEvent>) {
    let now = to_time(observed.now);
    let mut events = Vec::new();
    let mut history = observed.previous_status.history.clone();
    let before = observed.previous_status;
    let before_candidate = before.candidate.as_deref();
    let before_active = before.active.as_ref().map(|a| a.revision.as_str());
    let active = summary.active.as_deref();
    let candidate = summary.candidate_revision(observed);
    let entry = |status: &RevisionStatus,
                 outcome: Outcome,
                 started: Option<Time>,
                 message: Option<String>| HistoryEntry {
        revision: status.revision.clone(),
        version: status.version.clone(),
        uri: status.uri.clone(),
        sha256: status.sha256.clone(),
        object: status.object.clone(),
        detected_at: status.detected_at.clone(),
        served_sha256: status.served_sha256.clone(),
        started_at: started,
        finished_at: Some(now.clone()),
        outcome,
        message,
        validation: status.validation.clone(),
    };

    // A candidate that is gone without having been promoted or aborted was superseded.
    if let Some(old) = before_candidate {
        let still_candidate = candidate == Some(old.revision.as_str());
        let now_active = active == Some(old.revision.as_str());
        if !still_candidate && !now_active && !RevisionReason::is_aborted(old) {
            history.insert(0, entry(old, Outcome::Superseded, old.since.clone(), None));
            events.push(PlannedEvent {
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
    if let Some(a) = &built.active {
        if before_active != Some(a.revision.as_str()) {
            // A warm previous revision taking the traffic back is a rollback, also when the Service switched
            // before a restart and this reconcile only finds it active.
            let rollback = matches!(
                summary.candidate,
                CandidateState::Promote { rollback: true }
            ) || before.previous.iter().any(|p| p.revision == a.revision);
            let started = before_candidate
                .filter(|c| c.revision == a.revision)
                .and_then(|c| c.since.clone())
                .or_else(|| Some(now.clone()));
            let (outcome, reason) = if rollback {
                (Outcome::RolledBack, events::ROLLED_BACK)
            } else {
                (Outcome::Promoted, events::PROMOTED)
            };
            let noted = (!rollback && !summary.signature_changes.is_empty())
                .then(|| format!("signature: {}", summary.signature_changes.join("; ")));
            history.insert(0, entry(a, outcome, started, noted));
            let from = before
                .active
                .as_ref()
                .map_or(String::new(), |b| format!(" from version {}", b.version));
            events.push(PlannedEvent {
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
    if let Some(c) = &built.candidate {
        let same_before = before_candidate.filter(|b| b.revision == c.revision);
        match &summary.candidate {
            CandidateState::Aborted(abort)
                if same_before.is_none_or(|b| !RevisionReason::is_aborted(b)) =>
            {
                let message = format!("{}: {}", abort.reason.as_str(), abort.message);
                history.insert(
                    0,
                    entry(c, Outcome::Aborted, c.since.clone(), Some(message)),
                );
                events.push(PlannedEvent {
                    warning: true,
                    revision: Some(c.revision.clone()),
                    reason: events::ROLLOUT_ABORTED,
                    note: format!(
                        "version {} aborted ({}): {}",
                        c.version,
                        abort.reason.as_str(),
                        abort.message
                    ),
                });
            }
            CandidateState::Loading
            | CandidateState::WaitingForPromotion
            | CandidateState::SignatureChanged
                if same_before.is_none_or(RevisionReason::is_aborted) =>
            {
                events.push(PlannedEvent {
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
        let held_before = same_before.and_then(|b| b.reason.as_deref())
            == Some(RevisionReason::SignatureChanged.as_str());
        if summary.candidate == CandidateState::SignatureChanged && !held_before {
            events.push(PlannedEvent {
                warning: true,
                revision: Some(c.revision.clone()),
                reason: events::SIGNATURE_CHANGED,
                note: c.message.clone().unwrap_or_default(),
            });
        }
        let waited_before = same_before.and_then(|b| b.reason.as_deref())
            == Some(RevisionReason::WaitingForPromotion.as_str());
        if summary.candidate == CandidateState::WaitingForPromotion && !waited_before {
            events.push(PlannedEvent {
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
    // Once when it starts, and once for each new spec it holds for: a change of the catalogue's list in the
    // message is no transition.
    if let CandidateState::NoRuntime(no_runtime) = &summary.candidate {
        let held = before.conditions.iter().any(|c| {
            c.type_ == types::DEGRADED
                && c.reason == reasons::NO_RUNTIME
                && c.observed_generation == Some(observed.generation)
        });
        if !held {
            events.push(PlannedEvent {
                warning: true,
                revision: None,
                reason: events::NO_RUNTIME,
                note: no_runtime.to_string(),
            });
        }
    }
    history.truncate(observed.spec.revision_history_limit.max(0) as usize);
    (history, events)
}
