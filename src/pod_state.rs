//! What the controller knows of the model inside each serving pod, from reading its ferry-server's `/status`.
//!
//! The reads themselves happen beside the watches (`controller::pod_reader`), never inside a reconcile; this
//! module is the pure part: what an answer means ([`PodPhase`], SHA-256, bytes), when a load made progress, and
//! which changes are worth a reconcile (a phase, a step of 5 percent, a SHA-256, reachability).
//!
//! Progress is a high-water mark per pod: a later phase than any before, or more bytes than any before. A pod
//! that crash-loops and downloads the same bytes again does not move its mark, so it is not progress.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use crate::api::LoadedState;
use crate::api::{ModelInfo, ModelSignature, PodPhase, TensorSignature, ValidationResult};
use crate::observed::units::{human_bytes, step, stepped};
use crate::observed::{LoadedVersion, ReportedModel, Staging, Switch};
use crate::server_contract::{self, LoadFailure, LoadPhase, ServerStatus, VersionState};

/// What one read of a pod's `/status` gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Read {
    /// The server answered.
    Answered(Answer),
    /// The request failed or timed out: the pod may be fine and the network not (never a load failure).
    Unreachable(String),
}

/// The parts of a server's `/status` the controller uses.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Answer {
    pub phase: PodPhase,
    /// SHA-256 of the file that serves, else of the one being loaded once it is known.
    pub sha256: Option<String>,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    /// The latest load's failure: its `Reason` and message.
    pub failure: Option<LoadFailure>,
    /// Signature, golden-set result and file metadata, once the server reports any of them.
    pub model: Option<Arc<ReportedModel>>,
    /// The object the serving file was downloaded from, as a token, when the store identified it.
    pub serving_object: Option<String>,
    /// The object the latest scheduled check found at the URI, as a token, when it is not the one that serves
    /// (`source.changed`, spec.model.refresh).
    pub new_object: Option<String>,
    /// The latest scheduled check found the serving object itself at the URI.
    pub object_unchanged: bool,
    /// What the strategy InPlace drives: the loaded versions, a stage, the latest switch (boxed: most of the
    /// time a pod holds one version and this is read rarely).
    pub in_place: Box<InPlaceReport>,
}

/// The model versions a pod holds and what the controller asked of it (strategy InPlace).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct InPlaceReport {
    pub versions: Vec<LoadedVersion>,
    /// The latest load beside the serving version, while it runs, once staged, or failed.
    pub staging: Option<Staging>,
    pub last_switch: Option<Switch>,
    /// The public id of the admin credential the server holds, which the controller derives the credential
    /// from.
    pub credential_id: Option<String>,
}

