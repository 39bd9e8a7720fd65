//! The in-process controller of parts 1 and 3, its requests counted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::metrics::Metrics;

use crate::measure::metric_sum;
use crate::requests::{counting_client, RequestLog};
use crate::say;
use crate::settings::Settings;
use crate::support::InProcess;

pub struct InProcessController {
    pub controller: InProcess,
    pub metrics: Arc<Metrics>,
    pub requests: Arc<RequestLog>,
}

impl InProcessController {
    pub async fn start(kubeconfig: &Path, namespace: &str, settings: &Settings) -> Self {
        let requests = Arc::new(RequestLog::default());
        let controller = InProcess::watching(&[namespace])
            .client(counting_client(kubeconfig, requests.clone()).await)
            .concurrency(settings.concurrency)
            .start()
            .await;
        InProcessController {
            metrics: controller.metrics.clone(),
            controller,
            requests,
        }
    }

    pub fn reconciles(&self) -> u64 {
        self.metrics.reconciles.get()
    }

    pub fn errors(&self) -> u64 {
        metric_sum(&self.metrics.render(), "ferry_reconcile_errors_total")
    }

    /// Waits until no reconcile has run for `calm`, or `limit` has passed; returns whether it got calm.
    pub async fn settle(&self, calm: Duration, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut last = self.reconciles();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.reconciles();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= calm {
                return true;
            }
        }
        false
    }

    pub async fn stop(self) {
        if let Err(error) = self.controller.stop().await {
            say(&format!("the in-process controller: {error}"));
        }
    }
}
