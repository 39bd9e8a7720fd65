//! The ModelDeployment API on a real kube-apiserver: installation, defaults, admission, kubectl.

mod support;

use ferry::api::{ModelDeployment, Phase, RevisionStatus};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use support::{control_plane, repo_root, TestNamespace};

fn sample(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("e2e/samples").join(name)).expect("sample exists")
}

fn sample_path(name: &str) -> String {
    repo_root()
        .join("e2e/samples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn get_json(namespace: &str, name: &str) -> Value {
    let out = control_plane().kubectl_ok(&["get", "md", name, "-n", namespace, "-o", "json"]);
    serde_json::from_str(&out).expect("kubectl prints JSON")
}

fn generation_and_version(object: &Value) -> (i64, String) {
    (
        object["metadata"]["generation"]
            .as_i64()
            .expect("generation"),
        object["metadata"]["resourceVersion"]
            .as_str()
            .expect("resourceVersion")
            .to_owned(),
    )
}

#[test]
fn crd_is_established() {
    let status = control_plane().kubectl_ok(&[
        "get",
        "crd",
        "modeldeployments.ferry.dev",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
    ]);
    assert_eq!(status, "True");
}

#[test]
fn samples_apply_client_side_and_reapplying_is_a_no_op() {
    let ns = TestNamespace::create();
    for (file, name) in [("minimal.yaml", "iris"), ("full.yaml", "fraud")] {
        let path = sample_path(file);
        control_plane().kubectl_ok(&["apply", "-n", &ns.name, "-f", &path]);
        let before = generation_and_version(&get_json(&ns.name, name));
        let again = control_plane().kubectl_ok(&["apply", "-n", &ns.name, "-f", &path]);
        assert!(
            again.contains("unchanged"),
            "second apply of {file} changed something: {again}"
        );
        assert_eq!(
            generation_and_version(&get_json(&ns.name, name)),
            before,
            "{file}"
        );
    }
}

#[test]
fn samples_apply_server_side_and_reapplying_is_a_no_op() {
    let ns = TestNamespace::create();
    for (file, name) in [("minimal.yaml", "iris"), ("full.yaml", "fraud")] {
        let path = sample_path(file);
        let args = [
            "apply",
            "--server-side",
            "--field-manager=gitops",
            "-n",
            &ns.name,
            "-f",
            &path,
        ];
        control_plane().kubectl_ok(&args);
        let before = generation_and_version(&get_json(&ns.name, name));
        assert_eq!(before.0, 1);
        control_plane().kubectl_ok(&args);
        assert_eq!(
            generation_and_version(&get_json(&ns.name, name)),
            before,
            "{file}"
        );
    }
}

/// The apiserver fills in the schema's defaults; they must be the same the Rust types assume, or the
/// controller and GitOps tools would disagree about an object nobody changed.
#[test]
fn schema_defaults_match_the_rust_defaults() {
    let ns = TestNamespace::create();
    control_plane().kubectl_ok(&["apply", "-n", &ns.name, "-f", &sample_path("minimal.yaml")]);
    let stored: ModelDeployment =
        serde_json::from_value(get_json(&ns.name, "iris")).expect("stored object parses");
    let local: ModelDeployment =
        serde_yaml::from_str(&sample("minimal.yaml")).expect("sample parses");
    assert_eq!(stored.spec, local.spec);
    let stored_json = get_json(&ns.name, "iris");
    assert_eq!(stored_json["spec"]["replicas"], 1);
    assert_eq!(stored_json["spec"]["model"]["format"], "onnx");
    assert_eq!(
        stored_json["spec"]["rollout"],
        json!({"strategy": "BlueGreen", "autoPromote": true, "loadTimeoutSeconds": 3600,
               "progressDeadlineSeconds": 300, "keepPrevious": 1, "allowSignatureChange": false,
               "maxConcurrentLoads": 1})
    );
    assert_eq!(stored_json["spec"]["revisionHistoryLimit"], 10);
}

#[tokio::test]
async fn typed_client_round_trips_spec_and_status() {
    let ns = TestNamespace::create();
    let client = control_plane().client().await;
    let api: Api<ModelDeployment> = Api::namespaced(client, &ns.name);
    let mut object: ModelDeployment =
        serde_yaml::from_str(&sample("full.yaml")).expect("sample parses");
    object.metadata.namespace = Some(ns.name.clone());
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .expect("create");
    assert_eq!(created.spec, object.spec);

    let status = json!({"status": {
        "observedGeneration": 1,
        "phase": "Available",
        "replicas": 2,
        "readyReplicas": 2,
        "selector": "ferry.dev/model-deployment=fraud,ferry.dev/revision=abc123",
        "active": {"revision": "abc123", "version": "2026-11-21", "uri": "s3://models/fraud/2026-11-21/model.onnx", "readyReplicas": 2},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "2/2 ready", "lastTransitionTime": "2026-11-21T00:00:00Z", "observedGeneration": 1}]
    }});
    let patched = api
        .patch_status("fraud", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    let patched_status = patched.status.expect("status is stored");
    assert_eq!(patched_status.phase, Some(Phase::Available));
    assert_eq!(
        patched_status.active.as_deref(),
        Some(&RevisionStatus {
            revision: "abc123".into(),
            version: "2026-11-21".into(),
            uri: "s3://models/fraud/2026-11-21/model.onnx".into(),
            ready_replicas: 2,
            ..Default::default()
        })
    );
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "a status write is not a spec change"
    );
}

