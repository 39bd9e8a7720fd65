//! The report: every figure next to its target. A missed target is reported, never a failure.

use std::io::Write;

use crate::cold_start::ColdFigures;
use crate::plain::PlainFigures;
use crate::quiet::QuietFigures;
use crate::requests::{describe, describe_counters, is_write, reads, writes, TOUCHED_RESOURCES};
use crate::rollouts::RolloutFigures;
use crate::settings::Settings;

pub const TARGET_P50_MS: f64 = 50.0;
pub const TARGET_P99_MS: f64 = 250.0;
/// Peak RSS at 10,000 ModelDeployments.
pub const TARGET_RSS_MB: f64 = 150.0;
/// Cold converge time over the plain client's.
pub const TARGET_RATIO: f64 = 1.5;

#[derive(Default)]
pub struct Report {
    pub rollouts: Option<RolloutFigures>,
    pub quiet: Option<QuietFigures>,
    pub cold: Option<ColdFigures>,
    pub plain: Option<PlainFigures>,
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

pub fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values
}

impl Report {
    pub fn print(&self, settings: &Settings) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\n=== Ferry controller benchmark ===");
        let _ = writeln!(
            out,
            "settings: rollouts={} parallel={} replicas={} concurrency={} quiet={}s models={}",
            settings.rollouts,
            settings.parallel,
            settings.replicas,
            settings.concurrency,
            settings.quiet.as_secs(),
            settings.models
        );
        if let Some(r) = &self.rollouts {
            let overhead = sorted(r.measured.iter().map(|m| m.overhead_ms));
            let p50 = percentile(&overhead, 50.0);
            let p99 = percentile(&overhead, 99.0);
            let deployed = sorted(r.measured.iter().map(|m| m.deployed.as_secs_f64() * 1000.0));
            let available = sorted(
                r.measured
                    .iter()
                    .map(|m| m.became_available.as_secs_f64() * 1000.0),
            );
            let _ = writeln!(out, "\n1. Candidate available -> active Service switched ({} rollouts measured, {} failed, {:.0}s)", r.measured.len(), r.failures.len(), r.elapsed.as_secs_f64());
            let _ = writeln!(
                out,
                "   overhead p50 {p50:.1} ms (target <= {TARGET_P50_MS} ms: {})",
                verdict(p50 <= TARGET_P50_MS)
            );
            let _ = writeln!(
                out,
                "   overhead p99 {p99:.1} ms (target <= {TARGET_P99_MS} ms: {})",
                verdict(p99 <= TARGET_P99_MS)
            );
            let _ = writeln!(
                out,
                "   overhead min {:.1} / mean {:.1} / p90 {:.1} / max {:.1} ms",
                overhead.first().copied().unwrap_or(f64::NAN),
                overhead.iter().sum::<f64>() / overhead.len().max(1) as f64,
                percentile(&overhead, 90.0),
                overhead.last().copied().unwrap_or(f64::NAN)
            );
            let _ = writeln!(
                out,
                "   context: version bump -> new Deployment seen p50 {:.1} ms, p99 {:.1} ms; pods marked Ready -> Deployment available (kube-controller-manager) p50 {:.1} ms, p99 {:.1} ms",
                percentile(&deployed, 50.0),
                percentile(&deployed, 99.0),
                percentile(&available, 50.0),
                percentile(&available, 99.0)
            );
            let (count, sum) = r.controller_histogram;
            let _ = writeln!(
                out,
                "   the controller's own ferry_promotion_latency_seconds: {count} observations, mean {:.1} ms",
                if count > 0 { sum * 1000.0 / count as f64 } else { f64::NAN }
            );
            let _ = writeln!(
                out,
                "   controller: {} reconciles ({:.1} per rollout, mean {:.1} ms), {} reconcile errors, {} cache catch-up timeouts; requests: {} writes, {} reads",
                r.reconciles,
                r.reconciles as f64 / r.measured.len().max(1) as f64,
                r.mean_reconcile_ms,
                r.errors,
                r.catch_up_timeouts,
                writes(&r.requests),
                reads(&r.requests)
            );
            let _ = writeln!(out, "   writes: {}", describe(&r.requests, is_write));
            let latencies: Vec<String> = r
                .latencies
                .iter()
                .map(|((verb, resource), values)| {
                    let values = sorted(values.iter().copied());
                    format!(
                        "{verb} {resource} {:.1}/{:.1}",
                        percentile(&values, 50.0),
                        percentile(&values, 99.0)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "   controller request latency to response headers, p50/p99 ms: {}",
                latencies.join(", ")
            );
            let _ = writeln!(
                out,
                "   machine load average (1 min): {} at the start, {} at the end",
                r.load.0, r.load.1
            );
            if !r.switched_before_available.is_empty() {
                let _ = writeln!(
                    out,
                    "   switches seen before the Deployment was seen available: {}",
                    r.switched_before_available.join(", ")
                );
            }
            for failure in r.failures.iter().take(10) {
                let _ = writeln!(out, "   failed: {failure}");
            }
        }
        if self.cold.is_some() || self.plain.is_some() {
            print_scale(&mut out, settings, self.cold.as_ref(), self.plain.as_ref());
        }
        if let Some(q) = &self.quiet {
            let minutes = q.window.as_secs_f64() / 60.0;
            let total = writes(&q.requests);
            let per_minute = total as f64 / minutes;
            let _ = writeln!(
                out,
                "\n3. API writes with nothing changing ({:.0}s window{})",
                q.window.as_secs_f64(),
                if q.settled {
                    ""
                } else {
                    "; the controller had not settled before it"
                }
            );
            let _ = writeln!(
                out,
                "   controller writes {total} ({per_minute:.1} per minute; target 0: {}); reads {}; reconciles {}",
                verdict(total == 0),
                reads(&q.requests),
                q.reconciles
            );
            let _ = writeln!(out, "   requests: {}", describe(&q.requests, |_| true));
            let _ = writeln!(
                out,
                "   cross-check: objects whose resourceVersion changed: {}; new Events: {}",
                if q.changed_objects.is_empty() {
                    "none".to_owned()
                } else {
                    q.changed_objects.join(", ")
                },
                q.new_events
            );
            let _ = writeln!(
                out,
                "   cross-check: apiserver_request_total writes to {} (any client): {}",
                TOUCHED_RESOURCES.join("/"),
                describe_counters(&q.apiserver_writes)
            );
            let touch_writes = writes(&q.touch_requests);
            let _ = writeln!(
                out,
                "   no-op reconciles (an annotation touched on {} ModelDeployments): {} reconciles, {touch_writes} writes (target 0: {}): {}",
                q.touched,
                q.touch_reconciles,
                verdict(touch_writes == 0),
                describe(&q.touch_requests, is_write)
            );
        }
        let _ = writeln!(out);
    }
}

fn print_scale(
    out: &mut impl Write,
    settings: &Settings,
    cold: Option<&ColdFigures>,
    plain: Option<&PlainFigures>,
) {
    let mb = |kb: Option<u64>| kb.map_or(f64::NAN, |kb| kb as f64 / 1024.0);
    let fmt = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
    let _ = writeln!(
        out,
        "\n2. Cold start of {} ModelDeployments (concurrency {})",
        settings.models, settings.concurrency
    );
    if let Some(c) = cold {
        let _ = writeln!(
            out,
            "   created in {:.1}s with no controller running",
            c.created_in.as_secs_f64()
        );
        match c.converged_in {
            Some(took) => {
                let _ = writeln!(
                    out,
                    "   controller: converged (every one with a Deployment and status.observedGeneration) in {:.1}s after `ferry run` started",
                    took.as_secs_f64()
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "   controller: did NOT converge within {}s: {} with a Deployment, {} with status",
                    settings.cold_timeout.as_secs(),
                    c.with_deployment,
                    c.with_status
                );
            }
        }
    }
    if let Some(p) = plain {
        let converged = p.converged_in.map_or("did NOT converge".to_owned(), |t| {
            format!("{:.1}s", t.as_secs_f64())
        });
        let _ = writeln!(
            out,
            "   plain client (same objects, server-side apply, same concurrency; {} others created in {:.1}s): converged in {converged}, last write after {:.1}s; {} writes, {} failed{} (load {} -> {})",
            settings.models,
            p.created_in.as_secs_f64(),
            p.written_in.as_secs_f64(),
            p.writes,
            p.failures,
            p.first_failure
                .as_ref()
                .map_or(String::new(), |f| format!(", first: {f}")),
            p.load.0,
            p.load.1
        );
    }
    if let (Some(controller), Some(floor)) = (
        cold.and_then(|c| c.converged_in),
        plain.and_then(|p| p.converged_in),
    ) {
        let ratio = controller.as_secs_f64() / floor.as_secs_f64();
        let _ = writeln!(
            out,
            "   controller / plain client = {ratio:.2} (target <= {TARGET_RATIO}: {})",
            verdict(ratio <= TARGET_RATIO)
        );
    }
    let Some(c) = cold else {
        return;
    };
    let peak = mb(c.hwm_end_kb.or(c.hwm_at_convergence_kb));
    let _ = writeln!(
        out,
        "   peak RSS (VmHWM) {:.1} MB at convergence, {peak:.1} MB at the end (target <= {TARGET_RSS_MB} MB at 10,000: {}); RSS then {:.1} MB",
        mb(c.hwm_at_convergence_kb),
        verdict(peak <= TARGET_RSS_MB),
        mb(c.rss_end_kb)
    );
    if let Some((pods, took)) = c.pods_after {
        let _ = writeln!(
            out,
            "   the Kubernetes controllers had made {pods}/{} pods {:.0}s after convergence",
            settings.models,
            took.as_secs_f64()
        );
    }
    if let Some(idle) = &c.idle {
        let per_minute = idle.writes as f64 * 60.0 / idle.window.as_secs_f64();
        let _ = writeln!(
                out,
                "   idle: {} writes in {:.0}s ({per_minute:.1} per minute; target 0: {}), {} reconciles; {}; load {}",
                idle.writes,
                idle.window.as_secs_f64(),
                verdict(idle.writes == 0),
                idle.reconciles,
                match c.quiet_after {
                    Some(t) => format!("quiet {:.0}s after the pods", t.as_secs_f64()),
                    None => format!(
                        "NOT quiet within {}s of the pods",
                        settings.cold_settle.as_secs()
                    ),
                },
                idle.load
            );
        let _ = writeln!(
            out,
            "   cross-check: apiserver_request_total writes in the idle window (any client): {}",
            describe_counters(&idle.apiserver_writes)
        );
    }
    let _ = writeln!(
        out,
        "   controller: {} writes and {} reconciles at convergence, {} reconciles at the end (mean {:.1} ms); reconcile errors {}; cache catch-up timeouts {}; \"reconcile failed\" log lines {} (log: {})",
        fmt(c.writes_at_convergence),
        fmt(c.reconciles_at_convergence),
        fmt(c.reconciles_end),
        c.mean_reconcile_ms.unwrap_or(f64::NAN),
        fmt(c.errors_end),
        fmt(c.catch_up_timeouts_end),
        c.failed_lines,
        c.log.display()
    );
    let _ = writeln!(
        out,
        "   apiserver requests until convergence (any client, kube-controller-manager included): {}",
        describe_counters(&c.apiserver_requests)
    );
    let _ = writeln!(
        out,
        "   machine load average (1 min): {} at the start, {} at the end",
        c.load.0, c.load.1
    );
}
