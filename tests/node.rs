//! End-to-end tests on a real node: kubelet + containerd + runc run the ferry-server pods, kube-proxy routes the
//! Services, the chart runs the controller in-cluster, and an S3-compatible store in the cluster serves the models
//! (`e2e/cluster.sh`). Nothing plays the kubelet here: readiness, failure reasons and the traffic switch are real.
//!
//! The cluster is `FERRY_E2E_DIR` (made by `bash e2e/cluster.sh up`, as `.ci/run` does), else one started for
//! this test binary and stopped when it exits. It needs root.

mod support;

// Scenarios kept in files of their own, with this file's helpers (`use super::*`).
#[path = "node/lost_state.rs"]
mod lost_state;
#[path = "node/python.rs"]
mod python;
#[path = "node/upgrade.rs"]
mod upgrade;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::{expect_success, repo_root, run_with_stdin};

const STORE_ACCESS_KEY: &str = "ferry";
const STORE_SECRET_KEY: &str = "ferry-local-secret";
/// Rows and the classes scikit-learn predicts for them, per sample model (server-image/testdata/expected.json).
const LOGREG: &str = "logreg";
const MLP: &str = "mlp";

struct Cluster {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    s3_endpoint: String,
    /// The node's address on the pod network: pods reach the host there.
    node_ip: String,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let dir = match std::env::var_os("FERRY_E2E_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => start_cluster(),
        };
        let env = read_env(&dir.join("env"));
        let kubectl = env["PATH"]
            .split(':')
            .map(|p| PathBuf::from(p).join("kubectl"))
            .find(|p| p.is_file())
            .expect("the cluster's env puts kubectl on PATH");
        Cluster {
            kubeconfig: PathBuf::from(&env["KUBECONFIG"]),
            kubectl,
            s3_endpoint: env["FERRY_S3_ENDPOINT"].clone(),
            node_ip: env["FERRY_NODE_IP"].clone(),
        }
    })
}

fn start_cluster() -> PathBuf {
    let status =
        std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    assert!(
        root,
        "the real-node e2e tests need root (containerd, runc, iptables): run them as root, e.g. \
         `sudo -E cargo test --test node`, or point FERRY_E2E_DIR at a cluster from `bash e2e/cluster.sh up`"
    );
    let output = Command::new("bash")
        .arg(repo_root().join("e2e/cluster.sh"))
        .args(["up", "--watch-pid", &std::process::id().to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash runs e2e/cluster.sh");
    assert!(
        output.status.success(),
        "`bash e2e/cluster.sh up` failed (its log is above); it installs what it needs with \
         `bash e2e/control-plane.sh install --node` and `bash server-image/scripts/setup-test-deps.sh`"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("cluster.sh prints its directory")
            .trim(),
    )
}

/// `export NAME=value` lines of a cluster's env file (values are shell-quoted with %q; ours need no unquoting
/// beyond plain words).
fn read_env(path: &std::path::Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').replace(":\"$PATH", "")))
        .collect()
}

impl Cluster {
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new(&self.kubectl);
        command.env("KUBECONFIG", &self.kubeconfig).args(args);
        run_with_stdin(command, stdin)
    }

    fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        expect_success(
            self.kubectl(args, stdin),
            &format!("kubectl {}", args.join(" ")),
        )
    }

    /// `kubectl ferry ARGS`: the operator binary of this build is the plugin.
    fn ferry(&self, args: &[&str]) -> String {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command.env("KUBECONFIG", &self.kubeconfig).args(args);
        expect_success(
            run_with_stdin(command, None),
            &format!("kubectl ferry {}", args.join(" ")),
        )
    }
}

/// A namespace with the store's credentials as a Secret, deleted when the test ends.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create() -> Self {
        let suffix: u32 = rand::random();
        let name = format!("ferry-e2e-{suffix:08x}");
        let c = cluster();
        c.kubectl_ok(&["create", "namespace", &name], None);
        c.kubectl_ok(
            &[
                "-n",
                &name,
                "create",
                "secret",
                "generic",
                "store-credentials",
                &format!("--from-literal=AWS_ACCESS_KEY_ID={STORE_ACCESS_KEY}"),
                &format!("--from-literal=AWS_SECRET_ACCESS_KEY={STORE_SECRET_KEY}"),
            ],
            None,
        );
        Namespace { name }
    }

    /// Applies the ModelDeployment `name` serving `version` from the store's iris/`object` (a sample model).
    fn apply(&self, name: &str, version: &str, model: &str, sha256: &str, auto_promote: bool) {
        self.apply_spec(
            name,
            version,
            model,
            sha256,
            1,
            json!({"autoPromote": auto_promote, "loadTimeoutSeconds": 120}),
        );
    }

    /// Applies the ModelDeployment `name` of `replicas` pods serving `version` of `model` with `rollout`. Forced:
    /// `kubectl ferry rollback` may have written the model fields under its own manager.
    fn apply_spec(
        &self,
        name: &str,
        version: &str,
        model: &str,
        sha256: &str,
        replicas: i32,
        rollout: Value,
    ) {
        let manifest = json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": self.name},
            "spec": {
                "model": {
                    "name": "iris",
                    "uri": format!("s3://models/iris/{}/model.onnx", object_version(model)),
                    "version": version,
                    "sha256": sha256,
                    "credentialsSecretRef": {"name": "store-credentials"},
                    "storage": {"endpoint": cluster().s3_endpoint, "region": "us-east-1", "allowHttp": true},
                },
                "replicas": replicas,
                "rollout": rollout,
            },
        });
        cluster().kubectl_ok(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=e2e",
                "-f",
                "-",
            ],
            Some(&manifest.to_string()),
        );
    }

    fn get(&self, name: &str) -> Value {
        let out = cluster().kubectl_ok(
            &[
                "-n",
                &self.name,
                "get",
                "modeldeployment",
                name,
                "-o",
                "json",
            ],
            None,
        );
        serde_json::from_str(&out).expect("kubectl prints JSON")
    }

    /// Waits for `what` to hold for the ModelDeployment, panicking with its last status after `timeout`.
    fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let md = self.get(name);
            if check(&md) {
                return md;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; status: {:#}\npods: {}",
                md["status"],
                cluster()
                    .kubectl(&["-n", &self.name, "get", "pods", "-o", "wide"], None)
                    .stdout
                    .escape_ascii()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `http://CLUSTER-IP:PORT` of the Service `name`, reached through kube-proxy.
    fn service_url(&self, name: &str) -> String {
        let out = cluster().kubectl_ok(
            &[
                "-n",
                &self.name,
                "get",
                "service",
                name,
                "-o",
                "jsonpath={.spec.clusterIP}:{.spec.ports[?(@.name==\"http\")].port}",
            ],
            None,
        );
        format!("http://{}", out.trim())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        cluster().kubectl(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}

fn condition<'a>(md: &'a Value, kind: &str) -> Option<&'a Value> {
    md["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn condition_is(md: &Value, kind: &str, status: &str, reason: Option<&str>) -> bool {
    condition(md, kind).is_some_and(|c| {
        c["status"] == status
            && reason.is_none_or(|r| c["reason"] == r)
            && c["observedGeneration"] == md["metadata"]["generation"]
    })
}

fn object_version(model: &str) -> &'static str {
    match model {
        LOGREG => "1.0.0",
        MLP => "2.0.0",
        other => panic!("no sample model {other} in the store"),
    }
}

struct Expected {
    input: String,
    rows: Vec<Vec<f64>>,
    labels: Vec<i64>,
    /// Flattened, row after row.
    probabilities: Vec<f64>,
}

fn expected(model: &str) -> Expected {
    let path = repo_root().join("server-image/testdata/expected.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let m = &all[model];
    Expected {
        input: m["input"].as_str().unwrap().to_owned(),
        rows: serde_json::from_value(m["rows"].clone()).unwrap(),
        labels: serde_json::from_value(m["labels"].clone()).unwrap(),
        probabilities: serde_json::from_value::<Vec<Vec<f64>>>(m["probabilities"].clone())
            .unwrap()
            .concat(),
    }
}

fn sha256_of(model: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(model_bytes(model)))
}

/// The bytes of a sample model (server-image/testdata/models).
fn model_bytes(model: &str) -> Vec<u8> {
    std::fs::read(repo_root().join(format!("server-image/testdata/models/{model}.onnx"))).unwrap()
}

/// One OIP v2 inference through the Service: the version that answered and its predicted labels.
async fn infer(
    http: &reqwest::Client,
    url: &str,
    model: &Expected,
) -> Result<(String, Vec<i64>), String> {
    infer_answer(http, url, model)
        .await
        .map(|answer| (answer.version, answer.labels))
}

/// One OIP v2 inference through the Service, with every output the tests compare.
async fn infer_answer(
    http: &reqwest::Client,
    url: &str,
    model: &Expected,
) -> Result<Answer, String> {
    let rows = model.rows.len();
    let body = json!({"inputs": [{
        "name": model.input,
        "shape": [rows, model.rows[0].len()],
        "datatype": "FP32",
        "data": model.rows.iter().flatten().collect::<Vec<_>>(),
    }]});
    let response = http
        .post(format!("{url}/v2/models/iris/infer"))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("reading the body failed: {}", error_chain(&e)))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {text}"));
    }
    let reply: Value =
        serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))?;
    let output = |name: &str| {
        reply["outputs"]
            .as_array()
            .and_then(|outs| outs.iter().find(|o| o["name"] == name))
            .map(|o| o["data"].clone())
    };
    Ok(Answer {
        version: reply["model_version"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        labels: output("label")
            .and_then(|data| serde_json::from_value(data).ok())
            .ok_or_else(|| format!("no label output: {text}"))?,
        probabilities: output("probabilities")
            .and_then(|data| serde_json::from_value(data).ok())
            .unwrap_or_default(),
    })
}

