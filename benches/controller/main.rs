//! Controller benchmark on the local control plane (real kube-apiserver + etcd + kube-controller-manager).
//!
//! `cargo bench --bench controller` starts its own control plane through the integration-test harness (or reuses
//! the one named by `FERRY_TEST_KUBECONFIG`), installs `crds/`, and measures, by part:
//!
//! 1. **Promotion overhead** over many rollouts (`rollouts`): from "candidate available" to "active Service
//!    switched". The controller runs in-process. For every rollout the spec's version is bumped, the new
//!    revision's pods are marked Ready (the benchmark plays the kubelet, as the integration tests do), and two
//!    watch streams — one on Deployments, one on Services — timestamp the moment the candidate Deployment is first
//!    seen fully available (`availableReplicas >= spec.replicas`, `observedGeneration` current) and the moment the
//!    active Service is first seen selecting it. Overhead = T_switch − T_available. Both instants come from watch
//!    events received by this process, so the figure includes the controller's own watch latency, its reads and
//!    its write. The controller's requests are timed (to response headers) by a client middleware
//!    (`requests`), to show where the time goes.
//! 2. **Cold start at scale** (`cold`, `plain`): N ModelDeployments (`FERRY_BENCH_MODELS`) are created while no
//!    controller runs; then the `ferry` binary is started as a separate process and the time until every
//!    ModelDeployment has a Deployment and a `status.observedGeneration` equal to its generation is measured
//!    (from watch events, `convergence`). The process's peak resident set (`VmHWM` in /proc/PID/status) is read
//!    at convergence and at the end. Once the Kubernetes controllers have made a pod for every Deployment (each
//!    new pod is news the controller writes to a status) and no reconcile has run for 10 s, its writes
//!    (`ferry_api_writes_total`) are counted over an idle window. The binary is the one Cargo builds for this
//!    target (optimized under `cargo bench`). The floor: a plain client with the same concurrency writes what the
//!    controller's first reconcile writes for N other new ModelDeployments — Secret, Deployment, two Services,
//!    status — built with the operator's own builders, its convergence seen the same way (`plain`). The figure
//!    is the ratio of the two times. Each part runs on a control plane of its own, started for it from the same
//!    binaries and flags: the API server's Service IP allocation takes time in proportion to the Services that
//!    exist, so a part run second on the same plane would pay for the first one's 2N Services. With
//!    `FERRY_TEST_KUBECONFIG` both run on that cluster, the floor first. Each ModelDeployment owns two ClusterIP
//!    Services; a second ServiceCIDR (a /16) is added, so that with the plane's own /16 there is room for
//!    tens of thousands. The apiserver's `apiserver_request_total` over the convergence shows what the requests
//!    were.
//! 3. **API writes with nothing changing** (`quiet`, after `rollouts`). The in-process controller's client
//!    carries a tower layer that counts every request it sends, by verb and resource, before it leaves the
//!    process — so even a write the apiserver would turn into a no-op (an identical server-side apply does not bump
//!    resourceVersion) is counted. After the rollouts of part 1 have settled (every ModelDeployment Ready, no
//!    reconcile for a few seconds), the count runs for a quiet window. Two independent cross-checks are printed:
//!    the resourceVersions of every ModelDeployment, Deployment and Service of the namespace plus the number of
//!    Events, before and after; and the apiserver's own `apiserver_request_total` for write verbs on the resources
//!    Ferry touches (any client, so the kube-controller-manager is included). Finally a metadata-only touch of
//!    each ModelDeployment forces a reconcile in which nothing should change, and the writes it causes are counted.
//!
//! The benchmark reports figures against their targets (`report`) and never fails because a target is missed.
//! The control plane shares the machine with the benchmark, so the 1-minute load average is printed next to the
//! figures.
//!
//! Settings (environment variables):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `FERRY_BENCH_PARTS` | `rollouts,quiet,plain,cold` | parts to run (`quiet` needs `rollouts`) |
//! | `FERRY_BENCH_ROLLOUTS` | 100 | version bumps measured in part 1 |
//! | `FERRY_BENCH_PARALLEL` | 4 | ModelDeployments rolled at the same time in part 1 |
//! | `FERRY_BENCH_REPLICAS` | 2 | replicas of each ModelDeployment in part 1 |
//! | `FERRY_BENCH_CONCURRENCY` | 8 | controller concurrency (the `ferry run` default), and the plain client's |
//! | `FERRY_BENCH_QUIET_SECONDS` | 60 | length of the quiet window of part 3 and of the idle window of part 2 |
//! | `FERRY_BENCH_MODELS` | 1000 | ModelDeployments of part 2 (each of the controller and the plain client) |
//! | `FERRY_BENCH_COLD_TIMEOUT_SECONDS` | 300, or 0.5 s per ModelDeployment | give up on the cold start after this long |
//! | `FERRY_BENCH_PODS_WAIT_SECONDS` | 1800 | the longest part 2 waits, once converged, for the Kubernetes controllers to make every Deployment's pod (they make about 7 a second at their default client rates) |
//! | `FERRY_BENCH_COLD_SETTLE_SECONDS` | 120 | the longest part 2 then waits for the controller to go quiet before the idle window |
//! | `FERRY_BENCH_LOG` | `warn` | log filter of the in-process controller |

