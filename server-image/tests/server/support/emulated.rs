//! What every object-store emulator offers the tests, and the fetch scenarios each is run through: the real
//! `ferry-server` process downloads from the emulator (directly, or through a [`Proxy`] that records the requests and
//! can replace the object mid-download).

use futures::future::BoxFuture;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use super::proxy::{Proxy, Seen, Trigger};
use super::server::{ready_server, ServerBuilder};
use super::{expectations, model_bytes, sha256_hex, Expected};
use crate::failures::fails_with;
use crate::predictions::assert_predictions;

pub const BUCKET: &str = "models";
/// Small parts, so that the committed models (1-33 KiB) come as several range requests.
const PART_BYTES: u64 = 4096;

pub trait Emulator {
    /// `gs` or `az`.
    const SCHEME: &'static str;

    /// `http://127.0.0.1:PORT` of the emulator's blob API.
    fn endpoint(&self) -> &str;

    /// Creates a bucket (container), through the emulator's own API.
    fn create(&self, bucket: &str) -> BoxFuture<'static, ()>;

    /// Uploads (or overwrites) an object, through the emulator's own API.
    fn upload(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> BoxFuture<'static, ()>;

    /// Points a server at the emulator's blob API at `endpoint` (the emulator itself or a proxy in front of it)
    /// with the standard variables of the scheme and valid credentials.
    fn configure_at(&self, builder: ServerBuilder, endpoint: &str) -> ServerBuilder;

    /// An object_store client of `bucket` on the emulator, as ferry-server builds one.
    fn store(&self, bucket: &str) -> Box<dyn ObjectStore>;

    fn configure(&self, builder: ServerBuilder) -> ServerBuilder {
        let endpoint = self.endpoint().to_owned();
        self.configure_at(builder, &endpoint)
    }

    fn uri(&self, bucket: &str, key: &str) -> String {
        format!("{}://{bucket}/{key}", Self::SCHEME)
    }

    /// Uploads and returns the object's URI.
    async fn put(&self, bucket: &str, key: &str, bytes: &[u8]) -> String {
        self.upload(bucket, key, bytes.to_vec()).await;
        self.uri(bucket, key)
    }
}

/// Parallel-part settings: 4 KiB parts, 4 in flight.
fn in_parts(builder: ServerBuilder) -> ServerBuilder {
    builder
        .env("FERRY_DOWNLOAD_PART_BYTES", &PART_BYTES.to_string())
        .env("FERRY_DOWNLOAD_CONCURRENCY", "4")
}

/// The largest committed model.
fn largest() -> (Expected, Vec<u8>) {
    expectations()
        .into_iter()
        .map(|e| {
            let bytes = model_bytes(&e.file);
            (e, bytes)
        })
        .max_by_key(|(_, bytes)| bytes.len())
        .unwrap()
}

/// Every committed model downloads (in 4 KiB parts), matches its pinned SHA-256, loads and predicts exactly what
/// scikit-learn predicts.
pub async fn serves_every_model(emulator: &impl Emulator) {
    emulator.create(BUCKET).await;
    for expected in expectations() {
        let bytes = model_bytes(&expected.file);
        let uri = emulator
            .put(BUCKET, &format!("sklearn/{}", expected.file), &bytes)
            .await;
        let builder = in_parts(emulator.configure(ServerBuilder::new("model", &uri, "1")))
            .sha256(&sha256_hex(&bytes));
        assert_predictions(builder, &expected).await;
    }
}

/// The largest model comes as one HEAD and then exactly one 206 range request per 4 KiB part, covering the object
/// once, and the server's file is byte-identical (its SHA-256 and size are the uploaded object's). Returns what the
/// proxy saw.
pub async fn a_large_object_comes_in_ranged_parts(emulator: &impl Emulator) -> Vec<Seen> {
    emulator.create(BUCKET).await;
    let (expected, bytes) = largest();
    let uri = emulator.put(BUCKET, "large/model.onnx", &bytes).await;
    let proxy = Proxy::start(emulator.endpoint()).await;
    let builder =
        in_parts(emulator.configure_at(ServerBuilder::new("model", &uri, "1"), &proxy.base));
    let server = ready_server(builder).await;
    let status = server.status().await;
    assert_eq!(status["serving"]["sha256"], sha256_hex(&bytes), "{status}");
    assert_eq!(status["serving"]["bytes"], bytes.len(), "{status}");
    let (code, body) = server
        .post("/v2/models/model/infer", &expected.request(&[0], "one"))
        .await;
    assert_eq!(code, 200, "{body}");
    expected.matches(&[0], &body).unwrap();

    let seen = proxy.seen();
    let len = bytes.len() as u64;
    assert!(len > 3 * PART_BYTES, "{len} bytes");
    assert_eq!(seen[0].method, "HEAD", "{seen:?}");
    assert!(
        // GCS URLs escape the object name.
        seen.iter().all(|s| s
            .path
            .replace("%2F", "/")
            .replace("%2E", ".")
            .ends_with("/models/large/model.onnx")),
        "{seen:?}"
    );
    let mut ranges: Vec<(u64, u64)> = proxy
        .ranged_gets()
        .iter()
        .map(|s| {
            assert_eq!(s.status, 206, "{s:?}");
            let (start, end) = s.range.as_deref().unwrap()["bytes=".len()..]
                .split_once('-')
                .unwrap();
            (start.parse().unwrap(), end.parse().unwrap())
        })
        .collect();
    ranges.sort_unstable();
    let expected_ranges: Vec<(u64, u64)> = (0..len)
        .step_by(PART_BYTES as usize)
        .map(|start| (start, (start + PART_BYTES).min(len) - 1))
        .collect();
    assert_eq!(ranges, expected_ranges);
    assert_eq!(
        seen.len(),
        1 + expected_ranges.len(),
        "one HEAD and the parts: {seen:?}"
    );
    seen
}

/// The object is overwritten with another model right after the first part was answered: the download fails with
/// FetchFailed naming the change, instead of loading a mix of two versions. Returns the ranged GETs the proxy saw.
pub async fn an_object_replaced_mid_download_fails(emulator: &impl Emulator) -> Vec<Seen> {
    emulator.create(BUCKET).await;
    let (_, old) = largest();
    let new: Vec<u8> = old.iter().rev().copied().collect();
    let uri = emulator.put(BUCKET, "replaced/model.onnx", &old).await;
    let replace = emulator.upload(BUCKET, "replaced/model.onnx", new);
    let proxy =
        Proxy::start_with(emulator.endpoint(), Trigger::AfterFirstPart, Some(replace)).await;
    let builder = emulator
        .configure_at(ServerBuilder::new("m", &uri, "1"), &proxy.base)
        .env("FERRY_DOWNLOAD_PART_BYTES", &PART_BYTES.to_string())
        .env("FERRY_DOWNLOAD_CONCURRENCY", "2");
    let termination = fails_with(builder, "FetchFailed").await;
    let message = termination["message"].as_str().unwrap();
    assert!(
        message.contains("changed while it was downloading"),
        "{message}"
    );
    let ranged = proxy.ranged_gets();
    assert_eq!(ranged[0].status, 206, "{ranged:?}");
    assert!(ranged.len() >= 2, "{ranged:?}");
    ranged
}

/// One stream (concurrency 1): the body breaks off after 8 KiB and the object is overwritten before the download
/// resumes from there; the resumed download fails with FetchFailed naming the change instead of appending the new
/// object's tail. Returns the GETs the proxy saw.
pub async fn an_object_replaced_before_a_resume_fails(emulator: &impl Emulator) -> Vec<Seen> {
    emulator.create(BUCKET).await;
    let (_, old) = largest();
    let new: Vec<u8> = old.iter().rev().copied().collect();
    let uri = emulator.put(BUCKET, "resumed/model.onnx", &old).await;
    let replace = emulator.upload(BUCKET, "resumed/model.onnx", new);
    let proxy = Proxy::start_with(
        emulator.endpoint(),
        Trigger::CutFirstGet(8192),
        Some(replace),
    )
    .await;
    let builder = emulator
        .configure_at(ServerBuilder::new("m", &uri, "1"), &proxy.base)
        .env("FERRY_DOWNLOAD_CONCURRENCY", "1");
    let termination = fails_with(builder, "FetchFailed").await;
    let message = termination["message"].as_str().unwrap();
    assert!(
        message.contains("changed while it was downloading"),
        "{message}"
    );
    let gets: Vec<Seen> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET")
        .collect();
    assert!(gets.len() >= 2, "{gets:?}");
    assert_eq!(gets[0].range, None, "{gets:?}");
    gets
}

pub async fn a_missing_object_is_not_found(emulator: &impl Emulator) {
    emulator.create(BUCKET).await;
    let uri = emulator.uri(BUCKET, "absent.onnx");
    fails_with(
        emulator.configure(ServerBuilder::new("m", &uri, "1")),
        "NotFound",
    )
    .await;
}

pub async fn a_wrong_digest_is_a_checksum_mismatch(emulator: &impl Emulator) {
    emulator.create(BUCKET).await;
    let bytes = model_bytes("logreg.onnx");
    let uri = emulator.put(BUCKET, "logreg.onnx", &bytes).await;
    let termination = fails_with(
        emulator
            .configure(ServerBuilder::new("m", &uri, "1"))
            .sha256(&"0".repeat(64)),
        "ChecksumMismatch",
    )
    .await;
    let message = termination["message"].as_str().unwrap();
    assert!(message.contains(&sha256_hex(&bytes)), "{message}");
}

/// The object's identity as object_store's `head()` gives it: after the upload of one model, after the same bytes
/// are uploaded again, and after another model is uploaded over it.
pub async fn identities<E: Emulator>(emulator: &E) -> [ObjectMeta; 3] {
    emulator.create(BUCKET).await;
    let store = emulator.store(BUCKET);
    let path = object_store::path::Path::from("identity/model.onnx");
    let mut metas = Vec::new();
    for file in ["logreg.onnx", "logreg.onnx", "mlp.onnx"] {
        emulator
            .upload(BUCKET, path.as_ref(), model_bytes(file))
            .await;
        let meta = store.head(&path).await.expect("head");
        eprintln!("{}:// after uploading {file}: {meta:?}", E::SCHEME);
        metas.push(meta);
    }
    metas.try_into().unwrap()
}
