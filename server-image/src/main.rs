fn main() -> std::process::ExitCode {
    ferry_server::main()
}
