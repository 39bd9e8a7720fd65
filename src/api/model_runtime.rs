//! `ferry.dev/v1alpha1`: the `ModelRuntime` resource, the cluster's catalogue of serving images.
//!
//! A platform team declares which image serves which model formats (and, per format, which framework versions);
//! the controller picks one for each ModelDeployment (`crate::catalogue`). Cluster-scoped: one catalogue for every
//! namespace. The controller only reads it.
//!
//! Format names are strings in Rust and an enum in the schema: admission refuses a name Ferry does not know,
//! while an object written by a newer Ferry (with a format this build does not know) still reads, and simply
//! serves nothing this build asks for.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition,
};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

/// The model formats Ferry knows, as `spec.model.format` and a ModelRuntime's `formats[].name` name them.
pub const MODEL_FORMATS: [&str; 6] = ["onnx", "sklearn", "xgboost", "lightgbm", "mlflow", "python"];

/// The pull policies a container may have.
pub const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];

/// The framework a model of `format` is made with, by the name its packages go by (for messages: "declared
/// scikit-learn 1.5.2"); None where the format names no one framework.
pub fn framework_of(format: &str) -> Option<&'static str> {
    match format {
        "sklearn" => Some("scikit-learn"),
        "xgboost" => Some("xgboost"),
        "lightgbm" => Some("lightgbm"),
        "mlflow" => Some("mlflow"),
        _ => None,
    }
}

/// A serving image and the model formats it serves, for the controller to choose from. A ModelDeployment gets the
/// runtime its `spec.runtime` names, else the one of highest priority (then first by name) that serves its
/// `spec.model.format` and, when the ModelDeployment declares `spec.model.frameworkVersion`, whose range for that
/// format contains it. None matching: nothing is deployed, and the ModelDeployment says why (reason NoRuntime).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "ModelRuntime",
    category = "ferry",
    derive = "PartialEq",
    doc = "A serving image and the model formats it serves: the catalogue ModelDeployments get their runtime from.",
    printcolumn(
        name = "Image",
        type_ = "string",
        description = "Serving image",
        json_path = ".spec.image"
    ),
    printcolumn(
        name = "Priority",
        type_ = "integer",
        description = "Higher wins among the runtimes that serve a ModelDeployment",
        json_path = ".spec.priority"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ModelRuntimeSpec {
    /// The serving image: ferry-server, or an image built on it (its Python image with extra packages). Pods of
    /// a ModelDeployment that names its own `spec.server.image` run that one instead.
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^\S+$"))]
    pub image: String,

    /// Pull policy of the image: Always, IfNotPresent or Never. Empty: the controller's configured pull policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = PULL_POLICIES))]
    pub image_pull_policy: Option<String>,

    /// The model formats the image serves, each at most once, with the framework versions it loads where that
    /// matters.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub formats: Vec<RuntimeFormat>,

    /// CPU and memory of the server container when the ModelDeployment sets no `spec.server.resources`. Empty:
    /// the controller's configured defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Globals a pickled model may import beyond ferry-server's own allow-list, passed to the pods as
    /// FERRY_PYTHON_ALLOWED_GLOBALS: `module.name`, or `module.*` for a module and its submodules (the classes
    /// of custom estimators an image adds). Every other global refuses the model with UnsafeModel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(
            length(min = 3, max = 512),
            regex(
                pattern = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\.([A-Za-z_][A-Za-z0-9_]*|\*)$"
            )
        )
    )]
    pub allowed_globals: Vec<String>,

    /// Among the runtimes that serve a ModelDeployment, the highest priority wins; equal priorities go to the
    /// first by name. Explicit choices (`spec.runtime`) ignore it.
    #[serde(default)]
    pub priority: i32,
}

/// One model format a runtime serves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeFormat {
    /// The format, as `spec.model.format` names it: onnx, sklearn, xgboost, lightgbm, mlflow or python.
    #[schemars(extend("enum" = MODEL_FORMATS))]
    pub name: String,

    /// The framework the image loads this format with, and the versions of models it accepts. Absent: models
    /// of any declared version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<Framework>,
}

