//! Part 1, promotion overhead: many rollouts, each timed from "candidate available" to "active Service
//! switched" by two watch streams of this process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry::api::ModelDeployment;
use ferry::labels;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::counted::InProcessController;
use crate::measure::{load_average, mean_reconcile_ms, metric_sum, metric_value};
use crate::requests::{difference, Counts};
use crate::say;
use crate::settings::Settings;
use crate::support::Kubelet;

/// How long one step of a rollout may take before the rollout is recorded as failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// What the watch streams have seen, with the instant each thing was first seen.
#[derive(Default)]
pub struct Seen {
    /// (ModelDeployment, version) → revision of the Deployment that serves it.
    pub revisions: HashMap<(String, String), String>,
    /// (ModelDeployment, revision) → first seen fully available.
    pub available: HashMap<(String, String), Instant>,
    /// (ModelDeployment, revision) → first seen selected by the active Service.
    pub switched: HashMap<(String, String), Instant>,
    /// ModelDeployment → revision its active Service selects now.
    pub active: HashMap<String, String>,
    /// Switches seen while the revision's Deployment had not yet been seen available.
    pub switched_before_available: Vec<String>,
}

#[derive(Default)]
pub struct Observer {
    pub seen: Mutex<Seen>,
    pub changed: Notify,
}

impl Observer {
    pub fn on_deployment(&self, deployment: &Deployment, at: Instant) {
        let labels = deployment.labels();
        let (Some(md), Some(revision)) = (
            labels.get(labels::MODEL_DEPLOYMENT),
            labels.get(labels::REVISION),
        ) else {
            return;
        };
        let wanted = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let status = deployment.status.clone().unwrap_or_default();
        let current =
            status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
        let available = wanted > 0 && current && status.available_replicas.unwrap_or(0) >= wanted;
        let mut seen = self.seen.lock().unwrap();
        if let Some(version) = deployment.annotations().get(labels::annotations::VERSION) {
            seen.revisions
                .entry((md.clone(), version.clone()))
                .or_insert_with(|| revision.clone());
        }
        if available {
            seen.available
                .entry((md.clone(), revision.clone()))
                .or_insert(at);
        }
        drop(seen);
        self.changed.notify_waiters();
    }

    pub fn on_service(&self, service: &Service, at: Instant) {
        let name = service.name_any();
        let Some(md) = service.labels().get(labels::MODEL_DEPLOYMENT) else {
            return;
        };
        if name != *md {
            return; // the preview Service
        }
        let Some(revision) = service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.get(labels::REVISION))
            .filter(|r| r.as_str() != labels::NO_REVISION)
        else {
            return;
        };
        let mut seen = self.seen.lock().unwrap();
        if seen.active.get(md) != Some(revision) {
            seen.active.insert(md.clone(), revision.clone());
            let key = (md.clone(), revision.clone());
            if !seen.switched.contains_key(&key) {
                seen.switched.insert(key.clone(), at);
                if !seen.available.contains_key(&key) {
                    seen.switched_before_available
                        .push(format!("{md}/{revision}"));
                }
            }
        }
        drop(seen);
        self.changed.notify_waiters();
    }

    /// Waits until `check` finds what it looks for in what has been seen, or `timeout` passes.
    pub async fn wait<T>(
        &self,
        timeout: Duration,
        check: impl Fn(&Seen) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Created before the check, so a notification between the check and the await is not lost.
            let notified = self.changed.notified();
            if let Some(found) = check(&self.seen.lock().unwrap()) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(&self.seen.lock().unwrap());
            }
        }
    }
}

