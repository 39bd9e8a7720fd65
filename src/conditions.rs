//! The status vocabulary: condition types, reasons and event reasons, in one place.
//!
//! Conditions follow the Kubernetes (and kstatus) conventions: `Ready` is the summary that
//! `kubectl wait --for=condition=Ready` uses, `Progressing` is True only while a rollout is under way, and
//! `Degraded` is True only when something needs a human. `Reconciling` and `Stalled` mirror them in the kstatus
//! vocabulary that Flux and `helm --wait` read: Reconciling while a new version loads, Stalled when a rollout
//! was aborted or no runtime serves the spec. A candidate waiting for `kubectl ferry promote` is neither. `lastTransitionTime` moves only when a condition's
//! status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub mod types {
    pub const READY: &str = "Ready";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    /// kstatus (Flux, `helm --wait`): True while the controller is still working towards the spec.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: True when the controller cannot reach the spec without a change from a human.
    pub const STALLED: &str = "Stalled";
}

/// Reasons of conditions and of history entries.
pub mod reasons {
    /// The desired version serves with all replicas ready.
    pub const AVAILABLE: &str = "Available";
    /// No version has been promoted yet.
    pub const NOTHING_SERVING: &str = "NothingServing";
    /// The active revision has fewer ready replicas than desired.
    pub const REPLICAS_UNAVAILABLE: &str = "ReplicasUnavailable";
    /// A candidate is starting: downloading, verifying, loading, warming up.
    pub const ROLLOUT_IN_PROGRESS: &str = "RolloutInProgress";
    /// A ready candidate waits for `kubectl ferry promote` (autoPromote is false).
    pub const WAITING_FOR_PROMOTION: &str = "WaitingForPromotion";
    /// No rollout is under way.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// ferry-server reported that the model cannot be served (the message carries the server's reason).
    pub const MODEL_LOAD_FAILED: &str = "ModelLoadFailed";
    /// The candidate did not reproduce its golden set (spec.model.validation); the message has the counts and
    /// the worst case.
    pub const VALIDATION_FAILED: &str = "ValidationFailed";
    /// A ready candidate changes the inputs or outputs clients call and spec.rollout.allowSignatureChange is
    /// false: it is held, with no traffic, until the spec allows it or changes.
    pub const SIGNATURE_CHANGED: &str = "SignatureChanged";
    /// The candidate made no load progress for spec.rollout.progressDeadlineSeconds, or was not available
    /// within spec.rollout.loadTimeoutSeconds.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// Somebody ran `kubectl ferry abort`.
    pub const ABORTED_BY_USER: &str = "AbortedByUser";
    /// A pod ran out of memory while it staged the candidate beside the version it serves (strategy InPlace);
    /// the message names the pod, the model's size and the memory limit.
    pub const OUT_OF_MEMORY: &str = "OutOfMemory";
    /// A revision's abort mark names a reason this version of Ferry does not know (another version wrote it).
    pub const UNRECOGNIZED_ABORT: &str = "UnrecognizedAbortReason";
    /// A candidate's pods are starting: downloading, verifying, loading, warming up (a revision's reason).
    pub const LOADING: &str = "Loading";
    /// No ModelRuntime serves the spec (its format, its declared framework version, or the runtime spec.runtime
    /// names); nothing of the spec is deployed, and what already serves keeps serving. The message names the
    /// format and the runtimes there are.
    pub const NO_RUNTIME: &str = "NoRuntime";
    /// A ready pod serves a model whose SHA-256 differs from the pinned one (or pods of one revision serve
    /// different files): a fault to investigate, never hidden.
    pub const SERVED_CHECKSUM_MISMATCH: &str = "ServedChecksumMismatch";
    /// Nothing is wrong.
    pub const HEALTHY: &str = "Healthy";
    /// The last reconcile failed (an API request was rejected or failed); the message carries the error. The
    /// controller retries with a backoff, and the next successful reconcile replaces the conditions.
    pub const RECONCILE_ERROR: &str = "ReconcileError";
    /// State Ferry keeps in the cluster (the InPlace ConfigMap, a revision's marks, the refresh pin) is gone:
    /// the rollout holds.
    pub const STATE_MISSING: &str = "StateMissing";
    /// State Ferry keeps in the cluster is there but cannot be read: the rollout holds.
    pub const STATE_UNREADABLE: &str = "StateUnreadable";
}

