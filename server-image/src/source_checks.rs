//! The scheduled checks of the serving model's URI (`FERRY_REFRESH_INTERVAL_SECONDS`): every interval ±10 %, one
//! HEAD of the serving version's URI, never a download. What a check finds is shown in `/status` `source`; a check
//! never changes what serves: whoever reads the status (the operator) decides.
//!
//! ```text
//!   run ── every interval ±10 % ──▶ HEAD serving URI ──▶ SourceWatch ──▶ /status source {identity, changed, error}
//!                                                    └─▶ ferry_source_checks_total{result}
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::ObjectStoreExt;
use prometheus_client::metrics::counter::Counter;
use url::Url;

use crate::contract::{ObjectIdentity, SourceView};
use crate::fetch::Fetcher;
use crate::metrics::{CheckLabels, Metrics};
use crate::repository::Repository;
use crate::source::identity;
use crate::versions;

/// Longest `source.error` in the status.
const MAX_ERROR_BYTES: usize = 512;
/// Bound on one check, whatever the download timeout.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The identity of the object at `uri` now: one HEAD request.
pub async fn head(fetcher: &Fetcher, uri: &Url) -> Result<ObjectIdentity, String> {
    let (store, path) = fetcher.open(uri).map_err(|f| f.message)?;
    let meta = match tokio::time::timeout(CHECK_TIMEOUT, store.head(&path)).await {
        Ok(Ok(meta)) => meta,
        Ok(Err(e)) => return Err(format!("HEAD {uri}: {e}")),
        Err(_) => {
            return Err(format!(
                "HEAD {uri} did not answer within {}s",
                CHECK_TIMEOUT.as_secs()
            ))
        }
    };
    identity(&meta).ok_or_else(|| {
        format!("{uri} has no ETag, version or Last-Modified: a change cannot be detected")
    })
}

/// Counters of `ferry_source_checks_total{result}`.
#[derive(Clone)]
pub struct CheckCounters {
    pub same: Counter,
    pub changed: Counter,
    pub error: Counter,
}

impl CheckCounters {
    /// `ferry_source_checks_total{model, result}`, one counter per result.
    pub fn new(metrics: &Metrics, model: &str) -> CheckCounters {
        let counter = |result: &str| {
            metrics.source_checks.get_or_create_owned(&CheckLabels {
                model: model.to_owned(),
                result: result.to_owned(),
            })
        };
        CheckCounters {
            same: counter("same"),
            changed: counter("changed"),
            error: counter("error"),
        }
    }
}

/// What the checks found, read by `/status`.
#[derive(Debug, Default)]
pub struct SourceState {
    /// The URI of the latest successful check, so `changed` is only computed against a version from that URI.
    uri: Option<String>,
    identity: Option<ObjectIdentity>,
    checked_at: Option<String>,
    error: Option<String>,
}

/// What the checks found; shown in the status only once they run.
#[derive(Debug, Default)]
pub struct SourceWatch {
    running: AtomicBool,
    state: Mutex<SourceState>,
}

impl SourceWatch {
    fn state(&self) -> std::sync::MutexGuard<'_, SourceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shows `source` in the status from now on: the checks run.
    pub fn start(&self) {
        self.running.store(true, Ordering::Release);
    }

    /// Records a check of `uri` that ended at `at`.
    pub fn record(&self, uri: &Url, at: String, result: Result<ObjectIdentity, String>) {
        let mut state = self.state();
        state.checked_at = Some(at);
        match result {
            Ok(identity) => {
                state.uri = Some(uri.to_string());
                state.identity = Some(identity);
                state.error = None;
            }
            Err(error) => state.error = Some(bounded(error)),
        }
    }

    /// The status view, `changed` computed against the version serving now (`uri`, `identity`); `None` while the
    /// checks do not run.
    pub fn status(&self, serving: Option<(&str, Option<&ObjectIdentity>)>) -> Option<SourceView> {
        self.running
            .load(Ordering::Acquire)
            .then(|| self.view(serving))
    }

