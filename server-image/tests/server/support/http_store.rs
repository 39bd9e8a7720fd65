//! A real local HTTP server for `http://` model URIs, with the misbehaviours the fetch tests need.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

#[derive(Clone)]
pub enum Behavior {
    /// Serves the bytes, honouring `Range: bytes=N-`.
    Serve(Bytes),
    /// Answers every request with this status.
    Status(u16),
    /// Serves the bytes `chunk` at a time, `delay` apart.
    Slow {
        bytes: Bytes,
        chunk: usize,
        delay: Duration,
    },
    /// Answers the first `failures` requests with 503, then serves.
    Flaky { bytes: Bytes, failures: usize },
    /// The first response breaks off after `cut` bytes; later requests are served (with ranges).
    DropOnce { bytes: Bytes, cut: usize },
    /// An object that can be overwritten while the store runs, described by an `ETag` and/or a `Last-Modified`,
    /// honouring `If-Match` and `If-Unmodified-Since` (412) and `HEAD`.
    Object(StoreObject),
}

/// The object of a `Behavior::Object`; a clone overwrites the same object.
#[derive(Clone)]
pub struct StoreObject(Arc<Mutex<ObjectState>>);

struct ObjectState {
    bytes: Bytes,
    /// Sent as `ETag: "<etag>-<generation>"` when set.
    etag: Option<String>,
    generation: u64,
    /// Sent as `Last-Modified` when set; whole seconds, as HTTP dates are.
    last_modified: Option<chrono::DateTime<chrono::Utc>>,
    /// The next GET breaks off after this many bytes and the object is replaced by these bytes meanwhile.
    replace_mid_body: Option<(usize, Bytes)>,
    /// Serve whatever `If-Match` and `If-Unmodified-Since` say, as some S3-compatible stores do.
    ignore_conditions: bool,
}

impl StoreObject {
    /// `bytes` with an ETag (`with_etag`) and/or a Last-Modified of a fixed past time (`with_last_modified`).
    pub fn new(bytes: impl Into<Bytes>, with_etag: bool, with_last_modified: bool) -> StoreObject {
        StoreObject(Arc::new(Mutex::new(ObjectState {
            bytes: bytes.into(),
            etag: with_etag.then(|| format!("ferry-{}", std::process::id())),
            generation: 1,
            last_modified: with_last_modified
                .then(|| chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap()),
            replace_mid_body: None,
            ignore_conditions: false,
        })))
    }

    /// The next GET breaks off after `cut` bytes, and by then the object is `next` (an overwrite).
    pub fn replace_during_next_get(&self, cut: usize, next: impl Into<Bytes>) {
        self.0.lock().unwrap().replace_mid_body = Some((cut, next.into()));
    }

    /// Ignore `If-Match` and `If-Unmodified-Since` from now on.
    pub fn ignore_conditions(&self) {
        self.0.lock().unwrap().ignore_conditions = true;
    }

    /// Replaces the object: a new ETag and a Last-Modified one minute later.
    pub fn overwrite(&self, bytes: impl Into<Bytes>) {
        let mut state = self.0.lock().unwrap();
        state.bytes = bytes.into();
        state.generation += 1;
        if let Some(modified) = &mut state.last_modified {
            *modified += chrono::Duration::seconds(60);
        }
    }

    /// The `ETag` header value, quotes included.
    pub fn etag(&self) -> Option<String> {
        self.0.lock().unwrap().etag()
    }

    fn respond(&self, method: &Method, headers: &HeaderMap, range: Option<&str>) -> Response {
        let mut state = self.0.lock().unwrap();
        let etag = state.etag();
        let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let mismatch = header(header::IF_MATCH)
            .is_some_and(|wanted| wanted != "*" && Some(wanted) != etag.as_deref());
        let modified_since = header(header::IF_UNMODIFIED_SINCE)
            .and_then(|date| chrono::DateTime::parse_from_rfc2822(date).ok())
            .zip(state.last_modified)
            .is_some_and(|(since, modified)| modified > since);
        if (mismatch || modified_since) && !state.ignore_conditions {
            return StatusCode::PRECONDITION_FAILED.into_response();
        }
        if let Some((cut, next)) = (*method == Method::GET)
            .then(|| state.replace_mid_body.take())
            .flatten()
        {
            // The head comes from the object as it was; the rest is never sent, and the object is replaced.
            let mut response = drop_after(&state.bytes, cut);
            set_validators(response.headers_mut(), etag, state.last_modified);
            drop(state);
            self.overwrite(next);
            return response;
        }
        let mut response = if *method == Method::HEAD {
            Response::builder()
                .header(header::CONTENT_LENGTH, state.bytes.len())
                .body(Body::empty())
                .unwrap()
        } else {
            serve(&state.bytes, range)
        };
        set_validators(response.headers_mut(), etag, state.last_modified);
        response
    }
}

