//! Following a ModelDeployment from a terminal or a CI job: `status --watch` redraws the status and the pod
//! table in place as they change (and every second, for rates and estimates); `--wait` follows one generation
//! until its rollout ends; `set` changes the model and can then wait the same way.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};

use super::pods::render_pods;
use super::{render_status, FIELD_MANAGER};
use crate::api::ModelDeployment;
use crate::conditions::{reasons, types};

/// How a rollout that was waited for ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The generation's version receives the traffic.
    Promoted(String),
    /// Aborted (load failure, deadline, by request) or invalid: the reason and message.
    Aborted(String),
    /// `--timeout` passed first.
    TimedOut(String),
}

/// Where the rollout of `generation` stands: None while it goes on (loading, waiting for promotion, or a
/// reconcile error the controller retries).
pub fn ending(md: &ModelDeployment, generation: i64) -> Option<Ending> {
    let status = md.status.as_ref()?;
    if status.observed_generation.unwrap_or(0) < generation {
        return None;
    }
    let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    let progressing = condition(types::PROGRESSING)?;
    if progressing.status != "False" {
        return None;
    }
    if progressing.reason == reasons::ROLLOUT_COMPLETE {
        let version = status.active.as_ref().map_or("?", |a| a.version.as_str());
        return Some(Ending::Promoted(format!(
            "version {version} receives the traffic"
        )));
    }
    Some(Ending::Aborted(format!(
        "{}: {}",
        progressing.reason, progressing.message
    )))
}

/// Shows the ModelDeployment as it changes, until it is deleted, or with `until` until that generation's
/// rollout ends or `timeout` passes.
pub async fn follow(
    api: &Api<ModelDeployment>,
    name: &str,
    until: Option<i64>,
    timeout: Duration,
) -> anyhow::Result<Option<Ending>> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut objects = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut md = api.get(name).await?;
    let redraw = std::io::stdout().is_terminal();
    let mut drawn_lines = 0;
    let mut last_text = String::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let text = format!(
            "{}{}",
            render_status(&md),
            md.status
                .as_ref()
                .map(|s| render_pods(s, Timestamp::now()))
                .unwrap_or_default()
        );
        let mut stdout = std::io::stdout().lock();
        if redraw {
            if drawn_lines > 0 {
                // Back to the first line drawn, and clear from there.
                write!(stdout, "\x1b[{drawn_lines}F\x1b[J")?;
            }
            write!(stdout, "{text}")?;
            drawn_lines = text.lines().count();
        } else if text != last_text {
            // A log, not a screen: each change once, separated.
            writeln!(stdout, "--- {}", Timestamp::now())?;
            write!(stdout, "{text}")?;
        }
        stdout.flush()?;
        drop(stdout);
        last_text = text;
        if let Some(generation) = until {
            if let Some(ending) = ending(&md, generation) {
                return Ok(Some(ending));
            }
        }
        tokio::select! {
            next = objects.next() => match next {
                Some(Ok(object)) => md = object,
                Some(Err(error)) => eprintln!("ferry: watch: {error} (retrying)"),
                None => anyhow::bail!("the watch of {name} ended"),
            },
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(deadline), if until.is_some() => {
                return Ok(Some(Ending::TimedOut(format!(
                    "the rollout of generation {} did not end within {}s",
                    until.unwrap_or_default(),
                    timeout.as_secs()
                ))));
            }
        }
    }
}

/// Points the ModelDeployment at a new model: `spec.model.uri`, `version` and `sha256` (removed when not given,
/// so that the pin of the version before never applies to the new file). Returns the generation to follow.
///
/// A JSON merge patch under the plugin's own field manager: unlike an apply, it removes a SHA-256 pin that
/// another manager (the `kubectl apply` that created the object) set.
pub async fn set(
    api: &Api<ModelDeployment>,
    name: &str,
    uri: Option<&str>,
    version: &str,
    sha256: Option<&str>,
) -> anyhow::Result<(i64, String)> {
    let current = api.get(name).await?;
    let mut model = serde_json::json!({"version": version, "sha256": sha256});
    if let Some(uri) = uri {
        model["uri"] = uri.into();
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let body = serde_json::json!({"spec": {"model": model}});
    let updated = api.patch(name, &params, &Patch::Merge(&body)).await?;
    let generation = updated.metadata.generation.unwrap_or_default();
    let mut message = format!(
        "{name}: version {version} ({}) set at generation {generation}",
        updated.spec.model.uri
    );
    if sha256.is_none() && current.spec.model.sha256.is_some() {
        message.push_str("; the SHA-256 pin of the previous version was removed");
    }
    Ok((generation, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ModelDeploymentStatus, RevisionStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn md(observed: i64, reason: &str, status: &str) -> ModelDeployment {
        let mut md: ModelDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "generation": 3},
            "spec": {"model": {"uri": "s3://m/2.onnx", "version": "2"}}
        }))
        .unwrap();
        md.status = Some(ModelDeploymentStatus {
            observed_generation: Some(observed),
            active: Some(Box::new(RevisionStatus {
                version: "2".into(),
                ..Default::default()
            })),
            conditions: vec![Condition {
                type_: types::PROGRESSING.into(),
                status: status.into(),
                reason: reason.into(),
                message: "details".into(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    Timestamp::UNIX_EPOCH,
                ),
                observed_generation: Some(observed),
            }],
            ..Default::default()
        });
        md
    }

    #[test]
    fn a_wait_ends_only_on_the_generations_promotion_or_abort() {
        assert_eq!(
            ending(&md(2, reasons::ROLLOUT_COMPLETE, "False"), 3),
            None,
            "an older generation"
        );
        assert_eq!(
            ending(&md(3, reasons::ROLLOUT_IN_PROGRESS, "True"), 3),
            None
        );
        assert_eq!(
            ending(&md(3, reasons::WAITING_FOR_PROMOTION, "True"), 3),
            None
        );
        assert_eq!(
            ending(&md(3, reasons::ROLLOUT_COMPLETE, "False"), 3),
            Some(Ending::Promoted("version 2 receives the traffic".into()))
        );
        assert_eq!(
            ending(&md(3, reasons::PROGRESS_DEADLINE_EXCEEDED, "False"), 3),
            Some(Ending::Aborted("ProgressDeadlineExceeded: details".into()))
        );
    }
}
