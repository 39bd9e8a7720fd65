//! The admin-credential Secret of a ModelDeployment: created by the controller, never read by it (see
//! `admin_credential`). The serving pods mount it; the pod template names it, never its content.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

use crate::api::ModelDeployment;
use crate::server_contract::pod::ADMIN_CREDENTIAL_KEY;

use super::{child_labels, owner_reference};

pub fn admin_secret_name(md_name: &str) -> String {
    format!("{md_name}-ferry-admin")
}

/// The Secret holding `credential`, owned by `md` so the garbage collector deletes it with the ModelDeployment.
pub fn desired_admin_secret(md: &ModelDeployment, credential: &str) -> Secret {
    let name = md.metadata.name.clone().unwrap_or_default();
    Secret {
        metadata: ObjectMeta {
            name: Some(admin_secret_name(&name)),
            namespace: md.metadata.namespace.clone(),
            labels: Some(child_labels(&name, None)),
            owner_references: Some(vec![owner_reference(md)]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            ADMIN_CREDENTIAL_KEY.to_owned(),
            ByteString(credential.as_bytes().to_vec()),
        )])),
        // Not immutable: the kubelet stops watching an immutable Secret, so a re-created one (a rotation) would
        // never reach the running pods' files.
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_owned_named_after_its_model_deployment_and_holds_only_the_credential() {
        let mut md = ModelDeployment::new(
            "iris",
            serde_json::from_value(serde_json::json!({
                "model": {"uri": "s3://m/iris.onnx", "version": "1"}
            }))
            .unwrap(),
        );
        md.metadata.namespace = Some("team-a".into());
        md.metadata.uid = Some("uid-1".into());
        let secret = desired_admin_secret(&md, "id.secret");
        assert_eq!(secret.metadata.name.as_deref(), Some("iris-ferry-admin"));
        assert_eq!(secret.metadata.owner_references.unwrap()[0].uid, "uid-1");
        let data = secret.data.unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data["token"].0, b"id.secret");
        assert_eq!(
            secret.immutable, None,
            "running pods must see a rotated Secret"
        );
    }
}
