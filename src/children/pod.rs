//! Pods are created by the Deployments; the controller only reads them: for the server's load-failure reason,
//! and for the address where the controller reads each server's `/status` (`crate::pod_state`).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ContainerState, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::PodPhase;
use crate::observed::{InPlacePod, ObservedPod};
use crate::pod_state::{PodReport, Read};
use crate::server_contract::{self, FailureReason, LoadFailure};

/// The load failure a pod reports: the termination message of its server container's current or last
/// terminated state, when the container exited with an error.
pub fn load_failure(pod: &Pod) -> Option<LoadFailure> {
    server_states(pod).find_map(failed_termination)
}

/// The current and last states of the server container.
fn server_states(pod: &Pod) -> impl Iterator<Item = &ContainerState> {
    pod.status
        .iter()
        .flat_map(|status| status.container_statuses.iter().flatten())
        .filter(|status| status.name == "server")
        .flat_map(|status| [status.state.as_ref(), status.last_state.as_ref()])
        .flatten()
}

/// Whether the kubelet holds the pod's server container in ContainerCreating: the state of a pod whose
/// admin-credential Secret is missing, among others. A pod no kubelet has reported a container for (unscheduled,
/// e.g. waiting for a node with room) is not: its mounts have not been tried, and counting it would re-create the
/// Secret every recheck for as long as the pod stays pending.
pub fn is_starting(pod: &Pod) -> bool {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    statuses
        .and_then(|s| s.iter().find(|status| status.name == "server"))
        .and_then(|status| status.state.as_ref())
        .and_then(|state| state.waiting.as_ref())
        .is_some_and(|waiting| waiting.reason.as_deref() == Some("ContainerCreating"))
}

/// Where the controller reads the pod's server: its IP, once its server container runs.
pub fn server_address(pod: &Pod) -> Option<IpAddr> {
    let status = pod.status.as_ref();
    server_address_of(
        &pod.metadata,
        status.and_then(|s| s.container_statuses.as_deref()),
        status.and_then(|s| s.pod_ip.as_deref()),
    )
}

fn server_address_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    containers: Option<&[k8s_openapi::api::core::v1::ContainerStatus]>,
    pod_ip: Option<&str>,
) -> Option<IpAddr> {
    let running = containers?
        .iter()
        .any(|c| c.name == "server" && c.state.as_ref().is_some_and(|s| s.running.is_some()));
    if !running || meta.deletion_timestamp.is_some() {
        return None;
    }
    pod_ip?.parse().ok()
}

/// The pod as the rollout sees it: its server's last report, and its termination message when the server
/// exited with a load failure.
pub fn observe(pod: &Pod, report: Option<&PodReport>) -> ObservedPod {
    let exited = load_failure(pod);
    let answer = match report.and_then(|r| r.read.as_ref()) {
        Some(Read::Answered(answer)) => Some(answer),
        _ => None,
    };
    let mut phase = match report {
        Some(report) if report.read.is_some() => report.phase(),
        // Not read yet (a controller that just started): the kubelet's readiness is the best word there is.
        _ if container_ready(pod) => PodPhase::Ready,
        _ => PodPhase::Starting,
    };
    let mut failure = answer.and_then(|a| a.failure.clone());
    // A server that exited with a load failure is failed until it serves, whatever its restart is doing.
    if let Some(exited) = exited.filter(|_| phase != PodPhase::Ready) {
        phase = PodPhase::Failed;
        failure = Some(exited);
    }
    if phase == PodPhase::Unreachable {
        if let Some(Read::Unreachable(error)) = report.and_then(|r| r.read.as_ref()) {
            failure = Some(LoadFailure::new(FailureReason::Unreachable, error.clone()));
        }
    }
    ObservedPod {
        name: pod.name_any(),
        phase,
        sha256: answer.and_then(|a| a.sha256.clone()),
        bytes: report.and_then(PodReport::shown_bytes),
        load_started_at: report.and_then(|r| r.load_started_at),
        failure,
        last_progress_at: report.and_then(|r| r.last_progress_at),
        last_shown_progress_at: report.and_then(|r| r.last_shown_progress_at),
        progress_unknown: report
            .is_some_and(|r| r.progress_unknown() && server_address(pod).is_some()),
        stands: report.map_or_else(|| "not started".into(), PodReport::describe),
        report_pending: server_address(pod).is_some()
            && answer.is_none_or(|a| a.phase != PodPhase::Ready),
        unread: server_address(pod).is_some() && report.is_none_or(|r| r.read.is_none()),
        model: answer.and_then(|a| a.model.clone()),
        serving_object: answer.and_then(|a| a.serving_object.clone()),
        new_object: answer.and_then(|a| a.new_object.clone()),
        object_unchanged: answer.is_some_and(|a| a.object_unchanged),
        in_place: InPlacePod {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            address: server_address(pod),
            credential_id: answer.and_then(|a| a.in_place.credential_id.clone()),
            versions: answer
                .map(|a| a.in_place.versions.clone())
                .unwrap_or_default(),
            staging: answer
                .and_then(|a| a.in_place.staging.clone())
                .map(|mut s| {
                    s.failed_at = report.and_then(PodReport::staging_failed_at);
                    s
                }),
            last_switch: answer.and_then(|a| a.in_place.last_switch.clone()),
            oom_killed_at: oom_killed_at(pod),
            staged_size: report.and_then(PodReport::staged_size),
            refused: None,
        },
    }
}

