use serde_json::json;

use super::*;
use crate::api::ModelDeploymentStatus;

fn runtime(name: &str, priority: i32, formats: serde_json::Value) -> ModelRuntime {
    serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "ModelRuntime",
        "metadata": {"name": name},
        "spec": {"image": format!("registry.example.com/{name}:1"), "formats": formats, "priority": priority}
    }))
    .expect("a valid ModelRuntime")
}

/// The chart's two built-in runtimes.
fn onnx() -> ModelRuntime {
    runtime("ferry-onnx", 0, json!([{"name": "onnx"}]))
}

fn python() -> ModelRuntime {
    runtime(
        "ferry-python",
        0,
        json!([
            {"name": "sklearn", "framework": {"name": "scikit-learn", "versions": ">=1.9,<1.10"}},
            {"name": "xgboost", "framework": {"name": "xgboost", "versions": ">=1.0,<=3.2"}},
            {"name": "lightgbm", "framework": {"name": "lightgbm", "versions": "<=4.7"}},
            {"name": "mlflow"},
            {"name": "python"},
        ]),
    )
}

fn spec(format: &str, declared: Option<&str>, explicit: Option<&str>) -> ModelDeploymentSpec {
    let mut model = json!({"uri": "s3://models/m/1/model.bin", "version": "1", "format": format});
    if let Some(version) = declared {
        model["frameworkVersion"] = json!(version);
    }
    let mut spec = json!({"model": model});
    if let Some(name) = explicit {
        spec["runtime"] = json!(name);
    }
    serde_json::from_value(spec).expect("a valid spec")
}

fn config() -> OperatorConfig {
    OperatorConfig {
        server_image: "ferry-server:0.1.0".into(),
        ..OperatorConfig::default()
    }
}

fn chosen(spec: &ModelDeploymentSpec, runtimes: &[&ModelRuntime]) -> Result<String, String> {
    choose(spec, runtimes, &config())
        .map(|r| {
            r.name
                .unwrap_or_else(|| format!("(configured) {}", r.image))
        })
        .map_err(|no| no.to_string())
}

#[test]
fn the_runtime_serving_the_format_is_chosen() {
    let (onnx, python) = (onnx(), python());
    let both = [&python, &onnx];
    assert_eq!(
        chosen(&spec("onnx", None, None), &both),
        Ok("ferry-onnx".into())
    );
    for format in ["sklearn", "xgboost", "lightgbm", "mlflow", "python"] {
        assert_eq!(
            chosen(&spec(format, None, None), &both),
            Ok("ferry-python".into()),
            "{format}"
        );
    }
    let server = choose(&spec("sklearn", None, None), &both, &config()).unwrap();
    assert_eq!(server.image, "registry.example.com/ferry-python:1");
    assert_eq!(
        server.status(),
        RevisionRuntime {
            name: Some("ferry-python".into()),
            image: "registry.example.com/ferry-python:1".into()
        }
    );
}

#[test]
fn the_highest_priority_wins_and_equal_priorities_go_to_the_first_by_name() {
    let (second, first, higher) = (
        runtime("b-onnx", 0, json!([{"name": "onnx"}])),
        runtime("a-onnx", 0, json!([{"name": "onnx"}])),
        runtime("c-onnx", 5, json!([{"name": "onnx"}])),
    );
    let onnx_spec = spec("onnx", None, None);
    assert_eq!(chosen(&onnx_spec, &[&second, &first]), Ok("a-onnx".into()));
    assert_eq!(
        chosen(&onnx_spec, &[&first, &second]),
        Ok("a-onnx".into()),
        "whatever the order seen"
    );
    assert_eq!(
        chosen(&onnx_spec, &[&second, &first, &higher]),
        Ok("c-onnx".into())
    );
    let lower = runtime("0-onnx", -1, json!([{"name": "onnx"}]));
    assert_eq!(chosen(&onnx_spec, &[&lower, &second]), Ok("b-onnx".into()));
}

