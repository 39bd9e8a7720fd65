//! The status of a failed reconcile (Ready=False, Degraded=True, reason ReconcileError), written once.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};

use kube::Resource;

use super::{whole_seconds_now, Context, Error, Written, FIELD_MANAGER};
use crate::api::{ModelDeployment, ModelDeploymentStatus, Phase};
use crate::conditions::{self, reasons, types, DesiredCondition};

/// The longest error message a condition carries.
pub(super) const MAX_ERROR_MESSAGE: usize = 1024;

/// The status a failed reconcile leaves: the previous one (what serves, what rolls out, the history stay as they
/// were last observed) with Ready=False and Degraded=True, reason ReconcileError, saying what failed. Built from
/// the same inputs it is identical, transition times included, so a failure that repeats is written once.
pub fn failed_status(
    previous: Option<&ModelDeploymentStatus>,
    generation: i64,
    message: &str,
    now: Timestamp,
) -> ModelDeploymentStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let mut message = message.to_owned();
    if message.len() > MAX_ERROR_MESSAGE {
        let mut end = MAX_ERROR_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    let now = Time(now);
    for (type_, value) in [(types::READY, false), (types::DEGRADED, true)] {
        conditions::upsert(
            &mut status.conditions,
            DesiredCondition::new(type_, value, reasons::RECONCILE_ERROR, message.clone()),
            Some(generation),
            &now,
        );
    }
    status.observed_generation = Some(generation);
    status.phase = Some(Phase::Degraded);
    status
}

/// Writes the [`failed_status`] of `error`, unless the status already says exactly that.
pub(super) async fn record_failure(
    md: &ModelDeployment,
    context: &Context,
    error: &Error,
    written: &mut Written,
) -> Result<(), kube::Error> {
    let (Some(namespace), Some(name)) = (
        md.metadata.namespace.as_deref(),
        md.metadata.name.as_deref(),
    ) else {
        return Ok(());
    };
    if md.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let status = failed_status(
        md.status.as_ref(),
        md.metadata.generation.unwrap_or(0),
        &error.condition_message(),
        whole_seconds_now(),
    );
    if md.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mds: Api<ModelDeployment> = Api::namespaced(context.client.clone(), namespace);
    let updated = mds
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&status_body(&status)),
        )
        .await?;
    context.metrics.api_writes.inc();
    written.model_deployment(&updated);
    Ok(())
}

/// The server-side apply body of a status.
pub(super) fn status_body(status: &ModelDeploymentStatus) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": ModelDeployment::api_version(&()),
        "kind": ModelDeployment::kind(&()),
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::settle;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn condition<'a>(
        status: &'a ModelDeploymentStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_failure_without_a_status_gets_one() {
        let status = failed_status(None, 3, "deployments.apps is forbidden", at(100));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.phase, Some(Phase::Degraded));
        let ready = condition(&status, types::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reasons::RECONCILE_ERROR)
        );
        assert_eq!(ready.message, "deployments.apps is forbidden");
        assert_eq!(ready.observed_generation, Some(3));
        let degraded = condition(&status, types::DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", reasons::RECONCILE_ERROR)
        );
    }

    #[test]
    fn a_repeated_failure_leaves_the_status_identical() {
        let first = failed_status(None, 3, "rejected", at(100));
        let again = failed_status(Some(&first), 3, "rejected", at(160));
        assert_eq!(again, first, "nothing to write the second time");
        let other = failed_status(Some(&first), 3, "rejected differently", at(160));
        assert_ne!(other, first);
        assert_eq!(
            condition(&other, types::DEGRADED).last_transition_time,
            condition(&first, types::DEGRADED).last_transition_time,
            "still degraded: no transition"
        );
    }

    #[test]
    fn a_failure_keeps_what_serves_and_only_flips_ready_and_degraded() {
        let healthy = ModelDeploymentStatus {
            observed_generation: Some(2),
            phase: Some(Phase::Available),
            endpoint: Some("http://iris.ml.svc.cluster.local:8080".into()),
            conditions: settle(
                &[],
                vec![
                    DesiredCondition::new(types::READY, true, reasons::AVAILABLE, "serves"),
                    DesiredCondition::new(types::PROGRESSING, false, reasons::ROLLOUT_COMPLETE, ""),
                    DesiredCondition::new(types::DEGRADED, false, reasons::HEALTHY, ""),
                ],
                Some(2),
                &Time(at(10)),
            ),
            ..Default::default()
        };
        let failed = failed_status(Some(&healthy), 3, "rejected", at(100));
        assert_eq!(failed.endpoint, healthy.endpoint);
        assert_eq!(failed.conditions.len(), 3);
        assert_eq!(
            condition(&failed, types::PROGRESSING),
            condition(&healthy, types::PROGRESSING)
        );
        assert_eq!(
            condition(&failed, types::READY).last_transition_time,
            Time(at(100))
        );
        assert_eq!(condition(&failed, types::READY).status, "False");
        assert_eq!(condition(&failed, types::DEGRADED).status, "True");
        assert_eq!(failed.observed_generation, Some(3));
    }

    #[test]
    fn a_long_error_message_is_cut() {
        let long = "é".repeat(MAX_ERROR_MESSAGE);
        let status = failed_status(None, 1, &long, at(1));
        let message = &condition(&status, types::READY).message;
        assert!(message.len() <= MAX_ERROR_MESSAGE + '…'.len_utf8());
        assert!(message.ends_with('…'));
    }
}
