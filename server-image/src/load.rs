//! One model load, phase by phase: fetch (with on-the-fly SHA-256), verify, load, warm up.
//!
//! A `LoadAttempt` is the observable record of a load: the status endpoint reads its phase, bytes and timings while
//! it runs, and its failure reason afterwards. Only a load that has passed every phase yields a `Served` model.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::config::ModelSpec;
use crate::contract::{capabilities, env, AttemptView, LoadPhase, ObjectIdentity, Reason, Timings};
use crate::failure::Failure;
use crate::fetch::{Fetcher, Progress};
use crate::metrics::{Metrics, NameLabel, PhaseLabels, ReasonLabels};
use crate::runtime::{Model, Runtime};
use crate::verify::verify_sha256;

#[derive(Debug)]
struct AttemptState {
    phase: LoadPhase,
    sha256: Option<String>,
    failure: Option<Failure>,
    timings: Timings,
}

#[derive(Debug)]
pub struct LoadAttempt {
    pub spec: ModelSpec,
    /// Loaded beside the serving version (no switch) rather than in its place.
    pub stage: bool,
    pub progress: Progress,
    state: Mutex<AttemptState>,
}

impl LoadAttempt {
    pub fn new(spec: ModelSpec, stage: bool, metrics: &Metrics) -> LoadAttempt {
        let downloaded = metrics.downloaded_bytes.get_or_create_owned(&NameLabel {
            model: spec.name.clone(),
        });
        LoadAttempt {
            spec,
            stage,
            progress: Progress::new(downloaded),
            state: Mutex::new(AttemptState {
                phase: LoadPhase::Downloading,
                sha256: None,
                failure: None,
                timings: Timings::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, AttemptState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn phase(&self) -> LoadPhase {
        self.state().phase
    }

    pub fn failure(&self) -> Option<Failure> {
        self.state().failure.clone()
    }

    fn enter(&self, phase: LoadPhase) {
        self.state().phase = phase;
    }

    pub fn view(&self) -> AttemptView {
        let state = self.state();
        let total = self.progress.total.load(Ordering::Relaxed);
        AttemptView {
            version: self.spec.version.clone(),
            stage: self.stage,
            uri: self.spec.uri.to_string(),
            phase: state.phase,
            bytes_done: self.progress.done.load(Ordering::Relaxed),
            bytes_total: (total > 0).then_some(total),
            sha256: state.sha256.clone(),
            reason: state.failure.as_ref().map(|f| f.reason),
            message: state.failure.as_ref().map(|f| f.message.clone()),
            operator: state.failure.as_ref().and_then(|f| f.operator.clone()),
            timings: state.timings,
        }
    }
}

/// A model that passed every phase, ready to answer requests.
pub struct Served {
    pub spec: ModelSpec,
    pub sha256: String,
    pub size: u64,
    /// The object the file was downloaded from.
    pub identity: Option<ObjectIdentity>,
    pub model: Arc<dyn Model>,
    /// One permit per request that can run without waiting for a session.
    pub permits: Semaphore,
}

pub struct Loader {
    pub fetcher: Fetcher,
    pub runtime: Arc<dyn Runtime>,
    pub metrics: Arc<Metrics>,
}

impl Loader {
    /// Runs every phase of `attempt`, recording progress, timings, metrics and the failure if any.
    pub async fn load(&self, attempt: &LoadAttempt) -> Result<Served, Failure> {
        let started = Instant::now();
        let result = self.phases(attempt).await;
        let mut state = attempt.state();
        state.timings.total_seconds = Some(started.elapsed().as_secs_f64());
        let model = attempt.spec.name.clone();
        match &result {
            Ok(served) => {
                state.phase = LoadPhase::Ready;
                let t = state.timings;
                for (phase, seconds) in [
                    ("fetch", t.fetch_seconds),
                    ("verify", t.verify_seconds),
                    ("load", t.load_seconds),
                    ("warmup", t.warmup_seconds),
                    ("total", t.total_seconds),
                ] {
                    let labels = PhaseLabels {
                        model: model.clone(),
                        phase: phase.to_owned(),
                    };
                    self.metrics
                        .load_duration
                        .get_or_create(&labels)
                        .observe(seconds.unwrap_or_default());
                }
                tracing::info!(version = %served.spec.version, stage = attempt.stage, sha256 = %served.sha256, bytes = served.size, timings = ?t, "model ready");
            }
            Err(failure) => {
                state.phase = LoadPhase::Failed;
                state.failure = Some(failure.clone());
                let labels = ReasonLabels {
                    model,
                    reason: failure.reason.to_string(),
                };
                self.metrics.load_failures.get_or_create(&labels).inc();
                tracing::warn!(version = %attempt.spec.version, %failure, "model load failed");
            }
        }
        result
    }

    async fn phases(&self, attempt: &LoadAttempt) -> Result<Served, Failure> {
        let spec = &attempt.spec;
        if !capabilities::FORMATS.contains(&spec.format.as_str()) {
            return Err(Failure::new(
                Reason::UnsupportedFormat,
                format!(
                    "{}={} is not served by ferry-server (formats: {})",
                    env::MODEL_FORMAT,
                    spec.format,
                    capabilities::FORMATS.join(", ")
                ),
            ));
        }

        let clock = Instant::now();
        let downloaded = self
            .fetcher
            .fetch_object(&spec.uri, &attempt.progress, spec.object.as_ref())
            .await?;
        let identity = downloaded.identity.clone();
        attempt.state().timings.fetch_seconds = Some(clock.elapsed().as_secs_f64());

        attempt.enter(LoadPhase::Verifying);
        let clock = Instant::now();
        verify_sha256(spec.sha256.as_deref(), &downloaded.sha256)?;
        {
            let mut state = attempt.state();
            state.sha256 = Some(downloaded.sha256.clone());
            state.timings.verify_seconds = Some(clock.elapsed().as_secs_f64());
        }

        attempt.enter(LoadPhase::Loading);
        let clock = Instant::now();
        let runtime = self.runtime.clone();
        let size = downloaded.size;
        let model: Arc<dyn Model> = blocking(move || {
            let model = runtime.load(&downloaded.path, size);
            // The sessions hold the weights now; the file is no longer needed.
            drop(downloaded);
            model
        })
        .await?
        .into();
        attempt.state().timings.load_seconds = Some(clock.elapsed().as_secs_f64());

        attempt.enter(LoadPhase::Warming);
        let clock = Instant::now();
        let warming = model.clone();
        blocking(move || {
            warming.warm_up().map_err(|e| {
                Failure::new(
                    Reason::WarmupFailed,
                    format!("inference on a synthetic input of the model's own shape failed: {e}"),
                )
            })
        })
        .await?;
        attempt.state().timings.warmup_seconds = Some(clock.elapsed().as_secs_f64());

        let sha256 = attempt.state().sha256.clone().unwrap_or_default();
        Ok(Served {
            spec: spec.clone(),
            sha256,
            size,
            identity,
            permits: Semaphore::new(model.concurrency()),
            model,
        })
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        Failure::new(
            Reason::CorruptModel,
            format!("the runtime stopped while loading: {e}"),
        )
    })?
}