/// Follows Deployments and Services of the namespace; every event is timestamped as soon as it arrives.
pub fn spawn_watchers(
    client: &Client,
    namespace: &str,
    observer: Arc<Observer>,
) -> Vec<JoinHandle<()>> {
    let owned = watcher::Config::default().labels(labels::MODEL_DEPLOYMENT);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let on_deployments = observer.clone();
    let on_services = observer;
    vec![
        tokio::spawn(async move {
            let mut events = watcher(deployments, owned.clone())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                let at = Instant::now();
                if let Ok(Event::Apply(d) | Event::InitApply(d)) = event {
                    on_deployments.on_deployment(&d, at);
                }
            }
        }),
        tokio::spawn(async move {
            let owned = watcher::Config::default().labels(labels::MODEL_DEPLOYMENT);
            let mut events = watcher(services, owned).default_backoff().boxed();
            while let Some(event) = events.next().await {
                let at = Instant::now();
                if let Ok(Event::Apply(s) | Event::InitApply(s)) = event {
                    on_services.on_service(&s, at);
                }
            }
        }),
    ]
}

/// One measured rollout.
pub struct Rollout {
    /// From the version bump to the new Deployment being seen.
    pub deployed: Duration,
    /// From the pods marked Ready to the Deployment seen available (the Kubernetes controllers' part).
    pub became_available: Duration,
    /// T_switch − T_available, in milliseconds (negative if the Service event arrived first).
    pub overhead_ms: f64,
}

pub struct RolloutFigures {
    pub measured: Vec<Rollout>,
    pub failures: Vec<String>,
    pub switched_before_available: Vec<String>,
    pub elapsed: Duration,
    pub requests: Counts,
    pub reconciles: u64,
    pub errors: u64,
    /// The controller's own promotion-latency histogram: (count, sum in seconds).
    pub controller_histogram: (u64, f64),
    pub mean_reconcile_ms: f64,
    /// Reconciles that went on before the controller's caches caught up with its previous writes.
    pub catch_up_timeouts: u64,
    pub load: (String, String),
    /// The controller's request latencies during the rollouts, in milliseconds.
    pub latencies: BTreeMap<(String, String), Vec<f64>>,
}

pub async fn rollouts(
    client: &Client,
    namespace: &str,
    settings: &Settings,
    controller: &InProcessController,
) -> RolloutFigures {
    say(&format!(
        "part 1: {} rollouts over {} ModelDeployments ({} replicas each) in namespace {namespace}",
        settings.rollouts, settings.parallel, settings.replicas
    ));
    let observer = Arc::new(Observer::default());
    let watchers = spawn_watchers(client, namespace, observer.clone());
    let started = Instant::now();
    let load_before = load_average();
    controller.requests.take_latencies();
    let requests_before = controller.requests.snapshot();
    let reconciles_before = controller.reconciles();
    let errors_before = controller.errors();
    let catch_up_timeouts_before = metric_sum(
        &controller.metrics.render(),
        "ferry_cache_catch_up_timeouts_total",
    );

    let per_md: Vec<usize> = (0..settings.parallel)
        .map(|i| {
            settings.rollouts / settings.parallel
                + usize::from(i < settings.rollouts % settings.parallel)
        })
        .collect();
    let results = futures::future::join_all(per_md.iter().enumerate().map(|(i, &count)| {
        let client = client.clone();
        let observer = observer.clone();
        async move {
            drive_model(
                &client,
                namespace,
                &format!("roll-{i}"),
                count,
                settings.replicas,
                &observer,
            )
            .await
        }
    }))
    .await;
    let mut measured = Vec::new();
    let mut failures = Vec::new();
    for (done, failed) in results {
        measured.extend(done);
        failures.extend(failed);
    }
    for watcher in watchers {
        watcher.abort();
    }
    let histogram = controller.metrics.render();
    let figures = RolloutFigures {
        measured,
        failures,
        switched_before_available: observer
            .seen
            .lock()
            .unwrap()
            .switched_before_available
            .clone(),
        elapsed: started.elapsed(),
        requests: difference(&controller.requests.snapshot(), &requests_before),
        reconciles: controller.reconciles() - reconciles_before,
        errors: controller.errors() - errors_before,
        controller_histogram: (
            metric_sum(&histogram, "ferry_promotion_latency_seconds_count"),
            metric_value(&histogram, "ferry_promotion_latency_seconds_sum"),
        ),
        mean_reconcile_ms: mean_reconcile_ms(&histogram),
        catch_up_timeouts: metric_sum(&histogram, "ferry_cache_catch_up_timeouts_total")
            - catch_up_timeouts_before,
        load: (load_before, load_average()),
        latencies: controller.requests.take_latencies(),
    };
    say(&format!(
        "part 1 done in {:.0}s: {} rollouts measured, {} failed",
        figures.elapsed.as_secs_f64(),
        figures.measured.len(),
        figures.failures.len()
    ));
    figures
}

