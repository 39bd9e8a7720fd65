//! The model's object in its store: its identity (ETag, version, modification time, size), downloads pinned to
//! one identity, and the scheduled checks that look for a new object at the serving version's URI.
//!
//! ```text
//!   download ──▶ identity of the object it came from (HEAD or GET metadata) ──▶ Served.identity ──▶ /status
//!   pinned download (FERRY_MODEL_OBJECT, parameters.object):
//!        conditional GET (If-Match / version / If-Unmodified-Since) + the metadata compared with the pin
//!        another object ──▶ ObjectChanged "(pinned <token>, now <token>)"
//!   FERRY_REFRESH_INTERVAL_SECONDS: every interval ±10 %, one HEAD of the serving URI ──▶ /status source
//! ```
//!
//! A check never downloads and never changes what serves; whoever reads `/status` (the operator) decides.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::{GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt};
use prometheus_client::metrics::counter::Counter;
use url::Url;

use crate::contract::{ObjectIdentity, Reason, SourceView};
use crate::failure::Failure;
use crate::fetch::Fetcher;
use crate::repository::Repository;
use crate::versions;

/// Longest `source.error` in the status.
const MAX_ERROR_BYTES: usize = 512;
/// Bound on one check, whatever the download timeout.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The identity `meta` describes; `None` when it has no ETag, version or modification time (an http(s) server
/// that sends neither `ETag` nor `Last-Modified`: object_store reports the epoch for the missing date).
pub fn identity(meta: &ObjectMeta) -> Option<ObjectIdentity> {
    let last_modified = (meta.last_modified.timestamp_nanos_opt() != Some(0)).then(|| {
        meta.last_modified
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    });
    let identity = ObjectIdentity {
        etag: meta.e_tag.clone(),
        version: meta.version.clone(),
        last_modified,
        size: meta.size,
    };
    identity.is_identified().then_some(identity)
}

/// The conditions of a GET of exactly `pin`: If-Match its ETag, else that version, else If-Unmodified-Since
/// its modification time (the size is compared once the answer's metadata is in).
pub fn conditions(pin: &ObjectIdentity) -> GetOptions {
    let mut options = GetOptions::default();
    if let Some(etag) = &pin.etag {
        options.if_match = Some(etag.clone());
    } else if let Some(version) = &pin.version {
        options.version = Some(version.clone());
    } else if let Some(modified) = &pin.last_modified {
        options.if_unmodified_since = chrono::DateTime::parse_from_rfc3339(modified)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc));
    }
    options
}

/// `ObjectChanged`: the object at `uri` is not the pinned one.
pub fn changed(uri: &Url, pin: &ObjectIdentity, now: Option<&ObjectIdentity>) -> Failure {
    let now = now.map_or_else(|| "unknown".to_owned(), ObjectIdentity::token);
    Failure::new(
        Reason::ObjectChanged,
        format!(
            "the object at {uri} changed since it was detected (pinned {}, now {now})",
            pin.token()
        ),
    )
}

/// Checks the metadata of an answer against the pin (a store may ignore the conditions of a request).
pub fn check_pin(
    uri: &Url,
    pin: Option<&ObjectIdentity>,
    meta: &ObjectMeta,
) -> Result<(), Failure> {
    match pin {
        Some(pin) => {
            let now = identity(meta);
            if now.as_ref().is_some_and(|now| pin.same_object(now)) {
                Ok(())
            } else {
                Err(changed(uri, pin, now.as_ref()))
            }
        }
        None => Ok(()),
    }
}

/// Whether two answers for one download came from the same object, as far as their metadata tells: by ETag, else
/// version, else modification time; `true` when they have none of these in common.
pub fn same_answer(first: &ObjectMeta, later: &ObjectMeta) -> bool {
    if let (Some(a), Some(b)) = (&first.e_tag, &later.e_tag) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (&first.version, &later.version) {
        return a == b;
    }
    let dated = |m: &ObjectMeta| m.last_modified.timestamp_nanos_opt() != Some(0);
    !(dated(first) && dated(later)) || first.last_modified == later.last_modified
}

