//! The active Service `<name>` (the active revision) and the preview Service `<name>-preview` (the candidate).
//!
//! Both expose the inference ports only, REST (`http`) and gRPC (`grpc`); the admin port (metrics, model
//! repository) stays inside the pod.
//! Switching traffic is a single write of a Service's selector.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::ModelDeployment;
use crate::labels;
use crate::server_contract as contract;

use super::{child_labels, owner_reference};

pub fn active_name(md_name: &str) -> String {
    md_name.to_owned()
}

pub fn preview_name(md_name: &str) -> String {
    format!("{md_name}-preview")
}

/// A Service named `name` that selects the pods of `revision`, or no pods at all.
pub fn desired_service(md: &ModelDeployment, name: String, revision: Option<&str>) -> Service {
    let md_name = md.metadata.name.clone().unwrap_or_default();
    Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: md.metadata.namespace.clone(),
            labels: Some(child_labels(&md_name, None)),
            owner_references: Some(vec![owner_reference(md)]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(BTreeMap::from([
                (labels::MODEL_DEPLOYMENT.to_owned(), md_name),
                (
                    labels::REVISION.to_owned(),
                    revision.unwrap_or(labels::NO_REVISION).to_owned(),
                ),
            ])),
            ports: Some(inference_ports()),
            ..Default::default()
        }),
        status: None,
    }
}

/// The ports a Service exposes: REST and gRPC inference.
fn inference_ports() -> Vec<ServicePort> {
    vec![
        ServicePort {
            name: Some("http".into()),
            port: contract::HTTP_PORT,
            target_port: Some(IntOrString::String("http".into())),
            protocol: Some("TCP".into()),
            app_protocol: Some("http".into()),
            ..Default::default()
        },
        ServicePort {
            name: Some(contract::GRPC_PORT_NAME.into()),
            port: contract::GRPC_PORT,
            target_port: Some(IntOrString::String(contract::GRPC_PORT_NAME.into())),
            protocol: Some("TCP".into()),
            app_protocol: Some(contract::GRPC_APP_PROTOCOL.into()),
            ..Default::default()
        },
    ]
}

/// The revision a Service selects, if it selects one.
pub fn selected_revision(service: &Service) -> Option<String> {
    service
        .spec
        .as_ref()?
        .selector
        .as_ref()?
        .get(labels::REVISION)
        .filter(|r| r.as_str() != labels::NO_REVISION)
        .cloned()
}

/// Whether a Service exposes the ports this release of the operator gives it (a Service made by an earlier
/// release may lack the gRPC port).
pub fn has_current_ports(service: &Service) -> bool {
    let names = |ports: Option<&Vec<ServicePort>>| -> Vec<Option<String>> {
        ports
            .map(|ports| ports.iter().map(|p| p.name.clone()).collect())
            .unwrap_or_default()
    };
    names(service.spec.as_ref().and_then(|s| s.ports.as_ref())) == names(Some(&inference_ports()))
}

/// A Service as the controller's cache keeps it: its identity and owners, the revision its selector names and
/// whether its ports are this release's, filled straight from the watch (a selector map and a port list cost
/// about 800 bytes a Service; the controller reads one value of each).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct CachedService {
    pub metadata: ObjectMeta,
    /// As the watch delivers it; dropped once stripped.
    #[serde(default)]
    spec: Option<CachedServiceSpec>,
    /// The selector's `ferry.dev/revision` value.
    #[serde(skip)]
    selected: Option<String>,
    /// Whether the port names are this release's ([`has_current_ports`]).
    #[serde(skip)]
    current_ports: bool,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
