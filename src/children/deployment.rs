//! One Deployment per revision, running ferry-server with the model contract as environment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStatus, DeploymentStrategy,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, HTTPGetAction, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, SeccompProfile, SecretEnvSource, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::{ModelDeployment, ModelSource, RevisionRuntime, RolloutStrategy, ServerTemplate};
use crate::catalogue::ServerRuntime;
use crate::config::OperatorConfig;
use crate::labels::{self, annotations};
use crate::observed::{LostState, ModelIdentity, ObservedRevision, RevisionMarks, StoredAbort};
use crate::server_contract::{self as contract, env, pod};

use super::{child_labels, model_file, owner_reference, secret};

/// Versions an InPlace pod may hold at once: the serving one, one staged, and up to ten previous ones
/// (`keepPrevious` at most 10); the controller unloads what it does not keep.
const IN_PLACE_MAX_LOADED_VERSIONS: usize = 12;

/// The volume of an InPlace pod set's pods that holds the model file from the ModelDeployment's ConfigMap: what
/// tells a pod set from a revision with a model of its own.
const MODEL_FILE_VOLUME: &str = "model";

/// UID the serving container runs as (the distroless "nonroot" user).
const SERVER_UID: i64 = 65532;
const PROBE_PERIOD_SECONDS: i32 = 2;

/// The spec parts a revision is made from; kept on its Deployment for `kubectl ferry rollback`.
#[derive(Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct SourceSpec {
    pub model: ModelSource,
    pub server: ServerTemplate,
    /// spec.runtime, when it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

/// The desired revision: its hash and pod template (with the revision label).
pub struct RevisionTemplate {
    pub revision: String,
    pub template: PodTemplateSpec,
    /// The object in the store it is pinned to (spec.model.refresh).
    pub pin: ObjectPin,
    /// The runtime its pods run.
    pub runtime: ServerRuntime,
}

/// The object a revision is pinned to, as a token, and when it was detected (spec.model.refresh).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectPin {
    pub object: Option<String>,
    pub detected_at: Option<Timestamp>,
}

/// The revision of the current spec on the operator's configured image and defaults (or spec.server.image): what
/// [`revision_template`] makes while the cluster has no ModelRuntime, and what every revision was before
/// runtimes existed.
pub fn pinned_revision_template(
    md: &ModelDeployment,
    config: &OperatorConfig,
    pin: ObjectPin,
) -> RevisionTemplate {
    revision_template(md, &ServerRuntime::configured(&md.spec, config), pin)
}

/// Builds the pod template of the current spec on `runtime` and names the revision after a hash of it, so that
/// anything that changes the pods (model, server template, the runtime's image and defaults) makes a new revision,
/// and nothing else does. A pin to one object at the model URI (spec.model.refresh) makes the pods load exactly
/// that object (`FERRY_MODEL_OBJECT`), so each object is a revision of its own.
pub fn revision_template(
    md: &ModelDeployment,
    runtime: &ServerRuntime,
    pin: ObjectPin,
) -> RevisionTemplate {
    let mut template = pod_template(md, runtime, pin.object.as_deref());
    let revision = revision_hash(&template);
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(labels::REVISION.into(), revision.clone());
    RevisionTemplate {
        revision,
        template,
        pin,
        runtime: runtime.clone(),
    }
}

