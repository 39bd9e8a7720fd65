//! Reads each serving pod's `/status` from its ferry-server, beside the watches: reconciles stay free of
//! network I/O and read the latest reports from here, and a read that changes what a reconcile shows (a phase,
//! a step of 5 percent, a SHA-256, reachability) triggers one, as a watch event does.
//!
//! Pods that can change are read often ([`ACTIVE_PERIOD`]: starting, loading, unreachable); settled ones (ready
//! or failed) on a slow period ([`SETTLED_PERIOD`], spread over it so that many pods do not come due at once),
//! and pods that keep failing to answer on [`UNREACHABLE_PERIOD`].
//! At most [`CONCURRENCY`] reads are in flight, each bounded by [`READ_TIMEOUT`]. A read that fails reports the
//! pod unreachable, never failed. `/status` needs no credential; the admin port is open to the controller (and
//! to metrics scrapers) only when the chart's NetworkPolicy is on.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{ReconcileReason, ReconcileRequest};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::lock;
use crate::api::ModelDeployment;
use crate::children::pod::CachedPod;
use crate::metrics::{Metrics, PodReadLabels};
use crate::pod_state::{Answer, PodReport, Read};
use crate::server_contract::{self, ServerStatus};

/// How often a pod that can change is read.
pub const ACTIVE_PERIOD: Duration = Duration::from_secs(2);
/// How often a settled pod (ready, or failed) is read.
pub const SETTLED_PERIOD: Duration = Duration::from_secs(30);
/// How often a pod is read once [`UNREACHABLE_BACKOFF_AFTER`] reads in a row failed (a NetworkPolicy that
/// does not admit the controller, a node that is gone): still noticed when it answers again, without a read
/// every 2 s that waits for its timeout.
pub const UNREACHABLE_PERIOD: Duration = Duration::from_secs(10);
pub const UNREACHABLE_BACKOFF_AFTER: u32 = 3;
/// Reads in flight at once, over all pods.
pub const CONCURRENCY: usize = 32;
/// The longest a read may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest `/status` body read.
const MAX_BODY: usize = 64 << 10;
/// How often the reader looks for pods that are due.
const TICK: Duration = Duration::from_millis(500);

/// The reports of every pod of one watch scope, by `namespace/name`.
pub struct PodReader {
    /// Boxed: the table doubles as pods come, and a doubled table of ~900-byte entries would hold megabytes of
    /// empty slots (15 MB at 16,384).
    pods: Mutex<HashMap<String, Box<Tracked>>>,
    /// When this process started reading: pods created before it have a past this process did not see.
    started: Timestamp,
}

impl Default for PodReader {
    fn default() -> Self {
        // The API stores creation times in whole seconds: a pod created in this very second counts as new.
        let now = Timestamp::now();
        PodReader {
            pods: Mutex::default(),
            started: Timestamp::from_second(now.as_second()).unwrap_or(now),
        }
    }
}

