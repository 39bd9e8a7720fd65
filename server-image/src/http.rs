//! The HTTP surface: the inference port (Open Inference Protocol v2, health) and the admin port (health, status,
//! metrics, model repository), so that a Service can expose inference alone.
//!
//! Every error is `{"error": "...", "code": "..."}` (`contract::ErrorBody`): handlers build them with `ApiError`,
//! and a last layer rewrites the plain-text rejections of the framework (unknown route, wrong method, body too
//! large, ...) into the same shape.
//! Inference runs on the blocking pool, at most one request per idle session, so health checks never wait for it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::auth::{require_admin, AdminAuth, AdminCheck};
use crate::contract::{
    paths, ErrorBody, ErrorCode, IndexState, LoadAccepted, LoadFailed, LoadRequest, SwitchRequest,
    UnloadRequest, Unloaded, DEFAULT_MODEL_FORMAT,
};
use crate::failure::Failure;
use crate::inference::{self, Kind, Rejection};
use crate::load::Served;
use crate::metrics::Metrics;
use crate::model::{ModelSpec, SpecFieldNames, ValidationSpec};
use crate::oip::{self, binary};
use crate::repository::{Begun, LoadRefused, Repository, SwitchRefused, UnloadRefused};
use crate::source_checks::SourceWatch;

#[derive(Clone)]
pub struct AppState {
    pub repository: Arc<Repository>,
    pub metrics: Arc<Metrics>,
    pub admin: Arc<AdminAuth>,
    /// What the scheduled checks of the serving URI found, for `/status`.
    pub source: Arc<SourceWatch>,
}

/// An error response: `{"error": message, "code": code}` with `status`, the code's own unless the framework chose
/// another (415, ...).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
        }
    }

    /// For an answer whose status was chosen elsewhere (a framework rejection).
    fn with_status(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code_of_status(status),
            message: message.into(),
        }
    }
}

/// The code of a status the framework chose.
fn code_of_status(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::TooLarge,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_client_error() => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        let code = match rejection.kind {
            Kind::BadRequest => ErrorCode::BadRequest,
            Kind::NotFound => ErrorCode::NotFound,
            Kind::Unavailable => ErrorCode::Unavailable,
            Kind::TooLarge => ErrorCode::TooLarge,
            Kind::Internal => ErrorCode::Internal,
        };
        ApiError::new(code, rejection.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            code: Some(self.code),
        };
        (self.status, Json(body)).into_response()
    }
}

pub fn inference_router(state: AppState, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
        .merge(health_routes())
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(state)
        .fallback(not_found)
        .layer(axum::middleware::map_response(errors_as_json))
}

pub fn admin_router(state: AppState) -> Router {
    // Every route that changes what is served goes here, behind the credential check.
    let mutating = Router::new()
        .route(paths::REPOSITORY_LOAD, post(repository_load))
        .route(paths::REPOSITORY_SWITCH, post(repository_switch))
        .route(paths::REPOSITORY_UNLOAD, post(repository_unload))
        .route_layer(axum::middleware::from_fn_with_state(
            AdminCheck {
                auth: state.admin.clone(),
                metrics: state.metrics.clone(),
            },
            require_admin,
        ));
    Router::new()
        .route(paths::STATUS, get(status))
        .route(paths::METRICS, get(metrics))
        .route(paths::REPOSITORY_INDEX, post(repository_index))
        .merge(mutating)
        .merge(health_routes())
        .layer(DefaultBodyLimit::max(64 << 10))
        .with_state(state)
        .fallback(not_found)
        .layer(axum::middleware::map_response(errors_as_json))
}

fn health_routes() -> Router<AppState> {
    Router::new()
        .route(paths::LIVE, get(live))
        .route(paths::READY, get(ready))
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

/// Rewrites any error response that is not JSON yet (framework rejections) into `{"error": ...}`.
async fn errors_as_json(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text.trim().to_owned()
    };
    ApiError::with_status(status, message).into_response()
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.repository.is_ready() {
        Json(json!({ "ready": true })).into_response()
    } else {
        ApiError::new(ErrorCode::Unavailable, state.repository.not_ready_reason()).into_response()
    }
}

