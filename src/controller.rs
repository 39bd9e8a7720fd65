//! The reconcile loop: a thin I/O layer around [`rollout::decide`].
//!
//! Each reconcile reads the ModelDeployment's Deployments, Pods and stable Service, asks the pure decision what
//! should exist, and writes only the differences, in an order that keeps traffic safe: the candidate is created
//! and scaled up first, the Services switch next, scale-downs and deletions come last. Every write uses
//! server-side apply or a patch under one field manager; the status is written once, and only when it changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::{info, instrument, warn};

use crate::api::ModelDeployment;
use crate::children::{deployment, service};
use crate::config::OperatorConfig;
use crate::labels::{self, requests};
use crate::metrics::Metrics;
use crate::rollout::{self, DesiredRevision, ModelIdentity, Observed, Plan};
use crate::server_contract;

/// The one field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "ferry-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the object has no {0}")]
    MissingField(&'static str),
}

impl Error {
    /// Short label for the failure metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::MissingField(_) => "invalid_object",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// When each candidate revision (namespace/name/revision) was first seen fully available, for the
    /// promotion-latency metric.
    available_since: Mutex<HashMap<String, Instant>>,
    /// Consecutive failed reconciles per ModelDeployment (namespace/name), for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, config: OperatorConfig, metrics: Arc<Metrics>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Self {
            client,
            config,
            recorder,
            metrics,
            available_since: Mutex::default(),
            failures: Mutex::default(),
        }
    }
}

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Namespaces to watch; empty watches all.
    pub namespaces: Vec<String>,
    /// ModelDeployments reconciled at the same time (per watched namespace).
    pub concurrency: u16,
}

/// Fails with the command that installs the CRD when it is missing.
pub async fn check_crd_installed(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "modeldeployments.ferry.dev";
    match crds.get_opt(name).await? {
        Some(_) => Ok(()),
        None => anyhow::bail!(
            "the CustomResourceDefinition {name} is not installed; install it with \
             `kubectl apply --server-side -f crds/` (or `ferry crd | kubectl apply --server-side -f -`, or the Helm chart)"
        ),
    }
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
    let context = Arc::new(Context::new(client.clone(), config, metrics));
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
            options.concurrency,
            context.clone(),
            shutdown.clone(),
        )
    });
    futures::future::join_all(controllers).await;
    info!("controller stopped");
    Ok(())
}

