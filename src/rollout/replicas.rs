//! Replicas and pruning, whatever the strategy: the active revision and a running candidate at
//! `spec.replicas`, the newest `keepPrevious` formerly active revisions warm at `previousReplicas`, everything
//! else at zero (kept for inspection and rollback) until `revisionHistoryLimit` prunes it.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use super::{CandidateState, Observed, ObservedRevision, Summary};

/// Replica counts and deletions for a [`Summary`].
#[derive(Clone, Debug, PartialEq)]
pub struct Replicas<'a> {
    /// Replicas of the desired revision's Deployment; None deploys nothing (no runtime).
    pub desired: Option<i32>,
    /// New replica counts of other existing revisions.
    pub scale: BTreeMap<String, i32>,
    pub delete: Vec<String>,
    /// The warm previous revisions, newest first.
    pub previous: Vec<&'a ObservedRevision>,
    /// Replicas every observed revision should have.
    pub wanted: BTreeMap<String, i32>,
}

/// When `revision` was last promoted, counting this reconcile's marks.
pub fn promoted_at(summary: &Summary, revision: &ObservedRevision) -> Option<Timestamp> {
    summary.marks_of(revision).promoted_at
}

pub fn plan<'a>(observed: &'a Observed, summary: &Summary) -> Replicas<'a> {
    let spec = observed.spec;
    let desired = observed.desired.revision.as_str();
    let active = summary.active.as_deref();
    let candidate = summary.candidate_revision(observed);
    let unserved = matches!(summary.candidate, CandidateState::NoRuntime(_));
    let previous_replicas = spec.rollout.previous_replicas.unwrap_or(spec.replicas);

    let mut others: Vec<&ObservedRevision> = observed
        .revisions
        .iter()
        .filter(|r| Some(r.revision.as_str()) != active && Some(r.revision.as_str()) != candidate)
        .filter(|r| r.revision != desired || unserved)
        .collect();
    // Newest first: by last promotion, then by where the previous status had it (promotion times are whole
    // seconds, so two promotions within one second tie), then by creation.
    let before = observed.previous_status;
    let recency = |r: &ObservedRevision| {
        if before
            .active
            .as_ref()
            .is_some_and(|a| a.revision == r.revision)
        {
            return i64::MAX;
        }
        match before
            .previous
            .iter()
            .position(|p| p.revision == r.revision)
        {
            Some(index) => -(index as i64),
            None => i64::MIN,
        }
    };
    others.sort_by_key(|r| std::cmp::Reverse((promoted_at(summary, r), recency(r), r.created_at)));
    let previous: Vec<&ObservedRevision> = others
        .iter()
        .copied()
        .filter(|r| promoted_at(summary, r).is_some())
        .take(spec.rollout.keep_previous.max(0) as usize)
        .collect();
    let is_previous = |r: &ObservedRevision| previous.iter().any(|p| p.revision == r.revision);

    let wanted: BTreeMap<String, i32> = observed
        .revisions
        .iter()
        .map(|r| {
            let replicas = if Some(r.revision.as_str()) == active
                || (summary.candidate.running() && r.revision == desired)
            {
                spec.replicas
            } else if is_previous(r) {
                previous_replicas
            } else {
                0
            };
            (r.revision.clone(), replicas)
        })
        .collect();
    let desired_replicas = match summary.candidate {
        CandidateState::NoRuntime(_) => None,
        CandidateState::Aborted(_) => Some(0),
        _ => Some(spec.replicas),
    };
    let scale = observed
        .revisions
        .iter()
        .filter(|r| r.revision != desired || desired_replicas.is_none())
        .filter(|r| wanted.get(&r.revision) != Some(&r.replicas))
        .map(|r| (r.revision.clone(), wanted[&r.revision]))
        .collect();
    let delete = others
        .iter()
        .skip(spec.revision_history_limit.max(0) as usize)
        .filter(|r| !is_previous(r))
        .map(|r| r.revision.clone())
        .collect();
    Replicas {
        desired: desired_replicas,
        scale,
        delete,
        previous,
        wanted,
    }
}
