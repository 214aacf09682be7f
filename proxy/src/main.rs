//! `strait-proxy`: the sidecar proxy binary (see the library's docs).

fn main() -> std::process::ExitCode {
    strait_proxy::cli::main()
}
