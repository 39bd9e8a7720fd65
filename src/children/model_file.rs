//! The ConfigMap `<name>-ferry-model` of a ModelDeployment with strategy InPlace: the model every serving pod
//! loads when it starts (`FERRY_MODEL_FILE`, so a new or restarted pod serves the version last switched to, even
//! while the controller is down), and beside it the in-place state the controller keeps in the cluster: which
//! model revision serves, and each model revision's marks (when it was promoted, when its staging started, why it
//! was aborted), as a revision's Deployment keeps them for blue/green.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::deployment::StoredAbort;
use super::{child_labels, owner_reference};
use crate::api::ModelDeployment;
use crate::rollout::{ModelIdentity, RevisionMarks};
use crate::server_contract::{pod, DesiredModel};

/// The annotation holding [`InPlaceState`] as JSON.
pub const STATE_ANNOTATION: &str = "ferry.dev/in-place";

pub fn name(md_name: &str) -> String {
    format!("{md_name}-ferry-model")
}

/// The in-place state of one pod set (the Deployment whose pods switch between model revisions).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceState {
    /// The pod set's revision (its Deployment is `<name>-<podSet>`).
    pub pod_set: String,
    /// The model revision that serves: the one switched to last.
    pub active: String,
    /// Model revisions known on this pod set, newest last.
    pub revisions: Vec<ModelRecord>,
}

/// One model revision: a model the pods of the pod set load, serve or once served.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelRecord {
    pub revision: String,
    pub model: DesiredModel,
    pub created_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<StoredAbort>,
}

impl ModelRecord {
    pub fn new(revision: String, model: DesiredModel, now: Timestamp) -> ModelRecord {
        ModelRecord {
            revision,
            model,
            created_at: Time(now),
            promoted_at: None,
            rollout_started_at: None,
            aborted: None,
        }
    }

    pub fn marks(&self) -> RevisionMarks {
        RevisionMarks {
            promoted_at: self.promoted_at.as_ref().map(|t| t.0),
            rollout_started_at: self.rollout_started_at.as_ref().map(|t| t.0),
            aborted: self.aborted.clone().map(StoredAbort::into_mark),
        }
    }

    pub fn set_marks(&mut self, marks: &RevisionMarks) {
        self.promoted_at = marks.promoted_at.map(Time);
        self.rollout_started_at = marks.rollout_started_at.map(Time);
        self.aborted = marks.aborted.as_ref().map(StoredAbort::from_mark);
    }

    pub fn identity(&self) -> ModelIdentity {
        ModelIdentity {
            version: self.model.version.clone(),
            uri: self.model.uri.clone(),
            sha256: self.model.sha256.clone(),
            object: self.model.object.clone(),
            detected_at: None,
        }
    }
}

impl InPlaceState {
    pub fn find(&self, revision: &str) -> Option<&ModelRecord> {
        self.revisions.iter().find(|r| r.revision == revision)
    }

    /// The model that serves, which new pods load.
    pub fn active_model(&self) -> Option<&DesiredModel> {
        self.find(&self.active).map(|r| &r.model)
    }
}

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
                STATE_ANNOTATION.to_owned(),
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

/// The state a ConfigMap holds; None when it holds none this build can read.
pub fn observe(config_map: &ConfigMap) -> Option<InPlaceState> {
    let json = config_map
        .metadata
        .annotations
        .as_ref()?
        .get(STATE_ANNOTATION)?;
    serde_json::from_str(json).ok()
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
    use crate::rollout::{AbortMark, AbortReason};

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
        let read = observe(&config_map).unwrap();
        assert_eq!(read, state);
        assert_eq!(read.revisions[0].marks(), record.marks());
        assert_eq!(
            read.revisions[0].marks().aborted.unwrap().reason,
            AbortReason::OutOfMemory
        );
    }
}
