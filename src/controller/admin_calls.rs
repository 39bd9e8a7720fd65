//! Makes the admin calls of strategy InPlace (stage, switch, unload) beside the reconciles, as `pod_reader` reads
//! beside them: a reconcile hands its calls over and returns.
//!
//! ```text
//!   reconcile ──submit(md, calls)──► per pod: [in flight] ◄── queue (the latest decision's calls only)
//!                                          │ one worker task per pod, aborted when AdminCalls is dropped
//!                                          ▼
//!                                   POST to the pod's admin port, then read the pod again soon
//! ```
//!
//! - **In order.** A pod has at most one call in flight. Each submit replaces what was still queued for the pods
//!   of its ModelDeployment: the latest decision wins, and a superseded call (a `Switch(2)` queued behind a stage
//!   when the next decision says `Switch(1)`) is never sent.
//! - **Not repeated.** A call that is in flight, or that was answered within [`SETTLE`] and not overtaken since
//!   by another call on the same pod and slot (the switch; one version's stage or unload), is not queued again:
//!   the pod's next report shows what it did.
//! - **Only while leading.** The worker tasks belong to this value: dropping it (the controller future dropped on
//!   a lost Lease or a shutdown) aborts them, and a call not sent by then never is.
//! - **Bounded.** A pod's entry goes once it is idle and settled, or once the pod is gone from the pod cache
//!   (deleted, or missing after a relist).
//!
//! A stage the server refuses for good (a version loaded from another URI, no room for another version, a bad
//! parameter) is kept as the pod's refusal, which aborts the candidate; a busy server, a version not loaded yet or
//! a network error is only tried again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::lock;
use super::pod_reader::PodReader;
use crate::admin_credential::AdminKey;
use crate::children::pod::CachedPod;
use crate::metrics::{AdminCallLabels, Metrics};
use crate::rollout::in_place::{AdminAction, AdminCall};
use ferry_contract::ErrorCode;

use crate::server_contract::{
    self, paths, ErrorBody, LoadParameters, LoadRequest, SwitchRequest, UnloadRequest,
    VersionParameters,
};

/// The longest an admin call may take (a stage answers at once; its load runs on in the pod).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answered call is not repeated: time for the pod's next read to show what it did.
const SETTLE: Duration = Duration::from_secs(6);
/// How often the entries of pods gone from the cache are looked for, at most.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
const MAX_BODY: usize = 16 << 10;

/// The admin calls of one watch scope. Owns the tasks that make them: dropping it stops every call not sent yet.
pub struct AdminCalls {
    shared: Arc<Shared>,
}

struct Shared {
    client: HttpClient<HttpConnector, Full<Bytes>>,
    /// The admin port called (ferry-server's; another only in tests).
    port: u16,
    /// By pod UID: what is in flight and queued.
    pods: Mutex<HashMap<String, PodCalls>>,
    /// Stages refused for good, by pod UID: (version, the server's answer, when).
    refused: Mutex<HashMap<String, (String, String, Timestamp)>>,
    /// The pods of the scope, to drop what is kept about pods that are gone.
    pod_cache: Store<CachedPod>,
    last_pruned: Mutex<Instant>,
    /// Set when the owner is dropped: a worker that still runs sends nothing more.
    closed: AtomicBool,
    reader: Arc<PodReader>,
    metrics: Arc<Metrics>,
}

/// The calls of one pod.
#[derive(Default)]
struct PodCalls {
    /// The ModelDeployment (namespace/name) whose decisions these are.
    owner: String,
    /// The pod's worker, while it runs.
    worker: Option<AbortHandle>,
    in_flight: Option<CallId>,
    /// The latest decision's calls not sent yet, in its order.
    queue: VecDeque<Queued>,
    /// By slot: the call last answered there, and when.
    answered: HashMap<Slot, (CallId, Instant)>,
}

impl PodCalls {
    fn recently_answered(&self, id: &CallId) -> bool {
        self.answered
            .get(&id.slot())
            .is_some_and(|(last, at)| last == id && at.elapsed() < SETTLE)
    }

