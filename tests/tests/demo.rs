//! The README's first command works: `strait demo --exit-after 1s` (the CLI's own entry point,
//! built here as `e2e-strait`) brings up west and east, links them, sends traffic from west
//! through east's gateway, reports it, and cleans up.
//!
//! Run: `cargo test -p strait-e2e --test demo -- --nocapture` (as root).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_traffic_crossing_the_gateway() {
    strait_localcluster::require_root().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_e2e-strait"));
    cmd.args(["demo", "--exit-after", "1s"])
        .env("STRAIT_DEMO_PROXY_BIN", env!("CARGO_BIN_EXE_e2e-proxy"))
        .env("STRAIT_DEMO_GATEWAY_BIN", env!("CARGO_BIN_EXE_e2e-gateway"))
        .env("STRAIT_LOG", "warn")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("the demo finished within 5 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for needle in [
        "mirror shop/web-east appeared",
        "\"hello from web-1\":5",
        "web-1: hello over raw TCP",
        "gateway_connections_total{client_id=\"client.shop.serviceaccount.identity.strait.cluster.local\"",
        "traffic crossed the gateway",
        "clusters stopped and cleaned up",
    ] {
        assert!(
            stdout.contains(needle),
            "no {needle:?} in:\n{stdout}\n{stderr}"
        );
    }
}
