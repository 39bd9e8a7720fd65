//! `kubectl ferry`: status (with every pod, `--watch` and `--wait`), set, history, promote, abort, rollback,
//! resume and rotate of a ModelDeployment.
//!
//! Promote and abort are requests the controller acts on (annotations naming the candidate revision, so a stale
//! request never touches a later rollout). Rollback is declarative, like `kubectl rollout undo`: it patches the
//! spec back to what an earlier revision was made from; when that revision is still warm, traffic switches at once.
//! With spec.model.refresh the revisions differ by their object, not by the spec, so rollback also pins the
//! revision (`ferry.dev/refresh-pin`), which pauses refresh until `resume` removes the pin.

mod follow;
mod pods;

pub use follow::{ending, follow, set, Ending};
pub use pods::render_pods;

use std::fmt::Write as _;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Map, Value};

use crate::api::{ModelDeployment, ModelDeploymentStatus};
use crate::children::deployment::{deployment_name, SourceSpec};
use crate::children::secret::admin_secret_name;
use crate::labels::{annotations, requests};

/// Field manager of the plugin's writes (the user's intent, not the controller's).
pub const FIELD_MANAGER: &str = "kubectl-ferry";

fn status_of(md: &ModelDeployment) -> ModelDeploymentStatus {
    md.status.clone().unwrap_or_default()
}

/// A human summary of a ModelDeployment.
pub fn render_status(md: &ModelDeployment) -> String {
    let status = status_of(md);
    let mut out = String::new();
    let name = md.metadata.name.as_deref().unwrap_or_default();
    let phase = status
        .phase
        .map_or("Unknown".to_owned(), |p| format!("{p:?}"));
    let _ = writeln!(out, "{name}: {phase}");
    let _ = writeln!(
        out,
        "  desired:   version {} ({})",
        md.spec.model.version, md.spec.model.uri
    );
    let line = |role: &str, r: &crate::api::RevisionStatus| {
        format!(
            "  {role:<10} version {} revision {} ready {}{}\n",
            r.version,
            r.revision,
            r.ready_replicas,
            match (r.reason.as_deref(), r.message.as_deref()) {
                (Some(reason), Some(message)) => format!(" ({reason}: {message})"),
                (Some(reason), None) => format!(" ({reason})"),
                _ => String::new(),
            }
        )
    };
    if let Some(active) = &status.active {
        out.push_str(&line("active:", active));
        out.push_str(&model_details(active));
    }
    if let Some(candidate) = &status.candidate {
        out.push_str(&line("candidate:", candidate));
        out.push_str(&model_details(candidate));
    }
    for previous in &status.previous {
        out.push_str(&line("previous:", previous));
    }
    if let Some(refresh) = &status.refresh {
        out.push_str(&refresh_line(md, refresh));
    }
    if let Some(endpoint) = &status.endpoint {
        let _ = writeln!(out, "  endpoint:  {endpoint}");
    }
    if let Some(grpc) = &status.grpc_endpoint {
        let _ = writeln!(out, "  grpc:      {grpc}");
    }
    for condition in &status.conditions {
        let _ = writeln!(
            out,
            "  {:<12} {:<6} {}: {}",
            condition.type_, condition.status, condition.reason, condition.message
        );
    }
    out
}

/// spec.model.refresh: the object followed, when it was detected, and whether (and why) refresh is paused.
fn refresh_line(md: &ModelDeployment, refresh: &crate::api::RefreshStatus) -> String {
    let every = md.spec.model.refresh.as_ref().map_or(String::new(), |p| {
        format!(", checked every {}s", p.interval_seconds)
    });
    let object = match (&refresh.object, &refresh.detected_at) {
        (Some(object), Some(at)) => format!("object {object} detected at {}", at.0),
        (Some(object), None) => format!("object {object}"),
        (None, _) => "no new object detected yet".to_owned(),
    };
    let mut out = format!(
        "  refresh:   {}{object}{every}\n",
        if refresh.paused { "PAUSED, " } else { "" }
    );
    if let Some(message) = &refresh.message {
        let _ = writeln!(out, "             {message}");
    }
    out
}