    fn idle(&self) -> bool {
        self.worker.is_none()
            && self.queue.is_empty()
            && self.answered.values().all(|(_, at)| at.elapsed() >= SETTLE)
    }
}

/// A call, as far as repeating it goes: its verb and version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CallId {
    verb: &'static str,
    version: String,
}

/// Calls that overtake each other: a pod serves one version (the switch), and a version is staged or unloaded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Slot {
    Switch,
    Version(String),
}

impl CallId {
    fn of(action: &AdminAction) -> CallId {
        CallId {
            verb: action.verb(),
            version: action.version().to_owned(),
        }
    }

    fn slot(&self) -> Slot {
        match self.verb {
            "switch" => Slot::Switch,
            _ => Slot::Version(self.version.clone()),
        }
    }
}

struct Queued {
    call: AdminCall,
    /// `namespace/pod`, for the reader.
    pod_key: String,
    model_name: String,
    credential: String,
}

impl AdminCalls {
    pub fn new(
        reader: Arc<PodReader>,
        metrics: Arc<Metrics>,
        pod_cache: Store<CachedPod>,
    ) -> AdminCalls {
        AdminCalls::on_port(
            reader,
            metrics,
            pod_cache,
            server_contract::ADMIN_PORT as u16,
        )
    }

    fn on_port(
        reader: Arc<PodReader>,
        metrics: Arc<Metrics>,
        pod_cache: Store<CachedPod>,
        port: u16,
    ) -> AdminCalls {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        AdminCalls {
            shared: Arc::new(Shared {
                client: HttpClient::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(0)
                    .build(connector),
                port,
                pods: Mutex::default(),
                refused: Mutex::default(),
                pod_cache,
                last_pruned: Mutex::new(Instant::now()),
                closed: AtomicBool::new(false),
                reader,
                metrics,
            }),
        }
    }

    /// The stage a pod refused for good, if any.
    pub fn refused(&self, uid: &str) -> Option<(String, String, Timestamp)> {
        self.prune_if_due();
        lock(&self.shared.refused).get(uid).cloned()
    }

    /// Hands over the calls of the latest decision for ModelDeployment `md_name` (all of them, none included):
    /// what is still queued for its pods is replaced, and each pod's worker sends its calls one at a time.
    pub fn submit(
        &self,
        key: &AdminKey,
        namespace: &str,
        md_name: &str,
        model_name: &str,
        calls: Vec<AdminCall>,
    ) {
        self.prune_if_due();
        let owner = format!("{namespace}/{md_name}");
        let mut decided: HashMap<String, Vec<Queued>> = HashMap::new();
        for call in calls {
            let credential = key.credential(namespace, md_name, &call.credential_id);
            decided.entry(call.uid.clone()).or_default().push(Queued {
                pod_key: format!("{namespace}/{}", call.pod),
                model_name: model_name.to_owned(),
                credential,
                call,
            });
        }
        let mut pods = lock(&self.shared.pods);
        // The pods this decision asks nothing of any more: their queued calls are superseded.
        for (uid, pod) in pods.iter_mut() {
            if pod.owner == owner && !decided.contains_key(uid) && !pod.queue.is_empty() {
                debug!(
                    uid,
                    superseded = pod.queue.len(),
                    "queued admin calls superseded"
                );
                pod.queue.clear();
            }
        }
        for (uid, queued) in decided {
            let pod = pods.entry(uid.clone()).or_default();
            pod.owner.clone_from(&owner);
            let superseded = pod.queue.len();
            pod.queue = queued
                .into_iter()
                .filter(|q| {
                    let id = CallId::of(&q.call.action);
                    pod.in_flight.as_ref() != Some(&id) && !pod.recently_answered(&id)
                })
                .collect();
            if superseded > 0 {
                debug!(
                    uid,
                    superseded, "queued admin calls replaced by the latest decision"
                );
            }
            if pod
                .queue
                .iter()
                .any(|q| matches!(q.call.action, AdminAction::Stage(_)))
            {
                // A new stage is asked for: the refusal of an earlier one no longer stands.
                lock(&self.shared.refused).remove(&uid);
            }
            if pod.worker.is_none() && !pod.queue.is_empty() {
                let shared = self.shared.clone();
                let worker_uid = uid.clone();
                pod.worker = Some(
                    tokio::spawn(async move { shared.work(&worker_uid).await }).abort_handle(),
                );
            }
        }
        pods.retain(|_, pod| !pod.idle());
    }

