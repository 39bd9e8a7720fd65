//! An upgrade of Ferry restarts no model.
//!
//! - The revision hash names each revision's Deployment. A change to the pod template changes the hash of every
//!   ModelDeployment, so the first reconcile after an upgrade makes a new revision for each and rolls every model
//!   out again. `the_revision_hashes_of_the_previous_release_stand` pins the hashes of a fixed set of
//!   ModelDeployments (`tests/fixtures/previous-release/pinned-specs.yaml`) to the values Ferry 0.1.0 computed.
//! - `tests/fixtures/previous-release/` also holds what Ferry 0.1.0's own controller wrote for five
//!   ModelDeployments (made by `generate.rs` there, in a checkout of that release): statuses, Deployments with
//!   their marks, Services, InPlace ConfigMaps. `an_upgrade_takes_over_what_the_previous_release_wrote` loads them
//!   into a real kube-apiserver with their pods running (the test plays the kubelet, and for InPlace each pod's
//!   ferry-server, `upgrade/in_place_server.rs`), starts this release's controller and watches what it writes.

mod support;

#[path = "upgrade/in_place_server.rs"]
mod in_place_server;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::api::ModelDeployment;
use ferry::children::deployment::{pinned_revision_template, ObjectPin};
use ferry::config::OperatorConfig;
use ferry::metrics::{Metrics, PodReadLabels};
use futures::StreamExt;
use in_place_server::InPlaceServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use support::kubelet::running_pod_status_at;
use support::{control_plane, eventually, eventually_explained, InProcess, Kubelet, TestNamespace};
use tokio::task::JoinHandle;

/// The revision hashes Ferry 0.1.0 (commit b87a529) computed for `pinned-specs.yaml` with [`config`].
const PINNED: &[(&str, &str)] = &[
    ("bluegreen-minimal", "2e367e2630"),
    ("bluegreen-more-replicas", "2e367e2630"),
    ("bluegreen-sha256", "a307fdbb2a"),
    ("bluegreen-every-field", "1f4c99fab6"),
    ("bluegreen-load-timeout-600", "e97611a7b7"),
    ("bluegreen-refresh", "67d9c867d4"),
    ("bluegreen-refresh-pinned", "da6c6af112"),
    ("inplace-minimal", "26145cec36"),
    ("inplace-every-field", "26074f62e0"),
    ("inplace-other-version", "26145cec36"),
];

/// How long the test watches the controller once it has reconciled everything and read every pod.
const WINDOW: Duration = Duration::from_secs(15);

/// The operator configuration the fixtures were made with (`generate.rs`).
fn config() -> OperatorConfig {
    OperatorConfig {
        server_image: "registry.example.com/ferry-server:0.1.0".into(),
        server_image_pull_policy: "IfNotPresent".into(),
        server_resources: None,
        server_formats: vec!["onnx".into()],
        cluster_domain: "cluster.local".into(),
        ..OperatorConfig::default()
    }
}

fn fixture_dir() -> PathBuf {
    support::repo_root().join("tests/fixtures/previous-release")
}

fn read_fixture(file: &str) -> String {
    let path = fixture_dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn the_revision_hashes_of_the_previous_release_stand() {
    let entries: Vec<Value> =
        serde_yaml::from_str(&read_fixture("pinned-specs.yaml")).expect("pinned-specs.yaml parses");
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().expect("each entry has a name"))
        .collect();
    let pinned_names: Vec<&str> = PINNED.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names, pinned_names,
        "every entry of pinned-specs.yaml has its pinned hash, in the same order"
    );
    let mut changed = Vec::new();
    for (entry, (name, pinned)) in entries.iter().zip(PINNED) {
        let md: ModelDeployment = serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml"}, "spec": entry["spec"],
        }))
        .unwrap_or_else(|e| panic!("{name}: the spec parses: {e}"));
        let pin = ObjectPin {
            object: entry["object"].as_str().map(str::to_owned),
            detected_at: None,
        };
        let revision = pinned_revision_template(&md, &config(), pin).revision;
        if revision != *pinned {
            changed.push(format!("  {name}: {pinned} -> {revision}"));
        }
    }
    assert!(
        changed.is_empty(),
        "the pod template changed, and with it the revision hash of these ModelDeployments:\n{}\n\
         An upgrade to this build would make a new revision for every ModelDeployment of every user, roll it out \
         and restart every model. Such a change must be a deliberate, documented migration (README.md, \
         \"Revision hashes and upgrades\"): keep the template of existing revisions unchanged (set a new field \
         only when it differs from what the server did without it, as FERRY_DOWNLOAD_TIMEOUT_SECONDS does), or \
         document the re-roll in the release notes; only then update PINNED.",
        changed.join("\n")
    );
}

