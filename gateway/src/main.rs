//! `strait-gateway`: the multicluster gateway binary (see [`strait_gateway::cli`]).

fn main() -> std::process::ExitCode {
    strait_gateway::cli::main()
}
