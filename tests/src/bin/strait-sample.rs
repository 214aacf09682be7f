//! `strait-sample`: the program of the `sample` image and of every test pod (see
//! [`strait_e2e::tool`]).

fn main() -> std::process::ExitCode {
    strait_e2e::tool::main()
}
