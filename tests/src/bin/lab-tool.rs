//! `lab-tool`: the programs strait-lab runs in pods (see `strait_lab::tool`).

fn main() -> std::process::ExitCode {
    strait_lab::tool::main()
}