impl InPlaceReport {
    /// What a reconcile shows of it, as a digest: a change is worth a reconcile.
    fn visible_digest(&self) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        for v in &self.versions {
            (&v.version, v.state as u8).hash(&mut hasher);
        }
        if let Some(s) = &self.staging {
            let step = s
                .phase
                .is_loading()
                .then(|| step(s.bytes_done, s.bytes_total))
                .flatten();
            (&s.version, s.phase as u8, step, &s.failure).hash(&mut hasher);
        }
        if let Some(switch) = &self.last_switch {
            (&switch.to, switch.at.as_millisecond()).hash(&mut hasher);
        }
        hasher.finish()
    }

    fn from_status(status: &ServerStatus) -> InPlaceReport {
        let versions = status
            .versions
            .iter()
            .take(MAX_LISTED)
            .map(|v| LoadedVersion {
                version: bounded(&v.version, MAX_TEXT),
                state: match v.state {
                    VersionState::Serving => LoadedState::Serving,
                    VersionState::Staged => LoadedState::Staged,
                    VersionState::Previous => LoadedState::Previous,
                },
                sha256: bounded(&v.sha256, 64),
                uri: bounded(&v.uri, MAX_URI),
            })
            .collect();
        let serving = status.serving.as_ref().map(|s| s.version.as_str());
        let staging = status
            .load
            .as_ref()
            .filter(|l| l.stage && Some(l.version.as_str()) != serving)
            .map(|l| Staging {
                version: bounded(&l.version, MAX_TEXT),
                phase: pod_phase(l.phase),
                bytes_done: l.bytes_done,
                bytes_total: l.bytes_total,
                failure: l.reason.map(|reason| {
                    LoadFailure::new(
                        reason,
                        bounded(l.message.as_deref().unwrap_or_default(), 512),
                    )
                }),
                model: reported_model_of(
                    l.validation.as_ref(),
                    l.signature.as_ref(),
                    l.model_metadata.as_ref(),
                )
                .map(Arc::new),
                failed_at: None,
            });
        let last_switch = status.last_switch.as_ref().and_then(|s| {
            Some(Switch {
                from: s.from.as_deref().map(|f| bounded(f, MAX_TEXT)),
                to: bounded(&s.to, MAX_TEXT),
                at: s.at.parse().ok()?,
            })
        });
        InPlaceReport {
            versions,
            staging,
            last_switch,
            credential_id: status
                .admin
                .credential_id
                .as_deref()
                .map(|id| bounded(id, 64)),
        }
    }
}

/// A load phase as a pod phase: `ready` is a load that finished.
fn pod_phase(phase: LoadPhase) -> PodPhase {
    match phase {
        LoadPhase::Downloading => PodPhase::Downloading,
        LoadPhase::Verifying => PodPhase::Verifying,
        LoadPhase::Loading => PodPhase::Loading,
        LoadPhase::Warming => PodPhase::Warming,
        LoadPhase::Validating => PodPhase::Validating,
        LoadPhase::Ready => PodPhase::Ready,
        LoadPhase::Failed => PodPhase::Failed,
    }
}

/// An object token as a pod reports it: bounded, and only for an object the store identified.
fn object_token(identity: Option<&ferry_contract::ObjectIdentity>) -> Option<String> {
    identity
        .filter(|i| i.is_identified())
        .map(|i| bounded(&i.token(), MAX_OBJECT_TOKEN))
}

/// Object tokens are cut to this many characters (an ETag or a version id is far shorter).
const MAX_OBJECT_TOKEN: usize = 512;

/// At most this many inputs, outputs, opsets and metadata entries of a pod's report enter the status.
const MAX_LISTED: usize = 32;
/// Names and values from a pod are cut to this many characters.
const MAX_TEXT: usize = 256;
/// A model URI is cut to this many characters (the API server's limit on a URI stored in a status is far above
/// any real one; this only bounds what a misbehaving server can make the controller hold).
const MAX_URI: usize = 4096;

