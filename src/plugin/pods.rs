//! The per-pod table of `kubectl ferry status`: revision, version, short SHA-256, phase, and for a load in
//! flight a progress bar with bytes, rate and the estimated time left.

use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;

use crate::api::{ModelDeploymentStatus, PodPhase, PodState, RevisionStatus};
use crate::observed::units::human_bytes;

/// Width of the progress bar, in characters.
const BAR: usize = 20;

/// Every pod the status lists, by role: active, candidate, previous.
pub fn render_pods(status: &ModelDeploymentStatus, now: Timestamp) -> String {
    let revisions: Vec<(&str, &RevisionStatus)> = status
        .active
        .as_deref()
        .map(|r| ("active", r))
        .into_iter()
        .chain(status.candidate.as_deref().map(|r| ("candidate", r)))
        .chain(status.previous.iter().map(|r| ("previous", r)))
        .collect();
    if revisions.iter().all(|(_, r)| r.pods.is_empty()) {
        return String::new();
    }
    let mut out = String::from(
        "  ROLE       REVISION    VERSION      POD                                 PHASE        SHA256        PROGRESS\n",
    );
    for (role, revision) in revisions {
        for pod in &revision.pods {
            let _ = writeln!(
                out,
                "  {role:<10} {:<11} {:<12} {:<35} {:<12} {:<13} {}",
                revision.revision,
                revision.version,
                pod.name,
                format!("{:?}", pod.phase),
                pod.sha256
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |s| s.chars().take(12).collect()),
                detail(pod, now)
            );
        }
        if let Some(counts) = revision.pod_counts {
            let listed = revision.pods.len() as i32;
            let all = counts.loading + counts.ready + counts.failed + counts.unreachable;
            if all > listed {
                let _ = writeln!(
                    out,
                    "  {role:<10} {:<11} {:<12} ... and {} more pods ({} ready, {} loading, {} failed, {} unreachable in all)",
                    revision.revision,
                    revision.version,
                    all - listed,
                    counts.ready,
                    counts.loading,
                    counts.failed,
                    counts.unreachable
                );
            }
        }
    }
    out
}

/// The last column: a progress bar for a load in flight, the reason for a failed or unreachable pod.
fn detail(pod: &PodState, now: Timestamp) -> String {
    match pod.phase {
        PodPhase::Failed | PodPhase::Unreachable => match (&pod.reason, &pod.message) {
            (Some(reason), Some(message)) if !message.is_empty() => format!("{reason}: {message}"),
            (Some(reason), _) => reason.clone(),
            _ => String::new(),
        },
        phase if phase.is_loading() => match (pod.bytes_done, pod.bytes_total) {
            (Some(done), Some(total)) if total > 0 => {
                let done = done.clamp(0, total) as u64;
                let total = total as u64;
                let filled = (done as usize * BAR) / total as usize;
                let mut line = format!(
                    "[{}{}] {:>3}% {} / {}",
                    "#".repeat(filled),
                    ".".repeat(BAR - filled),
                    done * 100 / total,
                    human_bytes(done),
                    human_bytes(total)
                );
                let elapsed = pod
                    .load_started_at
                    .as_ref()
                    .map(|t| (now.as_millisecond() - t.0.as_millisecond()) as f64 / 1000.0)
                    .filter(|s| *s > 0.0);
                if let Some(seconds) = elapsed.filter(|_| done > 0) {
                    let rate = done as f64 / seconds;
                    let _ = write!(line, "  {}/s", human_bytes(rate as u64));
                    if phase == PodPhase::Downloading {
                        let left = (total - done) as f64 / rate;
                        let _ = write!(line, "  ETA {}", duration(left));
                    }
                }
                line
            }
            (Some(done), None) => {
                format!("{} (size not known yet)", human_bytes(done.max(0) as u64))
            }
            _ => String::new(),
        },
        // InPlace: which versions the pod holds, and which of them serves.
        _ if !pod.versions.is_empty() => {
            let held: Vec<String> = pod
                .versions
                .iter()
                .map(|v| {
                    format!(
                        "{} ({})",
                        v.version,
                        format!("{:?}", v.state).to_lowercase()
                    )
                })
                .collect();
            format!("loaded: {}", held.join(", "))
        }
        _ => String::new(),
    }
}

/// "1h02m", "4m05s", "12s".
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PodCounts;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn a_load_in_flight_shows_a_bar_bytes_rate_and_time_left_and_a_failure_its_reason() {
        let now = Timestamp::from_second(1_000).unwrap();
        let status = ModelDeploymentStatus {
            active: Some(Box::new(RevisionStatus {
                revision: "aaaa".into(),
                version: "1.0.0".into(),
                pods: vec![PodState {
                    name: "iris-aaaa-1".into(),
                    phase: PodPhase::Ready,
                    sha256: Some(
                        "3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
                    ),
                    ..Default::default()
                }],
                pod_counts: Some(PodCounts {
                    ready: 3,
                    ..Default::default()
                }),
                ..Default::default()
            })),
            candidate: Some(Box::new(RevisionStatus {
                revision: "bbbb".into(),
                version: "2.0.0".into(),
                pods: vec![
                    PodState {
                        name: "iris-bbbb-1".into(),
                        phase: PodPhase::Downloading,
                        bytes_done: Some(5 << 30),
                        bytes_total: Some(20 << 30),
                        load_started_at: Some(Time(Timestamp::from_second(900).unwrap())),
                        ..Default::default()
                    },
                    PodState {
                        name: "iris-bbbb-2".into(),
                        phase: PodPhase::Failed,
                        reason: Some("ChecksumMismatch".into()),
                        message: Some("expected 00, got 11".into()),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            })),
            ..Default::default()
        };
        let table = render_pods(&status, now);
        assert!(table.contains("3b0c44298fc1 "), "short SHA-256: {table}");
        assert!(
            table.contains("[#####...............]  25% 5.0 GiB / 20.0 GiB  51.2 MiB/s  ETA 5m00s"),
            "{table}"
        );
        assert!(
            table.contains("ChecksumMismatch: expected 00, got 11"),
            "{table}"
        );
        assert!(table.contains("... and 2 more pods (3 ready"), "{table}");
    }

    #[test]
    fn an_in_place_pod_shows_the_versions_it_holds() {
        let status = ModelDeploymentStatus {
            active: Some(Box::new(RevisionStatus {
                revision: "aaaa".into(),
                version: "1".into(),
                pods: vec![PodState {
                    name: "iris-p-1".into(),
                    phase: PodPhase::Ready,
                    versions: vec![
                        crate::api::PodVersion {
                            version: "1".into(),
                            state: crate::api::LoadedState::Serving,
                        },
                        crate::api::PodVersion {
                            version: "2".into(),
                            state: crate::api::LoadedState::Staged,
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        let table = render_pods(&status, Timestamp::from_second(1_000).unwrap());
        assert!(table.contains("loaded: 1 (serving), 2 (staged)"), "{table}");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration(12.4), "12s");
        assert_eq!(duration(245.0), "4m05s");
        assert_eq!(duration(3720.0), "1h02m");
    }
}
