//! The Helm chart `charts/ferry` with the real tools: `helm lint --strict`, `helm template` checked by the API
//! server (`kubectl apply --dry-run=server`), a real `helm install`, `helm upgrade` and `helm uninstall` against
//! the test control plane, the values schema, the chart's copy of the CRDs and the README's configuration table,
//! and the built-in ModelRuntimes (the onnx one keeps every ONNX revision of an upgrade as it was).
//!
//! ModelRuntimes are cluster-scoped and the plane is shared: every release or dry run here names its built-in
//! runtimes after its namespace.
//!
//! There is no kubelet: the controller's pods are created (proving the pod spec passes the namespace's
//! `restricted` Pod Security level) but never run.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use support::{control_plane, repo_root, TestNamespace, INSTALL_HINT};

/// `--set` arguments that name the built-in runtimes of a release in `namespace` after it.
fn runtime_names(namespace: &str) -> [String; 4] {
    [
        "--set".into(),
        format!("runtimes.onnx.name={namespace}-onnx"),
        "--set".into(),
        format!("runtimes.python.name={namespace}-python"),
    ]
}

fn chart_dir() -> PathBuf {
    repo_root().join("charts/ferry")
}

/// The helm binary the control-plane script installs (found without starting a control plane).
fn helm_binary() -> PathBuf {
    let output = Command::new("bash")
        .arg(repo_root().join("e2e/control-plane.sh"))
        .arg("bin-dir")
        .output()
        .expect("bash runs e2e/control-plane.sh");
    let helm = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("helm");
    assert!(
        output.status.success() && helm.is_file(),
        "helm is not installed; install it with `{INSTALL_HINT}`"
    );
    helm
}

/// Runs helm; `kubeconfig` points it at a cluster (`None` for commands that need none).
fn helm(args: &[&str], kubeconfig: Option<&Path>) -> Output {
    let mut command = Command::new(helm_binary());
    command.args(args);
    match kubeconfig {
        Some(path) => command.env("KUBECONFIG", path),
        // A kubeconfig that does not exist: commands that need no cluster must not reach one.
        None => command.env("KUBECONFIG", "/nonexistent/kubeconfig"),
    };
    command.output().expect("helm runs")
}

fn helm_ok(args: &[&str], kubeconfig: Option<&Path>) -> String {
    let output = helm(args, kubeconfig);
    assert!(
        output.status.success(),
        "helm {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `helm template` of the chart into `namespace` with extra arguments (`--set ...`).
fn template(namespace: &str, extra: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        "ferry",
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    args.extend_from_slice(extra);
    helm_ok(&args, None)
}

/// The objects of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|document| {
            let value = Value::deserialize(document).expect("helm renders valid YAML");
            (!value.is_null()).then_some(value)
        })
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {}", summary(objects)))
}

fn summary(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn env_of(deployment: &Value) -> BTreeMap<String, Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("the controller container has env")
        .iter()
        .map(|e| {
            let value = e
                .get("value")
                .cloned()
                .unwrap_or_else(|| e["valueFrom"].clone());
            (e["name"].as_str().unwrap().to_owned(), value)
        })
        .collect()
}

#[test]
fn the_charts_crds_are_the_generated_crds() {
    let fix = "cargo run -- crd --output-dir crds --output-dir charts/ferry/crds";
    let chart_crds = chart_dir().join("crds");
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| {
                panic!(
                    "{} is unreadable ({e}); create it with `{fix}`",
                    dir.display()
                )
            })
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let generated: BTreeSet<String> = ferry::crd::files()
        .unwrap()
        .into_iter()
        .map(|f| f.file_name)
        .collect();
    assert_eq!(
        names(&chart_crds),
        generated,
        "charts/ferry/crds/ must hold exactly the generated CRDs; remove strays and run `{fix}`"
    );
    for file in ferry::crd::files().unwrap() {
        let in_chart = std::fs::read_to_string(chart_crds.join(&file.file_name)).unwrap();
        let top_level = std::fs::read_to_string(repo_root().join("crds").join(&file.file_name))
            .unwrap_or_default();
        assert!(
            in_chart == file.yaml && in_chart == top_level,
            "charts/ferry/crds/{0} differs from crds/{0} or from the Rust types; regenerate both with \
             `{fix}`",
            file.file_name
        );
    }
}

