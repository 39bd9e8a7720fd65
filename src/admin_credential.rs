//! The credential that lets the controller, and nothing else, change what a serving pod serves.
//!
//! ```text
//!   controller key (a file the chart mounts; never read through the API)
//!        │  HMAC-SHA256("ferry.dev/admin/v1", namespace, name, id)
//!        ▼
//!   credential "ID.SECRET" ──► Secret <name>-ferry-admin (created by the controller, owned by the
//!                               ModelDeployment) ──► mounted read-only into every serving pod
//! ```
//!
//! The controller never reads Secrets. It does not need to: it derives the credential of any ModelDeployment from
//! its key and the credential's public id, which each pod reports in its admin `/status`. Each ModelDeployment
//! gets its own credential, so one leaked from a pod opens no other model. Deleting the Secret rotates it: the
//! controller creates a new one, with a new id, the next time it checks (`ensure_admin_secret` in
//! `controller/apply.rs`); the kubelet swaps the files of running pods, which read the file on every call, so
//! nothing restarts.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Smallest key accepted: 32 bytes, the output size of the HMAC's hash.
pub const MIN_KEY_BYTES: usize = 32;

/// The controller's key. Debug output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey(Vec<u8>);

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminKey(..)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("cannot read the admin key file {path}: {error}")]
    Unreadable { path: String, error: String },
    #[error("the admin key file {path} holds {bytes} bytes; it needs at least {MIN_KEY_BYTES}")]
    TooShort { path: String, bytes: usize },
}

impl AdminKey {
    /// The key in `path`, without trailing whitespace (a file written by hand or by a template ends in a newline).
    pub fn from_file(path: &Path) -> Result<AdminKey, KeyError> {
        let display = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| KeyError::Unreadable {
            path: display.clone(),
            error: e.to_string(),
        })?;
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        AdminKey::from_bytes(&bytes[..end]).map_err(|bytes| KeyError::TooShort {
            path: display,
            bytes,
        })
    }

    /// The key, or its length when it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Result<AdminKey, usize> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(bytes.len());
        }
        Ok(AdminKey(bytes.to_vec()))
    }

    /// A fresh random key (tests, and in-process controllers that need not survive a restart).
    pub fn random() -> AdminKey {
        AdminKey(random_bytes::<32>().to_vec())
    }

    /// The credential of ModelDeployment `namespace/name` with public id `id`: `ID.SECRET`, SECRET in hex.
    pub fn credential(&self, namespace: &str, name: &str, id: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        // NUL separators: no two (namespace, name, id) triples feed the same bytes (none of them can hold a NUL).
        for part in ["ferry.dev/admin/v1", namespace, name, id] {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        let secret: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{id}.{secret}")
    }
}

/// A new public credential id: 16 hex digits.
pub fn new_id() -> String {
    random_bytes::<8>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random generator works");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_model_deployment_and_each_id_has_its_own_credential() {
        let key = AdminKey::from_bytes(&[7; 32]).unwrap();
        let a = key.credential("team-a", "iris", "0011223344556677");
        assert!(a.starts_with("0011223344556677."));
        assert_eq!(a.len(), 16 + 1 + 64);
        // Deterministic: a restarted controller (or the standby) derives the same one.
        assert_eq!(a, key.credential("team-a", "iris", "0011223344556677"));
        let others = [
            key.credential("team-b", "iris", "0011223344556677"),
            key.credential("team-a", "iris2", "0011223344556677"),
            key.credential("team-a", "iris", "8899aabbccddeeff"),
            // The separators keep the parts apart.
            key.credential("team-ai", "ris", "0011223344556677"),
            AdminKey::from_bytes(&[8; 32]).unwrap().credential(
                "team-a",
                "iris",
                "0011223344556677",
            ),
        ];
        for other in &others {
            assert_ne!(&a, other);
        }
        assert_ne!(new_id(), new_id());
        assert_eq!(new_id().len(), 16);
    }

    #[test]
    fn a_key_file_must_hold_enough_bytes_and_its_trailing_newline_is_ignored() {
        let dir = std::env::temp_dir().join(format!("ferry-key-{}", new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, format!("{}\n", "k".repeat(40))).unwrap();
        let key = AdminKey::from_file(&path).unwrap();
        assert_eq!(
            key,
            AdminKey::from_bytes("k".repeat(40).as_bytes()).unwrap()
        );
        assert_eq!(format!("{key:?}"), "AdminKey(..)");
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            AdminKey::from_file(&path),
            Err(KeyError::TooShort { bytes: 5, .. })
        ));
        assert!(matches!(
            AdminKey::from_file(&dir.join("missing")),
            Err(KeyError::Unreadable { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
