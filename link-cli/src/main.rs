//! `strait`: the operator's CLI (see [`strait_cli`]).

fn main() -> std::process::ExitCode {
    strait_cli::main()
}