#[test]
fn a_declared_version_must_be_in_the_range_of_the_runtimes_entry() {
    let python = python();
    let older = runtime(
        "python-sklearn-1-5",
        0,
        json!([{"name": "sklearn", "framework": {"name": "scikit-learn", "versions": "~=1.5.0"}}]),
    );
    let both = [&python, &older];
    assert_eq!(
        chosen(&spec("sklearn", Some("1.9.1"), None), &both),
        Ok("ferry-python".into())
    );
    assert_eq!(
        chosen(&spec("sklearn", Some("1.5.2"), None), &both),
        Ok("python-sklearn-1-5".into())
    );
    assert_eq!(
        chosen(&spec("sklearn", Some("1.5.2"), None), &[&python, &onnx()]),
        Err("no ModelRuntime serves format sklearn (declared scikit-learn 1.5.2); runtimes: ferry-onnx \
             (onnx), ferry-python (sklearn scikit-learn >=1.9,<1.10, xgboost xgboost >=1.0,<=3.2, lightgbm \
             lightgbm <=4.7, mlflow, python)"
            .into())
    );
    assert!(chosen(&spec("xgboost", Some("3.3.0"), None), &both).is_err());
    assert_eq!(
        chosen(&spec("xgboost", Some("3.2"), None), &both),
        Ok("ferry-python".into())
    );
    // No range, no declared version: any.
    assert_eq!(
        chosen(&spec("mlflow", Some("2.19.0"), None), &both),
        Ok("ferry-python".into())
    );
    assert_eq!(
        chosen(&spec("sklearn", None, None), &both),
        Ok("ferry-python".into()),
        "nothing declared: every runtime of the format"
    );
}

#[test]
fn an_explicit_runtime_must_exist_and_serve_the_format_and_version() {
    let (onnx, python) = (onnx(), python());
    let fast = runtime("fast-onnx", 10, json!([{"name": "onnx"}]));
    let all = [&onnx, &python, &fast];
    assert_eq!(
        chosen(&spec("onnx", None, Some("ferry-onnx")), &all),
        Ok("ferry-onnx".into()),
        "named, whatever the priorities"
    );
    assert_eq!(
        chosen(&spec("sklearn", None, Some("ferry-onnx")), &all),
        Err("ModelRuntime ferry-onnx (spec.runtime) does not serve format sklearn; runtimes: fast-onnx \
             (onnx), ferry-onnx (onnx), ferry-python (sklearn scikit-learn >=1.9,<1.10, xgboost xgboost \
             >=1.0,<=3.2, lightgbm lightgbm <=4.7, mlflow, python)"
            .into())
    );
    let missing = chosen(&spec("onnx", None, Some("gpu-onnx")), &all).unwrap_err();
    assert!(
        missing.starts_with(
            "spec.runtime names ModelRuntime gpu-onnx, which does not exist (format onnx); runtimes: fast-onnx"
        ),
        "{missing}"
    );
    assert!(
        chosen(&spec("onnx", None, Some("gpu-onnx")), &[]).is_err(),
        "an explicit name never falls back to the operator's image"
    );
    let outside = chosen(&spec("sklearn", Some("1.5.2"), Some("ferry-python")), &all).unwrap_err();
    assert!(
        outside.starts_with(
            "ModelRuntime ferry-python (spec.runtime) serves format sklearn only for scikit-learn >=1.9,<1.10, \
             not the declared 1.5.2; runtimes:"
        ),
        "{outside}"
    );
}

#[test]
fn without_any_runtime_the_operators_image_serves_its_formats_as_before() {
    let configured = choose(&spec("onnx", None, None), &[], &config()).unwrap();
    let before = ServerRuntime::configured(&spec("onnx", None, None), &config());
    assert_eq!(configured, before);
    assert_eq!(configured.name, None);
    assert_eq!(configured.image, "ferry-server:0.1.0");
    assert_eq!(
        chosen(&spec("sklearn", Some("1.9.1"), None), &[]),
        Err("no ModelRuntime serves format sklearn (declared scikit-learn 1.9.1); runtimes: none (without \
             one, the controller's image ferry-server:0.1.0 serves onnx)"
            .into())
    );
    // Once any runtime exists, the catalogue decides: onnx needs a runtime of its own.
    let python = python();
    assert_eq!(
        chosen(&spec("onnx", None, None), &[&python]).unwrap_err(),
        "no ModelRuntime serves format onnx; runtimes: ferry-python (sklearn scikit-learn >=1.9,<1.10, \
         xgboost xgboost >=1.0,<=3.2, lightgbm lightgbm <=4.7, mlflow, python)"
    );
}

