//! What a reconcile reports besides the status: Events for its transitions and the promotion-latency metric.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::Client;
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

/// Records Events (events.k8s.io/v1) as kube's `Recorder` does, without its cache: that folds repeats of an
/// event within 6 minutes into a series and so keeps every event it sent for 6 minutes, about 5 kB for each
/// ModelDeployment that rolled out lately (50 MB when 10,000 start at once). Ferry sends an event only on a
/// transition, so there is nothing to fold.
pub struct EventPublisher {
    client: Client,
    reporter: Reporter,
    /// Makes names unique within this process, however close together two events are.
    sent: AtomicU64,
}

impl EventPublisher {
    pub fn new(client: Client, reporter: Reporter) -> EventPublisher {
        EventPublisher {
            client,
            reporter,
            sent: AtomicU64::new(0),
        }
    }

    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let sequence = self.sent.fetch_add(1, Ordering::Relaxed);
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let body = K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: event.note.clone(),
            metadata: ObjectMeta {
                namespace: Some(namespace.clone()),
                name: Some(format!(
                    "{}.{:x}{:x}",
                    regarding
                        .name
                        .as_deref()
                        .unwrap_or(&self.reporter.controller),
                    now.as_nanosecond(),
                    sequence
                )),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            related: event.secondary.clone(),
            ..Default::default()
        };
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        events.create(&PostParams::default(), &body).await?;
        Ok(())
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
            // Each event is related to its revision's Deployment.
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
