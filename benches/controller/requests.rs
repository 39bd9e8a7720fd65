//! Counting requests: a client layer that records every request the in-process controller sends (by verb and
//! resource, with its latency), and the apiserver's own `apiserver_request_total` (every client).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http;
use kube::Client;

use crate::support;

/// Every request a client sent, by verb (GET, LIST, WATCH, POST, PUT, PATCH, DELETE) and resource, and how long
/// each took until its response headers arrived (watches excepted: they stay open).
#[derive(Default)]
pub struct RequestLog {
    pub counts: Mutex<Counts>,
    pub latencies: Mutex<BTreeMap<(String, String), Vec<f64>>>,
}

pub type Counts = BTreeMap<(String, String), u64>;

impl RequestLog {
    pub fn record<B>(&self, request: &http::Request<B>) -> (String, String) {
        let query = request.uri().query().unwrap_or("");
        let resource = resource_of(request.uri().path());
        let verb = match request.method().as_str() {
            "GET"
                if query
                    .split('&')
                    .any(|p| p == "watch=true" || p == "watch=1") =>
            {
                "WATCH"
            }
            "GET" if !resource.named => "LIST",
            other => other,
        };
        let key = (verb.to_owned(), resource.name);
        *self.counts.lock().unwrap().entry(key.clone()).or_default() += 1;
        key
    }

    pub fn took(&self, key: (String, String), elapsed: Duration) {
        if key.0 != "WATCH" {
            self.latencies
                .lock()
                .unwrap()
                .entry(key)
                .or_default()
                .push(elapsed.as_secs_f64() * 1000.0);
        }
    }

    pub fn snapshot(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    /// The latencies recorded so far, in milliseconds, forgetting them.
    pub fn take_latencies(&self) -> BTreeMap<(String, String), Vec<f64>> {
        std::mem::take(&mut *self.latencies.lock().unwrap())
    }
}

/// A client middleware that records every request in a [`RequestLog`].
#[derive(Clone)]
pub struct Recorded<S> {
    pub inner: S,
    pub log: Arc<RequestLog>,
}

pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Recorded<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let key = self.log.record(&request);
        let log = self.log.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            log.took(key, started.elapsed());
            response
        })
    }
}

pub struct ResourcePath {
    /// `deployments`, `modeldeployments/status`, ...
    pub name: String,
    /// The path names one object (a GET of it is not a LIST).
    pub named: bool,
}

/// The resource of an API path: `/apis/apps/v1/namespaces/ns/deployments/x` → deployments (named).
pub fn resource_of(path: &str) -> ResourcePath {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/GROUP/VERSION/...
    let rest: &[&str] = match segments.first() {
        Some(&"api") if segments.len() >= 2 => &segments[2..],
        Some(&"apis") if segments.len() >= 3 => &segments[3..],
        _ => {
            return ResourcePath {
                name: path.to_owned(),
                named: true,
            }
        }
    };
    let rest = match rest {
        ["namespaces", _namespace, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    match rest {
        [] => ResourcePath {
            name: "discovery".into(),
            named: true,
        },
        [resource] => ResourcePath {
            name: (*resource).into(),
            named: false,
        },
        [resource, _name] => ResourcePath {
            name: (*resource).into(),
            named: true,
        },
        [resource, _name, sub, ..] => ResourcePath {
            name: format!("{resource}/{sub}"),
            named: true,
        },
    }
}

pub fn is_write(verb: &str) -> bool {
    matches!(verb, "POST" | "PUT" | "PATCH" | "DELETE")
}

pub fn difference(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(key, n)| (key.clone(), n - before.get(key).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

pub fn writes(counts: &Counts) -> u64 {
    counts
        .iter()
        .filter(|((verb, _), _)| is_write(verb))
        .map(|(_, n)| n)
        .sum()
}

pub fn reads(counts: &Counts) -> u64 {
    counts
        .iter()
        .filter(|((verb, _), _)| !is_write(verb))
        .map(|(_, n)| n)
        .sum()
}

pub fn describe(counts: &Counts, filter: impl Fn(&str) -> bool) -> String {
    let parts: Vec<String> = counts
        .iter()
        .filter(|((verb, _), _)| filter(verb))
        .map(|((verb, resource), n)| format!("{verb} {resource}: {n}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

pub async fn counting_client(kubeconfig: &Path, log: Arc<RequestLog>) -> Client {
    let config = support::client_config(kubeconfig).await;
    let layer = tower::layer::layer_fn(move |inner| Recorded {
        inner,
        log: log.clone(),
    });
    kube::client::ClientBuilder::try_from(config)
        .expect("client builds")
        .with_layer(&layer)
        .build()
}

pub const TOUCHED_RESOURCES: [&str; 7] = [
    "modeldeployments",
    "secrets",
    "deployments",
    "services",
    "events",
    "pods",
    "replicasets",
];

pub const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "DELETE", "APPLY"];
pub const READ_AND_WRITE_VERBS: [&str; 7] =
    ["GET", "LIST", "POST", "PUT", "PATCH", "DELETE", "APPLY"];

/// apiserver_request_total for `verbs` on the resources Ferry and the Deployment machinery touch, by
/// "VERB resource[/subresource]" (every client of the apiserver).
pub async fn apiserver_requests(client: &Client, verbs: &[&str]) -> Option<BTreeMap<String, u64>> {
    let request = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = client.request_text(request).await.ok()?;
    let mut totals = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |key: &str| {
            let start = line.find(&format!("{key}=\""))? + key.len() + 2;
            let end = start + line[start..].find('"')?;
            Some(&line[start..end])
        };
        let (Some(verb), Some(resource)) = (label("verb"), label("resource")) else {
            continue;
        };
        if !verbs.contains(&verb) || !TOUCHED_RESOURCES.contains(&resource) {
            continue;
        }
        let subresource = label("subresource").filter(|s| !s.is_empty());
        let key = match subresource {
            Some(sub) => format!("{verb} {resource}/{sub}"),
            None => format!("{verb} {resource}"),
        };
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        *totals.entry(key).or_default() += value as u64;
    }
    Some(totals)
}

pub fn counter_difference(
    before: Option<BTreeMap<String, u64>>,
    after: Option<BTreeMap<String, u64>>,
) -> Option<BTreeMap<String, u64>> {
    let (before, after) = (before?, after?);
    Some(
        after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect(),
    )
}

pub fn describe_counters(counters: &Option<BTreeMap<String, u64>>) -> String {
    match counters {
        None => "unavailable".to_owned(),
        Some(m) if m.is_empty() => "none".to_owned(),
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}
