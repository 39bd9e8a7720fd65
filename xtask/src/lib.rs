//! Ferry's developer commands, run as `cargo xtask COMMAND`.
//!
//! - `cargo xtask test [ARGS...]`: the whole test suite on a fresh machine. It installs what the tests need (cached
//!   under `~/.cache/ferry`, seconds when warm), starts one local control plane shared by every test binary and one
//!   real node cluster for `tests/node.rs`, runs `cargo test --workspace --locked --no-fail-fast ARGS...`, and stops
//!   both. `.ci/run` runs exactly this command.
//!
//! Every command it starts runs with the environment of the shell it was started from (see [`child`]).
#![forbid(unsafe_code)]
#![deny(warnings)]

pub mod child;
mod setup;
mod test;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask test [ARGS...]

  test   install what the tests need, start a shared control plane and a real node, run
         `cargo test --workspace --locked --no-fail-fast ARGS...`, stop both (needs root)";

/// Runs the command named by `args[0]`; a failure is reported on stderr with what to do about it.
pub fn run(args: Vec<String>) -> ExitCode {
    let result = match args.split_first() {
        Some((command, rest)) if command == "test" => test::run(rest),
        Some((command, _)) if command == "help" || command == "--help" || command == "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}
