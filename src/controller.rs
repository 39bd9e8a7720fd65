//! The reconcile loop: a thin I/O layer around [`rollout::decide`].
//!
//! Each reconcile reads the ModelDeployment's Deployments, Pods and Services, asks the pure decision what
//! should exist, and writes only the differences, in an order that keeps traffic safe: the candidate is created
//! and scaled up first, the Services switch next, scale-downs and deletions come last. Every write uses
//! server-side apply or a patch under one field manager; the status is written once, and only when it changed.
//! A reconcile that fails says so in the status (Ready=False, Degraded=True, reason ReconcileError), once.
//!
//! Nothing is read from the API server during a reconcile: ModelDeployments, Deployments, Pods and Services come
//! from caches (reflector stores) that the watches fill. The watch stream that fills a cache is the one that
//! triggers the reconciles, so a reconcile triggered by an event sees at least that event. Each reconcile also
//! remembers the resourceVersions its writes returned, and the next reconcile of the same ModelDeployment first
//! waits (briefly) until the caches have caught up with them: decisions are never made on a state older than
//! the controller's own last writes, as with live reads.
//!
//! By concern: `caches` (the stores and the catch-up), `watches` (which ModelDeployment an event concerns),
//! `observe` (what a reconcile reads of the caches), `apply` (writing a plan, and the children that are ensured:
//! Services, the admin-credential Secret), `admin_calls` (strategy InPlace's calls to the pods), `report` (events,
//! the promotion latency), `failure` (the status of a failed reconcile), `error`. This file wires the watches to
//! the reconcile, which reads as: observe from the caches, decide, apply, report.

mod admin_calls;
mod apply;
mod caches;
mod error;
mod failure;
mod observe;
mod pod_reader;
mod report;
mod watches;

use admin_calls::AdminCalls;
use apply::{apply_model_file, apply_plan, AdminSecretCheck};
use caches::{
    children_ready, reflect, strip_model_deployment, strip_model_runtime, Cache, Caches, Written,
    CATCH_UP_TIMEOUT,
};
pub use error::Error;
pub use failure::failed_status;
use failure::record_failure;
use observe::Snapshot;
pub use pod_reader::PodReader;
use report::publish_events;
pub use report::EventPublisher;
use watches::{affected, owners, pod_owner, requests};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::runtime::controller::{
    self as runtime_controller, applier, Action, Config as ControllerConfig, ReconcileReason,
    ReconcileRequest,
};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::utils::CancelableJoinHandle;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Notify;
use tracing::{debug, info, instrument, warn, Instrument};

use crate::api::{ModelDeployment, ModelRuntime};
use crate::children::deployment::CachedDeployment;
use crate::children::model_file;
use crate::children::pod::CachedPod;
use crate::children::service::CachedService;
use crate::config::OperatorConfig;
use crate::labels;
use crate::metrics::Metrics;
use crate::rollout;

/// The one field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "ferry-controller";

