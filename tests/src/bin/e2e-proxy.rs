//! `e2e-proxy`: the `strait-proxy` binary, built inside this package so integration tests can
//! find it (`CARGO_BIN_EXE_e2e-proxy`); it calls the same entry point.

fn main() -> std::process::ExitCode {
    strait_proxy::cli::main()
}
