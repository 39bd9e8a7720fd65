//! Which ModelDeployments a watch event concerns: owners of children, those a ModelRuntime may serve, and relists
//! once they are complete.

use std::collections::HashSet;

use futures::Stream;
use kube::runtime::controller::{ReconcileReason, ReconcileRequest};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Resource;

use futures::StreamExt;
use kube::ResourceExt;

use crate::api::{ModelDeployment, ModelRuntime};
use crate::catalogue;
use crate::children::pod::CachedPod;

/// The reconcile requests of a reflected stream: `map` says which ModelDeployments an object concerns. The
/// requests of a relist are sent when it is done, as that is when the store holds its objects.
pub(super) fn requests<K, S>(
    events: S,
    include_deleted: bool,
    map: impl Fn(&K) -> Vec<ReconcileRequest<ModelDeployment>> + Send + 'static,
) -> impl Stream<Item = Result<ReconcileRequest<ModelDeployment>, watcher::Error>> + Send + 'static
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut relisted: HashSet<ReconcileRequest<ModelDeployment>> = HashSet::new();
    events
        .map(move |event| {
            let ready: Vec<Result<_, watcher::Error>> = match event {
                Ok(watcher::Event::Apply(object)) => map(&object).into_iter().map(Ok).collect(),
                Ok(watcher::Event::Delete(object)) if include_deleted => {
                    map(&object).into_iter().map(Ok).collect()
                }
                Ok(watcher::Event::Delete(_)) => Vec::new(),
                Ok(watcher::Event::Init) => {
                    relisted.clear();
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(object)) => {
                    relisted.extend(map(&object));
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => relisted.drain().map(Ok).collect(),
                Err(error) => vec![Err(error)],
            };
            futures::stream::iter(ready)
        })
        .flatten()
}

pub(super) fn related<K: Resource<DynamicType = ()>>(
    object: &K,
    owner: ObjectRef<ModelDeployment>,
) -> ReconcileRequest<ModelDeployment> {
    ReconcileRequest {
        obj_ref: owner,
        reason: ReconcileReason::RelatedObjectUpdated {
            obj_ref: Box::new(ObjectRef::from_obj(object).erase()),
        },
    }
}

/// The ModelDeployments an object names as its owners.
pub(super) fn owners<K: Resource<DynamicType = ()>>(
    object: &K,
) -> Vec<ReconcileRequest<ModelDeployment>> {
    let namespace = object.meta().namespace.as_deref();
    object
        .owner_references()
        .iter()
        .filter_map(|owner| ObjectRef::from_owner_ref(namespace, owner, ()))
        .map(|owner| related(object, owner))
        .collect()
}

/// The ModelDeployment a pod belongs to, by its label (pods are owned by ReplicaSets).
pub(super) fn pod_owner(pod: &CachedPod) -> Vec<ReconcileRequest<ModelDeployment>> {
    let (Some(owner), Some(namespace)) = (
        pod.labels.owner.as_deref(),
        pod.metadata.namespace.as_deref(),
    ) else {
        return Vec::new();
    };
    vec![related(pod, ObjectRef::new(owner).within(namespace))]
}

/// The ModelDeployments a change of `runtime` may concern (`catalogue::may_affect`), among those the scope holds.
pub(super) fn affected(
    model_deployments: &Store<ModelDeployment>,
    runtime: &ModelRuntime,
) -> Vec<ReconcileRequest<ModelDeployment>> {
    model_deployments
        .state()
        .iter()
        .filter(|md| catalogue::may_affect(md, runtime))
        .map(|md| related(runtime, ObjectRef::from_obj(&**md)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, owner: &str) -> CachedPod {
        let mut pod: CachedPod = serde_json::from_value(serde_json::json!({"metadata": {
            "name": name, "namespace": "ml", "labels": {crate::labels::MODEL_DEPLOYMENT: owner}}}))
        .unwrap();
        pod.strip();
        pod
    }

    #[tokio::test]
    async fn a_relist_triggers_once_it_is_complete_and_once_per_owner() {
        use watcher::Event::*;
        let events = futures::stream::iter(vec![
            Ok(Init),
            Ok(InitApply(pod("a-1", "a"))),
            Ok(InitApply(pod("a-2", "a"))),
            Ok(InitApply(pod("b-1", "b"))),
            Ok(InitDone),
            Ok(Apply(pod("c-1", "c"))),
            Ok(Delete(pod("a-1", "a"))),
        ]);
        let names: Vec<(usize, String)> = requests(events, true, pod_owner)
            .enumerate()
            .map(|(i, request)| (i, request.unwrap().obj_ref.name))
            .collect()
            .await;
        let mut relisted: Vec<&str> = names[..2].iter().map(|(_, n)| n.as_str()).collect();
        relisted.sort();
        assert_eq!(relisted, ["a", "b"]);
        assert_eq!(names[2].1, "c");
        assert_eq!(names[3].1, "a", "a deleted child triggers its owner");
        assert_eq!(names.len(), 4);
    }
}
