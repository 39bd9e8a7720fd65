//! Whether this runtime can load what a model file records, before any Python runs.
//!
//! The versions a model file records (see `files`) are compared with the ones the Python worker reports, under
//! one policy per framework:
//!
//! - **scikit-learn** pickles: the same major.minor version as the runtime's. scikit-learn only supports
//!   unpickling a model with the release that pickled it, and patch releases keep their estimators' state.
//! - **XGBoost** JSON/UBJ models: saved by XGBoost 1.0 or later (the first with the JSON format) and by a version
//!   no newer than the runtime's. XGBoost reads models saved by older versions, not by newer ones.
//! - **LightGBM** text models: a model format version (`version=v4`) no newer than the one the runtime's LightGBM
//!   writes: v4 for LightGBM 4.x, v3 for 2.3 to 3.x, v2 for 2.0.12 to 2.2.x. LightGBM reads older formats.
//! - **numpy** (as a requirement): a major version no newer than the runtime's. numpy 2 reads what numpy 1
//!   pickled; numpy 1 does not read numpy 2's.
//! - **requirements.txt**: every requirement must name a package the runtime has, at a version its specifier
//!   accepts (PEP 440). Two kinds of line are judged differently:
//!   - packages needed only to save or describe a model, not to load it ([`NOT_NEEDED_TO_LOAD`]), are skipped;
//!   - an exact pin (`==V` or `===V`) of scikit-learn, XGBoost, LightGBM or numpy is read as the version that
//!     saved the model and judged by that framework's policy above, so that a runtime with a compatible
//!     release (say scikit-learn 1.9.2 for a model pinned at 1.9.1) still loads it.
//!
//! Installed pre-releases are judged by PEP 440 ordering alone, as `pip check` does: `>=1.0` accepts 2.0rc1,
//! `<2` does not.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::files::normalise_name;

/// Packages that a model's requirements may name although the runtime does not have them: they are needed to save
/// or describe a model, not to load it. (MLflow records itself and pandas in every model's requirements, and
/// cloudpickle for cloudpickled models, which the pickle scan refuses on its own.)
pub const NOT_NEEDED_TO_LOAD: &[&str] = &["mlflow", "mlflow-skinny", "pandas", "cloudpickle"];

/// Distributions that install the same importable package as another: MLflow records `xgboost-cpu` next to
/// `xgboost` (the CPU-only build of the same release), and the runtime's `xgboost` satisfies both.
pub const SAME_PACKAGE: &[(&str, &str)] = &[("xgboost-cpu", "xgboost")];

/// The Python packages the runtime has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// Normalised package name (PEP 503) -> version, as the worker reports them.
    pub versions: BTreeMap<String, String>,
}

impl Installed {
    /// The installed version of `package`, by its normalised name.
    pub fn get(&self, package: &str) -> Option<&str> {
        let name = normalise_name(package);
        self.versions.get(&name).map(String::as_str)
    }
}

/// A model the runtime cannot load: which package, what the model records, what the runtime has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Incompatible {
    pub package: String,
    pub recorded: String,
    pub installed: Option<String>,
    pub message: String,
}

/// A version or specifier that is not PEP 440.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("'{0}' is not a PEP 440 version")]
    Version(String),
    #[error("'{spec}' is not a version specifier: {reason}")]
    Specifier { spec: String, reason: &'static str },
}

/// scikit-learn pickles: the same major.minor version.
pub fn check_sklearn(recorded: &str, installed: &Installed) -> Result<(), Incompatible> {
    const PACKAGE: &str = "scikit-learn";
    let (model, have, have_text) = versions(PACKAGE, recorded, installed, "pickled with")?;
    if model.epoch == have.epoch && model.major() == have.major() && model.minor() == have.minor() {
        return Ok(());
    }
    Err(incompatible(
        PACKAGE,
        recorded,
        Some(have_text),
        format!(
            "pickled with scikit-learn {recorded}; this runtime has {have_text}; the policy allows the same minor \
             version ({}.{}.x)",
            have.major(),
            have.minor()
        ),
    ))
}

/// XGBoost JSON/UBJ models: saved by 1.0 or later, and by a version no newer than the runtime's.
pub fn check_xgboost(recorded: &str, installed: &Installed) -> Result<(), Incompatible> {
    const PACKAGE: &str = "xgboost";
    let (model, have, have_text) = versions(PACKAGE, recorded, installed, "saved by")?;
    if model.epoch == 0 && model.major() < 1 {
        return Err(incompatible(
            PACKAGE,
            recorded,
            Some(have_text),
            format!(
                "saved by XGBoost {recorded}; the policy requires at least 1.0, the first version with the JSON \
                 model format"
            ),
        ));
    }
    if model.cmp_public(&have) == Ordering::Greater {
        return Err(incompatible(
            PACKAGE,
            recorded,
            Some(have_text),
            format!(
                "saved by XGBoost {recorded}; this runtime has {have_text}; XGBoost reads models saved by its own \
                 or an older version, not a newer one"
            ),
        ));
    }
    Ok(())
}