/// The first 10 hex digits of the SHA-256 of the template's JSON: stable across processes and releases of
/// the operator as long as the template itself is unchanged.
fn revision_hash(template: &PodTemplateSpec) -> String {
    let json = serde_json::to_vec(template).expect("a pod template serializes");
    let digest = Sha256::digest(&json);
    digest
        .iter()
        .take(5)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

pub fn deployment_name(md_name: &str, revision: &str) -> String {
    format!("{md_name}-{revision}")
}

fn pod_template(
    md: &ModelDeployment,
    runtime: &ServerRuntime,
    object: Option<&str>,
) -> PodTemplateSpec {
    let name = md.metadata.name.clone().unwrap_or_default();
    let spec = &md.spec;
    let model = &spec.model;

    // InPlace: the model is not part of the pods; each loads the one its ConfigMap names when it starts, and the
    // controller moves running pods from version to version through their admin API.
    let in_place = spec.rollout.strategy == RolloutStrategy::InPlace;
    let mut env_vars = vec![env_var(env::MODEL_NAME, md.served_model_name())];
    if in_place {
        env_vars.push(env_var(
            env::MODEL_FILE,
            &format!("{}/{}", pod::DESIRED_MODEL_DIR, pod::DESIRED_MODEL_KEY),
        ));
        env_vars.push(env_var(
            env::MAX_LOADED_VERSIONS,
            &IN_PLACE_MAX_LOADED_VERSIONS.to_string(),
        ));
    } else {
        env_vars.extend([
            env_var(env::MODEL_URI, &model.uri),
            env_var(env::MODEL_VERSION, &model.version),
            env_var(env::MODEL_FORMAT, &model.format),
        ]);
    }
    env_vars.extend([
        env_var(env::HTTP_PORT, &contract::HTTP_PORT.to_string()),
        env_var(env::ADMIN_PORT, &contract::ADMIN_PORT.to_string()),
        env_var(env::GRPC_PORT, &contract::GRPC_PORT.to_string()),
        env_var(env::WORK_DIR, contract::WORK_DIR),
        env_var(
            env::TERMINATION_MESSAGE_PATH,
            contract::TERMINATION_MESSAGE_PATH,
        ),
        env_var(
            env::ADMIN_TOKEN_FILE,
            &format!(
                "{}/{}",
                pod::ADMIN_CREDENTIAL_DIR,
                pod::ADMIN_CREDENTIAL_KEY
            ),
        ),
    ]);
    if let Some(sha256) = model.sha256.as_ref().filter(|_| !in_place) {
        env_vars.push(env_var(env::MODEL_SHA256, sha256));
    }
    if let Some(refresh) = &model.refresh {
        env_vars.push(env_var(
            env::REFRESH_INTERVAL_SECONDS,
            &refresh.interval_seconds.to_string(),
        ));
    }
    if let Some(object) = object {
        env_vars.push(env_var(env::MODEL_OBJECT, object));
    }
    if let Some(validation) = &model.validation {
        env_vars.push(env_var(env::VALIDATION_URI, &validation.uri));
        if let Some(sha256) = &validation.sha256 {
            env_vars.push(env_var(env::VALIDATION_SHA256, sha256));
        }
    }
    // The server's own bound on the download follows loadTimeoutSeconds. Set only when it differs from the
    // server's default, so that revisions made before this setting existed keep their hash.
    let load_timeout = spec.rollout.load_timeout_seconds.max(1);
    if u64::try_from(load_timeout).ok() != Some(ferry_contract::DEFAULT_DOWNLOAD_TIMEOUT_SECONDS) {
        env_vars.push(env_var(
            env::DOWNLOAD_TIMEOUT_SECONDS,
            &load_timeout.to_string(),
        ));
    }
    if let Some(storage) = &model.storage {
        if let Some(endpoint) = &storage.endpoint {
            env_vars.push(env_var(env::S3_ENDPOINT, endpoint));
        }
        if let Some(region) = &storage.region {
            env_vars.push(env_var(env::S3_REGION, region));
        }
        if let Some(allow_http) = storage.allow_http {
            env_vars.push(env_var(env::S3_ALLOW_HTTP, &allow_http.to_string()));
        }
    }
    // Set only when the runtime allows more, so that ONNX templates stay as they were before runtimes existed.
    if !runtime.allowed_globals.is_empty() {
        env_vars.push(env_var(
            env::PYTHON_ALLOWED_GLOBALS,
            &runtime.allowed_globals.join(","),
        ));
    }
    // The user's variables come last: for duplicate names the last one wins.
    env_vars.extend(spec.server.env.iter().cloned());

    let env_from = model.credentials_secret_ref.as_ref().map(|secret| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret.name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }]
    });

    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Default::default()
    };
    // The startup probe gives the server loadTimeoutSeconds to download, verify, load and warm up.
    let startup_failures = (load_timeout + PROBE_PERIOD_SECONDS - 1) / PROBE_PERIOD_SECONDS;

    let container = Container {
        name: "server".into(),
        image: Some(runtime.image.clone()),
        image_pull_policy: Some(runtime.image_pull_policy.clone()),
        env: Some(env_vars),
        env_from,
        ports: Some(vec![
            port("http", contract::HTTP_PORT),
            port(contract::GRPC_PORT_NAME, contract::GRPC_PORT),
            port("admin", contract::ADMIN_PORT),
        ]),
        startup_probe: Some(probe(
            contract::paths::READY,
            PROBE_PERIOD_SECONDS,
            startup_failures,
        )),
        readiness_probe: Some(probe(contract::paths::READY, PROBE_PERIOD_SECONDS, 2)),
        liveness_probe: Some(probe(contract::paths::LIVE, 10, 3)),
        resources: spec
            .server
            .resources
            .clone()
            .or_else(|| runtime.resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(SERVER_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        termination_message_path: Some(contract::TERMINATION_MESSAGE_PATH.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(
            [
                VolumeMount {
                    name: "work".into(),
                    mount_path: contract::WORK_DIR.into(),
                    ..Default::default()
                },
                VolumeMount {
                    name: "admin-credential".into(),
                    mount_path: pod::ADMIN_CREDENTIAL_DIR.into(),
                    read_only: Some(true),
                    ..Default::default()
                },
            ]
            .into_iter()
            .chain(in_place.then(|| VolumeMount {
                name: "model".into(),
                mount_path: pod::DESIRED_MODEL_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            }))
            .collect(),
        ),
        ..Default::default()
    };

    // The model version labels the pods only when the pods are the model's.
    let version_label = (!in_place).then_some(model.version.as_str());
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(child_labels(&name, version_label)),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(
                [
                    Volume {
                        name: "work".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    },
                    // Mounted whole (no subPath), so the kubelet swaps its files when the Secret is replaced.
                    Volume {
                        name: "admin-credential".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(secret::admin_secret_name(&name)),
                            items: Some(vec![KeyToPath {
                                key: pod::ADMIN_CREDENTIAL_KEY.into(),
                                path: pod::ADMIN_CREDENTIAL_KEY.into(),
                                ..Default::default()
                            }]),
                            default_mode: Some(0o444),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    },
                ]
                .into_iter()
                .chain(in_place.then(|| Volume {
                    name: MODEL_FILE_VOLUME.into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: model_file::name(&name),
                        default_mode: Some(0o444),
                        optional: Some(false),
                        ..Default::default()
                    }),
                    ..Default::default()
                }))
                .collect(),
            ),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            // The server talks to object storage, never to the Kubernetes API.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            node_selector: Some(spec.server.node_selector.clone()).filter(|n| !n.is_empty()),
            tolerations: Some(spec.server.tolerations.clone()).filter(|t| !t.is_empty()),
            termination_grace_period_seconds: Some(30),
            ..Default::default()
        }),
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The Deployment of a revision with `replicas` pods, carrying the revision's `marks`: a new revision is created
/// with them in one write, and later applies keep them (a mark an apply left out would be removed).
pub fn desired_deployment(
    md: &ModelDeployment,
    revision: &RevisionTemplate,
    replicas: i32,
    marks: &RevisionMarks,
) -> Deployment {
    let name = md.metadata.name.clone().unwrap_or_default();
    let model = &md.spec.model;
    let mut metadata_annotations = BTreeMap::from([
        (annotations::VERSION.to_owned(), model.version.clone()),
        (annotations::URI.to_owned(), model.uri.clone()),
        (
            annotations::SOURCE_SPEC.to_owned(),
            serde_json::to_string(&SourceSpec {
                model: model.clone(),
                server: md.spec.server.clone(),
                runtime: md.spec.runtime.clone(),
            })
            .expect("the spec serializes"),
        ),
    ]);
    if let Some(sha256) = &model.sha256 {
        metadata_annotations.insert(annotations::SHA256.to_owned(), sha256.clone());
    }
    if let Some(object) = &revision.pin.object {
        metadata_annotations.insert(annotations::OBJECT.to_owned(), object.clone());
    }
    if let Some(detected_at) = revision.pin.detected_at {
        metadata_annotations.insert(annotations::DETECTED_AT.to_owned(), detected_at.to_string());
    }
    if let Some(runtime) = &revision.runtime.name {
        metadata_annotations.insert(annotations::RUNTIME.to_owned(), runtime.clone());
    }
    metadata_annotations.insert(
        annotations::RUNTIME_IMAGE.to_owned(),
        revision.runtime.image.clone(),
    );
    metadata_annotations.extend(marks_annotations(marks));
    let in_place = md.spec.rollout.strategy == RolloutStrategy::InPlace;
    let mut deployment_labels = child_labels(&name, (!in_place).then_some(model.version.as_str()));
    deployment_labels.insert(labels::REVISION.into(), revision.revision.clone());

    Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(&name, &revision.revision)),
            namespace: md.metadata.namespace.clone(),
            labels: Some(deployment_labels),
            annotations: Some(metadata_annotations),
            owner_references: Some(vec![owner_reference(md)]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (labels::MODEL_DEPLOYMENT.to_owned(), name.clone()),
                    (labels::REVISION.to_owned(), revision.revision.clone()),
                ])),
                ..Default::default()
            },
            template: revision.template.clone(),
            // A revision's template never changes; only its size does.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            revision_history_limit: Some(0),
            progress_deadline_seconds: Some(md.spec.rollout.load_timeout_seconds.max(1) + 60),
            ..Default::default()
        }),
        status: None,
    }
}

