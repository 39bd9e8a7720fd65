//! Downloads the model file into the work directory, hashing it on the way.
//!
//! ```text
//!                                              ┌──▶ blocking thread: SHA-256
//!  object store ──chunks──▶ async reader ──1 MiB batches (shared, not copied)
//!                            (size limit, progress)   └──▶ blocking thread: vectored writes to the file
//! ```
//!
//! Receiving, hashing and writing run on three threads, so hashing costs little on top of the transfer. The size limit
//! is checked against the object's size before the first byte and again on every chunk. object_store retries
//! transient request failures (5xx, connection errors, timeouts) with exponential backoff and never 4xx; on top of
//! that an interrupted body is resumed with a range request from the last byte received, pinned to the ETag and
//! version of the response so far. The whole download, retries included, is bounded by the download timeout.
//!
//! A large object on an object store (`s3://`, `gs://`, `az://`, and `file://`) is fetched as parts of
//! `part_bytes` (16 MiB by default), up to `concurrency` range requests at a time, each pinned to the ETag the
//! first HEAD returned and to its version when the store gives one (GCS's generation, an S3 version id): an object
//! replaced mid-download fails the download instead of mixing two versions, also on a store that ignores
//! `If-Match` on reads (fake-gcs-server does; a replaced generation is gone there, as on GCS). One
//! connection to a store is usually slower than the store; several are how its full bandwidth is reached. Parts
//! are handed on in order, so the hasher still sees one sequential stream. `http(s)://` keeps one stream: a plain
//! web server need not support ranges.

use std::io::{IoSlice, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt,
    ObjectStoreScheme, RetryConfig,
};
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use url::Url;

use crate::contract::{env, ObjectIdentity, Reason};
use crate::failure::Failure;
use crate::model::StoreSettings;
use crate::source;

/// Resumptions of an interrupted body, after object_store's own retries of each request.
const MAX_RESUMES: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunks are handed to the hasher and the writer in batches of about this many bytes.
const BATCH_BYTES: usize = 1 << 20;
/// Batches queued for each of them.
const QUEUED_BATCHES: usize = 16;

/// Bytes received so far and the object's size (0 until known), read by the status endpoint.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub total: AtomicU64,
    downloaded: Counter,
}

impl Progress {
    pub fn new(downloaded: Counter) -> Progress {
        Progress {
            downloaded,
            ..Progress::default()
        }
    }

    fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.downloaded.inc_by(bytes);
    }
}

#[derive(Debug, Clone)]
pub struct Fetcher {
    pub store: StoreSettings,
    pub work_dir: PathBuf,
    pub max_bytes: u64,
    pub timeout: Duration,
    /// Range requests in flight for a large object on an object store; 1 takes every object in one stream.
    pub concurrency: usize,
    /// Size of each range request; objects up to this size take one request.
    pub part_bytes: u64,
}

/// A downloaded file; it is deleted when this is dropped.
#[derive(Debug)]
pub struct Downloaded {
    pub path: tempfile::TempPath,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// The object it came from (`None` when the store identified it by nothing).
    pub identity: Option<ObjectIdentity>,
}

enum StreamError {
    Store(object_store::Error),
    Failed(Failure),
}

impl From<object_store::Error> for StreamError {
    fn from(e: object_store::Error) -> Self {
        StreamError::Store(e)
    }
}

impl Fetcher {
    pub async fn fetch(&self, uri: &Url, progress: &Progress) -> Result<Downloaded, Failure> {
        self.fetch_object(uri, progress, None).await
    }

