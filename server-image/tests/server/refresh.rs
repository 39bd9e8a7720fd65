//! Auto-refresh, the server's side: the status names the object every loaded version came from; with
//! `FERRY_REFRESH_INTERVAL_SECONDS` a HEAD of the serving URI every interval finds a new object without
//! downloading it; a download pinned to an object (`FERRY_MODEL_OBJECT`, `parameters.object`) fetches exactly
//! that object or fails with `ObjectChanged`. Against s3s-fs, fake-gcs-server, Azurite and a local HTTP server with
//! an ETag and with only Last-Modified.

use std::time::{Duration, Instant};

use axum::http::Method;
use ferry_server::contract::{paths, ObjectIdentity, ServerStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::azurite::Azurite;
use crate::support::emulated::{Emulator, BUCKET};
use crate::support::gcs::GcsServer;
use crate::support::http_store::{Behavior, HttpStore, StoreObject};
use crate::support::s3::S3Server;
use crate::support::server::{ready_server, Server, ServerBuilder};
use crate::support::{file_uri, model_bytes, model_path, sha256_hex};

/// The shortest interval the server accepts.
const INTERVAL: &str = "10";
/// One interval plus its jitter (10 %) plus slack for a loaded machine.
const WITHIN_AN_INTERVAL: Duration = Duration::from_secs(16);

async fn typed_status(server: &Server) -> ServerStatus {
    serde_json::from_value(server.status().await).expect("the status reads as the contract's type")
}

/// The identity of the object the serving version came from.
async fn serving_identity(server: &Server) -> ObjectIdentity {
    let status = typed_status(server).await;
    status
        .serving
        .and_then(|s| s.identity)
        .expect("the serving version names its object")
}

async fn metrics(server: &Server) -> String {
    let (_, text) = server.admin_get("/metrics").await;
    text.as_str().unwrap().to_owned()
}

fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(line_prefix))
        .map_or(0.0, |n| n.trim().parse().unwrap())
}

