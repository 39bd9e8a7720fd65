//! `ferry.dev/v1alpha1`: the `ModelDeployment` resource.
//!
//! Every field carries a doc comment because it becomes the description that `kubectl explain` shows.
//! Defaults live in the schema (the apiserver fills them in), so GitOps tools see no drift between the
//! manifest they applied and the object they read back. Validation lives in the schema and in CEL rules,
//! and every rule's message names the field it is about.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every Ferry resource.
pub const GROUP: &str = "ferry.dev";
/// API version of this module's types.
pub const VERSION: &str = "v1alpha1";

/// The longest `metadata.name`: the preview Service `<name>-preview` must still be a 63-character DNS label.
pub const MAX_NAME_LENGTH: usize = 55;

/// A model served by the generic ferry-server image and rolled from version to version blue/green:
/// traffic moves to a new version only once it is loaded and has answered a warm-up inference, and the
/// previous version stays warm for an instant rollback.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    shortname = "md",
    category = "ferry",
    status = "ModelDeploymentStatus",
    derive = "PartialEq",
    doc = "A model served by ferry-server and rolled from version to version without downtime.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        description = "Model version receiving traffic",
        json_path = ".status.active.version"
    ),
    printcolumn(
        name = "Candidate",
        type_ = "string",
        description = "Model version being rolled out",
        json_path = ".status.candidate.version"
    ),
    printcolumn(
        name = "Progress",
        type_ = "string",
        description = "Load phase of the version being rolled out",
        json_path = ".status.candidate.progress.phase"
    ),
    printcolumn(
        name = "Loaded",
        type_ = "integer",
        description = "Percent of the model file the version being rolled out has downloaded (steps of 5)",
        json_path = ".status.candidate.progress.percent"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        description = "Ready replicas of the version receiving traffic",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        description = "Pending, Progressing, Available or Degraded",
        json_path = ".status.phase"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        description = "Desired replicas",
        json_path = ".spec.replicas",
        priority = "1"
    ),
    printcolumn(
        name = "URI",
        type_ = "string",
        description = "Model URI of the desired version",
        json_path = ".spec.model.uri",
        priority = "1"
    ),
    printcolumn(
        name = "Runtime",
        type_ = "string",
        description = "ModelRuntime of the version receiving traffic",
        json_path = ".status.active.runtime.name",
        priority = "1"
    ),
    printcolumn(
        name = "Object",
        type_ = "string",
        description = "Object in the store the version receiving traffic was loaded from (spec.model.refresh)",
        json_path = ".status.active.object",
        priority = "1"
    ),
    validation = Rule::new(format!(
        "self.metadata.name.size() <= {MAX_NAME_LENGTH} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    ))
    .message(Message::Message(format!(
        "metadata.name must be a DNS-1035 label (lowercase letters, digits, '-', starting with a letter) of at most {MAX_NAME_LENGTH} characters: the Services <name> and <name>-preview are derived from it"
    )))
)]
#[x_kube(validation = Rule::new(
    "self.revisionHistoryLimit >= self.rollout.keepPrevious"
).message(
    "spec.revisionHistoryLimit must be at least spec.rollout.keepPrevious: warm previous versions count towards the history"
).field_path(".revisionHistoryLimit"))]
#[x_kube(validation = Rule::new(
    "!has(self.model.refresh) || !has(self.rollout.strategy) || self.rollout.strategy != 'InPlace'"
).message(
    "spec.model.refresh cannot be combined with spec.rollout.strategy InPlace: the pods name loaded models by spec.model.version, which a refreshed object does not change"
).field_path(".rollout.strategy"))]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// The model to serve: where it is stored, which version it is and how to verify it.
    pub model: ModelSource,

    /// Desired number of serving pods for the version receiving traffic. The scale subresource targets this
    /// field, so `kubectl scale`, a HorizontalPodAutoscaler or KEDA can drive it.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// The serving pod: the reusable ferry-server image and a small pod-level override.
    #[serde(default)]
    pub server: ServerTemplate,

    /// The ModelRuntime to serve the model with, by name. It must exist and serve spec.model.format (and the
    /// declared frameworkVersion), or nothing is deployed (reason NoRuntime). Absent: the controller chooses
    /// among the runtimes serving the format, the highest priority first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub runtime: Option<String>,

    /// How a new version is rolled out, promoted and kept for rollback.
    #[serde(default)]
    pub rollout: RolloutPolicy,

    /// Number of revisions (Deployments) kept for inspection and rollback, including warm previous
    /// versions; older ones are deleted. 0 to 100.
    #[serde(default = "default_revision_history_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub revision_history_limit: i32,
}