/// One controller watching one namespace (or all of them).
async fn run_scope(
    client: Client,
    namespace: Option<String>,
    concurrency: u16,
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned = watcher::Config::default().labels(labels::MODEL_DEPLOYMENT);
    Controller::new(
        api::<ModelDeployment>(&client, &namespace),
        watcher::Config::default(),
    )
    .owns(api::<Deployment>(&client, &namespace), owned.clone())
    .owns(api::<Service>(&client, &namespace), owned.clone())
    .watches(api::<Pod>(&client, &namespace), owned, |pod| {
        let owner = pod.labels().get(labels::MODEL_DEPLOYMENT)?;
        Some(ObjectRef::<ModelDeployment>::new(owner).within(&pod.namespace()?))
    })
    .with_config(ControllerConfig::default().concurrency(concurrency))
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, context)
    .for_each(|result| async move {
        if let Err(error) = result {
            warn!(%error, "reconcile failed");
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
        let mut failures = context
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
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
    let result = reconcile_inner(&md, &context, started).await;
    context.metrics.observe_reconcile(started.elapsed());
    if result.is_ok() {
        let mut failures = context
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(&object_key(&md));
    }
    result
}

async fn reconcile_inner(
    md: &ModelDeployment,
    context: &Context,
    started: Instant,
) -> Result<Action, Error> {
    if md.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children through their owner references.
        return Ok(Action::await_change());
    }
    let namespace = md
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = md
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    let generation = md.metadata.generation.unwrap_or(0);
    let client = &context.client;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), &namespace);

    // Observe.
    let selector = ListParams::default().labels(&format!("{}={}", labels::MODEL_DEPLOYMENT, name));
    let stable_name = service::stable_name(&name);
    let preview_name = service::preview_name(&name);
    // Independent reads, issued together: they dominate the time from "candidate available" to promotion.
    let (owned_deployments, owned_pods, stable_service, preview_service) = futures::try_join!(
        deployments.list(&selector),
        pods.list(&selector),
        services.get_opt(&stable_name),
        services.get_opt(&preview_name),
    )?;
    let (owned_deployments, owned_pods) = (owned_deployments.items, owned_pods.items);
    let stable_target = stable_service.as_ref().and_then(service::selected_revision);

    let template = deployment::revision_template(md, &context.config);
    let pod_refs: Vec<&Pod> = owned_pods.iter().collect();
    let observed_revisions: Vec<rollout::ObservedRevision> = owned_deployments
        .iter()
        .filter(|d| is_owned_by(d, md))
        .filter_map(|d| deployment::observe(d, &pod_refs))
        .collect();
    let annotations = md.annotations();
    let previous_status = md.status.clone().unwrap_or_default();
    let endpoint = format!(
        "http://{stable_name}.{namespace}.svc.{}:{}",
        context.config.cluster_domain,
        server_contract::HTTP_PORT
    );
    let now = whole_seconds_now();
    let plan = rollout::decide(&Observed {
        name: &name,
        generation,
        spec: &md.spec,
        previous_status: &previous_status,
        desired: DesiredRevision {
            revision: template.revision.clone(),
            model: ModelIdentity {
                version: md.spec.model.version.clone(),
                uri: md.spec.model.uri.clone(),
                sha256: md.spec.model.sha256.clone(),
            },
        },
        invalid_spec: invalid_spec(md, &context.config),
        revisions: &observed_revisions,
        stable: stable_target.as_deref(),
        promote_request: annotations.get(requests::PROMOTE).map(String::as_str),
        abort_request: annotations.get(requests::ABORT).map(String::as_str),
        endpoint,
        now,
    });

    // Act, in the order that keeps traffic safe.
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let patch = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let current_replicas: BTreeMap<&str, i32> = observed_revisions
        .iter()
        .map(|r| (r.revision.as_str(), r.replicas))
        .collect();
    if let Some(replicas) = plan.desired_replicas {
        if current_replicas.get(template.revision.as_str()) != Some(&replicas) {
            let desired = deployment::desired_deployment(md, &template, replicas);
            let desired_name = deployment::deployment_name(&name, &template.revision);
            deployments
                .patch(&desired_name, &apply, &Patch::Apply(&desired))
                .await?;
            context.metrics.api_writes.inc();
        }
    }
    let current_replicas = &current_replicas;
    let scale = |up: bool| {
        plan.scale
            .iter()
            .filter(move |(revision, replicas)| {
                (**replicas > current_replicas[revision.as_str()]) == up
            })
            .map(|(revision, replicas)| (deployment::deployment_name(&name, revision), *replicas))
            .collect::<Vec<_>>()
    };
    for (deployment_name, replicas) in scale(true) {
        let body = serde_json::json!({"spec": {"replicas": replicas}});
        deployments
            .patch(&deployment_name, &patch, &Patch::Merge(&body))
            .await?;
        context.metrics.api_writes.inc();
    }
    let switched = ensure_service(
        &services,
        md,
        &stable_name,
        stable_service.as_ref(),
        plan.stable.as_deref(),
        &apply,
        &context.metrics,
    )
    .await?;
    ensure_service(
        &services,
        md,
        &preview_name,
        preview_service.as_ref(),
        plan.preview.as_deref(),
        &apply,
        &context.metrics,
    )
    .await?;
    track_promotion_latency(
        context,
        md,
        &template.revision,
        &observed_revisions,
        &plan,
        switched,
        started,
    );
    for (deployment_name, replicas) in scale(false) {
        let body = serde_json::json!({"spec": {"replicas": replicas}});
        deployments
            .patch(&deployment_name, &patch, &Patch::Merge(&body))
            .await?;
        context.metrics.api_writes.inc();
    }
    for (revision, marks) in &plan.marks {
        let body = deployment::marks_patch(marks);
        deployments
            .patch(
                &deployment::deployment_name(&name, revision),
                &patch,
                &Patch::Merge(&body),
            )
            .await?;
        context.metrics.api_writes.inc();
    }
    for revision in &plan.delete {
        deployments
            .delete(
                &deployment::deployment_name(&name, revision),
                &DeleteParams::background(),
            )
            .await?;
        context.metrics.api_writes.inc();
    }
    if md.status.as_ref() != Some(&plan.status) {
        let body = serde_json::json!({
            "apiVersion": ModelDeployment::api_version(&()),
            "kind": ModelDeployment::kind(&()),
            "status": plan.status,
        });
        mds.patch_status(&name, &apply, &Patch::Apply(&body))
            .await?;
        context.metrics.api_writes.inc();
    }
    publish_events(context, md, &plan).await;

    Ok(match plan.requeue_after {
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

fn is_owned_by(deployment: &Deployment, md: &ModelDeployment) -> bool {
    deployment
        .owner_references()
        .iter()
        .any(|owner| Some(&owner.uid) == md.metadata.uid.as_ref() && owner.controller == Some(true))
}

/// Why the configured serving image cannot run this spec, when it cannot.
fn invalid_spec(md: &ModelDeployment, config: &OperatorConfig) -> Option<String> {
    let uses_default_image = md.spec.server.image.as_deref().is_none_or(str::is_empty);
    let format = &md.spec.model.format;
    (uses_default_image && !config.server_formats.iter().any(|f| f == format)).then(|| {
        format!(
            "spec.model.format {format:?} is not supported by the serving image {} (supported: {})",
            config.server_image,
            config.server_formats.join(", ")
        )
    })
}

/// Applies a Service when it is missing or selects the wrong revision; returns whether the selector changed.
async fn ensure_service(
    services: &Api<Service>,
    md: &ModelDeployment,
    name: &str,
    current: Option<&Service>,
    target: Option<&str>,
    apply: &PatchParams,
    metrics: &Metrics,
) -> Result<bool, Error> {
    let current_target = current.and_then(service::selected_revision);
    if current.is_some() && current_target.as_deref() == target {
        return Ok(false);
    }
    let desired = service::desired_service(md, name.to_owned(), target);
    services.patch(name, apply, &Patch::Apply(&desired)).await?;
    metrics.api_writes.inc();
    Ok(current_target.as_deref() != target)
}

/// Records how long a fully available candidate waited for traffic, as the controller saw it.
fn track_promotion_latency(
    context: &Context,
    md: &ModelDeployment,
    desired: &str,
    revisions: &[rollout::ObservedRevision],
    plan: &Plan,
    switched: bool,
    reconcile_started: Instant,
) {
    let key = format!("{}/{desired}", object_key(md));
    let mut since = context
        .available_since
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if switched && plan.stable.as_deref() == Some(desired) {
        let first_seen = since.remove(&key).unwrap_or(reconcile_started);
        context
            .metrics
            .promotion_latency
            .observe(first_seen.elapsed().as_secs_f64());
        return;
    }
    let available = revisions
        .iter()
        .any(|r| r.revision == desired && r.rolled_out && r.ready_replicas >= md.spec.replicas);
    if available && plan.stable.as_deref() != Some(desired) {
        since.entry(key).or_insert(reconcile_started);
    } else {
        since.remove(&key);
    }
}

async fn publish_events(context: &Context, md: &ModelDeployment, plan: &Plan) {
    let reference = md.object_ref(&());
    for planned in &plan.events {
        context.metrics.count_rollout(planned.reason);
        let event = Event {
            type_: if planned.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: planned.reason.into(),
            note: Some(planned.note.clone()),
            action: "Rollout".into(),
            // Relating each event to its revision's Deployment keeps events of different versions apart
            // (the recorder folds events with the same reason and objects into one series).
            secondary: planned.revision.as_ref().map(|revision| ObjectReference {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                name: Some(deployment::deployment_name(
                    md.metadata.name.as_deref().unwrap_or_default(),
                    revision,
                )),
                namespace: md.metadata.namespace.clone(),
                ..Default::default()
            }),
        };
        // An event that cannot be recorded must not fail the rollout.
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            warn!(%error, reason = planned.reason, "could not record event");
        }
    }
}
