//! The ConfigMap `<name>-ferry-model` of a ModelDeployment with strategy InPlace: the model every serving pod
//! loads when it starts (`FERRY_MODEL_FILE`, so a new or restarted pod serves the version last switched to, even
//! while the controller is down), and beside it the in-place state the controller keeps in the cluster: which
//! model revision serves, and each model revision's marks (when it was promoted, when its staging started, why it
//! was aborted), as a revision's Deployment keeps them for blue/green.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{child_labels, owner_reference};
use crate::api::ModelDeployment;
use crate::labels::annotations;
use crate::observed::Persisted;
pub use crate::observed::{InPlaceState, ModelRecord};
use crate::server_contract::pod;

pub use crate::observed::in_place_config_map as name;

/// The ConfigMap holding `state`: its active model as the file the pods load, the state as an annotation.
pub fn desired(md: &ModelDeployment, state: &InPlaceState) -> ConfigMap {
    let md_name = md.metadata.name.clone().unwrap_or_default();
    let model = state.active_model().cloned().unwrap_or_default();
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name(&md_name)),
            namespace: md.metadata.namespace.clone(),
            labels: Some(child_labels(&md_name, None)),
            annotations: Some(BTreeMap::from([(
                annotations::IN_PLACE_STATE.to_owned(),
                serde_json::to_string(state).expect("the in-place state serializes"),
            )])),
            owner_references: Some(vec![owner_reference(md)]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            pod::DESIRED_MODEL_KEY.to_owned(),
            serde_json::to_string(&model).expect("a model serializes"),
        )])),
        ..Default::default()
    }
}

/// The state the ConfigMap holds, if it is there; `Unreadable` (with why) when it holds none this build can
/// read, never a state made up in its place.
pub fn observe(config_map: Option<&ConfigMap>) -> Persisted<InPlaceState> {
    let Some(config_map) = config_map else {
        return Persisted::Missing;
    };
    let json = config_map
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::IN_PLACE_STATE));
    match json.map(|json| serde_json::from_str(json)) {
        Some(Ok(state)) => Persisted::Read(state),
        Some(Err(error)) => Persisted::Unreadable(error.to_string()),
        None => Persisted::Unreadable("the annotation is missing".into()),
    }
}

/// Drops what the controller never reads back (managed fields, the data, which the state repeats).
pub fn strip_for_cache(config_map: &mut ConfigMap) {
    config_map.metadata.managed_fields = None;
    config_map.data = None;
    config_map.binary_data = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::{AbortMark, AbortReason, RevisionMarks};
    use crate::server_contract::DesiredModel;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn the_state_and_the_model_file_round_trip_through_the_config_map() {
        let md: ModelDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml", "uid": "u"},
            "spec": {"model": {"uri": "s3://m/1.onnx", "version": "1"}}
        }))
        .unwrap();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let model = DesiredModel {
            uri: "s3://m/2.onnx".into(),
            version: "2".into(),
            ..Default::default()
        };
        let mut record = ModelRecord::new("abc".into(), model.clone(), now);
        record.set_marks(&RevisionMarks {
            promoted_at: Some(now),
            rollout_started_at: None,
            aborted: Some(AbortMark {
                reason: AbortReason::OutOfMemory,
                message: "pod iris-1 ran out of memory".into(),
                generation: 3,
            }),
        });
        let state = InPlaceState {
            pod_set: "p".into(),
            active: "abc".into(),
            revisions: vec![record.clone()],
        };
        let mut config_map = desired(&md, &state);
        let file: DesiredModel =
            serde_json::from_str(&config_map.data.as_ref().unwrap()[pod::DESIRED_MODEL_KEY])
                .unwrap();
        assert_eq!(file, model, "the pods load the active model");
        strip_for_cache(&mut config_map);
        let Persisted::Read(read) = observe(Some(&config_map)) else {
            panic!("the state reads back")
        };
        assert_eq!(read, state);
        assert_eq!(read.revisions[0].marks(), record.marks());
        assert_eq!(
            read.revisions[0].marks().aborted.unwrap().reason,
            AbortReason::OutOfMemory
        );
    }

    #[test]
    fn a_missing_or_garbled_state_is_said_so_never_read_as_a_state() {
        let with = |annotations: Option<BTreeMap<String, String>>| ConfigMap {
            metadata: ObjectMeta {
                annotations,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(observe(None), Persisted::Missing);
        assert_eq!(
            observe(Some(&with(None))),
            Persisted::Unreadable("the annotation is missing".into())
        );
        let garbled = with(Some(BTreeMap::from([(
            annotations::IN_PLACE_STATE.to_owned(),
            "{\"podSet\": 3}".to_owned(),
        )])));
        assert!(
            matches!(observe(Some(&garbled)), Persisted::Unreadable(why) if why.contains("invalid type")),
            "{:?}",
            observe(Some(&garbled))
        );
    }
}
