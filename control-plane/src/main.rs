//! `strait-control-plane`: destination and identity gRPC.

fn main() {
    eprintln!("strait-control-plane: not built yet");
    std::process::exit(2);
}