async fn server_metadata() -> Json<serde_json::Value> {
    Json(json!({
        "name": "ferry-server",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": crate::contract::capabilities::EXTENSIONS,
    }))
}

/// Path parameters of the model routes: `name`, and `version` on the `/versions/{version}` variants.
type ModelPath = Path<HashMap<String, String>>;

fn model_and_version(params: &HashMap<String, String>) -> (&str, Option<&str>) {
    let name = params.get("name").map_or("", String::as_str);
    (name, params.get("version").map(String::as_str))
}

async fn model_metadata(
    State(state): State<AppState>,
    Path(params): ModelPath,
) -> Result<Response, ApiError> {
    let (name, version) = model_and_version(&params);
    let served = inference::resolve(&state.repository, name, version)?;
    let signature = served.model.signature();
    let metadata = oip::ModelMetadata {
        name: &state.repository.name,
        versions: vec![&served.spec.version],
        platform: served.model.platform(),
        inputs: &signature.inputs,
        outputs: &signature.outputs,
    };
    Ok(Json(metadata).into_response())
}

async fn model_ready(
    State(state): State<AppState>,
    Path(params): ModelPath,
) -> Result<Response, ApiError> {
    let (name, version) = model_and_version(&params);
    inference::model_ready(&state.repository, name, version)?;
    Ok(Json(json!({ "name": name, "ready": true })).into_response())
}

async fn infer(
    State(state): State<AppState>,
    Path(params): ModelPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (name, version) = model_and_version(&params);
    let answer = inference::counted(
        &state.repository,
        &state.metrics,
        name,
        version,
        |served| async move {
            let body = body.map_err(|rejection| {
                let kind = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Kind::TooLarge
                } else {
                    Kind::BadRequest
                };
                Rejection::new(kind, rejection.body_text())
            })?;
            let header = headers
                .get(binary::HEADER_CONTENT_LENGTH)
                .map(|v| v.as_bytes().to_vec());
            inference::run(served, move |served| {
                infer_rest(served, &body, header.as_deref())
            })
            .await
        },
    )
    .await;
    match answer {
        Ok((body, None)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Ok((body, Some(json_length))) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (
                    HeaderName::from_static(binary::HEADER_CONTENT_LENGTH),
                    HeaderValue::from(json_length),
                ),
            ],
            body,
        )
            .into_response(),
        Err(rejection) => ApiError::from(rejection).into_response(),
    }
}

/// Decodes a JSON or binary-extension body (`header`: its `Inference-Header-Content-Length`), runs the model and
/// encodes the answer: the body, and the JSON length when raw outputs follow it.
fn infer_rest(
    served: &Served,
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<(Vec<u8>, Option<usize>), Rejection> {
    let signature = served.model.signature();
    let decoded = oip::decode_body(body, header, signature).map_err(Rejection::bad_request)?;
    let outputs = served.model.infer(decoded.inputs)?;
    let response = oip::encode(
        &served.spec.name,
        &served.spec.version,
        decoded.id,
        outputs,
        decoded.outputs.as_deref(),
        decoded.binary_outputs,
    );
    oip::response_body(response).map_err(|m| Rejection::new(Kind::Internal, m))
}

async fn status(State(state): State<AppState>) -> Response {
    let mut status = state.repository.status(state.admin.view());
    status.source = state.source.status(
        status
            .serving
            .as_ref()
            .map(|s| (s.uri.as_str(), s.identity.as_ref())),
    );
    Json(status).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn repository_index(State(state): State<AppState>) -> Response {
    Json(state.repository.index()).into_response()
}

const LOAD_FIELD_NAMES: SpecFieldNames = SpecFieldNames {
    name: "name",
    uri: "parameters.uri",
    version: "parameters.version",
    sha256: "parameters.sha256",
    format: "parameters.format",
};

/// 404 unless `name` is the model this server serves.
fn this_model(repository: &Repository, name: &str) -> Result<(), ApiError> {
    if name != repository.name {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "unknown model {name:?}; this server serves {:?}",
                repository.name
            ),
        ));
    }
    Ok(())
}

