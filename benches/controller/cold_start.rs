//! Part 2, cold start at scale: N ModelDeployments are created while no controller runs; then the `ferry`
//! binary starts as its own process, and the time until all have converged is measured, with its peak RSS.
//! Once it has gone quiet, its writes are counted over an idle window.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

use crate::convergence::{create_model_deployments, Convergence};
use crate::measure::{load_average, mean_reconcile_ms, metric_sum, proc_status_kb, scrape};
use crate::requests::{apiserver_requests, counter_difference, READ_AND_WRITE_VERBS, WRITE_VERBS};
use crate::say;
use crate::settings::Settings;
use crate::support::FerryRun;

pub const BENCH_SERVICE_CIDR: &str = "ferry-bench";

/// Every ModelDeployment owns two ClusterIP Services. The local control plane's range is a /16, but a cluster
/// named by `FERRY_TEST_KUBECONFIG` may have a smaller one: a second ServiceCIDR (10.96.0.0/16) gives the cold
/// start room for tens of thousands whatever the cluster. Returns whether it was created here (and should be deleted afterwards).
pub async fn add_service_ip_range(client: &Client) -> bool {
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

pub struct ColdFigures {
    pub created_in: Duration,
    pub converged_in: Option<Duration>,
    pub with_deployment: usize,
    pub with_status: usize,
    pub hwm_at_convergence_kb: Option<u64>,
    pub hwm_end_kb: Option<u64>,
    pub rss_end_kb: Option<u64>,
    pub reconciles_at_convergence: Option<u64>,
    pub reconciles_end: Option<u64>,
    pub writes_at_convergence: Option<u64>,
    pub errors_end: Option<u64>,
    pub catch_up_timeouts_end: Option<u64>,
    pub mean_reconcile_ms: Option<f64>,
    pub load: (String, String),
    /// apiserver_request_total from `ferry run` starting to convergence (every client).
    pub apiserver_requests: Option<BTreeMap<String, u64>>,
    /// The pods the Kubernetes controllers had made for the ModelDeployments' Deployments after convergence,
    /// and how long the wait for them took (at most `FERRY_BENCH_PODS_WAIT_SECONDS`).
    pub pods_after: Option<(usize, Duration)>,
    /// How long it took after that until no reconcile ran for 10 s (None: not within the limit).
    pub quiet_after: Option<Duration>,
    pub idle: Option<IdleFigures>,
    pub failed_lines: usize,
    pub log: PathBuf,
}

/// The controller's writes over a window in which nothing changed.
pub struct IdleFigures {
    pub window: Duration,
    /// Its own count (`ferry_api_writes_total`).
    pub writes: u64,
    pub reconciles: u64,
    /// apiserver_request_total writes in the window (every client: the Kubernetes controllers too).
    pub apiserver_writes: Option<BTreeMap<String, u64>>,
    pub load: String,
}

pub async fn cold_start(
    client: &Client,
    namespace: &str,
    kubeconfig: &Path,
    settings: &Settings,
) -> ColdFigures {
    let n = settings.models;
    say(&format!(
        "part 2: creating {n} ModelDeployments in namespace {namespace} with no controller running ..."
    ));
    let created_in = create_model_deployments(client, namespace, n).await;
    say(&format!(
        "part 2: created in {:.1}s",
        created_in.as_secs_f64()
    ));
    let convergence = Convergence::watch(client, namespace).await;

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
            .env("FERRY_CONCURRENCY", settings.concurrency.to_string())
            .env("FERRY_LOG", "info")
            .log_to(&log)
            .start(),
    );
    let pid = process.pid();
    let converged_in = convergence
        .converged(
            n,
            started,
            settings.cold_timeout,
            || {
                let exited = process.exited().is_some();
                if exited {
                    say("part 2: the ferry process exited before convergence");
                }
                exited
            },
            |elapsed, (deployments, statuses)| {
                say(&format!(
                    "part 2: {:.0}s: {deployments}/{n} with a Deployment, {statuses}/{n} with status (RSS {} kB)",
                    elapsed.as_secs_f64(),
                    proc_status_kb(pid, "VmRSS").unwrap_or(0)
                ))
            },
        )
        .await;
    let hwm_at_convergence_kb = proc_status_kb(pid, "VmHWM");
    let apiserver_requests = counter_difference(
        apiserver_before,
        apiserver_requests(client, &READ_AND_WRITE_VERBS).await,
    );
    let at_convergence = scrape(&process).await;
    let (mut pods_after, mut quiet_after, mut idle) = (None, None, None);
    if let Some(took) = converged_in {
        say(&format!(
            "part 2: converged after {:.1}s; waiting (at most {}s) until the Kubernetes controllers made the {n} pods, then (at most {}s) until no reconcile runs for 10 s ...",
            took.as_secs_f64(),
            settings.pods_wait.as_secs(),
            settings.cold_settle.as_secs()
        ));
        // Each new pod is news the controller writes to a status: nothing is idle until they all exist.
        pods_after = Some(wait_for_pods(client, namespace, n, settings.pods_wait).await);
        quiet_after = quiet(&process, settings.cold_settle).await;
        say(&format!(
            "part 2: counting writes for {}s with nothing changing ...",
            settings.quiet.as_secs()
        ));
        idle = Some(idle_window(client, &process, settings.quiet).await);
    }
    let hwm_end_kb = proc_status_kb(pid, "VmHWM");
    let rss_end_kb = proc_status_kb(pid, "VmRSS");
    let final_metrics = scrape(&process).await;
    let (with_deployment, with_status) = convergence.counts();
    drop(convergence);
    let stopping = process.clone();
    tokio::task::spawn_blocking(move || stopping.terminate(Duration::from_secs(10)))
        .await
        .expect("stop ferry");
    let failed_lines = process
        .log()
        .lines()
        .filter(|l| l.contains("reconcile failed"))
        .count();
    let metric = |text: &Option<String>, name: &str| text.as_deref().map(|m| metric_sum(m, name));
    ColdFigures {
        created_in,
        converged_in,
        with_deployment,
        with_status,
        hwm_at_convergence_kb,
        hwm_end_kb,
        rss_end_kb,
        pods_after,
        reconciles_at_convergence: metric(&at_convergence, "ferry_reconciles_total"),
        writes_at_convergence: metric(&at_convergence, "ferry_api_writes_total"),
        reconciles_end: metric(&final_metrics, "ferry_reconciles_total"),
        errors_end: metric(&final_metrics, "ferry_reconcile_errors_total"),
        catch_up_timeouts_end: metric(&final_metrics, "ferry_cache_catch_up_timeouts_total"),
        mean_reconcile_ms: final_metrics.as_deref().map(mean_reconcile_ms),
        load: (load_before, load_average()),
        apiserver_requests,
        quiet_after,
        idle,
        failed_lines,
        log,
    }
}