/// LightGBM text models: the model format version (`v4`) at most the one the runtime's LightGBM writes.
pub fn check_lightgbm_format(recorded: &str, installed: &Installed) -> Result<(), Incompatible> {
    const PACKAGE: &str = "lightgbm";
    let Some(have_text) = installed.get(PACKAGE) else {
        return Err(missing(PACKAGE, recorded));
    };
    let format = recorded
        .strip_prefix('v')
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| {
            incompatible(
                PACKAGE,
                recorded,
                Some(have_text),
                format!("the model records LightGBM model format '{recorded}', which is not a format version (v4)"),
            )
        })?;
    let have = installed_version(PACKAGE, recorded, have_text)?;
    let reads = lightgbm_format_read_by(&have).ok_or_else(|| {
        incompatible(
            PACKAGE,
            recorded,
            Some(have_text),
            format!("this runtime's LightGBM {have_text} predates versioned model files"),
        )
    })?;
    if format > reads {
        return Err(incompatible(
            PACKAGE,
            recorded,
            Some(have_text),
            format!(
                "written in LightGBM model format v{format}; this runtime has LightGBM {have_text}, which reads \
                 formats up to v{reads}"
            ),
        ));
    }
    Ok(())
}

/// numpy: a major version no newer than the runtime's.
pub fn check_numpy(recorded: &str, installed: &Installed) -> Result<(), Incompatible> {
    const PACKAGE: &str = "numpy";
    let (model, have, have_text) = versions(PACKAGE, recorded, installed, "made with")?;
    if (model.epoch, model.major()) > (have.epoch, have.major()) {
        return Err(incompatible(
            PACKAGE,
            recorded,
            Some(have_text),
            format!(
                "made with numpy {recorded}; this runtime has {have_text}; the policy allows numpy {}.x or older",
                have.major()
            ),
        ));
    }
    Ok(())
}

/// Every requirement satisfied by the runtime's packages (see the module's policy).
pub fn check_requirements(
    reqs: &[super::files::Requirement],
    installed: &Installed,
) -> Result<(), Incompatible> {
    for req in reqs {
        let name = normalise_name(&req.name);
        if NOT_NEEDED_TO_LOAD.contains(&name.as_str()) {
            continue;
        }
        let package = SAME_PACKAGE
            .iter()
            .find(|(alias, _)| *alias == name)
            .map_or(name.as_str(), |(_, real)| *real);
        let Some(have_text) = installed.get(package) else {
            return Err(incompatible(
                &name,
                &req.spec,
                None,
                format!("requires {name}, which this runtime does not have"),
            ));
        };
        let specifiers = Specifiers::parse(&req.spec).map_err(|e| {
            incompatible(
                &name,
                &req.spec,
                Some(have_text),
                format!("requirements.txt line {}: {e}", req.line),
            )
        })?;
        if let Some(pinned) = specifiers.exact_pin() {
            let framework_policy = match package {
                "scikit-learn" => {
                    Some(check_sklearn as fn(&str, &Installed) -> Result<(), Incompatible>)
                }
                "xgboost" => Some(check_xgboost as _),
                "lightgbm" => Some(check_lightgbm_pin as _),
                "numpy" => Some(check_numpy as _),
                _ => None,
            };
            if let Some(check) = framework_policy {
                check(pinned, installed).map_err(|mut e| {
                    e.package = name.clone();
                    e.recorded = req.spec.clone();
                    e.message = format!("requirements.txt line {}: {}", req.line, e.message);
                    e
                })?;
                continue;
            }
        }
        let have = installed_version(package, &req.spec, have_text)?;
        if !specifiers.contains(&have, have_text) {
            return Err(incompatible(
                &name,
                &req.spec,
                Some(have_text),
                format!(
                    "requires {name}{} (requirements.txt line {}); this runtime has {package} {have_text}",
                    req.spec, req.line
                ),
            ));
        }
    }
    Ok(())
}

