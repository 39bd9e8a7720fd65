//! What GitOps tools see: the Argo CD health check (`gitops/argocd/modeldeployment-health.lua`) run by a real
//! Lua interpreter on sample statuses and on the statuses the controller writes during a real rollout, the
//! `argocd-cm` snippet of gitops/README.md, and server-side apply of the chart's output and of the sample
//! ModelDeployments being a no-op the second time.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry::api::ModelDeployment;
use ferry::server_contract::Reason;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use mlua::serde::SerializeOptions;
use mlua::{Lua, LuaOptions, LuaSerdeExt, StdLib};
use serde::Deserialize;
use serde_json::Value;
use support::{control_plane, repo_root, revision_of, InProcess, Kubelet, TestNamespace, WAIT};

const SCRIPT: &str = "gitops/argocd/modeldeployment-health.lua";

/// Argo CD's verdict on one object: (status, message).
fn health(object: &Value) -> (String, String) {
    let script =
        std::fs::read_to_string(repo_root().join(SCRIPT)).expect("the health script exists");
    // Argo CD's interpreter offers the base, table, string and math libraries, and the object as `obj`.
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH,
        LuaOptions::default(),
    )
    .expect("Lua starts");
    // Absent and null fields are both nil, as in Argo CD.
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let obj = lua
        .to_value_with(object, options)
        .expect("the object converts");
    lua.globals().set("obj", obj).unwrap();
    let result: mlua::Table = lua
        .load(&script)
        .set_name(SCRIPT)
        .eval()
        .unwrap_or_else(|e| panic!("{SCRIPT} fails on {object}:\n{e}"));
    (
        result.get("status").expect("hs.status is a string"),
        result
            .get::<Option<String>>("message")
            .unwrap()
            .unwrap_or_default(),
    )
}

#[derive(Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: ExpectedHealth,
    input_path: String,
}

#[derive(Deserialize)]
struct ExpectedHealth {
    status: String,
    message: String,
}

/// Argo CD's own layout for health checks: testdata/health_test.yaml lists inputs and expected verdicts.
#[test]
fn the_argocd_health_check_on_sample_statuses() {
    let dir = repo_root().join("gitops/argocd/testdata");
    let tests: HealthTests =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("health_test.yaml")).unwrap())
            .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for test in &tests.tests {
        let object: Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join(&test.input_path)).unwrap())
                .unwrap();
        let (status, message) = health(&object);
        assert_eq!(
            (status.as_str(), message.as_str()),
            (
                test.health_status.status.as_str(),
                test.health_status.message.as_str()
            ),
            "{}",
            test.input_path
        );
        seen.insert(status);
    }
    for status in ["Healthy", "Progressing", "Degraded", "Suspended"] {
        assert!(seen.contains(status), "no sample is {status}");
    }
}

#[test]
fn the_argocd_cm_snippet_holds_exactly_the_script() {
    let readme = std::fs::read_to_string(repo_root().join("gitops/README.md")).unwrap();
    let snippet = readme
        .split("```yaml\n")
        .find(|block| block.contains("name: argocd-cm"))
        .and_then(|block| block.split("```").next())
        .expect("gitops/README.md has an argocd-cm yaml block");
    let config_map: Value = serde_yaml::from_str(snippet).expect("the snippet is YAML");
    let script = std::fs::read_to_string(repo_root().join(SCRIPT)).unwrap();
    assert_eq!(
        config_map["data"]["resource.customizations.health.ferry.dev_ModelDeployment"]
            .as_str()
            .expect("the snippet sets the ModelDeployment health key"),
        script,
        "gitops/README.md's argocd-cm snippet differs from {SCRIPT}; paste the script into it again"
    );
}

// --- The health check on what the controller really writes ---------------------------------------------------

/// The object as Argo CD gets it from the API server.
fn raw(ns: &str, name: &str) -> Value {
    serde_json::from_str(&control_plane().kubectl_ok(&[
        "get",
        "modeldeployment",
        name,
        "-n",
        ns,
        "-o",
        "json",
    ]))
    .unwrap()
}

