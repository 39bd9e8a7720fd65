//! `cargo xtask test`: install what is missing, build the tests, start one control plane for every test binary
//! (`FERRY_TEST_KUBECONFIG`) and one real node cluster for `tests/node.rs` (`FERRY_E2E_DIR`), run
//! `cargo test --workspace`, stop both. Both are started with `--watch-pid` of this process, so an interrupted
//! run stops them too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use crate::{child, setup};

const CARGO_TEST: [&str; 4] = ["test", "--workspace", "--locked", "--no-fail-fast"];

pub fn run(cargo_test_args: &[String]) -> Result<(), String> {
    let clock = Clock(Instant::now());
    require_root()?;

    clock.step("Debian packages the tests use");
    setup::debian_packages()?;

    clock.step(
        "Local control plane and node, ferry-server's test dependencies (built once, then cached)",
    );
    setup::installs()?;

    // Compiling first keeps the idle control plane and node from taking CPU from the compiler.
    clock.step("Building the tests");
    let build_args = cargo_test_args
        .split(|a| a == "--")
        .next()
        .unwrap_or_default();
    let built = child::cargo()
        .args(CARGO_TEST)
        .arg("--no-run")
        .args(build_args)
        .status()
        .map_err(|e| format!("cargo test --no-run: {e}"))?;
    if !built.success() {
        return Err("the tests do not build (the errors are above)".into());
    }

    clock.step("One control plane shared by every test binary (e2e/control-plane.sh)");
    let plane = Started::new("e2e/control-plane.sh", "start", "stop")?;

    clock.step("A real node with the chart and the S3 store, for tests/node.rs (e2e/cluster.sh)");
    let node = Started::new("e2e/cluster.sh", "up", "down")?;
    if let Ok(timings) = std::fs::read_to_string(node.dir.join("timings")) {
        for line in timings.lines() {
            eprintln!("    seconds: {line}");
        }
    }

    clock.step("cargo test --workspace");
    let tests = child::cargo()
        .args(CARGO_TEST)
        .args(cargo_test_args)
        .env("FERRY_TEST_KUBECONFIG", plane.dir.join("kubeconfig"))
        .env("FERRY_E2E_DIR", &node.dir)
        .status()
        .map_err(|e| format!("cargo test: {e}"))?;

    clock.step("Stopping the node and the control plane");
    drop(node);
    drop(plane);
    clock.step("Done");
    if tests.success() {
        Ok(())
    } else {
        Err("cargo test --workspace failed (its output is above)".into())
    }
}

/// The real-node tests run containerd, runc and iptables; without root they would fail one by one.
fn require_root() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if root {
        Ok(())
    } else {
        Err("the suite includes the real-node tests (tests/node.rs: containerd, runc, iptables), which need \
             root: run `cargo xtask test` as root (e.g. `sudo -E env PATH=\"$PATH\" cargo xtask test`)"
            .into())
    }
}

/// A control plane or cluster that one of the e2e scripts started and prints the directory of; stopped on drop.
struct Started {
    script: &'static str,
    stop: &'static str,
    dir: PathBuf,
}

impl Started {
    fn new(script: &'static str, start: &str, stop: &'static str) -> Result<Self, String> {
        let pid = std::process::id().to_string();
        let output = child::bash(script, &[start, "--watch-pid", &pid])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("bash {script}: {e}"))?;
        let dir = child::last_line(&output.stdout).filter(|_| output.status.success());
        let dir =
            dir.ok_or_else(|| format!("`bash {script} {start}` failed (its log is above)"))?;
        Ok(Started { script, stop, dir })
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let path: &Path = &self.dir;
        let stopped = child::bash(self.script, &[self.stop])
            .arg(path)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            eprintln!(
                "xtask: warning: `bash {} {} {}` failed",
                self.script,
                self.stop,
                path.display()
            );
        }
    }
}

/// Progress lines with the seconds since the start, like `.ci/run`'s.
struct Clock(Instant);

impl Clock {
    fn step(&self, what: &str) {
        eprintln!("\n==> [{:4}s] {what}", self.0.elapsed().as_secs());
    }
}
