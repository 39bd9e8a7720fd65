//! A rollout held on state that cannot be read.
//!
//! Ferry keeps some of its state in the cluster outside the spec: the InPlace ConfigMap, each revision's marks,
//! the refresh pin. When a piece of it is gone or garbled, the decision it feeds cannot be made: an abort mark
//! read as absent retries an aborted candidate, an InPlace state started afresh from the spec switches every pod
//! to an unpromoted version. So the ModelDeployment holds instead: traffic stays where it is, nothing is created,
//! scaled, marked, promoted or deleted, and the status says which object and why (Degraded and Progressing with a
//! reason of their own), with an Event when the hold begins. The next decision is a normal one once the state
//! can be read again (it is restored, or `in_place` rebuilt it from the pods).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Observed, Plan, PlannedEvent};
use crate::api::Phase;
use crate::conditions::{types, upsert, DesiredCondition};
use crate::observed::LostState;

/// The plan that changes nothing but the status; `lost` is not empty.
pub fn plan(observed: &Observed, lost: &[LostState]) -> Plan {
    let reason = lost
        .first()
        .map_or(crate::conditions::reasons::STATE_MISSING, LostState::reason);
    let message = format!(
        "{}; the rollout holds until it can be read again: traffic stays where it is and nothing is switched, \
         promoted or deleted",
        lost.iter()
            .map(LostState::describe)
            .collect::<Vec<_>>()
            .join("; ")
    );
    let mut status = observed.previous_status.clone();
    let held_already = status
        .conditions
        .iter()
        .any(|c| c.type_ == types::DEGRADED && c.reason == reason && c.message == message);
    let now = Time(observed.now);
    let generation = Some(observed.generation);
    for (type_, degraded) in [(types::DEGRADED, true), (types::PROGRESSING, false)] {
        upsert(
            &mut status.conditions,
            DesiredCondition::new(type_, degraded, reason, message.clone()),
            generation,
            &now,
        );
    }
    status.phase = Some(Phase::Degraded);
    let events = (!held_already)
        .then_some(PlannedEvent {
            warning: true,
            revision: None,
            reason,
            note: message,
        })
        .into_iter()
        .collect();
    Plan {
        status,
        events,
        ..unchanged(observed)
    }
}

/// The plan that changes nothing, not even the status: for a decision that must wait for what it reads to be
/// known. The watches of the objects that hold the state, and the pods' reports, bring the next reconcile.
pub fn unchanged(observed: &Observed) -> Plan {
    Plan {
        active: observed.active_service_target.map(str::to_owned),
        preview: observed.preview_service_target.map(str::to_owned),
        desired_replicas: None,
        scale: Default::default(),
        marks: Default::default(),
        delete: Vec::new(),
        status: observed.previous_status.clone(),
        events: Vec::new(),
        requeue_after: None,
    }
}
