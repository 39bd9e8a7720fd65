//! What one reconcile reads of a ModelDeployment's world, from the caches: what LISTs by the label
//! `ferry.dev/model-deployment=<name>` and GETs of its two Services and its ConfigMap would return (as much of them
//! as the caches keep), with what each pod's server last reported. Owned, so that the decision borrows it as
//! [`Observed`] and the writes that follow read the same children.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::apply::Observation;
use super::{whole_seconds_now, Context, Error};
use crate::api::{ModelDeployment, ModelDeploymentStatus, ModelRuntime, PodPhase, RolloutStrategy};
use crate::catalogue::{self, NoRuntime, ServerRuntime};
use crate::children::deployment::{ObjectPin, RevisionTemplate};
use crate::children::{deployment, model_file, pod, service};
use crate::labels::{self, requests};
use crate::observed::{InPlaceState, LostState, ObservedRevision, Persisted};
use crate::rollout::{self, refresh, DesiredRevision, ModelIdentity, Observed};
use crate::server_contract;

pub(super) struct Snapshot {
    pub(super) namespace: String,
    pub(super) name: String,
    /// The desired revision, pinned to the object refresh follows.
    template: RevisionTemplate,
    revisions: Vec<ObservedRevision>,
    pods: Vec<Arc<Pod>>,
    active_service: Option<Arc<Service>>,
    preview_service: Option<Arc<Service>>,
    active_target: Option<String>,
    preview_target: Option<String>,
    previous_status: ModelDeploymentStatus,
    refresh: refresh::Refresh,
    /// Strategy InPlace: its ConfigMap's state.
    in_place_state: Option<Persisted<InPlaceState>>,
    lost: Vec<LostState>,
    /// Why no runtime serves the spec, when none does.
    no_runtime: Option<NoRuntime>,
    endpoint: String,
    grpc_endpoint: String,
    now: Timestamp,
}

impl Snapshot {
    pub(super) fn read(md: &ModelDeployment, context: &Context) -> Result<Snapshot, Error> {
        let namespace = md
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let name = md
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingField("metadata.name"))?;
        let caches = &context.caches;
        let active_name = service::active_name(&name);
        let owned_deployments: Vec<Deployment> = caches
            .deployments
            .owned_by(&namespace, &name)
            .iter()
            .map(|d| d.to_deployment())
            .collect();
        let pods: Vec<Arc<Pod>> = caches
            .pods
            .owned_by(&namespace, &name)
            .iter()
            .map(|p| Arc::new(p.to_pod()))
            .collect();
        let service = |name: &str| {
            caches
                .services
                .get(&namespace, name)
                .map(|s| Arc::new(s.to_service()))
        };
        let active_service = service(&active_name);
        let preview_service = service(&service::preview_name(&name));
        let active_target = active_service
            .as_deref()
            .and_then(service::selected_revision);
        let preview_target = preview_service
            .as_deref()
            .and_then(service::selected_revision);