    /// Drops what is kept about pods that are no longer in the pod cache: deleted, whether this process saw the
    /// deletion or only a relist without them. Their calls in flight are stopped.
    pub fn prune(&self) {
        let live: HashSet<String> = self
            .shared
            .pod_cache
            .state()
            .iter()
            .filter_map(|p| p.uid())
            .collect();
        self.prune_to(&live);
    }

    fn prune_to(&self, live: &HashSet<String>) {
        *lock(&self.shared.last_pruned) = Instant::now();
        lock(&self.shared.pods).retain(|uid, pod| {
            let keep = live.contains(uid) && !pod.idle();
            if !live.contains(uid) {
                if let Some(worker) = pod.worker.take() {
                    worker.abort();
                }
            }
            keep
        });
        lock(&self.shared.refused).retain(|uid, _| live.contains(uid));
    }

    fn prune_if_due(&self) {
        if lock(&self.shared.last_pruned).elapsed() >= PRUNE_EVERY {
            self.prune();
        }
    }

    /// Pods with something kept about them (calls or a refusal).
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        (
            lock(&self.shared.pods).len(),
            lock(&self.shared.refused).len(),
        )
    }
}

impl Drop for AdminCalls {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        for pod in lock(&self.shared.pods).values_mut() {
            pod.queue.clear();
            if let Some(worker) = pod.worker.take() {
                worker.abort();
            }
        }
    }
}

impl Shared {
    /// Sends the queued calls of pod `uid`, one at a time, until its queue is empty.
    async fn work(&self, uid: &str) {
        loop {
            let next = {
                let mut pods = lock(&self.pods);
                let Some(pod) = pods.get_mut(uid) else {
                    return;
                };
                match pod.queue.pop_front() {
                    Some(next) if !self.closed.load(Ordering::SeqCst) => {
                        pod.in_flight = Some(CallId::of(&next.call.action));
                        next
                    }
                    _ => {
                        pod.in_flight = None;
                        pod.worker = None;
                        return;
                    }
                }
            };
            self.send(&next).await;
            if let Some(pod) = lock(&self.pods).get_mut(uid) {
                let id = CallId::of(&next.call.action);
                pod.in_flight = None;
                pod.answered.insert(id.slot(), (id, Instant::now()));
            }
            self.reader.read_soon(&next.pod_key);
        }
    }

    async fn send(&self, queued: &Queued) {
        let call = &queued.call;
        let outcome = self
            .call(call, &queued.model_name, &queued.credential)
            .await;
        self.metrics
            .admin_calls
            .get_or_create(&AdminCallLabels {
                action: call.action.verb(),
                result: match &outcome {
                    Ok(()) => "ok",
                    Err(Failure::Refused(_)) => "refused",
                    Err(Failure::Retry(_)) => "retry",
                },
            })
            .inc();
        match outcome {
            Ok(()) => {
                info!(pod = %call.pod, action = call.action.verb(), version = call.action.version(), "admin call answered")
            }
            Err(Failure::Refused(message)) => {
                warn!(pod = %call.pod, action = call.action.verb(), version = call.action.version(), %message, "admin call refused");
                if let AdminAction::Stage(_) = call.action {
                    lock(&self.refused).insert(
                        call.uid.clone(),
                        (call.action.version().to_owned(), message, Timestamp::now()),
                    );
                }
            }
            Err(Failure::Retry(message)) => {
                debug!(pod = %call.pod, action = call.action.verb(), %message, "admin call to try again")
            }
        }
    }

