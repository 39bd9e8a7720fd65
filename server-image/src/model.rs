//! What to serve: a model version (`ModelSpec`), its golden set (`ValidationSpec`) and the store settings, with the
//! checks of each field. The same fields come from the environment at start-up, from the `FERRY_MODEL_FILE` file
//! and from a repository load request; each check names the field as its source spells it.

use url::Url;

use crate::contract::{self, env, ObjectIdentity};
use crate::failure::Failure;

/// What to serve: the same fields come from the environment at start-up and from a repository load request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub uri: Url,
    pub version: String,
    /// Lowercase hex.
    pub sha256: Option<String>,
    pub format: String,
    /// The golden set to run after the warm-up, if any.
    pub validation: Option<ValidationSpec>,
    /// Download exactly this object (`FERRY_MODEL_OBJECT`, `parameters.object`).
    pub object: Option<ObjectIdentity>,
}

/// Where the golden set is and the digest it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationSpec {
    pub uri: Url,
    /// Lowercase hex.
    pub sha256: Option<String>,
    /// The setting that pinned the digest (`FERRY_VALIDATION_SHA256` or `parameters.validation_sha256`), for
    /// the message of a mismatch.
    pub sha256_setting: &'static str,
}

impl ValidationSpec {
    /// `uri` and `sha256` as given (environment or load request); the error names `uri_name` or `sha256_name`.
    pub fn parse(
        (uri_name, sha256_name): (&'static str, &'static str),
        uri: Option<&str>,
        sha256: Option<&str>,
    ) -> Result<Option<ValidationSpec>, Failure> {
        let sha256 = sha256
            .filter(|s| !s.is_empty())
            .map(parse_sha256)
            .transpose()
            .map_err(|m| Failure::invalid_config(sha256_name, m))?;
        let Some(uri) = uri.filter(|u| !u.is_empty()) else {
            if sha256.is_some() {
                return Err(Failure::invalid_config(
                    sha256_name,
                    format!("is set but {uri_name} is not"),
                ));
            }
            return Ok(None);
        };
        let uri = parse_uri(uri).map_err(|m| Failure::invalid_config(uri_name, m))?;
        Ok(Some(ValidationSpec {
            uri,
            sha256,
            sha256_setting: sha256_name,
        }))
    }
}

/// The names of the validation settings in the environment.
pub const ENV_VALIDATION_NAMES: (&str, &str) = (env::VALIDATION_URI, env::VALIDATION_SHA256);

/// Settings of S3-compatible stores; the standard `AWS_*`, `GOOGLE_*` and `AZURE_*` variables are read as well.
#[derive(Debug, Clone, Default)]
pub struct StoreSettings {
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_allow_http: bool,
}

/// Names of the fields of a model spec, so the same checks can report either environment variables (start-up)
/// or request parameters (repository load).
pub struct SpecFieldNames {
    pub name: &'static str,
    pub uri: &'static str,
    pub version: &'static str,
    pub sha256: &'static str,
    pub format: &'static str,
}

pub const ENV_FIELD_NAMES: SpecFieldNames = SpecFieldNames {
    name: env::MODEL_NAME,
    uri: env::MODEL_URI,
    version: env::MODEL_VERSION,
    sha256: env::MODEL_SHA256,
    format: env::MODEL_FORMAT,
};

impl ModelSpec {
    /// Checks each field; the error names the offending field as given in `names`.
    pub fn parse(
        names: &SpecFieldNames,
        name: Option<&str>,
        uri: Option<&str>,
        version: Option<&str>,
        sha256: Option<&str>,
        format: &str,
    ) -> Result<ModelSpec, Failure> {
        let name = required(names.name, name)?;
        check_model_name(name).map_err(|m| Failure::invalid_config(names.name, m))?;
        let uri = parse_uri(required(names.uri, uri)?)
            .map_err(|m| Failure::invalid_config(names.uri, m))?;
        let version = required(names.version, version)?;
        check_version(version).map_err(|m| Failure::invalid_config(names.version, m))?;
        let sha256 = sha256
            .filter(|s| !s.is_empty())
            .map(parse_sha256)
            .transpose()
            .map_err(|m| Failure::invalid_config(names.sha256, m))?;
        check_format(format).map_err(|m| Failure::invalid_config(names.format, m))?;
        Ok(ModelSpec {
            name: name.to_owned(),
            uri,
            version: version.to_owned(),
            sha256,
            format: format.to_owned(),
            validation: None,
            object: None,
        })
    }

