//! The runtime catalogue: which serving image, with which defaults, a ModelDeployment's pods run.
//!
//! ```text
//!   spec.runtime, spec.server.image ───────────┐
//!   spec.model.format, .frameworkVersion ──────┼──▶ choose() ──▶ ServerRuntime: image, pull policy, resources,
//!   the ModelRuntimes the controller watches ──┤                 allowed globals (the pod template's part)
//!   the operator's image and its formats ──────┘             or NoRuntime: why, and what the catalogue holds
//! ```
//!
//! The first rule that applies decides:
//! 1. `spec.runtime` names a ModelRuntime: it must exist and serve the format (and the declared framework version,
//!    where its entry has a range); `spec.server.image` still replaces its image.
//! 2. `spec.server.image` without `spec.runtime`: that image with the operator's defaults, as before the catalogue
//!    existed; nothing is chosen.
//! 3. No ModelRuntime at all: the operator's configured image (`--server-image`) for the formats it is configured
//!    with (`--server-formats`, default onnx), exactly as before the catalogue existed, so an upgrade changes no
//!    pod template.
//! 4. Otherwise the ModelRuntimes whose formats include the model's and, when the spec declares a framework
//!    version and the runtime's entry has a range, whose range contains it: the highest priority, then the first
//!    by name.
//!
//! Pure: it reads the API types and the operator's configuration, so every rule is unit-tested without a cluster.
//! No match deploys nothing; the rollout decision turns a [`NoRuntime`] into the NoRuntime condition and event.

use std::fmt;

use ferry_contract::pep440::{Specifiers, Version};
use k8s_openapi::api::core::v1::ResourceRequirements;

use crate::api::{
    framework_of, ModelDeployment, ModelDeploymentSpec, ModelRuntime, RevisionRuntime,
    RuntimeFormat,
};
use crate::conditions::{reasons, types};
use crate::config::OperatorConfig;

/// What the serving container gets from its runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerRuntime {
    /// The ModelRuntime chosen; None for spec.server.image alone or the operator's configured image.
    pub name: Option<String>,
    pub image: String,
    pub image_pull_policy: String,
    /// Used when spec.server.resources is empty.
    pub resources: Option<ResourceRequirements>,
    /// Passed to the pods as FERRY_PYTHON_ALLOWED_GLOBALS when not empty.
    pub allowed_globals: Vec<String>,
}

impl ServerRuntime {
    /// The operator's configured image and defaults (no ModelRuntime), or spec.server.image with them.
    pub fn configured(spec: &ModelDeploymentSpec, config: &OperatorConfig) -> ServerRuntime {
        ServerRuntime {
            name: None,
            image: own_image(spec).unwrap_or(&config.server_image).to_owned(),
            image_pull_policy: config.server_image_pull_policy.clone(),
            resources: config.server_resources.clone(),
            allowed_globals: Vec::new(),
        }
    }

    /// A ModelRuntime's, with spec.server.image in place of its image when set.
    fn of(runtime: &ModelRuntime, spec: &ModelDeploymentSpec, config: &OperatorConfig) -> Self {
        let declared = &runtime.spec;
        ServerRuntime {
            name: runtime.metadata.name.clone(),
            image: own_image(spec).unwrap_or(&declared.image).to_owned(),
            image_pull_policy: declared
                .image_pull_policy
                .clone()
                .unwrap_or_else(|| config.server_image_pull_policy.clone()),
            resources: declared
                .resources
                .clone()
                .or_else(|| config.server_resources.clone()),
            allowed_globals: declared.allowed_globals.clone(),
        }
    }

    /// As the status names it.
    pub fn status(&self) -> RevisionRuntime {
        RevisionRuntime {
            name: self.name.clone(),
            image: self.image.clone(),
        }
    }
}

/// spec.server.image, when set.
fn own_image(spec: &ModelDeploymentSpec) -> Option<&str> {
    spec.server
        .image
        .as_deref()
        .filter(|image| !image.is_empty())
}

