//! Named failures and the Kubernetes termination message that carries them to the controller.

use std::path::Path;

use crate::contract::{Reason, TerminationMessage};

/// Kubernetes keeps 4096 bytes of a termination message; the JSON around the message needs the rest.
const MAX_MESSAGE_BYTES: usize = 2048;

/// A reason the model cannot be served, with a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
    /// For `UnsupportedOperator`: the operator, `domain:OpType`.
    pub operator: Option<String>,
    /// For `InvalidConfig`: the environment variable at fault.
    pub setting: Option<String>,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
            operator: None,
            setting: None,
        }
    }

    pub fn unsupported_operator(operator: impl Into<String>, message: impl Into<String>) -> Self {
        Failure {
            operator: Some(operator.into()),
            ..Failure::new(Reason::UnsupportedOperator, message)
        }
    }

    pub fn invalid_config(setting: &str, message: impl Into<String>) -> Self {
        Failure {
            setting: Some(setting.to_owned()),
            ..Failure::new(
                Reason::InvalidConfig,
                format!("{setting}: {}", message.into()),
            )
        }
    }

    /// A load that panicked: a bug of the server or the runtime, never the file's fault. `what` names the part.
    pub fn panicked(what: &str, payload: &(dyn std::any::Any + Send)) -> Self {
        let detail = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("no message");
        Failure::new(Reason::LoadPanicked, format!("{what} panicked: {detail}"))
    }

    /// A task of a load that did not return: a panic, or (only while the process stops) a cancel.
    pub fn stopped(what: &str, error: tokio::task::JoinError) -> Self {
        match error.try_into_panic() {
            Ok(payload) => Failure::panicked(what, &*payload),
            Err(error) => Failure::new(
                Reason::LoadPanicked,
                format!("{what} was stopped before it finished: {error}"),
            ),
        }
    }

    pub fn termination_message(
        &self,
        model: Option<&str>,
        version: Option<&str>,
    ) -> TerminationMessage {
        TerminationMessage {
            reason: self.reason,
            message: truncate(&self.message, MAX_MESSAGE_BYTES),
            operator: self.operator.clone(),
            setting: self.setting.clone(),
            model: model.map(str::to_owned),
            version: version.map(str::to_owned),
        }
    }
}

/// Writes the termination message as one line of JSON. Errors are returned so the caller can log them; the
/// process exits non-zero either way.
pub fn write_termination_message(path: &Path, message: &TerminationMessage) -> std::io::Result<()> {
    let mut line = serde_json::to_string(message).map_err(std::io::Error::other)?;
    line.push('\n');
    std::fs::write(path, line)
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_message_is_one_json_line_naming_reason_and_operator() {
        let failure = Failure::unsupported_operator("ferry.example:Frobnicate", "not implemented");
        let message = failure.termination_message(Some("iris"), Some("2"));
        let json = serde_json::to_string(&message).unwrap();
        assert_eq!(
            json,
            r#"{"reason":"UnsupportedOperator","message":"not implemented","operator":"ferry.example:Frobnicate","model":"iris","version":"2"}"#
        );
        let parsed: TerminationMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, message);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary_and_stay_under_the_kubernetes_limit() {
        let failure = Failure::new(Reason::CorruptModel, "é".repeat(5000));
        let message = failure.termination_message(Some(&"m".repeat(63)), Some(&"v".repeat(128)));
        let json = serde_json::to_string(&message).unwrap();
        assert!(json.len() < 4096, "{} bytes", json.len());
        assert!(message.message.ends_with('…'));
    }

    #[test]
    fn invalid_config_names_the_setting_in_message_and_field() {
        let failure =
            Failure::invalid_config("FERRY_HTTP_PORT", "must differ from FERRY_ADMIN_PORT");
        assert_eq!(failure.setting.as_deref(), Some("FERRY_HTTP_PORT"));
        assert_eq!(
            failure.to_string(),
            "InvalidConfig: FERRY_HTTP_PORT: must differ from FERRY_ADMIN_PORT"
        );
    }

    #[test]
    fn a_panic_is_its_own_reason_with_its_message() {
        let failure = Failure::panicked("the model load", &"index out of bounds");
        assert_eq!(failure.reason, Reason::LoadPanicked);
        assert_eq!(
            failure.message,
            "the model load panicked: index out of bounds"
        );
        let owned: Box<dyn std::any::Any + Send> = Box::new(String::from("boom"));
        assert_eq!(Failure::panicked("x", &*owned).message, "x panicked: boom");
        assert_eq!(
            Failure::panicked("x", &42_u8).message,
            "x panicked: no message"
        );
    }

    #[tokio::test]
    async fn a_task_that_panicked_is_load_panicked_not_corrupt_model() {
        let error = tokio::task::spawn_blocking(|| panic!("session builder broke"))
            .await
            .unwrap_err();
        let failure = Failure::stopped("the model load", error);
        assert_eq!(failure.reason, Reason::LoadPanicked);
        assert_eq!(
            failure.message,
            "the model load panicked: session builder broke"
        );
    }

    #[test]
    fn every_reason_serializes_as_its_name() {
        for reason in Reason::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
    }
}
