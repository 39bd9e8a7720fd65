//! The commands `cargo xtask` starts, with the environment of the shell it was started from.
//!
//! `cargo run` (behind the `cargo xtask` alias) sets variables that describe the xtask package for the program it
//! runs: `CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, `CARGO_PKG_VERSION_MAJOR`, ... ring's build script declares
//! `cargo:rerun-if-env-changed` on several of them (briansmith/ring#2454; ring 0.17.14 still does). Cargo records
//! such a variable's value from its own environment, where a shell leaves these unset, so a cargo started with them
//! set finds ring's build script "changed", rebuilds ring and everything that depends on it (kube, rustls, reqwest,
//! ferry, ferry-server), and the next `cargo build` from a shell rebuilds it all again. The commands started here
//! therefore run without those variables. `e2e/cluster.sh` does the same for its release build, which
//! `tests/node.rs` starts from inside `cargo test`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether cargo sets `name` for the programs it runs (`cargo run`, `cargo test`), rather than a user configuring
/// cargo with it (`CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_TERM_COLOR`, `CARGO_PROFILE_*`, ...).
pub fn set_by_cargo_for_programs(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

/// `program` to run in the repository root, without the variables cargo set for this process.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_programs) {
            command.env_remove(name);
        }
    }
    command.current_dir(repo_root());
    command
}

/// `cargo`: the one that runs this xtask (`CARGO`), else the one on `PATH`.
pub fn cargo() -> Command {
    command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `bash SCRIPT ARGS...` for a script of this repository.
pub fn bash(script: &str, args: &[&str]) -> Command {
    let mut command = command("bash");
    command.arg(repo_root().join(script)).args(args);
    command
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ sits in the repository root")
        .to_path_buf()
}

/// The directory a script prints as its last line of stdout (`control-plane.sh start`, `cluster.sh up`).
pub fn last_line(stdout: &[u8]) -> Option<PathBuf> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What ring 0.17.14's build script prints as `cargo:rerun-if-env-changed` among the variables cargo sets.
    const RING_RERUN_IF_ENV_CHANGED: [&str; 7] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_PKG_NAME",
        "CARGO_PKG_VERSION_MAJOR",
        "CARGO_PKG_VERSION_MINOR",
        "CARGO_PKG_VERSION_PATCH",
        "CARGO_PKG_VERSION_PRE",
        "CARGO_MANIFEST_LINKS",
    ];

    #[test]
    fn the_variables_ring_reruns_on_are_removed_and_user_configuration_is_kept() {
        for name in RING_RERUN_IF_ENV_CHANGED {
            assert!(set_by_cargo_for_programs(name), "{name} would reach cargo");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_TERM_COLOR",
            "CARGO_BUILD_JOBS",
            "CARGO_PROFILE_RELEASE_DEBUG",
            "CARGO_INCREMENTAL",
            "RUSTFLAGS",
        ] {
            assert!(!set_by_cargo_for_programs(name), "{name} would be dropped");
        }
    }

    /// This test runs under `cargo test`, which sets the package's variables, as `cargo run` does for the xtask.
    #[test]
    fn a_started_command_sees_none_of_the_variables_cargo_set_for_this_process() {
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let output = command("env").output().expect("env runs");
        let seen = String::from_utf8(output.stdout).expect("the environment is UTF-8");
        let names: Vec<&str> = seen
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(n, _)| n)
            .collect();
        let leaked: Vec<&&str> = names
            .iter()
            .filter(|n| set_by_cargo_for_programs(n))
            .collect();
        assert!(leaked.is_empty(), "leaked: {leaked:?}");
        assert!(
            names.contains(&"PATH"),
            "the rest of the environment is kept: {names:?}"
        );
    }

    #[test]
    fn the_directory_is_the_last_non_empty_line() {
        assert_eq!(
            last_line(b"noise\n/tmp/ferry-control-plane.x1\n\n"),
            Some(PathBuf::from("/tmp/ferry-control-plane.x1"))
        );
        assert_eq!(last_line(b""), None);
    }
}
