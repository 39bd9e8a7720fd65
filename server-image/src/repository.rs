//! The loaded model versions, the one that serves, and the loads that change them (the model repository
//! extension: hot swap, stage, switch, unload).
//!
//! ```text
//!   versions: VersionTable<Served> ── every loaded version as an Arc; requests clone the one they name (or the
//!        ▲                             serving one) when they start and finish on it
//!        │ one write of the table, only after fetch + verify + load + warm-up succeeded:
//!        │   load            → the new version serves, the old one is dropped (hot swap)
//!        │   load, stage     → the new version is loaded beside the others (staged)
//!        │   switch / unload → no load: the serving pointer moves / a version that does not serve is dropped
//!        │
//!   latest: Arc<LoadAttempt> ── the running or last load, read by /status and the index
//! ```
//!
//! One load runs at a time. A failed load leaves every version untouched and records its reason in `latest`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::contract::{
    env, AdminView, IndexEntry, IndexState, LoadPhase, ServerStatus, ServingView, Switched,
    VersionState, VersionView,
};
use crate::failure::Failure;
use crate::load::{LoadAttempt, Loader, Served};
use crate::metrics::{InfoLabels, NameLabel, StateLabels};
use crate::model::ModelSpec;
use crate::versions::{self, NotLoaded, ServingVersion, VersionTable};

pub struct Repository {
    /// The name every request must use; fixed for the life of the process.
    pub name: String,
    loader: Loader,
    /// `FERRY_MAX_LOADED_VERSIONS`: a stage beyond it is refused.
    max_loaded_versions: usize,
    versions: RwLock<VersionTable<Served>>,
    latest: Mutex<Option<Arc<LoadAttempt>>>,
    busy: AtomicBool,
    shutting_down: AtomicBool,
    /// Why the server stops when it is not a signal (a listener that failed), for the 503 of readiness.
    stop_reason: Mutex<Option<String>>,
}

/// Why a load was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadRefused {
    /// Another load is running.
    Busy,
    /// A stage would load more than `FERRY_MAX_LOADED_VERSIONS` versions.
    Full(String),
    /// A stage of a version that is loaded from another file.
    Conflict(String),
}

/// A load that was accepted.
pub enum Begun {
    /// Run it with `run_load`.
    Started(Arc<LoadAttempt>),
    /// A stage of a version that is already loaded from the same file: nothing to do.
    AlreadyLoaded,
}

/// Why a switch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchRefused {
    /// The version is not loaded; the message names the loaded ones.
    NotLoaded(String),
    ShuttingDown,
}

/// Why an unload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnloadRefused(pub String);

/// Clears the busy flag when the load ends, however it ends.
struct BusyGuard(Arc<Repository>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// Lets go of dropped versions off the async threads: freeing a large model's sessions takes a while.
fn release(dropped: Vec<Arc<Served>>) {
    if dropped.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn_blocking(move || drop(dropped))),
        Err(_) => drop(dropped),
    }
}

impl Repository {
    pub fn new(name: String, loader: Loader, max_loaded_versions: usize) -> Repository {
        Repository {
            name,
            loader,
            max_loaded_versions: max_loaded_versions.max(1),
            versions: RwLock::new(VersionTable::default()),
            latest: Mutex::new(None),
            busy: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            stop_reason: Mutex::new(None),
        }
    }

    fn table(&self) -> RwLockReadGuard<'_, VersionTable<Served>> {
        self.versions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn table_mut(&self) -> RwLockWriteGuard<'_, VersionTable<Served>> {
        self.versions.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The version that answers unversioned requests.
    pub fn serving(&self) -> Option<Arc<Served>> {
        self.table().serving().map(|e| e.value.clone())
    }

    /// Any loaded version (serving, staged or previous).
    pub fn version(&self, version: &str) -> Result<Arc<Served>, NotLoaded> {
        let table = self.table();
        match table.get(version) {
            Some(entry) => Ok(entry.value.clone()),
            None => Err(table.not_loaded()),
        }
    }

