//! Controller benchmark on the local control plane (real kube-apiserver + etcd + kube-controller-manager).
//!
//! `cargo bench --bench controller` starts its own control plane through the integration-test harness (or reuses
//! the one named by `FERRY_TEST_KUBECONFIG`), installs `crds/`, and measures:
//!
//! 1. **Promotion overhead** over many rollouts: from "candidate available" to "stable Service switched".
//!    The controller runs in-process. For every rollout the spec's version is bumped, the new revision's pods are
//!    marked Ready (the benchmark plays the kubelet, as the integration tests do), and two watch streams — one on
//!    Deployments, one on Services — timestamp the moment the candidate Deployment is first seen fully available
//!    (`availableReplicas >= spec.replicas`, `observedGeneration` current) and the moment the stable Service is
//!    first seen selecting it. Overhead = T_switch − T_available. Both instants come from watch events received
//!    by this process, so the figure includes the controller's own watch latency, its reads and its write. The
//!    controller's requests are timed (to response headers) by a client middleware, to show where the time goes.
//! 2. **Cold start**: N ModelDeployments are created while no controller runs; then the `ferry` binary is started
//!    as a separate process and the time until every ModelDeployment has a Deployment and a
//!    `status.observedGeneration` equal to its generation is measured (again from watch events). The process's peak
//!    resident set (`VmHWM` in /proc/PID/status) is read once converged and again after a settling period. The
//!    binary is the one Cargo builds for this target (`CARGO_BIN_EXE_ferry`, optimized under `cargo bench`).
//!    Each ModelDeployment owns two ClusterIP Services; a second ServiceCIDR is added for the run, so that a
//!    cluster with a small Service range does not run out of addresses. The apiserver's
//!    `apiserver_request_total` over the convergence shows what the requests were.
//! 3. **API writes with nothing changing**. The in-process controller's client carries a tower layer that counts
//!    every request it sends, by verb and resource, before it leaves the process — so even a write the apiserver
//!    would turn into a no-op (an identical server-side apply does not bump resourceVersion) is counted. After the
//!    rollouts of part 1 have settled (every ModelDeployment Ready, no reconcile for a few seconds), the count
//!    runs for a quiet window. Two independent cross-checks are printed: the resourceVersions of every
//!    ModelDeployment, Deployment and Service of the namespace plus the number of Events, before and after; and
//!    the apiserver's own `apiserver_request_total` for write verbs on the resources Ferry touches (any client,
//!    so the kube-controller-manager is included). Finally a metadata-only touch of each ModelDeployment forces a
//!    reconcile in which nothing should change, and the writes it causes are counted.
//!
//! The benchmark reports figures against their targets and never fails because a target is missed. The control
//! plane shares the machine with the benchmark, so the 1-minute load average is printed next to the figures.
//!
//! Settings (environment variables):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `FERRY_BENCH_PARTS` | `rollouts,quiet,cold` | parts to run (`quiet` needs `rollouts`) |
//! | `FERRY_BENCH_ROLLOUTS` | 100 | version bumps measured in part 1 |
//! | `FERRY_BENCH_PARALLEL` | 4 | ModelDeployments rolled at the same time in part 1 |
//! | `FERRY_BENCH_REPLICAS` | 2 | replicas of each ModelDeployment in part 1 |
//! | `FERRY_BENCH_CONCURRENCY` | 8 | controller concurrency (the `ferry run` default) |
//! | `FERRY_BENCH_QUIET_SECONDS` | 60 | length of the quiet window of part 3 |
//! | `FERRY_BENCH_MODELS` | 1000 | ModelDeployments of the cold start |
//! | `FERRY_BENCH_COLD_TIMEOUT_SECONDS` | 300 | give up on the cold start after this long |
//! | `FERRY_BENCH_COLD_SETTLE_SECONDS` | 30 | how long the controller keeps running after convergence |
//! | `FERRY_BENCH_LOG` | `warn` | log filter of the in-process controller |

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http;
use ferry::api::ModelDeployment;
use ferry::labels;
use ferry::metrics::Metrics;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{control_plane, FerryRun, InProcess, Kubelet, TestNamespace};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long one step of a rollout may take before the rollout is recorded as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

const TARGET_P50_MS: f64 = 50.0;
const TARGET_P99_MS: f64 = 250.0;
const TARGET_RSS_MB: f64 = 100.0;

