//! `e2e-gateway`: the `strait-gateway` binary, built inside this package so integration tests
//! can find it (`CARGO_BIN_EXE_e2e-gateway`); it calls the same entry point.

fn main() -> std::process::ExitCode {
    strait_gateway::cli::main()
}