#[test]
fn an_image_of_the_spec_is_its_own_choice_and_replaces_an_explicit_runtimes_image() {
    let mut custom = spec("python", None, None);
    custom.server.image = Some("registry.example.com/team/own:3".into());
    let python = python();
    let server = choose(&custom, &[&python], &config()).unwrap();
    assert_eq!(server, ServerRuntime::configured(&custom, &config()));
    assert_eq!(server.image, "registry.example.com/team/own:3");
    assert_eq!(server.name, None);

    custom.runtime = Some("ferry-python".into());
    let mut python = python;
    python.spec.allowed_globals = vec!["team_models.*".into()];
    python.spec.image_pull_policy = Some("Always".into());
    let server = choose(&custom, &[&python], &config()).unwrap();
    assert_eq!(server.name.as_deref(), Some("ferry-python"));
    assert_eq!(server.image, "registry.example.com/team/own:3");
    assert_eq!(server.image_pull_policy, "Always");
    assert_eq!(server.allowed_globals, ["team_models.*"]);
}

#[test]
fn a_runtime_brings_its_defaults_and_the_operators_fill_in() {
    let mut python = python();
    let operator = OperatorConfig {
        server_image_pull_policy: "Never".into(),
        server_resources: Some(serde_json::from_value(json!({"requests": {"cpu": "1"}})).unwrap()),
        ..config()
    };
    let server = choose(&spec("sklearn", None, None), &[&python], &operator).unwrap();
    assert_eq!(server.image_pull_policy, "Never");
    assert_eq!(server.resources, operator.server_resources);
    assert!(server.allowed_globals.is_empty());
    python.spec.resources =
        Some(serde_json::from_value(json!({"limits": {"memory": "4Gi"}})).unwrap());
    let server = choose(&spec("sklearn", None, None), &[&python], &operator).unwrap();
    assert_eq!(server.resources, python.spec.resources);
}

#[test]
fn a_format_this_build_does_not_know_is_served_by_nothing() {
    let legacy = spec("pmml", None, None);
    assert_eq!(
        chosen(&legacy, &[&onnx()]),
        Err("no ModelRuntime serves format pmml; runtimes: ferry-onnx (onnx)".into())
    );
}

fn md_with(spec: ModelDeploymentSpec, status: Option<serde_json::Value>) -> ModelDeployment {
    let mut md = ModelDeployment::new("m", spec);
    md.status = status.map(|s| serde_json::from_value::<ModelDeploymentStatus>(s).unwrap());
    md
}

#[test]
fn a_runtime_change_concerns_the_model_deployments_it_can_serve_or_served() {
    let (onnx, python) = (onnx(), python());
    let serving = |name: Option<&str>| {
        let mut runtime = json!({"image": "x"});
        if let Some(name) = name {
            runtime["name"] = json!(name);
        }
        Some(
            json!({"active": {"revision": "r", "version": "1", "uri": "s3://m", "runtime": runtime}}),
        )
    };
    // By the format it serves.
    let sklearn = md_with(spec("sklearn", None, None), serving(Some("ferry-python")));
    assert!(may_affect(&sklearn, &python));
    assert!(!may_affect(&sklearn, &onnx));
    // By the runtime it got, whatever the formats now.
    let on_onnx = md_with(spec("sklearn", None, None), serving(Some("ferry-onnx")));
    assert!(may_affect(&on_onnx, &onnx));
    // On the operator's image: any first runtime ends that.
    let configured = md_with(spec("onnx", None, None), serving(None));
    assert!(may_affect(&configured, &python));
    // Waiting for a runtime, or never reconciled.
    let waiting = md_with(
        spec("sklearn", None, None),
        Some(
            json!({"conditions": [{"type": "Degraded", "status": "True", "reason": "NoRuntime",
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
        ),
    );
    assert!(may_affect(&waiting, &onnx));
    assert!(may_affect(
        &md_with(spec("onnx", None, None), None),
        &python
    ));
    // Named: that one only.
    let named = md_with(
        spec("onnx", None, Some("ferry-onnx")),
        serving(Some("ferry-onnx")),
    );
    assert!(may_affect(&named, &onnx));
    assert!(!may_affect(
        &named,
        &runtime("other-onnx", 9, json!([{"name": "onnx"}]))
    ));
    // Its own image: none.
    let mut own = spec("onnx", None, None);
    own.server.image = Some("mine:1".into());
    assert!(!may_affect(&md_with(own, None), &onnx));
}