/// A LightGBM package pin, judged by the model format that version writes: a release no newer than the
/// runtime's, or a newer one known to write a format the runtime reads.
fn check_lightgbm_pin(recorded: &str, installed: &Installed) -> Result<(), Incompatible> {
    const PACKAGE: &str = "lightgbm";
    let (model, have, have_text) = versions(PACKAGE, recorded, installed, "made with")?;
    if model.cmp_public(&have).is_le() {
        return Ok(());
    }
    let Some(format) = lightgbm_format_written_by(&model) else {
        return Err(incompatible(
            PACKAGE,
            recorded,
            Some(have_text),
            format!(
                "made with LightGBM {recorded}, newer than this runtime's {have_text}, whose model format this \
                 runtime does not know"
            ),
        ));
    };
    check_lightgbm_format(&format!("v{format}"), installed).map_err(|mut e| {
        e.recorded = recorded.to_owned();
        e.message = format!(
            "made with LightGBM {recorded}, which writes model format v{format}: {}",
            e.message
        );
        e
    })
}

/// The text model format a LightGBM release writes (`kModelVersion` in src/boosting/gbdt_model_text.cpp): v2 from
/// 2.0.12, v3 from 2.3.0, v4 from 4.0.0 through 4.x. None before 2.0.12 (which wrote no version) and for releases
/// newer than this table knows.
pub fn lightgbm_format_written_by(version: &Version) -> Option<u32> {
    let at_least = |release: &[u64]| cmp_release(&version.release, release).is_ge();
    if version.epoch > 0 || version.major() >= 5 {
        None
    } else if at_least(&[4]) {
        Some(4)
    } else if at_least(&[2, 3]) {
        Some(3)
    } else if at_least(&[2, 0, 12]) {
        Some(2)
    } else {
        None
    }
}

/// The newest text model format a LightGBM release reads: the one it writes; a release newer than the table
/// reads at least the newest format the table knows (LightGBM reads older formats).
fn lightgbm_format_read_by(version: &Version) -> Option<u32> {
    lightgbm_format_written_by(version).or((version.epoch > 0 || version.major() >= 5).then_some(4))
}

/// Parses the recorded and the installed version of `package`.
fn versions<'a>(
    package: &str,
    recorded: &str,
    installed: &'a Installed,
    verb: &str,
) -> Result<(Version, Version, &'a str), Incompatible> {
    let Some(have_text) = installed.get(package) else {
        return Err(missing(package, recorded));
    };
    let model = Version::parse(recorded).map_err(|_| {
        incompatible(
            package,
            recorded,
            Some(have_text),
            format!("{verb} {package} '{recorded}', which is not a version"),
        )
    })?;
    let have = installed_version(package, recorded, have_text)?;
    Ok((model, have, have_text))
}

fn installed_version(
    package: &str,
    recorded: &str,
    have_text: &str,
) -> Result<Version, Incompatible> {
    Version::parse(have_text).map_err(|_| {
        incompatible(
            package,
            recorded,
            Some(have_text),
            format!("this runtime's {package} version '{have_text}' is not a PEP 440 version"),
        )
    })
}

fn missing(package: &str, recorded: &str) -> Incompatible {
    incompatible(
        package,
        recorded,
        None,
        format!("the model needs {package} {recorded}, which this runtime does not have"),
    )
}

fn incompatible(
    package: &str,
    recorded: &str,
    installed: Option<&str>,
    message: String,
) -> Incompatible {
    Incompatible {
        package: package.to_owned(),
        recorded: recorded.to_owned(),
        installed: installed.map(str::to_owned),
        message,
    }
}

/// A PEP 440 version: `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`, with the spellings PEP 440 normalises
/// (`alpha`, `c`, `pre`, `rev`, `-1` as a post-release, separators `-`, `_`, `.`, a leading `v`).
#[derive(Debug, Clone, Default)]
pub struct Version {
    pub epoch: u64,
    pub release: Vec<u64>,
    pub pre: Option<(PreKind, u64)>,
    pub post: Option<u64>,
    pub dev: Option<u64>,
    pub local: Vec<LocalPart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PreKind {
    Alpha,
    Beta,
    Rc,
}

/// A segment of a local version label (`+ubuntu.1`): numbers sort after words.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum LocalPart {
    Word(String),
    Number(u64),
}

/// At most this many release segments: far more than any real version.
const MAX_RELEASE_SEGMENTS: usize = 32;