/// A framework and the range of model versions a runtime accepts for it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Framework {
    /// The framework's package name, e.g. scikit-learn, xgboost, lightgbm.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
    )]
    pub name: String,

    /// The versions of models it accepts, as a PEP 440 range: comma-separated clauses of ==, !=, <=, >=, <, >
    /// or ~= and a version (==1.9.* and !=1.9.* match a prefix), e.g. ">=1.9,<1.10". A ModelDeployment that
    /// declares spec.model.frameworkVersion outside it is not served by this runtime.
    #[schemars(length(min = 1, max = 256), regex(pattern = VERSION_RANGE_PATTERN))]
    pub versions: String,
}

/// The grammar of `Framework::versions`: PEP 440 ranges in their normal form, each of which
/// `ferry_contract::pep440::Specifiers` reads (tested below).
pub const VERSION_RANGE_PATTERN: &str = concat!(
    r"^\s*(((==|!=)\s*[0-9]+(\.[0-9]+)*(\.\*|((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?))",
    r"|(~=\s*[0-9]+(\.[0-9]+)+((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?)",
    r"|((<=|>=|<|>)\s*[0-9]+(\.[0-9]+)*((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?))\s*",
    r"(,\s*(((==|!=)\s*[0-9]+(\.[0-9]+)*(\.\*|((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?))",
    r"|(~=\s*[0-9]+(\.[0-9]+)+((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?)",
    r"|((<=|>=|<|>)\s*[0-9]+(\.[0-9]+)*((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?))\s*)*$"
);

/// The grammar of `spec.model.frameworkVersion`: a PEP 440 version in its normal form, with an optional local
/// label (`1.9.1`, `2.1.0rc1`, `1.5.2.post1`, `2.0.3+cpu`), each of which `ferry_contract::pep440::Version` reads.
pub const VERSION_PATTERN: &str = r"^[0-9]+(\.[0-9]+)*((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?(\+[a-z0-9]+(\.[a-z0-9]+)*)?$";

/// The CustomResourceDefinition, with a printer column per format after the image: a column shows only the first
/// value of its path, so `.spec.formats[*].name` would name one format of many. Each shows the format's name where
/// the runtime serves it; `-o wide` adds the framework ranges.
pub fn model_runtime_crd() -> CustomResourceDefinition {
    let mut crd = ModelRuntime::crd();
    let column = |name: String, path: String, description: String, priority: Option<i32>| {
        CustomResourceColumnDefinition {
            name,
            type_: "string".into(),
            json_path: path,
            description: Some(description),
            priority,
            ..Default::default()
        }
    };
    let served = MODEL_FORMATS.iter().map(|format| {
        column(
            (*format).to_owned(),
            format!(".spec.formats[?(@.name==\"{format}\")].name"),
            format!("{format} when it serves that format"),
            None,
        )
    });
    let ranges = MODEL_FORMATS
        .iter()
        .filter_map(|format| Some((format, framework_of(format)?)))
        .map(|(format, framework)| {
            column(
                format!("{framework} versions"),
                format!(".spec.formats[?(@.name==\"{format}\")].framework.versions"),
                format!("The {framework} versions of {format} models it accepts"),
                Some(1),
            )
        });
    for version in &mut crd.spec.versions {
        let columns = version
            .additional_printer_columns
            .get_or_insert_with(Vec::new);
        let after_image = columns
            .iter()
            .position(|c| c.name == "Image")
            .map_or(0, |i| i + 1);
        columns.splice(after_image..after_image, served.clone());
        columns.extend(ranges.clone());
    }
    crd
}