/// One fixture: the objects Ferry 0.1.0 left for a ModelDeployment, and for InPlace what its pods' servers said.
struct Fixture {
    name: &'static str,
    objects: Vec<Value>,
    servers: Vec<Value>,
}

impl Fixture {
    fn read(name: &'static str) -> Fixture {
        let list: Value = serde_yaml::from_str(&read_fixture(&format!("{name}.yaml")))
            .unwrap_or_else(|e| panic!("{name}.yaml parses: {e}"));
        let objects = list["items"].as_array().expect("a List").clone();
        let servers = if name.starts_with("ip-") {
            serde_json::from_str(&read_fixture(&format!("{name}-servers.json")))
                .unwrap_or_else(|e| panic!("{name}-servers.json parses: {e}"))
        } else {
            Vec::new()
        };
        Fixture {
            name,
            objects,
            servers,
        }
    }

    fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|o| o["kind"] == json!(kind))
            .cloned()
            .collect()
    }

    fn model_deployment(&self) -> Value {
        self.of_kind("ModelDeployment")
            .pop()
            .expect("a ModelDeployment")
    }
}

/// The owner's uid as the fixtures write it (`generate.rs`).
const OWNER_UID: &str = "MODEL-DEPLOYMENT-UID";

/// For one object of a fixture: its namespace, and its owner's uid in this cluster (in `ownerReferences` and in
/// the managed fields that key them).
fn placed(object: &Value, namespace: &str, owner_uid: &str) -> Value {
    let text = serde_json::to_string(object).unwrap();
    let mut object: Value = serde_json::from_str(&text.replace(OWNER_UID, owner_uid)).unwrap();
    object["metadata"]["namespace"] = json!(namespace);
    object
}

/// Creates `object`, then gives it the managed fields it had (a create records its own): which manager wrote
/// each field decides what a server-side apply of this release removes.
async fn create_as_recorded<K>(api: &Api<K>, object: &Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = name_of(object).to_owned();
    let typed: K = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{name}: the fixture parses: {e}"));
    api.create(&PostParams::default(), &typed)
        .await
        .unwrap_or_else(|e| panic!("{name}: create: {e}"));
    restore_managed_fields(api, object).await;
}

/// Gives the live object the managed fields `object` records (a PUT may set them; a create may not).
async fn restore_managed_fields<K>(api: &Api<K>, object: &Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = name_of(object).to_owned();
    let recorded: Vec<ManagedFieldsEntry> =
        serde_json::from_value(object["metadata"]["managedFields"].clone())
            .unwrap_or_else(|e| panic!("{name}: the recorded managed fields parse: {e}"));
    let managers = |entries: &[ManagedFieldsEntry]| -> BTreeSet<String> {
        entries
            .iter()
            .map(|e| format!("{:?} {:?} {:?}", e.manager, e.operation, e.subresource))
            .collect()
    };
    eventually(&format!("{name}: its recorded managed fields"), || async {
        let mut live = api.get(&name).await.ok()?;
        live.meta_mut().managed_fields = Some(recorded.clone());
        // A conflict (a controller of the cluster wrote meanwhile) is tried again.
        let replaced = api
            .replace(&name, &PostParams::default(), &live)
            .await
            .ok()?;
        let now = replaced.meta().managed_fields.clone().unwrap_or_default();
        managers(&recorded).is_subset(&managers(&now)).then_some(())
    })
    .await;
}

