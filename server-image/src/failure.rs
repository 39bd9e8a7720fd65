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
    fn every_reason_serializes_as_its_name() {
        for reason in Reason::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
    }
}
