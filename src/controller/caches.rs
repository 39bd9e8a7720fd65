//! The caches a reconcile reads instead of the API server: reflector stores filled by the watches, stripped of
//! what the controller never reads, with the newest resourceVersion each applied, and what a reconcile wrote so
//! that the next one can wait until the caches hold it.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, Shared};
use futures::Stream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use futures::{FutureExt, TryStreamExt};
use kube::runtime::WatchStreamExt;

use crate::api::{ModelDeployment, ModelRuntime};
use crate::children::deployment::CachedDeployment;
use crate::children::pod::CachedPod;
use crate::children::service::CachedService;
use crate::children::Owned;

/// How long a reconcile waits for the caches to catch up with the previous reconcile's writes before it goes
/// on with what they hold (a watch that reconnects can take longer; the events it then delivers trigger again).
pub(super) const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(3);

/// One watched kind as its reflector holds it, with the newest resourceVersion applied to it.
pub(super) struct Cache<K: Resource + Clone + 'static>
where
    K::DynamicType: std::hash::Hash + Eq,
{
    pub(super) store: Store<K>,
    /// The newest resourceVersion of an event applied to the store. A watch delivers its events in
    /// resourceVersion order, so once this reaches a write's resourceVersion the store holds that write (or
    /// something newer).
    pub(super) applied: AtomicU64,
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    pub(super) fn new(store: Store<K>) -> Self {
        Self {
            store,
            applied: AtomicU64::new(0),
        }
    }

    pub(super) fn has_applied(&self, resource_version: u64) -> bool {
        self.applied.load(Ordering::Acquire) >= resource_version
    }

    /// The objects of a ModelDeployment (by label) in a namespace, by name: the order a LIST returns them in.
    pub(super) fn owned_by(&self, namespace: &str, md_name: &str) -> Vec<Arc<K>>
    where
        K: Owned,
    {
        let mut owned = self.store.state_filter(|object| {
            object.meta().namespace.as_deref() == Some(namespace) && object.owner() == Some(md_name)
        });
        owned.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
        owned
    }

    pub(super) fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }
}

/// The watched objects of one scope.
pub(super) struct Caches {
    pub(super) model_deployments: Cache<ModelDeployment>,
    pub(super) deployments: Cache<CachedDeployment>,
    pub(super) pods: Cache<CachedPod>,
    pub(super) services: Cache<CachedService>,
    /// The ConfigMaps of strategy InPlace (`children::model_file`).
    pub(super) config_maps: Cache<ConfigMap>,
    /// The runtime catalogue (cluster-scoped; the ones the runtime selector selects).
    pub(super) model_runtimes: Cache<ModelRuntime>,
    /// Resolves (true) once the Deployment, Pod, Service, ConfigMap and ModelRuntime caches hold their first
    /// complete list, or (false) when one of them closed before: an empty catalogue not read yet would pass for
    /// none at all. Any number of reconciles can wait on it, whereas a store's own
    /// `wait_until_ready` wakes only one of its waiters. The ModelDeployment cache is ready before any reconcile
    /// starts: the applier waits for it.
    pub(super) children_ready: Shared<BoxFuture<'static, bool>>,
    /// Notified after every event applied to any of the caches.
    pub(super) changed: Notify,
}

impl Caches {
    /// Whether the caches hold at least what `written` says was written.
    pub(super) fn hold(&self, namespace: &str, written: &Written) -> bool {
        self.model_deployments.has_applied(written.model_deployment)
            && self.deployments.has_applied(written.deployments)
            && self.services.has_applied(written.services)
            && self.config_maps.has_applied(written.config_maps)
            && written
                .deleted
                .iter()
                .all(|name| self.deployments.get(namespace, name).is_none())
    }
}

/// The resourceVersion of an object, as a number (0 when it has none or it is not a number: nothing to wait
/// for then).
pub(super) fn resource_version(meta: &ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|version| version.parse().ok())
        .unwrap_or(0)
}

/// What one reconcile wrote: the newest resourceVersion its writes returned, per kind, and the Deployments it
/// deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Written {
    pub(super) model_deployment: u64,
    pub(super) deployments: u64,
    pub(super) services: u64,
    pub(super) config_maps: u64,
    pub(super) deleted: Vec<String>,
}

