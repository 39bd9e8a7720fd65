//! The children that are ensured rather than planned: the Services' selectors and the admin-credential Secret.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use tracing::{info, warn};

use kube::{Resource, ResourceExt};

use super::caches::Written;
use super::failure::status_body;
use super::report::track_promotion_latency;
use super::{lock, object_key, Context, Error, FIELD_MANAGER};
use crate::admin_credential;
use crate::api::{ModelDeployment, ModelDeploymentStatus};
use crate::children::{deployment, model_file, pod, secret, service};
use crate::conditions::events;
use crate::labels::requests;
use crate::metrics::Metrics;
use crate::rollout::{self, Plan};

/// What a reconcile observed that applying its plan needs.
pub(super) struct Observation<'a> {
    pub(super) template: &'a deployment::RevisionTemplate,
    pub(super) revisions: &'a [rollout::ObservedRevision],
    pub(super) pods: &'a [Arc<Pod>],
    pub(super) active_service: Option<&'a Service>,
    pub(super) preview_service: Option<&'a Service>,
}

/// Writes the differences between `plan` and what was observed, in the order that keeps traffic safe and
/// survives a restart at any point: abort marks first, then the candidate is created and scaled up, the Services
/// switch next, scale-downs, the other marks and deletions come last, the status once at the end. Returns when to look again when the status write was put off.
pub(super) async fn apply_plan(
    context: &Context,
    md: &ModelDeployment,
    observed: &Observation<'_>,
    plan: &Plan,
    started: Instant,
    written: &mut Written,
) -> Result<Option<Duration>, Error> {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let client = &context.client;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), &namespace);
    let active_name = service::active_name(&name);
    let preview_name = service::preview_name(&name);
    let (template, observed_revisions, owned_pods) =
        (observed.template, observed.revisions, observed.pods);
    let (active_service, preview_service) = (observed.active_service, observed.preview_service);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let current_replicas: BTreeMap<&str, i32> = observed_revisions
        .iter()
        .map(|r| (r.revision.as_str(), r.replicas))
        .collect();
    let current_replicas = &current_replicas;
    let apply_desired = plan
        .desired_replicas
        .filter(|r| current_replicas.get(template.revision.as_str()) != Some(r));
    // Pods about to be created mount the admin-credential Secret: it must exist first.
    let new_pods = apply_desired.is_some()
        || plan
            .scale
            .iter()
            .any(|(revision, replicas)| *replicas > current_replicas[revision.as_str()]);
    ensure_admin_secret(context, md, owned_pods, new_pods).await?;
    // An abort mark goes first: scaling a failed candidate to zero deletes the pods whose termination message is
    // the only other record of the failure, and a restart between the two must not find it loading again.
    // A Deployment created below is created with its marks. An existing one gets them by merge patch as well:
    // only a merge patch removes a mark an earlier merge patch wrote.
    let creating =
        apply_desired.is_some() && !current_replicas.contains_key(template.revision.as_str());
    let (aborts, other_marks): (Vec<_>, Vec<_>) = plan
        .marks
        .iter()
        .filter(|(revision, _)| !(creating && **revision == template.revision))
        .partition(|(revision, marks)| {
            marks.aborted.is_some() && current_replicas.contains_key(revision.as_str())
        });
    for (revision, marks) in aborts {
        let deployment_name = deployment::deployment_name(&name, revision);
        let body = deployment::marks_patch(marks);
        merge_patch(context, &deployments, &deployment_name, &body, written).await?;
    }
    if let Some(replicas) = apply_desired {
        let marks = plan
            .marks
            .get(&template.revision)
            .or_else(|| {
                observed_revisions
                    .iter()
                    .find(|r| r.revision == template.revision)
                    .map(|r| &r.marks)
            })
            .cloned()
            .unwrap_or_default();
        let desired = deployment::desired_deployment(md, template, replicas, &marks);
        let desired_name = deployment::deployment_name(&name, &template.revision);
        let applied = deployments
            .patch(&desired_name, &apply, &Patch::Apply(&desired))
            .await?;
        context.metrics.api_writes.inc();
        written.deployment(&applied);
    }
    let scale = |up: bool| {
        plan.scale
            .iter()
            .filter(move |(revision, replicas)| {
                (**replicas > current_replicas[revision.as_str()]) == up
            })
            .map(|(revision, replicas)| {
                let body = serde_json::json!({"spec": {"replicas": replicas}});
                (deployment::deployment_name(&name, revision), body)
            })
            .collect::<Vec<_>>()
    };
    for (deployment_name, body) in scale(true) {
        merge_patch(context, &deployments, &deployment_name, &body, written).await?;
    }
    let switched = ensure_service(
        &services,
        md,
        &active_name,
        active_service,
        plan.active.as_deref(),
        &context.metrics,
        written,
    )
    .await?;
    ensure_service(
        &services,
        md,
        &preview_name,
        preview_service,
        plan.preview.as_deref(),
        &context.metrics,
        written,
    )
    .await?;
    track_promotion_latency(
        context,
        md,
        &template.revision,
        observed_revisions,
        plan,
        switched,
        started,
    );
    for (deployment_name, body) in scale(false) {
        merge_patch(context, &deployments, &deployment_name, &body, written).await?;
    }
    for (revision, marks) in other_marks {
        let deployment_name = deployment::deployment_name(&name, revision);
        let body = deployment::marks_patch(marks);
        merge_patch(context, &deployments, &deployment_name, &body, written).await?;
    }
    for revision in &plan.delete {
        let deployment_name = deployment::deployment_name(&name, revision);
        let deleted = deployments
            .delete(&deployment_name, &DeleteParams::background())
            .await;
        context.metrics.api_writes.inc();
        match deleted {
            Ok(outcome) => match outcome.left() {
                // Still there until its finalizers are done.
                Some(deleting) => written.deployment(&deleting),
                None => written.deleted.push(deployment_name),
            },
            // Already gone: the cache had not seen the deletion yet.
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                written.deleted.push(deployment_name)
            }
            Err(error) => return Err(error.into()),
        }
    }
    if md.status.as_ref() == Some(&plan.status) {
        return Ok(None);
    }
    let key = object_key(md);
    let last_write = lock(&context.status_written).get(&key).copied();
    if let Some(wait) = progress_write_wait(md.status.as_ref(), &plan.status, last_write) {
        context.metrics.status_writes_deferred.inc();
        return Ok(Some(wait));
    }
    let updated = mds
        .patch_status(&name, &apply, &Patch::Apply(&status_body(&plan.status)))
        .await?;
    context.metrics.api_writes.inc();
    lock(&context.status_written).insert(key, Instant::now());
    written.model_deployment(&updated);
    Ok(None)
}