struct Tracked {
    report: PodReport,
    /// The ModelDeployment the pod belongs to (its label).
    owner: Option<String>,
    next_read: Instant,
    /// Reads in a row that failed.
    unreachable: u32,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl PodReader {
    /// The latest report of a pod, if it is the same pod (UID) the reader knows.
    pub fn report(&self, pod: &Pod) -> Option<PodReport> {
        let pods = lock(&self.pods);
        let tracked = pods.get(&key(&pod.namespace().unwrap_or_default(), &pod.name_any()))?;
        (Some(&tracked.report.uid) == pod.metadata.uid.as_ref()).then(|| tracked.report.clone())
    }

    /// Reads a pod at the next tick (after the controller asked something of it).
    pub fn read_soon(&self, key: &str) {
        if let Some(tracked) = lock(&self.pods).get_mut(key) {
            tracked.next_read = tracked.next_read.min(Instant::now());
        }
    }

    /// Reads the pods of `store` until the returned stream is dropped; the stream yields a reconcile request
    /// for the owner of every pod whose read changed what a reconcile shows.
    pub fn run(
        self: Arc<Self>,
        store: Store<CachedPod>,
        metrics: Arc<Metrics>,
    ) -> impl Stream<Item = ReconcileRequest<ModelDeployment>> + Send + 'static {
        let (sender, receiver) = mpsc::unbounded_channel();
        let reader = self.clone();
        // Ends at the first tick after the controller drops the stream.
        tokio::spawn(async move {
            // No idle connections kept: every pod is a host of its own, read at most every 2 s, and thousands of
            // pooled connections would cost more memory than the connects they save.
            let client = HttpClient::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector());
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if sender.is_closed() {
                    break;
                }
                let due = reader.due(&store.state());
                futures::stream::iter(due)
                    .map(|(key, address)| {
                        let client = client.clone();
                        async move { (key, read(&client, address).await) }
                    })
                    .buffer_unordered(CONCURRENCY)
                    .for_each(|(key, result)| {
                        metrics
                            .pod_reads
                            .get_or_create(&PodReadLabels {
                                result: match result {
                                    Read::Answered(_) => "answered",
                                    Read::Unreachable(_) => "unreachable",
                                },
                            })
                            .inc();
                        if let Some(owner) = reader.take(&key, result) {
                            let _ = sender.send(owner);
                        }
                        futures::future::ready(())
                    })
                    .await;
            }
        });
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|request| (request, receiver))
        })
    }

    /// Starts tracking new pods, forgets deleted ones, and returns the pods due for a read.
    fn due(&self, pods: &[Arc<CachedPod>]) -> Vec<(String, IpAddr)> {
        let now = Instant::now();
        let wall = Timestamp::now();
        let mut tracked = lock(&self.pods);
        let mut seen = std::collections::HashSet::with_capacity(pods.len());
        let mut due = Vec::new();
        for pod in pods {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            let key = key(&pod.namespace().unwrap_or_default(), &pod.name_any());
            let preexisting = pod
                .metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|created| created.0 < self.started);
            let new = || {
                Box::new(Tracked {
                    report: PodReport::new(uid.clone(), wall, preexisting),
                    owner: pod.labels.owner.clone(),
                    next_read: now,
                    unreachable: 0,
                })
            };
            let entry = tracked.entry(key.clone()).or_insert_with(new);
            if entry.report.uid != uid {
                // Re-created under the same name: a new pod.
                *entry = new();
            }
            if let Some(address) = pod.server_address() {
                if entry.next_read <= now {
                    // Not due again until this read is taken.
                    entry.next_read = now + READ_TIMEOUT + TICK;
                    due.push((key.clone(), address));
                }
            }
            seen.insert(key);
        }
        tracked.retain(|key, _| seen.contains(key));
        due
    }

    /// Takes a read; returns the reconcile request of the pod's ModelDeployment when what it shows changed.
    fn take(&self, key: &str, read: Read) -> Option<ReconcileRequest<ModelDeployment>> {
        let mut tracked = lock(&self.pods);
        let entry = tracked.get_mut(key)?;
        entry.unreachable = match read {
            Read::Unreachable(_) => entry.unreachable.saturating_add(1),
            Read::Answered(_) => 0,
        };
        let changed = entry.report.update(read, Timestamp::now());
        let period = if entry.report.settled() {
            spread(SETTLED_PERIOD, key)
        } else if entry.unreachable >= UNREACHABLE_BACKOFF_AFTER {
            UNREACHABLE_PERIOD
        } else {
            ACTIVE_PERIOD
        };
        entry.next_read = Instant::now() + period;
        let namespace = key.split_once('/')?.0;
        let owner = entry.owner.as_deref().filter(|_| changed)?;
        Some(ReconcileRequest {
            obj_ref: ObjectRef::new(owner).within(namespace),
            reason: ReconcileReason::Custom {
                reason: "a serving pod's model state changed".into(),
            },
        })
    }
}

/// The settled period, between 75 and 125 percent of it by the pod's name, so that pods created together are
/// not read together ever after.
fn spread(period: Duration, key: &str) -> Duration {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    let factor = 0.75 + (hasher.finish() % 1000) as f64 / 2000.0;
    period.mul_f64(factor)
}

fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(READ_TIMEOUT));
    connector.set_nodelay(true);
    connector
}