/// What the pods of a revision report of its model: the file's metadata, the signature clients call, the
/// golden-set result and how the signature differs from the active one's.
fn model_details(r: &crate::api::RevisionStatus) -> String {
    let mut out = String::new();
    let indent = " ".repeat(13);
    if let Some(runtime) = &r.runtime {
        let name = runtime.name.as_deref().unwrap_or("(no ModelRuntime)");
        let _ = writeln!(out, "{indent}runtime:    {name}, image {}", runtime.image);
    }
    if let Some(info) = &r.model_info {
        let mut parts: Vec<String> = info.producer.iter().cloned().collect();
        if let Some(ir) = info.ir_version {
            parts.push(format!("IR {ir}"));
        }
        if !info.opsets.is_empty() {
            let opsets: Vec<String> = info
                .opsets
                .iter()
                .map(|(d, v)| format!("{d} {v}"))
                .collect();
            parts.push(format!("opsets {}", opsets.join(", ")));
        }
        parts.extend(info.metadata.iter().map(|(k, v)| format!("{k}={v}")));
        if !parts.is_empty() {
            let _ = writeln!(out, "{indent}model:      {}", parts.join(", "));
        }
    }
    if let Some(object) = &r.object {
        let detected = r
            .detected_at
            .as_ref()
            .map_or(String::new(), |t| format!(", detected at {}", t.0));
        let _ = writeln!(out, "{indent}object:     {object}{detected}");
    }
    if let Some(signature) = &r.signature {
        let tensors = |list: &[crate::api::TensorSignature]| {
            list.iter()
                .map(|t| {
                    let shape: Vec<String> = t
                        .shape
                        .iter()
                        .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
                        .collect();
                    format!("{} {}[{}]", t.name, t.datatype, shape.join(","))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "{indent}signature:  {} -> {}",
            tensors(&signature.inputs),
            tensors(&signature.outputs)
        );
    }
    for change in &r.signature_changes {
        let _ = writeln!(out, "{indent}changed:    {change}");
    }
    if let Some(v) = &r.validation {
        let _ = writeln!(out, "{indent}validation: {}", validation_summary(v));
    }
    out
}

/// "10/10 cases passed, max error 1.2e-07, 0.02s".
fn validation_summary(v: &crate::api::ValidationResult) -> String {
    let mut text = format!("{}/{} cases passed", v.passed, v.cases);
    if let Some(error) = v.max_error {
        let _ = write!(text, ", max error {error:.2e}");
    }
    if let Some(seconds) = v.seconds {
        let _ = write!(text, ", {seconds:.2}s");
    }
    if let Some(worst) = v.worst.as_deref().filter(|_| v.passed < v.cases) {
        let _ = write!(text, "; worst: {worst}");
    }
    text
}

/// The rollout history as a table, newest first.
pub fn render_history(md: &ModelDeployment) -> String {
    let mut out =
        String::from("REVISION    VERSION              OUTCOME      FINISHED              URI\n");
    for entry in status_of(md).history {
        let finished = entry
            .finished_at
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<11} {:<20} {:<12} {:<21} {}",
            entry.revision,
            entry.version,
            format!("{:?}", entry.outcome),
            finished,
            entry.uri
        );
        if let Some(object) = &entry.object {
            let detected = entry
                .detected_at
                .as_ref()
                .map_or(String::new(), |t| format!(", detected at {}", t.0));
            let served = if entry.served_sha256.is_empty() {
                String::new()
            } else {
                format!(", served SHA-256 {}", entry.served_sha256.join(", "))
            };
            let _ = writeln!(out, "            object {object}{detected}{served}");
        }
        if let Some(v) = &entry.validation {
            let _ = writeln!(out, "            validation: {}", validation_summary(v));
        }
        if let Some(message) = &entry.message {
            let _ = writeln!(out, "            {message}");
        }
    }
    out
}