/// Writes the ConfigMap of strategy InPlace: the model new pods load, and the in-place state. It goes before
/// everything else of a reconcile: pods about to be created mount it, and a switch must find it written.
pub(super) async fn apply_model_file(
    context: &Context,
    md: &ModelDeployment,
    state: &model_file::InPlaceState,
    written: &mut Written,
) -> Result<(), Error> {
    let config_maps: Api<ConfigMap> =
        Api::namespaced(context.client.clone(), &md.namespace().unwrap_or_default());
    let desired = model_file::desired(md, state);
    let applied = config_maps
        .patch(
            &model_file::name(&md.name_any()),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await?;
    context.metrics.api_writes.inc();
    written.config_map(&applied);
    Ok(())
}

/// The least time between two status writes that differ only in pod progress.
pub(super) const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_secs(5);

/// How long to put off a status write that changes only what pods report (phases, steps, SHA-256s), when the
/// last write was less than [`PROGRESS_WRITE_INTERVAL`] ago; None writes now. Anything else (a condition, the
/// active revision, the candidate's reason) is written at once.
pub(super) fn progress_write_wait(
    current: Option<&ModelDeploymentStatus>,
    new: &ModelDeploymentStatus,
    last_write: Option<Instant>,
) -> Option<Duration> {
    let since = last_write?.elapsed();
    let current = current?;
    let without_pods = |status: &ModelDeploymentStatus| {
        let mut status = status.clone();
        for revision in status
            .active
            .as_deref_mut()
            .into_iter()
            .chain(status.candidate.as_deref_mut())
            .chain(status.previous.iter_mut())
        {
            revision.pod_counts = None;
            revision.served_sha256.clear();
            revision.progress = None;
            revision.pods.clear();
        }
        status
    };
    (since < PROGRESS_WRITE_INTERVAL && without_pods(current) == without_pods(new))
        .then(|| PROGRESS_WRITE_INTERVAL - since)
}

/// The last check that a ModelDeployment's admin-credential Secret exists.
pub(super) struct AdminSecretCheck {
    pub(super) uid: String,
    pub(super) rotate_request: Option<String>,
    pub(super) at: Instant,
}

/// How often a pod that does not start makes the controller check the admin-credential Secret again.
pub(super) const ADMIN_SECRET_RECHECK: Duration = Duration::from_secs(30);

/// A merge patch of a revision's Deployment (replicas, marks) under the field manager.
async fn merge_patch(
    context: &Context,
    deployments: &Api<Deployment>,
    deployment_name: &str,
    body: &serde_json::Value,
    written: &mut Written,
) -> Result<(), Error> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let patched = deployments
        .patch(deployment_name, &params, &Patch::Merge(body))
        .await?;
    context.metrics.api_writes.inc();
    written.deployment(&patched);
    Ok(())
}