/// Where the model comes from and how it is checked before it serves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new(
    "!has(self.refresh) || !has(self.sha256)"
).message(
    "spec.model.refresh and spec.model.sha256 cannot both be set: sha256 pins one file, refresh follows whatever object is stored at spec.model.uri"
).field_path(".refresh"))]
#[x_kube(validation = Rule::new(
    "!has(self.storage) || self.uri.startsWith('s3://')"
).message(
    "spec.model.storage applies only to s3:// URIs (S3-compatible stores)"
).field_path(".storage"))]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    /// Name the model is served under, at /v2/models/{name}. Defaults to metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
    )]
    pub name: Option<String>,

    /// Location of the model file. Schemes: file://, http://, https://, s3://, gs:// and az://.
    /// For s3, gs and az the credentials come from credentialsSecretRef.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(
        "self.matches('^(file|http|https|s3|gs|az)://[^ ]+$')"
    ).message(
        "spec.model.uri must be a URI with one of the schemes file://, http://, https://, s3://, gs://, az:// and no spaces"
    ))]
    pub uri: String,

    /// Version of the model, free text (semantic versions or dates are recommended). Changing it rolls out
    /// a new revision. 1 to 128 characters, no leading or trailing whitespace.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^\S(.*\S)?$"))]
    pub version: String,

    /// SHA-256 of the model file as 64 lowercase hex digits. When set, ferry-server refuses to serve a file
    /// with any other digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,

    /// Format of the model file: onnx, sklearn, xgboost, lightgbm, mlflow or python. It chooses the runtime
    /// (the ModelRuntime serving it), unless spec.server.image names an image of its own.
    #[serde(default = "default_format")]
    #[schemars(extend("enum" = super::MODEL_FORMATS))]
    pub format: String,

    /// The version of the framework the model was made with, as the team declares it (e.g. "1.9.1" for a
    /// scikit-learn model): only a runtime whose range for the format contains it serves the model. A PEP 440
    /// version. Absent: any runtime serving the format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = super::VERSION_PATTERN))]
    pub framework_version: Option<String>,

    /// Secret in the same namespace whose keys become environment variables of the server, e.g.
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, GOOGLE_SERVICE_ACCOUNT, AZURE_STORAGE_ACCOUNT_KEY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,

    /// Settings for S3-compatible stores (MinIO, Ceph, ...). Only for s3:// URIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageOptions>,

    /// A golden set the model must reproduce before it receives traffic: a file of Open Inference Protocol
    /// requests with the outputs expected for each, tolerances and a required pass rate (`ferry-server golden`
    /// writes one). ferry-server runs every case after its warm-up; a version that fails them never becomes
    /// ready and its rollout is aborted with reason ValidationFailed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSource>,

    /// Follow the object stored at `uri`: the serving pods check on this schedule whether it was replaced
    /// (by its identity in the store: ETag, version id or generation, for http(s) ETag or Last-Modified;
    /// never by downloading it), and each new object rolls out as a revision of its own, pinned to that
    /// object, through the same strategy and gates as a change of `version`. The spec is never written: the
    /// object and when it was detected are in `status.refresh`, the revisions and the history. Cannot be
    /// combined with `sha256`. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshPolicy>,
}

