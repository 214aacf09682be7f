//! `strait-gateway`: the multicluster gateway binary.

fn main() {
    eprintln!("strait-gateway: the gateway is not built yet");
    std::process::exit(2);
}
