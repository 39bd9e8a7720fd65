//! Prometheus metrics, served on the admin port at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub version: String,
    /// HTTP status code.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub model: String,
    /// fetch, verify, load, warmup or total.
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub model: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub model: String,
    /// passed, failed (too few cases reproduced), invalid (the file or a case is unusable) or error (the file
    /// could not be fetched).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub model: String,
    pub version: String,
    pub sha256: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub model: String,
    /// serving, staged or previous.
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub model: String,
    /// same, changed or error.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// missing, wrong or unconfigured.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplacedLabels {
    /// exited, signalled, timed_out, broke_protocol, not_started, none_ready or memory.
    pub reason: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<ModelLabels>,
    pub load_duration: HistogramFamily<PhaseLabels>,
    pub load_failures: Family<ReasonLabels, Counter>,
    pub downloaded_bytes: Family<NameLabel, Counter>,
    pub model_info: Family<InfoLabels, Gauge>,
    pub loaded_versions: Family<StateLabels, Gauge>,
    pub switches: Family<NameLabel, Counter>,
    pub ready: Gauge,
    pub in_flight: Gauge,
    pub admin_refused: Family<RefusedLabels, Counter>,
    pub validation_runs: Family<ResultLabels, Counter>,
    pub source_checks: Family<CheckLabels, Counter>,
    pub python_workers_replaced: Family<ReplacedLabels, Counter>,
}

fn request_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

fn load_histogram() -> Histogram {
    // 10 ms to ~10 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 17))
}

/// Registers `metric` under `name` and hands it back, so each field is declared in one expression.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("ferry");
        let help_requests = "Inference requests by model, version and HTTP status";
        let help_latency = "Inference request latency, including JSON decoding and encoding";
        let help_load =
            "Duration of successful model loads by phase (fetch, verify, load, warmup, validation, total)";
        Metrics {
            requests: registered(&mut r, "requests", help_requests, Family::default()),
            request_duration: registered(
                &mut r,
                "request_duration_seconds",
                help_latency,
                Family::new_with_constructor(request_histogram),
            ),
            load_duration: registered(
                &mut r,
                "model_load_duration_seconds",
                help_load,
                Family::new_with_constructor(load_histogram),
            ),
            load_failures: registered(
                &mut r,
                "model_load_failures",
                "Failed model loads by reason",
                Family::default(),
            ),
            downloaded_bytes: registered(
                &mut r,
                "model_downloaded_bytes",
                "Bytes of model files downloaded",
                Family::default(),
            ),
            model_info: registered(
                &mut r,
                "model_info",
                "1 for the model version being served",
                Family::default(),
            ),
            loaded_versions: registered(
                &mut r,
                "model_loaded_versions",
                "Model versions loaded, by state (serving, staged, previous)",
                Family::default(),
            ),
            switches: registered(
                &mut r,
                "model_switches",
                "Switches that changed the serving version",
                Family::default(),
            ),
            ready: registered(
                &mut r,
                "model_ready",
                "1 while the server is ready to serve",
                Gauge::default(),
            ),
            in_flight: registered(
                &mut r,
                "requests_in_flight",
                "Inference requests received and not yet answered",
                Gauge::default(),
            ),
            admin_refused: registered(
                &mut r,
                "admin_refused",
                "Mutating admin calls refused for a missing or wrong credential",
                Family::default(),
            ),
            validation_runs: registered(
                &mut r,
                "validation_runs",
                "Golden-set validations by result (passed, failed, invalid, error)",
                Family::default(),
            ),
            source_checks: registered(
                &mut r,
                "source_checks",
                "Scheduled checks of the model URI for a new object, by result (same, changed, error)",
                Family::default(),
            ),
            python_workers_replaced: registered(
                &mut r,
                "python_workers_replaced",
                "Python worker processes stopped and replaced by a fresh one loading the same file, by reason \
                 (exited, signalled, timed_out, broke_protocol, memory, ...)",
                Family::default(),
            ),
            registry: r,
        }
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family_with_the_ferry_prefix() {
        let metrics = Metrics::new();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                model: "iris".into(),
                version: "1".into(),
                status: "200".into(),
            })
            .inc();
        metrics
            .request_duration
            .get_or_create(&ModelLabels {
                model: "iris".into(),
                version: "1".into(),
            })
            .observe(0.001);
        metrics.ready.set(1);
        let text = metrics.encode();
        assert!(
            text.contains(r#"ferry_requests_total{model="iris",version="1",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("ferry_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains("ferry_model_ready 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
