//! The objects a ModelDeployment owns, one file per kind: how each is built from the spec (pure `desired_*`
//! functions) and how the observed ones are read back.

pub mod deployment;
pub mod model_file;
pub mod pod;
pub mod secret;
pub mod service;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::api::ModelDeployment;
use crate::labels;

/// Labels of every child: the owner's name, and the standard app.kubernetes.io set.
pub fn child_labels(md_name: &str, version: Option<&str>) -> BTreeMap<String, String> {
    let mut child = BTreeMap::from([
        (labels::MODEL_DEPLOYMENT.to_owned(), md_name.to_owned()),
        (labels::APP_NAME.to_owned(), "ferry-server".to_owned()),
        (labels::APP_INSTANCE.to_owned(), md_name.to_owned()),
        (
            labels::APP_MANAGED_BY.to_owned(),
            labels::MANAGED_BY.to_owned(),
        ),
    ]);
    if let Some(version) = version.filter(|v| labels::is_label_value(v)) {
        child.insert(labels::APP_VERSION.to_owned(), version.to_owned());
    }
    child
}

/// The controller reference that makes the garbage collector delete children with their ModelDeployment.
pub fn owner_reference(md: &ModelDeployment) -> OwnerReference {
    OwnerReference {
        api_version: ModelDeployment::api_version(&()).into_owned(),
        kind: ModelDeployment::kind(&()).into_owned(),
        name: md.metadata.name.clone().unwrap_or_default(),
        uid: md.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}
