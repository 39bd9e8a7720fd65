//! What the test suite needs on the machine, installed when missing: a few Debian packages, the local control
//! plane and node (`e2e/control-plane.sh install --node`) and ferry-server's test dependencies
//! (`server-image/scripts/setup-test-deps.sh`). Each is cached and takes seconds when already there.

use std::process::Command;

use crate::child;

/// Debian packages the tests use beyond a Rust toolchain: the venv of ferry-server's tests, Debian's curl (the
/// client image of the node tests), openssl (the cluster PKI) and a C compiler (the pause program, the stand-in
/// ONNX Runtime). The node's own packages (runc, CNI plugins, iptables, conntrack) come with `install --node`.
pub const DEBIAN_PACKAGES: [&str; 6] = [
    "python3-venv",
    "curl",
    "openssl",
    "ca-certificates",
    "gcc",
    "libc6-dev",
];

const CONTROL_PLANE_INSTALL: [&str; 2] = ["install", "--node"];
const CONTROL_PLANE: &str = "e2e/control-plane.sh";
const SERVER_TEST_DEPS: &str = "server-image/scripts/setup-test-deps.sh";

pub fn debian_packages() -> Result<(), String> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .into_iter()
        .filter(|p| !debian_package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = || {
        child::command("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    eprintln!("installing {}", missing.join(" "));
    // A fresh machine may have no package lists yet.
    let updated = || run_ok(child::command("apt-get").args(["update", "-qq"]));
    if install() || (updated() && install()) {
        Ok(())
    } else {
        Err(format!(
            "could not install Debian packages; install them with: apt-get install {}",
            missing.join(" ")
        ))
    }
}

fn debian_package_installed(package: &str) -> bool {
    child::command("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| o.stdout == b"install ok installed")
}

/// The control plane and node (Go builds) and ferry-server's test dependencies (a venv from PyPI, s3s-fs from
/// crates.io) side by side: the second spends much of its time downloading.
pub fn installs() -> Result<(), String> {
    let mut control_plane = child::bash(CONTROL_PLANE, &CONTROL_PLANE_INSTALL)
        .spawn()
        .map_err(|e| format!("bash {CONTROL_PLANE}: {e}"))?;
    let server_deps = run_ok(&mut child::bash(SERVER_TEST_DEPS, &[]));
    let control_plane = control_plane.wait().is_ok_and(|s| s.success());
    let mut failed = Vec::new();
    if !control_plane {
        failed.push(format!(
            "bash {CONTROL_PLANE} {}",
            CONTROL_PLANE_INSTALL.join(" ")
        ));
    }
    if !server_deps {
        failed.push(format!("bash {SERVER_TEST_DEPS}"));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed (the log is above): {}", failed.join("; ")))
    }
}

fn run_ok(command: &mut Command) -> bool {
    command.status().is_ok_and(|s| s.success())
}
