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
//!   accepts (PEP 440, as `contract::pep440` reads it). Two kinds of line are judged differently:
//!   - packages needed only to save or describe a model, not to load it ([`NOT_NEEDED_TO_LOAD`]), are skipped;
//!   - an exact pin (`==V` or `===V`) of scikit-learn, XGBoost, LightGBM or numpy is read as the version that
//!     saved the model and judged by that framework's policy above, so that a runtime with a compatible
//!     release (say scikit-learn 1.9.2 for a model pinned at 1.9.1) still loads it.
//!
//! Installed pre-releases are judged by PEP 440 ordering alone, as `pip check` does: `>=1.0` accepts 2.0rc1,
//! `<2` does not.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::contract::pep440::{cmp_release, normalise_name, Specifiers, Version};

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

/// How a version of `package` a model was made with is judged, for the frameworks with a policy of their own.
pub type PolicyCheck = fn(&str, &Installed) -> Result<(), Incompatible>;

/// The policy of `package` (normalised) for the version a model was made with: scikit-learn, XGBoost, LightGBM
/// (by the format that release writes) and numpy have their own; others none.
pub fn framework_policy(package: &str) -> Option<PolicyCheck> {
    match package {
        "scikit-learn" => Some(check_sklearn),
        "xgboost" => Some(check_xgboost),
        "lightgbm" => Some(check_lightgbm_pin),
        "numpy" => Some(check_numpy),
        _ => None,
    }
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
            if let Some(check) = framework_policy(package) {
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