/// Writes `status` (a JSON merge patch) through the status subresource, as the controller would.
fn patch_status(namespace: &str, name: &str, status: &str) {
    control_plane().kubectl_ok(&[
        "patch",
        "md",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
}

#[test]
fn kubectl_get_shows_the_printer_columns() {
    let ns = TestNamespace::create();
    control_plane().kubectl_ok(&["apply", "-n", &ns.name, "-f", &sample_path("minimal.yaml")]);
    let status = r#"{"status":{"phase":"Progressing","readyReplicas":1,"active":{"revision":"r1","version":"1.0.0","uri":"file:///m.onnx"},"candidate":{"revision":"r2","version":"1.1.0","uri":"file:///m2.onnx","progress":{"phase":"Downloading","bytesDone":450,"bytesTotal":1000,"percent":45}}}}"#;
    patch_status(&ns.name, "iris", status);
    let table = control_plane().kubectl_ok(&["get", "md", "-n", &ns.name]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "VERSION",
            "CANDIDATE",
            "PROGRESS",
            "LOADED",
            "READY",
            "PHASE",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().expect("a row").split_whitespace().collect();
    assert_eq!(
        &row[..7],
        [
            "iris",
            "1.0.0",
            "1.1.0",
            "Downloading",
            "45",
            "1",
            "Progressing"
        ]
    );

    let wide = control_plane().kubectl_ok(&[
        "get",
        "modeldeployments.ferry.dev",
        "-n",
        &ns.name,
        "-o",
        "wide",
    ]);
    assert!(
        wide.lines().next().expect("header").contains("URI"),
        "{wide}"
    );
    assert!(
        wide.contains("https://models.example.com/iris/1.0.0/model.onnx"),
        "{wide}"
    );
}

/// kubectl explain reads the published OpenAPI, which follows a new CRD by a few seconds.
fn explain(path: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let output = control_plane().kubectl(&["explain", path]);
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl explain {path} kept failing: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn kubectl_explain_shows_the_field_documentation() {
    let model = explain("modeldeployment.spec.model");
    for expected in [
        "Location of the model file",
        "sha256",
        "credentialsSecretRef",
        "<string> -required-",
    ] {
        assert!(
            model.contains(expected),
            "`kubectl explain` lacks {expected:?}:\n{model}"
        );
    }
    let rollout = explain("md.spec.rollout.keepPrevious");
    assert!(rollout.contains("previous versions kept warm"), "{rollout}");
    // The deadlines and their defaults, with the reasons for them.
    let progress = explain("md.spec.rollout.progressDeadlineSeconds");
    for expected in ["without load progress", "crash-loops", "five minutes"] {
        assert!(progress.contains(expected), "{expected:?} in:\n{progress}");
    }
    let load = explain("md.spec.rollout.loadTimeoutSeconds");
    assert!(load.contains("20 GiB model"), "{load}");
    // The gates before traffic.
    let validation = explain("md.spec.model.validation");
    for expected in ["golden set", "ferry-server golden", "ValidationFailed"] {
        assert!(
            validation.contains(expected),
            "{expected:?} in:\n{validation}"
        );
    }
    let refresh = explain("md.spec.model.refresh");
    for expected in ["never written", "sha256", "intervalSeconds"] {
        assert!(refresh.contains(expected), "{expected:?} in:\n{refresh}");
    }
    let interval = explain("md.spec.model.refresh.intervalSeconds");
    for expected in [
        "one HEAD request per pod per interval",
        "12 per pod per hour",
    ] {
        assert!(interval.contains(expected), "{expected:?} in:\n{interval}");
    }
    let signature = explain("md.spec.rollout.allowSignatureChange");
    for expected in ["SignatureChanged", "Compatible changes"] {
        assert!(
            signature.contains(expected),
            "{expected:?} in:\n{signature}"
        );
    }
}

#[test]
fn kubectl_scale_goes_through_the_scale_subresource() {
    let ns = TestNamespace::create();
    control_plane().kubectl_ok(&["apply", "-n", &ns.name, "-f", &sample_path("minimal.yaml")]);
    control_plane().kubectl_ok(&[
        "patch", "md", "iris", "-n", &ns.name, "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"replicas":1,"selector":"ferry.dev/model-deployment=iris,ferry.dev/revision=r1"}}"#,
    ]);
    control_plane().kubectl_ok(&["scale", "md/iris", "-n", &ns.name, "--replicas=3"]);
    assert_eq!(get_json(&ns.name, "iris")["spec"]["replicas"], 3);

    let scale_path = format!(
        "/apis/ferry.dev/v1alpha1/namespaces/{}/modeldeployments/iris/scale",
        ns.name
    );
    let scale: Value =
        serde_json::from_str(&control_plane().kubectl_ok(&["get", "--raw", &scale_path]))
            .expect("Scale is JSON");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["replicas"], 1);
    assert_eq!(
        scale["status"]["selector"],
        "ferry.dev/model-deployment=iris,ferry.dev/revision=r1"
    );
}

/// A valid manifest with `edit` applied to it.
fn manifest(name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut object = json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "s3://models/iris/model.onnx", "version": "1.0.0"},
        }
    });
    edit(&mut object);
    serde_json::to_string(&object).expect("manifest serializes")
}