/// An error with its causes ("error sending request" alone does not say refused, reset or timed out).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A client that opens a new connection for every request, so each request is routed by the Service anew. (A
/// kept-alive connection stays with the pod it was opened to, whatever the Service selects later: kube-proxy
/// routes connections, not requests.)
fn http_client() -> reqwest::Client {
    // Under `cargo test --workspace` reqwest is built with ferry-server's TLS features: rustls without a
    // bundled crypto provider, which a client needs installed before it is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        // A request the 2-core test node stalls is slow, not failed; a refused or reset one fails at once.
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .unwrap()
}

/// Sends requests through the Service back to back until stopped, recording every version that answered and
/// every failure, each checked against the predictions of the model that version serves.
struct RequestLoop {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<u64>,
}

/// What one request through the Service answered: the model version and the outputs.
struct Answer {
    version: String,
    labels: Vec<i64>,
    probabilities: Vec<f64>,
}

impl RequestLoop {
    /// Records each version that answers, checking its labels against the model that `models` says it serves.
    fn start(url: String, models: BTreeMap<String, &'static str>) -> Self {
        Self::start_classifying(url, move |answer| {
            let want = models.get(&answer.version).map(|m| expected(m).labels);
            if want.as_ref() != Some(&answer.labels) {
                return Err(format!(
                    "version {:?} answered {:?}, want {want:?}",
                    answer.version, answer.labels
                ));
            }
            Ok(answer.version.clone())
        })
    }

    /// A loop that knows 1.0.0 (logreg) and 2.0.0 (mlp), once 1.0.0 answered.
    async fn one_then_two(url: &str) -> Self {
        let models = BTreeMap::from([("1.0.0".to_owned(), LOGREG), ("2.0.0".to_owned(), MLP)]);
        let requests = RequestLoop::start(url.to_owned(), models);
        requests
            .wait_for_version("1.0.0", Duration::from_secs(10))
            .await;
        requests
    }

    /// Records which of `models` answers, told apart by its probabilities (with spec.model.refresh every object
    /// is the same version); an answer that is none of them is a failure.
    fn start_by_model(url: String, models: &'static [&'static str]) -> Self {
        Self::start_classifying(url, move |answer| {
            models
                .iter()
                .find(|m| {
                    let want = expected(m);
                    want.labels == answer.labels
                        && want.probabilities.len() == answer.probabilities.len()
                        && want
                            .probabilities
                            .iter()
                            .zip(&answer.probabilities)
                            .all(|(a, b)| (a - b).abs() < 1e-4)
                })
                .map(|m| (*m).to_owned())
                .ok_or_else(|| {
                    format!(
                        "version {:?} answered {:?} / {:?}: none of {models:?}",
                        answer.version, answer.labels, answer.probabilities
                    )
                })
        })
    }

    fn start_classifying(
        url: String,
        classify: impl Fn(&Answer) -> Result<String, String> + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, v, f) = (stop.clone(), seen.clone(), failures.clone());
        let task = tokio::spawn(async move {
            let http = http_client();
            let input = expected(LOGREG);
            let started = Instant::now();
            let mut sent = 0u64;
            // Bounded: no test rollout takes ten minutes.
            while !s.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                sent += 1;
                match infer_answer(&http, &url, &input)
                    .await
                    .and_then(|answer| classify(&answer))
                {
                    Ok(seen_now) => {
                        let mut seen = v.lock().unwrap();
                        if seen.last() != Some(&seen_now) {
                            seen.push(seen_now);
                        }
                    }
                    Err(e) => f.lock().unwrap().push(e),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        });
        RequestLoop {
            stop,
            seen,
            failures,
            task,
        }
    }

    fn last_version(&self) -> Option<String> {
        self.seen.lock().unwrap().last().cloned()
    }

    async fn wait_for_version(&self, version: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        while self.last_version().as_deref() != Some(version) {
            assert!(
                started.elapsed() < timeout,
                "the Service did not answer with {version} within {timeout:?}; versions seen: {:?}, failures: {:?}",
                self.seen.lock().unwrap(),
                self.failures.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    /// Stops the loop and asserts that no request failed and that the versions answered in this order.
    async fn finish(self, versions: &[&str]) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.task.await.unwrap();
        let failures = self.failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "{} of {sent} requests failed: {failures:#?}",
            failures.len()
        );
        let seen = self.seen.lock().unwrap().clone();
        assert_eq!(
            seen, versions,
            "versions in the order they answered ({sent} requests)"
        );
        eprintln!("request loop: {sent} requests through the Service, 0 failed, versions {seen:?}");
        sent
    }
}

