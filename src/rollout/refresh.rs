//! spec.model.refresh: which object in the store the desired revision is pinned to.
//!
//! ```text
//!   active revision's pods ── source.changed, new token ─┐
//!   status.refresh (object, uri, detectedAt, paused) ────┼──▶ decide() ──▶ object to pin the desired revision to
//!   ferry.dev/refresh-pin (kubectl ferry rollback) ──────┘                 + status.refresh + events
//! ```
//!
//! The serving pods check the URI (one HEAD request per interval each) and report a new object; the controller
//! never reads the store. A new object is recorded in `status.refresh` and the desired revision becomes one pinned
//! to it (`FERRY_MODEL_OBJECT`, so its hash differs from every other object's), which then rolls out through the
//! strategy like any new revision. The state lives in the status only, never in the spec, so GitOps tools see no
//! drift. A refresh does not change the generation, so a pinned revision that was aborted stays aborted until a
//! newer object is detected (a new revision).
//!
//! `kubectl ferry rollback` sets `ferry.dev/refresh-pin` to the revision rolled back to: that revision's object
//! stays desired and refresh is paused (new objects are only noted in the message) until `kubectl ferry resume`
//! removes the annotation.

use k8s_openapi::jiff::Timestamp;

use super::{to_time, ModelIdentity, ObservedRevision, PlannedEvent};
use crate::api::{PodPhase, RefreshPolicy, RefreshStatus};
use crate::conditions::events;

/// The revision `kubectl ferry rollback` pinned.
#[derive(Clone, Copy, Debug)]
pub struct Pin<'a> {
    pub revision: &'a str,
    /// What that revision serves, when its Deployment still exists.
    pub model: Option<&'a ModelIdentity>,
}

/// Why the refresh pin `value` cannot be followed, when it cannot: it names no revision, or one that is gone
/// while the status records no object to stay on (the desired revision would then follow the URI again, which
/// is what the pin is there to stop).
pub fn lost_pin(
    value: &str,
    policy: Option<&RefreshPolicy>,
    revisions: &[ObservedRevision],
    previous: Option<&RefreshStatus>,
) -> Option<String> {
    policy?;
    if !super::is_revision_name(value) {
        return Some(format!(
            "{value:?} is not a revision name (10 hexadecimal digits, as `kubectl ferry rollback` writes)"
        ));
    }
    let gone = !revisions.iter().any(|r| r.revision == value);
    let recorded = previous.is_some_and(|p| p.object.is_some());
    (gone && !recorded).then(|| {
        format!("it names revision {value}, which is gone, and status.refresh records no object to stay on")
    })
}

/// Everything the refresh decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// metadata.name of the ModelDeployment.
    pub name: &'a str,
    pub policy: Option<&'a RefreshPolicy>,
    /// spec.model.uri.
    pub uri: &'a str,
    pub previous: Option<&'a RefreshStatus>,
    pub pin: Option<Pin<'a>>,
    /// What the pods of the active revision found at the URI (see [`detected`]).
    pub detected: Option<AtUri<'a>>,
    /// What the active revision serves.
    pub active: Option<&'a ModelIdentity>,
    pub now: Timestamp,
}

/// What the latest check of the active revision's pods found at the URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtUri<'a> {
    /// Another object than the one they serve: this one.
    New(&'a str),
    /// The object they serve (again: a replacement that was put back).
    Serving,
}

/// The decision: the object the desired revision is pinned to, and what the status and events say of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Refresh {
    pub object: Option<String>,
    pub detected_at: Option<Timestamp>,
    pub status: Option<RefreshStatus>,
    pub events: Vec<PlannedEvent>,
}