/// Waits (at most `limit`) until `namespace` holds `n` pods; how many it holds then, and how long that took.
pub async fn wait_for_pods(
    client: &Client,
    namespace: &str,
    n: usize,
    limit: Duration,
) -> (usize, Duration) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ListParams;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    loop {
        let mut count = 0;
        let mut params = ListParams::default().limit(500);
        loop {
            let Ok(page) = pods.list_metadata(&params).await else {
                break;
            };
            count += page.items.len();
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        if count >= n || started.elapsed() > limit {
            say(&format!(
                "{count}/{n} pods in {namespace} after {:.0}s",
                started.elapsed().as_secs_f64()
            ));
            return (count, started.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Waits until `ferry_reconciles_total` has not moved for 10 s; how long that took, or None after `limit`.
async fn quiet(process: &Arc<FerryRun>, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let reconciles = |text: Option<String>| text.map(|m| metric_sum(&m, "ferry_reconciles_total"));
    let mut last = reconciles(scrape(process).await);
    let mut since = Instant::now();
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = reconciles(scrape(process).await);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_secs(10) {
            return Some(started.elapsed());
        }
    }
    None
}

async fn idle_window(client: &Client, process: &Arc<FerryRun>, window: Duration) -> IdleFigures {
    let count =
        |text: &Option<String>, name: &str| text.as_deref().map_or(0, |m| metric_sum(m, name));
    let before = scrape(process).await;
    let apiserver_before = apiserver_requests(client, &WRITE_VERBS).await;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = scrape(process).await;
    IdleFigures {
        window: started.elapsed(),
        writes: count(&after, "ferry_api_writes_total") - count(&before, "ferry_api_writes_total"),
        reconciles: count(&after, "ferry_reconciles_total")
            - count(&before, "ferry_reconciles_total"),
        apiserver_writes: counter_difference(
            apiserver_before,
            apiserver_requests(client, &WRITE_VERBS).await,
        ),
        load: load_average(),
    }
}
