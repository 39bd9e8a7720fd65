//! One model load, phase by phase: fetch (with on-the-fly SHA-256), verify, load, warm up, and validate against
//! the golden set when the spec names one.
//!
//! A `LoadAttempt` is the observable record of a load: the status endpoint reads its phase, bytes and timings while
//! it runs, and its failure reason afterwards. Only a load that has passed every phase yields a `Served` model.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures::FutureExt;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;

use crate::contract::{
    capabilities, env, AttemptView, LoadPhase, ModelMetadataView, ObjectIdentity, Reason,
    Signature, Timings, ValidationView, MAX_VALIDATION_FILE_BYTES,
};
use crate::failure::Failure;
use crate::fetch::{Fetcher, Progress};
use crate::metrics::{Metrics, NameLabel, PhaseLabels, ReasonLabels, ResultLabels};
use crate::model::{ModelSpec, ValidationSpec};
use crate::runtime::{Model, Runtimes};
use crate::validation::Golden;
use crate::verify::verify_sha256;

#[derive(Debug)]
struct AttemptState {
    phase: LoadPhase,
    sha256: Option<String>,
    failure: Option<Failure>,
    timings: Timings,
    validation: Option<ValidationView>,
    signature: Option<Signature>,
    metadata: Option<ModelMetadataView>,
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
                validation: None,
                signature: None,
                metadata: None,
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
            validation: state.validation.clone(),
            signature: state.signature.clone(),
            model_metadata: state.metadata.clone(),
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
    /// The golden set's result, when the load had one.
    pub validation: Option<ValidationView>,
}

pub struct Loader {
    pub fetcher: Fetcher,
    pub runtimes: Runtimes,
    /// What this server serves (`--print-capabilities`), as `/status` shows it.
    pub capabilities: serde_json::Value,
    pub metrics: Arc<Metrics>,
}

impl Loader {
    /// Runs every phase of `attempt`, recording progress, timings, metrics and the failure if any.
    pub async fn load(&self, attempt: &LoadAttempt) -> Result<Served, Failure> {
        let started = Instant::now();
        // A panic anywhere in the phases is recorded like any failure, so the status and the exit say so.
        let result = AssertUnwindSafe(self.phases(attempt))
            .catch_unwind()
            .await
            .unwrap_or_else(|payload| Err(Failure::panicked("the load", &*payload)));
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
                    ("validation", t.validation_seconds),
                    ("total", t.total_seconds),
                ] {
                    let Some(seconds) = seconds else {
                        continue;
                    };
                    let labels = PhaseLabels {
                        model: model.clone(),
                        phase: phase.to_owned(),
                    };
                    self.metrics
                        .load_duration
                        .get_or_create(&labels)
                        .observe(seconds);
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
        let Some(runtime) = self.runtimes.get(&spec.format) else {
            let why = if capabilities::FORMATS.contains(&spec.format.as_str()) {
                "is not served by this image"
            } else {
                "is not served by ferry-server"
            };
            return Err(Failure::new(
                Reason::UnsupportedFormat,
                format!(
                    "{}={} {why} (formats here: {})",
                    env::MODEL_FORMAT,
                    spec.format,
                    self.runtimes.formats().join(", ")
                ),
            ));
        };

        let clock = Instant::now();
        // The golden set comes alongside the model, so a missing or malformed one fails before the model loads.
        let (downloaded, golden) = tokio::try_join!(
            self.fetcher
                .fetch_object(&spec.uri, &attempt.progress, spec.object.as_ref()),
            self.golden(spec),
        )?;
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
        let size = downloaded.size;
        let model: Arc<dyn Model> = blocking("the model load", move || {
            let model = runtime.load(&downloaded.path, size);
            // The sessions hold the weights now; the file is no longer needed.
            drop(downloaded);
            model
        })
        .await?
        .into();
        {
            let mut state = attempt.state();
            state.timings.load_seconds = Some(clock.elapsed().as_secs_f64());
            state.signature = Some(model.signature().to_contract());
            state.metadata = model.metadata().cloned();
        }

        attempt.enter(LoadPhase::Warming);
        let clock = Instant::now();
        let warming = model.clone();
        blocking("the warm-up", move || {
            warming.warm_up().map_err(|e| {
                Failure::new(
                    Reason::WarmupFailed,
                    format!("inference on a synthetic input of the model's own shape failed: {e}"),
                )
            })
        })
        .await?;
        attempt.state().timings.warmup_seconds = Some(clock.elapsed().as_secs_f64());

        let validation = match golden {
            Some(golden) => Some(self.validate(attempt, &model, golden).await?),
            None => None,
        };

        let sha256 = attempt.state().sha256.clone().unwrap_or_default();
        Ok(Served {
            spec: spec.clone(),
            sha256,
            size,
            identity,
            permits: Semaphore::new(model.concurrency()),
            model,
            validation,
        })
    }