/// Waits until the Service answers at all, and returns how long that took.
async fn first_answer(url: &str, timeout: Duration) -> Duration {
    let http = http_client();
    let model = expected(LOGREG);
    let started = Instant::now();
    loop {
        let result = infer(&http, url, &model).await;
        if result.is_ok() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "no successful inference within {timeout:?}: {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn serving(md: &Value, version: &str) -> bool {
    condition_is(md, "Ready", "True", None) && md["status"]["active"]["version"] == version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_bump_promotion_and_rollback_never_fail_a_request() {
    let ns = Namespace::create();
    let c = cluster();

    // Apply -> Ready -> the first answer through the Service.
    let applied = Instant::now();
    ns.apply("iris", "1.0.0", LOGREG, &sha256_of(LOGREG), false);
    let md = ns.wait_for("iris", "1.0.0 Ready", Duration::from_secs(180), |md| {
        serving(md, "1.0.0")
    });
    let url = ns.service_url("iris");
    first_answer(&url, Duration::from_secs(30)).await;
    eprintln!(
        "figure: apply -> first successful inference through the Service: {:.1?}",
        applied.elapsed()
    );
    let (version, labels) = infer(&http_client(), &url, &expected(LOGREG))
        .await
        .unwrap();
    assert_eq!(version, "1.0.0");
    assert_eq!(
        labels,
        expected(LOGREG).labels,
        "ferry-server's answers match scikit-learn's"
    );
    assert!(
        md["status"]["endpoint"]
            .as_str()
            .is_some_and(|e| e.contains("iris")),
        "{:#}",
        md["status"]
    );

    let requests = RequestLoop::one_then_two(&url).await;

    // Bump with the gate: the candidate loads and gets ready, but takes no traffic until promoted.
    let bumped = Instant::now();
    ns.apply("iris", "2.0.0", MLP, &sha256_of(MLP), false);
    ns.wait_for(
        "iris",
        "2.0.0 waiting for promotion",
        Duration::from_secs(180),
        |md| condition_is(md, "Progressing", "True", Some("WaitingForPromotion")),
    );
    let candidate_ready = bumped.elapsed();
    // The preview Service reaches the candidate (once kube-proxy has programmed the endpoints it just gained,
    // within about a second); the active one still answers with 1.0.0.
    let preview = ns.service_url("iris-preview");
    first_answer(&preview, Duration::from_secs(30)).await;
    let (preview_version, _) = infer(&http_client(), &preview, &expected(LOGREG))
        .await
        .expect("the preview Service answers");
    assert_eq!(preview_version, "2.0.0");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        requests.last_version().as_deref(),
        Some("1.0.0"),
        "traffic moved before promotion"
    );

    c.ferry(&["promote", "iris", "-n", &ns.name]);
    let switch = requests
        .wait_for_version("2.0.0", Duration::from_secs(60))
        .await;
    eprintln!(
        "figure: bump -> candidate ready (download, verify, load, warm-up) {candidate_ready:.1?}; \
         promote -> Service answers 2.0.0 {switch:.1?} (total {:.1?})",
        bumped.elapsed()
    );
    ns.wait_for("iris", "2.0.0 serving", Duration::from_secs(60), |md| {
        serving(md, "2.0.0")
    });

    // Rollback: the previous version is still warm, so the switch back needs no pod to start.
    c.ferry(&["rollback", "iris", "-n", &ns.name]);
    let back = requests
        .wait_for_version("1.0.0", Duration::from_secs(30))
        .await;
    eprintln!("figure: rollback -> Service answers 1.0.0: {back:.1?}");
    ns.wait_for(
        "iris",
        "1.0.0 serving again",
        Duration::from_secs(60),
        |md| serving(md, "1.0.0"),
    );

    requests.finish(&["1.0.0", "2.0.0", "1.0.0"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_with_a_wrong_checksum_never_receives_traffic_and_the_fixed_one_does() {
    let ns = Namespace::create();
    ns.apply("fraud", "1.0.0", LOGREG, &sha256_of(LOGREG), true);
    ns.wait_for("fraud", "1.0.0 Ready", Duration::from_secs(180), |md| {
        serving(md, "1.0.0")
    });
    let url = ns.service_url("fraud");
    first_answer(&url, Duration::from_secs(30)).await;
    let models = BTreeMap::from([("1.0.0".to_owned(), LOGREG), ("2.0.1".to_owned(), MLP)]);
    let requests = RequestLoop::start(url, models);
    requests
        .wait_for_version("1.0.0", Duration::from_secs(10))
        .await;

    // 2.0.0 names the mlp object but the logreg checksum: ferry-server refuses it after the download.
    ns.apply("fraud", "2.0.0", MLP, &sha256_of(LOGREG), true);
    let md = ns.wait_for(
        "fraud",
        "the failed load in the status",
        Duration::from_secs(180),
        |md| condition_is(md, "Degraded", "True", Some("ModelLoadFailed")),
    );
    let degraded = condition(&md, "Degraded").unwrap();
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("ChecksumMismatch"),
        "the server's reason reaches the status: {message}"
    );
    assert!(
        message.contains(&sha256_of(LOGREG)),
        "the message names the expected digest: {message}"
    );
    assert_eq!(
        md["status"]["active"]["version"], "1.0.0",
        "{:#}",
        md["status"]
    );
    assert!(
        condition_is(&md, "Ready", "True", None),
        "1.0.0 keeps serving: {:#}",
        md["status"]
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(requests.last_version().as_deref(), Some("1.0.0"));

    // The fixed version replaces the failed candidate and, with autoPromote, takes the traffic by itself.
    let bumped = Instant::now();
    ns.apply("fraud", "2.0.1", MLP, &sha256_of(MLP), true);
    requests
        .wait_for_version("2.0.1", Duration::from_secs(180))
        .await;
    eprintln!(
        "figure: version bump end to end (apply -> the Service answers the new version, autoPromote): {:.1?}",
        bumped.elapsed()
    );
    ns.wait_for("fraud", "2.0.1 serving", Duration::from_secs(60), |md| {
        serving(md, "2.0.1") && condition_is(md, "Degraded", "False", None)
    });
    requests.finish(&["1.0.0", "2.0.1"]).await;
}

/// Runs Debian's curl in a restricted pod of namespace `ns` with `args`, and returns its output (`-w` ends it with
/// the HTTP status on a line of its own).
fn curl_from_pod(ns: &str, pod: &str, args: &[&str]) -> String {
    let c = cluster();
    let manifest = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod, "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "curl",
                "image": "ferry.local/curl:e2e",
                "imagePullPolicy": "Never",
                "args": args,
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    });
    c.kubectl_ok(&["apply", "-f", "-"], Some(&manifest.to_string()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let phase = c.kubectl_ok(
            &[
                "-n",
                ns,
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.phase}",
            ],
            None,
        );
        if phase == "Succeeded" || phase == "Failed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pod {ns}/{pod} is still {phase:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    c.kubectl_ok(&["-n", ns, "logs", pod], None)
}

/// A load of `version` through a serving pod's admin port, from a pod in `ns`; returns (HTTP status, body).
fn load_from_pod(
    ns: &str,
    pod: &str,
    pod_ip: &str,
    version: &str,
    authorization: Option<&str>,
) -> (u16, Value) {
    let body = json!({"parameters": {
        "uri": "s3://models/iris/2.0.0/model.onnx", "version": version, "wait": true
    }})
    .to_string();
    let url = format!("http://{pod_ip}:8081/v2/repository/models/iris/load");
    let header;
    let mut args = vec![
        "-sS",
        "-m",
        "60",
        "-X",
        "POST",
        &url,
        "-H",
        "content-type: application/json",
        "-d",
        &body,
        "-w",
        "\n%{http_code}",
    ];
    if let Some(value) = authorization {
        header = format!("authorization: {value}");
        args.extend(["-H", &header]);
    }
    let output = curl_from_pod(ns, pod, &args);
    let (answer, code) = output
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", output.trim()));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl printed {output:?}"));
    (
        code,
        serde_json::from_str(answer).unwrap_or(Value::String(answer.into())),
    )
}

fn serving_pod(ns: &str, name: &str) -> (String, String) {
    let out = cluster().kubectl_ok(
        &[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            &format!("ferry.dev/model-deployment={name}"),
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[0].metadata.name} {.items[0].status.podIP}",
        ],
        None,
    );
    let (pod, ip) = out.trim().split_once(' ').expect("a running serving pod");
    (pod.to_owned(), ip.to_owned())
}