fn bounded(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The model a status reports, bounded like everything a pod sends.
fn reported_model(status: &ServerStatus) -> Option<ReportedModel> {
    let load = status.load.as_ref();
    reported_model_of(
        status
            .validation
            .as_ref()
            .or_else(|| load.and_then(|l| l.validation.as_ref())),
        status
            .signature
            .as_ref()
            .or_else(|| load.and_then(|l| l.signature.as_ref())),
        status
            .model_metadata
            .as_ref()
            .or_else(|| load.and_then(|l| l.model_metadata.as_ref())),
    )
}

fn reported_model_of(
    validation: Option<&server_contract::ValidationView>,
    signature: Option<&server_contract::Signature>,
    model_metadata: Option<&server_contract::ModelMetadataView>,
) -> Option<ReportedModel> {
    let validation = validation.map(|v| ValidationResult {
        cases: v.cases as i64,
        passed: v.passed as i64,
        max_error: v.max_error.filter(|e| e.is_finite()),
        worst: v.worst.as_deref().map(|w| bounded(w, 512)),
        seconds: Some(v.seconds).filter(|s| s.is_finite()),
    });
    let tensors = |list: &[server_contract::TensorSpec]| {
        list.iter()
            .take(MAX_LISTED)
            .map(|t| TensorSignature {
                name: bounded(&t.name, MAX_TEXT),
                datatype: bounded(&t.datatype, 16),
                shape: t.shape.iter().take(16).copied().collect(),
            })
            .collect()
    };
    let signature = signature.map(|s| ModelSignature {
        inputs: tensors(&s.inputs),
        outputs: tensors(&s.outputs),
    });
    let model_info = model_metadata.map(|m| {
        let producer = [m.producer_name.as_str(), m.producer_version.as_str()]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        ModelInfo {
            producer: (!producer.is_empty()).then(|| bounded(&producer, MAX_TEXT)),
            ir_version: Some(m.ir_version).filter(|v| *v > 0),
            opsets: m
                .opsets
                .iter()
                .take(MAX_LISTED)
                .map(|(domain, version)| (bounded(domain, MAX_TEXT), *version))
                .collect(),
            metadata: m
                .metadata_props
                .iter()
                .take(16)
                .map(|(k, v)| (bounded(k, MAX_TEXT), bounded(v, MAX_TEXT)))
                .collect::<BTreeMap<_, _>>(),
        }
    });
    (validation.is_some() || signature.is_some() || model_info.is_some()).then_some(ReportedModel {
        signature,
        validation,
        model_info,
    })
}

impl Answer {
    pub fn from_status(status: &ServerStatus) -> Answer {
        // The latest load (a first load, or later a hot swap) says where loading stands; what serves says the
        // rest. A failed hot swap leaves the pod ready, serving the version it had.
        let load = status.load.as_ref();
        let phase = match (status.ready, status.phase) {
            (true, _) => PodPhase::Ready,
            (false, LoadPhase::Ready) => PodPhase::Warming,
            (false, phase) => pod_phase(phase),
        };
        // What a pod says goes into the status: bounded, whatever the pod sends.
        let failure = status.reason.map(|reason| {
            LoadFailure::new(
                reason,
                bounded(status.message.as_deref().unwrap_or_default(), 512),
            )
        });
        Answer {
            phase,
            sha256: status
                .serving
                .as_ref()
                .map(|s| s.sha256.as_str())
                .or(status.sha256.as_deref())
                .or_else(|| load.and_then(|l| l.sha256.as_deref()))
                .map(|sha| bounded(sha, 64)),
            bytes_done: status.bytes_done,
            bytes_total: status.bytes_total,
            failure,
            model: reported_model(status).map(Arc::new),
            serving_object: object_token(status.serving.as_ref().and_then(|s| s.identity.as_ref())),
            new_object: status
                .source
                .as_ref()
                .filter(|source| source.changed)
                .and_then(|source| object_token(source.identity.as_ref())),
            object_unchanged: status.source.as_ref().is_some_and(|source| {
                !source.changed && object_token(source.identity.as_ref()).is_some()
            }),
            in_place: Box::new(InPlaceReport::from_status(status)),
        }
    }
}

/// Everything known about one pod's model.
#[derive(Clone, Debug, PartialEq)]
pub struct PodReport {
    /// The pod's UID: a pod re-created under the same name starts a new report.
    pub uid: String,
    /// The latest read; `None` until the server was first asked (no IP yet, container not running).
    pub read: Option<Read>,
    /// The highest phase and byte count this pod has reached.
    high_water: (PodPhase, u64),
    /// When the pod last made progress (created, a later phase, more bytes); None while unknown: a pod that
    /// was there before this process started has made none that this process saw.
    pub last_progress_at: Option<Timestamp>,
    /// When it last made progress that the status shows (a phase, a step of 5 percent): what is written, and
    /// what a restarted controller counts the deadline from.
    pub last_shown_progress_at: Option<Timestamp>,
    /// Created before this process started: its first read sets the high-water mark without being progress.
    preexisting: bool,
    /// Reads taken.
    reads: u32,
    /// When the pod's load was first seen running.
    pub load_started_at: Option<Timestamp>,
    /// What the last reconcile trigger was about, to trigger again only on a visible change.
    visible: Visible,
    /// The furthest a stage (strategy InPlace) has come: its version, phase and bytes.
    staging_high_water: Option<(String, PodPhase, u64)>,
    /// The version of a failed stage and when this process first saw it failed.
    staging_failed: Option<(String, Timestamp)>,
    /// The size of the latest stage's model file, kept across a restart of the server (one killed while staging
    /// reports nothing of it afterwards).
    staged_size: Option<(String, u64)>,
}

/// What a reconcile shows of a pod: a change here is worth one.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct Visible {
    phase: PodPhase,
    sha256: Option<String>,
    step: Option<u64>,
    failure: Option<LoadFailure>,
    /// A new object at the URI (spec.model.refresh) is worth a reconcile the moment a pod reports it.
    new_object: Option<String>,
    object_unchanged: bool,
    serving_object: Option<String>,
    /// A digest of the loaded versions and their states, a stage's version, phase, step and failure, and the
    /// latest switch (kept small: one per pod).
    in_place: u64,
}