    /// `fetch`, of exactly the object `pin` names when given: every request is conditional on it and the
    /// store's answer is compared with it; another object at `uri` fails the download with `ObjectChanged`.
    pub async fn fetch_object(
        &self,
        uri: &Url,
        progress: &Progress,
        pin: Option<&ObjectIdentity>,
    ) -> Result<Downloaded, Failure> {
        match tokio::time::timeout(self.timeout, self.download(uri, progress, pin)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::new(
                Reason::Timeout,
                format!(
                    "{uri} did not finish downloading within {}s ({} of {} bytes received; {})",
                    self.timeout.as_secs(),
                    progress.done.load(Ordering::Relaxed),
                    progress.total.load(Ordering::Relaxed),
                    env::DOWNLOAD_TIMEOUT_SECONDS
                ),
            )),
        }
    }

    async fn download(
        &self,
        uri: &Url,
        progress: &Progress,
        pin: Option<&ObjectIdentity>,
    ) -> Result<Downloaded, Failure> {
        let (store, path) = self.open(uri)?;
        // HEAD first when the object may come in parts: its size says whether it does, and its ETag pins them.
        let whole = if self.in_parts(uri) {
            let meta = match pin.and_then(|p| p.version.clone()) {
                // That version, whatever the object's latest version is.
                Some(version) => {
                    let head = GetOptions {
                        head: true,
                        version: Some(version),
                        ..GetOptions::default()
                    };
                    store.get_opts(&path, head).await.map(|r| r.meta)
                }
                None => store.head(&path).await,
            }
            .map_err(|e| store_failure(uri, e))?;
            source::check_pin(uri, pin, &meta)?;
            if meta.size > self.max_bytes {
                return Err(self.too_large(meta.size));
            }
            Some(meta)
        } else {
            None
        };
        let mut identity = whole.as_ref().and_then(source::identity);
        let whole = whole.filter(|meta| meta.size > self.part_bytes);
        let (sinks, hashing, writing) = spawn_sinks(self.work_dir.clone());
        let received = match whole {
            Some(meta) => {
                self.receive_parts(uri, &*store, &path, meta, &sinks, progress, pin)
                    .await
            }
            None => {
                let mut first = None;
                let received = self
                    .receive(uri, &*store, &path, &sinks, progress, pin, &mut first)
                    .await;
                identity = first.as_ref().and_then(source::identity);
                received
            }
        };
        drop(sinks);
        // Both threads are joined on every path, so a failed download's partial file is gone before the failure
        // is reported.
        let stopped = |e: tokio::task::JoinError| Failure::stopped("a download thread", e);
        let sha256 = hashing.await.map_err(stopped)?;
        let written = writing.await.map_err(stopped)?;
        received?;
        let (path, size) = written.map_err(|e| write_failure(&self.work_dir, e))?;
        Ok(Downloaded {
            path,
            size,
            sha256,
            identity,
        })
    }

    /// Whether a large object at `uri` is fetched in parallel parts.
    fn in_parts(&self, uri: &Url) -> bool {
        self.concurrency > 1
            && matches!(
                ObjectStoreScheme::parse(uri),
                Ok((
                    ObjectStoreScheme::AmazonS3
                        | ObjectStoreScheme::GoogleCloudStorage
                        | ObjectStoreScheme::MicrosoftAzure
                        | ObjectStoreScheme::Local,
                    _
                ))
            )
    }

    /// Fetches `meta`'s object as parts, up to `concurrency` at a time, and hands them to `sinks` in order.
    #[allow(clippy::too_many_arguments)]
    async fn receive_parts(
        &self,
        uri: &Url,
        store: &dyn ObjectStore,
        path: &Path,
        meta: ObjectMeta,
        sinks: &Sinks,
        progress: &Progress,
        pin: Option<&ObjectIdentity>,
    ) -> Result<(), Failure> {
        let size = meta.size;
        progress.total.store(size, Ordering::Relaxed);
        let ranges = (0..size)
            .step_by(usize::try_from(self.part_bytes).unwrap_or(usize::MAX))
            .map(|start| start..size.min(start + self.part_bytes));
        let mut parts = futures::stream::iter(ranges)
            .map(|range| {
                self.part(
                    uri,
                    store,
                    path,
                    range,
                    meta.e_tag.clone(),
                    meta.version.clone(),
                    pin,
                )
            })
            .buffered(self.concurrency);
        let mut batch = Batch::default();
        while let Some(part) = parts.next().await {
            for chunk in part? {
                progress.add(chunk.len() as u64);
                if !sinks.push(&mut batch, chunk).await {
                    // A sink failed; its error is reported when it is joined.
                    return Ok(());
                }
            }
        }
        sinks.send(batch).await;
        Ok(())
    }

    /// One part: a range request for exactly `range`, retried from its start when its body breaks off.
    #[allow(clippy::too_many_arguments)]
    async fn part(
        &self,
        uri: &Url,
        store: &dyn ObjectStore,
        path: &Path,
        range: std::ops::Range<u64>,
        e_tag: Option<String>,
        version: Option<String>,
        pin: Option<&ObjectIdentity>,
    ) -> Result<Vec<Bytes>, Failure> {
        let mut resumes = 0;
        loop {
            let options = GetOptions {
                range: Some(GetRange::Bounded(range.clone())),
                if_match: e_tag.clone(),
                version: version.clone(),
                ..GetOptions::default()
            };
            let received: Result<Vec<Bytes>, object_store::Error> = async {
                let answer = store.get_opts(path, options).await?;
                // Some S3-compatible stores ignore If-Match on GET; the answer's own ETag still tells.
                if let (Some(wanted), Some(got)) = (&e_tag, &answer.meta.e_tag) {
                    if wanted != got {
                        return Err(object_store::Error::Precondition {
                            path: path.to_string(),
                            source: format!("part of {got}, expected {wanted}").into(),
                        });
                    }
                }
                answer.into_stream().try_collect().await
            }
            .await;
            match received {
                Ok(chunks) => {
                    let bytes: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                    if bytes != range.end - range.start {
                        return Err(Failure::new(
                            Reason::FetchFailed,
                            format!(
                                "{uri}: the store returned {bytes} bytes for bytes {}-{} of the object",
                                range.start,
                                range.end - 1
                            ),
                        ));
                    }
                    return Ok(chunks);
                }
                Err(e) if is_transient(&e) && resumes < MAX_RESUMES => {
                    resumes += 1;
                    tracing::warn!(%uri, error = %e, resumes, start = range.start, "part interrupted; fetching it again");
                    tokio::time::sleep(Duration::from_millis(200 << resumes)).await;
                }
                // Pinned: a failed condition, or the pinned version gone, is another object at the URI.
                Err(e)
                    if pin.is_some()
                        && (is_precondition(&e)
                            || (version.is_some()
                                && matches!(e, object_store::Error::NotFound { .. }))) =>
                {
                    return Err(source::precondition_failed(uri, store, path, pin.unwrap()).await)
                }
                // The pinned version is gone: the object was replaced (or deleted) since the HEAD.
                Err(e @ object_store::Error::NotFound { .. }) if version.is_some() => {
                    return Err(changed(uri, e))
                }
                Err(e) => return Err(store_failure(uri, e)),
            }
        }
    }

    /// Streams the object into `sinks`, resuming an interrupted body from the last byte received. `first` is
    /// the metadata of the first answer (the object the bytes come from).
    #[allow(clippy::too_many_arguments)]
    async fn receive(
        &self,
        uri: &Url,
        store: &dyn ObjectStore,
        path: &Path,
        sinks: &Sinks,
        progress: &Progress,
        pin: Option<&ObjectIdentity>,
        first: &mut Option<ObjectMeta>,
    ) -> Result<(), Failure> {
        let mut resumes = 0;
        let pinned = pin.map(source::conditions).unwrap_or_default();
        loop {
            let done = progress.done.load(Ordering::Relaxed);
            let resumed = done > 0;
            let options = GetOptions {
                range: resumed.then_some(GetRange::Offset(done)),
                // A resumed request is pinned to the ETag and version of the first answer, as parts are.
                if_match: match first.as_ref() {
                    Some(meta) if resumed => meta.e_tag.clone().or_else(|| pinned.if_match.clone()),
                    _ => pinned.if_match.clone(),
                },
                version: match first.as_ref() {
                    Some(meta) if resumed => {
                        meta.version.clone().or_else(|| pinned.version.clone())
                    }
                    _ => pinned.version.clone(),
                },
                if_unmodified_since: pinned.if_unmodified_since,
                ..GetOptions::default()
            };
            let versioned = options.version.is_some();
            match self
                .stream(uri, store, path, options, sinks, progress, pin, first)
                .await
            {
                Ok(()) => return Ok(()),
                // Pinned: a failed condition, or the requested version gone, is another object at the URI.
                Err(StreamError::Store(e))
                    if pin.is_some()
                        && (is_precondition(&e)
                            || (versioned
                                && matches!(e, object_store::Error::NotFound { .. }))) =>
                {
                    return Err(source::precondition_failed(uri, store, path, pin.unwrap()).await)
                }
                // The version the body came from is gone: the object was replaced (or deleted) meanwhile.
                Err(StreamError::Store(e @ object_store::Error::NotFound { .. }))
                    if resumed && versioned =>
                {
                    return Err(changed(uri, e))
                }
                Err(StreamError::Store(e)) if is_transient(&e) && resumes < MAX_RESUMES => {
                    resumes += 1;
                    tracing::warn!(%uri, error = %e, resumes, "download interrupted; resuming");
                    tokio::time::sleep(Duration::from_millis(200 << resumes)).await;
                }
                Err(StreamError::Store(e)) => return Err(store_failure(uri, e)),
                Err(StreamError::Failed(failure)) => return Err(failure),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn stream(
        &self,
        uri: &Url,
        store: &dyn ObjectStore,
        path: &Path,
        options: GetOptions,
        sinks: &Sinks,
        progress: &Progress,
        pin: Option<&ObjectIdentity>,
        first: &mut Option<ObjectMeta>,
    ) -> Result<(), StreamError> {
        let result = store.get_opts(path, options).await?;
        match first {
            None => {
                // Before the first byte: a store that ignored the conditions still cannot hand over another object.
                source::check_pin(uri, pin, &result.meta).map_err(StreamError::Failed)?;
                *first = Some(result.meta.clone());
            }
            // A resumed body must continue the same object, whether or not the store honoured If-Match.
            Some(first) if !source::same_answer(first, &result.meta) => {
                return Err(StreamError::Store(object_store::Error::Precondition {
                    path: path.to_string(),
                    source: "the resumed body comes from another object".into(),
                }));
            }
            Some(_) => {}
        }
        let size = result.meta.size;
        if size > self.max_bytes {
            return Err(StreamError::Failed(self.too_large(size)));
        }
        progress.total.store(size, Ordering::Relaxed);
        let mut stream = result.into_stream();
        let mut batch = Batch::default();
        let outcome = loop {
            let chunk = match stream.next().await {
                None => break Ok(()),
                Some(Err(e)) => break Err(StreamError::Store(e)),
                Some(Ok(chunk)) => chunk,
            };
            let received = progress.done.load(Ordering::Relaxed) + chunk.len() as u64;
            if received > self.max_bytes {
                break Err(StreamError::Failed(self.too_large(received)));
            }
            progress.add(chunk.len() as u64);
            if !sinks.push(&mut batch, chunk).await {
                // A sink failed; its error is reported when it is joined.
                return Ok(());
            }
        };
        // What was received counts even when the body broke off: a resumed request continues after it.
        sinks.send(batch).await;
        outcome
    }

    fn too_large(&self, size: u64) -> Failure {
        Failure::new(
            Reason::TooLarge,
            format!(
                "model is at least {size} bytes, more than {}={}",
                env::MAX_MODEL_BYTES,
                self.max_bytes
            ),
        )
    }

    /// The store and object path for `uri`, configured as every download is (also used by the raw-transfer
    /// benchmark, so that its baseline uses the same client).
    pub fn open(&self, uri: &Url) -> Result<(Box<dyn ObjectStore>, Path), Failure> {
        let invalid = |e: &dyn std::fmt::Display| {
            Failure::invalid_config(env::MODEL_URI, format!("{uri}: {e}"))
        };
        let (scheme, path) = ObjectStoreScheme::parse(uri).map_err(|e| invalid(&e))?;
        let path = Path::from_url_path(path).map_err(|e| invalid(&e))?;
        // Set key by key: replacing the builders' client options would drop what they read from the environment
        // (proxies, certificates, AWS_ALLOW_HTTP, ...).
        let client = [
            (
                ClientConfigKey::Timeout,
                format!("{}s", self.timeout.as_secs()),
            ),
            (
                ClientConfigKey::ConnectTimeout,
                format!("{}s", CONNECT_TIMEOUT.as_secs()),
            ),
        ];
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 5,
            retry_timeout: self.timeout,
        };
        let store: Box<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::Local => Box::new(LocalFileSystem::new()),
            ObjectStoreScheme::AmazonS3 => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_url(uri.as_str())
                    .with_retry(retry);
                builder = client.into_iter().fold(builder, |b, (key, value)| {
                    b.with_config(AmazonS3ConfigKey::Client(key), value)
                });
                if self.store.s3_allow_http {
                    builder = builder.with_allow_http(true);
                }
                if let Some(endpoint) = &self.store.s3_endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &self.store.s3_region {
                    builder = builder.with_region(region);
                }
                Box::new(builder.build().map_err(|e| invalid(&e))?)
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                let builder = GoogleCloudStorageBuilder::from_env()
                    .with_url(uri.as_str())
                    .with_retry(retry);
                let builder = client.into_iter().fold(builder, |b, (key, value)| {
                    b.with_config(GoogleConfigKey::Client(key), value)
                });
                Box::new(builder.build().map_err(|e| invalid(&e))?)
            }
            ObjectStoreScheme::MicrosoftAzure => {
                let builder = MicrosoftAzureBuilder::from_env()
                    .with_url(uri.as_str())
                    .with_retry(retry);
                let builder = client.into_iter().fold(builder, |b, (key, value)| {
                    b.with_config(AzureConfigKey::Client(key), value)
                });
                Box::new(builder.build().map_err(|e| invalid(&e))?)
            }
            ObjectStoreScheme::Http => {
                let allow_http = (uri.scheme() == "http").to_string();
                let builder = HttpBuilder::new()
                    .with_url(&uri[..url::Position::BeforePath])
                    .with_retry(retry)
                    .with_config(ClientConfigKey::AllowHttp, allow_http);
                let builder = client
                    .into_iter()
                    .fold(builder, |b, (key, value)| b.with_config(key, value));
                Box::new(builder.build().map_err(|e| invalid(&e))?)
            }
            other => return Err(invalid(&format!("{other:?} URIs are not supported"))),
        };
        Ok((store, path))
    }
}

