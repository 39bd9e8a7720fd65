//! A Ferry upgrade on the node restarts no model: `helm upgrade` moves the controller to a rebuilt image (the same
//! archive under a new tag in the node's containerd; there is no registry) while a BlueGreen and an InPlace
//! ModelDeployment serve, each under a request loop through its Service, and back again.

use super::*;

const CHART_NAMESPACE: &str = "ferry-system";
const RELEASE: &str = "ferry";

/// The cluster directory (`e2e/cluster.sh up`): the kubeconfig lives in it.
fn cluster_env() -> BTreeMap<String, String> {
    let dir = cluster()
        .kubeconfig
        .parent()
        .expect("the kubeconfig lies in the cluster's directory");
    read_env(&dir.join("env"))
}

/// A program of the cluster's `PATH` (kubectl and helm live there).
fn cluster_program(name: &str) -> PathBuf {
    cluster_env()["PATH"]
        .split(':')
        .map(|p| PathBuf::from(p).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("the cluster's env puts {name} on PATH"))
}

/// `ctr` of the node's containerd (`e2e/control-plane.sh install --node` builds it beside the node binaries).
fn ctr(args: &[&str]) -> String {
    let cache = std::env::var_os("FERRY_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/ferry"));
    let installs = cache.join("control-plane");
    let ctr = std::fs::read_dir(&installs)
        .unwrap_or_else(|e| panic!("{}: {e}", installs.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin/ctr"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no ctr under {}: install the node with `bash e2e/control-plane.sh install --node`",
                installs.display()
            )
        });
    let address = cluster_env()
        .get("CONTAINERD_ADDRESS")
        .cloned()
        .expect("the cluster's env names its containerd socket");
    let mut command = Command::new(ctr);
    command
        .args(["--address", &address, "-n", "k8s.io"])
        .args(args);
    expect_success(
        run_with_stdin(command, None),
        &format!("ctr {}", args.join(" ")),
    )
}

/// `helm upgrade` of the release to the controller image `image_tag`, keeping every other value.
fn helm_upgrade(image_tag: &str) -> Output {
    let chart = repo_root().join("charts/ferry");
    let mut command = Command::new(cluster_program("helm"));
    command.env("KUBECONFIG", &cluster().kubeconfig).args([
        "upgrade",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        CHART_NAMESPACE,
        "--reuse-values",
        "--set",
        &format!("image.tag={image_tag}"),
        "--wait",
        "--timeout",
        "300s",
    ]);
    run_with_stdin(command, None)
}

/// The controller's image, as its Deployment names it.
fn controller_image() -> String {
    cluster()
        .kubectl_ok(
            &[
                "-n",
                CHART_NAMESPACE,
                "get",
                "deployment",
                RELEASE,
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ],
            None,
        )
        .trim()
        .to_owned()
}