/// A change to a valid manifest.
type Edit = Box<dyn FnOnce(&mut Value)>;

/// Each case (what, its edit, what the refusal must say) is refused by `apply` (given its index and edit), with
/// a message that says it; a list of those that were not, otherwise.
fn assert_rejected(
    cases: Vec<(&str, Edit, &str)>,
    apply: impl Fn(usize, Edit) -> std::process::Output,
) {
    let mut failures = Vec::new();
    for (index, (case, edit, expected)) in cases.into_iter().enumerate() {
        let output = apply(index, edit);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            failures.push(format!("{case}: accepted"));
        } else if !stderr.contains(expected) {
            failures.push(format!(
                "{case}: error does not contain {expected:?}: {stderr}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn malformed_manifests_are_rejected_at_admission_naming_the_field() {
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "no model",
            Box::new(|o| o["spec"] = json!({})),
            "spec.model: Required value",
        ),
        (
            "no uri",
            Box::new(|o| o["spec"]["model"] = json!({"version": "1"})),
            "spec.model.uri: Required value",
        ),
        (
            "empty uri",
            Box::new(|o| o["spec"]["model"]["uri"] = json!("")),
            "spec.model.uri",
        ),
        (
            "ftp uri",
            Box::new(|o| o["spec"]["model"]["uri"] = json!("ftp://host/m.onnx")),
            "spec.model.uri must be a URI with one of the schemes",
        ),
        (
            "relative uri",
            Box::new(|o| o["spec"]["model"]["uri"] = json!("models/m.onnx")),
            "spec.model.uri must be a URI",
        ),
        (
            "golden set from ftp",
            Box::new(|o| {
                o["spec"]["model"]["validation"] = json!({"uri": "ftp://host/golden.json"})
            }),
            "spec.model.validation.uri must be a URI with one of the schemes",
        ),
        (
            "golden set with a short sha256",
            Box::new(|o| {
                o["spec"]["model"]["validation"] =
                    json!({"uri": "s3://models/golden.json", "sha256": "ab12"})
            }),
            "spec.model.validation.sha256 in body should match",
        ),
        (
            "refresh together with a pinned sha256",
            Box::new(|o| {
                o["spec"]["model"]["sha256"] = json!("ab".repeat(32));
                o["spec"]["model"]["refresh"] = json!({});
            }),
            "spec.model.refresh and spec.model.sha256 cannot both be set",
        ),
        (
            "refresh with the strategy InPlace",
            Box::new(|o| {
                o["spec"]["model"]["refresh"] = json!({});
                o["spec"]["rollout"] = json!({"strategy": "InPlace"});
            }),
            "spec.model.refresh cannot be combined with spec.rollout.strategy InPlace",
        ),
        (
            "no concurrent loads",
            Box::new(|o| {
                o["spec"]["rollout"] = json!({"strategy": "InPlace", "maxConcurrentLoads": 0})
            }),
            "spec.rollout.maxConcurrentLoads: Invalid value",
        ),
        (
            "an unknown strategy",
            Box::new(|o| o["spec"]["rollout"] = json!({"strategy": "Canary"})),
            "spec.rollout.strategy: Unsupported value",
        ),
        (
            "refresh every 5 seconds",
            Box::new(|o| o["spec"]["model"]["refresh"] = json!({"intervalSeconds": 5})),
            "spec.model.refresh.intervalSeconds: Invalid value",
        ),
        (
            "refresh every two days",
            Box::new(|o| o["spec"]["model"]["refresh"] = json!({"intervalSeconds": 172800})),
            "spec.model.refresh.intervalSeconds: Invalid value",
        ),
        (
            "allowSignatureChange as text",
            Box::new(|o| o["spec"]["rollout"] = json!({"allowSignatureChange": "yes"})),
            "spec.rollout.allowSignatureChange",
        ),
        (
            "no version",
            Box::new(|o| o["spec"]["model"] = json!({"uri": "file:///m.onnx"})),
            "spec.model.version: Required value",
        ),
        (
            "empty version",
            Box::new(|o| o["spec"]["model"]["version"] = json!("")),
            "spec.model.version",
        ),
        (
            "long version",
            Box::new(|o| o["spec"]["model"]["version"] = json!("v".repeat(129))),
            "spec.model.version: Too long",
        ),
        (
            "padded version",
            Box::new(|o| o["spec"]["model"]["version"] = json!(" 1.0 ")),
            "spec.model.version in body should match",
        ),
        (
            "uppercase sha256",
            Box::new(|o| o["spec"]["model"]["sha256"] = json!("A".repeat(64))),
            "spec.model.sha256 in body should match",
        ),
        (
            "short sha256",
            Box::new(|o| o["spec"]["model"]["sha256"] = json!("ab12")),
            "spec.model.sha256 in body should match",
        ),
        (
            "model name with slash",
            Box::new(|o| o["spec"]["model"]["name"] = json!("a/b")),
            "spec.model.name in body should match",
        ),
        (
            "secret ref without name",
            Box::new(|o| o["spec"]["model"]["credentialsSecretRef"] = json!({})),
            "spec.model.credentialsSecretRef.name: Required value",
        ),
        (
            "negative replicas",
            Box::new(|o| o["spec"]["replicas"] = json!(-1)),
            "spec.replicas: Invalid value",
        ),
        (
            "replicas as text",
            Box::new(|o| o["spec"]["replicas"] = json!("two")),
            "spec.replicas",
        ),
        (
            "keepPrevious 11",
            Box::new(|o| o["spec"]["rollout"] = json!({"keepPrevious": 11})),
            "spec.rollout.keepPrevious: Invalid value",
        ),
        (
            "keepPrevious -1",
            Box::new(|o| o["spec"]["rollout"] = json!({"keepPrevious": -1})),
            "spec.rollout.keepPrevious: Invalid value",
        ),
        (
            "loadTimeoutSeconds 0",
            Box::new(|o| o["spec"]["rollout"] = json!({"loadTimeoutSeconds": 0})),
            "spec.rollout.loadTimeoutSeconds: Invalid value",
        ),
        (
            "loadTimeoutSeconds over a day",
            Box::new(|o| o["spec"]["rollout"] = json!({"loadTimeoutSeconds": 86401})),
            "spec.rollout.loadTimeoutSeconds: Invalid value",
        ),
        (
            "negative previousReplicas",
            Box::new(|o| o["spec"]["rollout"] = json!({"previousReplicas": -1})),
            "spec.rollout.previousReplicas: Invalid value",
        ),
        (
            "unknown strategy",
            Box::new(|o| o["spec"]["rollout"] = json!({"strategy": "Canary"})),
            "spec.rollout.strategy: Unsupported value",
        ),
        (
            "revisionHistoryLimit 101",
            Box::new(|o| o["spec"]["revisionHistoryLimit"] = json!(101)),
            "spec.revisionHistoryLimit: Invalid value",
        ),
        (
            "negative revisionHistoryLimit",
            Box::new(|o| o["spec"]["revisionHistoryLimit"] = json!(-1)),
            "spec.revisionHistoryLimit: Invalid value",
        ),
        (
            "history shorter than keepPrevious",
            Box::new(|o| {
                o["spec"]["revisionHistoryLimit"] = json!(1);
                o["spec"]["rollout"] = json!({"keepPrevious": 2})
            }),
            "spec.revisionHistoryLimit must be at least spec.rollout.keepPrevious",
        ),
        (
            "endpoint not a URL",
            Box::new(|o| o["spec"]["model"]["storage"] = json!({"endpoint": "minio:9000"})),
            "spec.model.storage.endpoint must be an http:// or https:// URL",
        ),
        (
            "endpoint with another scheme",
            Box::new(|o| o["spec"]["model"]["storage"] = json!({"endpoint": "ftp://minio:9000"})),
            "spec.model.storage.endpoint must be an http:// or https:// URL",
        ),
        (
            "http endpoint without allowHttp",
            Box::new(|o| o["spec"]["model"]["storage"] = json!({"endpoint": "http://minio:9000"})),
            "spec.model.storage.allowHttp must be true",
        ),
        (
            "storage for an https uri",
            Box::new(|o| {
                o["spec"]["model"]["uri"] = json!("https://h/m.onnx");
                o["spec"]["model"]["storage"] = json!({"region": "eu-west-1"})
            }),
            "spec.model.storage applies only to s3:// URIs",
        ),
        (
            "misspelt field",
            Box::new(|o| o["spec"]["model"]["urls"] = json!("s3://b/m.onnx")),
            "unknown field \"spec.model.urls\"",
        ),
        (
            "name too long for the Services",
            Box::new(|o| o["metadata"]["name"] = json!("m".repeat(56))),
            "metadata.name must be a DNS-1035 label",
        ),
        (
            "name starting with a digit",
            Box::new(|o| o["metadata"]["name"] = json!("1model")),
            "metadata.name must be a DNS-1035 label",
        ),
        (
            "a format Ferry does not know",
            Box::new(|o| o["spec"]["model"]["format"] = json!("tensorflow")),
            "spec.model.format: Unsupported value: \"tensorflow\"",
        ),
        (
            "a framework version that is no PEP 440 version",
            Box::new(|o| o["spec"]["model"]["frameworkVersion"] = json!("1.9-latest")),
            "spec.model.frameworkVersion in body should match",
        ),
        (
            "a runtime name that is no object name",
            Box::new(|o| o["spec"]["runtime"] = json!("Ferry_Python")),
            "spec.runtime in body should match",
        ),
    ];
    assert!(cases.len() >= 15);

    let ns = TestNamespace::create();
    assert_rejected(cases, |index, edit| {
        let body = manifest(&format!("case-{index}"), edit);
        control_plane().kubectl_with_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(&body))
    });
    let left = control_plane().kubectl_ok(&["get", "md", "-n", &ns.name, "-o", "name"]);
    assert_eq!(left.trim(), "", "nothing malformed was stored");
}