impl PodReport {
    /// A pod seen for the first time. Created since this process started, its creation is progress; created
    /// before (`preexisting`), what it did until now is unknown, and its first read is only a baseline.
    pub fn new(uid: String, now: Timestamp, preexisting: bool) -> PodReport {
        PodReport {
            uid,
            read: None,
            high_water: (PodPhase::Starting, 0),
            last_progress_at: (!preexisting).then_some(now),
            last_shown_progress_at: None,
            load_started_at: None,
            visible: Visible::default(),
            preexisting,
            reads: 0,
            staging_high_water: None,
            staging_failed: None,
            staged_size: None,
        }
    }

    /// The version of the latest stage this process saw and its model file's size.
    pub fn staged_size(&self) -> Option<(String, u64)> {
        self.staged_size.clone()
    }

    /// When this process first saw the pod's latest stage failed.
    pub fn staging_failed_at(&self) -> Option<Timestamp> {
        self.staging_failed.as_ref().map(|(_, at)| *at)
    }

    /// A pod from before this process whose progress is not known yet: it needs a second read.
    pub fn progress_unknown(&self) -> bool {
        self.preexisting && self.reads < 2 && self.last_progress_at.is_none()
    }

    pub fn phase(&self) -> PodPhase {
        match &self.read {
            None => PodPhase::Starting,
            Some(Read::Unreachable(_)) => PodPhase::Unreachable,
            Some(Read::Answered(answer)) => answer.phase,
        }
    }

    /// Whether the pod serves and nothing is moving (no stage running): it is read on the slow period.
    pub fn settled(&self) -> bool {
        matches!(&self.read, Some(Read::Answered(a))
            if (a.phase == PodPhase::Ready || a.phase == PodPhase::Failed)
                && a.in_place.staging.as_ref().is_none_or(|s| !s.phase.is_loading()))
    }

