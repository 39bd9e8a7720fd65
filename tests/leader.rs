//! Leader election with two real `ferry run` processes on the real control plane.

mod support;

use std::time::{Duration, Instant};

use support::{control_plane, repo_root, FerryRun, TestNamespace};

/// One replica of the controller: `ferry run` with leader election in the test's namespace.
fn replica(ns: &str, identity: &str) -> FerryRun {
    FerryRun::watching(&[ns])
        .env("FERRY_LEADER_ELECTION", "true")
        .env("FERRY_LEADER_ELECTION_NAMESPACE", ns)
        .env("POD_NAME", identity)
        .start()
}

/// The controller's count of its own API writes, from its metrics endpoint.
fn writes(replica: &FerryRun) -> u64 {
    replica
        .metrics()
        .lines()
        .find_map(|line| line.strip_prefix("ferry_api_writes_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("ferry_api_writes_total is exported")
}

fn lease_holder(ns: &str) -> String {
    let output = control_plane().kubectl(&[
        "get",
        "lease",
        "ferry-controller",
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

fn deployment_for_version(ns: &str, version: &str) -> bool {
    let out = control_plane().kubectl_ok(&[
        "get",
        "deploy",
        "-n",
        ns,
        "-o",
        "jsonpath={.items[*].metadata.annotations.ferry\\.dev/version}",
    ]);
    out.split_whitespace().any(|v| v == version)
}

#[test]
fn only_the_leader_writes_and_a_standby_takes_over_within_15_seconds() {
    let ns = TestNamespace::create();
    let first = replica(&ns.name, "replica-a");
    wait_until(
        "replica-a to hold the Lease",
        Duration::from_secs(30),
        || lease_holder(&ns.name) == "replica-a",
    );
    let second = replica(&ns.name, "replica-b");

    let sample = repo_root().join("e2e/samples/minimal.yaml");
    control_plane().kubectl_ok(&["apply", "-n", &ns.name, "-f", sample.to_str().unwrap()]);
    wait_until(
        "the leader to create the first revision",
        Duration::from_secs(30),
        || deployment_for_version(&ns.name, "1.0.0"),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(writes(&first) > 0, "the leader reconciles");
    assert_eq!(
        writes(&second),
        0,
        "the standby writes nothing while the leader holds the Lease"
    );
    assert_eq!(lease_holder(&ns.name), "replica-a");

    // The leader dies without releasing its Lease; a spec change is waiting for whoever leads next.
    first.kill();
    let killed = Instant::now();
    control_plane().kubectl_ok(&[
        "patch",
        "md",
        "iris",
        "-n",
        &ns.name,
        "--type=merge",
        "-p",
        r#"{"spec":{"model":{"version":"2.0.0"}}}"#,
    ]);
    wait_until(
        "the standby to reconcile the change",
        Duration::from_secs(30),
        || deployment_for_version(&ns.name, "2.0.0"),
    );
    let failover = killed.elapsed();
    println!(
        "failover: {:.1} s from killing the leader to the standby's first reconcile",
        failover.as_secs_f64()
    );
    assert!(
        failover <= Duration::from_secs(15),
        "failover took {failover:?}"
    );
    assert_eq!(lease_holder(&ns.name), "replica-b");
    assert!(writes(&second) > 0, "the new leader reconciles");

    // A graceful stop releases the Lease for the next replica.
    let exit = second
        .terminate(Duration::from_secs(15))
        .expect("ferry run exits on SIGTERM");
    assert!(exit.success(), "ferry run exited with {exit}");
    assert_eq!(
        lease_holder(&ns.name),
        "",
        "the Lease is released on shutdown"
    );
}
