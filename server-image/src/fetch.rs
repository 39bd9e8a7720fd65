//! Downloads the model file into the work directory, hashing it on the way.
//!
//! ```text
//!  object store ──chunks──▶ async reader ──bounded channel──▶ blocking writer: SHA-256 + file
//!                            (size limit, progress)
//! ```
//!
//! Receiving and hashing run on different threads, so hashing costs little on top of the transfer. The size limit
//! is checked against the object's size before the first byte and again on every chunk. object_store retries
//! transient request failures (5xx, connection errors, timeouts) with exponential backoff and never 4xx; on top of
//! that an interrupted body is resumed with a range request from the last byte received. The whole download,
//! retries included, is bounded by the download timeout.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::client::{HttpError, HttpErrorKind};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreScheme, RetryConfig,
};
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use url::Url;

use crate::config::StoreSettings;
use crate::contract::{env, Reason};
use crate::failure::Failure;

/// Resumptions of an interrupted body, after object_store's own retries of each request.
const MAX_RESUMES: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunks queued between the network and the writer (each is typically 16-64 KiB).
const QUEUED_CHUNKS: usize = 64;

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
}

/// A downloaded file; it is deleted when this is dropped.
#[derive(Debug)]
pub struct Downloaded {
    pub path: tempfile::TempPath,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
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
        match tokio::time::timeout(self.timeout, self.download(uri, progress)).await {
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

    async fn download(&self, uri: &Url, progress: &Progress) -> Result<Downloaded, Failure> {
        let (store, path) = self.open(uri)?;
        let (chunks, writer) = spawn_writer(self.work_dir.clone());
        let received = self.receive(uri, &*store, &path, &chunks, progress).await;
        drop(chunks);
        // Joined on every path, so a failed download's partial file is gone before the failure is reported.
        let written = writer
            .await
            .map_err(|e| Failure::new(Reason::FetchFailed, format!("writer stopped: {e}")))?;
        received?;
        written.map_err(|e| write_failure(&self.work_dir, e))
    }

    /// Streams the object into `chunks`, resuming an interrupted body from the last byte received.
    async fn receive(
        &self,
        uri: &Url,
        store: &dyn ObjectStore,
        path: &Path,
        chunks: &mpsc::Sender<Bytes>,
        progress: &Progress,
    ) -> Result<(), Failure> {
        let mut resumes = 0;
        let mut etag = None;
        loop {
            let done = progress.done.load(Ordering::Relaxed);
            let options = GetOptions {
                range: (done > 0).then_some(GetRange::Offset(done)),
                if_match: if done > 0 { etag.clone() } else { None },
                ..GetOptions::default()
            };
            match self
                .stream(store, path, options, chunks, progress, &mut etag)
                .await
            {
                Ok(()) => return Ok(()),
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

    async fn stream(
        &self,
        store: &dyn ObjectStore,
        path: &Path,
        options: GetOptions,
        chunks: &mpsc::Sender<Bytes>,
        progress: &Progress,
        etag: &mut Option<String>,
    ) -> Result<(), StreamError> {
        let result = store.get_opts(path, options).await?;
        let size = result.meta.size;
        if size > self.max_bytes {
            return Err(StreamError::Failed(self.too_large(size)));
        }
        progress.total.store(size, Ordering::Relaxed);
        etag.clone_from(&result.meta.e_tag);
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            let received = progress.done.load(Ordering::Relaxed) + chunk.len() as u64;
            if received > self.max_bytes {
                return Err(StreamError::Failed(self.too_large(received)));
            }
            let len = chunk.len() as u64;
            if chunks.send(chunk).await.is_err() {
                // The writer failed; its error is reported when it is joined.
                return Ok(());
            }
            progress.add(len);
        }
        Ok(())
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

    fn open(&self, uri: &Url) -> Result<(Box<dyn ObjectStore>, Path), Failure> {
        let invalid = |e: &dyn std::fmt::Display| {
            Failure::invalid_config(env::MODEL_URI, format!("{uri}: {e}"))
        };
        let (scheme, path) = ObjectStoreScheme::parse(uri).map_err(|e| invalid(&e))?;
        let path = Path::from_url_path(path).map_err(|e| invalid(&e))?;
        let client = ClientOptions::new()
            .with_timeout(self.timeout)
            .with_connect_timeout(CONNECT_TIMEOUT);
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
                    .with_client_options(client.with_allow_http(self.store.s3_allow_http))
                    .with_retry(retry);
                if let Some(endpoint) = &self.store.s3_endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &self.store.s3_region {
                    builder = builder.with_region(region);
                }
                Box::new(builder.build().map_err(|e| invalid(&e))?)
            }
            ObjectStoreScheme::GoogleCloudStorage => Box::new(
                GoogleCloudStorageBuilder::from_env()
                    .with_url(uri.as_str())
                    .with_client_options(client)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| invalid(&e))?,
            ),
            ObjectStoreScheme::MicrosoftAzure => Box::new(
                MicrosoftAzureBuilder::from_env()
                    .with_url(uri.as_str())
                    .with_client_options(client)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| invalid(&e))?,
            ),
            ObjectStoreScheme::Http => Box::new(
                HttpBuilder::new()
                    .with_url(&uri[..url::Position::BeforePath])
                    .with_client_options(client.with_allow_http(uri.scheme() == "http"))
                    .with_retry(retry)
                    .build()
                    .map_err(|e| invalid(&e))?,
            ),
            other => return Err(invalid(&format!("{other:?} URIs are not supported"))),
        };
        Ok((store, path))
    }
}

/// Hashes and writes chunks on a blocking thread; yields the finished file when the sender is dropped.
fn spawn_writer(
    work_dir: PathBuf,
) -> (
    mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<std::io::Result<Downloaded>>,
) {
    let (sender, mut receiver) = mpsc::channel::<Bytes>(QUEUED_CHUNKS);
    let writer = tokio::task::spawn_blocking(move || {
        let file = tempfile::Builder::new()
            .prefix("model-")
            .suffix(".download")
            .tempfile_in(&work_dir)?;
        let mut hasher = Sha256::new();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut size = 0u64;
        while let Some(chunk) = receiver.blocking_recv() {
            hasher.update(&chunk);
            out.write_all(&chunk)?;
            size += chunk.len() as u64;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        Ok(Downloaded {
            path: file.into_temp_path(),
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    });
    (sender, writer)
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
        e if has_timeout(e) => Reason::Timeout,
        _ => Reason::FetchFailed,
    };
    Failure::new(reason, format!("{uri}: {error}"))
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