fn candidate_revision(md: &ModelDeployment) -> anyhow::Result<String> {
    status_of(md).candidate.map(|c| c.revision).ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no rollout in progress",
            md.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

async fn request(
    api: &Api<ModelDeployment>,
    name: &str,
    key: &str,
    value: &str,
) -> anyhow::Result<()> {
    let body = serde_json::json!({"metadata": {"annotations": {key: value}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch(name, &params, &Patch::Merge(&body)).await?;
    Ok(())
}

/// Asks the controller to promote the current candidate.
pub async fn promote(api: &Api<ModelDeployment>, name: &str) -> anyhow::Result<String> {
    let md = api.get(name).await?;
    let revision = candidate_revision(&md)?;
    request(api, name, requests::PROMOTE, &revision).await?;
    Ok(format!(
        "{name}: promotion of revision {revision} requested"
    ))
}

/// Asks the controller to abort the current candidate.
pub async fn abort(api: &Api<ModelDeployment>, name: &str) -> anyhow::Result<String> {
    let md = api.get(name).await?;
    let revision = candidate_revision(&md)?;
    request(api, name, requests::ABORT, &revision).await?;
    Ok(format!("{name}: abort of revision {revision} requested"))
}

/// Rotates the admin credential: deletes the Secret, then asks the controller (an annotation with the time) to
/// create a new one. Running pods pick the new file up when the kubelet next syncs them, without a restart.
pub async fn rotate(
    client: Client,
    api: &Api<ModelDeployment>,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    api.get(name).await?;
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let secret_name = admin_secret_name(name);
    // Deleted first: a request seen while the old Secret still exists would find it there and leave it.
    match secrets.delete(&secret_name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {}
        Err(error) => return Err(error.into()),
    }
    let requested = k8s_openapi::jiff::Timestamp::now().to_string();
    request(api, name, requests::ROTATE_CREDENTIAL, &requested).await?;
    Ok(format!(
        "{name}: Secret {secret_name} deleted; a new admin credential was requested"
    ))
}

/// Patches the spec back to an earlier revision: `to` names a version or a revision; by default the newest
/// previous revision.
pub async fn rollback(
    client: Client,
    namespace: &str,
    name: &str,
    to: Option<&str>,
) -> anyhow::Result<String> {
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
    let md = api.get(name).await?;
    let status = status_of(&md);
    let active = status.active.as_ref().map(|a| a.revision.clone());
    let candidates = status
        .previous
        .iter()
        .map(|p| p.revision.clone())
        .chain(status.history.iter().map(|h| h.revision.clone()));
    let target = match to {
        // Refreshed revisions share their version: their object names them too.
        Some(wanted) => {
            let named = |revision: &str, version: &str, object: Option<&str>| {
                (revision == wanted || version == wanted || object == Some(wanted))
                    .then(|| revision.to_owned())
            };
            status
                .previous
                .iter()
                .find_map(|p| named(&p.revision, &p.version, p.object.as_deref()))
                .or_else(|| {
                    status
                        .history
                        .iter()
                        .find_map(|h| named(&h.revision, &h.version, h.object.as_deref()))
                })
        }
        None => candidates.into_iter().find(|r| Some(r) != active.as_ref()),
    }
    .ok_or_else(|| {
        anyhow::anyhow!(
            "{name} has no earlier revision{} to roll back to",
            to.map(|t| format!(" {t:?}")).unwrap_or_default()
        )
    })?;

    // InPlace: a model revision lives inside the pods, not in a Deployment of its own; the status names its model.
    if md.spec.rollout.strategy == crate::api::RolloutStrategy::InPlace {
        if let Some(message) = rollback_in_place(&api, &md, &target).await? {
            return Ok(message);
        }
    }
    let deployments: Api<Deployment> = Api::namespaced(client, namespace);
    let deployment = deployments
        .get_opt(&deployment_name(name, &target))
        .await?
        .ok_or_else(|| anyhow::anyhow!("revision {target} of {name} was pruned (spec.revisionHistoryLimit); it cannot be restored"))?;
    let source: SourceSpec = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::SOURCE_SPEC))
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "revision {target} carries no {} annotation",
                annotations::SOURCE_SPEC
            )
        })?;

    let current = serde_json::to_value(&md.spec)?;
    let mut body = serde_json::json!({"spec": {
        "model": replacing(&current["model"], serde_json::to_value(&source.model)?),
        "server": replacing(&current["server"], serde_json::to_value(&source.server)?),
        "runtime": source.runtime,
    }});
    // Refreshed revisions share their spec and differ by the object they are pinned to: the pin keeps the one
    // rolled back to, and pauses refresh until `kubectl ferry resume`.
    let pinned = md.spec.model.refresh.is_some() && source.model.refresh.is_some();
    if pinned {
        body["metadata"] = serde_json::json!({"annotations": {requests::REFRESH_PIN: target}});
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch(name, &params, &Patch::Merge(&body)).await?;
    let paused = if pinned {
        format!("; refresh is paused until `kubectl ferry resume {name}`")
    } else {
        String::new()
    };
    Ok(format!(
        "{name}: rolling back to version {} (revision {target}){paused}",
        source.model.version
    ))
}