/// The controller's pods (not being deleted) as (name, uid, image).
fn controller_pods() -> Vec<(String, String, String)> {
    let out = cluster().kubectl_ok(
        &[
            "-n",
            CHART_NAMESPACE,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=ferry",
            "-o",
            "json",
        ],
        None,
    );
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                p["metadata"]["uid"].as_str().unwrap().to_owned(),
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

/// The pod that holds the controller's Lease.
fn leader() -> String {
    cluster()
        .kubectl_ok(
            &[
                "-n",
                CHART_NAMESPACE,
                "get",
                "lease",
                RELEASE,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        )
        .trim()
        .to_owned()
}

/// `helm upgrade` of the release to `image_tag`, keeping every other value; returns once the controller's pods
/// all run that image and one of them holds the Lease.
fn upgrade_controller_to(image_tag: &str) {
    expect_success(
        helm_upgrade(image_tag),
        &format!("helm upgrade to {image_tag}"),
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let pods = controller_pods();
        let holder = leader();
        if !pods.is_empty()
            && pods
                .iter()
                .all(|(_, _, image)| image.ends_with(&format!(":{image_tag}")))
            && pods.iter().any(|(name, _, _)| *name == holder)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the controller did not move to {image_tag}: pods {pods:?}, Lease held by {holder:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The Deployments of ModelDeployment `name`, by name.
fn deployments_of(ns: &Namespace, name: &str) -> Vec<String> {
    let out = cluster().kubectl_ok(
        &[
            "-n",
            &ns.name,
            "get",
            "deployments",
            "-l",
            &format!("ferry.dev/model-deployment={name}"),
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
        None,
    );
    let mut names: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
    names.sort();
    names
}

/// Puts the controller back on the image it ran before the test, also when the test fails half-way.
struct RestoreController {
    tag: String,
    added_image: String,
    restored: bool,
}

impl RestoreController {
    /// Back to the image it ran before, checked like the way there.
    fn restore(mut self) {
        upgrade_controller_to(&self.tag);
        ctr(&["images", "rm", &self.added_image]);
        self.restored = true;
    }
}

impl Drop for RestoreController {
    fn drop(&mut self) {
        if self.restored {
            return;
        }
        // The test failed: put it back without checking (a panic here would hide the test's own).
        let _ = helm_upgrade(&self.tag);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_upgrade_of_the_controller_restarts_no_serving_pod_and_fails_no_request() {
    let ns = Namespace::create();
    ns.apply("blue", "1.0.0", LOGREG, &sha256_of(LOGREG), true);
    ns.apply_in_place("inplace", "1.0.0", LOGREG, &sha256_of(LOGREG), 2);
    for name in ["blue", "inplace"] {
        ns.wait_for(name, "1.0.0 Ready", Duration::from_secs(240), |md| {
            serving(md, "1.0.0")
        });
    }
    ns.wait_for(
        "inplace",
        "1.0.0 in both pods",
        Duration::from_secs(60),
        |md| every_pod_serves(md, "1.0.0", 2),
    );
    let urls = [ns.service_url("blue"), ns.service_url("inplace")];
    for url in &urls {
        first_answer(url, Duration::from_secs(30)).await;
    }
    let pods_before = [ns.pods("blue"), ns.pods("inplace")];
    let deployments_before = [deployments_of(&ns, "blue"), deployments_of(&ns, "inplace")];
    let status_before = [
        ns.get("blue")["status"].clone(),
        ns.get("inplace")["status"].clone(),
    ];

    // The rebuilt controller: the same image archive under a new tag.
    let image = controller_image();
    let (repository, tag) = image
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("the controller's image {image} has a tag"));
    let new_tag = format!("{tag}-upgrade-{:08x}", rand::random::<u32>());
    let new_image = format!("{repository}:{new_tag}");
    ctr(&["images", "tag", &image, &new_image]);
    let restore = RestoreController {
        tag: tag.to_owned(),
        added_image: new_image.clone(),
        restored: false,
    };
    let controllers_before = controller_pods();

    let loops = [
        RequestLoop::start(
            urls[0].clone(),
            BTreeMap::from([("1.0.0".to_owned(), LOGREG)]),
        ),
        RequestLoop::start(
            urls[1].clone(),
            BTreeMap::from([("1.0.0".to_owned(), LOGREG)]),
        ),
    ];
    let upgraded = Instant::now();
    tokio::task::spawn_blocking(move || upgrade_controller_to(&new_tag))
        .await
        .expect("the upgrade ran");
    eprintln!(
        "figure: helm upgrade of the controller -> new pods lead: {:.1?}",
        upgraded.elapsed()
    );
    let controllers_after = controller_pods();
    assert!(
        controllers_after
            .iter()
            .all(|(_, uid, _)| !controllers_before.iter().any(|(_, u, _)| u == uid)),
        "every controller pod was replaced: before {controllers_before:?}, after {controllers_after:?}"
    );
    // The new leader has listed everything and read every pod; a re-roll or a switch would start within this.
    tokio::time::sleep(Duration::from_secs(30)).await;

    assert_eq!(
        [ns.pods("blue"), ns.pods("inplace")],
        pods_before,
        "the serving pods (name, uid, restarts) are the same ones"
    );
    assert_eq!(
        [deployments_of(&ns, "blue"), deployments_of(&ns, "inplace")],
        deployments_before,
        "no new revision"
    );
    for (name, before) in ["blue", "inplace"].iter().zip(&status_before) {
        let now = ns.get(name)["status"].clone();
        assert_eq!(
            now["active"]["revision"], before["active"]["revision"],
            "{name}: the same revision serves"
        );
        assert_eq!(
            now["history"], before["history"],
            "{name}: no history entry"
        );
        assert!(serving(&ns.get(name), "1.0.0"), "{name}: {now:#}");
    }

    // And back to the image it ran before, under the same loops.
    tokio::task::spawn_blocking(move || restore.restore())
        .await
        .expect("the way back ran");
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        [ns.pods("blue"), ns.pods("inplace")],
        pods_before,
        "the serving pods are the same ones after the way back"
    );
    for requests in loops {
        requests.finish(&["1.0.0"]).await;
    }
}
