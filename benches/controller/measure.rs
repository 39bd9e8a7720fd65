//! Figures read off the controller: its Prometheus metrics, the process's memory, the machine's load.

use std::sync::Arc;

use crate::support::FerryRun;

/// Sum of the samples of a metric in Prometheus/OpenMetrics text.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn metric_sum(text: &str, name: &str) -> u64 {
    metric_value(text, name) as u64
}

/// Mean reconcile duration in milliseconds, from the controller's histogram.
pub fn mean_reconcile_ms(text: &str) -> f64 {
    let count = metric_value(text, "ferry_reconcile_duration_seconds_count");
    metric_value(text, "ferry_reconcile_duration_seconds_sum") * 1000.0 / count.max(1.0)
}

/// The 1-minute load average: how busy the machine was (the control plane shares it).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// A field of /proc/PID/status in kB (VmHWM, VmRSS).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The body of `ferry run`'s /metrics.
pub async fn scrape(process: &Arc<FerryRun>) -> Option<String> {
    let process = process.clone();
    tokio::task::spawn_blocking(move || {
        let response = process.http_get("/metrics").ok()?;
        Some(response.split_once("\r\n\r\n")?.1.to_owned())
    })
    .await
    .ok()?
}