/// Applies a Service when it is missing or selects the wrong revision; returns whether the selector changed.
pub(super) async fn ensure_service(
    services: &Api<Service>,
    md: &ModelDeployment,
    name: &str,
    current: Option<&Service>,
    target: Option<&str>,
    metrics: &Metrics,
    written: &mut Written,
) -> Result<bool, Error> {
    let current_target = current.and_then(service::selected_revision);
    if current.is_some_and(service::has_current_ports) && current_target.as_deref() == target {
        return Ok(false);
    }
    let desired = service::desired_service(md, name.to_owned(), target);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let applied = services
        .patch(name, &apply, &Patch::Apply(&desired))
        .await?;
    metrics.api_writes.inc();
    written.service(&applied);
    Ok(current_target.as_deref() != target)
}

/// Creates the ModelDeployment's admin-credential Secret when it may be missing: on the first reconcile in this
/// process, before new pods are created (they mount it), on a `kubectl ferry rotate` request, and when a pod does
/// not start (at most every [`ADMIN_SECRET_RECHECK`]). The controller has no right to read Secrets, so "may be
/// missing" is answered by creating it: 409 means it is there. A created Secret holds a new credential id, so a
/// deleted Secret comes back as a rotated credential.
pub(super) async fn ensure_admin_secret(
    context: &Context,
    md: &ModelDeployment,
    pods: &[Arc<Pod>],
    new_pods: bool,
) -> Result<(), Error> {
    let key = object_key(md);
    let uid = md.metadata.uid.clone().unwrap_or_default();
    let rotate_request = md.annotations().get(requests::ROTATE_CREDENTIAL).cloned();
    let due = match lock(&context.admin_secrets).get(&key) {
        None => true,
        Some(check) => {
            check.uid != uid
                || check.rotate_request != rotate_request
                || new_pods
                || (check.at.elapsed() >= ADMIN_SECRET_RECHECK
                    && pods.iter().any(|p| pod::is_starting(p)))
        }
    };
    if !due {
        return Ok(());
    }
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let id = admin_credential::new_id();
    let credential = context.config.admin_key.credential(&namespace, &name, &id);
    let desired = secret::desired_admin_secret(md, &credential);
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let created = match secrets.create(&params, &desired).await {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.is_already_exists() => false,
        Err(error) => return Err(error.into()),
    };
    lock(&context.admin_secrets).insert(
        key,
        AdminSecretCheck {
            uid,
            rotate_request,
            at: Instant::now(),
        },
    );
    if created {
        context.metrics.api_writes.inc();
        let secret_name = secret::admin_secret_name(&name);
        info!(%name, %namespace, secret = %secret_name, %id, "issued an admin credential");
        // The first credential is part of the first rollout; only a re-issued one (rotation, a deleted Secret)
        // is worth an Event, and the first would cost every new ModelDeployment one more write.
        if md.status.is_none() {
            return Ok(());
        }
        let event = Event {
            type_: EventType::Normal,
            reason: events::ADMIN_CREDENTIAL_ISSUED.into(),
            note: Some(format!(
                "Secret {secret_name} holds a new admin credential (id {id}) for the serving pods"
            )),
            action: "IssueCredential".into(),
            secondary: None,
        };
        if let Err(error) = context.recorder.publish(&event, &md.object_ref(&())).await {
            warn!(%error, "could not record event");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PodCounts, RevisionStatus};

    fn status(ready: i32, reason: &str) -> ModelDeploymentStatus {
        ModelDeploymentStatus {
            candidate: Some(Box::new(RevisionStatus {
                revision: "b".into(),
                reason: Some(reason.into()),
                pod_counts: Some(PodCounts {
                    ready,
                    loading: 2 - ready,
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn pod_progress_is_written_at_most_every_few_seconds_and_anything_else_at_once() {
        let current = status(0, "Loading");
        let just_now = Some(Instant::now());
        let wait = progress_write_wait(Some(&current), &status(1, "Loading"), just_now);
        assert!(wait.is_some_and(|w| w > Duration::from_secs(4)), "{wait:?}");
        assert_eq!(
            progress_write_wait(Some(&current), &status(1, "WaitingForPromotion"), just_now),
            None,
            "a new candidate reason is written at once"
        );
        let long_ago = Instant::now().checked_sub(PROGRESS_WRITE_INTERVAL);
        assert_eq!(
            progress_write_wait(Some(&current), &status(1, "Loading"), long_ago),
            None
        );
        assert_eq!(
            progress_write_wait(Some(&current), &status(1, "Loading"), None),
            None,
            "the first write of this process"
        );
    }
}