fn set_validators(
    headers: &mut HeaderMap,
    etag: Option<String>,
    modified: Option<chrono::DateTime<chrono::Utc>>,
) {
    if let Some(etag) = etag {
        headers.insert(header::ETAG, etag.parse().unwrap());
    }
    if let Some(modified) = modified {
        let date = modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        headers.insert(header::LAST_MODIFIED, date.parse().unwrap());
    }
}

/// The whole of `bytes` announced, the first `cut` sent, then the connection breaks.
fn drop_after(bytes: &Bytes, cut: usize) -> Response {
    let head = bytes.slice(..cut);
    // The pause lets the head reach the client before the connection breaks.
    let stream = futures::stream::iter([Some(head), None]).then(|piece| async move {
        match piece {
            Some(head) => Ok(head),
            None => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Err(std::io::Error::other("connection dropped on purpose"))
            }
        }
    });
    with_length(bytes.len(), Body::from_stream(stream))
}

impl ObjectState {
    fn etag(&self) -> Option<String> {
        self.etag
            .as_ref()
            .map(|e| format!("\"{e}-{}\"", self.generation))
    }
}

impl Behavior {
    /// `bytes` served `chunk` bytes at a time, `delay_ms` apart.
    pub fn slow(bytes: impl Into<Bytes>, chunk: usize, delay_ms: u64) -> Behavior {
        Behavior::Slow {
            bytes: bytes.into(),
            chunk,
            delay: Duration::from_millis(delay_ms),
        }
    }
}

struct Routes {
    behaviors: HashMap<String, Behavior>,
    /// Path, Range header, method.
    requests: Mutex<Vec<(String, Option<String>, Method)>>,
}

pub struct HttpStore {
    pub base: String,
    routes: Arc<Routes>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpStore {
    pub async fn start(behaviors: Vec<(&str, Behavior)>) -> HttpStore {
        let routes = Arc::new(Routes {
            behaviors: behaviors
                .into_iter()
                .map(|(p, b)| (p.to_owned(), b))
                .collect(),
            requests: Mutex::new(Vec::new()),
        });
        let state = routes.clone();
        let app =
            axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
                let routes = state.clone();
                async move { respond(&routes, &method, &uri, &headers) }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpStore { base, routes, task }
    }

    pub fn uri(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Requests received for `path`, with their Range header.
    pub fn requests(&self, path: &str) -> Vec<Option<String>> {
        let requests = self.routes.requests.lock().unwrap();
        requests
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, r, _)| r.clone())
            .collect()
    }

    /// How many `method` requests `path` received.
    pub fn count(&self, path: &str, method: &Method) -> usize {
        let requests = self.routes.requests.lock().unwrap();
        requests
            .iter()
            .filter(|(p, _, m)| p == path && m == method)
            .count()
    }
}

impl Drop for HttpStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(routes: &Routes, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let path = uri.path().to_owned();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let seen = {
        let mut requests = routes.requests.lock().unwrap();
        requests.push((path.clone(), range.clone(), method.clone()));
        requests.iter().filter(|(p, _, _)| *p == path).count()
    };
    let Some(behavior) = routes.behaviors.get(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match behavior {
        Behavior::Serve(bytes) => serve(bytes, range.as_deref()),
        Behavior::Object(object) => object.respond(method, headers, range.as_deref()),
        Behavior::Status(code) => StatusCode::from_u16(*code).unwrap().into_response(),
        Behavior::Flaky { bytes, failures } if seen > *failures => serve(bytes, range.as_deref()),
        Behavior::Flaky { .. } => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Behavior::DropOnce { bytes, .. } if seen > 1 => serve(bytes, range.as_deref()),
        Behavior::DropOnce { bytes, cut } => drop_after(bytes, *cut),
        Behavior::Slow {
            bytes,
            chunk,
            delay,
        } => {
            let pieces: Vec<Bytes> = bytes.chunks(*chunk).map(Bytes::copy_from_slice).collect();
            let delay = *delay;
            let stream = futures::stream::iter(pieces).then(move |piece| async move {
                tokio::time::sleep(delay).await;
                Ok::<Bytes, std::io::Error>(piece)
            });
            with_length(bytes.len(), Body::from_stream(stream))
        }
    }
}

fn with_length(length: usize, body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_LENGTH, length)
        .body(body)
        .unwrap()
}

/// Serves `bytes`, or with `Range: bytes=N-` or `bytes=N-M` that part of them.
fn serve(bytes: &Bytes, range: Option<&str>) -> Response {
    let span = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(start, end)| {
            let start = start.parse::<usize>().ok()?;
            let end = match end {
                "" => bytes.len() - 1,
                end => end.parse::<usize>().ok()?.min(bytes.len() - 1),
            };
            (start <= end).then_some((start, end))
        });
    match span {
        Some((start, end)) if start < bytes.len() => Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, end + 1 - start)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", bytes.len()),
            )
            .body(Body::from(bytes.slice(start..=end)))
            .unwrap(),
        _ => with_length(bytes.len(), Body::from(bytes.clone())),
    }
}