/// Reasons of Kubernetes Events, sent on transitions only.
pub mod events {
    pub const ROLLOUT_STARTED: &str = "RolloutStarted";
    pub const CANDIDATE_READY: &str = "CandidateReady";
    /// A ready candidate is held because it changes the signature clients call.
    pub const SIGNATURE_CHANGED: &str = "SignatureChanged";
    pub const PROMOTED: &str = "Promoted";
    pub const ROLLOUT_ABORTED: &str = "RolloutAborted";
    pub const ROLLED_BACK: &str = "RolledBack";
    /// Strategy InPlace: every pod switched; the note has the switch window.
    pub const SWITCHED: &str = "Switched";
    pub const SUPERSEDED: &str = "Superseded";
    /// No ModelRuntime serves the spec (sent when that starts, and again for each new spec it holds for).
    pub const NO_RUNTIME: &str = "NoRuntime";
    /// A new admin-credential Secret replaced a missing one (a rotation, or the Secret was deleted).
    pub const ADMIN_CREDENTIAL_ISSUED: &str = "AdminCredentialIssued";
    /// spec.model.refresh: the serving pods report a new object at the model URI; it rolls out.
    pub const OBJECT_CHANGED: &str = "ObjectChanged";
    /// spec.model.refresh paused by `kubectl ferry rollback`.
    pub const REFRESH_PAUSED: &str = "RefreshPaused";
    /// spec.model.refresh resumed by `kubectl ferry resume`.
    pub const REFRESH_RESUMED: &str = "RefreshResumed";
    /// The InPlace state was lost and rebuilt from what the pods report.
    pub const STATE_REBUILT: &str = "StateRebuilt";
}

/// A condition as the controller wants it, before transition times are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl DesiredCondition {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_word(status: bool) -> &'static str {
    if status {
        "True"
    } else {
        "False"
    }
}

/// Turns desired conditions into stored ones, keeping `lastTransitionTime` from `previous` unless the status
/// changed.
pub fn settle(
    previous: &[Condition],
    desired: Vec<DesiredCondition>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|want| {
            let status = status_word(want.status);
            let last_transition_time = previous
                .iter()
                .find(|old| old.type_ == want.type_ && old.status == status)
                .map(|old| old.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: want.type_.to_owned(),
                status: status.to_owned(),
                reason: want.reason.to_owned(),
                message: want.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Sets one condition among `conditions` (replacing the one of the same type, or adding it), keeping its
/// `lastTransitionTime` unless its status changes; the other conditions are left as they are.
pub fn upsert(
    conditions: &mut Vec<Condition>,
    desired: DesiredCondition,
    generation: Option<i64>,
    now: &Time,
) {
    let Some(settled) = settle(conditions, vec![desired], generation, now).pop() else {
        return;
    };
    match conditions.iter_mut().find(|old| old.type_ == settled.type_) {
        Some(old) => *old = settled,
        None => conditions.push(settled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let first = settle(
            &[],
            vec![DesiredCondition::new(
                types::READY,
                false,
                reasons::NOTHING_SERVING,
                "",
            )],
            Some(1),
            &at(10),
        );
        assert_eq!(first[0].last_transition_time, at(10));
        let same_status = settle(
            &first,
            vec![DesiredCondition::new(
                types::READY,
                false,
                reasons::REPLICAS_UNAVAILABLE,
                "0/1",
            )],
            Some(2),
            &at(20),
        );
        assert_eq!(same_status[0].last_transition_time, at(10));
        assert_eq!(same_status[0].reason, reasons::REPLICAS_UNAVAILABLE);
        let flipped = settle(
            &same_status,
            vec![DesiredCondition::new(
                types::READY,
                true,
                reasons::AVAILABLE,
                "",
            )],
            Some(2),
            &at(30),
        );
        assert_eq!(flipped[0].last_transition_time, at(30));
        assert_eq!(flipped[0].status, "True");
    }

    #[test]
    fn upsert_replaces_one_condition_and_keeps_the_others() {
        let mut conditions = settle(
            &[],
            vec![
                DesiredCondition::new(types::READY, true, reasons::AVAILABLE, "ok"),
                DesiredCondition::new(types::DEGRADED, false, reasons::HEALTHY, ""),
            ],
            Some(1),
            &at(10),
        );
        upsert(
            &mut conditions,
            DesiredCondition::new(types::DEGRADED, false, reasons::RECONCILE_ERROR, "x"),
            Some(2),
            &at(20),
        );
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0].reason, reasons::AVAILABLE, "untouched");
        assert_eq!(conditions[0].observed_generation, Some(1));
        assert_eq!(conditions[1].reason, reasons::RECONCILE_ERROR);
        assert_eq!(conditions[1].last_transition_time, at(10), "same status");
        upsert(
            &mut conditions,
            DesiredCondition::new(types::STALLED, true, reasons::RECONCILE_ERROR, "x"),
            Some(2),
            &at(30),
        );
        assert_eq!(conditions.len(), 3);
        assert_eq!(conditions[2].last_transition_time, at(30));
        assert_eq!(conditions[2].status, "True");
    }
}
