//! `strait-mirror`: the service-mirror controller binary (see [`strait_mirror::cli`]).

fn main() -> std::process::ExitCode {
    strait_mirror::cli::main()
}
