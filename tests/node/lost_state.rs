//! State the controller cannot read holds a rollout on the node: an InPlace ConfigMap deleted or garbled while a
//! candidate waits for `kubectl ferry promote` or stages is rebuilt from the pods and the candidate never serves
//! before it is promoted; a garbled abort mark on a BlueGreen candidate holds with a reason of its own.

use super::*;

/// The in-place state of the ModelDeployment `name`'s ConfigMap, when it is there and reads as JSON.
fn in_place_state(ns: &Namespace, name: &str) -> Option<Value> {
    let out = cluster().kubectl(
        &[
            "-n",
            &ns.name,
            "get",
            "configmap",
            &format!("{name}-ferry-model"),
            "-o",
            "jsonpath={.metadata.annotations.ferry\\.dev/in-place}",
        ],
        None,
    );
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// The state's model revisions without their creation times, which the status does not keep (a rebuilt record
/// is dated from its promotion or its rollout's start).
fn revisions(state: &Value) -> Value {
    let mut revisions = state["revisions"].clone();
    for revision in revisions.as_array_mut().into_iter().flatten() {
        revision.as_object_mut().unwrap().remove("createdAt");
    }
    revisions
}

/// The version of the model the state names active.
fn active_version(state: &Value) -> Option<&str> {
    let active = state["active"].as_str()?;
    state["revisions"]
        .as_array()?
        .iter()
        .find(|r| r["revision"] == active)?["model"]["version"]
        .as_str()
}

/// For the whole of `window` and until `until` holds: the status names `version` active and every request
/// through the Service answers `version` (a version the loop does not know is a failure it reports at its end;
/// one it knows, such as the candidate's, is caught here).
async fn holds_on(
    ns: &Namespace,
    name: &str,
    requests: &RequestLoop,
    version: &str,
    window: Duration,
    what: &str,
    until: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    let answered = requests.seen.lock().unwrap().clone();
    assert_eq!(answered.last().map(String::as_str), Some(version));
    loop {
        let md = ns.get(name);
        assert_eq!(
            md["status"]["active"]["version"], version,
            "{what}: the active version moved: {:#}",
            md["status"]
        );
        assert_eq!(
            *requests.seen.lock().unwrap(),
            answered,
            "{what}: the Service answered another version"
        );
        if started.elapsed() >= window && until(&md) {
            return md;
        }
        assert!(
            started.elapsed() < window + Duration::from_secs(90),
            "{what}: not settled: {:#}",
            md["status"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn delete_config_map(ns: &Namespace, name: &str) {
    cluster().kubectl_ok(
        &[
            "-n",
            &ns.name,
            "delete",
            "configmap",
            &format!("{name}-ferry-model"),
            "--wait=true",
        ],
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_state_lost_while_a_candidate_waits_is_rebuilt_from_the_pods_and_it_never_serves_early(
) {
    let ns = Namespace::create();
    let c = cluster();
    let held = json!({"strategy": "InPlace", "loadTimeoutSeconds": 120, "autoPromote": false});
    ns.apply_spec("iris", "1.0.0", LOGREG, &sha256_of(LOGREG), 2, held.clone());
    ns.wait_for("iris", "1.0.0 on 2 pods", Duration::from_secs(240), |md| {
        serving(md, "1.0.0") && every_pod_serves(md, "1.0.0", 2)
    });
    let url = ns.service_url("iris");
    first_answer(&url, Duration::from_secs(30)).await;
    let pods = ns.pods("iris");
    let requests = RequestLoop::one_then_two(&url).await;

    // 2.0.0 staged in both pods, held for `kubectl ferry promote`.
    ns.apply_spec("iris", "2.0.0", MLP, &sha256_of(MLP), 2, held.clone());
    ns.wait_for(
        "iris",
        "2.0.0 waiting for promotion",
        Duration::from_secs(180),
        |md| md["status"]["candidate"]["reason"] == "WaitingForPromotion",
    );
    let before = in_place_state(&ns, "iris").expect("the in-place state");

    // The ConfigMap deleted: rebuilt from the pods, the same state, and 2.0.0 still waits.
    delete_config_map(&ns, "iris");
    let md = holds_on(
        &ns,
        "iris",
        &requests,
        "1.0.0",
        Duration::from_secs(20),
        "ConfigMap deleted",
        |md| md["status"]["candidate"]["reason"] == "WaitingForPromotion",
    )
    .await;
    let rebuilt = in_place_state(&ns, "iris").expect("the ConfigMap is back");
    assert_eq!(active_version(&rebuilt), Some("1.0.0"), "{rebuilt:#}");
    assert_eq!(
        revisions(&rebuilt),
        revisions(&before),
        "the revisions, their marks and models as they were"
    );
    assert!(
        ns.event_reasons().contains("StateRebuilt"),
        "{}",
        ns.event_reasons()
    );
    assert_eq!(md["status"]["history"].as_array().map(Vec::len), Some(1));

    // Garbled: rebuilt again, nothing moves.
    ns.annotate(
        "configmap",
        "iris-ferry-model",
        "ferry.dev/in-place={\"podSet\": ",
    );
    holds_on(
        &ns,
        "iris",
        &requests,
        "1.0.0",
        Duration::from_secs(15),
        "ConfigMap garbled",
        |_| in_place_state(&ns, "iris").is_some(),
    )
    .await;
    assert_eq!(
        revisions(&in_place_state(&ns, "iris").unwrap()),
        revisions(&before)
    );

    // Promoted by a human: now it serves, in the same pods.
    c.ferry(&["promote", "iris", "-n", &ns.name]);
    requests
        .wait_for_version("2.0.0", Duration::from_secs(60))
        .await;
    ns.wait_for("iris", "2.0.0 serves", Duration::from_secs(60), |md| {
        serving(md, "2.0.0") && every_pod_serves(md, "2.0.0", 2)
    });
    requests.finish(&["1.0.0", "2.0.0"]).await;

    assert_eq!(
        ns.pods("iris"),
        pods,
        "the same pods throughout, none restarted"
    );
}

/// Deleted mid-stage: a slow store makes the stage of 2.0.0 take about 20 s a pod; the state is rebuilt with the
/// candidate's record, staging goes on, and 2.0.0 serves only once promoted (automatically here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_state_deleted_mid_stage_is_rebuilt_and_the_stage_goes_on_to_its_promotion() {
    let ns = Namespace::create();
    let c = cluster();
    let (first, second) = (model_bytes(MLP), model_bytes(LOGREG));
    let fast = SlowStore::start(first.clone(), first.len(), Duration::ZERO).await;
    let slow = SlowStore::start(
        second.clone(),
        second.len().div_ceil(40),
        Duration::from_millis(500),
    )
    .await;
    let apply = |version: &str, store: &SlowStore, model: &str| {
        let manifest = json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "slow", "namespace": ns.name},
            "spec": {
                "model": {"name": "iris", "uri": format!("{}/slow/model.onnx", store.url),
                          "version": version, "sha256": sha256_of(model)},
                "replicas": 2,
                "rollout": {"strategy": "InPlace", "loadTimeoutSeconds": 300},
            },
        });
        c.kubectl_ok(
            &["apply", "--server-side", "--field-manager=e2e", "-f", "-"],
            Some(&manifest.to_string()),
        );
    };
    apply("1.0.0", &fast, MLP);
    ns.wait_for("slow", "1.0.0 on 2 pods", Duration::from_secs(240), |md| {
        serving(md, "1.0.0") && every_pod_serves(md, "1.0.0", 2)
    });
    let url = ns.service_url("slow");
    first_answer(&url, Duration::from_secs(30)).await;
    let pods = ns.pods("slow");
    let requests = RequestLoop::start(
        url,
        BTreeMap::from([("1.0.0".to_owned(), MLP), ("2.0.0".to_owned(), LOGREG)]),
    );
    requests
        .wait_for_version("1.0.0", Duration::from_secs(10))
        .await;

    apply("2.0.0", &slow, LOGREG);
    ns.wait_for("slow", "2.0.0 staging", Duration::from_secs(60), |md| {
        md["status"]["candidate"]["version"] == "2.0.0"
            && md["status"]["candidate"]["progress"].is_object()
    });
    delete_config_map(&ns, "slow");
    holds_on(
        &ns,
        "slow",
        &requests,
        "1.0.0",
        Duration::from_secs(5),
        "ConfigMap deleted mid-stage",
        |_| {
            in_place_state(&ns, "slow").is_some_and(|state| {
                active_version(&state) == Some("1.0.0")
                    && state["revisions"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["model"]["version"] == "2.0.0"))
            })
        },
    )
    .await;
    assert!(ns.event_reasons().contains("StateRebuilt"));
    let md = ns.wait_for("slow", "2.0.0 promoted", Duration::from_secs(180), |md| {
        serving(md, "2.0.0") && every_pod_serves(md, "2.0.0", 2)
    });
    requests
        .wait_for_version("2.0.0", Duration::from_secs(30))
        .await;
    requests.finish(&["1.0.0", "2.0.0"]).await;
    let entries: Vec<_> = md["status"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["version"] == "2.0.0")
        .collect();
    assert_eq!(entries.len(), 1, "one history entry: {entries:#?}");
    assert_eq!(entries[0]["outcome"], "Promoted");
    assert_eq!(
        ns.pods("slow"),
        pods,
        "the same pods throughout, none restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_abort_mark_holds_a_blue_green_rollout_with_its_own_reason_until_it_reads_again()
{
    let ns = Namespace::create();
    let c = cluster();
    ns.apply("iris", "1.0.0", LOGREG, &sha256_of(LOGREG), true);
    ns.wait_for("iris", "1.0.0 serves", Duration::from_secs(180), |md| {
        serving(md, "1.0.0")
    });
    let url = ns.service_url("iris");
    first_answer(&url, Duration::from_secs(30)).await;
    let requests = RequestLoop::start(url, BTreeMap::from([("1.0.0".to_owned(), LOGREG)]));
    requests
        .wait_for_version("1.0.0", Duration::from_secs(10))
        .await;

    // 2.0.0 with the wrong checksum: aborted, scaled to zero.
    ns.apply("iris", "2.0.0", MLP, &sha256_of(LOGREG), true);
    let md = ns.wait_for("iris", "2.0.0 aborted", Duration::from_secs(180), |md| {
        condition_is(md, "Degraded", "True", Some("ModelLoadFailed"))
    });
    let candidate = md["status"]["candidate"]["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    let deployment = format!("iris-{candidate}");
    let field = |path: &str| {
        c.kubectl_ok(
            &[
                "-n",
                &ns.name,
                "get",
                "deployment",
                &deployment,
                "-o",
                &format!("jsonpath={{{path}}}"),
            ],
            None,
        )
    };
    let get_mark = || field(".metadata.annotations.ferry\\.dev/aborted");
    let mark = get_mark();
    assert!(mark.contains("ModelLoadFailed"), "{mark}");
    let annotate = |value: &str| {
        ns.annotate(
            "deployment",
            &deployment,
            &format!("ferry.dev/aborted={value}"),
        )
    };

    annotate("{\"reason\": \"ModelLoad");
    let md = ns.wait_for("iris", "held", Duration::from_secs(60), |md| {
        condition_is(md, "Degraded", "True", Some("StateUnreadable"))
    });
    let message = condition(&md, "Degraded").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(&format!(
            "annotation ferry.dev/aborted of Deployment/{deployment} cannot be read"
        )),
        "{message}"
    );
    assert!(condition_is(
        &md,
        "Progressing",
        "False",
        Some("StateUnreadable")
    ));
    // Held for the whole window: the candidate is not retried (its Deployment stays at zero), traffic stays.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let md = ns.get("iris");
        assert_eq!(md["status"]["active"]["version"], "1.0.0");
        let replicas = field(".spec.replicas");
        assert_eq!(replicas.trim(), "0", "the aborted candidate was scaled up");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(ns.event_reasons().contains("StateUnreadable"));

    // Readable again: the abort stands, and so does its reason.
    annotate(&mark);
    ns.wait_for("iris", "the abort back", Duration::from_secs(60), |md| {
        condition_is(md, "Degraded", "True", Some("ModelLoadFailed"))
    });
    assert_eq!(get_mark(), mark);

    // An abort request that names no revision holds too, until it is removed.
    let request = |annotation: &str| ns.annotate("modeldeployment", "iris", annotation);
    request("ferry.dev/abort=the-new-one");
    let md = ns.wait_for(
        "iris",
        "held on the request",
        Duration::from_secs(60),
        |md| condition_is(md, "Degraded", "True", Some("StateUnreadable")),
    );
    let message = condition(&md, "Degraded").unwrap()["message"].to_string();
    assert!(
        message.contains("annotation ferry.dev/abort of ModelDeployment/iris cannot be read"),
        "{message}"
    );
    request("ferry.dev/abort-");
    ns.wait_for("iris", "the abort back", Duration::from_secs(60), |md| {
        condition_is(md, "Degraded", "True", Some("ModelLoadFailed"))
    });
    requests.finish(&["1.0.0"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_pin_that_cannot_be_read_holds_a_new_object_back_until_it_is_removed() {
    let ns = Namespace::create();
    let key = ns.apply_refreshing("fraud").await;
    ns.wait_for(
        "fraud",
        "the first object serving",
        Duration::from_secs(180),
        |md| serving(md, "latest") && md["status"]["active"]["object"].is_string(),
    );
    let url = ns.service_url("fraud");
    first_answer(&url, Duration::from_secs(30)).await;
    let requests = RequestLoop::start_by_model(url, &[LOGREG, MLP]);
    requests
        .wait_for_version(LOGREG, Duration::from_secs(10))
        .await;

    let pin = |annotation: &str| ns.annotate("modeldeployment", "fraud", annotation);
    pin("ferry.dev/refresh-pin=yesterday's");
    let md = ns.wait_for("fraud", "held", Duration::from_secs(60), |md| {
        condition_is(md, "Degraded", "True", Some("StateUnreadable"))
    });
    let message = condition(&md, "Degraded").unwrap()["message"].to_string();
    assert!(
        message
            .contains("annotation ferry.dev/refresh-pin of ModelDeployment/fraud cannot be read"),
        "{message}"
    );
    // A new object at the URI is not rolled out while the pin cannot be read: watched for the whole window.
    overwrite(&key, model_bytes(MLP)).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        assert_eq!(requests.last_version().as_deref(), Some(LOGREG));
        let md = ns.get("fraud");
        assert!(md["status"]["candidate"].is_null(), "{:#}", md["status"]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Removed: refresh follows the URI again and the new object rolls out.
    pin("ferry.dev/refresh-pin-");
    requests
        .wait_for_version(MLP, Duration::from_secs(240))
        .await;
    requests.finish(&[LOGREG, MLP]).await;
}