    /// Fetches, verifies and parses the golden set of `spec`, if it names one. Failures to get the file keep the
    /// fetcher's reason (`NotFound`, `AccessDenied`, ...) with a message that starts "validation file".
    async fn golden(&self, spec: &ModelSpec) -> Result<Option<Golden>, Failure> {
        let Some(ValidationSpec {
            uri,
            sha256,
            sha256_setting,
        }) = &spec.validation
        else {
            return Ok(None);
        };
        let fetcher = Fetcher {
            max_bytes: MAX_VALIDATION_FILE_BYTES,
            concurrency: 1,
            ..self.fetcher.clone()
        };
        let progress = Progress::new(Counter::default());
        let downloaded = fetcher.fetch(uri, &progress).await.map_err(|f| {
            let message = match f.reason {
                Reason::TooLarge => format!(
                    "validation file {uri} is larger than the limit of {MAX_VALIDATION_FILE_BYTES} bytes"
                ),
                _ => format!("validation file {}", f.message),
            };
            Failure { message, ..f }
        });
        let downloaded = downloaded
            .and_then(|downloaded| match sha256 {
                Some(expected) if *expected != downloaded.sha256 => Err(Failure::new(
                    Reason::ChecksumMismatch,
                    format!(
                        "validation file {uri}: its SHA-256 is {}, {sha256_setting} expects {expected}",
                        downloaded.sha256
                    ),
                )),
                _ => Ok(downloaded),
            })
            .inspect_err(|_| self.count_validation(&spec.name, "error"))?;
        let uri = uri.to_string();
        let golden = blocking("reading the validation file", move || {
            let bytes = std::fs::read(&downloaded.path).map_err(|e| {
                Failure::new(
                    Reason::FetchFailed,
                    format!("validation file {uri}: cannot read the download: {e}"),
                )
            })?;
            drop(downloaded);
            Golden::parse(&bytes, &uri)
        })
        .await
        .inspect_err(|f| {
            if f.reason == Reason::InvalidValidationFile {
                self.count_validation(&spec.name, "invalid");
            }
        })?;
        Ok(Some(golden))
    }

    /// Runs the golden set on the warmed-up model, records the result in the attempt, and passes or fails.
    async fn validate(
        &self,
        attempt: &LoadAttempt,
        model: &Arc<dyn Model>,
        golden: Golden,
    ) -> Result<ValidationView, Failure> {
        attempt.enter(LoadPhase::Validating);
        let clock = Instant::now();
        let running = model.clone();
        let report = blocking("the golden set", move || golden.run(&*running)).await;
        let name = &attempt.spec.name;
        let report = match report {
            Ok(report) => report,
            Err(failure) => {
                self.count_validation(name, "invalid");
                return Err(failure);
            }
        };
        {
            let mut state = attempt.state();
            state.timings.validation_seconds = Some(clock.elapsed().as_secs_f64());
            state.validation = Some(report.view.clone());
        }
        let verdict = report.verdict();
        self.count_validation(name, if verdict.is_ok() { "passed" } else { "failed" });
        tracing::info!(
            cases = report.view.cases,
            passed = report.view.passed,
            required = report.required,
            max_error = ?report.view.max_error,
            seconds = report.view.seconds,
            "golden set run"
        );
        verdict.map(|()| report.view)
    }

    fn count_validation(&self, model: &str, result: &str) {
        self.metrics
            .validation_runs
            .get_or_create(&ResultLabels {
                model: model.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }
}

/// Runs `work` on the blocking pool; a panic there fails the load with `LoadPanicked`.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failure::stopped(what, e))?
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::fetch::Fetcher;
    use crate::runtime::Runtime;

    /// A runtime with a bug: it panics on every load.
    struct Panicking;

    impl Runtime for Panicking {
        fn load(&self, _: &Path, _: u64) -> Result<Box<dyn Model>, Failure> {
            panic!("the session builder broke")
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_runtime_that_panics_fails_the_load_as_load_panicked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.onnx");
        std::fs::write(&file, b"any bytes: the runtime panics before it reads them").unwrap();
        let work_dir = dir.path().join("work");
        std::fs::create_dir(&work_dir).unwrap();
        let metrics = Arc::new(Metrics::new());
        let loader = Loader {
            fetcher: Fetcher {
                store: Default::default(),
                work_dir,
                max_bytes: 1 << 20,
                timeout: Duration::from_secs(10),
                concurrency: 1,
                part_bytes: crate::contract::DEFAULT_DOWNLOAD_PART_BYTES,
            },
            runtimes: Runtimes::default().with("onnx", Arc::new(Panicking)),
            capabilities: serde_json::Value::Null,
            metrics: metrics.clone(),
        };
        let spec = ModelSpec {
            name: "iris".into(),
            uri: url::Url::from_file_path(&file).unwrap(),
            version: "1".into(),
            sha256: None,
            format: "onnx".into(),
            validation: None,
            object: None,
        };
        let attempt = LoadAttempt::new(spec, false, &metrics);
        let failure = match loader.load(&attempt).await {
            Ok(_) => panic!("a load whose runtime panics succeeded"),
            Err(failure) => failure,
        };
        assert_eq!(failure.reason, Reason::LoadPanicked, "{failure}");
        assert_eq!(
            failure.message,
            "the model load panicked: the session builder broke"
        );
        let view = attempt.view();
        assert_eq!(view.phase, LoadPhase::Failed);
        assert_eq!(view.reason, Some(Reason::LoadPanicked));
    }
}