    async fn call(&self, call: &AdminCall, model: &str, credential: &str) -> Result<(), Failure> {
        let (path, body) = match &call.action {
            AdminAction::Stage(parameters) => (
                paths::REPOSITORY_LOAD,
                serde_json::to_vec(&LoadRequest {
                    parameters: LoadParameters::clone(parameters),
                }),
            ),
            AdminAction::Switch(version) => (
                paths::REPOSITORY_SWITCH,
                serde_json::to_vec(&SwitchRequest {
                    parameters: VersionParameters {
                        version: version.clone(),
                    },
                }),
            ),
            AdminAction::Unload(version) => (
                paths::REPOSITORY_UNLOAD,
                serde_json::to_vec(&UnloadRequest {
                    parameters: VersionParameters {
                        version: version.clone(),
                    },
                }),
            ),
        };
        let body = body.map_err(|e| Failure::Retry(e.to_string()))?;
        let host = match call.address {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let uri = format!(
            "http://{host}:{}{}",
            self.port,
            path.replace("{name}", model)
        );
        let request = http::Request::post(uri)
            .header(http::header::AUTHORIZATION, format!("Bearer {credential}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Retry(e.to_string()))?;
        let attempt = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Failure::Retry(e.to_string()))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Err(refusal(&call.action, status, &body))
        };
        match tokio::time::timeout(CALL_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Retry(format!(
                "no answer within {}s",
                CALL_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// What an error answer means for the call: a stage refused for good aborts the candidate; anything else is tried
/// again. Decided on the answer's code.
fn refusal(action: &AdminAction, status: http::StatusCode, body: &[u8]) -> Failure {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let text = match &parsed {
        Some(parsed) => parsed.error.clone(),
        None => String::from_utf8_lossy(body).into_owned(),
    };
    let for_good = match parsed.and_then(|p| p.code) {
        Some(code) => matches!(
            code,
            ErrorCode::BadRequest
                | ErrorCode::Full
                | ErrorCode::Conflict
                | ErrorCode::LoadFailed
                | ErrorCode::TooLarge
        ),
        // Fallback, only for a server older than the codes: its status, and the text it answered a load with
        // while another one ran (a 409 like a conflict).
        None => match status.as_u16() {
            409 => !text.contains(OLD_SERVER_BUSY),
            400 | 422 => true,
            _ => false,
        },
    };
    let message = format!("{} answered {status}: {text}", action.verb());
    match action {
        AdminAction::Stage(_) if for_good => Failure::Refused(message),
        _ => Failure::Retry(message),
    }
}

/// What a server older than the error codes answered a load while another one ran.
const OLD_SERVER_BUSY: &str = "another load is in progress";

#[derive(Debug, PartialEq)]
enum Failure {
    /// The server refused it for good.
    Refused(String),
    /// Worth another try: the network, a busy server, a version not loaded yet, a credential not in place yet.
    Retry(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use axum::extract::{Path, State};
    use axum::routing::post;
    use axum::Router;
    use kube::runtime::reflector;
    use kube::runtime::watcher;
    use tokio::sync::watch;

    /// A ferry-server admin port on 127.0.0.1 that records every call it receives, holds its answers until
    /// released, and counts the calls in flight at once.
    #[derive(Clone)]
    struct FakeAdmin {
        address: SocketAddr,
        /// `verb version`, in the order they arrived.
        received: Arc<Mutex<Vec<String>>>,
        in_flight: Arc<AtomicUsize>,
        most_in_flight: Arc<AtomicUsize>,
        open: Arc<watch::Sender<bool>>,
        /// The answer to every call.
        answer: Arc<Mutex<(u16, String)>>,
    }

    impl FakeAdmin {
        async fn start() -> FakeAdmin {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let server = FakeAdmin {
                address: listener.local_addr().unwrap(),
                received: Arc::default(),
                in_flight: Arc::default(),
                most_in_flight: Arc::default(),
                open: Arc::new(watch::channel(true).0),
                answer: Arc::new(Mutex::new((200, "{}".into()))),
            };
            let app = Router::new()
                .route("/v2/repository/models/{name}/{verb}", post(Self::handle))
                .with_state(server.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            server
        }

        async fn handle(
            State(server): State<FakeAdmin>,
            Path((_, verb)): Path<(String, String)>,
            body: Bytes,
        ) -> (http::StatusCode, String) {
            let now = server.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            server.most_in_flight.fetch_max(now, Ordering::SeqCst);
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let version = body["parameters"]["version"].as_str().unwrap_or_default();
            lock(&server.received).push(format!("{verb} {version}"));
            let _ = server.open.subscribe().wait_for(|open| *open).await;
            server.in_flight.fetch_sub(1, Ordering::SeqCst);
            let (status, body) = lock(&server.answer).clone();
            (http::StatusCode::from_u16(status).unwrap(), body)
        }

        fn hold(&self) {
            self.open.send_replace(false);
        }

        fn release(&self) {
            self.open.send_replace(true);
        }

        fn received(&self) -> Vec<String> {
            lock(&self.received).clone()
        }

        async fn wait_received(&self, count: usize) -> Vec<String> {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.received().len() < count {
                assert!(
                    Instant::now() < deadline,
                    "{count} calls expected, received {:?}",
                    self.received()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.received()
        }

        /// What it received over a whole window.
        async fn received_after(&self, window: Duration) -> Vec<String> {
            tokio::time::sleep(window).await;
            self.received()
        }
    }

    fn cached_pod(uid: &str) -> CachedPod {
        let mut pod: CachedPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("pod-{uid}"), "namespace": "ml", "uid": uid,
                         "labels": {crate::labels::MODEL_DEPLOYMENT: "iris"}},
        }))
        .unwrap();
        pod.strip();
        pod
    }

    fn calls_to(
        server: &FakeAdmin,
        pods: &[&str],
    ) -> (AdminCalls, reflector::store::Writer<CachedPod>) {
        let (store, mut writer) = reflector::store::<CachedPod>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for uid in pods {
            writer.apply_watcher_event(&watcher::Event::InitApply(cached_pod(uid)));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let calls = AdminCalls::on_port(
            Arc::new(PodReader::default()),
            Arc::new(Metrics::default()),
            store,
            server.address.port(),
        );
        (calls, writer)
    }

    fn key() -> AdminKey {
        AdminKey::from_bytes(&[7; 32]).unwrap()
    }

    fn call(uid: &str, action: AdminAction) -> AdminCall {
        AdminCall {
            pod: format!("pod-{uid}"),
            uid: uid.into(),
            address: "127.0.0.1".parse().unwrap(),
            credential_id: "0011223344556677".into(),
            action,
        }
    }

    fn stage(version: &str) -> AdminAction {
        AdminAction::Stage(Box::new(LoadParameters {
            uri: Some(format!("s3://models/iris/{version}.onnx")),
            version: Some(version.into()),
            sha256: None,
            format: None,
            validation_uri: None,
            validation_sha256: None,
            wait: false,
            stage: true,
            object: None,
        }))
    }

    fn switch(version: &str) -> AdminAction {
        AdminAction::Switch(version.into())
    }

    fn submit(calls: &AdminCalls, md: &str, decided: Vec<AdminCall>) {
        calls.submit(&key(), "ml", md, "iris", decided);
    }

    #[tokio::test]
    async fn one_call_at_a_time_per_pod_and_the_latest_decision_wins() {
        let server = FakeAdmin::start().await;
        let (calls, _pods) = calls_to(&server, &["a"]);
        server.hold();
        submit(&calls, "iris", vec![call("a", stage("2"))]);
        assert_eq!(server.wait_received(1).await, ["load 2"]);

        // Two later decisions while the stage is out: a switch to 2, then back to 1. Only the latest is queued.
        submit(&calls, "iris", vec![call("a", switch("2"))]);
        submit(&calls, "iris", vec![call("a", switch("1"))]);
        assert_eq!(
            server.received_after(Duration::from_millis(300)).await,
            ["load 2"],
            "nothing else is sent while a call to the pod is in flight"
        );
        server.release();
        assert_eq!(server.wait_received(2).await, ["load 2", "switch 1"]);
        assert_eq!(
            server.received_after(Duration::from_millis(500)).await,
            ["load 2", "switch 1"],
            "the superseded switch to 2 is never sent"
        );
        assert_eq!(server.most_in_flight.load(Ordering::SeqCst), 1);

        // Two submits in a row for one pod: the second waits for the first's answer.
        server.hold();
        submit(&calls, "iris", vec![call("a", switch("3"))]);
        server.wait_received(3).await;
        submit(
            &calls,
            "iris",
            vec![
                call("a", switch("3")),
                call("a", AdminAction::Unload("1".into())),
            ],
        );
        assert_eq!(
            server.received_after(Duration::from_millis(300)).await,
            ["load 2", "switch 1", "switch 3"],
            "the switch in flight is not sent twice and the unload waits"
        );
        server.release();
        assert_eq!(server.wait_received(4).await[3], "unload 1");
        assert_eq!(server.most_in_flight.load(Ordering::SeqCst), 1);

        // Answered a moment ago: not repeated; overtaken by another switch since: sent again.
        submit(&calls, "iris", vec![call("a", switch("3"))]);
        assert_eq!(
            server
                .received_after(Duration::from_millis(300))
                .await
                .len(),
            4
        );
        submit(&calls, "iris", vec![call("a", switch("1"))]);
        server.wait_received(5).await;
        submit(&calls, "iris", vec![call("a", switch("3"))]);
        assert_eq!(server.wait_received(6).await[4..], ["switch 1", "switch 3"]);
    }

    #[tokio::test]
    async fn a_decision_that_asks_nothing_of_a_pod_drops_what_was_queued_for_it() {
        let server = FakeAdmin::start().await;
        let (calls, _pods) = calls_to(&server, &["a", "b"]);
        server.hold();
        submit(
            &calls,
            "iris",
            vec![
                call("a", stage("2")),
                call("a", switch("2")),
                call("b", stage("2")),
            ],
        );
        server.wait_received(2).await;
        // Another ModelDeployment's decision leaves iris's queue alone; iris's next one asks nothing of a.
        submit(&calls, "other", Vec::new());
        submit(&calls, "iris", vec![call("b", stage("2"))]);
        server.release();
        let mut received = server.received_after(Duration::from_millis(500)).await;
        received.sort();
        assert_eq!(
            received,
            ["load 2", "load 2"],
            "the switch of a was superseded"
        );
    }

    #[tokio::test]
    async fn dropping_the_owner_stops_every_call_not_sent() {
        let server = FakeAdmin::start().await;

        // Dropped before its task ran: the call is never sent.
        let (calls, _pods) = calls_to(&server, &["a"]);
        submit(&calls, "iris", vec![call("a", stage("2"))]);
        drop(calls);
        assert!(
            server
                .received_after(Duration::from_millis(500))
                .await
                .is_empty(),
            "a call of a dropped owner was sent"
        );

        // Dropped with a call in flight and one queued behind it: the queued one is never sent.
        let (calls, _pods) = calls_to(&server, &["a"]);
        server.hold();
        submit(
            &calls,
            "iris",
            vec![call("a", stage("2")), call("a", switch("2"))],
        );
        server.wait_received(1).await;
        drop(calls);
        server.release();
        assert_eq!(
            server.received_after(Duration::from_millis(500)).await,
            ["load 2"],
            "the switch queued behind the stage was sent after the owner was dropped"
        );
    }

    #[tokio::test]
    async fn what_is_kept_about_pods_goes_with_them_on_a_delete_and_on_a_relist() {
        let server = FakeAdmin::start().await;
        *lock(&server.answer) = (
            422,
            r#"{"error":"version 2 is loaded from another uri"}"#.into(),
        );
        let (calls, mut pods) = calls_to(&server, &["a", "b", "c"]);
        submit(
            &calls,
            "iris",
            vec![
                call("a", stage("2")),
                call("b", stage("2")),
                call("c", stage("2")),
            ],
        );
        server.wait_received(3).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while ["a", "b", "c"]
            .iter()
            .any(|uid| calls.refused(uid).is_none())
        {
            assert!(Instant::now() < deadline, "three refusals expected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(calls.refused("a").unwrap().0, "2");
        assert_eq!(calls.tracked(), (3, 3));

        // A deletion the watch delivered.
        pods.apply_watcher_event(&watcher::Event::Delete(cached_pod("a")));
        calls.prune();
        assert!(calls.refused("a").is_none());
        assert_eq!(calls.tracked(), (2, 2));

        // A relist that no longer holds b (deleted while the watch was down).
        pods.apply_watcher_event(&watcher::Event::Init);
        pods.apply_watcher_event(&watcher::Event::InitApply(cached_pod("c")));
        pods.apply_watcher_event(&watcher::Event::InitDone);
        calls.prune();
        assert!(calls.refused("b").is_none());
        assert!(calls.refused("c").is_some());
        assert_eq!(calls.tracked(), (1, 1));

        // Settled and idle: the calls of c go too, its refusal stays while the pod does.
        tokio::time::sleep(SETTLE).await;
        calls.prune();
        assert_eq!(calls.tracked(), (0, 1));
    }

    #[test]
    fn a_busy_server_is_tried_again_a_refused_stage_is_not_by_the_code() {
        let conflict = http::StatusCode::CONFLICT;
        let body = |code: &str| format!(r#"{{"error":"whatever the text says","code":"{code}"}}"#);
        for (code, for_good) in [
            ("Busy", false),
            ("NotLoaded", false),
            ("ShuttingDown", false),
            ("Unauthorized", false),
            ("SomethingNewer", false),
            ("Full", true),
            ("Conflict", true),
            ("BadRequest", true),
            ("LoadFailed", true),
        ] {
            let failure = refusal(&stage("2"), conflict, body(code).as_bytes());
            assert_eq!(
                matches!(failure, Failure::Refused(_)),
                for_good,
                "{code}: {failure:?}"
            );
            assert!(
                matches!(
                    refusal(&switch("2"), conflict, body(code).as_bytes()),
                    Failure::Retry(_)
                ),
                "a switch is only tried again ({code})"
            );
        }
        // The text never decides when a code is there.
        let busy_text = br#"{"error":"another load is in progress","code":"Conflict"}"#;
        assert!(matches!(
            refusal(&stage("2"), conflict, busy_text),
            Failure::Refused(_)
        ));
        let load_failed = br#"{"error":"CorruptModel: m","reason":"CorruptModel","operator":null,"code":"LoadFailed"}"#;
        assert!(matches!(
            refusal(
                &stage("2"),
                http::StatusCode::UNPROCESSABLE_ENTITY,
                load_failed
            ),
            Failure::Refused(_)
        ));

        // A server older than the codes: its status, and its busy text.
        let old_busy = br#"{"error":"another load is in progress (version 3)"}"#;
        let old_refused = br#"{"error":"version 2 is loaded from another uri"}"#;
        assert!(matches!(
            refusal(&stage("2"), conflict, old_busy),
            Failure::Retry(_)
        ));
        assert!(matches!(
            refusal(&stage("2"), conflict, old_refused),
            Failure::Refused(_)
        ));
        assert!(matches!(
            refusal(
                &stage("2"),
                http::StatusCode::SERVICE_UNAVAILABLE,
                old_refused
            ),
            Failure::Retry(_)
        ));
        assert!(matches!(
            refusal(&stage("2"), http::StatusCode::BAD_GATEWAY, b"<html>"),
            Failure::Retry(_)
        ));
    }
}