/// The credential the pod's Secret holds (read here with the test's admin rights; the controller derives it).
fn admin_credential(ns: &str, name: &str) -> String {
    cluster().kubectl_ok(
        &[
            "-n",
            ns,
            "get",
            "secret",
            &format!("{name}-ferry-admin"),
            "-o",
            "go-template={{.data.token | base64decode}}",
        ],
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_elsewhere_cannot_swap_the_model_and_a_rotated_credential_reaches_running_pods() {
    let ns = Namespace::create();
    let elsewhere = Namespace::create();
    let c = cluster();
    ns.apply("iris", "1.0.0", LOGREG, &sha256_of(LOGREG), true);
    ns.wait_for("iris", "1.0.0 Ready", Duration::from_secs(180), |md| {
        serving(md, "1.0.0")
    });
    let url = ns.service_url("iris");
    first_answer(&url, Duration::from_secs(30)).await;
    let models = BTreeMap::from([("1.0.0".to_owned(), LOGREG)]);
    let requests = RequestLoop::start(url.clone(), models);
    let (pod, pod_ip) = serving_pod(&ns.name, "iris");
    let credential = admin_credential(&ns.name, "iris");
    let (id, _) = credential.split_once('.').unwrap();

    // From another namespace: without a credential, and with a made-up one for this very pod.
    let forged = format!("Bearer {id}.{}", "0".repeat(64));
    for (attempt, authorization) in [("no-credential", None), ("forged", Some(forged.as_str()))] {
        let (code, body) = load_from_pod(&elsewhere.name, attempt, &pod_ip, "evil", authorization);
        assert_eq!(code, 401, "{attempt}: {body}");
        assert!(body["error"].is_string(), "{attempt}: {body}");
    }
    let (version, labels) = infer(&http_client(), &url, &expected(LOGREG))
        .await
        .unwrap();
    assert_eq!(
        (version.as_str(), labels),
        ("1.0.0", expected(LOGREG).labels)
    );
    let metrics = curl_from_pod(
        &elsewhere.name,
        "metrics",
        &["-sS", &format!("http://{pod_ip}:8081/metrics")],
    );
    assert!(
        metrics.contains("ferry_admin_refused_total{reason=\"missing\"} 1")
            && metrics.contains("ferry_admin_refused_total{reason=\"wrong\"} 1"),
        "{metrics}"
    );
    // The pod, its logs and `kubectl describe` never show the credential; the pod names only the Secret.
    let (_, secret_part) = credential.split_once('.').unwrap();
    for shown in [
        c.kubectl_ok(&["-n", &ns.name, "get", "pod", &pod, "-o", "json"], None),
        c.kubectl_ok(&["-n", &ns.name, "describe", "pod", &pod], None),
        c.kubectl_ok(&["-n", &ns.name, "logs", &pod], None),
        c.kubectl_ok(
            &[
                "-n",
                &ns.name,
                "get",
                "modeldeployment",
                "iris",
                "-o",
                "json",
            ],
            None,
        ),
    ] {
        assert!(
            !shown.contains(secret_part),
            "the credential is shown:\n{shown}"
        );
    }

    // The holder of the mounted credential is obeyed (here: the same version again, so traffic is unchanged).
    let bearer = format!("Bearer {credential}");
    let reload = json!({"parameters": {
        "uri": "s3://models/iris/1.0.0/model.onnx", "version": "1.0.0", "wait": true
    }})
    .to_string();
    let admin_url = format!("http://{pod_ip}:8081/v2/repository/models/iris/load");
    let out = curl_from_pod(
        &elsewhere.name,
        "holder",
        &[
            "-sS",
            "-X",
            "POST",
            &admin_url,
            "-H",
            &format!("authorization: {bearer}"),
            "-d",
            &reload,
            "-w",
            "\n%{http_code}",
        ],
    );
    assert!(out.trim_end().ends_with("\n200"), "{out}");

    // Rotation: a new Secret reaches the running pod without a restart; the old credential stops working.
    c.ferry(&["rotate", "iris", "-n", &ns.name]);
    let rotated = Instant::now();
    let new_credential = loop {
        let current = c.kubectl(
            &[
                "-n",
                &ns.name,
                "get",
                "secret",
                "iris-ferry-admin",
                "-o",
                "go-template={{.data.token | base64decode}}",
            ],
            None,
        );
        let text = String::from_utf8_lossy(&current.stdout).into_owned();
        if current.status.success() && !text.is_empty() && text != credential {
            break text;
        }
        assert!(rotated.elapsed() < Duration::from_secs(30), "no new Secret");
        std::thread::sleep(Duration::from_millis(250));
    };
    let (new_id, _) = new_credential.split_once('.').unwrap();
    // The kubelet refreshes Secret volumes on its pod sync (about a minute).
    loop {
        let status = curl_from_pod(
            &elsewhere.name,
            &format!("status-{}", rotated.elapsed().as_secs()),
            &["-sS", &format!("http://{pod_ip}:8081/status")],
        );
        let status: Value = serde_json::from_str(&status).unwrap_or_default();
        if status["admin"]["credential_id"] == new_id {
            break;
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(180),
            "the pod still reports {}",
            status["admin"]
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    eprintln!(
        "figure: kubectl ferry rotate -> running pod holds the new credential: {:.1?}",
        rotated.elapsed()
    );
    let (code, _) = load_from_pod(
        &elsewhere.name,
        "old-credential",
        &pod_ip,
        "evil",
        Some(&bearer),
    );
    assert_eq!(code, 401, "the old credential still works");
    let restarts = c.kubectl_ok(
        &[
            "-n",
            &ns.name,
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        None,
    );
    assert_eq!(restarts.trim(), "0", "the pod was not restarted");
    requests.finish(&["1.0.0"]).await;
}

/// A model store as slow as the test wants, on the node's address (pods reach the host there): `/slow/...`
/// sends the file in small pieces with pauses, `/hang/...` sends a part of it and then nothing.
struct SlowStore {
    url: String,
    /// When `/hang` stopped sending.
    hung_at: Arc<Mutex<Option<Instant>>>,
}

impl SlowStore {
    async fn start(model: Vec<u8>, piece: usize, pause: Duration) -> SlowStore {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind((cluster().node_ip.as_str(), 0))
            .await
            .expect("bind on the node address");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hung_at = Arc::new(Mutex::new(None));
        let hung = hung_at.clone();
        let model = Arc::new(model);
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (model, hung) = (model.clone(), hung.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&request).to_string();
                    let header = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nETag: \"e2e\"\r\nConnection: close\r\n\r\n",
                        model.len()
                    );
                    if socket.write_all(header.as_bytes()).await.is_err()
                        || head.starts_with("HEAD")
                    {
                        return;
                    }
                    let hang = head.contains(" /hang/");
                    let mut sent = 0;
                    for chunk in model.chunks(piece) {
                        if hang && sent >= model.len() / 4 {
                            *hung.lock().unwrap() = Some(Instant::now());
                            // Keeps the connection open and silent.
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        if socket.write_all(chunk).await.is_err() {
                            return;
                        }
                        sent += chunk.len();
                        tokio::time::sleep(pause).await;
                    }
                });
            }
        });
        SlowStore { url, hung_at }
    }
}