/// How often the object at the model URI is checked for a new one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefreshPolicy {
    /// Seconds between two checks, by each serving pod of the version receiving traffic. Each check costs
    /// one HEAD request per pod per interval against the store (at the default 300, 12 per pod per hour);
    /// a new object is noticed within an interval plus about 30 seconds. 10 to 86400.
    #[serde(default = "default_refresh_interval_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub interval_seconds: i32,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            interval_seconds: default_refresh_interval_seconds(),
        }
    }
}

/// Where the golden set of a model is stored. It is fetched like the model: same schemes, same credentials
/// (credentialsSecretRef) and, for s3://, the same storage settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ValidationSource {
    /// Location of the golden-set file (JSON). Schemes: file://, http://, https://, s3://, gs:// and az://.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(
        "self.matches('^(file|http|https|s3|gs|az)://[^ ]+$')"
    ).message(
        "spec.model.validation.uri must be a URI with one of the schemes file://, http://, https://, s3://, gs://, az:// and no spaces"
    ))]
    pub uri: String,

    /// SHA-256 of the golden-set file as 64 lowercase hex digits. When set, any other file is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
}

/// A Secret in the ModelDeployment's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Connection settings for an S3-compatible object store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new(
    "!has(self.endpoint) || !self.endpoint.startsWith('http://') || (has(self.allowHttp) && self.allowHttp)"
).message(
    "spec.model.storage.allowHttp must be true to use an http:// endpoint"
).field_path(".allowHttp"))]
#[serde(rename_all = "camelCase")]
pub struct StorageOptions {
    /// Endpoint URL of the store, e.g. http://minio.storage:9000. Defaults to AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(
        "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''"
    ).message(
        "spec.model.storage.endpoint must be an http:// or https:// URL with a host"
    ))]
    pub endpoint: Option<String>,

    /// Region of the bucket, e.g. us-east-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: Option<String>,

    /// Allow a plain-http endpoint. Off by default so credentials never travel unencrypted by accident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
}

/// The serving pod template. Everything here changes the pods, so a change rolls out a new revision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServerTemplate {
    /// Serving image, overriding the runtime's. Empty: the image of the ModelRuntime chosen for the model
    /// (spec.runtime, else by spec.model.format), or, while the cluster has no ModelRuntime, the operator's
    /// configured ferry-server image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub image: Option<String>,

    /// CPU and memory of the server container. Empty: the runtime's defaults, else the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment variables of the server container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Node labels the serving pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the serving pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// How new versions are rolled out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPolicy {
    /// Rollout strategy. BlueGreen: the new version gets its own pods and receives traffic only once all of
    /// them are ready. InPlace: the running pods load the new version beside the one they serve and all switch
    /// to it together; no extra pods, but each pod needs memory for two models while it stages.
    #[serde(default)]
    pub strategy: RolloutStrategy,

    /// InPlace only: pods that stage a new version at the same time; the others keep their full capacity.
    /// 1 to 100.
    #[serde(default = "default_max_concurrent_loads")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent_loads: i32,

    /// Promote a ready candidate automatically. When false, a ready candidate waits for
    /// `kubectl ferry promote` (the first version, with nothing serving yet, is promoted at once).
    #[serde(default = "default_true")]
    pub auto_promote: bool,

    /// Hard bound, in seconds, on the whole load of a new version (download, verify, load, warm-up) however
    /// it progresses; past it the version is aborted. 1 to 86400. The default, an hour, lets a 20 GiB model
    /// come from a slow store (about 6 MB/s); `progressDeadlineSeconds` catches a load that stops moving.
    #[serde(default = "default_load_timeout_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub load_timeout_seconds: i32,

    /// Seconds a new version may go without load progress before it is aborted with ProgressDeadlineExceeded.
    /// Progress is a pod of the version that is created, starts, moves to the next load phase (downloading,
    /// verifying, loading, warming, ready) or downloads more bytes than any of its pods had before, so a pod that
    /// crash-loops and downloads the same bytes again is not progress. 10 to 86400. The default, five minutes,
    /// leaves room for a node to be added and an image pulled, while a hung download is noticed well before
    /// `loadTimeoutSeconds`.
    #[serde(default = "default_progress_deadline_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub progress_deadline_seconds: i32,

    /// Number of previous versions kept warm (running) for an instant rollback. 0 to 10.
    #[serde(default = "default_keep_previous")]
    #[schemars(range(min = 0, max = 10))]
    pub keep_previous: i32,

    /// Replicas of each warm previous version. Defaults to spec.replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub previous_replicas: Option<i32>,

    /// Let a new version change the signature clients call: rename or remove an input or output, change a
    /// datatype or a fixed dimension, add a required input. Off: such a version is held before any traffic
    /// with reason SignatureChanged, and the status lists the differences; set this to true (in the same
    /// change or later) to let it through. Compatible changes (an output added, a fixed dimension made
    /// dynamic) always pass and are noted in the history.
    #[serde(default)]
    pub allow_signature_change: bool,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            strategy: RolloutStrategy::default(),
            max_concurrent_loads: default_max_concurrent_loads(),
            auto_promote: true,
            load_timeout_seconds: default_load_timeout_seconds(),
            progress_deadline_seconds: default_progress_deadline_seconds(),
            keep_previous: default_keep_previous(),
            previous_replicas: None,
            allow_signature_change: false,
        }
    }
}

