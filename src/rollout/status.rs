//! The status a [`Summary`] amounts to, whatever the strategy: the active, candidate and previous revisions,
//! the conditions (Ready, Progressing, Degraded and the kstatus pair Reconciling, Stalled) and the phase.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

use std::collections::BTreeSet;

use super::replicas::{promoted_at, Replicas};
use super::{to_time, AbortReason, CandidateState, Observed, ObservedPod, Summary};
use crate::api::{
    HistoryEntry, LoadProgress, ModelDeploymentStatus, Phase, PodCounts, PodPhase, PodState,
    PodVersion, RevisionStatus,
};
use crate::conditions::{reasons, settle, types, DesiredCondition};
use crate::observed::units::{percent, stepped};

/// Why a revision is where it is: `RevisionStatus.reason`, a value (its `message` says the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevisionReason {
    /// Its pods are starting (or its Deployment is being created).
    Loading,
    WaitingForPromotion,
    /// Ready, held by the signature gate.
    SignatureChanged,
    Aborted(AbortReason),
}

impl RevisionReason {
    const ALL: [RevisionReason; 9] = [
        RevisionReason::Loading,
        RevisionReason::WaitingForPromotion,
        RevisionReason::SignatureChanged,
        RevisionReason::Aborted(AbortReason::ModelLoadFailed),
        RevisionReason::Aborted(AbortReason::ValidationFailed),
        RevisionReason::Aborted(AbortReason::ProgressDeadlineExceeded),
        RevisionReason::Aborted(AbortReason::AbortedByUser),
        RevisionReason::Aborted(AbortReason::OutOfMemory),
        RevisionReason::Aborted(AbortReason::Unrecognized),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevisionReason::Loading => reasons::LOADING,
            RevisionReason::WaitingForPromotion => reasons::WAITING_FOR_PROMOTION,
            RevisionReason::SignatureChanged => reasons::SIGNATURE_CHANGED,
            RevisionReason::Aborted(reason) => reason.as_str(),
        }
    }

    /// The reason a status holds; `None` for a value this build never writes.
    pub fn parse(text: &str) -> Option<RevisionReason> {
        RevisionReason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// Whether a revision status says its rollout was aborted.
    pub fn is_aborted(status: &RevisionStatus) -> bool {
        status
            .reason
            .as_deref()
            .and_then(RevisionReason::parse)
            .is_some_and(|r| matches!(r, RevisionReason::Aborted(_)))
    }
}

/// The status parts that history and events are derived from, before the history itself.
pub struct Built {
    pub active: Option<RevisionStatus>,
    pub candidate: Option<RevisionStatus>,
    pub previous: Vec<RevisionStatus>,
    pub phase: Phase,
    pub conditions: Vec<Condition>,
}

impl Built {
    pub fn into_status(
        self,
        observed: &Observed,
        summary: &Summary,
        replicas: &Replicas,
        history: Vec<HistoryEntry>,
    ) -> ModelDeploymentStatus {
        let active = summary.active.as_deref();
        ModelDeploymentStatus {
            observed_generation: Some(observed.generation),
            phase: Some(self.phase),
            replicas: Some(
                active
                    .and_then(|r| replicas.wanted.get(r).copied())
                    .unwrap_or(0),
            ),
            ready_replicas: Some(self.active.as_ref().map_or(0, |a| a.ready_replicas)),
            selector: active.map(|r| crate::labels::selector_string(observed.name, r)),
            active: self.active.map(Box::new),
            candidate: self.candidate.map(Box::new),
            previous: self.previous,
            history,
            endpoint: Some(observed.endpoint.clone()),
            grpc_endpoint: Some(observed.grpc_endpoint.clone()),
            conditions: self.conditions,
            refresh: observed.refresh.status.clone(),
            last_switch: None,
        }
    }
}

fn revision_status(
    observed: &Observed,
    revision: &str,
    since: Option<Timestamp>,
    reason: Option<RevisionReason>,
    message: Option<String>,
) -> RevisionStatus {
    let observed_rev = observed.find(revision);
    let model = observed_rev.map_or_else(|| observed.desired.model.clone(), |r| r.model.clone());
    let pods = observed_rev.map_or(&[][..], |r| r.pods.as_slice());
    RevisionStatus {
        revision: revision.to_owned(),
        version: model.version,
        uri: model.uri,
        sha256: model.sha256,
        object: model.object.or_else(|| {
            observed_rev
                .and_then(|r| r.reported(|p| p.serving_object.as_ref()))
                .cloned()
        }),
        detected_at: model.detected_at.map(to_time),
        ready_replicas: observed_rev.map_or(0, |r| r.available_replicas),
        since: since.map(to_time),
        reason: reason.map(|r| r.as_str().to_owned()),
        message,
        pod_counts: (!pods.is_empty()).then(|| pod_counts(pods)),
        served_sha256: served_sha256(pods),
        progress: None,
        pods: pod_states(pods),
        validation: observed_rev
            .and_then(|r| r.reported(|p| p.model.as_deref()?.validation.as_ref()))
            .cloned(),
        signature: observed_rev
            .and_then(|r| r.reported(|p| p.model.as_deref()?.signature.as_ref()))
            .cloned(),
        signature_changes: Vec::new(),
        model_info: observed_rev
            .and_then(|r| r.reported(|p| p.model.as_deref()?.model_info.as_ref()))
            .cloned(),
        // As its Deployment records it; the desired revision's as chosen now when it records none (made before
        // runtimes were recorded, or not made yet).
        runtime: observed_rev.and_then(|r| r.runtime.clone()).or_else(|| {
            (revision == observed.desired.revision)
                .then(|| observed.desired.runtime.clone())
                .flatten()
        }),
    }
}