impl Namespace {
    /// A ModelDeployment of one replica loading `uri` with a progress deadline of `deadline_seconds`.
    fn apply_from(&self, name: &str, uri: &str, sha256: &str, deadline_seconds: u64) {
        let manifest = json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": self.name},
            "spec": {
                "model": {"name": "iris", "uri": uri, "version": "1.0.0", "sha256": sha256},
                "replicas": 1,
                "rollout": {"progressDeadlineSeconds": deadline_seconds, "loadTimeoutSeconds": 300},
            },
        });
        cluster().kubectl_ok(
            &["apply", "--server-side", "--field-manager=e2e", "-f", "-"],
            Some(&manifest.to_string()),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_keeps_moving_outlives_the_progress_deadline_and_one_that_hangs_is_aborted_by_it(
) {
    let model =
        std::fs::read(repo_root().join(format!("server-image/testdata/models/{LOGREG}.onnx")))
            .unwrap();
    let sha256 = sha256_of(LOGREG);
    // About 20 s for the whole file, twice the deadline, but never 10 s without a byte.
    let pieces = 40;
    let store = SlowStore::start(
        model.clone(),
        model.len().div_ceil(pieces),
        Duration::from_millis(500),
    )
    .await;
    let ns = Namespace::create();
    ns.apply_from(
        "slow",
        &format!("{}/slow/model.onnx", store.url),
        &sha256,
        10,
    );
    ns.apply_from(
        "stuck",
        &format!("{}/hang/model.onnx", store.url),
        &sha256,
        10,
    );

    // `kubectl ferry status` shows the load in flight with a progress bar.
    let started = Instant::now();
    let shown = loop {
        let out = cluster().ferry(&["status", "slow", "-n", &ns.name]);
        if out.contains("Downloading") && out.contains("[#") && out.contains("/s") {
            break out;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no load in flight shown by kubectl ferry status:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("kubectl ferry status during the load:\n{shown}");
    assert!(
        shown.contains(" of ") || shown.contains(" / "),
        "bytes shown:\n{shown}"
    );

    let md = ns.wait_for(
        "stuck",
        "the hung load aborted",
        Duration::from_secs(120),
        |md| condition_is(md, "Degraded", "True", Some("ProgressDeadlineExceeded")),
    );
    let aborted_after = store
        .hung_at
        .lock()
        .unwrap()
        .expect("the hanging download started")
        .elapsed();
    let message = condition(&md, "Degraded").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    eprintln!("figure: hung download aborted {aborted_after:.1?} after its last byte (deadline 10 s): {message}");
    assert!(
        aborted_after <= Duration::from_secs(10 + 2 + 3),
        "aborted {aborted_after:?} after the last byte: more than the deadline plus one read period"
    );
    assert!(
        message.contains("no load progress") && message.contains("downloading at"),
        "the phase and bytes where it stalled: {message}"
    );

    ns.wait_for(
        "slow",
        "the slow load promoted",
        Duration::from_secs(120),
        |md| serving(md, "1.0.0"),
    );
    let load_time = started.elapsed();
    assert!(
        load_time > Duration::from_secs(10),
        "the load took {load_time:?}, not longer than the deadline: the test proves nothing"
    );
    eprintln!(
        "figure: slow load of {} bytes promoted after {load_time:.1?} (deadline 10 s)",
        model.len()
    );
    // The kubelet's readiness comes first; the controller's next read of the pod (within 2 s) brings its SHA-256.
    let md = ns.wait_for(
        "slow",
        "the served SHA-256 in the status",
        Duration::from_secs(30),
        |md| md["status"]["active"]["servedSha256"] == json!([sha256]),
    );
    let active = &md["status"]["active"];
    assert_eq!(active["pods"][0]["sha256"], sha256.as_str());
    assert_eq!(active["podCounts"]["ready"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_reaches_the_model_through_the_active_service() {
    use ferry_server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
    use ferry_server::grpc::proto::model_infer_request::InferInputTensor;
    use ferry_server::grpc::proto::{
        InferTensorContents, ModelInferRequest, ModelMetadataRequest, ServerReadyRequest,
    };

    let ns = Namespace::create();
    ns.apply("grpc", "1.0.0", LOGREG, &sha256_of(LOGREG), true);
    let md = ns.wait_for("grpc", "1.0.0 Ready", Duration::from_secs(180), |md| {
        serving(md, "1.0.0")
    });
    let endpoint = md["status"]["grpcEndpoint"].as_str().unwrap_or_default();
    assert!(
        endpoint.starts_with(&format!("grpc.{}.svc.", ns.name)) && endpoint.ends_with(":8082"),
        "{endpoint}"
    );
    // No cluster DNS here: the same Service by its cluster IP, on its port named grpc.
    let address = cluster().kubectl_ok(
        &["-n", &ns.name, "get", "service", "grpc", "-o",
          "jsonpath={.spec.clusterIP}:{.spec.ports[?(@.name==\"grpc\")].port} {.spec.ports[?(@.name==\"grpc\")].appProtocol}"],
        None,
    );
    let (address, app_protocol) = address
        .trim()
        .split_once(' ')
        .expect("address and appProtocol");
    assert_eq!(app_protocol, "kubernetes.io/h2c");
    let started = Instant::now();
    let mut client = loop {
        match tonic::transport::Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => break GrpcInferenceServiceClient::new(channel),
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                eprintln!("waiting for kube-proxy: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("gRPC through the Service at {address}: {e}"),
        }
    };
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.versions, ["1.0.0"]);
    let model = expected(LOGREG);
    let reply = client
        .model_infer(ModelInferRequest {
            model_name: "iris".into(),
            inputs: vec![InferInputTensor {
                name: model.input.clone(),
                datatype: "FP32".into(),
                shape: vec![model.rows.len() as i64, model.rows[0].len() as i64],
                contents: Some(InferTensorContents {
                    fp32_contents: model.rows.iter().flatten().map(|v| *v as f32).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("ModelInfer through the Service: {status}"))
        .into_inner();
    assert_eq!(reply.model_version, "1.0.0");
    let label = reply
        .outputs
        .iter()
        .position(|o| o.name == "label")
        .expect("a label output");
    let labels: Vec<i64> = reply.raw_output_contents[label]
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(labels, model.labels, "scikit-learn's labels over gRPC");
}

/// A golden set of `model`'s rows with the class probabilities scikit-learn gives for them, one case a row,
/// tight enough that another model with the same labels fails it.
fn golden_set(model: &str) -> Vec<u8> {
    let path = repo_root().join("server-image/testdata/expected.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let m = &all[model];
    let rows: Vec<Vec<f64>> = serde_json::from_value(m["rows"].clone()).unwrap();
    let probabilities: Vec<Vec<f64>> = serde_json::from_value(m["probabilities"].clone()).unwrap();
    let cases: Vec<Value> = rows
        .iter()
        .zip(&probabilities)
        .enumerate()
        .map(|(i, (row, p))| {
            json!({
                "name": format!("row-{i}"),
                "request": {"inputs": [{"name": m["input"], "shape": [1, row.len()], "datatype": "FP32", "data": row}]},
                "expected": {"outputs": [{"name": "probabilities", "shape": [1, p.len()], "datatype": "FP32", "data": p}]},
            })
        })
        .collect();
    json!({"tolerance": {"absolute": 1e-4, "relative": 1e-4}, "min_pass_rate": 1.0, "cases": cases})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_fails_its_golden_set_or_changes_the_signature_never_receives_a_request() {
    let ns = Namespace::create();
    let c = cluster();
    let golden = SlowStore::start(golden_set(LOGREG), 1 << 20, Duration::ZERO).await;
    let rf_binary =
        std::fs::read(repo_root().join("server-image/testdata/models/rf_binary.onnx")).unwrap();
    let other_signature = SlowStore::start(rf_binary.clone(), 1 << 20, Duration::ZERO).await;
    let apply = |version: &str, uri: &str, sha256: &str, allow_signature_change: bool| {
        let manifest = json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "gated", "namespace": ns.name},
            "spec": {
                "model": {
                    "name": "iris", "uri": uri, "version": version, "sha256": sha256,
                    "credentialsSecretRef": {"name": "store-credentials"},
                    "storage": {"endpoint": c.s3_endpoint, "region": "us-east-1", "allowHttp": true},
                    "validation": {"uri": format!("{}/golden.json", golden.url)},
                },
                "replicas": 1,
                "rollout": {"loadTimeoutSeconds": 120, "allowSignatureChange": allow_signature_change},
            },
        });
        let mut manifest = manifest;
        if !uri.starts_with("s3://") {
            let model = manifest["spec"]["model"].as_object_mut().unwrap();
            model.remove("storage");
            model.remove("validation");
        }
        c.kubectl_ok(
            &["apply", "--server-side", "--field-manager=e2e", "-f", "-"],
            Some(&manifest.to_string()),
        );
    };
    let s3 = |model: &str| format!("s3://models/iris/{}/model.onnx", object_version(model));

    // 1.0.0 reproduces its own golden set and serves; the status shows the result and the signature.
    apply("1.0.0", &s3(LOGREG), &sha256_of(LOGREG), false);
    let md = ns.wait_for("gated", "1.0.0 Ready", Duration::from_secs(180), |md| {
        serving(md, "1.0.0") && md["status"]["active"]["validation"]["passed"].is_i64()
    });
    let validation = &md["status"]["active"]["validation"];
    assert_eq!(validation["passed"], validation["cases"], "{validation}");
    assert_eq!(
        md["status"]["active"]["signature"]["inputs"][0]["name"],
        "float_input"
    );
    let url = ns.service_url("gated");
    first_answer(&url, Duration::from_secs(30)).await;
    let requests = RequestLoop::start(url, BTreeMap::from([("1.0.0".to_owned(), LOGREG)]));

    // 2.0.0 (the MLP) predicts the same labels but other probabilities: it fails the golden set and is aborted.
    apply("2.0.0", &s3(MLP), &sha256_of(MLP), false);
    let md = ns.wait_for(
        "gated",
        "2.0.0 aborted by its golden set",
        Duration::from_secs(180),
        |md| condition_is(md, "Degraded", "True", Some("ValidationFailed")),
    );
    let message = condition(&md, "Degraded").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("cases passed"), "{message}");
    assert_eq!(md["status"]["history"][0]["outcome"], "Aborted");
    assert!(
        c.ferry(&["status", "gated", "-n", &ns.name])
            .contains("ValidationFailed"),
        "kubectl ferry status names the reason"
    );

    // 3.0.0 takes six features instead of four: held with the difference listed, never promoted.
    let rf_sha = {
        use sha2::{Digest, Sha256};
        format!("{:x}", Sha256::digest(&rf_binary))
    };
    let rf_uri = format!("{}/rf_binary.onnx", other_signature.url);
    apply("3.0.0", &rf_uri, &rf_sha, false);
    let md = ns.wait_for(
        "gated",
        "3.0.0 held by the signature gate",
        Duration::from_secs(180),
        |md| condition_is(md, "Degraded", "True", Some("SignatureChanged")),
    );
    let changes = md["status"]["candidate"]["signatureChanges"].to_string();
    assert!(changes.contains("float_input"), "{changes}");
    assert_eq!(md["status"]["active"]["version"], "1.0.0");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Clients of 1.0.0 send four features: stop them before the change is allowed.
    requests.finish(&["1.0.0"]).await;

    // Allowed: it passes, and the history says what changed.
    apply("3.0.0", &rf_uri, &rf_sha, true);
    let md = ns.wait_for("gated", "3.0.0 serving", Duration::from_secs(120), |md| {
        serving(md, "3.0.0")
    });
    let entry = &md["status"]["history"][0];
    assert_eq!(entry["outcome"], "Promoted");
    assert!(
        entry["message"]
            .as_str()
            .is_some_and(|m| m.contains("float_input")),
        "{entry}"
    );
}

/// The store's S3 API, as the serving pods reach it (the Service's cluster IP, routed by kube-proxy on this host).
fn store() -> object_store::aws::AmazonS3 {
    // The same crypto provider as `http_client` (object_store's client is reqwest too).
    let _ = rustls::crypto::ring::default_provider().install_default();
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&cluster().s3_endpoint)
        .with_bucket_name("models")
        .with_region("us-east-1")
        .with_access_key_id(STORE_ACCESS_KEY)
        .with_secret_access_key(STORE_SECRET_KEY)
        .with_allow_http(true)
        .build()
        .expect("an S3 client for the store")
}

/// Writes `bytes` over `models/<key>` through the store's S3 API (PutObject).
async fn overwrite(key: &str, bytes: Vec<u8>) {
    use object_store::ObjectStoreExt;
    store()
        .put(&object_store::path::Path::from(key), bytes.into())
        .await
        .unwrap_or_else(|e| panic!("PutObject models/{key}: {e}"));
}

impl Namespace {
    /// A ModelDeployment `name` of one replica following the object at its own key in the store
    /// (spec.model.refresh every 10 s), which starts as the logreg model; returns the key.
    async fn apply_refreshing(&self, name: &str) -> String {
        let key = format!("refresh/{}/model.onnx", self.name);
        overwrite(&key, model_bytes(LOGREG)).await;
        let manifest = json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": self.name},
            "spec": {
                "model": {
                    "name": "iris",
                    "uri": format!("s3://models/{key}"),
                    "version": "latest",
                    "refresh": {"intervalSeconds": 10},
                    "credentialsSecretRef": {"name": "store-credentials"},
                    "storage": {"endpoint": cluster().s3_endpoint, "region": "us-east-1", "allowHttp": true},
                },
                "replicas": 1,
                "rollout": {"loadTimeoutSeconds": 120},
            },
        });
        cluster().kubectl_ok(
            &["apply", "--server-side", "--field-manager=e2e", "-f", "-"],
            Some(&manifest.to_string()),
        );
        key
    }

    /// `kubectl annotate --overwrite` of one of the namespace's objects (`KEY=VALUE`, or `KEY-` to remove).
    fn annotate(&self, kind: &str, name: &str, annotation: &str) {
        cluster().kubectl_ok(
            &[
                "-n",
                &self.name,
                "annotate",
                "--overwrite",
                kind,
                name,
                annotation,
            ],
            None,
        );
    }
}

fn refresh_status(md: &Value) -> &Value {
    &md["status"]["refresh"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_object_rolls_out_pinned_a_corrupt_one_is_aborted_and_rollback_pauses_refresh() {
    let ns = Namespace::create();
    let c = cluster();
    let key = ns.apply_refreshing("fraud").await;
    let md = ns.wait_for(
        "fraud",
        "the first object serving, its identity read from the pod",
        Duration::from_secs(180),
        |md| serving(md, "latest") && md["status"]["active"]["object"].is_string(),
    );
    let first_object = md["status"]["active"]["object"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(refresh_status(&md)["paused"], false, "{:#}", md["status"]);
    let url = ns.service_url("fraud");
    first_answer(&url, Duration::from_secs(30)).await;
    let requests = RequestLoop::start_by_model(url, &[LOGREG, MLP]);
    requests
        .wait_for_version(LOGREG, Duration::from_secs(10))
        .await;

    // The object is replaced: detected by the pod's check, rolled out pinned, and the Service answers with it.
    let replaced = Instant::now();
    overwrite(&key, model_bytes(MLP)).await;
    let switched = requests
        .wait_for_version(MLP, Duration::from_secs(240))
        .await;
    eprintln!(
        "figure: object replaced -> the Service answers with it: {switched:.1?} (interval 10 s)"
    );
    let md = ns.wait_for(
        "fraud",
        "the new object active, in status and history",
        Duration::from_secs(60),
        |md| {
            let active = &md["status"]["active"];
            active["object"].is_string()
                && active["object"] != first_object.as_str()
                && active["servedSha256"] == json!([sha256_of(MLP)])
                && refresh_status(md)["object"] == active["object"]
                && md["status"]["history"][0]["object"] == active["object"]
        },
    );
    let second_object = md["status"]["active"]["object"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        refresh_status(&md)["detectedAt"].is_string(),
        "{:#}",
        md["status"]
    );
    assert_eq!(
        md["spec"]["model"]["version"], "latest",
        "the controller never writes the spec"
    );
    eprintln!(
        "refreshed in {:.1?}: {first_object} -> {second_object}",
        replaced.elapsed()
    );

    // A corrupt object: its revision is aborted, traffic stays.
    overwrite(&key, b"not an ONNX model".to_vec()).await;
    let md = ns.wait_for(
        "fraud",
        "the corrupt object aborted",
        Duration::from_secs(240),
        |md| {
            md["status"]["candidate"]["reason"] == "ModelLoadFailed"
                && md["status"]["candidate"]["object"] == refresh_status(md)["object"]
                && refresh_status(md)["object"] != second_object.as_str()
        },
    );
    eprintln!(
        "corrupt object aborted: {}",
        md["status"]["candidate"]["message"]
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        requests.last_version().as_deref(),
        Some(MLP),
        "traffic stayed"
    );
    let history = c.ferry(&["history", "fraud", "-n", &ns.name]);
    assert!(history.contains("Aborted"), "{history}");

    // Rollback: the first object, still warm, serves again and refresh pauses there.
    let out = c.ferry(&["rollback", "fraud", "-n", &ns.name]);
    assert!(out.contains("refresh is paused"), "{out}");
    requests
        .wait_for_version(LOGREG, Duration::from_secs(60))
        .await;
    ns.wait_for("fraud", "refresh paused", Duration::from_secs(60), |md| {
        refresh_status(md)["paused"] == true
    });
    // A fixed object while paused is noted, not rolled out.
    overwrite(&key, model_bytes(MLP)).await;
    let md = ns.wait_for(
        "fraud",
        "the newer object noted while paused",
        Duration::from_secs(120),
        |md| {
            refresh_status(md)["message"]
                .as_str()
                .is_some_and(|m| m.contains("not rolled out while paused"))
        },
    );
    assert_eq!(md["status"]["candidate"], Value::Null, "{:#}", md["status"]);
    assert_eq!(requests.last_version().as_deref(), Some(LOGREG));
    let shown = c.ferry(&["status", "fraud", "-n", &ns.name]);
    assert!(shown.contains("refresh:   PAUSED"), "{shown}");

    // Resume: refresh catches up with the newest object.
    c.ferry(&["resume", "fraud", "-n", &ns.name]);
    requests
        .wait_for_version(MLP, Duration::from_secs(240))
        .await;
    ns.wait_for(
        "fraud",
        "the newest object serving after resume",
        Duration::from_secs(60),
        |md| {
            refresh_status(md)["paused"] == false
                && md["status"]["active"]["servedSha256"] == json!([sha256_of(MLP)])
        },
    );
    requests.finish(&[LOGREG, MLP, LOGREG, MLP]).await;

    // Each transition was reported once as an Event on the ModelDeployment.
    let events = c.kubectl_ok(
        &[
            "-n",
            &ns.name,
            "get",
            "events",
            "--field-selector=involvedObject.kind=ModelDeployment",
            "-o",
            "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
        ],
        None,
    );
    for reason in [
        "ObjectChanged",
        "RefreshPaused",
        "RefreshResumed",
        "RolloutAborted",
    ] {
        assert!(
            events.lines().any(|r| r == reason),
            "{reason} in:\n{events}"
        );
    }
}

impl Namespace {
    /// Applies an InPlace ModelDeployment `name` of `replicas` pods serving `version` of `model`, with `sha256`.
    fn apply_in_place(&self, name: &str, version: &str, model: &str, sha256: &str, replicas: i32) {
        let rollout = json!({"strategy": "InPlace", "loadTimeoutSeconds": 120});
        self.apply_spec(name, version, model, sha256, replicas, rollout);
    }

    /// The reasons of the namespace's Events.
    fn event_reasons(&self) -> String {
        cluster().kubectl_ok(
            &[
                "-n",
                &self.name,
                "get",
                "events",
                "-o",
                "jsonpath={.items[*].reason}",
            ],
            None,
        )
    }

    /// The serving pods as (name, uid, restart count), by name.
    fn pods(&self, name: &str) -> Vec<(String, String, i64)> {
        let out = cluster().kubectl_ok(
            &[
                "-n",
                &self.name,
                "get",
                "pods",
                "-l",
                &format!("ferry.dev/model-deployment={name}"),
                "-o",
                "json",
            ],
            None,
        );
        let list: Value = serde_json::from_str(&out).unwrap();
        let mut pods: Vec<(String, String, i64)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_owned(),
                    p["metadata"]["uid"].as_str().unwrap().to_owned(),
                    p["status"]["containerStatuses"][0]["restartCount"]
                        .as_i64()
                        .unwrap_or(0),
                )
            })
            .collect();
        pods.sort();
        pods
    }
}

/// Every pod of the active revision in the status reports `version` serving.
fn every_pod_serves(md: &Value, version: &str, pods: usize) -> bool {
    let listed = md["status"]["active"]["pods"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    listed.len() == pods
        && listed.iter().all(|p| {
            p["versions"].as_array().is_some_and(|versions| {
                versions
                    .iter()
                    .any(|v| v["version"] == version && v["state"] == "Serving")
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_stages_in_every_pod_switches_them_together_and_rolls_back_from_memory() {
    let ns = Namespace::create();
    let c = cluster();
    ns.apply_in_place("iris", "1.0.0", LOGREG, &sha256_of(LOGREG), 3);
    ns.wait_for(
        "iris",
        "1.0.0 Ready on 3 pods",
        Duration::from_secs(240),
        |md| serving(md, "1.0.0") && every_pod_serves(md, "1.0.0", 3),
    );
    let url = ns.service_url("iris");
    first_answer(&url, Duration::from_secs(30)).await;
    let before = ns.pods("iris");
    assert_eq!(before.len(), 3, "{before:?}");

    let requests = RequestLoop::one_then_two(&url).await;

    // Bump: staged beside 1.0.0 in each pod, then every pod switches; no pod is created or restarted.
    let bumped = Instant::now();
    ns.apply_in_place("iris", "2.0.0", MLP, &sha256_of(MLP), 3);
    let md = ns.wait_for("iris", "2.0.0 switched", Duration::from_secs(240), |md| {
        serving(md, "2.0.0") && md["status"]["lastSwitch"]["to"] == "2.0.0"
    });
    requests
        .wait_for_version("2.0.0", Duration::from_secs(30))
        .await;
    let window = md["status"]["lastSwitch"]["windowMilliseconds"]
        .as_i64()
        .unwrap();
    eprintln!(
        "figure: InPlace bump of 3 pods -> all switched {:.1?}, switch window {window} ms",
        bumped.elapsed()
    );
    assert_eq!(md["status"]["lastSwitch"]["pods"], 3, "{:#}", md["status"]);
    assert!(window < 1000, "switch window {window} ms");
    assert_eq!(
        ns.pods("iris"),
        before,
        "same pods, no restart, no extra pod"
    );
    assert!(
        md["status"]["candidate"].is_null(),
        "{:#}",
        md["status"]["candidate"]
    );
    assert_eq!(md["status"]["previous"][0]["version"], "1.0.0");
    let describe = c.ferry(&["status", "iris", "-n", &ns.name]);
    assert!(
        describe.contains("2.0.0 (serving)") && describe.contains("1.0.0 (previous)"),
        "{describe}"
    );

    // Rollback: 1.0.0 is still loaded in every pod, so it is a switch, not a download.
    let rolled = Instant::now();
    c.ferry(&["rollback", "iris", "-n", &ns.name]);
    requests
        .wait_for_version("1.0.0", Duration::from_secs(60))
        .await;
    let md = ns.wait_for(
        "iris",
        "1.0.0 switched back",
        Duration::from_secs(60),
        |md| serving(md, "1.0.0") && md["status"]["lastSwitch"]["to"] == "1.0.0",
    );
    eprintln!(
        "figure: InPlace rollback -> the Service answers 1.0.0: {:.1?}",
        rolled.elapsed()
    );
    assert_eq!(md["status"]["history"][0]["outcome"], "RolledBack");
    assert_eq!(ns.pods("iris"), before);
    requests.finish(&["1.0.0", "2.0.0", "1.0.0"]).await;
    // No download: a pod's latest load is still the stage of 2.0.0, and 1.0.0 serves again.
    let (_, ip) = serving_pod(&ns.name, "iris");
    let out = curl_from_pod(
        &ns.name,
        "status-reader",
        &["-sS", "-m", "10", &format!("http://{ip}:8081/status")],
    );
    let server: Value = serde_json::from_str(out.trim()).expect("/status is JSON");
    assert_eq!(server["load"]["version"], "2.0.0", "{server:#}");
    assert_eq!(server["serving"]["version"], "1.0.0", "{server:#}");
    assert_eq!(server["last_switch"]["from"], "2.0.0", "{server:#}");
    let events = ns.event_reasons();
    assert!(events.contains("Switched"), "{events}");

    // With the controller down, a pod that is replaced comes back on the version last switched to (1.0.0), from
    // its ConfigMap.
    let controller = ["-n", "ferry-system", "scale", "deployment", "ferry"];
    let replicas = c.kubectl_ok(
        &[
            "-n",
            "ferry-system",
            "get",
            "deployment",
            "ferry",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        None,
    );
    c.kubectl_ok(&[&controller[..], &["--replicas=0"]].concat(), None);
    c.kubectl_ok(
        &[
            "-n",
            "ferry-system",
            "wait",
            "--for=delete",
            "pod",
            "-l",
            "app.kubernetes.io/name=ferry",
            "--timeout=60s",
        ],
        None,
    );
    let replaced = ns.pods("iris")[0].0.clone();
    c.kubectl_ok(&["-n", &ns.name, "delete", "pod", &replaced], None);
    c.kubectl_ok(
        &[
            "-n",
            &ns.name,
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            "ferry.dev/model-deployment=iris",
            "--timeout=120s",
        ],
        None,
    );
    let fresh = ns
        .pods("iris")
        .into_iter()
        .find(|(name, _, _)| !before.iter().any(|(b, _, _)| b == name))
        .expect("a new pod");
    let ip = c.kubectl_ok(
        &[
            "-n",
            &ns.name,
            "get",
            "pod",
            &fresh.0,
            "-o",
            "jsonpath={.status.podIP}",
        ],
        None,
    );
    let out = curl_from_pod(
        &ns.name,
        "fresh-status",
        &[
            "-sS",
            "-m",
            "10",
            &format!("http://{}:8081/status", ip.trim()),
        ],
    );
    let server: Value = serde_json::from_str(out.trim()).expect("/status is JSON");
    assert_eq!(server["serving"]["version"], "1.0.0", "{server:#}");
    c.kubectl_ok(
        &[
            &controller[..],
            &[&format!("--replicas={}", replicas.trim())[..]],
        ]
        .concat(),
        None,
    );

    // A candidate that fails in the first pod it stages on aborts; every pod keeps serving 1.0.0.
    let requests = RequestLoop::start(url.clone(), BTreeMap::from([("1.0.0".to_owned(), LOGREG)]));
    ns.apply_in_place("iris", "3.0.0", MLP, &sha256_of(LOGREG), 3);
    let md = ns.wait_for("iris", "3.0.0 aborted", Duration::from_secs(180), |md| {
        condition_is(md, "Degraded", "True", Some("ModelLoadFailed"))
    });
    let message = md["status"]["candidate"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("ChecksumMismatch"), "{:#}", md["status"]);
    assert!(message.contains("pod iris-"), "names the pod: {message}");
    ns.wait_for("iris", "3.0.0 unloaded", Duration::from_secs(60), |md| {
        every_pod_serves(md, "1.0.0", 3)
            && md["status"]["active"]["pods"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| !p["versions"].to_string().contains("3.0.0"))
    });

    // A pod added by `kubectl scale` starts on the version last switched to.
    c.kubectl_ok(
        &[
            "-n",
            &ns.name,
            "scale",
            "modeldeployment",
            "iris",
            "--replicas=4",
        ],
        None,
    );
    ns.wait_for("iris", "4 pods on 1.0.0", Duration::from_secs(180), |md| {
        every_pod_serves(md, "1.0.0", 4) && md["status"]["readyReplicas"] == 4
    });
    requests.finish(&["1.0.0"]).await;
}

/// The model version that answers a request naming `version` through the Service at `url`.
async fn infer_version(url: &str, version: &str) -> Result<String, String> {
    let model = expected(LOGREG);
    let body = json!({"inputs": [{
        "name": model.input,
        "shape": [model.rows.len(), model.rows[0].len()],
        "datatype": "FP32",
        "data": model.rows.iter().flatten().collect::<Vec<_>>(),
    }]});
    let response = http_client()
        .post(format!("{url}/v2/models/iris/versions/{version}/infer"))
        .json(&body)
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = response.status();
    let reply: Value = response.json().await.map_err(|e| error_chain(&e))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {reply}"));
    }
    Ok(reply["model_version"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_previews_by_version_survives_a_deleted_pod_and_strategies_change_without_a_failed_request(
) {
    let ns = Namespace::create();
    let c = cluster();
    ns.apply("iris", "1.0.0", LOGREG, &sha256_of(LOGREG), true);
    let md = ns.wait_for(
        "iris",
        "1.0.0 Ready (BlueGreen)",
        Duration::from_secs(240),
        |md| serving(md, "1.0.0"),
    );
    let blue_green_revision = md["status"]["active"]["revision"].clone();
    let url = ns.service_url("iris");
    first_answer(&url, Duration::from_secs(30)).await;
    let requests = RequestLoop::one_then_two(&url).await;

    // BlueGreen -> InPlace: a new pod set, rolled out blue/green (autoPromote gates it like any revision).
    ns.apply_in_place("iris", "1.0.0", LOGREG, &sha256_of(LOGREG), 2);
    let md = ns.wait_for(
        "iris",
        "the InPlace pod set serves",
        Duration::from_secs(240),
        |md| {
            serving(md, "1.0.0")
                && md["status"]["active"]["revision"] != blue_green_revision
                && every_pod_serves(md, "1.0.0", 2)
        },
    );
    let pod_set = md["status"]["active"]["revision"].clone();

    // A gated bump: staged in both pods, then held; the candidate answers by version through the active Service.
    let gated = json!({"strategy": "InPlace", "loadTimeoutSeconds": 120, "autoPromote": false});
    ns.apply_spec("iris", "2.0.0", MLP, &sha256_of(MLP), 2, gated);
    ns.wait_for(
        "iris",
        "2.0.0 waiting for promotion",
        Duration::from_secs(180),
        |md| condition_is(md, "Progressing", "True", Some("WaitingForPromotion")),
    );
    assert_eq!(infer_version(&url, "2.0.0").await.as_deref(), Ok("2.0.0"));
    assert_eq!(
        requests.last_version().as_deref(),
        Some("1.0.0"),
        "no traffic before promotion"
    );

    // A pod deleted meanwhile comes back on 1.0.0 (its ConfigMap's), and is staged again.
    let victim = ns.pods("iris")[0].0.clone();
    c.kubectl_ok(
        &["-n", &ns.name, "delete", "pod", &victim, "--wait=false"],
        None,
    );
    ns.wait_for(
        "iris",
        "the new pod staged 2.0.0",
        Duration::from_secs(180),
        |md| {
            let pods = md["status"]["active"]["pods"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            pods.len() == 2
                && pods.iter().all(|p| p["name"] != victim.as_str())
                && every_pod_serves(md, "1.0.0", 2)
                && pods
                    .iter()
                    .all(|p| p["versions"].to_string().contains("Staged"))
                && condition_is(md, "Progressing", "True", Some("WaitingForPromotion"))
        },
    );
    assert_eq!(requests.last_version().as_deref(), Some("1.0.0"));

    c.ferry(&["promote", "iris", "-n", &ns.name]);
    requests
        .wait_for_version("2.0.0", Duration::from_secs(60))
        .await;
    ns.wait_for("iris", "2.0.0 switched", Duration::from_secs(60), |md| {
        serving(md, "2.0.0") && every_pod_serves(md, "2.0.0", 2)
    });

    // InPlace -> BlueGreen: again a new revision, rolled out blue/green, on 2.0.0.
    ns.apply("iris", "2.0.0", MLP, &sha256_of(MLP), true);
    ns.wait_for(
        "iris",
        "BlueGreen serves 2.0.0",
        Duration::from_secs(240),
        |md| serving(md, "2.0.0") && md["status"]["active"]["revision"] != pod_set,
    );
    requests.finish(&["1.0.0", "2.0.0"]).await;
}

/// Two ~100 MB models (`e2e/lib/big_model.py`), made with the test venv's Python: (version 1, version 2) bytes.
fn big_models() -> (Vec<u8>, Vec<u8>) {
    let cache = std::env::var_os("FERRY_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/ferry"));
    let python = cache.join("venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `bash server-image/scripts/setup-test-deps.sh`",
        python.display()
    );
    let dir = std::env::temp_dir().join(format!("ferry-big-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = Command::new(python)
        .arg(repo_root().join("e2e/lib/big_model.py"))
        .arg(&dir)
        .arg("100")
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "big_model.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read = |v: u32| std::fs::read(dir.join(format!("big-{v}.onnx"))).unwrap();
    let models = (read(1), read(2));
    let _ = std::fs::remove_dir_all(&dir);
    models
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_a_pod_out_of_memory_while_staging_aborts_the_rollout_and_comes_back_on_the_old_version(
) {
    use sha2::Digest;
    let ns = Namespace::create();
    let (one, two) = big_models();
    let digest = |bytes: &[u8]| {
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let (sha1, sha2) = (digest(&one), digest(&two));
    let first = SlowStore::start(one, 1 << 20, Duration::ZERO).await;
    let second = SlowStore::start(two, 1 << 20, Duration::ZERO).await;
    // Room for one model (about 230 MB resident once loaded), not for two.
    let apply = |version: &str, url: &str, sha256: &str| {
        let manifest = json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "big", "namespace": ns.name},
            "spec": {
                "model": {"uri": format!("{url}/big.onnx"), "version": version, "sha256": sha256},
                "replicas": 1,
                "server": {"resources": {"limits": {"memory": "400Mi"}, "requests": {"memory": "400Mi"}}},
                "rollout": {"strategy": "InPlace", "loadTimeoutSeconds": 300},
            },
        });
        cluster().kubectl_ok(
            &["apply", "--server-side", "--field-manager=e2e", "-f", "-"],
            Some(&manifest.to_string()),
        );
    };
    apply("1", &first.url, &sha1);
    ns.wait_for("big", "version 1 Ready", Duration::from_secs(240), |md| {
        serving(md, "1")
    });
    apply("2", &second.url, &sha2);
    let md = ns.wait_for(
        "big",
        "the stage aborted for its memory",
        Duration::from_secs(240),
        |md| condition_is(md, "Degraded", "True", Some("OutOfMemory")),
    );
    let message = md["status"]["candidate"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("OOMKilled")
            && message.contains("400Mi")
            && message.contains("limits.memory"),
        "{message}"
    );
    assert_eq!(md["status"]["active"]["version"], "1", "{:#}", md["status"]);
    // The killed server restarts on the version its ConfigMap names, and serves again.
    ns.wait_for(
        "big",
        "version 1 Ready again",
        Duration::from_secs(240),
        |md| serving(md, "1") && md["status"]["readyReplicas"] == 1,
    );
    let events = ns.event_reasons();
    assert!(events.contains("RolloutAborted"), "{events}");
}
