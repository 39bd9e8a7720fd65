//! Least privilege, tested: the chart's RBAC is enough for real rollouts, and grants nothing else.
//!
//! Each test installs the chart with `helm install`, asks the API server for a token of the chart's
//! ServiceAccount (TokenRequest), and runs the real `ferry run` process with that token and the environment of
//! the chart's Deployment (there is no kubelet to run its pods), leader election included. The tests then play
//! the kubelet through a rollout and check that the controller never met a `forbidden`, and that the identity
//! can read no Secret and touch nothing outside its list. The chart's built-in ModelRuntimes are named after the
//! release's namespace (they are cluster-scoped, and the tests install several releases at once) and labelled for
//! that release's controller alone (`support::TEST_CATALOGUE`).

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use ferry::api::ModelDeployment;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use support::{
    control_plane, repo_root, test_runtime_selector, FerryRun, Kubelet, TestNamespace,
    TEST_CATALOGUE,
};

/// Exactly what the controller may do in a watched namespace; a change to the chart's rules must change this
/// list (and the README's table) on purpose.
fn expected_namespaced_rules() -> Value {
    json!([
        {"apiGroups": ["ferry.dev"], "resources": ["modeldeployments"], "verbs": ["list", "watch"]},
        {"apiGroups": ["ferry.dev"], "resources": ["modeldeployments/status"], "verbs": ["patch"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list", "watch", "create", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch", "create", "patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "watch", "create", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ])
}

/// Exactly what the controller may do cluster-wide, in both modes: check its two CRDs, read the runtime catalogue.
fn expected_cluster_rules() -> [(&'static str, Value); 2] {
    [
        (
            "crd",
            json!([{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                    "resourceNames": ["modeldeployments.ferry.dev", "modelruntimes.ferry.dev"],
                    "verbs": ["get"]}]),
        ),
        (
            "runtimes",
            json!([{"apiGroups": ["ferry.dev"], "resources": ["modelruntimes"],
                    "verbs": ["get", "list", "watch"]}]),
        ),
    ]
}

/// The cluster-wide roles of the release in `namespace` hold exactly [`expected_cluster_rules`].
fn assert_cluster_rules(namespace: &str) {
    for (suffix, rules) in expected_cluster_rules() {
        let role = format!("ferry-{namespace}-{suffix}");
        assert_eq!(get_json(&["clusterrole", &role])["rules"], rules, "{role}");
    }
}

fn helm(args: &[&str]) -> String {
    let plane = control_plane();
    let output = Command::new(plane.bin_dir.join("helm"))
        .env("KUBECONFIG", &plane.kubeconfig)
        .args(args)
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "helm {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn get_json(args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&control_plane().kubectl_ok(&all)).expect("kubectl prints JSON")
}

/// A `helm install` of the chart, uninstalled when the test ends, pass or fail.
struct Release {
    namespace: String,
}

impl Release {
    fn install(namespace: &str, extra: &[&str]) -> Self {
        let chart = repo_root().join("charts/ferry");
        let (onnx, python) = (
            format!("runtimes.onnx.name={namespace}-onnx"),
            format!("runtimes.python.name={namespace}-python"),
        );
        let mut args = vec![
            "install",
            "ferry",
            chart.to_str().unwrap(),
            "--namespace",
            namespace,
            "--set",
            &onnx,
            "--set",
            &python,
        ];
        args.extend_from_slice(extra);
        helm(&args);
        for runtime in ["onnx", "python"] {
            control_plane().kubectl_ok(&[
                "label",
                "modelruntime",
                &format!("{namespace}-{runtime}"),
                &format!("{TEST_CATALOGUE}={namespace}"),
            ]);
        }
        Release {
            namespace: namespace.to_owned(),
        }
    }

    /// The runtime selector that gives its controller the release's built-in ModelRuntimes and no others.
    fn runtime_selector(&self) -> String {
        test_runtime_selector(&[&self.namespace])
    }

    /// The identity the controller's pods run as.
    fn service_account(&self) -> String {
        format!("system:serviceaccount:{}:ferry", self.namespace)
    }

    /// The controller container's environment, as the Deployment gives it to a pod named `pod_name`.
    fn controller_env(&self, pod_name: &str) -> BTreeMap<String, String> {
        let deployment = get_json(&["deployment", "ferry", "-n", &self.namespace]);
        deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let name = e["name"].as_str().unwrap().to_owned();
                let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.name") => pod_name.to_owned(),
                    Some("metadata.namespace") => self.namespace.clone(),
                    Some(other) => panic!("unexpected downward API field {other}"),
                    None => e["value"].as_str().unwrap().to_owned(),
                };
                (name, value)
            })
            .collect()
    }

    /// The controller's environment as its pod has it, with the admin key where the kubelet would mount it: the
    /// chart's key Secret, read here with the test's own (admin) rights, written to a file.
    fn controller_env_with_key(&self, pod_name: &str) -> BTreeMap<String, String> {
        let mut env = self.controller_env(pod_name);
        assert_eq!(env["FERRY_ADMIN_KEY_FILE"], "/var/run/ferry/admin-key/key");
        let key = control_plane().kubectl_ok(&[
            "get",
            "secret",
            "ferry-admin-key",
            "-n",
            &self.namespace,
            "-o",
            "go-template={{.data.key | base64decode}}",
        ]);
        assert!(
            key.len() >= 32,
            "the chart's admin key has {} bytes",
            key.len()
        );
        let path = std::env::temp_dir().join(format!("ferry-rbac-{}-admin-key", self.namespace));
        std::fs::write(&path, key).unwrap();
        env.insert(
            "FERRY_ADMIN_KEY_FILE".into(),
            path.to_str().unwrap().to_owned(),
        );
        env
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let plane = control_plane();
        let _ = Command::new(plane.bin_dir.join("helm"))
            .env("KUBECONFIG", &plane.kubeconfig)
            .args(["uninstall", "ferry", "--namespace", &self.namespace])
            .output();
    }
}

/// Fails the test with the controller's output if it exited or ever met a `forbidden`.
fn assert_healthy(controller: &FerryRun) {
    let output = controller.log();
    if let Some(status) = controller.exited() {
        panic!("ferry run exited with {status}:\n{output}");
    }
    assert!(
        !output.to_lowercase().contains("forbidden"),
        "the controller was refused a request:\n{output}"
    );
}

/// `kubectl auth can-i` as `user`: whether the API server would allow it.
fn can_i(user: &str, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i", "--as", user];
    all.extend_from_slice(args);
    let output = control_plane().kubectl(&all);
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        answer == "yes" || answer == "no",
        "kubectl auth can-i {}: {answer} {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    answer == "yes"
}

/// Every (Cluster)RoleBinding in the cluster that names `namespace/service_account`.
fn bindings_of(namespace: &str, service_account: &str) -> Vec<String> {
    let all = get_json(&["rolebindings,clusterrolebindings", "--all-namespaces"]);
    all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| {
            b["subjects"].as_array().is_some_and(|subjects| {
                subjects.iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == service_account
                        && s["namespace"] == namespace
                })
            })
        })
        .map(|b| {
            format!(
                "{} {}/{} -> {}",
                b["kind"].as_str().unwrap(),
                b["metadata"]["namespace"].as_str().unwrap_or(""),
                b["metadata"]["name"].as_str().unwrap(),
                b["roleRef"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

// --- The workload -------------------------------------------------------------------------------------------

/// Runs `step` (which waits for something), failing at once if the controller exits or meets a `forbidden`
/// meanwhile.
async fn watched<T>(controller: &FerryRun, step: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(step);
    loop {
        assert_healthy(controller);
        tokio::select! {
            value = &mut step => return value,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Polls `check` until it returns Some, failing at once if the controller exits or meets a `forbidden`, and
/// with its output after [`support::WAIT`].
async fn eventually<T, F, Fut>(what: &str, controller: &FerryRun, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let explain = || format!("controller output:\n{}", controller.log());
    watched(
        controller,
        support::eventually_explained(what, explain, check),
    )
    .await
}

struct Workload {
    client: Client,
    namespace: String,
    kubelet: Kubelet,
}

impl Workload {
    fn new(client: &Client, namespace: &str) -> Self {
        Workload {
            client: client.clone(),
            namespace: namespace.to_owned(),
            kubelet: Kubelet::new(client, namespace),
        }
    }

    fn mds(&self) -> Api<ModelDeployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn create(&self, name: &str, spec_extra: Value) {
        let mut object = json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"model": {"uri": format!("s3://models/{name}/1.onnx"), "version": "1"}, "replicas": 2},
        });
        if let (Some(spec), Value::Object(extra)) = (object["spec"].as_object_mut(), spec_extra) {
            spec.extend(extra);
        }
        let md: ModelDeployment = serde_json::from_value(object).unwrap();
        self.mds()
            .create(&PostParams::default(), &md)
            .await
            .expect("create ModelDeployment");
    }

    async fn set_version(&self, name: &str, version: &str) {
        let body = json!({"spec": {"model": {"uri": format!("s3://models/{name}/{version}.onnx"), "version": version}}});
        self.mds()
            .patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .expect("patch spec");
    }

    async fn revision_of(&self, controller: &FerryRun, name: &str, version: &str) -> String {
        watched(
            controller,
            support::revision_of(&self.deployments(), name, version),
        )
        .await
    }

    async fn make_ready(&self, controller: &FerryRun, name: &str, revision: &str) {
        watched(controller, self.kubelet.make_ready(name, revision)).await
    }

    async fn wait_status(
        &self,
        controller: &FerryRun,
        name: &str,
        what: &str,
        check: impl Fn(&ModelDeployment) -> bool,
    ) -> ModelDeployment {
        eventually(what, controller, || async {
            let md = self.mds().get(name).await.ok()?;
            check(&md).then_some(md)
        })
        .await
    }

    async fn event_reasons(&self) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        events
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }
}

fn is_ready(md: &ModelDeployment) -> bool {
    md.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

// --- The tests ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_service_account_rolls_out_a_new_version_and_can_do_nothing_else() {
    let plane = control_plane();
    let release_ns = TestNamespace::create();
    let workload_ns = TestNamespace::create();
    let release = Release::install(&release_ns.name, &[]);
    let service_account = release.service_account();
    let cluster_role = format!("ferry-{}", release_ns.name);

    // The rules are exactly the documented list, bound to nothing but the chart's ServiceAccount.
    assert_eq!(
        get_json(&["clusterrole", &cluster_role])["rules"],
        expected_namespaced_rules()
    );
    assert_cluster_rules(&release_ns.name);
    let mut bindings = bindings_of(&release_ns.name, "ferry");
    bindings.sort();
    assert_eq!(
        bindings,
        vec![
            format!("ClusterRoleBinding /{cluster_role} -> {cluster_role}"),
            format!("ClusterRoleBinding /{cluster_role}-crd -> {cluster_role}-crd"),
            format!("ClusterRoleBinding /{cluster_role}-runtimes -> {cluster_role}-runtimes"),
            format!(
                "RoleBinding {}/ferry-leader-election -> ferry-leader-election",
                release_ns.name
            ),
        ]
    );

    // The controller as the chart runs it, leader election included. It watches only this test's namespace
    // (a cluster-wide watch would reconcile other tests' ModelDeployments); the cluster-wide reads the chart
    // grants for that are checked below.
    let kubeconfig = plane.service_account_kubeconfig(&release_ns.name, "ferry");
    let mut env = release.controller_env_with_key("ferry-0");
    assert!(!env.contains_key("FERRY_WATCH_NAMESPACES"));
    assert_eq!(env["FERRY_LEADER_ELECTION"], "true");
    env.insert("FERRY_WATCH_NAMESPACES".into(), workload_ns.name.clone());
    // Likewise its catalogue: the release's own runtimes, not those of the other tests (ModelRuntimes are
    // cluster-scoped).
    env.insert("FERRY_RUNTIME_SELECTOR".into(), release.runtime_selector());
    // Only what the pod would have: the chart's environment (and a free metrics port).
    let controller = FerryRun::watching(&[])
        .only(&env)
        .kubeconfig(&kubeconfig.0)
        .start();

    let workload = Workload::new(&plane.client().await, &workload_ns.name);
    // No warm previous version and no history (so status.history stays empty): promoting version 2 deletes
    // version 1's Deployment.
    workload
        .create(
            "iris",
            json!({"rollout": {"keepPrevious": 0}, "revisionHistoryLimit": 0}),
        )
        .await;
    let first = workload.revision_of(&controller, "iris", "1").await;
    // The controller created the pods' admin-credential Secret with nothing but `create`.
    let secret = get_json(&["secret", "iris-ferry-admin", "-n", &workload_ns.name]);
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["kind"],
        "ModelDeployment"
    );
    workload.make_ready(&controller, "iris", &first).await;
    workload
        .wait_status(&controller, "iris", "version 1 Ready", is_ready)
        .await;

    workload.set_version("iris", "2").await;
    let second = workload.revision_of(&controller, "iris", "2").await;
    workload.make_ready(&controller, "iris", &second).await;
    let md = workload
        .wait_status(&controller, "iris", "version 2 promoted", |md| {
            is_ready(md)
                && md
                    .status
                    .as_ref()
                    .and_then(|s| s.active.as_ref())
                    .is_some_and(|a| a.version == "2")
        })
        .await;
    let active = md.status.unwrap().active.unwrap();
    assert_eq!(active.revision, second);
    // Served by the chart's built-in onnx runtime, on the controller's own image.
    assert_eq!(
        active.runtime,
        Some(ferry::api::RevisionRuntime {
            name: Some(format!("{}-onnx", release_ns.name)),
            image: env["FERRY_SERVER_IMAGE"].clone(),
        })
    );
    eventually("version 1's Deployment deleted", &controller, || async {
        let left = workload
            .deployments()
            .list(&ListParams::default().labels("ferry.dev/model-deployment=iris"))
            .await
            .ok()?
            .items;
        (left.len() == 1).then_some(())
    })
    .await;
    let reasons = workload.event_reasons().await;
    for expected in ["RolloutStarted", "Promoted"] {
        assert!(
            reasons.iter().any(|r| r == expected),
            "no {expected} event in {reasons:?}"
        );
    }
    // A scikit-learn model gets the chart's Python runtime: the controller reads the catalogue with its rights.
    workload
        .create(
            "forest",
            json!({"model": {"uri": "s3://models/forest/1/model.joblib", "version": "1",
                             "format": "sklearn", "frameworkVersion": "1.9.1"}}),
        )
        .await;
    let forest = workload.revision_of(&controller, "forest", "1").await;
    let image = get_json(&[
        "deployment",
        &format!("forest-{forest}"),
        "-n",
        &workload_ns.name,
    ])["spec"]["template"]["spec"]["containers"][0]["image"]
        .clone();
    assert_eq!(image, "ferry-server-python:0.1.0");

    // The leader renews the chart's Lease under the pod's name.
    let lease = get_json(&["lease", "ferry", "-n", &release_ns.name]);
    assert_eq!(lease["spec"]["holderIdentity"], "ferry-0");
    assert_healthy(&controller);

    // What the cluster-wide mode needs, and nothing more.
    let ns = workload_ns.name.as_str();
    let release_ns_name = release_ns.name.as_str();
    for allowed in [
        &["list", "modeldeployments.ferry.dev", "--all-namespaces"][..],
        &["watch", "pods", "--all-namespaces"],
        &[
            "patch",
            "modeldeployments.ferry.dev",
            "--subresource=status",
            "-n",
            ns,
        ],
        &["create", "deployments.apps", "-n", ns],
        &["create", "secrets", "-n", ns],
        &["create", "configmaps", "-n", ns],
        &["create", "events.events.k8s.io", "-n", ns],
        &[
            "get",
            "customresourcedefinitions/modeldeployments.ferry.dev",
        ],
        &["get", "customresourcedefinitions/modelruntimes.ferry.dev"],
        &["get", "modelruntimes.ferry.dev"],
        &["list", "modelruntimes.ferry.dev"],
        &["watch", "modelruntimes.ferry.dev"],
        &["patch", "leases/ferry", "-n", release_ns_name],
    ] {
        assert!(can_i(&service_account, allowed), "cannot {allowed:?}");
    }
    for refused in [
        &["get", "secrets", "-n", ns][..],
        &["list", "secrets", "-n", ns],
        &["watch", "secrets", "-n", ns],
        &["list", "secrets", "--all-namespaces"],
        &["get", "secrets", "-n", release_ns_name],
        &["patch", "secrets", "-n", ns],
        &["update", "secrets", "-n", ns],
        &["delete", "secrets", "-n", ns],
        &["delete", "configmaps", "-n", ns],
        &["update", "configmaps", "-n", ns],
        &["create", "clusterroles"],
        &["create", "rolebindings", "-n", ns],
        &["create", "pods", "-n", ns],
        &["patch", "modeldeployments.ferry.dev", "-n", ns],
        &["delete", "modeldeployments.ferry.dev", "-n", ns],
        &["update", "deployments.apps", "-n", ns],
        &["delete", "services", "-n", ns],
        &["create", "events", "-n", ns],
        &["get", "customresourcedefinitions/other.example.com"],
        &["list", "customresourcedefinitions"],
        &[
            "create",
            "leases.coordination.k8s.io",
            "-n",
            release_ns_name,
        ],
        &["get", "leases/other", "-n", release_ns_name],
        &["get", "leases/ferry", "-n", ns],
        &["create", "modelruntimes.ferry.dev"],
        &["patch", "modelruntimes.ferry.dev"],
        &["update", "modelruntimes.ferry.dev"],
        &["delete", "modelruntimes.ferry.dev"],
        &["deletecollection", "modelruntimes.ferry.dev"],
        &["patch", "modelruntimes.ferry.dev", "--subresource=status"],
    ] {
        assert!(!can_i(&service_account, refused), "can {refused:?}");
    }
    // And for real, with the controller's own token.
    let as_controller = |args: &[&str]| {
        Command::new(plane.bin_dir.join("kubectl"))
            .env("KUBECONFIG", &kubeconfig.0)
            .args(args)
            .output()
            .unwrap()
    };
    for forbidden in [
        &["get", "secrets", "-n", ns][..],
        &["create", "serviceaccount", "stolen", "-n", ns],
        &[
            "create",
            "clusterrole",
            "escalate",
            "--verb=*",
            "--resource=*",
        ],
    ] {
        let output = as_controller(forbidden);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains("forbidden"),
            "{forbidden:?} was not refused: {stderr}"
        );
    }
    let allowed = as_controller(&["get", "modeldeployments", "--all-namespaces"]);
    assert!(allowed.status.success());

    drop(controller);
    drop(release);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_scoped_mode_reconciles_only_the_listed_namespaces() {
    let plane = control_plane();
    let release_ns = TestNamespace::create();
    let team_a = TestNamespace::create();
    let team_b = TestNamespace::create();
    let elsewhere = TestNamespace::create();
    let release = Release::install(
        &release_ns.name,
        &[
            "--set",
            &format!("watchNamespaces={{{},{}}}", team_a.name, team_b.name),
        ],
    );
    let service_account = release.service_account();
    let scoped_role = format!("ferry-{}", release_ns.name);
    for namespace in [&team_a.name, &team_b.name] {
        assert_eq!(
            get_json(&["role", &scoped_role, "-n", namespace])["rules"],
            expected_namespaced_rules()
        );
    }
    assert!(!plane
        .kubectl(&["get", "clusterrole", &scoped_role])
        .status
        .success());
    // Cluster-wide only the CRD check and the catalogue, as in cluster-wide mode.
    assert_cluster_rules(&release_ns.name);

    // The controller exactly as the chart configures it (watching team-a and team-b), with the release's own
    // catalogue (ModelRuntimes are cluster-scoped, and other tests make theirs).
    let kubeconfig = plane.service_account_kubeconfig(&release_ns.name, "ferry");
    let mut env = release.controller_env_with_key("ferry-0");
    env.insert("FERRY_RUNTIME_SELECTOR".into(), release.runtime_selector());
    assert_eq!(
        env["FERRY_WATCH_NAMESPACES"],
        format!("{},{}", team_a.name, team_b.name)
    );
    // Only what the pod would have: the chart's environment (and a free metrics port).
    let controller = FerryRun::watching(&[])
        .only(&env)
        .kubeconfig(&kubeconfig.0)
        .start();

    let client = plane.client().await;
    let workloads: Vec<Workload> = [&team_a, &team_b, &elsewhere]
        .into_iter()
        .map(|ns| Workload::new(&client, &ns.name))
        .collect();
    for workload in &workloads {
        workload.create("iris", json!({})).await;
    }
    for workload in &workloads[..2] {
        let first = workload.revision_of(&controller, "iris", "1").await;
        workload.make_ready(&controller, "iris", &first).await;
        workload
            .wait_status(&controller, "iris", "Ready", is_ready)
            .await;
    }
    // The namespace it does not watch is untouched: no status, no Deployment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ignored = workloads[2].mds().get("iris").await.unwrap();
    assert!(ignored.status.is_none(), "{:?}", ignored.status);
    assert!(workloads[2]
        .deployments()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert_healthy(&controller);

    let (a, b, other) = (
        team_a.name.as_str(),
        team_b.name.as_str(),
        elsewhere.name.as_str(),
    );
    for allowed in [
        &["list", "modeldeployments.ferry.dev", "-n", a][..],
        &["create", "deployments.apps", "-n", b],
        &[
            "get",
            "customresourcedefinitions/modeldeployments.ferry.dev",
        ],
        &["watch", "modelruntimes.ferry.dev"],
    ] {
        assert!(can_i(&service_account, allowed), "cannot {allowed:?}");
    }
    for refused in [
        &["list", "modeldeployments.ferry.dev", "--all-namespaces"][..],
        &["list", "modeldeployments.ferry.dev", "-n", other],
        &["create", "deployments.apps", "-n", other],
        &["list", "pods", "-n", other],
        &["get", "secrets", "-n", a],
        &["create", "configmaps", "-n", other],
    ] {
        assert!(!can_i(&service_account, refused), "can {refused:?}");
    }
    drop(controller);
    drop(release);
}