#[test]
fn helm_lint_strict_passes_in_every_mode() {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    for extra in [
        &[][..],
        &["--set", "watchNamespaces={team-a,team-b}"],
        &["--set", "metrics.serviceMonitor.enabled=true"],
        &[
            "--set",
            "replicaCount=1",
            "--set",
            "leaderElection.enabled=false",
        ],
        &[
            "--set",
            "rbac.create=false",
            "--set",
            "serviceAccount.create=false",
            "--set",
            "serviceAccount.name=platform-ferry",
        ],
        &["--set", "runtimes.onnx.enabled=false"],
        &[
            "--set",
            "runtimes.onnx.enabled=false",
            "--set",
            "runtimes.python.enabled=false",
        ],
    ] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend_from_slice(extra);
        let out = helm_ok(&args, None);
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
    // The packaged chart (what a chart repository serves) carries the CRDs and lints too.
    let dir = std::env::temp_dir().join(format!("ferry-chart-package-{}", std::process::id()));
    helm_ok(
        &["package", chart, "--destination", dir.to_str().unwrap()],
        None,
    );
    let chart_yaml: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    let package = dir.join(format!(
        "ferry-{}.tgz",
        chart_yaml["version"].as_str().unwrap()
    ));
    let listing = Command::new("tar")
        .arg("tzf")
        .arg(&package)
        .output()
        .expect("tar runs");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("ferry/crds/modeldeployments.ferry.dev.yaml")
            && listing.contains("ferry/crds/modelruntimes.ferry.dev.yaml")
            && listing.contains("ferry/values.schema.json"),
        "{listing}"
    );
    let out = helm_ok(&["lint", "--strict", package.to_str().unwrap()], None);
    assert!(out.contains("0 chart(s) failed"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_admin_key_is_generated_or_taken_from_an_existing_secret() {
    let generated = documents(&template("ferry-system", &[]));
    let secret = find(&generated, "Secret", "ferry-admin-key");
    let key = secret["data"]["key"].as_str().unwrap();
    assert!(key.len() * 3 / 4 >= 32, "{key}");
    let existing = documents(&template(
        "ferry-system",
        &["--set", "adminKey.existingSecret=platform-ferry-key"],
    ));
    assert!(
        !existing.iter().any(|o| o["kind"] == "Secret"),
        "{}",
        summary(&existing)
    );
    let deployment = find(&existing, "Deployment", "ferry");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "platform-ferry-key"
    );
}

#[test]
fn the_network_policy_is_rendered_only_when_enabled_and_admits_the_admin_port_only_from_the_controller(
) {
    let off = documents(&template(
        "ferry-system",
        &["--set", "watchNamespaces={team-a}"],
    ));
    assert!(
        !off.iter().any(|o| o["kind"] == "NetworkPolicy"),
        "off by default: {}",
        summary(&off)
    );
    let on = documents(&template(
        "ferry-system",
        &[
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "watchNamespaces={team-a,team-b}",
        ],
    ));
    let policies: Vec<&Value> = on.iter().filter(|o| o["kind"] == "NetworkPolicy").collect();
    let namespaces: Vec<&str> = policies
        .iter()
        .map(|p| p["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["team-a", "team-b"]);
    let spec = &policies[0]["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        json!({"app.kubernetes.io/managed-by": "ferry", "app.kubernetes.io/name": "ferry-server"})
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress"]));
    // Inference from anywhere; the admin port from the controller's pods and labelled scrapers only.
    assert_eq!(
        spec["ingress"][0],
        json!({"ports": [{"port": 8080, "protocol": "TCP"}]})
    );
    let admin = &spec["ingress"][1];
    assert_eq!(admin["ports"], json!([{"port": 8081, "protocol": "TCP"}]));
    assert_eq!(
        admin["from"],
        json!([
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ferry-system"}},
             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ferry",
                 "app.kubernetes.io/instance": "ferry", "app.kubernetes.io/component": "controller"}}},
            {"namespaceSelector": {},
             "podSelector": {"matchLabels": {"ferry.dev/metrics-scraper": "true"}}},
        ])
    );
    // The controller's pods carry the labels the policy admits.
    let controller = find(&on, "Deployment", "ferry");
    for (key, value) in admin["from"][0]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &controller["spec"]["template"]["metadata"]["labels"][key],
            value
        );
    }
    // Cluster-wide installs must name the namespaces: a NetworkPolicy is namespaced.
    let chart = chart_dir();
    let failed = helm(
        &[
            "template",
            "ferry",
            chart.to_str().unwrap(),
            "--set",
            "networkPolicy.enabled=true",
        ],
        None,
    );
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("networkPolicy.namespaces"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    let listed = documents(&template(
        "ferry-system",
        &[
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.namespaces={models}",
        ],
    ));
    assert_eq!(
        listed
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy")
            .map(|p| p["metadata"]["namespace"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["models"]
    );
}

#[test]
fn the_values_schema_rejects_wrong_values_naming_them() {
    // (values, what the message must name)
    let table: &[(Value, &[&str])] = &[
        (json!({"replicaCount": -1}), &["/replicaCount", "minimum"]),
        (
            json!({"replicaCount": "two"}),
            &["/replicaCount", "want integer"],
        ),
        (json!({"replicas": 2}), &["'replicas' not allowed"]),
        (
            json!({"image": {"pullPolicy": "Sometimes"}}),
            &["/image/pullPolicy", "IfNotPresent"],
        ),
        (json!({"image": {"repository": ""}}), &["/image/repository"]),
        (
            json!({"serverImage": {"tag": 1}}),
            &["/serverImage/tag", "want string"],
        ),
        (
            json!({"serverResources": {"requests": {"cpu": "lots"}}}),
            &["/serverResources/requests/cpu"],
        ),
        (
            json!({"serverResources": {"request": {"cpu": "1"}}}),
            &["/serverResources", "'request' not allowed"],
        ),
        (
            json!({"serverFormats": []}),
            &["/serverFormats", "minItems"],
        ),
        (
            json!({"pythonServerImage": {"pullPolicy": "Sometimes"}}),
            &["/pythonServerImage/pullPolicy", "IfNotPresent"],
        ),
        (
            json!({"pythonServerImage": {"repository": ""}}),
            &["/pythonServerImage/repository"],
        ),
        (
            json!({"runtimes": {"python": {"enabled": "sometimes"}}}),
            &["/runtimes/python/enabled", "want boolean"],
        ),
        (
            json!({"runtimes": {"onnx": {"name": "Ferry_ONNX"}}}),
            &["/runtimes/onnx/name", "Ferry_ONNX"],
        ),
        (
            json!({"runtimes": {"tensorflow": {"enabled": true}}}),
            &["/runtimes", "'tensorflow' not allowed"],
        ),
        (
            json!({"watchNamespaces": ["Team_A"]}),
            &["/watchNamespaces/0", "Team_A"],
        ),
        (
            json!({"watchNamespaces": "team-a"}),
            &["/watchNamespaces", "want array"],
        ),
        (json!({"concurrency": 0}), &["/concurrency", "minimum"]),
        (
            json!({"leaderElection": {"enabled": "maybe"}}),
            &["/leaderElection/enabled", "want boolean"],
        ),
        (json!({"logFormat": "xml"}), &["/logFormat", "json"]),
        (
            json!({"resources": {"limits": {"memory": "a lot"}}}),
            &["/resources/limits/memory"],
        ),
        (
            json!({"podSecurityContext": {"runAsUser": -1}}),
            &["/podSecurityContext/runAsUser"],
        ),
        (
            json!({"podDisruptionBudget": {"minAvailable": "half"}}),
            &["/podDisruptionBudget/minAvailable"],
        ),
        (
            json!({"metrics": {"port": 70000}}),
            &["/metrics/port", "maximum"],
        ),
        (
            json!({"metrics": {"serviceMonitor": {"interval": "soon"}}}),
            &["/metrics/serviceMonitor/interval"],
        ),
        (
            json!({"nodeSelector": {"disk": true}}),
            &["/nodeSelector/disk", "want string"],
        ),
        // Rules across keys are checked by the templates, with the same kind of message.
        (
            json!({"leaderElection": {"enabled": false}}),
            &["replicaCount > 1 needs leaderElection.enabled"],
        ),
        (
            json!({"metrics": {"service": {"enabled": false}, "serviceMonitor": {"enabled": true}}}),
            &["metrics.serviceMonitor.enabled needs metrics.service.enabled"],
        ),
        (
            json!({"serviceAccount": {"create": false}}),
            &["serviceAccount.name is required when serviceAccount.create is false"],
        ),
    ];
    let dir = std::env::temp_dir().join(format!("ferry-chart-values-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chart = chart_dir();
    let mut failures = Vec::new();
    for (index, (values, expected)) in table.iter().enumerate() {
        let file = dir.join(format!("{index}.yaml"));
        std::fs::write(&file, serde_yaml::to_string(values).unwrap()).unwrap();
        let output = helm(
            &[
                "template",
                "ferry",
                chart.to_str().unwrap(),
                "--values",
                file.to_str().unwrap(),
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            failures.push(format!("{values} was accepted"));
        } else if let Some(missing) = expected.iter().find(|e| !stderr.contains(**e)) {
            failures.push(format!(
                "{values}: the message does not name {missing:?}:\n{stderr}"
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The README's configuration table lists every key of values.yaml with its default, and nothing else.
///
/// A key is a row unless values.schema.json describes each of its properties (then each property is a row):
/// `image.tag` is a row, `resources` (a Kubernetes ResourceRequirements) is one row.
#[test]
fn the_readme_configuration_table_matches_values_yaml() {
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    fn rows(value: &Value, schema: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
        for (key, value) in value.as_object().expect("a mapping") {
            let path = format!("{prefix}{key}");
            let node = &schema["properties"][key];
            assert!(
                node.is_object(),
                "values.schema.json does not describe {path}"
            );
            let properties = node["properties"].as_object();
            let documented_per_property = value.is_object()
                && node["additionalProperties"] == false
                && properties.is_some_and(|p| {
                    !p.is_empty() && p.values().all(|p| p["description"].is_string())
                });
            if documented_per_property {
                rows(value, node, &format!("{path}."), out);
            } else {
                out.insert(path, value.clone());
            }
        }
    }
    let mut expected = BTreeMap::new();
    rows(&values, &schema, "", &mut expected);

    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split("\n## Install with Helm\n")
        .nth(1)
        .expect("README.md has a section \"## Install with Helm\"");
    let section = section.split("\n## ").next().unwrap();
    let table = section
        .split("| key | default | meaning |")
        .nth(1)
        .expect("the section has a table | key | default | meaning |");
    let mut documented = BTreeMap::new();
    for line in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let key = cells[1].trim_matches('`').to_owned();
        let default: Value = serde_json::from_str(cells[2].trim_matches('`'))
            .unwrap_or_else(|e| panic!("README default of {key} is not JSON ({e}): {}", cells[2]));
        assert!(
            !cells[3].is_empty(),
            "README row {key} says nothing about it"
        );
        documented.insert(key, default);
    }
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !documented.contains_key(*k))
        .collect();
    let extra: Vec<_> = documented
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README's configuration table is out of sync with values.yaml: missing rows {missing:?}, rows of no key {extra:?}"
    );
    for (key, default) in &expected {
        assert_eq!(
            &documented[key], default,
            "README's default of {key} differs from values.yaml"
        );
    }
}

/// A ServiceMonitor CRD, only when the cluster has none, so the rendered ServiceMonitor can be checked too.
fn ensure_service_monitor_crd() {
    let plane = control_plane();
    let exists = plane
        .kubectl(&["get", "crd", "servicemonitors.monitoring.coreos.com"])
        .status
        .success();
    if !exists {
        let crd = r#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
  "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
    "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor", "listKind": "ServiceMonitorList"},
    "versions": [{"name": "v1", "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}"#;
        let output = plane.kubectl_with_stdin(&["create", "-f", "-"], Some(crd));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() || stderr.contains("AlreadyExists"),
            "{stderr}"
        );
    }
    plane.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
    ]);
}

#[test]
fn the_rendered_chart_passes_server_side_dry_run_in_both_modes() {
    let plane = control_plane();
    ensure_service_monitor_crd();
    let release = TestNamespace::create();
    let team_a = TestNamespace::create();
    let team_b = TestNamespace::create();
    let watched = format!("watchNamespaces={{{},{}}}", team_a.name, team_b.name);
    let names = runtime_names(&release.name);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for extra in [
        vec![
            "--include-crds",
            "--set",
            "metrics.serviceMonitor.enabled=true",
        ],
        vec!["--set", watched.as_str()],
    ] {
        let extra = [&extra[..], &names].concat();
        let rendered = template(&release.name, &extra);
        let output = plane.kubectl_with_stdin(
            &["apply", "--dry-run=server", "--server-side", "-f", "-"],
            Some(&rendered),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && !stderr.contains("Warning"),
            "the API server refused the chart rendered with {extra:?}:\n{stderr}"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let applied = stdout.lines().count();
        assert_eq!(
            applied,
            documents(&rendered).len(),
            "every object is checked:\n{stdout}"
        );
    }
    // Namespace-scoped mode makes Roles in the watched namespaces and nothing cluster-wide for the controller
    // but the CRD check and the runtime catalogue; the other ClusterRoles only add ModelDeployments to the
    // built-in user roles.
    let objects = documents(&template(&release.name, &["--set", &watched]));
    let for_users = |o: &&Value| {
        o["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    };
    let cluster_roles: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole")
        .filter(|o| !for_users(o))
        .collect();
    let user_roles: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole")
        .filter(for_users)
        .collect();
    assert_eq!(user_roles.len(), 2, "{}", summary(&objects));
    for role in user_roles {
        for rule in role["rules"].as_array().unwrap() {
            assert_eq!(
                rule["apiGroups"],
                json!(["ferry.dev"]),
                "ModelDeployments only: {role}"
            );
        }
    }
    assert_eq!(cluster_roles.len(), 2, "{}", summary(&objects));
    assert_eq!(
        cluster_roles[0]["rules"],
        json!([{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                "resourceNames": ["modeldeployments.ferry.dev", "modelruntimes.ferry.dev"],
                "verbs": ["get"]}])
    );
    assert_eq!(
        cluster_roles[1]["rules"],
        json!([{"apiGroups": ["ferry.dev"], "resources": ["modelruntimes"],
                "verbs": ["get", "list", "watch"]}])
    );
    let role_namespaces: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "Role" && o["rules"][0]["apiGroups"][0] == "ferry.dev")
        .map(|o| o["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(
        role_namespaces,
        BTreeSet::from([team_a.name.as_str(), team_b.name.as_str()])
    );
    let deployment = find(&objects, "Deployment", "ferry");
    assert_eq!(
        env_of(deployment)["FERRY_WATCH_NAMESPACES"],
        json!(format!("{},{}", team_a.name, team_b.name))
    );
}

/// kubectl get ... -o json, as a Value.
fn get_json(args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&control_plane().kubectl_ok(&all)).expect("kubectl prints JSON")
}

fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Uninstalls the release `ferry` of a namespace when a test ends, pass or fail: its ClusterRoles outlive the
/// namespace.
struct Uninstall(String);

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = helm(
            &[
                "uninstall",
                "ferry",
                "--namespace",
                &self.0,
                "--ignore-not-found",
            ],
            Some(&control_plane().kubeconfig),
        );
    }
}

#[test]
fn helm_install_upgrade_and_uninstall_on_the_real_control_plane() {
    let plane = control_plane();
    let kubeconfig = Some(plane.kubeconfig.as_path());
    let ns = TestNamespace::create();
    let watched = TestNamespace::create();
    // Pods that break the restricted profile are refused here, so the controller's pods existing proves it.
    plane.kubectl_ok(&[
        "label",
        "namespace",
        &ns.name,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let values = json!({
        "image": {"repository": "registry.example.com/platform/ferry", "tag": "1.2.3", "pullPolicy": "Always"},
        "serverImage": {"repository": "registry.example.com/platform/ferry-server", "tag": "1.2.3", "pullPolicy": "Always"},
        "serverResources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "serverFormats": ["onnx", "onnx-int8"],
        "concurrency": 3,
        "logLevel": "info,ferry=debug",
        "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"}],
        "podAnnotations": {"example.com/team": "platform"},
        "pythonServerImage": {"repository": "registry.example.com/platform/ferry-server-python", "tag": "1.2.3-py", "pullPolicy": "Always"},
        "runtimes": {"onnx": {"enabled": true, "name": format!("{}-onnx", ns.name)},
                     "python": {"enabled": true, "name": format!("{}-python", ns.name)}},
    });
    let values_file = std::env::temp_dir().join(format!("ferry-chart-install-{}.yaml", ns.name));
    std::fs::write(&values_file, serde_yaml::to_string(&values).unwrap()).unwrap();
    let _uninstall = Uninstall(ns.name.clone());
    let installed = helm_ok(
        &[
            "install",
            "ferry",
            chart,
            "--namespace",
            &ns.name,
            "--values",
            values_file.to_str().unwrap(),
        ],
        kubeconfig,
    );
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    assert!(
        installed.contains("kubectl ferry status"),
        "NOTES.txt is shown:\n{installed}"
    );

    // CRDs, RBAC, the built-in runtimes, the Deployment and its companions exist.
    get_json(&["crd", "modeldeployments.ferry.dev"]);
    get_json(&["crd", "modelruntimes.ferry.dev"]);
    let onnx = get_json(&["modelruntime", &format!("{}-onnx", ns.name)]);
    assert_eq!(
        onnx["spec"],
        json!({"image": "registry.example.com/platform/ferry-server:1.2.3", "imagePullPolicy": "Always",
               "formats": [{"name": "onnx"}], "priority": 0})
    );
    let python = get_json(&["modelruntime", &format!("{}-python", ns.name)]);
    assert_eq!(
        python["spec"]["image"],
        "registry.example.com/platform/ferry-server-python:1.2.3-py"
    );
    let cluster_name = format!("ferry-{}", ns.name);
    for (kind, name) in [
        ("clusterrole", cluster_name.clone()),
        ("clusterrolebinding", cluster_name.clone()),
        ("clusterrole", format!("{cluster_name}-crd")),
        ("clusterrolebinding", format!("{cluster_name}-crd")),
        ("clusterrole", format!("{cluster_name}-runtimes")),
        ("clusterrolebinding", format!("{cluster_name}-runtimes")),
        ("clusterrole", format!("{cluster_name}-view")),
        ("clusterrole", format!("{cluster_name}-edit")),
    ] {
        get_json(&[kind, &name]);
    }
    for (kind, name) in [
        ("serviceaccount", "ferry"),
        ("role", "ferry-leader-election"),
        ("rolebinding", "ferry-leader-election"),
        ("lease", "ferry"),
        ("service", "ferry-metrics"),
        ("poddisruptionbudget", "ferry"),
    ] {
        get_json(&[kind, name, "-n", &ns.name]);
    }

    // A namespace `view` user may follow ModelDeployments (kubectl ferry status --watch / --wait), an `edit`
    // user may also change them (kubectl ferry set / promote): the chart adds them to the built-in roles.
    for (user, role) in [("alice", "view"), ("bob", "edit")] {
        plane.kubectl_ok(&[
            "create",
            "rolebinding",
            &format!("{user}-{role}"),
            "--clusterrole",
            role,
            "--user",
            user,
            "-n",
            &watched.name,
        ]);
    }
    let can = |user: &str, verb: &str| {
        let output = plane.kubectl(&[
            "auth",
            "can-i",
            verb,
            "modeldeployments.ferry.dev",
            "--as",
            user,
            "-n",
            &watched.name,
        ]);
        String::from_utf8_lossy(&output.stdout).trim() == "yes"
    };
    eventually("the built-in roles to include ModelDeployments", || {
        (can("alice", "watch") && can("bob", "patch")).then_some(())
    });
    assert!(can("alice", "get") && can("alice", "list"));
    assert!(!can("alice", "patch"), "view changes nothing");
    assert!(can("bob", "create") && can("bob", "delete"));

    // The controller's pod spec is what the values say.
    let deployment = get_json(&["deployment", "ferry", "-n", &ns.name]);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        "registry.example.com/platform/ferry:1.2.3"
    );
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(container["args"], json!(["run"]));
    assert_eq!(container["resources"], values["resources"]);
    assert_eq!(pod["serviceAccountName"], "ferry");
    assert_eq!(pod["nodeSelector"], values["nodeSelector"]);
    assert_eq!(pod["tolerations"], values["tolerations"]);
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["example.com/team"],
        "platform"
    );
    assert_eq!(
        pod["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        container["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
               "capabilities": {"drop": ["ALL"]}})
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(container["ports"][0]["containerPort"], 9090);
    let env = env_of(&deployment);
    let expected_env = [
        (
            "FERRY_SERVER_IMAGE",
            json!("registry.example.com/platform/ferry-server:1.2.3"),
        ),
        ("FERRY_SERVER_IMAGE_PULL_POLICY", json!("Always")),
        ("FERRY_SERVER_FORMATS", json!("onnx,onnx-int8")),
        ("FERRY_CONCURRENCY", json!("3")),
        ("FERRY_METRICS_ADDRESS", json!("0.0.0.0:9090")),
        ("FERRY_CLUSTER_DOMAIN", json!("cluster.local")),
        ("FERRY_LEADER_ELECTION", json!("true")),
        ("FERRY_LEADER_ELECTION_LEASE_NAME", json!("ferry")),
        ("FERRY_LOG_FORMAT", json!("json")),
        ("FERRY_LOG", json!("info,ferry=debug")),
        (
            "FERRY_ADMIN_KEY_FILE",
            json!("/var/run/ferry/admin-key/key"),
        ),
        (
            "POD_NAME",
            json!({"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}),
        ),
        (
            "POD_NAMESPACE",
            json!({"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}),
        ),
    ];
    for (name, value) in &expected_env {
        assert_eq!(env.get(*name), Some(value), "env {name}");
    }
    assert!(
        !env.contains_key("FERRY_WATCH_NAMESPACES"),
        "cluster-wide by default"
    );
    let resources: Value =
        serde_json::from_str(env["FERRY_SERVER_RESOURCES"].as_str().unwrap()).unwrap();
    assert_eq!(resources, values["serverResources"]);
    // The ferry binary accepts exactly what the chart passes.
    let parsed: k8s_openapi::api::core::v1::ResourceRequirements =
        serde_json::from_value(resources)
            .expect("FERRY_SERVER_RESOURCES is a ResourceRequirements");
    assert!(parsed.requests.is_some());

    // The admin key: generated by the chart, mounted (not read through the API) by the controller.
    assert_eq!(
        container["volumeMounts"],
        json!([{"name": "admin-key", "mountPath": "/var/run/ferry/admin-key", "readOnly": true}])
    );
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "ferry-admin-key");
    // 0444: the controller runs as a non-root user and the pod sets no fsGroup.
    assert_eq!(pod["volumes"][0]["secret"]["defaultMode"], 0o444);
    let admin_key =
        || get_json(&["secret", "ferry-admin-key", "-n", &ns.name])["data"]["key"].clone();
    let key_before_upgrade = admin_key();
    let key_bytes = key_before_upgrade.as_str().expect("the key is set").len() * 3 / 4;
    assert!(key_bytes >= 32, "{key_bytes} bytes");

    // The ReplicaSet controller creates the pods: the namespace's restricted Pod Security level admits them.
    let selector = "app.kubernetes.io/instance=ferry,app.kubernetes.io/component=controller";
    eventually(
        "the controller's pods to be created under the restricted level",
        || {
            let pods = get_json(&["pods", "-n", &ns.name, "-l", selector]);
            (pods["items"].as_array()?.len() == 2).then_some(())
        },
    );

    // Upgrade with changed values: one replica (no PodDisruptionBudget), a new tag, namespace-scoped mode.
    let upgraded = helm_ok(
        &[
            "upgrade",
            "ferry",
            chart,
            "--namespace",
            &ns.name,
            "--reuse-values",
            "--set",
            "replicaCount=1",
            "--set",
            "image.tag=1.2.4",
            "--set",
            &format!("watchNamespaces={{{}}}", watched.name),
        ],
        kubeconfig,
    );
    assert!(upgraded.contains("REVISION: 2"), "{upgraded}");
    assert_eq!(
        admin_key(),
        key_before_upgrade,
        "an upgrade keeps the admin key (every pod's credential derives from it)"
    );
    let deployment = get_json(&["deployment", "ferry", "-n", &ns.name]);
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/platform/ferry:1.2.4"
    );
    let env = env_of(&deployment);
    assert_eq!(env["FERRY_WATCH_NAMESPACES"], json!(watched.name));
    assert_eq!(
        env["FERRY_CONCURRENCY"],
        json!("3"),
        "--reuse-values keeps the rest"
    );
    let gone = |args: &[&str]| !plane.kubectl(&[&["get"], args].concat()).status.success();
    assert!(gone(&["poddisruptionbudget", "ferry", "-n", &ns.name]));
    assert!(
        gone(&["clusterrole", &cluster_name]),
        "no cluster-wide role in namespace-scoped mode"
    );
    get_json(&["role", &cluster_name, "-n", &watched.name]);
    get_json(&["rolebinding", &cluster_name, "-n", &watched.name]);

    // Uninstall: nothing namespaced is left in either namespace, nor cluster-wide; the CRD stays.
    helm_ok(
        &["uninstall", "ferry", "--namespace", &ns.name, "--wait"],
        kubeconfig,
    );
    let kinds = "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,\
                 poddisruptionbudgets,leases,configmaps,secrets";
    for namespace in [&ns.name, &watched.name] {
        let leftovers: Vec<String> = eventually("the release's objects to be gone", || {
            let by_label = get_json(&[
                kinds,
                "-n",
                namespace,
                "-l",
                "app.kubernetes.io/instance=ferry",
            ]);
            let release_records = get_json(&["secrets", "-n", namespace, "-l", "owner=helm"]);
            let names: Vec<String> = by_label["items"]
                .as_array()
                .unwrap()
                .iter()
                .chain(release_records["items"].as_array().unwrap())
                .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
                .collect();
            names.is_empty().then_some(names)
        });
        assert!(leftovers.is_empty());
    }
    let cluster_leftovers = get_json(&[
        "clusterroles,clusterrolebindings,modelruntimes",
        "-l",
        "app.kubernetes.io/instance=ferry",
    ]);
    let ours: Vec<&Value> = cluster_leftovers["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["metadata"]["name"].as_str().unwrap().contains(&ns.name))
        .collect();
    assert!(ours.is_empty(), "cluster-scoped leftovers: {ours:?}");
    get_json(&["crd", "modeldeployments.ferry.dev"]);
    get_json(&["crd", "modelruntimes.ferry.dev"]);
    let _ = std::fs::remove_file(values_file);
}

/// The controller's configuration as the rendered chart gives it.
fn operator_config(deployment: &Value) -> ferry::config::OperatorConfig {
    let env = env_of(deployment);
    let text = |name: &str| env[name].as_str().unwrap().to_owned();
    ferry::config::OperatorConfig {
        server_image: text("FERRY_SERVER_IMAGE"),
        server_image_pull_policy: text("FERRY_SERVER_IMAGE_PULL_POLICY"),
        server_resources: env
            .get("FERRY_SERVER_RESOURCES")
            .map(|json| serde_json::from_str(json.as_str().unwrap()).unwrap()),
        server_formats: text("FERRY_SERVER_FORMATS")
            .split(',')
            .map(str::to_owned)
            .collect(),
        ..ferry::config::OperatorConfig::default()
    }
}

fn runtimes_of(objects: &[Value]) -> Vec<ferry::api::ModelRuntime> {
    objects
        .iter()
        .filter(|o| o["kind"] == "ModelRuntime")
        .map(|o| serde_json::from_value(o.clone()).expect("a ModelRuntime the types read"))
        .collect()
}

#[test]
fn the_built_in_runtimes_follow_the_values_and_can_be_disabled() {
    let objects = documents(&template("ferry-system", &[]));
    let runtimes = runtimes_of(&objects);
    let names: Vec<&str> = runtimes
        .iter()
        .map(|r| r.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["ferry-onnx", "ferry-python"]);
    let python = &runtimes[1].spec;
    assert_eq!(python.image, "ferry-server-python:0.1.0");
    let formats: Vec<String> = python.formats.iter().map(|f| f.describe()).collect();
    assert_eq!(
        formats,
        [
            "sklearn scikit-learn >=1.9,<1.10",
            "xgboost xgboost >=1.0,<=3.2",
            "lightgbm lightgbm <=4.7",
            "mlflow",
            "python"
        ]
    );
    let tagged = documents(&template(
        "ferry-system",
        &[
            "--set",
            "pythonServerImage.repository=registry.example.com/ferry-server-python",
            "--set",
            "pythonServerImage.tag=2.0.0",
            "--set",
            "pythonServerImage.pullPolicy=Always",
            "--set",
            "runtimes.python.name=python-2",
        ],
    ));
    let python = &runtimes_of(&tagged)[1];
    assert_eq!(python.metadata.name.as_deref(), Some("python-2"));
    assert_eq!(
        python.spec.image,
        "registry.example.com/ferry-server-python:2.0.0"
    );
    assert_eq!(python.spec.image_pull_policy.as_deref(), Some("Always"));
    for (switch, left) in [
        ("runtimes.onnx.enabled=false", vec!["ferry-python"]),
        ("runtimes.python.enabled=false", vec!["ferry-onnx"]),
    ] {
        let objects = documents(&template("ferry-system", &["--set", switch]));
        let names: Vec<String> = runtimes_of(&objects)
            .iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, left, "{switch}");
    }
}

/// An upgrade to a chart with the catalogue restarts no model: for every ModelDeployment `tests/upgrade.rs` pins,
/// the chart's ferry-onnx (chosen beside ferry-python) makes the pod template the controller's configured image
/// made before runtimes existed, byte for byte, whatever the serving image values.
#[test]
fn the_built_in_onnx_runtime_keeps_every_pinned_template() {
    use ferry::catalogue;
    use ferry::children::deployment::{pinned_revision_template, revision_template, ObjectPin};

    let pinned: Vec<Value> = serde_yaml::from_str(
        &std::fs::read_to_string(
            repo_root().join("tests/fixtures/previous-release/pinned-specs.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let values = [
        vec![],
        vec![
            "--set",
            "serverImage.repository=registry.example.com/ferry-server",
            "--set",
            "serverImage.tag=0.1.0",
            "--set",
            "serverImage.pullPolicy=Always",
            "--set-json",
            r#"serverResources={"requests":{"cpu":"1"},"limits":{"memory":"2Gi"}}"#,
        ],
    ];
    for extra in values {
        let objects = documents(&template("ferry-system", &extra));
        let config = operator_config(find(&objects, "Deployment", "ferry"));
        let runtimes = runtimes_of(&objects);
        let runtimes: Vec<&ferry::api::ModelRuntime> = runtimes.iter().collect();
        for entry in &pinned {
            let md: ferry::api::ModelDeployment = serde_json::from_value(json!({
                "apiVersion": "ferry.dev/v1alpha1", "kind": "ModelDeployment",
                "metadata": {"name": "iris", "namespace": "ml"}, "spec": entry["spec"],
            }))
            .unwrap();
            let pin = || ObjectPin {
                object: entry["object"].as_str().map(str::to_owned),
                detected_at: None,
            };
            let chosen =
                catalogue::choose(&md.spec, &runtimes, &config).expect("ferry-onnx serves it");
            let own_image = md.spec.server.image.is_some();
            assert_eq!(
                chosen.name.as_deref(),
                (!own_image).then_some("ferry-onnx"),
                "{}: spec.server.image is its own choice",
                entry["name"]
            );
            let now = revision_template(&md, &chosen, pin());
            let before = pinned_revision_template(&md, &config, pin());
            assert_eq!(
                serde_json::to_string(&now.template).unwrap(),
                serde_json::to_string(&before.template).unwrap(),
                "{} with {extra:?}",
                entry["name"]
            );
        }
    }
}