/// Why no runtime serves a ModelDeployment, with what the catalogue holds; its `Display` is the condition's
/// message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoRuntime {
    pub format: String,
    /// spec.model.frameworkVersion, when declared.
    pub declared: Option<String>,
    /// spec.runtime, and why it does not serve.
    pub explicit: Option<(String, ExplicitMiss)>,
    /// Every ModelRuntime, by name, with the formats it serves ("ferry-onnx (onnx)").
    pub runtimes: Vec<String>,
    /// With no ModelRuntime at all: the operator's image and the formats it runs.
    pub configured: Option<(String, Vec<String>)>,
}

/// Why the runtime spec.runtime names does not serve the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExplicitMiss {
    Missing,
    LacksFormat,
    /// It serves the format for these framework versions only ("scikit-learn >=1.9,<1.10").
    OutsideRange(String),
}

impl NoRuntime {
    /// "format sklearn (declared scikit-learn 1.5.2)".
    fn what(&self) -> String {
        let declared = match (&self.declared, framework_of(&self.format)) {
            (Some(version), Some(framework)) => format!(" (declared {framework} {version})"),
            (Some(version), None) => format!(" (declared version {version})"),
            (None, _) => String::new(),
        };
        format!("format {}{declared}", self.format)
    }
}

impl fmt::Display for NoRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.explicit {
            None => write!(f, "no ModelRuntime serves {}", self.what())?,
            Some((name, ExplicitMiss::Missing)) => write!(
                f,
                "spec.runtime names ModelRuntime {name}, which does not exist ({})",
                self.what()
            )?,
            Some((name, ExplicitMiss::LacksFormat)) => write!(
                f,
                "ModelRuntime {name} (spec.runtime) does not serve {}",
                self.what()
            )?,
            Some((name, ExplicitMiss::OutsideRange(range))) => write!(
                f,
                "ModelRuntime {name} (spec.runtime) serves format {} only for {range}, not the declared {}",
                self.format,
                self.declared.as_deref().unwrap_or_default()
            )?,
        }
        if self.runtimes.is_empty() {
            f.write_str("; runtimes: none")?;
            if let Some((image, formats)) = &self.configured {
                write!(
                    f,
                    " (without one, the controller's image {image} serves {})",
                    formats.join(", ")
                )?;
            }
            Ok(())
        } else {
            write!(f, "; runtimes: {}", self.runtimes.join(", "))
        }
    }
}

/// "ferry-python (sklearn scikit-learn >=1.9,<1.10, mlflow)".
fn describe(runtime: &ModelRuntime) -> String {
    let formats: Vec<String> = runtime
        .spec
        .formats
        .iter()
        .map(RuntimeFormat::describe)
        .collect();
    format!(
        "{} ({})",
        runtime.metadata.name.as_deref().unwrap_or_default(),
        formats.join(", ")
    )
}

/// How a runtime stands to a model: it serves it, lacks the format, or serves the format for other versions.
enum Fit<'a> {
    Serves,
    LacksFormat,
    OutsideRange(&'a RuntimeFormat),
}

fn fit<'a>(runtime: &'a ModelRuntime, format: &str, declared: Option<&str>) -> Fit<'a> {
    let Some(entry) = runtime.spec.formats.iter().find(|f| f.name == format) else {
        return Fit::LacksFormat;
    };
    let (Some(declared), Some(framework)) = (declared, &entry.framework) else {
        return Fit::Serves;
    };
    // Admission checks both grammars (normal forms only); one that still does not parse contains nothing.
    let contained = Specifiers::parse(&framework.versions)
        .ok()
        .zip(Version::parse(declared).ok())
        .is_some_and(|(range, version)| range.contains(&version, declared));
    if contained {
        Fit::Serves
    } else {
        Fit::OutsideRange(entry)
    }
}

