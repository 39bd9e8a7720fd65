//! The status of a failed reconcile (Ready=False, Degraded=True, reason ReconcileError), written once.

use super::*;

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
