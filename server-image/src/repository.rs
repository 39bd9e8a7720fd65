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

use crate::config::ModelSpec;
use crate::contract::{AdminView, IndexEntry, IndexState, LoadPhase, ServerStatus, ServingView};
use crate::failure::Failure;
use crate::load::{LoadAttempt, Loader, Served};
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
                state: IndexState::Ready,
                reason: String::new(),
            })
            .collect();
        if let Some(attempt) = self.latest() {
            let view = attempt.view();
            let state = match view.phase {
                LoadPhase::Ready => None,
                LoadPhase::Failed => Some(IndexState::Unavailable),
                _ => Some(IndexState::Loading),
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

    /// The status; `admin` is how the admin API is guarded (the HTTP layer's business, shown here too).
    pub fn status(&self, admin: AdminView) -> ServerStatus {
        let serving_model = self.serving();
        let serving = serving_model.as_ref().map(|s| ServingView {
            version: s.spec.version.clone(),
            uri: s.spec.uri.to_string(),
            sha256: s.sha256.clone(),
            bytes: s.size,
            platform: s.model.platform().to_owned(),
        });
        let load = self.latest().map(|a| a.view());
        let (phase, version, sha256, bytes_done, bytes_total) = match (&serving, &load) {
            (Some(s), _) => (
                LoadPhase::Ready,
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
            (None, None) => (LoadPhase::Downloading, None, None, 0, None),
        };
        ServerStatus {
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
            admin,
            validation: serving_model.as_ref().and_then(|s| s.validation.clone()),
            signature: serving_model
                .as_ref()
                .map(|s| s.model.signature().to_contract()),
            model_metadata: serving_model
                .as_ref()
                .and_then(|s| s.model.metadata().cloned()),
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
