//! A recording HTTP proxy in front of an emulator: forwards every request unchanged (signatures still hold: they
//! cover the path, not the host) and records each one's method, Range header and status. It can also run an action
//! (replacing the object mid-download) at a [`Trigger`], while the other GETs wait.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use futures::future::BoxFuture;
use futures::StreamExt;

type Action = BoxFuture<'static, ()>;

/// When the action runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// Right after the first ranged GET was answered in full; ranged GETs pass one at a time.
    AfterFirstPart,
    /// After the first GET's response was fetched, which is then cut off after this many bytes (the connection
    /// breaks mid-body); GETs pass one at a time.
    CutFirstGet(usize),
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub range: Option<String>,
    pub status: u16,
}

struct State {
    target: String,
    client: reqwest::Client,
    seen: Mutex<Vec<Seen>>,
    trigger: Trigger,
    /// Held by each GET the trigger concerns while it is forwarded; holds the action until it has run.
    action: tokio::sync::Mutex<Option<Action>>,
}

pub struct Proxy {
    pub base: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards to `target` (`http://HOST:PORT`).
    pub async fn start(target: &str) -> Proxy {
        Proxy::start_with(target, Trigger::AfterFirstPart, None).await
    }

    /// Forwards to `target`, and runs `action` at `trigger`.
    pub async fn start_with(target: &str, trigger: Trigger, action: Option<Action>) -> Proxy {
        let state = Arc::new(State {
            target: target.to_owned(),
            client: super::server::client(),
            seen: Mutex::new(Vec::new()),
            trigger,
            action: tokio::sync::Mutex::new(action),
        });
        let shared = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move { forward(&state, method, uri, headers, body).await }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy { base, state, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The ranged GETs, in the order they were answered.
    pub fn ranged_gets(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "GET" && s.range.is_some())
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    state: &State,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let concerned = method == Method::GET
        && (range.is_some() || matches!(state.trigger, Trigger::CutFirstGet(_)));
    let mut pending = if concerned {
        Some(state.action.lock().await)
    } else {
        None
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut request = state
        .client
        .request(method.clone(), format!("{}{path}", state.target));
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let response = request
        .body(body)
        .send()
        .await
        .expect("the emulator answers");
    let status = response.status();
    let mut builder = Response::builder().status(status.as_u16());
    for (name, value) in response.headers() {
        // Content-Length stays: a HEAD's is the object's size.
        if name != "transfer-encoding" && name != "connection" {
            builder = builder.header(name, value);
        }
    }
    let bytes = response.bytes().await.expect("the emulator's body");
    state.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        range,
        status: status.as_u16(),
    });
    let Some(action) = pending.as_mut().and_then(|guard| guard.take()) else {
        return builder.body(Body::from(bytes)).unwrap();
    };
    action.await;
    drop(pending);
    match state.trigger {
        Trigger::AfterFirstPart => builder.body(Body::from(bytes)).unwrap(),
        Trigger::CutFirstGet(after) => {
            let head = bytes.slice(..after.min(bytes.len()));
            // The error comes a moment later, once the headers and the first bytes are out.
            let broken = futures::stream::iter([Ok(head)]).chain(futures::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                Err(std::io::Error::other("the proxy breaks the body off"))
            }));
            builder.body(Body::from_stream(broken)).unwrap()
        }
    }
}