/// Rollout strategies. More (Canary) will be added; clients must tolerate new values.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RolloutStrategy {
    /// A new version runs on its own pods; traffic switches in one step once they are all ready.
    #[default]
    BlueGreen,
    /// A new version is loaded inside the running pods beside the serving one (at most
    /// `maxConcurrentLoads` pods at a time), and once every pod holds it they all switch together. The previous
    /// version stays loaded (`keepPrevious`), so a rollback is a switch, not a download. A change of the server
    /// template still rolls out blue/green.
    InPlace,
}

/// Observed state, written by the controller only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Summary of the state: Pending, Progressing, Available or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Pods of the version receiving traffic (read by the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Ready pods of the version receiving traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Label selector of the pods receiving traffic, in string form (read by the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// The revision receiving traffic through the active Service `<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<Box<RevisionStatus>>,

    /// The revision being rolled out, reachable through the preview Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Box<RevisionStatus>>,

    /// Previous revisions kept warm for an instant rollback, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<RevisionStatus>,

    /// Past rollouts, newest first, bounded by spec.revisionHistoryLimit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,

    /// In-cluster URL of the inference endpoint: the active Service `<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// In-cluster `host:port` of the gRPC inference endpoint (Open Inference Protocol,
    /// `inference.GRPCInferenceService`, plain HTTP/2) on the same Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_endpoint: Option<String>,

    /// Ready, Progressing and Degraded, following Kubernetes conventions (`kubectl wait --for=condition=Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Where following the object at spec.model.uri stands (spec.model.refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshStatus>,

    /// The latest in-place switch (strategy InPlace), as the pods recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_switch: Option<SwitchStatus>,
}

/// An in-place switch: every pod moved from one loaded version to another.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SwitchStatus {
    /// The version that served before, if any did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The version that serves since.
    pub to: String,
    /// When the first pod switched (its own clock).
    pub at: Time,
    /// Milliseconds between the first and the last pod switching, by the pods' own records: the only time two
    /// versions answer.
    pub window_milliseconds: i64,
    /// Pods that switched.
    pub pods: i32,
}