impl RuntimeFormat {
    /// "sklearn scikit-learn >=1.9,<1.10", or "mlflow".
    pub fn describe(&self) -> String {
        match &self.framework {
            Some(framework) => format!("{} {} {}", self.name, framework.name, framework.versions),
            None => self.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use ferry_contract::pep440::{Specifiers, Version};
    use regex::Regex;
    use serde_json::{json, Value};

    use super::*;

    fn crd() -> Value {
        serde_json::to_value(model_runtime_crd()).expect("CRD serializes")
    }

    #[test]
    fn the_catalogue_is_cluster_scoped_and_lists_image_and_each_format() {
        let crd = crd();
        assert_eq!(crd["spec"]["scope"], "Cluster");
        let columns: Vec<(&str, &str, i64)> = crd["spec"]["versions"][0]
            ["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap(),
                    c["jsonPath"].as_str().unwrap(),
                    c["priority"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
        assert_eq!(
            names,
            [
                "Image",
                "onnx",
                "sklearn",
                "xgboost",
                "lightgbm",
                "mlflow",
                "python",
                "Priority",
                "Age",
                "scikit-learn versions",
                "xgboost versions",
                "lightgbm versions",
                "mlflow versions"
            ]
        );
        assert_eq!(columns[2].1, ".spec.formats[?(@.name==\"sklearn\")].name");
        assert_eq!(
            columns[9],
            (
                "scikit-learn versions",
                ".spec.formats[?(@.name==\"sklearn\")].framework.versions",
                1
            )
        );
    }

    #[test]
    fn format_names_and_pull_policies_are_enums_and_formats_are_keyed_by_name() {
        let crd = crd();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let formats = &spec["properties"]["formats"];
        assert_eq!(
            formats["items"]["properties"]["name"]["enum"],
            json!(MODEL_FORMATS)
        );
        assert_eq!(formats["x-kubernetes-list-type"], "map");
        assert_eq!(formats["x-kubernetes-list-map-keys"], json!(["name"]));
        assert_eq!(
            spec["properties"]["imagePullPolicy"]["enum"],
            json!(PULL_POLICIES)
        );
        assert_eq!(spec["required"], json!(["formats", "image"]));
        assert_eq!(spec["properties"]["priority"]["default"], 0);
    }

    #[test]
    fn every_schema_property_is_documented() {
        fn undocumented(schema: &Value, path: &str, missing: &mut Vec<String>) {
            for (name, child) in schema["properties"].as_object().into_iter().flatten() {
                let child_path = format!("{path}.{name}");
                if child["description"].as_str().unwrap_or("").is_empty() {
                    missing.push(child_path.clone());
                }
                undocumented(child, &child_path, missing);
            }
            if schema["items"].is_object() {
                undocumented(&schema["items"], &format!("{path}[]"), missing);
            }
        }
        let crd = crd();
        let mut missing = Vec::new();
        undocumented(
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"],
            "spec",
            &mut missing,
        );
        assert!(
            missing.is_empty(),
            "fields without documentation: {missing:?}"
        );
    }

    #[test]
    fn a_runtime_of_a_format_this_build_does_not_know_still_reads() {
        let runtime: ModelRuntime = serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "ModelRuntime",
            "metadata": {"name": "future"},
            "spec": {"image": "ferry-server:9", "formats": [{"name": "pytorch"}]}
        }))
        .expect("an unknown format name reads");
        assert_eq!(runtime.spec.formats[0].name, "pytorch");
        assert_eq!(runtime.spec.priority, 0);
    }

    /// How admission and `ferry_contract::pep440` stand to one text.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Reading {
        /// Admitted, and it parses.
        Admitted,
        /// Neither.
        Refused,
        /// PEP 440 reads it, admission does not: a spelling it asks in the normal form, or a part of PEP 440 that
        /// no runtime range needs.
        OnlyPep440,
    }

    fn reading(pattern: &Regex, text: &str, parses: bool) -> Reading {
        match (pattern.is_match(text), parses) {
            (true, true) => Reading::Admitted,
            (false, false) => Reading::Refused,
            (false, true) => Reading::OnlyPep440,
            (true, false) => panic!("{text:?} is admitted and does not parse"),
        }
    }