struct CachedServiceSpec {
    #[serde(default)]
    selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    ports: Option<Vec<CachedServicePort>>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
struct CachedServicePort {
    #[serde(default)]
    name: Option<String>,
}

super::cached_kind!(CachedService, Service);

impl CachedService {
    /// Drops what the watch delivered that is never read: the cache finds a Service by its name and its owner by
    /// its owner reference.
    pub fn strip(&mut self) {
        let meta = &mut self.metadata;
        meta.managed_fields = None;
        meta.labels = None;
        meta.annotations = None;
        if let Some(spec) = self.spec.take() {
            self.selected = spec
                .selector
                .and_then(|mut selector| selector.remove(labels::REVISION));
            let names: Vec<Option<String>> = spec
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.name)
                .collect();
            self.current_ports = names
                == inference_ports()
                    .into_iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>();
        }
    }

    /// The Service with what the cache holds.
    pub fn to_service(&self) -> Service {
        Service {
            metadata: self.metadata.clone(),
            spec: Some(ServiceSpec {
                selector: self.selected.as_ref().map(|revision| {
                    BTreeMap::from([(labels::REVISION.to_owned(), revision.clone())])
                }),
                // The current ports by name, or none: what `has_current_ports` tells apart.
                ports: self.current_ports.then(inference_ports),
                ..Default::default()
            }),
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ModelDeploymentSpec;

    #[test]
    fn a_service_without_a_target_selects_no_revision() {
        let md = ModelDeployment::new(
            "iris",
            serde_json::from_value::<ModelDeploymentSpec>(
                serde_json::json!({"model": {"uri": "file:///m", "version": "1"}}),
            )
            .unwrap(),
        );
        let empty = desired_service(&md, active_name("iris"), None);
        assert_eq!(selected_revision(&empty), None);
        let targeted = desired_service(&md, preview_name("iris"), Some("abc"));
        assert_eq!(targeted.metadata.name.as_deref(), Some("iris-preview"));
        assert_eq!(selected_revision(&targeted).as_deref(), Some("abc"));
        let ports = targeted.spec.unwrap().ports.unwrap();
        let exposed: Vec<(Option<&str>, i32, Option<&str>)> = ports
            .iter()
            .map(|p| (p.name.as_deref(), p.port, p.app_protocol.as_deref()))
            .collect();
        assert_eq!(
            exposed,
            [
                (Some("http"), 8080, Some("http")),
                (Some("grpc"), 8082, Some("kubernetes.io/h2c"))
            ],
            "the inference ports only, never the admin port"
        );
    }

    #[test]
    fn the_cached_service_keeps_its_selector() {
        let md = ModelDeployment::new(
            "iris",
            serde_json::from_value::<ModelDeploymentSpec>(
                serde_json::json!({"model": {"uri": "file:///m", "version": "1"}}),
            )
            .unwrap(),
        );
        let full = desired_service(&md, active_name("iris"), Some("abc"));
        let mut from_watch: CachedService =
            serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        from_watch.strip();
        let cached = from_watch.to_service();
        assert_eq!(selected_revision(&cached).as_deref(), Some("abc"));
        assert_eq!(cached.metadata.name, full.metadata.name);
        assert_eq!(
            cached.metadata.owner_references,
            full.metadata.owner_references
        );
        assert!(has_current_ports(&cached), "the port names are kept");
        let mut older = cached.clone();
        older.spec.as_mut().unwrap().ports.as_mut().unwrap().pop();
        assert!(
            !has_current_ports(&older),
            "a Service of an earlier release is applied again"
        );
        let mut earlier = full.clone();
        earlier.spec.as_mut().unwrap().ports.as_mut().unwrap().pop();
        let mut from_watch: CachedService =
            serde_json::from_value(serde_json::to_value(&earlier).unwrap()).unwrap();
        from_watch.strip();
        assert!(
            !has_current_ports(&from_watch.to_service()),
            "the cache tells a Service of an earlier release apart"
        );
        let empty = desired_service(&md, preview_name("iris"), None);
        let mut from_watch: CachedService =
            serde_json::from_value(serde_json::to_value(&empty).unwrap()).unwrap();
        from_watch.strip();
        assert_eq!(selected_revision(&from_watch.to_service()), None);
    }
}
