//! What REST and gRPC inference share, so both answer alike: resolving the model a request names, running it on
//! a session of the version that was serving when the request started, the rejections (each maps to one HTTP
//! status and one gRPC code, with the same message), and the request metrics.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::load::Served;
use crate::metrics::{Metrics, ModelLabels, RequestLabels};
use crate::repository::Repository;
use crate::runtime::InferError;

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed or does not fit the model (HTTP 400, gRPC INVALID_ARGUMENT).
    BadRequest,
    /// Another model name or version (404, NOT_FOUND).
    NotFound,
    /// No model is ready, or the server is shutting down (503, UNAVAILABLE).
    Unavailable,
    /// The request body is over `FERRY_MAX_REQUEST_BYTES` (413, RESOURCE_EXHAUSTED).
    TooLarge,
    /// The model failed on a valid request (500, INTERNAL).
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: Kind,
    pub message: String,
}

impl Rejection {
    pub fn new(kind: Kind, message: impl Into<String>) -> Rejection {
        Rejection {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Rejection {
        Rejection::new(Kind::BadRequest, message)
    }

    /// The HTTP status, also the `status` label of the request metrics for both protocols.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            Kind::BadRequest => 400,
            Kind::NotFound => 404,
            Kind::Unavailable => 503,
            Kind::TooLarge => 413,
            Kind::Internal => 500,
        }
    }
}

impl From<InferError> for Rejection {
    fn from(error: InferError) -> Rejection {
        match error {
            InferError::BadInput(m) => {
                Rejection::new(Kind::BadRequest, format!("inference failed: {m}"))
            }
            InferError::Internal(m) => {
                Rejection::new(Kind::Internal, format!("inference failed: {m}"))
            }
        }
    }
}

/// The model version a request names: the serving one without `version`, else that loaded version (serving,
/// staged or previous). NotFound for another name or a version not loaded (naming the loaded ones), Unavailable
/// while no version serves.
pub fn resolve(
    repository: &Repository,
    name: &str,
    version: Option<&str>,
) -> Result<Arc<Served>, Rejection> {
    if name != repository.name {
        return Err(Rejection::new(
            Kind::NotFound,
            format!("unknown model {name:?}"),
        ));
    }
    let serving = repository
        .serving()
        .ok_or_else(|| Rejection::new(Kind::Unavailable, repository.not_ready_reason()))?;
    match version {
        Some(v) if v != serving.spec.version => repository.version(v).map_err(|not_loaded| {
            Rejection::new(
                Kind::NotFound,
                format!(
                    "model {name:?} has no version {v:?} loaded (loaded: {})",
                    not_loaded.loaded
                ),
            )
        }),
        _ => Ok(serving),
    }
}

/// `resolve`, and the model must be ready (not shutting down).
pub fn model_ready(
    repository: &Repository,
    name: &str,
    version: Option<&str>,
) -> Result<(), Rejection> {
    resolve(repository, name, version)?;
    if !repository.is_ready() {
        return Err(Rejection::new(
            Kind::Unavailable,
            repository.not_ready_reason(),
        ));
    }
    Ok(())
}

/// Runs `work` (decode, infer, encode) on the blocking pool once one of `served`'s sessions is free. The wait is
/// on the async side, so blocking threads never queue for a session and health checks never wait for inference.
pub async fn run<T: Send + 'static>(
    served: Arc<Served>,
    work: impl FnOnce(&Served) -> Result<T, Rejection> + Send + 'static,
) -> Result<T, Rejection> {
    let _permit = served
        .permits
        .acquire()
        .await
        .map_err(|_| Rejection::new(Kind::Unavailable, "model is being unloaded"))?;
    let on_thread = served.clone();
    tokio::task::spawn_blocking(move || work(&on_thread))
        .await
        .map_err(|e| Rejection::new(Kind::Internal, format!("inference stopped: {e}")))?
}

/// Resolves the model and runs `handle` on it, counting the request, its status and duration in the metrics.
/// The version is fixed here, when the request starts: a swap in the meantime does not move it.
pub async fn counted<T, F, Fut>(
    repository: &Repository,
    metrics: &Metrics,
    name: &str,
    version: Option<&str>,
    handle: F,
) -> Result<T, Rejection>
where
    F: FnOnce(Arc<Served>) -> Fut,
    Fut: Future<Output = Result<T, Rejection>>,
{
    let started = Instant::now();
    metrics.in_flight.inc();
    let served = resolve(repository, name, version);
    let labels = ModelLabels {
        model: repository.name.clone(),
        version: served
            .as_ref()
            .map(|s| s.spec.version.clone())
            .unwrap_or_default(),
    };
    let result = match served {
        Ok(served) => handle(served).await,
        Err(rejection) => Err(rejection),
    };
    metrics.in_flight.dec();
    let status = result.as_ref().map_or_else(Rejection::http_status, |_| 200);
    metrics
        .requests
        .get_or_create(&RequestLabels {
            model: labels.model.clone(),
            version: labels.version.clone(),
            status: status.to_string(),
        })
        .inc();
    metrics
        .request_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    result
}