    fn range_reading(text: &str) -> Reading {
        static PATTERN: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(VERSION_RANGE_PATTERN).expect("the pattern compiles"));
        reading(&PATTERN, text, Specifiers::parse(text).is_ok())
    }

    fn version_reading(text: &str) -> Reading {
        static PATTERN: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(VERSION_PATTERN).expect("the pattern compiles"));
        reading(&PATTERN, text, Version::parse(text).is_ok())
    }

    #[test]
    fn every_range_admission_takes_parses_and_what_it_refuses_does_not_or_is_no_normal_form() {
        use Reading::*;
        for (range, expected) in [
            (">=1.9,<1.10", Admitted),
            (">=1.0,<=3.2", Admitted),
            ("<=4.7", Admitted),
            ("~=1.9.2", Admitted),
            ("==1.9.*", Admitted),
            ("!=1.9.1, >1.0", Admitted),
            (">=2.0.0rc1,<3", Admitted),
            ("<=4.7.post1", Admitted),
            (" >= 1.9 , < 2 ", Admitted),
            ("~=1.9rc1", Admitted),
            (">1.0a1.post2.dev3", Admitted),
            ("1.9", Refused),
            (">=", Refused),
            ("=>1.9", Refused),
            (">=1.*", Refused),
            ("~=1", Refused),
            ("~=1.9.*", Refused),
            ("==1.9rc1.*", Refused),
            (">= 1.9 <1.10", Refused),
            (">=1.9,,<2", Refused),
            (",>=1.9", Refused),
            ("<1.0+cpu", Refused),
            ("==one", Refused),
            // Spellings: admission asks the normal form.
            (">=v1.9", OnlyPep440),
            (">=1.9-rc1", OnlyPep440),
            (">=1.9RC1", OnlyPep440),
            (">=1.9-1", OnlyPep440),
            (">=1.9,", OnlyPep440),
            // Parts of PEP 440 no runtime range needs; an empty set is a requirement without a specifier (any
            // version), and admission asks a range of at least one clause.
            ("", OnlyPep440),
            ("  ", OnlyPep440),
            ("==1.9+cpu", OnlyPep440),
            (">=1!1.9", OnlyPep440),
            ("===1.9", OnlyPep440),
        ] {
            assert_eq!(range_reading(range), expected, "{range:?}");
        }
    }

    #[test]
    fn ranges_built_of_normal_forms_are_admitted_exactly_when_they_parse() {
        let operators = ["==", "!=", "<=", ">=", "<", ">", "~="];
        let versions = [
            "1",
            "1.9",
            "1.9.2",
            "1.9rc1",
            "2.0b1",
            "1a2",
            "1.9.post1",
            "1.9.dev0",
            "1.9rc1.post2.dev3",
            "1.*",
            "1.9.*",
            "1.9rc1.*",
            "1.9.post1.*",
        ];
        let clauses: Vec<String> = operators
            .iter()
            .flat_map(|op| {
                versions
                    .iter()
                    .flat_map(move |v| [format!("{op}{v}"), format!("{op} {v}")])
            })
            .collect();
        let mut admitted = 0;
        for first in &clauses {
            for range in std::iter::once(first.clone())
                .chain(clauses.iter().map(|second| format!("{first},{second}")))
            {
                let reading = range_reading(&range);
                assert_ne!(reading, Reading::OnlyPep440, "{range:?}");
                admitted += usize::from(reading == Reading::Admitted);
            }
        }
        // Most combinations are ranges; the sweep is no sweep of refusals only.
        assert!(admitted > clauses.len() * clauses.len() / 2, "{admitted}");
    }

    #[test]
    fn every_framework_version_admission_takes_parses() {
        use Reading::*;
        for release in ["0", "1", "1.9", "1.9.1", "2024.10.0.1"] {
            for pre in ["", "a1", "b2", "rc10"] {
                for post in ["", ".post0", ".post3"] {
                    for dev in ["", ".dev0", ".dev7"] {
                        for local in ["", "+cpu", "+cu121.torch2", "+1"] {
                            let version = format!("{release}{pre}{post}{dev}{local}");
                            assert_eq!(version_reading(&version), Admitted, "{version:?}");
                        }
                    }
                }
            }
        }
        for (version, expected) in [
            ("", Refused),
            ("1.", Refused),
            (".1", Refused),
            ("1..2", Refused),
            ("one", Refused),
            ("1.9-latest", Refused),
            ("1.2+", Refused),
            ("v1.2", OnlyPep440),
            ("1.2-rc1", OnlyPep440),
            ("1.2 ", OnlyPep440),
            ("1.2+CPU", OnlyPep440),
            ("1!1.2", OnlyPep440),
        ] {
            assert_eq!(version_reading(version), expected, "{version:?}");
        }
    }

    #[test]
    fn a_format_describes_itself_with_its_range() {
        let sklearn = RuntimeFormat {
            name: "sklearn".into(),
            framework: Some(Framework {
                name: "scikit-learn".into(),
                versions: ">=1.9,<1.10".into(),
            }),
        };
        assert_eq!(sklearn.describe(), "sklearn scikit-learn >=1.9,<1.10");
        assert_eq!(
            RuntimeFormat {
                name: "mlflow".into(),
                framework: None
            }
            .describe(),
            "mlflow"
        );
    }
}