    /// Takes a new read; returns whether a reconcile should look (a visible change).
    pub fn update(&mut self, read: Read, now: Timestamp) -> bool {
        let mut progress = false;
        if let Read::Answered(answer) = &read {
            let baseline = self.preexisting && self.reads == 0;
            self.reads += 1;
            let (phase, bytes) = self.high_water;
            if answer.phase != PodPhase::Failed
                && (answer.phase > phase || answer.bytes_done > bytes)
            {
                self.high_water = (answer.phase.max(phase), answer.bytes_done.max(bytes));
                if !baseline {
                    self.last_progress_at = Some(now);
                    progress = true;
                }
            }
            if answer.phase.is_loading() && self.load_started_at.is_none() {
                self.load_started_at = Some(now);
            }
            if let Some(s) = answer.in_place.staging.as_ref() {
                if let Some(total) = s.bytes_total {
                    self.staged_size = Some((s.version.clone(), total));
                }
            }
            self.staging_failed = match answer.in_place.staging.as_ref() {
                Some(s) if s.phase == PodPhase::Failed => match self.staging_failed.take() {
                    Some((version, at)) if version == s.version => Some((version, at)),
                    _ => Some((s.version.clone(), now)),
                },
                _ => None,
            };
            // A stage moves like a first load: a new version, a later phase or more bytes.
            if let Some(staging) = answer.in_place.staging.as_ref() {
                let moved = match &self.staging_high_water {
                    Some((version, phase, bytes)) if *version == staging.version => {
                        staging.phase != PodPhase::Failed
                            && (staging.phase > *phase || staging.bytes_done > *bytes)
                    }
                    _ => staging.phase != PodPhase::Failed,
                };
                if moved {
                    let (phase, bytes) = match &self.staging_high_water {
                        Some((version, phase, bytes)) if *version == staging.version => {
                            (*phase.max(&staging.phase), (*bytes).max(staging.bytes_done))
                        }
                        _ => (staging.phase, staging.bytes_done),
                    };
                    self.staging_high_water = Some((staging.version.clone(), phase, bytes));
                    if !baseline {
                        self.last_progress_at = Some(now);
                        progress = true;
                    }
                }
            }
        }
        self.read = Some(read);
        let visible = self.visible();
        let changed = visible != self.visible;
        self.visible = visible;
        if changed && progress {
            self.last_shown_progress_at = Some(now);
        }
        changed
    }

    fn visible(&self) -> Visible {
        match &self.read {
            Some(Read::Answered(answer)) => Visible {
                phase: answer.phase,
                sha256: answer.sha256.clone(),
                step: answer
                    .phase
                    .is_loading()
                    .then(|| step(answer.bytes_done, answer.bytes_total))
                    .flatten(),
                failure: answer.failure.clone(),
                new_object: answer.new_object.clone(),
                object_unchanged: answer.object_unchanged,
                serving_object: answer.serving_object.clone(),
                in_place: answer.in_place.visible_digest(),
            },
            _ => Visible {
                phase: self.phase(),
                ..Visible::default()
            },
        }
    }

    /// `bytes_done` rounded down to its step, as it is shown.
    pub fn shown_bytes(&self) -> Option<(u64, Option<u64>)> {
        match &self.read {
            Some(Read::Answered(a)) if a.phase.is_loading() => {
                Some((stepped(a.bytes_done, a.bytes_total), a.bytes_total))
            }
            _ => None,
        }
    }