/// Reads a revision back from its Deployment and the pods of that revision.
pub fn observe(deployment: &Deployment, pods: &[&Pod]) -> Option<ObservedRevision> {
    let meta = &deployment.metadata;
    let revision = meta.labels.as_ref()?.get(labels::REVISION)?.clone();
    let annotations_of = meta.annotations.clone().unwrap_or_default();
    let annotation = |key: &str| annotations_of.get(key).cloned();
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let observed_current = status.observed_generation.unwrap_or(0) >= meta.generation.unwrap_or(0);
    let rolled_out = observed_current
        && status.updated_replicas.unwrap_or(0) >= replicas
        && status.replicas.unwrap_or(0) == replicas
        && available >= replicas;
    // A mark that is there but cannot be read is reported, never taken for an absent one: an abort mark
    // dropped that way would retry an aborted candidate.
    let object = format!("Deployment/{}", meta.name.as_deref().unwrap_or_default());
    let mut unreadable_marks = None;
    let mut mark = |key: &'static str| -> Option<Timestamp> {
        let value = annotation(key)?;
        match value.parse::<Timestamp>() {
            Ok(at) => Some(at),
            Err(error) => {
                unreadable_marks.get_or_insert_with(|| {
                    LostState::unreadable(object.clone(), Some(key), format!("{value:?}: {error}"))
                });
                None
            }
        }
    };
    let promoted_at = mark(annotations::PROMOTED_AT);
    let rollout_started_at = mark(annotations::ROLLOUT_STARTED_AT);
    let aborted = annotation(annotations::ABORTED).and_then(|json| {
        match serde_json::from_str::<StoredAbort>(&json) {
            Ok(stored) => Some(stored.into_mark()),
            Err(error) => {
                unreadable_marks.get_or_insert_with(|| {
                    LostState::unreadable(
                        object.clone(),
                        Some(annotations::ABORTED),
                        error.to_string(),
                    )
                });
                None
            }
        }
    });
    let timestamp = |key: &str| annotation(key).and_then(|value| value.parse::<Timestamp>().ok());
    Some(ObservedRevision {
        model: ModelIdentity {
            version: annotation(annotations::VERSION).unwrap_or_default(),
            uri: annotation(annotations::URI).unwrap_or_default(),
            sha256: annotation(annotations::SHA256),
            object: annotation(annotations::OBJECT),
            detected_at: timestamp(annotations::DETECTED_AT),
        },
        created_at: meta
            .creation_timestamp
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
        replicas,
        available_replicas: available,
        rolled_out,
        marks: RevisionMarks {
            promoted_at,
            rollout_started_at,
            aborted,
        },
        unreadable_marks,
        pod_set: loads_model_file(deployment.spec.as_ref().map(|s| &s.template)),
        load_failure: pods
            .iter()
            .filter(|pod| {
                pod.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::REVISION))
                    == Some(&revision)
            })
            .find_map(|pod| super::pod::load_failure(pod)),
        pods: Vec::new(),
        runtime: annotation(annotations::RUNTIME_IMAGE).map(|image| RevisionRuntime {
            name: annotation(annotations::RUNTIME),
            image,
        }),
        revision,
    })
}