/// The JSON body of a repository call (`what` names it in the 400); an empty body is the default request.
fn repository_request<T: serde::de::DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<T, ApiError> {
    let body =
        body.map_err(|rejection| ApiError::with_status(rejection.status(), rejection.body_text()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("invalid {what} request: {e}"),
        )
    })
}

async fn repository_load(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let repository = &state.repository;
    this_model(repository, &name)?;
    let request: LoadRequest = repository_request(body, "load")?;
    let p = request.parameters;
    let mut spec = ModelSpec::parse(
        &LOAD_FIELD_NAMES,
        Some(&name),
        p.uri.as_deref(),
        p.version.as_deref(),
        p.sha256.as_deref(),
        p.format.as_deref().unwrap_or(DEFAULT_MODEL_FORMAT),
    )
    .and_then(|spec| spec.pinned("parameters.object", p.object.as_deref()))
    .map_err(|f| ApiError::new(ErrorCode::BadRequest, f.message))?;
    spec.validation = ValidationSpec::parse(
        ("parameters.validation_uri", "parameters.validation_sha256"),
        p.validation_uri.as_deref(),
        p.validation_sha256.as_deref(),
    )
    .map_err(|f| ApiError::new(ErrorCode::BadRequest, f.message))?;
    let version = spec.version.clone();
    let accepted = |state| {
        Json(LoadAccepted {
            name: name.clone(),
            version: version.clone(),
            state,
        })
    };
    let attempt = match repository.begin_load(spec, p.stage) {
        Ok(Begun::Started(attempt)) => attempt,
        Ok(Begun::AlreadyLoaded) => return Ok(accepted(IndexState::Ready).into_response()),
        Err(LoadRefused::Busy) => {
            return Err(ApiError::new(
                ErrorCode::Busy,
                "another load is in progress; retry when it has finished",
            ))
        }
        Err(LoadRefused::Full(message)) => return Err(ApiError::new(ErrorCode::Full, message)),
        Err(LoadRefused::Conflict(message)) => {
            return Err(ApiError::new(ErrorCode::Conflict, message))
        }
    };
    let load = tokio::spawn(repository.clone().run_load(attempt));
    if !p.wait {
        return Ok((StatusCode::ACCEPTED, accepted(IndexState::Loading)).into_response());
    }
    let loaded = load
        .await
        .unwrap_or_else(|e| Err(Failure::stopped("the load", e)));
    match loaded {
        Ok(()) => Ok(accepted(IndexState::Ready).into_response()),
        Err(failure) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(LoadFailed {
                error: failure.to_string(),
                reason: failure.reason,
                operator: failure.operator,
                code: Some(ErrorCode::LoadFailed),
            }),
        )
            .into_response()),
    }
}

/// The version a switch or unload request names, after the checks both share (model name, body, version).
fn requested_version<T: serde::de::DeserializeOwned + Default>(
    repository: &Repository,
    name: &str,
    body: Result<Bytes, BytesRejection>,
    what: &str,
    version: impl FnOnce(T) -> String,
) -> Result<String, ApiError> {
    this_model(repository, name)?;
    let version = version(repository_request(body, what)?);
    if version.is_empty() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "parameters.version is required",
        ));
    }
    Ok(version)
}

async fn repository_switch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let version = requested_version(
        &state.repository,
        &name,
        body,
        "switch",
        |r: SwitchRequest| r.parameters.version,
    )?;
    match state.repository.switch(&version) {
        Ok(switched) => Ok(Json(switched).into_response()),
        Err(SwitchRefused::NotLoaded(message)) => Err(ApiError::new(ErrorCode::NotLoaded, message)),
        Err(SwitchRefused::ShuttingDown) => Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "shutting down; the serving version no longer changes",
        )),
    }
}

async fn repository_unload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let version = requested_version(
        &state.repository,
        &name,
        body,
        "unload",
        |r: UnloadRequest| r.parameters.version,
    )?;
    match state.repository.unload(&version) {
        Ok(unloaded) => Ok(Json(Unloaded {
            name,
            version,
            unloaded,
        })
        .into_response()),
        Err(UnloadRefused(message)) => Err(ApiError::new(ErrorCode::InUse, message)),
    }
}
