//! The operator's side of the contract with ferry-server (`server-image/README.md`): the environment it sets,
//! the ports and paths it probes, and the termination message it reads back from a failed pod.
//!
//! The operator does not link the server crate; a test checks these names against `server-image/src/contract.rs`.

use serde::Deserialize;

pub mod env {
    pub const MODEL_NAME: &str = "FERRY_MODEL_NAME";
    pub const MODEL_URI: &str = "FERRY_MODEL_URI";
    pub const MODEL_VERSION: &str = "FERRY_MODEL_VERSION";
    pub const MODEL_SHA256: &str = "FERRY_MODEL_SHA256";
    pub const MODEL_FORMAT: &str = "FERRY_MODEL_FORMAT";
    pub const HTTP_PORT: &str = "FERRY_HTTP_PORT";
    pub const ADMIN_PORT: &str = "FERRY_ADMIN_PORT";
    pub const WORK_DIR: &str = "FERRY_WORK_DIR";
    pub const TERMINATION_MESSAGE_PATH: &str = "FERRY_TERMINATION_MESSAGE_PATH";
    pub const S3_ENDPOINT: &str = "FERRY_S3_ENDPOINT";
    pub const S3_REGION: &str = "FERRY_S3_REGION";
    pub const S3_ALLOW_HTTP: &str = "FERRY_S3_ALLOW_HTTP";
    pub const ADMIN_TOKEN_FILE: &str = "FERRY_ADMIN_TOKEN_FILE";
}

pub const HTTP_PORT: i32 = 8080;
pub const ADMIN_PORT: i32 = 8081;
pub const WORK_DIR: &str = "/var/lib/ferry";
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// Where the serving pod mounts its admin-credential Secret, and the Secret's key that holds the credential.
pub const ADMIN_CREDENTIAL_DIR: &str = "/var/run/ferry/admin";
pub const ADMIN_CREDENTIAL_KEY: &str = "token";

pub mod paths {
    pub const LIVE: &str = "/v2/health/live";
    pub const READY: &str = "/v2/health/ready";
}

/// The JSON line ferry-server writes to its termination-message file before a non-zero exit.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TerminationMessage {
    pub reason: String,
    pub message: String,
    #[serde(default)]
    pub operator: Option<String>,
    #[serde(default)]
    pub setting: Option<String>,
}

/// The load failure described by a container's termination message, as "Reason: message".
/// A message that is not ferry-server's JSON (a crash, a foreign image) is reported as it is.
pub fn load_failure(termination_message: &str) -> Option<String> {
    let text = termination_message.trim();
    if text.is_empty() {
        return None;
    }
    let first_line = text.lines().next().unwrap_or(text);
    Some(
        match serde_json::from_str::<TerminationMessage>(first_line) {
            Ok(parsed) => format!("{}: {}", parsed.reason, parsed.message),
            Err(_) => format!("ServerExited: {}", truncate(text, 512)),
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
            load_failure(message).as_deref(),
            Some("ChecksumMismatch: expected 00aa, got 11bb")
        );
        assert_eq!(load_failure("  \n"), None);
        assert_eq!(
            load_failure("panic: oops").as_deref(),
            Some("ServerExited: panic: oops")
        );
    }

    /// The names here must be the server's: a drift would silently misconfigure every pod.
    #[test]
    fn names_match_the_servers_contract() {
        let server = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/server-image/src/contract.rs"
        ))
        .expect("server-image/src/contract.rs exists");
        let names = [
            env::MODEL_NAME,
            env::MODEL_URI,
            env::MODEL_VERSION,
            env::MODEL_SHA256,
            env::MODEL_FORMAT,
            env::HTTP_PORT,
            env::ADMIN_PORT,
            env::WORK_DIR,
            env::TERMINATION_MESSAGE_PATH,
            env::S3_ENDPOINT,
            env::S3_REGION,
            env::S3_ALLOW_HTTP,
            env::ADMIN_TOKEN_FILE,
            paths::LIVE,
            paths::READY,
            WORK_DIR,
            TERMINATION_MESSAGE_PATH,
        ];
        for name in names {
            assert!(
                server.contains(&format!("\"{name}\"")),
                "{name} is not in the server's contract"
            );
        }
        for port in [HTTP_PORT, ADMIN_PORT] {
            assert!(
                server.contains(&format!("= {port};")),
                "port {port} is not in the server's contract"
            );
        }
    }
}