impl Version {
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let error = || VersionError::Version(text.to_owned());
        let lower = text.trim().to_ascii_lowercase();
        let mut c = Cursor {
            s: lower.strip_prefix('v').unwrap_or(&lower).as_bytes(),
            i: 0,
        };
        let mut version = Version::default();
        let first = c.number().ok_or_else(error)?;
        if c.eat(b"!") {
            version.epoch = first;
            version.release.push(c.number().ok_or_else(error)?);
        } else {
            version.release.push(first);
        }
        while c.peek() == Some(b'.') && c.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
            c.i += 1;
            version.release.push(c.number().ok_or_else(error)?);
            if version.release.len() > MAX_RELEASE_SEGMENTS {
                return Err(error());
            }
        }
        // Pre-release: [-_.]?(a|alpha|b|beta|c|rc|pre|preview)[-_.]?N?
        let save = c.i;
        c.separator();
        let pre = [
            ("preview", PreKind::Rc),
            ("alpha", PreKind::Alpha),
            ("beta", PreKind::Beta),
            ("pre", PreKind::Rc),
            ("rc", PreKind::Rc),
            ("a", PreKind::Alpha),
            ("b", PreKind::Beta),
            ("c", PreKind::Rc),
        ]
        .into_iter()
        .find(|(word, _)| c.eat(word.as_bytes()));
        match pre {
            Some((_, kind)) => version.pre = Some((kind, c.optional_number().ok_or_else(error)?)),
            None => c.i = save,
        }
        // Post-release: -N, or [-_.]?(post|rev|r)[-_.]?N?
        let save = c.i;
        if c.peek() == Some(b'-') && c.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
            c.i += 1;
            version.post = Some(c.number().ok_or_else(error)?);
        } else {
            c.separator();
            if ["post", "rev", "r"]
                .iter()
                .any(|word| c.eat(word.as_bytes()))
            {
                version.post = Some(c.optional_number().ok_or_else(error)?);
            } else {
                c.i = save;
            }
        }
        // Development release: [-_.]?dev[-_.]?N?
        let save = c.i;
        c.separator();
        if c.eat(b"dev") {
            version.dev = Some(c.optional_number().ok_or_else(error)?);
        } else {
            c.i = save;
        }
        // Local label: +[a-z0-9]+([-_.][a-z0-9]+)*
        if c.eat(b"+") {
            let rest =
                std::str::from_utf8(c.s.get(c.i..).unwrap_or_default()).map_err(|_| error())?;
            for part in rest.split(['-', '_', '.']) {
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(error());
                }
                version.local.push(match part.parse::<u64>() {
                    Ok(n) if part.bytes().all(|b| b.is_ascii_digit()) => LocalPart::Number(n),
                    _ if part.bytes().all(|b| b.is_ascii_digit()) => return Err(error()),
                    _ => LocalPart::Word(part.to_owned()),
                });
            }
            c.i = c.s.len();
        }
        if c.i != c.s.len() {
            return Err(error());
        }
        Ok(version)
    }

    pub fn major(&self) -> u64 {
        self.release.first().copied().unwrap_or(0)
    }

    pub fn minor(&self) -> u64 {
        self.release.get(1).copied().unwrap_or(0)
    }

    /// A pre-release or a development release (PEP 440's "pre-release" for specifier purposes).
    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some() || self.dev.is_some()
    }

    /// Ordering without the local label.
    fn cmp_public(&self, other: &Version) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| cmp_release(&self.release, &other.release))
            .then_with(|| self.pre_key().cmp(&other.pre_key()))
            .then_with(|| {
                self.post
                    .map_or(-1, i128::from)
                    .cmp(&other.post.map_or(-1, i128::from))
            })
            .then_with(|| {
                self.dev
                    .map_or(i128::MAX, i128::from)
                    .cmp(&other.dev.map_or(i128::MAX, i128::from))
            })
    }

    /// A development release of a final version sorts before its pre-releases; a final version after them.
    fn pre_key(&self) -> (i8, Option<(PreKind, u64)>) {
        match (self.pre, self.post, self.dev) {
            (None, None, Some(_)) => (-1, None),
            (None, _, _) => (1, None),
            (Some(pre), _, _) => (0, Some(pre)),
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        self.cmp_public(other)
            .then_with(|| self.local.cmp(&other.local))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Release segments compared as if padded with zeros.
fn cmp_release(a: &[u64], b: &[u64]) -> Ordering {
    let len = a.len().max(b.len());
    (0..len)
        .map(|i| {
            a.get(i)
                .copied()
                .unwrap_or(0)
                .cmp(&b.get(i).copied().unwrap_or(0))
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.s.get(self.i.checked_add(offset)?).copied()
    }

    fn eat(&mut self, word: &[u8]) -> bool {
        let matches = self
            .s
            .get(self.i..)
            .is_some_and(|rest| rest.starts_with(word));
        if matches {
            self.i += word.len();
        }
        matches
    }

    fn separator(&mut self) {
        if matches!(self.peek(), Some(b'-' | b'_' | b'.')) {
            self.i += 1;
        }
    }

    /// Digits as a number; None when there are none or they overflow.
    fn number(&mut self) -> Option<u64> {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(self.s.get(start..self.i)?)
            .ok()?
            .parse()
            .ok()
    }

    /// `[-_.]?N`, or 0 when no number follows (PEP 440's implicit number).
    fn optional_number(&mut self) -> Option<u64> {
        let save = self.i;
        self.separator();
        if self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.number()
        } else {
            self.i = save;
            Some(0)
        }
    }
}

/// A comma-separated PEP 440 specifier set (`>=1,<2`, `~=1.9`, `==1.9.*`); empty accepts every version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Specifiers {
    clauses: Vec<Clause>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    op: Op,
    /// The version after the operator (for `===`, the text as written).
    text: String,
    version: Option<Version>,
    wildcard: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Compatible,
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    Arbitrary,
}

impl Specifiers {
    pub fn parse(spec: &str) -> Result<Specifiers, VersionError> {
        let error = |reason| VersionError::Specifier {
            spec: spec.to_owned(),
            reason,
        };
        let mut clauses = Vec::new();
        if spec.trim().is_empty() {
            return Ok(Specifiers { clauses });
        }
        // pip accepts one trailing comma (`>=1.0,`).
        let body = spec.trim();
        let body = body.strip_suffix(',').unwrap_or(body);
        for part in body.split(',') {
            let part = part.trim();
            let (op, rest) = [
                ("===", Op::Arbitrary),
                ("~=", Op::Compatible),
                ("==", Op::Equal),
                ("!=", Op::NotEqual),
                ("<=", Op::LessEqual),
                (">=", Op::GreaterEqual),
                ("<", Op::Less),
                (">", Op::Greater),
            ]
            .into_iter()
            .find_map(|(token, op)| part.strip_prefix(token).map(|rest| (op, rest.trim())))
            .ok_or_else(|| error("each clause starts with ==, !=, <, <=, >, >=, ~= or ==="))?;
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(error("each clause has one version after its operator"));
            }
            if op == Op::Arbitrary {
                clauses.push(Clause {
                    op,
                    text: rest.to_owned(),
                    version: None,
                    wildcard: false,
                });
                continue;
            }
            let (text, wildcard) = match rest.strip_suffix(".*") {
                Some(prefix) if matches!(op, Op::Equal | Op::NotEqual) => (prefix, true),
                Some(_) => return Err(error("a .* wildcard is only allowed with == and !=")),
                None => (rest, false),
            };
            let version = Version::parse(text).map_err(|_| error("not a PEP 440 version"))?;
            if wildcard
                && (version.is_prerelease() || version.post.is_some() || !version.local.is_empty())
            {
                return Err(error("a .* wildcard follows release numbers only"));
            }
            if !version.local.is_empty() && !matches!(op, Op::Equal | Op::NotEqual) {
                return Err(error(
                    "a local version label (+...) is only allowed with == and !=",
                ));
            }
            if op == Op::Compatible && version.release.len() < 2 {
                return Err(error("~= needs at least two release numbers (~=1.9)"));
            }
            clauses.push(Clause {
                op,
                text: text.to_owned(),
                version: Some(version),
                wildcard,
            });
        }
        Ok(Specifiers { clauses })
    }

    /// The version of a lone `==V` (no wildcard) or `===V`: the version the requirement pins.
    pub fn exact_pin(&self) -> Option<&str> {
        match self.clauses.as_slice() {
            [clause] if matches!(clause.op, Op::Equal | Op::Arbitrary) && !clause.wildcard => {
                Some(&clause.text)
            }
            _ => None,
        }
    }

    /// Whether `version` (whose text is `raw`, for `===`) satisfies every clause.
    pub fn contains(&self, version: &Version, raw: &str) -> bool {
        self.clauses
            .iter()
            .all(|clause| clause.contains(version, raw))
    }
}