/// The state of spec.model.refresh. It lives here only: the controller never writes the spec.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RefreshStatus {
    /// The object the desired revision is pinned to, as a token (`etag:...`, `version:...` or
    /// `modified:...;size:...`); absent until a new object was detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The spec.model.uri the object was detected at; an object detected at another URI does not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// When the serving pods reported that object as new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Time>,
    /// Refresh is paused by `kubectl ferry rollback`: the rolled-back revision stays, new objects are only
    /// noted in `message`; `kubectl ferry resume` follows the newest object again.
    #[serde(default)]
    pub paused: bool,
    /// Why refresh is paused, and any newer object detected meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Summary of a ModelDeployment's state.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing serves yet and nothing is being rolled out.
    Pending,
    /// A new version is being rolled out.
    Progressing,
    /// The desired version serves with all its replicas ready.
    Available,
    /// The last rollout failed or the active revision lost ready replicas; the status says why.
    Degraded,
}

/// One revision: a version of the model on its own pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// Short hash of everything that changes the pods; the Deployment is named <name>-<revision>.
    pub revision: String,
    /// Model version.
    pub version: String,
    /// Model URI.
    pub uri: String,
    /// Expected SHA-256 of the model file, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The object in the store this revision loads: the one it is pinned to (spec.model.refresh), else the
    /// one its pods report they downloaded, as a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// When its object was detected as new (a revision made by spec.model.refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Time>,
    /// Ready pods of this revision.
    #[serde(default)]
    pub ready_replicas: i32,
    /// When this revision was last promoted (active, previous) or its rollout started (candidate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Why the candidate is where it is: Loading, WaitingForPromotion, or the abort reason
    /// (ModelLoadFailed, ProgressDeadlineExceeded, AbortedByUser).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The details of `reason`, e.g. "1/2 ready" or the server's load failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// This revision's pods by state, as the controller last read them from each pod's ferry-server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_counts: Option<PodCounts>,
    /// Every SHA-256 that a ready pod of this revision reports it serves. One value, equal to `sha256` when
    /// that is pinned; anything else is reported as Degraded with reason ServedChecksumMismatch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served_sha256: Vec<String>,
    /// Load progress of the candidate's pods together, while they load. Updated in steps of 5 percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<LoadProgress>,
    /// Each pod of this revision (at most 50, the ones not ready first); `kubectl ferry status` shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodState>,
    /// The golden-set result a pod of this revision reported (spec.model.validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationResult>,
    /// The inputs and outputs clients call, as a pod of this revision reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ModelSignature>,
    /// Differences of this revision's signature from the active one's: for a held candidate the changes that
    /// hold it, otherwise the compatible ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signature_changes: Vec<String>,
    /// What the model file says of itself, as a pod of this revision reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_info: Option<ModelInfo>,
    /// The runtime this revision's pods run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RevisionRuntime>,
}

/// The runtime a revision got.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRuntime {
    /// The ModelRuntime chosen; absent when the pods run spec.server.image, or the operator's configured image
    /// (a cluster with no ModelRuntime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The serving image the pods run.
    pub image: String,
}

/// The result of running a golden set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ValidationResult {
    /// Cases in the golden set.
    pub cases: i64,
    /// Cases the model reproduced within the tolerances.
    pub passed: i64,
    /// The largest error of a float element over every case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error: Option<f64>,
    /// The case that missed by the most, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst: Option<String>,
    /// Time the run took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// The inputs and outputs of a model.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelSignature {
    /// The inputs a request must send.
    pub inputs: Vec<TensorSignature>,
    /// The outputs a response carries.
    pub outputs: Vec<TensorSignature>,
}

/// One input or output.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TensorSignature {
    /// Name of the input or output.
    pub name: String,
    /// Open Inference Protocol datatype, e.g. FP32.
    pub datatype: String,
    /// Dimensions; -1 is dynamic.
    pub shape: Vec<i64>,
}