#[test]
fn refresh_is_accepted_with_its_default_interval_and_its_object_is_a_wide_column() {
    let ns = TestNamespace::create();
    let body = manifest("fraud", |o| {
        o["spec"]["model"]["refresh"] = json!({});
    });
    let output =
        control_plane().kubectl_with_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(&body));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = get_json(&ns.name, "fraud");
    assert_eq!(
        stored["spec"]["model"]["refresh"],
        json!({"intervalSeconds": 300}),
        "the apiserver fills in the default"
    );
    let status = r#"{"status":{"active":{"revision":"r1","version":"1.0.0","uri":"s3://models/iris/model.onnx","object":"etag:\"abc\""},"refresh":{"object":"etag:\"abc\"","uri":"s3://models/iris/model.onnx","detectedAt":"2026-12-02T10:00:00Z","paused":false}}}"#;
    patch_status(&ns.name, "fraud", status);
    let wide = control_plane().kubectl_ok(&["get", "md", "fraud", "-n", &ns.name, "-o", "wide"]);
    assert!(
        wide.lines().next().expect("header").contains("OBJECT"),
        "{wide}"
    );
    assert!(wide.contains("etag:\"abc\""), "{wide}");
}

/// A ModelRuntime with `edit` applied to the chart's ferry-python.
fn runtime_manifest(name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut object = json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ModelRuntime",
        "metadata": {"name": name},
        "spec": {
            "image": "registry.example.com/ferry-server-python:0.1.0",
            "formats": [
                {"name": "sklearn", "framework": {"name": "scikit-learn", "versions": ">=1.9,<1.10"}},
                {"name": "xgboost", "framework": {"name": "xgboost", "versions": ">=1.0,<=3.2"}},
                {"name": "lightgbm", "framework": {"name": "lightgbm", "versions": "<=4.7"}},
                {"name": "mlflow"},
                {"name": "python"},
            ],
            "allowedGlobals": ["team_models.*", "numpy.core.multiarray.scalar"],
        }
    });
    edit(&mut object);
    serde_json::to_string(&object).expect("manifest serializes")
}