fn downloaded(text: &str) -> f64 {
    metric(text, r#"ferry_model_downloaded_bytes_total{model="iris"}"#)
}

fn checks(text: &str, result: &str) -> f64 {
    metric(
        text,
        &format!(r#"ferry_source_checks_total{{model="iris",result="{result}"}}"#),
    )
}

/// Waits for a check after `after` (`checked_at` changed) and returns the status then.
async fn next_check(server: &Server, after: Option<&str>) -> ServerStatus {
    let after = after.map(str::to_owned);
    let status = server
        .wait_status(WITHIN_AN_INTERVAL, |s| {
            let at = s["source"]["checked_at"].as_str();
            at.is_some() && at != after.as_deref()
        })
        .await;
    serde_json::from_value(status).unwrap()
}

fn refreshing(builder: ServerBuilder) -> ServerBuilder {
    builder.env("FERRY_REFRESH_INTERVAL_SECONDS", INTERVAL)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwritten_s3_object_is_detected_within_an_interval_without_a_download() {
    let s3 = S3Server::start();
    let (v1, v2) = (model_bytes("logreg.onnx"), model_bytes("mlp.onnx"));
    let uri = s3.put("models", "iris/latest.onnx", &v1);
    let server = ready_server(refreshing(
        s3.configure(ServerBuilder::new("iris", &uri, "1")),
    ))
    .await;
    let served_at = Instant::now();

    let status = typed_status(&server).await;
    let serving = status.serving.as_ref().unwrap();
    let identity = serving.identity.clone().expect("serving identity");
    // s3s-fs: the ETag is the content's MD5, quoted.
    assert!(
        identity.etag.as_deref().is_some_and(|e| e.starts_with('"')),
        "{identity:?}"
    );
    assert_eq!(identity.size, v1.len() as u64);
    assert!(identity.last_modified.is_some(), "{identity:?}");
    assert_eq!(status.versions[0].identity.as_ref(), Some(&identity));
    // The checks run; none has yet.
    assert_eq!(status.source, Some(Default::default()));
    let before = metrics(&server).await;
    assert_eq!(downloaded(&before), v1.len() as f64);

    s3.put("models", "iris/latest.onnx", &v2);
    let found = next_check(&server, None).await;
    let waited = served_at.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "the first check comes one interval (±10 %) after serving, not {waited:?}"
    );
    let source = found.source.unwrap();
    assert!(source.changed, "{source:?}");
    assert_eq!(source.error, None);
    let new = source.identity.unwrap();
    assert_eq!(new.size, v2.len() as u64);
    assert!(!new.same_object(&identity));
    // Nothing was downloaded and nothing changed what serves.
    let after = metrics(&server).await;
    assert_eq!(downloaded(&after), v1.len() as f64, "{after}");
    assert_eq!(checks(&after, "changed"), 1.0, "{after}");
    assert_eq!(found.serving.as_ref().unwrap().sha256, sha256_hex(&v1));
    assert_eq!(found.serving.unwrap().identity.unwrap(), identity);

    // The same content written again is the same object (the ETag is its MD5): not changed, checked again.
    s3.put("models", "iris/latest.onnx", &v1);
    let again = next_check(&server, source.checked_at.as_deref()).await;
    let source = again.source.unwrap();
    assert!(!source.changed, "{source:?}");
    assert!(source.identity.unwrap().same_object(&identity));
    let text = metrics(&server).await;
    assert_eq!(checks(&text, "same"), 1.0, "{text}");
    assert_eq!(downloaded(&text), v1.len() as f64, "{text}");
}

/// A server on `store`'s object with the checks on: shows the object it serves, then a check that finds it
/// unchanged, then after an overwrite one that finds the new one; never a second GET. Returns the tokens of the
/// old and the new object.
async fn detects_an_overwrite_over_http(object: StoreObject) -> (String, String) {
    let (v1, v2) = (model_bytes("logreg.onnx"), model_bytes("mlp.onnx"));
    object.overwrite(v1.clone());
    let store = HttpStore::start(vec![("/latest.onnx", Behavior::Object(object.clone()))]).await;
    let server = ready_server(refreshing(ServerBuilder::new(
        "iris",
        &store.uri("/latest.onnx"),
        "1",
    )))
    .await;
    let identity = serving_identity(&server).await;
    assert_eq!(identity.etag, object.etag());
    assert_eq!(identity.size, v1.len() as u64);

    let first = next_check(&server, None).await;
    let source = first.source.unwrap();
    assert!(!source.changed, "{source:?}");
    assert!(source.identity.as_ref().unwrap().same_object(&identity));

    object.overwrite(v2.clone());
    let second = next_check(&server, source.checked_at.as_deref()).await;
    let source = second.source.unwrap();
    assert!(source.changed, "{source:?}");
    let new = source.identity.unwrap();
    assert_eq!(new.etag, object.etag());
    assert_eq!(new.size, v2.len() as u64);
    assert!(!new.same_object(&identity));
    assert_eq!(
        store.count("/latest.onnx", &Method::GET),
        1,
        "one download only"
    );
    assert_eq!(
        store.count("/latest.onnx", &Method::HEAD),
        2,
        "one HEAD per check"
    );
    let text = metrics(&server).await;
    assert_eq!(
        (
            checks(&text, "same"),
            checks(&text, "changed"),
            checks(&text, "error")
        ),
        (1.0, 1.0, 0.0),
        "{text}"
    );
    (identity.token(), new.token())
}

/// Pinned to `current` the download works; pinned to `stale` it exits 1 with ObjectChanged naming both.
async fn pinned_downloads(
    uri: &str,
    configure: impl Fn(ServerBuilder) -> ServerBuilder,
    current: &str,
    stale: &str,
) {
    let server = ready_server(configure(
        ServerBuilder::new("iris", uri, "2").env("FERRY_MODEL_OBJECT", current),
    ))
    .await;
    assert_eq!(serving_identity(&server).await.token(), current);
    drop(server);

    let exited = configure(ServerBuilder::new("iris", uri, "2").env("FERRY_MODEL_OBJECT", stale))
        .run_to_exit(Duration::from_secs(30));
    assert_eq!(exited.status.code(), Some(1), "{}", exited.log);
    let termination = exited.termination.expect("termination message");
    assert_eq!(termination["reason"], "ObjectChanged", "{termination}");
    let message = termination["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "changed since it was detected (pinned {stale}, now {current})"
        )) && message.contains(uri),
        "{termination}"
    );
}

