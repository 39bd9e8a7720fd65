//! Label and annotation keys Ferry puts on the objects it owns.

/// On every child: the owning ModelDeployment's name.
pub const MODEL_DEPLOYMENT: &str = "ferry.dev/model-deployment";
/// On Deployments and their pods: the revision hash.
pub const REVISION: &str = "ferry.dev/revision";
/// Standard labels, so generic tooling recognises the children.
pub const APP_NAME: &str = "app.kubernetes.io/name";
pub const APP_INSTANCE: &str = "app.kubernetes.io/instance";
pub const APP_VERSION: &str = "app.kubernetes.io/version";
pub const APP_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "ferry";

/// A revision label value that no revision has: a Service selecting it selects no pods.
pub const NO_REVISION: &str = "none";

/// Annotations on a revision's Deployment.
pub mod annotations {
    /// The InPlace state, as JSON, on the ModelDeployment's ConfigMap `<name>-ferry-model`.
    pub const IN_PLACE_STATE: &str = "ferry.dev/in-place";
    /// The model version (free text, so not a label).
    pub const VERSION: &str = "ferry.dev/version";
    pub const URI: &str = "ferry.dev/uri";
    pub const SHA256: &str = "ferry.dev/sha256";
    /// JSON of the spec parts (model, server) this revision was made from, for `kubectl ferry rollback`.
    pub const SOURCE_SPEC: &str = "ferry.dev/source-spec";
    /// Controller marks (see `rollout::RevisionMarks`).
    pub const PROMOTED_AT: &str = "ferry.dev/promoted-at";
    pub const ROLLOUT_STARTED_AT: &str = "ferry.dev/rollout-started-at";
    pub const ABORTED: &str = "ferry.dev/aborted";
    /// The ModelRuntime the revision's pods were made with (absent: spec.server.image or the operator's image).
    pub const RUNTIME: &str = "ferry.dev/runtime";
    /// The serving image the revision's pods run.
    pub const RUNTIME_IMAGE: &str = "ferry.dev/runtime-image";
    /// The object the revision is pinned to (spec.model.refresh), as a token.
    pub const OBJECT: &str = "ferry.dev/object";
    /// When that object was detected as new.
    pub const DETECTED_AT: &str = "ferry.dev/detected-at";
}

/// Annotations a user (or `kubectl ferry`) sets on a ModelDeployment.
pub mod requests {
    /// `kubectl ferry promote`: the candidate revision to promote when autoPromote is false.
    pub const PROMOTE: &str = "ferry.dev/promote";
    /// `kubectl ferry abort`: the candidate revision to abort.
    pub const ABORT: &str = "ferry.dev/abort";
    /// `kubectl ferry rotate`: any new value makes the controller re-create a missing admin-credential Secret now
    /// (the plugin deletes the Secret first).
    pub const ROTATE_CREDENTIAL: &str = "ferry.dev/rotate-credential";
    /// `kubectl ferry rollback` of a ModelDeployment with spec.model.refresh: the revision rolled back to, kept
    /// (refresh paused) until `kubectl ferry resume` removes this annotation.
    pub const REFRESH_PIN: &str = "ferry.dev/refresh-pin";
}

/// The label selector of one revision's pods, in string form.
pub fn selector_string(model_deployment: &str, revision: &str) -> String {
    format!("{MODEL_DEPLOYMENT}={model_deployment},{REVISION}={revision}")
}

/// Whether `value` can be a label value (63 characters of [A-Za-z0-9._-], alphanumeric at both ends).
pub fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}