/// Rolls an InPlace ModelDeployment back to the model of revision `target`, as its status lists it; None when the
/// status does not (a revision of another pod set: the blue/green way applies).
async fn rollback_in_place(
    api: &Api<ModelDeployment>,
    md: &ModelDeployment,
    target: &str,
) -> anyhow::Result<Option<String>> {
    let status = status_of(md);
    let found = status
        .previous
        .iter()
        .find(|p| p.revision == target)
        .map(|p| (p.uri.clone(), p.version.clone(), p.sha256.clone()))
        .or_else(|| {
            status
                .history
                .iter()
                .find(|h| h.revision == target)
                .map(|h| (h.uri.clone(), h.version.clone(), h.sha256.clone()))
        });
    let Some((uri, version, sha256)) = found else {
        return Ok(None);
    };
    let body =
        serde_json::json!({"spec": {"model": {"uri": uri, "version": version, "sha256": sha256}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch(&md.name_any(), &params, &Patch::Merge(&body))
        .await?;
    Ok(Some(format!(
        "{}: rolling back to version {version} (revision {target}), a switch inside the running pods",
        md.name_any()
    )))
}

/// Resumes spec.model.refresh after a rollback: removes the pin, and the controller follows the newest object.
pub async fn resume(api: &Api<ModelDeployment>, name: &str) -> anyhow::Result<String> {
    let md = api.get(name).await?;
    if md.spec.model.refresh.is_none() {
        anyhow::bail!("{name} has no spec.model.refresh: there is nothing to resume");
    }
    if !md.annotations().contains_key(requests::REFRESH_PIN) {
        return Ok(format!("{name}: refresh is not paused"));
    }
    let body = serde_json::json!({"metadata": {"annotations": {requests::REFRESH_PIN: null}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch(name, &params, &Patch::Merge(&body)).await?;
    Ok(format!(
        "{name}: refresh resumed; the newest object at {} rolls out",
        md.spec.model.uri
    ))
}

/// A JSON merge patch that turns `current` into `target`: keys missing from `target` are removed.
fn replacing(current: &Value, target: Value) -> Value {
    let mut patch: Map<String, Value> = target.as_object().cloned().unwrap_or_default();
    if let Some(current) = current.as_object() {
        for key in current.keys() {
            patch.entry(key.clone()).or_insert(Value::Null);
        }
    }
    Value::Object(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_rollback_patch_removes_fields_the_target_did_not_have() {
        let current =
            json!({"uri": "s3://b/2.onnx", "version": "2", "sha256": "ab", "format": "onnx"});
        let target = json!({"uri": "s3://b/1.onnx", "version": "1", "format": "onnx"});
        assert_eq!(
            replacing(&current, target),
            json!({"uri": "s3://b/1.onnx", "version": "1", "format": "onnx", "sha256": null})
        );
    }

    #[test]
    fn status_shows_what_the_pods_report_of_the_model_and_why_a_candidate_is_held() {
        let md: ModelDeployment = serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {"model": {"uri": "s3://m/2.onnx", "version": "2"}},
            "status": {
                "phase": "Degraded",
                "active": {"revision": "a", "version": "1", "uri": "s3://m/1.onnx", "readyReplicas": 2,
                    "signature": {"inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}],
                                  "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}]},
                    "modelInfo": {"producer": "skl2onnx 1.19.1", "irVersion": 9, "opsets": {"ai.onnx": 17}},
                    "runtime": {"name": "ferry-onnx", "image": "ferry-server:0.1.0"},
                    "validation": {"cases": 10, "passed": 10, "maxError": 0.0, "seconds": 0.02}},
                "candidate": {"revision": "b", "version": "2", "uri": "s3://m/2.onnx", "readyReplicas": 2,
                    "reason": "SignatureChanged", "object": "etag:\"b2\"",
                    "detectedAt": "2026-12-02T10:00:00Z",
                    "signatureChanges": ["input 'X' renamed or removed"]},
                "refresh": {"object": "etag:\"b2\"", "detectedAt": "2026-12-02T10:00:00Z",
                    "paused": true, "message": "paused by `kubectl ferry rollback` to revision a"}
            }
        }))
        .unwrap();
        let text = render_status(&md);
        for shown in [
            "runtime:    ferry-onnx, image ferry-server:0.1.0",
            "model:      skl2onnx 1.19.1, IR 9, opsets ai.onnx 17",
            "signature:  X FP32[?,4] -> label INT64[?]",
            "validation: 10/10 cases passed",
            "(SignatureChanged)",
            "changed:    input 'X' renamed or removed",
            "object:     etag:\"b2\", detected at 2026-12-02T10:00:00Z",
            "refresh:   PAUSED, object etag:\"b2\" detected at 2026-12-02T10:00:00Z",
            "paused by `kubectl ferry rollback` to revision a",
        ] {
            assert!(text.contains(shown), "{shown:?} missing from:\n{text}");
        }
    }
}
