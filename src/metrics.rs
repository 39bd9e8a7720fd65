//! Prometheus metrics of the controller, served on its own port with the health endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodReadLabels {
    /// `answered` or `unreachable`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdminCallLabels {
    /// `stage`, `switch` or `unload`.
    pub action: &'static str,
    /// `ok`, `refused` (for good) or `retry`.
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    /// Rollouts by transition: started, promoted, aborted, rolled_back, superseded.
    pub rollouts: Family<RolloutLabels, Counter>,
    /// Seconds from a candidate's Deployment becoming available to the active Service switching to it.
    pub promotion_latency: Histogram,
    /// Writes to the API server (applies, patches, deletes, status writes).
    pub api_writes: Counter,
    /// Reconciles that went on before the caches had caught up with the previous reconcile's writes.
    pub cache_catch_up_timeouts: Counter,
    /// Reads of serving pods' `/status`, by result.
    pub pod_reads: Family<PodReadLabels, Counter>,
    /// Status writes put off because only pod progress changed and the last such write was recent.
    pub status_writes_deferred: Counter,
    /// Calls to serving pods' admin API (strategy InPlace), by action and result.
    pub admin_calls: Family<AdminCallLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let reconciles = Counter::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let rollouts = Family::<RolloutLabels, Counter>::default();
        let promotion_latency = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let api_writes = Counter::default();
        let cache_catch_up_timeouts = Counter::default();
        let pod_reads = Family::<PodReadLabels, Counter>::default();
        let status_writes_deferred = Counter::default();
        let admin_calls = Family::<AdminCallLabels, Counter>::default();
        registry.register(
            "admin_calls",
            "Calls to serving pods' admin API (strategy InPlace: stage, switch, unload), by action and result (ok, refused, retry)",
            admin_calls.clone(),
        );
        registry.register(
            "pod_status_reads",
            "Reads of serving pods' /status by the controller, by result (answered, unreachable)",
            pod_reads.clone(),
        );
        registry.register(
            "status_writes_deferred",
            "Status writes put off because only pod progress changed since a recent write",
            status_writes_deferred.clone(),
        );
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "rollout_transitions",
            "Rollout transitions by outcome",
            rollouts.clone(),
        );
        registry.register(
            "promotion_latency_seconds",
            "Time from a candidate becoming available to traffic switching to it",
            promotion_latency.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the API server by the controller",
            api_writes.clone(),
        );
        registry.register(
            "cache_catch_up_timeouts",
            "Reconciles that went on before the caches had caught up with the previous reconcile's writes",
            cache_catch_up_timeouts.clone(),
        );
        Self {
            registry,
            api_writes,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            rollouts,
            promotion_latency,
            cache_catch_up_timeouts,
            pod_reads,
            status_writes_deferred,
            admin_calls,
        }
    }
}

impl Metrics {
    pub fn count_rollout(&self, outcome: &str) {
        self.rollouts
            .get_or_create(&RolloutLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn count_error(&self, kind: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn observe_reconcile(&self, duration: Duration) {
        self.reconciles.inc();
        self.reconcile_duration.observe(duration.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

/// Serves /metrics, /healthz and /readyz until `shutdown` resolves.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(|| async { StatusCode::OK }))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "serving metrics and health");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