/// The failure of a pinned download whose conditional request failed (412): `ObjectChanged`, naming the object
/// that is there now (one HEAD).
pub async fn precondition_failed(
    uri: &Url,
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
    pin: &ObjectIdentity,
) -> Failure {
    let now = store.head(path).await.ok().and_then(|m| identity(&m));
    changed(uri, pin, now.as_ref())
}

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

/// What the checks found, read by `/status`.
#[derive(Debug, Default)]
pub struct SourceState {
    /// The URI of the latest successful check, so `changed` is only computed against a version from that URI.
    uri: Option<String>,
    identity: Option<ObjectIdentity>,
    checked_at: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Default)]
pub struct SourceWatch {
    state: Mutex<SourceState>,
}

impl SourceWatch {
    fn state(&self) -> std::sync::MutexGuard<'_, SourceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    /// The status view, `changed` computed against the version serving now (`uri`, `identity`).
    pub fn view(&self, serving: Option<(&str, Option<&ObjectIdentity>)>) -> SourceView {
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
/// (once the model serves), until the process stops.
pub async fn run_checks(
    repository: Arc<Repository>,
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
        repository.source.record(&uri, versions::now(), result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(e_tag: Option<&str>, seconds: i64, size: u64) -> ObjectMeta {
        ObjectMeta {
            location: "m.onnx".into(),
            last_modified: chrono::DateTime::from_timestamp(seconds, 0).unwrap(),
            size,
            e_tag: e_tag.map(str::to_owned),
            version: None,
        }
    }

    #[test]
    fn identities_come_from_metadata_and_a_missing_date_is_none() {
        let with_etag = identity(&meta(Some("\"e\""), 1_798_201_274, 9)).unwrap();
        assert_eq!(with_etag.etag.as_deref(), Some("\"e\""));
        assert_eq!(
            with_etag.last_modified.as_deref(),
            Some("2026-12-25T12:21:14Z")
        );
        assert_eq!(with_etag.size, 9);
        let dated = identity(&meta(None, 1_798_201_274, 9)).unwrap();
        assert_eq!(dated.token(), "modified:2026-12-25T12:21:14Z;size:9");
        assert_eq!(identity(&meta(None, 0, 9)), None);
    }

    #[test]
    fn a_pin_becomes_the_matching_condition() {
        let etag = ObjectIdentity::parse_token("etag:\"e\"").unwrap();
        let options = conditions(&etag);
        assert_eq!(options.if_match.as_deref(), Some("\"e\""));
        assert!(options.version.is_none() && options.if_unmodified_since.is_none());
        let version = conditions(&ObjectIdentity::parse_token("version:7").unwrap());
        assert_eq!(version.version.as_deref(), Some("7"));
        assert!(version.if_match.is_none());
        let modified = conditions(
            &ObjectIdentity::parse_token("modified:2026-12-25T12:21:14Z;size:9").unwrap(),
        );
        assert_eq!(
            modified.if_unmodified_since.unwrap().timestamp(),
            1_798_201_274
        );
    }

    #[test]
    fn the_pin_is_checked_against_the_answer() {
        let uri: Url = "s3://b/m.onnx".parse().unwrap();
        let pin = ObjectIdentity::parse_token("modified:2026-12-25T12:21:14Z;size:9").unwrap();
        assert!(check_pin(&uri, Some(&pin), &meta(None, 1_798_201_274, 9)).is_ok());
        assert!(check_pin(&uri, None, &meta(None, 0, 1)).is_ok());
        let failure = check_pin(&uri, Some(&pin), &meta(None, 1_798_201_274, 10)).unwrap_err();
        assert_eq!(failure.reason, Reason::ObjectChanged);
        assert_eq!(
            failure.message,
            "the object at s3://b/m.onnx changed since it was detected \
             (pinned modified:2026-12-25T12:21:14Z;size:9, now modified:2026-12-25T12:21:14Z;size:10)"
        );
    }

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
}