struct Settings {
    parts: BTreeSet<String>,
    rollouts: usize,
    parallel: usize,
    replicas: i32,
    concurrency: u16,
    quiet: Duration,
    models: usize,
    cold_timeout: Duration,
    cold_settle: Duration,
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a valid number")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Self {
        let parts = std::env::var("FERRY_BENCH_PARTS")
            .unwrap_or_else(|_| "rollouts,quiet,cold".into())
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        Settings {
            parts,
            rollouts: env_number("FERRY_BENCH_ROLLOUTS", 100),
            parallel: env_number("FERRY_BENCH_PARALLEL", 4usize).max(1),
            replicas: env_number("FERRY_BENCH_REPLICAS", 2i32).max(1),
            concurrency: env_number("FERRY_BENCH_CONCURRENCY", 8u16).max(1),
            quiet: Duration::from_secs(env_number("FERRY_BENCH_QUIET_SECONDS", 60u64)),
            models: env_number("FERRY_BENCH_MODELS", 1000usize),
            cold_timeout: Duration::from_secs(env_number(
                "FERRY_BENCH_COLD_TIMEOUT_SECONDS",
                300u64,
            )),
            cold_settle: Duration::from_secs(env_number("FERRY_BENCH_COLD_SETTLE_SECONDS", 30u64)),
        }
    }

    fn runs(&self, part: &str) -> bool {
        self.parts.contains(part)
    }
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter); this target takes its settings from the environment.
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_BENCH_LOG")
        .unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = runtime.block_on(run(&settings));
    report.print(&settings);
}

#[derive(Default)]
struct Report {
    rollouts: Option<RolloutFigures>,
    quiet: Option<QuietFigures>,
    cold: Option<ColdFigures>,
}

async fn run(settings: &Settings) -> Report {
    let started = Instant::now();
    say("starting the control plane (or using FERRY_TEST_KUBECONFIG) and installing crds/ ...");
    let plane = tokio::task::spawn_blocking(control_plane)
        .await
        .expect("control plane");
    say(&format!(
        "control plane ready after {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        plane.kubeconfig.display()
    ));
    let client = plane.client().await;
    let mut report = Report::default();

    if settings.runs("rollouts") {
        let ns = tokio::task::spawn_blocking(TestNamespace::create)
            .await
            .expect("namespace");
        let controller = InProcessController::start(&plane.kubeconfig, &ns.name, settings).await;
        report.rollouts = Some(rollouts(&client, &ns.name, settings, &controller).await);
        if settings.runs("quiet") {
            report.quiet = Some(quiet(&client, &ns.name, settings, &controller).await);
        }
        controller.stop().await;
        tokio::task::spawn_blocking(move || drop(ns))
            .await
            .expect("namespace deletion");
    }
    if settings.runs("cold") {
        let ns = tokio::task::spawn_blocking(TestNamespace::create)
            .await
            .expect("namespace");
        let added_range = add_service_ip_range(&client).await;
        report.cold = Some(cold_start(&client, &ns.name, &plane.kubeconfig, settings).await);
        tokio::task::spawn_blocking(move || drop(ns))
            .await
            .expect("namespace deletion");
        if added_range {
            // Finalized once the namespace's Services have released their addresses.
            let cidrs: Api<ServiceCIDR> = Api::all(client.clone());
            let _ = cidrs.delete(BENCH_SERVICE_CIDR, &Default::default()).await;
        }
    }
    say(&format!(
        "benchmark finished after {:.0}s",
        started.elapsed().as_secs_f64()
    ));
    report
}

fn say(message: &str) {
    eprintln!("[bench] {message}");
}

// --- Counting the controller's requests ---------------------------------------------------------------------

/// Every request a client sent, by verb (GET, LIST, WATCH, POST, PUT, PATCH, DELETE) and resource, and how long
/// each took until its response headers arrived (watches excepted: they stay open).
#[derive(Default)]
struct RequestLog {
    counts: Mutex<Counts>,
    latencies: Mutex<BTreeMap<(String, String), Vec<f64>>>,
}

type Counts = BTreeMap<(String, String), u64>;

impl RequestLog {
    fn record<B>(&self, request: &http::Request<B>) -> (String, String) {
        let query = request.uri().query().unwrap_or("");
        let resource = resource_of(request.uri().path());
        let verb = match request.method().as_str() {
            "GET"
                if query
                    .split('&')
                    .any(|p| p == "watch=true" || p == "watch=1") =>
            {
                "WATCH"
            }
            "GET" if !resource.named => "LIST",
            other => other,
        };
        let key = (verb.to_owned(), resource.name);
        *self.counts.lock().unwrap().entry(key.clone()).or_default() += 1;
        key
    }

    fn took(&self, key: (String, String), elapsed: Duration) {
        if key.0 != "WATCH" {
            self.latencies
                .lock()
                .unwrap()
                .entry(key)
                .or_default()
                .push(elapsed.as_secs_f64() * 1000.0);
        }
    }

    fn snapshot(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    /// The latencies recorded so far, in milliseconds, forgetting them.
    fn take_latencies(&self) -> BTreeMap<(String, String), Vec<f64>> {
        std::mem::take(&mut *self.latencies.lock().unwrap())
    }
}

/// A client middleware that records every request in a [`RequestLog`].
#[derive(Clone)]
struct Recorded<S> {
    inner: S,
    log: Arc<RequestLog>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Recorded<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let key = self.log.record(&request);
        let log = self.log.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            log.took(key, started.elapsed());
            response
        })
    }
}

