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

/// The two labels the controller reads of a cached Deployment or Pod, kept out of its metadata: a label map is a
/// B-tree node of half a kilobyte even for one entry, and there is one per cached object.
#[derive(Clone, Debug, Default)]
pub struct OwnerLabels {
    /// `ferry.dev/model-deployment`: the owner's name.
    pub owner: Option<String>,
    /// `ferry.dev/revision`.
    pub revision: Option<String>,
}

impl OwnerLabels {
    /// Takes the two labels out of `meta`, dropping the others.
    pub fn take(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Self {
        let mut labels = meta.labels.take().unwrap_or_default();
        OwnerLabels {
            owner: labels.remove(labels::MODEL_DEPLOYMENT),
            revision: labels.remove(labels::REVISION),
        }
    }

    /// The labels as the object's metadata had them (the two kept).
    pub fn to_labels(&self) -> Option<BTreeMap<String, String>> {
        let labels: BTreeMap<String, String> = [
            (labels::MODEL_DEPLOYMENT, &self.owner),
            (labels::REVISION, &self.revision),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_owned(), value.clone()?)))
        .collect();
        (!labels.is_empty()).then_some(labels)
    }
}

/// A cached kind whose objects name the ModelDeployment they belong to.
pub trait Owned {
    /// The owner's name (label `ferry.dev/model-deployment`).
    fn owner(&self) -> Option<&str>;
}

/// Implements `kube::Resource` for the form of a Kubernetes kind that the controller's cache keeps: the same API
/// (kind, group, version, plural), fewer fields. A cache of full objects pays for every optional field of a kind
/// (a Deployment is 2.4 kB before a single string, its empty pod template included); its cached form only for
/// what the controller reads.
macro_rules! cached_kind {
    ($cached:ty, $full:ty) => {
        impl kube::Resource for $cached {
            type DynamicType = ();
            type Scope = <$full as kube::Resource>::Scope;

            fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
                <$full as kube::Resource>::kind(dt)
            }

            fn group(dt: &()) -> std::borrow::Cow<'_, str> {
                <$full as kube::Resource>::group(dt)
            }

            fn version(dt: &()) -> std::borrow::Cow<'_, str> {
                <$full as kube::Resource>::version(dt)
            }

            fn api_version(dt: &()) -> std::borrow::Cow<'_, str> {
                <$full as kube::Resource>::api_version(dt)
            }

            fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
                <$full as kube::Resource>::plural(dt)
            }

            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }

            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
use cached_kind;

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