#[path = "../../tests/support/mod.rs"]
mod support;

mod cold_start;
mod convergence;
mod counted;
mod measure;
mod plain;
mod quiet;
mod report;
mod requests;
mod rollouts;
mod settings;

use std::time::Instant;

use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::Api;
use support::{control_plane, OwnControlPlane, TestNamespace};

use cold_start::{add_service_ip_range, cold_start, wait_for_pods, BENCH_SERVICE_CIDR};
use counted::InProcessController;
use report::Report;
use settings::Settings;

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

async fn run(settings: &Settings) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    // Parts 2 and 3 each get a control plane of their own unless the cluster is given: the API server's
    // Service IP allocation costs time in proportion to the Services that exist (Kubernetes 1.36 counts its
    // IPAddress objects on every allocation), so a part run after another's 20,000 Services would pay for them.
    let given_cluster = std::env::var_os("FERRY_TEST_KUBECONFIG").is_some();
    if settings.runs("rollouts") || (given_cluster && settings.runs_scale()) {
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
        if settings.runs("rollouts") {
            let ns = namespace().await;
            let controller =
                InProcessController::start(&plane.kubeconfig, &ns.name, settings).await;
            report.rollouts =
                Some(rollouts::rollouts(&client, &ns.name, settings, &controller).await);
            if settings.runs("quiet") {
                report.quiet = Some(quiet::quiet(&client, &ns.name, settings, &controller).await);
            }
            controller.stop().await;
            drop_namespace(ns).await;
        }
        if given_cluster && settings.runs_scale() {
            scale_on_one_cluster(&client, &plane.kubeconfig, settings, &mut report).await;
        }
    }
    if !given_cluster {
        if settings.runs("plain") {
            let own = own_plane("part 2, floor").await;
            let client = own.plane.client().await;
            add_service_ip_range(&client).await;
            let ns = own.plane.create_namespace();
            report.plain = Some(plain::plain_client(&client, &ns, settings).await);
            stop_plane(own).await;
        }
        if settings.runs("cold") {
            let own = own_plane("part 2").await;
            let client = own.plane.client().await;
            add_service_ip_range(&client).await;
            let ns = own.plane.create_namespace();
            report.cold = Some(cold_start(&client, &ns, &own.plane.kubeconfig, settings).await);
            stop_plane(own).await;
        }
    }
    say(&format!(
        "benchmark finished after {:.0}s",
        started.elapsed().as_secs_f64()
    ));
    report
}

/// Parts 2 and 3 on a cluster that was given: the floor first, then the controller, on the same API server.
async fn scale_on_one_cluster(
    client: &kube::Client,
    kubeconfig: &std::path::Path,
    settings: &Settings,
    report: &mut Report,
) {
    say("part 2 runs after the floor on the given cluster: it pays for the floor's Services and pods");
    let added_range = add_service_ip_range(client).await;
    // Both namespaces stay until the end: deleting thousands of objects would load the plane meanwhile.
    let mut namespaces = Vec::new();
    if settings.runs("plain") {
        let ns = namespace().await;
        report.plain = Some(plain::plain_client(client, &ns.name, settings).await);
        if settings.runs("cold") {
            // The Kubernetes controllers go on making a pod for each of the floor's Deployments long after
            // its writes; the cold start must not pay for that work.
            wait_for_pods(client, &ns.name, settings.models, settings.pods_wait).await;
        }
        namespaces.push(ns);
    }
    if settings.runs("cold") {
        let ns = namespace().await;
        report.cold = Some(cold_start(client, &ns.name, kubeconfig, settings).await);
        namespaces.push(ns);
    }
    for ns in namespaces {
        drop_namespace(ns).await;
    }
    if added_range {
        // Finalized once the namespaces' Services have released their addresses.
        let cidrs: Api<ServiceCIDR> = Api::all(client.clone());
        let _ = cidrs.delete(BENCH_SERVICE_CIDR, &Default::default()).await;
    }
}

async fn own_plane(part: &str) -> OwnControlPlane {
    let started = Instant::now();
    say(&format!("{part}: starting a control plane of its own ..."));
    let own = tokio::task::spawn_blocking(OwnControlPlane::start)
        .await
        .expect("control plane");
    say(&format!(
        "{part}: control plane ready after {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        own.plane.kubeconfig.display()
    ));
    own
}

async fn stop_plane(own: OwnControlPlane) {
    tokio::task::spawn_blocking(move || drop(own))
        .await
        .expect("control plane stops");
}

async fn namespace() -> TestNamespace {
    tokio::task::spawn_blocking(TestNamespace::create)
        .await
        .expect("namespace")
}

async fn drop_namespace(ns: TestNamespace) {
    tokio::task::spawn_blocking(move || drop(ns))
        .await
        .expect("namespace deletion");
}

fn say(message: &str) {
    eprintln!("[bench] {message}");
}