/// What every reconcile of one watch scope (a namespace, or all of them) shares.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub recorder: EventPublisher,
    pub metrics: Arc<Metrics>,
    /// The watched objects of the scope.
    caches: Arc<Caches>,
    /// When each candidate revision (namespace/name/revision) was first seen fully available, for the
    /// promotion-latency metric.
    available_since: Mutex<HashMap<String, Instant>>,
    /// Consecutive failed reconciles per ModelDeployment (namespace/name), for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// What the last reconcile of each ModelDeployment (namespace/name) wrote, for the next one to wait for.
    written: Mutex<HashMap<String, Written>>,
    /// When this process last made sure each ModelDeployment's admin-credential Secret exists.
    admin_secrets: Mutex<HashMap<String, AdminSecretCheck>>,
    /// What each serving pod's server last reported.
    pod_reader: Arc<PodReader>,
    /// The admin calls of strategy InPlace.
    admin_calls: Arc<AdminCalls>,
    /// When each ModelDeployment's status was last written, for the throttle on progress-only writes.
    status_written: Mutex<HashMap<String, Instant>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Context {
    fn new(
        client: Client,
        config: OperatorConfig,
        metrics: Arc<Metrics>,
        caches: Arc<Caches>,
        pod_reader: Arc<PodReader>,
    ) -> Self {
        let recorder = EventPublisher::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        let admin_calls = Arc::new(AdminCalls::new(
            pod_reader.clone(),
            metrics.clone(),
            caches.pods.store.clone(),
        ));
        Self {
            client,
            config,
            recorder,
            metrics,
            caches,
            available_since: Mutex::default(),
            failures: Mutex::default(),
            written: Mutex::default(),
            admin_secrets: Mutex::default(),
            admin_calls,
            pod_reader,
            status_written: Mutex::default(),
        }
    }

    /// Waits until the caches hold what the previous reconcile of `md` wrote (or [`CATCH_UP_TIMEOUT`] passed),
    /// and returns the ModelDeployment as the cache then holds it.
    async fn catch_up(&self, md: Arc<ModelDeployment>) -> Arc<ModelDeployment> {
        let Some(written) = lock(&self.written).remove(&object_key(&md)) else {
            return md;
        };
        let namespace = md.namespace().unwrap_or_default();
        let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let changed = self.caches.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.caches.hold(&namespace, &written) {
                break;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                debug!(name = %md.name_any(), ?written, "the caches did not catch up with the last writes in time");
                self.metrics.cache_catch_up_timeouts.inc();
                break;
            }
        }
        self.caches
            .model_deployments
            .store
            .get(&ObjectRef::from_obj(&*md))
            .unwrap_or(md)
    }

    fn remember(&self, key: String, written: Written) {
        if !written.is_empty() {
            lock(&self.written).insert(key, written);
        }
    }

    /// Drops what is kept about a ModelDeployment that was deleted (`Some(key)`, a deletion the watch delivered),
    /// or about every one the cache no longer holds (`None`, after a relist: deleted while the watch was down).
    fn forget(&self, deleted: Option<&str>) {
        let keep = |key: &str| match deleted {
            Some(deleted) => key != deleted,
            None => key.split_once('/').is_some_and(|(namespace, name)| {
                self.caches.model_deployments.get(namespace, name).is_some()
            }),
        };
        lock(&self.failures).retain(|key, _| keep(key));
        lock(&self.written).retain(|key, _| keep(key));
        lock(&self.admin_secrets).retain(|key, _| keep(key));
        lock(&self.status_written).retain(|key, _| keep(key));
        // By namespace/name/revision.
        lock(&self.available_since)
            .retain(|revision, _| revision.rsplit_once('/').is_none_or(|(key, _)| keep(key)));
        self.admin_calls.prune();
    }
}

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Namespaces to watch; empty watches all.
    pub namespaces: Vec<String>,
    /// ModelDeployments reconciled at the same time (per watched namespace).
    pub concurrency: u16,
    /// Label selector of the ModelRuntimes to choose from; None: all of them.
    pub runtime_selector: Option<String>,
}

/// The CRDs the controller reads, by name.
const CRDS: [&str; 2] = ["modeldeployments.ferry.dev", "modelruntimes.ferry.dev"];

/// Fails with the command that installs the CRDs when one is missing (a watch of a missing kind would wait for
/// it forever, and every reconcile with it).
pub async fn check_crd_installed(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in CRDS {
        if crds.get_opt(name).await?.is_none() {
            anyhow::bail!(
                "the CustomResourceDefinition {name} is not installed; install it with \
                 `kubectl apply --server-side -f crds/` (or `ferry crd | kubectl apply --server-side -f -`, or \
                 `helm show crds charts/ferry | kubectl apply --server-side -f -`)"
            );
        }
    }
    Ok(())
}

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    options: RunOptions,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    check_crd_installed(&client).await?;
    let shutdown = shutdown.shared();
    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|namespace| {
        run_scope(
            client.clone(),
            namespace,
            &options,
            config.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
    });
    futures::future::join_all(controllers).await;
    info!("controller stopped");
    Ok(())
}