struct World {
    ns: TestNamespace,
    client: Client,
    kubelet: Kubelet,
    /// The stand-ins for each InPlace pod's ferry-server, by ModelDeployment.
    servers: BTreeMap<&'static str, Vec<InPlaceServer>>,
}

impl World {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// Creates what the previous release left for `fixture`, its pods running and ready.
    async fn load(&mut self, fixture: &Fixture) {
        let ns = self.ns.name.clone();
        let name = fixture.name;
        let stored = fixture.model_deployment();
        let generation = stored["metadata"]["generation"].as_i64().unwrap_or(1);
        let replicas = stored["spec"]["replicas"].as_i64().unwrap_or(1);

        // The ModelDeployment at the generation its status observed: created with more replicas, then brought
        // down to the stored spec one replica at a time, each a new generation.
        let mut md = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": ns}, "spec": stored["spec"]});
        md["spec"]["replicas"] = json!(replicas + generation - 1);
        let md: ModelDeployment = serde_json::from_value(md).expect("the stored spec parses");
        let mds: Api<ModelDeployment> = self.api();
        let created = mds
            .create(&PostParams::default(), &md)
            .await
            .unwrap_or_else(|e| panic!("{name}: create the ModelDeployment: {e}"));
        for step in (0..generation - 1).rev() {
            let body = json!({"spec": {"replicas": replicas + step}});
            mds.patch(name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .expect("patch replicas");
        }
        let uid = created.uid().expect("a uid");

        for object in fixture.of_kind("Secret") {
            create_as_recorded(&self.api::<Secret>(), &placed(&object, &ns, &uid)).await;
        }
        for object in fixture.of_kind("ConfigMap") {
            create_as_recorded(&self.api::<ConfigMap>(), &placed(&object, &ns, &uid)).await;
        }
        for object in fixture.of_kind("Service") {
            create_as_recorded(&self.api::<Service>(), &placed(&object, &ns, &uid)).await;
        }
        for object in fixture.of_kind("Deployment") {
            create_as_recorded(&self.api::<Deployment>(), &placed(&object, &ns, &uid)).await;
        }
        let status = json!({"status": stored["status"]});
        mds.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| panic!("{name}: write the stored status: {e}"));
        // The status as the previous controller owned it (it applies the whole status each time).
        restore_managed_fields(&mds, &stored).await;

        // The pods run as they did before the upgrade.
        for deployment in fixture.of_kind("Deployment") {
            if deployment["spec"]["replicas"].as_i64().unwrap_or(0) == 0 {
                continue;
            }
            let revision = deployment["metadata"]["labels"]["ferry.dev/revision"]
                .as_str()
                .expect("a revision label")
                .to_owned();
            if fixture.servers.is_empty() {
                self.kubelet.make_ready(name, &revision).await;
            } else {
                self.start_in_place_pods(fixture, &revision).await;
            }
        }
    }

    /// Plays the kubelet for an InPlace pod set: each pod runs, Ready, at the address of a server that answers
    /// what the previous release's pods answered.
    async fn start_in_place_pods(&mut self, fixture: &Fixture, revision: &str) {
        let mut servers = Vec::new();
        for status in &fixture.servers {
            servers.push(InPlaceServer::from_status(status.clone()).await);
        }
        let pods: Api<Pod> = self.api();
        let of_revision = ListParams::default().labels(&format!("ferry.dev/revision={revision}"));
        let list = eventually(
            &format!("{} pods of {}", servers.len(), fixture.name),
            || async {
                let list = pods.list(&of_revision).await.ok()?;
                (list.items.len() == servers.len()).then_some(list.items)
            },
        )
        .await;
        for (pod, server) in list.iter().zip(&servers) {
            pods.patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&running_pod_status_at(&server.address.to_string(), true)),
            )
            .await
            .expect("patch the pod's status");
        }
        let deployments: Api<Deployment> = self.api();
        let name = format!("{}-{revision}", fixture.name);
        eventually(&format!("{name} to be available"), || async {
            let d = deployments.get(&name).await.ok()?;
            let wanted = d.spec.as_ref()?.replicas?;
            let status = d.status?;
            (status.available_replicas.unwrap_or(0) >= wanted
                && status.observed_generation >= d.metadata.generation)
                .then_some(())
        })
        .await;
        self.servers.insert(fixture.name, servers);
    }

    /// The pods of the namespace: name → (uid, restart count).
    async fn pods(&self) -> BTreeMap<String, (String, i32)> {
        self.api::<Pod>()
            .list(&ListParams::default())
            .await
            .expect("list pods")
            .items
            .into_iter()
            .map(|pod| {
                let restarts = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
                (pod.name_any(), (pod.uid().unwrap_or_default(), restarts))
            })
            .collect()
    }
}