struct ResourcePath {
    /// `deployments`, `modeldeployments/status`, ...
    name: String,
    /// The path names one object (a GET of it is not a LIST).
    named: bool,
}

/// The resource of an API path: `/apis/apps/v1/namespaces/ns/deployments/x` → deployments (named).
fn resource_of(path: &str) -> ResourcePath {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/GROUP/VERSION/...
    let rest: &[&str] = match segments.first() {
        Some(&"api") if segments.len() >= 2 => &segments[2..],
        Some(&"apis") if segments.len() >= 3 => &segments[3..],
        _ => {
            return ResourcePath {
                name: path.to_owned(),
                named: true,
            }
        }
    };
    let rest = match rest {
        ["namespaces", _namespace, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    match rest {
        [] => ResourcePath {
            name: "discovery".into(),
            named: true,
        },
        [resource] => ResourcePath {
            name: (*resource).into(),
            named: false,
        },
        [resource, _name] => ResourcePath {
            name: (*resource).into(),
            named: true,
        },
        [resource, _name, sub, ..] => ResourcePath {
            name: format!("{resource}/{sub}"),
            named: true,
        },
    }
}

fn is_write(verb: &str) -> bool {
    matches!(verb, "POST" | "PUT" | "PATCH" | "DELETE")
}

fn difference(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(key, n)| (key.clone(), n - before.get(key).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn writes(counts: &Counts) -> u64 {
    counts
        .iter()
        .filter(|((verb, _), _)| is_write(verb))
        .map(|(_, n)| n)
        .sum()
}

fn reads(counts: &Counts) -> u64 {
    counts
        .iter()
        .filter(|((verb, _), _)| !is_write(verb))
        .map(|(_, n)| n)
        .sum()
}

fn describe(counts: &Counts, filter: impl Fn(&str) -> bool) -> String {
    let parts: Vec<String> = counts
        .iter()
        .filter(|((verb, _), _)| filter(verb))
        .map(|((verb, resource), n)| format!("{verb} {resource}: {n}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

async fn counting_client(kubeconfig: &Path, log: Arc<RequestLog>) -> Client {
    let config = support::client_config(kubeconfig).await;
    let layer = tower::layer::layer_fn(move |inner| Recorded {
        inner,
        log: log.clone(),
    });
    kube::client::ClientBuilder::try_from(config)
        .expect("client builds")
        .with_layer(&layer)
        .build()
}

// --- The in-process controller -----------------------------------------------------------------------------

struct InProcessController {
    controller: InProcess,
    metrics: Arc<Metrics>,
    requests: Arc<RequestLog>,
}

impl InProcessController {
    async fn start(kubeconfig: &Path, namespace: &str, settings: &Settings) -> Self {
        let requests = Arc::new(RequestLog::default());
        let controller = InProcess::watching(&[namespace])
            .client(counting_client(kubeconfig, requests.clone()).await)
            .concurrency(settings.concurrency)
            .start()
            .await;
        InProcessController {
            metrics: controller.metrics.clone(),
            controller,
            requests,
        }
    }

    fn reconciles(&self) -> u64 {
        self.metrics.reconciles.get()
    }

    fn errors(&self) -> u64 {
        metric_sum(&self.metrics.render(), "ferry_reconcile_errors_total")
    }

    /// Waits until no reconcile has run for `calm`, or `limit` has passed; returns whether it got calm.
    async fn settle(&self, calm: Duration, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut last = self.reconciles();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.reconciles();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= calm {
                return true;
            }
        }
        false
    }

    async fn stop(self) {
        if let Err(error) = self.controller.stop().await {
            say(&format!("the in-process controller: {error}"));
        }
    }
}

/// Sum of the samples of a metric in Prometheus/OpenMetrics text.
fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metric_sum(text: &str, name: &str) -> u64 {
    metric_value(text, name) as u64
}

/// Mean reconcile duration in milliseconds, from the controller's histogram.
fn mean_reconcile_ms(text: &str) -> f64 {
    let count = metric_value(text, "ferry_reconcile_duration_seconds_count");
    metric_value(text, "ferry_reconcile_duration_seconds_sum") * 1000.0 / count.max(1.0)
}

/// The 1-minute load average: how busy the machine was (the control plane shares it).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

// --- Part 1: promotion overhead ----------------------------------------------------------------------------

/// What the watch streams have seen, with the instant each thing was first seen.
#[derive(Default)]
struct Seen {
    /// (ModelDeployment, version) → revision of the Deployment that serves it.
    revisions: HashMap<(String, String), String>,
    /// (ModelDeployment, revision) → first seen fully available.
    available: HashMap<(String, String), Instant>,
    /// (ModelDeployment, revision) → first seen selected by the stable Service.
    switched: HashMap<(String, String), Instant>,
    /// ModelDeployment → revision its stable Service selects now.
    stable: HashMap<String, String>,
    /// Switches seen while the revision's Deployment had not yet been seen available.
    switched_before_available: Vec<String>,
}

#[derive(Default)]
struct Observer {
    seen: Mutex<Seen>,
    changed: Notify,
}

impl Observer {
    fn on_deployment(&self, deployment: &Deployment, at: Instant) {
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

    fn on_service(&self, service: &Service, at: Instant) {
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
        if seen.stable.get(md) != Some(revision) {
            seen.stable.insert(md.clone(), revision.clone());
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
    async fn wait<T>(&self, timeout: Duration, check: impl Fn(&Seen) -> Option<T>) -> Option<T> {
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
fn spawn_watchers(
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

fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = watcher::Result<Event<K>>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, config)
}

/// One measured rollout.
struct Rollout {
    /// From the version bump to the new Deployment being seen.
    deployed: Duration,
    /// From the pods marked Ready to the Deployment seen available (the Kubernetes controllers' part).
    became_available: Duration,
    /// T_switch − T_available, in milliseconds (negative if the Service event arrived first).
    overhead_ms: f64,
}

struct RolloutFigures {
    measured: Vec<Rollout>,
    failures: Vec<String>,
    switched_before_available: Vec<String>,
    elapsed: Duration,
    requests: Counts,
    reconciles: u64,
    errors: u64,
    /// The controller's own promotion-latency histogram: (count, sum in seconds).
    controller_histogram: (u64, f64),
    mean_reconcile_ms: f64,
    /// Reconciles that went on before the controller's caches caught up with its previous writes.
    catch_up_timeouts: u64,
    load: (String, String),
    /// The controller's request latencies during the rollouts, in milliseconds.
    latencies: BTreeMap<(String, String), Vec<f64>>,
}

async fn rollouts(
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
async fn drive_model(
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
async fn roll(
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

// --- Part 3: writes with nothing changing -----------------------------------------------------------------

struct QuietFigures {
    settled: bool,
    window: Duration,
    requests: Counts,
    reconciles: u64,
    changed_objects: Vec<String>,
    new_events: i64,
    apiserver_writes: Option<BTreeMap<String, u64>>,
    touch_reconciles: u64,
    touch_requests: Counts,
    touched: usize,
}

/// resourceVersion of every ModelDeployment, Deployment and Service of the namespace.
async fn resource_versions(client: &Client, namespace: &str) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    let all = ListParams::default();
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
    for md in mds.list(&all).await.expect("list ModelDeployments").items {
        versions.insert(
            format!("modeldeployment/{}", md.name_any()),
            md.resource_version().unwrap_or_default(),
        );
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    for d in deployments
        .list(&all)
        .await
        .expect("list Deployments")
        .items
    {
        versions.insert(
            format!("deployment/{}", d.name_any()),
            d.resource_version().unwrap_or_default(),
        );
    }
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    for s in services.list(&all).await.expect("list Services").items {
        versions.insert(
            format!("service/{}", s.name_any()),
            s.resource_version().unwrap_or_default(),
        );
    }
    versions
}

async fn event_count(client: &Client, namespace: &str) -> i64 {
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), namespace);
    events
        .list(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .iter()
                .map(|e| {
                    i64::from(e.count.unwrap_or(1).max(1))
                        + e.series.as_ref().and_then(|s| s.count).map_or(0, i64::from)
                })
                .sum()
        })
        .unwrap_or(-1)
}

const TOUCHED_RESOURCES: [&str; 6] = [
    "modeldeployments",
    "deployments",
    "services",
    "events",
    "pods",
    "replicasets",
];

const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "DELETE", "APPLY"];
const READ_AND_WRITE_VERBS: [&str; 7] = ["GET", "LIST", "POST", "PUT", "PATCH", "DELETE", "APPLY"];

/// apiserver_request_total for `verbs` on the resources Ferry and the Deployment machinery touch, by
/// "VERB resource[/subresource]" (every client of the apiserver).
async fn apiserver_requests(client: &Client, verbs: &[&str]) -> Option<BTreeMap<String, u64>> {
    let request = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = client.request_text(request).await.ok()?;
    let mut totals = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |key: &str| {
            let start = line.find(&format!("{key}=\""))? + key.len() + 2;
            let end = start + line[start..].find('"')?;
            Some(&line[start..end])
        };
        let (Some(verb), Some(resource)) = (label("verb"), label("resource")) else {
            continue;
        };
        if !verbs.contains(&verb) || !TOUCHED_RESOURCES.contains(&resource) {
            continue;
        }
        let subresource = label("subresource").filter(|s| !s.is_empty());
        let key = match subresource {
            Some(sub) => format!("{verb} {resource}/{sub}"),
            None => format!("{verb} {resource}"),
        };
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        *totals.entry(key).or_default() += value as u64;
    }
    Some(totals)
}

fn counter_difference(
    before: Option<BTreeMap<String, u64>>,
    after: Option<BTreeMap<String, u64>>,
) -> Option<BTreeMap<String, u64>> {
    let (before, after) = (before?, after?);
    Some(
        after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect(),
    )
}

fn describe_counters(counters: &Option<BTreeMap<String, u64>>) -> String {
    match counters {
        None => "unavailable".to_owned(),
        Some(m) if m.is_empty() => "none".to_owned(),
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

async fn quiet(
    client: &Client,
    namespace: &str,
    settings: &Settings,
    controller: &InProcessController,
) -> QuietFigures {
    say("part 3: waiting for the controller to settle (no reconcile for 5 s, at most 120 s) ...");
    let settled = controller
        .settle(Duration::from_secs(5), Duration::from_secs(120))
        .await;
    say(&format!(
        "part 3: counting API requests for {}s with nothing changing ...",
        settings.quiet.as_secs()
    ));
    let versions_before = resource_versions(client, namespace).await;
    let events_before = event_count(client, namespace).await;
    let apiserver_before = apiserver_requests(client, &WRITE_VERBS).await;
    let requests_before = controller.requests.snapshot();
    let reconciles_before = controller.reconciles();
    let started = Instant::now();
    tokio::time::sleep(settings.quiet).await;
    let window = started.elapsed();
    let requests = difference(&controller.requests.snapshot(), &requests_before);
    let reconciles = controller.reconciles() - reconciles_before;
    let apiserver_after = apiserver_requests(client, &WRITE_VERBS).await;
    let versions_after = resource_versions(client, namespace).await;
    let events_after = event_count(client, namespace).await;
    let mut changed_objects: Vec<String> = versions_after
        .iter()
        .filter(|(key, rv)| versions_before.get(*key) != Some(rv))
        .map(|(key, _)| key.clone())
        .collect();
    changed_objects.extend(
        versions_before
            .keys()
            .filter(|key| !versions_after.contains_key(*key))
            .map(|key| format!("{key} (deleted)")),
    );
    let apiserver = counter_difference(apiserver_before, apiserver_after);

    // A metadata-only change makes every ModelDeployment reconcile with nothing to do.
    say("part 3: touching an annotation of every ModelDeployment to force reconciles with nothing to do ...");
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
    let names: Vec<String> = mds
        .list(&ListParams::default())
        .await
        .expect("list ModelDeployments")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let touch_before = controller.requests.snapshot();
    let touch_reconciles_before = controller.reconciles();
    let stamp = k8s_openapi::jiff::Timestamp::now()
        .as_millisecond()
        .to_string();
    for name in &names {
        let body = json!({"metadata": {"annotations": {"bench.ferry.dev/touched": stamp}}});
        mds.patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .expect("annotate ModelDeployment");
    }
    // Wait for the reconciles to happen and whatever they trigger to die down.
    let wanted = touch_reconciles_before + names.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while controller.reconciles() < wanted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    controller
        .settle(Duration::from_secs(3), Duration::from_secs(30))
        .await;
    QuietFigures {
        settled,
        window,
        requests,
        reconciles,
        changed_objects,
        new_events: events_after - events_before,
        apiserver_writes: apiserver,
        touch_reconciles: controller.reconciles() - touch_reconciles_before,
        touch_requests: difference(&controller.requests.snapshot(), &touch_before),
        touched: names.len(),
    }
}

// --- Part 2: cold start of many ModelDeployments ----------------------------------------------------------

const BENCH_SERVICE_CIDR: &str = "ferry-bench";

/// Every ModelDeployment owns two ClusterIP Services. The local control plane's range is a /16, but a cluster
/// named by `FERRY_TEST_KUBECONFIG` may have a smaller one: a second ServiceCIDR (10.96.0.0/16) gives the cold
/// start room for tens of thousands whatever the cluster. Returns whether it was created here (and should be deleted afterwards).
async fn add_service_ip_range(client: &Client) -> bool {
    let cidrs: Api<ServiceCIDR> = Api::all(client.clone());
    if matches!(cidrs.get_opt(BENCH_SERVICE_CIDR).await, Ok(Some(_))) {
        return false;
    }
    let cidr: ServiceCIDR = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "ServiceCIDR",
        "metadata": {"name": BENCH_SERVICE_CIDR},
        "spec": {"cidrs": ["10.96.0.0/16"]}
    }))
    .expect("a valid ServiceCIDR");
    if let Err(error) = cidrs.create(&PostParams::default(), &cidr).await {
        say(&format!(
            "could not add a Service address range ({error}); a large cold start will run out of Service IPs"
        ));
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let ready = cidrs
            .get_opt(BENCH_SERVICE_CIDR)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.status?.conditions)
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

struct ColdFigures {
    models: usize,
    created_in: Duration,
    converged_in: Option<Duration>,
    with_deployment: usize,
    with_status: usize,
    hwm_at_convergence_kb: Option<u64>,
    hwm_end_kb: Option<u64>,
    rss_end_kb: Option<u64>,
    reconciles_at_convergence: Option<u64>,
    reconciles_end: Option<u64>,
    errors_end: Option<u64>,
    catch_up_timeouts_end: Option<u64>,
    mean_reconcile_ms: Option<f64>,
    load: (String, String),
    /// apiserver_request_total from `ferry run` starting to convergence (every client).
    apiserver_requests: Option<BTreeMap<String, u64>>,
    failed_lines: usize,
    log: PathBuf,
}

/// A field of /proc/PID/status in kB (VmHWM, VmRSS).
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The body of `ferry run`'s /metrics.
async fn scrape(process: &Arc<FerryRun>) -> Option<String> {
    let process = process.clone();
    tokio::task::spawn_blocking(move || {
        let response = process.http_get("/metrics").ok()?;
        Some(response.split_once("\r\n\r\n")?.1.to_owned())
    })
    .await
    .ok()?
}

#[derive(Default)]
struct ColdProgress {
    with_deployment: HashSet<String>,
    with_status: HashSet<String>,
}

async fn cold_start(
    client: &Client,
    namespace: &str,
    kubeconfig: &Path,
    settings: &Settings,
) -> ColdFigures {
    let n = settings.models;
    say(&format!(
        "part 2: creating {n} ModelDeployments in namespace {namespace} with no controller running ..."
    ));
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
    let creating = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let mds = mds.clone();
            async move {
                let name = format!("cold-{i:04}");
                let md: ModelDeployment = serde_json::from_value(json!({
                    "apiVersion": "ferry.dev/v1alpha1",
                    "kind": "ModelDeployment",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"model": {"uri": format!("s3://models/{name}/1.onnx"), "version": "1"}}
                }))
                .expect("a valid ModelDeployment");
                mds.create(&PostParams::default(), &md).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("create ModelDeployments");
    let created_in = creating.elapsed();
    say(&format!(
        "part 2: created in {:.1}s",
        created_in.as_secs_f64()
    ));

    // Watch what converges, from events: a Deployment per ModelDeployment, and status.observedGeneration.
    let progress = Arc::new((Mutex::new(ColdProgress::default()), Notify::new()));
    let (synced_tx, mut synced_rx) = tokio::sync::mpsc::channel::<()>(2);
    let md_watch = {
        let progress = progress.clone();
        let synced = synced_tx.clone();
        let api = mds.clone();
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
                            progress
                                .0
                                .lock()
                                .unwrap()
                                .with_deployment
                                .insert(md.clone());
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

    let log = std::env::temp_dir().join(format!("ferry-bench-cold-{}.log", std::process::id()));
    say(&format!(
        "part 2: starting `ferry run` watching {namespace} (log: {})",
        log.display()
    ));
    let load_before = load_average();
    let apiserver_before = apiserver_requests(client, &READ_AND_WRITE_VERBS).await;
    let started = Instant::now();
    let process = Arc::new(
        FerryRun::watching(&[namespace])
            .kubeconfig(kubeconfig)
            .env("FERRY_LOG", "info")
            .log_to(&log)
            .start(),
    );
    let pid = process.pid();

    let mut last_report = Instant::now();
    let converged_in = loop {
        let notified = progress.1.notified();
        let (deployments, statuses) = {
            let p = progress.0.lock().unwrap();
            (p.with_deployment.len(), p.with_status.len())
        };
        if deployments >= n && statuses >= n {
            break Some(started.elapsed());
        }
        if started.elapsed() > settings.cold_timeout {
            break None;
        }
        if process.exited().is_some() {
            say("part 2: the ferry process exited before convergence");
            break None;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            say(&format!(
                "part 2: {:.0}s: {deployments}/{n} with a Deployment, {statuses}/{n} with status (RSS {} kB)",
                started.elapsed().as_secs_f64(),
                proc_status_kb(pid, "VmRSS").unwrap_or(0)
            ));
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
    };
    let hwm_at_convergence_kb = proc_status_kb(pid, "VmHWM");
    let apiserver_requests = counter_difference(
        apiserver_before,
        apiserver_requests(client, &READ_AND_WRITE_VERBS).await,
    );
    let reconciles_at_convergence = scrape(&process)
        .await
        .map(|m| metric_sum(&m, "ferry_reconciles_total"));
    if let Some(took) = converged_in {
        say(&format!(
            "part 2: converged after {:.1}s; letting it run {}s more (the Kubernetes controllers are still creating pods) ...",
            took.as_secs_f64(),
            settings.cold_settle.as_secs()
        ));
        tokio::time::sleep(settings.cold_settle).await;
    }
    let hwm_end_kb = proc_status_kb(pid, "VmHWM");
    let rss_end_kb = proc_status_kb(pid, "VmRSS");
    let final_metrics = scrape(&process).await;
    let (with_deployment, with_status) = {
        let p = progress.0.lock().unwrap();
        (p.with_deployment.len(), p.with_status.len())
    };
    tokio::task::spawn_blocking(move || process.terminate(Duration::from_secs(10)))
        .await
        .expect("stop ferry");
    md_watch.abort();
    deployment_watch.abort();
    let failed_lines = std::fs::read_to_string(&log)
        .map(|text| {
            text.lines()
                .filter(|l| l.contains("reconcile failed"))
                .count()
        })
        .unwrap_or(0);
    ColdFigures {
        models: n,
        created_in,
        converged_in,
        with_deployment,
        with_status,
        hwm_at_convergence_kb,
        hwm_end_kb,
        rss_end_kb,
        reconciles_at_convergence,
        reconciles_end: final_metrics
            .as_deref()
            .map(|m| metric_sum(m, "ferry_reconciles_total")),
        errors_end: final_metrics
            .as_deref()
            .map(|m| metric_sum(m, "ferry_reconcile_errors_total")),
        catch_up_timeouts_end: final_metrics
            .as_deref()
            .map(|m| metric_sum(m, "ferry_cache_catch_up_timeouts_total")),
        mean_reconcile_ms: final_metrics.as_deref().map(mean_reconcile_ms),
        load: (load_before, load_average()),
        apiserver_requests,
        failed_lines,
        log,
    }
}

// --- The report ---------------------------------------------------------------------------------------------

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values
}

impl Report {
    fn print(&self, settings: &Settings) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\n=== Ferry controller benchmark ===");
        let _ = writeln!(
            out,
            "settings: rollouts={} parallel={} replicas={} concurrency={} quiet={}s models={}",
            settings.rollouts,
            settings.parallel,
            settings.replicas,
            settings.concurrency,
            settings.quiet.as_secs(),
            settings.models
        );
        if let Some(r) = &self.rollouts {
            let overhead = sorted(r.measured.iter().map(|m| m.overhead_ms));
            let p50 = percentile(&overhead, 50.0);
            let p99 = percentile(&overhead, 99.0);
            let deployed = sorted(r.measured.iter().map(|m| m.deployed.as_secs_f64() * 1000.0));
            let available = sorted(
                r.measured
                    .iter()
                    .map(|m| m.became_available.as_secs_f64() * 1000.0),
            );
            let _ = writeln!(out, "\n1. Candidate available -> stable Service switched ({} rollouts measured, {} failed, {:.0}s)", r.measured.len(), r.failures.len(), r.elapsed.as_secs_f64());
            let _ = writeln!(
                out,
                "   overhead p50 {p50:.1} ms (target <= {TARGET_P50_MS} ms: {})",
                verdict(p50 <= TARGET_P50_MS)
            );
            let _ = writeln!(
                out,
                "   overhead p99 {p99:.1} ms (target <= {TARGET_P99_MS} ms: {})",
                verdict(p99 <= TARGET_P99_MS)
            );
            let _ = writeln!(
                out,
                "   overhead min {:.1} / mean {:.1} / p90 {:.1} / max {:.1} ms",
                overhead.first().copied().unwrap_or(f64::NAN),
                overhead.iter().sum::<f64>() / overhead.len().max(1) as f64,
                percentile(&overhead, 90.0),
                overhead.last().copied().unwrap_or(f64::NAN)
            );
            let _ = writeln!(
                out,
                "   context: version bump -> new Deployment seen p50 {:.1} ms, p99 {:.1} ms; pods marked Ready -> Deployment available (kube-controller-manager) p50 {:.1} ms, p99 {:.1} ms",
                percentile(&deployed, 50.0),
                percentile(&deployed, 99.0),
                percentile(&available, 50.0),
                percentile(&available, 99.0)
            );
            let (count, sum) = r.controller_histogram;
            let _ = writeln!(
                out,
                "   the controller's own ferry_promotion_latency_seconds: {count} observations, mean {:.1} ms",
                if count > 0 { sum * 1000.0 / count as f64 } else { f64::NAN }
            );
            let _ = writeln!(
                out,
                "   controller: {} reconciles ({:.1} per rollout, mean {:.1} ms), {} reconcile errors, {} cache catch-up timeouts; requests: {} writes, {} reads",
                r.reconciles,
                r.reconciles as f64 / r.measured.len().max(1) as f64,
                r.mean_reconcile_ms,
                r.errors,
                r.catch_up_timeouts,
                writes(&r.requests),
                reads(&r.requests)
            );
            let _ = writeln!(out, "   writes: {}", describe(&r.requests, is_write));
            let latencies: Vec<String> = r
                .latencies
                .iter()
                .map(|((verb, resource), values)| {
                    let values = sorted(values.iter().copied());
                    format!(
                        "{verb} {resource} {:.1}/{:.1}",
                        percentile(&values, 50.0),
                        percentile(&values, 99.0)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "   controller request latency to response headers, p50/p99 ms: {}",
                latencies.join(", ")
            );
            let _ = writeln!(
                out,
                "   machine load average (1 min): {} at the start, {} at the end",
                r.load.0, r.load.1
            );
            if !r.switched_before_available.is_empty() {
                let _ = writeln!(
                    out,
                    "   switches seen before the Deployment was seen available: {}",
                    r.switched_before_available.join(", ")
                );
            }
            for failure in r.failures.iter().take(10) {
                let _ = writeln!(out, "   failed: {failure}");
            }
        }
        if let Some(c) = &self.cold {
            let mb = |kb: Option<u64>| kb.map_or(f64::NAN, |kb| kb as f64 / 1024.0);
            let _ = writeln!(
                out,
                "\n2. Cold start of {} ModelDeployments (created in {:.1}s with no controller)",
                c.models,
                c.created_in.as_secs_f64()
            );
            match c.converged_in {
                Some(took) => {
                    let _ = writeln!(
                        out,
                        "   converged (every one with a Deployment and status.observedGeneration) in {:.1}s after `ferry run` started",
                        took.as_secs_f64()
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "   did NOT converge within {}s: {} with a Deployment, {} with status",
                        settings.cold_timeout.as_secs(),
                        c.with_deployment,
                        c.with_status
                    );
                }
            }
            let peak = mb(c.hwm_end_kb.or(c.hwm_at_convergence_kb));
            let _ = writeln!(
                out,
                "   peak RSS (VmHWM) {:.1} MB at convergence, {peak:.1} MB after {}s more (target <= {TARGET_RSS_MB} MB: {}); RSS then {:.1} MB",
                mb(c.hwm_at_convergence_kb),
                settings.cold_settle.as_secs(),
                verdict(peak <= TARGET_RSS_MB),
                mb(c.rss_end_kb)
            );
            let fmt = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
            let _ = writeln!(
                out,
                "   reconciles: {} at convergence, {} at the end (mean {:.1} ms); reconcile errors {}; cache catch-up timeouts {}; \"reconcile failed\" log lines {} (log: {})",
                fmt(c.reconciles_at_convergence),
                fmt(c.reconciles_end),
                c.mean_reconcile_ms.unwrap_or(f64::NAN),
                fmt(c.errors_end),
                fmt(c.catch_up_timeouts_end),
                c.failed_lines,
                c.log.display()
            );
            let _ = writeln!(
                out,
                "   apiserver requests until convergence (any client, kube-controller-manager included): {}",
                describe_counters(&c.apiserver_requests)
            );
            let _ = writeln!(
                out,
                "   machine load average (1 min): {} at the start, {} at the end",
                c.load.0, c.load.1
            );
        }
        if let Some(q) = &self.quiet {
            let minutes = q.window.as_secs_f64() / 60.0;
            let total = writes(&q.requests);
            let per_minute = total as f64 / minutes;
            let _ = writeln!(
                out,
                "\n3. API writes with nothing changing ({:.0}s window{})",
                q.window.as_secs_f64(),
                if q.settled {
                    ""
                } else {
                    "; the controller had not settled before it"
                }
            );
            let _ = writeln!(
                out,
                "   controller writes {total} ({per_minute:.1} per minute; target 0: {}); reads {}; reconciles {}",
                verdict(total == 0),
                reads(&q.requests),
                q.reconciles
            );
            let _ = writeln!(out, "   requests: {}", describe(&q.requests, |_| true));
            let _ = writeln!(
                out,
                "   cross-check: objects whose resourceVersion changed: {}; new Events: {}",
                if q.changed_objects.is_empty() {
                    "none".to_owned()
                } else {
                    q.changed_objects.join(", ")
                },
                q.new_events
            );
            let _ = writeln!(
                out,
                "   cross-check: apiserver_request_total writes to {} (any client): {}",
                TOUCHED_RESOURCES.join("/"),
                describe_counters(&q.apiserver_writes)
            );
            let touch_writes = writes(&q.touch_requests);
            let _ = writeln!(
                out,
                "   no-op reconciles (an annotation touched on {} ModelDeployments): {} reconciles, {touch_writes} writes (target 0: {}): {}",
                q.touched,
                q.touch_reconciles,
                verdict(touch_writes == 0),
                describe(&q.touch_requests, is_write)
            );
        }
        let _ = writeln!(out);
    }
}