impl Clause {
    fn contains(&self, candidate: &Version, raw: &str) -> bool {
        let Some(spec) = &self.version else {
            // `===` compares the strings themselves.
            return raw.trim().eq_ignore_ascii_case(&self.text);
        };
        let public = candidate.cmp_public(spec);
        match self.op {
            Op::Equal | Op::NotEqual => {
                let equal = if self.wildcard {
                    prefix_match(candidate, spec)
                } else if spec.local.is_empty() {
                    public.is_eq()
                } else {
                    candidate.cmp(spec).is_eq()
                };
                equal == (self.op == Op::Equal)
            }
            Op::Compatible => {
                let prefix = Version {
                    epoch: spec.epoch,
                    release: spec
                        .release
                        .get(..spec.release.len().saturating_sub(1))
                        .unwrap_or_default()
                        .to_vec(),
                    ..Version::default()
                };
                public.is_ge() && prefix_match(candidate, &prefix)
            }
            Op::LessEqual => public.is_le(),
            Op::GreaterEqual => public.is_ge(),
            // `<V` excludes V's own pre-releases unless V is one: below a final V means below `V.dev0`.
            Op::Less if spec.is_prerelease() => public.is_lt(),
            Op::Less => candidate
                .cmp_public(&Version {
                    dev: Some(0),
                    ..spec.clone()
                })
                .is_lt(),
            // `>V` excludes V's post-releases (and local versions) unless V is a post- or development release:
            // those share V's release and pre-release segments.
            Op::Greater => {
                let same_family = candidate.epoch == spec.epoch
                    && cmp_release(&candidate.release, &spec.release).is_eq()
                    && spec.post.is_none()
                    && spec.dev.is_none()
                    && candidate.pre == spec.pre;
                public.is_gt() && !same_family
            }
            Op::Arbitrary => false,
        }
    }
}

