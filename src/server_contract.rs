//! The operator's side of the contract with ferry-server: the `ferry-contract` crate both depend on, with the
//! ports in the width the Kubernetes API uses, and the reading of a failed pod's termination message.

pub use ferry_contract::{
    compare_signatures, env, paths, pod, DesiredModel, ErrorBody, FailureReason, LoadFailure,
    LoadParameters, LoadPhase, LoadRequest, ModelMetadataView, Reason, ServerStatus, Signature,
    SwitchRequest, TensorSpec, TerminationMessage, UnloadRequest, ValidationView,
    VersionParameters, VersionState,
};

pub const HTTP_PORT: i32 = ferry_contract::DEFAULT_HTTP_PORT as i32;
pub const ADMIN_PORT: i32 = ferry_contract::DEFAULT_ADMIN_PORT as i32;
pub const GRPC_PORT: i32 = ferry_contract::DEFAULT_GRPC_PORT as i32;
pub use ferry_contract::{GRPC_APP_PROTOCOL, GRPC_PORT_NAME};
pub const WORK_DIR: &str = ferry_contract::DEFAULT_WORK_DIR;
pub const TERMINATION_MESSAGE_PATH: &str = ferry_contract::DEFAULT_TERMINATION_MESSAGE_PATH;

/// The load failure described by a container's termination message.
/// A message that is not ferry-server's JSON (a crash, a foreign image) is reported as it is, as `ServerExited`.
pub fn load_failure(termination_message: &str) -> Option<LoadFailure> {
    let text = termination_message.trim();
    if text.is_empty() {
        return None;
    }
    let first_line = text.lines().next().unwrap_or(text);
    Some(
        match serde_json::from_str::<TerminationMessage>(first_line) {
            Ok(parsed) => LoadFailure::new(parsed.reason, parsed.message),
            Err(_) => LoadFailure::new(FailureReason::ServerExited, truncate(text, 512)),
        },
    )
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_servers_reason() {
        let message = r#"{"reason":"ChecksumMismatch","message":"expected 00aa, got 11bb","model":"iris","version":"2"}"#;
        assert_eq!(
            load_failure(message),
            Some(LoadFailure::new(
                Reason::ChecksumMismatch,
                "expected 00aa, got 11bb"
            ))
        );
        assert_eq!(
            load_failure(message).unwrap().to_string(),
            "ChecksumMismatch: expected 00aa, got 11bb"
        );
        assert_eq!(load_failure("  \n"), None);
        assert_eq!(
            load_failure("panic: oops"),
            Some(LoadFailure::new(FailureReason::ServerExited, "panic: oops"))
        );
        // The Python runtimes' reasons read as themselves.
        for reason in [
            Reason::IncompatibleRuntime,
            Reason::UnsafeModel,
            Reason::UnsafeArchive,
            Reason::WorkerFailed,
        ] {
            let message = format!(r#"{{"reason":"{}","message":"why"}}"#, reason.as_str());
            assert_eq!(
                load_failure(&message),
                Some(LoadFailure::new(reason, "why")),
                "{message}"
            );
        }
        // A reason this build does not know is shown as the server wrote it, never as another reason.
        let foreign = r#"{"reason":"GpuMissing","message":"no device"}"#;
        assert_eq!(
            load_failure(foreign),
            Some(LoadFailure::new(FailureReason::ServerExited, foreign))
        );
        assert_eq!(
            load_failure(foreign).unwrap().to_string(),
            format!("ServerExited: {foreign}")
        );
    }
}
