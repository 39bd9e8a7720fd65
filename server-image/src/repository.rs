//! The served model and its replacement (the model repository extension).
//!
//! ```text
//!   serving: Arc<Served> ──── requests clone the Arc when they start and finish on that version
//!        ▲
//!        │ swap (one write of the pointer), only after fetch + verify + load + warm-up succeeded
//!        │
//!   latest: Arc<LoadAttempt> ── the running or last load, read by /status and the index
//! ```
//!
//! One load runs at a time. A failed load leaves `serving` untouched and records its reason in `latest`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::config::ModelSpec;
use crate::contract::Reason;
use crate::failure::Failure;
use crate::load::{AttemptView, LoadAttempt, Loader, Phase, Served};
use crate::metrics::InfoLabels;

pub struct Repository {
    /// The name every request must use; fixed for the life of the process.
    pub name: String,
    loader: Loader,
    serving: RwLock<Option<Arc<Served>>>,
    latest: Mutex<Option<Arc<LoadAttempt>>>,
    busy: AtomicBool,
    shutting_down: AtomicBool,
}

/// Another load is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Clears the busy flag when the load ends, however it ends.
struct BusyGuard(Arc<Repository>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// Index entry of the repository extension.
#[derive(Debug, Clone, Serialize)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    /// READY, LOADING or UNAVAILABLE.
    pub state: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServingView {
    pub version: String,
    pub uri: String,
    pub sha256: String,
    pub bytes: u64,
    pub platform: &'static str,
}

/// The JSON status. Top-level fields describe the model that serves, or, before one does, the load in progress;
/// `reason` is the failure of the latest load (a failed hot swap leaves `ready` true and sets `reason`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub model: String,
    pub phase: Phase,
    pub ready: bool,
    pub shutting_down: bool,
    pub version: Option<String>,
    pub sha256: Option<String>,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    pub reason: Option<Reason>,
    pub message: Option<String>,
    pub operator: Option<String>,
    pub serving: Option<ServingView>,
    pub load: Option<AttemptView>,
    pub capabilities: serde_json::Value,
}

impl Repository {
    pub fn new(name: String, loader: Loader) -> Repository {
        Repository {
            name,
            loader,
            serving: RwLock::new(None),
            latest: Mutex::new(None),
            busy: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        }
    }

    pub fn serving(&self) -> Option<Arc<Served>> {
        self.serving
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn latest(&self) -> Option<Arc<LoadAttempt>> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Acquire) && self.serving().is_some()
    }

    /// Readiness turns false at once; requests already accepted still finish.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.loader.metrics.ready.set(0);
    }

    /// Why the server is not ready, for 503 responses.
    pub fn not_ready_reason(&self) -> String {
        if self.shutting_down.load(Ordering::Acquire) {
            return "shutting down".to_owned();
        }
        match self.latest() {
            Some(attempt) => match attempt.failure() {
                Some(failure) => format!("model {} failed to load: {failure}", self.name),
                None => format!(
                    "model {} is not ready yet (phase {})",
                    self.name,
                    attempt.phase().as_str()
                ),
            },
            None => format!("model {} is not loaded", self.name),
        }
    }

    /// Registers a load of `spec`, or refuses while another one runs.
    pub fn begin_load(&self, spec: ModelSpec) -> Result<Arc<LoadAttempt>, Busy> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Busy);
        }
        let attempt = Arc::new(LoadAttempt::new(spec, &self.loader.metrics));
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(attempt.clone());
        Ok(attempt)
    }

    /// Runs a load registered by `begin_load`; on success the new version replaces the old one atomically.
    pub async fn run_load(self: Arc<Self>, attempt: Arc<LoadAttempt>) -> Result<(), Failure> {
        let _busy = BusyGuard(self.clone());
        let served = Arc::new(self.loader.load(&attempt).await?);
        let previous = self
            .serving
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .replace(served.clone());
        let metrics = &self.loader.metrics;
        if let Some(previous) = previous {
            metrics.model_info.remove(&info_labels(&previous));
        }
        metrics
            .model_info
            .get_or_create(&info_labels(&served))
            .set(1);
        if !self.shutting_down.load(Ordering::Acquire) {
            metrics.ready.set(1);
        }
        Ok(())
    }

    pub fn index(&self) -> Vec<IndexEntry> {
        let serving = self.serving();
        let mut entries: Vec<IndexEntry> = serving
            .iter()
            .map(|s| IndexEntry {
                name: self.name.clone(),
                version: s.spec.version.clone(),
                state: "READY",
                reason: String::new(),
            })
            .collect();
        if let Some(attempt) = self.latest() {
            let view = attempt.view();
            let state = match view.phase {
                Phase::Ready => None,
                Phase::Failed => Some("UNAVAILABLE"),
                _ => Some("LOADING"),
            };
            if let Some(state) = state {
                entries.push(IndexEntry {
                    name: self.name.clone(),
                    version: view.version,
                    state,
                    reason: view
                        .reason
                        .map(|r| format!("{r}: {}", view.message.unwrap_or_default()))
                        .unwrap_or_default(),
                });
            }
        }
        entries
    }

    pub fn status(&self) -> Status {
        let serving = self.serving().map(|s| ServingView {
            version: s.spec.version.clone(),
            uri: s.spec.uri.to_string(),
            sha256: s.sha256.clone(),
            bytes: s.size,
            platform: s.model.platform(),
        });
        let load = self.latest().map(|a| a.view());
        let (phase, version, sha256, bytes_done, bytes_total) = match (&serving, &load) {
            (Some(s), _) => (
                Phase::Ready,
                Some(s.version.clone()),
                Some(s.sha256.clone()),
                s.bytes,
                Some(s.bytes),
            ),
            (None, Some(l)) => (
                l.phase,
                Some(l.version.clone()),
                l.sha256.clone(),
                l.bytes_done,
                l.bytes_total,
            ),
            (None, None) => (Phase::Downloading, None, None, 0, None),
        };
        Status {
            model: self.name.clone(),
            phase,
            ready: self.is_ready(),
            shutting_down: self.shutting_down.load(Ordering::Acquire),
            version,
            sha256,
            bytes_done,
            bytes_total,
            reason: load.as_ref().and_then(|l| l.reason),
            message: load.as_ref().and_then(|l| l.message.clone()),
            operator: load.as_ref().and_then(|l| l.operator.clone()),
            serving,
            load,
            capabilities: crate::contract::capabilities_json(),
        }
    }
}

fn info_labels(served: &Served) -> InfoLabels {
    InfoLabels {
        model: served.spec.name.clone(),
        version: served.spec.version.clone(),
        sha256: served.sha256.clone(),
    }
}