/// What the ready pods of the active revision found at the URI, if they checked (the first by pod name: pods
/// that checked at different moments may briefly disagree; the next reads settle it).
pub fn detected<'a>(revisions: &'a [ObservedRevision], active: Option<&str>) -> Option<AtUri<'a>> {
    let active = revisions
        .iter()
        .find(|r| Some(r.revision.as_str()) == active)?;
    let mut pods: Vec<_> = active
        .pods
        .iter()
        .filter(|p| p.phase == PodPhase::Ready)
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    pods.into_iter()
        .find_map(|p| match (&p.new_object, p.object_unchanged) {
            (Some(new), _) => Some(AtUri::New(new)),
            (None, true) => Some(AtUri::Serving),
            (None, false) => None,
        })
}

pub fn decide(input: Input) -> Refresh {
    if input.policy.is_none() {
        return Refresh::default();
    }
    let previous = input.previous.cloned().unwrap_or_default();
    // An object detected at another URI (the spec moved since) is not the one to load.
    let (mut object, mut detected_at) = if previous.uri.as_deref() == Some(input.uri) {
        (
            previous.object.clone(),
            previous.detected_at.as_ref().map(|t| t.0),
        )
    } else {
        (None, None)
    };
    let mut planned = Vec::new();
    let event = |reason, note: String| PlannedEvent {
        warning: false,
        revision: None,
        reason,
        note,
    };
    let status = match input.pin {
        Some(pin) => {
            let mut message = format!(
                "paused by `kubectl ferry rollback` to revision {}; `kubectl ferry resume {}` follows the newest object again",
                pin.revision, input.name
            );
            match pin.model {
                Some(model) => {
                    object = model.object.clone();
                    detected_at = model.detected_at;
                }
                None => message.push_str(&format!(
                    " (revision {} is gone; the recorded object stays)",
                    pin.revision
                )),
            }
            let newer = match input.detected {
                Some(AtUri::New(new)) if Some(new) != object.as_deref() => Some(new),
                _ => None,
            };
            if let Some(newer) = newer {
                message.push_str(&format!(
                    "; a newer object {newer} is at {}, not rolled out while paused",
                    input.uri
                ));
            }
            if !previous.paused {
                planned.push(event(events::REFRESH_PAUSED, message.clone()));
            }
            RefreshStatus {
                uri: object.as_ref().map(|_| input.uri.to_owned()),
                object,
                detected_at: detected_at.map(to_time),
                paused: true,
                message: Some(message),
            }
        }
        None => {
            if previous.paused {
                planned.push(event(
                    events::REFRESH_RESUMED,
                    format!(
                        "refresh resumed: following the newest object at {}",
                        input.uri
                    ),
                ));
            }
            match (input.detected, input.active) {
                (Some(AtUri::New(new)), _) if Some(new) != object.as_deref() => {
                    planned.push(event(
                        events::OBJECT_CHANGED,
                        format!("new object {new} at {}: rolling it out", input.uri),
                    ));
                    object = Some(new.to_owned());
                    detected_at = Some(input.now);
                }
                // The object that serves is at the URI again (a replacement was put back): it is the desired one,
                // and whatever was detected in between is not.
                (Some(AtUri::Serving), Some(active)) if active.object != object => {
                    planned.push(event(
                        events::OBJECT_CHANGED,
                        format!(
                            "the object at {} is the one serving again: nothing to roll out",
                            input.uri
                        ),
                    ));
                    object = active.object.clone();
                    detected_at = active.detected_at;
                }
                _ => {}
            }
            RefreshStatus {
                uri: object.as_ref().map(|_| input.uri.to_owned()),
                object,
                detected_at: detected_at.map(to_time),
                paused: false,
                message: None,
            }
        }
    };
    Refresh {
        object: status.object.clone(),
        detected_at: status.detected_at.as_ref().map(|t| t.0),
        status: Some(status),
        events: planned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PodPhase;
    use crate::rollout::ObservedPod;

    const URI: &str = "s3://models/fraud/latest/model.onnx";

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn input<'a>(previous: Option<&'a RefreshStatus>, detected: Option<&'a str>) -> Input<'a> {
        let detected = detected.map(AtUri::New);
        static POLICY: RefreshPolicy = RefreshPolicy {
            interval_seconds: 300,
        };
        Input {
            name: "fraud",
            policy: Some(&POLICY),
            uri: URI,
            previous,
            pin: None,
            detected,
            active: None,
            now: at(100),
        }
    }

    fn reasons(refresh: &Refresh) -> Vec<&'static str> {
        refresh.events.iter().map(|e| e.reason).collect()
    }

    #[test]
    fn without_refresh_nothing_is_pinned_and_nothing_is_shown() {
        let mut without = input(None, Some("etag:\"2\""));
        without.policy = None;
        assert_eq!(decide(without), Refresh::default());
    }

    #[test]
    fn a_new_object_pins_the_desired_revision_and_is_recorded_once() {
        let first = decide(input(None, None));
        assert_eq!(first.object, None, "nothing detected: the URI as it is");
        assert_eq!(
            first.status,
            Some(RefreshStatus::default()),
            "shown, with nothing detected yet"
        );
        assert!(first.events.is_empty());

        let detected = decide(input(first.status.as_ref(), Some("etag:\"2\"")));
        assert_eq!(detected.object.as_deref(), Some("etag:\"2\""));
        assert_eq!(detected.detected_at, Some(at(100)));
        assert_eq!(reasons(&detected), [events::OBJECT_CHANGED]);
        let status = detected.status.clone().unwrap();
        assert_eq!(status.uri.as_deref(), Some(URI));
        assert!(!status.paused);

        // The same token again (the old pods still report it while the new revision loads): nothing new.
        let mut again = input(detected.status.as_ref(), Some("etag:\"2\""));
        again.now = at(400);
        let again = decide(again);
        assert_eq!(again.status, detected.status, "no status change, no write");
        assert!(again.events.is_empty());

        // Replaced once more: the newest object is the desired one.
        let newer = decide(input(detected.status.as_ref(), Some("etag:\"3\"")));
        assert_eq!(newer.object.as_deref(), Some("etag:\"3\""));
        assert_eq!(reasons(&newer), [events::OBJECT_CHANGED]);
    }

    #[test]
    fn a_replacement_put_back_makes_the_serving_object_desired_again() {
        // A corrupt object was detected (its revision aborted); then the good file was put back.
        let previous = RefreshStatus {
            object: Some("etag:\"bad\"".into()),
            uri: Some(URI.into()),
            detected_at: Some(to_time(at(50))),
            ..Default::default()
        };
        let serving = ModelIdentity {
            object: Some("etag:\"2\"".into()),
            detected_at: Some(at(10)),
            ..Default::default()
        };
        let mut put_back = input(Some(&previous), None);
        put_back.detected = Some(AtUri::Serving);
        put_back.active = Some(&serving);
        let refresh = decide(put_back);
        assert_eq!(refresh.object.as_deref(), Some("etag:\"2\""));
        assert_eq!(refresh.detected_at, Some(at(10)));
        assert_eq!(reasons(&refresh), [events::OBJECT_CHANGED]);

        // Once recorded, the same report changes nothing.
        let mut again = put_back;
        again.previous = refresh.status.as_ref();
        let again = decide(again);
        assert_eq!(again.status, refresh.status);
        assert!(again.events.is_empty());
    }

    #[test]
    fn an_object_detected_at_another_uri_does_not_apply() {
        let previous = RefreshStatus {
            object: Some("etag:\"2\"".into()),
            uri: Some("s3://models/old.onnx".into()),
            detected_at: Some(to_time(at(0))),
            ..Default::default()
        };
        let refresh = decide(input(Some(&previous), None));
        assert_eq!(refresh.object, None);
        assert_eq!(refresh.status, Some(RefreshStatus::default()));
    }

    #[test]
    fn a_rollback_pins_its_revisions_object_and_pauses_until_resumed() {
        let previous = RefreshStatus {
            object: Some("etag:\"3\"".into()),
            uri: Some(URI.into()),
            detected_at: Some(to_time(at(50))),
            ..Default::default()
        };
        let rolled_back_to = ModelIdentity {
            object: Some("etag:\"2\"".into()),
            detected_at: Some(at(10)),
            ..Default::default()
        };
        let mut pinned = input(Some(&previous), Some("etag:\"3\""));
        pinned.pin = Some(Pin {
            revision: "abc",
            model: Some(&rolled_back_to),
        });
        let paused = decide(pinned);
        assert_eq!(paused.object.as_deref(), Some("etag:\"2\""));
        assert_eq!(paused.detected_at, Some(at(10)));
        assert_eq!(reasons(&paused), [events::REFRESH_PAUSED]);
        let status = paused.status.clone().unwrap();
        assert!(status.paused);
        let message = status.message.unwrap();
        assert!(message.contains("kubectl ferry resume fraud"), "{message}");
        assert!(
            message.contains("newer object etag:\"3\""),
            "a newer object is noted, not rolled out: {message}"
        );

        // Paused again: the same status, no event.
        let mut still = pinned;
        still.previous = paused.status.as_ref();
        let still = decide(still);
        assert_eq!(still.status, paused.status);
        assert!(still.events.is_empty());

        // Resumed: the newest object the pods report is detected again and rolls out.
        let resumed = decide(input(paused.status.as_ref(), Some("etag:\"3\"")));
        assert_eq!(resumed.object.as_deref(), Some("etag:\"3\""));
        assert_eq!(
            reasons(&resumed),
            [events::REFRESH_RESUMED, events::OBJECT_CHANGED]
        );
        assert!(!resumed.status.unwrap().paused);
    }

    #[test]
    fn a_rollback_to_the_revision_from_before_any_detection_pins_no_object() {
        let previous = RefreshStatus {
            object: Some("etag:\"2\"".into()),
            uri: Some(URI.into()),
            ..Default::default()
        };
        let original = ModelIdentity::default();
        let mut pinned = input(Some(&previous), None);
        pinned.pin = Some(Pin {
            revision: "first",
            model: Some(&original),
        });
        let paused = decide(pinned);
        assert_eq!(paused.object, None, "the unpinned revision, as it was made");
        assert!(paused.status.unwrap().paused);
    }

    #[test]
    fn only_ready_pods_of_the_active_revision_report_a_detection() {
        let pod = |name: &str, phase, new_object: Option<&str>| ObservedPod {
            name: name.into(),
            phase,
            new_object: new_object.map(str::to_owned),
            object_unchanged: new_object.is_none(),
            ..Default::default()
        };
        let revision = |name: &str, pods| ObservedRevision {
            revision: name.into(),
            model: ModelIdentity::default(),
            created_at: at(0),
            replicas: 2,
            available_replicas: 2,
            rolled_out: true,
            marks: Default::default(),
            unreadable_marks: None,
            pod_set: false,
            load_failure: None,
            pods,
            runtime: None,
        };
        let revisions = [
            revision(
                "a",
                vec![
                    pod("a-2", PodPhase::Ready, Some("etag:\"3\"")),
                    pod("a-1", PodPhase::Ready, Some("etag:\"2\"")),
                    pod("a-0", PodPhase::Loading, Some("etag:\"9\"")),
                ],
            ),
            revision("b", vec![pod("b-1", PodPhase::Ready, Some("etag:\"8\""))]),
        ];
        assert_eq!(
            detected(&revisions, Some("a")),
            Some(AtUri::New("etag:\"2\""))
        );
        let unchanged = [revision("c", vec![pod("c-0", PodPhase::Ready, None)])];
        assert_eq!(detected(&unchanged, Some("c")), Some(AtUri::Serving));
        assert_eq!(detected(&revisions, None), None);
        assert_eq!(detected(&revisions, Some("c")), None);
    }
}
