//! Python models on the node, through the Service: the retrain-hourly story (a joblib pickle at one S3 key,
//! overwritten by a retrained model, then by one pickled with an incompatible scikit-learn, then by one that imports
//! `os.system`), an InPlace bump of an XGBoost model, and a declared framework version no runtime serves.

use super::*;

/// A model made by the pinned frameworks (server-image/testdata/python/models).
fn python_model(file: &str) -> Vec<u8> {
    std::fs::read(
        repo_root()
            .join("server-image/testdata/python/models")
            .join(file),
    )
    .unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

/// One committed model's rows and the first output the framework returned for them.
#[derive(Clone)]
struct PyModel {
    name: &'static str,
    datatype: String,
    rows: Vec<Vec<f64>>,
    output: String,
    data: Vec<f64>,
}

fn py_model(name: &'static str) -> PyModel {
    let path = repo_root().join("server-image/testdata/python/expected.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let m = &all["models"][name];
    // The probabilities tell two versions of a classifier apart; a booster has only `predict`.
    let output = if m["outputs"]["predict_proba"].is_object() {
        "predict_proba"
    } else {
        "predict"
    };
    PyModel {
        name,
        datatype: m["datatype"].as_str().unwrap().to_owned(),
        rows: serde_json::from_value(m["rows"].clone()).unwrap(),
        output: output.to_owned(),
        data: serde_json::from_value(m["outputs"][output]["data"].clone()).unwrap(),
    }
}

/// Requests every model's rows through the Service in a loop and records which model answered each, by its
/// outputs; any failure or an answer matching none of `models` is recorded too.
struct PyLoop {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<&'static str>>>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<u64>,
}

impl PyLoop {
    /// Waits for the Service to answer once (kube-proxy follows the endpoints a moment after the pods are ready),
    /// then starts the loop: from here on every failure counts.
    async fn start_once_answered(url: String, models: Vec<PyModel>) -> PyLoop {
        let http = http_client();
        let body = request_body(&models[0]);
        let started = Instant::now();
        while let Err(e) = py_infer(&http, &url, &body, &models[0].output).await {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no answer through the Service: {e}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        PyLoop::start(url, models)
    }

    fn start(url: String, models: Vec<PyModel>) -> PyLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, n, f) = (stop.clone(), seen.clone(), failures.clone());
        let task = tokio::spawn(async move {
            let http = http_client();
            let first = &models[0];
            let body = request_body(first);
            let mut count = 0;
            while !s.load(Ordering::SeqCst) {
                count += 1;
                match py_infer(&http, &url, &body, &first.output).await {
                    Ok(data) => {
                        let found = models.iter().find(|m| {
                            m.data.len() == data.len()
                                && m.data.iter().zip(&data).all(|(a, b)| (a - b).abs() <= 1e-5)
                        });
                        match found {
                            Some(model) => {
                                let mut seen = n.lock().unwrap();
                                if seen.last() != Some(&model.name) {
                                    seen.push(model.name);
                                }
                            }
                            None => f
                                .lock()
                                .unwrap()
                                .push(format!("an answer of no known model: {data:?}")),
                        }
                    }
                    Err(e) => f.lock().unwrap().push(e),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            count
        });
        PyLoop {
            stop,
            seen,
            failures,
            task,
        }
    }

    async fn wait_for(&self, model: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        while self.seen.lock().unwrap().last().copied() != Some(model) {
            assert!(
                started.elapsed() < timeout,
                "{model} did not answer within {timeout:?}; seen {:?}, failures {:?}",
                self.seen.lock().unwrap(),
                self.failures.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started.elapsed()
    }

    /// Stops the loop and checks that exactly `models` answered, in this order, and no request failed.
    async fn finish(self, models: &[&str]) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let count = self.task.await.unwrap();
        let failures = self.failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "{} of {count} requests failed: {failures:?}",
            failures.len()
        );
        assert_eq!(
            *self.seen.lock().unwrap(),
            models,
            "the models that answered, in order"
        );
        eprintln!("{count} requests, 0 failed, answered by {models:?}");
        count
    }
}

/// Every row of `model` in one request.
fn request_body(model: &PyModel) -> Value {
    json!({"inputs": [{
        "name": "input",
        "shape": [model.rows.len(), model.rows[0].len()],
        "datatype": model.datatype,
        "data": model.rows.iter().flatten().collect::<Vec<_>>(),
    }]})
}

async fn py_infer(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    output: &str,
) -> Result<Vec<f64>, String> {
    let response = http
        .post(format!("{url}/v2/models/iris/infer"))
        .json(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {text}"));
    }
    let reply: Value =
        serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))?;
    reply["outputs"]
        .as_array()
        .and_then(|outputs| outputs.iter().find(|o| o["name"] == output))
        .and_then(|o| serde_json::from_value(o["data"].clone()).ok())
        .ok_or_else(|| format!("no output {output}: {text}"))
}

/// A protocol-2 pickle that runs `os.system(command)` when unpickled.
fn system_pickle(command: &str) -> Vec<u8> {
    let mut bytes = b"\x80\x02cos\nsystem\n".to_vec();
    bytes.push(b'X');
    bytes.extend_from_slice(&(command.len() as u32).to_le_bytes());
    bytes.extend_from_slice(command.as_bytes());
    bytes.extend_from_slice(b"\x85R.");
    bytes
}

impl Namespace {
    /// Applies the ModelDeployment `name` of `format` serving `version` from `models/<key>`, with `model` merged
    /// into its spec.model (refresh, sha256, frameworkVersion) and `spec` into its spec.
    fn apply_python(
        &self,
        name: &str,
        key: &str,
        format: &str,
        version: &str,
        model: Value,
        spec: Value,
    ) {
        let mut manifest = json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": self.name},
            "spec": {
                "model": {
                    "name": "iris",
                    "format": format,
                    "uri": format!("s3://models/{key}"),
                    "version": version,
                    "credentialsSecretRef": {"name": "store-credentials"},
                    "storage": {"endpoint": cluster().s3_endpoint, "region": "us-east-1", "allowHttp": true},
                },
                "replicas": 1,
                "rollout": {"loadTimeoutSeconds": 180},
            },
        });
        for (k, v) in model.as_object().unwrap() {
            manifest["spec"]["model"][k] = v.clone();
        }
        for (k, v) in spec.as_object().unwrap() {
            manifest["spec"][k] = v.clone();
        }
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrained_pickle_rolls_out_and_an_incompatible_or_unsafe_one_is_aborted_while_the_old_one_answers(
) {
    let ns = Namespace::create();
    let key = format!("retrain/{}/mymodel.pkl", ns.name);
    let (first, retrained) = (py_model("sklearn_logreg"), py_model("sklearn_logreg_v2"));
    overwrite(&key, python_model("sklearn_logreg.joblib")).await;
    ns.apply_python(
        "hourly",
        &key,
        "sklearn",
        "latest",
        json!({"refresh": {"intervalSeconds": 10}}),
        json!({}),
    );
    let md = ns.wait_for(
        "hourly",
        "the first pickle serving from the Python runtime",
        Duration::from_secs(240),
        |md| serving(md, "latest") && md["status"]["active"]["object"].is_string(),
    );
    assert_eq!(
        md["status"]["active"]["runtime"]["name"], "ferry-python",
        "{:#}",
        md["status"]
    );
    let url = ns.service_url("hourly");
    let requests = PyLoop::start_once_answered(url, vec![first.clone(), retrained.clone()]).await;
    requests.wait_for(first.name, Duration::from_secs(60)).await;

    // Retrained: the new object rolls out pinned, and the Service answers with it.
    overwrite(&key, python_model("sklearn_logreg_v2.joblib")).await;
    let switched = requests
        .wait_for(retrained.name, Duration::from_secs(300))
        .await;
    eprintln!("figure: retrained pickle written -> the Service answers with it: {switched:.1?}");
    let md = ns.wait_for(
        "hourly",
        "the retrained object active",
        Duration::from_secs(60),
        |md| {
            md["status"]["active"]["servedSha256"]
                == json!([sha256_hex(&python_model("sklearn_logreg_v2.joblib"))])
        },
    );
    let retrained_object = md["status"]["active"]["object"].clone();

    // Pickled by scikit-learn 1.5.2: refused before it loads; traffic stays (the loop sees no change).
    overwrite(&key, python_model("sklearn_old.joblib")).await;
    let md = ns.wait_for(
        "hourly",
        "the incompatible pickle aborted",
        Duration::from_secs(300),
        |md| {
            md["status"]["candidate"]["reason"] == "ModelLoadFailed"
                && md["status"]["candidate"]["object"] != retrained_object
                && md["status"]["candidate"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("IncompatibleRuntime"))
        },
    );
    let message = md["status"]["candidate"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("pickled with scikit-learn 1.5.2"),
        "{message}"
    );
    eprintln!("incompatible pickle aborted: {message}");

    // A pickle that calls os.system: refused naming the global.
    overwrite(&key, system_pickle("touch /tmp/owned")).await;
    let md = ns.wait_for(
        "hourly",
        "the unsafe pickle aborted",
        Duration::from_secs(300),
        |md| {
            md["status"]["candidate"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("UnsafeModel") && m.contains("os.system"))
        },
    );
    eprintln!(
        "unsafe pickle aborted: {}",
        md["status"]["candidate"]["message"]
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    requests.finish(&[first.name, retrained.name]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_an_xgboost_bump_switches_every_pod_without_a_failed_request() {
    let ns = Namespace::create();
    let (first, second) = (py_model("xgboost_binary"), py_model("xgboost_binary_v2"));
    let keys = [
        format!("xgb/{}/1/model.json", ns.name),
        format!("xgb/{}/2/model.json", ns.name),
    ];
    let files = ["xgboost_binary.json", "xgboost_binary_v2.json"];
    for (key, file) in keys.iter().zip(files) {
        overwrite(key, python_model(file)).await;
    }
    let rollout =
        json!({"replicas": 2, "rollout": {"strategy": "InPlace", "loadTimeoutSeconds": 180}});
    let pin = |i: usize| json!({"sha256": sha256_hex(&python_model(files[i]))});
    ns.apply_python("boost", &keys[0], "xgboost", "1", pin(0), rollout.clone());
    ns.wait_for(
        "boost",
        "version 1 on both pods",
        Duration::from_secs(240),
        |md| every_pod_serves(md, "1", 2),
    );
    let requests =
        PyLoop::start_once_answered(ns.service_url("boost"), vec![first.clone(), second.clone()])
            .await;
    requests.wait_for(first.name, Duration::from_secs(60)).await;

    ns.apply_python("boost", &keys[1], "xgboost", "2", pin(1), rollout);
    let switched = requests
        .wait_for(second.name, Duration::from_secs(240))
        .await;
    eprintln!("figure: XGBoost InPlace bump -> the Service answers with version 2: {switched:.1?}");
    ns.wait_for(
        "boost",
        "version 2 on both pods",
        Duration::from_secs(60),
        |md| every_pod_serves(md, "2", 2),
    );
    requests.finish(&[first.name, second.name]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_version_no_runtime_serves_gets_no_runtime_and_no_pod() {
    let ns = Namespace::create();
    let key = format!("old/{}/model.joblib", ns.name);
    overwrite(&key, python_model("sklearn_old.joblib")).await;
    ns.apply_python(
        "legacy",
        &key,
        "sklearn",
        "1",
        json!({"frameworkVersion": "1.5.2"}),
        json!({}),
    );
    let md = ns.wait_for("legacy", "NoRuntime", Duration::from_secs(60), |md| {
        md["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "NoRuntime"))
    });
    let condition = md["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["reason"] == "NoRuntime")
        .unwrap()
        .clone();
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.contains("sklearn")
            && message.contains("1.5.2")
            && message.contains("ferry-python"),
        "{message}"
    );
    // For a whole window: no Deployment and no pod for this ModelDeployment.
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        for kind in ["deployments", "pods"] {
            let out = cluster().kubectl_ok(
                &[
                    "-n",
                    &ns.name,
                    "get",
                    kind,
                    "-l",
                    "ferry.dev/model-deployment=legacy",
                    "-o",
                    "name",
                ],
                None,
            );
            assert!(out.trim().is_empty(), "{kind}: {out}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
