//! `e2e-mirror`: the `strait-mirror` binary, built inside this package so integration tests
//! can find it (`CARGO_BIN_EXE_e2e-mirror`); it calls the same entry point.

fn main() -> std::process::ExitCode {
    strait_mirror::cli::main()
}
