//! `e2e-strait`: the `strait` CLI, built inside this package so the demo test can run it
//! (`CARGO_BIN_EXE_e2e-strait`); it calls the same entry point.

fn main() -> std::process::ExitCode {
    strait_cli::main()
}