/// Deploys one ModelDeployment, then bumps its version `count` times, measuring each promotion.
pub async fn drive_model(
    client: &Client,
    namespace: &str,
    name: &str,
    count: usize,
    replicas: i32,
    observer: &Observer,
) -> (Vec<Rollout>, Vec<String>) {
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
    let mut measured = Vec::new();
    let mut failures = Vec::new();
    let md: ModelDeployment = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"uri": format!("s3://models/{name}/0.onnx"), "version": "0"}, "replicas": replicas}
    }))
    .expect("a valid ModelDeployment");
    mds.create(&PostParams::default(), &md)
        .await
        .expect("create ModelDeployment");
    // The first version is not a rollout from something; it only brings the ModelDeployment to serving.
    if let Err(failure) = roll(
        client,
        namespace,
        name,
        "0",
        replicas,
        observer,
        Instant::now(),
    )
    .await
    {
        failures.push(format!("{name} first version: {failure}"));
        return (measured, failures);
    }
    for k in 1..=count {
        let version = k.to_string();
        let body = json!({"spec": {"model": {"uri": format!("s3://models/{name}/{version}.onnx"), "version": version}}});
        let bumped = Instant::now();
        if let Err(error) = mds
            .patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            failures.push(format!("{name} version {version}: bump failed: {error}"));
            continue;
        }
        match roll(
            client, namespace, name, &version, replicas, observer, bumped,
        )
        .await
        {
            Ok(rollout) => measured.push(rollout),
            Err(failure) => failures.push(format!("{name} version {version}: {failure}")),
        }
    }
    (measured, failures)
}

/// Waits for the revision of `version` (asked for at `asked`), plays the kubelet for its pods and waits for
/// the switch.
pub async fn roll(
    client: &Client,
    namespace: &str,
    name: &str,
    version: &str,
    replicas: i32,
    observer: &Observer,
    asked: Instant,
) -> Result<Rollout, String> {
    let key = (name.to_owned(), version.to_owned());
    let revision = observer
        .wait(STEP_TIMEOUT, |seen| seen.revisions.get(&key).cloned())
        .await
        .ok_or("no Deployment appeared")?;
    let deployed = asked.elapsed();
    let ready_at = Kubelet::new(client, namespace)
        .mark_ready(&revision, replicas, STEP_TIMEOUT)
        .await?;
    let key = (name.to_owned(), revision.clone());
    let (available, switched) = observer
        .wait(STEP_TIMEOUT, |seen| {
            Some((*seen.available.get(&key)?, *seen.switched.get(&key)?))
        })
        .await
        .ok_or_else(|| {
            let seen = observer.seen.lock().unwrap();
            format!(
                "revision {revision}: available seen: {}, switch seen: {}",
                seen.available.contains_key(&key),
                seen.switched.contains_key(&key)
            )
        })?;
    let overhead_ms = if switched >= available {
        switched.duration_since(available).as_secs_f64() * 1000.0
    } else {
        -(available.duration_since(switched).as_secs_f64() * 1000.0)
    };
    Ok(Rollout {
        deployed,
        became_available: available.saturating_duration_since(ready_at),
        overhead_ms,
    })
}