    fn latest(&self) -> Option<Arc<LoadAttempt>> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The running load, if any.
    fn running(&self) -> Option<Arc<LoadAttempt>> {
        self.latest().filter(|_| self.busy.load(Ordering::Acquire))
    }

    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Acquire) && self.serving().is_some()
    }

    /// Readiness turns false at once; requests already accepted still finish.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.loader.metrics.ready.set(0);
    }

    /// Like `begin_shutdown`, for a server that can no longer serve: `reason` is what readiness answers.
    pub fn stop_serving(&self, reason: String) {
        *self.stop_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.begin_shutdown();
    }

    /// Why the server is not ready, for 503 responses.
    pub fn not_ready_reason(&self) -> String {
        if self.shutting_down.load(Ordering::Acquire) {
            let reason = self.stop_reason.lock().unwrap_or_else(|p| p.into_inner());
            return reason.clone().unwrap_or_else(|| "shutting down".to_owned());
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

    /// Registers a load of `spec` (beside the serving version when `stage`), or refuses it: while another load
    /// runs, when a stage would exceed `FERRY_MAX_LOADED_VERSIONS`, or when it stages a version already loaded
    /// from another file. A stage of a version already loaded from the same file needs no load.
    pub fn begin_load(&self, spec: ModelSpec, stage: bool) -> Result<Begun, LoadRefused> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(LoadRefused::Busy);
        }
        if stage {
            let refused = {
                let table = self.table();
                match table.get(&spec.version) {
                    Some(entry) => {
                        let loaded = &entry.value;
                        let same = loaded.spec.uri == spec.uri
                            && loaded.spec.format == spec.format
                            && spec.sha256.as_ref().is_none_or(|d| *d == loaded.sha256)
                            && spec.object.as_ref().is_none_or(|pin| {
                                loaded
                                    .identity
                                    .as_ref()
                                    .is_some_and(|id| pin.same_object(id))
                            });
                        Some(if same {
                            Ok(Begun::AlreadyLoaded)
                        } else {
                            Err(LoadRefused::Conflict(format!(
                                "version {:?} is already loaded ({}) from {} with sha256 {} (object {}); unload \
                                 it before staging another file under that version",
                                spec.version,
                                table.state(entry).as_str(),
                                loaded.spec.uri,
                                loaded.sha256,
                                loaded
                                    .identity
                                    .as_ref()
                                    .map_or_else(|| "unknown".to_owned(), |id| id.token())
                            )))
                        })
                    }
                    None if table.len() >= self.max_loaded_versions => {
                        Some(Err(LoadRefused::Full(format!(
                            "{} versions are loaded ({}), the most {}={} allows; unload one first \
                             (POST /v2/repository/models/{}/unload)",
                            table.len(),
                            table.describe(),
                            env::MAX_LOADED_VERSIONS,
                            self.max_loaded_versions,
                            self.name
                        ))))
                    }
                    None => None,
                }
            };
            if let Some(answer) = refused {
                self.busy.store(false, Ordering::Release);
                return answer;
            }
        }
        let attempt = Arc::new(LoadAttempt::new(spec, stage, &self.loader.metrics));
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(attempt.clone());
        Ok(Begun::Started(attempt))
    }

    /// Runs a load registered by `begin_load`; on success the new version serves at once (a hot swap: the one that
    /// served is dropped), or, for a stage, is loaded beside the others.
    pub async fn run_load(self: Arc<Self>, attempt: Arc<LoadAttempt>) -> Result<(), Failure> {
        let _busy = BusyGuard(self.clone());
        let served = Arc::new(self.loader.load(&attempt).await?);
        let version = served.spec.version.clone();
        let metrics = &self.loader.metrics;
        let dropped = {
            let mut table = self.table_mut();
            let now = versions::now();
            let dropped = if attempt.stage {
                table
                    .stage(&version, served.clone(), &now)
                    .into_iter()
                    .collect()
            } else {
                let dropped = table.replace_serving(&version, served.clone(), &now);
                if let Some(old) = dropped.first() {
                    metrics.model_info.remove(&info_labels(old));
                }
                metrics
                    .model_info
                    .get_or_create(&info_labels(&served))
                    .set(1);
                dropped
            };
            self.count_versions(&table);
            dropped
        };
        if attempt.stage {
            tracing::info!(version = %version, "version staged beside the serving one");
        }
        release(dropped);
        if !self.shutting_down.load(Ordering::Acquire) && self.serving().is_some() {
            metrics.ready.set(1);
        }
        Ok(())
    }

    /// Makes the loaded `version` the serving one, atomically; the one that served stays loaded as previous.
    pub fn switch(&self, version: &str) -> Result<Switched, SwitchRefused> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(SwitchRefused::ShuttingDown);
        }
        let metrics = &self.loader.metrics;
        let switch = {
            let mut table = self.table_mut();
            // The clock is read under the lock, at the moment of the swap.
            let switch = table
                .switch(version, &versions::now())
                .map_err(|not_loaded| {
                    let mut message = format!(
                        "model {:?} has no version {version:?} loaded (loaded: {})",
                        self.name, not_loaded.loaded
                    );
                    if let Some(running) = self.running().filter(|a| a.spec.version == version) {
                        message.push_str(&format!(
                            "; its load is running (phase {})",
                            running.phase().as_str()
                        ));
                    }
                    SwitchRefused::NotLoaded(message)
                })?;
            if switch.changed {
                if let Some(from) = &switch.from {
                    metrics.model_info.remove(&info_labels(from));
                }
                metrics
                    .model_info
                    .get_or_create(&info_labels(&switch.to))
                    .set(1);
                metrics
                    .switches
                    .get_or_create(&NameLabel {
                        model: self.name.clone(),
                    })
                    .inc();
                self.count_versions(&table);
            }
            switch
        };
        if switch.changed {
            tracing::info!(version, previous = ?switch.previous, at = %switch.at, "switched the serving version");
        }
        Ok(Switched {
            name: self.name.clone(),
            version: version.to_owned(),
            previous: switch.previous,
            switched_at: switch.at,
        })
    }

    /// Drops `version` unless it serves or is being loaded: `true` if it was loaded, `false` if not.
    pub fn unload(&self, version: &str) -> Result<bool, UnloadRefused> {
        if let Some(running) = self.running().filter(|a| a.spec.version == version) {
            return Err(UnloadRefused(format!(
                "version {version:?} is being loaded (phase {}); unload it once the load has finished",
                running.phase().as_str()
            )));
        }
        let dropped = {
            let mut table = self.table_mut();
            let dropped = table.unload(version).map_err(|ServingVersion| {
                UnloadRefused(format!(
                    "version {version:?} serves; switch to another version before unloading it"
                ))
            })?;
            self.count_versions(&table);
            dropped
        };
        let unloaded = dropped.is_some();
        if unloaded {
            tracing::info!(version, "version unloaded");
        }
        release(dropped.into_iter().collect());
        Ok(unloaded)
    }

    /// `ferry_model_loaded_versions{state}` from the table.
    fn count_versions(&self, table: &VersionTable<Served>) {
        for state in VersionState::ALL {
            self.loader
                .metrics
                .loaded_versions
                .get_or_create(&StateLabels {
                    model: self.name.clone(),
                    state: state.as_str().to_owned(),
                })
                .set(table.count(state) as i64);
        }
    }

    pub fn index(&self) -> Vec<IndexEntry> {
        let mut entries: Vec<IndexEntry> = self
            .table()
            .entries()
            .map(|(entry, _)| IndexEntry {
                name: self.name.clone(),
                version: entry.version.clone(),
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
        let (serving, versions, last_switch) = {
            let table = self.table();
            let serving = table.serving().map(|e| ServingView {
                version: e.version.clone(),
                uri: e.value.spec.uri.to_string(),
                sha256: e.value.sha256.clone(),
                bytes: e.value.size,
                platform: e.value.model.platform().to_owned(),
                identity: e.value.identity.clone(),
            });
            let versions: Vec<VersionView> = table
                .entries()
                .map(|(e, state)| VersionView {
                    version: e.version.clone(),
                    uri: e.value.spec.uri.to_string(),
                    sha256: e.value.sha256.clone(),
                    bytes: e.value.size,
                    state,
                    loaded_at: e.loaded_at.clone(),
                    identity: e.value.identity.clone(),
                })
                .collect();
            (serving, versions, table.last_switch().cloned())
        };
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
            capabilities: self.loader.capabilities.clone(),
            admin,
            // The scheduled checks are not the repository's; the status endpoint adds what they found.
            source: None,
            versions,
            last_switch,
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
