//! Makes the admin calls of strategy InPlace (stage, switch, unload) beside the reconciles, as `pod_reader` reads
//! beside them: a reconcile hands its calls over and returns; each call runs once at a time per pod and action,
//! is not repeated for a while after it was answered (until the pod's next report shows its effect), and asks for
//! the pod to be read again at once. A stage the server refuses for good (a version loaded from another URI, no
//! room for another version, a bad parameter) is kept as the pod's refusal, which aborts the candidate; a busy
//! server, a version not loaded yet or a network error is only tried again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::jiff::Timestamp;
use tracing::{debug, info, warn};

use super::lock;
use super::pod_reader::PodReader;
use crate::admin_credential::AdminKey;
use crate::metrics::{AdminCallLabels, Metrics};
use crate::rollout::in_place::{AdminAction, AdminCall};
use crate::server_contract::{
    self, paths, ErrorBody, LoadParameters, LoadRequest, SwitchRequest, UnloadRequest,
    VersionParameters,
};

/// The longest an admin call may take (a stage answers at once; its load runs on in the pod).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answered call is not repeated: time for the pod's next read to show what it did.
const SETTLE: Duration = Duration::from_secs(6);
const MAX_BODY: usize = 16 << 10;

/// The admin calls of one watch scope.
pub struct AdminCalls {
    client: HttpClient<HttpConnector, Full<Bytes>>,
    /// By `uid/verb/version`: running, or answered at.
    calls: Mutex<HashMap<String, Option<Instant>>>,
    /// Stages refused for good, by pod UID: (version, the server's answer, when).
    refused: Mutex<HashMap<String, (String, String, Timestamp)>>,
    reader: Arc<PodReader>,
    metrics: Arc<Metrics>,
}

impl AdminCalls {
    pub fn new(reader: Arc<PodReader>, metrics: Arc<Metrics>) -> AdminCalls {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        AdminCalls {
            client: HttpClient::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
            calls: Mutex::default(),
            refused: Mutex::default(),
            reader,
            metrics,
        }
    }

    /// The stage a pod refused for good, if any.
    pub fn refused(&self, uid: &str) -> Option<(String, String, Timestamp)> {
        lock(&self.refused).get(uid).cloned()
    }

    /// Starts the calls that are not running or just answered.
    pub fn submit(
        self: &Arc<Self>,
        key: &AdminKey,
        namespace: &str,
        md_name: &str,
        model_name: &str,
        calls: Vec<AdminCall>,
    ) {
        for call in calls {
            let id = format!(
                "{}/{}/{}",
                call.uid,
                call.action.verb(),
                call.action.version()
            );
            {
                let mut running = lock(&self.calls);
                running.retain(|_, answered| answered.is_none_or(|at| at.elapsed() < SETTLE));
                if running.contains_key(&id) {
                    continue;
                }
                running.insert(id.clone(), None);
            }
            if let AdminAction::Stage(_) = call.action {
                lock(&self.refused).remove(&call.uid);
            }
            let credential = key.credential(namespace, md_name, &call.credential_id);
            let this = self.clone();
            let pod_key = format!("{namespace}/{}", call.pod);
            let model_name = model_name.to_owned();
            tokio::spawn(async move {
                let outcome = this.call(&call, &model_name, &credential).await;
                this.metrics
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
                            lock(&this.refused).insert(
                                call.uid.clone(),
                                (call.action.version().to_owned(), message, Timestamp::now()),
                            );
                        }
                    }
                    Err(Failure::Retry(message)) => {
                        debug!(pod = %call.pod, action = call.action.verb(), %message, "admin call to try again")
                    }
                }
                lock(&this.calls).insert(id, Some(Instant::now()));
                this.reader.read_soon(&pod_key);
            });
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
            server_contract::ADMIN_PORT,
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
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            let message = format!("{} answered {status}: {message}", call.action.verb());
            Err(match (&call.action, status.as_u16()) {
                // Another load still runs: the stage comes again once it is done.
                (AdminAction::Stage(_), 409) if message.contains(BUSY) => Failure::Retry(message),
                (AdminAction::Stage(_), 400 | 409 | 422) => Failure::Refused(message),
                _ => Failure::Retry(message),
            })
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

/// What ferry-server answers a load while another one runs.
const BUSY: &str = "another load is in progress";

enum Failure {
    /// The server refused it for good.
    Refused(String),
    /// Worth another try: the network, a busy server, a version not loaded yet, a credential not in place yet.
    Retry(String),
}
