//! The caches a reconcile reads instead of the API server: reflector stores filled by the watches, stripped of
//! what the controller never reads, with the newest resourceVersion each applied, and what a reconcile wrote so
//! that the next one can wait until the caches hold it.

use super::*;

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
    pub(super) fn owned_by(&self, namespace: &str, md_name: &str) -> Vec<Arc<K>> {
        let mut owned = self.store.state_filter(|object| {
            object.meta().namespace.as_deref() == Some(namespace)
                && object
                    .meta()
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::MODEL_DEPLOYMENT))
                    .is_some_and(|owner| owner == md_name)
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
    pub(super) deployments: Cache<Deployment>,
    pub(super) pods: Cache<Pod>,
    pub(super) services: Cache<Service>,
    /// Resolves (true) once the Deployment, Pod and Service caches hold their first complete list, or (false)
    /// when one of them closed before. Any number of reconciles can wait on it, whereas a store's own
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
}

/// Annotation `kubectl apply` (client-side) keeps the whole last-applied object in; never read.
pub(super) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

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
    deployments: &Store<Deployment>,
    pods: &Store<Pod>,
    services: &Store<Service>,
) -> Shared<BoxFuture<'static, bool>> {
    let stores = (deployments.clone(), pods.clone(), services.clone());
    async move {
        stores.0.wait_until_ready().await.is_ok()
            && stores.1.wait_until_ready().await.is_ok()
            && stores.2.wait_until_ready().await.is_ok()
    }
    .boxed()
    .shared()
}
