//! The CustomResourceDefinitions generated from the Rust types.
//!
//! `crds/` and the chart's `crds/` hold this output; a test fails when either drifts from the types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{model_runtime_crd, ModelDeployment};

/// Header of every generated file, so nobody edits one by hand.
const GENERATED_HEADER: &str = "# Generated from the Rust types by `ferry crd`. Do not edit: change src/api/ and regenerate.\n";

/// Every CRD Ferry installs.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![ModelDeployment::crd(), model_runtime_crd()]
}

/// One generated file: its name inside `crds/` and its YAML.
pub struct GeneratedFile {
    pub file_name: String,
    pub yaml: String,
}

/// The files of `crds/`, one per CRD, named after the CRD.
pub fn files() -> Result<Vec<GeneratedFile>, serde_yaml::Error> {
    all()
        .into_iter()
        .map(|crd| {
            let file_name = format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("crd"));
            let yaml = format!("{GENERATED_HEADER}{}", serde_yaml::to_string(&crd)?);
            Ok(GeneratedFile { file_name, yaml })
        })
        .collect()
}
