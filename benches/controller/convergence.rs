//! When N new ModelDeployments have converged: every one has a Deployment and a status written for its
//! generation. Seen from watch events of this process, so the controller and the plain client are timed alike.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry::api::ModelDeployment;
use ferry::labels;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::say;

/// Creates `n` ModelDeployments (`cold-00000`, ...) in `namespace`, 16 at a time; returns how long it took.
///
/// Their `loadTimeoutSeconds` and `progressDeadlineSeconds` are the longest allowed: the plane has no kubelet,
/// no pod ever starts (at 10,000 the Kubernetes controllers take half an hour to create them all), and a deadline
/// firing during a long run would abort rollouts and write in the idle window.
pub async fn create_model_deployments(client: &Client, namespace: &str, n: usize) -> Duration {
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
    let creating = Instant::now();
    let mut created = futures::stream::iter(0..n)
        .map(|i| {
            let mds = mds.clone();
            async move {
                let name = format!("cold-{i:05}");
                let md: ModelDeployment = serde_json::from_value(json!({
                    "apiVersion": "ferry.dev/v1alpha1",
                    "kind": "ModelDeployment",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"model": {"uri": format!("s3://models/{name}/1.onnx"), "version": "1"},
                             "rollout": {"loadTimeoutSeconds": 86400, "progressDeadlineSeconds": 86400}}
                }))
                .expect("a valid ModelDeployment");
                mds.create(&PostParams::default(), &md).await.map(|_| ())
            }
        })
        .buffer_unordered(16);
    let mut done = 0;
    while let Some(result) = created.next().await {
        result.expect("create a ModelDeployment");
        done += 1;
        if done % 2000 == 0 {
            say(&format!(
                "{done}/{n} ModelDeployments created in {namespace} ({:.0}s)",
                creating.elapsed().as_secs_f64()
            ));
        }
    }
    creating.elapsed()
}

#[derive(Default)]
struct Progress {
    with_deployment: HashSet<String>,
    with_status: HashSet<String>,
}

/// Watches the ModelDeployments and Deployments of one namespace; stops watching when dropped.
pub struct Convergence {
    progress: Arc<(Mutex<Progress>, Notify)>,
    watches: Vec<JoinHandle<()>>,
}

impl Convergence {
    /// Starts watching `namespace`; returns once both watches have listed what is there.
    pub async fn watch(client: &Client, namespace: &str) -> Self {
        let progress = Arc::new((Mutex::new(Progress::default()), Notify::new()));
        let (synced_tx, mut synced_rx) = tokio::sync::mpsc::channel::<()>(2);
        let md_watch = {
            let progress = progress.clone();
            let synced = synced_tx.clone();
            let api: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
            tokio::spawn(async move {
                let mut events = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(event) = events.next().await {
                    match event {
                        Ok(Event::Apply(md) | Event::InitApply(md)) => {
                            let current = md
                                .status
                                .as_ref()
                                .and_then(|s| s.observed_generation)
                                .is_some_and(|g| g >= md.metadata.generation.unwrap_or(0));
                            if current {
                                progress.0.lock().unwrap().with_status.insert(md.name_any());
                                progress.1.notify_waiters();
                            }
                        }
                        Ok(Event::InitDone) => {
                            let _ = synced.try_send(());
                        }
                        _ => {}
                    }
                }
            })
        };
        let deployment_watch = {
            let progress = progress.clone();
            let synced = synced_tx;
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            tokio::spawn(async move {
                let config = watcher::Config::default().labels(labels::MODEL_DEPLOYMENT);
                let mut events = watcher(api, config).default_backoff().boxed();
                while let Some(event) = events.next().await {
                    match event {
                        Ok(Event::Apply(d) | Event::InitApply(d)) => {
                            if let Some(md) = d.labels().get(labels::MODEL_DEPLOYMENT) {
                                let mut p = progress.0.lock().unwrap();
                                p.with_deployment.insert(md.clone());
                                drop(p);
                                progress.1.notify_waiters();
                            }
                        }
                        Ok(Event::InitDone) => {
                            let _ = synced.try_send(());
                        }
                        _ => {}
                    }
                }
            })
        };
        for _ in 0..2 {
            synced_rx.recv().await;
        }
        Convergence {
            progress,
            watches: vec![md_watch, deployment_watch],
        }
    }

    /// (with a Deployment, with a current status) so far.
    pub fn counts(&self) -> (usize, usize) {
        let p = self.progress.0.lock().unwrap();
        (p.with_deployment.len(), p.with_status.len())
    }

    /// Waits until `n` have converged; the time since `started`, or None after `timeout` or once `gave_up()`
    /// says so. `progress(elapsed, counts)` is called every 5 s.
    pub async fn converged(
        &self,
        n: usize,
        started: Instant,
        timeout: Duration,
        gave_up: impl Fn() -> bool,
        progress: impl Fn(Duration, (usize, usize)),
    ) -> Option<Duration> {
        let mut last_report = Instant::now();
        loop {
            let notified = self.progress.1.notified();
            let counts = self.counts();
            if counts.0 >= n && counts.1 >= n {
                return Some(started.elapsed());
            }
            if started.elapsed() > timeout || gave_up() {
                return None;
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                last_report = Instant::now();
                progress(started.elapsed(), counts);
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
        }
    }
}

impl Drop for Convergence {
    fn drop(&mut self) {
        for watch in &self.watches {
            watch.abort();
        }
    }
}