/// The held candidate's changes, in one line.
fn changes_message(version: &str, changes: &[String]) -> String {
    format!(
        "version {version} changes the signature clients call: {}; set spec.rollout.allowSignatureChange to let it through",
        changes.join("; ")
    )
}

/// The most pods a revision lists in the status; the counts cover all of them.
pub const MAX_LISTED_PODS: usize = 50;

fn pod_counts(pods: &[ObservedPod]) -> PodCounts {
    let mut counts = PodCounts::default();
    for pod in pods {
        match pod.phase {
            PodPhase::Ready => counts.ready += 1,
            PodPhase::Failed => counts.failed += 1,
            PodPhase::Unreachable => counts.unreachable += 1,
            _ => counts.loading += 1,
        }
    }
    counts
}

fn served_sha256(pods: &[ObservedPod]) -> Vec<String> {
    let served: BTreeSet<&String> = pods
        .iter()
        .filter(|p| p.phase == PodPhase::Ready)
        .filter_map(|p| p.sha256.as_ref())
        .collect();
    served.into_iter().cloned().collect()
}

/// The pods, the ones not ready first, then by name.
fn pod_states(pods: &[ObservedPod]) -> Vec<PodState> {
    let mut listed: Vec<&ObservedPod> = pods.iter().collect();
    listed.sort_by(|a, b| {
        (a.phase == PodPhase::Ready, &a.name).cmp(&(b.phase == PodPhase::Ready, &b.name))
    });
    listed
        .into_iter()
        .take(MAX_LISTED_PODS)
        .map(|pod| PodState {
            name: pod.name.clone(),
            phase: pod.phase,
            sha256: pod.sha256.clone(),
            bytes_done: pod.bytes.map(|(done, _)| done as i64),
            bytes_total: pod.bytes.and_then(|(_, total)| total).map(|t| t as i64),
            load_started_at: pod
                .load_started_at
                .filter(|_| pod.phase.is_loading())
                .map(to_time),
            reason: pod.failure.as_ref().map(|f| f.reason.as_str().to_owned()),
            message: pod.failure.as_ref().map(|f| f.message.clone()),
            versions: pod
                .in_place
                .versions
                .iter()
                .map(|v| PodVersion {
                    version: v.version.clone(),
                    state: v.state,
                })
                .collect(),
        })
        .collect()
}

/// The load progress of a revision's pods together: the least advanced phase, and the bytes of all of them.
fn progress(pods: &[ObservedPod]) -> Option<LoadProgress> {
    let loading: Vec<&ObservedPod> = pods.iter().filter(|p| p.phase.is_loading()).collect();
    let phase = loading.iter().map(|p| p.phase).min()?;
    let done: u64 = loading.iter().filter_map(|p| p.bytes).map(|(d, _)| d).sum();
    let totals: Option<u64> = loading
        .iter()
        .map(|p| p.bytes.and_then(|(_, total)| total))
        .sum();
    Some(LoadProgress {
        phase,
        bytes_done: stepped(done, totals) as i64,
        bytes_total: totals.map(|t| t as i64),
        percent: percent(done, totals),
        last_progress_at: None,
    })
}

/// Why the active revision's pods do not serve the file they should, if they do not.
fn served_mismatch(active: &RevisionStatus) -> Option<String> {
    match (active.served_sha256.as_slice(), active.sha256.as_deref()) {
        ([], _) | ([_], None) => None,
        ([one], Some(pinned)) if one == pinned => None,
        (served, Some(pinned)) => Some(format!(
            "pods of version {} serve SHA-256 {} instead of the pinned {pinned}",
            active.version,
            served.join(", ")
        )),
        (served, None) => Some(format!(
            "pods of version {} serve different files: SHA-256 {}",
            active.version,
            served.join(", ")
        )),
    }
}