/// What a model file says of itself: the ONNX header, or for the Python formats the framework and the version the
/// file records (producer) with the version the runtime has (metadata runtime_version).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// The tool that wrote the file and its version, e.g. "skl2onnx 1.19.1" or "scikit-learn 1.9.1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    /// The ONNX IR version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ir_version: Option<i64>,
    /// Operator set version per domain.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub opsets: BTreeMap<String, i64>,
    /// The file's metadata_props (at most 16 entries, values cut to 256 characters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Pods of a revision by state.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodCounts {
    /// Pods starting, downloading, verifying, loading or warming up.
    pub loading: i32,
    /// Pods serving their model.
    pub ready: i32,
    /// Pods whose load failed.
    pub failed: i32,
    /// Pods whose server did not answer the controller (the last read timed out or was refused); never
    /// counted as failed.
    pub unreachable: i32,
}

/// Where a load stands: its phase and how many bytes of the model file have arrived.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LoadProgress {
    /// The least advanced load phase: Starting, Downloading, Verifying, Loading, Warming.
    pub phase: PodPhase,
    /// Bytes downloaded, rounded down to a step of 5 percent of `bytesTotal`.
    pub bytes_done: i64,
    /// Size of the model file(s), once the store reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<i64>,
    /// `bytesDone` as a percentage of `bytesTotal`, in steps of 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    /// When a pod last made progress that this status shows (a phase, a step); a restarted controller counts
    /// `progressDeadlineSeconds` from here until it sees the pods move again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_at: Option<Time>,
}

/// One serving pod as its ferry-server reports it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    /// Pod name.
    pub name: String,
    /// Starting, Downloading, Verifying, Loading, Warming, Ready, Failed or Unreachable.
    pub phase: PodPhase,
    /// SHA-256 of the model file the pod serves (ready) or downloaded (later phases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Bytes downloaded, in steps of 5 percent of `bytesTotal`, while the pod loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<i64>,
    /// Size of the model file(s), while the pod loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<i64>,
    /// When the controller first saw this pod's load running (for the rate and the estimate of the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_started_at: Option<Time>,
    /// The server's failure reason of its latest load (e.g. ChecksumMismatch), or why it is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The details of `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The versions loaded in the pod (strategy InPlace): the one serving, staged ones and previous ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<PodVersion>,
}

/// A model version loaded in a pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodVersion {
    /// Model version (spec.model.version of the revision that loaded it).
    pub version: String,
    /// Serving, Staged (loaded, not served yet) or Previous (served before, kept for a rollback).
    pub state: LoadedState,
}

/// What a loaded version is to its pod.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoadedState {
    #[default]
    Serving,
    Staged,
    Previous,
}

/// Where a serving pod stands, from the controller's reads of its ferry-server.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default,
)]
pub enum PodPhase {
    /// Created, the server not answering yet (scheduling, image pull, start-up).
    #[default]
    Starting,
    Downloading,
    Verifying,
    Loading,
    Warming,
    /// Running the golden set of spec.model.validation.
    Validating,
    Ready,
    Failed,
    /// Running, but its server did not answer the controller's last read.
    Unreachable,
}

impl PodPhase {
    /// Still on its way to ready.
    pub fn is_loading(self) -> bool {
        self < PodPhase::Ready
    }
}

/// One finished or superseded rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Revision hash.
    pub revision: String,
    /// Model version.
    pub version: String,
    /// Model URI.
    pub uri: String,
    /// Expected SHA-256 of the model file, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The object in the store the revision loaded, as a token (see RevisionStatus.object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// When its object was detected as new (spec.model.refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Time>,
    /// SHA-256 of the file its ready pods served, when they reported one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served_sha256: Vec<String>,
    /// When the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the rollout ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// How it ended: Promoted, Aborted, RolledBack or Superseded.
    pub outcome: Outcome,
    /// Details, e.g. the reason of an abort or the compatible signature changes of a promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The golden-set result of this revision, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationResult>,
}

/// How a rollout ended.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The revision received traffic.
    Promoted,
    /// The revision failed to load or missed its deadline and never received traffic.
    Aborted,
    /// Traffic went back to this earlier revision.
    RolledBack,
    /// The spec changed before the revision was promoted.
    Superseded,
}

