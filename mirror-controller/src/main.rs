//! `strait-mirror`: the service-mirror controller binary.

fn main() {
    eprintln!("strait-mirror: not built yet");
    std::process::exit(2);
}
