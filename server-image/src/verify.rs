//! Checks a downloaded file against the expected digest.
//!
//! The digest itself is computed while the file streams in (see `fetch`), so verifying is a comparison, not a
//! second read of the file.

use crate::contract::{env, Reason};
use crate::failure::Failure;

/// `expected` is lowercase hex (normalized by the configuration); `None` means no digest was pinned.
pub fn verify_sha256(expected: Option<&str>, actual: &str) -> Result<(), Failure> {
    match expected {
        Some(expected) if expected != actual => Err(Failure::new(
            Reason::ChecksumMismatch,
            format!(
                "the file's SHA-256 is {actual}, {} expects {expected}",
                env::MODEL_SHA256
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matching_or_absent_digest_passes() {
        assert!(verify_sha256(Some("ab"), "ab").is_ok());
        assert!(verify_sha256(None, "ab").is_ok());
    }

    #[test]
    fn a_different_digest_is_a_checksum_mismatch_showing_both() {
        let failure = verify_sha256(Some("aa"), "bb").unwrap_err();
        assert_eq!(failure.reason, Reason::ChecksumMismatch);
        assert!(failure.message.contains("aa") && failure.message.contains("bb"));
    }
}