    /// "downloading at 1.2 GiB of 20.0 GiB": where the load stands, for a stall message.
    pub fn describe(&self) -> String {
        match &self.read {
            None => "not started (no server answering yet)".into(),
            Some(Read::Unreachable(error)) => format!("unreachable ({error})"),
            Some(Read::Answered(a)) => {
                let phase = format!("{:?}", a.phase).to_lowercase();
                match a.bytes_total {
                    Some(total) => format!(
                        "{phase} at {} of {}",
                        human_bytes(a.bytes_done),
                        human_bytes(total)
                    ),
                    None => format!("{phase} at {}", human_bytes(a.bytes_done)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::units::percent;
    use crate::server_contract::FailureReason;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn downloading(done: u64, total: u64) -> Read {
        Read::Answered(Answer {
            phase: PodPhase::Downloading,
            sha256: None,
            bytes_done: done,
            bytes_total: Some(total),
            failure: None,
            model: None,
            serving_object: None,
            new_object: None,
            object_unchanged: false,
            in_place: Default::default(),
        })
    }

    fn phase(phase: PodPhase) -> Read {
        Read::Answered(Answer {
            phase,
            sha256: None,
            bytes_done: 1000,
            bytes_total: Some(1000),
            failure: None,
            model: None,
            serving_object: None,
            new_object: None,
            object_unchanged: false,
            in_place: Default::default(),
        })
    }

    #[test]
    fn a_new_object_at_the_uri_is_a_visible_change_and_its_token_is_bounded() {
        let mut pod = PodReport::new("u".into(), at(0), false);
        let serving = |new_object: Option<String>| match phase(PodPhase::Ready) {
            Read::Answered(answer) => Read::Answered(Answer {
                serving_object: Some("etag:\"1\"".into()),
                new_object,
                ..answer
            }),
            unreachable => unreachable,
        };
        assert!(pod.update(serving(None), at(1)));
        assert!(!pod.update(serving(None), at(31)), "nothing new");
        assert!(pod.update(serving(Some("etag:\"2\"".into())), at(61)));
        assert!(!pod.update(serving(Some("etag:\"2\"".into())), at(91)));

        let mut status: ServerStatus = serde_json::from_value(serde_json::json!({
            "model": "m", "phase": "ready", "ready": true, "shutting_down": false,
            "version": "1", "sha256": "ab", "bytes_done": 10, "bytes_total": 10,
            "reason": null, "message": null, "operator": null,
            "serving": {"version": "1", "uri": "s3://b/m.onnx", "sha256": "ab", "bytes": 10,
                        "platform": "onnxruntime_onnx", "identity": {"etag": "\"1\"", "size": 10}},
            "load": null, "capabilities": {}, "admin": {"mode": "token"},
            "source": {"identity": {"etag": "\"2\""}, "changed": false}
        }))
        .expect("a server status");
        let answer = Answer::from_status(&status);
        assert_eq!(answer.serving_object.as_deref(), Some("etag:\"1\""));
        assert_eq!(answer.new_object, None, "not changed: nothing new");
        assert!(answer.object_unchanged, "the serving object is at the URI");
        let source = status.source.as_mut().expect("a source");
        source.changed = true;
        source.identity.as_mut().expect("an identity").etag = Some("x".repeat(2000));
        let answer = Answer::from_status(&status);
        assert!(!answer.object_unchanged);
        assert_eq!(
            answer.new_object.map(|t| t.len()),
            Some(MAX_OBJECT_TOKEN),
            "bounded like the rest of what a pod sends"
        );
        // A check that found nothing that identifies the object reports no object.
        let source = status.source.as_mut().expect("a source");
        source.identity = Some(Default::default());
        let answer = Answer::from_status(&status);
        assert_eq!(answer.new_object, None);
        assert!(
            !answer.object_unchanged,
            "nothing is known of the object at the URI"
        );
    }

    #[test]
    fn a_failed_load_and_a_failed_stage_keep_the_servers_reason_and_a_bounded_message() {
        let status: ServerStatus = serde_json::from_value(serde_json::json!({
            "model": "m", "phase": "ready", "ready": true, "shutting_down": false,
            "version": "1", "sha256": "ab", "bytes_done": 10, "bytes_total": 10,
            "reason": "ChecksumMismatch", "message": "x".repeat(2000), "operator": null,
            "serving": {"version": "1", "uri": "s3://b/m.onnx", "sha256": "ab", "bytes": 10,
                        "platform": "onnxruntime_onnx"},
            "load": {"version": "2", "stage": true, "uri": "s3://b/2.onnx", "phase": "failed",
                     "bytes_done": 5, "bytes_total": 5, "sha256": null, "reason": "ValidationFailed",
                     "message": "7 of 10 cases passed", "operator": null, "timings": {}},
            "capabilities": {}, "admin": {"mode": "token"}
        }))
        .expect("a server status");
        let answer = Answer::from_status(&status);
        let failure = answer.failure.expect("the latest load's failure");
        assert_eq!(
            failure.reason,
            FailureReason::Server(server_contract::Reason::ChecksumMismatch)
        );
        assert_eq!(failure.message.len(), 512, "bounded like the rest");
        let stage = answer.in_place.staging.expect("the failed stage");
        assert_eq!(
            stage.failure,
            Some(LoadFailure::new(
                server_contract::Reason::ValidationFailed,
                "7 of 10 cases passed"
            ))
        );
    }

    #[test]
    fn bytes_and_phases_are_progress_and_a_step_of_five_percent_is_visible() {
        let mut pod = PodReport::new("u".into(), at(0), false);
        assert!(
            pod.update(downloading(0, 1000), at(1)),
            "starting -> downloading"
        );
        assert_eq!(pod.last_progress_at, Some(at(1)), "a phase step");
        assert_eq!(pod.load_started_at, Some(at(1)));
        assert!(!pod.update(downloading(30, 1000), at(2)), "3%: same step");
        assert_eq!(pod.last_progress_at, Some(at(2)), "but it is progress");
        assert_eq!(
            pod.last_shown_progress_at,
            Some(at(1)),
            "not a step the status shows"
        );
        assert!(pod.update(downloading(55, 1000), at(3)), "5%: a new step");
        assert_eq!(pod.shown_bytes(), Some((50, Some(1000))));
        assert!(pod.update(phase(PodPhase::Loading), at(4)));
        assert_eq!(pod.last_progress_at, Some(at(4)));
        assert!(pod.update(phase(PodPhase::Ready), at(5)));
        assert!(pod.settled());
        assert_eq!(pod.shown_bytes(), None);
    }

    #[test]
    fn a_crash_loop_that_downloads_the_same_bytes_again_is_not_progress() {
        let mut pod = PodReport::new("u".into(), at(0), false);
        pod.update(downloading(600, 1000), at(10));
        pod.update(phase(PodPhase::Loading), at(20));
        pod.update(Read::Unreachable("connection refused".into()), at(30));
        pod.update(downloading(100, 1000), at(40));
        pod.update(downloading(900, 1000), at(50));
        assert_eq!(pod.last_progress_at, Some(at(20)));
        assert_eq!(pod.phase(), PodPhase::Downloading);
    }

    #[test]
    fn a_pod_from_before_a_restart_needs_a_second_read_to_make_progress() {
        let mut pod = PodReport::new("u".into(), at(100), true);
        assert_eq!(pod.last_progress_at, None);
        assert!(pod.progress_unknown());
        pod.update(downloading(300, 1000), at(101));
        assert_eq!(pod.last_progress_at, None, "the first read is a baseline");
        assert!(pod.progress_unknown());
        pod.update(downloading(300, 1000), at(103));
        assert!(!pod.progress_unknown(), "two reads: it is not moving");
        assert_eq!(pod.last_progress_at, None);
        pod.update(downloading(310, 1000), at(105));
        assert_eq!(pod.last_progress_at, Some(at(105)), "now it moves");
    }

    #[test]
    fn an_unreachable_pod_is_visible_as_such_and_never_as_failed() {
        let mut pod = PodReport::new("u".into(), at(0), false);
        pod.update(phase(PodPhase::Ready), at(1));
        assert!(pod.update(Read::Unreachable("timed out".into()), at(2)));
        assert_eq!(pod.phase(), PodPhase::Unreachable);
        assert!(!pod.settled(), "read on the fast period until it answers");
        assert!(
            !pod.update(Read::Unreachable("timed out".into()), at(3)),
            "still unreachable: nothing new"
        );
    }

    #[test]
    fn steps_and_sizes_read_as_users_expect() {
        assert_eq!(percent(0, Some(100)), Some(0));
        assert_eq!(percent(49, Some(100)), Some(45));
        assert_eq!(percent(100, Some(100)), Some(100));
        assert_eq!(percent(5, None), None);
        assert_eq!(percent(5, Some(0)), None);
        assert_eq!(
            stepped(21_474_836_480 / 3, Some(21_474_836_480)),
            6_442_450_944
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(21_474_836_480), "20.0 GiB");
    }
}
