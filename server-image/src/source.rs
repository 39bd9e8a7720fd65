//! The model's object in its store: its identity (ETag, version, modification time, size) and downloads pinned to
//! one identity. The scheduled checks of the serving URI, which use the same identities, are in `source_checks`.
//!
//! ```text
//!   download ──▶ identity of the object it came from (HEAD or GET metadata) ──▶ Served.identity ──▶ /status
//!   pinned download (FERRY_MODEL_OBJECT, parameters.object):
//!        conditional GET (If-Match / version / If-Unmodified-Since) + the metadata compared with the pin
//!        another object ──▶ ObjectChanged "(pinned <token>, now <token>)"
//! ```

use object_store::{GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

use crate::contract::{ObjectIdentity, Reason};
use crate::failure::Failure;

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
}
