//! What the tests of linked real-node clusters share: `strait check --multicluster` as a
//! verdict to wait for, the mirrors of a Link, commands in the sample pods, and what to print
//! when a wait gives up.

#![allow(dead_code, clippy::unwrap_used)]

use crate::install_support::{http_get, json, pod_ip, strait_at};
use crate::nodes_support::eventually;
use serde_json::Value;
use std::time::Duration;
#[allow(unused_imports)] // not every test file reads client ids
pub use strait_e2e::observe::{self, MC, client_ids};
use strait_e2e::samples::SAMPLE;
use strait_localcluster::Cluster;

/// Long enough for a gateway to be probed down (3 failures, 3 s apart) or a mirror
/// controller to catch up after a repair.
pub const CONVERGE: Duration = Duration::from_secs(120);

/// `strait check --multicluster -o json` in `west`: whether it passed, and the failures
/// as (check, detail).
pub async fn check(west: &Cluster) -> (bool, Vec<(String, String)>, String) {
    let (ok, out) = match strait_at(west, &["check", "--multicluster", "-o", "json"]).await {
        Ok(out) => (true, out),
        Err(out) => (false, out),
    };
    let json = &out[out.find('{').unwrap_or(0)..];
    let report: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {out}"));
    let failures = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "failure")
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_owned(),
                c["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    (ok, failures, out)
}

/// Waits until `check` fails on `want` with a detail containing `detail`.
pub async fn check_fails(west: &Cluster, want: &str, detail: &str) {
    let last = std::sync::Mutex::new(String::new());
    let seen = eventually(CONVERGE, || async {
        let (ok, failures, out) = check(west).await;
        *last.lock().unwrap() = out;
        (!ok && failures
            .iter()
            .any(|(c, d)| c == want && d.contains(detail)))
        .then_some(())
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(
        seen.is_some(),
        "check never failed on {want:?} ({detail:?}):\n{last}"
    );
}

/// Waits until `check` passes.
pub async fn check_passes(west: &Cluster, after: &str) {
    let out = strait_at(west, &["check", "--multicluster", "--wait", "150s"]).await;
    assert!(
        out.is_ok(),
        "check does not pass {after}:\n{}",
        out.unwrap_err()
    );
}

/// The mirror Services `west` has of `cluster`, by name.
pub async fn mirrors_of(west: &Cluster, cluster: &str) -> Vec<String> {
    let selector = format!("mirror.strait.dev/cluster-name={cluster}");
    json(west, &["get", "services", "-A", "-l", &selector]).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// `kubectl scale` of a Deployment.
pub async fn scale(c: &Cluster, ns: &str, deploy: &str, n: u32) {
    c.kubectl(&[
        "-n",
        ns,
        "scale",
        "deployment",
        deploy,
        &format!("--replicas={n}"),
    ])
    .await
    .unwrap();
}

/// `strait-sample ARGS` in the container named `app` of a running pod labelled `app=APP`.
pub async fn sample(c: &Cluster, ns: &str, app: &str, args: &[&str]) -> Result<String, String> {
    let pod = running_pod(c, ns, &format!("app={app}")).await?;
    let mut a = vec!["-n", ns, "exec", &pod, "-c", app, "--", SAMPLE];
    a.extend(args);
    c.kubectl(&a).await.map_err(|e| e.to_string())
}

/// The name of a running pod matching `selector`.
pub async fn running_pod(c: &Cluster, ns: &str, selector: &str) -> Result<String, String> {
    observe::running_pod(c, ns, selector)
        .await
        .map_err(|e| e.to_string())
}

/// Waits until `strait-sample ARGS` in `app` succeeds; its output, or a panic with what the
/// last attempt said and what both clusters report.
pub async fn sample_eventually(
    (c, peer): (&Cluster, &Cluster),
    ns: &str,
    app: &str,
    args: &[&str],
) -> String {
    let last = std::sync::Mutex::new(String::new());
    let out = eventually(CONVERGE, || async {
        sample(c, ns, app, args)
            .await
            .map_err(|e| *last.lock().unwrap() = e)
            .ok()
    })
    .await;
    match out {
        Some(out) => out,
        None => {
            let last = last.into_inner().unwrap();
            panic!(
                "{}: `strait-sample {}` never succeeded: {last}\n{}",
                c.name(),
                args.join(" "),
                diagnose(c, peer).await
            )
        }
    }
}

/// The gateway's metrics in `c`.
pub async fn gateway_metrics(c: &Cluster) -> String {
    observe::gateway_metrics(c).await.unwrap()
}

/// The metrics of a meshed pod's proxy (its admin port, plain HTTP).
pub async fn proxy_metrics(pod: &Value) -> String {
    let admin: std::net::SocketAddr = format!("{}:{}", pod_ip(pod), strait_core::ports::ADMIN)
        .parse()
        .unwrap();
    http_get(admin, "/metrics").await.unwrap()
}

/// `strait multicluster unlink` in `c` for `cluster`, deleted with kubectl as its output
/// says, waiting for the Link's finalizer.
pub async fn unlink(c: &Cluster, cluster: &str) {
    let unlink = strait_at(c, &["multicluster", "unlink", "--cluster-name", cluster])
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join(format!("unlink-{cluster}.yaml"));
    std::fs::write(&file, &unlink).unwrap();
    c.kubectl(&[
        "delete",
        "-f",
        file.to_str().unwrap(),
        "--wait=true",
        "--timeout=120s",
    ])
    .await
    .unwrap_or_else(|e| panic!("{}: deleting the Link to {cluster}: {e}", c.name()));
}

/// What the Link, the mirrors and the controllers say, for a failure message.
pub async fn diagnose(west: &Cluster, east: &Cluster) -> String {
    let mut out = String::new();
    for (c, args) in [
        (west, &["-n", MC, "get", "links", "-o", "yaml"][..]),
        (
            west,
            &["-n", "shop", "get", "svc,endpointslices", "-o", "wide"][..],
        ),
        (
            west,
            &["-n", MC, "logs", "deploy/strait-mirror", "--tail=40"][..],
        ),
        (
            west,
            &[
                "-n",
                "shop",
                "logs",
                "deploy/client",
                "-c",
                "strait-proxy",
                "--tail=40",
            ][..],
        ),
        (
            east,
            &["-n", MC, "logs", "deploy/strait-gateway", "--tail=40"][..],
        ),
        (
            east,
            &["-n", "shop", "get", "pods,svc,endpointslices", "-o", "wide"][..],
        ),
    ] {
        let got = c.kubectl(args).await.unwrap_or_else(|e| e.to_string());
        out.push_str(&format!(
            "--- {}: kubectl {}\n{got}\n",
            c.name(),
            args.join(" ")
        ));
    }
    out
}