/// A server-side dry run of `body`: admission runs in full, nothing is stored (a ModelRuntime is cluster-scoped,
/// and the plane is shared).
fn dry_run(body: &str) -> std::process::Output {
    control_plane().kubectl_with_stdin(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        Some(body),
    )
}

#[test]
fn malformed_model_runtimes_are_rejected_at_admission_naming_the_field() {
    let valid = dry_run(&runtime_manifest("ferry-python-dry-run", |_| {}));
    assert!(
        valid.status.success(),
        "the chart's ferry-python is accepted: {}",
        String::from_utf8_lossy(&valid.stderr)
    );
    for range in [
        "~=1.9.2",
        "==1.9.*",
        "!=1.9.1, >1.0",
        ">=2.0.0rc1,<3",
        "<=4.7.post1",
    ] {
        let output = dry_run(&runtime_manifest("ranges", |o| {
            o["spec"]["formats"][0]["framework"]["versions"] = json!(range)
        }));
        assert!(
            output.status.success(),
            "{range}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "a format Ferry does not know",
            Box::new(|o| o["spec"]["formats"][0]["name"] = json!("tensorflow")),
            "spec.formats[0].name: Unsupported value: \"tensorflow\"",
        ),
        (
            "no image",
            Box::new(|o| {
                o["spec"].as_object_mut().unwrap().remove("image");
            }),
            "spec.image: Required value",
        ),
        (
            "an empty image",
            Box::new(|o| o["spec"]["image"] = json!("")),
            "spec.image",
        ),
        (
            "an image with a space",
            Box::new(|o| o["spec"]["image"] = json!("ferry-server :1")),
            "spec.image in body should match",
        ),
        (
            "no formats",
            Box::new(|o| o["spec"]["formats"] = json!([])),
            "spec.formats: Invalid value",
        ),
        (
            "a format twice",
            Box::new(|o| o["spec"]["formats"][1]["name"] = json!("sklearn")),
            "duplicate entries for key [name=\"sklearn\"]",
        ),
        (
            "a range that is no PEP 440 range",
            Box::new(|o| o["spec"]["formats"][0]["framework"]["versions"] = json!(">= 1.9 <1.10")),
            "spec.formats[0].framework.versions in body should match",
        ),
        (
            "a wildcard with an ordered comparison",
            Box::new(|o| o["spec"]["formats"][0]["framework"]["versions"] = json!(">=1.*")),
            "spec.formats[0].framework.versions in body should match",
        ),
        (
            "a framework without versions",
            Box::new(|o| o["spec"]["formats"][0]["framework"] = json!({"name": "scikit-learn"})),
            "spec.formats[0].framework.versions: Required value",
        ),
        (
            "a pull policy Kubernetes does not know",
            Box::new(|o| o["spec"]["imagePullPolicy"] = json!("Sometimes")),
            "spec.imagePullPolicy: Unsupported value",
        ),
        (
            "an allowed global that is no module path",
            Box::new(|o| o["spec"]["allowedGlobals"] = json!(["os.system; rm"])),
            "spec.allowedGlobals[0] in body should match",
        ),
        (
            "an allowed global without a module",
            Box::new(|o| o["spec"]["allowedGlobals"] = json!(["eval"])),
            "spec.allowedGlobals[0]",
        ),
    ];
    assert_rejected(cases, |index, edit| {
        dry_run(&runtime_manifest(&format!("case-{index}"), edit))
    });
}