/// The event a recording ends with when its watch fails or ends early.
const WATCH_FAILED: &str = "WatchFailed";

/// Every change the API server reports for one kind in the namespace, from now on.
type Recorded = Arc<Mutex<Vec<(&'static str, Value)>>>;

async fn record<K>(api: Api<K>) -> (Recorded, JoinHandle<()>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K: Send + 'static,
{
    let from = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("a list has a resource version");
    let stream = api
        .watch(&WatchParams::default().timeout(280), &from)
        .await
        .expect("watch");
    let recorded: Recorded = Arc::default();
    let into = recorded.clone();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let (kind, object) = match event {
                Ok(WatchEvent::Added(o)) => ("Added", serde_json::to_value(&o).unwrap()),
                Ok(WatchEvent::Modified(o)) => ("Modified", serde_json::to_value(&o).unwrap()),
                Ok(WatchEvent::Deleted(o)) => ("Deleted", serde_json::to_value(&o).unwrap()),
                Ok(WatchEvent::Bookmark(_)) => continue,
                Ok(WatchEvent::Error(e)) => (WATCH_FAILED, json!(e.to_string())),
                Err(e) => (WATCH_FAILED, json!(e.to_string())),
            };
            into.lock().unwrap().push((kind, object));
        }
        into.lock()
            .unwrap()
            .push((WATCH_FAILED, json!("the watch ended")));
    });
    (recorded, task)
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn marks_of(deployment: &Value) -> BTreeMap<String, Value> {
    deployment["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| {
            [
                "ferry.dev/promoted-at",
                "ferry.dev/rollout-started-at",
                "ferry.dev/aborted",
            ]
            .contains(&key.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The active model revision a ConfigMap's InPlace state names, and the model its pods load.
fn in_place_active(config_map: &Value) -> (Value, Value) {
    let state: Value = config_map["metadata"]["annotations"]["ferry.dev/in-place"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    (
        state["active"].clone(),
        config_map["data"]["model.json"].clone(),
    )
}

fn history_of(md: &Value) -> Vec<(String, String, String)> {
    md["status"]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let text = |key: &str| h[key].as_str().unwrap_or_default().to_owned();
            (text("revision"), text("outcome"), text("version"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_takes_over_blue_green_as_the_previous_release_left_it() {
    take_over(&["bg-settled", "bg-waiting", "bg-aborted"], "bg-waiting").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_takes_over_in_place_as_the_previous_release_left_it() {
    take_over(&["ip-settled", "ip-waiting"], "ip-waiting").await;
}

/// Loads the fixtures `names` into a namespace of their own, with their pods running, and has this release's
/// controller take over: over a window it must move nothing. Then it promotes `waiting`, the candidate the
/// previous release held for `kubectl ferry promote`, as that release left it.
async fn take_over(names: &[&'static str], waiting: &'static str) {
    let fixtures: Vec<Fixture> = names.iter().map(|name| Fixture::read(name)).collect();
    let ns = TestNamespace::create();
    let client = control_plane().client().await;
    let mut world = World {
        kubelet: Kubelet::new(&client, &ns.name),
        ns,
        client: client.clone(),
        servers: BTreeMap::new(),
    };
    for fixture in &fixtures {
        world.load(fixture).await;
    }
    let pods_before = world.pods().await;
    let in_place_pods: usize = world.servers.values().map(Vec::len).sum();

    // What this release's controller writes from its start on.
    let (md_events, md_task) = record(world.api::<ModelDeployment>()).await;
    let (deployment_events, deployment_task) = record(world.api::<Deployment>()).await;
    let (service_events, service_task) = record(world.api::<Service>()).await;
    let (config_map_events, config_map_task) = record(world.api::<ConfigMap>()).await;
    let metrics = Arc::new(Metrics::default());
    let controller = InProcess::watching(&[&world.ns.name])
        .client(client.clone())
        .config(config())
        .metrics(metrics.clone())
        .start()
        .await;
    // It has looked at every ModelDeployment and read every InPlace pod; then the window runs.
    eventually(
        "a reconcile of every ModelDeployment and a read of every InPlace pod",
        || async {
            let answered = metrics
                .pod_reads
                .get_or_create(&PodReadLabels { result: "answered" })
                .get();
            (metrics.reconciles.get() >= fixtures.len() as u64 && answered >= in_place_pods as u64)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(WINDOW).await;

    let mut problems = Vec::new();
    let md_events = md_events.lock().unwrap().clone();
    let deployment_events = deployment_events.lock().unwrap().clone();
    let service_events = service_events.lock().unwrap().clone();
    let config_map_events = config_map_events.lock().unwrap().clone();
    for events in [
        &md_events,
        &deployment_events,
        &service_events,
        &config_map_events,
    ] {
        if let Some((_, error)) = events.iter().find(|(kind, _)| *kind == WATCH_FAILED) {
            problems.push(format!("a watch of the window failed: {error}"));
        }
    }
    for fixture in &fixtures {
        let name = fixture.name;
        let stored = fixture.model_deployment();
        let owned = |object: &Value| {
            object["metadata"]["labels"]["ferry.dev/model-deployment"] == json!(name)
        };

        // No re-roll: no Deployment made or removed, none resized, no mark changed.
        let stored_deployments: BTreeMap<String, Value> = fixture
            .of_kind("Deployment")
            .into_iter()
            .map(|d| (name_of(&d).to_owned(), d))
            .collect();
        for (event, deployment) in deployment_events.iter().filter(|(_, d)| owned(d)) {
            let deployment_name = name_of(deployment);
            let Some(before) = stored_deployments.get(deployment_name) else {
                problems.push(format!(
                    "{name}: Deployment {deployment_name} {event}: a new revision (a re-roll)"
                ));
                continue;
            };
            if *event == "Deleted" {
                problems.push(format!("{name}: Deployment {deployment_name} deleted"));
            }
            if deployment["spec"]["replicas"] != before["spec"]["replicas"] {
                problems.push(format!(
                    "{name}: Deployment {deployment_name} resized from {} to {}",
                    before["spec"]["replicas"], deployment["spec"]["replicas"]
                ));
            }
            if marks_of(deployment) != marks_of(before) {
                problems.push(format!(
                    "{name}: the marks of Deployment {deployment_name} changed from {:?} to {:?}",
                    marks_of(before),
                    marks_of(deployment)
                ));
            }
        }

        // No Service switch.
        for service in fixture.of_kind("Service") {
            let service_name = name_of(&service).to_owned();
            for (event, now) in service_events
                .iter()
                .filter(|(_, s)| name_of(s) == service_name)
            {
                if now["spec"]["selector"] != service["spec"]["selector"] || *event != "Modified" {
                    problems.push(format!(
                        "{name}: Service {service_name} {event}, selector {} (was {})",
                        now["spec"]["selector"], service["spec"]["selector"]
                    ));
                }
            }
        }

        // The ConfigMap names the same active model.
        for config_map in fixture.of_kind("ConfigMap") {
            let before = in_place_active(&config_map);
            for (event, now) in config_map_events
                .iter()
                .filter(|(_, c)| name_of(c) == name_of(&config_map))
            {
                if in_place_active(now) != before || *event != "Modified" {
                    problems.push(format!(
                        "{name}: ConfigMap {} {event}: active {:?} (was {:?})",
                        name_of(now),
                        in_place_active(now),
                        before
                    ));
                }
            }
        }

        // The pods' servers were asked nothing: no stage, no switch, no unload.
        for (i, server) in world.servers.get(name).into_iter().flatten().enumerate() {
            if !server.calls().is_empty() {
                problems.push(format!("{name}: pod {i} was called: {:?}", server.calls()));
            }
        }

        // At most one status write, and the history as it was.
        let writes: Vec<&Value> = md_events
            .iter()
            .filter(|(_, md)| name_of(md) == name)
            .map(|(_, md)| md)
            .collect();
        if writes.len() > 1 {
            problems.push(format!(
                "{name}: {} status writes (at most one):\n{}",
                writes.len(),
                writes
                    .iter()
                    .map(|md| serde_json::to_string(&md["status"]).unwrap())
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        let latest = world.api::<ModelDeployment>().get(name).await.unwrap();
        let latest = serde_json::to_value(&latest).unwrap();
        if history_of(&latest) != history_of(&stored) {
            problems.push(format!(
                "{name}: the history changed from {:?} to {:?}",
                history_of(&stored),
                history_of(&latest)
            ));
        }
        for field in ["active", "candidate", "phase"] {
            let (now, was) = (&latest["status"][field], &stored["status"][field]);
            let key = |v: &Value| {
                (
                    v["revision"].clone(),
                    v["version"].clone(),
                    v["reason"].clone(),
                )
            };
            let same = match field {
                "phase" => now == was,
                _ => key(now) == key(was),
            };
            if !same {
                problems.push(format!(
                    "{name}: status.{field} changed from {was} to {now}"
                ));
            }
        }
    }

    // No pod made, removed or restarted.
    let pods_after = world.pods().await;
    if pods_after != pods_before {
        problems.push(format!(
            "the pods changed:\nbefore {pods_before:?}\nafter  {pods_after:?}"
        ));
    }
    assert!(
        problems.is_empty(),
        "this release did not take over what the previous one wrote as it stood:\n{}",
        problems.join("\n")
    );

    // And it carries on from there: the candidate held by the previous release is promoted as it is.
    let mds: Api<ModelDeployment> = world.api();
    let fixture = fixtures.iter().find(|f| f.name == waiting).unwrap();
    let candidate = fixture.model_deployment()["status"]["candidate"]["revision"]
        .as_str()
        .expect("a candidate")
        .to_owned();
    ferry::plugin::promote(&mds, waiting)
        .await
        .unwrap_or_else(|e| panic!("{waiting}: kubectl ferry promote: {e:#}"));
    let last = Mutex::new(Value::Null);
    eventually_explained(
        &format!("{waiting}: {candidate} promoted"),
        || format!("status: {:#}", last.lock().unwrap()),
        || async {
            let md = mds.get(waiting).await.ok()?;
            *last.lock().unwrap() = serde_json::to_value(&md.status).unwrap();
            let status = md.status?;
            (status.active?.revision == candidate && status.candidate.is_none()).then_some(())
        },
    )
    .await;
    if let Some(servers) = world.servers.get(waiting) {
        for server in servers {
            assert_eq!(
                server.calls(),
                ["switch 2"],
                "{waiting}: each pod switched to the staged version, nothing else"
            );
        }
        let config_maps: Api<ConfigMap> = world.api();
        let config_map = config_maps
            .get(&format!("{waiting}-ferry-model"))
            .await
            .unwrap();
        assert!(
            config_map.data.unwrap()["model.json"].contains("\"version\":\"2\""),
            "new pods of {waiting} start on version 2"
        );
    }
    let deployments_after: BTreeSet<String> = world
        .api::<Deployment>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|d| d.name_any())
        .collect();
    let stored_deployments: BTreeSet<String> = fixtures
        .iter()
        .flat_map(|f| f.of_kind("Deployment"))
        .map(|d| name_of(&d).to_owned())
        .collect();
    assert_eq!(
        deployments_after, stored_deployments,
        "the promotions used the revisions the previous release made"
    );

    controller
        .stop()
        .await
        .expect("the controller stops cleanly");
    for task in [md_task, deployment_task, service_task, config_map_task] {
        task.abort();
    }
}
