//! The floor of part 2: a plain client, with the controller's concurrency, writing for N new ModelDeployments
//! exactly what the controller's first reconcile writes — the admin-credential Secret (create), the revision's
//! Deployment, the active and preview Services and the status (server-side apply) — built with the operator's
//! own builders (`ferry::children`, `ferry::rollout::decide`), so the objects are identical. No caches, no
//! watches, no Events: the time of the writes alone, against the same API server in the same run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry::admin_credential::{self, AdminKey};
use ferry::api::{ModelDeployment, ModelDeploymentStatus};
use ferry::children::{deployment, secret, service};
use ferry::config::OperatorConfig;
use ferry::controller::FIELD_MANAGER;
use ferry::rollout::{self, DesiredRevision, ModelIdentity, Observed, Requests};
use ferry::server_contract;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::convergence::{create_model_deployments, Convergence};
use crate::measure::load_average;
use crate::say;
use crate::settings::Settings;
use crate::support;

pub struct PlainFigures {
    pub created_in: Duration,
    /// Until every ModelDeployment was seen converged (as the controller's convergence is seen).
    pub converged_in: Option<Duration>,
    /// Until the last write returned.
    pub written_in: Duration,
    pub writes: u64,
    pub failures: u64,
    pub first_failure: Option<String>,
    pub load: (String, String),
}

pub async fn plain_client(client: &Client, namespace: &str, settings: &Settings) -> PlainFigures {
    let n = settings.models;
    say(&format!(
        "part 2, floor: creating {n} ModelDeployments in namespace {namespace} ..."
    ));
    let created_in = create_model_deployments(client, namespace, n).await;
    let convergence = Convergence::watch(client, namespace).await;
    let config = OperatorConfig {
        admin_key: AdminKey::from_file(support::admin_key_file()).expect("the test admin key"),
        ..OperatorConfig::default()
    };
    say(&format!(
        "part 2, floor: a plain client writes their children, {} at a time ...",
        settings.concurrency
    ));
    let load_before = load_average();
    let writes = AtomicU64::new(0);
    let started = Instant::now();
    // What the controller's caches start from: one list.
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
    let listed = mds
        .list(&ListParams::default())
        .await
        .expect("list ModelDeployments");
    let results: Vec<Result<(), kube::Error>> = futures::stream::iter(listed.items)
        .map(|md| write_children(client, &config, md, &writes))
        .buffer_unordered(usize::from(settings.concurrency))
        .collect()
        .await;
    let written_in = started.elapsed();
    let converged_in = convergence
        .converged(
            n,
            started,
            written_in + Duration::from_secs(60),
            || false,
            |_, _| {},
        )
        .await;
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    say(&format!(
        "part 2, floor: written in {:.1}s, {} failures",
        written_in.as_secs_f64(),
        failures.len()
    ));
    PlainFigures {
        created_in,
        converged_in,
        written_in,
        writes: writes.load(Ordering::Relaxed),
        failures: failures.len() as u64,
        first_failure: failures.into_iter().next(),
        load: (load_before, load_average()),
    }
}

/// The writes of the controller's first reconcile of `md`, in its order.
async fn write_children(
    client: &Client,
    config: &OperatorConfig,
    md: ModelDeployment,
    writes: &AtomicU64,
) -> Result<(), kube::Error> {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let template = deployment::pinned_revision_template(&md, config, Default::default());
    let active_name = service::active_name(&name);
    let preview_name = service::preview_name(&name);
    let now = Timestamp::now();
    let plan = rollout::decide(&Observed {
        name: &name,
        generation: md.metadata.generation.unwrap_or(0),
        spec: &md.spec,
        previous_status: &ModelDeploymentStatus::default(),
        desired: DesiredRevision {
            revision: template.revision.clone(),
            model: ModelIdentity {
                version: md.spec.model.version.clone(),
                uri: md.spec.model.uri.clone(),
                sha256: md.spec.model.sha256.clone(),
                object: None,
                detected_at: None,
            },
            runtime: Some(template.runtime.status()),
        },
        no_runtime: None,
        refresh: Default::default(),
        revisions: &[],
        active_service_target: None,
        preview_service_target: None,
        requests: Requests::default(),
        lost: Vec::new(),
        in_place: None,
        endpoint: format!(
            "http://{active_name}.{namespace}.svc.{}:{}",
            config.cluster_domain,
            server_contract::HTTP_PORT
        ),
        grpc_endpoint: format!(
            "{active_name}.{namespace}.svc.{}:{}",
            config.cluster_domain,
            server_contract::GRPC_PORT
        ),
        now: Timestamp::from_second(now.as_second()).unwrap_or(now),
    })
    .plan;
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let count = || writes.fetch_add(1, Ordering::Relaxed);

    let id = admin_credential::new_id();
    let credential = config.admin_key.credential(&namespace, &name, &id);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let create = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    secrets
        .create(&create, &secret::desired_admin_secret(&md, &credential))
        .await?;
    count();
    if let Some(replicas) = plan.desired_replicas {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        let marks = plan
            .marks
            .get(&template.revision)
            .cloned()
            .unwrap_or_default();
        let desired = deployment::desired_deployment(&md, &template, replicas, &marks);
        deployments
            .patch(
                &deployment::deployment_name(&name, &template.revision),
                &apply,
                &Patch::Apply(&desired),
            )
            .await?;
        count();
    }
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    for (service_name, target) in [
        (active_name, plan.active.as_deref()),
        (preview_name, plan.preview.as_deref()),
    ] {
        let desired = service::desired_service(&md, service_name.clone(), target);
        services
            .patch(&service_name, &apply, &Patch::Apply(&desired))
            .await?;
        count();
    }
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), &namespace);
    let status = json!({
        "apiVersion": ModelDeployment::api_version(&()),
        "kind": ModelDeployment::kind(&()),
        "status": plan.status,
    });
    mds.patch_status(&name, &apply, &Patch::Apply(&status))
        .await?;
    count();
    Ok(())
}
