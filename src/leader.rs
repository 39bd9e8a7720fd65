//! Leader election: with several replicas of the operator, only the holder of a Lease reconciles.
//!
//! A standby waits for the Lease; the leader renews it. A leader that loses its Lease stops at once — the
//! controller future is dropped, so no reconcile of it writes again, and no admin call of it is sent to a pod
//! again (the tasks that make them belong to the controller and are aborted with it) — and the process exits
//! non-zero so that Kubernetes restarts it as a fresh standby. The Lease lasts [`LEASE_SECONDS`], so a dead leader
//! is replaced within that time plus one renewal attempt.

use std::future::Future;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::info;

/// How long a Lease stays valid after its last renewal.
pub const LEASE_SECONDS: u64 = 10;
/// How long before expiry the holder renews it.
pub const RENEW_BEFORE_SECONDS: u64 = 4;

/// Where the Lease lives and who competes for it.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
}

/// Waits for the Lease, then runs `work` while holding it. Returns when `work` ends or `shutdown` resolves
/// (releasing the Lease), or with an error when the Lease is lost.
pub async fn run_while_leader<W, Fut>(
    client: Client,
    election: LeaderElection,
    shutdown: impl Future<Output = ()>,
    work: W,
) -> anyhow::Result<()>
where
    W: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let manager = LeaseManagerBuilder::new(client, &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(RENEW_BEFORE_SECONDS)
        .with_field_manager("ferry-leader-election")
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    tokio::pin!(shutdown);

    info!(lease = %election.lease_name, namespace = %election.namespace, identity = %election.identity, "waiting for leadership");
    let acquired = tokio::select! {
        _ = &mut shutdown => false,
        acquired = leading.wait_for(|is_leader| *is_leader) => {
            acquired.map_err(|_| anyhow::anyhow!("the leader election task stopped"))?;
            true
        }
    };
    if !acquired {
        drop(leading);
        let _ = lease_task.await;
        return Ok(());
    }
    info!(identity = %election.identity, "became the leader");

    let result = tokio::select! {
        result = work() => result,
        _ = leading.wait_for(|is_leader| !*is_leader) => {
            Err(anyhow::anyhow!("lost the leader Lease {}/{}; stopping so that only one controller writes", election.namespace, election.lease_name))
        }
    };
    // Closing the channel makes the lease task release the Lease (a no-op when it was lost).
    drop(leading);
    let _ = lease_task.await;
    result
}
