//! `cargo xtask`: Ferry's developer commands (the alias is in `.cargo/config.toml`).
fn main() -> std::process::ExitCode {
    xtask::run(std::env::args().skip(1).collect())
}
