//! What a reconcile reports besides the status: Events for its transitions and the promotion-latency metric.

use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use tracing::warn;

use kube::Resource;

use super::{lock, object_key, Context};
use crate::api::ModelDeployment;
use crate::children::deployment;
use crate::rollout::{self, Plan};

/// Records how long a fully available candidate waited for traffic, as the controller saw it.
pub(super) fn track_promotion_latency(
    context: &Context,
    md: &ModelDeployment,
    desired: &str,
    revisions: &[rollout::ObservedRevision],
    plan: &Plan,
    switched: bool,
    reconcile_started: Instant,
) {
    let key = format!("{}/{desired}", object_key(md));
    let mut since = lock(&context.available_since);
    if switched && plan.active.as_deref() == Some(desired) {
        let first_seen = since.remove(&key).unwrap_or(reconcile_started);
        context
            .metrics
            .promotion_latency
            .observe(first_seen.elapsed().as_secs_f64());
        return;
    }
    let available = revisions
        .iter()
        .any(|r| r.revision == desired && r.rolled_out && r.available_replicas >= md.spec.replicas);
    if available && plan.active.as_deref() != Some(desired) {
        since.entry(key).or_insert(reconcile_started);
    } else {
        since.remove(&key);
    }
}

pub(super) async fn publish_events(context: &Context, md: &ModelDeployment, plan: &Plan) {
    let reference = md.object_ref(&());
    for planned in &plan.events {
        context.metrics.count_rollout(planned.reason);
        let event = Event {
            type_: if planned.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: planned.reason.into(),
            note: Some(planned.note.clone()),
            action: "Rollout".into(),
            // Relating each event to its revision's Deployment keeps events of different versions apart
            // (the recorder folds events with the same reason and objects into one series).
            secondary: planned.revision.as_ref().map(|revision| ObjectReference {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                name: Some(deployment::deployment_name(
                    md.metadata.name.as_deref().unwrap_or_default(),
                    revision,
                )),
                namespace: md.metadata.namespace.clone(),
                ..Default::default()
            }),
        };
        // An event that cannot be recorded must not fail the rollout.
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            warn!(%error, reason = planned.reason, "could not record event");
        }
    }
}