/// One controller watching one namespace (or all of them), and the ModelRuntimes (cluster-scoped: each scope
/// keeps its own copy of the catalogue, a handful of small objects, so that a change of one triggers the scope's
/// reconciles like any other watch).
async fn run_scope(
    client: Client,
    namespace: Option<String>,
    options: &RunOptions,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let (md_store, md_writer) = reflector::store::<ModelDeployment>();
    let (deployment_store, deployment_writer) = reflector::store::<CachedDeployment>();
    let (pod_store, pod_writer) = reflector::store::<CachedPod>();
    let (service_store, service_writer) = reflector::store::<CachedService>();
    let (config_map_store, config_map_writer) = reflector::store::<ConfigMap>();
    let (runtime_store, runtime_writer) = reflector::store::<ModelRuntime>();
    let children_ready = children_ready(
        &deployment_store,
        &pod_store,
        &service_store,
        &config_map_store,
        &runtime_store,
    );
    let caches = Arc::new(Caches {
        model_deployments: Cache::new(md_store.clone()),
        deployments: Cache::new(deployment_store),
        pods: Cache::new(pod_store.clone()),
        services: Cache::new(service_store),
        config_maps: Cache::new(config_map_store),
        model_runtimes: Cache::new(runtime_store),
        children_ready,
        changed: Notify::new(),
    });
    let pod_reader = Arc::new(PodReader::default());
    let pod_reports = pod_reader.clone().run(pod_store, metrics.clone());
    let context = Arc::new(Context::new(
        client.clone(),
        config,
        metrics,
        caches.clone(),
        pod_reader,
    ));

    let owned = watcher::Config::default().labels(labels::MODEL_DEPLOYMENT);
    let forget = context.clone();
    let model_deployments = reflect(
        api::<ModelDeployment>(&client, &namespace),
        watcher::Config::default(),
        md_writer,
        strip_model_deployment,
        caches.clone(),
        |caches| &caches.model_deployments.applied,
    )
    .inspect_ok(move |event| match event {
        watcher::Event::Delete(md) => forget.forget(Some(&object_key(md))),
        watcher::Event::InitDone => forget.forget(None),
        _ => {}
    });
    let deployments = reflect(
        api::<CachedDeployment>(&client, &namespace),
        owned.clone(),
        deployment_writer,
        CachedDeployment::strip,
        caches.clone(),
        |caches| &caches.deployments.applied,
    );
    let services = reflect(
        api::<CachedService>(&client, &namespace),
        owned.clone(),
        service_writer,
        CachedService::strip,
        caches.clone(),
        |caches| &caches.services.applied,
    );
    let config_maps = reflect(
        api::<ConfigMap>(&client, &namespace),
        owned.clone(),
        config_map_writer,
        model_file::strip_for_cache,
        caches.clone(),
        |caches| &caches.config_maps.applied,
    );
    let pods = reflect(
        api::<CachedPod>(&client, &namespace),
        owned,
        pod_writer,
        CachedPod::strip,
        caches.clone(),
        |caches| &caches.pods.applied,
    );
    let runtime_watch = match options.runtime_selector.as_deref() {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    };
    let model_runtimes = reflect(
        Api::<ModelRuntime>::all(client.clone()),
        runtime_watch,
        runtime_writer,
        strip_model_runtime,
        caches.clone(),
        |caches| &caches.model_runtimes.applied,
    );
    let affected_store = md_store.clone();
    let queue = futures::stream::select_all([
        requests(model_deployments, false, |md: &ModelDeployment| {
            vec![ReconcileRequest {
                obj_ref: ObjectRef::from_obj(md),
                reason: ReconcileReason::ObjectUpdated,
            }]
        })
        .boxed(),
        requests(deployments, true, owners::<CachedDeployment>).boxed(),
        requests(services, true, owners::<CachedService>).boxed(),
        requests(config_maps, true, owners::<ConfigMap>).boxed(),
        requests(pods, true, pod_owner).boxed(),
        requests(model_runtimes, true, move |runtime: &ModelRuntime| {
            affected(&affected_store, runtime)
        })
        .boxed(),
        pod_reports.map(Ok).boxed(),
    ])
    .take_until(shutdown);

    applier(
        |md, context| {
            CancelableJoinHandle::spawn(
                reconcile(md, context).in_current_span(),
                &tokio::runtime::Handle::current(),
            )
        },
        error_policy,
        context,
        md_store,
        queue,
        ControllerConfig::default().concurrency(options.concurrency),
    )
    .for_each(|result| async move {
        match result {
            Ok(_) => {}
            // A child or a requeue of a ModelDeployment that is gone.
            Err(runtime_controller::Error::ObjectNotFound(object)) => {
                debug!(%object, "nothing to reconcile: the ModelDeployment is gone");
            }
            Err(error) => warn!(%error, "reconcile failed"),
        }
    })
    .await;
}