pub fn build(observed: &Observed, summary: &Summary, replicas: &Replicas) -> Built {
    let spec = observed.spec;
    let version = &observed.desired.model.version;
    let marks_of = |revision: &str| {
        summary
            .marks
            .get(revision)
            .or_else(|| observed.find(revision).map(|r| &r.marks))
    };
    let active = summary.active.as_deref().map(|r| {
        let since = marks_of(r).and_then(|m| m.promoted_at);
        revision_status(observed, r, since, None, None)
    });
    let candidate = summary.candidate_revision(observed).map(|r| {
        let since = marks_of(r).and_then(|m| m.rollout_started_at);
        let (reason, message) = match &summary.candidate {
            // A candidate with no Deployment yet gets it in this reconcile, which writes the status too: saying
            // "none ready" now saves the status write that would follow the Deployment's creation.
            CandidateState::Loading => (
                RevisionReason::Loading,
                Some(format!(
                    "{}/{} ready",
                    observed.find(r).map_or(0, |rev| rev.available_replicas),
                    spec.replicas
                )),
            ),
            CandidateState::Aborted(abort) => (
                RevisionReason::Aborted(abort.reason),
                Some(abort.message.clone()),
            ),
            CandidateState::SignatureChanged => (
                RevisionReason::SignatureChanged,
                Some(changes_message(version, &summary.signature_changes)),
            ),
            _ => (RevisionReason::WaitingForPromotion, None),
        };
        let mut status = revision_status(observed, r, since, Some(reason), message);
        status.signature_changes = summary.signature_changes.clone();
        if summary.candidate == CandidateState::Loading {
            status.progress = observed.find(r).and_then(|rev| {
                let mut progress = progress(&rev.pods)?;
                progress.last_progress_at = rev
                    .last_shown_progress_at()
                    .max(observed.recorded_progress(r))
                    .map(to_time);
                Some(progress)
            });
        }
        status
    });
    let previous = replicas
        .previous
        .iter()
        .map(|r| revision_status(observed, &r.revision, promoted_at(summary, r), None, None))
        .collect();

    let (ready, ready_reason, ready_message) = match &active {
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
    let (progressing, progressing_reason, progressing_message) = match &summary.candidate {
        CandidateState::Loading => (
            true,
            reasons::ROLLOUT_IN_PROGRESS,
            format!("rolling out version {version}"),
        ),
        CandidateState::WaitingForPromotion => (
            true,
            reasons::WAITING_FOR_PROMOTION,
            format!("version {version} is ready; promote it with `kubectl ferry promote`"),
        ),
        CandidateState::Aborted(abort) => (
            false,
            abort.reason.as_str(),
            format!("rollout of version {version} aborted: {}", abort.message),
        ),
        CandidateState::SignatureChanged => (
            false,
            reasons::SIGNATURE_CHANGED,
            changes_message(version, &summary.signature_changes),
        ),
        CandidateState::NoRuntime(no_runtime) => {
            (false, reasons::NO_RUNTIME, no_runtime.to_string())
        }
        CandidateState::Active | CandidateState::Promote { .. } => (
            false,
            reasons::ROLLOUT_COMPLETE,
            "no rollout in progress".to_owned(),
        ),
    };
    let mismatch = active.as_ref().and_then(served_mismatch);
    let (degraded, degraded_reason, degraded_message) = match &summary.candidate {
        CandidateState::Aborted(abort) => {
            (true, abort.reason.as_str(), progressing_message.clone())
        }
        CandidateState::NoRuntime(no_runtime) => {
            (true, reasons::NO_RUNTIME, no_runtime.to_string())
        }
        CandidateState::SignatureChanged => (
            true,
            reasons::SIGNATURE_CHANGED,
            progressing_message.clone(),
        ),
        _ if active.is_some() && !ready => {
            (true, reasons::REPLICAS_UNAVAILABLE, ready_message.clone())
        }
        _ if mismatch.is_some() => (
            true,
            reasons::SERVED_CHECKSUM_MISMATCH,
            mismatch.clone().unwrap_or_default(),
        ),
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
    let stalled = matches!(
        summary.candidate,
        CandidateState::Aborted(_)
            | CandidateState::NoRuntime(_)
            | CandidateState::SignatureChanged
    );
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
                summary.candidate == CandidateState::Loading,
                progressing_reason,
                progressing_message,
            ),
            DesiredCondition::new(types::STALLED, stalled, degraded_reason, degraded_message),
        ],
        Some(observed.generation),
        &to_time(observed.now),
    );
    Built {
        active,
        candidate,
        previous,
        phase,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_revision_reason_reads_back_as_itself_and_nothing_else_does() {
        for reason in RevisionReason::ALL {
            assert_eq!(RevisionReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(RevisionReason::parse("Loading: 1/2 ready"), None);
        assert_eq!(RevisionReason::parse("SomethingNew"), None);
        let aborted = |reason: &str| {
            RevisionReason::is_aborted(&RevisionStatus {
                reason: Some(reason.into()),
                ..Default::default()
            })
        };
        assert!(aborted("ModelLoadFailed"));
        assert!(aborted("UnrecognizedAbortReason"));
        assert!(!aborted("Loading"));
        assert!(!aborted("ModelLoadFailedSomehow"), "a value, not a prefix");
    }
}