    /// The view whether or not the checks run.
    fn view(&self, serving: Option<(&str, Option<&ObjectIdentity>)>) -> SourceView {
        let state = self.state();
        let changed = match (serving, &state.identity, &state.uri) {
            (Some((uri, served)), Some(found), Some(checked)) if uri == checked => {
                !served.is_some_and(|served| served.same_object(found))
            }
            _ => false,
        };
        SourceView {
            identity: state.identity.clone(),
            checked_at: state.checked_at.clone(),
            error: state.error.clone(),
            changed,
        }
    }
}

fn bounded(mut text: String) -> String {
    if text.len() > MAX_ERROR_BYTES {
        let mut end = MAX_ERROR_BYTES - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// `interval` ±10 %, from a fresh random number, so the pods of one deployment do not check in step.
pub fn jittered(interval: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // A factor in [0.9, 1.1].
    let factor = 0.9 + 0.2 * (random as f64 / u64::MAX as f64);
    interval.mul_f64(factor)
}

/// Checks the serving version's URI every `interval` (jittered), starting one interval after this is called
/// (once the model serves), until the process stops; each result goes to `watch` (call its `start` first).
pub async fn run(
    repository: Arc<Repository>,
    watch: Arc<SourceWatch>,
    fetcher: Fetcher,
    interval: Duration,
    counters: CheckCounters,
) {
    loop {
        tokio::time::sleep(jittered(interval)).await;
        let Some(serving) = repository.serving() else {
            continue;
        };
        let uri = serving.spec.uri.clone();
        let served = serving.identity.clone();
        drop(serving);
        let result = head(&fetcher, &uri).await;
        match &result {
            Ok(found) if served.as_ref().is_some_and(|s| s.same_object(found)) => {
                counters.same.inc();
                tracing::debug!(%uri, object = %found.token(), "source unchanged");
            }
            Ok(found) => {
                counters.changed.inc();
                tracing::info!(%uri, object = %found.token(), serving = ?served.as_ref().map(ObjectIdentity::token), "a new object is at the model URI");
            }
            Err(error) => {
                counters.error.inc();
                tracing::warn!(%uri, %error, "source check failed");
            }
        }
        watch.record(&uri, versions::now(), result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_is_against_the_serving_object_of_the_checked_uri() {
        let watch = SourceWatch::default();
        let uri: Url = "s3://b/m.onnx".parse().unwrap();
        let old = ObjectIdentity::parse_token("etag:\"1\"").unwrap();
        let new = ObjectIdentity::parse_token("etag:\"2\"").unwrap();
        assert_eq!(
            watch.view(Some(("s3://b/m.onnx", Some(&old)))),
            SourceView::default()
        );
        watch.record(&uri, "t1".into(), Ok(new.clone()));
        let view = watch.view(Some(("s3://b/m.onnx", Some(&old))));
        assert!(view.changed);
        assert_eq!(view.identity.as_ref(), Some(&new));
        assert!(!watch.view(Some(("s3://b/m.onnx", Some(&new)))).changed);
        assert!(!watch.view(Some(("s3://b/other.onnx", Some(&old)))).changed);
        // A failed check keeps the identity and says why.
        watch.record(&uri, "t2".into(), Err("x".repeat(2000)));
        let view = watch.view(Some(("s3://b/m.onnx", Some(&old))));
        assert!(view.changed);
        assert_eq!(view.checked_at.as_deref(), Some("t2"));
        assert_eq!(view.error.as_ref().unwrap().len(), MAX_ERROR_BYTES);
        watch.record(&uri, "t3".into(), Ok(old.clone()));
        let view = watch.view(Some(("s3://b/m.onnx", Some(&old))));
        assert!(!view.changed && view.error.is_none());
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let interval = Duration::from_secs(300);
        let all: Vec<Duration> = (0..200).map(|_| jittered(interval)).collect();
        assert!(all
            .iter()
            .all(|d| *d >= Duration::from_secs(270) && *d <= Duration::from_secs(330)));
        assert!(all.iter().any(|d| *d != all[0]), "the jitter varies");
    }

    #[test]
    fn the_status_shows_the_checks_only_once_they_run() {
        let watch = SourceWatch::default();
        assert_eq!(watch.status(None), None);
        watch.start();
        assert_eq!(watch.status(None), Some(SourceView::default()));
    }
}
