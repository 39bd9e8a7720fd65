//! Waiting for what the controller and the Kubernetes controllers do asynchronously.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};

use ferry::labels;

/// How long a test waits for one thing before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it returns `Some`; fails after [`WAIT`] naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_explained(what, String::new, check).await
}

/// As [`eventually`], with `explain()` (a controller's log, say) in the failure message.
pub async fn eventually_explained<T, F, Fut>(
    what: &str,
    explain: impl FnOnce() -> String,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {WAIT:?} waiting for {what}\n{}", explain());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The revision label of the Deployment among `deployments` that serves model `version`.
pub fn revision_serving(deployments: Vec<Deployment>, version: &str) -> Option<String> {
    deployments
        .into_iter()
        .find(|d| {
            d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::annotations::VERSION))
                .is_some_and(|v| v == version)
        })
        .and_then(|d| d.metadata.labels?.get(labels::REVISION).cloned())
}

/// The revision of ModelDeployment `name` that serves `version`, once the controller has made its Deployment.
pub async fn revision_of(deployments: &Api<Deployment>, name: &str, version: &str) -> String {
    let owned = ListParams::default().labels(&format!("{}={name}", labels::MODEL_DEPLOYMENT));
    eventually(
        &format!("a Deployment of {name} for version {version}"),
        || async {
            let list = deployments.list(&owned).await.ok()?;
            revision_serving(list.items, version)
        },
    )
    .await
}