    /// `self` pinned to the object `token` names; an invalid token names `setting`.
    pub fn pinned(mut self, setting: &str, token: Option<&str>) -> Result<ModelSpec, Failure> {
        self.object = token
            .filter(|t| !t.is_empty())
            .map(ObjectIdentity::parse_token)
            .transpose()
            .map_err(|e| Failure::invalid_config(setting, e.to_string()))?;
        Ok(self)
    }
}

/// Field names of the `FERRY_MODEL_FILE` JSON, for the messages of its checks.
const FILE_FIELD_NAMES: SpecFieldNames = SpecFieldNames {
    name: env::MODEL_NAME,
    uri: "uri",
    version: "version",
    sha256: "sha256",
    format: "format",
};

/// The model of the `FERRY_MODEL_FILE` file at `path`, served as `name`; `default_format` when it names none.
/// Every problem is an `InvalidConfig` naming `FERRY_MODEL_FILE` (or `FERRY_MODEL_NAME` for the name).
pub fn model_from_file(
    path: &std::path::Path,
    name: Option<&str>,
    default_format: &str,
) -> Result<ModelSpec, Failure> {
    let fail = |message: String| {
        Failure::invalid_config(env::MODEL_FILE, format!("{}: {message}", path.display()))
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot be read: {e}")))?;
    let desired: contract::DesiredModel = serde_json::from_str(&text).map_err(|e| {
        fail(format!(
            "is not a model ({{\"uri\", \"version\", \"sha256\"?, \"format\"?}}): {e}"
        ))
    })?;
    ModelSpec::parse(
        &FILE_FIELD_NAMES,
        name,
        Some(&desired.uri),
        Some(&desired.version),
        desired.sha256.as_deref(),
        desired.format.as_deref().unwrap_or(default_format),
    )
    .and_then(|spec| spec.pinned("object", desired.object.as_deref()))
    .map_err(|failure| match failure.setting.as_deref() {
        Some(env::MODEL_NAME) => failure,
        _ => fail(failure.message),
    })
}

fn required<'a>(setting: &str, value: Option<&'a str>) -> Result<&'a str, Failure> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Failure::invalid_config(setting, "is required")),
    }
}

/// Same rule as the ModelDeployment CRD: 1-63 characters, alphanumerics inside may be joined by `_`, `.`, `-`.
fn check_model_name(name: &str) -> Result<(), String> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let inner_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.len() > 63
        || !inner_ok
        || !edge_ok(name.chars().next())
        || !edge_ok(name.chars().last())
    {
        return Err(format!(
            "{name:?} is not a model name (1-63 of A-Z a-z 0-9 _ . -, starting and ending alphanumeric)"
        ));
    }
    Ok(())
}

fn check_version(version: &str) -> Result<(), String> {
    if version.chars().count() > 128
        || version.trim() != version
        || version.chars().any(char::is_control)
    {
        return Err(format!(
            "{version:?} is not a version (1-128 characters, no surrounding whitespace or control characters)"
        ));
    }
    Ok(())
}

fn parse_uri(uri: &str) -> Result<Url, String> {
    let url = Url::parse(uri).map_err(|e| format!("{uri:?} is not a URI: {e}"))?;
    if !contract::capabilities::URI_SCHEMES.contains(&url.scheme()) {
        return Err(format!(
            "scheme {:?} is not supported (use one of {})",
            url.scheme(),
            contract::capabilities::URI_SCHEMES.join(", ")
        ));
    }
    let file_name = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("");
    if file_name.is_empty() {
        return Err(format!("{uri:?} does not name a file"));
    }
    Ok(url)
}

fn parse_sha256(digest: &str) -> Result<String, String> {
    if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{digest:?} is not a SHA-256 digest (64 hex digits)"
        ));
    }
    Ok(digest.to_ascii_lowercase())
}

fn check_format(format: &str) -> Result<(), String> {
    let ok = !format.is_empty()
        && format.len() <= 63
        && format
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(format!(
            "{format:?} is not a format name (lowercase, e.g. onnx)"
        ));
    }
    Ok(())
}
