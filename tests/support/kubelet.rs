//! Playing the kubelet. The local control plane has none, so pods never start by themselves: the tests write
//! the Pod status a kubelet would (ready, or a container that exited with ferry-server's termination message),
//! and the real ReplicaSet and Deployment controllers turn it into Deployment status.

use std::time::{Duration, Instant};

use ferry::labels;
use ferry::server_contract::{Reason, TerminationMessage};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use super::wait::eventually;

/// The kubelet of one namespace.
#[derive(Clone)]
pub struct Kubelet {
    pods: Api<Pod>,
    deployments: Api<Deployment>,
}

impl Kubelet {
    pub fn new(client: &Client, namespace: &str) -> Self {
        Kubelet {
            pods: Api::namespaced(client.clone(), namespace),
            deployments: Api::namespaced(client.clone(), namespace),
        }
    }

    /// Marks every pod of `revision` (of ModelDeployment `name`) Running and Ready until its Deployment reports
    /// all of its replicas available.
    pub async fn make_ready(&self, name: &str, revision: &str) {
        let deployment_name = format!("{name}-{revision}");
        eventually(&format!("{deployment_name} to be available"), || async {
            self.mark_pods_ready(revision).await.ok()?;
            let deployment = self.deployments.get(&deployment_name).await.ok()?;
            let wanted = deployment.spec.as_ref()?.replicas?;
            let status = deployment.status?;
            (status.available_replicas.unwrap_or(0) >= wanted
                && status.observed_generation >= deployment.metadata.generation)
                .then_some(())
        })
        .await;
    }

    /// Marks the pods of `revision` Running and Ready as they appear, until `replicas` of them are; returns the
    /// moment the last one was marked. Does not wait for the Deployment: whoever measures watches that.
    pub async fn mark_ready(
        &self,
        revision: &str,
        replicas: i32,
        timeout: Duration,
    ) -> Result<Instant, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = self
                .mark_pods_ready(revision)
                .await
                .map_err(|e| format!("list pods: {e}"))?;
            if ready >= replicas as usize {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "only {ready} of {replicas} pods of {revision} appeared"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Marks the pods of `revision` that are not Ready yet (and not being deleted) Running and Ready; returns how
    /// many are Ready now.
    async fn mark_pods_ready(&self, revision: &str) -> Result<usize, kube::Error> {
        let pods = self.pods.list(&of_revision(revision)).await?;
        let mut ready = 0;
        for pod in pods.items {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if is_ready(&pod) {
                ready += 1;
                continue;
            }
            let status = ready_pod_status();
            if self
                .pods
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await
                .is_ok()
            {
                ready += 1;
            }
        }
        Ok(ready)
    }

    /// A server of `revision` that failed to load: its container exited with ferry-server's termination message,
    /// and is waiting to be restarted.
    pub async fn fail_load(&self, revision: &str, reason: Reason, message: &str) {
        let termination = TerminationMessage {
            reason,
            message: message.to_owned(),
            operator: None,
            setting: None,
            model: None,
            version: None,
        };
        let termination = serde_json::to_string(&termination).expect("serializable");
        eventually("a pod of the failing revision", || async {
            let pods = self.pods.list(&of_revision(revision)).await.ok()?;
            let pod = pods.items.first()?;
            let status = failed_pod_status(&termination);
            self.pods
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn of_revision(revision: &str) -> ListParams {
    ListParams::default().labels(&format!("{}={revision}", labels::REVISION))
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// The Pod status a kubelet writes for a started, ready ferry-server container.
pub fn ready_pod_status() -> Value {
    let now = now();
    json!({"status": {
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": [{"name": "server", "ready": true, "started": true, "restartCount": 0,
            "image": "ferry-server:0.1.0", "imageID": "", "state": {"running": {"startedAt": now}}}],
    }})
}

/// The Pod status of a ferry-server container that exited with `termination` and waits in CrashLoopBackOff.
pub fn failed_pod_status(termination: &str) -> Value {
    let now = now();
    json!({"status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
        "containerStatuses": [{"name": "server", "ready": false, "restartCount": 1,
            "image": "ferry-server:0.1.0", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": termination,
                "startedAt": now, "finishedAt": now}}}],
    }})
}

/// The Pod status a kubelet writes for a started ferry-server container at `ip`, ready or not yet: the
/// controller reads the server's `/status` there.
pub fn running_pod_status_at(ip: &str, ready: bool) -> Value {
    let now = now();
    let flag = if ready { "True" } else { "False" };
    json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [
            {"type": "Ready", "status": flag, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
        "containerStatuses": [{"name": "server", "ready": ready, "started": true, "restartCount": 0,
            "image": "ferry-server:0.1.0", "imageID": "", "state": {"running": {"startedAt": now}}}]}})
}
