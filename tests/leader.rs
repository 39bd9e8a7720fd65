//! Leader election with two real `ferry run` processes on the real control plane.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{control_plane, repo_root, TestNamespace};

struct Replica {
    child: Child,
    metrics_port: u16,
}

impl Replica {
    fn start(ns: &str, identity: &str) -> Self {
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .env("KUBECONFIG", &control_plane().kubeconfig)
            .env("FERRY_ADMIN_KEY_FILE", support::admin_key_file())
            .args([
                "run",
                "--watch-namespaces",
                ns,
                "--leader-election",
                "--leader-election-namespace",
                ns,
                "--leader-election-identity",
                identity,
                "--metrics-address",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ferry run starts");
        Replica {
            child,
            metrics_port,
        }
    }

    /// The controller's count of its own API writes, from its metrics endpoint.
    fn writes(&self) -> u64 {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)) {
                write!(
                    stream,
                    "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut body = String::new();
                stream.read_to_string(&mut body).unwrap();
                return body
                    .lines()
                    .find_map(|line| line.strip_prefix("ferry_api_writes_total "))
                    .and_then(|value| value.trim().parse().ok())
                    .expect("ferry_api_writes_total is exported");
            }
            assert!(Instant::now() < deadline, "metrics endpoint never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let first = Replica::start(&ns.name, "replica-a");
    wait_until(
        "replica-a to hold the Lease",
        Duration::from_secs(30),
        || lease_holder(&ns.name) == "replica-a",
    );
    let mut second = Replica::start(&ns.name, "replica-b");

    let sample = repo_root().join("e2e/samples/minimal.yaml");
    control_plane().kubectl_ok(&["apply", "-n", &ns.name, "-f", sample.to_str().unwrap()]);
    wait_until(
        "the leader to create the first revision",
        Duration::from_secs(30),
        || deployment_for_version(&ns.name, "1.0.0"),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(first.writes() > 0, "the leader reconciles");
    assert_eq!(
        second.writes(),
        0,
        "the standby writes nothing while the leader holds the Lease"
    );
    assert_eq!(lease_holder(&ns.name), "replica-a");

    // The leader dies without releasing its Lease; a spec change is waiting for whoever leads next.
    let mut first = first;
    first.child.kill().expect("kill the leader");
    first.child.wait().unwrap();
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
    assert!(second.writes() > 0, "the new leader reconciles");

    // A graceful stop releases the Lease for the next replica.
    let status = Command::new("kill")
        .args(["-TERM", &second.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = second.child.wait().unwrap();
    assert!(exit.success(), "ferry run exited with {exit}");
    assert_eq!(
        lease_holder(&ns.name),
        "",
        "the Lease is released on shutdown"
    );
}