/// Received chunks, shared between the hasher and the writer without copying.
#[derive(Default)]
struct Batch {
    chunks: Vec<Bytes>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, chunk: Bytes) {
        self.bytes += chunk.len();
        self.chunks.push(chunk);
    }
}

struct Sinks {
    hasher: mpsc::Sender<Arc<Batch>>,
    writer: mpsc::Sender<Arc<Batch>>,
}

impl Sinks {
    /// Adds `chunk` to `batch` and sends the batch once it is full; false when a sink has stopped.
    async fn push(&self, batch: &mut Batch, chunk: Bytes) -> bool {
        batch.push(chunk);
        batch.bytes < BATCH_BYTES || self.send(std::mem::take(batch)).await
    }

    /// False when a sink has stopped (its error surfaces when it is joined).
    async fn send(&self, batch: Batch) -> bool {
        if batch.chunks.is_empty() {
            return true;
        }
        let batch = Arc::new(batch);
        self.hasher.send(batch.clone()).await.is_ok() && self.writer.send(batch).await.is_ok()
    }
}

type Written = std::io::Result<(tempfile::TempPath, u64)>;

/// Starts the hasher and the writer on blocking threads; each finishes when `Sinks` is dropped.
fn spawn_sinks(
    work_dir: PathBuf,
) -> (
    Sinks,
    tokio::task::JoinHandle<String>,
    tokio::task::JoinHandle<Written>,
) {
    let (hasher, mut to_hash) = mpsc::channel::<Arc<Batch>>(QUEUED_BATCHES);
    let (writer, mut to_write) = mpsc::channel::<Arc<Batch>>(QUEUED_BATCHES);
    let hashing = tokio::task::spawn_blocking(move || {
        let mut sha256 = Sha256::new();
        while let Some(batch) = to_hash.blocking_recv() {
            batch.chunks.iter().for_each(|chunk| sha256.update(chunk));
        }
        hex::encode(sha256.finalize())
    });
    let writing = tokio::task::spawn_blocking(move || -> Written {
        let mut file = tempfile::Builder::new()
            .prefix("model-")
            .suffix(".download")
            .tempfile_in(&work_dir)?;
        let mut size = 0u64;
        while let Some(batch) = to_write.blocking_recv() {
            write_all_vectored(file.as_file_mut(), &batch.chunks)?;
            size += batch.bytes as u64;
        }
        Ok((file.into_temp_path(), size))
    });
    (Sinks { hasher, writer }, hashing, writing)
}

