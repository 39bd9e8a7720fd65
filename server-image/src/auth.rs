//! Who may change what the server serves.
//!
//! Every mutating admin endpoint (`contract::paths::MUTATING`: load and stage, switch, unload) passes through
//! `require_admin`. The caller presents `Authorization: Bearer <credential>`; the credential is the content of
//! `FERRY_ADMIN_TOKEN_FILE`, which the operator mounts from a Secret of its own, one per ModelDeployment.
//!
//! ```text
//!   request ──► Authorization header ──► SHA-256 ─┐
//!                                                 ├─ constant-time compare ─► handler
//!   token file (read on every call) ──► SHA-256 ──┘        │ no
//!                                                          └─► 401 {"error", "code"}, ferry_admin_refused_total{reason}
//! ```
//!
//! The file is read on every mutating call, not cached: the kubelet replaces a Secret volume's files when the
//! Secret changes, and a rotated credential must take effect without a restart. Mutating calls are rare, so the
//! read costs nothing that matters. A credential is `ID.SECRET`: the id is public (it is in `/status`, so the
//! operator knows which credential a pod holds while a rotation propagates); only the whole string authenticates.
//! A server started without a token file refuses every mutating call, unless it was started with
//! `FERRY_INSECURE_OPEN_ADMIN=true` — for local tests and benchmarks, and named so nobody ships it by accident.
//! Neither the credential nor the header is ever logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::contract::{env, AdminMode, AdminView, ErrorBody, ErrorCode};
use crate::metrics::{Metrics, RefusedLabels};

/// How mutating admin calls are authorised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminAuth {
    /// A bearer credential equal to the content of this file.
    Token(PathBuf),
    /// Every call is accepted (`FERRY_INSECURE_OPEN_ADMIN=true`).
    InsecureOpen,
    /// No credential is configured: every mutating call is refused.
    Refuse,
}

/// Why a call was refused; the `reason` label of `ferry_admin_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A credential that is not the configured one.
    Wrong,
    /// The server has no credential (no token file, or it cannot be read).
    Unconfigured,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Wrong => "wrong",
            Refusal::Unconfigured => "unconfigured",
        }
    }

    fn message(self) -> String {
        match self {
            Refusal::Missing => {
                "this call changes the served model and needs the operator's credential \
                 (Authorization: Bearer ...)"
                    .to_owned()
            }
            Refusal::Wrong => "the credential is not this server's".to_owned(),
            Refusal::Unconfigured => format!(
                "this server has no admin credential and refuses calls that change the served model; \
                 start it with {} (or, for local testing only, {}=true)",
                env::ADMIN_TOKEN_FILE,
                env::INSECURE_OPEN_ADMIN
            ),
        }
    }
}

impl AdminAuth {
    pub fn from_settings(token_file: Option<PathBuf>, insecure_open: bool) -> AdminAuth {
        match (token_file, insecure_open) {
            (Some(path), _) => AdminAuth::Token(path),
            (None, true) => AdminAuth::InsecureOpen,
            (None, false) => AdminAuth::Refuse,
        }
    }

    /// Whether `headers` carry the configured credential.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let path = match self {
            AdminAuth::InsecureOpen => return Ok(()),
            AdminAuth::Refuse => return Err(Refusal::Unconfigured),
            AdminAuth::Token(path) => path,
        };
        let expected = read_credential(path).ok_or(Refusal::Unconfigured)?;
        let presented = bearer(headers).ok_or(Refusal::Missing)?;
        // Equal-length digests, compared without an early exit: the time taken says nothing about the credential.
        let expected = Sha256::digest(expected.as_bytes());
        let presented = Sha256::digest(presented.as_bytes());
        if bool::from(expected.as_slice().ct_eq(presented.as_slice())) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }

    pub fn view(&self) -> AdminView {
        match self {
            AdminAuth::Token(path) => AdminView {
                mode: AdminMode::Token,
                credential_id: read_credential(path)
                    .and_then(|c| c.split_once('.').map(|(id, _)| id.to_owned())),
            },
            AdminAuth::InsecureOpen => AdminView {
                mode: AdminMode::InsecureOpen,
                credential_id: None,
            },
            AdminAuth::Refuse => AdminView {
                mode: AdminMode::Refuse,
                credential_id: None,
            },
        }
    }
}

