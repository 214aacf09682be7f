//! The README's first command works: `strait-demo` brings up west and east on real nodes,
//! installs Strait with the CLI, links them with `strait multicluster link`, sends traffic
//! from west's client through east's gateway by DNS name, prints the summary, and cleans up.
//!
//! Run: `cargo test -p strait-e2e --test demo -- --nocapture` (as root, images built).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_traffic_crossing_the_gateway() {
    strait_localcluster::require_root().unwrap();
    let log = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_strait-demo"));
    cmd.args(["--requests", "40", "--log"])
        .arg(log.path().join("demo.log"))
        .env("STRAIT_DEMO_STRAIT_BIN", env!("CARGO_BIN_EXE_e2e-strait"))
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .expect("the demo finished within 10 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for needle in [
        "web-east  ←  web.shop.svc.cluster.local",
        "echo-east  ←  echo.shop.svc.cluster.local",
        "greeter-east  ←  greeter.shop.svc.cluster.local",
        "HTTP through the gateway: 40/40 ok (100.0%)",
        "answered by {\"web-",
        "gRPC through the gateway: 20/20 ok; answered by greeter-",
        "TCP through the gateway: echo-",
        ": hello over raw TCP",
        "identities east's gateway saw: client.shop.serviceaccount.identity.strait.cluster.local",
        "first cross-cluster response",
        "east     True   3",
        "clusters stopped and cleaned up",
    ] {
        assert!(
            stdout.contains(needle),
            "no {needle:?} in:\n{stdout}\n{stderr}"
        );
    }
    for stage in 1..=7 {
        assert!(
            stderr.contains(&format!("[{stage}/7]")),
            "stage {stage} reported: {stderr}"
        );
    }
    assert!(
        std::fs::metadata(log.path().join("demo.log")).is_ok(),
        "the log went to the file it names"
    );
}