/// When the server container was last killed for running out of memory.
fn oom_killed_at(pod: &Pod) -> Option<Timestamp> {
    server_states(pod)
        .filter_map(|state| state.terminated.as_ref())
        .filter(|terminated| terminated.reason.as_deref() == Some("OOMKilled"))
        .filter_map(|terminated| terminated.finished_at.as_ref().map(|t| t.0))
        .max()
}

fn container_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|statuses| statuses.iter().any(|c| c.name == "server" && c.ready))
}

/// A Pod as the controller's cache keeps it: its identity, labels, IP and container statuses, filled straight
/// from the watch (a `Pod` is 2.4 kB before a single string, its empty spec included).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct CachedPod {
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    /// Its labels, out of `metadata` once stripped.
    #[serde(skip)]
    pub labels: super::OwnerLabels,
    #[serde(default)]
    pub status: Option<CachedPodStatus>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodStatus {
    #[serde(default)]
    pub container_statuses: Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>,
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
}

super::cached_kind!(CachedPod, Pod);

impl super::Owned for CachedPod {
    fn owner(&self) -> Option<&str> {
        self.labels.owner.as_deref()
    }
}

impl CachedPod {
    /// Drops what the watch delivered that is never read.
    pub fn strip(&mut self) {
        let meta = &mut self.metadata;
        meta.managed_fields = None;
        meta.annotations = None;
        meta.owner_references = None;
        meta.generate_name = None;
        self.labels = super::OwnerLabels::take(meta);
    }

    /// The Pod with what the cache holds.
    pub fn to_pod(&self) -> Pod {
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                labels: self.labels.to_labels(),
                ..self.metadata.clone()
            },
            spec: None,
            status: self.status.as_ref().map(|status| PodStatus {
                container_statuses: status.container_statuses.clone(),
                pod_ip: status.pod_ip.clone(),
                ..Default::default()
            }),
        }
    }

    /// Where the controller reads its server, as [`server_address`] says.
    pub fn server_address(&self) -> Option<IpAddr> {
        server_address_of(
            &self.metadata,
            self.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_deref()),
            self.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        )
    }
}

fn failed_termination(state: &ContainerState) -> Option<LoadFailure> {
    let terminated = state.terminated.as_ref()?;
    if terminated.exit_code == 0 {
        return None;
    }
    let message = terminated.message.as_deref().unwrap_or_default();
    server_contract::load_failure(message).or_else(|| {
        Some(LoadFailure::new(
            FailureReason::ServerExited,
            format!(
                "exit code {}{}",
                terminated.exit_code,
                terminated
                    .reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn reads_the_failure_from_the_current_or_last_state() {
        let message = r#"{"reason":"CorruptModel","message":"not an ONNX model"}"#;
        let terminated = pod(
            json!({"containerStatuses": [{"name": "server", "ready": false, "restartCount": 1, "image": "i", "imageID": "",
            "state": {"terminated": {"exitCode": 1, "message": message}}}]}),
        );
        let corrupt = LoadFailure::new(server_contract::Reason::CorruptModel, "not an ONNX model");
        assert_eq!(load_failure(&terminated), Some(corrupt.clone()));

        let crash_looping = pod(
            json!({"containerStatuses": [{"name": "server", "ready": false, "restartCount": 3, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "message": message}}}]}),
        );
        assert_eq!(load_failure(&crash_looping), Some(corrupt));

        let killed = pod(
            json!({"containerStatuses": [{"name": "server", "ready": false, "restartCount": 1, "image": "i", "imageID": "",
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        let exited = load_failure(&killed).unwrap();
        assert_eq!(exited.reason, FailureReason::ServerExited);
        assert_eq!(
            exited.to_string(),
            "ServerExited: exit code 137 (OOMKilled)"
        );

        let running = pod(
            json!({"containerStatuses": [{"name": "server", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"running": {}}}]}),
        );
        assert_eq!(load_failure(&running), None);
    }

    #[test]
    fn only_a_container_the_kubelet_holds_in_container_creating_is_starting() {
        let waiting = |reason: &str| {
            pod(
                json!({"containerStatuses": [{"name": "server", "ready": false, "restartCount": 0, "image": "i",
                "imageID": "", "state": {"waiting": {"reason": reason}}}]}),
            )
        };
        assert!(is_starting(&waiting("ContainerCreating")));
        assert!(!is_starting(&waiting("CrashLoopBackOff")));
        assert!(
            !is_starting(&pod(json!({"phase": "Pending"}))),
            "unscheduled: no mount was tried"
        );
    }

    #[test]
    fn the_cached_pod_keeps_its_labels_and_load_failure() {
        let message = r#"{"reason":"CorruptModel","message":"not an ONNX model"}"#;
        let full: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ml", "labels": {"ferry.dev/revision": "abc"},
                         "annotations": {"a": "b"}, "managedFields": [{"manager": "kubelet"}]},
            "spec": {"containers": [{"name": "server", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                "containerStatuses": [{"name": "server", "ready": false, "restartCount": 3, "image": "i", "imageID": "",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": message}}}]}
        }))
        .unwrap();
        let failure = load_failure(&full);
        assert!(failure.is_some());
        let labels = full.metadata.labels.clone();
        let mut cached: CachedPod =
            serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        cached.strip();
        assert_eq!(cached.server_address(), server_address(&full));
        let full = cached.to_pod();
        assert_eq!(load_failure(&full), failure);
        assert_eq!(full.metadata.labels, labels);
        assert_eq!(full.metadata.namespace.as_deref(), Some("ml"));
        assert!(full.spec.is_none() && full.metadata.managed_fields.is_none());
        assert_eq!(
            full.status.unwrap().pod_ip.as_deref(),
            Some("10.0.0.1"),
            "where the controller reads the server"
        );
    }
}