/// The credential in `path`, without surrounding whitespace; `None` when it cannot be read or is empty.
pub fn read_credential(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let credential = text.trim();
    (!credential.is_empty()).then(|| credential.to_owned())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

/// What the credential check needs: how calls are authorised, and where refusals are counted.
#[derive(Clone)]
pub struct AdminCheck {
    pub auth: Arc<AdminAuth>,
    pub metrics: Arc<Metrics>,
}

/// Middleware of the mutating admin routes: 401 with a JSON error unless the caller holds the credential.
pub async fn require_admin(
    State(state): State<AdminCheck>,
    request: Request,
    next: Next,
) -> Response {
    match state.auth.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            state
                .metrics
                .admin_refused
                .get_or_create(&RefusedLabels {
                    reason: refusal.as_str().to_owned(),
                })
                .inc();
            tracing::warn!(
                path = %request.uri().path(),
                reason = refusal.as_str(),
                "refused an admin call"
            );
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(ErrorBody {
                    error: refusal.message(),
                    code: Some(ErrorCode::Unauthorized),
                }),
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ferry-server admin\""),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn only_the_file_s_credential_passes_and_a_rotation_takes_effect_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "a1b2.first-secret\n").unwrap();
        let auth = AdminAuth::Token(path.clone());
        assert_eq!(
            auth.check(&headers(Some("Bearer a1b2.first-secret"))),
            Ok(())
        );
        assert_eq!(
            auth.check(&headers(Some("bearer a1b2.first-secret"))),
            Ok(())
        );
        assert_eq!(auth.check(&headers(None)), Err(Refusal::Missing));
        assert_eq!(
            auth.check(&headers(Some("Basic abc"))),
            Err(Refusal::Missing)
        );
        assert_eq!(auth.check(&headers(Some("Bearer "))), Err(Refusal::Missing));
        assert_eq!(
            auth.check(&headers(Some("Bearer a1b2.first-secreT"))),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            auth.check(&headers(Some("Bearer a1b2"))),
            Err(Refusal::Wrong)
        );
        assert_eq!(auth.view().credential_id.as_deref(), Some("a1b2"));

        std::fs::write(&path, "c3d4.second-secret").unwrap();
        assert_eq!(
            auth.check(&headers(Some("Bearer a1b2.first-secret"))),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            auth.check(&headers(Some("Bearer c3d4.second-secret"))),
            Ok(())
        );
        assert_eq!(auth.view().credential_id.as_deref(), Some("c3d4"));

        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            auth.check(&headers(Some("Bearer c3d4.second-secret"))),
            Err(Refusal::Unconfigured)
        );
    }

    #[test]
    fn without_a_token_file_only_the_open_mode_accepts() {
        let refuse = AdminAuth::from_settings(None, false);
        assert_eq!(refuse, AdminAuth::Refuse);
        assert_eq!(
            refuse.check(&headers(Some("Bearer anything"))),
            Err(Refusal::Unconfigured)
        );
        let open = AdminAuth::from_settings(None, true);
        assert_eq!(open.check(&headers(None)), Ok(()));
        assert_eq!(open.view().mode, AdminMode::InsecureOpen);
        // A token file wins over the open mode: a Secret-backed pod is never open by an extra variable.
        let token = AdminAuth::from_settings(Some("/nonexistent".into()), true);
        assert_eq!(
            token.check(&headers(Some("Bearer x"))),
            Err(Refusal::Unconfigured)
        );
    }
}