fn object_key(md: &ModelDeployment) -> String {
    format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any())
}

/// Retries a failing ModelDeployment after 5 s, doubling up to 5 minutes while it keeps failing.
fn error_policy(md: Arc<ModelDeployment>, error: &Error, context: Arc<Context>) -> Action {
    let failures = {
        let mut failures = lock(&context.failures);
        let count = failures.entry(object_key(&md)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay =
        Duration::from_secs(5 * 2u64.pow(failures.min(7) - 1)).min(Duration::from_secs(300));
    warn!(name = %md.name_any(), namespace = ?md.namespace(), %error, retry_in = ?delay, "reconcile failed");
    context.metrics.count_error(error.kind());
    Action::requeue(delay)
}

#[instrument(skip_all, fields(namespace = %md.namespace().unwrap_or_default(), name = %md.name_any()))]
pub async fn reconcile(md: Arc<ModelDeployment>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    // Decide only on complete caches, and never on a state older than this controller's own last writes.
    if !context.caches.children_ready.clone().await {
        return Err(Error::CacheClosed);
    }
    let md = context.catch_up(md).await;
    let mut written = Written::default();
    let result = reconcile_inner(&md, &context, started, &mut written).await;
    if let Err(error) = &result {
        if let Err(status_error) = record_failure(&md, &context, error, &mut written).await {
            warn!(%status_error, "could not record the failure in the status");
        }
    }
    context.remember(object_key(&md), written);
    context.metrics.observe_reconcile(started.elapsed());
    if result.is_ok() {
        lock(&context.failures).remove(&object_key(&md));
    }
    result
}

async fn reconcile_inner(
    md: &ModelDeployment,
    context: &Context,
    started: Instant,
    written: &mut Written,
) -> Result<Action, Error> {
    if md.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children through their owner references.
        return Ok(Action::await_change());
    }
    let snapshot = Snapshot::read(md, context)?;
    let rollout::Decision {
        plan,
        in_place_state,
        calls,
    } = rollout::decide(&snapshot.observed(md));
    // The InPlace state goes first: pods about to start load its model, and a switch must find it written.
    if let Some(state) = in_place_state {
        apply_model_file(context, md, &state, &mut *written).await?;
    }
    let deferred = apply_plan(context, md, &snapshot.children(), &plan, started, written).await?;
    publish_events(context, md, &plan).await;
    // Every decision, none included: the latest one replaces what is still queued for its pods.
    context.admin_calls.submit(
        &context.config.admin_key,
        &snapshot.namespace,
        &snapshot.name,
        md.served_model_name(),
        calls,
    );

    let requeue_after = match (plan.requeue_after, deferred) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(match requeue_after {
        Some(after) => Action::requeue(after + Duration::from_millis(50)),
        None => Action::await_change(),
    })
}

/// Now, at the precision the API stores times with: a status holding finer times would never compare equal to
/// the one read back, and would be rewritten on every reconcile.
fn whole_seconds_now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}
