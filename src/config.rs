//! Operator-level configuration: what every ModelDeployment gets unless its spec says otherwise.

use k8s_openapi::api::core::v1::ResourceRequirements;

use crate::admin_credential::AdminKey;

/// Settings that come from the operator's flags (and, through the Helm chart, from values.yaml).
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorConfig {
    /// Image used while the cluster has no ModelRuntime (and spec.server.image is empty).
    pub server_image: String,
    /// Pull policy of the serving image (IfNotPresent, Always, Never), and of a ModelRuntime's that names none.
    pub server_image_pull_policy: String,
    /// Resources used when neither spec.server.resources nor the chosen ModelRuntime's are set.
    pub server_resources: Option<ResourceRequirements>,
    /// Model formats `server_image` can run (ferry-server: onnx), while the cluster has no ModelRuntime; a spec of
    /// another format then gets NoRuntime and nothing is deployed.
    pub server_formats: Vec<String>,
    /// Cluster domain used in status.endpoint.
    pub cluster_domain: String,
    /// Key the serving pods' admin credentials are derived from (`admin_credential`).
    pub admin_key: AdminKey,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            server_image: "ferry-server:0.1.0".into(),
            server_image_pull_policy: "IfNotPresent".into(),
            server_resources: None,
            server_formats: vec!["onnx".into()],
            cluster_domain: "cluster.local".into(),
            // Random per process: enough for in-process controllers; `ferry run` reads a key file.
            admin_key: AdminKey::random(),
        }
    }
}