/// Detection and pinning over http for an object with an ETag (`with_etag`) or only a Last-Modified, whose
/// tokens start with `kind`.
async fn detected_and_pinned_over_http(with_etag: bool, kind: &str) {
    let object = StoreObject::new(Vec::new(), with_etag, true);
    let (old, new) = detects_an_overwrite_over_http(object.clone()).await;
    assert!(
        old.starts_with(kind) && new.starts_with(kind),
        "{old} {new}"
    );
    let store = HttpStore::start(vec![("/latest.onnx", Behavior::Object(object))]).await;
    pinned_downloads(&store.uri("/latest.onnx"), |b| b, &new, &old).await;
    // The stale pin was refused by the store (If-Match or If-Unmodified-Since: 412), before any byte.
    assert_eq!(store.count("/latest.onnx", &Method::GET), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_object_with_an_etag_is_detected_and_pinned_by_it() {
    detected_and_pinned_over_http(true, "etag:\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_object_with_only_last_modified_is_detected_and_pinned_by_it() {
    detected_and_pinned_over_http(false, "modified:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_object_without_etag_or_last_modified_has_no_identity_and_the_check_says_so() {
    let object = StoreObject::new(model_bytes("logreg.onnx"), false, false);
    let store = HttpStore::start(vec![("/latest.onnx", Behavior::Object(object))]).await;
    let server = ready_server(refreshing(ServerBuilder::new(
        "iris",
        &store.uri("/latest.onnx"),
        "1",
    )))
    .await;
    let status = typed_status(&server).await;
    assert_eq!(status.serving.unwrap().identity, None);
    let checked = next_check(&server, None).await.source.unwrap();
    assert!(!checked.changed);
    assert_eq!(checked.identity, None);
    assert!(
        checked
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no ETag, version or Last-Modified")),
        "{checked:?}"
    );
    assert_eq!(checks(&metrics(&server).await, "error"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_downloads_pinned_to_an_overwritten_object_fail_whole_or_in_parts() {
    let s3 = S3Server::start();
    // Version 2 is 33 KiB: nine parts of 4 KiB below.
    let (v1, v2) = (
        model_bytes("logreg.onnx"),
        model_bytes("gb_multiclass.onnx"),
    );
    let uri = s3.put("models", "iris/latest.onnx", &v1);
    let old = {
        let server = ready_server(s3.configure(ServerBuilder::new("iris", &uri, "1"))).await;
        serving_identity(&server).await.token()
    };
    s3.put("models", "iris/latest.onnx", &v2);
    let new = {
        let server = ready_server(s3.configure(ServerBuilder::new("iris", &uri, "2"))).await;
        serving_identity(&server).await.token()
    };
    assert_ne!(old, new);
    // One stream (GET compared with the pin), and parts of 4 KiB (HEAD compared with the pin, each part If-Match).
    pinned_downloads(&uri, |b| s3.configure(b), &new, &old).await;
    pinned_downloads(
        &uri,
        |b| s3.configure(b).env("FERRY_DOWNLOAD_PART_BYTES", "4096"),
        &new,
        &old,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_pinned_to_a_stale_object_fails_and_the_serving_version_keeps_serving() {
    let s3 = S3Server::start();
    let (v1, v2) = (model_bytes("logreg.onnx"), model_bytes("mlp.onnx"));
    let latest = s3.put("models", "iris/latest.onnx", &v1);
    let server = ready_server(s3.configure(ServerBuilder::new(
        "iris",
        &file_uri(&model_path("logreg.onnx")),
        "1",
    )))
    .await;
    let stage = |object: String, version: &str| {
        json!({"parameters": {"uri": latest, "version": version, "object": object, "stage": true,
                              "wait": true}})
    };
    let load = paths::REPOSITORY_LOAD.replace("{name}", "iris");
    // A pin no object has: refused before a byte is kept.
    let (code, body) = server
        .admin_post(&load, &stage("etag:\"nope\"".into(), "x"))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["reason"], "ObjectChanged", "{body}");
    // Unpinned: staged, with the identity of the object it came from.
    let (code, body) = server
        .admin_post(
            &load,
            &json!({"parameters": {"uri": latest, "version": "2", "stage": true, "wait": true}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let status = typed_status(&server).await;
    let current = status
        .versions
        .iter()
        .find(|v| v.version == "2")
        .and_then(|v| v.identity.clone())
        .expect("the staged version names its object");
    // Staging it again pinned to that object: already loaded.
    let (code, body) = server.admin_post(&load, &stage(current.token(), "2")).await;
    assert_eq!(
        (code, &body["state"]),
        (StatusCode::OK, &json!("READY")),
        "{body}"
    );

    // The object is replaced; a stage pinned to the one detected before fails and changes nothing.
    s3.put("models", "iris/latest.onnx", &v2);
    let (code, body) = server.admin_post(&load, &stage(current.token(), "3")).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["reason"], "ObjectChanged", "{body}");
    let error = body["error"].as_str().unwrap();
    let prefix = format!("(pinned {}, now ", current.token());
    let new = error
        .split_once(&prefix)
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    assert!(
        new.starts_with("etag:\"") && new != current.token(),
        "{new}"
    );
    let status = server.status().await;
    assert_eq!(status["ready"], true);
    assert_eq!(status["version"], "1");
    assert_eq!(status["load"]["reason"], "ObjectChanged");
    assert_eq!(
        status["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["1", "2"]
    );
    let (code, body) = server
        .post(
            "/v2/models/iris/infer",
            &crate::support::expectation("logreg").request(&[0], "after"),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], "1");
    // Version 2 holds the old object: staging it pinned to the new one is a conflict, not a silent success.
    let (code, body) = server.admin_post(&load, &stage(new.clone(), "2")).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    // Pinned to the new object, a new version stages.
    let (code, body) = server.admin_post(&load, &stage(new.clone(), "3")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    // A malformed token is a 400 naming the parameter.
    let (code, body) = server.admin_post(&load, &stage("md5:1".into(), "4")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("parameters.object"),
        "{body}"
    );
}

#[test]
fn invalid_refresh_intervals_and_object_tokens_exit_2_naming_the_setting() {
    let logreg = file_uri(&model_path("logreg.onnx"));
    for (setting, value) in [
        ("FERRY_REFRESH_INTERVAL_SECONDS", "9"),
        ("FERRY_REFRESH_INTERVAL_SECONDS", "86401"),
        ("FERRY_REFRESH_INTERVAL_SECONDS", "ten"),
        ("FERRY_MODEL_OBJECT", "sha256:abc"),
        ("FERRY_MODEL_OBJECT", "size:12"),
    ] {
        let exited = ServerBuilder::new("iris", &logreg, "1")
            .env(setting, value)
            .run_to_exit(Duration::from_secs(10));
        assert_eq!(exited.status.code(), Some(2), "{value}: {}", exited.log);
        let termination: Value = exited.termination.expect("termination message");
        assert_eq!(termination["reason"], "InvalidConfig", "{termination}");
        assert_eq!(termination["setting"], setting, "{termination}");
    }
}

/// The token of the object at `uri` now, as the server reports it when a pin does not match.
fn current_token(s3: &S3Server, uri: &str) -> String {
    let exited = s3
        .configure(ServerBuilder::new("iris", uri, "1").env("FERRY_MODEL_OBJECT", "etag:\"none\""))
        .run_to_exit(Duration::from_secs(30));
    let termination = exited.termination.expect("termination message");
    let message = termination["message"].as_str().unwrap();
    message
        .split_once(", now ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{termination}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_during_a_download_in_parts_fails_it() {
    let s3 = S3Server::start();
    // 1 MiB in 256 parts of 4 KiB, two at a time: long enough to replace it while it downloads.
    let first: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let second: Vec<u8> = (0..1u32 << 20).map(|i| (i % 13) as u8).collect();
    for (pinned, reason, says) in [
        (true, "ObjectChanged", "changed since it was detected"),
        (false, "FetchFailed", "changed while it was downloading"),
    ] {
        let uri = s3.put("models", "iris/latest.onnx", &first);
        let mut builder = s3
            .configure(ServerBuilder::new("iris", &uri, "1"))
            .env("FERRY_DOWNLOAD_PART_BYTES", "4096")
            .env("FERRY_DOWNLOAD_CONCURRENCY", "2");
        if pinned {
            builder = builder.env("FERRY_MODEL_OBJECT", &current_token(&s3, &uri));
        }
        let mut server = builder.start();
        server
            .wait_status(Duration::from_secs(20), |s| {
                s["bytes_done"].as_u64().is_some_and(|n| n > 0)
            })
            .await;
        s3.put("models", "iris/latest.onnx", &second);
        assert_eq!(server.wait_exit(Duration::from_secs(30)).code(), Some(1));
        let termination = server.termination().expect("termination message");
        assert_eq!(termination["reason"], reason, "{termination}");
        assert!(
            termination["message"].as_str().unwrap().contains(says),
            "{termination}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_before_an_interrupted_http_body_resumes_fails_it() {
    let (v1, v2) = (
        model_bytes("gb_multiclass.onnx"),
        model_bytes("rf_binary.onnx"),
    );
    // A store that answers the resumed request with 412, and one that ignores If-Match and sends the new object.
    for (ignores_conditions, pinned, reason, says) in [
        (
            false,
            true,
            "ObjectChanged",
            "changed since it was detected",
        ),
        (
            false,
            false,
            "FetchFailed",
            "changed while it was downloading",
        ),
        (true, true, "ObjectChanged", "changed since it was detected"),
        (
            true,
            false,
            "FetchFailed",
            "changed while it was downloading",
        ),
    ] {
        let object = StoreObject::new(v1.clone(), true, true);
        let store =
            HttpStore::start(vec![("/latest.onnx", Behavior::Object(object.clone()))]).await;
        let mut builder = ServerBuilder::new("iris", &store.uri("/latest.onnx"), "1");
        if pinned {
            let token = format!("etag:{}", object.etag().unwrap());
            builder = builder.env("FERRY_MODEL_OBJECT", &token);
        }
        if ignores_conditions {
            object.ignore_conditions();
        }
        object.replace_during_next_get(10_000, v2.clone());
        let exited = builder.run_to_exit(Duration::from_secs(30));
        let case = format!("ignores conditions {ignores_conditions}, pinned {pinned}");
        assert_eq!(exited.status.code(), Some(1), "{case}: {}", exited.log);
        let termination = exited.termination.expect("termination message");
        assert_eq!(termination["reason"], reason, "{case}: {termination}");
        assert!(
            termination["message"].as_str().unwrap().contains(says),
            "{case}: {termination}"
        );
        let ranges = store.requests("/latest.onnx");
        // object_store resumes a broken body itself (bytes=10000-33542), ferry-server after it (bytes=10000-).
        assert!(
            ranges
                .iter()
                .flatten()
                .any(|r| r.starts_with("bytes=10000-")),
            "{case}: the body was resumed: {ranges:?}"
        );
    }
}

/// On an emulated store: the serving object is named; a new object is seen at the next check without a second
/// download; a pinned load of the old object fails with ObjectChanged and of the new one serves.
async fn detects_and_pins_on<E: Emulator>(emulator: &E) -> (ObjectIdentity, ObjectIdentity) {
    let (v1, v2) = (model_bytes("logreg.onnx"), model_bytes("mlp.onnx"));
    emulator.create(BUCKET).await;
    let uri = emulator.put(BUCKET, "iris/latest.onnx", &v1).await;
    let server = ready_server(refreshing(
        emulator.configure(ServerBuilder::new("iris", &uri, "1")),
    ))
    .await;
    let old = serving_identity(&server).await;
    emulator.put(BUCKET, "iris/latest.onnx", &v2).await;
    let found = next_check(&server, None).await.source.unwrap();
    assert!(found.changed, "{found:?}");
    let new = found.identity.unwrap();
    assert_eq!(new.size, v2.len() as u64);
    let text = metrics(&server).await;
    assert_eq!(downloaded(&text), v1.len() as f64, "{text}");
    drop(server);
    pinned_downloads(&uri, |b| emulator.configure(b), &new.token(), &old.token()).await;
    (old, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwritten_gs_object_is_detected_and_pinned() {
    let (old, new) = detects_and_pins_on(&GcsServer::start()).await;
    // fake-gcs-server: ETag (the content's MD5) and generation both change with new content.
    assert!(old.version.is_some() && new.version.is_some(), "{old:?}");
    assert_ne!(old.version, new.version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwritten_az_object_is_detected_and_pinned() {
    let (old, new) = detects_and_pins_on(&Azurite::start()).await;
    assert!(old.etag.is_some() && new.etag.is_some(), "{old:?}");
}