/// One `writev` per batch instead of one `write` per chunk, and no copy into a buffer.
fn write_all_vectored(file: &mut std::fs::File, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        match file.write_vectored(remaining)? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            written => IoSlice::advance_slices(&mut remaining, written),
        }
    }
    Ok(())
}

/// Interrupted connections and bodies are worth resuming; anything with an HTTP status is not (object_store
/// has already retried 5xx responses).
fn is_transient(error: &object_store::Error) -> bool {
    let object_store::Error::Generic { source, .. } = error else {
        return false;
    };
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(e) = next {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Interrupted
                    | HttpErrorKind::Timeout
            );
        }
        if e.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A condition of the request (If-Match, If-Unmodified-Since) failed: 412, also when object_store's own resumption
/// of a broken body met it and reports it wrapped in another error.
fn is_precondition(error: &object_store::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if matches!(
            e.downcast_ref::<object_store::Error>(),
            Some(object_store::Error::Precondition { .. })
        ) {
            return true;
        }
        next = e.source();
    }
    false
}

fn has_timeout(error: &object_store::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<HttpError>()
            .is_some_and(|h| matches!(h.kind(), HttpErrorKind::Timeout))
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn store_failure(uri: &Url, error: object_store::Error) -> Failure {
    use object_store::Error;
    let reason = match &error {
        Error::NotFound { .. } => Reason::NotFound,
        Error::PermissionDenied { .. } | Error::Unauthenticated { .. } => Reason::AccessDenied,
        // A part's If-Match no longer held: the object was replaced while it was downloading.
        e if is_precondition(e) => return changed(uri, error),
        e if has_timeout(e) => Reason::Timeout,
        _ => Reason::FetchFailed,
    };
    Failure::new(reason, format!("{uri}: {error}"))
}

fn changed(uri: &Url, error: object_store::Error) -> Failure {
    Failure::new(
        Reason::FetchFailed,
        format!("{uri} changed while it was downloading; the next attempt fetches the new object: {error}"),
    )
}

fn write_failure(work_dir: &std::path::Path, error: std::io::Error) -> Failure {
    Failure::new(
        Reason::FetchFailed,
        format!(
            "cannot write the model into {} ({}): {error}",
            work_dir.display(),
            env::WORK_DIR
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher(dir: &std::path::Path, max_bytes: u64) -> Fetcher {
        Fetcher {
            store: StoreSettings::default(),
            work_dir: dir.to_path_buf(),
            max_bytes,
            timeout: Duration::from_secs(10),
            concurrency: 1,
            part_bytes: crate::contract::DEFAULT_DOWNLOAD_PART_BYTES,
        }
    }

    fn file_url(path: &std::path::Path) -> Url {
        Url::from_file_path(path).unwrap()
    }

    #[tokio::test]
    async fn streams_a_file_and_hashes_it_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("model.onnx");
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&source, &content).unwrap();
        let progress = Progress::default();
        let downloaded = fetcher(dir.path(), 1 << 20)
            .fetch(&file_url(&source), &progress)
            .await
            .unwrap();
        assert_eq!(downloaded.size, content.len() as u64);
        assert_eq!(downloaded.sha256, hex::encode(Sha256::digest(&content)));
        assert_eq!(std::fs::read(&downloaded.path).unwrap(), content);
        assert_eq!(progress.done.load(Ordering::Relaxed), content.len() as u64);
        assert_eq!(progress.total.load(Ordering::Relaxed), content.len() as u64);
        let kept = downloaded.path.to_path_buf();
        drop(downloaded);
        assert!(!kept.exists(), "the download is removed once dropped");
    }

    #[tokio::test]
    async fn a_large_object_comes_in_parallel_parts_reassembled_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("model.onnx");
        // Five whole parts and a short last one.
        let content: Vec<u8> = (0..(5 * 65_536 + 1234u32))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&source, &content).unwrap();
        let fetcher = Fetcher {
            concurrency: 3,
            part_bytes: 65_536,
            ..fetcher(dir.path(), 1 << 20)
        };
        assert!(fetcher.in_parts(&file_url(&source)));
        assert!(fetcher.in_parts(&"s3://bucket/model.onnx".parse().unwrap()));
        assert!(!fetcher.in_parts(&"http://host/model.onnx".parse().unwrap()));
        let progress = Progress::default();
        let downloaded = fetcher.fetch(&file_url(&source), &progress).await.unwrap();
        assert_eq!(downloaded.size, content.len() as u64);
        assert_eq!(downloaded.sha256, hex::encode(Sha256::digest(&content)));
        assert_eq!(std::fs::read(&downloaded.path).unwrap(), content);
        assert_eq!(progress.done.load(Ordering::Relaxed), content.len() as u64);
        assert_eq!(progress.total.load(Ordering::Relaxed), content.len() as u64);
    }

    #[tokio::test]
    async fn a_part_of_an_object_replaced_mid_download_fails_instead_of_mixing_versions() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("model.onnx");
        std::fs::write(&source, vec![1u8; 1000]).unwrap();
        let fetcher = fetcher(dir.path(), 1 << 20);
        let uri = file_url(&source);
        let (store, path) = fetcher.open(&uri).unwrap();
        let e_tag = store.head(&path).await.unwrap().e_tag;
        let first = fetcher
            .part(&uri, &*store, &path, 0..500, e_tag.clone(), None, None)
            .await
            .unwrap();
        assert_eq!(first.iter().map(|c| c.len()).sum::<usize>(), 500);
        // A new version of the object: another size, so another ETag.
        std::fs::write(&source, vec![2u8; 2000]).unwrap();
        let failure = fetcher
            .part(&uri, &*store, &path, 500..1000, e_tag, None, None)
            .await
            .unwrap_err();
        assert_eq!(failure.reason, Reason::FetchFailed, "{failure}");
        assert!(
            failure.message.contains("changed while it was downloading"),
            "{failure}"
        );
    }

    #[tokio::test]
    async fn a_large_object_over_the_limit_is_refused_before_any_part() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let source = dir.path().join("model.onnx");
        std::fs::write(&source, vec![7u8; 5000]).unwrap();
        let fetcher = Fetcher {
            concurrency: 4,
            part_bytes: 1000,
            ..fetcher(work.path(), 4999)
        };
        let progress = Progress::default();
        let failure = fetcher
            .fetch(&file_url(&source), &progress)
            .await
            .unwrap_err();
        assert_eq!(failure.reason, Reason::TooLarge, "{failure}");
        assert_eq!(progress.done.load(Ordering::Relaxed), 0);
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_file_over_the_limit_is_too_large_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let source = dir.path().join("model.onnx");
        std::fs::write(&source, vec![7u8; 5000]).unwrap();
        let failure = fetcher(work.path(), 4999)
            .fetch(&file_url(&source), &Progress::default())
            .await
            .unwrap_err();
        assert_eq!(failure.reason, Reason::TooLarge, "{failure}");
        assert!(failure.message.contains(env::MAX_MODEL_BYTES));
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let failure = fetcher(dir.path(), 1 << 20)
            .fetch(
                &file_url(&dir.path().join("absent.onnx")),
                &Progress::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(failure.reason, Reason::NotFound, "{failure}");
    }

    #[test]
    fn statuses_are_not_transient_but_interrupted_bodies_are() {
        let not_found = object_store::Error::NotFound {
            path: "p".into(),
            source: "gone".into(),
        };
        assert!(!is_transient(&not_found));
        let interrupted = object_store::Error::Generic {
            store: "HTTP",
            source: Box::new(HttpError::new(
                HttpErrorKind::Interrupted,
                std::io::Error::other("reset"),
            )),
        };
        assert!(is_transient(&interrupted));
        let decode = object_store::Error::Generic {
            store: "HTTP",
            source: Box::new(HttpError::new(
                HttpErrorKind::Decode,
                std::io::Error::other("bad"),
            )),
        };
        assert!(!is_transient(&decode));
    }
}