#[test]
fn kubectl_get_modelruntimes_shows_image_and_formats() {
    let ns = TestNamespace::create();
    let name = format!("{}-python", ns.name);
    let runtime = support::TestRuntime { name: name.clone() };
    control_plane().kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(&runtime_manifest(&name, |o| {
            o["spec"]["priority"] = json!(5)
        })),
    );
    let table = control_plane().kubectl_ok(&["get", "modelruntimes", &runtime.name]);
    let mut lines = table.lines();
    let header_line = lines.next().expect("header");
    let header: Vec<&str> = header_line.split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "IMAGE", "ONNX", "SKLEARN", "XGBOOST", "LIGHTGBM", "MLFLOW", "PYTHON",
            "PRIORITY", "AGE"
        ]
    );
    let row_line = lines.next().expect("a row");
    let row: Vec<&str> = row_line.split_whitespace().collect();
    assert_eq!(
        &row[..8],
        [
            name.as_str(),
            "registry.example.com/ferry-server-python:0.1.0",
            "sklearn",
            "xgboost",
            "lightgbm",
            "mlflow",
            "python",
            "5"
        ]
    );
    let onnx = header_line.find("ONNX").unwrap()..header_line.find("SKLEARN").unwrap();
    assert_eq!(
        row_line[onnx].trim(),
        "",
        "an empty cell for the format it does not serve"
    );
    let wide = control_plane().kubectl_ok(&["get", "modelruntimes", &runtime.name, "-o", "wide"]);
    assert!(
        wide.lines()
            .next()
            .unwrap()
            .contains("SCIKIT-LEARN VERSIONS"),
        "{wide}"
    );
    assert!(
        wide.contains(">=1.9,<1.10") && wide.contains(">=1.0,<=3.2"),
        "{wide}"
    );
    let stored: Value = serde_json::from_str(&control_plane().kubectl_ok(&[
        "get",
        "modelruntime",
        &name,
        "-o",
        "json",
    ]))
    .unwrap();
    let typed: ferry::api::ModelRuntime = serde_json::from_value(stored).expect("it reads back");
    assert_eq!(typed.spec.formats.len(), 5);
    let explained = explain("modelruntime.spec.formats.framework");
    assert!(explained.contains("PEP 440 range"), "{explained}");
}