fn default_replicas() -> i32 {
    1
}
fn default_revision_history_limit() -> i32 {
    10
}
fn default_format() -> String {
    "onnx".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_load_timeout_seconds() -> i32 {
    3600
}
fn default_progress_deadline_seconds() -> i32 {
    300
}
fn default_keep_previous() -> i32 {
    1
}
fn default_max_concurrent_loads() -> i32 {
    1
}
fn default_refresh_interval_seconds() -> i32 {
    300
}

impl ModelDeployment {
    /// Name the model is served under: spec.model.name, else metadata.name.
    pub fn served_model_name(&self) -> &str {
        self.spec
            .model
            .name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::{json, Value};

    use super::*;

    fn minimal() -> ModelDeployment {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {"model": {"uri": "file:///models/iris.onnx", "version": "1"}}
        }))
        .expect("minimal manifest parses")
    }

    #[test]
    fn omitted_fields_take_the_documented_defaults() {
        let spec = minimal().spec;
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.revision_history_limit, 10);
        assert_eq!(spec.model.format, "onnx");
        assert_eq!(spec.server, ServerTemplate::default());
        assert_eq!(
            spec.rollout,
            RolloutPolicy {
                strategy: RolloutStrategy::BlueGreen,
                max_concurrent_loads: 1,
                auto_promote: true,
                load_timeout_seconds: 3600,
                progress_deadline_seconds: 300,
                keep_previous: 1,
                previous_replicas: None,
                allow_signature_change: false,
            }
        );
    }

    /// The apiserver applies the schema's defaults and the controller applies serde's: they must agree.
    #[test]
    fn schema_defaults_are_the_serde_defaults() {
        let crd = serde_json::to_value(ModelDeployment::crd()).expect("CRD serializes");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"];
        let defaults = serde_json::to_value(minimal().spec).expect("spec serializes");
        for field in ["replicas", "revisionHistoryLimit", "rollout"] {
            assert_eq!(
                spec[field]["default"], defaults[field],
                "default of spec.{field}"
            );
        }
        assert_eq!(spec["server"]["default"], json!({}));
        assert_eq!(
            spec["model"]["properties"]["format"]["default"],
            defaults["model"]["format"]
        );
        for (field, schema) in spec["rollout"]["properties"]
            .as_object()
            .expect("rollout has properties")
        {
            if let Some(default) = schema.get("default") {
                assert_eq!(
                    default, &defaults["rollout"][field],
                    "default of spec.rollout.{field}"
                );
            }
        }
    }

    #[test]
    fn conditions_merge_by_type() {
        let crd = serde_json::to_value(ModelDeployment::crd()).expect("CRD serializes");
        let conditions = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
            ["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    }

    #[test]
    fn served_model_name_defaults_to_metadata_name() {
        let mut md = minimal();
        assert_eq!(md.served_model_name(), "iris");
        md.spec.model.name = Some("iris-classifier".into());
        assert_eq!(md.served_model_name(), "iris-classifier");
    }

    #[test]
    fn every_schema_property_is_documented() {
        fn undocumented(schema: &Value, path: &str, missing: &mut Vec<String>) {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, child) in properties {
                    let child_path = format!("{path}.{name}");
                    if child
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                    {
                        missing.push(child_path.clone());
                    }
                    undocumented(child, &child_path, missing);
                }
            }
            if let Some(items) = schema.get("items") {
                undocumented(items, &format!("{path}[]"), missing);
            }
        }
        let crd = serde_json::to_value(ModelDeployment::crd()).expect("CRD serializes");
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        undocumented(&root["properties"]["spec"], "spec", &mut missing);
        undocumented(&root["properties"]["status"], "status", &mut missing);
        assert!(
            missing.is_empty(),
            "fields without documentation: {missing:?}"
        );
    }
}
