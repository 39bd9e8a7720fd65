//! The active Service `<name>` (the active revision) and the preview Service `<name>-preview` (the candidate).
//!
//! Both expose the inference port only; the admin port (metrics, model repository) stays inside the pod.
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
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: contract::HTTP_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
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

/// Keeps of a Service only what the controller reads (its identity, labels, owners and selector) before it
/// goes into the controller's cache.
pub fn strip_for_cache(service: &mut Service) {
    service.metadata.managed_fields = None;
    service.spec = service.spec.take().map(|spec| ServiceSpec {
        selector: spec.selector,
        ..Default::default()
    });
    service.status = None;
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
        assert_eq!(ports.len(), 1, "inference port only");
        assert_eq!(ports[0].port, 8080);
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
        let mut cached = full.clone();
        strip_for_cache(&mut cached);
        assert_eq!(selected_revision(&cached).as_deref(), Some("abc"));
        assert_eq!(cached.metadata, full.metadata);
        assert_eq!(cached.spec.unwrap().ports, None);
    }
}