        let pod_refs: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
        let revisions: Vec<ObservedRevision> = owned_deployments
            .iter()
            .filter(|d| is_owned_by(d, md))
            .filter_map(|d| deployment::observe(d, &pod_refs))
            .map(|revision| with_pods(revision, &pod_refs, context))
            .collect();
        let annotations = md.annotations();
        let previous_status = md.status.clone().unwrap_or_default();
        let host = format!(
            "{active_name}.{namespace}.svc.{}",
            context.config.cluster_domain
        );
        let now = whole_seconds_now();
        let pin = annotations.get(requests::REFRESH_PIN);
        let refresh = refresh::decide(refresh::Input {
            name: &name,
            policy: md.spec.model.refresh.as_ref(),
            uri: &md.spec.model.uri,
            previous: previous_status.refresh.as_ref(),
            pin: pin.map(|revision| refresh::Pin {
                revision,
                model: revisions
                    .iter()
                    .find(|r| &r.revision == revision)
                    .map(|r| &r.model),
            }),
            detected: refresh::detected(&revisions, active_target.as_deref()),
            active: revisions
                .iter()
                .find(|r| Some(&r.revision) == active_target.as_ref())
                .map(|r| &r.model),
            now,
        });
        let runtimes = caches.model_runtimes.store.state();
        let runtimes: Vec<&ModelRuntime> = runtimes.iter().map(Arc::as_ref).collect();
        let chosen = catalogue::choose(&md.spec, &runtimes, &context.config);
        // No runtime: nothing of this template is deployed (the decision sees `no_runtime`); it is built on the
        // operator's image only to name the desired revision.
        let server = chosen.as_ref().map_or_else(
            |_| ServerRuntime::configured(&md.spec, &context.config),
            Clone::clone,
        );
        let template = deployment::revision_template(
            md,
            &server,
            ObjectPin {
                object: refresh.object.clone(),
                detected_at: refresh.detected_at,
            },
        );
        let in_place_state = (md.spec.rollout.strategy == RolloutStrategy::InPlace).then(|| {
            model_file::observe(
                caches
                    .config_maps
                    .get(&namespace, &model_file::name(&name))
                    .as_deref(),
            )
        });
        let lost = rollout::unreadable_requests(
            &name,
            annotations.get(requests::ABORT).map(String::as_str),
            pin.map(String::as_str),
            md.spec.model.refresh.as_ref(),
            &revisions,
            previous_status.refresh.as_ref(),
        );
        Ok(Snapshot {
            no_runtime: chosen.err().map(|no_runtime| *no_runtime),
            endpoint: format!("http://{host}:{}", server_contract::HTTP_PORT),
            grpc_endpoint: format!("{host}:{}", server_contract::GRPC_PORT),
            namespace,
            name,
            template,
            revisions,
            pods,
            active_service,
            preview_service,
            active_target,
            preview_target,
            previous_status,
            refresh,
            in_place_state,
            lost,
            now,
        })
    }

    /// What the decision reads.
    pub(super) fn observed<'a>(&'a self, md: &'a ModelDeployment) -> Observed<'a> {
        let model = &md.spec.model;
        let annotations = md.annotations();
        Observed {
            name: &self.name,
            generation: md.metadata.generation.unwrap_or(0),
            spec: &md.spec,
            previous_status: &self.previous_status,
            desired: DesiredRevision {
                revision: self.template.revision.clone(),
                model: ModelIdentity {
                    version: model.version.clone(),
                    uri: model.uri.clone(),
                    sha256: model.sha256.clone(),
                    object: self.template.pin.object.clone(),
                    detected_at: self.template.pin.detected_at,
                },
                runtime: self
                    .no_runtime
                    .is_none()
                    .then(|| self.template.runtime.status()),
            },
            no_runtime: self.no_runtime.clone(),
            refresh: self.refresh.clone(),
            revisions: &self.revisions,
            active_service_target: self.active_target.as_deref(),
            preview_service_target: self.preview_target.as_deref(),
            requests: rollout::Requests {
                promote: annotations.get(requests::PROMOTE).map(String::as_str),
                abort: annotations.get(requests::ABORT).map(String::as_str),
            },
            lost: self.lost.clone(),
            in_place: self
                .in_place_state
                .as_ref()
                .map(|state| rollout::InPlaceInput {
                    state,
                    desired_model: server_contract::DesiredModel {
                        uri: model.uri.clone(),
                        version: model.version.clone(),
                        sha256: model.sha256.clone(),
                        format: Some(model.format.clone()),
                        object: None,
                    },
                }),
            endpoint: self.endpoint.clone(),
            grpc_endpoint: self.grpc_endpoint.clone(),
            now: self.now,
        }
    }

    /// The children as the writes compare the plan with them.
    pub(super) fn children(&self) -> Observation<'_> {
        Observation {
            template: &self.template,
            revisions: &self.revisions,
            pods: &self.pods,
            active_service: self.active_service.as_deref(),
            preview_service: self.preview_service.as_deref(),
        }
    }
}

/// Adds what each pod of the revision reports from inside (phase, SHA-256, progress); a load that failed inside
/// a running pod is the revision's load failure like one its termination message reports.
fn with_pods(mut revision: ObservedRevision, pods: &[&Pod], context: &Context) -> ObservedRevision {
    revision.pods = pods
        .iter()
        .filter(|p| p.labels().get(labels::REVISION) == Some(&revision.revision))
        .map(|p| {
            let mut observed = pod::observe(p, context.pod_reader.report(p).as_ref());
            observed.in_place.refused = context.admin_calls.refused(&observed.in_place.uid);
            observed
        })
        .collect();
    if revision.load_failure.is_none() {
        revision.load_failure = revision
            .pods
            .iter()
            .filter(|p| p.phase == PodPhase::Failed)
            .find_map(|p| p.failure.clone());
    }
    revision
}

fn is_owned_by(deployment: &Deployment, md: &ModelDeployment) -> bool {
    deployment
        .owner_references()
        .iter()
        .any(|owner| Some(&owner.uid) == md.metadata.uid.as_ref() && owner.controller == Some(true))
}
