//! Part 3, API writes with nothing changing: after the rollouts of part 1 have settled, the in-process
//! controller's requests are counted over a quiet window, with two cross-checks; then a metadata-only touch of
//! every ModelDeployment forces reconciles that should write nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry::api::ModelDeployment;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::counted::InProcessController;
use crate::requests::{apiserver_requests, counter_difference, difference, Counts, WRITE_VERBS};
use crate::say;
use crate::settings::Settings;

pub struct QuietFigures {
    pub settled: bool,
    pub window: Duration,
    pub requests: Counts,
    pub reconciles: u64,
    pub changed_objects: Vec<String>,
    pub new_events: i64,
    pub apiserver_writes: Option<BTreeMap<String, u64>>,
    pub touch_reconciles: u64,
    pub touch_requests: Counts,
    pub touched: usize,
}

/// resourceVersion of every ModelDeployment, Deployment and Service of the namespace.
pub async fn resource_versions(client: &Client, namespace: &str) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    let all = ListParams::default();
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
    for md in mds.list(&all).await.expect("list ModelDeployments").items {
        versions.insert(
            format!("modeldeployment/{}", md.name_any()),
            md.resource_version().unwrap_or_default(),
        );
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    for d in deployments
        .list(&all)
        .await
        .expect("list Deployments")
        .items
    {
        versions.insert(
            format!("deployment/{}", d.name_any()),
            d.resource_version().unwrap_or_default(),
        );
    }
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    for s in services.list(&all).await.expect("list Services").items {
        versions.insert(
            format!("service/{}", s.name_any()),
            s.resource_version().unwrap_or_default(),
        );
    }
    versions
}

pub async fn event_count(client: &Client, namespace: &str) -> i64 {
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), namespace);
    events
        .list(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .iter()
                .map(|e| {
                    i64::from(e.count.unwrap_or(1).max(1))
                        + e.series.as_ref().and_then(|s| s.count).map_or(0, i64::from)
                })
                .sum()
        })
        .unwrap_or(-1)
}

pub async fn quiet(
    client: &Client,
    namespace: &str,
    settings: &Settings,
    controller: &InProcessController,
) -> QuietFigures {
    say("part 3: waiting for the controller to settle (no reconcile for 5 s, at most 120 s) ...");
    let settled = controller
        .settle(Duration::from_secs(5), Duration::from_secs(120))
        .await;
    say(&format!(
        "part 3: counting API requests for {}s with nothing changing ...",
        settings.quiet.as_secs()
    ));
    let versions_before = resource_versions(client, namespace).await;
    let events_before = event_count(client, namespace).await;
    let apiserver_before = apiserver_requests(client, &WRITE_VERBS).await;
    let requests_before = controller.requests.snapshot();
    let reconciles_before = controller.reconciles();
    let started = Instant::now();
    tokio::time::sleep(settings.quiet).await;
    let window = started.elapsed();
    let requests = difference(&controller.requests.snapshot(), &requests_before);
    let reconciles = controller.reconciles() - reconciles_before;
    let apiserver_after = apiserver_requests(client, &WRITE_VERBS).await;
    let versions_after = resource_versions(client, namespace).await;
    let events_after = event_count(client, namespace).await;
    let mut changed_objects: Vec<String> = versions_after
        .iter()
        .filter(|(key, rv)| versions_before.get(*key) != Some(rv))
        .map(|(key, _)| key.clone())
        .collect();
    changed_objects.extend(
        versions_before
            .keys()
            .filter(|key| !versions_after.contains_key(*key))
            .map(|key| format!("{key} (deleted)")),
    );
    let apiserver = counter_difference(apiserver_before, apiserver_after);

    // A metadata-only change makes every ModelDeployment reconcile with nothing to do.
    say("part 3: touching an annotation of every ModelDeployment to force reconciles with nothing to do ...");
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
    let names: Vec<String> = mds
        .list(&ListParams::default())
        .await
        .expect("list ModelDeployments")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let touch_before = controller.requests.snapshot();
    let touch_reconciles_before = controller.reconciles();
    let stamp = k8s_openapi::jiff::Timestamp::now()
        .as_millisecond()
        .to_string();
    for name in &names {
        let body = json!({"metadata": {"annotations": {"bench.ferry.dev/touched": stamp}}});
        mds.patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .expect("annotate ModelDeployment");
    }
    // Wait for the reconciles to happen and whatever they trigger to die down.
    let wanted = touch_reconciles_before + names.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while controller.reconciles() < wanted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    controller
        .settle(Duration::from_secs(3), Duration::from_secs(30))
        .await;
    QuietFigures {
        settled,
        window,
        requests,
        reconciles,
        changed_objects,
        new_events: events_after - events_before,
        apiserver_writes: apiserver,
        touch_reconciles: controller.reconciles() - touch_reconciles_before,
        touch_requests: difference(&controller.requests.snapshot(), &touch_before),
        touched: names.len(),
    }
}