/// `==prefix.*`: the same epoch, and the candidate's release (padded with zeros) starts with the prefix's.
fn prefix_match(candidate: &Version, prefix: &Version) -> bool {
    candidate.epoch == prefix.epoch
        && prefix
            .release
            .iter()
            .enumerate()
            .all(|(i, &n)| candidate.release.get(i).copied().unwrap_or(0) == n)
}

#[cfg(test)]
mod tests {
    use super::super::files::{self, Requirement};
    use super::*;

    fn runtime() -> Installed {
        Installed {
            versions: [
                ("scikit-learn", "1.9.1"),
                ("xgboost", "3.2.0"),
                ("lightgbm", "4.7.0"),
                ("numpy", "2.4.6"),
                ("joblib", "1.6.0"),
                ("scipy", "1.16.0rc1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        }
    }

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn accepts(spec: &str, version: &str) -> bool {
        Specifiers::parse(spec)
            .unwrap()
            .contains(&v(version), version)
    }

    #[test]
    fn sklearn_allows_the_same_minor_version_only() {
        let installed = runtime();
        assert_eq!(check_sklearn("1.9.1", &installed), Ok(()));
        assert_eq!(check_sklearn("1.9.0", &installed), Ok(()));
        assert_eq!(check_sklearn("1.9.3.post1", &installed), Ok(()));
        let refused = check_sklearn("1.5.2", &installed).unwrap_err();
        assert_eq!(
            refused.message,
            "pickled with scikit-learn 1.5.2; this runtime has 1.9.1; the policy allows the same minor version (1.9.x)"
        );
        assert_eq!(refused.package, "scikit-learn");
        assert_eq!(refused.recorded, "1.5.2");
        assert_eq!(refused.installed.as_deref(), Some("1.9.1"));
        assert!(check_sklearn("1.10.0", &installed).is_err());
        assert!(check_sklearn("2.9.1", &installed).is_err());
        let garbage = check_sklearn("one point nine", &installed).unwrap_err();
        assert!(garbage.message.contains("not a version"), "{garbage}");
        let none = check_sklearn("1.9.1", &Installed::default()).unwrap_err();
        assert_eq!(none.installed, None);
        assert!(none.message.contains("does not have"), "{none}");
    }

    #[test]
    fn xgboost_refuses_newer_and_pre_json_models() {
        let installed = runtime();
        assert_eq!(check_xgboost("3.2.0", &installed), Ok(()));
        assert_eq!(check_xgboost("2.1.4", &installed), Ok(()));
        assert_eq!(check_xgboost("1.0.0", &installed), Ok(()));
        let newer = check_xgboost("3.3.0", &installed).unwrap_err();
        assert_eq!(
            newer.message,
            "saved by XGBoost 3.3.0; this runtime has 3.2.0; XGBoost reads models saved by its own or an older \
             version, not a newer one"
        );
        assert!(check_xgboost("3.2.1", &installed).is_err());
        assert!(check_xgboost("4.0.0", &installed).is_err());
        let old = check_xgboost("0.90", &installed).unwrap_err();
        assert!(old.message.contains("at least 1.0"), "{old}");
    }

    #[test]
    fn lightgbm_reads_its_own_format_and_older() {
        let installed = runtime();
        assert_eq!(check_lightgbm_format("v4", &installed), Ok(()));
        assert_eq!(check_lightgbm_format("v3", &installed), Ok(()));
        let newer = check_lightgbm_format("v5", &installed).unwrap_err();
        assert_eq!(
            newer.message,
            "written in LightGBM model format v5; this runtime has LightGBM 4.7.0, which reads formats up to v4"
        );
        assert!(check_lightgbm_format("4", &installed).is_err());
        let mut old = runtime();
        old.versions.insert("lightgbm".into(), "3.3.5".into());
        assert!(check_lightgbm_format("v4", &old).is_err());
        assert_eq!(check_lightgbm_format("v3", &old), Ok(()));
        assert_eq!(lightgbm_format_written_by(&v("2.2.3")), Some(2));
        assert_eq!(lightgbm_format_written_by(&v("2.3.0")), Some(3));
        assert_eq!(lightgbm_format_written_by(&v("4.0.0")), Some(4));
        assert_eq!(lightgbm_format_written_by(&v("2.0.4")), None);
        assert_eq!(lightgbm_format_written_by(&v("5.0.0")), None);
        old.versions.insert("lightgbm".into(), "5.1.0".into());
        assert_eq!(check_lightgbm_format("v4", &old), Ok(()));
    }

    #[test]
    fn numpy_allows_the_same_major_or_older() {
        let installed = runtime();
        assert_eq!(check_numpy("1.26.4", &installed), Ok(()));
        assert_eq!(check_numpy("2.0.0", &installed), Ok(()));
        assert_eq!(check_numpy("2.9.0", &installed), Ok(()));
        let newer = check_numpy("3.0.0", &installed).unwrap_err();
        assert_eq!(
            newer.message,
            "made with numpy 3.0.0; this runtime has 2.4.6; the policy allows numpy 2.x or older"
        );
    }

    #[test]
    fn versions_order_as_pep_440_says() {
        let ordered = [
            "1.0.dev0",
            "1.0a1",
            "1.0a2.dev1",
            "1.0a2",
            "1.0b1",
            "1.0rc1",
            "1.0",
            "1.0+local",
            "1.0.post1.dev0",
            "1.0.post1",
            "1.0.1",
            "1.1",
            "2!0.1",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("1.0"), v("1.0.0"));
        assert_eq!(v("1.0-ALPHA.1"), v("1.0a1"));
        assert_eq!(v("v1.0c1"), v("1.0rc1"));
        assert_eq!(v("1.0-1"), v("1.0.post1"));
        assert_eq!(v("1.0rev"), v("1.0.post0"));
        assert_eq!(v("1.0.preview2"), v("1.0rc2"));
        for bad in [
            "",
            "1.",
            ".1",
            "1..2",
            "x",
            "1.0+",
            "1.0+a..b",
            "1.0 2",
            "1.0foo",
            "99999999999999999999999",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specifiers_follow_pep_440() {
        assert!(accepts("==1.9.1", "1.9.1"));
        assert!(accepts("==1.9.1", "1.9.1.0"));
        assert!(accepts("==1.9.1", "1.9.1+cpu"));
        assert!(!accepts("==1.9.1+cpu", "1.9.1"));
        assert!(!accepts("==1.9.1", "1.9.2"));
        assert!(accepts("==1.9.*", "1.9.7"));
        assert!(accepts("==1.9.*", "1.9"));
        assert!(accepts("==1.9.*", "1.9.0rc1"));
        assert!(!accepts("==1.9.*", "1.10.0"));
        assert!(!accepts("!=1.9.*", "1.9.3"));
        assert!(accepts("!=1.9.*", "1.8.3"));
        assert!(accepts("!=1.9.0", "1.9.1"));
        assert!(!accepts("!=1.9.0", "1.9"));
        assert!(accepts("~=1.9", "1.9.1"));
        assert!(accepts("~=1.9", "1.12"));
        assert!(!accepts("~=1.9", "2.0"));
        assert!(!accepts("~=1.9", "1.8.9"));
        assert!(accepts("~=1.9.1", "1.9.5"));
        assert!(!accepts("~=1.9.1", "1.10.0"));
        assert!(!accepts("~=1.9.1", "1.9.0"));
        assert!(accepts(">=1,<2", "1.9.1"));
        assert!(!accepts(">=1,<2", "2.0"));
        assert!(accepts(">= 1.0 , != 1.5", "1.6"));
        assert!(accepts("<=1.9.1", "1.9.1"));
        assert!(accepts(">1.9", "1.9.1"));
        assert!(!accepts(">1.9", "1.9.post1"));
        assert!(accepts(">1.9.post1", "1.9.post2"));
        assert!(!accepts(">1.9", "1.9+local"));
        assert!(accepts("===1.9.1", "1.9.1"));
        assert!(!accepts("===1.9.1", "1.9.1.0"));
        assert!(accepts("", "0.1"));
        // Installed pre-releases: ordering decides, and `<V` excludes V's own pre-releases.
        assert!(accepts(">=1.0", "2.0rc1"));
        assert!(!accepts("<2", "2.0rc1"));
        assert!(accepts("<2.0rc2", "2.0rc1"));
        assert!(accepts("<2", "1.9rc1"));
        assert!(!accepts(">=2.0", "2.0rc1"));
        assert!(accepts(">=2.0rc1", "2.0rc1"));
        assert!(accepts("==2.0rc1", "2.0rc1"));
        assert!(!accepts("==2.0", "2.0.dev3"));
        assert!(accepts(">=1,", "1.0"));
        for bad in [
            "1.0",
            "=1.0",
            "==",
            ">=1.*",
            "~=1",
            "==1.0rc1.*",
            "<1.0+local",
            "== 1.0 2.0",
            ",>=1",
            ",",
            ">=1,,",
        ] {
            assert!(Specifiers::parse(bad).is_err(), "{bad}");
        }
    }

    fn reqs(text: &str) -> Vec<Requirement> {
        files::requirements(text).unwrap()
    }

    #[test]
    fn requirements_must_be_met_by_the_runtime() {
        let installed = runtime();
        // The real MLflow requirements: mlflow and pandas are not needed to load the model.
        let mlflow = reqs("mlflow==3.17.2\npandas==2.3.3\nscikit-learn==1.9.1");
        assert_eq!(check_requirements(&mlflow, &installed), Ok(()));
        assert_eq!(
            check_requirements(&reqs("xgboost-cpu==3.2.0\nxgboost==3.2.0"), &installed),
            Ok(())
        );
        assert_eq!(
            check_requirements(&reqs("joblib>=1.2,<2\nscipy>=1.15"), &installed),
            Ok(())
        );

        let torch = check_requirements(&reqs("numpy\ntorch==2.1.0"), &installed).unwrap_err();
        assert_eq!(
            torch.message,
            "requires torch, which this runtime does not have"
        );
        assert_eq!(torch.package, "torch");
        assert_eq!(torch.recorded, "==2.1.0");
        assert_eq!(torch.installed, None);

        let joblib = check_requirements(&reqs("# pinned\njoblib~=1.4.0"), &installed).unwrap_err();
        assert_eq!(
            joblib.message,
            "requires joblib~=1.4.0 (requirements.txt line 2); this runtime has joblib 1.6.0"
        );
        assert_eq!(joblib.installed.as_deref(), Some("1.6.0"));
        // A pre-release runtime package does not meet `<V` of its own release.
        assert!(check_requirements(&reqs("scipy<1.16"), &installed).is_err());
    }

    #[test]
    fn framework_pins_are_judged_by_the_framework_policy() {
        let installed = runtime();
        assert_eq!(
            check_requirements(&reqs("numpy==1.26.4"), &installed),
            Ok(())
        );
        assert_eq!(
            check_requirements(&reqs("scikit-learn==1.9.0"), &installed),
            Ok(())
        );
        assert_eq!(
            check_requirements(&reqs("xgboost==2.1.4"), &installed),
            Ok(())
        );
        assert_eq!(
            check_requirements(&reqs("lightgbm==3.3.5"), &installed),
            Ok(())
        );
        let sklearn = check_requirements(&reqs("Scikit_Learn==1.5.2"), &installed).unwrap_err();
        assert_eq!(
            sklearn.message,
            "requirements.txt line 1: pickled with scikit-learn 1.5.2; this runtime has 1.9.1; the policy allows \
             the same minor version (1.9.x)"
        );
        assert_eq!(sklearn.package, "scikit-learn");
        assert_eq!(sklearn.recorded, "==1.5.2");
        assert!(check_requirements(&reqs("xgboost==3.3.0"), &installed).is_err());
        assert!(check_requirements(&reqs("numpy==3.0.0"), &installed).is_err());
        assert!(check_requirements(&reqs("lightgbm==4.8.0"), &installed).is_ok());
        let lgb = check_requirements(&reqs("lightgbm==5.0.0"), &installed).unwrap_err();
        assert!(lgb.message.contains("does not know"), "{lgb}");
        // Other specifiers are taken as written.
        assert!(check_requirements(&reqs("numpy<2"), &installed).is_err());
        assert!(check_requirements(&reqs("scikit-learn>=1.9,<1.10"), &installed).is_ok());
    }
}