/// A Deployment as the controller's cache keeps it: what [`observe`] and the owner check read (metadata without
/// managed fields or the source-spec annotation, spec.replicas, the status counts), filled straight from the watch.
/// The template is what made the revision's hash, which its name and labels already carry.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct CachedDeployment {
    pub metadata: ObjectMeta,
    /// Its labels, out of `metadata` once stripped.
    #[serde(skip)]
    pub labels: super::OwnerLabels,
    #[serde(default)]
    spec: Option<CachedDeploymentSpec>,
    #[serde(default)]
    status: Option<DeploymentStatus>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
struct CachedDeploymentSpec {
    #[serde(default)]
    replicas: Option<i32>,
    /// Whether the template mounts the model file (an InPlace pod set), read from the template as the watch
    /// delivers it; the template itself is not kept.
    #[serde(
        default,
        rename = "template",
        deserialize_with = "template_loads_model_file"
    )]
    pod_set: bool,
}

/// Reads only the template's volumes, for [`CachedDeploymentSpec::pod_set`].
fn template_loads_model_file<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<bool, D::Error> {
    #[derive(serde::Deserialize)]
    struct Template {
        #[serde(default)]
        spec: Option<TemplateSpec>,
    }
    #[derive(serde::Deserialize)]
    struct TemplateSpec {
        #[serde(default)]
        volumes: Option<Vec<TemplateVolume>>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct TemplateVolume {
        name: String,
        #[serde(default)]
        config_map: Option<serde::de::IgnoredAny>,
    }
    let template = <Option<Template> as serde::Deserialize>::deserialize(deserializer)?;
    Ok(template
        .and_then(|t| t.spec?.volumes)
        .unwrap_or_default()
        .iter()
        .any(|v| v.name == MODEL_FILE_VOLUME && v.config_map.is_some()))
}

/// The part of a pod set's template the cache keeps: the model-file volume alone.
fn model_file_template() -> PodTemplateSpec {
    PodTemplateSpec {
        spec: Some(PodSpec {
            volumes: Some(vec![Volume {
                name: MODEL_FILE_VOLUME.into(),
                config_map: Some(ConfigMapVolumeSource::default()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether pods of `template` load the model file of the ModelDeployment's ConfigMap (an InPlace pod set).
fn loads_model_file(template: Option<&PodTemplateSpec>) -> bool {
    template
        .and_then(|t| t.spec.as_ref()?.volumes.as_ref())
        .is_some_and(|volumes| {
            volumes
                .iter()
                .any(|v| v.name == MODEL_FILE_VOLUME && v.config_map.is_some())
        })
}

super::cached_kind!(CachedDeployment, Deployment);

impl super::Owned for CachedDeployment {
    fn owner(&self) -> Option<&str> {
        self.labels.owner.as_deref()
    }
}

impl CachedDeployment {
    /// Drops what the watch delivered that is never read.
    pub fn strip(&mut self) {
        self.metadata.managed_fields = None;
        if let Some(stored) = self.metadata.annotations.as_mut() {
            stored.remove(annotations::SOURCE_SPEC);
        }
        // The owner's name (the cache's index) and the revision are read; the standard labels are for others.
        self.labels = super::OwnerLabels::take(&mut self.metadata);
        if let Some(status) = self.status.as_mut() {
            status.conditions = None;
        }
    }

    /// The Deployment with what the cache holds, for [`observe`].
    pub fn to_deployment(&self) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                labels: self.labels.to_labels(),
                ..self.metadata.clone()
            },
            spec: self.spec.as_ref().map(|spec| DeploymentSpec {
                replicas: spec.replicas,
                template: if spec.pod_set {
                    model_file_template()
                } else {
                    PodTemplateSpec::default()
                },
                ..Default::default()
            }),
            status: self.status.clone(),
        }
    }
}

/// The annotation patch that stores `marks` (removing the marks that are unset).
pub fn marks_patch(marks: &RevisionMarks) -> serde_json::Value {
    let mut values = marks_annotations(marks);
    let annotations: serde_json::Map<String, serde_json::Value> = [
        annotations::PROMOTED_AT,
        annotations::ROLLOUT_STARTED_AT,
        annotations::ABORTED,
    ]
    .into_iter()
    .map(|key| {
        (
            key.to_owned(),
            values
                .remove(key)
                .map_or(serde_json::Value::Null, Into::into),
        )
    })
    .collect();
    serde_json::json!({"metadata": {"annotations": annotations}})
}

/// The annotations that hold a revision's marks (only the marks it has).
fn marks_annotations(marks: &RevisionMarks) -> BTreeMap<String, String> {
    let aborted = marks.aborted.as_ref().map(|a| {
        serde_json::to_string(&StoredAbort::from_mark(a)).expect("an abort mark serializes")
    });
    [
        (
            annotations::PROMOTED_AT,
            marks.promoted_at.map(|t| t.to_string()),
        ),
        (
            annotations::ROLLOUT_STARTED_AT,
            marks.rollout_started_at.map(|t| t.to_string()),
        ),
        (annotations::ABORTED, aborted),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_owned(), value?)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::{AbortMark, AbortReason};

    fn revision_template(md: &ModelDeployment, config: &OperatorConfig) -> RevisionTemplate {
        pinned_revision_template(md, config, ObjectPin::default())
    }
    use crate::api::ModelDeploymentSpec;

    fn md(version: &str) -> ModelDeployment {
        let mut md = ModelDeployment::new(
            "iris",
            serde_json::from_value::<ModelDeploymentSpec>(serde_json::json!({
                "model": {"uri": "s3://models/iris.onnx", "version": version,
                          "storage": {"endpoint": "http://minio:9000", "allowHttp": true},
                          "credentialsSecretRef": {"name": "s3"}},
                "replicas": 2
            }))
            .unwrap(),
        );
        md.metadata.namespace = Some("ml".into());
        md.metadata.uid = Some("uid-1".into());
        md
    }

    fn env_of(template: &RevisionTemplate) -> BTreeMap<String, String> {
        template.template.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn a_refreshing_revision_checks_on_its_interval_and_each_detected_object_is_its_own_revision() {
        let config = OperatorConfig::default();
        let mut refreshing = md("1");
        refreshing.spec.model.refresh = Some(crate::api::RefreshPolicy {
            interval_seconds: 60,
        });
        let following = revision_template(&refreshing, &config);
        let env = env_of(&following);
        assert_eq!(env[env::REFRESH_INTERVAL_SECONDS], "60");
        assert!(
            !env.contains_key(env::MODEL_OBJECT),
            "not pinned: whatever is at the URI"
        );
        assert_ne!(
            following.revision,
            revision_template(&md("1"), &config).revision
        );

        let pin = |object: &str| ObjectPin {
            object: Some(object.into()),
            detected_at: Some(Timestamp::from_second(1_800_000_000).unwrap()),
        };
        let first = pinned_revision_template(&refreshing, &config, pin("etag:\"1\""));
        let second = pinned_revision_template(&refreshing, &config, pin("etag:\"2\""));
        assert_eq!(env_of(&first)[env::MODEL_OBJECT], "etag:\"1\"");
        assert_ne!(first.revision, following.revision);
        assert_ne!(
            first.revision, second.revision,
            "a new object is a new revision"
        );
        let mut later = pin("etag:\"1\"");
        later.detected_at = None;
        assert_eq!(
            pinned_revision_template(&refreshing, &config, later).revision,
            first.revision,
            "when it was detected is not part of the pods"
        );

        // The Deployment carries the object and its detection, and reads them back.
        let deployment = desired_deployment(&refreshing, &first, 2, &RevisionMarks::default());
        let observed = observe(&deployment, &[]).unwrap();
        assert_eq!(observed.model.object.as_deref(), Some("etag:\"1\""));
        assert_eq!(observed.model.detected_at, first.pin.detected_at);
        let cached = through_the_cache(&deployment);
        assert_eq!(observe(&cached, &[]).unwrap().model, observed.model);
    }

    #[test]
    fn the_revision_changes_with_the_pods_and_only_with_them() {
        let config = OperatorConfig::default();
        let base = revision_template(&md("1"), &config).revision;
        assert_eq!(base.len(), 10);
        assert_eq!(
            base,
            revision_template(&md("1"), &config).revision,
            "deterministic"
        );
        assert_ne!(
            base,
            revision_template(&md("2"), &config).revision,
            "version changes the pods"
        );

        let mut scaled = md("1");
        scaled.spec.replicas = 7;
        scaled.spec.rollout.auto_promote = false;
        scaled.spec.revision_history_limit = 3;
        scaled.spec.rollout.allow_signature_change = true;
        assert_eq!(
            base,
            revision_template(&scaled, &config).revision,
            "scaling is not a new revision"
        );

        let mut image = md("1");
        image.spec.server.image = Some("registry/ferry-server:2".into());
        assert_ne!(base, revision_template(&image, &config).revision);

        // A golden set is checked by the pods, so it is part of them.
        let mut validated = md("1");
        validated.spec.model.validation = Some(crate::api::ValidationSource {
            uri: "s3://models/iris-golden.json".into(),
            sha256: Some("ab".repeat(32)),
        });
        let template = revision_template(&validated, &config);
        assert_ne!(base, template.revision);
        let env = template.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap_or_default();
        let value = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(
            value(env::VALIDATION_URI).as_deref(),
            Some("s3://models/iris-golden.json")
        );
        assert_eq!(value(env::VALIDATION_SHA256), Some("ab".repeat(32)));

        let other_default = OperatorConfig {
            server_image: "ferry-server:0.2.0".into(),
            ..OperatorConfig::default()
        };
        assert_ne!(
            base,
            revision_template(&md("1"), &other_default).revision,
            "a new default image rolls out"
        );
    }

    #[test]
    fn the_pod_runs_ferry_server_restricted_with_the_model_contract() {
        let md = md("1.2.0");
        let revision = revision_template(&md, &OperatorConfig::default());
        let deployment = desired_deployment(&md, &revision, 2, &RevisionMarks::default());
        assert_eq!(
            deployment.metadata.name.as_deref(),
            Some(format!("iris-{}", revision.revision).as_str())
        );
        let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ModelDeployment", Some(true))
        );
        let spec = deployment.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.unwrap();
        let container = &pod.containers[0];
        let env: BTreeMap<_, _> = container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env[env::MODEL_NAME], "iris");
        assert_eq!(env[env::MODEL_URI], "s3://models/iris.onnx");
        assert_eq!(env[env::MODEL_VERSION], "1.2.0");
        assert_eq!(env[env::S3_ENDPOINT], "http://minio:9000");
        assert_eq!(env[env::S3_ALLOW_HTTP], "true");
        // The admin credential comes from a mounted Secret: the template names it, never holds it.
        assert_eq!(env[env::ADMIN_TOKEN_FILE], "/var/run/ferry/admin/token");
        assert_eq!(env[env::GRPC_PORT], "8082");
        assert_eq!(
            env[env::DOWNLOAD_TIMEOUT_SECONDS],
            "3600",
            "loadTimeoutSeconds"
        );
        let ports: Vec<(Option<&str>, i32)> = container
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                (Some("http"), 8080),
                (Some("grpc"), 8082),
                (Some("admin"), 8081)
            ]
        );
        let credential = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "admin-credential")
            .and_then(|v| v.secret.as_ref())
            .expect("the admin credential volume");
        assert_eq!(credential.secret_name.as_deref(), Some("iris-ferry-admin"));
        assert_eq!(credential.optional, Some(false));
        let mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "admin-credential")
            .unwrap();
        assert_eq!(
            (
                mount.mount_path.as_str(),
                mount.read_only,
                mount.sub_path.as_ref()
            ),
            ("/var/run/ferry/admin", Some(true), None)
        );
        assert_eq!(
            container.env_from.as_ref().unwrap()[0]
                .secret_ref
                .as_ref()
                .unwrap()
                .name,
            "s3"
        );
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert_eq!(
            pod.security_context.unwrap().seccomp_profile.unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(
            container.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        let startup = container.startup_probe.as_ref().unwrap();
        assert_eq!(
            startup.failure_threshold,
            Some(1800),
            "3600 s at one probe every 2 s"
        );
        assert_eq!(
            startup.http_get.as_ref().unwrap().path.as_deref(),
            Some(contract::paths::READY)
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn marks_round_trip_through_annotations() {
        let md = md("1");
        let revision = revision_template(&md, &OperatorConfig::default());
        let mut deployment = desired_deployment(&md, &revision, 2, &RevisionMarks::default());
        let marks = RevisionMarks {
            promoted_at: Some("2026-11-21T10:00:00Z".parse().unwrap()),
            rollout_started_at: None,
            aborted: Some(AbortMark {
                reason: AbortReason::ModelLoadFailed,
                message: "ChecksumMismatch: x".into(),
                generation: 4,
            }),
        };
        let patch = marks_patch(&marks);
        assert_eq!(
            patch["metadata"]["annotations"][annotations::ABORTED],
            r#"{"reason":"ModelLoadFailed","message":"ChecksumMismatch: x","generation":4}"#
        );
        let stored = deployment
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        for (key, value) in patch["metadata"]["annotations"].as_object().unwrap() {
            if let Some(value) = value.as_str() {
                stored.insert(key.clone(), value.to_owned());
            }
        }
        let observed = observe(&deployment, &[]).unwrap();
        assert_eq!(observed.marks, marks);
        assert_eq!(observed.revision, revision.revision);
        assert_eq!(observed.model.version, "1");
        assert!(!observed.rolled_out, "no status yet");

        // A Deployment created with its marks reads them back the same way, and holds only the marks it has.
        let created = desired_deployment(&md, &revision, 2, &marks);
        assert_eq!(observe(&created, &[]).unwrap().marks, marks);
        assert!(!created
            .metadata
            .annotations
            .unwrap()
            .contains_key(annotations::ROLLOUT_STARTED_AT));
    }

    #[test]
    fn an_abort_reason_this_version_does_not_know_is_reported_as_unrecognized() {
        let md = md("1");
        let revision = revision_template(&md, &OperatorConfig::default());
        let mut deployment = desired_deployment(&md, &revision, 2, &RevisionMarks::default());
        deployment
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                annotations::ABORTED.into(),
                r#"{"reason":"GpuMissing","message":"no device","generation":2}"#.into(),
            );
        let aborted = observe(&deployment, &[]).unwrap().marks.aborted.unwrap();
        assert_eq!(aborted.reason, AbortReason::Unrecognized);
        assert_eq!(aborted.message, r#"no device (stored reason "GpuMissing")"#);
        assert_eq!(aborted.generation, 2);
    }

    fn python_runtime() -> ServerRuntime {
        ServerRuntime {
            name: Some("ferry-python".into()),
            image: "registry.example.com/ferry-server-python:0.2.0".into(),
            image_pull_policy: "Always".into(),
            resources: Some(
                serde_json::from_value(serde_json::json!({"limits": {"memory": "4Gi"}})).unwrap(),
            ),
            allowed_globals: vec![
                "team_models.*".into(),
                "numpy.core.multiarray.scalar".into(),
            ],
        }
    }

    #[test]
    fn the_pods_run_the_runtimes_image_defaults_and_allowed_globals() {
        let mut sklearn = md("1");
        sklearn.spec.model.format = "sklearn".into();
        let template = super::revision_template(&sklearn, &python_runtime(), ObjectPin::default());
        let container = &template.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("registry.example.com/ferry-server-python:0.2.0")
        );
        assert_eq!(container.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(container.resources, python_runtime().resources);
        let env = env_of(&template);
        assert_eq!(
            env[env::PYTHON_ALLOWED_GLOBALS],
            "team_models.*,numpy.core.multiarray.scalar"
        );
        assert_eq!(env[env::MODEL_FORMAT], "sklearn");

        // The spec's own resources win over the runtime's.
        let mut sized = sklearn.clone();
        sized.spec.server.resources =
            Some(serde_json::from_value(serde_json::json!({"limits": {"memory": "1Gi"}})).unwrap());
        let sized_template =
            super::revision_template(&sized, &python_runtime(), ObjectPin::default());
        assert_eq!(
            sized_template.template.spec.unwrap().containers[0].resources,
            sized.spec.server.resources
        );

        // Another runtime is another revision; its Deployment records which, and reads it back.
        let plain = super::revision_template(
            &sklearn,
            &ServerRuntime::configured(&sklearn.spec, &OperatorConfig::default()),
            ObjectPin::default(),
        );
        assert_ne!(plain.revision, template.revision);
        let deployment = desired_deployment(&sklearn, &template, 1, &RevisionMarks::default());
        let runtime = Some(crate::api::RevisionRuntime {
            name: Some("ferry-python".into()),
            image: "registry.example.com/ferry-server-python:0.2.0".into(),
        });
        assert_eq!(observe(&deployment, &[]).unwrap().runtime, runtime);
        assert_eq!(
            observe(&through_the_cache(&deployment), &[])
                .unwrap()
                .runtime,
            runtime
        );
        let configured = desired_deployment(&sklearn, &plain, 1, &RevisionMarks::default());
        assert_eq!(
            observe(&configured, &[]).unwrap().runtime,
            Some(crate::api::RevisionRuntime {
                name: None,
                image: "ferry-server:0.1.0".into()
            })
        );
        let mut older = configured;
        older
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(annotations::RUNTIME_IMAGE);
        assert_eq!(
            observe(&older, &[]).unwrap().runtime,
            None,
            "made before runtimes were recorded"
        );
    }

    /// The chart's built-in onnx runtime names the operator's image and pull policy and nothing else: an upgrade
    /// that brings it keeps every ONNX template, and so every revision, as it was (`tests/upgrade.rs` pins them).
    #[test]
    fn a_runtime_of_the_configured_image_keeps_the_template_byte_for_byte() {
        let config = OperatorConfig::default();
        let onnx = ServerRuntime {
            name: Some("ferry-onnx".into()),
            image: config.server_image.clone(),
            image_pull_policy: config.server_image_pull_policy.clone(),
            resources: config.server_resources.clone(),
            allowed_globals: Vec::new(),
        };
        let mut in_place = md("1");
        in_place.spec.rollout.strategy = RolloutStrategy::InPlace;
        for md in [md("1"), in_place] {
            let before = pinned_revision_template(&md, &config, ObjectPin::default());
            let now = super::revision_template(&md, &onnx, ObjectPin::default());
            assert_eq!(
                serde_json::to_string(&now.template).unwrap(),
                serde_json::to_string(&before.template).unwrap()
            );
            assert_eq!(now.revision, before.revision);
        }
    }

    /// What a reconcile reads of `deployment`: its JSON as the watch delivers it, into the cache and back.
    fn through_the_cache(deployment: &Deployment) -> Deployment {
        let json = serde_json::to_value(deployment).unwrap();
        let mut cached: CachedDeployment = serde_json::from_value(json).unwrap();
        cached.strip();
        cached.to_deployment()
    }

    #[test]
    fn the_cached_deployment_observes_like_the_full_one() {
        let md = md("1");
        let revision = revision_template(&md, &OperatorConfig::default());
        let mut deployment = desired_deployment(&md, &revision, 2, &RevisionMarks::default());
        deployment.metadata.generation = Some(3);
        deployment.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-21T10:00:00Z".parse().unwrap(),
            ));
        deployment.metadata.managed_fields = Some(vec![Default::default()]);
        deployment
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                annotations::PROMOTED_AT.into(),
                "2026-11-21T10:00:00Z".into(),
            );
        deployment.status = Some(
            serde_json::from_value(serde_json::json!({"observedGeneration": 3, "replicas": 2,
                "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2}))
            .unwrap(),
        );
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {labels::REVISION: revision.revision}},
            "status": {"containerStatuses": [{"name": "server", "ready": false, "restartCount": 1,
                "image": "i", "imageID": "", "state": {"terminated": {"exitCode": 1, "message": "boom"}}}]}
        }))
        .unwrap();
        let full = observe(&deployment, &[&pod]).unwrap();
        let cached = through_the_cache(&deployment);
        assert_eq!(observe(&cached, &[&pod]), Some(full.clone()));
        assert!(full.rolled_out && full.marks.promoted_at.is_some() && full.load_failure.is_some());
        assert_eq!(
            cached.metadata.owner_references,
            deployment.metadata.owner_references
        );
        assert_eq!(cached.metadata.managed_fields, None);
        let annotations = cached.metadata.annotations.unwrap();
        assert!(!annotations.contains_key(annotations::SOURCE_SPEC));
        assert_eq!(cached.spec.unwrap().template, PodTemplateSpec::default());
    }

    #[test]
    fn a_mark_that_cannot_be_read_is_reported_never_taken_for_an_absent_one() {
        let md = md("1");
        let revision = revision_template(&md, &OperatorConfig::default());
        let marks = RevisionMarks {
            promoted_at: None,
            rollout_started_at: Some("2026-11-21T10:00:00Z".parse().unwrap()),
            aborted: Some(AbortMark {
                reason: AbortReason::ValidationFailed,
                message: "2 of 3 cases".into(),
                generation: 2,
            }),
        };
        let deployment = desired_deployment(&md, &revision, 0, &marks);
        let read = observe(&through_the_cache(&deployment), &[]).unwrap();
        assert_eq!((read.marks, read.unreadable_marks), (marks, None));
        let garble = |key: &str, value: &str| {
            let mut garbled = deployment.clone();
            garbled
                .metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert(key.into(), value.into());
            observe(&through_the_cache(&garbled), &[]).unwrap()
        };
        let aborted = garble(annotations::ABORTED, "{\"reason\": \"Validation");
        assert_eq!(aborted.marks.aborted, None);
        let lost = aborted.unreadable_marks.expect("reported");
        assert_eq!(
            lost.object,
            format!("Deployment/iris-{}", revision.revision)
        );
        assert_eq!(lost.field, Some(annotations::ABORTED));
        assert!(
            lost.describe().contains("cannot be read: EOF"),
            "{}",
            lost.describe()
        );
        let started = garble(annotations::ROLLOUT_STARTED_AT, "yesterday");
        assert_eq!(
            started.unreadable_marks.unwrap().field,
            Some(annotations::ROLLOUT_STARTED_AT)
        );
    }

    #[test]
    fn an_in_place_pod_set_is_known_as_one_also_through_the_cache() {
        let mut in_place = md("1");
        in_place.spec.rollout.strategy = RolloutStrategy::InPlace;
        for (md, pod_set) in [(md("1"), false), (in_place, true)] {
            let revision = revision_template(&md, &OperatorConfig::default());
            let deployment = desired_deployment(&md, &revision, 2, &RevisionMarks::default());
            assert_eq!(observe(&deployment, &[]).unwrap().pod_set, pod_set);
            assert_eq!(
                observe(&through_the_cache(&deployment), &[])
                    .unwrap()
                    .pod_set,
                pod_set
            );
        }
    }
}