/// Waits until Argo CD would report `status` for the ModelDeployment; returns the message.
async fn wait_health(ns: &str, status: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let object = raw(ns, "iris");
        let last = health(&object);
        // Only a status written for the current generation counts: before that the check says the
        // controller has yet to observe the object.
        let observed = object["status"]["observedGeneration"] == object["metadata"]["generation"];
        if last.0 == status && observed {
            return last.1;
        }
        assert!(
            Instant::now() < deadline,
            "Argo CD health never became {status}; last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_argocd_health_check_follows_a_real_rollout() {
    let ns = TestNamespace::create();
    let client = control_plane().client().await;
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);

    // Before any controller sees it: no status.
    let manifest = |version: &str| {
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: iris, namespace: {}}}\n\
             spec:\n  model: {{uri: 's3://models/iris/{version}.onnx', version: '{version}'}}\n  rollout: {{autoPromote: false}}\n",
            ns.name
        )
    };
    let apply = |version: &str| {
        control_plane().kubectl_with_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=argocd-controller",
                "-f",
                "-",
            ],
            Some(&manifest(version)),
        )
    };
    assert!(apply("1").status.success());
    assert_eq!(health(&raw(&ns.name, "iris")).0, "Progressing");

    let controller = InProcess::watching(&[&ns.name])
        .client(client.clone())
        .concurrency(2)
        .start()
        .await;
    let kubelet = Kubelet::new(&client, &ns.name);

    // First version loading, then serving.
    let first = revision_of(&deployments, "iris", "1").await;
    let message = wait_health(&ns.name, "Progressing").await;
    assert!(message.contains("version 1"), "{message}");
    kubelet.make_ready("iris", &first).await;
    let message = wait_health(&ns.name, "Healthy").await;
    assert!(message.contains("version 1 serves"), "{message}");

    // A bump: the new spec is Progressing at once (stale status, then the candidate loading).
    assert!(apply("2").status.success());
    let right_after = health(&raw(&ns.name, "iris"));
    assert_eq!(right_after.0, "Progressing", "{right_after:?}");
    let second = revision_of(&deployments, "iris", "2").await;
    kubelet.make_ready("iris", &second).await;
    // autoPromote: false, the ready candidate waits: Suspended.
    let message = wait_health(&ns.name, "Suspended").await;
    assert!(message.contains("kubectl ferry promote"), "{message}");
    let promoted = ferry::plugin::promote(&mds, "iris").await.expect("promote");
    assert!(promoted.contains(&second), "{promoted}");
    let message = wait_health(&ns.name, "Healthy").await;
    assert!(message.contains("version 2 serves"), "{message}");

    // A version that fails to load: Degraded, with the server's reason.
    assert!(apply("3").status.success());
    let third = revision_of(&deployments, "iris", "3").await;
    kubelet
        .fail_load(
            &third,
            Reason::ChecksumMismatch,
            "expected sha256 00aa..., got 11bb...",
        )
        .await;
    let message = wait_health(&ns.name, "Degraded").await;
    assert!(message.contains("ChecksumMismatch"), "{message}");

    controller
        .stop()
        .await
        .expect("the controller stops cleanly");
}

// --- Server-side apply twice ----------------------------------------------------------------------------------

/// kind/name -> (resourceVersion, generation) of every object in `manifests`, read back from the API server.
fn versions(manifests: &str) -> BTreeMap<String, (String, Option<i64>)> {
    let output =
        control_plane().kubectl_with_stdin(&["get", "-f", "-", "-o", "json"], Some(manifests));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    let items = match list["items"].as_array() {
        Some(items) => items.clone(),
        None => vec![list],
    };
    items
        .iter()
        .map(|o| {
            (
                format!(
                    "{}/{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["namespace"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap()
                ),
                (
                    o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    o["metadata"]["generation"].as_i64(),
                ),
            )
        })
        .collect()
}

fn apply_server_side(manifests: &str) {
    let output = control_plane().kubectl_with_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=gitops",
            "-f",
            "-",
        ],
        Some(manifests),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The objects' versions once nothing else writes to them any more (the Deployment and ReplicaSet
/// controllers update the chart's Deployment status for a moment after it is created).
fn settled_versions(manifests: &str) -> BTreeMap<String, (String, Option<i64>)> {
    let deadline = Instant::now() + WAIT;
    let mut last = versions(manifests);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = versions(manifests);
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "the objects never settle");
        last = now;
    }
}

/// `helm template` of the chart; its built-in ModelRuntimes (cluster-scoped) are named after the release and
/// namespace, as the plane is shared.
fn helm_template(release: &str, namespace: &str, extra: &[&str]) -> String {
    let plane = control_plane();
    let chart = repo_root().join("charts/ferry");
    let runtime_names = [
        format!("runtimes.onnx.name={namespace}-{release}-onnx"),
        format!("runtimes.python.name={namespace}-{release}-python"),
    ];
    let output = std::process::Command::new(plane.bin_dir.join("helm"))
        .env("KUBECONFIG", &plane.kubeconfig)
        .args([
            "template",
            release,
            chart.to_str().unwrap(),
            "--namespace",
            namespace,
        ])
        .args(["--set", &runtime_names[0], "--set", &runtime_names[1]])
        .args(extra)
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Deletes what a test applied when it ends, pass or fail: the chart's ClusterRoles outlive the namespaces.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        control_plane().kubectl_with_stdin(
            &["delete", "--ignore-not-found", "--wait=false", "-f", "-"],
            Some(&self.0),
        );
    }
}

#[test]
fn server_side_apply_of_the_chart_and_samples_twice_is_a_no_op() {
    let release = TestNamespace::create();
    let watched = TestNamespace::create();
    let samples_ns = TestNamespace::create();
    let mut cases = vec![
        (
            "the chart, cluster-wide".to_owned(),
            helm_template("ferry", &release.name, &[]),
        ),
        (
            "the chart, namespace-scoped".to_owned(),
            helm_template(
                "ferry-scoped",
                &release.name,
                &["--set", &format!("watchNamespaces={{{}}}", watched.name)],
            ),
        ),
    ];
    for sample in ["minimal.yaml", "full.yaml"] {
        let text = std::fs::read_to_string(repo_root().join("e2e/samples").join(sample)).unwrap();
        let manifest = text.replacen(
            "metadata:\n",
            &format!("metadata:\n  namespace: {}\n", samples_ns.name),
            1,
        );
        cases.push((format!("e2e/samples/{sample}"), manifest));
    }
    for (what, manifests) in &cases {
        let _cleanup = Cleanup(manifests.clone());
        apply_server_side(manifests);
        let before = settled_versions(manifests);
        apply_server_side(manifests);
        let after = versions(manifests);
        let changed: Vec<&String> = before
            .iter()
            .filter(|(key, version)| after.get(*key) != Some(version))
            .map(|(key, _)| key)
            .collect();
        assert!(
            changed.is_empty(),
            "applying {what} a second time changed {changed:?}"
        );
    }
}