impl Written {
    pub(super) fn is_empty(&self) -> bool {
        *self == Written::default()
    }

    pub(super) fn model_deployment(&mut self, md: &ModelDeployment) {
        self.model_deployment = self.model_deployment.max(resource_version(&md.metadata));
    }

    pub(super) fn deployment(&mut self, deployment: &Deployment) {
        self.deployments = self.deployments.max(resource_version(&deployment.metadata));
    }

    pub(super) fn service(&mut self, service: &Service) {
        self.services = self.services.max(resource_version(&service.metadata));
    }

    pub(super) fn config_map(&mut self, config_map: &ConfigMap) {
        self.config_maps = self.config_maps.max(resource_version(&config_map.metadata));
    }
}

/// Annotation `kubectl apply` (client-side) keeps the whole last-applied object in; never read.
pub(super) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what the controller never reads from a cached ModelRuntime.
pub(super) fn strip_model_runtime(runtime: &mut ModelRuntime) {
    runtime.metadata.managed_fields = None;
    if let Some(annotations) = runtime.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Drops what the controller never reads from a cached ModelDeployment.
pub(super) fn strip_model_deployment(md: &mut ModelDeployment) {
    md.metadata.managed_fields = None;
    if let Some(annotations) = md.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// A watch of `api` that fills `writer`'s store with objects stripped by `strip`, and reports what it applied
/// through `applied` and `caches.changed`.
pub(super) fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    strip: fn(&mut K),
    caches: Arc<Caches>,
    applied: fn(&Caches) -> &AtomicU64,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut versions = AppliedVersions::default();
    watcher(api, config)
        .default_backoff()
        .modify(strip)
        .reflect(writer)
        .inspect_ok(move |event| {
            applied(&caches).fetch_max(versions.applied(event), Ordering::AcqRel);
            caches.changed.notify_waiters();
        })
}

/// Follows the resourceVersions a reflector applies to its store.
#[derive(Default)]
pub(super) struct AppliedVersions {
    /// The newest resourceVersion of the relist under way.
    pub(super) relisted: u64,
}

impl AppliedVersions {
    /// The newest resourceVersion the store holds once it applied `event` (0: no news). A relist's objects reach
    /// the store together, when the relist is done.
    pub(super) fn applied<K: Resource>(&mut self, event: &watcher::Event<K>) -> u64 {
        match event {
            watcher::Event::Apply(object) | watcher::Event::Delete(object) => {
                resource_version(object.meta())
            }
            watcher::Event::Init => {
                self.relisted = 0;
                0
            }
            watcher::Event::InitApply(object) => {
                self.relisted = self.relisted.max(resource_version(object.meta()));
                0
            }
            watcher::Event::InitDone => self.relisted,
        }
    }
}

/// One future that waits for the children's caches to be filled, for every reconcile to share: a store's own
/// `wait_until_ready` keeps a single waker, so of several tasks waiting on it at once only one would wake.
pub(super) fn children_ready(
    deployments: &Store<CachedDeployment>,
    pods: &Store<CachedPod>,
    services: &Store<CachedService>,
    config_maps: &Store<ConfigMap>,
    model_runtimes: &Store<ModelRuntime>,
) -> Shared<BoxFuture<'static, bool>> {
    let stores = (
        deployments.clone(),
        pods.clone(),
        services.clone(),
        config_maps.clone(),
        model_runtimes.clone(),
    );
    async move {
        stores.0.wait_until_ready().await.is_ok()
            && stores.1.wait_until_ready().await.is_ok()
            && stores.2.wait_until_ready().await.is_ok()
            && stores.3.wait_until_ready().await.is_ok()
            && stores.4.wait_until_ready().await.is_ok()
    }
    .boxed()
    .shared()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;

    fn deployment_at(name: &str, version: &str) -> CachedDeployment {
        let mut deployment = CachedDeployment::default();
        deployment.metadata.name = Some(name.into());
        deployment.metadata.namespace = Some("ml".into());
        deployment.metadata.resource_version = Some(version.into());
        deployment
    }

    #[test]
    fn a_relist_counts_once_it_is_done() {
        use watcher::Event::*;
        let mut versions = AppliedVersions::default();
        assert_eq!(versions.applied(&Apply(deployment_at("a", "5"))), 5);
        assert_eq!(versions.applied(&Init::<CachedDeployment>), 0);
        assert_eq!(versions.applied(&InitApply(deployment_at("a", "9"))), 0);
        assert_eq!(versions.applied(&InitApply(deployment_at("b", "7"))), 0);
        assert_eq!(versions.applied(&InitDone::<CachedDeployment>), 9);
        assert_eq!(versions.applied(&Delete(deployment_at("b", "12"))), 12);
    }

    #[test]
    fn the_caches_hold_a_write_once_they_applied_its_version_or_saw_its_deletion() {
        let (model_deployments, _) = reflector::store::<ModelDeployment>();
        let (deployments, mut deployment_writer) = reflector::store::<CachedDeployment>();
        let (pods, _) = reflector::store::<CachedPod>();
        let (services, _) = reflector::store::<CachedService>();
        let (config_maps, _) = reflector::store::<ConfigMap>();
        let (model_runtimes, _) = reflector::store::<ModelRuntime>();
        let caches = Caches {
            model_deployments: Cache::new(model_deployments),
            deployments: Cache::new(deployments),
            pods: Cache::new(pods),
            services: Cache::new(services),
            config_maps: Cache::new(config_maps),
            model_runtimes: Cache::new(model_runtimes),
            children_ready: futures::future::ready(true).boxed().shared(),
            changed: Notify::new(),
        };
        deployment_writer.apply_watcher_event(&watcher::Event::Apply(deployment_at("old", "3")));
        caches.deployments.applied.store(3, Ordering::Release);
        let written = Written {
            deployments: 4,
            deleted: vec!["old".into()],
            ..Default::default()
        };
        assert!(!caches.hold("ml", &written), "version 4 not seen yet");
        caches.deployments.applied.store(4, Ordering::Release);
        assert!(
            !caches.hold("ml", &written),
            "the deleted one is still cached"
        );
        assert!(
            caches.hold("other", &written),
            "no such Deployment in another namespace"
        );
        deployment_writer.apply_watcher_event(&watcher::Event::Delete(deployment_at("old", "5")));
        assert!(caches.hold("ml", &written));
        assert!(caches.hold("ml", &Written::default()));
        assert!(!caches.hold(
            "ml",
            &Written {
                model_deployment: 1,
                ..Default::default()
            }
        ));
    }

    #[tokio::test]
    async fn every_reconcile_waiting_for_the_caches_wakes_when_they_are_filled() {
        let (deployments, mut deployment_writer) = reflector::store::<CachedDeployment>();
        let (pods, mut pod_writer) = reflector::store::<CachedPod>();
        let (services, mut service_writer) = reflector::store::<CachedService>();
        let (config_maps, mut config_map_writer) = reflector::store::<ConfigMap>();
        let (model_runtimes, mut runtime_writer) = reflector::store::<ModelRuntime>();
        let ready = children_ready(
            &deployments,
            &pods,
            &services,
            &config_maps,
            &model_runtimes,
        );
        let waiters: Vec<_> = (0..4).map(|_| tokio::spawn(ready.clone())).collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            deployment_writer.apply_watcher_event(&event);
        }
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            pod_writer.apply_watcher_event(&event);
        }
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            service_writer.apply_watcher_event(&event);
        }
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            config_map_writer.apply_watcher_event(&event);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "the catalogue is not read yet"
        );
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            runtime_writer.apply_watcher_event(&event);
        }
        for waiter in waiters {
            let woke = tokio::time::timeout(Duration::from_secs(5), waiter).await;
            assert!(woke.expect("every waiter wakes").unwrap());
        }
    }

    #[test]
    fn written_versions_only_grow() {
        let mut written = Written::default();
        assert!(written.is_empty());
        let mut deployment = Deployment::default();
        deployment.metadata.resource_version = Some("42".into());
        written.deployment(&deployment);
        deployment.metadata.resource_version = Some("17".into());
        written.deployment(&deployment);
        deployment.metadata.resource_version = Some("opaque".into());
        written.deployment(&deployment);
        assert_eq!(written.deployments, 42);
        assert!(!written.is_empty());
    }
}