async fn read(client: &HttpClient<HttpConnector, Empty<Bytes>>, address: IpAddr) -> Read {
    let uri = match address {
        IpAddr::V4(ip) => format!(
            "http://{ip}:{}{}",
            server_contract::ADMIN_PORT,
            server_contract::paths::STATUS
        ),
        IpAddr::V6(ip) => format!(
            "http://[{ip}]:{}{}",
            server_contract::ADMIN_PORT,
            server_contract::paths::STATUS
        ),
    };
    let attempt = async {
        let uri: http::Uri = uri.parse().map_err(|e| format!("{e}"))?;
        let response = client.get(uri).await.map_err(|e| describe(&e))?;
        if !response.status().is_success() {
            return Err(format!("/status answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading /status: {e}"))?
            .to_bytes();
        let status: ServerStatus = serde_json::from_slice(&body)
            .map_err(|e| format!("/status is not ferry-server's: {e}"))?;
        Ok(Answer::from_status(&status))
    };
    match tokio::time::timeout(READ_TIMEOUT, attempt).await {
        Ok(Ok(answer)) => Read::Answered(answer),
        Ok(Err(error)) => Read::Unreachable(error),
        Err(_) => Read::Unreachable(format!("no answer within {}s", READ_TIMEOUT.as_secs())),
    }
}

/// A connection error in a few words ("connection refused"), without the client's wrapping.
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    let mut last = error.to_string();
    while let Some(current) = source {
        last = current.to_string();
        source = current.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PodPhase;

    fn pod(name: &str, ip: Option<&str>, running: bool) -> Arc<CachedPod> {
        let state = if running {
            serde_json::json!({"running": {}})
        } else {
            serde_json::json!({"waiting": {"reason": "ContainerCreating"}})
        };
        let mut pod: CachedPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ml", "uid": format!("uid-{name}"),
                         "labels": {crate::labels::MODEL_DEPLOYMENT: "iris"}},
            "status": {"podIP": ip, "containerStatuses": [{"name": "server", "ready": false,
                "restartCount": 0, "image": "i", "imageID": "", "state": state}]}
        }))
        .unwrap();
        pod.strip();
        Arc::new(pod)
    }

    fn ready() -> Read {
        Read::Answered(Answer {
            phase: PodPhase::Ready,
            sha256: Some("ab".into()),
            bytes_done: 10,
            bytes_total: Some(10),
            failure: None,
            model: None,
            serving_object: None,
            new_object: None,
            object_unchanged: false,
            in_place: Default::default(),
        })
    }

    #[tokio::test]
    async fn only_running_pods_are_read_once_each_and_a_visible_change_asks_for_a_reconcile() {
        let reader = PodReader::default();
        let pods = [
            pod("a", Some("10.0.0.7"), true),
            pod("b", Some("10.0.0.8"), false),
            pod("c", None, true),
        ];
        let due = reader.due(&pods);
        assert_eq!(due, [("ml/a".to_owned(), "10.0.0.7".parse().unwrap())]);
        assert!(
            reader.due(&pods).is_empty(),
            "not again while the read is out"
        );
        assert!(
            reader.report(&pods[1].to_pod()).is_some(),
            "tracked from the start, for the deadline"
        );

        let request = reader
            .take("ml/a", ready())
            .expect("a new phase is worth a reconcile");
        assert_eq!(request.obj_ref, ObjectRef::new("iris").within("ml"));
        assert!(
            reader.take("ml/a", ready()).is_none(),
            "the same answer is not"
        );
        assert!(
            reader.due(&pods).is_empty(),
            "settled: read on the slow period"
        );
        assert_eq!(
            reader.report(&pods[0].to_pod()).unwrap().phase(),
            PodPhase::Ready
        );

        // A pod re-created under the same name is a new pod; a deleted one is forgotten.
        let mut again = (*pods[0]).clone();
        again.metadata.uid = Some("uid-a-2".into());
        assert!(reader.report(&again.to_pod()).is_none());
        assert_eq!(reader.due(&[Arc::new(again.clone())]).len(), 1);
        assert_eq!(
            reader.report(&again.to_pod()).unwrap().phase(),
            PodPhase::Starting
        );
        assert!(
            reader.report(&pods[1].to_pod()).is_none(),
            "gone from the cache, gone from here"
        );
    }

    #[test]
    fn a_pod_missing_from_a_relist_is_forgotten_like_a_deleted_one() {
        use kube::runtime::{reflector, watcher};
        let reader = PodReader::default();
        let (store, mut writer) = reflector::store::<CachedPod>();
        let list = |writer: &mut reflector::store::Writer<CachedPod>, names: &[&str]| {
            writer.apply_watcher_event(&watcher::Event::Init);
            for name in names {
                let pod = pod(name, Some("10.0.0.7"), true);
                writer.apply_watcher_event(&watcher::Event::InitApply((*pod).clone()));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
        };
        list(&mut writer, &["a", "b", "c"]);
        reader.due(&store.state());
        assert_eq!(lock(&reader.pods).len(), 3);

        writer.apply_watcher_event(&watcher::Event::Delete((*pod("a", None, true)).clone()));
        reader.due(&store.state());
        assert_eq!(
            lock(&reader.pods).len(),
            2,
            "a deletion the watch delivered"
        );

        // The watch was down while b was deleted: the relist no longer holds it.
        list(&mut writer, &["c"]);
        reader.due(&store.state());
        let left: Vec<String> = lock(&reader.pods).keys().cloned().collect();
        assert_eq!(left, ["ml/c"]);
    }

    #[test]
    fn pods_created_together_are_not_read_together_ever_after() {
        let periods: Vec<Duration> = (0..20)
            .map(|i| spread(SETTLED_PERIOD, &format!("ml/iris-{i}")))
            .collect();
        assert!(periods
            .iter()
            .all(|p| *p >= SETTLED_PERIOD.mul_f64(0.75) && *p <= SETTLED_PERIOD.mul_f64(1.25)));
        let distinct: std::collections::BTreeSet<_> = periods.iter().collect();
        assert!(distinct.len() > 10, "{periods:?}");
    }
}