/// The runtime of `spec`'s pods, from the ModelRuntimes the controller sees (in any order) and its configuration.
pub fn choose(
    spec: &ModelDeploymentSpec,
    runtimes: &[&ModelRuntime],
    config: &OperatorConfig,
) -> Result<ServerRuntime, Box<NoRuntime>> {
    let format = spec.model.format.as_str();
    let declared = spec.model.framework_version.as_deref();
    let name_of = |runtime: &ModelRuntime| runtime.metadata.name.clone().unwrap_or_default();
    let mut sorted: Vec<&ModelRuntime> = runtimes.to_vec();
    sorted.sort_by_key(|runtime| name_of(runtime));
    let no_runtime = |explicit: Option<(String, ExplicitMiss)>| {
        Box::new(NoRuntime {
            format: format.to_owned(),
            declared: declared.map(str::to_owned),
            explicit,
            runtimes: sorted.iter().map(|runtime| describe(runtime)).collect(),
            configured: sorted
                .is_empty()
                .then(|| (config.server_image.clone(), config.server_formats.clone())),
        })
    };

    if let Some(wanted) = spec.runtime.as_deref() {
        let Some(runtime) = sorted.iter().find(|runtime| name_of(runtime) == wanted) else {
            return Err(no_runtime(Some((wanted.to_owned(), ExplicitMiss::Missing))));
        };
        return match fit(runtime, format, declared) {
            Fit::Serves => Ok(ServerRuntime::of(runtime, spec, config)),
            Fit::LacksFormat => Err(no_runtime(Some((
                wanted.to_owned(),
                ExplicitMiss::LacksFormat,
            )))),
            Fit::OutsideRange(entry) => {
                let range = entry
                    .framework
                    .as_ref()
                    .map_or_else(String::new, |f| format!("{} {}", f.name, f.versions));
                Err(no_runtime(Some((
                    wanted.to_owned(),
                    ExplicitMiss::OutsideRange(range),
                ))))
            }
        };
    }
    if own_image(spec).is_some() {
        return Ok(ServerRuntime::configured(spec, config));
    }
    if sorted.is_empty() {
        return if config.server_formats.iter().any(|f| f == format) {
            Ok(ServerRuntime::configured(spec, config))
        } else {
            Err(no_runtime(None))
        };
    }
    sorted
        .iter()
        .filter(|runtime| matches!(fit(runtime, format, declared), Fit::Serves))
        // The highest priority; of equal ones, the first by name.
        .max_by(|a, b| {
            a.spec
                .priority
                .cmp(&b.spec.priority)
                .then(name_of(b).cmp(&name_of(a)))
        })
        .map(|runtime| ServerRuntime::of(runtime, spec, config))
        .ok_or_else(|| no_runtime(None))
}

/// Whether a change of `runtime` (created, changed or deleted) can change what [`choose`] gives `md`, or what its
/// status says of it: the controller reconciles those ModelDeployments when the runtime changes.
pub fn may_affect(md: &ModelDeployment, runtime: &ModelRuntime) -> bool {
    let name = runtime.metadata.name.as_deref();
    let spec = &md.spec;
    if let Some(wanted) = spec.runtime.as_deref() {
        return Some(wanted) == name;
    }
    if own_image(spec).is_some() {
        return false;
    }
    let serves_format = runtime
        .spec
        .formats
        .iter()
        .any(|f| f.name == spec.model.format);
    let Some(status) = md.status.as_ref() else {
        return true;
    };
    // The runtimes its status names: one of them changed, or one of them is the operator's image (which any
    // first ModelRuntime replaces).
    let shown: Vec<Option<&str>> = [status.active.as_deref(), status.candidate.as_deref()]
        .into_iter()
        .flatten()
        .map(|revision| revision.runtime.as_ref().and_then(|r| r.name.as_deref()))
        .collect();
    let waiting = status
        .conditions
        .iter()
        .any(|c| c.type_ == types::DEGRADED && c.reason == reasons::NO_RUNTIME);
    serves_format
        || waiting
        || shown.is_empty()
        || shown.iter().any(|shown| shown.is_none() || *shown == name)
}

#[cfg(test)]
mod tests;
