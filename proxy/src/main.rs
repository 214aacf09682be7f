//! `strait-proxy`: the sidecar proxy binary.

fn main() {
    eprintln!("strait-proxy: the data plane is not built yet");
    std::process::exit(2);
}
