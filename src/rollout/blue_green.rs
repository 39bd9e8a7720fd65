//! Blue/green: the candidate runs on pods of its own, and traffic switches to it in one step once every one of
//! them is available (or, with `autoPromote: false`, once it is promoted).
//!
//! The steps, in order; the first that applies decides:
//! 1. a spec no runtime serves deploys nothing;
//! 2. a desired revision that is already active needs no rollout;
//! 3. a candidate aborted at this generation stays aborted (a new generation retries it);
//! 4. a warm previous revision is promoted at once (rollback);
//! 5. an abort request, then a load failure a pod reported, abort it;
//! 6. a fully available candidate passes the signature gate (`signature`), then is promoted or waits for the
//!    promote request; a breaking signature change the spec does not allow holds it;
//! 7. past `loadTimeoutSeconds`, or `progressDeadlineSeconds` after its pods last made load progress, it is
//!    aborted; before, it is loading and the nearer deadline is the requeue.

use std::collections::BTreeMap;
use std::time::Duration;

use super::signature::{self, Gate};
use super::{AbortMark, AbortReason, CandidateState, Observed, ObservedRevision, Summary};
use crate::server_contract::{FailureReason, Reason};

/// Why a candidate whose load failed is aborted: a golden set it does not reproduce and a pod out of memory have
/// reasons of their own; every other failure is a failed load.
fn abort_reason(failure: FailureReason) -> AbortReason {
    match failure {
        FailureReason::Server(Reason::ValidationFailed) => AbortReason::ValidationFailed,
        FailureReason::OutOfMemory => AbortReason::OutOfMemory,
        FailureReason::Server(_)
        | FailureReason::ServerExited
        | FailureReason::StageRefused
        | FailureReason::Unreachable => AbortReason::ModelLoadFailed,
    }
}

/// How long a pod from before a controller restart may take to be read a second time.
const SECOND_READ: Duration = Duration::from_secs(3);
/// How soon to look again at a candidate whose ready pods have not been read yet.
const FIRST_READ: Duration = Duration::from_secs(2);

pub fn decide(observed: &Observed) -> Summary {
    let spec = observed.spec;
    let now = observed.now;
    let desired = &observed.desired.revision;
    let desired_rev = observed.find(desired);
    // Only a revision whose Deployment exists can be active.
    let active_before = observed
        .active_service_target
        .filter(|r| observed.find(r).is_some())
        .map(str::to_owned);

    let mut marks = BTreeMap::new();
    let mut requeue_after = None;
    let mut signature_changes = Vec::new();
    let candidate = if let Some(no_runtime) = &observed.no_runtime {
        CandidateState::NoRuntime(no_runtime.clone())
    } else if active_before.as_deref() == Some(desired.as_str()) {
        CandidateState::Active
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
        // Progress older than this rollout attempt (a retry of an aborted revision) does not count; progress
        // before a controller restart counts as the previous status recorded it.
        let last_progress = desired_rev
            .and_then(|r| r.last_progress_at())
            .max(observed.recorded_progress(desired))
            .map_or(started, |p| p.max(started));
        let progress_deadline = last_progress
            + Duration::from_secs(spec.rollout.progress_deadline_seconds.max(1) as u64);
        // Pods from before a restart get a second read before they are judged.
        let progress_unknown =
            desired_rev.is_some_and(|r| r.pods.iter().any(|p| p.progress_unknown));
        let abort = |reason, message| {
            CandidateState::Aborted(AbortMark {
                reason,
                message,
                generation: observed.generation,
            })
        };

        let state = match (&new_marks.aborted, desired_rev) {
            (Some(abort), _) => CandidateState::Aborted(abort.clone()),
            (None, Some(rev)) if rev.warm() => CandidateState::Promote { rollback: true },
            (None, Some(rev)) if observed.requests.abort == Some(desired.as_str()) => abort(
                AbortReason::AbortedByUser,
                format!("rollout of revision {} aborted by request", rev.revision),
            ),
            (
                None,
                Some(ObservedRevision {
                    load_failure: Some(failure),
                    ..
                }),
            ) => abort(abort_reason(failure.reason), failure.to_string()),
            (None, Some(rev)) if rev.fully_available(spec.replicas) => {
                match signature::check(observed, rev, active_before.as_deref()) {
                    Gate::Wait => {
                        requeue_after = Some(FIRST_READ);
                        CandidateState::Loading
                    }
                    Gate::Hold(changes) => {
                        signature_changes = changes;
                        CandidateState::SignatureChanged
                    }
                    Gate::Pass(changes) => {
                        signature_changes = changes;
                        // Holding the very first version back would only delay the first traffic: nothing to
                        // compare with.
                        if spec.rollout.auto_promote
                            || active_before.is_none()
                            || observed.requests.promote == Some(desired.as_str())
                        {
                            CandidateState::Promote { rollback: false }
                        } else {
                            CandidateState::WaitingForPromotion
                        }
                    }
                }
            }
            (None, _) if now >= deadline => abort(
                AbortReason::ProgressDeadlineExceeded,
                format!(
                    "not available within spec.rollout.loadTimeoutSeconds ({}s)",
                    spec.rollout.load_timeout_seconds
                ),
            ),
            (None, _) if now >= progress_deadline && !progress_unknown => abort(
                AbortReason::ProgressDeadlineExceeded,
                format!(
                    "no load progress for {}s (spec.rollout.progressDeadlineSeconds): {}",
                    (now.as_second() - last_progress.as_second()),
                    desired_rev.map_or_else(|| "no pod was created".into(), |r| r.stall())
                ),
            ),
            (None, _) => {
                let next = if progress_unknown {
                    deadline.min(progress_deadline.max(now + SECOND_READ))
                } else {
                    deadline.min(progress_deadline)
                };
                requeue_after = Some(Duration::from_millis(
                    (next.as_millisecond() - now.as_millisecond()).max(0) as u64,
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

    let active = if matches!(candidate, CandidateState::Promote { .. }) {
        Some(desired.clone())
    } else {
        active_before
    };
    Summary {
        active,
        candidate,
        marks,
        requeue_after,
        signature_changes,
    }
}
